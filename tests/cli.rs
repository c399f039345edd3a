//! The `medfm` command: a real run with JSON output, and clear errors for bad input.

mod common;

use std::process::Command;

use common::*;

fn medfm(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_medfm"))
        .args(args)
        .env("MEDFM_WEIGHTS_DIR", weights_dir())
        .output()
        .expect("run medfm");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn tmp(name: &str) -> String {
    std::env::temp_dir()
        .join(format!("medfm-cli-{}-{name}", std::process::id()))
        .display()
        .to_string()
}

#[test]
fn segment_writes_a_png_mask_and_json() {
    let mr = data("MR-SIEMENS-DICOM-WithOverlays.dcm")
        .display()
        .to_string();
    let out = tmp("mask.png");
    let (ok, stdout, stderr) = medfm(&[
        "segment",
        &mr,
        "--box",
        "110,280,190,355",
        "--cpu",
        "--json",
        "--out",
        &out,
    ]);
    assert!(ok, "{stderr}");
    let j: serde_json::Value = serde_json::from_str(&stdout).expect("json on stdout");
    let manifest = manifest();
    let reference = manifest["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "mr_kidney")
        .unwrap()["prompts"]["box"]["area"]
        .as_u64()
        .unwrap();
    // The PyTorch reference's mask area on the same file and box.
    assert_eq!(j["area"].as_u64().unwrap(), reference, "{stdout}");
    assert_eq!(
        (j["rows"].as_u64(), j["cols"].as_u64()),
        (Some(484), Some(484))
    );
    assert!(j["iou"].as_f64().unwrap() > 0.9);
    assert_eq!(j["low_confidence"], false, "{stdout}");
    assert!(
        !stderr.contains("low"),
        "no caution on a confident mask: {stderr}"
    );
    assert!(j["device"].as_str().unwrap().starts_with("cpu"));
    let png = std::fs::read(&out).expect("mask png written");
    assert_eq!(&png[1..4], b"PNG");
    std::fs::remove_file(&out).ok();
}

/// A prompt the model is unsure of (the nuclear-medicine bladder box, fp32 predicted IoU
/// 0.79): flagged in the JSON and, with quantized weights, a note on stderr that says the
/// mask can differ from fp32 and what to do.
#[test]
fn low_confidence_masks_are_flagged() {
    let nm = data("JPEG-LL.dcm").display().to_string();
    let out = tmp("nm.png");
    for precision in ["int8", "fp32"] {
        let (ok, stdout, stderr) = medfm(&[
            "segment",
            &nm,
            "--box",
            "112,398,168,442",
            "--cpu",
            "--json",
            "--precision",
            precision,
            "--out",
            &out,
        ]);
        assert!(ok, "{stderr}");
        let j: serde_json::Value = serde_json::from_str(&stdout).expect("json on stdout");
        let iou = j["iou"].as_f64().unwrap();
        assert!(iou < 0.9, "{precision}: {stdout}");
        assert_eq!(j["low_confidence"], true, "{precision}: {stdout}");
        let noted = stderr.contains("note: predicted IoU") && stderr.contains("--precision fp32");
        assert_eq!(noted, precision != "fp32", "{precision}: stderr `{stderr}`");
    }
    std::fs::remove_file(&out).ok();
}

fn expect_error(args: &[&str], needle: &str) {
    let (ok, _, stderr) = medfm(args);
    assert!(!ok, "{args:?} should fail");
    assert!(
        stderr.contains(needle),
        "{args:?}: stderr `{stderr}` lacks `{needle}`"
    );
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
}

#[test]
fn bad_input_gets_a_clear_error() {
    let mr = data("MR_small.dcm").display().to_string();
    let out = tmp("never.png");
    expect_error(
        &[
            "segment",
            &mr,
            "--box",
            "10,10,5,20",
            "--cpu",
            "--out",
            &out,
        ],
        "is empty",
    );
    expect_error(
        &[
            "segment",
            &mr,
            "--box",
            "10,10,80,20",
            "--cpu",
            "--out",
            &out,
        ],
        "outside the 64x64 image",
    );
    expect_error(
        &["segment", &mr, "--box", "1,2,3", "--cpu", "--out", &out],
        "four numbers",
    );
    expect_error(
        &["segment", &mr, "--box", "a,2,3,4", "--cpu", "--out", &out],
        "not a number",
    );
    expect_error(
        &["segment", &mr, "--point", "3,4,7", "--cpu", "--out", &out],
        "LABEL 0 or 1",
    );
    expect_error(&["segment", &mr, "--cpu", "--out", &out], "--box");
    expect_error(
        &[
            "segment", &mr, "--box", "1,1,9,9", "--frame", "3", "--cpu", "--out", &out,
        ],
        "frame 3 does not exist",
    );
    expect_error(
        &[
            "segment",
            &mr,
            "--box",
            "1,1,9,9",
            "--weights",
            "/nonexistent.bpk",
            "--cpu",
            "--out",
            &out,
        ],
        "weights fetch",
    );
    let notdicom = data("parity/manifest.json").display().to_string();
    expect_error(
        &[
            "segment", &notdicom, "--box", "1,1,9,9", "--cpu", "--out", &out,
        ],
        "not a DICOM file",
    );
    assert!(!std::path::Path::new(&out).exists(), "no output on error");
}

/// Every malformed fixture gives an error or a decodable image, never a panic.
#[test]
fn malformed_dicom_never_panics() {
    for entry in std::fs::read_dir(data("bad")).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let result = std::panic::catch_unwind(|| match medfm::dicom::read(&bytes) {
            Ok(img) => img.frame(0).map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        });
        let result = result.unwrap_or_else(|_| panic!("{} panicked", path.display()));
        println!(
            "{}: {result:?}",
            path.file_name().unwrap().to_string_lossy()
        );
    }
    // Every prefix of a valid file is refused or decoded, never a panic.
    let bytes = std::fs::read(data("MR_small.dcm")).unwrap();
    for n in (0..bytes.len()).step_by(97) {
        let r = std::panic::catch_unwind(|| {
            medfm::dicom::read(&bytes[..n])
                .and_then(|i| i.frame(0))
                .is_ok()
        });
        assert!(r.is_ok(), "prefix of {n} bytes panicked");
    }
}

#[test]
fn embed_then_search_finds_the_query_itself() {
    let dir = data("series/ct5n").display().to_string();
    let prefix = tmp("index");
    let (npy, jsonl) = (format!("{prefix}.npy"), format!("{prefix}.jsonl"));
    let (ok, stdout, stderr) = medfm(&["embed", &dir, "--out", &npy, "--meta", &jsonl, "--cpu"]);
    assert!(ok, "{stderr}");
    assert!(stdout.starts_with("5 vectors"), "{stdout}");
    let query = data("series/ct5n/2693").display().to_string();
    let (ok, stdout, stderr) = medfm(&["search", &prefix, &query, "-k", "3", "--json", "--cpu"]);
    assert!(ok, "{stderr}");
    let hits: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(hits.as_array().unwrap().len(), 3);
    assert!(
        hits[0]["entry"]["file"].as_str().unwrap().ends_with("2693"),
        "{stdout}"
    );
    assert!(hits[0]["score"].as_f64().unwrap() > 0.9999, "{stdout}");
    expect_error(
        &[
            "embed",
            &dir,
            "--model",
            "dinov2:/x",
            "--out",
            &npy,
            "--meta",
            &jsonl,
        ],
        "reading /x/config.json",
    );
    expect_error(
        &["search", "/nonexistent/index", &query],
        "reading /nonexistent/index.npy",
    );
    // The LiteMedSAM index cannot be searched with another model's vectors.
    let vit = format!("dinov2:{}", data("vit/dinov2").display());
    expect_error(
        &["search", &prefix, &query, "--model", &vit, "--cpu"],
        "the index holds 256-d vectors, the query is 32-d",
    );
    std::fs::remove_file(&npy).ok();
    std::fs::remove_file(&jsonl).ok();
}

/// Bring-your-own DINOv2 (the small random transformers fixture): 32-d vectors, CLS and
/// patch-mean pooling, the query finds itself.
#[test]
fn embed_and_search_with_a_dinov2_directory() {
    let dir = data("series/ct5n").display().to_string();
    let vit = format!("dinov2:{}", data("vit/dinov2").display());
    let query = data("series/ct5n/2693").display().to_string();
    for pool in ["cls", "mean"] {
        let prefix = tmp(&format!("vit_{pool}"));
        let (npy, jsonl) = (format!("{prefix}.npy"), format!("{prefix}.jsonl"));
        let (ok, stdout, stderr) = medfm(&[
            "embed", &dir, "--model", &vit, "--pool", pool, "--out", &npy, "--meta", &jsonl,
            "--cpu",
        ]);
        assert!(ok, "{stderr}");
        assert!(stdout.starts_with("5 vectors (32-d"), "{stdout}");
        let (ok, stdout, stderr) = medfm(&[
            "search", &prefix, &query, "--model", &vit, "--pool", pool, "--json", "--cpu",
        ]);
        assert!(ok, "{stderr}");
        let hits: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert!(
            hits[0]["entry"]["file"].as_str().unwrap().ends_with("2693"),
            "{stdout}"
        );
        assert!(hits[0]["score"].as_f64().unwrap() > 0.9999, "{stdout}");
        std::fs::remove_file(&npy).ok();
        std::fs::remove_file(&jsonl).ok();
    }
}

#[test]
fn segment_writes_a_seg_when_asked_for_dcm() {
    let mr = data("MR_small.dcm").display().to_string();
    let out = tmp("seg.dcm");
    let (ok, stdout, stderr) = medfm(&[
        "segment",
        &mr,
        "--box",
        "10,10,50,50",
        "--cpu",
        "--out",
        &out,
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("DICOM SEG"), "{stdout}");
    let bytes = std::fs::read(&out).unwrap();
    let seg = medfm::dicom::read(&bytes).expect("a DICOM file");
    assert_eq!(seg.meta.modality, "SEG");
    assert_eq!((seg.meta.rows, seg.meta.cols), (64, 64));
    std::fs::remove_file(&out).ok();
}

#[test]
fn info_lists_series_without_patient_ids() {
    let dir = data("").display().to_string();
    let (ok, stdout, stderr) = medfm(&["info", &dir, "--json"]);
    assert!(ok, "{stderr}");
    let j: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let series = j["series"].as_array().unwrap();
    // The series one of whose files' path contains `part`.
    let find = |part: &str| {
        series
            .iter()
            .find(|s| {
                s["files"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|f| f.as_str().unwrap().contains(part))
            })
            .unwrap_or_else(|| panic!("no series for {part}"))
    };
    assert_eq!(find("series/ct5n")["instances"], 5);
    assert_eq!(find("series/mr700")["instances"], 7);
    // emri_small.dcm and its RLE copy in decode/ are the same series: 2 x 10 frames.
    assert_eq!(find("emri_small.dcm")["frames"], 20);
    assert_eq!(find("emri_small.dcm")["instances"], 2);
    // Its 12-bit JPEG copy was given a series of its own.
    assert_eq!(find("emri_small_jpeg12.dcm")["instances"], 1);
    // JPEG-LL.dcm shares its series with decode/JPEG2000.dcm and decode/JPGExtended.dcm
    // (12-bit JPEG): all three decode.
    let nm = find("JPEG-LL");
    assert_eq!(nm["instances"], 3);
    assert!(nm["not_decodable"].is_null(), "{nm}");
    // Patient identifiers stay out unless asked for.
    let bytes = std::fs::read(data("693_UNCR.dcm")).unwrap();
    let pid = medfm::dicom::read(&bytes).unwrap().patient_id();
    assert!(
        !pid.is_empty() && !stdout.contains(&pid),
        "PatientID `{pid}` leaked"
    );
    assert!(
        series
            .iter()
            .all(|s| s["patient"].as_str().unwrap().starts_with("patient "))
    );
    // Malformed files are reported, not fatal.
    let unreadable = j["unreadable"].as_array().unwrap();
    assert!(
        unreadable
            .iter()
            .any(|u| u["file"].as_str().unwrap().ends_with("MR_truncated.dcm"))
    );
    let (ok, stdout, _) = medfm(&["info", &dir, "--show-patient-ids"]);
    assert!(ok && stdout.contains(&pid), "--show-patient-ids shows them");
}

#[test]
fn convert_png_uses_the_files_vois() {
    let file = data("lut/mr_voi_lut.dcm").display().to_string();
    // info lists the four VOIs: two windows with explanations, two tables.
    let (ok, stdout, stderr) = medfm(&["info", &file, "--json"]);
    assert!(ok, "{stderr}");
    let j: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let vois: Vec<String> = j["series"][0]["vois"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(vois.len(), 4, "{vois:?}");
    assert!(
        vois[0].contains("600/1600 LINEAR \"SOFT\"") && vois[3].contains("\"STEEP\""),
        "{vois:?}"
    );
    let image = medfm::dicom::read(&std::fs::read(data("lut/mr_voi_lut.dcm")).unwrap()).unwrap();
    let frame = image.frame(0).unwrap();
    let (all, _) = image.vois(0).unwrap();
    for (n, voi) in all.iter().enumerate() {
        let out = tmp(&format!("voi{n}.png"));
        let (ok, stdout, stderr) =
            medfm(&["convert", &file, "--out", &out, "--voi", &n.to_string()]);
        assert!(ok, "{stderr}");
        assert!(stdout.contains(&voi.describe()), "{stdout}");
        let decoder =
            png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&out).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        let want = medfm::dicom::lut::render_grey(&frame.values, Some(voi), false);
        assert_eq!(&buf[..info.buffer_size()], &want[..], "VOI {n}");
        std::fs::remove_file(&out).ok();
    }
    expect_error(
        &["convert", &file, "--out", &tmp("x.png"), "--voi", "9"],
        "has 4 VOI(s)",
    );
    expect_error(
        &[
            "convert",
            &file,
            "--out",
            &tmp("x.png"),
            "--window",
            "40,0.5",
        ],
        "not valid for Linear",
    );
    // MONOCHROME1 is inverted on output.
    let m1 = data("lut/mr_monochrome1.dcm").display().to_string();
    let (ok, stdout, stderr) = medfm(&["convert", &m1, "--out", &tmp("m1.png")]);
    assert!(
        ok && stdout.contains("MONOCHROME1 inverted"),
        "{stdout}{stderr}"
    );
}

#[test]
fn bench_decode_reports_every_file() {
    let dir = data("lut").display().to_string();
    let (ok, stdout, stderr) = medfm(&["bench-decode", &dir, "--runs", "2", "--json"]);
    assert!(ok, "{stderr}");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 8, "{stdout}");
    assert!(
        lines
            .iter()
            .all(|l| l["ms_median"].as_f64().is_some_and(|m| m >= 0.0)
                && l["frames"].as_u64() >= Some(1)),
        "{stdout}"
    );
    expect_error(
        &["bench-decode", &dir, "--runs", "0"],
        "--runs must be at least 1",
    );
}

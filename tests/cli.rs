//! The `medfm` command: real runs with JSON output (errors: tests/cli_errors.rs).

mod common;

use common::*;

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
    // Files are named relative to the indexed folder, not by where it is on this machine.
    assert_eq!(hits[0]["entry"]["file"], "2693", "{stdout}");
    assert!(hits[0]["score"].as_f64().unwrap() > 0.9999, "{stdout}");
    let meta = std::fs::read_to_string(&jsonl).unwrap();
    assert!(
        !meta.contains(&dir),
        "the index holds the folder's path: {meta}"
    );
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
fn verbose_prints_the_pipeline_spans_with_their_times_in_order() {
    let mr = data("MR_small.dcm").display().to_string();
    let out = tmp("verbose-seg.dcm");
    let (ok, _, quiet) = medfm(&[
        "segment",
        &mr,
        "--box",
        "10,10,50,50",
        "--cpu",
        "--out",
        &out,
    ]);
    assert!(ok && !quiet.contains("time.busy"), "{quiet}");
    let (ok, _, stderr) = medfm(&[
        "-v",
        "segment",
        &mr,
        "--box",
        "10,10,50,50",
        "--cpu",
        "--out",
        &out,
    ]);
    assert!(ok, "{stderr}");
    let mut at = 0;
    for span in [
        "read",
        "decode{",
        "preprocess",
        "encode",
        "decode_mask",
        "write{what",
        "write{path",
    ] {
        let found = stderr[at..]
            .lines()
            .position(|l| l.contains(&format!(" {span}")) && l.contains("close time.busy="));
        assert!(found.is_some(), "span {span} after byte {at}:\n{stderr}");
        at += stderr[at..].find(&format!(" {span}")).expect("span line");
    }
    std::fs::remove_file(&out).ok();
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
    for l in &lines {
        let ms = |k: &str| l[k].as_f64().unwrap_or(f64::NAN);
        assert!(
            ms("ms_min") <= ms("ms_median") && ms("ms_median") <= ms("ms_max"),
            "{l}"
        );
        assert_eq!(l["runs"], 2, "{l}");
        assert!(l["frames"].as_u64() >= Some(1), "{l}");
    }
    expect_error(
        &["bench-decode", &dir, "--runs", "0"],
        "--runs must be at least 1",
    );
}

/// An output path that is one of the inputs is refused before anything runs, and the
/// input is left as it was (`--out img.dcm` replaced the image with its SEG before).
#[test]
fn output_over_an_input_is_refused_and_the_input_kept() {
    let copy = tmp("input.dcm");
    std::fs::copy(data("MR_small.dcm"), &copy).unwrap();
    let before = std::fs::read(&copy).unwrap();
    let dot = format!(
        "{}/./{}",
        std::env::temp_dir().display(),
        std::path::Path::new(&copy)
            .file_name()
            .unwrap()
            .to_string_lossy()
    );
    for out in [&copy, &dot] {
        expect_error(
            &[
                "segment",
                &copy,
                "--box",
                "10,10,50,50",
                "--cpu",
                "--out",
                out,
            ],
            "is one of the input files",
        );
    }
    expect_error(
        &["convert", &copy, "--out", &copy],
        "is one of the input files",
    );
    let png = tmp("twice.png");
    expect_error(
        &[
            "segment",
            &copy,
            "--box",
            "10,10,50,50",
            "--cpu",
            "--out",
            &png,
            "--overlay",
            &png,
        ],
        "already another output",
    );
    assert_eq!(std::fs::read(&copy).unwrap(), before, "the input changed");
    std::fs::remove_file(&copy).ok();
}

/// A full disk (`/dev/full`) fails the command with a message naming the output; nothing
/// reports success over a lost result.
#[test]
fn a_failed_write_fails_the_command() {
    let mr = data("MR_small.dcm").display().to_string();
    expect_error(
        &[
            "segment",
            &mr,
            "--box",
            "10,10,50,50",
            "--cpu",
            "--out",
            "/dev/full",
        ],
        "writing /dev/full",
    );
    let png = tmp("full-dir/none.png");
    expect_error(
        &["convert", &mr, "--out", &png],
        "its folder does not exist",
    );
}

/// Without --cpu or --gpu the command never runs on a software GPU adapter: here (no
/// GPU; Mesa's lavapipe, or no Vulkan driver at all) the CPU backend is chosen, and why
/// is said on stderr.
#[test]
fn the_default_device_is_never_a_software_gpu() {
    let mr = data("MR_small.dcm").display().to_string();
    let out = tmp("default-device.png");
    let (ok, stdout, stderr) = medfm(&[
        "segment",
        &mr,
        "--box",
        "10,10,50,50",
        "--json",
        "--out",
        &out,
    ]);
    assert!(ok, "{stderr}");
    let j: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(j["device"], "cpu (flex)", "{stdout}");
    assert!(
        stderr.contains("software") || stderr.contains("no GPU adapter"),
        "{stderr}"
    );
    std::fs::remove_file(&out).ok();
}

/// An unusable CT window (width 0 or negative) falls back to the default window with a
/// warning on stderr and in the JSON, and the mask is not empty (it was, silently).
#[test]
fn an_unusable_ct_window_is_replaced_with_a_warning() {
    let out = tmp("window.png");
    for file in ["window/ct_width_0.dcm", "window/ct_width_negative.dcm"] {
        let ct = data(file).display().to_string();
        let (ok, stdout, stderr) = medfm(&[
            "segment",
            &ct,
            "--box",
            "30,30,100,100",
            "--cpu",
            "--json",
            "--out",
            &out,
        ]);
        assert!(ok, "{stderr}");
        let j: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        let warnings = j["warnings"].as_array().unwrap();
        assert_eq!(warnings.len(), 1, "{stdout}");
        assert!(
            warnings[0]
                .as_str()
                .unwrap()
                .contains("default window 40/400"),
            "{stdout}"
        );
        assert!(stderr.contains("warning: the file's CT window"), "{stderr}");
        assert!(j["area"].as_u64().unwrap() > 0, "{file}: empty mask");
    }
    std::fs::remove_file(&out).ok();
}

/// Weights are checked against the pinned hashes: a changed file is refused with both
/// hashes, and accepted as a custom file only when asked for.
#[test]
fn unpinned_weights_are_refused_unless_allowed() {
    let mr = data("MR_small.dcm").display().to_string();
    let mut bytes = std::fs::read(weights_dir().join("lite_medsam_fp32.bpk")).unwrap();
    // One value of the last tensor, far from the header.
    let at = bytes.len() - 64;
    bytes[at] ^= 1;
    let custom = tmp("custom.bpk");
    std::fs::write(&custom, &bytes).unwrap();
    let out = tmp("custom.png");
    let args = [
        "segment",
        &mr,
        "--box",
        "10,10,50,50",
        "--cpu",
        "--weights",
        &custom,
        "--out",
        &out,
    ];
    expect_error(&args, "the pinned files are fp32 a861432a");
    let mut allowed = args.to_vec();
    allowed.push("--allow-unpinned");
    let (ok, _, stderr) = medfm(&allowed);
    assert!(ok, "{stderr}");
    std::fs::remove_file(&custom).ok();
    std::fs::remove_file(&out).ok();
}

/// The weights are found wherever the command runs: the default folder is the per-user
/// data folder (`XDG_DATA_HOME/medfm/weights` here), not the current one.
#[test]
fn weights_are_found_from_any_folder() {
    let home = std::path::PathBuf::from(tmp("xdg"));
    let dir = home.join("medfm/weights");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        weights_dir().join("lite_medsam_int8.bpk"),
        dir.join("lite_medsam_int8.bpk"),
    )
    .unwrap();
    let mr = data("MR_small.dcm").display().to_string();
    let out = tmp("xdg.png");
    let run = std::process::Command::new(common::medfm_exe())
        .args([
            "segment",
            &mr,
            "--box",
            "10,10,50,50",
            "--cpu",
            "--precision",
            "int8",
            "--out",
            &out,
        ])
        .env_remove("MEDFM_WEIGHTS_DIR")
        .env("XDG_DATA_HOME", &home)
        .current_dir("/")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    std::fs::remove_dir_all(&home).ok();
    std::fs::remove_file(&out).ok();
}

/// A folder with a symbolic link back to itself is walked once: the command ends and sees
/// each file once (it looped for ever before).
#[test]
fn a_symlink_loop_is_walked_once() {
    let dir = std::path::PathBuf::from(tmp("loop"));
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::copy(data("MR_small.dcm"), dir.join("sub/a.dcm")).unwrap();
    std::os::unix::fs::symlink(&dir, dir.join("sub/back")).unwrap();
    let (ok, stdout, stderr) = medfm(&["info", &dir.display().to_string(), "--json"]);
    assert!(ok, "{stderr}");
    let j: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(j["series"].as_array().unwrap().len(), 1, "{stdout}");
    assert_eq!(j["series"][0]["instances"], 1, "{stdout}");
    std::fs::remove_dir_all(&dir).ok();
}

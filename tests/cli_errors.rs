//! The `medfm` command on bad input: a clear error naming what is wrong, never a panic,
//! and a documented exit code by the kind of error.

mod common;

use std::process::Command;

use common::*;

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
        "point label 7: use 1 (foreground) or 0 (background)",
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

/// Every malformed fixture is refused for its own defect (or, for the one whose defect
/// the reader tolerates, decoded), never a panic.
#[test]
fn malformed_dicom_gets_its_own_error() {
    let expected = [
        (
            "MR_truncated.dcm",
            Some("(7FE0,0010) declares 8192 bytes but only 8130 follow"),
        ),
        (
            "SC_rgb_jpeg.dcm",
            Some("(0008,0008) declares 1230128452 bytes"),
        ),
        (
            "UN_sequence.dcm",
            Some("(0008,1115) declares 3758161918 bytes"),
        ),
        // A VR the parser does not know is read as UN, as pydicom does: the image decodes.
        ("badVR.dcm", None),
        (
            "frames_2e28.dcm",
            Some(
                "268435456 frame(s) of 1x1x1 samples of 16 bits need 536870912 bytes, but PixelData holds 2",
            ),
        ),
        (
            "frames_encapsulated.dcm",
            Some("1000 frames, but the encapsulated PixelData holds 1 fragment"),
        ),
        (
            "meta_missing_tsyntax.dcm",
            Some("Could not parse meta group data set"),
        ),
        ("no_meta.dcm", Some("no `DICM` magic")),
        (
            "rtplan_truncated.dcm",
            Some("(300A,012C) declares 50 bytes but only 29 follow"),
        ),
    ];
    let mut files: Vec<String> = std::fs::read_dir(data("bad"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut named: Vec<String> = expected.iter().map(|(f, _)| f.to_string()).collect();
    named.sort();
    assert_eq!(
        files, named,
        "every file of tests/data/bad needs its expected error here"
    );
    for (file, want) in expected {
        let bytes = std::fs::read(data(&format!("bad/{file}"))).unwrap();
        let result = std::panic::catch_unwind(|| match medfm::dicom::read(&bytes) {
            Ok(img) => img.frame(0).map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        });
        let result = result.unwrap_or_else(|_| panic!("{file} panicked"));
        println!("{file}: {result:?}");
        match want {
            Some(reason) => {
                let err = result.expect_err(file);
                assert!(err.contains(reason), "{file}: `{err}` lacks `{reason}`");
            }
            None => assert!(result.is_ok(), "{file}: {result:?}"),
        }
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

/// Pixel data in an encoding medfm has no decoder for (a video transfer syntax) is its own
/// kind, unsupported (exit 6), saying what medfm decodes and what to do; the same bytes
/// under a transfer syntax it decodes but broken stay bad input (exit 2).
#[test]
fn unsupported_encodings_are_their_own_kind() {
    let bytes = std::fs::read(data("unsupported/MR_small_mpeg2.dcm")).unwrap();
    let image = medfm::dicom::read(&bytes).expect("the file itself reads");
    let e = image.frame(0).expect_err("MPEG2 has no decoder here");
    assert_eq!(e.kind(), medfm::ErrorKind::Unsupported, "{e}");
    let text = e.to_string();
    assert!(
        text.contains("1.2.840.10008.1.2.4.100") && text.contains("convert the file"),
        "{text}"
    );
    let broken = medfm::dicom::read(&std::fs::read(data("bad/frames_encapsulated.dcm")).unwrap())
        .and_then(|i| i.frame(0))
        .expect_err("1000 frames in one fragment");
    assert_eq!(broken.kind(), medfm::ErrorKind::BadInput, "{broken}");

    let out = tmp("unsupported.png");
    let run = Command::new(common::medfm_exe())
        .args([
            "segment",
            &data("unsupported/MR_small_mpeg2.dcm").display().to_string(),
        ])
        .args(["--box", "10,10,50,50", "--cpu", "--out", &out])
        .env("MEDFM_WEIGHTS_DIR", weights_dir())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(6), "{stderr}");
    assert!(stderr.contains("convert the file"), "{stderr}");
    assert!(
        !std::path::Path::new(&out).exists(),
        "no output for a refused file"
    );
}

/// Errors exit with the documented code of their kind: 2 bad input, 3 weights, 5 files
/// (6 unsupported: above).
#[test]
fn exit_codes_say_what_kind_of_error() {
    let mr = data("MR_small.dcm").display().to_string();
    let out = tmp("codes.png");
    let code = |args: &[&str]| {
        Command::new(common::medfm_exe())
            .args(args)
            .env("MEDFM_WEIGHTS_DIR", weights_dir())
            .output()
            .unwrap()
            .status
            .code()
    };
    let notdicom = data("parity/manifest.json").display().to_string();
    assert_eq!(
        code(&[
            "segment",
            &mr,
            "--box",
            "10,10,5,20",
            "--cpu",
            "--out",
            &out
        ]),
        Some(2)
    );
    assert_eq!(
        code(&["segment", &mr, "--box", "1,2,3", "--cpu", "--out", &out]),
        Some(2)
    );
    assert_eq!(
        code(&[
            "segment", &notdicom, "--box", "1,1,9,9", "--cpu", "--out", &out
        ]),
        Some(2)
    );
    assert_eq!(
        code(&["segment", &mr, "--box", "1,1,9,9", "--cpu", "--out", &mr]),
        Some(2)
    );
    let missing = [
        "segment",
        &mr,
        "--box",
        "1,1,9,9",
        "--cpu",
        "--weights",
        "/nonexistent.bpk",
        "--out",
        &out,
    ];
    assert_eq!(code(&missing), Some(3));
    assert_eq!(
        code(&[
            "segment",
            &mr,
            "--box",
            "10,10,50,50",
            "--cpu",
            "--out",
            "/dev/full"
        ]),
        Some(5)
    );
    assert_eq!(code(&["info", "/nonexistent-folder"]), Some(5));
}

/// `medfm batch` runs the Python package's batch; a Python without it (or none) is exit 5
/// with the way to install it, not Python's traceback. (tests/python/test_batch.py runs it
/// with the package.)
#[test]
fn batch_without_the_python_package_says_how_to_get_it() {
    for python in ["/nonexistent/python3", "/bin/false"] {
        let out = Command::new(common::medfm_exe())
            .args(["batch", "--job", "embed"])
            .env("MEDFM_PYTHON", python)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(5), "{python}: {stderr}");
        assert!(
            stderr.contains("MEDFM_PYTHON") && stderr.contains(python),
            "{stderr}"
        );
    }
}

/// `segment --propagate` and `--segments` on bad input: a clear error naming what is wrong
/// (an unplaced slice, radial slices, a box off the start slice, a stopping IoU outside
/// 0..1, a prompts file with a typo, a slice of another series), no output, no panic.
#[test]
fn propagation_and_segments_bad_input() {
    let series = data("series/brain11");
    let start = series.join("brain_010.dcm").display().to_string();
    let out = tmp("never.dcm");
    let propagate = |extra: &[&str], needle: &str| {
        let mut args = vec!["segment", &start, "--box", "45,60,215,240", "--propagate"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--cpu", "--out", &out]);
        expect_error(&args, needle);
    };
    propagate(&["--min-iou", "1.5"], "--min-iou 1.5 is outside 0..1");
    expect_error(
        &[
            "segment",
            &start,
            "--box",
            "45,60,300,240",
            "--propagate",
            "--cpu",
            "--out",
            &out,
        ],
        "outside the 256x256 image",
    );
    expect_error(
        &[
            "segment",
            &start,
            "--box",
            "45,60,215,240",
            "--extent",
            "2",
            "--out",
            &out,
        ],
        "--propagate",
    );
    expect_error(
        &[
            "segment",
            &start,
            "--box",
            "45,60,215,240",
            "--series",
            ".",
            "--out",
            &out,
        ],
        "--series goes with --propagate or --segments",
    );
    // A slice without ImagePositionPatient among placed ones.
    let dir = std::path::PathBuf::from(tmp("unplaced"));
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(&series).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "dcm") {
            std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
        }
    }
    let hole = dir.join("brain_012.dcm");
    let bytes = edited(&hole, |o| {
        o.remove_element(dicom_dictionary_std::tags::IMAGE_POSITION_PATIENT);
    });
    std::fs::write(&hole, bytes).unwrap();
    let uid = medfm::dicom::read(&std::fs::read(&hole).unwrap())
        .unwrap()
        .meta
        .sop_instance_uid;
    let moved = dir.join("brain_010.dcm").display().to_string();
    expect_error(
        &[
            "segment",
            &moved,
            "--box",
            "45,60,215,240",
            "--propagate",
            "--cpu",
            "--out",
            &out,
        ],
        &format!("instance {uid} frame 0 of series"),
    );
    std::fs::remove_dir_all(&dir).ok();
    // Radial slices are no volume.
    let radial = std::fs::read_dir(data("series/mr700"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .display()
        .to_string();
    expect_error(
        &[
            "segment",
            &radial,
            "--box",
            "10,10,50,50",
            "--propagate",
            "--cpu",
            "--out",
            &out,
        ],
        "different orientations",
    );
    // Prompts files.
    let prompts = |name: &str, body: &str| {
        let p = std::path::PathBuf::from(tmp(&format!("prompts-{name}.json")));
        std::fs::write(&p, body).unwrap();
        p
    };
    // Slices by absolute path (a relative one is relative to the prompts file).
    let slice = |name: &str| series.join(name).display().to_string();
    let brain = format!(
        r#""slice": "{}", "box": [45, 60, 215, 240]"#,
        slice("brain_010.dcm")
    );
    let cases = [
        (
            format!(r#"{{"segments": [{{{brain}, "colour": [1, 2, 3]}}]}}"#),
            "unknown field `colour`",
        ),
        (r#"{"segments": []}"#.to_string(), "\"segments\" is empty"),
        (
            format!(r#"{{"segments": [{{{brain}, "extent": 2}}]}}"#),
            "go with \"propagate\": true",
        ),
        (
            format!(
                r#"{{"segments": [{{"slice": "{}"}}]}}"#,
                slice("brain_010.dcm")
            ),
            "give a \"box\"",
        ),
        (
            format!(r#"{{"segments": [{{{brain}, "propagate": true, "min_iou": -1}}]}}"#),
            "min_iou -1 is outside 0..1",
        ),
        (
            format!(
                r#"{{"segments": [{{{brain}}}, {{"slice": "{}", "box": [1, 1, 9, 9]}}]}}"#,
                data("MR_small.dcm").display()
            ),
            "one output covers one series",
        ),
        (
            format!(
                r#"{{"segments": [{{{brain}}}, {{"slice": "{}", "box": [45, 60, 300, 240]}}]}}"#,
                slice("brain_008.dcm")
            ),
            "Segment 2: prompt: box 45,60,300,240 is outside",
        ),
    ];
    for (k, (body, needle)) in cases.iter().enumerate() {
        let p = prompts(&k.to_string(), body);
        let file = p.display().to_string();
        expect_error(
            &["segment", "--segments", &file, "--cpu", "--out", &out],
            needle,
        );
        std::fs::remove_file(&p).ok();
    }
    let p = prompts("png", &format!(r#"{{"segments": [{{{brain}}}]}}"#));
    let file = p.display().to_string();
    let png = tmp("never.png");
    expect_error(
        &["segment", "--segments", &file, "--cpu", "--out", &png],
        "with --segments, --out must end in .dcm (SEG), .nii or .nii.gz",
    );
    expect_error(
        &[
            "segment",
            "--segments",
            &file,
            "--box",
            "1,1,9,9",
            "--out",
            &out,
        ],
        "cannot be used with",
    );
    std::fs::remove_file(&p).ok();
    assert!(!std::path::Path::new(&out).exists(), "no output on error");
}

/// Edges with documented behaviour: `--extent 0` segments the start slice only; a series
/// of one slice gives the single-image result (the same mask as without --propagate).
#[test]
fn propagation_edges_extent_zero_and_one_slice() {
    let start = data("series/brain11/brain_010.dcm").display().to_string();
    let out = tmp("edge.png");
    let (ok, stdout, stderr) = medfm(&[
        "segment",
        &start,
        "--box",
        "45,60,215,240",
        "--propagate",
        "--extent",
        "0",
        "--cpu",
        "--out",
        &out,
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let j: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(j["slices"].as_array().unwrap().len(), 1);
    assert_eq!(j["slice_range"], serde_json::json!([5, 5]));
    // MR_small is alone in its series (tests/data holds no other slice of it).
    let single = data("MR_small.dcm").display().to_string();
    let (ok, stdout, stderr) = medfm(&[
        "segment",
        &single,
        "--box",
        "10,10,50,50",
        "--propagate",
        "--cpu",
        "--out",
        &out,
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let p: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(p["series_slices"], 1);
    let propagated = std::fs::read(&out).unwrap();
    let (ok, stdout, stderr) = medfm(&[
        "segment",
        &single,
        "--box",
        "10,10,50,50",
        "--cpu",
        "--out",
        &out,
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let s: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(p["slices"][0]["area"], s["area"]);
    assert_eq!(
        propagated,
        std::fs::read(&out).unwrap(),
        "the same PNG mask"
    );
    std::fs::remove_file(&out).ok();
}

/// A DICOMweb server that answers a response head and then stalls (issue 34: the client
/// had only a connect timeout, so `medfm query` waited forever): the command fails with
/// a network error once one read has waited 30 s, and says so.
#[test]
fn a_stalled_dicomweb_server_times_out() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\nContent-Length: 100\r\n\r\n[",
            );
            std::thread::sleep(std::time::Duration::from_secs(120));
        }
    });
    let t = std::time::Instant::now();
    let (ok, _, stderr) = medfm(&["query", &format!("http://127.0.0.1:{port}/dicom-web")]);
    let waited = t.elapsed();
    assert!(!ok, "a stalled server cannot answer: {stderr}");
    assert!(
        waited < std::time::Duration::from_secs(60),
        "waited {waited:?}: {stderr}"
    );
    assert!(
        stderr.to_lowercase().contains("timeout") || stderr.to_lowercase().contains("timed out"),
        "{stderr}"
    );
}

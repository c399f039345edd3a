//! NIfTI output of `medfm convert`: nibabel reads back the same values and the DICOM
//! geometry as affine (checked independently with pydicom); non-volumes are refused.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

fn convert(inputs: &[PathBuf], out: &str) -> (bool, String) {
    let o = Command::new(common::medfm_exe())
        .arg("convert")
        .args(inputs)
        .args(["--out", out])
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
    )
}

fn roundtrip(inputs: Vec<PathBuf>, name: &str) {
    let out = std::env::temp_dir()
        .join(format!("medfm-nifti-{}-{name}", std::process::id()))
        .display()
        .to_string();
    let (ok, msg) = convert(&inputs, &out);
    assert!(ok, "{msg}");
    let files: Vec<PathBuf> = inputs
        .iter()
        .flat_map(|p| {
            if p.is_dir() {
                std::fs::read_dir(p)
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .collect()
            } else {
                vec![p.clone()]
            }
        })
        .collect();
    let c = Command::new(check_python())
        .arg(root().join("scripts/check_nifti.py"))
        .arg(&out)
        .args(&files)
        .output()
        .expect("python with nibabel (see scripts/test.sh)");
    let report =
        String::from_utf8_lossy(&c.stdout).into_owned() + &String::from_utf8_lossy(&c.stderr);
    println!("{name}: {}", report.trim());
    assert!(c.status.success(), "{name}: {report}");
    std::fs::remove_file(&out).ok();
}

#[test]
fn ct_series_to_nifti_gz() {
    roundtrip(vec![data("series/ct5n")], "ct5n.nii.gz");
}

#[test]
fn single_ct_slice_to_nifti() {
    roundtrip(vec![data("693_UNCR.dcm")], "ct1.nii");
}

#[test]
fn enhanced_mr_frames_to_nifti() {
    // One multi-frame file: geometry and per-frame rescale from the functional groups.
    roundtrip(vec![data("lut/emri_enhanced.dcm")], "emri_enhanced.nii.gz");
}

#[test]
fn radial_slices_are_not_a_volume() {
    let (ok, msg) = convert(&[data("series/mr700")], "/tmp/never.nii");
    assert!(!ok && msg.contains("different orientations"), "{msg}");
    let (ok, msg) = convert(
        &[data("series/ct5n"), data("MR_small.dcm")],
        "/tmp/never.nii",
    );
    assert!(!ok && msg.contains("two series"), "{msg}");
}

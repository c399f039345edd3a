//! DICOM SEG writer: the files pass dciodvfy (dicom3tools) with no error and highdicom
//! reads back exactly the pixels written.

mod common;

use std::process::Command;

use common::*;
use medfm::dicom::{self, seg};

/// A disc over the middle of the image, plus a single pixel in a corner (bit-order check).
fn disc(rows: usize, cols: usize) -> Vec<u8> {
    let (cy, cx, r) = (
        rows as f32 / 2.0,
        cols as f32 / 2.0,
        rows.min(cols) as f32 / 5.0,
    );
    let mut m: Vec<u8> = (0..rows * cols)
        .map(|i| {
            let (y, x) = ((i / cols) as f32, (i % cols) as f32);
            u8::from((y - cy).powi(2) + (x - cx).powi(2) <= r * r)
        })
        .collect();
    m[cols - 1] = 1;
    m
}

fn validate(file: &str, frame: u32) {
    let bytes = std::fs::read(data(file)).unwrap();
    let image = dicom::read(&bytes).unwrap();
    let (rows, cols) = (image.meta.rows as usize, image.meta.cols as usize);
    let mask = disc(rows, cols);
    let out =
        seg::write_seg(&image, frame, &mask, &seg::SegmentInfo::default()).expect("SEG written");
    let dir = std::env::temp_dir().join(format!("medfm-seg-{}-{file}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let seg_path = dir.join("seg.dcm");
    let mask_path = dir.join("mask.u8");
    std::fs::write(&seg_path, &out).unwrap();
    std::fs::write(&mask_path, &mask).unwrap();

    // Our own reader takes it back.
    let back = dicom::read(&out).expect("our reader parses the SEG");
    assert_eq!(back.meta.modality, "SEG");

    let v = Command::new("dciodvfy")
        .arg(&seg_path)
        .output()
        .expect("dciodvfy (apt-get install dicom3tools)");
    let report =
        String::from_utf8_lossy(&v.stderr).into_owned() + &String::from_utf8_lossy(&v.stdout);
    let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("Error")).collect();
    println!(
        "{file}: dciodvfy {} errors, {} warnings",
        errors.len(),
        report.lines().filter(|l| l.starts_with("Warning")).count()
    );
    assert!(
        errors.is_empty(),
        "{file}: dciodvfy errors:\n{}",
        errors.join("\n")
    );

    let h = Command::new(check_python())
        .arg(root().join("scripts/check_seg.py"))
        .args([&seg_path, &mask_path])
        .args([rows.to_string(), cols.to_string()])
        .output()
        .expect("python with highdicom (see scripts/test.sh)");
    let msg = String::from_utf8_lossy(&h.stdout).into_owned() + &String::from_utf8_lossy(&h.stderr);
    println!("{file}: {}", msg.trim());
    assert!(h.status.success(), "{file}: highdicom check failed: {msg}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn ct_seg_is_valid_and_exact() {
    validate("693_UNCR.dcm", 0);
}

#[test]
fn mr_seg_is_valid_and_exact() {
    validate("MR-SIEMENS-DICOM-WithOverlays.dcm", 0);
}

#[test]
fn enhanced_mr_frame_seg_is_valid_and_exact() {
    validate("emri_small.dcm", 3);
}

#[test]
fn wrong_mask_size_and_frame_are_refused() {
    let bytes = std::fs::read(data("MR_small.dcm")).unwrap();
    let image = dicom::read(&bytes).unwrap();
    let info = seg::SegmentInfo::default();
    assert!(seg::write_seg(&image, 0, &[0u8; 10], &info).is_err());
    assert!(seg::write_seg(&image, 5, &vec![0u8; 64 * 64], &info).is_err());
}

#[test]
fn ultrasound_frame_seg_is_valid_and_exact() {
    // Multi-frame colour ultrasound (YBR_FULL_422 JPEG) without patient geometry: the SEG
    // references the source frame and carries no plane position.
    validate("examples_ybr_color.dcm", 7);
}

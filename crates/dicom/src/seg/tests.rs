//! Unit tests of the SEG writer (the file-level tests: tests/seg.rs).

use super::*;

/// Rows and Columns of a SEG are 16-bit: a source claiming more is refused (it was
/// cast, wrapping to another size).
#[test]
fn sources_wider_than_16_bits_are_refused() {
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/data/MR_small.dcm"
    ))
    .unwrap();
    let mut image = crate::read(&bytes).unwrap();
    image.meta.rows = 70000;
    let mask = vec![0u8; 70000 * image.meta.cols as usize];
    let err = write_seg(&image, 0, &mask, &SegmentInfo::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("at most 65535"), "{err}");
}

#[test]
fn bits_pack_lsb_first_and_even() {
    assert_eq!(pack_bits(&[1, 0, 0, 0, 0, 0, 0, 0, 1]), vec![1, 1]);
    assert_eq!(pack_bits(&[0, 1, 1]), vec![0b110, 0]);
}

/// The same SEG twice is the same bytes (UIDs and dates from the content, never the
/// clock or randomness); another mask, label or source frame gives other UIDs.
#[test]
fn the_same_content_gives_the_same_file_and_other_content_other_uids() {
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/data/MR_small.dcm"
    ))
    .unwrap();
    let image = crate::read(&bytes).unwrap();
    let n = image.meta.rows as usize * image.meta.cols as usize;
    let mut mask = vec![0u8; n];
    mask[n / 2..n / 2 + 40].fill(1);
    let info = SegmentInfo::default();
    let a = write_seg(&image, 0, &mask, &info).unwrap();
    assert_eq!(a, write_seg(&image, 0, &mask, &info).unwrap());
    let uid = |file: &[u8]| {
        let seg = crate::read(file).unwrap();
        (seg.meta.sop_instance_uid, seg.meta.series_instance_uid)
    };
    let (sop, series) = uid(&a);
    assert!(crate::is_uid(&sop) && sop.starts_with("2.25."), "{sop}");
    assert_ne!(sop, series);
    mask[0] = 1;
    let other_mask = uid(&write_seg(&image, 0, &mask, &info).unwrap());
    let relabelled = SegmentInfo {
        label: "Other".into(),
        ..info
    };
    let other_label = uid(&write_seg(&image, 0, &mask, &relabelled).unwrap());
    for other in [&other_mask, &other_label] {
        assert_ne!(other.0, sop);
        assert_ne!(other.1, series);
    }
    assert_ne!(other_mask.0, other_label.0);
}

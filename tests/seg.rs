//! DICOM SEG writer: the files pass dciodvfy (dicom3tools) with no error and highdicom
//! reads back exactly the pixels written.

mod common;

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
    check_seg(file, &out, &mask, rows, cols, None);
}

/// A disc whose radius changes with the slice, so a swapped frame cannot pass.
fn slice_disc(rows: usize, cols: usize, k: usize) -> Vec<u8> {
    let r = 2.0 + k as f32;
    (0..rows * cols)
        .map(|i| {
            let (y, x) = (
                (i / cols) as f32 - rows as f32 / 2.0,
                (i % cols) as f32 - cols as f32 / 2.0,
            );
            u8::from(y * y + x * x <= r * r)
        })
        .collect()
}

#[test]
fn ct_series_volume_seg_is_valid_and_exact() {
    // 5 single-frame CT files (shuffled names): one SEG frame per slice, in slice order.
    let dir = data("series/ct5n");
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| dicom::read(&std::fs::read(e.unwrap().path()).unwrap()).unwrap())
        .collect();
    let volume = dicom::volume::assemble(&files).unwrap();
    let images: Vec<&dicom::DicomImage> = volume.sources.iter().map(|&(i, _)| &files[i]).collect();
    let (rows, cols) = (images[0].meta.rows as usize, images[0].meta.cols as usize);
    let masks: Vec<Vec<u8>> = (0..images.len())
        .map(|k| slice_disc(rows, cols, k))
        .collect();
    let frames: Vec<seg::SegFrame> = images
        .iter()
        .zip(&masks)
        .map(|(&source, mask)| seg::SegFrame {
            source,
            frame: 0,
            mask,
        })
        .collect();
    let sources = images
        .iter()
        .map(|i| serde_json::json!([i.meta.sop_instance_uid, null]))
        .collect();
    check_volume("ct5n", &frames, sources);
}

/// A CT series given as pixels with its instances' UIDs (what a viewer holds: the JS API's
/// openPixels): the SEG over the made instances references the original instances, in
/// their study and frame of reference, and is valid.
#[test]
fn seg_over_pixels_references_the_source_instances() {
    use dicom::pixels::{PixelSpec, Uids, Values};
    let files = read_folder("series/ct5n");
    let refs: Vec<&dicom::DicomImage> = files.iter().map(|(_, i)| i).collect();
    let slices = dicom::series::order(&refs).unwrap();
    let (spacing, _) = dicom::volume::spacing(&refs, &slices).unwrap();
    let ordered: Vec<&dicom::DicomImage> = slices.order.iter().map(|&(i, _)| refs[i]).collect();
    let m = &ordered[0].meta;
    let values: Vec<i16> = ordered
        .iter()
        .flat_map(|i| i.frame(0).unwrap().values.into_iter().map(|v| v as i16))
        .collect();
    let attr = |obj: &dicom_object::DefaultDicomObject, name: &str| {
        let v = obj.element_by_name(name).unwrap().to_str().unwrap();
        v.trim_end_matches(['\0', ' ']).to_string()
    };
    let raw = dicom_object::open_file(&files[0].0).unwrap();
    let (r, c, n) = (slices.row_dir, slices.col_dir, slices.normal);
    let spec = PixelSpec {
        width: m.cols,
        height: m.rows,
        frames: ordered.len() as u32,
        spacing: Some(spacing),
        origin: slices.origin,
        direction: Some([r[0], r[1], r[2], c[0], c[1], c[2], n[0], n[1], n[2]]),
        modality: Some("CT".into()),
        window: None,
        photometric: None,
        description: None,
        uids: Some(Uids {
            study: Some(m.study_instance_uid.clone()),
            series: Some(m.series_instance_uid.clone()),
            sop_class: Some(attr(&raw, "SOPClassUID")),
            instances: Some(
                ordered
                    .iter()
                    .map(|i| i.meta.sop_instance_uid.clone())
                    .collect(),
            ),
            frame_of_reference: Some(attr(&raw, "FrameOfReferenceUID")),
        }),
        patient: Some(dicom::pixels::Patient {
            name: Some(attr(&raw, "PatientName")),
            id: Some(attr(&raw, "PatientID")),
            ..Default::default()
        }),
        study: Some(dicom::pixels::Study {
            date: Some("20200304".into()),
            accession: Some("ACC42".into()),
            ..Default::default()
        }),
    };
    let made: Vec<dicom::DicomImage> = dicom::pixels::instances(&spec, Values::I16(&values))
        .unwrap()
        .iter()
        .map(|b| dicom::read(b).unwrap())
        .collect();
    let (rows, cols) = (m.rows as usize, m.cols as usize);
    let masks: Vec<Vec<u8>> = (0..made.len()).map(|k| slice_disc(rows, cols, k)).collect();
    let frames: Vec<seg::SegFrame> = made
        .iter()
        .zip(&masks)
        .map(|(source, mask)| seg::SegFrame {
            source,
            frame: 0,
            mask,
        })
        .collect();
    let sources = ordered
        .iter()
        .map(|i| serde_json::json!([i.meta.sop_instance_uid, null]))
        .collect();
    check_volume("ct5n_pixels", &frames, sources);
    let out = seg::write_seg_frames(&frames, &seg::SegmentInfo::default()).unwrap();
    let path = std::env::temp_dir().join(format!("medfm-pixels-seg-{}.dcm", std::process::id()));
    std::fs::write(&path, &out).unwrap();
    let back = dicom_object::open_file(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(
        attr(&back, "FrameOfReferenceUID"),
        attr(&raw, "FrameOfReferenceUID")
    );
    assert_eq!(attr(&back, "StudyInstanceUID"), m.study_instance_uid);
    // The patient and study given with the pixels: the SEG is filed with the images.
    assert_eq!(attr(&back, "PatientID"), attr(&raw, "PatientID"));
    assert_eq!(attr(&back, "PatientName"), attr(&raw, "PatientName"));
    assert_eq!(attr(&back, "StudyDate"), "20200304");
    assert_eq!(attr(&back, "AccessionNumber"), "ACC42");
}

/// Two segments over one series, overlapping on two slices, with labels and colours: one
/// SEG (dciodvfy clean); highdicom reads every frame of every segment back exactly, with
/// its source instance, label and colour.
#[test]
fn two_segment_seg_is_valid_and_exact() {
    let dir = data("series/ct5n");
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| dicom::read(&std::fs::read(e.unwrap().path()).unwrap()).unwrap())
        .collect();
    let volume = dicom::volume::assemble(&files).unwrap();
    let images: Vec<&dicom::DicomImage> = volume.sources.iter().map(|&(i, _)| &files[i]).collect();
    let (rows, cols) = (images[0].meta.rows as usize, images[0].meta.cols as usize);
    // Segment 1: discs on slices 0..=2; segment 2: a band of columns on slices 2..=4.
    let first: Vec<Vec<u8>> = (0..3).map(|k| slice_disc(rows, cols, k)).collect();
    let second: Vec<Vec<u8>> = (2..5)
        .map(|k| {
            (0..rows * cols)
                .map(|i| u8::from(i % cols < 10 + k))
                .collect()
        })
        .collect();
    fn frames<'a>(
        images: &[&'a dicom::DicomImage],
        range: std::ops::Range<usize>,
        masks: &'a [Vec<u8>],
    ) -> Vec<seg::SegFrame<'a>> {
        range
            .zip(masks)
            .map(|(k, mask)| seg::SegFrame {
                source: images[k],
                frame: 0,
                mask,
            })
            .collect()
    }
    let colors = [[230, 60, 60], [70, 130, 240]];
    let segments = vec![
        seg::Segment {
            info: seg::SegmentInfo {
                label: "Liver".into(),
                color: Some(colors[0]),
                ..Default::default()
            },
            frames: frames(&images, 0..3, &first),
        },
        seg::Segment {
            info: seg::SegmentInfo {
                label: "Spleen".into(),
                color: Some(colors[1]),
                ..Default::default()
            },
            frames: frames(&images, 2..5, &second),
        },
    ];
    let out = seg::write_seg_segments(&segments).expect("SEG written");
    let masks: Vec<u8> = first.iter().chain(&second).flatten().copied().collect();
    let sources: Vec<serde_json::Value> = (0..3)
        .map(|k| (k, 1))
        .chain((2..5).map(|k| (k, 2)))
        .map(|(k, s)| serde_json::json!([images[k].meta.sop_instance_uid, null, s]))
        .collect();
    let described = serde_json::json!([
        {"label": "Liver", "color": colors[0]},
        {"label": "Spleen", "color": colors[1]},
    ]);
    check_seg_segments(
        "two-segments",
        &out,
        &masks,
        rows,
        cols,
        Some(sources.into()),
        Some(described),
    );
    // A segment without a frame, or no segment at all, is refused.
    let empty = seg::Segment {
        info: seg::SegmentInfo::default(),
        frames: Vec::new(),
    };
    let err = seg::write_seg_segments(&[segments[0].clone(), empty])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("segment 2") && err.contains("no frame"),
        "{err}"
    );
    assert!(seg::write_seg_segments(&[]).is_err());
}

/// The CIELab of a few sRGB colours: black, white and grey on the neutral axis, the sRGB
/// primaries' known L*a*b* (D65) to a tenth.
#[test]
fn cielab_of_srgb_colours() {
    let lab = |rgb| {
        let v = seg::cielab(rgb);
        (
            f64::from(v[0]) * 100.0 / 65535.0,
            f64::from(v[1]) * 255.0 / 65535.0 - 128.0,
            f64::from(v[2]) * 255.0 / 65535.0 - 128.0,
        )
    };
    assert_eq!(seg::cielab([0, 0, 0]), [0, 32896, 32896]);
    let (l, a, b) = lab([255, 255, 255]);
    assert!((l - 100.0).abs() < 0.01 && a.abs() < 0.01 && b.abs() < 0.01);
    let (l, a, b) = lab([128, 128, 128]);
    assert!(
        (l - 53.59).abs() < 0.05 && a.abs() < 0.01 && b.abs() < 0.01,
        "{l}"
    );
    for (rgb, want) in [
        ([255, 0, 0], (53.24, 80.09, 67.20)),
        ([0, 255, 0], (87.73, -86.18, 83.18)),
        ([0, 0, 255], (32.30, 79.19, -107.86)),
    ] {
        let (l, a, b) = lab(rgb);
        assert!(
            (l - want.0).abs() < 0.1 && (a - want.1).abs() < 0.1 && (b - want.2).abs() < 0.1,
            "{rgb:?}: {l} {a} {b} vs {want:?}"
        );
    }
}

#[test]
fn enhanced_mr_volume_seg_is_valid_and_exact() {
    // Every frame of an Enhanced MR (geometry in per-frame functional groups).
    let image = dicom::read(&std::fs::read(data("lut/emri_enhanced.dcm")).unwrap()).unwrap();
    let (rows, cols) = (image.meta.rows as usize, image.meta.cols as usize);
    let n = image.meta.frames as usize;
    let masks: Vec<Vec<u8>> = (0..n).map(|k| slice_disc(rows, cols, k)).collect();
    let frames: Vec<seg::SegFrame> = masks
        .iter()
        .enumerate()
        .map(|(k, mask)| seg::SegFrame {
            source: &image,
            frame: k as u32,
            mask,
        })
        .collect();
    let sources = (0..n)
        .map(|k| serde_json::json!([image.meta.sop_instance_uid, k + 1]))
        .collect();
    check_volume("emri_enhanced", &frames, sources);
}

/// Write one SEG over `frames` and [`check`] it (`sources`: per frame, as there).
fn check_volume(label: &str, frames: &[seg::SegFrame], sources: Vec<serde_json::Value>) {
    let m = &frames[0].source.meta;
    let out = seg::write_seg_frames(frames, &seg::SegmentInfo::default()).expect("SEG written");
    let masks: Vec<u8> = frames.iter().flat_map(|f| f.mask.iter().copied()).collect();
    let (rows, cols) = (m.rows as usize, m.cols as usize);
    check_seg(label, &out, &masks, rows, cols, Some(sources.into()));
}

#[test]
fn volume_seg_refuses_mixed_series_and_missing_geometry() {
    let info = seg::SegmentInfo::default();
    let mr = dicom::read(&std::fs::read(data("MR_small.dcm")).unwrap()).unwrap();
    let ct = dicom::read(&std::fs::read(data("CT_small.dcm")).unwrap()).unwrap();
    let m = vec![0u8; 64 * 64];
    let err = seg::write_seg_frames(
        &[
            seg::SegFrame {
                source: &mr,
                frame: 0,
                mask: &m,
            },
            seg::SegFrame {
                source: &ct,
                frame: 0,
                mask: &m,
            },
        ],
        &info,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("another study or series") || err.contains("source is"),
        "{err}"
    );
    // emri_small (in a frame of reference) has no per-frame geometry: one frame is fine, a
    // volume is refused.
    let emri = dicom::read(&std::fs::read(data("emri_small.dcm")).unwrap()).unwrap();
    let err = seg::write_seg_frames(
        &[
            seg::SegFrame {
                source: &emri,
                frame: 0,
                mask: &m,
            },
            seg::SegFrame {
                source: &emri,
                frame: 1,
                mask: &m,
            },
        ],
        &info,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("needs the position"), "{err}");
    assert!(seg::write_seg_frames(&[], &info).is_err());
    // Radial slices (different orientations) are no volume.
    let radial: Vec<_> = std::fs::read_dir(data("series/mr700"))
        .unwrap()
        .map(|e| dicom::read(&std::fs::read(e.unwrap().path()).unwrap()).unwrap())
        .collect();
    let m = vec![0u8; (radial[0].meta.rows * radial[0].meta.cols) as usize];
    let frames: Vec<_> = radial
        .iter()
        .map(|source| seg::SegFrame {
            source,
            frame: 0,
            mask: &m,
        })
        .collect();
    let err = seg::write_seg_frames(&frames, &info)
        .unwrap_err()
        .to_string();
    assert!(err.contains("orientation"), "{err}");
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

/// Frames of an ultrasound cine (no frame of reference, no positions): one SEG over them,
/// each frame referencing its cine frame; dciodvfy clean, highdicom reads each back exactly.
#[test]
fn ultrasound_cine_seg_is_valid_and_exact() {
    let cine = dicom::read(&std::fs::read(data("examples_ybr_color.dcm")).unwrap()).unwrap();
    let (rows, cols) = (cine.meta.rows as usize, cine.meta.cols as usize);
    let masks: Vec<Vec<u8>> = (0..5).map(|k| slice_disc(rows, cols, 4 * k)).collect();
    let frames: Vec<seg::SegFrame> = (0..5)
        .map(|k| seg::SegFrame {
            source: &cine,
            frame: 10 + k as u32,
            mask: &masks[k],
        })
        .collect();
    let sources = (0..5)
        .map(|k| serde_json::json!([cine.meta.sop_instance_uid, 11 + k]))
        .collect();
    check_volume("cine", &frames, sources);
}

#[test]
fn ultrasound_frame_seg_is_valid_and_exact() {
    // Multi-frame colour ultrasound (YBR_FULL_422 JPEG) without patient geometry: the SEG
    // references the source frame and carries no plane position.
    validate("examples_ybr_color.dcm", 7);
}

//! Pixels a viewer has already decoded, made into DICOM instances (`dicom::pixels`, the
//! JS API's `openPixels`): a real CT series given as its modality values, spacing, origin
//! and direction comes back as the same frames, in the same order, with the same spacing
//! and the same model inputs as the files; float values round-trip within the stated
//! bound; bad input is refused with what is wrong.

mod common;

use common::*;
use medfm::dicom::pixels::{self, Patient, PixelSpec, Study, Uids, Values, Window};
use medfm::dicom::{self, DicomImage, series, volume};
use medfm::pipeline::preprocess;

fn read_all(files: &[Vec<u8>]) -> Vec<DicomImage> {
    files.iter().map(|b| dicom::read(b).unwrap()).collect()
}

fn spec(width: u32, height: u32, frames: u32) -> PixelSpec {
    PixelSpec {
        width,
        height,
        frames,
        spacing: None,
        origin: None,
        direction: None,
        modality: None,
        window: None,
        photometric: None,
        description: None,
        uids: None,
        patient: None,
        study: None,
    }
}

/// The CT series of tests/data/series/ct5n in its order: images, slices, spacing.
fn ct_series() -> (Vec<DicomImage>, series::Slices, [f64; 3]) {
    let images: Vec<DicomImage> = read_folder("series/ct5n")
        .into_iter()
        .map(|(_, i)| i)
        .collect();
    let refs: Vec<&DicomImage> = images.iter().collect();
    let slices = series::order(&refs).unwrap();
    let (spacing, _) = volume::spacing(&refs, &slices).unwrap();
    (images, slices, spacing)
}

#[test]
fn a_ct_series_as_pixels_gives_the_same_frames_order_spacing_and_model_inputs() {
    let (images, slices, spacing) = ct_series();
    let first = &images[slices.order[0].0];
    let (rows, cols) = (first.meta.rows, first.meta.cols);
    let frames: Vec<_> = slices
        .order
        .iter()
        .map(|&(i, f)| images[i].frame(f).unwrap())
        .collect();
    let values: Vec<f32> = frames
        .iter()
        .flat_map(|f| f.values.iter().copied())
        .collect();
    let (c, w) = first.meta.window.unwrap();
    let mut s = spec(cols, rows, frames.len() as u32);
    // Cornerstone3D's order: x (column) spacing, y (row) spacing, slice spacing.
    s.spacing = Some([spacing[0], spacing[1], spacing[2]]);
    s.origin = slices.origin;
    let (r, cd, n) = (slices.row_dir, slices.col_dir, slices.normal);
    s.direction = Some([r[0], r[1], r[2], cd[0], cd[1], cd[2], n[0], n[1], n[2]]);
    s.modality = Some("CT".into());
    s.window = Some(Window {
        center: c,
        width: w,
    });
    let as_i16: Vec<i16> = values.iter().map(|&v| v as i16).collect();
    assert!(
        values.iter().zip(&as_i16).all(|(&v, &i)| v == i as f32),
        "CT values are integers of 16 bits"
    );
    for (what, given) in [
        ("Float32", Values::F32(&values)),
        ("Int16", Values::I16(&as_i16)),
    ] {
        let made = read_all(&pixels::instances(&s, given).unwrap());
        let refs: Vec<&DicomImage> = made.iter().rev().collect(); // any input order
        let order = series::order(&refs).unwrap();
        let (made_spacing, _) = volume::spacing(&refs, &order).unwrap();
        for k in 0..3 {
            assert!(
                (made_spacing[k] - spacing[k]).abs() < 1e-6,
                "{what}: spacing {made_spacing:?} vs {spacing:?}"
            );
        }
        assert_eq!(order.order.len(), frames.len());
        for (k, &(i, f)) in order.order.iter().enumerate() {
            let img = refs[i];
            let got = img.frame(f).unwrap();
            assert_eq!(got.values, frames[k].values, "{what}: frame {k} values");
            assert_eq!(img.meta.window, first.meta.window, "{what}: window");
            assert_eq!(img.meta.modality, "CT");
            let (src, _) = slices.order[k];
            let a = preprocess(&frames[k], &images[src].meta).unwrap();
            let b = preprocess(&got, &img.meta).unwrap();
            assert_eq!(a.pixels, b.pixels, "{what}: frame {k} model input");
            assert_eq!((a.clip, a.warnings), (b.clip, b.warnings));
        }
    }
}

#[test]
fn float_values_come_back_within_the_stated_bound_and_rgb_as_given() {
    let (w, h) = (37u32, 23u32);
    let values: Vec<f32> = (0..w * h).map(|i| (i as f32) * 0.0137 - 7.5).collect();
    let (lo, hi) = (values[0] as f64, values[values.len() - 1] as f64);
    let mut s = spec(w, h, 1);
    s.modality = Some("PT".into());
    let img = dicom::read(&pixels::instances(&s, Values::F32(&values)).unwrap()[0]).unwrap();
    let got = img.frame(0).unwrap().values;
    let bound = (hi - lo) / f64::from(1u32 << 25) * 1.01 + 1e-6;
    let worst = got
        .iter()
        .zip(&values)
        .map(|(a, b)| (*a as f64 - *b as f64).abs())
        .fold(0.0, f64::max);
    assert!(worst <= bound, "worst {worst} > {bound}");

    let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 256) as u8).collect();
    let mut s = spec(w, h, 1);
    s.photometric = Some("RGB".into());
    let img = dicom::read(&pixels::instances(&s, Values::U8(&rgb)).unwrap()[0]).unwrap();
    let f = img.frame(0).unwrap();
    assert_eq!(f.channels, 3);
    assert_eq!(f.values, rgb.iter().map(|&v| v as f32).collect::<Vec<_>>());
}

#[test]
fn given_uids_are_kept_and_made_ones_are_stable_and_distinct() {
    let values = vec![1u16; 8 * 8 * 2];
    let mut s = spec(8, 8, 2);
    let a = read_all(&pixels::instances(&s, Values::U16(&values)).unwrap());
    let b = read_all(&pixels::instances(&s, Values::U16(&values)).unwrap());
    assert_eq!(
        a[0].meta.sop_instance_uid, b[0].meta.sop_instance_uid,
        "the same pixels, the same instances"
    );
    assert_ne!(a[0].meta.sop_instance_uid, a[1].meta.sop_instance_uid);
    assert_eq!(a[0].meta.series_instance_uid, a[1].meta.series_instance_uid);
    assert!(
        dicom::is_uid(&a[0].meta.sop_instance_uid)
            && a[0].meta.sop_instance_uid.starts_with("2.25.")
    );
    let other = read_all(&pixels::instances(&s, Values::U16(&vec![2u16; 128])).unwrap());
    assert_ne!(
        a[0].meta.series_instance_uid, other[0].meta.series_instance_uid,
        "other pixels, another series"
    );
    s.uids = Some(Uids {
        study: Some("1.2.3".into()),
        series: Some("1.2.3.4".into()),
        sop_class: Some("1.2.840.10008.5.1.4.1.1.2".into()),
        instances: Some(vec!["1.2.3.4.1".into(), "1.2.3.4.2".into()]),
        frame_of_reference: None,
    });
    let given = read_all(&pixels::instances(&s, Values::U16(&values)).unwrap());
    assert_eq!(given[1].meta.sop_instance_uid, "1.2.3.4.2");
    assert_eq!(given[1].meta.series_instance_uid, "1.2.3.4");
    assert_eq!(given[1].meta.study_instance_uid, "1.2.3");
}

#[test]
fn bad_pixels_are_refused_with_what_is_wrong() {
    let v = vec![0i16; 16];
    let refuse = |s: &PixelSpec, values: Values| -> String {
        let e = pixels::instances(s, values).unwrap_err();
        assert_eq!(e.kind(), medfm::ErrorKind::BadInput);
        e.to_string()
    };
    let ok = spec(4, 4, 1);
    assert!(
        refuse(&spec(4, 5, 1), Values::I16(&v))
            .contains("data has 16 values; 4 x 5 x 1 frame(s) needs 20")
    );
    assert!(refuse(&spec(0, 4, 1), Values::I16(&v)).contains("width 0"));
    let mut s = ok.clone();
    s.window = Some(Window {
        center: f64::NAN,
        width: 400.0,
    });
    assert!(refuse(&s, Values::I16(&v)).contains("window center NaN"));
    let mut s = ok.clone();
    s.window = Some(Window {
        center: 40.0,
        width: 0.0,
    });
    assert!(refuse(&s, Values::I16(&v)).contains("width at least 1"));
    let mut s = ok.clone();
    s.direction = Some([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
    assert!(refuse(&s, Values::I16(&v)).contains("orthonormal"));
    let mut s = ok.clone();
    s.spacing = Some([1.0, -1.0, 1.0]);
    assert!(refuse(&s, Values::I16(&v)).contains("positive"));
    let mut s = ok.clone();
    s.photometric = Some("RGB".into());
    assert!(refuse(&s, Values::I16(&v)).contains("Uint8Array"));
    let mut s = ok.clone();
    s.modality = Some("ct; drop".into());
    assert!(refuse(&s, Values::I16(&v)).contains("modality"));
    let mut s = ok.clone();
    s.uids = Some(Uids {
        series: Some("1.2/../3".into()),
        ..Uids::default()
    });
    assert!(refuse(&s, Values::I16(&v)).contains("not a DICOM UID"));
    let mut s = ok.clone();
    s.uids = Some(Uids {
        instances: Some(vec!["1.2".into(), "1.3".into()]),
        ..Uids::default()
    });
    assert!(refuse(&s, Values::I16(&v)).contains("2 UIDs for 1 frame"));
    let mut f = vec![0f32; 16];
    f[5] = f32::NAN;
    assert!(refuse(&ok, Values::F32(&f)).contains("data[5] is NaN"));
    // Patient and study attributes must be what their VR allows.
    let with = |patient: Patient, study: Study| PixelSpec {
        patient: Some(patient),
        study: Some(study),
        ..ok.clone()
    };
    let cases = [
        (
            with(
                Patient {
                    birth_date: Some("1970-01-01".into()),
                    ..Patient::default()
                },
                Study::default(),
            ),
            "patient.birthDate \"1970-01-01\": a date as YYYYMMDD",
        ),
        (
            with(
                Patient {
                    sex: Some("male".into()),
                    ..Patient::default()
                },
                Study::default(),
            ),
            "patient.sex \"male\": M, F or O",
        ),
        (
            with(
                Patient {
                    id: Some("a\\b".into()),
                    ..Patient::default()
                },
                Study::default(),
            ),
            "patient.id",
        ),
        (
            with(
                Patient::default(),
                Study {
                    accession: Some("12345678901234567".into()),
                    ..Study::default()
                },
            ),
            "study.accession \"12345678901234567\": at most 16 characters",
        ),
        (
            with(
                Patient::default(),
                Study {
                    time: Some("12:30".into()),
                    ..Study::default()
                },
            ),
            "study.time \"12:30\": a time as HHMMSS",
        ),
        (
            with(
                Patient {
                    name: Some("x".repeat(65)),
                    ..Patient::default()
                },
                Study::default(),
            ),
            "patient.name",
        ),
    ];
    for (s, want) in cases {
        let got = refuse(&s, Values::I16(&v));
        assert!(got.contains(want), "{got:?} should say {want:?}");
    }
}

#[test]
fn patient_and_study_are_written_into_every_instance() {
    let values = vec![7i16; 4 * 4 * 2];
    let s = PixelSpec {
        patient: Some(Patient {
            name: Some("Doe^Jane".into()),
            id: Some("LUNG1-001".into()),
            birth_date: Some("19500102".into()),
            sex: Some("F".into()),
        }),
        study: Some(Study {
            date: Some("20200304".into()),
            time: Some("101112.5".into()),
            id: Some("S1".into()),
            accession: Some("ACC42".into()),
            referring_physician: Some("Who^Doctor".into()),
            description: Some("CT chest".into()),
        }),
        ..spec(4, 4, 2)
    };
    for bytes in pixels::instances(&s, Values::I16(&values)).unwrap() {
        let obj = dicom_object::from_reader(std::io::Cursor::new(&bytes[128..])).unwrap();
        let get = |name: &str| {
            obj.element_by_name(name)
                .unwrap()
                .to_str()
                .unwrap()
                .trim_end()
                .to_string()
        };
        assert_eq!(get("PatientName"), "Doe^Jane");
        assert_eq!(get("PatientID"), "LUNG1-001");
        assert_eq!(get("PatientBirthDate"), "19500102");
        assert_eq!(get("PatientSex"), "F");
        assert_eq!(get("StudyDate"), "20200304");
        assert_eq!(get("StudyTime"), "101112.5");
        assert_eq!(get("StudyID"), "S1");
        assert_eq!(get("AccessionNumber"), "ACC42");
        assert_eq!(get("ReferringPhysicianName"), "Who^Doctor");
        assert_eq!(get("StudyDescription"), "CT chest");
    }
    // Absent, they are written empty (type 2 attributes of the Patient and Study modules).
    let bytes = &pixels::instances(&spec(4, 4, 1), Values::I16(&values[..16])).unwrap()[0];
    let obj = dicom_object::from_reader(std::io::Cursor::new(&bytes[128..])).unwrap();
    assert_eq!(
        obj.element_by_name("PatientID")
            .unwrap()
            .to_str()
            .unwrap()
            .trim(),
        ""
    );
}

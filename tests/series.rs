//! The series rule (`dicom::series`) on real files: slices ordered along the normal
//! whatever the input order, non-volumes refused by `order` with the instance named and
//! listed by `group` with the reason, every frame listed once in first-seen series order;
//! the series-wide intensity clip of the propagation recipe against numpy.

mod common;

use std::path::Path;

use common::*;
use medfm::dicom::{self, DicomImage, series};
use medfm::pipeline::preprocess;

fn read(path: &Path) -> DicomImage {
    dicom::read(&std::fs::read(path).unwrap()).unwrap()
}

fn folder(name: &str) -> Vec<DicomImage> {
    let mut paths: Vec<_> = std::fs::read_dir(data(name))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    paths.iter().map(|p| read(p)).collect()
}

/// Position along the normal, computed here from the raw attributes with dicom-object.
fn along_normal(path: &Path) -> f64 {
    let obj = dicom_object::open_file(path).unwrap();
    let get = |name: &str| -> Vec<f64> {
        obj.element_by_name(name)
            .unwrap()
            .to_multi_float64()
            .unwrap()
    };
    let (o, p) = (get("ImageOrientationPatient"), get("ImagePositionPatient"));
    let n = [
        o[1] * o[5] - o[2] * o[4],
        o[2] * o[3] - o[0] * o[5],
        o[0] * o[4] - o[1] * o[3],
    ];
    n[0] * p[0] + n[1] * p[1] + n[2] * p[2]
}

#[test]
fn ct_slices_are_ordered_along_the_normal_whatever_the_input_order() {
    let images = folder("series/ct5n");
    let mut paths: Vec<_> = std::fs::read_dir(data("series/ct5n"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    let mut expected: Vec<(f64, String)> = paths
        .iter()
        .zip(&images)
        .map(|(p, img)| (along_normal(p), img.meta.sop_instance_uid.clone()))
        .collect();
    expected.sort_by(|a, b| a.0.total_cmp(&b.0));
    let uids = |refs: &[&DicomImage], s: &series::Slices| -> Vec<String> {
        s.order
            .iter()
            .map(|&(i, f)| {
                assert_eq!(f, 0);
                refs[i].meta.sop_instance_uid.clone()
            })
            .collect()
    };
    let forward: Vec<&DicomImage> = images.iter().collect();
    let backward: Vec<&DicomImage> = images.iter().rev().collect();
    let a = series::order(&forward).unwrap();
    let b = series::order(&backward).unwrap();
    let want: Vec<String> = expected.iter().map(|e| e.1.clone()).collect();
    assert_eq!(uids(&forward, &a), want);
    assert_eq!(uids(&backward, &b), want);
    let along = a.along.clone().unwrap();
    for (got, (exp, _)) in along.iter().zip(&expected) {
        assert!((got - exp).abs() < 1e-9, "{got} vs {exp}");
    }
    assert!(along.windows(2).all(|w| w[1] > w[0]), "{along:?}");
    assert!(a.warnings.is_empty(), "{:?}", a.warnings);
    // The browsing list of the same images is the same order.
    let g = series::group(&backward);
    assert_eq!(g.len(), 1);
    let listed: Vec<String> = g[0]
        .frames
        .iter()
        .map(|&(i, _)| backward[i].meta.sop_instance_uid.clone())
        .collect();
    assert_eq!(listed, want);
}

#[test]
fn radial_slices_are_refused_as_a_volume_and_listed_by_instance_number() {
    let images = folder("series/mr700");
    let refs: Vec<&DicomImage> = images.iter().collect();
    let e = series::order(&refs).unwrap_err().to_string();
    assert!(e.contains("different orientations"), "{e}");
    assert!(
        images
            .iter()
            .any(|img| e.contains(&img.meta.sop_instance_uid)),
        "the error names an instance: {e}"
    );
    let g = series::group(&refs);
    assert_eq!(g.len(), 1);
    assert_eq!(g[0].frames.len(), images.len());
    assert!(
        g[0].warnings.iter().any(|w| w.contains("InstanceNumber")),
        "{:?}",
        g[0].warnings
    );
    let numbers: Vec<i32> = g[0]
        .frames
        .iter()
        .map(|&(i, _)| images[i].meta.instance_number.unwrap())
        .collect();
    assert!(numbers.windows(2).all(|w| w[0] <= w[1]), "{numbers:?}");
}

/// A slice without ImagePositionPatient among placed ones, or a slice of another size, is
/// no volume: refused naming the instance; browsing still lists every slice.
#[test]
fn partial_positions_and_mixed_sizes_are_refused_naming_the_instance() {
    use dicom_dictionary_std::tags;
    let mut paths: Vec<_> = std::fs::read_dir(data("series/brain11"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect();
    paths.sort();
    let mut images: Vec<DicomImage> = paths.iter().map(|p| read(p)).collect();
    let unplaced = edited(&paths[4], |o| {
        o.remove_element(tags::IMAGE_POSITION_PATIENT);
    });
    images[4] = dicom::read(&unplaced).unwrap();
    let refs: Vec<&DicomImage> = images.iter().collect();
    let e = series::order(&refs).unwrap_err().to_string();
    assert!(e.contains("has no ImagePositionPatient"), "{e}");
    assert!(e.contains(&images[4].meta.sop_instance_uid), "{e}");
    assert_eq!(series::group(&refs)[0].frames.len(), images.len());
    // No slice placed at all: InstanceNumber order with a warning (cine, captures).
    let unplaced: Vec<DicomImage> = paths
        .iter()
        .map(|p| {
            dicom::read(&edited(p, |o| {
                o.remove_element(tags::IMAGE_POSITION_PATIENT);
            }))
            .unwrap()
        })
        .collect();
    let refs: Vec<&DicomImage> = unplaced.iter().collect();
    let s = series::order(&refs).unwrap();
    assert!(
        s.warnings.iter().any(|w| w.contains("InstanceNumber")),
        "{:?}",
        s.warnings
    );
    // A 64x64 slice in the brain's series and plane.
    let brain = dicom_object::open_file(&paths[0]).unwrap();
    let small = edited(&data("MR_small.dcm"), |o| {
        for tag in [
            tags::SERIES_INSTANCE_UID,
            tags::IMAGE_ORIENTATION_PATIENT,
            tags::FRAME_OF_REFERENCE_UID,
        ] {
            o.put(brain.element(tag).unwrap().clone());
        }
    });
    let mut images: Vec<DicomImage> = paths.iter().map(|p| read(p)).collect();
    images.push(dicom::read(&small).unwrap());
    let refs: Vec<&DicomImage> = images.iter().collect();
    let e = series::order(&refs).unwrap_err().to_string();
    assert!(e.contains("different sizes"), "{e}");
    assert!(e.contains(&images[11].meta.sop_instance_uid), "{e}");
}

#[test]
fn group_lists_every_frame_once_in_first_seen_series_order() {
    let mut images = folder("series/ct5n");
    images.insert(2, read(&data("emri_small.dcm")));
    images.push(read(&data("MR_small.dcm")));
    let refs: Vec<&DicomImage> = images.iter().collect();
    let g = series::group(&refs);
    let uid = |i: usize| images[i].meta.series_instance_uid.clone();
    assert_eq!(
        g.iter().map(|s| s.uid.clone()).collect::<Vec<_>>(),
        vec![uid(0), uid(2), uid(images.len() - 1)]
    );
    let mut all: Vec<(usize, u32)> = g.iter().flat_map(|s| s.frames.clone()).collect();
    all.sort();
    let expected: Vec<(usize, u32)> = images
        .iter()
        .enumerate()
        .flat_map(|(i, img)| (0..img.meta.frames).map(move |f| (i, f)))
        .collect();
    assert_eq!(all, expected);
    // The multi-frame Enhanced MR: its frames in space (per-frame positions).
    assert_eq!(g[1].frames.len(), images[2].meta.frames as usize);
    assert!(series::order(&[]).is_err());
    assert!(series::order(&[&images[0], &images[2]]).is_err());
}

/// `Series::read_files` (how every front reads a folder, on several threads) gives each
/// file's result in the files' order, the same as reading them one by one: the 48 slices of
/// the real CT in shuffled order, a file that is not DICOM and a missing one among them.
#[test]
fn read_files_gives_each_files_result_in_their_order() {
    let dir = medfm::fs::TempDir::new("read-files").unwrap();
    let junk = dir.path().join("notes.txt");
    std::fs::write(&junk, b"not a DICOM file").unwrap();
    let mut files: Vec<_> = std::fs::read_dir(data("ct-lung1/series"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    // A fixed shuffle: the order given, not the names', is the order returned.
    files.reverse();
    files.swap(3, 40);
    files.insert(7, junk);
    files.insert(20, dir.path().join("missing.dcm"));
    let read = medfm::jobs::Series::read_files(&files);
    assert_eq!(read.len(), files.len());
    for (file, got) in files.iter().zip(&read) {
        match (medfm::jobs::Series::read_file(file), got) {
            (Ok(want), Ok(got)) => {
                assert_eq!(want.meta.sop_instance_uid, got.meta.sop_instance_uid);
                assert_eq!(want.frame(0).unwrap().values, got.frame(0).unwrap().values);
            }
            (Err(want), Err(got)) => {
                assert_eq!(want.kind(), got.kind(), "{got}");
                assert_eq!(want.to_string(), got.to_string());
            }
            (want, got) => panic!(
                "{}: ok {} one by one, ok {} by read_files",
                file.display(),
                want.is_ok(),
                got.is_ok()
            ),
        }
    }
    assert_eq!(read.iter().filter(|r| r.is_ok()).count(), 48);
    let kind = |i: usize| read[i].as_ref().err().map(|e| e.kind());
    assert_eq!(kind(7), Some(medfm::ErrorKind::BadInput));
    assert_eq!(kind(20), Some(medfm::ErrorKind::Io));
}

/// The series clip is numpy's: `np.percentile(v[v > v.min()], [0.5, 99.5])` over every
/// voxel of the series (pydicom reads the files independently).
#[test]
fn the_series_clip_is_numpys_percentiles_of_every_voxel() {
    let images: Vec<DicomImage> = std::fs::read_dir(data("series/brain11"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .map(|p| read(&p))
        .collect();
    let refs: Vec<&DicomImage> = images.iter().collect();
    let order = series::order(&refs).unwrap().order;
    let frames: Vec<_> = order
        .iter()
        .map(|&(i, f)| images[i].frame(f).unwrap())
        .collect();
    let (clip, warnings) = preprocess::series_clip(&frames, &images[order[0].0].meta);
    assert!(warnings.is_empty(), "{warnings:?}");
    let clip = clip.unwrap();
    let script = r#"
import glob, sys, numpy as np, pydicom
from pydicom.pixels import apply_modality_lut
def values(f):
    ds = pydicom.dcmread(f)
    return apply_modality_lut(ds.pixel_array, ds).astype(np.float64).ravel()
v = np.concatenate([values(f) for f in sorted(glob.glob(sys.argv[1] + "/*.dcm"))])
print(*np.percentile(v[v > v.min()], [0.5, 99.5]))
"#;
    let out = std::process::Command::new(check_python())
        .args(["-c", script])
        .arg(data("series/brain11"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let want: Vec<f64> = text
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    assert!(
        (clip.lo as f64 - want[0]).abs() < 1e-3,
        "{clip:?} vs {want:?}"
    );
    assert!(
        (clip.hi as f64 - want[1]).abs() < 1e-3,
        "{clip:?} vs {want:?}"
    );
    // Not a per-slice clip: some slices' own clips differ from the series'.
    let differ = (0..frames.len())
        .filter(|&i| {
            let own = preprocess::preprocess(&frames[i], &images[order[i].0].meta)
                .unwrap()
                .clip
                .unwrap();
            own != clip
        })
        .count();
    assert!(differ > 0, "every slice's own clip is the series clip");
}

/// An instance given twice (the same file opened twice, a copy under another name) is one
/// instance everywhere, by one rule (`series::first_copies`): the slice order, the
/// browsing groups and the volume list it once, with a warning naming it.
#[test]
fn an_instance_given_twice_counts_once() {
    let mut images = folder("series/ct5n");
    let n = images.len();
    images.push(read(&data("series/ct5n").join(second_file("series/ct5n"))));
    let copy = images[n].meta.sop_instance_uid.clone();
    let refs: Vec<&DicomImage> = images.iter().collect();
    let once = |s: &[String]| s.iter().filter(|w| w.contains(&copy)).count() == 1;

    let slices = series::order(&refs).unwrap();
    assert_eq!(slices.order.len(), n, "{:?}", slices.order);
    assert!(
        slices.order.iter().all(|&(i, _)| i < n),
        "the first copy is used"
    );
    assert!(once(&slices.warnings), "{:?}", slices.warnings);

    let groups = series::group(&refs);
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].frames.len(), n);
    assert_eq!(groups[0].copies, vec![n]);
    assert!(once(&groups[0].warnings), "{:?}", groups[0].warnings);

    let volume = dicom::volume::assemble(&images).unwrap();
    assert_eq!(volume.slices, n, "one slice per instance");
    assert!(once(&volume.warnings), "{:?}", volume.warnings);

    // The jobs' series (CLI, node, Python): the copy is not held.
    let series = medfm::jobs::Series::new(images.into_iter().map(|i| (i, None)).collect()).unwrap();
    assert_eq!(series.len(), n);
    assert!(once(&series.warnings), "{:?}", series.warnings);
}

/// The second file of a fixture folder, by name.
fn second_file(name: &str) -> std::path::PathBuf {
    let mut names: Vec<std::path::PathBuf> = std::fs::read_dir(data(name))
        .unwrap()
        .map(|e| e.unwrap().file_name().into())
        .collect();
    names.sort();
    names.swap_remove(1)
}

//! Parity of propagation with the PyTorch reference: the 3D recipe (docs/design.md,
//! "Volumes") run by `scripts/make_propagation_fixtures.py` with the wheel's own model on
//! real series (the brain MR of tests/data/series/brain11, the lung CT of tests/data/ct-lung1
//! from the tumour's middle slice); medfm keeps the same slices, stops for the same reasons
//! and gives each slice a mask with IoU >= 0.99 against the reference's (the case's Dice as
//! a volume >= 0.99), on the CPU backend and (the CT with an extent of 1, `--ignored`) on wgpu; on the
//! CT its Dice against the expert label is the reference's within 0.02.

mod common;

use std::collections::HashMap;

use common::*;
use medfm::Device;
use medfm::dicom::{self, DicomImage, Frame, series};
use medfm::model::Embedding;
use medfm::model::weights::Precision;
use medfm::pipeline::preprocess;
use medfm::pipeline::propagate::{self, Options};
use medfm::pipeline::{PixelPrompt, Preprocessed, Segmenter};

fn cases() -> serde_json::Value {
    let text = std::fs::read_to_string(data("propagation/manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// `only`: the cases run on this device (every case when empty), each with an extent that,
/// when given, replaces a smaller one of a case the reference stopped by its extent on both
/// sides: propagation goes outward slice by slice, so the reference's slices within the new
/// extent are that run's (lavapipe takes about two minutes an encoder pass).
fn check(device: Device, label: &str, only: &[(&str, Option<usize>)]) {
    let seg = Segmenter::new(load_model(Precision::Fp32, &device), device);
    // Encoder outputs per (series, slice), shared by the cases of one series (as a shell
    // keeps them): each slice is encoded once (lavapipe encodes slowly).
    let mut cache: HashMap<(String, usize), (Preprocessed, Embedding)> = HashMap::new();
    for case in cases()["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let extent = match only.iter().find(|(n, _)| *n == name) {
            Some((_, Some(e))) => {
                let was = case["extent"].as_u64().expect("a case with an extent") as usize;
                assert!(*e < was && case["stopped"] == serde_json::json!(["extent", "extent"]));
                Some(*e)
            }
            Some((_, None)) => case["extent"].as_u64().map(|e| e as usize),
            None if only.is_empty() => case["extent"].as_u64().map(|e| e as usize),
            None => continue,
        };
        let start = case["start"].as_u64().unwrap() as usize;
        let narrowed = extent != case["extent"].as_u64().map(|e| e as usize);
        let (started, mut encoded) = (std::time::Instant::now(), 0);
        let folder = data(case["series"].as_str().unwrap());
        let mut paths: Vec<_> = std::fs::read_dir(&folder)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
            .collect();
        paths.sort();
        let images: Vec<DicomImage> = paths
            .iter()
            .map(|p| dicom::read(&std::fs::read(p).unwrap()).unwrap())
            .collect();
        let refs: Vec<&DicomImage> = images.iter().collect();
        let order = series::order(&refs).unwrap().order;
        // The series order is the reference's.
        let uids: Vec<&str> = order
            .iter()
            .map(|&(i, _)| images[i].meta.sop_instance_uid.as_str())
            .collect();
        let want_uids: Vec<&str> = case["order"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u.as_str().unwrap())
            .collect();
        assert_eq!(uids, want_uids, "{name}: series order");
        let frames: Vec<Frame> = order
            .iter()
            .map(|&(i, f)| images[i].frame(f).unwrap())
            .collect();
        let (clip, _) = preprocess::series_clip(&frames, &images[order[0].0].meta);
        let c = clip.unwrap();
        let want_clip = case["clip"].as_array().unwrap();
        assert!(
            (c.lo as f64 - want_clip[0].as_f64().unwrap()).abs() < 1e-3
                && (c.hi as f64 - want_clip[1].as_f64().unwrap()).abs() < 1e-3,
            "{name}: clip {c:?} vs {want_clip:?}"
        );
        let b: Vec<f32> = case["box"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let prompt = PixelPrompt {
            bbox: Some([b[0], b[1], b[2], b[3]]),
            points: Vec::new(),
            multimask: false,
        };
        let options = Options {
            extent,
            min_iou: case["min_iou"].as_f64().unwrap() as f32,
        };
        let key = case["series"].as_str().unwrap().to_string();
        let got = propagate::propagate(
            &seg,
            frames.len(),
            start,
            &prompt,
            &options,
            &mut |i| {
                if let Some(hit) = cache.get(&(key.clone(), i)) {
                    return Ok(hit.clone());
                }
                let pre =
                    preprocess::preprocess_clipped(&frames[i], &images[order[i].0].meta, clip)?;
                let emb = seg.embed(&pre)?;
                encoded += 1;
                cache.insert((key.clone(), i), (pre.clone(), emb.clone()));
                Ok((pre, emb))
            },
            &mut |_| true,
        )
        .unwrap();
        let want: Vec<&serde_json::Value> = case["slices"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| {
                let i = s["index"].as_u64().unwrap() as usize;
                extent.is_none_or(|e| i.abs_diff(start) <= e)
            })
            .collect();
        let got_idx: Vec<usize> = got.slices.iter().map(|m| m.slice).collect();
        let want_idx: Vec<usize> = want
            .iter()
            .map(|s| s["index"].as_u64().unwrap() as usize)
            .collect();
        assert_eq!(got_idx, want_idx, "{label} {name}: the same slices");
        assert_eq!(
            serde_json::to_value(got.stopped).unwrap(),
            case["stopped"],
            "{label} {name}: the same stops"
        );
        let mut worst = 1.0f64;
        // The reference's masks against the expert label, over the slices kept.
        let (mut ref_with_label, mut ref_area) = (0usize, 0usize);
        // The case as a volume (kept slices, the others empty): Dice against the reference
        // and, where the series has an expert label (ct-lung1), against it.
        let (mut both, mut ours, mut theirs) = (0usize, 0usize, 0usize);
        let labelled = folder.parent().map(|p| p.join("label"));
        let (mut with_label, mut labelled_area, mut our_area) = (0usize, 0usize, 0usize);
        for (m, w) in got.slices.iter().zip(&want) {
            let reference = read_gz(&data(&format!("propagation/{name}/{}.mask.u8.gz", m.slice)));
            let (a, b, c) = overlap_counts(&m.mask, &reference);
            (both, ours, theirs) = (both + a, ours + b, theirs + c);
            our_area += b;
            ref_area += c;
            if let Some(label) = labelled
                .as_ref()
                .map(|d| d.join(format!("{}.mask.u8.gz", m.slice)))
                .filter(|p| p.exists())
            {
                let label = read_gz(&label);
                with_label += overlap_counts(&m.mask, &label).0;
                ref_with_label += overlap_counts(&reference, &label).0;
            }
            let overlap = iou(&m.mask, &reference);
            worst = worst.min(overlap);
            // The boxes follow the masks: within a pixel of the reference's.
            let wb: Vec<f64> = w["box"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            let gb = m.prompt_box.unwrap();
            for k in 0..4 {
                assert!(
                    (gb[k] as f64 - wb[k]).abs() <= 1.0,
                    "{label} {name}: slice {} box {gb:?} vs {wb:?}",
                    m.slice
                );
            }
            assert!(
                overlap >= 0.99,
                "{label} {name}: slice {} mask IoU {overlap}",
                m.slice
            );
        }
        let dice = 2.0 * both as f64 / (ours + theirs).max(1) as f64;
        assert!(
            dice >= 0.99,
            "{label} {name}: Dice {dice} against the reference"
        );
        let mut expert = String::new();
        if let Some(dir) = labelled.filter(|d| d.is_dir()) {
            for f in std::fs::read_dir(&dir).unwrap() {
                labelled_area += read_gz(&f.unwrap().path())
                    .iter()
                    .filter(|&&v| v > 0)
                    .count();
            }
            let ours = 2.0 * with_label as f64 / (our_area + labelled_area).max(1) as f64;
            // The reference's Dice against the expert, from its masks (the fixture script's
            // figure when the case runs whole): medfm's is the same within what the masks'
            // parity allows.
            let theirs = 2.0 * ref_with_label as f64 / (ref_area + labelled_area).max(1) as f64;
            if !narrowed {
                let stated = case["reference_dice_vs_expert"].as_f64().unwrap();
                assert!(
                    (theirs - stated).abs() < 1e-4,
                    "{name}: the reference's Dice {theirs:.4}, the manifest's {stated:.4}"
                );
            }
            assert!(
                (ours - theirs).abs() <= 0.02,
                "{label} {name}: Dice against the expert {ours:.4}, the reference's {theirs:.4}"
            );
            expert = format!(", Dice vs the expert label {ours:.4} (reference {theirs:.4})");
        }
        let shown = match extent {
            Some(e) if narrowed => format!("{name} (extent {e})"),
            _ => name.to_string(),
        };
        println!(
            "{label} {shown}: slices {got_idx:?}, stopped {:?}, worst mask IoU {worst:.4}, \
             Dice vs the reference {dice:.4}{expert} ({encoded} slices encoded, {:.1} s)",
            got.stopped,
            started.elapsed().as_secs_f64()
        );
    }
}

/// `(both, a, b)`: pixels set in both masks, in `a`, in `b`.
fn overlap_counts(a: &[u8], b: &[u8]) -> (usize, usize, usize) {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold((0, 0, 0), |(n, x, y), (&p, &q)| {
        (
            n + usize::from(p > 0 && q > 0),
            x + usize::from(p > 0),
            y + usize::from(q > 0),
        )
    })
}

#[test]
fn propagation_matches_pytorch_on_the_cpu() {
    check(Device::flex(), "cpu", &[]);
}

/// With the GPU backend (the `wgpu` feature, on by default): the CT from the tumour's middle
/// slice with an extent of 1 (3 slices encoded: every mask and box against the reference's,
/// the Dice against the expert label). Lavapipe, CI's Vulkan, takes about two minutes an
/// encoder pass on 2 cores (docs/design.md, "Devices"): the other cases (the stopping rules,
/// the series' end, the MR) run the same kernels through the same loop on the CPU backend
/// above, and tests/parity.rs holds the kernels' parity on wgpu.
///
/// Not in CI's run (`--ignored` runs it): its 3 lavapipe encodes took 378 s of a CI run
/// that must stay under 70 minutes; it passed there on 2026-12-07 (every mask IoU 1.0000
/// against the reference, Dice against the expert 0.6932 as the reference's). On a real
/// GPU (bench/gpu.sh's machine) it takes seconds.
#[cfg(feature = "wgpu")]
#[test]
#[ignore = "lavapipe: about 6 minutes on 2 cores; run with --ignored, or on a GPU machine"]
fn propagation_matches_pytorch_on_wgpu() {
    check(wgpu_device(), "wgpu", &[("lung_tumour_extent", Some(1))]);
}

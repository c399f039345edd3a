//! Propagation of a prompt through a real series (`pipeline::propagate`, issue 21 in
//! part): the loop's box chain, extents, stopping rules, cancel, the encoder cache, bad
//! options. On the CPU backend, fp32, with
//! 11 slices of a real brain MR (tests/data/series/brain11). The CLI's `--propagate` and
//! `--segments` outputs against the library. Parity of the masks with the PyTorch recipe
//! is in tests/propagate_parity.rs.

mod common;

use std::collections::HashMap;

use common::*;
use medfm::Device;
use medfm::dicom::{self, DicomImage, Frame, series};
use medfm::model::Embedding;
use medfm::model::weights::Precision;
use medfm::pipeline::preprocess::{self, Clip};
use medfm::pipeline::propagate::{self, Options, Stop, next_box};
use medfm::pipeline::{Error, PixelPrompt, Preprocessed, Segmenter};

/// The brain on the middle slice (brain_010): its surface against the CSF and skull.
const BRAIN: [f32; 4] = [45.0, 60.0, 215.0, 240.0];

struct Series {
    images: Vec<DicomImage>,
    order: Vec<(usize, u32)>,
    frames: Vec<Frame>,
    clip: Option<Clip>,
}

fn brain() -> Series {
    let mut paths: Vec<_> = std::fs::read_dir(data("series/brain11"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect();
    paths.sort();
    // Opened in reverse: the order must come from the geometry.
    paths.reverse();
    let images: Vec<DicomImage> = paths
        .iter()
        .map(|p| dicom::read(&std::fs::read(p).unwrap()).unwrap())
        .collect();
    let refs: Vec<&DicomImage> = images.iter().collect();
    let order = series::order(&refs).unwrap().order;
    let frames: Vec<Frame> = order
        .iter()
        .map(|&(i, f)| images[i].frame(f).unwrap())
        .collect();
    let (clip, warnings) = preprocess::series_clip(&frames, &images[order[0].0].meta);
    assert!(warnings.is_empty(), "{warnings:?}");
    Series {
        images,
        order,
        frames,
        clip,
    }
}

/// Encodes each slice once (counted), as a shell's cache does.
struct Encoder<'a> {
    series: &'a Series,
    segmenter: &'a Segmenter,
    cache: HashMap<usize, (Preprocessed, Embedding)>,
    encodes: usize,
}

impl Encoder<'_> {
    fn slice(&mut self, i: usize) -> Result<(Preprocessed, Embedding), Error> {
        if let Some(hit) = self.cache.get(&i) {
            return Ok(hit.clone());
        }
        let meta = &self.series.images[self.series.order[i].0].meta;
        let pre = preprocess::preprocess_clipped(&self.series.frames[i], meta, self.series.clip)?;
        let emb = self.segmenter.embed(&pre)?;
        self.encodes += 1;
        self.cache.insert(i, (pre.clone(), emb.clone()));
        Ok((pre, emb))
    }
}

fn segmenter() -> Segmenter {
    let device = Device::flex();
    Segmenter::new(load_model(Precision::Fp32, &device), device)
}

fn boxed(b: [f32; 4]) -> PixelPrompt {
    PixelPrompt {
        bbox: Some(b),
        points: Vec::new(),
        multimask: false,
    }
}

fn run(
    enc: &mut Encoder,
    start: usize,
    prompt: &PixelPrompt,
    options: &Options,
    cancel_after: usize,
) -> Result<propagate::Propagation, Error> {
    let segmenter = enc.segmenter;
    let n = enc.series.frames.len();
    let mut seen = 0;
    propagate::propagate(
        segmenter,
        n,
        start,
        prompt,
        options,
        &mut |i| enc.slice(i),
        &mut |_| {
            seen += 1;
            seen < cancel_after
        },
    )
}

#[test]
fn a_box_follows_the_brain_through_the_series() {
    let s = brain();
    let seg = segmenter();
    let mut enc = Encoder {
        series: &s,
        segmenter: &seg,
        cache: HashMap::new(),
        encodes: 0,
    };
    let n = s.frames.len();
    assert_eq!(n, 11);
    // With an extent of 3 each way: slices 2..=8, every one prompted by the widened box of
    // its neighbour's mask towards the start.
    let p = run(
        &mut enc,
        5,
        &boxed(BRAIN),
        &Options {
            extent: Some(3),
            min_iou: 0.5,
        },
        usize::MAX,
    )
    .unwrap();
    assert_eq!(p.stopped, [Stop::Extent, Stop::Extent]);
    let got: Vec<usize> = p.slices.iter().map(|m| m.slice).collect();
    assert_eq!(got, (2..=8).collect::<Vec<_>>());
    let start = &p.slices[3];
    assert_eq!(start.prompt_box, Some(BRAIN));
    for w in p.slices.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        // The box of the slice further from the start comes from the other's mask.
        let (from, to) = if b.slice > 5 { (a, b) } else { (b, a) };
        let scale = 256.0 / from.rows.max(from.cols) as f32;
        assert_eq!(
            to.prompt_box,
            next_box(&from.mask, from.rows, from.cols, scale),
            "slice {}",
            to.slice
        );
        // The head is in every slice and moves little between slices 7 mm apart.
        let overlap = iou(&a.mask, &b.mask);
        eprintln!("slices {} and {}: IoU {overlap:.3}", a.slice, b.slice);
        assert!(
            overlap > 0.5,
            "slices {} and {}: IoU {overlap}",
            a.slice,
            b.slice
        );
    }
    for m in &p.slices {
        eprintln!(
            "slice {}: area {} predicted IoU {:.3}",
            m.slice, m.area, m.iou
        );
        assert!(m.area > 5000 && m.iou > 0.5, "slice {}: {m:?}", m.slice);
    }
    assert_eq!(enc.encodes, 7);
    let ml = propagate::volume_ml(p.voxels(), [0.859375, 0.859375, 7.0]);
    assert!((ml - p.voxels() as f64 * 0.859375 * 0.859375 * 7.0 / 1000.0).abs() < 1e-9);

    // Without an extent the run goes on until a stopping rule: contiguous slices around
    // the start, each kept one confident, and a reason for each end. The slices already
    // encoded are not encoded again.
    let q = run(&mut enc, 5, &boxed(BRAIN), &Options::default(), usize::MAX).unwrap();
    let got: Vec<usize> = q.slices.iter().map(|m| m.slice).collect();
    eprintln!("no extent: slices {got:?}, stopped {:?}", q.stopped);
    assert!(
        got.contains(&5) && got.windows(2).all(|w| w[1] == w[0] + 1),
        "{got:?}"
    );
    for m in &q.slices {
        assert!(
            m.area > 0 && m.iou >= 0.5,
            "slice {}: iou {}",
            m.slice,
            m.iou
        );
    }
    let (lo, hi) = (got[0], *got.last().unwrap());
    assert_eq!(
        q.stopped[0] == Stop::SeriesEnd,
        hi == n - 1,
        "{:?}",
        q.stopped
    );
    assert_eq!(q.stopped[1] == Stop::SeriesEnd, lo == 0, "{:?}", q.stopped);
    assert!(
        q.stopped
            .iter()
            .all(|s| matches!(s, Stop::SeriesEnd | Stop::EmptyMask | Stop::LowIou)),
        "{:?}",
        q.stopped
    );
    // The same slices with the same boxes give the same masks.
    for m in q.slices.iter().filter(|m| (2..=8).contains(&m.slice)) {
        let e = &p.slices[m.slice - 2];
        assert_eq!(m.prompt_box, e.prompt_box);
        assert_eq!(m.mask, e.mask, "slice {}", m.slice);
    }
    assert!(enc.encodes <= n, "{} encodes for {n} slices", enc.encodes);
}

#[test]
fn cancel_edges_and_bad_options() {
    let s = brain();
    let seg = segmenter();
    let mut enc = Encoder {
        series: &s,
        segmenter: &seg,
        cache: HashMap::new(),
        encodes: 0,
    };
    // Cancelled after the third mask: three kept.
    let p = run(&mut enc, 5, &boxed(BRAIN), &Options::default(), 3).unwrap();
    assert_eq!(p.slices.len(), 3);
    assert_eq!(p.stopped, [Stop::Cancelled; 2]);
    // Extent 0: the start slice only. The last slice: that direction ends at once.
    let only = run(
        &mut enc,
        5,
        &boxed(BRAIN),
        &Options {
            extent: Some(0),
            min_iou: 0.5,
        },
        usize::MAX,
    )
    .unwrap();
    assert_eq!(only.slices.len(), 1);
    assert_eq!(only.stopped, [Stop::Extent; 2]);
    let last = run(
        &mut enc,
        10,
        &boxed(BRAIN),
        &Options {
            extent: Some(1),
            min_iou: 0.5,
        },
        usize::MAX,
    )
    .unwrap();
    assert_eq!(
        last.slices.iter().map(|m| m.slice).collect::<Vec<_>>(),
        [9, 10]
    );
    assert_eq!(last.stopped, [Stop::SeriesEnd, Stop::Extent]);
    // Bad input: clear errors.
    let bad = |start, prompt: PixelPrompt, options: Options, enc: &mut Encoder| {
        run(enc, start, &prompt, &options, usize::MAX)
            .unwrap_err()
            .to_string()
    };
    let e = bad(11, boxed(BRAIN), Options::default(), &mut enc);
    assert!(e.contains("start slice 11 is outside the series"), "{e}");
    let e = bad(
        5,
        boxed(BRAIN),
        Options {
            extent: None,
            min_iou: 1.5,
        },
        &mut enc,
    );
    assert!(e.contains("min-iou 1.5 is outside 0..1"), "{e}");
    let e = bad(
        5,
        boxed([300.0, 300.0, 400.0, 400.0]),
        Options::default(),
        &mut enc,
    );
    assert!(e.contains("prompt"), "{e}");
}

#[test]
fn next_box_widens_by_three_model_pixels_and_clips() {
    // A 10x20 image (scale 256/20 = 12.8: 3 model pixels = 0.234 image pixels).
    let (rows, cols) = (10, 20);
    let mut mask = vec![0u8; rows * cols];
    assert_eq!(next_box(&mask, rows, cols, 12.8), None);
    mask[2 * cols + 3] = 1;
    mask[6 * cols + 19] = 1;
    let b = next_box(&mask, rows, cols, 12.8).unwrap();
    let m = 3.0 / 12.8;
    assert_eq!(b, [3.0 - m, 2.0 - m, 19.0, 6.0 + m]);
}

/// `medfm ARGS` of a `--json` run, its answer parsed; the test fails when the run does.
fn cli_json(args: &[&str]) -> serde_json::Value {
    let (ok, stdout, stderr) = medfm(args);
    assert!(ok, "{args:?}: {stderr}");
    serde_json::from_str(&stdout).unwrap()
}

/// The CLI's `--json` slices against the library's propagation: the same slices in
/// series order, the same areas, each naming its source (index in the series,
/// SOPInstanceUID, frame).
fn check_cli_slices(j: &serde_json::Value, s: &Series, want: &propagate::Propagation) {
    let slices = j["slices"].as_array().unwrap();
    assert_eq!(slices.len(), want.slices.len());
    for (got, m) in slices.iter().zip(&want.slices) {
        let (i, f) = s.order[m.slice];
        assert_eq!(got["index"], m.slice);
        assert_eq!(got["area"], m.area);
        assert_eq!(got["sop_instance_uid"], s.images[i].meta.sop_instance_uid);
        assert_eq!(got["frame"], f);
    }
}

/// The CLI's SEG of a propagation: one frame per kept slice in series order, each
/// referencing its source instance (and, in a multi-frame one, its frame number).
fn check_propagated_seg(name: &str, seg: &[u8], s: &Series, want: &propagate::Propagation) {
    let (rows, cols) = (want.slices[0].rows, want.slices[0].cols);
    let masks: Vec<u8> = want.slices.iter().flat_map(|m| m.mask.clone()).collect();
    let sources: Vec<serde_json::Value> = want
        .slices
        .iter()
        .map(|m| {
            let (i, f) = s.order[m.slice];
            let meta = &s.images[i].meta;
            let frame = (meta.frames > 1).then_some(f + 1);
            serde_json::json!([meta.sop_instance_uid, frame])
        })
        .collect();
    check_seg(name, seg, &masks, rows, cols, Some(sources.into()));
}

/// `medfm segment --propagate`: the library's masks, as one SEG over the series (dciodvfy
/// clean, read back by highdicom slice by slice with the right source instances) and as a
/// NIfTI label volume aligned voxel for voxel with `medfm convert` of the series; the
/// volume in mL from the series spacing.
#[test]
fn the_cli_writes_the_propagation_as_seg_and_nifti() {
    let s = brain();
    let seg = segmenter();
    let mut enc = Encoder {
        series: &s,
        segmenter: &seg,
        cache: HashMap::new(),
        encodes: 0,
    };
    let options = Options {
        extent: Some(2),
        min_iou: 0.5,
    };
    let want = run(&mut enc, 5, &boxed(BRAIN), &options, usize::MAX).unwrap();
    let start = data("series/brain11/brain_010.dcm").display().to_string();
    let out = tmp("propagated.dcm");
    let j = cli_json(&[
        "segment",
        &start,
        "--box",
        "45,60,215,240",
        "--propagate",
        "--extent",
        "2",
        "--cpu",
        "--out",
        &out,
        "--json",
    ]);
    check_cli_slices(&j, &s, &want);
    assert_eq!(j["stopped"], serde_json::json!(["extent", "extent"]));
    assert_eq!(j["voxels"], want.voxels());
    check_propagated_seg("propagated", &std::fs::read(&out).unwrap(), &s, &want);
    let (rows, cols) = (want.slices[0].rows, want.slices[0].cols);
    // The NIfTI label volume: voxel for voxel over `medfm convert`'s volume of the series.
    let nii = tmp("propagated.nii");
    let (ok, _, stderr) = medfm(&[
        "segment",
        &start,
        "--box",
        "45,60,215,240",
        "--propagate",
        "--extent",
        "2",
        "--cpu",
        "--out",
        &nii,
    ]);
    assert!(ok, "{stderr}");
    let vol = tmp("series.nii");
    let dir = data("series/brain11").display().to_string();
    let (ok, _, stderr) = medfm(&["convert", &dir, "--out", &vol]);
    assert!(ok, "{stderr}");
    let (labels, image) = (std::fs::read(&nii).unwrap(), std::fs::read(&vol).unwrap());
    // Same header but the data (same dims, pixdims, sform/qform), then the labels.
    assert_eq!(labels[..348], image[..348]);
    let values: Vec<f32> = labels[352..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let plane = rows * cols;
    assert_eq!(values.len(), plane * s.frames.len());
    for k in 0..s.frames.len() {
        let want_mask = want.slices.iter().find(|m| m.slice == k);
        for (p, &v) in values[k * plane..(k + 1) * plane].iter().enumerate() {
            let w = want_mask.map_or(0, |m| m.mask[p]);
            assert_eq!(v, w as f32, "slice {k} voxel {p}");
        }
    }
    // Volume: voxels x the series spacing (from the NIfTI pixdims).
    let pix: Vec<f64> = (0..3)
        .map(|i| f32::from_le_bytes(image[80 + 4 * i..84 + 4 * i].try_into().unwrap()) as f64)
        .collect();
    let ml = want.voxels() as f64 * pix[0] * pix[1] * pix[2] / 1000.0;
    let got = j["volume_ml"].as_f64().unwrap();
    assert!((got - ml).abs() < 1e-3 * ml, "{got} mL vs {ml} mL");
    for p in [&out, &nii, &vol] {
        std::fs::remove_file(p).ok();
    }
}

/// `medfm segment --segments` (tests/data/series/brain11_segments.json): three prompts on
/// one series, two propagated (an extent; a stopping IoU) and one kept to its slice with
/// the single-image recipe, give the library's masks; one SEG with three segments
/// (dciodvfy clean, highdicom reads every frame of every segment, labels and colours) and a
/// NIfTI label map aligned with `medfm convert` where the later segment keeps the voxels
/// two segments share (counted in the JSON).
#[test]
fn the_cli_writes_several_segments_as_one_seg_and_nifti() {
    let s = brain();
    let seg = segmenter();
    let mut enc = Encoder {
        series: &s,
        segmenter: &seg,
        cache: HashMap::new(),
        encodes: 0,
    };
    let brain_mask = run(
        &mut enc,
        5,
        &boxed(BRAIN),
        &Options {
            extent: Some(2),
            min_iou: 0.5,
        },
        usize::MAX,
    )
    .unwrap();
    let eye = run(
        &mut enc,
        3,
        &boxed([80.0, 25.0, 115.0, 55.0]),
        &Options {
            extent: None,
            min_iou: 0.8,
        },
        usize::MAX,
    )
    .unwrap();
    // The third: slice 5 only, the single-image recipe (as `medfm segment` on that file).
    let pre = seg.prepare(&s.images[s.order[5].0], 0).unwrap();
    let emb = seg.embed(&pre).unwrap();
    let prompt = PixelPrompt {
        bbox: Some([100.0, 100.0, 150.0, 160.0]),
        points: vec![(125.0, 130.0, true)],
        multimask: false,
    };
    let midbrain = seg.segment(&emb, &pre, &prompt).unwrap();
    let want: Vec<Vec<(usize, &[u8])>> = vec![
        brain_mask
            .slices
            .iter()
            .map(|m| (m.slice, &m.mask[..]))
            .collect(),
        eye.slices.iter().map(|m| (m.slice, &m.mask[..])).collect(),
        vec![(5, &midbrain.mask[..])],
    ];
    assert_eq!(
        eye.stopped,
        [Stop::LowIou, Stop::LowIou],
        "the fixture's stop"
    );

    let prompts = data("series/brain11_segments.json").display().to_string();
    let out = tmp("segments.dcm");
    let j = cli_json(&[
        "segment",
        "--segments",
        &prompts,
        "--cpu",
        "--out",
        &out,
        "--json",
    ]);
    let segments = j["segments"].as_array().unwrap();
    assert_eq!(segments.len(), 3);
    for (k, (got, masks)) in segments.iter().zip(&want).enumerate() {
        assert_eq!(got["number"], k + 1);
        let slices = got["slices"].as_array().unwrap();
        assert_eq!(slices.len(), masks.len(), "segment {}", k + 1);
        for (g, (slice, mask)) in slices.iter().zip(masks) {
            assert_eq!(g["index"], *slice);
            assert_eq!(g["area"], mask.iter().filter(|&&b| b != 0).count());
        }
    }
    assert_eq!(segments[2]["propagated"], false);
    // Voxels in two segments: the midbrain lies inside the brain.
    let (rows, cols) = (midbrain.rows, midbrain.cols);
    let plane = rows * cols;
    let mut count = vec![0u8; plane * s.frames.len()];
    for (slice, mask) in want.iter().flatten() {
        for (c, &b) in count[slice * plane..(slice + 1) * plane]
            .iter_mut()
            .zip(*mask)
        {
            *c += b;
        }
    }
    let shared = count.iter().filter(|&&c| c > 1).count();
    assert!(shared > 0);
    assert_eq!(j["overlap_voxels"], shared);

    // The SEG: three segments, their frames segment after segment.
    let masks: Vec<u8> = want
        .iter()
        .flatten()
        .flat_map(|(_, m)| m.to_vec())
        .collect();
    let sources: Vec<serde_json::Value> = want
        .iter()
        .enumerate()
        .flat_map(|(k, masks)| masks.iter().map(move |(slice, _)| (k + 1, *slice)))
        .map(|(number, slice)| {
            let (i, _) = s.order[slice];
            serde_json::json!([s.images[i].meta.sop_instance_uid, null, number])
        })
        .collect();
    let described = serde_json::json!([
        {"label": "Brain", "color": medfm::dicom::seg::PALETTE[0]},
        {"label": "Right eye", "color": [240, 200, 40]},
        {"label": "Midbrain", "color": medfm::dicom::seg::PALETTE[2]},
    ]);
    check_seg_segments(
        "segments",
        &std::fs::read(&out).unwrap(),
        &masks,
        rows,
        cols,
        Some(sources.into()),
        Some(described),
    );

    // The NIfTI label map: label = segment number, the later segment where they overlap;
    // the header of `medfm convert`'s volume of the series.
    let nii = tmp("segments.nii");
    let (ok, _, stderr) = medfm(&["segment", "--segments", &prompts, "--cpu", "--out", &nii]);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains(&format!("{shared} voxels are in more than one segment")),
        "{stderr}"
    );
    let vol = tmp("segments-series.nii");
    let dir = data("series/brain11").display().to_string();
    let (ok, _, stderr) = medfm(&["convert", &dir, "--out", &vol]);
    assert!(ok, "{stderr}");
    let (labels, image) = (std::fs::read(&nii).unwrap(), std::fs::read(&vol).unwrap());
    assert_eq!(labels[..348], image[..348]);
    let mut expected = vec![0.0f32; plane * s.frames.len()];
    for (k, masks) in want.iter().enumerate() {
        for (slice, mask) in masks {
            for (e, &b) in expected[slice * plane..(slice + 1) * plane]
                .iter_mut()
                .zip(*mask)
            {
                if b != 0 {
                    *e = (k + 1) as f32;
                }
            }
        }
    }
    let values: Vec<f32> = labels[352..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert!(values == expected, "the label map differs");
    for p in [&out, &nii, &vol] {
        std::fs::remove_file(p).ok();
    }
}

/// Ultrasound cine (2D+t, no patient geometry): the slices are the instance's frames in
/// order; a box propagates along them as through a series, and `medfm segment --frame N
/// --propagate --out x.dcm` writes one SEG whose frames reference the cine's frames
/// (dciodvfy clean, highdicom reads each back exactly), with the library's masks.
#[test]
fn the_cli_propagates_along_an_ultrasound_cine() {
    let path = data("examples_ybr_color.dcm");
    let image = dicom::read(&std::fs::read(&path).unwrap()).unwrap();
    let order = series::order(&[&image]).unwrap().order;
    assert_eq!(order, (0..30).map(|f| (0, f)).collect::<Vec<_>>());
    let frames: Vec<Frame> = order
        .iter()
        .map(|&(_, f)| image.frame(f).unwrap())
        .collect();
    let (clip, _) = preprocess::series_clip(&frames, &image.meta);
    let s = Series {
        images: vec![image],
        order,
        frames,
        clip,
    };
    let seg = segmenter();
    let mut enc = Encoder {
        series: &s,
        segmenter: &seg,
        cache: HashMap::new(),
        encodes: 0,
    };
    let cine_box = [90.0, 50.0, 230.0, 190.0];
    let options = Options {
        extent: Some(2),
        min_iou: 0.5,
    };
    let want = run(&mut enc, 12, &boxed(cine_box), &options, usize::MAX).unwrap();
    assert_eq!(
        want.slices.iter().map(|m| m.slice).collect::<Vec<_>>(),
        vec![10, 11, 12, 13, 14]
    );
    let out = tmp("cine.dcm");
    let j = cli_json(&[
        "segment",
        &path.display().to_string(),
        "--frame",
        "12",
        "--box",
        "90,50,230,190",
        "--propagate",
        "--extent",
        "2",
        "--cpu",
        "--out",
        &out,
        "--json",
    ]);
    check_cli_slices(&j, &s, &want);
    check_propagated_seg("cine", &std::fs::read(&out).unwrap(), &s, &want);
    std::fs::remove_file(&out).ok();
}

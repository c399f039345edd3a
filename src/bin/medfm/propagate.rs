//! `medfm segment --propagate`: the prompt on one slice carried through its series by
//! `pipeline::propagate` (the 3D recipe of docs/design.md, "Volumes"); one SEG over the
//! series, a NIfTI label volume aligned with `medfm convert`, or the start slice's PNG.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use medfm::dicom::{self, DicomImage, Frame, seg::SegFrame, series};
use medfm::model::Embedding;
use medfm::pipeline::propagate::{self, Options};
use medfm::pipeline::{PixelPrompt, Preprocessed, Segmenter, preprocess};

use crate::common::{Failure, bail_input, collect_files, load_sam, select_device, weights_path};
use crate::output::{Outputs, nifti_bytes, write_atomic, write_png};
use crate::segment::SegmentArgs;

/// The series of `image`: every DICOM file of `dir` with its SeriesInstanceUID (files that
/// are not DICOM, or of other series, are passed over), the image itself included.
/// Returns the images and the index of `image` among them.
fn series_of(image: &PathBuf, dir: &PathBuf) -> Result<(Vec<DicomImage>, usize)> {
    let bytes = std::fs::read(image).with_context(|| format!("reading {}", image.display()))?;
    let start = dicom::read(&bytes).with_context(|| image.display().to_string())?;
    let uid = start.meta.series_instance_uid.clone();
    if uid.is_empty() {
        bail_input!(
            "{} has no SeriesInstanceUID: it has no series to propagate through",
            image.display()
        );
    }
    let mut images = Vec::new();
    let mut at = None;
    for f in collect_files(std::slice::from_ref(dir))? {
        let Ok(bytes) = std::fs::read(&f) else {
            continue;
        };
        let Ok(img) = dicom::read(&bytes) else {
            continue;
        };
        if img.meta.series_instance_uid != uid {
            continue;
        }
        if img.meta.sop_instance_uid == start.meta.sop_instance_uid {
            if at.is_some() {
                continue; // the same instance twice (a copy): once is enough
            }
            at = Some(images.len());
        }
        images.push(img);
    }
    let at = match at {
        Some(i) => i,
        None => {
            images.push(start);
            images.len() - 1
        }
    };
    Ok((images, at))
}

pub(crate) fn cmd_propagate(args: SegmentArgs, prompt: PixelPrompt) -> Result<()> {
    let dir = match &args.series {
        Some(d) => d.clone(),
        None => args
            .image
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), PathBuf::from),
    };
    let mut outputs = Outputs::new(&[args.image.clone(), dir.clone()]);
    outputs.claim(&args.out, "--out")?;
    let name = args.out.to_string_lossy().to_lowercase();
    let kind = if name.ends_with(".dcm") {
        "seg"
    } else if name.ends_with(".nii") || name.ends_with(".nii.gz") {
        "nifti"
    } else if name.ends_with(".png") {
        "png"
    } else {
        bail_input!("--out must end in .dcm (SEG), .nii, .nii.gz or .png (the start slice)");
    };
    let options = Options {
        extent: args.extent,
        min_iou: args.min_iou,
    };
    if !(0.0..=1.0).contains(&options.min_iou) {
        bail_input!("--min-iou {} is outside 0..1", options.min_iou);
    }

    let (images, at) = series_of(&args.image, &dir)?;
    let refs: Vec<&DicomImage> = images.iter().collect();
    let slices = series::order(&refs)?;
    for w in &slices.warnings {
        eprintln!("warning: {w}");
    }
    let start = slices
        .order
        .iter()
        .position(|&s| s == (at, args.frame))
        .ok_or_else(|| {
            Failure::Input(format!(
                "--frame {}: {} has {} frame(s)",
                args.frame,
                args.image.display(),
                images[at].meta.frames
            ))
        })?;
    let frames: Vec<Frame> = slices
        .order
        .iter()
        .map(|&(i, f)| images[i].frame(f))
        .collect::<Result<_, _>>()?;
    let first_meta = &images[slices.order[0].0].meta;
    let (clip, warnings) = preprocess::series_clip(&frames, first_meta);
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let n = frames.len();

    let precision = args.precision;
    let expected = args.weights.is_none().then_some(precision);
    let wpath = weights_path(args.weights.clone(), precision)?;
    let (device, device_name) = select_device(args.device)?;
    let seg = Segmenter::new(
        load_sam(&wpath, &device, expected, args.allow_unpinned)?,
        device,
    );
    let mut cache: HashMap<usize, (Preprocessed, Embedding)> = HashMap::new();
    let mut encode = |i: usize| -> Result<(Preprocessed, Embedding), medfm::pipeline::Error> {
        if let Some(hit) = cache.get(&i) {
            return Ok(hit.clone());
        }
        let meta = &images[slices.order[i].0].meta;
        let pre = preprocess::preprocess_clipped(&frames[i], meta, clip)?;
        let emb = seg.embed(&pre)?;
        cache.insert(i, (pre.clone(), emb.clone()));
        Ok((pre, emb))
    };
    // The prompt is checked on the start slice before any encoder runs.
    {
        let meta = &images[slices.order[start].0].meta;
        prompt.to_model(&preprocess::preprocess_clipped(&frames[start], meta, clip)?)?;
    }
    let pb = ProgressBar::new(n as u64);
    pb.set_style(ProgressStyle::with_template(
        "{bar:30} {pos}/{len} slices {msg} {elapsed}",
    )?);
    let t0 = std::time::Instant::now();
    let result = propagate::propagate(&seg, n, start, &prompt, &options, &mut encode, &mut |m| {
        pb.inc(1);
        pb.set_message(format!("(slice {}: {} px)", m.slice, m.area));
        true
    })?;
    pb.finish_and_clear();
    let ms = t0.elapsed().as_secs_f64() * 1e3;

    // Geometry (spacing, NIfTI alignment) as `medfm convert` assembles the series.
    let volume = dicom::volume::assemble(&images);
    let volume_ml = volume
        .as_ref()
        .ok()
        .map(|v| propagate::volume_ml(result.voxels(), v.spacing));
    match kind {
        "seg" => {
            let seg_frames: Vec<SegFrame> = result
                .slices
                .iter()
                .map(|m| {
                    let (i, f) = slices.order[m.slice];
                    SegFrame {
                        source: &images[i],
                        frame: f,
                        mask: &m.mask,
                    }
                })
                .collect();
            let bytes = dicom::seg::write_seg_frames(&seg_frames, &Default::default())?;
            write_atomic(&args.out, &bytes)?;
        }
        "nifti" => {
            let v = volume.as_ref().map_err(|e| {
                Failure::Input(format!("the series cannot be written as a volume: {e}"))
            })?;
            let plane = v.rows * v.cols;
            let mut labels = vec![0.0f32; v.values.len()];
            for m in &result.slices {
                let k = v
                    .sources
                    .iter()
                    .position(|&s| s == slices.order[m.slice])
                    .expect("the volume holds every slice of the series");
                for (l, &b) in labels[k * plane..(k + 1) * plane].iter_mut().zip(&m.mask) {
                    *l = b as f32;
                }
            }
            let label_volume = dicom::volume::Volume {
                values: labels,
                ..v.clone()
            };
            write_atomic(&args.out, &nifti_bytes(&label_volume, &args.out)?)?;
        }
        _ => {
            let m = result
                .slices
                .iter()
                .find(|m| m.slice == start)
                .expect("the start slice is kept");
            let png: Vec<u8> = m.mask.iter().map(|&b| b * 255).collect();
            write_png(&args.out, m.cols, m.rows, png::ColorType::Grayscale, &png)?;
        }
    }
    let first = result.slices.first().map_or(start, |m| m.slice);
    let last = result.slices.last().map_or(start, |m| m.slice);
    if args.json {
        let per_slice: Vec<_> = result
            .slices
            .iter()
            .map(|m| {
                let (i, f) = slices.order[m.slice];
                serde_json::json!({
                    "index": m.slice, "sop_instance_uid": images[i].meta.sop_instance_uid,
                    "frame": f, "area": m.area, "iou": m.iou,
                })
            })
            .collect();
        let j = serde_json::json!({
            "image": args.image.display().to_string(), "start": start, "series_slices": n,
            "slices": per_slice, "slice_range": [first, last], "stopped": result.stopped,
            "voxels": result.voxels(), "volume_ml": volume_ml,
            "warnings": warnings, "device": device_name, "precision": precision.name(),
            "ms": ms, "out": args.out.display().to_string(),
        });
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        println!(
            "mask       {} (slices {first}..={last} of {n}, start {start})",
            args.out.display()
        );
        println!(
            "volume     {} voxels{}",
            result.voxels(),
            volume_ml.map_or_else(String::new, |ml| format!(", {ml:.2} mL"))
        );
        println!(
            "stopped    up: {:?}, down: {:?}",
            result.stopped[0], result.stopped[1]
        );
        println!("device     {device_name}, weights {}", precision.name());
        println!("time       {ms:.0} ms");
    }
    Ok(())
}

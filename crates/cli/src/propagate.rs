//! `medfm segment --propagate` and `medfm segment --segments FILE.json`: prompts on slices
//! of one series, each carried through the series by `pipeline::propagate` (the 3D recipe
//! of docs/design.md, "Volumes") or kept to its slice; one SEG with a segment per prompt,
//! a NIfTI label volume aligned with `medfm convert` (label = segment number), or (one
//! prompt) the start slice's PNG.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use medfm::dicom::seg::{Segment, SegmentInfo};
use medfm::dicom::{self, DicomImage, Frame, seg::SegFrame, series};
use medfm::model::Embedding;
use medfm::pipeline::propagate::{self, Options, SliceMask, Stop};
use medfm::pipeline::{PixelPrompt, Preprocessed, Segmenter, preprocess};

use crate::common::{Failure, bail_input, load_sam, select_device, weights_path};
use crate::output::{Outputs, nifti_bytes, write_atomic, write_png};
use crate::segment::SegmentArgs;

/// One prompt of the output: a segment.
pub(crate) struct Job {
    /// SegmentLabel.
    pub(crate) label: String,
    /// Display colour (sRGB) written in the SEG.
    pub(crate) color: Option<[u8; 3]>,
    /// The file of its start slice.
    pub(crate) image: PathBuf,
    /// The start frame of that file.
    pub(crate) frame: u32,
    /// Box and/or points on the start slice.
    pub(crate) prompt: PixelPrompt,
    /// Through the series with these options, or `None`: the start slice only, with the
    /// single-image recipe (the mask `medfm segment` gives for that slice).
    pub(crate) propagate: Option<Options>,
}

/// What one job gave.
struct Outcome {
    /// Index of its start slice in the ordered series.
    start: usize,
    /// Its masks in series order.
    slices: Vec<SliceMask>,
    /// Why each direction ended (propagated jobs).
    stopped: Option<[Stop; 2]>,
}

impl Outcome {
    fn voxels(&self) -> usize {
        self.slices.iter().map(|m| m.area).sum()
    }
}

/// The series of the `starts` files: every DICOM file of `dir` with the SeriesInstanceUID
/// of the first (files that are not DICOM, or of other series, are passed over), the starts
/// included. Returns the images and, per start, its index among them.
fn series_of(starts: &[PathBuf], dir: &Path) -> Result<(Vec<DicomImage>, Vec<usize>)> {
    let mut images: Vec<DicomImage> = Vec::new();
    let mut sops = Vec::with_capacity(starts.len());
    let mut uid = String::new();
    for (k, path) in starts.iter().enumerate() {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let img = dicom::read(&bytes).with_context(|| path.display().to_string())?;
        if k == 0 {
            uid = img.meta.series_instance_uid.clone();
            if uid.is_empty() {
                bail_input!(
                    "{} has no SeriesInstanceUID: it has no series to propagate through",
                    path.display()
                );
            }
        } else if img.meta.series_instance_uid != uid {
            bail_input!(
                "{} is in series {}, not in the series of {} ({uid}): one output covers one series",
                path.display(),
                img.meta.series_instance_uid,
                starts[0].display()
            );
        }
        sops.push(img.meta.sop_instance_uid.clone());
        if !images
            .iter()
            .any(|i| i.meta.sop_instance_uid == img.meta.sop_instance_uid)
        {
            images.push(img);
        }
    }
    for f in medfm::fs::walk(&[dir.to_path_buf()])? {
        let Ok(bytes) = std::fs::read(&f) else {
            continue;
        };
        let Ok(img) = dicom::read(&bytes) else {
            continue;
        };
        // Other series, and the same instance twice (a start, or a copy): once is enough.
        if img.meta.series_instance_uid != uid
            || images
                .iter()
                .any(|i| i.meta.sop_instance_uid == img.meta.sop_instance_uid)
        {
            continue;
        }
        images.push(img);
    }
    // Each start is the image with its instance UID (read first, above).
    let at = sops
        .iter()
        .map(|s| {
            images
                .iter()
                .position(|i| i.meta.sop_instance_uid == *s)
                .expect("every start was kept")
        })
        .collect();
    Ok((images, at))
}

/// `medfm segment SLICE --propagate`: one job.
pub(crate) fn cmd_propagate(args: SegmentArgs, prompt: PixelPrompt) -> Result<()> {
    let image = args
        .image
        .clone()
        .expect("clap: an image without --segments");
    let job = Job {
        label: "Segment 1".into(),
        color: None,
        image: image.clone(),
        frame: args.frame,
        prompt,
        propagate: Some(Options {
            extent: args.extent,
            min_iou: args.min_iou,
        }),
    };
    run(args, vec![job], std::slice::from_ref(&image), true)
}

/// The series folder: `--series`, else the folder of `image`.
fn series_dir(series: Option<&PathBuf>, image: &Path) -> PathBuf {
    match series {
        Some(d) => d.clone(),
        None => image
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), PathBuf::from),
    }
}

/// Run `jobs` over the series of their start slices and write `args.out`. `inputs`: files
/// the outputs must not overwrite (besides the series folder). `single`: `--propagate`
/// (one job; a PNG output allowed, the JSON flat), else `--segments`.
pub(crate) fn run(
    args: SegmentArgs,
    jobs: Vec<Job>,
    inputs: &[PathBuf],
    single: bool,
) -> Result<()> {
    let dir = series_dir(args.series.as_ref(), &jobs[0].image);
    let mut guarded = inputs.to_vec();
    guarded.push(dir.clone());
    let mut outputs = Outputs::new(&guarded);
    outputs.claim(&args.out, "--out")?;
    let name = args.out.to_string_lossy().to_lowercase();
    let kind = if name.ends_with(".dcm") {
        "seg"
    } else if name.ends_with(".nii") || name.ends_with(".nii.gz") {
        "nifti"
    } else if name.ends_with(".png") && single {
        "png"
    } else if single {
        bail_input!("--out must end in .dcm (SEG), .nii, .nii.gz or .png (the start slice)");
    } else {
        bail_input!("with --segments, --out must end in .dcm (SEG), .nii or .nii.gz");
    };
    for job in &jobs {
        if let Some(o) = &job.propagate
            && !(0.0..=1.0).contains(&o.min_iou)
        {
            if single {
                bail_input!("--min-iou {} is outside 0..1", o.min_iou);
            }
            bail_input!("{}: min_iou {} is outside 0..1", job.label, o.min_iou);
        }
    }

    let starts: Vec<PathBuf> = jobs.iter().map(|j| j.image.clone()).collect();
    let (images, at) = series_of(&starts, &dir)?;
    let refs: Vec<&DicomImage> = images.iter().collect();
    let slices = series::order(&refs)?;
    for w in &slices.warnings {
        eprintln!("warning: {w}");
    }
    let mut start_of = Vec::with_capacity(jobs.len());
    for (job, &i) in jobs.iter().zip(&at) {
        let start = slices
            .order
            .iter()
            .position(|&s| s == (i, job.frame))
            .ok_or_else(|| {
                Failure::Input(format!(
                    "{}frame {}: {} has {} frame(s)",
                    if single {
                        "--".to_string()
                    } else {
                        format!("{}: ", job.label)
                    },
                    job.frame,
                    job.image.display(),
                    images[i].meta.frames
                ))
            })?;
        start_of.push(start);
    }
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
    let meta_of = |i: usize| &images[slices.order[i].0].meta;

    // Every prompt is checked on its start slice before any encoder runs.
    for (job, &start) in jobs.iter().zip(&start_of) {
        let pre = match job.propagate {
            Some(_) => preprocess::preprocess_clipped(&frames[start], meta_of(start), clip)?,
            None => preprocess::preprocess(&frames[start], meta_of(start))?,
        };
        job.prompt.to_model(&pre).map_err(|e| {
            if single {
                anyhow::Error::from(e)
            } else {
                anyhow::Error::from(e).context(job.label.clone())
            }
        })?;
    }

    let precision = args.precision;
    let expected = args.weights.is_none().then_some(precision);
    let wpath = weights_path(args.weights.clone(), precision)?;
    let (device, device_name) = select_device(args.device)?;
    let seg = Segmenter::new(
        load_sam(&wpath, &device, expected, args.allow_unpinned)?,
        device,
    );
    // Encoder outputs of the series-wide recipe, shared by every propagated job.
    let mut cache: HashMap<usize, (Preprocessed, Embedding)> = HashMap::new();
    let mut encode = |i: usize| -> Result<(Preprocessed, Embedding), medfm::pipeline::Error> {
        if let Some(hit) = cache.get(&i) {
            return Ok(hit.clone());
        }
        let pre = preprocess::preprocess_clipped(&frames[i], meta_of(i), clip)?;
        let emb = seg.embed(&pre)?;
        cache.insert(i, (pre.clone(), emb.clone()));
        Ok((pre, emb))
    };
    let t0 = std::time::Instant::now();
    let mut outcomes = Vec::with_capacity(jobs.len());
    for (job, &start) in jobs.iter().zip(&start_of) {
        let outcome = match &job.propagate {
            Some(options) => {
                let pb = ProgressBar::new(n as u64);
                pb.set_style(ProgressStyle::with_template(
                    "{prefix} {bar:30} {pos}/{len} slices {msg} {elapsed}",
                )?);
                if !single {
                    pb.set_prefix(job.label.clone());
                }
                let result = propagate::propagate(
                    &seg,
                    n,
                    start,
                    &job.prompt,
                    options,
                    &mut encode,
                    &mut |m| {
                        pb.inc(1);
                        pb.set_message(format!("(slice {}: {} px)", m.slice, m.area));
                        true
                    },
                )?;
                pb.finish_and_clear();
                Outcome {
                    start,
                    slices: result.slices,
                    stopped: Some(result.stopped),
                }
            }
            None => {
                let pre = preprocess::preprocess(&frames[start], meta_of(start))?;
                for w in &pre.warnings {
                    eprintln!("warning: {}: {w}", job.label);
                }
                let emb = seg.embed(&pre)?;
                let out = seg.segment(&emb, &pre, &job.prompt)?;
                Outcome {
                    start,
                    slices: vec![SliceMask {
                        slice: start,
                        prompt_box: job.prompt.bbox,
                        iou: out.predicted_iou(),
                        area: out.area,
                        rows: out.rows,
                        cols: out.cols,
                        mask: out.mask,
                    }],
                    stopped: None,
                }
            }
        };
        outcomes.push(outcome);
    }
    let ms = t0.elapsed().as_secs_f64() * 1e3;

    // Geometry (spacing, NIfTI alignment) as `medfm convert` assembles the series.
    let volume = dicom::volume::assemble(&images);
    // Voxels in more than one segment (a SEG keeps them in each; a label map cannot).
    let overlap = {
        let mut seen: HashMap<usize, Vec<bool>> = HashMap::new();
        let mut count = 0;
        for m in outcomes.iter().flat_map(|o| &o.slices) {
            let plane = seen
                .entry(m.slice)
                .or_insert_with(|| vec![false; m.mask.len()]);
            for (s, &b) in plane.iter_mut().zip(&m.mask) {
                count += usize::from(b != 0 && *s);
                *s |= b != 0;
            }
        }
        count
    };
    match kind {
        "seg" => {
            let segments: Vec<Segment> = jobs
                .iter()
                .zip(&outcomes)
                .map(|(job, o)| Segment {
                    info: SegmentInfo {
                        label: job.label.clone(),
                        color: job.color,
                        ..SegmentInfo::default()
                    },
                    frames: o
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
                        .collect(),
                })
                .collect();
            let bytes = dicom::seg::write_seg_segments(&segments)?;
            write_atomic(&args.out, &bytes)?;
        }
        "nifti" => {
            let v = volume.as_ref().map_err(|e| {
                Failure::Input(format!("the series cannot be written as a volume: {e}"))
            })?;
            let plane = v.rows * v.cols;
            let mut labels = vec![0.0f32; v.values.len()];
            // Label = segment number; where segments overlap the later one is kept.
            for (number, o) in outcomes.iter().enumerate() {
                let label = (number + 1) as f32;
                for m in &o.slices {
                    let k = v
                        .sources
                        .iter()
                        .position(|&s| s == slices.order[m.slice])
                        .expect("the volume holds every slice of the series");
                    for (l, &b) in labels[k * plane..(k + 1) * plane].iter_mut().zip(&m.mask) {
                        if b != 0 {
                            *l = label;
                        }
                    }
                }
            }
            if overlap > 0 {
                eprintln!(
                    "warning: {overlap} voxels are in more than one segment: the NIfTI label \
                     map keeps the later segment there (a SEG keeps every segment whole)"
                );
            }
            let label_volume = dicom::volume::Volume {
                values: labels,
                ..v.clone()
            };
            write_atomic(&args.out, &nifti_bytes(&label_volume, &args.out)?)?;
        }
        _ => {
            let o = &outcomes[0];
            let m = o
                .slices
                .iter()
                .find(|m| m.slice == o.start)
                .expect("the start slice is kept");
            let png: Vec<u8> = m.mask.iter().map(|&b| b * 255).collect();
            write_png(&args.out, m.cols, m.rows, png::ColorType::Grayscale, &png)?;
        }
    }

    let spacing = volume.as_ref().ok().map(|v| v.spacing);
    let described: Vec<serde_json::Value> = jobs
        .iter()
        .zip(&outcomes)
        .enumerate()
        .map(|(k, (job, o))| {
            let per_slice: Vec<_> = o
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
            let first = o.slices.first().map_or(o.start, |m| m.slice);
            let last = o.slices.last().map_or(o.start, |m| m.slice);
            serde_json::json!({
                "number": k + 1, "label": job.label, "image": job.image.display().to_string(),
                "start": o.start, "propagated": job.propagate.is_some(), "slices": per_slice,
                "slice_range": [first, last], "stopped": o.stopped, "voxels": o.voxels(),
                "volume_ml": spacing.map(|s| propagate::volume_ml(o.voxels(), s)),
            })
        })
        .collect();
    if args.json {
        let common = serde_json::json!({
            "series_slices": n, "warnings": warnings, "device": device_name,
            "precision": precision.name(), "ms": ms, "out": args.out.display().to_string(),
        });
        let mut j = if single {
            described[0].clone()
        } else {
            serde_json::json!({ "segments": described, "overlap_voxels": overlap })
        };
        for (key, value) in common.as_object().expect("an object") {
            j[key] = value.clone();
        }
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        println!(
            "mask       {} ({n} slices in the series)",
            args.out.display()
        );
        for (d, o) in described.iter().zip(&outcomes) {
            let ml = d["volume_ml"]
                .as_f64()
                .map_or_else(String::new, |ml| format!(", {ml:.2} mL"));
            println!(
                "{:<10} slices {}..={} (start {}), {} voxels{ml}{}",
                if single {
                    "segment"
                } else {
                    d["label"].as_str().unwrap_or("")
                },
                d["slice_range"][0],
                d["slice_range"][1],
                o.start,
                o.voxels(),
                o.stopped.map_or_else(String::new, |s| format!(
                    "; stopped up: {:?}, down: {:?}",
                    s[0], s[1]
                ))
            );
        }
        println!("device     {device_name}, weights {}", precision.name());
        println!("time       {ms:.0} ms");
    }
    Ok(())
}

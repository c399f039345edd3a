//! `medfm segment --propagate` and `medfm segment --segments FILE.json`: prompts on slices
//! of one series, each carried through the series by `pipeline::propagate` (the 3D recipe
//! of docs/design.md, "Volumes") or kept to its slice; one SEG with a segment per prompt,
//! a NIfTI label volume aligned with `medfm convert` (label = segment number), or (one
//! prompt) the start slice's PNG.

use std::path::{Path, PathBuf};

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use medfm::jobs::{self, SegmentJob, Series};
use medfm::pipeline::propagate::Options;
use medfm::pipeline::{PixelPrompt, Segmenter};

use crate::common::{bail_input, load_sam, select_device, weights_path};
use crate::output::{Outputs, nifti_bytes, write_atomic, write_png};
use crate::segment::SegmentArgs;

/// One prompt of the output (a segment), with the file and frame of its start slice.
pub(crate) struct Job {
    /// The file of its start slice.
    pub(crate) image: PathBuf,
    /// The start frame of that file.
    pub(crate) frame: u32,
    /// The segment (its `start` is set once the series is read).
    pub(crate) job: SegmentJob,
}

/// The series of the `starts` files: every DICOM file under `dir` (and the starts) with
/// the SeriesInstanceUID of the first. Returns it and, per start, its instance UID.
fn series_of(starts: &[PathBuf], dir: &Path) -> Result<(Series, Vec<String>)> {
    let mut uid = String::new();
    let mut sops = Vec::with_capacity(starts.len());
    for (k, path) in starts.iter().enumerate() {
        let img = Series::read_file(path)?;
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
        sops.push(img.meta.sop_instance_uid);
    }
    let mut paths = starts.to_vec();
    paths.push(dir.to_path_buf());
    Ok((Series::read(&paths, &uid)?, sops))
}

/// `medfm segment SLICE --propagate`: one job.
pub(crate) fn cmd_propagate(args: SegmentArgs, prompt: PixelPrompt) -> Result<()> {
    let image = args
        .image
        .clone()
        .expect("clap: an image without --segments");
    let job = Job {
        image: image.clone(),
        frame: args.frame,
        job: SegmentJob {
            label: "Segment 1".into(),
            color: None,
            start: 0,
            prompt,
            propagate: Some(Options {
                extent: args.extent,
                min_iou: args.min_iou,
            }),
        },
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
    for Job { job, .. } in &jobs {
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
    let (series, sops) = series_of(&starts, &dir)?;
    for w in &series.warnings {
        eprintln!("warning: {w}");
    }
    let mut segments = Vec::with_capacity(jobs.len());
    for (j, sop) in jobs.iter().zip(&sops) {
        let Some(start) = series.slice_of(sop, j.frame) else {
            let frames = Series::read_file(&j.image)?.meta.frames;
            bail_input!(
                "{}frame {}: {} has {frames} frame(s)",
                if single {
                    "--".to_string()
                } else {
                    format!("{}: ", j.job.label)
                },
                j.frame,
                j.image.display()
            );
        };
        segments.push(SegmentJob {
            start,
            ..j.job.clone()
        });
    }
    let n = series.len();
    // Every prompt is checked before the model is loaded.
    let plan = jobs::plan(&series, &segments)?;
    let warnings = &plan.warnings;
    for w in warnings {
        eprintln!("warning: {w}");
    }

    let precision = args.precision;
    let expected = args.weights.is_none().then_some(precision);
    let wpath = weights_path(args.weights.clone(), precision)?;
    let (device, device_name) = select_device(args.device)?;
    let seg = Segmenter::new(
        load_sam(&wpath, &device, expected, args.allow_unpinned)?,
        device,
    );
    let t0 = std::time::Instant::now();
    let mut bar: Option<(usize, ProgressBar)> = None;
    let outcomes = plan.run(&seg, &mut |k, m| {
        if bar.as_ref().is_none_or(|(at, _)| *at != k) {
            if let Some((_, pb)) = bar.take() {
                pb.finish_and_clear();
            }
            let pb = ProgressBar::new(n as u64);
            pb.set_style(
                ProgressStyle::with_template(
                    "{prefix} {bar:30} {pos}/{len} slices {msg} {elapsed}",
                )
                .expect("a valid template"),
            );
            if !single {
                pb.set_prefix(segments[k].label.clone());
            }
            bar = Some((k, pb));
        }
        if let Some((_, pb)) = &bar {
            pb.inc(1);
            pb.set_message(format!("(slice {}: {} px)", m.slice, m.area));
        }
        true
    })?;
    if let Some((_, pb)) = bar.take() {
        pb.finish_and_clear();
    }
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    for (j, o) in segments.iter().zip(&outcomes) {
        for w in &o.warnings {
            eprintln!("warning: {}: {w}", j.label);
        }
    }

    let overlap = jobs::overlap_voxels(&outcomes);
    match kind {
        "seg" => write_atomic(&args.out, &jobs::write_seg(&series, &segments, &outcomes)?)?,
        "nifti" => {
            let labels = jobs::label_map(&series, &outcomes).map_err(|e| {
                medfm::Error::bad_input(format!("the series cannot be written as a volume: {e}"))
            })?;
            if overlap > 0 {
                eprintln!(
                    "warning: {overlap} voxels are in more than one segment: the NIfTI label \
                     map keeps the later segment there (a SEG keeps every segment whole)"
                );
            }
            write_atomic(&args.out, &nifti_bytes(&labels, &args.out)?)?;
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

    let mut described = jobs::describe(&series, &segments, &outcomes);
    for (d, j) in described.iter_mut().zip(&jobs) {
        d["image"] = j.image.display().to_string().into();
    }
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

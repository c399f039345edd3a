//! `medfm segment`: one frame, a box and/or points, a PNG mask or a DICOM SEG.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use medfm::model::weights::Precision;
use medfm::pipeline::{PixelPrompt, Segmenter};

use crate::common::bail_input;
use crate::common::{DeviceArgs, load_sam, parse_box, parse_floats, select_device, weights_path};
use crate::output::{Outputs, write_atomic, write_png};

#[derive(clap::Args)]
pub(crate) struct SegmentArgs {
    /// The DICOM file (Part 10); none with --segments.
    #[arg(required_unless_present = "segments")]
    pub(crate) image: Option<PathBuf>,
    /// Box in pixel coordinates of the image: X0,Y0,X1,Y1 (columns, rows; inclusive corners).
    #[arg(long = "box", value_name = "X0,Y0,X1,Y1")]
    pub(crate) bbox: Option<String>,
    /// A point X,Y[,LABEL] in pixel coordinates; LABEL 1 = foreground (default), 0 = background. Repeatable.
    #[arg(long = "point", value_name = "X,Y[,0|1]")]
    pub(crate) points: Vec<String>,
    /// Frame of a multi-frame image (0-based).
    #[arg(long, default_value_t = 0)]
    pub(crate) frame: u32,
    /// Predict three candidate masks and keep the one with the highest predicted IoU.
    #[arg(long)]
    pub(crate) multimask: bool,
    /// A `.bpk` weights file (default: WEIGHTS_DIR/lite_medsam_<precision>.bpk, see
    /// `medfm weights fetch --help`). It must be one of the pinned files unless
    /// --allow-unpinned.
    #[arg(long)]
    pub(crate) weights: Option<PathBuf>,
    /// Accept a --weights file that is not one of the pinned LiteMedSAM files (e.g. a
    /// conversion of a fine-tuned checkpoint).
    #[arg(long, requires = "weights")]
    pub(crate) allow_unpinned: bool,
    /// Weight precision when --weights is not given.
    #[arg(long, value_parser = crate::common::precision_parser(), default_value = "fp32")]
    pub(crate) precision: Precision,
    #[command(flatten)]
    pub(crate) device: DeviceArgs,
    /// Output: a PNG mask (rows x cols, 0/255), or a binary DICOM SEG when the name ends in `.dcm`.
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Also write an overlay PNG (windowed image with the mask in red) for viewing.
    #[arg(long)]
    pub(crate) overlay: Option<PathBuf>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub(crate) json: bool,
    /// Carry the prompt through the image's series (docs/design.md, "Volumes"): the
    /// series is every DICOM file in the image's folder (or --series DIR) with its
    /// SeriesInstanceUID. --out NAME.dcm writes one SEG over the series, .nii/.nii.gz a
    /// label volume aligned with `medfm convert`, .png the start slice.
    #[arg(long)]
    pub(crate) propagate: bool,
    /// With --propagate: run this many slices each way (the official recipe's z range)
    /// instead of stopping at an empty or unconfident mask.
    #[arg(long, requires = "propagate")]
    pub(crate) extent: Option<usize>,
    /// With --propagate and no --extent: stop at a predicted IoU below this (0..1).
    #[arg(long, requires = "propagate", default_value_t = 0.5)]
    pub(crate) min_iou: f32,
    /// With --propagate or --segments: the folder holding the series (default: the
    /// folder of the (first) start slice).
    #[arg(long)]
    pub(crate) series: Option<PathBuf>,
    /// Several prompts on one series, one segment each, in one --out (.dcm: a SEG with a
    /// segment per prompt; .nii/.nii.gz: a label volume, label = segment number). The
    /// JSON file: `{"segments": [{"label", "color": [r, g, b], "slice": FILE (relative to
    /// the JSON file), "frame", "box": [x0, y0, x1, y1], "points": [[x, y, 0|1]],
    /// "propagate", "extent", "min_iou"}]}` (docs/design.md, "Volumes").
    #[arg(long, conflicts_with_all = ["image", "bbox", "points", "propagate", "multimask", "overlay"])]
    pub(crate) segments: Option<PathBuf>,
}

pub(crate) fn parse_prompt(args: &SegmentArgs) -> Result<PixelPrompt> {
    let bbox = args.bbox.as_deref().map(parse_box).transpose()?;
    let mut points = Vec::new();
    for s in &args.points {
        let v = parse_floats(s, "--point")?;
        let positive = match v.len() {
            2 => true,
            3 => medfm::pipeline::point_label(v[2])
                .map_err(|e| medfm::Error::bad_input(format!("--point `{s}`: {e}")))?,
            _ => bail_input!("--point takes X,Y or X,Y,LABEL with LABEL 0 or 1, got `{s}`"),
        };
        points.push((v[0], v[1], positive));
    }
    if bbox.is_none() && points.is_empty() {
        bail_input!("give a --box and/or at least one --point");
    }
    Ok(PixelPrompt {
        bbox,
        points,
        multimask: args.multimask,
    })
}

pub(crate) fn cmd_segment(args: SegmentArgs) -> Result<()> {
    if let Some(file) = args.segments.clone() {
        return crate::segments::cmd_segments(args, &file);
    }
    if args.series.is_some() && !args.propagate {
        bail_input!("--series goes with --propagate or --segments");
    }
    let prompt = parse_prompt(&args)?;
    if args.propagate {
        if args.multimask || args.overlay.is_some() {
            bail_input!("--propagate takes single-mask prompts and writes no --overlay");
        }
        return crate::propagate::cmd_propagate(args, prompt);
    }
    let path = args
        .image
        .clone()
        .expect("clap: an image without --segments");
    let mut outputs = Outputs::new(std::slice::from_ref(&path));
    outputs.claim(&args.out, "--out")?;
    if let Some(o) = &args.overlay {
        outputs.claim(o, "--overlay")?;
    }
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let image = medfm::dicom::read(&bytes).with_context(|| format!("{}", path.display()))?;
    let precision = args.precision;
    let expected = args.weights.is_none().then_some(precision);
    let wpath = weights_path(args.weights.clone(), precision)?;
    let (device, device_name) = select_device(args.device)?;

    let t0 = Instant::now();
    let sam = load_sam(&wpath, &device, expected, args.allow_unpinned)?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let seg = Segmenter::new(sam, device);
    let pre = seg.prepare(&image, args.frame)?;
    // Validate the prompt before the expensive encoder runs.
    prompt.to_model(&pre)?;
    for w in &pre.warnings {
        eprintln!("warning: {w}");
    }

    let t1 = Instant::now();
    let emb = seg.embed(&pre)?;
    seg.device
        .sync()
        .map_err(|e| crate::common::device_error(format!("device sync failed: {e:?}")))?;
    let embed_ms = t1.elapsed().as_secs_f64() * 1e3;
    let t2 = Instant::now();
    let out = seg.segment(&emb, &pre, &prompt)?;
    let decode_ms = t2.elapsed().as_secs_f64() * 1e3;

    let is_seg = args
        .out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("dcm"));
    if is_seg {
        let seg = medfm::dicom::seg::write_seg(&image, args.frame, &out.mask, &Default::default())?;
        write_atomic(&args.out, &seg)?;
    } else {
        let png_data: Vec<u8> = out.mask.iter().map(|&m| m * 255).collect();
        write_png(
            &args.out,
            out.cols,
            out.rows,
            png::ColorType::Grayscale,
            &png_data,
        )?;
    }
    if let Some(path) = &args.overlay {
        let rgb = medfm::pipeline::overlay_rgb(&pre, &out.mask);
        write_png(path, out.cols, out.rows, png::ColorType::Rgb, &rgb)?;
    }
    let iou = out.predicted_iou();
    let low_confidence = out.low_confidence();
    if args.json {
        let j = serde_json::json!({
            "image": path.display().to_string(),
            "rows": out.rows, "cols": out.cols, "frame": args.frame,
            "area": out.area, "iou": iou, "iou_all": out.iou, "chosen": out.chosen,
            "low_confidence": low_confidence,
            "warnings": pre.warnings,
            "device": device_name, "precision": precision.name(),
            "weights_load_ms": load_ms, "embed_ms": embed_ms, "decode_ms": decode_ms,
            "out": args.out.display().to_string(),
        });
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        let kind = if is_seg { "DICOM SEG" } else { "PNG 0/255" };
        println!(
            "mask       {} ({}x{}, {kind})",
            args.out.display(),
            out.cols,
            out.rows
        );
        println!("area       {} px", out.area);
        println!(
            "iou        {iou:.4} (predicted{})",
            if low_confidence {
                "; low confidence"
            } else {
                ""
            }
        );
        println!("device     {device_name}, weights {}", precision.name());
        println!(
            "time       weights {load_ms:.0} ms, embed {embed_ms:.0} ms, decode {decode_ms:.0} ms"
        );
    }
    if low_confidence && precision != Precision::Fp32 {
        eprintln!(
            "note: predicted IoU {iou:.2} is below {}: on such prompts {} masks can differ from \
             fp32 ones by several percent; refine the box or add points, or rerun with \
             --precision fp32 for the reference mask",
            medfm::pipeline::CONFIDENT_IOU,
            precision.name()
        );
    }
    Ok(())
}

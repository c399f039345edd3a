//! `medfm segment --segments FILE.json`: several prompts on one series, one segment each,
//! in one output (the prompts file format is in docs/cli.md).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use medfm::dicom::seg::PALETTE;
use medfm::pipeline::PixelPrompt;
use medfm::pipeline::propagate::Options;

use crate::common::{Failure, bail_input};
use crate::propagate::Job;
use crate::segment::SegmentArgs;

/// The prompts file.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PromptsFile {
    segments: Vec<SegmentSpec>,
}

/// One segment's prompt.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SegmentSpec {
    /// SegmentLabel (default "Segment N").
    label: Option<String>,
    /// sRGB display colour (default: the palette colour of its number).
    color: Option<[u8; 3]>,
    /// The DICOM file of the start slice, relative to the prompts file.
    slice: PathBuf,
    /// Its frame (0-based).
    #[serde(default)]
    frame: u32,
    /// Box `[x0, y0, x1, y1]` in pixels of the slice.
    #[serde(rename = "box")]
    bbox: Option<[f32; 4]>,
    /// Points `[x, y]` (foreground) or `[x, y, 0|1]`.
    #[serde(default)]
    points: Vec<Vec<f32>>,
    /// Carry the prompt through the series (else: this slice only).
    #[serde(default)]
    propagate: bool,
    /// With `propagate`: slices each way (the official recipe's z range).
    extent: Option<usize>,
    /// With `propagate` and no `extent`: the stopping IoU (default 0.5).
    min_iou: Option<f32>,
}

/// Read and check the prompts file; jobs in file order.
fn jobs(file: &Path) -> Result<Vec<Job>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let spec: PromptsFile = serde_json::from_str(&text)
        .map_err(|e| Failure::Input(format!("{}: {e}", file.display())))?;
    if spec.segments.is_empty() {
        bail_input!("{}: \"segments\" is empty", file.display());
    }
    let base = file.parent().unwrap_or(Path::new(""));
    let mut jobs = Vec::with_capacity(spec.segments.len());
    for (k, s) in spec.segments.into_iter().enumerate() {
        let label = s.label.unwrap_or_else(|| format!("Segment {}", k + 1));
        let at = format!("{}: segment {} (\"{label}\")", file.display(), k + 1);
        let mut points = Vec::with_capacity(s.points.len());
        for p in &s.points {
            let positive = match p[..] {
                [_, _] => true,
                [_, _, l] => medfm::pipeline::point_label(l)
                    .map_err(|e| Failure::Input(format!("{at}: point {p:?}: {e}")))?,
                _ => bail_input!("{at}: a point is [x, y] or [x, y, 0|1], got {p:?}"),
            };
            points.push((p[0], p[1], positive));
        }
        if s.bbox.is_none() && points.is_empty() {
            bail_input!("{at}: give a \"box\" and/or \"points\"");
        }
        if !s.propagate && (s.extent.is_some() || s.min_iou.is_some()) {
            bail_input!("{at}: \"extent\" and \"min_iou\" go with \"propagate\": true");
        }
        jobs.push(Job {
            label,
            color: Some(s.color.unwrap_or(PALETTE[k % PALETTE.len()])),
            image: base.join(&s.slice),
            frame: s.frame,
            prompt: PixelPrompt {
                bbox: s.bbox,
                points,
                multimask: false,
            },
            propagate: s.propagate.then(|| Options {
                extent: s.extent,
                min_iou: s.min_iou.unwrap_or(Options::default().min_iou),
            }),
        });
    }
    Ok(jobs)
}

pub(crate) fn cmd_segments(args: SegmentArgs, file: &Path) -> Result<()> {
    let jobs = jobs(file)?;
    let mut inputs: Vec<PathBuf> = jobs.iter().map(|j| j.image.clone()).collect();
    inputs.push(file.to_path_buf());
    crate::propagate::run(args, jobs, &inputs, false)
}

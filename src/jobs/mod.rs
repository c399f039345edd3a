//! Jobs over a series: what every front runs, written once. The CLI (`medfm segment
//! --propagate`, `--segments`), the edge node's rules and requests and the Python package
//! read a [`Series`], make [`SegmentJob`]s (from JSON prompts: [`PromptSpec`]), check them with [`plan`] (before a model is
//! loaded) and run the [`Plan`] ([`segment_series`] does both); the results are written by
//! [`write_seg`] and [`label_map`] (docs/design.md, "Volumes"). [`embed_files`] embeds
//! what a folder holds (`medfm embed`).

pub mod embed;
mod prompt;
pub mod rules;
mod series;

pub use embed::embed_files;
pub use prompt::{PromptSpec, points as prompt_points};
pub use series::Series;

use std::collections::HashMap;

use crate::Error;
use crate::dicom::Frame;
use crate::dicom::seg::{SegFrame, Segment, SegmentInfo};
use crate::dicom::volume::{SegmentMasks, Volume};
use crate::model::Embedding;
use crate::pipeline::preprocess::Clip;
use crate::pipeline::propagate::{self, Options, SliceMask, Stop};
use crate::pipeline::{self, PixelPrompt, Preprocessed, Segmenter, preprocess};

/// One segment to make on a series.
#[derive(Debug, Clone)]
pub struct SegmentJob {
    /// SegmentLabel.
    pub label: String,
    /// Display colour (sRGB) written in the SEG.
    pub color: Option<[u8; 3]>,
    /// The slice (index in the series order) the prompt is on.
    pub start: usize,
    /// Box and/or points on the start slice (single-mask).
    pub prompt: PixelPrompt,
    /// Carry the prompt through the series with these options (the 3D recipe), or `None`:
    /// the start slice alone by the single-image recipe (the mask `medfm segment` gives for
    /// that slice).
    pub propagate: Option<Options>,
}

/// What one [`SegmentJob`] gave.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Its start slice.
    pub start: usize,
    /// Its masks, in series order.
    pub slices: Vec<SliceMask>,
    /// Why each direction ended (propagated jobs): towards higher slice indices, then lower.
    pub stopped: Option<[Stop; 2]>,
    /// What the preprocessing of a job kept to its slice assumed (propagated jobs: the
    /// plan's warnings).
    pub warnings: Vec<String>,
}

impl Outcome {
    /// Voxels in all its masks.
    pub fn voxels(&self) -> usize {
        self.slices.iter().map(|m| m.area).sum()
    }
}

/// Jobs checked and ready to run on a series: its slices decoded, its intensity clip
/// (one for the series, [`preprocess::series_clip`]) and every job's start slice and prompt
/// checked. Made by [`plan`] before a model is loaded, so a bad prompt costs no model.
pub struct Plan<'a> {
    series: &'a Series,
    jobs: &'a [SegmentJob],
    frames: Vec<Frame>,
    clip: Option<Clip>,
    /// What the series' intensity clip assumed.
    pub warnings: Vec<String>,
}

/// Check `jobs` on `series` (see [`Plan`]); an error names the job's label when there are
/// several.
pub fn plan<'a>(series: &'a Series, jobs: &'a [SegmentJob]) -> Result<Plan<'a>, Error> {
    let n = series.len();
    let frames = series.frames()?;
    let (clip, warnings) = preprocess::series_clip(&frames, series.meta(0));
    let named = |job: &SegmentJob, e: pipeline::Error| {
        let e = Error::from(e);
        if jobs.len() == 1 {
            e
        } else {
            e.context(job.label.clone())
        }
    };
    for job in jobs {
        // The propagation's own checks (start slice, options, single-mask).
        let start_ok = match &job.propagate {
            Some(options) => {
                propagate::Propagator::new(n, job.start, &job.prompt, options).map(|_| ())
            }
            None if job.start >= n => Err(pipeline::Error::Prompt(format!(
                "start slice {} is outside the series (slices 0..{})",
                job.start,
                n.saturating_sub(1)
            ))),
            None => Ok(()),
        };
        start_ok.map_err(|e| named(job, e))?;
        let (frame, meta) = (&frames[job.start], series.meta(job.start));
        let pre = match job.propagate {
            Some(_) => preprocess::preprocess_clipped(frame, meta, clip),
            None => preprocess::preprocess(frame, meta),
        }
        .map_err(|e| named(job, e))?;
        job.prompt.to_model(&pre).map_err(|e| named(job, e))?;
    }
    Ok(Plan {
        series,
        jobs,
        frames,
        clip,
        warnings,
    })
}

impl Plan<'_> {
    /// Run the jobs with `segmenter`, in order. Propagated jobs share the series' encoder
    /// outputs; a job kept to its slice uses the single-image recipe. `progress(job, mask)`
    /// is called after every slice; returning false cancels the job in progress (its
    /// directions end as `cancelled`) and the ones after it run.
    ///
    /// # Returns
    /// One outcome per job.
    pub fn run(
        &self,
        segmenter: &Segmenter,
        progress: &mut dyn FnMut(usize, &SliceMask) -> bool,
    ) -> Result<Vec<Outcome>, Error> {
        let _span = tracing::info_span!("segment_series", slices = self.series.len()).entered();
        let (series, frames, clip) = (self.series, &self.frames, self.clip);
        let mut cache: HashMap<usize, (Preprocessed, Embedding)> = HashMap::new();
        let mut encode = |i: usize| -> Result<(Preprocessed, Embedding), pipeline::Error> {
            if let Some(hit) = cache.get(&i) {
                return Ok(hit.clone());
            }
            let pre = preprocess::preprocess_clipped(&frames[i], series.meta(i), clip)?;
            let emb = segmenter.embed(&pre)?;
            cache.insert(i, (pre.clone(), emb.clone()));
            Ok((pre, emb))
        };
        let mut outcomes = Vec::with_capacity(self.jobs.len());
        for (k, job) in self.jobs.iter().enumerate() {
            let outcome = match &job.propagate {
                Some(options) => {
                    let result = propagate::propagate(
                        segmenter,
                        series.len(),
                        job.start,
                        &job.prompt,
                        options,
                        &mut encode,
                        &mut |m| progress(k, m),
                    )?;
                    Outcome {
                        start: job.start,
                        slices: result.slices,
                        stopped: Some(result.stopped),
                        warnings: Vec::new(),
                    }
                }
                None => {
                    let pre = preprocess::preprocess(&frames[job.start], series.meta(job.start))?;
                    let emb = segmenter.embed(&pre)?;
                    let out = segmenter.segment(&emb, &pre, &job.prompt)?;
                    let mask = SliceMask::new(job.start, &job.prompt, out);
                    progress(k, &mask);
                    Outcome {
                        start: job.start,
                        slices: vec![mask],
                        stopped: None,
                        warnings: pre.warnings,
                    }
                }
            };
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }
}

/// [`plan`] then [`Plan::run`]: the outcomes and the warnings of the series' clip.
pub fn segment_series(
    segmenter: &Segmenter,
    series: &Series,
    jobs: &[SegmentJob],
    progress: &mut dyn FnMut(usize, &SliceMask) -> bool,
) -> Result<(Vec<Outcome>, Vec<String>), Error> {
    let plan = plan(series, jobs)?;
    let outcomes = plan.run(segmenter, progress)?;
    Ok((outcomes, plan.warnings))
}

/// One binary SEG with a segment per job (numbered in order, each with its label and
/// colour), each segment's frames in series order.
pub fn write_seg(
    series: &Series,
    jobs: &[SegmentJob],
    outcomes: &[Outcome],
) -> Result<Vec<u8>, Error> {
    let segments: Vec<Segment> = jobs
        .iter()
        .zip(outcomes)
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
                    let (image, frame) = series.order[m.slice];
                    SegFrame {
                        source: &series.images[image],
                        frame,
                        mask: &m.mask,
                    }
                })
                .collect(),
        })
        .collect();
    Ok(crate::dicom::seg::write_seg_segments(&segments)?)
}

/// A label map of the outcomes on the series' volume (as `medfm convert` assembles it):
/// label = segment number, the later segment where two overlap ([`Volume::label_map`]).
pub fn label_map(series: &Series, outcomes: &[Outcome]) -> Result<Volume, Error> {
    let volume = series.volume()?;
    let masks: Vec<Vec<_>> = outcomes
        .iter()
        .map(|o| {
            o.slices
                .iter()
                .map(|m| (series.order[m.slice], &m.mask[..]))
                .collect()
        })
        .collect();
    let refs: Vec<&SegmentMasks> = masks.iter().map(Vec::as_slice).collect();
    Ok(volume.label_map(&refs)?)
}

/// Voxels in more than one outcome's masks (each counted once): where a label map keeps
/// only the later segment.
pub fn overlap_voxels(outcomes: &[Outcome]) -> usize {
    // Per slice: how many masks cover each pixel, up to 2.
    let mut planes: HashMap<usize, Vec<u8>> = HashMap::new();
    for m in outcomes.iter().flat_map(|o| &o.slices) {
        let plane = planes
            .entry(m.slice)
            .or_insert_with(|| vec![0; m.mask.len()]);
        for (c, &b) in plane.iter_mut().zip(&m.mask) {
            *c = (*c + u8::from(b != 0)).min(2);
        }
    }
    planes.values().flatten().filter(|&&c| c > 1).count()
}

/// What the jobs gave, as the fronts report it (the CLI's `--json`, the node's answers):
/// per job its `number` (1-based), `label`, `start` slice, whether it was `propagated`, its
/// `slices` (`index`, `sop_instance_uid`, `frame`, `area`, `iou`), `slice_range`, `stopped`
/// (per direction), `voxels` and `volume_ml` (null without a spacing).
pub fn describe(
    series: &Series,
    jobs: &[SegmentJob],
    outcomes: &[Outcome],
) -> Vec<serde_json::Value> {
    let spacing = series.spacing();
    jobs.iter()
        .zip(outcomes)
        .enumerate()
        .map(|(k, (job, o))| {
            let per_slice: Vec<_> = o
                .slices
                .iter()
                .map(|m| {
                    let (i, f) = series.order[m.slice];
                    serde_json::json!({
                        "index": m.slice, "sop_instance_uid": series.images[i].meta.sop_instance_uid,
                        "frame": f, "area": m.area, "iou": m.iou,
                    })
                })
                .collect();
            let first = o.slices.first().map_or(o.start, |m| m.slice);
            let last = o.slices.last().map_or(o.start, |m| m.slice);
            serde_json::json!({
                "number": k + 1, "label": job.label, "start": o.start,
                "propagated": job.propagate.is_some(), "slices": per_slice,
                "slice_range": [first, last], "stopped": o.stopped, "voxels": o.voxels(),
                "volume_ml": spacing.map(|s| propagate::volume_ml(o.voxels(), s)),
            })
        })
        .collect()
}

//! A prompt on one slice becomes masks through the series: the 3D loop of the CVPR 2024
//! "MedSAM on Laptop" inference script (`CVPR24_LiteMedSAM_infer.py`), with stopping
//! rules for when no extent is known (docs/design.md, "Volumes").
//!
//! The start slice takes the user's prompt (box and points). Each next slice, in both
//! directions, takes the bounding box of the previous slice's mask (its first and last
//! column and row) widened by 3 pixels of the model's 256 grid (3 / scale image pixels)
//! on each side and clipped to the image, as a box prompt, single-mask output.
//! - With an `extent` of N slices each way (the official recipe's z range), a direction
//!   runs N slices (or to the series end), and an empty previous mask falls back to the
//!   start box, as upstream does.
//! - Without an extent, a direction ends at an empty mask, at a predicted IoU below
//!   `min_iou`, or at the series end; the slice that ended it is not kept.
//!
//! Slices are encoded by the caller's `slice` function, which keeps its encoder outputs
//! (re-propagating with another box runs only the decoder on slices already encoded).

use super::{Error, PixelPrompt, Preprocessed, Segmenter};
use crate::model::Embedding;

/// Widening of a propagated box on each side, in pixels of the 256 model grid.
pub const BOX_MARGIN: f32 = 3.0;

/// Options of [`propagate`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    /// Slices to run each way from the start (the official recipe's z range); `None`: run
    /// until a stopping rule. `Some(0)`: the start slice only.
    pub extent: Option<usize>,
    /// Without an extent, a direction ends at a predicted IoU below this (0..=1).
    pub min_iou: f32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            extent: None,
            min_iou: 0.5,
        }
    }
}

/// Why a direction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stop {
    /// The first or last slice of the series was reached.
    SeriesEnd,
    /// `extent` slices were run.
    Extent,
    /// The next slice's mask was empty (no extent).
    EmptyMask,
    /// The next slice's predicted IoU was below `min_iou` (no extent).
    LowIou,
    /// The caller cancelled.
    Cancelled,
}

/// The mask of one slice.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceMask {
    /// Index of the slice in the series order.
    pub slice: usize,
    /// The box prompt it was given (`[x0, y0, x1, y1]`, image pixels); the start slice's
    /// is the user's (or `None` for points only).
    pub prompt_box: Option<[f32; 4]>,
    /// 0/1 per pixel, `rows * cols`.
    pub mask: Vec<u8>,
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Pixels in the mask.
    pub area: usize,
    /// Predicted IoU.
    pub iou: f32,
}

/// The result of [`propagate`].
#[derive(Debug, Clone, PartialEq)]
pub struct Propagation {
    /// The masks kept, in series order (contiguous around the start).
    pub slices: Vec<SliceMask>,
    /// Why each direction ended: towards higher slice indices, then lower.
    pub stopped: [Stop; 2],
}

impl Propagation {
    /// Voxels in all masks.
    pub fn voxels(&self) -> usize {
        self.slices.iter().map(|s| s.area).sum()
    }
}

/// Volume in millilitres of `voxels` voxels of `spacing` (column, row, slice; mm).
pub fn volume_ml(voxels: usize, spacing: [f64; 3]) -> f64 {
    voxels as f64 * spacing[0] * spacing[1] * spacing[2] / 1000.0
}

/// The box prompt of the slice after one with `mask` (`rows x cols`, model scale `scale`):
/// the mask's bounding box widened by [`BOX_MARGIN`] model pixels, clipped to the image;
/// `None` for an empty mask.
pub fn next_box(mask: &[u8], rows: usize, cols: usize, scale: f32) -> Option<[f32; 4]> {
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    for (i, _) in mask.iter().enumerate().filter(|(_, m)| **m != 0) {
        let (x, y) = (i % cols, i / cols);
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 == usize::MAX {
        return None;
    }
    let m = BOX_MARGIN / scale;
    let (w, h) = ((cols - 1) as f32, (rows - 1) as f32);
    Some([
        (x0 as f32 - m).clamp(0.0, w),
        (y0 as f32 - m).clamp(0.0, h),
        (x1 as f32 + m).clamp(0.0, w),
        (y1 as f32 + m).clamp(0.0, h),
    ])
}

/// Propagate `prompt` from slice `start` of a series of `n` slices (see the module docs).
///
/// `slice(i)` gives slice `i` preprocessed (by the series recipe) and encoded: the caller
/// caches them. `on_slice` sees each kept mask as it is computed (progress); returning
/// `false` cancels (the masks so far are returned, with [`Stop::Cancelled`]).
pub fn propagate(
    segmenter: &Segmenter,
    n: usize,
    start: usize,
    prompt: &PixelPrompt,
    options: &Options,
    slice: &mut dyn FnMut(usize) -> Result<(Preprocessed, Embedding), Error>,
    on_slice: &mut dyn FnMut(&SliceMask) -> bool,
) -> Result<Propagation, Error> {
    if start >= n {
        return Err(Error::Prompt(format!(
            "start slice {start} is outside the series (slices 0..{})",
            n.saturating_sub(1)
        )));
    }
    if !(0.0..=1.0).contains(&options.min_iou) {
        return Err(Error::Prompt(format!(
            "min-iou {} is outside 0..1",
            options.min_iou
        )));
    }
    if prompt.multimask {
        return Err(Error::Prompt(
            "propagation takes single-mask prompts (no multimask)".into(),
        ));
    }
    let run = |i: usize,
               p: &PixelPrompt,
               slice: &mut dyn FnMut(usize) -> Result<(Preprocessed, Embedding), Error>|
     -> Result<(SliceMask, f32), Error> {
        let (pre, emb) = slice(i)?;
        let s = segmenter.segment(&emb, &pre, p)?;
        let iou = s.predicted_iou();
        Ok((
            SliceMask {
                slice: i,
                prompt_box: p.bbox,
                area: s.area,
                iou,
                rows: s.rows,
                cols: s.cols,
                mask: s.mask,
            },
            pre.scale,
        ))
    };
    let (first, scale) = run(start, prompt, slice)?;
    let mut kept = vec![first.clone()];
    let mut stopped = [Stop::SeriesEnd; 2];
    if !on_slice(&first) {
        return Ok(Propagation {
            slices: kept,
            stopped: [Stop::Cancelled; 2],
        });
    }
    // The start box, for the extent rule's fallback: the user's, else the first mask's.
    let start_box = prompt
        .bbox
        .or_else(|| next_box(&first.mask, first.rows, first.cols, scale));
    'directions: for (d, step) in [1isize, -1].into_iter().enumerate() {
        let mut prev = first.clone();
        let mut prev_scale = scale;
        let mut ran = 0usize;
        loop {
            let i = start as isize + step * (ran as isize + 1);
            if i < 0 || i >= n as isize {
                stopped[d] = Stop::SeriesEnd;
                break;
            }
            if options.extent.is_some_and(|e| ran >= e) {
                stopped[d] = Stop::Extent;
                break;
            }
            let bbox = match next_box(&prev.mask, prev.rows, prev.cols, prev_scale) {
                Some(b) => b,
                None if options.extent.is_some() && start_box.is_some() => {
                    start_box.expect("checked")
                }
                None => {
                    stopped[d] = Stop::EmptyMask;
                    break;
                }
            };
            let p = PixelPrompt {
                bbox: Some(bbox),
                points: Vec::new(),
                multimask: false,
            };
            let (m, s) = run(i as usize, &p, slice)?;
            ran += 1;
            if options.extent.is_none() {
                if m.area == 0 {
                    stopped[d] = Stop::EmptyMask;
                    break;
                }
                if m.iou < options.min_iou || m.iou.is_nan() {
                    stopped[d] = Stop::LowIou;
                    break;
                }
            }
            let go_on = on_slice(&m);
            kept.push(m.clone());
            if !go_on {
                stopped = [Stop::Cancelled; 2];
                break 'directions;
            }
            prev = m;
            prev_scale = s;
        }
    }
    kept.sort_by_key(|m| m.slice);
    Ok(Propagation {
        slices: kept,
        stopped,
    })
}

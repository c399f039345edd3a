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

/// The propagation loop as steps, for callers that encode and decode asynchronously (the
/// browser): [`Propagator::next_slice`] says which slice to segment with which prompt,
/// [`Propagator::feed`] takes its mask and applies the rules. [`propagate`] drives it
/// synchronously.
#[derive(Debug, Clone)]
pub struct Propagator {
    n: usize,
    start: usize,
    options: Options,
    prompt: PixelPrompt,
    /// The start box, for the extent rule's fallback: the user's, else the first mask's.
    start_box: Option<[f32; 4]>,
    /// Current direction: 0 towards higher indices, 1 lower; 2 when done.
    direction: usize,
    /// The previous kept mask in this direction and its model scale.
    prev: Option<(SliceMask, f32)>,
    /// Slices run in this direction.
    ran: usize,
    /// The slice `next` handed out, awaiting its mask.
    pending: Option<usize>,
    kept: Vec<SliceMask>,
    stopped: [Stop; 2],
    first: Option<(SliceMask, f32)>,
}

impl Propagator {
    /// A propagation of `prompt` from slice `start` of a series of `n` slices; refuses a
    /// start outside the series, `min_iou` outside 0..1 and multimask prompts.
    pub fn new(
        n: usize,
        start: usize,
        prompt: &PixelPrompt,
        options: &Options,
    ) -> Result<Self, Error> {
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
        Ok(Self {
            n,
            start,
            options: *options,
            prompt: prompt.clone(),
            start_box: None,
            direction: 0,
            prev: None,
            ran: 0,
            pending: None,
            kept: Vec::new(),
            stopped: [Stop::SeriesEnd; 2],
            first: None,
        })
    }

    /// The next slice to segment and its prompt (the user's on the start slice, then the
    /// widened box of the previous mask), or `None` when the propagation is over. Call
    /// [`Propagator::feed`] with its mask before asking again.
    pub fn next_slice(&mut self) -> Option<(usize, PixelPrompt)> {
        if self.pending.is_some() || self.direction >= 2 {
            return None;
        }
        if self.first.is_none() {
            self.pending = Some(self.start);
            return Some((self.start, self.prompt.clone()));
        }
        while self.direction < 2 {
            let step = if self.direction == 0 { 1isize } else { -1 };
            let i = self.start as isize + step * (self.ran as isize + 1);
            if i < 0 || i >= self.n as isize {
                self.end_direction(Stop::SeriesEnd);
                continue;
            }
            if self.options.extent.is_some_and(|e| self.ran >= e) {
                self.end_direction(Stop::Extent);
                continue;
            }
            let (prev, scale) = self
                .prev
                .as_ref()
                .or(self.first.as_ref())
                .expect("the start slice was fed");
            let bbox = match next_box(&prev.mask, prev.rows, prev.cols, *scale) {
                Some(b) => b,
                None => match (self.options.extent, self.start_box) {
                    (Some(_), Some(b)) => b,
                    _ => {
                        self.end_direction(Stop::EmptyMask);
                        continue;
                    }
                },
            };
            self.pending = Some(i as usize);
            return Some((
                i as usize,
                PixelPrompt {
                    bbox: Some(bbox),
                    points: Vec::new(),
                    multimask: false,
                },
            ));
        }
        None
    }

    fn end_direction(&mut self, why: Stop) {
        self.stopped[self.direction] = why;
        self.direction += 1;
        self.prev = None;
        self.ran = 0;
    }

    /// The mask of the slice [`Propagator::next_slice`] gave, with that slice's model scale
    /// (`Preprocessed::scale`). Returns the mask when it is kept (the start slice's
    /// always; without an extent, an empty or unconfident mask ends its direction and is
    /// not kept), `None` otherwise.
    pub fn feed(&mut self, mask: SliceMask, scale: f32) -> Result<Option<&SliceMask>, Error> {
        let Some(expected) = self.pending.take() else {
            return Err(Error::Prompt(
                "propagation: a mask was given with no slice asked for".into(),
            ));
        };
        if mask.slice != expected {
            return Err(Error::Prompt(format!(
                "propagation: slice {expected} was asked for, the mask is of slice {}",
                mask.slice
            )));
        }
        if self.first.is_none() {
            self.start_box = self
                .prompt
                .bbox
                .or_else(|| next_box(&mask.mask, mask.rows, mask.cols, scale));
            self.first = Some((mask.clone(), scale));
            self.kept.push(mask);
            return Ok(self.kept.last());
        }
        self.ran += 1;
        if self.options.extent.is_none() {
            if mask.area == 0 {
                self.end_direction(Stop::EmptyMask);
                return Ok(None);
            }
            if mask.iou < self.options.min_iou || mask.iou.is_nan() {
                self.end_direction(Stop::LowIou);
                return Ok(None);
            }
        }
        self.prev = Some((mask.clone(), scale));
        self.kept.push(mask);
        Ok(self.kept.last())
    }

    /// Stop here: both directions end as [`Stop::Cancelled`], the masks so far are kept.
    pub fn cancel(&mut self) {
        self.stopped = [Stop::Cancelled; 2];
        self.direction = 2;
        self.pending = None;
    }

    /// The masks kept, in series order, and why each direction ended.
    pub fn finish(mut self) -> Propagation {
        self.kept.sort_by_key(|m| m.slice);
        Propagation {
            slices: self.kept,
            stopped: self.stopped,
        }
    }
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
    let mut p = Propagator::new(n, start, prompt, options)?;
    while let Some((i, prompt)) = p.next_slice() {
        let (pre, emb) = slice(i)?;
        let s = segmenter.segment(&emb, &pre, &prompt)?;
        let mask = SliceMask::new(i, &prompt, s);
        if let Some(kept) = p.feed(mask, pre.scale)?
            && !on_slice(kept)
        {
            p.cancel();
        }
    }
    Ok(p.finish())
}

impl SliceMask {
    /// The mask of slice `slice` from its segmentation with `prompt`.
    pub fn new(slice: usize, prompt: &PixelPrompt, s: super::Segmentation) -> Self {
        SliceMask {
            slice,
            prompt_box: prompt.bbox,
            iou: s.predicted_iou(),
            area: s.area,
            rows: s.rows,
            cols: s.cols,
            mask: s.mask,
        }
    }
}

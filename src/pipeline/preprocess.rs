//! The LiteMedSAM preprocessing recipe, stated exactly so that parity is checkable
//! (see docs/design.md, "Data flow"), and the matching postprocessing.
//!
//! 1. modality LUT (already applied by `dicom::DicomImage::frame`);
//! 2. CT: clip to the file's first WindowCenter/Width if usable (finite, width >= 1;
//!    else 40/400, with a warning); other grey images:
//!    clip to the 0.5 / 99.5 percentiles (numpy "linear") of the pixels above the image
//!    minimum; rescale the clipped range to 0..255; MONOCHROME1 → 255 − value; replicate
//!    to 3 channels (colour images stay RGB, unchanged);
//! 3. resize so the longest side is 256, new side = round(side · 256 / longest): area
//!    averaging when shrinking (OpenCV INTER_AREA), bilinear with half-pixel centres and
//!    clamped borders when enlarging (OpenCV INTER_LINEAR);
//! 4. min-max normalise to 0..1 (denominator at least 1e-8), pad bottom/right with zeros
//!    to 256 x 256.
//!
//! Postprocessing: crop the low-res logits to the unpadded region, bilinear upsample with
//! half-pixel centres (PyTorch `align_corners=False`) to rows x cols, mask = logit > 0.

use crate::dicom::{Frame, ImageMeta};
use crate::model::sam::{INPUT_SIZE, LOW_RES_SIZE};

use super::Error;

/// How the intensities were clipped (reported to users and in JSON output).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Clip {
    /// Lower bound (modality units).
    pub lo: f32,
    /// Upper bound (modality units).
    pub hi: f32,
}

/// A frame prepared for the encoder.
#[derive(Debug, Clone)]
pub struct Preprocessed {
    /// `[3, 256, 256]` channel-major values in 0..1, zero-padded.
    pub pixels: Vec<f32>,
    /// Original rows.
    pub rows: usize,
    /// Original columns.
    pub cols: usize,
    /// Rows after the resize (before padding).
    pub new_rows: usize,
    /// Columns after the resize (before padding).
    pub new_cols: usize,
    /// `256 / max(rows, cols)`: multiply image coordinates by this for the model.
    pub scale: f32,
    /// Intensity clip applied (grey images only).
    pub clip: Option<Clip>,
    /// What the recipe had to decide against the file (e.g. an unusable CT window replaced
    /// by the default), for the user to see: the CLI prints them, the JS API returns them.
    pub warnings: Vec<String>,
}

impl Preprocessed {
    /// Map a coordinate from original pixel space to model-input space (no rounding).
    pub fn to_model(&self, v: f32) -> f32 {
        v * self.scale
    }
}

/// numpy `percentile(..., method="linear")` of sorted values.
fn percentile_sorted(sorted: &[f32], q: f64) -> f32 {
    let n = sorted.len();
    let pos = q / 100.0 * (n - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(n - 1);
    let frac = pos - lo as f64;
    (sorted[lo] as f64 + (sorted[hi] as f64 - sorted[lo] as f64) * frac) as f32
}

/// The default CT window (center, width) of the recipe.
pub const CT_DEFAULT_WINDOW: (f64, f64) = (40.0, 400.0);

/// The CT window of the recipe: the file's first WindowCenter/Width when it is a usable
/// LINEAR window (finite, width at least 1), else [`CT_DEFAULT_WINDOW`] with a warning
/// saying why (a width of 0, negative or NaN would clip every pixel to one value: an
/// all-zero model input and an empty mask, silently).
pub fn ct_window(meta: &ImageMeta) -> ((f64, f64), Option<String>) {
    match meta.window {
        None => (CT_DEFAULT_WINDOW, None),
        Some((c, w)) if c.is_finite() && w.is_finite() && w >= 1.0 => ((c, w), None),
        Some((c, w)) => (
            CT_DEFAULT_WINDOW,
            Some(format!(
                "the file's CT window (center {c}, width {w}) is not usable (width must be at \
                 least 1); segmenting with the default window {}/{}",
                CT_DEFAULT_WINDOW.0, CT_DEFAULT_WINDOW.1
            )),
        ),
    }
}

/// numpy `percentile(a, [lo, hi], method="linear")` of `values` in linear time (two
/// selections instead of a sort); `values` is reordered. Not empty.
fn percentiles(values: &mut [f32], lo: f64, hi: f64) -> (f32, f32) {
    let n = values.len();
    let mut at = |q: f64| {
        let pos = q / 100.0 * (n - 1) as f64;
        let i = pos.floor() as usize;
        let frac = pos - i as f64;
        let (_, &mut a, rest) = values.select_nth_unstable_by(i, f32::total_cmp);
        // The next order statistic is the smallest of what lies above the i-th.
        let b = rest.iter().copied().min_by(f32::total_cmp).unwrap_or(a);
        (a as f64 + (b as f64 - a as f64) * frac) as f32
    };
    (at(lo), at(hi))
}

/// The intensity clip of a whole series (the 3D recipe, docs/design.md): CT -> the first
/// slice's window (as in 2D, 40/400 when unusable, with the warning); other grey images ->
/// the 0.5 / 99.5 percentiles (numpy linear) of every voxel of the series above the
/// series minimum; colour -> `None` (used as stored). `frames`: the series' decoded
/// frames (one channel count), `meta`: its first image's.
pub fn series_clip(frames: &[Frame], meta: &ImageMeta) -> (Option<Clip>, Vec<String>) {
    let mut warnings = Vec::new();
    if frames.iter().any(|f| f.channels != 1) {
        return (None, warnings);
    }
    if meta.modality.eq_ignore_ascii_case("CT") {
        let ((c, w), warning) = ct_window(meta);
        warnings.extend(warning);
        let clip = Clip {
            lo: (c - w / 2.0) as f32,
            hi: (c + w / 2.0) as f32,
        };
        return (Some(clip), warnings);
    }
    let all = frames.iter().flat_map(|f| f.values.iter().copied());
    let min = all.clone().fold(f32::INFINITY, f32::min);
    let mut above: Vec<f32> = all.filter(|&x| x > min).collect();
    let clip = if above.is_empty() {
        Clip { lo: min, hi: min }
    } else {
        let (lo, hi) = percentiles(&mut above, 0.5, 99.5);
        Clip { lo, hi }
    };
    (Some(clip), warnings)
}

/// Intensity normalisation to 0..255 on 3 channels (steps 1–2), `[H, W, 3]` interleaved,
/// with the image's own clip or `given` (a series' clip); warnings about what was replaced
/// go to `warnings`.
fn to_rgb255(
    frame: &Frame,
    meta: &ImageMeta,
    given: Option<Clip>,
    warnings: &mut Vec<String>,
) -> (Vec<f32>, Option<Clip>) {
    let n = frame.rows * frame.cols;
    if frame.channels == 3 {
        return (frame.values.clone(), None);
    }
    let v = &frame.values;
    let clip = if let Some(clip) = given {
        clip
    } else if meta.modality.eq_ignore_ascii_case("CT") {
        let ((c, w), warning) = ct_window(meta);
        warnings.extend(warning);
        Clip {
            lo: (c - w / 2.0) as f32,
            hi: (c + w / 2.0) as f32,
        }
    } else {
        let min = v.iter().copied().fold(f32::INFINITY, f32::min);
        let mut above: Vec<f32> = v.iter().copied().filter(|&x| x > min).collect();
        if above.is_empty() {
            Clip { lo: min, hi: min }
        } else {
            above.sort_by(f32::total_cmp);
            Clip {
                lo: percentile_sorted(&above, 0.5),
                hi: percentile_sorted(&above, 99.5),
            }
        }
    };
    let range = clip.hi - clip.lo;
    let invert = meta.photometric == "MONOCHROME1";
    let mut out = Vec::with_capacity(n * 3);
    for &x in v {
        let y = if range > 0.0 {
            (x.clamp(clip.lo, clip.hi) - clip.lo) / range * 255.0
        } else {
            0.0
        };
        let y = if invert { 255.0 - y } else { y };
        out.extend_from_slice(&[y, y, y]);
    }
    (out, Some(clip))
}

/// Per-axis area-averaging weights: for each output index, `(input index, weight)` pairs.
fn area_weights(n_in: usize, n_out: usize) -> Vec<Vec<(usize, f32)>> {
    let s = n_in as f64 / n_out as f64;
    (0..n_out)
        .map(|o| {
            let (a, b) = (o as f64 * s, (o + 1) as f64 * s);
            let mut w = Vec::new();
            let mut j = a.floor() as usize;
            while (j as f64) < b && j < n_in {
                let overlap = (b.min(j as f64 + 1.0) - a.max(j as f64)).max(0.0);
                if overlap > 0.0 {
                    w.push((j, (overlap / s) as f32));
                }
                j += 1;
            }
            w
        })
        .collect()
}

/// Per-axis bilinear weights with half-pixel centres, borders clamped (OpenCV INTER_LINEAR).
fn linear_weights(n_in: usize, n_out: usize) -> Vec<Vec<(usize, f32)>> {
    let s = n_in as f64 / n_out as f64;
    (0..n_out)
        .map(|o| {
            let src = (o as f64 + 0.5) * s - 0.5;
            let f = src.floor();
            let t = (src - f) as f32;
            let i0 = (f as i64).clamp(0, n_in as i64 - 1) as usize;
            let i1 = (f as i64 + 1).clamp(0, n_in as i64 - 1) as usize;
            vec![(i0, 1.0 - t), (i1, t)]
        })
        .collect()
}

/// PyTorch `F.interpolate(mode="bilinear", align_corners=False)` weights.
fn torch_bilinear_weights(n_in: usize, n_out: usize) -> Vec<Vec<(usize, f32)>> {
    let s = n_in as f64 / n_out as f64;
    (0..n_out)
        .map(|o| {
            let src = ((o as f64 + 0.5) * s - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(n_in - 1);
            let i1 = (i0 + 1).min(n_in - 1);
            let t = (src - i0 as f64) as f32;
            vec![(i0, 1.0 - t), (i1, t)]
        })
        .collect()
}

/// Separable resize of an `[H, W, C]` interleaved image (`src`, with `(W, C)` given; H is
/// implied by the row weights) with per-axis weights.
fn resize_separable(
    src: &[f32],
    (w, c): (usize, usize),
    wy: &[Vec<(usize, f32)>],
    wx: &[Vec<(usize, f32)>],
) -> Vec<f32> {
    let (oh, ow) = (wy.len(), wx.len());
    // Rows first: [oh, w, c].
    let mut tmp = vec![0.0f32; oh * w * c];
    for (oy, ws) in wy.iter().enumerate() {
        let dst = &mut tmp[oy * w * c..(oy + 1) * w * c];
        for &(iy, wt) in ws {
            let row = &src[iy * w * c..(iy + 1) * w * c];
            dst.iter_mut().zip(row).for_each(|(d, &s)| *d += wt * s);
        }
    }
    let mut out = vec![0.0f32; oh * ow * c];
    for oy in 0..oh {
        for (ox, ws) in wx.iter().enumerate() {
            for ch in 0..c {
                let mut acc = 0.0;
                for &(ix, wt) in ws {
                    acc += wt * tmp[(oy * w + ix) * c + ch];
                }
                out[(oy * ow + ox) * c + ch] = acc;
            }
        }
    }
    out
}

/// A frame both recipes can take: grey or RGB, finite values.
fn check_frame(frame: &Frame) -> Result<(), Error> {
    if frame.channels != 1 && frame.channels != 3 {
        return Err(Error::Unsupported(format!(
            "{} samples per pixel (1 or 3 supported)",
            frame.channels
        )));
    }
    if frame.values.iter().any(|v| !v.is_finite()) {
        return Err(Error::Unsupported(
            "the frame holds non-finite pixel values".into(),
        ));
    }
    Ok(())
}

/// Run the whole recipe on one decoded frame.
pub fn preprocess(frame: &Frame, meta: &ImageMeta) -> Result<Preprocessed, Error> {
    preprocess_clipped(frame, meta, None)
}

/// The recipe with the intensity clip `clip` instead of the frame's own (a slice of a
/// series, clipped by [`series_clip`]); `None` is [`preprocess`].
pub fn preprocess_clipped(
    frame: &Frame,
    meta: &ImageMeta,
    clip: Option<Clip>,
) -> Result<Preprocessed, Error> {
    let _span = tracing::info_span!("preprocess").entered();
    check_frame(frame)?;
    let (rows, cols) = (frame.rows, frame.cols);
    let mut warnings = Vec::new();
    let (rgb, clip) = to_rgb255(frame, meta, clip, &mut warnings);
    let longest = rows.max(cols);
    let scale = INPUT_SIZE as f32 / longest as f32;
    let new_rows = ((rows as f64 * INPUT_SIZE as f64 / longest as f64).round() as usize).max(1);
    let new_cols = ((cols as f64 * INPUT_SIZE as f64 / longest as f64).round() as usize).max(1);
    let (wy, wx) = if longest > INPUT_SIZE {
        (area_weights(rows, new_rows), area_weights(cols, new_cols))
    } else {
        (
            linear_weights(rows, new_rows),
            linear_weights(cols, new_cols),
        )
    };
    let resized = resize_separable(&rgb, (cols, 3), &wy, &wx);
    let (min, max) = resized
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let denom = (max - min).max(1e-8);
    let mut pixels = vec![0.0f32; 3 * INPUT_SIZE * INPUT_SIZE];
    for y in 0..new_rows {
        for x in 0..new_cols {
            for ch in 0..3 {
                pixels[ch * INPUT_SIZE * INPUT_SIZE + y * INPUT_SIZE + x] =
                    (resized[(y * new_cols + x) * 3 + ch] - min) / denom;
            }
        }
    }
    Ok(Preprocessed {
        pixels,
        rows,
        cols,
        new_rows,
        new_cols,
        scale,
        clip,
        warnings,
    })
}

/// Crop the `256 x 256` low-res logits to the unpadded region and upsample them to the
/// original `rows x cols` (PyTorch bilinear, `align_corners=False`). Returns logits.
pub fn upsample_logits(low_res: &[f32], pre: &Preprocessed) -> Vec<f32> {
    assert_eq!(
        low_res.len(),
        LOW_RES_SIZE * LOW_RES_SIZE,
        "low-res logits must be 256x256"
    );
    let (nr, nc) = (
        pre.new_rows.min(LOW_RES_SIZE),
        pre.new_cols.min(LOW_RES_SIZE),
    );
    let mut cropped = Vec::with_capacity(nr * nc);
    for y in 0..nr {
        cropped.extend_from_slice(&low_res[y * LOW_RES_SIZE..y * LOW_RES_SIZE + nc]);
    }
    let wy = torch_bilinear_weights(nr, pre.rows);
    let wx = torch_bilinear_weights(nc, pre.cols);
    resize_separable(&cropped, (nc, 1), &wy, &wx)
}

/// Binary mask (0/1 per pixel, `rows * cols`) from low-res logits: logit > 0.
pub fn mask_from_logits(low_res: &[f32], pre: &Preprocessed) -> Vec<u8> {
    upsample_logits(low_res, pre)
        .iter()
        .map(|&v| u8::from(v > 0.0))
        .collect()
}

/// Input of a ViT embedder (DINOv2-style) for one frame: the same intensity normalisation
/// as the LiteMedSAM recipe (CT window or percentile clip to 0..255, 3 channels) at full
/// resolution, shortest side resized to `size` (area averaging when shrinking, bilinear
/// when enlarging), centre crop `size x size`, `/255`, then `(x - mean) / std` per channel.
/// `[3, size, size]` channel-major. (Hugging Face's processor resizes with PIL bicubic;
/// this is the same geometry with our resamplers.)
pub fn vit_input(
    frame: &Frame,
    meta: &ImageMeta,
    size: usize,
    mean: [f32; 3],
    std: [f32; 3],
) -> Result<Vec<f32>, Error> {
    check_frame(frame)?;
    if size == 0 || std.contains(&0.0) {
        return Err(Error::Unsupported(format!(
            "ViT input size {size} / std {std:?} cannot be used"
        )));
    }
    let (rows, cols) = (frame.rows, frame.cols);
    let (rgb, _) = to_rgb255(frame, meta, None, &mut Vec::new());
    let shortest = rows.min(cols);
    let new_rows = ((rows * size) as f64 / shortest as f64)
        .round()
        .max(size as f64) as usize;
    let new_cols = ((cols * size) as f64 / shortest as f64)
        .round()
        .max(size as f64) as usize;
    let weights = |n_in: usize, n_out: usize| {
        if n_out < n_in {
            area_weights(n_in, n_out)
        } else {
            linear_weights(n_in, n_out)
        }
    };
    let resized = resize_separable(
        &rgb,
        (cols, 3),
        &weights(rows, new_rows),
        &weights(cols, new_cols),
    );
    let (top, left) = ((new_rows - size) / 2, (new_cols - size) / 2);
    let mut out = vec![0.0f32; 3 * size * size];
    for y in 0..size {
        for x in 0..size {
            for ch in 0..3 {
                let v = resized[((top + y) * new_cols + left + x) * 3 + ch] / 255.0;
                out[ch * size * size + y * size + x] = (v - mean[ch]) / std[ch];
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_matches_numpy_linear() {
        let v: Vec<f32> = (0..=10).map(|x| x as f32).collect();
        assert_eq!(percentile_sorted(&v, 50.0), 5.0);
        assert!((percentile_sorted(&v, 0.5) - 0.05).abs() < 1e-6);
        assert!((percentile_sorted(&v, 99.5) - 9.95).abs() < 1e-6);
    }

    #[test]
    fn selected_percentiles_equal_the_sorted_ones() {
        // Pseudo-random values with many repeats, several sizes.
        let mut state = 0x9E37_79B9_u32;
        for n in [1usize, 2, 3, 10, 201, 4096] {
            let mut v: Vec<f32> = (0..n)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    (state % 97) as f32 - 40.0
                })
                .collect();
            let mut sorted = v.clone();
            sorted.sort_by(f32::total_cmp);
            let want = (
                percentile_sorted(&sorted, 0.5),
                percentile_sorted(&sorted, 99.5),
            );
            assert_eq!(percentiles(&mut v, 0.5, 99.5), want, "n = {n}");
        }
    }

    #[test]
    fn area_weights_average_integer_blocks() {
        let w = area_weights(4, 2);
        assert_eq!(w[0], vec![(0, 0.5), (1, 0.5)]);
        assert_eq!(w[1], vec![(2, 0.5), (3, 0.5)]);
    }

    #[test]
    fn torch_bilinear_clamps_and_interpolates() {
        // 2 -> 4 upsampling as torch: outputs at src -0.25 (clamped 0), 0.25, 0.75, 1.25.
        let img = [0.0f32, 1.0];
        let w = torch_bilinear_weights(2, 4);
        let out = resize_separable(&img, (2, 1), &[vec![(0, 1.0)]], &w);
        assert_eq!(out, vec![0.0, 0.25, 0.75, 1.0]);
    }
}

//! What the quantized files are calibrated on: the fp32 model measured on calibration
//! frames by the fixed-order pass ([`super::exact`]), and the bias correction it drives.
//!
//! - Encoder targets: the mean output of each biased layer of TinyViT's stages 1-3 over
//!   every calibration frame (all rows, the attention windows' padding included, as the
//!   layer computes them), summed in f64 in row order.
//! - Decoder inputs: `Σ xᵀx` over the input rows of each 4-bit (GPTQ) decoder layer, on
//!   [`BOXES_PER_FRAME`] box prompts per frame, in f64 (each product of two f32 values is
//!   exact in f64; the sums run frame, box, row in order).
//! - Bias correction ([`bias_corrected`]): the encoder with the plan's rounding runs the
//!   same frames; each biased layer, in the order they run, gets the bias that brings its
//!   mean output back to the fp32 target, and the pass continues with the corrected output
//!   (so later layers also cancel the shift the earlier layers' noise leaves after GELU,
//!   softmax and LayerNorm).
//!
//! Every value here is computed in one order of IEEE operations (see [`super::exact`]), so
//! the corrected biases and the GPTQ rounding, hence the files, are the same on every CPU.

use std::collections::HashMap;

use burn::store::{ModuleSnapshot, bridge};
use burn::tensor::TensorData;

use super::exact::decoder::{self, Prompt, Until};
use super::exact::encoder;
use super::exact::{Observer, Params};
use super::quantize::{Plan, quantize_values, token_only};
use medfm::model::Error;
use medfm::model::sam::{INPUT_SIZE, Sam};

/// Box prompts decoded per calibration frame (centres on a 3 x 3 grid, two sizes).
pub const BOXES_PER_FRAME: usize = 18;

/// Boxes `[x0, y0, x1, y1]` in model-input space decoded on each calibration frame:
/// centres on a 3 x 3 grid over the middle of the input, two sizes each (about 0.16 and
/// 0.36 of the side), slightly taller above the centre than below.
pub fn calibration_boxes() -> Vec<[f32; 4]> {
    let s = INPUT_SIZE as f32;
    let mut boxes = Vec::with_capacity(BOXES_PER_FRAME);
    for cy in [0.3f32, 0.5, 0.7] {
        for cx in [0.3f32, 0.5, 0.7] {
            for half in [0.08f32, 0.18] {
                boxes.push([
                    (cx - half) * s,
                    (cy - half * 1.2) * s,
                    (cx + half) * s,
                    (cy + half * 0.9) * s,
                ]);
            }
        }
    }
    boxes
}

/// The fp32 model's measurements on the calibration frames.
pub struct Calibration {
    /// Stage-0 output of each frame (never quantized: the correcting pass starts there).
    stems: Vec<Vec<f32>>,
    /// Mean output of each biased encoder layer, by layer path (weight path without
    /// `.weight`).
    targets: HashMap<String, Vec<f64>>,
    /// `K x K` row-major input Gram matrix of each recorded decoder layer, by layer path.
    grams: HashMap<String, Vec<f64>>,
    /// The parameters the measurements were made with (to refuse another model's).
    fingerprint: u64,
}

/// Sums of each observed encoder layer's output rows.
#[derive(Default)]
struct Recorder {
    sums: HashMap<String, (Vec<f64>, u64)>,
    grams: HashMap<String, Vec<f64>>,
}

impl Observer for Recorder {
    fn encoder_output(&mut self, layer: &str, out: &mut [f32], n: usize) -> Result<(), Error> {
        let (sum, rows) = self
            .sums
            .entry(layer.to_string())
            .or_insert_with(|| (vec![0.0; n], 0));
        add_rows(sum, out, n);
        *rows += (out.len() / n.max(1)) as u64;
        Ok(())
    }

    fn decoder_input(&mut self, layer: &str, x: &[f32], k: usize) {
        if !token_only(&format!("{layer}.weight")) {
            return;
        }
        let g = self
            .grams
            .entry(layer.to_string())
            .or_insert_with(|| vec![0.0; k * k]);
        // Upper triangle, row after row; mirrored when the recording ends.
        for row in x.chunks_exact(k) {
            for (i, &xi) in row.iter().enumerate() {
                if xi == 0.0 {
                    continue;
                }
                let xi = f64::from(xi);
                for (g, &xj) in g[i * k + i..(i + 1) * k].iter_mut().zip(&row[i..]) {
                    *g += xi * f64::from(xj);
                }
            }
        }
    }
}

/// `sum[j] += row[j]` over the rows of `out [rows, n]`, in row order, in f64.
fn add_rows(sum: &mut [f64], out: &[f32], n: usize) {
    for row in out.chunks_exact(n) {
        for (s, &v) in sum.iter_mut().zip(row) {
            *s += f64::from(v);
        }
    }
}

/// A checksum of every parameter's bits (FNV-1a), to tell models apart.
fn fingerprint(params: &Params) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for (name, p) in params.iter() {
        for b in name.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        for v in &p.values {
            h = (h ^ u64::from(v.to_bits())).wrapping_mul(0x100_0000_01b3);
        }
    }
    h
}

impl Calibration {
    /// Measure the fp32 model `params` on `images` (preprocessed frames `[3, 256, 256]`,
    /// none an image the results are judged on): the encoder's layer means, then the mask
    /// decoder on [`calibration_boxes`] of each frame's embedding, recording the input Gram
    /// matrices of the decoder's token layers (the ones a plan may round with GPTQ).
    pub fn record(params: &Params, images: &[Vec<f32>]) -> Result<Self, Error> {
        if images.is_empty() {
            return Err(Error::Input {
                tensor: "image",
                problem: "no calibration images".into(),
            });
        }
        let stems = images
            .iter()
            .map(|img| encoder::stem(params, img))
            .collect::<Result<Vec<_>, _>>()?;
        let mut rec = Recorder::default();
        let embeddings = encoder::stages(params, &stems, &mut rec, true)?
            .ok_or_else(|| Error::Weights("calibration: the encoder gave no embedding".into()))?;
        let image_pe = decoder::image_pe(params)?;
        for embedding in &embeddings {
            for bbox in calibration_boxes() {
                let prompt = Prompt {
                    bbox: Some(bbox),
                    points: Vec::new(),
                };
                decoder::decode(
                    params,
                    embedding,
                    &image_pe,
                    &prompt,
                    false,
                    Until::TokenLayers,
                    &mut rec,
                )?;
            }
        }
        let targets = rec
            .sums
            .into_iter()
            .map(|(layer, (sum, rows))| {
                let mean = sum.iter().map(|s| s / rows.max(1) as f64).collect();
                (layer, mean)
            })
            .collect();
        let mut grams = rec.grams;
        for g in grams.values_mut() {
            let k = (g.len() as f64).sqrt() as usize;
            for i in 0..k {
                for j in 0..i {
                    g[i * k + j] = g[j * k + i];
                }
            }
        }
        Ok(Self {
            stems,
            targets,
            grams,
            fingerprint: fingerprint(params),
        })
    }

    /// The input Gram matrix of decoder layer `layer` (weight path without `.weight`), if
    /// recorded.
    pub fn gram(&self, layer: &str) -> Option<&[f64]> {
        self.grams.get(layer).map(Vec::as_slice)
    }

    /// The fp32 mean output of encoder layer `layer`, if recorded.
    pub fn target(&self, layer: &str) -> Option<&[f64]> {
        self.targets.get(layer).map(Vec::as_slice)
    }
}

/// Brings each observed layer's mean output to its target, in place, and keeps the
/// corrections.
struct Corrector<'a> {
    targets: &'a HashMap<String, Vec<f64>>,
    applied: Vec<(String, Vec<f32>)>,
}

impl Observer for Corrector<'_> {
    fn encoder_output(&mut self, layer: &str, out: &mut [f32], n: usize) -> Result<(), Error> {
        let target = self.targets.get(layer).ok_or_else(|| {
            Error::Weights(format!("bias correction: no fp32 target for `{layer}`"))
        })?;
        if target.len() != n {
            return Err(Error::Weights(format!(
                "bias correction: `{layer}` has {n} outputs, its target {}",
                target.len()
            )));
        }
        let mut sum = vec![0.0f64; n];
        add_rows(&mut sum, out, n);
        let rows = (out.len() / n.max(1)).max(1) as f64;
        let c: Vec<f32> = target
            .iter()
            .zip(&sum)
            .map(|(t, s)| (t - s / rows) as f32)
            .collect();
        for row in out.chunks_exact_mut(n) {
            for (v, &c) in row.iter_mut().zip(&c) {
                *v += c;
            }
        }
        self.applied.push((layer.to_string(), c));
        Ok(())
    }
}

/// `params` with the encoder's weights rounded as `plan` says (to the f32 values the
/// quantized tensors stand for); other parameters unchanged.
fn rounded_encoder(params: &Params, plan: Plan) -> Result<Params, Error> {
    let mut out = params.clone();
    for (name, p) in params.iter() {
        if !name.starts_with("image_encoder.") {
            continue;
        }
        if let Some(rule) = plan(name, &p.shape) {
            let q = quantize_values(&p.values, &p.shape, &rule)
                .map_err(|e| Error::Weights(format!("`{name}`: {e}")))?;
            out.get_mut(name)?.values = q.dequantize();
        }
    }
    Ok(out)
}

/// The corrected biases of `plan`'s rounding: `(bias path, values)` for every biased
/// encoder layer of stages 1-3, in the order they run. `calibration` must have been
/// recorded on `params`.
pub fn bias_corrections(
    params: &Params,
    plan: Plan,
    calibration: &Calibration,
) -> Result<Vec<(String, Vec<f32>)>, Error> {
    if fingerprint(params) != calibration.fingerprint {
        return Err(Error::Weights(
            "bias correction: the calibration was recorded on another model".into(),
        ));
    }
    let rounded = rounded_encoder(params, plan)?;
    let mut corrector = Corrector {
        targets: &calibration.targets,
        applied: Vec::new(),
    };
    encoder::stages(&rounded, &calibration.stems, &mut corrector, false)?;
    corrector
        .applied
        .into_iter()
        .map(|(layer, c)| {
            let name = format!("{layer}.bias");
            let bias = params.get(&name)?;
            if bias.values.len() != c.len() {
                return Err(Error::Weights(format!(
                    "bias correction: `{name}` has {} values, its correction {}",
                    bias.values.len(),
                    c.len()
                )));
            }
            Ok((
                name,
                bias.values.iter().zip(&c).map(|(b, c)| b + c).collect(),
            ))
        })
        .collect()
}

/// `model` (fp32, the one `calibration` was recorded on) with the encoder biases that
/// cancel, on the calibration frames, the mean shift `plan`'s rounding makes (see the
/// module docs); quantized by `plan` afterwards (biases stay f32) it gives a file's values.
pub fn bias_corrected(model: &Sam, plan: Plan, calibration: &Calibration) -> Result<Sam, Error> {
    let params = Params::of(model)?;
    let biases = bias_corrections(&params, plan, calibration)?;
    let tensors = model.collect(None, None, false);
    let ids: HashMap<&str, _> = tensors
        .iter()
        .map(|t| (t.name.as_str(), t.param_id))
        .collect();
    let packs = biases
        .into_iter()
        .map(|(name, values)| {
            let id = ids.get(name.as_str()).copied().flatten();
            let n = values.len();
            bridge::from_data(TensorData::new(values, [n]), name, id)
        })
        .collect();
    let mut model = model.clone();
    let result = model.apply(packs, None, None, false);
    if !result.errors.is_empty() || !result.unused.is_empty() {
        return Err(Error::Weights(format!(
            "bias correction: cannot apply the biases: errors {:?}, unused {:?}",
            result.errors, result.unused
        )));
    }
    Ok(model)
}

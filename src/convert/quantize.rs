//! Weight-only quantization of LiteMedSAM, stored as Burn quantized tensors.
//!
//! Burn's own `Quantizer` rounds every block with min-max scales and, on the CPU backend,
//! keeps 4-bit values one per byte. Here the rounding is ours and the storage is Burn's:
//! - symmetric blocks (8-bit: -127..127, 4-bit: -7..7) laid out as Burn's `BlockSize`
//!   (trailing dimensions; Linear weights are `[in, out]`, convolutions
//!   `[out, in/groups, kh, kw]`);
//! - each block's scale is searched, not taken from its largest value: the clip that
//!   minimises the block's squared rounding error among [`CLIP_STEPS`] candidates;
//! - 4-bit values are packed eight per `u32` (`QuantStore::PackedU32`), so an int4 file
//!   is smaller than an int8 one; every Burn backend unpacks on load.
//!
//! Which tensor gets which [`Rule`] is a [`Plan`]: a function of the parameter path and
//! shape. [`fake_quantize`] applies a plan in f32 (quantize, then dequantize: exactly the
//! values the quantized tensors hold), which is how plans are compared.
//!
//! The rounding moves each layer's output on average, not only around it: the same weight
//! error meets every token, and the masks follow that shift far more than its size
//! (docs/quantization.md). [`super::calibration::bias_corrected`] gives the encoder's
//! layers biases that cancel it, measured on calibration images: sequential empirical bias
//! correction (after Nagel et al., 2019), the biases stay f32, so the files do not grow.
//!
//! The int4 file's 4-bit mask-decoder weights (its token layers') are rounded with GPTQ
//! error feedback ([`super::gptq`], [`Rule::gptq`]) over the decoder's inputs on
//! calibration prompts ([`Calibration`]).

use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::{ModuleSnapshot, bridge};
use burn::tensor::quantization::{QuantScheme, QuantStore, QuantValue, ScaleDtype};
use burn::tensor::{DType, TensorData};

use super::calibration::Calibration;
use crate::model::Error;
use crate::model::sam::Sam;
use crate::model::weights::LITE_MEDSAM;

/// Bits per quantized value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bits {
    /// Symmetric 8-bit, -127..=127.
    Q8,
    /// Symmetric 4-bit, -7..=7, packed eight per `u32`.
    Q4,
}

impl Bits {
    /// Largest quantized magnitude.
    pub fn qmax(self) -> f32 {
        match self {
            Bits::Q8 => 127.0,
            Bits::Q4 => 7.0,
        }
    }

    fn value(self) -> QuantValue {
        match self {
            Bits::Q8 => QuantValue::Q8S,
            Bits::Q4 => QuantValue::Q4S,
        }
    }
}

/// How one tensor is quantized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Bits per value.
    pub bits: Bits,
    /// Block extent over the tensor's trailing dimensions (Burn's `BlockSize`); leading
    /// dimensions not named have extent 1.
    pub block: Vec<u8>,
    /// Rounded with GPTQ error feedback over the layer's calibration inputs
    /// ([`super::gptq`]; Linear weights only) instead of to nearest.
    pub gptq: bool,
}

impl Rule {
    /// `bits` per value in blocks of `block` (trailing dimensions), rounded to nearest.
    pub fn new(bits: Bits, block: &[u8]) -> Self {
        Self {
            bits,
            block: block.to_vec(),
            gptq: false,
        }
    }

    /// The same rule, rounded with GPTQ error feedback.
    pub fn gptq(self) -> Self {
        Self { gptq: true, ..self }
    }
}

/// Which parameters are quantized and how: `(path, shape) -> Some(rule)`, `None` keeps f32.
pub type Plan<'a> = &'a dyn Fn(&str, &[usize]) -> Option<Rule>;

/// Clip candidates, as fractions of a block's largest magnitude: the scale of a block is
/// `clip * max|w| / qmax` for the candidate with the smallest squared error.
pub const CLIP_STEPS: [f32; 11] = [
    1.0, 0.975, 0.95, 0.925, 0.9, 0.875, 0.85, 0.8, 0.75, 0.7, 0.65,
];

/// Scale dtype of every quantized tensor. Scales are rounded up onto the f16 grid before
/// the values are rounded, so the stored scale is the one the values were rounded with.
const SCALE_DTYPE: ScaleDtype = ScaleDtype::F16;
/// Smallest positive f16 (2^-24): the smallest scale [`SCALE_DTYPE`] stores.
const MIN_SCALE: f32 = 5.960_464_5e-8;
// `to_tensor_data` writes the 4-bit tensors' scales as f16 itself.
const _: () = assert!(matches!(SCALE_DTYPE, ScaleDtype::F16));

/// Block layout of a tensor: per dimension its extent, its block extent, the number of
/// blocks. Errors when the block does not tile the shape.
struct Blocks {
    shape: Vec<usize>,
    block: Vec<usize>,
    counts: Vec<usize>,
}

impl Blocks {
    fn new(shape: &[usize], block: &[u8]) -> Result<Self, Error> {
        if block.len() > shape.len() || block.contains(&0) {
            return Err(Error::Weights(format!(
                "block {block:?} does not fit a tensor of shape {shape:?}"
            )));
        }
        let mut full = vec![1usize; shape.len()];
        let start = shape.len() - block.len();
        for (i, &b) in block.iter().enumerate() {
            full[start + i] = b as usize;
        }
        if shape.iter().zip(&full).any(|(s, b)| s % b != 0) {
            return Err(Error::Weights(format!(
                "block {block:?} does not tile a tensor of shape {shape:?}"
            )));
        }
        let counts = shape.iter().zip(&full).map(|(s, b)| s / b).collect();
        Ok(Self {
            shape: shape.to_vec(),
            block: full,
            counts,
        })
    }

    fn num_blocks(&self) -> usize {
        self.counts.iter().product()
    }

    /// Row-major block index of every element (the same order as Burn's `BlockLayout`).
    fn block_index(&self) -> Vec<u32> {
        let n: usize = self.shape.iter().product();
        let mut out = Vec::with_capacity(n);
        let dims = self.shape.len();
        let mut coord = vec![0usize; dims];
        for _ in 0..n {
            let b = coord
                .iter()
                .zip(&self.block)
                .zip(&self.counts)
                .fold(0, |b, ((c, k), n)| b * n + c / k);
            out.push(b as u32);
            for d in (0..dims).rev() {
                coord[d] += 1;
                if coord[d] < self.shape[d] {
                    break;
                }
                coord[d] = 0;
            }
        }
        out
    }
}

/// A quantized tensor on the host: values in `-qmax..=qmax`, one scale per block.
#[derive(Debug)]
pub struct QTensor {
    /// Quantized values, row-major.
    pub values: Vec<i8>,
    /// Per-block scales, row-major over the block grid.
    pub scales: Vec<f32>,
    /// Index of each value's block.
    block_of: Vec<u32>,
}

impl QTensor {
    /// The rows `[1, N]` of a `[K, N]` tensor, each quantized with blocks along `N`, as
    /// one tensor (its block grid row-major, as [`quantize_values`] lays it out).
    pub(crate) fn stack_rows(rows: Vec<QTensor>) -> Self {
        let mut out = QTensor {
            values: Vec::new(),
            scales: Vec::new(),
            block_of: Vec::new(),
        };
        for row in rows {
            let offset = out.scales.len() as u32;
            out.values.extend(row.values);
            out.block_of.extend(row.block_of.iter().map(|b| b + offset));
            out.scales.extend(row.scales);
        }
        out
    }

    /// The f32 values the quantized tensor stands for (`value * scale`, as Burn dequantizes).
    pub fn dequantize(&self) -> Vec<f32> {
        self.values
            .iter()
            .zip(&self.block_of)
            .map(|(&q, &b)| self.scales[b as usize] * q as f32)
            .collect()
    }
}

/// Quantize `values` of `shape` by `rule`, each block's scale searched over [`CLIP_STEPS`].
pub fn quantize_values(values: &[f32], shape: &[usize], rule: &Rule) -> Result<QTensor, Error> {
    if values.len() != shape.iter().product::<usize>() {
        return Err(Error::Weights(format!(
            "{} values do not fill a tensor of shape {shape:?}",
            values.len()
        )));
    }
    let blocks = Blocks::new(shape, &rule.block)?;
    if rule.bits == Bits::Q4 && shape.last().is_none_or(|d| d % 8 != 0) {
        return Err(Error::Weights(format!(
            "4-bit values are packed eight per word along the last dimension; shape {shape:?}"
        )));
    }
    let block_of = blocks.block_index();
    let mut members: Vec<Vec<f32>> = vec![Vec::new(); blocks.num_blocks()];
    for (&v, &b) in values.iter().zip(&block_of) {
        members[b as usize].push(v);
    }
    let qmax = rule.bits.qmax();
    let scales: Vec<f32> = members
        .iter()
        .map(|m| best_scale(m, qmax))
        .collect::<Result<_, _>>()?;
    let values = values
        .iter()
        .zip(&block_of)
        .map(|(&v, &b)| round(v, scales[b as usize], qmax))
        .collect();
    Ok(QTensor {
        values,
        scales,
        block_of,
    })
}

fn round(v: f32, scale: f32, qmax: f32) -> i8 {
    (v / scale).round().clamp(-qmax, qmax) as i8
}

/// The scale among the clip candidates with the smallest squared error over `block`.
fn best_scale(block: &[f32], qmax: f32) -> Result<f32, Error> {
    if block.iter().any(|v| !v.is_finite()) {
        return Err(Error::Weights("a weight is not finite".into()));
    }
    let peak = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if peak == 0.0 {
        // Any positive scale represents zeros exactly.
        return Ok(1.0);
    }
    let candidates = CLIP_STEPS.iter().map(|clip| {
        // On the f16 grid, and never below its smallest positive value.
        let scale = SCALE_DTYPE.round_up(clip * peak / qmax).max(MIN_SCALE);
        let err: f32 = block
            .iter()
            .map(|&v| {
                let d = v - scale * round(v, scale, qmax) as f32;
                d * d
            })
            .sum();
        (err, scale)
    });
    let (_, scale) = candidates
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .expect("CLIP_STEPS is not empty");
    Ok(scale)
}

/// Burn quantized tensor data holding `q` (shape `shape`, quantized by `rule`).
pub fn to_tensor_data(q: &QTensor, shape: &[usize], rule: &Rule) -> TensorData {
    let scheme = QuantScheme::default()
        .with_value(rule.bits.value())
        .per_block(&rule.block, SCALE_DTYPE);
    match rule.bits {
        Bits::Q8 => TensorData::quantized(
            q.values.clone(),
            shape.to_vec(),
            scheme.with_store(QuantStore::Native),
            &q.scales,
            None,
        ),
        Bits::Q4 => {
            // Eight 4-bit values per u32, lowest bits first, over the flattened tensor
            // (burn-std's `unpack_q_to_i8s`), then the scales, as `QuantizedBytes` lays
            // them out. [`quantize_values`] only gives 4 bits to tensors whose innermost
            // dimension is a multiple of 8, where flat and per-row packing agree.
            let mut bytes = Vec::with_capacity(q.values.len() / 2 + 4 * q.scales.len());
            for word in q.values.chunks(8) {
                let packed = word
                    .iter()
                    .enumerate()
                    .fold(0u32, |acc, (i, &v)| acc | ((v as u32 & 0xF) << (4 * i)));
                bytes.extend_from_slice(&packed.to_le_bytes());
            }
            for s in &q.scales {
                bytes.extend_from_slice(&burn::tensor::f16::from_f32(*s).to_le_bytes());
            }
            TensorData::from_bytes_vec(
                bytes,
                shape.to_vec(),
                DType::QFloat(scheme.with_store(QuantStore::PackedU32(0))),
            )
        }
    }
}

/// Values per 8-bit block: along an encoder Linear layer's output axis, or the input
/// channels of a 1x1 convolution, or the output channels of a transposed convolution.
pub const BLOCK_Q8: u8 = 32;
/// Values per 8-bit block along a mask-decoder Linear layer's output axis (the scales of
/// 32-value blocks cost 122 KB there; the masks did not move more with 64, see `plan`).
pub const BLOCK_Q8_DECODER: u8 = 64;
/// Values per block along a Linear layer's output axis: 4-bit.
pub const BLOCK_Q4: u8 = 16;

/// The plan of a shipped precision.
///
/// - `Int8`: every Linear weight 8-bit in blocks of [`BLOCK_Q8`] output values (the mask
///   decoder's: [`BLOCK_Q8_DECODER`]); 8-bit convolutions: the neck's two (per block of
///   one output channel's 3x3 taps, 32 input channels for the 1x1), the 1x1 convolutions
///   of the patch mergings into the 160- and 320-channel stages (blocks of 32 input
///   channels) and the decoder's two transposed convolutions (32 output channels x 2x2).
/// - `Int4`: the same, except the Linear weights of the mask decoder's layers that see
///   only the prompt and output tokens, never the image (each two-way block's token
///   self-attention and MLP, 2.6 M values), 4-bit in blocks of [`BLOCK_Q4`], rounded
///   with GPTQ error feedback over the decoder's inputs on
///   calibration prompts (see [`Calibration`]; rounding them to nearest moved the masks
///   about twice as much). The decoder's layers that meet the 4096 image tokens (where one
///   rounding error meets every token), the output heads and the upscaling stay 8-bit:
///   4-bit there too lowered the held-out mean mask IoU vs fp32 from 0.975 to 0.958 and
///   gave 0.92 on low-confidence parity prompts (README).
///
/// Everything else stays f32: the early convolutions (per-tensor or per-channel 8-bit
/// on any single one of them moves the embedding as much as 8-bit on all Linear layers
/// together, measured on calibration images), the depthwise ones, norms, biases (the
/// encoder's corrected by [`super::calibration::bias_corrected`] when a file is written),
/// embeddings, tokens, attention biases and the positional-encoding matrix. Measurements
/// behind the choice: README, "Weights files and quantization".
pub fn plan(precision: crate::model::Precision) -> impl Fn(&str, &[usize]) -> Option<Rule> {
    move |path: &str, shape: &[usize]| quantized(precision, path, shape)
}

/// The quantization rule of a weight under `precision`, if it is quantized.
fn quantized(precision: crate::model::Precision, path: &str, shape: &[usize]) -> Option<Rule> {
    if precision == crate::model::Precision::Fp32 || !path.ends_with(".weight") {
        return None;
    }
    let decoder = path.starts_with("mask_decoder.");
    // Learned embeddings and tokens are 2-d too; they are looked up, not multiplied.
    let embedding = path.starts_with("prompt_encoder.")
        || path.ends_with("_token.weight")
        || path.ends_with("_tokens.weight");
    match shape {
        [_, out] if !embedding => {
            if precision == crate::model::Precision::Int4
                && token_only(path)
                && out % BLOCK_Q4 as usize == 0
            {
                Some(Rule::new(Bits::Q4, &[BLOCK_Q4]).gptq())
            } else if decoder && out % BLOCK_Q8_DECODER as usize == 0 {
                Some(Rule::new(Bits::Q8, &[BLOCK_Q8_DECODER]))
            } else if out % BLOCK_Q8 as usize == 0 {
                Some(Rule::new(Bits::Q8, &[BLOCK_Q8]))
            } else {
                None
            }
        }
        // Transposed convolutions of the decoder's upscaling, `[in, out, 2, 2]`: blocks of
        // 32 output channels times the kernel.
        [_, outputs, kh, kw]
            if path.starts_with("mask_decoder.output_upscaling.")
                && outputs % BLOCK_Q8 as usize == 0 =>
        {
            Some(Rule::new(Bits::Q8, &[BLOCK_Q8, *kh as u8, *kw as u8]))
        }
        // The 1x1 convolutions of the later patch mergings (into the 160 and 320 stages).
        [_, inputs, 1, 1]
            if (path.starts_with("image_encoder.layer1.downsample.")
                || path.starts_with("image_encoder.layer2.downsample."))
                && inputs % BLOCK_Q8 as usize == 0 =>
        {
            Some(Rule::new(Bits::Q8, &[BLOCK_Q8, 1, 1]))
        }
        [_, inputs, kh, kw] if path.starts_with("image_encoder.neck.") => {
            let per_block = if kh * kw == 1 && inputs % BLOCK_Q8 as usize == 0 {
                BLOCK_Q8
            } else {
                1
            };
            Some(Rule::new(Bits::Q8, &[per_block, *kh as u8, *kw as u8]))
        }
        _ => None,
    }
}

/// Whether `path` is a weight of a mask-decoder layer that sees only the prompt and output
/// tokens: the self-attention and the MLP of each two-way block (the cross attentions and
/// the final attention take keys or queries from the image tokens).
pub(crate) fn token_only(path: &str) -> bool {
    path.strip_prefix("mask_decoder.transformer.layers.")
        .and_then(|rest| rest.split_once('.'))
        .is_some_and(|(_, layer)| layer.starts_with("self_attn.") || layer.starts_with("mlp."))
}

/// Every tensor of `model` as a burn-pack tensor, those the plan names quantized (Burn
/// quantized tensor data: what a `.bpk` stores). The parameter ids are kept. Rules with
/// [`Rule::gptq`] need the `calibration` recorded on `model`.
pub fn quantized_packs(
    model: &Sam,
    plan: Plan,
    calibration: Option<&Calibration>,
) -> Result<Vec<PackTensor>, Error> {
    quantize_each(model, plan, calibration, to_tensor_data)
}

/// `model` with the parameters a plan names replaced by the f32 values their quantized
/// tensors stand for (`value * scale`): how plans are compared without a file. Rules with
/// [`Rule::gptq`] need the `calibration` recorded on `model`.
pub fn fake_quantize(
    model: Sam,
    plan: Plan,
    calibration: Option<&Calibration>,
) -> Result<Sam, Error> {
    let packs = quantize_each(&model, plan, calibration, |q, shape, _| {
        TensorData::new(q.dequantize(), shape.to_vec())
    })?;
    let mut model = model;
    let result = model.apply(packs, None, None, false);
    crate::model::weights::check_applied(&result, "the quantized tensors", LITE_MEDSAM, true)?;
    Ok(model)
}

/// Every tensor of `model`; those the plan names quantized and turned into data by `store`.
fn quantize_each(
    model: &Sam,
    plan: Plan,
    calibration: Option<&Calibration>,
    store: impl Fn(&QTensor, &[usize], &Rule) -> TensorData,
) -> Result<Vec<PackTensor>, Error> {
    let mut packs = Vec::new();
    for t in model.collect(None, None, false) {
        let shape: Vec<usize> = t.shape.to_vec();
        let Some(rule) = plan(&t.name, &shape) else {
            packs.push(t);
            continue;
        };
        let data = bridge::to_data(&t)
            .map_err(|e| Error::Weights(format!("cannot read `{}`: {e}", t.name)))?;
        let values = data
            .convert_dtype(DType::F32)
            .try_into_vec::<f32>()
            .map_err(|e| Error::Weights(format!("`{}` is not f32: {e:?}", t.name)))?;
        let q = if rule.gptq {
            let gram = calibration_inputs(calibration, &t)?;
            super::gptq::quantize(&values, &shape, &rule, gram)
        } else {
            quantize_values(&values, &shape, &rule)
        }
        .map_err(|e| Error::Weights(format!("`{}`: {e}", t.name)))?;
        packs.push(bridge::from_data(
            store(&q, &shape, &rule),
            t.name.clone(),
            t.param_id,
        ));
    }
    Ok(packs)
}

/// The input Gram matrix `calibration` recorded for the layer whose weight `t` is, for a
/// rule with [`Rule::gptq`].
fn calibration_inputs<'a>(
    calibration: Option<&'a Calibration>,
    t: &PackTensor,
) -> Result<&'a [f64], Error> {
    let calibration = calibration.ok_or_else(|| {
        Error::Weights(format!(
            "`{}` is rounded with GPTQ, which needs a calibration",
            t.name
        ))
    })?;
    let layer = t.name.strip_suffix(".weight").unwrap_or(&t.name);
    calibration.gram(layer).ok_or_else(|| {
        Error::Weights(format!(
            "GPTQ: no calibration inputs of `{}` (not recorded by this calibration)",
            t.name
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Tensor};

    /// Deterministic pseudo-random weights in about -1..1 with a few outliers.
    fn weights(n: usize) -> Vec<f32> {
        let mut state = 0x2545_f491_u32;
        (0..n)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let v = (state as f32 / u32::MAX as f32) * 2.0 - 1.0;
                if i % 97 == 0 { v * 6.0 } else { v }
            })
            .collect()
    }

    /// What Burn's CPU backend decodes from our tensor data equals what we quantized.
    fn burn_round_trip(shape: &[usize], rule: Rule) {
        let values = weights(shape.iter().product());
        let q = quantize_values(&values, shape, &rule).unwrap();
        let data = to_tensor_data(&q, shape, &rule);
        let device = Device::flex();
        let ours = q.dequantize();
        let burn: Vec<f32> = match shape.len() {
            2 => Tensor::<2>::from_data(data, &device)
                .dequantize()
                .into_data(),
            4 => Tensor::<4>::from_data(data, &device)
                .dequantize()
                .into_data(),
            _ => unreachable!(),
        }
        .try_into_vec()
        .unwrap();
        assert_eq!(ours, burn, "{shape:?} {rule:?}");
        let err = values
            .iter()
            .zip(&ours)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        let bound = 6.0 / rule.bits.qmax(); // a full step of the largest possible scale
        assert!(err < bound, "{shape:?} {rule:?}: max error {err}");
    }

    #[test]
    fn packed_4bit_and_blocked_8bit_decode_in_burn_as_written() {
        burn_round_trip(&[64, 48], Rule::new(Bits::Q4, &[16]));
        burn_round_trip(&[40, 64], Rule::new(Bits::Q8, &[32]));
        burn_round_trip(&[16, 8, 3, 3], Rule::new(Bits::Q8, &[1, 3, 3]));
        burn_round_trip(&[16, 64, 1, 1], Rule::new(Bits::Q8, &[32, 1, 1]));
        burn_round_trip(&[8, 64, 2, 2], Rule::new(Bits::Q8, &[32, 2, 2]));
        burn_round_trip(&[24, 128], Rule::new(Bits::Q8, &[BLOCK_Q8_DECODER]));
    }

    /// int4 rounds to 4 bits only the decoder layers that see the tokens alone; the ones
    /// that meet the image tokens, the heads and int8's layers keep 8 bits.
    #[test]
    fn int4_is_4_bit_on_the_decoder_token_layers_only() {
        use crate::model::Precision;
        let bits = |precision, path: &str, shape: &[usize]| {
            plan(precision)(path, shape).map(|rule| (rule.bits, rule.gptq))
        };
        let q4 = Some((Bits::Q4, true));
        let q8 = Some((Bits::Q8, false));
        let layers = "mask_decoder.transformer.layers";
        for path in [
            format!("{layers}.0.mlp.lin1.weight"),
            format!("{layers}.1.mlp.lin2.weight"),
            format!("{layers}.1.self_attn.q_proj.weight"),
            format!("{layers}.0.self_attn.out_proj.weight"),
        ] {
            assert_eq!(bits(Precision::Int4, &path, &[256, 256]), q4, "{path}");
            assert_eq!(bits(Precision::Int8, &path, &[256, 256]), q8, "{path}");
        }
        for path in [
            format!("{layers}.0.cross_attn_token_to_image.k_proj.weight"),
            format!("{layers}.1.cross_attn_image_to_token.q_proj.weight"),
            "mask_decoder.transformer.final_attn_token_to_image.v_proj.weight".into(),
            "mask_decoder.output_hypernetworks_mlps.0.layers.0.weight".into(),
            "mask_decoder.iou_prediction_head.layers.1.weight".into(),
            "image_encoder.layers.1.blocks.0.mlp.fc1.weight".into(),
        ] {
            assert_eq!(bits(Precision::Int4, &path, &[256, 128]), q8, "{path}");
        }
        assert_eq!(
            bits(
                Precision::Int4,
                &format!("{layers}.0.mlp.lin1.bias"),
                &[2048]
            ),
            None
        );
    }

    #[test]
    fn searched_scales_beat_min_max_on_outliers() {
        let values = weights(4096);
        for bits in [Bits::Q4, Bits::Q8] {
            let rule = Rule::new(bits, &[32]);
            let q = quantize_values(&values, &[128, 32], &rule).unwrap();
            let searched: f32 = values
                .iter()
                .zip(q.dequantize())
                .map(|(a, b)| (a - b) * (a - b))
                .sum();
            let min_max: f32 = values
                .chunks(32)
                .flat_map(|block| {
                    let scale = block.iter().fold(0.0f32, |m, v| m.max(v.abs())) / bits.qmax();
                    block.iter().map(move |&v| {
                        let d = v - scale * (v / scale).round();
                        d * d
                    })
                })
                .sum();
            assert!(searched < min_max, "{bits:?}: {searched} vs {min_max}");
        }
    }

    #[test]
    fn blocks_that_do_not_tile_and_unpackable_4bit_are_refused() {
        let v = weights(64);
        let bad_block = quantize_values(&v, &[4, 16], &Rule::new(Bits::Q8, &[5]));
        assert!(bad_block.is_err());
        let odd_row = quantize_values(&v, &[16, 4], &Rule::new(Bits::Q4, &[4]));
        assert!(odd_row.unwrap_err().to_string().contains("packed"));
        let nan = quantize_values(&[f32::NAN; 8], &[1, 8], &Rule::new(Bits::Q8, &[8]));
        assert!(nan.is_err());
        let rule = Rule::new(Bits::Q8, &[16]);
        assert!(quantize_values(&v[..60], &[4, 16], &rule).is_err());
    }

    #[test]
    fn tiny_and_zero_blocks_get_positive_scales() {
        let rule = Rule::new(Bits::Q8, &[8]);
        let mut v = vec![0.0f32; 16];
        v[8] = 1e-9;
        let q = quantize_values(&v, &[2, 8], &rule).unwrap();
        assert!(
            q.scales.iter().all(|&s| s > 0.0 && s.is_finite()),
            "{:?}",
            q.scales
        );
        assert!(q.dequantize().iter().all(|x| x.is_finite()));
    }
}

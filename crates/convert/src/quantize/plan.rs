//! Which tensor gets which rule (the shipped precisions' plans), and applying a plan.

use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::{ModuleSnapshot, bridge};
use burn::tensor::{DType, TensorData};

use super::format::*;
use crate::calibration::Calibration;
use medfm::model::Error;
use medfm::model::sam::Sam;
use medfm::model::weights::LITE_MEDSAM;

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
/// encoder's corrected by [`crate::calibration::bias_corrected`] when a file is written),
/// embeddings, tokens, attention biases and the positional-encoding matrix. Measurements
/// behind the choice: README, "Weights files and quantization".
pub fn plan(precision: medfm::model::Precision) -> impl Fn(&str, &[usize]) -> Option<Rule> {
    move |path: &str, shape: &[usize]| quantized(precision, path, shape)
}

/// The quantization rule of a weight under `precision`, if it is quantized.
fn quantized(precision: medfm::model::Precision, path: &str, shape: &[usize]) -> Option<Rule> {
    if precision == medfm::model::Precision::Fp32 || !path.ends_with(".weight") {
        return None;
    }
    let decoder = path.starts_with("mask_decoder.");
    // Learned embeddings and tokens are 2-d too; they are looked up, not multiplied.
    let embedding = path.starts_with("prompt_encoder.")
        || path.ends_with("_token.weight")
        || path.ends_with("_tokens.weight");
    match shape {
        [_, out] if !embedding => {
            if precision == medfm::model::Precision::Int4
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
    medfm::model::weights::check_applied(&result, "the quantized tensors", LITE_MEDSAM, true)?;
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
            crate::gptq::quantize(&values, &shape, &rule, gram)
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

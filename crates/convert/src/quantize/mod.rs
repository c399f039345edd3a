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
//! calibration prompts ([`super::calibration::Calibration`]).

mod format;
mod plan;

pub use format::*;
pub use plan::*;

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
        use medfm::model::Precision;
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

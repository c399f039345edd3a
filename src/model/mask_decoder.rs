//! SAM mask decoder: two-way transformer, upscaling, hypernetwork masks and IoU head.
//!
//! Mirrors `segment_anything/modeling/mask_decoder.py`. Field names equal the PyTorch
//! state-dict names; `output_upscaling.{0,1,3}` is renamed in `weights.rs`.

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::{Embedding, EmbeddingConfig};
use burn::tensor::{Device, Tensor};

use super::common::{LayerNorm2d, Mlp};
use super::kernels::gelu;
use super::two_way_transformer::TwoWayTransformer;

/// Hyper-parameters of the mask decoder.
#[derive(Config, Debug)]
pub struct MaskDecoderConfig {
    /// Transformer width.
    #[config(default = 256)]
    pub transformer_dim: usize,
    /// Two-way transformer depth.
    #[config(default = 2)]
    pub depth: usize,
    /// Attention heads.
    #[config(default = 8)]
    pub num_heads: usize,
    /// Transformer MLP width.
    #[config(default = 2048)]
    pub mlp_dim: usize,
    /// Masks predicted in multimask mode (one more is predicted for single-mask mode).
    #[config(default = 3)]
    pub num_multimask_outputs: usize,
    /// IoU head depth.
    #[config(default = 3)]
    pub iou_head_depth: usize,
    /// IoU head hidden width.
    #[config(default = 256)]
    pub iou_head_hidden_dim: usize,
}

/// Upscaler of the image tokens (upstream `output_upscaling` Sequential).
#[derive(Module, Debug)]
pub struct OutputUpscaling {
    /// `.0`: transposed conv 2x2 stride 2, `dim -> dim/4`.
    pub conv1: ConvTranspose2d,
    /// `.1`.
    pub ln: LayerNorm2d,
    /// `.3`: transposed conv 2x2 stride 2, `dim/4 -> dim/8`.
    pub conv2: ConvTranspose2d,
}

impl OutputUpscaling {
    /// The image tokens of an `h x w` grid, channels last, upscaled 4x:
    /// `[B, h*w, 256] -> [B, 4h*4w, 32]` (pixels row-major, channels last). The same values
    /// as upstream's channels-first Sequential; each transposed convolution (2x2, stride 2:
    /// the kernel taps do not overlap) is one matrix product, the LayerNorm2d normalises
    /// the last axis.
    pub fn forward(&self, x: Tensor<3>, h: usize, w: usize) -> Tensor<3> {
        let x = conv_transpose_2x2(&self.conv1, x, h, w);
        let x = gelu(self.ln.forward_channels_last(x));
        gelu(conv_transpose_2x2(&self.conv2, x, 2 * h, 2 * w))
    }
}

/// A 2x2 stride-2 transposed convolution (no padding, one group) on channels-last tokens:
/// `x [B, h*w, Ci] -> [B, 2h*2w, Co]` with `conv.weight [Ci, Co, 2, 2]`, as
/// `x @ W[Ci, (a, b, Co)]`, the two taps `(a, b)` then moved to pixel `(2i + a, 2j + b)`.
fn conv_transpose_2x2(conv: &ConvTranspose2d, x: Tensor<3>, h: usize, w: usize) -> Tensor<3> {
    let [ci, co, _, _] = conv.weight.dims();
    let [b, _, _] = x.dims();
    let weight = conv
        .weight
        .val()
        .permute([0, 2, 3, 1])
        .reshape([1, ci, 4 * co]);
    let y = x
        .matmul(weight) // [B, h*w, (a, b, Co)]
        .reshape([b, h, w, 2, 2, co])
        .permute([0, 1, 3, 2, 4, 5]) // [B, h, a, w, b, Co]
        .reshape([b, 4 * h * w, co]);
    match &conv.bias {
        Some(bias) => y + bias.val().reshape([1, 1, co]),
        None => y,
    }
}

/// The mask decoder.
#[derive(Module, Debug)]
pub struct MaskDecoder {
    /// Two-way transformer.
    pub transformer: TwoWayTransformer,
    /// IoU output token `[1, dim]`.
    pub iou_token: Embedding,
    /// Mask output tokens `[num_multimask_outputs + 1, dim]`.
    pub mask_tokens: Embedding,
    /// Upscaler.
    pub output_upscaling: OutputUpscaling,
    /// One hypernetwork MLP per mask token.
    pub output_hypernetworks_mlps: Vec<Mlp>,
    /// IoU prediction head.
    pub iou_prediction_head: Mlp,
}

impl MaskDecoderConfig {
    /// Build the mask decoder.
    ///
    /// # Arguments
    /// * `device` - where the weights live.
    pub fn init(&self, device: &Device) -> MaskDecoder {
        let d = self.transformer_dim;
        let n_tokens = self.num_multimask_outputs + 1;
        let up = |i: usize, o: usize| {
            ConvTranspose2dConfig::new([i, o], [2, 2])
                .with_stride([2, 2])
                .init(device)
        };
        MaskDecoder {
            transformer: TwoWayTransformer::new(
                self.depth,
                d,
                self.num_heads,
                self.mlp_dim,
                device,
            ),
            iou_token: EmbeddingConfig::new(1, d).init(device),
            mask_tokens: EmbeddingConfig::new(n_tokens, d).init(device),
            output_upscaling: OutputUpscaling {
                conv1: up(d, d / 4),
                ln: LayerNorm2d::new(d / 4, device),
                conv2: up(d / 4, d / 8),
            },
            output_hypernetworks_mlps: (0..n_tokens)
                .map(|_| Mlp::new(d, d, d / 8, 3, device))
                .collect(),
            iou_prediction_head: Mlp::new(
                d,
                self.iou_head_hidden_dim,
                n_tokens,
                self.iou_head_depth,
                device,
            ),
        }
    }
}

impl MaskDecoder {
    /// Predict masks and their IoU.
    ///
    /// Shapes: `image_embeddings [1, 256, 64, 64]`, `image_pe [1, 256, 64, 64]`,
    /// `sparse [1, N, 256]`, `dense [1, 256, 64, 64]`
    /// `-> (low-res mask logits [1, M, 256, 256], iou [1, M])` with `M = 3` when
    /// `multimask` (tokens 1..4) and `M = 1` otherwise (token 0).
    pub fn forward(
        &self,
        image_embeddings: Tensor<4>,
        image_pe: Tensor<4>,
        sparse: Tensor<3>,
        dense: Tensor<4>,
        multimask: bool,
    ) -> (Tensor<4>, Tensor<2>) {
        let n_mask = self.output_hypernetworks_mlps.len();
        let output_tokens = Tensor::cat(
            vec![self.iou_token.weight.val(), self.mask_tokens.weight.val()],
            0,
        );
        let tokens = Tensor::cat(vec![output_tokens.unsqueeze_dim::<3>(0), sparse], 1);

        let src = image_embeddings + dense;
        let [b, _, h, w] = src.dims();
        let (hs, src) = self.transformer.forward(src, image_pe, tokens);
        let iou_token_out = hs.clone().narrow(1, 0, 1).squeeze_dim::<2>(1);
        let mask_tokens_out = hs.narrow(1, 1, n_mask);

        let upscaled = self.output_upscaling.forward(src, h, w); // [B, 16*h*w, C/8]
        let hyper_in: Vec<Tensor<2>> = self
            .output_hypernetworks_mlps
            .iter()
            .enumerate()
            .map(|(i, mlp)| {
                mlp.forward(mask_tokens_out.clone().narrow(1, i, 1).squeeze_dim::<2>(1))
            })
            .collect();
        let hyper_in = Tensor::stack::<3>(hyper_in, 1); // [B, M, C/8]
        let masks = hyper_in
            .matmul(upscaled.swap_dims(1, 2))
            .reshape([b, n_mask, 4 * h, 4 * w]);
        let iou = self.iou_prediction_head.forward(iou_token_out);

        let (start, len) = if multimask { (1, n_mask - 1) } else { (0, 1) };
        (masks.narrow(1, start, len), iou.narrow(1, start, len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    /// The channels-last upscaling equals upstream's channels-first Sequential
    /// (Burn's transposed convolutions, LayerNorm2d, GELU), with nonzero norm parameters.
    #[test]
    fn channels_last_upscaling_equals_the_convolutions() {
        let device = Device::flex();
        let init = |i: usize, o: usize| {
            ConvTranspose2dConfig::new([i, o], [2, 2])
                .with_stride([2, 2])
                .init(&device)
        };
        let mut up = OutputUpscaling {
            conv1: init(32, 16),
            ln: LayerNorm2d::new(16, &device),
            conv2: init(16, 8),
        };
        let rand = |n: usize| Tensor::<1>::random([n], Distribution::Uniform(0.5, 1.5), &device);
        up.ln.weight = burn::module::Param::from_tensor(rand(16));
        up.ln.bias = burn::module::Param::from_tensor(rand(16) - 1.0);
        let (h, w) = (5, 7);
        let x = Tensor::<4>::random([2, 32, h, w], Distribution::Normal(0.0, 1.0), &device);

        let reference = gelu(
            up.conv2
                .forward(gelu(up.ln.forward(up.conv1.forward(x.clone())))),
        );
        let tokens = x.flatten::<3>(2, 3).swap_dims(1, 2); // [B, h*w, C]
        let ours = up
            .forward(tokens, h, w) // [B, 16*h*w, 8]
            .swap_dims(1, 2)
            .reshape([2, 8, 4 * h, 4 * w]);
        let d = (ours - reference).abs().max().into_scalar::<f32>();
        assert!(d < 1e-5, "max |diff| {d}");
    }
}

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
use super::cpu_ops::gelu;
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
    /// `[B, 256, 64, 64] -> [B, 32, 256, 256]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = gelu(self.ln.forward(self.conv1.forward(x)));
        gelu(self.conv2.forward(x))
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
        let [b, c, h, w] = src.dims();
        let (hs, src) = self.transformer.forward(src, image_pe, tokens);
        let iou_token_out = hs.clone().narrow(1, 0, 1).squeeze_dim::<2>(1);
        let mask_tokens_out = hs.narrow(1, 1, n_mask);

        let src = src.swap_dims(1, 2).reshape([b, c, h, w]);
        let upscaled = self.output_upscaling.forward(src);
        let hyper_in: Vec<Tensor<2>> = self
            .output_hypernetworks_mlps
            .iter()
            .enumerate()
            .map(|(i, mlp)| {
                mlp.forward(mask_tokens_out.clone().narrow(1, i, 1).squeeze_dim::<2>(1))
            })
            .collect();
        let hyper_in = Tensor::stack::<3>(hyper_in, 1); // [B, M, C/8]
        let [b, cu, hu, wu] = upscaled.dims();
        let masks = hyper_in
            .matmul(upscaled.reshape([b, cu, hu * wu]))
            .reshape([b, n_mask, hu, wu]);
        let iou = self.iou_prediction_head.forward(iou_token_out);

        let (start, len) = if multimask { (1, n_mask - 1) } else { (0, 1) };
        (masks.narrow(1, start, len), iou.narrow(1, start, len))
    }
}

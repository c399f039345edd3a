//! SAM prompt encoder (points, boxes, mask) as used by LiteMedSAM.
//!
//! Mirrors `segment_anything/modeling/prompt_encoder.py` (Kirillov et al., "Segment
//! Anything", ICCV 2023). Field names equal the PyTorch state-dict names; the one
//! `nn.Sequential` (`mask_downscaling.{0,1,3,4,6}`) is renamed in `weights.rs`.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Embedding, EmbeddingConfig};
use burn::tensor::{Device, Tensor, TensorData};

use super::common::LayerNorm2d;
use super::kernels::gelu;

/// Hyper-parameters of the prompt encoder.
#[derive(Config, Debug)]
pub struct PromptEncoderConfig {
    /// Prompt embedding width.
    #[config(default = 256)]
    pub embed_dim: usize,
    /// Side of the image embedding grid.
    #[config(default = 64)]
    pub image_embedding_size: usize,
    /// Side of the (padded) model input.
    #[config(default = 256)]
    pub input_image_size: usize,
    /// Hidden channels of the mask downscaler.
    #[config(default = 16)]
    pub mask_in_chans: usize,
}

/// Random Fourier-feature positional encoding (`PositionEmbeddingRandom`).
#[derive(Module, Debug)]
pub struct PositionEmbeddingRandom {
    /// Fixed random frequencies `[2, embed_dim / 2]` (a buffer upstream).
    pub positional_encoding_gaussian_matrix: Param<Tensor<2>>,
}

impl PositionEmbeddingRandom {
    /// Encode coordinates already normalised to 0..1: `[N, 2] (x, y) -> [N, embed_dim]`
    /// as `cat(sin(2π(2c-1)G), cos(2π(2c-1)G))`.
    pub fn encode(&self, coords: Tensor<2>) -> Tensor<2> {
        let c = coords * 2.0 - 1.0;
        let c =
            c.matmul(self.positional_encoding_gaussian_matrix.val()) * (2.0 * std::f64::consts::PI);
        Tensor::cat(vec![c.clone().sin(), c.cos()], 1)
    }

    /// Dense encoding of a `side x side` grid of pixel centres: `-> [1, embed_dim, side, side]`.
    pub fn dense(&self, side: usize, device: &Device) -> Tensor<4> {
        let mut xy = Vec::with_capacity(side * side * 2);
        for i in 0..side {
            for j in 0..side {
                xy.push((j as f32 + 0.5) / side as f32);
                xy.push((i as f32 + 0.5) / side as f32);
            }
        }
        let coords = Tensor::<2>::from_data(TensorData::new(xy, [side * side, 2]), device);
        let pe = self.encode(coords); // [side*side, C]
        let c = pe.dims()[1];
        pe.reshape([side, side, c])
            .permute([2, 0, 1])
            .unsqueeze_dim(0)
    }
}

/// Mask input downscaler (upstream `mask_downscaling` Sequential).
#[derive(Module, Debug)]
pub struct MaskDownscaling {
    /// `.0`: 2x2 stride 2, `1 -> mask_in_chans / 4`.
    pub conv1: Conv2d,
    /// `.1`.
    pub ln1: LayerNorm2d,
    /// `.3`: 2x2 stride 2, `-> mask_in_chans`.
    pub conv2: Conv2d,
    /// `.4`.
    pub ln2: LayerNorm2d,
    /// `.6`: 1x1 `-> embed_dim`.
    pub conv3: Conv2d,
}

impl MaskDownscaling {
    /// `[B, 1, 256, 256] -> [B, embed_dim, 64, 64]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = gelu(self.ln1.forward(self.conv1.forward(x)));
        let x = gelu(self.ln2.forward(self.conv2.forward(x)));
        self.conv3.forward(x)
    }
}

/// A point prompt in model-input pixel coordinates (256 x 256 space).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PointPrompt {
    /// Column.
    pub x: f32,
    /// Row.
    pub y: f32,
    /// `true` = foreground (label 1), `false` = background (label 0).
    pub positive: bool,
}

/// The SAM prompt encoder.
#[derive(Module, Debug)]
pub struct PromptEncoder {
    /// Positional encoding.
    pub pe_layer: PositionEmbeddingRandom,
    /// `[neg point, pos point, box corner 0, box corner 1]`, each `[1, embed_dim]`.
    pub point_embeddings: Vec<Embedding>,
    /// Embedding of the padding point.
    pub not_a_point_embed: Embedding,
    /// Mask downscaler.
    pub mask_downscaling: MaskDownscaling,
    /// Dense embedding used when no mask is given.
    pub no_mask_embed: Embedding,
    embed_dim: usize,
    image_embedding_size: usize,
    input_image_size: usize,
}

impl PromptEncoderConfig {
    /// Build the prompt encoder.
    ///
    /// # Arguments
    /// * `device` - where the weights live.
    pub fn init(&self, device: &Device) -> PromptEncoder {
        let e = self.embed_dim;
        let m = self.mask_in_chans;
        let conv = |i: usize, o: usize, k: usize| {
            Conv2dConfig::new([i, o], [k, k])
                .with_stride([k, k])
                .init(device)
        };
        PromptEncoder {
            pe_layer: PositionEmbeddingRandom {
                positional_encoding_gaussian_matrix: Param::from_tensor(Tensor::zeros(
                    [2, e / 2],
                    device,
                )),
            },
            point_embeddings: (0..4)
                .map(|_| EmbeddingConfig::new(1, e).init(device))
                .collect(),
            not_a_point_embed: EmbeddingConfig::new(1, e).init(device),
            mask_downscaling: MaskDownscaling {
                conv1: conv(1, m / 4, 2),
                ln1: LayerNorm2d::new(m / 4, device),
                conv2: conv(m / 4, m, 2),
                ln2: LayerNorm2d::new(m, device),
                conv3: conv(m, e, 1),
            },
            no_mask_embed: EmbeddingConfig::new(1, e).init(device),
            embed_dim: e,
            image_embedding_size: self.image_embedding_size,
            input_image_size: self.input_image_size,
        }
    }
}

impl PromptEncoder {
    /// Dense positional encoding of the image embedding grid: `-> [1, 256, 64, 64]`.
    pub fn dense_pe(&self, device: &Device) -> Tensor<4> {
        self.pe_layer.dense(self.image_embedding_size, device)
    }

    /// Sparse embeddings of points then box corners: `-> [1, N, 256]`.
    ///
    /// As upstream, a padding point (label -1) is appended when there is no box, and
    /// coordinates are shifted by 0.5 to pixel centres before encoding.
    pub fn embed_sparse(
        &self,
        points: &[PointPrompt],
        bbox: Option<[f32; 4]>,
        device: &Device,
    ) -> Tensor<3> {
        let s = self.input_image_size as f32;
        let norm = |x: f32, y: f32| [(x + 0.5) / s, (y + 0.5) / s];
        let mut rows: Vec<Tensor<2>> = Vec::new();
        let enc = |xy: [f32; 2]| {
            self.pe_layer.encode(Tensor::<2>::from_data(
                TensorData::new(xy.to_vec(), [1, 2]),
                device,
            ))
        };
        for p in points {
            let label = if p.positive { 1 } else { 0 };
            rows.push(enc(norm(p.x, p.y)) + self.point_embeddings[label].weight.val());
        }
        if bbox.is_none() && !points.is_empty() {
            // Padding point: its positional encoding is zeroed, only not_a_point_embed remains.
            rows.push(self.not_a_point_embed.weight.val());
        }
        if let Some([x0, y0, x1, y1]) = bbox {
            rows.push(enc(norm(x0, y0)) + self.point_embeddings[2].weight.val());
            rows.push(enc(norm(x1, y1)) + self.point_embeddings[3].weight.val());
        }
        if rows.is_empty() {
            return Tensor::zeros([1, 0, self.embed_dim], device);
        }
        Tensor::cat(rows, 0).unsqueeze_dim(0)
    }

    /// Dense prompt embedding: the downscaled mask logits, or `no_mask_embed` broadcast:
    /// `[1, 1, 256, 256]? -> [1, 256, 64, 64]`.
    pub fn embed_dense(&self, mask: Option<Tensor<4>>, device: &Device) -> Tensor<4> {
        match mask {
            Some(m) => self.mask_downscaling.forward(m),
            None => {
                let s = self.image_embedding_size;
                self.no_mask_embed
                    .weight
                    .val()
                    .reshape([1, self.embed_dim, 1, 1])
                    .expand([1, self.embed_dim, s, s])
                    .to_device(device)
            }
        }
    }
}

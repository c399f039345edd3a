//! medfm: medical-imaging foundation models that run where the images are.
//!
//! The core (`dicom`, `model`, `pipeline`) is target-agnostic: it takes bytes and a Burn
//! device and returns values. The shells (`web` for wasm32, `bin/medfm.rs` natively) only
//! convert types and errors.
#![warn(missing_docs)]

#[cfg(feature = "convert")]
pub mod convert;
pub mod dicom;
pub mod model;
pub mod pipeline;

pub use burn::tensor::Device;

#[cfg(target_arch = "wasm32")]
pub mod web;

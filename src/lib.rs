//! medfm: medical-imaging foundation models that run where the images are.
//!
//! This is the core every front calls (the CLI and the edge node natively, the browser
//! engine in wasm, the Python package): [`model`] (LiteMedSAM and a DINOv2-style ViT in
//! Burn, CPU kernels), [`pipeline`] (preprocessing, embed once and decode per prompt,
//! propagation through a series, embeddings, the device rule), [`jobs`] (segment jobs over
//! a series and their SEG / label-map outputs: what the CLI, the node and Python run),
//! [`fs`] (atomic writes, folder walks), [`RunConfig`] (threads and device, as values)
//! and [`Error`] (every layer's error with its kind). DICOM in and out is the `medfm-dicom` crate, re-exported here as
//! [`dicom`], [`dicomweb`] and [`dimse`].
//!
//! Target-agnostic: it takes bytes and a Burn device and returns values; nothing here is
//! compiled differently for the browser (the fronts are crates/cli, crates/node,
//! crates/wasm).
#![warn(missing_docs)]

mod error;
pub mod fs;
pub mod jobs;
pub mod model;
pub mod pipeline;
mod runtime;

pub use burn::tensor::Device;
pub use error::Error;
pub use medfm_dicom as dicom;
pub use medfm_dicom::{ErrorKind, dicomweb, dimse};
pub use runtime::RunConfig;

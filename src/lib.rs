//! medfm: medical-imaging foundation models that run where the images are.
//!
//! The core (`dicom`, `dicomweb`, `model`, `pipeline`) is target-agnostic: it takes bytes
//! and a Burn device and returns values (`dicomweb` speaks the protocol; the shells move
//! its bytes over HTTP). The shells (`web` for wasm32, `bin/medfm.rs` natively) only
//! convert types and errors.
#![warn(missing_docs)]

#[cfg(feature = "convert")]
pub mod convert;
pub mod dicom;
pub mod dicomweb;
pub mod dimse;
pub mod model;
pub mod pipeline;

pub use burn::tensor::Device;

/// What kind of failure an error is: one rule for the CLI's exit codes and the `code` of
/// the JS API's errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ErrorKind {
    /// The input is wrong: not DICOM, undecodable, a bad prompt, a bad option (exit 2,
    /// code `bad-input`).
    BadInput,
    /// The weights are missing, unpinned or unreadable (exit 3, code `weights`).
    Weights,
    /// The device failed (exit 4, code `device`).
    Device,
    /// Reading or writing files failed (exit 5, code `io`).
    Io,
}

impl ErrorKind {
    /// The CLI's exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::BadInput => 2,
            ErrorKind::Weights => 3,
            ErrorKind::Device => 4,
            ErrorKind::Io => 5,
        }
    }

    /// The `code` of a JS API error.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::BadInput => "bad-input",
            ErrorKind::Weights => "weights",
            ErrorKind::Device => "device",
            ErrorKind::Io => "io",
        }
    }
}

#[cfg(target_arch = "wasm32")]
pub mod web;

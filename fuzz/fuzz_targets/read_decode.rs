//! Fuzz target: arbitrary bytes through `dicom::read`, every frame's decode, the VOIs and
//! the modality LUT. Any panic is a bug (bad input must give an error).
//!
//! The target-agnostic `dicom` module is compiled in on its own (it depends on no other
//! part of medfm), so an instrumented build does not rebuild Burn.
#![no_main]

/// `crate::ErrorKind`, which the compiled-in modules name.
#[path = "../shared/error_kind.rs"]
mod error_kind;
pub use error_kind::ErrorKind;

#[allow(dead_code)]
#[path = "../../src/dicom/mod.rs"]
mod dicom;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(image) = dicom::read(bytes) {
        // Bounded work per input: the first frames only.
        for f in 0..image.meta.frames.min(4) {
            let _ = image.frame(f);
            let _ = image.vois(f);
            let _ = image.modality_lut(f);
        }
    }
});

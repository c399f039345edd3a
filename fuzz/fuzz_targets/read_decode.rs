//! Fuzz target: arbitrary bytes through `dicom::read`, every frame's decode, the VOIs and
//! the modality LUT. Any panic is a bug (bad input must give an error).
//!
//! The DICOM crate (`medfm-dicom`) has no model, so an instrumented build does not build
//! Burn.
#![no_main]

use libfuzzer_sys::fuzz_target;
use medfm_dicom as dicom;

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

//! Fuzz target: the strict file meta group reader the edge node runs on every file before
//! it enters the spool and on every file it sends (`medfm_dicom::dimse::file_meta`), over
//! arbitrary bytes. Errors are expected; a panic, or a data set offset past the input,
//! is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use medfm_dicom::dimse;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(m) = dimse::file_meta(bytes) {
        assert!(m.data_set_offset <= bytes.len());
    }
});

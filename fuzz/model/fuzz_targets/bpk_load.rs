//! Fuzz target: arbitrary bytes as a LiteMedSAM `.bpk` weights file. Loading must give the
//! model or an error saying what is wrong; any panic is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let _ = medfm::model::weights::load_bpk(bytes.to_vec(), &medfm::Device::flex());
});

//! Fuzz target: a bring-your-own DINOv2 model from arbitrary bytes: a `config.json` (the
//! text before the first NUL byte) and a `model.safetensors` (the bytes after it). The
//! config is checked before anything is allocated from it, then the weights are loaded;
//! each step gives a model or an error, never a panic or an allocation the input's size
//! does not justify.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let split = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let Ok(config) = std::str::from_utf8(&bytes[..split]) else {
        return;
    };
    let weights = bytes.get(split + 1..).unwrap_or_default().to_vec();
    if let Ok(cfg) = medfm::model::vit::VitConfig::from_json(config) {
        let _ = cfg.load(weights, &medfm::Device::flex());
    }
});

//! Browser shell (wasm32 only): a minimal wasm-bindgen facade over the core.
//!
//! The full app (worker, viewer, JS API) is issue 4; this facade proves the core builds
//! and loads weights from bytes in wasm.

use wasm_bindgen::prelude::*;

use crate::model::weights;

/// sha256 (hex) of a byte array, as the app checks downloaded weights.
#[wasm_bindgen(js_name = sha256Hex)]
pub fn sha256_hex(bytes: &[u8]) -> String {
    weights::sha256_hex(bytes)
}

/// Parse a DICOM file and return its metadata as a JS object.
#[wasm_bindgen(js_name = dicomInfo)]
pub fn dicom_info(bytes: &[u8]) -> Result<JsValue, JsError> {
    let image = crate::dicom::read(bytes).map_err(|e| JsError::new(&e.to_string()))?;
    serde_wasm_bindgen::to_value(&image.meta).map_err(|e| JsError::new(&e.to_string()))
}

/// Load LiteMedSAM from `.bpk` bytes on the CPU backend and report its parameter count.
#[wasm_bindgen(js_name = loadWeightsCpu)]
pub fn load_weights_cpu(bytes: Vec<u8>) -> Result<usize, JsError> {
    use burn::module::Module;
    let model = weights::load_bpk(bytes, &crate::Device::flex())
        .map_err(|e| JsError::new(&e.to_string()))?;
    Ok(model.num_params())
}

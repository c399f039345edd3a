//! `pixelsToDicom`: pixels a viewer has already decoded (the JS API's `openPixels`) made
//! into DICOM instances by the core (`dicom::pixels`), which the worker then opens like
//! any file: one reader, one series rule, one preprocessing recipe.

use js_sys::{Array, Float32Array, Int16Array, Uint8Array, Uint16Array};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;

use medfm::dicom::pixels::{self, PixelSpec, Values};

/// One Part 10 file (Uint8Array) per frame of `data` (Int16Array, Uint16Array,
/// Float32Array or Uint8Array: modality values, frames back to back), described by
/// `spec` ({width, height, frames, spacing, origin, direction, modality, window,
/// photometric, description, uids}: [`PixelSpec`]). Bad input is an `Error` with code
/// `bad-input` saying what is wrong.
#[wasm_bindgen(js_name = pixelsToDicom)]
pub fn pixels_to_dicom(spec: JsValue, data: JsValue) -> Result<Array, JsValue> {
    let spec: PixelSpec = serde_wasm_bindgen::from_value(spec)
        .map_err(|e| crate::bad(format!("openPixels options: {e}")))?;
    let files = if let Some(a) = data.dyn_ref::<Int16Array>() {
        pixels::instances(&spec, Values::I16(&a.to_vec()))
    } else if let Some(a) = data.dyn_ref::<Uint16Array>() {
        pixels::instances(&spec, Values::U16(&a.to_vec()))
    } else if let Some(a) = data.dyn_ref::<Float32Array>() {
        pixels::instances(&spec, Values::F32(&a.to_vec()))
    } else if let Some(a) = data.dyn_ref::<Uint8Array>() {
        pixels::instances(&spec, Values::U8(&a.to_vec()))
    } else {
        return Err(crate::bad(
            "openPixels data must be an Int16Array, Uint16Array, Float32Array or Uint8Array",
        ));
    }
    .map_err(crate::err)?;
    Ok(files
        .iter()
        .map(|f| JsValue::from(Uint8Array::from(&f[..])))
        .collect())
}

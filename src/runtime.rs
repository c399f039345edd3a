//! How a process runs the models, as a value: [`RunConfig`] (CPU threads, device). Library
//! users (the edge node, Python, a Ray actor) pass one in; the CLI makes its one from its
//! flags and environment variables. Nothing in the core reads the environment for these.
//!
//! Both are process-wide underneath (the CPU backend's thread pool is built once; the GPU
//! runtime is started once, `pipeline::device`), so a process has one run configuration:
//! the first [`RunConfig::apply`] fixes it and reports the device; the same configuration
//! again gets the same device; a different one is an error saying what runs already.

use std::sync::Mutex;

use crate::pipeline::device::{DeviceChoice, Selected, select};
use crate::{Error, ErrorKind};

/// The run configuration of a process (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunConfig {
    /// CPU threads of the CPU backend and the CPU kernels; `None`: the platform's
    /// parallelism (or the pool the backend already built).
    pub threads: Option<usize>,
    /// Where the models run.
    pub device: DeviceChoice,
}

/// The configuration applied in this process, and the device it gave.
static APPLIED: Mutex<Option<(RunConfig, Selected)>> = Mutex::new(None);

impl RunConfig {
    /// Fixes this process's run configuration and selects its device (by the rule of
    /// `pipeline::device`). Idempotent for the same configuration; an error for another.
    pub fn apply(&self) -> Result<Selected, Error> {
        let mut applied = APPLIED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((running, selected)) = applied.as_ref() {
            if running == self {
                return Ok(selected.clone());
            }
            return Err(Error::new(
                ErrorKind::Device,
                format!(
                    "this process already runs {} with {}; {} with {} was asked for (one run \
                     configuration per process)",
                    selected.name,
                    threads_name(running.threads),
                    choice_name(self.device),
                    threads_name(self.threads),
                ),
            ));
        }
        if let Some(n) = self.threads {
            set_threads(n)?;
        }
        let selected = select(self.device)?;
        *applied = Some((*self, selected.clone()));
        Ok(selected)
    }
}

/// The CPU backend's pool and the kernels on `n` threads.
fn set_threads(n: usize) -> Result<(), Error> {
    if n == 0 {
        return Err(Error::new(ErrorKind::BadInput, "threads: at least 1"));
    }
    // The CPU backend's pool is rayon's global one, built on first use; built already
    // (by an earlier run of the backend) with another count, it cannot change.
    if rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .is_err()
        && rayon::current_num_threads() != n
    {
        return Err(Error::new(
            ErrorKind::Device,
            format!(
                "threads: the CPU backend already runs on {} threads in this process; set \
                 the run configuration before the first model run",
                rayon::current_num_threads()
            ),
        ));
    }
    crate::model::kernels::parallel::set_threads(n);
    Ok(())
}

fn threads_name(threads: Option<usize>) -> String {
    threads.map_or_else(|| "the default threads".into(), |n| format!("{n} threads"))
}

fn choice_name(choice: DeviceChoice) -> &'static str {
    match choice {
        DeviceChoice::Auto => "device auto",
        DeviceChoice::Cpu => "the cpu",
        DeviceChoice::Gpu => "the gpu",
    }
}

//! The node's model, in process: the core's jobs (`medfm::jobs`) on one loaded model.
//!
//! - The model is loaded on first use (the pinned fp32 weights of the weights folder, by
//!   the configuration's `device` and `threads`) and kept.
//! - One run at a time: the work thread's jobs and the HTTP API's requests take turns. At
//!   most [`MAX_WAITING`] callers wait; one more is refused at once ([`RunError::Busy`],
//!   the API's 503), so requests cannot pile up threads behind a long propagation.
//! - A run has a time limit (the configuration's `model_timeout_seconds`), checked
//!   between slices: a propagation or an embedding past it stops after the slice in
//!   progress and fails ([`RunError::TimedOut`]). A single slice is never cut: a hang
//!   inside one (a GPU that never answers) is what `/api/health`'s `work_stuck_seconds`
//!   reports.
//! - A panic inside a run (the model, a kernel, the GPU stack) is caught: that run fails
//!   with the panic's message, the model is dropped (reloaded by the next run, in case the
//!   panic left it half updated) and the node goes on.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use medfm::RunConfig;
use medfm::jobs::{Outcome, SegmentJob, Series};
use medfm::model::weights::{self, Precision};
use medfm::pipeline::Segmenter;
use medfm::pipeline::embed::{EntryMeta, Index, frame_vector};

/// Callers that may wait for the model while it runs.
pub const MAX_WAITING: usize = 4;

/// Why a run gave no result.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// [`MAX_WAITING`] callers wait already.
    #[error("the model is busy ({MAX_WAITING} runs waiting): try again later")]
    Busy,
    /// The run passed the time limit (`model_timeout_seconds`) and was stopped after
    /// `slices` slices.
    #[error(
        "the model run passed model_timeout_seconds ({} s) and was stopped after {slices} slice(s)",
        .limit.as_secs_f64()
    )]
    TimedOut { limit: Duration, slices: usize },
    /// The run failed: bad input (its kind says so), weights, device, or a panic.
    #[error(transparent)]
    Failed(#[from] medfm::Error),
}

/// The node's model (see the module docs).
pub struct ModelRunner {
    run: RunConfig,
    /// The time limit of one run (see the module docs).
    timeout: Duration,
    /// Series whose runs panic on purpose (the configuration's `test_panic_series`: how
    /// the tests show that a panicking model leaves the node serving).
    panic_series: Vec<String>,
    model: Mutex<Option<Segmenter>>,
    waiting: AtomicUsize,
}

impl ModelRunner {
    /// A runner that will load the model by `run` (device, threads) when first used; each
    /// run stops between slices once it has taken `timeout`.
    pub fn new(run: RunConfig, timeout: Duration, panic_series: Vec<String>) -> Self {
        ModelRunner {
            run,
            timeout,
            panic_series,
            model: Mutex::new(None),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Run `work` on the model (loaded if needed), one caller at a time; see the module
    /// docs for the queue bound and panics. `work` gets the run's deadline (counted from
    /// when the model is ready) and its error may be [`RunError::TimedOut`].
    fn run<T>(
        &self,
        series: &str,
        work: impl FnOnce(&Segmenter, Deadline) -> Result<T, RunError>,
    ) -> Result<T, RunError> {
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= MAX_WAITING {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(RunError::Busy);
        }
        // A panic in an earlier run has dropped the model; the lock itself stays usable.
        let mut model = self.model.lock().unwrap_or_else(|p| p.into_inner());
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            if self.panic_series.iter().any(|s| s == series) {
                panic!("test_panic_series: a panic on series {series}, as configured");
            }
            let segmenter = match model.take() {
                Some(m) => m,
                None => load(self.run)?,
            };
            let deadline = Deadline {
                at: Instant::now() + self.timeout,
                limit: self.timeout,
            };
            let result = work(&segmenter, deadline);
            *model = Some(segmenter);
            result
        }));
        match outcome {
            Ok(result) => result,
            Err(panic) => {
                *model = None;
                let what = super::liveness::panic_message(panic.as_ref());
                tracing::error!(series, "the model panicked: {what}");
                Err(RunError::Failed(medfm::Error::new(
                    medfm::ErrorKind::Internal,
                    format!("the model panicked: {what}"),
                )))
            }
        }
    }

    /// The vector of `frame` of `image` (what [`ModelRunner::embed`] indexes), for a search.
    pub fn vector(
        &self,
        image: &medfm::dicom::DicomImage,
        frame: u32,
    ) -> Result<Vec<f32>, RunError> {
        self.run(&image.meta.series_instance_uid, |segmenter, _| {
            Ok(frame_vector(segmenter, image, frame).map_err(medfm::Error::from)?)
        })
    }

    /// The segment jobs on `series` (medfm::jobs::segment_series).
    pub fn segment(
        &self,
        series: &Series,
        jobs: &[SegmentJob],
    ) -> Result<(Vec<Outcome>, Vec<String>), RunError> {
        let plan = medfm::jobs::plan(series, jobs)?;
        let outcomes = self.run(series.uid(), |segmenter, deadline| {
            // Only a propagation is stopped (a job of one slice is done when it reports).
            // After a stop, the jobs left run a slice each (Plan::run's cancel).
            let (mut slices, mut stopped) = (0, None);
            let outcomes = plan.run(segmenter, &mut |k, _| {
                slices += 1;
                if stopped.is_none() && jobs[k].propagate.is_some() && deadline.passed() {
                    stopped = Some(slices);
                }
                stopped.is_none()
            })?;
            match stopped {
                Some(slices) => Err(deadline.error(slices)),
                None => Ok(outcomes),
            }
        })?;
        Ok((outcomes, plan.warnings.clone()))
    }

    /// Every frame of `series`, in series order, as a vector of the default embedder
    /// (LiteMedSAM's encoder, pooled), each named by its file's name in the index.
    pub fn embed(&self, series: &Series) -> Result<Index, RunError> {
        self.run(series.uid(), |segmenter, deadline| {
            let mut stopped = None;
            let vectors = series.vectors_with(segmenter, &mut |done| {
                if deadline.passed() {
                    stopped = Some(done);
                    return Err(medfm::Error::new(medfm::ErrorKind::Internal, "timed out"));
                }
                Ok(())
            });
            let vectors = match (vectors, stopped) {
                (_, Some(done)) => return Err(deadline.error(done)),
                (result, None) => result?,
            };
            let mut index = Index::default();
            for (&(i, f), vector) in series.order.iter().zip(vectors) {
                let image = &series.images[i];
                let file = series.paths[i]
                    .as_ref()
                    .and_then(|p| p.file_name())
                    .map_or_else(
                        || image.meta.sop_instance_uid.clone(),
                        |n| n.to_string_lossy().into_owned(),
                    );
                index
                    .add(vector, EntryMeta::for_frame(&image.meta, f, &file))
                    .map_err(medfm::Error::from)?;
            }
            Ok(index)
        })
    }
}

/// When a run must stop, and the limit it was given (for its error).
#[derive(Clone, Copy)]
struct Deadline {
    at: Instant,
    limit: Duration,
}

impl Deadline {
    fn passed(&self) -> bool {
        Instant::now() >= self.at
    }

    fn error(&self, slices: usize) -> RunError {
        RunError::TimedOut {
            limit: self.limit,
            slices,
        }
    }
}

/// The pinned fp32 LiteMedSAM from the weights folder, on the device of `run`.
fn load(run: RunConfig) -> Result<Segmenter, medfm::Error> {
    let dir = weights::required_dir()?;
    let selected = run.apply()?;
    if let Some(note) = &selected.note {
        tracing::info!("{note}; using the CPU backend");
    }
    let path = dir.join(Precision::Fp32.file_name());
    let sam = weights::load_file(&path, Some(Precision::Fp32), false, &selected.device)?;
    tracing::info!(device = selected.name, weights = %path.display(), "model loaded");
    Ok(Segmenter::new(sam, selected.device))
}

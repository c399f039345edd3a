//! The node's model, in process: the core's jobs (`medfm::jobs`) on one loaded model.
//!
//! - The model is loaded on first use (the pinned fp32 weights of the weights folder, by
//!   the configuration's `device` and `threads`) and kept.
//! - One run at a time: the work thread's jobs and the HTTP API's requests take turns. At
//!   most [`MAX_WAITING`] callers wait; one more is refused at once ([`RunError::Busy`],
//!   the API's 503), so requests cannot pile up threads behind a long propagation.
//! - A panic inside a run (the model, a kernel, the GPU stack) is caught: that run fails
//!   with the panic's message, the model is dropped (reloaded by the next run, in case the
//!   panic left it half updated) and the node goes on.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

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
    /// The run failed: bad input (its kind says so), weights, device, or a panic.
    #[error(transparent)]
    Failed(#[from] medfm::Error),
}

/// The node's model (see the module docs).
pub struct ModelRunner {
    run: RunConfig,
    /// Series whose runs panic on purpose (the configuration's `test_panic_series`: how
    /// the tests show that a panicking model leaves the node serving).
    panic_series: Vec<String>,
    model: Mutex<Option<Segmenter>>,
    waiting: AtomicUsize,
}

impl ModelRunner {
    /// A runner that will load the model by `run` (device, threads) when first used.
    pub fn new(run: RunConfig, panic_series: Vec<String>) -> Self {
        ModelRunner {
            run,
            panic_series,
            model: Mutex::new(None),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Run `work` on the model (loaded if needed), one caller at a time; see the module
    /// docs for the queue bound and panics.
    fn run<T>(
        &self,
        series: &str,
        work: impl FnOnce(&Segmenter) -> Result<T, medfm::Error>,
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
            let result = work(&segmenter);
            *model = Some(segmenter);
            result
        }));
        match outcome {
            Ok(result) => Ok(result?),
            Err(panic) => {
                *model = None;
                let what = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)");
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
        self.run(&image.meta.series_instance_uid, |segmenter| {
            Ok(frame_vector(segmenter, image, frame)?)
        })
    }

    /// The segment jobs on `series` (medfm::jobs::segment_series).
    pub fn segment(
        &self,
        series: &Series,
        jobs: &[SegmentJob],
    ) -> Result<(Vec<Outcome>, Vec<String>), RunError> {
        let plan = medfm::jobs::plan(series, jobs)?;
        let outcomes = self.run(series.uid(), |segmenter| {
            plan.run(segmenter, &mut |_, _| true)
        })?;
        Ok((outcomes, plan.warnings.clone()))
    }

    /// Every frame of `series`, in series order, as a vector of the default embedder
    /// (LiteMedSAM's encoder, pooled), each named by its file's name in the index.
    pub fn embed(&self, series: &Series) -> Result<Index, RunError> {
        self.run(series.uid(), |segmenter| {
            let mut index = Index::default();
            for (&(i, f), vector) in series.order.iter().zip(series.vectors(segmenter)?) {
                let image = &series.images[i];
                let file = series.paths[i]
                    .as_ref()
                    .and_then(|p| p.file_name())
                    .map_or_else(
                        || image.meta.sop_instance_uid.clone(),
                        |n| n.to_string_lossy().into_owned(),
                    );
                index.add(vector, EntryMeta::for_frame(&image.meta, f, &file))?;
            }
            Ok(index)
        })
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

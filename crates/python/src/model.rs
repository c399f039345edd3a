//! `medfm.Model`: LiteMedSAM loaded once, then masks, propagations and vectors, each by
//! the core's recipe (the CLI's mask for the same file, frame, prompt and weights).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use medfm::jobs::{self, SegmentJob};
use medfm::model::weights::{self, Precision};
use medfm::pipeline::device::DeviceChoice;
use medfm::pipeline::propagate::Options;
use medfm::pipeline::{PixelPrompt, Segmenter};
use medfm::{Error, ErrorKind, RunConfig};
use numpy::IntoPyArray;
use numpy::ndarray::Array2;
use pyo3::prelude::*;

use crate::arrays::{describe, exactly, numbers};
use crate::rules::Rules;
use crate::series::{Propagation, Series, masks_array};
use crate::{bad, run, run_held, warn_all};

/// LiteMedSAM on this machine's CPU or GPU.
///
/// One run configuration (device, threads) per process: a second `Model` with another
/// raises `DeviceError`. A `Model` may be shared by Python threads: its calls run one at a
/// time (the GIL is released while they run, so other Python threads go on).
#[pyclass(frozen, module = "medfm")]
pub(crate) struct Model {
    segmenter: Mutex<Segmenter>,
    precision: Option<Precision>,
    device: String,
    weights_sha256: String,
    weights: PathBuf,
}

impl Model {
    /// Run `work` with the segmenter, the GIL released, calls of other threads waiting.
    fn with<T: Send>(
        &self,
        py: Python<'_>,
        work: impl FnOnce(&Segmenter) -> Result<T, Error> + Send,
    ) -> PyResult<T> {
        run(py, || {
            // A panic in an earlier call poisoned nothing the segmenter holds (it is
            // read-only), so the lock is taken back.
            let segmenter = self.segmenter.lock().unwrap_or_else(|p| p.into_inner());
            work(&segmenter)
        })
    }
}

/// A prompt from Python values: a box `(x0, y0, x1, y1)` (pixels, inclusive corners) and
/// points `(x, y)` or `(x, y, label)` (label 1 foreground, 0 background); any sequences of
/// numbers (tuples, lists, numpy arrays).
fn prompt(
    bbox: Option<&Bound<'_, PyAny>>,
    points: Option<&Bound<'_, PyAny>>,
    multimask: bool,
) -> Result<PixelPrompt, Error> {
    let bbox = bbox
        .map(|b| exactly::<4>(b, "box", "(x0, y0, x1, y1)"))
        .transpose()?
        .map(|b| b.map(|v| v as f32));
    let mut given = Vec::new();
    if let Some(points) = points {
        let all = points.try_iter().map_err(|_| {
            bad(format!(
                "points must be a sequence of points; got {}",
                describe(points)
            ))
        })?;
        for p in all {
            let p = numbers(&p.map_err(|e| bad(e.to_string()))?, "a point")?;
            given.push(p.into_iter().map(|v| v as f32).collect());
        }
    }
    Ok(PixelPrompt {
        bbox,
        points: jobs::prompt_points(&given)?,
        multimask,
    })
}

/// A count or index from Python (`what` names it), which must not be negative.
fn natural(value: i64, what: &str) -> Result<usize, Error> {
    usize::try_from(value).map_err(|_| bad(format!("{what} {value} is negative")))
}

/// The slice `frame` of `series`, or an error naming the range.
fn slice(series: &jobs::Series, frame: i64) -> Result<(usize, u32), Error> {
    let at = natural(frame, "frame")?;
    series.order.get(at).copied().ok_or_else(|| {
        bad(format!(
            "frame {frame} is outside the series (frames 0..{})",
            series.len().saturating_sub(1)
        ))
    })
}

#[pymethods]
impl Model {
    /// Load LiteMedSAM.
    ///
    /// `precision`: `fp32` (the reference, as the CLI's default), `int8` or `int4`,
    /// found as the CLI finds them (`MEDFM_WEIGHTS_DIR`, else the data folder;
    /// `medfm weights fetch` puts them there). `weights`: a `.bpk` file instead, which
    /// must be one of the pinned files unless `allow_unpinned`. `device`: `auto` (a real
    /// GPU when there is one, else the CPU), `cpu` or `gpu`. `threads`: CPU threads
    /// (default: all).
    #[new]
    #[pyo3(signature = (precision="fp32", device="auto", weights=None, threads=None, allow_unpinned=false))]
    fn new(
        py: Python<'_>,
        precision: &str,
        device: &str,
        weights: Option<PathBuf>,
        threads: Option<usize>,
        allow_unpinned: bool,
    ) -> PyResult<Self> {
        let (asked, choice, path) = run_held(py, || {
            let asked: Precision = precision.parse()?;
            let choice = match device {
                "auto" => DeviceChoice::Auto,
                "cpu" => DeviceChoice::Cpu,
                "gpu" => DeviceChoice::Gpu,
                other => {
                    return Err(bad(format!(
                        "device {other:?}: use \"auto\", \"cpu\" or \"gpu\""
                    )));
                }
            };
            if allow_unpinned && weights.is_none() {
                return Err(bad("allow_unpinned goes with a weights file"));
            }
            let path = match &weights {
                Some(p) => p.clone(),
                None => weights::required_dir()?.join(asked.file_name()),
            };
            Ok((asked, choice, path))
        })?;
        let expected = weights.is_none().then_some(asked);
        let (sam, sha, selected) = run(py, || {
            let selected = RunConfig {
                threads,
                device: choice,
            }
            .apply()?;
            let (sam, sha) =
                weights::load_file_hashed(&path, expected, allow_unpinned, &selected.device)?;
            Ok((sam, sha, selected))
        })?;
        if let Some(note) = &selected.note {
            warn_all(py, std::slice::from_ref(note))?;
        }
        Ok(Model {
            segmenter: Mutex::new(Segmenter::new(sam, selected.device)),
            precision: Precision::ALL
                .into_iter()
                .find(|&p| weights::pinned_sha256(p) == sha),
            device: selected.name,
            weights_sha256: sha,
            weights: path,
        })
    }

    /// `fp32`, `int8` or `int4` (the pinned file loaded), or None for an unpinned file.
    #[getter]
    fn precision(&self) -> Option<&'static str> {
        self.precision.map(Precision::name)
    }

    /// Where it runs: `cpu (flex)` or `gpu (wgpu: ADAPTER)`.
    #[getter]
    fn device(&self) -> &str {
        &self.device
    }

    /// sha256 (hex) of the weights file: what identifies the model of an output.
    #[getter]
    fn weights_sha256(&self) -> &str {
        &self.weights_sha256
    }

    /// The weights file.
    #[getter]
    fn weights(&self) -> PathBuf {
        self.weights.clone()
    }

    /// The mask of one image for a box and/or points: uint8 0/1 `(rows, cols)`.
    ///
    /// `image`: a `Series` (`frame`: its slice, in series order) or a numpy image
    /// `(rows, cols)` of uint8, int16, uint16 or float32 (modality values: HU for CT), or
    /// `(rows, cols, 3)` uint8 RGB, C-contiguous. `window`: (center, width) of a CT image
    /// (the recipe's intensity window; `modality` is then CT); without one a grey array is
    /// clipped by its percentiles (`modality` OT). `box`: `(x0, y0, x1, y1)` in pixels
    /// (columns, rows; inclusive corners); `points`: `(x, y)` or `(x, y, label)`.
    /// `multimask`: keep the best of three candidate masks.
    #[pyo3(signature = (image, frame=0, r#box=None, points=None, window=None, modality=None, multimask=false))]
    #[allow(clippy::too_many_arguments)]
    fn segment<'py>(
        &self,
        py: Python<'py>,
        image: &Bound<'py, PyAny>,
        frame: i64,
        r#box: Option<&Bound<'py, PyAny>>,
        points: Option<&Bound<'py, PyAny>>,
        window: Option<&Bound<'py, PyAny>>,
        modality: Option<&str>,
        multimask: bool,
    ) -> PyResult<Py<PyAny>> {
        let prompt = run_held(py, || prompt(r#box, points, multimask))?;
        let window = run_held(py, || {
            window
                .map(|w| exactly::<2>(w, "window", "(center, width)"))
                .transpose()
                .map(|w| w.map(|[c, w]| (c, w)))
        })?;
        let (mask, rows, cols, warnings) = if let Ok(series) = image.cast::<Series>() {
            let series = series.get();
            if window.is_some() || modality.is_some() {
                return Err(crate::raise(
                    py,
                    bad("window and modality are for numpy images: a series has its own"),
                ));
            }
            let s = Arc::clone(&series.inner);
            self.with(py, move |seg| {
                let (i, f) = slice(&s, frame)?;
                segment_image(seg, &s.images[i], f, &prompt)
            })?
        } else {
            if frame != 0 {
                return Err(crate::raise(
                    py,
                    bad("frame is for a Series: an array is one image"),
                ));
            }
            let decoded = run_held(py, || crate::arrays::image(image, window, modality))?;
            self.with(py, move |seg| segment_image(seg, &decoded, 0, &prompt))?
        };
        warn_all(py, &warnings)?;
        let mask = run_held(py, || {
            Array2::from_shape_vec((rows, cols), mask)
                .map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))
        })?;
        Ok(mask.into_pyarray(py).into_any().unbind())
    }

    /// Carry a box and/or points on slice `frame` through `series` (the 3D recipe of
    /// `medfm segment --propagate`): each next slice is prompted by the box of the last
    /// mask, until the series ends, a mask is empty or its predicted IoU is below
    /// `min_iou`; or, with `extent`, exactly `extent` slices each way. Returns a
    /// `Propagation` (`.masks` uint8 `(frames, rows, cols)`, `.stopped`, ...).
    #[pyo3(signature = (series, frame, r#box=None, points=None, extent=None, min_iou=0.5))]
    #[allow(clippy::too_many_arguments)]
    fn propagate<'py>(
        &self,
        py: Python<'py>,
        series: &Series,
        frame: i64,
        r#box: Option<&Bound<'py, PyAny>>,
        points: Option<&Bound<'py, PyAny>>,
        extent: Option<i64>,
        min_iou: f32,
    ) -> PyResult<Propagation> {
        let (prompt, start, extent) = run_held(py, || {
            let extent = extent.map(|e| natural(e, "extent")).transpose()?;
            Ok((
                prompt(r#box, points, false)?,
                natural(frame, "frame")?,
                extent,
            ))
        })?;
        let s = Arc::clone(&series.inner);
        let job = SegmentJob {
            label: "Segment 1".into(),
            color: None,
            start,
            prompt,
            propagate: Some(Options { extent, min_iou }),
        };
        let (mut outcomes, warnings) = self.with(py, |seg| {
            jobs::segment_series(seg, &s, std::slice::from_ref(&job), &mut |_, _| true)
        })?;
        let outcome = outcomes
            .pop()
            .ok_or_else(|| crate::raise(py, Error::new(ErrorKind::Internal, "no outcome")))?;
        let (rows, cols) = series.size();
        let masks = masks_array(py, &outcome, (s.len(), rows, cols))?;
        Ok(Propagation {
            outcome,
            series: s,
            masks,
            warnings,
        })
    }

    /// Segment `series` by the first of `rules` (a `medfm.read_rules`) with a segment job
    /// that matches it, as the edge node does, and write the SEG to `path` (a temporary
    /// file renamed into place: `path` is whole or absent). Returns the rule's name and one
    /// summary per segment (label, voxels, volume_ml, slices, ...), or None, writing
    /// nothing, when no rule matches. The SEG's UIDs derive from its inputs: a rerun
    /// writes the same bytes.
    fn segment_rules<'py>(
        &self,
        py: Python<'py>,
        series: &Series,
        rules: &Rules,
        path: PathBuf,
    ) -> PyResult<Option<(String, Bound<'py, PyAny>)>> {
        let s = Arc::clone(&series.inner);
        let done = self.with(py, |seg| {
            let Some(rule) = rules.for_series(&s)? else {
                return Ok(None);
            };
            let jobs = rule.segment_jobs(&s)?;
            let (outcomes, _) = jobs::segment_series(seg, &s, &jobs, &mut |_, _| true)?;
            let bytes = jobs::write_seg(&s, &jobs, &outcomes)?;
            medfm::fs::write_atomic(&path, &bytes).map_err(Error::from)?;
            let summary = serde_json::to_string(&jobs::describe(&s, &jobs, &outcomes))
                .map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))?;
            Ok(Some((rule.key(), summary)))
        })?;
        let Some((name, summary)) = done else {
            return Ok(None);
        };
        let summary = py.import("json")?.call_method1("loads", (summary,))?;
        Ok(Some((name, summary)))
    }

    /// One unit-norm vector per slice of `series` (the pooled image encoder output, as
    /// `medfm embed`): float32 `(frames, 256)`, in series order.
    fn embed(&self, py: Python<'_>, series: &Series) -> PyResult<Py<PyAny>> {
        let s = Arc::clone(&series.inner);
        let vectors = self.with(py, move |seg| s.vectors(seg))?;
        let dim = vectors.first().map_or(0, Vec::len);
        let flat: Vec<f32> = vectors.into_iter().flatten().collect();
        let array = run_held(py, || {
            Array2::from_shape_vec((flat.len() / dim.max(1), dim), flat)
                .map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))
        })?;
        Ok(array.into_pyarray(py).into_any().unbind())
    }

    fn __repr__(&self) -> String {
        format!(
            "<medfm.Model LiteMedSAM {} on {}>",
            self.precision().unwrap_or("unpinned"),
            self.device
        )
    }
}

/// The sha256 of the pinned weights file of `precision` (`fp32`, `int8` or `int4`): what
/// `Model(precision=...).weights_sha256` is, known without loading it.
#[pyfunction]
pub(crate) fn pinned_sha256(py: Python<'_>, precision: &str) -> PyResult<&'static str> {
    run_held(py, || Ok(weights::pinned_sha256(precision.parse()?)))
}

/// The single-image recipe on `frame` of `image`, exactly as `medfm segment`: the mask,
/// its size and the preprocessing's warnings.
fn segment_image(
    seg: &Segmenter,
    image: &medfm::dicom::DicomImage,
    frame: u32,
    prompt: &PixelPrompt,
) -> Result<(Vec<u8>, usize, usize, Vec<String>), Error> {
    let pre = seg.prepare(image, frame)?;
    prompt.to_model(&pre)?;
    let emb = seg.embed(&pre)?;
    let out = seg.segment(&emb, &pre, prompt)?;
    Ok((out.mask, out.rows, out.cols, pre.warnings))
}

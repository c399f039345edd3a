//! `medfm.read_series`, `medfm.Series`, `medfm.Propagation` and `medfm.write_seg`: a
//! series as the core's jobs take it ([`medfm::jobs::Series`]), its slices in the series
//! order every front uses.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use medfm::Error;
use medfm::dicom::seg::{self, SegFrame, Segment, SegmentInfo};
use medfm::jobs::{self, Outcome, SegmentJob};
use numpy::ndarray::Array3;
use numpy::{IntoPyArray, PyArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use medfm::dicomweb::url::Resource;
use medfm_dicomweb_client::{Auth, Client, is_url};

use crate::arrays::{Masks, describe, exactly};
use crate::{bad, run, run_held};

/// A DICOM series: its instances and its slices in series order (the order of the CLI,
/// the node and the SEG files). Made by `medfm.read_series`.
#[pyclass(frozen, module = "medfm")]
pub(crate) struct Series {
    pub(crate) inner: Arc<jobs::Series>,
    volume: OnceLock<Py<PyAny>>,
}

impl Series {
    /// Rows and columns of its slices (one size: the core refuses mixed sizes).
    pub(crate) fn size(&self) -> (usize, usize) {
        let meta = self.inner.meta(0);
        (meta.rows as usize, meta.cols as usize)
    }
}

/// Read the series at `path`: a DICOM file (its frames), or a folder searched recursively
/// whose DICOM files are of one series, or of several with `series_uid` naming one.
/// Files in the folder that are not readable DICOM are passed over and listed in
/// `Series.warnings`. Or a DICOMweb URL (`http(s)://…/studies/UID/series/UID`; a study
/// URL with `series_uid`): the series retrieved by WADO-RS into memory, with a bearer
/// `token` or basic `user` (`USER:PASSWORD`), else `$MEDFM_DICOMWEB_TOKEN` /
/// `$MEDFM_DICOMWEB_USER`.
#[pyfunction]
#[pyo3(signature = (path, series_uid=None, *, token=None, user=None))]
pub(crate) fn read_series(
    py: Python<'_>,
    path: PathBuf,
    series_uid: Option<String>,
    token: Option<String>,
    user: Option<String>,
) -> PyResult<Series> {
    let uid = series_uid.as_deref();
    let inner = run(py, || match path.to_str().filter(|s| is_url(s)) {
        Some(url) => retrieve(url, uid, token, user),
        None if token.is_some() || user.is_some() => Err(bad(format!(
            "{}: credentials are for DICOMweb URLs, not for a path",
            path.display()
        ))),
        None => jobs::Series::read_path(&path, uid),
    })?;
    Ok(Series {
        inner: Arc::new(inner),
        volume: OnceLock::new(),
    })
}

/// The series `uid` (or the only one) of the study, series or instance at `url`,
/// retrieved by WADO-RS into memory; an instance that is not readable DICOM is an error
/// (a server's answer is not a folder of stray files).
fn retrieve(
    url: &str,
    uid: Option<&str>,
    token: Option<String>,
    user: Option<String>,
) -> Result<jobs::Series, Error> {
    let client = Client::new(Auth::new(token, user)?);
    let source = Resource::path_of(url);
    let mut images = Vec::new();
    client.retrieve_each(
        url,
        None,
        |n, bytes| -> Result<(), Error> {
            let image = medfm::dicom::read(&bytes)
                .map_err(|e| Error::from(e).context(format!("instance {n} of {source}")))?;
            images.push((image, None));
            Ok(())
        },
        |_, _| {},
    )?;
    jobs::Series::pick(images, uid, &source, Vec::new())
}

#[pymethods]
impl Series {
    /// The decoded pixels (modality LUT applied: HU for CT), float32 `(frames, rows,
    /// cols)`, or `(frames, rows, cols, 3)` for colour, in series order. Decoded on first
    /// use and kept; read-only.
    #[getter]
    fn volume(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if let Some(v) = self.volume.get() {
            return Ok(v.clone_ref(py));
        }
        let series = Arc::clone(&self.inner);
        let (frames, (rows, cols)) = (series.len(), self.size());
        let (channels, values) = run(py, move || {
            let decoded = series.frames()?;
            let channels = decoded[0].channels;
            if decoded.iter().any(|f| f.channels != channels) {
                return Err(bad(
                    "the series mixes grey and colour frames: no one volume",
                ));
            }
            let values: Vec<f32> = decoded.into_iter().flat_map(|f| f.values).collect();
            Ok((channels, values))
        })?;
        let array = run_held(py, || {
            let shaped =
                numpy::ndarray::Array::from_shape_vec([frames, rows, cols, channels], values)
                    .map_err(|e| Error::new(medfm::ErrorKind::Internal, e.to_string()))?;
            Ok(shaped)
        })?;
        let array = array.into_pyarray(py);
        let array = if channels == 1 {
            array.reshape([frames, rows, cols])?.into_any()
        } else {
            array.into_any()
        };
        array.getattr("flags")?.setattr("writeable", false)?;
        let array = array.unbind();
        Ok(self.volume.get_or_init(|| array).clone_ref(py))
    }

    /// Voxel spacing in mm in the array's axis order `(slice, row, col)`, or None when the
    /// slices have no geometry (a cine, an unplaced series).
    #[getter]
    fn spacing(&self) -> Option<(f64, f64, f64)> {
        // The core's order is (column, row, slice).
        self.inner.spacing().map(|[x, y, z]| (z, y, x))
    }

    /// SOPInstanceUID of each slice's instance, in series order (a multi-frame instance's
    /// UID once per frame).
    #[getter]
    fn uids(&self) -> Vec<String> {
        let s = &self.inner;
        s.order
            .iter()
            .map(|&(i, _)| s.images[i].meta.sop_instance_uid.clone())
            .collect()
    }

    /// `(SOPInstanceUID, frame)` of each slice, in series order.
    #[getter]
    fn frames(&self) -> Vec<(String, u32)> {
        let s = &self.inner;
        s.order
            .iter()
            .map(|&(i, f)| (s.images[i].meta.sop_instance_uid.clone(), f))
            .collect()
    }

    /// The file each slice was read from, in series order.
    #[getter]
    fn paths(&self) -> Vec<Option<PathBuf>> {
        let s = &self.inner;
        s.order.iter().map(|&(i, _)| s.paths[i].clone()).collect()
    }

    /// What the series is: `study_uid`, `series_uid`, `modality`, `description`, `rows`,
    /// `cols`, `samples_per_pixel`, `transfer_syntax` (of its first slice's file).
    #[getter]
    fn meta<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let m = self.inner.meta(0);
        let d = PyDict::new(py);
        d.set_item("study_uid", &m.study_instance_uid)?;
        d.set_item("series_uid", &m.series_instance_uid)?;
        d.set_item("modality", &m.modality)?;
        d.set_item("description", &m.series_description)?;
        d.set_item("rows", m.rows)?;
        d.set_item("cols", m.cols)?;
        d.set_item("samples_per_pixel", m.samples_per_pixel)?;
        d.set_item("transfer_syntax", &m.transfer_syntax)?;
        Ok(d)
    }

    /// What reading and ordering assumed or passed over (files skipped, no geometry).
    #[getter]
    fn warnings(&self) -> Vec<String> {
        self.inner.warnings.clone()
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    fn __repr__(&self) -> String {
        let (rows, cols) = self.size();
        format!(
            "<medfm.Series {} {} slices of {rows}x{cols} {}>",
            self.inner.uid(),
            self.inner.len(),
            self.inner.meta(0).modality
        )
    }
}

/// A box or points carried through a series (`Model.propagate`): the masks, and why each
/// direction stopped.
#[pyclass(frozen, module = "medfm")]
pub(crate) struct Propagation {
    pub(crate) outcome: Outcome,
    pub(crate) series: Arc<jobs::Series>,
    pub(crate) masks: Py<PyAny>,
    pub(crate) warnings: Vec<String>,
}

#[pymethods]
impl Propagation {
    /// uint8 0/1 `(frames, rows, cols)` over the whole series (zero where it did not
    /// reach), in series order.
    #[getter]
    fn masks(&self, py: Python<'_>) -> Py<PyAny> {
        self.masks.clone_ref(py)
    }

    /// The slice the prompt was on.
    #[getter]
    fn start(&self) -> usize {
        self.outcome.start
    }

    /// The slices it segmented, in series order.
    #[getter]
    fn slices(&self) -> Vec<usize> {
        self.outcome.slices.iter().map(|m| m.slice).collect()
    }

    /// The predicted IoU of each of `slices`.
    #[getter]
    fn iou(&self) -> Vec<f32> {
        self.outcome.slices.iter().map(|m| m.iou).collect()
    }

    /// Why it stopped towards higher slice indices, then lower: `series-end`, `extent`,
    /// `empty-mask`, `low-iou` or `cancelled`.
    #[getter]
    fn stopped(&self) -> (String, String) {
        let name = |s| {
            serde_json::to_value(s)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default()
        };
        let [up, down] = self
            .outcome
            .stopped
            .unwrap_or([medfm::pipeline::propagate::Stop::Cancelled; 2]);
        (name(up), name(down))
    }

    /// What the preprocessing assumed (the series' intensity clip).
    #[getter]
    fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }

    fn __repr__(&self) -> String {
        let (up, down) = self.stopped();
        format!(
            "<medfm.Propagation from slice {} over {} slices, stopped {up} / {down}>",
            self.outcome.start,
            self.outcome.slices.len()
        )
    }
}

/// Write a binary DICOM SEG of `masks` over `series` to `path` (atomically: a reader never
/// sees half a file). `masks`: a `Propagation` (the SEG `medfm segment --propagate`
/// writes), or a uint8 0/1 or bool array `(frames, rows, cols)` (one segment) or
/// `(segments, frames, rows, cols)`, where slices without a voxel are left out.
/// `labels`: one SegmentLabel per segment (default `Segment 1`, ...); `colors`: one
/// sRGB `(r, g, b)` each.
#[pyfunction]
#[pyo3(signature = (series, masks, path, labels=None, colors=None))]
pub(crate) fn write_seg(
    py: Python<'_>,
    series: &Series,
    masks: &Bound<'_, PyAny>,
    path: PathBuf,
    labels: Option<Vec<String>>,
    colors: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let colors = run_held(py, || colors.map(rgb).transpose())?;
    let s = &series.inner;
    let bytes = if let Ok(p) = masks.cast::<Propagation>() {
        let p = p.get();
        run_held(py, || {
            if !Arc::ptr_eq(&p.series, s) {
                return Err(bad(
                    "the Propagation was made on another Series object: write it with its own",
                ));
            }
            let info = infos(1, labels, colors)?.remove(0);
            let job = SegmentJob {
                label: info.label,
                color: info.color,
                start: p.outcome.start,
                prompt: Default::default(),
                propagate: None,
            };
            jobs::write_seg(s, &[job], std::slice::from_ref(&p.outcome))
        })?
    } else {
        let masks = crate::run_held(py, || Masks::of(masks))?;
        let (rows, cols) = series.size();
        run_held(py, || {
            let (segments, shape) = match *masks.shape() {
                [z, r, c] => (1, [z, r, c]),
                [n, z, r, c] => (n, [z, r, c]),
                ref other => {
                    return Err(bad(format!(
                        "masks are (frames, rows, cols) or (segments, frames, rows, cols); got shape {other:?}"
                    )));
                }
            };
            if shape != [s.len(), rows, cols] {
                return Err(bad(format!(
                    "masks of {} frames of {}x{} do not fit the series: {} slices of {rows}x{cols}",
                    shape[0],
                    shape[1],
                    shape[2],
                    s.len()
                )));
            }
            let infos = infos(segments, labels, colors)?;
            let bytes = masks.bytes()?;
            let plane = rows * cols;
            let segments: Vec<Segment> = (0..segments)
                .map(|k| Segment {
                    info: infos[k].clone(),
                    frames: (0..s.len())
                        .filter_map(|z| {
                            let at = (k * s.len() + z) * plane;
                            let mask = &bytes[at..at + plane];
                            mask.contains(&1).then(|| {
                                let (image, frame) = s.order[z];
                                SegFrame {
                                    source: &s.images[image],
                                    frame,
                                    mask,
                                }
                            })
                        })
                        .collect(),
                })
                .collect();
            Ok(seg::write_seg_segments(&segments)?)
        })?
    };
    run(py, move || {
        medfm::fs::write_atomic(&path, &bytes).map_err(Error::from)
    })
}

/// Write `data` to `path` whole or not at all (the core's `fs::write_atomic`: a temporary
/// file in the same folder, synced, renamed into place); what the batch writes its
/// outputs and records with.
#[pyfunction]
pub(crate) fn write_atomic(py: Python<'_>, path: PathBuf, data: &[u8]) -> PyResult<()> {
    run(py, || {
        medfm::fs::write_atomic(&path, data).map_err(Error::from)
    })
}

/// Colours: a sequence of `(r, g, b)`, each 0..=255.
fn rgb(colors: &Bound<'_, PyAny>) -> Result<Vec<[u8; 3]>, Error> {
    let all = colors.try_iter().map_err(|_| {
        bad(format!(
            "colors must be a sequence of (r, g, b); got {}",
            describe(colors)
        ))
    })?;
    let mut out = Vec::new();
    for c in all {
        let c = exactly::<3>(&c.map_err(|e| bad(e.to_string()))?, "a color", "(r, g, b)")?;
        if c.iter()
            .any(|v| !(0.0..=255.0).contains(v) || v.fract() != 0.0)
        {
            return Err(bad(format!(
                "a color is (r, g, b) of integers 0..255; got {c:?}"
            )));
        }
        out.push(c.map(|v| v as u8));
    }
    Ok(out)
}

/// The labels and colours of `n` segments: as given (one each), or numbered.
fn infos(
    n: usize,
    labels: Option<Vec<String>>,
    colors: Option<Vec<[u8; 3]>>,
) -> Result<Vec<SegmentInfo>, Error> {
    let labels = labels.unwrap_or_else(|| (1..=n).map(|k| format!("Segment {k}")).collect());
    if labels.len() != n {
        return Err(bad(format!("{} labels for {n} segment(s)", labels.len())));
    }
    let colors = match colors {
        None => vec![None; n],
        Some(c) if c.len() == n => c.into_iter().map(Some).collect(),
        Some(c) => return Err(bad(format!("{} colors for {n} segment(s)", c.len()))),
    };
    Ok(labels
        .into_iter()
        .zip(colors)
        .map(|(label, color)| SegmentInfo {
            label,
            color,
            ..SegmentInfo::default()
        })
        .collect())
}

/// The masks of `outcome` over a series of `frames` slices of `rows x cols`, as numpy.
pub(crate) fn masks_array(
    py: Python<'_>,
    outcome: &Outcome,
    (frames, rows, cols): (usize, usize, usize),
) -> PyResult<Py<PyAny>> {
    let plane = rows * cols;
    let mut all = vec![0u8; frames * plane];
    for m in &outcome.slices {
        let at = m.slice * plane;
        match all.get_mut(at..at + plane) {
            Some(values) if m.mask.len() == plane => values.copy_from_slice(&m.mask),
            _ => {
                return Err(crate::raise(
                    py,
                    Error::new(
                        medfm::ErrorKind::Internal,
                        format!("slice {}'s mask does not fit the series", m.slice),
                    ),
                ));
            }
        }
    }
    let all = Array3::from_shape_vec((frames, rows, cols), all)
        .map_err(|e| crate::raise(py, Error::new(medfm::ErrorKind::Internal, e.to_string())))?;
    Ok(all.into_pyarray(py).into_any().unbind())
}

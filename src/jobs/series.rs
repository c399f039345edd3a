//! A series as the jobs take it: its instances (each once) and its slices in the series
//! order of [`crate::dicom::series::order`].

use std::path::{Path, PathBuf};

use crate::Error;
use crate::dicom::volume::{self, Volume};
use crate::dicom::{self, DicomImage, Frame, ImageMeta, series};

/// Threads of [`Series::read_files`] at most: reading saturates a disk long before.
pub const READ_THREADS: usize = 8;

/// An image and the file it was read from.
type Located = (DicomImage, Option<PathBuf>);

/// The instances of one series and its slices in order.
pub struct Series {
    /// Every instance once (by SOPInstanceUID).
    pub images: Vec<DicomImage>,
    /// Where each image was read from (`None`: given in memory).
    pub paths: Vec<Option<PathBuf>>,
    /// The slices in series order: `(index into images, frame)`.
    pub order: Vec<(usize, u32)>,
    /// What the ordering assumed (no geometry: InstanceNumber order).
    pub warnings: Vec<String>,
}

impl Series {
    /// `images` of one series, each instance once, ordered by the series rule. An error
    /// when they are none, of several series, or not one volume in space (mixed sizes or
    /// orientations).
    pub fn new(images: Vec<(DicomImage, Option<PathBuf>)>) -> Result<Series, Error> {
        let Some((first, _)) = images.first() else {
            return Err(Error::bad_input("no DICOM images: no series"));
        };
        let uid = first.meta.series_instance_uid.clone();
        for (image, path) in &images {
            if image.meta.series_instance_uid != uid {
                return Err(Error::bad_input(format!(
                    "{} is in series {}, not in series {uid}: one job covers one series",
                    path.as_ref().map_or_else(
                        || image.meta.sop_instance_uid.clone(),
                        |p| p.display().to_string()
                    ),
                    image.meta.series_instance_uid
                )));
            }
        }
        // Each instance once, by the library's rule: a copy is not held.
        let refs: Vec<&DicomImage> = images.iter().map(|(i, _)| i).collect();
        let firsts = series::first_copies(&refs);
        let mut warnings = firsts.warnings;
        let (images, paths): (Vec<DicomImage>, Vec<Option<PathBuf>>) = images
            .into_iter()
            .enumerate()
            .filter(|(i, _)| firsts.copies.binary_search(i).is_err())
            .map(|(_, x)| x)
            .unzip();
        let refs: Vec<&DicomImage> = images.iter().collect();
        let slices = series::order(&refs)?;
        warnings.extend(slices.warnings);
        Ok(Series {
            order: slices.order,
            warnings,
            images,
            paths,
        })
    }

    /// The series `uid` from the DICOM files below `paths` (folders walked recursively;
    /// files that are not DICOM or of other series passed over). Files named first come
    /// first among equal instances.
    pub fn read(paths: &[PathBuf], uid: &str) -> Result<Series, Error> {
        let _span = tracing::info_span!("read_series").entered();
        let files = crate::fs::walk(paths)?;
        let read = Series::read_files(&files);
        let mut images = Vec::new();
        for (file, image) in files.into_iter().zip(read) {
            if let Ok(image) = image
                && image.meta.series_instance_uid == uid
            {
                images.push((image, Some(file)));
            }
        }
        if images.is_empty() {
            return Err(Error::bad_input(format!(
                "no DICOM file of series {uid} under the given paths"
            )));
        }
        Series::new(images)
    }

    /// The one series at `path`: a DICOM file (its series: that file), or a folder walked
    /// recursively, whose DICOM files must be of one series unless `uid` picks one. Files
    /// that are not readable DICOM are passed over, each noted in `warnings`; a file given
    /// by name must be readable. How a library user (Python) opens a series.
    pub fn read_path(path: &Path, uid: Option<&str>) -> Result<Series, Error> {
        let _span = tracing::info_span!("read_series").entered();
        if path.is_file() {
            let image = Series::read_file(path)?;
            if let Some(uid) = uid
                && image.meta.series_instance_uid != uid
            {
                return Err(Error::bad_input(format!(
                    "{} is in series {}, not {uid}",
                    path.display(),
                    image.meta.series_instance_uid
                )));
            }
            return Series::new(vec![(image, Some(path.to_path_buf()))]);
        }
        let files = crate::fs::walk(&[path.to_path_buf()])?;
        let read = Series::read_files(&files);
        let mut images = Vec::new();
        let mut skipped = Vec::new();
        for (file, image) in files.into_iter().zip(read) {
            match image {
                // Other series are dropped at once, not held until the pick.
                Ok(image) if uid.is_some_and(|u| u != image.meta.series_instance_uid) => {}
                Ok(image) => images.push((image, Some(file))),
                Err(e) => skipped.push(format!("skipped {e}")),
            }
        }
        Series::pick(images, uid, &path.display().to_string(), skipped)
    }

    /// The one series among `images` (read from `source`: a folder, a URL): the series
    /// `uid`, or the only series there is. `skipped` (what could not be read there, each
    /// a sentence) goes into the series' warnings, and the first of them into the error
    /// when no image is left. How [`Series::read_path`] and the fronts that retrieve a
    /// study or series over the network choose.
    pub fn pick(
        images: Vec<(DicomImage, Option<PathBuf>)>,
        uid: Option<&str>,
        source: &str,
        skipped: Vec<String>,
    ) -> Result<Series, Error> {
        let mut by_series: Vec<(String, Vec<Located>)> = Vec::new();
        for (image, file) in images {
            let series = &image.meta.series_instance_uid;
            if uid.is_some_and(|u| u != series) {
                continue;
            }
            match by_series.iter_mut().find(|(s, _)| s == series) {
                Some((_, images)) => images.push((image, file)),
                None => by_series.push((series.clone(), vec![(image, file)])),
            }
        }
        let mut series = match by_series.len() {
            0 => {
                let what = uid.map_or_else(
                    || "no DICOM image".into(),
                    |u| format!("no image of series {u}"),
                );
                let why = skipped.first().map_or_else(String::new, |s| {
                    format!(" ({} files {s}...)", skipped.len())
                });
                return Err(Error::bad_input(format!("{what} under {source}{why}")));
            }
            1 => Series::new(
                by_series
                    .pop()
                    .map(|(_, images)| images)
                    .unwrap_or_default(),
            )?,
            n => {
                let uids: Vec<&str> = by_series.iter().map(|(s, _)| s.as_str()).collect();
                return Err(Error::bad_input(format!(
                    "{source} holds {n} series ({}): name the one to read",
                    uids.join(", ")
                )));
            }
        };
        series.warnings.extend(skipped);
        Ok(series)
    }

    /// Read one DICOM file; errors name it.
    pub fn read_file(path: &Path) -> Result<DicomImage, Error> {
        let name = || path.display().to_string();
        let bytes = std::fs::read(path)
            .map_err(|e| Error::from(e).context(format!("reading {}", name())))?;
        dicom::read(&bytes).map_err(|e| Error::from(e).context(name()))
    }

    /// [`Series::read_file`] of each of `files`, the results in their order. Files are
    /// independent (read, length scan, parse), so up to [`READ_THREADS`] threads take them
    /// in turn where the platform has threads (one where it has not, as in a browser):
    /// how every front reads a folder.
    pub fn read_files(files: &[PathBuf]) -> Vec<Result<DicomImage, Error>> {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(READ_THREADS)
            .min(files.len());
        if threads <= 1 {
            return files.iter().map(|f| Series::read_file(f)).collect();
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        let take = || {
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(file) = files.get(i) else {
                    return mine;
                };
                mine.push((i, Series::read_file(file)));
            }
        };
        let mut out: Vec<Option<Result<DicomImage, Error>>> = Vec::new();
        out.resize_with(files.len(), || None);
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads).map(|_| s.spawn(take)).collect();
            for worker in workers {
                // A panicking parse loses only its thread's files: they are errors below.
                for (i, image) in worker.join().unwrap_or_default() {
                    out[i] = Some(image);
                }
            }
        });
        out.into_iter()
            .zip(files)
            .map(|(image, file)| {
                image.unwrap_or_else(|| {
                    Err(Error::new(
                        crate::ErrorKind::Internal,
                        format!("reading {} failed unexpectedly (a panic)", file.display()),
                    ))
                })
            })
            .collect()
    }

    /// The series' SeriesInstanceUID.
    pub fn uid(&self) -> &str {
        &self.images[0].meta.series_instance_uid
    }

    /// Slices in the series.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether it has no slice (never, for a series made by [`Series::new`]).
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The slice of `frame` of the instance `sop_instance_uid`, if in the series.
    pub fn slice_of(&self, sop_instance_uid: &str, frame: u32) -> Option<usize> {
        self.order.iter().position(|&(i, f)| {
            f == frame && self.images[i].meta.sop_instance_uid == sop_instance_uid
        })
    }

    /// The metadata of slice `slice`'s instance.
    pub fn meta(&self, slice: usize) -> &ImageMeta {
        &self.images[self.order[slice].0].meta
    }

    /// Every slice decoded (modality LUT applied), in order.
    pub fn frames(&self) -> Result<Vec<Frame>, Error> {
        let _span = tracing::info_span!("decode", slices = self.len()).entered();
        self.order
            .iter()
            .map(|&(i, f)| Ok(self.images[i].frame(f)?))
            .collect()
    }

    /// The vector of every slice, in order (`pipeline::embed::frame_vector`, as `medfm
    /// embed`); an error names the slice's instance and frame.
    pub fn vectors(&self, segmenter: &crate::pipeline::Segmenter) -> Result<Vec<Vec<f32>>, Error> {
        self.vectors_with(segmenter, &mut |_| Ok(()))
    }

    /// [`Series::vectors`], calling `between(done)` after each slice but the last with
    /// the number of slices done: its error stops the run and is returned (how a caller
    /// bounds a run's time between slices).
    pub fn vectors_with(
        &self,
        segmenter: &crate::pipeline::Segmenter,
        between: &mut dyn FnMut(usize) -> Result<(), Error>,
    ) -> Result<Vec<Vec<f32>>, Error> {
        let mut vectors = Vec::with_capacity(self.order.len());
        for &(i, f) in &self.order {
            if !vectors.is_empty() {
                between(vectors.len())?;
            }
            let image = &self.images[i];
            let vector =
                crate::pipeline::embed::frame_vector(segmenter, image, f).map_err(|e| {
                    Error::from(e).context(format!("frame {f} of {}", image.meta.sop_instance_uid))
                })?;
            vectors.push(vector);
        }
        Ok(vectors)
    }

    /// The voxel spacing (column, row, slice; mm) by the volume rule, when the slices have
    /// one (not a cine or an unplaced series). Reads metadata only.
    pub fn spacing(&self) -> Option<[f64; 3]> {
        let refs: Vec<&DicomImage> = self.images.iter().collect();
        let slices = series::order(&refs).ok()?;
        volume::spacing(&refs, &slices).ok().map(|(s, _)| s)
    }

    /// The series as a volume (the geometry and slice order of `medfm convert`).
    pub fn volume(&self) -> Result<Volume, Error> {
        Ok(volume::assemble(&self.images)?)
    }
}

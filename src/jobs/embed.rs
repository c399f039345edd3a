//! Embedding files (`medfm embed`, or any front that embeds what a folder holds): every
//! frame of every DICOM file, in the order [`crate::fs::walk`] gives, as an [`Index`]. A
//! file that is not DICOM, or a frame that can't be embedded, is skipped and reported; a
//! file that can't be read stops the run. The shell loads the [`Embedder`] and shows the
//! progress; the rule of what is embedded and how it is named lives here.

use std::path::{Path, PathBuf};

use crate::Error;
use crate::pipeline::embed::{self, Embedder, EntryMeta, Index};

/// One vector per frame, or one per series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Per {
    /// Every frame.
    Frame,
    /// The normalised mean of a series' frame vectors ([`embed::per_series`]).
    Series,
}

/// What [`embed_files`] reports as it goes.
#[derive(Debug)]
pub enum Progress<'a> {
    /// `file` is next.
    File(&'a Path),
    /// `file` (`frame: None`) or one of its frames was skipped, and why.
    Skipped {
        /// The file.
        file: &'a Path,
        /// The frame skipped, or `None`: the whole file (not DICOM).
        frame: Option<u32>,
        /// Why.
        error: &'a Error,
    },
    /// `file` is done.
    Done(&'a Path),
}

/// What [`embed_files`] made.
#[derive(Debug)]
pub struct Embedded {
    /// The vectors with their metadata; a file is named by [`crate::fs::relative_to`]
    /// the `roots`.
    pub index: Index,
    /// Files and frames skipped.
    pub skipped: usize,
}

/// Embed every frame of every file of `files` (found below `roots`), one vector per frame
/// or per series. An index with nothing in it is bad input naming the number skipped.
pub fn embed_files(
    embedder: &Embedder,
    files: &[PathBuf],
    roots: &[PathBuf],
    per: Per,
    on: &mut dyn FnMut(Progress),
) -> Result<Embedded, Error> {
    let mut frames: Vec<(Vec<f32>, EntryMeta)> = Vec::new();
    let mut skipped = 0usize;
    for file in files {
        on(Progress::File(file));
        let bytes = std::fs::read(file)
            .map_err(|e| Error::from(e).context(format!("reading {}", file.display())))?;
        match crate::dicom::read(&bytes) {
            Err(e) => {
                skipped += 1;
                let error = Error::from(e);
                on(Progress::Skipped {
                    file,
                    frame: None,
                    error: &error,
                });
            }
            Ok(image) => {
                let name = crate::fs::relative_to(file, roots);
                for f in 0..image.meta.frames {
                    match embedder.frame_vector(&image, f) {
                        Ok(v) => frames.push((v, EntryMeta::for_frame(&image.meta, f, &name))),
                        Err(e) => {
                            skipped += 1;
                            let error = Error::from(e);
                            on(Progress::Skipped {
                                file,
                                frame: Some(f),
                                error: &error,
                            });
                        }
                    }
                }
            }
        }
        on(Progress::Done(file));
    }
    let frames = match per {
        Per::Series => embed::per_series(frames),
        Per::Frame => frames,
    };
    let mut index = Index::default();
    for (v, m) in frames {
        index.add(v, m)?;
    }
    if index.is_empty() {
        return Err(Error::new(
            crate::ErrorKind::BadInput,
            format!("nothing could be embedded ({skipped} files or frames skipped)"),
        ));
    }
    Ok(Embedded { index, skipped })
}

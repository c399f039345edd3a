//! DICOM in: bytes → metadata + decoded frames with the modality LUT applied.
//!
//! Target-agnostic (the browser hands us bytes): Part 10 files with a 128-byte preamble,
//! or without a preamble but starting with the file meta group. Decoding goes through
//! dicom-pixeldata's pure-Rust codecs (native, deflate, RLE, JPEG baseline/extended 8-bit,
//! JPEG lossless); other transfer syntaxes get a precise "unsupported" error.

pub mod catalog;
pub mod seg;
pub mod volume;

use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use dicom_pixeldata::PixelDecoder;

/// Largest number of samples (rows x cols x samples x frames) we agree to decode.
/// 2^28 samples are 1 GiB as f32: larger files are refused before any allocation.
pub const MAX_SAMPLES: u64 = 1 << 28;

/// Errors of the DICOM layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bytes are not a DICOM Part 10 file.
    #[error("not a DICOM file: {0}")]
    NotDicom(String),
    /// The file could not be parsed.
    #[error("cannot parse the DICOM data set: {0}")]
    Parse(String),
    /// A required attribute is missing or malformed.
    #[error("attribute {tag} ({name}): {problem}")]
    Attribute {
        /// Tag as `(gggg,eeee)`.
        tag: String,
        /// Keyword.
        name: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// The pixel data cannot be decoded.
    #[error("cannot decode the pixel data (transfer syntax {transfer_syntax}): {reason}")]
    Decode {
        /// Transfer syntax UID of the file.
        transfer_syntax: String,
        /// Why.
        reason: String,
    },
    /// A frame index out of range.
    #[error("frame {frame} does not exist: the image has {frames} frame(s)")]
    Frame {
        /// Requested frame (0-based).
        frame: u32,
        /// Frames in the file.
        frames: u32,
    },
}

/// Metadata of one image instance needed to display and segment it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageMeta {
    /// Rows.
    pub rows: u32,
    /// Columns.
    pub cols: u32,
    /// Number of frames.
    pub frames: u32,
    /// Samples per pixel (1 grey, 3 colour).
    pub samples_per_pixel: u16,
    /// Modality (CT, MR, US, ...), empty if absent.
    pub modality: String,
    /// Photometric interpretation.
    pub photometric: String,
    /// First WindowCenter / WindowWidth of the file, if present.
    pub window: Option<(f64, f64)>,
    /// Transfer syntax UID.
    pub transfer_syntax: String,
    /// SOP Instance UID, empty if absent.
    pub sop_instance_uid: String,
    /// Study Instance UID, empty if absent.
    pub study_instance_uid: String,
    /// Series Instance UID, empty if absent.
    pub series_instance_uid: String,
    /// Series Description, empty if absent (no patient identifiers).
    pub series_description: String,
    /// Instance Number, if present (orders a series' instances when positions are absent).
    pub instance_number: Option<i32>,
}

/// A parsed DICOM image.
pub struct DicomImage {
    /// The metadata.
    pub meta: ImageMeta,
    obj: DefaultDicomObject,
}

/// One decoded frame: modality-LUT values, row-major, samples interleaved.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// `rows * cols * channels` values.
    pub values: Vec<f32>,
}

fn tag_name(tag: dicom_core::Tag) -> String {
    format!("({:04X},{:04X})", tag.group(), tag.element())
}

fn opt_str(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> String {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).trim().to_string())
        .unwrap_or_default()
}

fn req_int(
    obj: &DefaultDicomObject,
    tag: dicom_core::Tag,
    name: &'static str,
) -> Result<u32, Error> {
    let e = obj
        .element_opt(tag)
        .ok()
        .flatten()
        .ok_or_else(|| Error::Attribute {
            tag: tag_name(tag),
            name,
            problem: "missing".into(),
        })?;
    e.to_int::<u32>().map_err(|err| Error::Attribute {
        tag: tag_name(tag),
        name,
        problem: err.to_string(),
    })
}

/// Parse a DICOM Part 10 file from bytes.
pub fn read(bytes: &[u8]) -> Result<DicomImage, Error> {
    let body = if bytes.len() >= 132 && &bytes[128..132] == b"DICM" {
        &bytes[128..]
    } else if bytes.len() >= 4 && &bytes[..4] == b"DICM" {
        bytes
    } else {
        return Err(Error::NotDicom(
            "no `DICM` magic at byte 128 (preamble) or byte 0; is this a DICOM Part 10 file?"
                .into(),
        ));
    };
    let obj = OpenFileOptions::new()
        .from_reader(body)
        .map_err(|e| Error::Parse(e.to_string()))?;
    let rows = req_int(&obj, tags::ROWS, "Rows")?;
    let cols = req_int(&obj, tags::COLUMNS, "Columns")?;
    let frames = obj
        .element_opt(tags::NUMBER_OF_FRAMES)
        .ok()
        .flatten()
        .and_then(|e| e.to_int::<u32>().ok())
        .unwrap_or(1)
        .max(1);
    let samples_per_pixel = req_int(&obj, tags::SAMPLES_PER_PIXEL, "SamplesPerPixel")? as u16;
    if rows == 0 || cols == 0 {
        return Err(Error::Attribute {
            tag: tag_name(tags::ROWS),
            name: "Rows",
            problem: "image has zero size".into(),
        });
    }
    let samples = rows as u64 * cols as u64 * samples_per_pixel as u64 * frames as u64;
    if samples > MAX_SAMPLES {
        return Err(Error::Attribute {
            tag: tag_name(tags::ROWS),
            name: "Rows",
            problem: format!(
                "{rows}x{cols}x{samples_per_pixel}x{frames} samples exceed the limit of {MAX_SAMPLES}"
            ),
        });
    }
    let window = obj
        .element_opt(tags::WINDOW_CENTER)
        .ok()
        .flatten()
        .and_then(|c| c.to_multi_float64().ok())
        .and_then(|c| c.first().copied())
        .zip(
            obj.element_opt(tags::WINDOW_WIDTH)
                .ok()
                .flatten()
                .and_then(|w| w.to_multi_float64().ok())
                .and_then(|w| w.first().copied()),
        );
    let meta = ImageMeta {
        rows,
        cols,
        frames,
        samples_per_pixel,
        modality: opt_str(&obj, tags::MODALITY),
        photometric: opt_str(&obj, tags::PHOTOMETRIC_INTERPRETATION),
        window,
        transfer_syntax: obj
            .meta()
            .transfer_syntax()
            .trim_end_matches('\0')
            .to_string(),
        sop_instance_uid: opt_str(&obj, tags::SOP_INSTANCE_UID),
        study_instance_uid: opt_str(&obj, tags::STUDY_INSTANCE_UID),
        series_instance_uid: opt_str(&obj, tags::SERIES_INSTANCE_UID),
        series_description: opt_str(&obj, tags::SERIES_DESCRIPTION),
        instance_number: obj
            .element_opt(tags::INSTANCE_NUMBER)
            .ok()
            .flatten()
            .and_then(|e| e.to_int::<i32>().ok()),
    };
    Ok(DicomImage { meta, obj })
}

impl DicomImage {
    /// Decode one frame (0-based) with the modality LUT (rescale slope/intercept) applied.
    pub fn frame(&self, frame: u32) -> Result<Frame, Error> {
        if frame >= self.meta.frames {
            return Err(Error::Frame {
                frame,
                frames: self.meta.frames,
            });
        }
        let decode_err = |reason: String| Error::Decode {
            transfer_syntax: self.meta.transfer_syntax.clone(),
            reason,
        };
        let decoded = self
            .obj
            .decode_pixel_data_frame(frame)
            .map_err(|e| decode_err(e.to_string()))?;
        let values: Vec<f32> = decoded
            .to_vec_frame(0)
            .map_err(|e| decode_err(e.to_string()))?;
        let channels = decoded.samples_per_pixel() as usize;
        let (rows, cols) = (decoded.rows() as usize, decoded.columns() as usize);
        if values.len() != rows * cols * channels {
            return Err(decode_err(format!(
                "decoded {} values, expected {rows}x{cols}x{channels}",
                values.len()
            )));
        }
        Ok(Frame {
            rows,
            cols,
            channels,
            values,
        })
    }
}

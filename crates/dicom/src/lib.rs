//! medfm's DICOM layer: bytes in, values out; no model, no transport.
//!
//! - This root: Part 10 bytes → metadata + decoded frames with the modality LUT applied.
//!   Target-agnostic (the browser hands us bytes): files with a 128-byte preamble, or
//!   without a preamble but starting with the file meta group. Decoding goes through
//!   dicom-pixeldata's pure-Rust codecs (native, deflate, JPEG baseline/extended 8-bit,
//!   JPEG lossless, JPEG 2000/HTJ2K through openjp2), our own RLE and 12-bit JPEG decoders
//!   and, with the `jpeg-ls` feature (native builds), CharLS for JPEG-LS; other transfer
//!   syntaxes get a precise "unsupported" error.
//! - [`lut`] (display and model intensities), [`series`] (grouping and slice order),
//!   [`volume`] (series → volume, NIfTI), [`seg`] (DICOM SEG), [`catalog`] (`medfm info`).
//! - [`dicomweb`]: the DICOMweb protocol (URLs, DICOM JSON, multipart, frames); the fronts
//!   move its bytes over HTTP. [`dimse`]: DIMSE command sets and storage SOP classes.
//! - [`ErrorKind`]: the kinds of failure every medfm crate sorts its errors into.
#![warn(missing_docs)]

pub mod catalog;
mod codec;
pub mod dicomweb;
pub mod dimse;
mod error_kind;
mod jpeg12;
pub mod lut;
pub mod part10;
pub mod pixels;
mod scan;
pub mod seg;
pub mod series;
mod uid;
pub mod volume;

pub use error_kind::ErrorKind;
pub use uid::is_uid;

use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use dicom_pixeldata::{ConvertOptions, ModalityLutOption, PixelDecoder};

/// Largest number of samples (rows x cols x samples x frames) we agree to decode.
/// 2^28 samples are 1 GiB as f32: larger files are refused before any allocation.
pub const MAX_SAMPLES: u64 = 1 << 28;

/// RLE Lossless transfer syntax UID.
const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";
/// JPEG 2000 and HTJ2K transfer syntax UIDs.
const JPEG_2000: [&str; 7] = [
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.92",
    "1.2.840.10008.1.2.4.93",
    "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.4.202",
    "1.2.840.10008.1.2.4.203",
];
/// JPEG Extended (Process 2 & 4) transfer syntax UID.
const JPEG_EXTENDED: &str = "1.2.840.10008.1.2.4.51";
/// The transfer syntaxes this build decodes besides [`JPEG_2000`] (docs/dicom.md): native
/// (implicit, explicit and big-endian), deflated, RLE, JPEG baseline, extended and lossless,
/// JPEG-LS (checked by [`DicomImage::unsupported`] where the build has no decoder). A
/// decoder's failure on any other transfer syntax is [`Error::Unsupported`].
pub const DECODED: [&str; 11] = [
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.1.99",
    RLE_LOSSLESS,
    "1.2.840.10008.1.2.4.50",
    JPEG_EXTENDED,
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.81",
];

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
    /// Pixel data in an encoding this build has no decoder for (a video or other transfer
    /// syntax outside [`DECODED`], JPEG-LS without the `jpeg-ls` feature, 12-bit colour
    /// JPEG): the file itself may be fine ([`crate::ErrorKind::Unsupported`]).
    #[error("cannot decode the pixel data (transfer syntax {transfer_syntax}): {reason}")]
    Unsupported {
        /// Transfer syntax UID of the file.
        transfer_syntax: String,
        /// Why, and what to do.
        reason: String,
    },
    /// Images that do not form a volume, or a volume that cannot be written.
    #[error("volume: {0}")]
    Volume(String),
    /// Geometry that does not hold together: slices of one series in different planes,
    /// two slices at one position, a spacing that is not positive.
    #[error("geometry: {0}")]
    Geometry(String),
    /// A segmentation that cannot be written as a DICOM SEG.
    #[error("DICOM SEG: {0}")]
    Seg(String),
    /// Pixels given to be made into DICOM instances that cannot be (a wrong length, a
    /// NaN window, a bad geometry or UID).
    #[error("pixels: {0}")]
    Pixels(String),
    /// A frame index out of range.
    #[error("frame {frame} does not exist: the image has {frames} frame(s)")]
    Frame {
        /// Requested frame (0-based).
        frame: u32,
        /// Frames in the file.
        frames: u32,
    },
}

impl Error {
    /// Every DICOM error is about the input: unsupported, or bad.
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            Error::Unsupported { .. } => crate::ErrorKind::Unsupported,
            _ => crate::ErrorKind::BadInput,
        }
    }
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

/// NumberOfFrames must fit the pixel data: native data holds every frame's bytes
/// (`rows x cols x samples x BitsAllocated` bits each), encapsulated data at least one
/// fragment per frame (PS3.5 A.4). A 1x1 image claiming 2^28 frames with 2 bytes of
/// pixels would otherwise make a viewer build 2^28-entry frame lists and a volume
/// allocate gigabytes. Files without PixelData are left to the decoder's error.
fn check_frames_fit(
    obj: &DefaultDicomObject,
    rows: u32,
    cols: u32,
    samples: u16,
    frames: u32,
) -> Result<(), Error> {
    let Some(pixels) = obj.element_opt(tags::PIXEL_DATA).ok().flatten() else {
        return Ok(());
    };
    let refuse = |problem: String| Error::Attribute {
        tag: tag_name(tags::NUMBER_OF_FRAMES),
        name: "NumberOfFrames",
        problem,
    };
    if let Some(fragments) = pixels.value().fragments() {
        if frames as usize > fragments.len().max(1) {
            return Err(refuse(format!(
                "{frames} frames, but the encapsulated PixelData holds {} fragment(s) (each frame is at least one)",
                fragments.len()
            )));
        }
        return Ok(());
    }
    let Some(bytes) = pixels.value().primitive().map(|p| p.calculate_byte_len()) else {
        return Ok(());
    };
    let bits = obj
        .element_opt(tags::BITS_ALLOCATED)
        .ok()
        .flatten()
        .and_then(|e| e.to_int::<u64>().ok())
        .unwrap_or(8)
        .clamp(1, 64);
    let needed = (rows as u64)
        .saturating_mul(cols as u64)
        .saturating_mul(samples as u64)
        .saturating_mul(frames as u64)
        .saturating_mul(bits)
        .div_ceil(8);
    if (bytes as u64) < needed {
        return Err(refuse(format!(
            "{frames} frame(s) of {rows}x{cols}x{samples} samples of {bits} bits need {needed} bytes, \
             but PixelData holds {bytes}"
        )));
    }
    Ok(())
}

/// Parse a Part 10 file (with or without preamble) after the length pre-scan.
fn parse(bytes: &[u8]) -> Result<DefaultDicomObject, Error> {
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
    // Zero padding after the data set (some writers pad to a block size) is not parsed.
    let body = match scan::check_lengths(body)? {
        Some(end) => &body[..end],
        None => body,
    };
    // The preamble is gone: dicom-object must read from the magic the scan read from. (Its
    // default guesses again, and a second `DICM` 128 bytes on made it read a file meta
    // and data set the scan had never seen: a 1.3 GB value, found by the fuzzer.)
    OpenFileOptions::new()
        .read_preamble(ReadPreamble::Never)
        .from_reader(body)
        .map_err(|e| Error::Parse(e.to_string()))
}

/// The identity of a stored instance of any SOP class (image or not), as a DICOM node
/// files it: its UIDs, each checked with [`is_uid`], and what rules match on.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct InstanceIds {
    /// SOPClassUID.
    pub sop_class_uid: String,
    /// SOPInstanceUID.
    pub sop_instance_uid: String,
    /// StudyInstanceUID.
    pub study_instance_uid: String,
    /// SeriesInstanceUID.
    pub series_instance_uid: String,
    /// Transfer syntax of the file meta.
    pub transfer_syntax: String,
    /// Modality ("" when absent).
    pub modality: String,
    /// BodyPartExamined ("" when absent).
    pub body_part: String,
    /// SeriesDescription ("" when absent).
    pub series_description: String,
}

/// Parse a whole Part 10 file (every element, pixel data included, after the length
/// pre-scan) and return its identity. Refused: anything that does not parse, and a
/// missing or malformed SOP class, SOP instance, study or series UID.
pub fn identify(bytes: &[u8]) -> Result<InstanceIds, Error> {
    ids_of(&parse(bytes)?)
}

/// The identity of a parsed object, by the rule of [`identify`].
fn ids_of(obj: &DefaultDicomObject) -> Result<InstanceIds, Error> {
    let uid = |tag, name: &'static str| {
        let value = opt_str(obj, tag);
        if is_uid(&value) {
            Ok(value)
        } else {
            Err(Error::Attribute {
                tag: tag_name(tag),
                name,
                problem: if value.is_empty() {
                    "missing".into()
                } else {
                    format!("{value:?} is not a valid UID (digits and dots, at most 64)")
                },
            })
        }
    };
    Ok(InstanceIds {
        sop_class_uid: uid(tags::SOP_CLASS_UID, "SOPClassUID")?,
        sop_instance_uid: uid(tags::SOP_INSTANCE_UID, "SOPInstanceUID")?,
        study_instance_uid: uid(tags::STUDY_INSTANCE_UID, "StudyInstanceUID")?,
        series_instance_uid: uid(tags::SERIES_INSTANCE_UID, "SeriesInstanceUID")?,
        transfer_syntax: obj
            .meta()
            .transfer_syntax()
            .trim_end_matches('\0')
            .to_string(),
        modality: opt_str(obj, tags::MODALITY),
        body_part: opt_str(obj, tags::BODY_PART_EXAMINED),
        series_description: opt_str(obj, tags::SERIES_DESCRIPTION),
    })
}

/// Parse a DICOM Part 10 file from bytes.
pub fn read(bytes: &[u8]) -> Result<DicomImage, Error> {
    let _span = tracing::info_span!("read").entered();
    let obj = parse(bytes)?;
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
    check_frames_fit(&obj, rows, cols, samples_per_pixel, frames)?;
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
    /// The instance's identity ([`identify`]'s rule: its UIDs checked).
    pub fn ids(&self) -> Result<InstanceIds, Error> {
        ids_of(&self.obj)
    }

    /// Decode one frame (0-based): grey images as modality values (Rescale Slope/Intercept,
    /// Modality LUT Sequence, or the frame's own Pixel Value Transformation in Enhanced
    /// objects), colour images as RGB (YBR converted), PALETTE COLOR through its palette to
    /// RGB scaled to 0..=255 (16-bit palettes divided by 257).
    pub fn frame(&self, frame: u32) -> Result<Frame, Error> {
        let _span = tracing::info_span!("decode", frame).entered();
        let stored = self.stored_frame(frame)?;
        if self.meta.photometric == "PALETTE COLOR" {
            if stored.channels != 1 {
                return Err(self.decode_error(format!(
                    "PALETTE COLOR with {} samples per pixel",
                    stored.channels
                )));
            }
            let palette = lut::Palette::read(&self.obj)?;
            let scale = (255.0 / palette.max_output()) as f32;
            let mut values = palette.apply(&stored.values);
            values.iter_mut().for_each(|v| *v *= scale);
            return Ok(Frame {
                channels: 3,
                values,
                ..stored
            });
        }
        if stored.channels != 1 {
            return Ok(stored);
        }
        let modality = self.modality_lut(frame)?;
        let mut stored = stored;
        self.mask_high_bits(&mut stored.values);
        if modality != lut::ModalityLut::IDENTITY {
            for v in &mut stored.values {
                *v = modality.apply(*v as f64) as f32;
            }
        }
        Ok(stored)
    }

    /// Keep only the BitsStored low bits of grey stored values (up to 16 bits allocated),
    /// sign-extended when Pixel Representation is 1: bits above them may hold overlays or
    /// garbage (PS3.5 8.1.1).
    fn mask_high_bits(&self, values: &mut [f32]) {
        let allocated = self.int(tags::BITS_ALLOCATED).unwrap_or(16);
        let stored = self.int(tags::BITS_STORED).unwrap_or(allocated);
        if !(2..=16).contains(&allocated) || !(1..allocated).contains(&stored) {
            return;
        }
        let signed = self.int(tags::PIXEL_REPRESENTATION) == Some(1);
        let mask = (1i64 << stored) - 1;
        let shift = 64 - stored;
        for v in values {
            let bits = (*v as i64) & mask;
            *v = if signed {
                ((bits << shift) >> shift) as f32
            } else {
                bits as f32
            };
        }
    }

    /// The modality LUT of frame `frame` (see [`lut::ModalityLut::read`]).
    pub fn modality_lut(&self, frame: u32) -> Result<lut::ModalityLut, Error> {
        lut::ModalityLut::read(&self.obj, frame)
    }

    /// The VOI choices of frame `frame` in the file's order (windows with their function
    /// and explanation, then VOI LUT tables), and why any window was skipped. See
    /// [`lut::Voi::read`].
    pub fn vois(&self, frame: u32) -> Result<(Vec<lut::Voi>, Vec<String>), Error> {
        lut::Voi::read(&self.obj, frame)
    }

    /// Decode one frame to stored values (grey, palette indices) or RGB (colour), before
    /// any LUT.
    fn stored_frame(&self, frame: u32) -> Result<Frame, Error> {
        if frame >= self.meta.frames {
            return Err(Error::Frame {
                frame,
                frames: self.meta.frames,
            });
        }
        if let Some(reason) = self.unsupported() {
            return Err(self.unsupported_error(reason));
        }
        if self.meta.transfer_syntax == RLE_LOSSLESS {
            // Our own RLE decoder: dicom-pixeldata 0.10's panics on truncated segments.
            return self.rle_frame(frame);
        }
        if self.meta.transfer_syntax == JPEG_EXTENDED
            && self.int(tags::BITS_STORED).unwrap_or(8) > 8
        {
            // jpeg-decoder reads 8-bit JPEG only: 12-bit grey through our decoder.
            return self.jpeg12_frame(frame);
        }
        if JPEG_2000.contains(&self.meta.transfer_syntax.as_str()) {
            self.check_j2k_size(frame)?;
        }
        // Stored values: the modality LUT is ours (dicom-pixeldata applies the first
        // frame's rescale to every frame of a singly decoded Enhanced frame).
        let options = ConvertOptions::new().with_modality_lut(ModalityLutOption::None);
        let decoded = self
            .obj
            .decode_pixel_data_frame(frame)
            .map_err(|e| e.to_string())
            .and_then(|d| {
                d.to_vec_frame_with_options::<f32>(0, &options)
                    .map(|v| (d, v))
                    .map_err(|e| e.to_string())
            });
        let (decoded, values) = match decoded {
            Ok(dv) => dv,
            Err(e) => {
                return self
                    .native_frame(frame)
                    .or_else(|| self.planar_frame(frame))
                    .unwrap_or_else(|| Err(self.decoder_failed(e)));
            }
        };
        let channels = decoded.samples_per_pixel() as usize;
        let (rows, cols) = (decoded.rows() as usize, decoded.columns() as usize);
        if values.len() != rows * cols * channels {
            return Err(self.decode_error(format!(
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

    /// A decoding error of this image, naming its transfer syntax.
    fn decode_error(&self, reason: String) -> Error {
        Error::Decode {
            transfer_syntax: self.meta.transfer_syntax.clone(),
            reason,
        }
    }

    /// An encoding of this image that this build does not decode ([`Error::Unsupported`]).
    pub(crate) fn unsupported_error(&self, reason: String) -> Error {
        Error::Unsupported {
            transfer_syntax: self.meta.transfer_syntax.clone(),
            reason,
        }
    }

    /// The decoders' failure `reason`: bad data under a transfer syntax this build decodes
    /// ([`DECODED`], [`JPEG_2000`]), else an unsupported one, named with what is decoded.
    fn decoder_failed(&self, reason: String) -> Error {
        let ts = self.meta.transfer_syntax.as_str();
        if DECODED.contains(&ts) || JPEG_2000.contains(&ts) {
            return self.decode_error(reason);
        }
        self.unsupported_error(format!(
            "{reason}: medfm decodes native (uncompressed), deflated, RLE, JPEG (baseline, \
             extended, lossless), JPEG-LS, JPEG 2000 and HTJ2K pixel data; convert the file \
             to one of them first (e.g. frames exported as images)"
        ))
    }

    fn int(&self, tag: dicom_core::Tag) -> Option<i64> {
        self.obj
            .element_opt(tag)
            .ok()
            .flatten()
            .and_then(|e| e.to_int::<i64>().ok())
    }

    /// Encodings no decoder of this build handles, with a precise reason (instead of the
    /// codec's generic failure).
    fn unsupported(&self) -> Option<String> {
        let ts = self.meta.transfer_syntax.as_str();
        match ts {
            "1.2.840.10008.1.2.4.80" | "1.2.840.10008.1.2.4.81" if !cfg!(feature = "jpeg-ls") => {
                Some(
                    "JPEG-LS is not supported in this build (the browser build has no \
                     JPEG-LS decoder: CharLS is C++; the native build has it). Convert the \
                     file first, e.g. with dcmtk `dcmdjpls in.dcm out.dcm`"
                        .into(),
                )
            }
            _ => None,
        }
    }
}

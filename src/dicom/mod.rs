//! DICOM in: bytes → metadata + decoded frames with the modality LUT applied.
//!
//! Target-agnostic (the browser hands us bytes): Part 10 files with a 128-byte preamble,
//! or without a preamble but starting with the file meta group. Decoding goes through
//! dicom-pixeldata's pure-Rust codecs (native, deflate, JPEG baseline/extended 8-bit,
//! JPEG lossless, JPEG 2000/HTJ2K through openjp2), our own RLE and 12-bit JPEG decoders
//! and, with the `jpeg-ls` feature (native builds), CharLS for JPEG-LS; other transfer
//! syntaxes get a precise "unsupported" error.

pub mod catalog;
mod jpeg12;
pub mod lut;
mod scan;
pub mod seg;
pub mod volume;

use dicom_dictionary_std::tags;
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

/// DICOM RLE (PS3.5 Annex G) PackBits decoding of one segment into exactly `n` bytes;
/// `None` if the segment ends early (a truncated or corrupt file).
fn unpack_bits(segment: &[u8], n: usize) -> Option<Vec<u8>> {
    // A run of 2 bytes gives at most 128: a segment cannot fill more than 64 times its
    // length, so nothing larger than that is ever reserved.
    if n > segment.len().saturating_mul(64) {
        return None;
    }
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    while out.len() < n {
        let h = *segment.get(i)? as i8;
        i += 1;
        if h >= 0 {
            let len = h as usize + 1;
            out.extend_from_slice(segment.get(i..i + len)?);
            i += len;
        } else if h != -128 {
            let b = *segment.get(i)?;
            i += 1;
            out.extend(std::iter::repeat_n(b, (1 - h as isize) as usize));
        }
    }
    out.truncate(n);
    Some(out)
}

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
    /// Images that do not form a volume, or a volume that cannot be written.
    #[error("volume: {0}")]
    Volume(String),
    /// A segmentation that cannot be written as a DICOM SEG.
    #[error("DICOM SEG: {0}")]
    Seg(String),
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
    scan::check_lengths(body)?;
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
    /// Decode one frame (0-based): grey images as modality values (Rescale Slope/Intercept,
    /// Modality LUT Sequence, or the frame's own Pixel Value Transformation in Enhanced
    /// objects), colour images as RGB (YBR converted), PALETTE COLOR through its palette to
    /// RGB scaled to 0..=255 (16-bit palettes divided by 257).
    pub fn frame(&self, frame: u32) -> Result<Frame, Error> {
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
            return Err(self.decode_error(reason));
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
                    .unwrap_or_else(|| Err(self.decode_error(e)));
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

    /// The compressed bytes of one frame of encapsulated pixel data: one fragment per
    /// frame, all fragments for a single frame, else split by the Basic Offset Table.
    fn frame_bytes(&self, frame: u32) -> Result<Vec<u8>, Error> {
        let element = self
            .obj
            .element_opt(tags::PIXEL_DATA)
            .ok()
            .flatten()
            .ok_or_else(|| self.decode_error("no PixelData".into()))?;
        let fragments = element
            .value()
            .fragments()
            .ok_or_else(|| self.decode_error("PixelData is not encapsulated".into()))?;
        let frames = self.meta.frames as usize;
        if frames == 1 {
            return Ok(fragments.concat());
        }
        if fragments.len() == frames {
            return Ok(fragments[frame as usize].clone());
        }
        // Offsets of each frame's first fragment, from the first fragment's first byte;
        // every fragment is preceded by an 8-byte item header.
        let table = element.value().offset_table().unwrap_or_default();
        if table.len() != frames {
            return Err(self.decode_error(format!(
                "{} fragments for {frames} frames and no usable Basic Offset Table",
                fragments.len()
            )));
        }
        let (start, end) = (
            table[frame as usize] as u64,
            table
                .get(frame as usize + 1)
                .map_or(u64::MAX, |&e| e as u64),
        );
        let mut at = 0u64;
        let mut out = Vec::new();
        for f in fragments {
            if at >= start && at < end {
                out.extend_from_slice(f);
            }
            at += 8 + f.len() as u64;
        }
        if out.is_empty() {
            return Err(self.decode_error(format!(
                "the Basic Offset Table points frame {frame} outside the fragments"
            )));
        }
        Ok(out)
    }

    /// The JPEG 2000 codestream's image and component sizes (SIZ marker) must match the
    /// DICOM image: dicom-transfer-syntax-registry 0.10's adapter writes every decoded
    /// sample into a buffer sized from Rows/Columns/SamplesPerPixel and panics on an
    /// index out of range when the codestream is larger (found by the fuzzer).
    fn check_j2k_size(&self, frame: u32) -> Result<(), Error> {
        let bytes = self.frame_bytes(frame)?;
        let siz = bytes
            .windows(4)
            .take(1 << 16)
            .position(|w| w == [0xFF, 0x4F, 0xFF, 0x51])
            .and_then(|at| bytes.get(at + 4..))
            .ok_or_else(|| {
                self.decode_error("no JPEG 2000 codestream header (SOC + SIZ) in the frame".into())
            })?;
        let u32_at = |i: usize| {
            siz.get(i..i + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as u64)
        };
        let short = || self.decode_error("JPEG 2000 SIZ marker truncated".into());
        // Lsiz(2) Rsiz(2) Xsiz Ysiz XOsiz YOsiz XTsiz YTsiz XTOsiz YTOsiz (4 each) Csiz(2)
        let (x, y, xo, yo) = (
            u32_at(4).ok_or_else(short)?,
            u32_at(8).ok_or_else(short)?,
            u32_at(12).ok_or_else(short)?,
            u32_at(16).ok_or_else(short)?,
        );
        let components = siz
            .get(36..38)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
            .ok_or_else(short)?;
        let (w, h) = (x.saturating_sub(xo), y.saturating_sub(yo));
        let (rows, cols) = (self.meta.rows as u64, self.meta.cols as u64);
        let spp = self.meta.samples_per_pixel as usize;
        if (w, h) != (cols, rows) || components == 0 || components > spp {
            return Err(self.decode_error(format!(
                "the JPEG 2000 codestream is {w}x{h} with {components} component(s), the DICOM \
                 image {cols}x{rows} with {spp} sample(s) per pixel"
            )));
        }
        Ok(())
    }

    /// JPEG Extended with more than 8 bits stored (grey): [`jpeg12`].
    fn jpeg12_frame(&self, frame: u32) -> Result<Frame, Error> {
        if self.meta.samples_per_pixel != 1 {
            return Err(self.decode_error(format!(
                "12-bit JPEG with {} samples per pixel is not supported (grey only)",
                self.meta.samples_per_pixel
            )));
        }
        let bytes = self.frame_bytes(frame)?;
        let (rows, cols) = (self.meta.rows as usize, self.meta.cols as usize);
        let d = jpeg12::decode(&bytes, rows * cols)
            .map_err(|e| self.decode_error(format!("12-bit JPEG: {e}")))?;
        if (d.rows, d.cols) != (rows, cols) {
            return Err(self.decode_error(format!(
                "the JPEG frame is {}x{}, the DICOM image {cols}x{rows}",
                d.cols, d.rows
            )));
        }
        let signed = self.int(tags::PIXEL_REPRESENTATION) == Some(1);
        let half = 1i32 << (d.precision - 1);
        Ok(Frame {
            rows,
            cols,
            channels: 1,
            values: d
                .samples
                .into_iter()
                .map(|v| {
                    // Signed pixel data is coded as its two's complement bit pattern.
                    let v = v as i32;
                    (if signed && v >= half { v - 2 * half } else { v }) as f32
                })
                .collect(),
        })
    }

    /// RLE Lossless (PS3.5 Annex G): one fragment per frame, a 64-byte header of segment
    /// offsets, one PackBits segment per byte plane (most significant first) per sample.
    /// 8, 16 or 32 bits, 1 or 3 samples; signed values sign-extended from BitsStored
    /// (stored values: the caller applies the LUTs). Every offset and length is checked (no panic, no over-read).
    #[allow(clippy::needless_range_loop)] // `p` indexes every plane, not one slice
    fn rle_frame(&self, frame: u32) -> Result<Frame, Error> {
        let bits = self.int(tags::BITS_ALLOCATED).unwrap_or(0);
        if !matches!(bits, 8 | 16 | 32) {
            return Err(self.decode_error(format!(
                "RLE with BitsAllocated {bits} (8, 16 or 32 supported)"
            )));
        }
        let bytes_per = bits as usize / 8;
        let (rows, cols) = (self.meta.rows as usize, self.meta.cols as usize);
        let spp = self.meta.samples_per_pixel as usize;
        let n = rows * cols;
        // One fragment per frame (PS3.5 A.4.2).
        let fragment = &self.frame_bytes(frame)?;
        let word = |i: usize| {
            fragment
                .get(4 * i..4 * i + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        };
        let segments = word(0).ok_or_else(|| self.decode_error("RLE header truncated".into()))?;
        if segments != spp * bytes_per || segments > 15 {
            return Err(self.decode_error(format!(
                "RLE header declares {segments} segments; {spp} sample(s) of {bits} bits need {}",
                spp * bytes_per
            )));
        }
        let mut planes = Vec::with_capacity(segments);
        for s in 0..segments {
            let start =
                word(1 + s).ok_or_else(|| self.decode_error("RLE header truncated".into()))?;
            let end = if s + 1 < segments {
                word(2 + s).ok_or_else(|| self.decode_error("RLE header truncated".into()))?
            } else {
                fragment.len()
            };
            let segment = fragment
                .get(start..end.max(start).min(fragment.len()))
                .ok_or_else(|| {
                    self.decode_error(format!(
                        "RLE segment {s} offset {start} is outside the {}-byte fragment",
                        fragment.len()
                    ))
                })?;
            planes.push(unpack_bits(segment, n).ok_or_else(|| {
                self.decode_error(format!(
                    "RLE segment {s} ends before {n} pixels (truncated or corrupt)"
                ))
            })?);
        }
        let signed = self.int(tags::PIXEL_REPRESENTATION) == Some(1);
        let stored = self.int(tags::BITS_STORED).unwrap_or(bits).clamp(1, bits) as u32;
        let mut values = Vec::with_capacity(n * spp);
        for p in 0..n {
            for s in 0..spp {
                let mut raw: u32 = 0;
                for b in 0..bytes_per {
                    raw = (raw << 8) | planes[s * bytes_per + b][p] as u32;
                }
                let v = if signed && stored < 32 {
                    let shift = 32 - stored;
                    (((raw << shift) as i32) >> shift) as f64
                } else if signed {
                    raw as i32 as f64
                } else {
                    raw as f64
                };
                values.push(v as f32);
            }
            if spp == 3 && self.meta.photometric == "YBR_FULL" {
                // PS3.3 C.7.6.3.1.2, full range, to RGB as the other decoders return.
                let i = values.len() - 3;
                let (y, cb, cr) = (values[i], values[i + 1] - 128.0, values[i + 2] - 128.0);
                values[i] = (y + 1.402 * cr).clamp(0.0, 255.0);
                values[i + 1] = (y - 0.344_136 * cb - 0.714_136 * cr).clamp(0.0, 255.0);
                values[i + 2] = (y + 1.772 * cb).clamp(0.0, 255.0);
            }
        }
        Ok(Frame {
            rows,
            cols,
            channels: spp,
            values,
        })
    }

    /// 8-bit colour-by-plane pixel data (Planar Configuration 1: all red, then all green,
    /// then all blue), which dicom-pixeldata 0.10 decodes but refuses to convert:
    /// interleaved here. `None` for anything else.
    fn planar_frame(&self, frame: u32) -> Option<Result<Frame, Error>> {
        if self.int(tags::PLANAR_CONFIGURATION) != Some(1)
            || self.meta.samples_per_pixel != 3
            || self.int(tags::BITS_ALLOCATED) != Some(8)
        {
            return None;
        }
        if self.meta.photometric != "RGB" {
            return Some(Err(self.decode_error(format!(
                "Planar Configuration 1 with {} is not supported (RGB only)",
                self.meta.photometric
            ))));
        }
        let decoded = match self.obj.decode_pixel_data_frame(frame) {
            Ok(d) => d,
            Err(e) => return Some(Err(self.decode_error(e.to_string()))),
        };
        let (rows, cols) = (self.meta.rows as usize, self.meta.cols as usize);
        let n = rows * cols;
        let Some(planes) = decoded.data().get(..3 * n) else {
            return Some(Err(self.decode_error(format!(
                "{} bytes of pixel data, too few for {rows}x{cols} RGB by plane",
                decoded.data().len()
            ))));
        };
        let values = (0..n)
            .flat_map(|i| (0..3).map(move |c| planes[c * n + i] as f32))
            .collect();
        Some(Ok(Frame {
            rows,
            cols,
            channels: 3,
            values,
        }))
    }

    /// Uncompressed little-endian pixel data with 1 or 32 bits allocated (bit-packed
    /// segmentations and masks, RT Dose grids), which dicom-pixeldata 0.10 refuses:
    /// unpacked here to stored values. `None` for anything else.
    fn native_frame(&self, frame: u32) -> Option<Result<Frame, Error>> {
        const NATIVE_LE: [&str; 3] = [
            "1.2.840.10008.1.2",
            "1.2.840.10008.1.2.1",
            "1.2.840.10008.1.2.1.99",
        ];
        let bits = self.int(tags::BITS_ALLOCATED)?;
        if !NATIVE_LE.contains(&self.meta.transfer_syntax.as_str()) || !(bits == 1 || bits == 32) {
            return None;
        }
        let (rows, cols) = (self.meta.rows as usize, self.meta.cols as usize);
        let channels = self.meta.samples_per_pixel as usize;
        let n = rows * cols * channels;
        let bytes = match self
            .obj
            .element_opt(tags::PIXEL_DATA)
            .ok()
            .flatten()
            .and_then(|e| e.to_bytes().ok())
        {
            Some(b) => b,
            None => return Some(Err(self.decode_error("no readable PixelData".into()))),
        };
        let signed = self.int(tags::PIXEL_REPRESENTATION) == Some(1);
        let raw: Vec<f64> = if bits == 1 {
            // Frames follow each other bit by bit; bit 0 of a byte is the first pixel.
            let first = frame as usize * n;
            if (first + n).div_ceil(8) > bytes.len() {
                return Some(Err(self.decode_error(format!(
                    "PixelData holds {} bytes, too few for frame {frame} of {rows}x{cols} 1-bit pixels",
                    bytes.len()
                ))));
            }
            (first..first + n)
                .map(|i| ((bytes[i / 8] >> (i % 8)) & 1) as f64)
                .collect()
        } else {
            let start = frame as usize * n * 4;
            let Some(chunk) = bytes.get(start..start + n * 4) else {
                return Some(Err(self.decode_error(format!(
                    "PixelData holds {} bytes, too few for frame {frame} of {rows}x{cols}x{channels} 32-bit samples",
                    bytes.len()
                ))));
            };
            chunk
                .chunks_exact(4)
                .map(|c| {
                    let b = [c[0], c[1], c[2], c[3]];
                    if signed {
                        i32::from_le_bytes(b) as f64
                    } else {
                        u32::from_le_bytes(b) as f64
                    }
                })
                .collect()
        };
        Some(Ok(Frame {
            rows,
            cols,
            channels,
            values: raw.into_iter().map(|v| v as f32).collect(),
        }))
    }
}

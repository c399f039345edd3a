//! The decoding paths medfm owns where dicom-pixeldata 0.10 does not serve (or panics):
//! RLE Lossless (its decoder panics on truncated segments), 12-bit JPEG (jpeg-decoder is
//! 8-bit only; ours in [`super::jpeg12`]), 1- and 32-bit native data, planar colour, and the
//! JPEG 2000 size check that keeps dicom-pixeldata's adapter from panicking. Methods of
//! [`DicomImage`]; [`DicomImage::frame`] chooses among them.

use dicom_dictionary_std::tags;
use dicom_pixeldata::PixelDecoder;

use super::{DicomImage, Error, Frame, jpeg12};

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

impl DicomImage {
    /// The compressed bytes of one frame of encapsulated pixel data: one fragment per
    /// frame, all fragments for a single frame, else split by the Basic Offset Table.
    pub(super) fn frame_bytes(&self, frame: u32) -> Result<Vec<u8>, Error> {
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
    pub(super) fn check_j2k_size(&self, frame: u32) -> Result<(), Error> {
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
    pub(super) fn jpeg12_frame(&self, frame: u32) -> Result<Frame, Error> {
        if self.meta.samples_per_pixel != 1 {
            return Err(self.unsupported_error(format!(
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
    pub(super) fn rle_frame(&self, frame: u32) -> Result<Frame, Error> {
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
    pub(super) fn planar_frame(&self, frame: u32) -> Option<Result<Frame, Error>> {
        if self.int(tags::PLANAR_CONFIGURATION) != Some(1)
            || self.meta.samples_per_pixel != 3
            || self.int(tags::BITS_ALLOCATED) != Some(8)
        {
            return None;
        }
        if self.meta.photometric != "RGB" {
            return Some(Err(self.unsupported_error(format!(
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
    pub(super) fn native_frame(&self, frame: u32) -> Option<Result<Frame, Error>> {
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

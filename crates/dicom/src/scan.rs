//! A pre-scan of a Part 10 file's element lengths, before dicom-rs parses it.
//!
//! dicom-parser 0.10 reserves and zero-fills a value's declared length before reading
//! it: a 700-byte file declaring a 3.7 GB value makes it commit 3.7 GB (found by the
//! fuzzer; `bad/SC_rgb_jpeg.dcm` declares 1.2 GB). This scan walks the elements the way
//! dicom-parser reads them (file meta in explicit VR little endian, then the data set in
//! the transfer syntax's encoding; sequences and items are walked into, undefined-length
//! elements are sequences, encapsulated pixel data is a run of fragments) and refuses any
//! value longer than the bytes left in the file. It allocates nothing.
//!
//! It refuses nothing else: where it loses track of the structure it stops and leaves the
//! verdict to the parser. A deflated data set is inflated here first (at most
//! [`MAX_INFLATED`] bytes) and scanned the same way.

use dicom_core::dictionary::DataDictionary;
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;

use super::Error;

const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
const EXPLICIT_BE: &str = "1.2.840.10008.1.2.2";
const DEFLATED: &str = "1.2.840.10008.1.2.1.99";
const UNDEFINED: u32 = 0xFFFF_FFFF;
/// Largest inflated data set accepted: the pixel limit ([`super::MAX_SAMPLES`] 32-bit
/// samples) plus room for the attributes.
pub(crate) const MAX_INFLATED: u64 = super::MAX_SAMPLES * 4 + (1 << 24);

#[derive(Clone, Copy, PartialEq)]
enum Encoding {
    ExplicitLe,
    ImplicitLe,
    ExplicitBe,
}

/// Check `body` (a Part 10 file from its `DICM` magic on). Returns where zero padding
/// after the data set starts, if the file has some: a run of zero bytes to the end of
/// the file where the next element would start (it would read as tag (0000,0000), which
/// no data set holds; some writers pad files to a block size, and pydicom and dcmtk
/// read such files). The caller parses the bytes before it.
pub(crate) fn check_lengths(body: &[u8]) -> Result<Option<usize>, Error> {
    let mut pos = 4; // after "DICM"
    let mut transfer_syntax = None;
    // File meta group, as dicom-object reads it: explicit VR little endian, a first
    // (0002,0000) UL of 4 bytes giving the group length, then elements (of any group)
    // until that many bytes are read; the data set starts where that stops.
    let Some(first) = header(body, pos, Encoding::ExplicitLe) else {
        return Ok(None);
    };
    if first.tag != Tag(0x0002, 0x0000) || first.len != 4 {
        return Ok(None); // dicom-object refuses it
    }
    let group_length = u32::from_le_bytes(check(body, &first)?.try_into().expect("4 bytes"));
    pos = first.value_at + 4;
    let mut read = 0u32;
    while read < group_length {
        let Some(h) = header(body, pos, Encoding::ExplicitLe) else {
            return Ok(None);
        };
        if h.len == UNDEFINED {
            return Ok(None); // dicom-object refuses it
        }
        let value = check(body, &h)?;
        if h.tag == Tag(0x0002, 0x0010) {
            transfer_syntax = std::str::from_utf8(value)
                .ok()
                .map(|s| s.trim_end_matches(['\0', ' ']).to_string());
        }
        read = read
            .saturating_add((h.value_at - pos) as u32)
            .saturating_add(h.len);
        pos = h.value_at + h.len as usize;
    }
    let encoding = match transfer_syntax.as_deref() {
        None => return Ok(None),
        Some(DEFLATED) => {
            use std::io::Read;
            let mut inflated = Vec::new();
            let stream = flate2::read::DeflateDecoder::new(body.get(pos..).unwrap_or_default());
            // A corrupt stream stops the scan; the parser reports it.
            let _ = stream.take(MAX_INFLATED + 1).read_to_end(&mut inflated);
            if inflated.len() as u64 > MAX_INFLATED {
                return Err(Error::Parse(format!(
                    "the deflated data set inflates past {MAX_INFLATED} bytes; refused"
                )));
            }
            return scan_data_set(&inflated, 0, Encoding::ExplicitLe).map(|_| None);
        }
        Some(IMPLICIT_LE) => Encoding::ImplicitLe,
        Some(EXPLICIT_BE) => Encoding::ExplicitBe,
        Some(_) => Encoding::ExplicitLe,
    };
    scan_data_set(body, pos, encoding)
}

/// Walk the data set elements of `body` from `pos` (see the module documentation);
/// returns where trailing zero padding starts, if any.
fn scan_data_set(body: &[u8], mut pos: usize, encoding: Encoding) -> Result<Option<usize>, Error> {
    let mut in_pixel_sequence = false;
    loop {
        if pos < body.len() && body[pos..].iter().all(|&b| b == 0) {
            return Ok(Some(pos));
        }
        let Some(h) = header(body, pos, encoding) else {
            break;
        };
        if h.tag.group() == 0xFFFE {
            // Items and delimiters: an item's content is a data set (walked into), except
            // in encapsulated pixel data, where it is a fragment (a value).
            match (h.tag.element(), in_pixel_sequence) {
                (0xE000, true) if h.len != UNDEFINED => {
                    check(body, &h)?;
                    pos = h.value_at + h.len as usize;
                }
                // Delimiters have length 0 (PS3.5 7.5): where one declares more,
                // dicom-parser may read that many bytes as a value (it allocated 1.2 GB
                // for a stray sequence delimiter, found by the fuzzer), so the walk and
                // the parser would part ways. Refused.
                (0xE00D | 0xE0DD, _) if h.len != 0 => {
                    return Err(Error::Parse(format!(
                        "delimitation item ({:04X},{:04X}) declares {} bytes (0 required); refused before allocating",
                        h.tag.group(),
                        h.tag.element(),
                        h.len
                    )));
                }
                (0xE0DD, true) => {
                    in_pixel_sequence = false;
                    pos = h.value_at;
                }
                (0xE000 | 0xE00D | 0xE0DD, _) => pos = h.value_at,
                // Any other (FFFE,xxxx) is an ordinary UN element to dicom-parser: a
                // value, or a sequence when its length is undefined.
                _ if h.len == UNDEFINED => pos = h.value_at,
                _ => {
                    check(body, &h)?;
                    pos = h.value_at + h.len as usize;
                }
            }
            continue;
        }
        if h.len == UNDEFINED {
            // A sequence (whatever its VR) or encapsulated pixel data.
            in_pixel_sequence = h.tag == Tag(0x7FE0, 0x0010);
            pos = h.value_at;
            continue;
        }
        if h.vr == Some(VR::SQ) {
            pos = h.value_at;
            continue;
        }
        // dicom-parser reads whole numbers of 2-, 4- or 8-byte values and consumes only
        // those bytes (a 2-byte SL value is read as no value, and the next header starts
        // 2 bytes early): follow it.
        let size = match h.vr {
            Some(VR::US | VR::SS | VR::OW) => 2,
            Some(VR::UL | VR::SL | VR::FL | VR::OF | VR::OL | VR::AT) => 4,
            Some(VR::FD | VR::OD | VR::SV | VR::UV | VR::OV) => 8,
            _ => 1,
        };
        let h = Header {
            len: h.len - h.len % size,
            ..h
        };
        check(body, &h)?;
        pos = h.value_at + h.len as usize;
    }
    Ok(None)
}

struct Header {
    tag: Tag,
    /// The VR as dicom-encoding decodes it (explicit, or the dictionary's in implicit VR);
    /// `None` for items and delimiters.
    vr: Option<VR>,
    len: u32,
    value_at: usize,
}

/// The element header at `pos`, `None` at the end of the input or where the bytes do not
/// make one (the scan stops there).
fn header(b: &[u8], pos: usize, enc: Encoding) -> Option<Header> {
    let le = enc != Encoding::ExplicitBe;
    let u16_at = |p: usize| {
        let s = b.get(p..p + 2)?;
        Some(if le {
            u16::from_le_bytes([s[0], s[1]])
        } else {
            u16::from_be_bytes([s[0], s[1]])
        })
    };
    let u32_at = |p: usize| {
        let s = b.get(p..p + 4)?;
        Some(if le {
            u32::from_le_bytes([s[0], s[1], s[2], s[3]])
        } else {
            u32::from_be_bytes([s[0], s[1], s[2], s[3]])
        })
    };
    let tag = Tag(u16_at(pos)?, u16_at(pos + 2)?);
    if tag.group() == 0xFFFE {
        return Some(Header {
            tag,
            vr: None,
            len: u32_at(pos + 4)?,
            value_at: pos + 8,
        });
    }
    if enc == Encoding::ImplicitLe {
        // As dicom-encoding's implicit VR decoder: OW for pixel and overlay data, else the
        // dictionary's VR (relaxed), else UN.
        let vr = if tag == Tag(0x7FE0, 0x0010) || (tag.0 >> 8 == 0x60 && tag.1 == 0x3000) {
            VR::OW
        } else {
            StandardDataDictionary
                .by_tag(tag)
                .map(|e| e.vr.relaxed())
                .unwrap_or(VR::UN)
        };
        return Some(Header {
            tag,
            vr: Some(vr),
            len: u32_at(pos + 4)?,
            value_at: pos + 8,
        });
    }
    let vr_bytes = b.get(pos + 4..pos + 6)?;
    // As dicom-encoding: an unknown VR is read as UN; the 21 VRs of PS3.5 Table 7.1-2 have
    // a 16-bit length, every other one 2 reserved bytes and a 32-bit length.
    let vr = VR::from_binary([vr_bytes[0], vr_bytes[1]]).unwrap_or(VR::UN);
    let long = !matches!(
        vr,
        VR::AE
            | VR::AS
            | VR::AT
            | VR::CS
            | VR::DA
            | VR::DS
            | VR::DT
            | VR::FL
            | VR::FD
            | VR::IS
            | VR::LO
            | VR::LT
            | VR::PN
            | VR::SH
            | VR::SL
            | VR::SS
            | VR::ST
            | VR::TM
            | VR::UI
            | VR::UL
            | VR::US
    );
    Some(if long {
        Header {
            tag,
            vr: Some(vr),
            len: u32_at(pos + 8)?,
            value_at: pos + 12,
        }
    } else {
        Header {
            tag,
            vr: Some(vr),
            len: u16_at(pos + 6)? as u32,
            value_at: pos + 8,
        }
    })
}

/// The value of `h`, or the error if it runs past the end of the input.
fn check<'a>(b: &'a [u8], h: &Header) -> Result<&'a [u8], Error> {
    let left = b.len().saturating_sub(h.value_at);
    b.get(h.value_at..h.value_at.saturating_add(h.len as usize))
        .ok_or_else(|| {
            Error::Parse(format!(
                "element ({:04X},{:04X}) declares {} bytes but only {left} follow it \
                 (truncated or corrupt); refused before allocating",
                h.tag.group(),
                h.tag.element(),
                h.len
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(tag: (u16, u16), vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend(tag.0.to_le_bytes());
        v.extend(tag.1.to_le_bytes());
        v.extend(vr);
        v.extend((value.len() as u16).to_le_bytes());
        v.extend(value);
        v
    }

    #[test]
    fn a_value_longer_than_the_file_is_refused() {
        let mut f = b"DICM".to_vec();
        let ts = el((0x0002, 0x0010), b"UI", b"1.2.840.10008.1.2.1\0");
        f.extend(el(
            (0x0002, 0x0000),
            b"UL",
            &(ts.len() as u32).to_le_bytes(),
        ));
        f.extend(ts);
        f.extend(el((0x0010, 0x0010), b"PN", b"A^B "));
        assert!(check_lengths(&f).is_ok());
        // (7FE0,0010) OB declaring 3.7 GB.
        f.extend([0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0]);
        f.extend(0xE000_0000u32.to_le_bytes());
        f.extend([0u8; 16]);
        let err = check_lengths(&f).unwrap_err().to_string();
        assert!(
            err.contains("(7FE0,0010) declares 3758096384 bytes"),
            "{err}"
        );
    }
}

//! PALETTE COLOR (PS3.3 C.7.9): the red, green and blue tables, plain or segmented
//! (C.7.9.2), each checked against its descriptor when read.

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::{Error, Lut, bad, is_signed, signed_first};

/// The red, green and blue tables of a PALETTE COLOR image.
#[derive(Debug, Clone, PartialEq)]
pub struct Palette {
    /// Red, green, blue.
    pub tables: [Lut; 3],
}

impl Palette {
    /// Read the Palette Color Lookup Table module: the three descriptors and either the
    /// plain or the segmented (PS3.3 C.7.9.2) data.
    pub fn read(obj: &InMemDicomObject) -> Result<Palette, Error> {
        const CH: [(Tag, Tag, Tag, &str); 3] = [
            (
                tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
                tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DATA,
                tags::SEGMENTED_RED_PALETTE_COLOR_LOOKUP_TABLE_DATA,
                "RedPaletteColorLookupTable",
            ),
            (
                tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
                tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA,
                tags::SEGMENTED_GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA,
                "GreenPaletteColorLookupTable",
            ),
            (
                tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
                tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA,
                tags::SEGMENTED_BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA,
                "BluePaletteColorLookupTable",
            ),
        ];
        let mut tables = Vec::with_capacity(3);
        for (desc_tag, data_tag, seg_tag, name) in CH {
            let mut descriptor = obj
                .get(desc_tag)
                .and_then(|e| e.to_multi_int::<i64>().ok())
                .ok_or_else(|| {
                    bad(
                        desc_tag,
                        name,
                        "PALETTE COLOR image without a readable descriptor",
                    )
                })?;
            signed_first(&mut descriptor, is_signed(obj));
            let lut = if let Some(bytes) = obj.get(data_tag).and_then(|e| e.to_bytes().ok()) {
                Lut::from_parts(&descriptor, &bytes, data_tag, name)?
            } else if let Some(bytes) = obj.get(seg_tag).and_then(|e| e.to_bytes().ok()) {
                // Entries as the descriptor declares them (0 means 65536), checked before
                // anything is expanded: the expansion never grows past them.
                let entries = match descriptor.first().copied() {
                    Some(0) => 65536,
                    Some(n @ 1..=65535) => n as usize,
                    other => {
                        return Err(bad(
                            desc_tag,
                            name,
                            format!(
                                "palette descriptor declares {} entries (1 to 65536 allowed)",
                                other.map_or("no".to_string(), |n| n.to_string())
                            ),
                        ));
                    }
                };
                let bits = descriptor.get(2).copied().unwrap_or(16);
                let expanded =
                    expand_segmented(&bytes, bits, entries).map_err(|p| bad(seg_tag, name, p))?;
                let le: Vec<u8> = expanded.iter().flat_map(|v| v.to_le_bytes()).collect();
                Lut::from_parts(&descriptor, &le, seg_tag, name)?
            } else {
                return Err(bad(
                    data_tag,
                    name,
                    "PALETTE COLOR image without palette data (plain or segmented)",
                ));
            };
            tables.push(lut);
        }
        let tables: [Lut; 3] = tables.try_into().expect("three channels");
        let n = tables[0].data.len();
        if tables
            .iter()
            .any(|t| t.data.len() != n || t.first != tables[0].first)
        {
            return Err(bad(
                tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
                "RedPaletteColorLookupTableDescriptor",
                "the red, green and blue palettes differ in size or first value",
            ));
        }
        Ok(Palette { tables })
    }

    /// Largest entry value (`2^bits - 1`): 255 for 8-bit palettes, 65535 for 16-bit.
    pub fn max_output(&self) -> f64 {
        self.tables[0].max_output()
    }

    /// Map stored values (one sample per pixel) to RGB, interleaved, in the palette's
    /// range (see [`Palette::max_output`]).
    pub fn apply(&self, stored: &[f32]) -> Vec<f32> {
        let mut out = Vec::with_capacity(stored.len() * 3);
        for &v in stored {
            for t in &self.tables {
                out.push(t.get(v as f64) as f32);
            }
        }
        out
    }
}

/// Expand a segmented palette (PS3.3 C.7.9.2: discrete, linear and indirect segments) of
/// 8- or 16-bit words into exactly `entries` values (at most 65536). A segment that would
/// take the output past `entries` is refused before it is expanded, so a file of a few
/// bytes cannot make it allocate more than the descriptor's (checked) entry count.
pub(super) fn expand_segmented(
    bytes: &[u8],
    bits: i64,
    entries: usize,
) -> Result<Vec<u16>, String> {
    if !(1..=65536).contains(&entries) {
        return Err(format!(
            "segmented palette of {entries} entries (1 to 65536 allowed)"
        ));
    }
    let words: Vec<u16> = if bits == 8 {
        bytes.iter().map(|&b| b as u16).collect()
    } else {
        bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect()
    };
    let mut out: Vec<u16> = Vec::with_capacity(entries);
    let mut i = 0;
    // `i + 1`: a trailing pad word is not a segment (as pydicom reads it).
    while i + 1 < words.len() {
        let (opcode, len) = (words[i], words[i + 1] as usize);
        if opcode == 2 {
            // Indirect: `len` segments copied from a 32-bit offset, least significant part
            // first, counted in entries of the data (as pydicom reads it): two 16-bit
            // words, or four 8-bit entries.
            let parts = if bits == 8 { 4 } else { 2 };
            let p = words
                .get(i + 2..i + 2 + parts)
                .ok_or("segmented palette ends inside a segment")?;
            i += 2 + parts;
            let shift = if bits == 8 { 8 } else { 16 };
            let mut j = p.iter().rev().fold(0usize, |acc, &w| {
                acc.checked_shl(shift).unwrap_or(usize::MAX) | w as usize
            });
            for _ in 0..len {
                if words.get(j) == Some(&2) {
                    return Err("nested indirect segments are not allowed".into());
                }
                j = segment(&words, j, &mut out, entries)
                    .ok_or("indirect segment points outside the data")??;
            }
        } else {
            i = segment(&words, i, &mut out, entries)
                .ok_or("segmented palette ends inside a segment")??;
        }
    }
    if out.len() != entries {
        return Err(format!(
            "segmented palette expands to {} entries, the descriptor says {entries}",
            out.len()
        ));
    }
    Ok(out)
}

/// Expand the discrete or linear segment at `at` onto `out`, refused when it would take
/// `out` past `entries` values; the index after it. `None` when it runs past the data.
fn segment(
    words: &[u16],
    at: usize,
    out: &mut Vec<u16>,
    entries: usize,
) -> Option<Result<usize, String>> {
    let (opcode, len) = (*words.get(at)?, *words.get(at + 1)? as usize);
    if matches!(opcode, 0 | 1) && out.len() + len > entries {
        return Some(Err(format!(
            "segmented palette expands past the {entries} entries of its descriptor"
        )));
    }
    match opcode {
        0 => {
            out.extend_from_slice(words.get(at + 2..at + 2 + len)?);
            Some(Ok(at + 2 + len))
        }
        1 => {
            let y1 = *words.get(at + 2)? as f64;
            let Some(&y0) = out.last() else {
                return Some(Err(
                    "a linear segment cannot start a segmented palette".into()
                ));
            };
            let y0 = y0 as f64;
            // Rounded half to even, as numpy (pydicom) does.
            out.extend(
                (1..=len)
                    .map(|k| (y0 + (y1 - y0) * k as f64 / len as f64).round_ties_even() as u16),
            );
            Some(Ok(at + 3))
        }
        other => Some(Err(format!("unknown segment type {other}"))),
    }
}

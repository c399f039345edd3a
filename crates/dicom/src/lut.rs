//! The DICOM pixel pipeline after decoding (PS3.3 C.11, C.7.6.3, C.7.9; PS3.4 N.2):
//!
//! stored value → modality LUT (Rescale Slope/Intercept, Modality LUT Sequence, or the
//! Enhanced objects' per-frame Pixel Value Transformation) → VOI (window with LINEAR,
//! LINEAR_EXACT or SIGMOID function, or a VOI LUT Sequence table) → MONOCHROME1 inversion
//! → 8-bit display value. PALETTE COLOR stored values map through the red/green/blue
//! palette tables (normal or segmented) to RGB.
//!
//! Everything here works on plain numbers (no decoding, no target-specific code); the
//! attribute parsing lives next to it so every table is checked once, when it is read: a
//! descriptor that disagrees with its data is an error, never a silent wrong image.

use dicom_core::Tag;
use dicom_core::header::HasLength;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::{Error, tag_name};

fn bad(tag: Tag, name: &'static str, problem: impl Into<String>) -> Error {
    Error::Attribute {
        tag: tag_name(tag),
        name,
        problem: problem.into(),
    }
}

/// A lookup table: `LUTDescriptor` (entries, first mapped value, bits per entry) and its
/// data. Inputs below the first mapped value take the first entry, inputs past the end
/// the last (PS3.3 C.11.1.1.1).
#[derive(Debug, Clone, PartialEq)]
pub struct Lut {
    /// Stored value mapped to the first entry.
    pub first: i64,
    /// Bits per entry (8 or 16, up to 16 for VOI LUTs): the output range is `0..2^bits`.
    pub bits: u32,
    /// The entries.
    pub data: Vec<u16>,
}

impl Lut {
    /// Read a LUT from its descriptor (`[entries, first, bits]`, entries 0 meaning 65536)
    /// and its data bytes (little endian). 8-bit entries may come one per byte or one per
    /// 16-bit word; the data length tells which, as pydicom decides it.
    pub fn from_parts(
        descriptor: &[i64],
        bytes: &[u8],
        tag: Tag,
        name: &'static str,
    ) -> Result<Lut, Error> {
        let [entries, first, bits] = descriptor else {
            return Err(bad(
                tag,
                name,
                format!("LUT Descriptor has {} values, 3 expected", descriptor.len()),
            ));
        };
        let entries = if *entries == 0 { 65536 } else { *entries };
        if !(1..=65536).contains(&entries) {
            return Err(bad(tag, name, format!("LUT with {entries} entries")));
        }
        let bits = *bits;
        if !(1..=16).contains(&bits) {
            return Err(bad(
                tag,
                name,
                format!("LUT entries of {bits} bits (8 to 16 allowed)"),
            ));
        }
        let n = entries as usize;
        let data: Vec<u16> = if bytes.len() == 2 * n || (bytes.len() == 2 * n + 2 && bits > 8) {
            bytes[..2 * n]
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect()
        } else if bits <= 8 && (bytes.len() == n || bytes.len() == n + 1) {
            bytes[..n].iter().map(|&b| b as u16).collect()
        } else {
            return Err(bad(
                tag,
                name,
                format!(
                    "LUT Descriptor declares {n} entries of {bits} bits but the LUT data holds {} bytes",
                    bytes.len()
                ),
            ));
        };
        let max = if bits == 16 {
            u16::MAX
        } else {
            (1u16 << bits) - 1
        };
        let data = data.into_iter().map(|v| v.min(max)).collect();
        Ok(Lut {
            first: *first,
            bits: bits as u32,
            data,
        })
    }

    /// Look a stored value up.
    pub fn get(&self, v: f64) -> f64 {
        let i = (v.floor() - self.first as f64).clamp(0.0, (self.data.len() - 1) as f64);
        self.data[i as usize] as f64
    }

    /// Largest value an entry can hold, `2^bits - 1`.
    pub fn max_output(&self) -> f64 {
        ((1u32 << self.bits) - 1) as f64
    }
}

/// The descriptor's first mapped value is US or SS like the stored values (PS3.3
/// C.11.1.1.1): read as unsigned 16 bits, it is reinterpreted when the pixels are signed.
fn signed_first(descriptor: &mut [i64], signed: bool) {
    if let Some(first) = descriptor.get_mut(1)
        && signed
        && *first > 32767
    {
        *first -= 65536;
    }
}

fn is_signed(obj: &InMemDicomObject) -> bool {
    obj.get(tags::PIXEL_REPRESENTATION)
        .and_then(|e| e.to_int::<i64>().ok())
        == Some(1)
}

/// Read the LUT of a sequence item (`LUTDescriptor` + `LUTData`).
fn item_lut(
    item: &InMemDicomObject,
    seq: Tag,
    name: &'static str,
    signed: bool,
) -> Result<Lut, Error> {
    let mut descriptor = item
        .get(tags::LUT_DESCRIPTOR)
        .and_then(|e| e.to_multi_int::<i64>().ok())
        .ok_or_else(|| bad(seq, name, "an item has no readable LUT Descriptor"))?;
    let bytes = item
        .get(tags::LUT_DATA)
        .and_then(|e| e.to_bytes().ok())
        .ok_or_else(|| bad(seq, name, "an item has no readable LUT Data"))?;
    signed_first(&mut descriptor, signed);
    Lut::from_parts(&descriptor, &bytes, seq, name)
}

/// The modality LUT of one frame: stored values to modality (e.g. Hounsfield) values.
#[derive(Debug, Clone, PartialEq)]
pub enum ModalityLut {
    /// `value * slope + intercept`.
    Rescale {
        /// Rescale Slope.
        slope: f64,
        /// Rescale Intercept.
        intercept: f64,
    },
    /// Modality LUT Sequence table.
    Table(Lut),
}

impl ModalityLut {
    /// The identity (no rescale, no table).
    pub const IDENTITY: ModalityLut = ModalityLut::Rescale {
        slope: 1.0,
        intercept: 0.0,
    };

    /// Apply to one stored value.
    pub fn apply(&self, v: f64) -> f64 {
        match self {
            ModalityLut::Rescale { slope, intercept } => v * slope + intercept,
            ModalityLut::Table(lut) => lut.get(v),
        }
    }

    /// Read the modality LUT of frame `frame` (0-based): the top-level Modality LUT
    /// Sequence, else top-level Rescale Slope/Intercept, else the frame's Pixel Value
    /// Transformation in the Per-Frame, else in the Shared Functional Groups (Enhanced CT,
    /// MR, PET), else the identity. A value that is present but unreadable is an error.
    pub fn read(obj: &InMemDicomObject, frame: u32) -> Result<ModalityLut, Error> {
        if let Some(seq) = obj.get(tags::MODALITY_LUT_SEQUENCE) {
            let item = seq.items().and_then(|i| i.first()).ok_or_else(|| {
                bad(
                    tags::MODALITY_LUT_SEQUENCE,
                    "ModalityLUTSequence",
                    "no item",
                )
            })?;
            return Ok(ModalityLut::Table(item_lut(
                item,
                tags::MODALITY_LUT_SEQUENCE,
                "ModalityLUTSequence",
                is_signed(obj),
            )?));
        }
        if let Some(r) = rescale_of(obj)? {
            return Ok(r);
        }
        for item in functional_groups(obj, frame, tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE) {
            if let Some(r) = rescale_of(item)? {
                return Ok(r);
            }
        }
        Ok(ModalityLut::IDENTITY)
    }
}

fn finite(obj: &InMemDicomObject, tag: Tag, name: &'static str) -> Result<Option<f64>, Error> {
    let Some(e) = obj.get(tag) else {
        return Ok(None);
    };
    if e.is_empty() {
        return Ok(None);
    }
    match e.to_float64() {
        Ok(v) if v.is_finite() => Ok(Some(v)),
        Ok(v) => Err(bad(tag, name, format!("{v} is not a finite number"))),
        Err(err) => Err(bad(tag, name, err.to_string())),
    }
}

/// Rescale Slope/Intercept of a data set or functional group item, `None` if neither is
/// present (a missing one defaults to 1 or 0).
fn rescale_of(obj: &InMemDicomObject) -> Result<Option<ModalityLut>, Error> {
    let slope = finite(obj, tags::RESCALE_SLOPE, "RescaleSlope")?;
    let intercept = finite(obj, tags::RESCALE_INTERCEPT, "RescaleIntercept")?;
    if slope.is_none() && intercept.is_none() {
        return Ok(None);
    }
    Ok(Some(ModalityLut::Rescale {
        slope: slope.unwrap_or(1.0),
        intercept: intercept.unwrap_or(0.0),
    }))
}

/// The items of functional group `group` that apply to `frame`: the frame's own
/// (Per-Frame Functional Groups Sequence) first, then the shared one.
pub(crate) fn functional_groups(
    obj: &InMemDicomObject,
    frame: u32,
    group: Tag,
) -> impl Iterator<Item = &InMemDicomObject> {
    let per_frame = obj
        .get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .and_then(|s| s.items())
        .and_then(|items| items.get(frame as usize));
    let shared = obj
        .get(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE)
        .and_then(|s| s.items())
        .and_then(|items| items.first());
    [per_frame, shared]
        .into_iter()
        .flatten()
        .filter_map(move |fg| fg.get(group)?.items()?.first())
}

/// VOI LUT Function (0028,1056).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VoiFunction {
    /// PS3.3 C.11.2.1.2.1 (the default).
    Linear,
    /// PS3.3 C.11.2.1.3.2.
    LinearExact,
    /// PS3.3 C.11.2.1.3.1.
    Sigmoid,
}

/// A window: center, width, function, and the file's explanation of it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Window {
    /// Window Center.
    pub center: f64,
    /// Window Width.
    pub width: f64,
    /// VOI LUT Function.
    pub function: VoiFunction,
    /// Window Center & Width Explanation (e.g. "BRAIN"), empty if absent.
    pub explanation: String,
}

impl Window {
    /// A LINEAR window without explanation (a user's choice or a preset).
    pub fn linear(center: f64, width: f64) -> Window {
        Window {
            center,
            width,
            function: VoiFunction::Linear,
            explanation: String::new(),
        }
    }

    /// The LINEAR_EXACT window over `values`' min..max (explanation "min-max"): what a
    /// frame without a VOI of its own is shown with.
    pub fn min_max(values: &[f32]) -> Window {
        let (lo, hi) = values.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &v| {
            (lo.min(v as f64), hi.max(v as f64))
        });
        let (lo, hi) = if lo <= hi { (lo, hi) } else { (0.0, 0.0) };
        Window {
            center: (lo + hi) / 2.0,
            width: (hi - lo).max(f64::MIN_POSITIVE),
            function: VoiFunction::LinearExact,
            explanation: "min-max".into(),
        }
    }

    /// Map a modality value to `0..=1`. Widths the function does not allow (LINEAR below 1,
    /// the others not above 0) are refused when the window is read or made, see
    /// [`Window::check`].
    pub fn apply(&self, x: f64) -> f64 {
        let (c, w) = match self.function {
            // LINEAR is LINEAR_EXACT with the center and width moved by half a step.
            VoiFunction::Linear => (self.center - 0.5, self.width - 1.0),
            _ => (self.center, self.width),
        };
        match self.function {
            VoiFunction::Linear | VoiFunction::LinearExact => {
                if x <= c - w / 2.0 {
                    0.0
                } else if x > c + w / 2.0 {
                    1.0
                } else {
                    (x - c) / w + 0.5
                }
            }
            VoiFunction::Sigmoid => 1.0 / (1.0 + (-4.0 * (x - c) / w).exp()),
        }
    }

    /// Refuse widths the function does not define (LINEAR needs width >= 1, LINEAR_EXACT
    /// and SIGMOID width > 0) and non-finite values.
    pub fn check(&self) -> Result<(), String> {
        let ok = self.center.is_finite()
            && self.width.is_finite()
            && match self.function {
                VoiFunction::Linear => self.width >= 1.0,
                _ => self.width > 0.0,
            };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "window center {} width {} is not valid for {:?} (LINEAR needs width >= 1, \
                 LINEAR_EXACT and SIGMOID width > 0)",
                self.center, self.width, self.function
            ))
        }
    }
}

/// One VOI choice of a frame: a window or a VOI LUT table.
#[derive(Debug, Clone, PartialEq)]
pub enum Voi {
    /// Window Center/Width.
    Window(Window),
    /// VOI LUT Sequence item, with its LUT Explanation.
    Table(Lut, String),
}

impl Voi {
    /// One line for people: `window 40/400 LINEAR "BRAIN"` or `table of 4096 entries
    /// (12 bits) "COSINE"`.
    pub fn describe(&self) -> String {
        let quoted = |e: &str| {
            if e.is_empty() {
                String::new()
            } else {
                format!(" \"{e}\"")
            }
        };
        match self {
            Voi::Window(w) => format!(
                "window {}/{} {}{}",
                w.center,
                w.width,
                match w.function {
                    VoiFunction::Linear => "LINEAR",
                    VoiFunction::LinearExact => "LINEAR_EXACT",
                    VoiFunction::Sigmoid => "SIGMOID",
                },
                quoted(&w.explanation)
            ),
            Voi::Table(t, e) => format!(
                "table of {} entries ({} bits){}",
                t.data.len(),
                t.bits,
                quoted(e)
            ),
        }
    }

    /// Map a modality value to `0..=1`.
    pub fn apply(&self, x: f64) -> f64 {
        match self {
            Voi::Window(w) => w.apply(x),
            Voi::Table(lut, _) => lut.get(x) / lut.max_output(),
        }
    }

    /// Every VOI of frame `frame`, in the file's order: the windows (top-level, else the
    /// frame's Frame VOI LUT functional group, per-frame before shared) and then the VOI LUT
    /// Sequence tables. Empty when the file has none. Windows whose width the function
    /// does not allow are skipped with the reason in the returned list of problems.
    pub fn read(obj: &InMemDicomObject, frame: u32) -> Result<(Vec<Voi>, Vec<String>), Error> {
        let mut out = Vec::new();
        let mut problems = Vec::new();
        let mut sources = vec![obj];
        if obj.get(tags::WINDOW_CENTER).is_none() {
            sources.extend(functional_groups(obj, frame, tags::FRAME_VOILUT_SEQUENCE));
        }
        for src in sources {
            let windows = windows_of(src)?;
            if !windows.is_empty() {
                for w in windows {
                    match w.check() {
                        Ok(()) => out.push(Voi::Window(w)),
                        Err(p) => problems.push(p),
                    }
                }
                break;
            }
        }
        if let Some(seq) = obj.get(tags::VOILUT_SEQUENCE) {
            for item in seq.items().unwrap_or_default() {
                // VOI LUT input is the modality value: signed when the pixels are or a
                // negative intercept makes it so (CT).
                let signed = is_signed(obj)
                    || finite(obj, tags::RESCALE_INTERCEPT, "RescaleIntercept")?
                        .is_some_and(|i| i < 0.0);
                let lut = item_lut(item, tags::VOILUT_SEQUENCE, "VOILUTSequence", signed)?;
                let explanation = item
                    .get(tags::LUT_EXPLANATION)
                    .and_then(|e| e.to_str().ok())
                    .map(|s| s.trim().to_string())
                    .unwrap_or_default();
                out.push(Voi::Table(lut, explanation));
            }
        }
        Ok((out, problems))
    }
}

/// The windows of one data set or Frame VOI LUT item (multi-valued centers, widths and
/// explanations pair up by index).
fn windows_of(obj: &InMemDicomObject) -> Result<Vec<Window>, Error> {
    let floats = |tag: Tag, name: &'static str| -> Result<Vec<f64>, Error> {
        match obj.get(tag) {
            None => Ok(Vec::new()),
            Some(e) if e.is_empty() => Ok(Vec::new()),
            Some(e) => e
                .to_multi_float64()
                .map_err(|err| bad(tag, name, err.to_string())),
        }
    };
    let centers = floats(tags::WINDOW_CENTER, "WindowCenter")?;
    let widths = floats(tags::WINDOW_WIDTH, "WindowWidth")?;
    if centers.len() != widths.len() {
        return Err(bad(
            tags::WINDOW_WIDTH,
            "WindowWidth",
            format!(
                "{} window centers but {} widths",
                centers.len(),
                widths.len()
            ),
        ));
    }
    let explanations: Vec<String> = obj
        .get(tags::WINDOW_CENTER_WIDTH_EXPLANATION)
        .and_then(|e| e.to_multi_str().ok())
        .map(|v| v.iter().map(|s| s.trim().to_string()).collect())
        .unwrap_or_default();
    let function = match obj
        .get(tags::VOILUT_FUNCTION)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim().to_ascii_uppercase())
        .as_deref()
    {
        None | Some("") | Some("LINEAR") => VoiFunction::Linear,
        Some("LINEAR_EXACT") => VoiFunction::LinearExact,
        Some("SIGMOID") => VoiFunction::Sigmoid,
        Some(other) => {
            return Err(bad(
                tags::VOILUT_FUNCTION,
                "VOILUTFunction",
                format!("unknown function {other:?} (LINEAR, LINEAR_EXACT or SIGMOID)"),
            ));
        }
    };
    Ok(centers
        .into_iter()
        .zip(widths)
        .enumerate()
        .map(|(i, (center, width))| Window {
            center,
            width,
            function,
            explanation: explanations.get(i).cloned().unwrap_or_default(),
        })
        .collect())
}

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
fn expand_segmented(bytes: &[u8], bits: i64, entries: usize) -> Result<Vec<u16>, String> {
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

/// An 8-bit rendering of a frame: grey (1 channel) or RGB (3, interleaved), row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// 1 or 3.
    pub channels: usize,
    /// `rows * cols * channels` values.
    pub pixels: Vec<u8>,
    /// Whether the output was inverted (MONOCHROME1, or the caller's choice).
    pub inverted: bool,
}

/// The display policy of one decoded frame, for every shell (the CLI's PNG, the
/// browser's display): colour frames (RGB, palettes already mapped to 0..255) as they are,
/// clamped to 0..255; grey frames through `voi` (or their min..max when `None`) with
/// MONOCHROME1 inverted (`photometric` of the image).
pub fn render(frame: &super::Frame, voi: Option<&Voi>, photometric: &str) -> Rendered {
    render_view(
        frame,
        voi,
        frame.channels == 1 && photometric == "MONOCHROME1",
    )
}

/// [`render`] with the inversion chosen by the caller (a viewer's "invert"): grey frames
/// through `voi` (min..max when `None`), colour frames clamped; then every sample `s`
/// becomes `255 - s` when `invert`.
pub fn render_view(frame: &super::Frame, voi: Option<&Voi>, invert: bool) -> Rendered {
    let pixels = if frame.channels != 1 {
        frame
            .values
            .iter()
            .map(|v| {
                let s = v.clamp(0.0, 255.0) as u8;
                if invert { 255 - s } else { s }
            })
            .collect()
    } else {
        render_grey(&frame.values, voi, invert)
    };
    Rendered {
        channels: frame.channels,
        pixels,
        inverted: invert,
    }
}

/// Render one grey frame of modality values to 8-bit display values: VOI (or the
/// frame's min..max when `voi` is `None`), then MONOCHROME1 inversion when `invert`.
pub fn render_grey(values: &[f32], voi: Option<&Voi>, invert: bool) -> Vec<u8> {
    let minmax;
    let voi = match voi {
        Some(v) => v,
        None => {
            minmax = Voi::Window(Window::min_max(values));
            &minmax
        }
    };
    values
        .iter()
        .map(|&v| {
            let y = voi.apply(v as f64).clamp(0.0, 1.0);
            let y = if invert { 1.0 - y } else { y };
            (y * 255.0).round() as u8
        })
        .collect()
}

#[cfg(test)]
#[path = "lut_tests.rs"]
mod tests;

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

mod palette;
pub use palette::Palette;
#[cfg(test)]
use palette::expand_segmented;

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

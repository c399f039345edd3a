//! DICOM instances made from pixels a viewer has already decoded (the JS API's
//! `openPixels`): one single-frame Part 10 file per frame, with the geometry, window and
//! UIDs the viewer gives, so that they go through the one reader, the one series rule and
//! the one preprocessing recipe, exactly as the DICOM files they came from would.
//!
//! Values are modality values (the modality LUT already applied, as Cornerstone3D's scalar
//! data is). Integers that fit 16 bits are stored as they are (signed when any is
//! negative); other float values are stored as 32-bit integers with a Rescale Slope and
//! Intercept (stored 0..2^24-1), which gives them back within (max - min) / 2^25.

use dicom_core::{PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::Error;
use super::part10::{EXPLICIT_VR_LE, derived_uid, el, part10};
use super::series::{cross, dot};

/// Secondary Capture Image Storage: the SOP class of a made instance unless `uids` names
/// the source's.
pub const SECONDARY_CAPTURE: &str = "1.2.840.10008.5.1.4.1.1.7";
/// The largest stored value of rescaled float pixels (2^24 - 1: exact in float32).
const LEVELS: f64 = 16_777_215.0;

/// The values of every frame, back to back (row-major; RGB interleaved).
#[derive(Debug, Clone, Copy)]
pub enum Values<'a> {
    /// 8-bit unsigned (grey or RGB).
    U8(&'a [u8]),
    /// 16-bit signed.
    I16(&'a [i16]),
    /// 16-bit unsigned.
    U16(&'a [u16]),
    /// 32-bit float.
    F32(&'a [f32]),
}

impl Values<'_> {
    fn len(&self) -> usize {
        match self {
            Values::U8(v) => v.len(),
            Values::I16(v) => v.len(),
            Values::U16(v) => v.len(),
            Values::F32(v) => v.len(),
        }
    }
}

/// A window as a viewer gives it.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
pub struct Window {
    /// WindowCenter.
    pub center: f64,
    /// WindowWidth.
    pub width: f64,
}

/// The UIDs of the instances the pixels came from (so that a SEG references them).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Uids {
    /// StudyInstanceUID.
    pub study: Option<String>,
    /// SeriesInstanceUID.
    pub series: Option<String>,
    /// SOPClassUID of the source instances (default Secondary Capture).
    #[serde(rename = "sopClass")]
    pub sop_class: Option<String>,
    /// SOPInstanceUID of each frame's source instance, in frame order.
    pub instances: Option<Vec<String>>,
    /// FrameOfReferenceUID of the source (written with the geometry).
    #[serde(rename = "frameOfReference")]
    pub frame_of_reference: Option<String>,
}

/// Whose pixels they are (Patient module). Written into each instance, so that a SEG over
/// them carries the patient: without it a PACS files the SEG apart from the images.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Patient {
    /// PatientName (PN: `Family^Given`).
    pub name: Option<String>,
    /// PatientID.
    pub id: Option<String>,
    /// PatientBirthDate, YYYYMMDD.
    #[serde(rename = "birthDate")]
    pub birth_date: Option<String>,
    /// PatientSex: M, F or O.
    pub sex: Option<String>,
}

/// Which study the pixels are of (General Study module, less its UID: `uids.study`).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Study {
    /// StudyDate, YYYYMMDD.
    pub date: Option<String>,
    /// StudyTime, HHMMSS.FFFFFF (leading parts).
    pub time: Option<String>,
    /// StudyID.
    pub id: Option<String>,
    /// AccessionNumber.
    pub accession: Option<String>,
    /// ReferringPhysicianName (PN).
    #[serde(rename = "referringPhysician")]
    pub referring_physician: Option<String>,
    /// StudyDescription.
    pub description: Option<String>,
}

/// What the pixels are: size, geometry, window, UIDs (the JS API's `openPixels` options,
/// less `data`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PixelSpec {
    /// Columns.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// Frames (slices), default 1.
    #[serde(default = "one")]
    pub frames: u32,
    /// [column spacing (x), row spacing (y), slice spacing] in mm (Cornerstone3D's order).
    pub spacing: Option<[f64; 3]>,
    /// Patient position (mm) of the first pixel of frame 0.
    pub origin: Option<[f64; 3]>,
    /// Row direction, column direction and slice direction (unit vectors, patient axes),
    /// as Cornerstone3D's volume `direction`.
    pub direction: Option<[f64; 9]>,
    /// Modality (CT, MR, ...; default OT).
    pub modality: Option<String>,
    /// The image's own window (the CT recipe uses it, as a file's first WindowCenter/Width).
    pub window: Option<Window>,
    /// MONOCHROME2 (default), MONOCHROME1 or RGB (8-bit values only).
    pub photometric: Option<String>,
    /// SeriesDescription.
    pub description: Option<String>,
    /// The source instances' UIDs; made ones where absent.
    pub uids: Option<Uids>,
    /// The patient (empty attributes where absent).
    pub patient: Option<Patient>,
    /// The study's date, time, ID, accession number, referring physician and description.
    pub study: Option<Study>,
}

fn one() -> u32 {
    1
}

fn bad(msg: impl Into<String>) -> Error {
    Error::Pixels(msg.into())
}

/// The value of a patient or study attribute, checked against its VR: `name` (the option's
/// path) says which in the error. Empty when absent.
fn text_value<'a>(name: &str, value: &'a Option<String>, vr: VR) -> Result<&'a str, Error> {
    let v = value.as_deref().unwrap_or("");
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let ok = match vr {
        VR::DA => v.is_empty() || (v.len() == 8 && digits(v)),
        VR::TM => {
            let (hms, frac) = v.split_once('.').unwrap_or((v, ""));
            v.is_empty()
                || ([2, 4, 6].contains(&hms.len())
                    && digits(hms)
                    && frac.len() <= 6
                    && digits(frac)
                    && (frac.is_empty() || hms.len() == 6)
                    && (!v.contains('.') || !frac.is_empty()))
        }
        VR::CS => ["", "M", "F", "O"].contains(&v),
        VR::SH => v.chars().count() <= 16 && !v.contains('\\') && !v.chars().any(char::is_control),
        _ => v.chars().count() <= 64 && !v.contains('\\') && !v.chars().any(char::is_control),
    };
    if ok {
        return Ok(v);
    }
    Err(bad(match vr {
        VR::DA => format!("{name} {v:?}: a date as YYYYMMDD"),
        VR::TM => format!("{name} {v:?}: a time as HHMMSS (or HH, HHMM; .FFFFFF after HHMMSS)"),
        VR::CS => format!("{name} {v:?}: M, F or O"),
        VR::SH => format!("{name} {v:?}: at most 16 characters, no backslash or control character"),
        _ => format!("{name} {v:?}: at most 64 characters, no backslash or control character"),
    }))
}

/// The patient and study attributes of `spec`, checked: (tag, VR, value).
fn identity(spec: &PixelSpec) -> Result<Vec<(dicom_core::Tag, VR, String)>, Error> {
    let p = spec.patient.clone().unwrap_or_default();
    let s = spec.study.clone().unwrap_or_default();
    let list = [
        (tags::STUDY_DATE, VR::DA, "study.date", s.date),
        (tags::STUDY_TIME, VR::TM, "study.time", s.time),
        (
            tags::ACCESSION_NUMBER,
            VR::SH,
            "study.accession",
            s.accession,
        ),
        (
            tags::REFERRING_PHYSICIAN_NAME,
            VR::PN,
            "study.referringPhysician",
            s.referring_physician,
        ),
        (
            tags::STUDY_DESCRIPTION,
            VR::LO,
            "study.description",
            s.description,
        ),
        (tags::PATIENT_NAME, VR::PN, "patient.name", p.name),
        (tags::PATIENT_ID, VR::LO, "patient.id", p.id),
        (
            tags::PATIENT_BIRTH_DATE,
            VR::DA,
            "patient.birthDate",
            p.birth_date,
        ),
        (tags::PATIENT_SEX, VR::CS, "patient.sex", p.sex),
        (tags::STUDY_ID, VR::SH, "study.id", s.id),
    ];
    list.into_iter()
        .map(|(tag, vr, name, value)| Ok((tag, vr, text_value(name, &value, vr)?.to_string())))
        .collect()
}

/// A decimal string (VR DS: at most 16 characters) for `v`: its shortest exact form when
/// that fits, else the most significant digits that do.
pub(crate) fn ds(v: f64) -> String {
    let s = format!("{v}");
    if s.len() <= 16 {
        return s;
    }
    (1..=15)
        .rev()
        .map(|digits| format!("{:.*e}", digits - 1, v))
        .find(|s| s.len() <= 16)
        .unwrap_or_else(|| "0".into())
}

/// A multi-valued decimal string.
fn ds_all(values: &[f64]) -> PrimitiveValue {
    PrimitiveValue::Strs(values.iter().map(|&v| ds(v)).collect())
}

/// A decimal string as written and the number a reader parses from it.
struct Decimal {
    text: String,
    value: f64,
}

impl Decimal {
    fn of(v: f64) -> Decimal {
        let text = ds(v);
        let value = text.parse().unwrap_or(v);
        Decimal { text, value }
    }
}

/// How the values are stored: bits allocated, signed, and the rescale (slope, intercept)
/// when they are not integers of 16 bits.
struct Storage {
    bits: u16,
    signed: bool,
    rescale: Option<(Decimal, Decimal)>,
}

fn storage(values: &Values) -> Result<Storage, Error> {
    let plain = |bits, signed| Storage {
        bits,
        signed,
        rescale: None,
    };
    let Values::F32(v) = values else {
        return Ok(match values {
            Values::U8(_) => plain(8, false),
            Values::I16(_) => plain(16, true),
            _ => plain(16, false),
        });
    };
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(bad(format!("data[{i}] is {}: values must be finite", v[i])));
    }
    let (lo, hi) = v.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &x| {
        (lo.min(x as f64), hi.max(x as f64))
    });
    if v.iter().all(|x| x.fract() == 0.0) {
        if lo >= i16::MIN as f64 && hi <= i16::MAX as f64 {
            return Ok(plain(16, true));
        }
        if lo >= 0.0 && hi <= u16::MAX as f64 {
            return Ok(plain(16, false));
        }
    }
    // 0..=2^24-1 stored (exact as the reader's float32), value = stored * slope +
    // intercept as the reader parses them: within (max - min) / 2^25 of the given value.
    let intercept = Decimal::of(lo);
    let span = (hi - intercept.value).max(0.0);
    let slope = Decimal::of(if span > 0.0 { span / LEVELS } else { 1.0 });
    Ok(Storage {
        bits: 32,
        signed: true,
        rescale: Some((slope, intercept)),
    })
}

/// One Part 10 file per frame of `values`, described by `spec`; frame `k` at `origin + k *
/// spacing[2] * direction[6..9]`. Every problem with the input is an error that says what
/// to give instead.
pub fn instances(spec: &PixelSpec, values: Values) -> Result<Vec<Vec<u8>>, Error> {
    let (w, h, frames) = (spec.width, spec.height, spec.frames);
    if !(1..=u16::MAX as u32).contains(&w) || !(1..=u16::MAX as u32).contains(&h) {
        return Err(bad(format!("width {w} and height {h} must be 1..65535")));
    }
    if frames == 0 {
        return Err(bad("frames must be at least 1"));
    }
    let photometric = spec.photometric.as_deref().unwrap_or("MONOCHROME2");
    let samples: u16 = match photometric {
        "MONOCHROME1" | "MONOCHROME2" => 1,
        "RGB" if matches!(values, Values::U8(_)) => 3,
        "RGB" => return Err(bad("RGB pixels must be a Uint8Array (r, g, b interleaved)")),
        other => {
            return Err(bad(format!(
                "photometric {other:?}: use MONOCHROME2, MONOCHROME1 or RGB"
            )));
        }
    };
    let plane = w as usize * h as usize * samples as usize;
    let want = plane as u64 * frames as u64;
    if values.len() as u64 != want {
        return Err(bad(format!(
            "data has {} values; {w} x {h}{} x {frames} frame(s) needs {want}",
            values.len(),
            if samples == 3 { " x 3 (RGB)" } else { "" }
        )));
    }
    if let Some(win) = spec.window
        && !(win.center.is_finite() && win.width.is_finite() && win.width >= 1.0)
    {
        return Err(bad(format!(
            "window center {} width {}: both must be finite numbers and the width at least 1",
            win.center, win.width
        )));
    }
    if let Some(s) = spec.spacing
        && !s.iter().all(|x| x.is_finite() && *x > 0.0)
    {
        return Err(bad(format!("spacing {s:?}: three positive numbers (mm)")));
    }
    if let Some(o) = spec.origin
        && !o.iter().all(|x| x.is_finite())
    {
        return Err(bad(format!("origin {o:?}: three finite numbers (mm)")));
    }
    let direction = match spec.direction {
        None => None,
        Some(d) => {
            let (r, c, n) = ([d[0], d[1], d[2]], [d[3], d[4], d[5]], [d[6], d[7], d[8]]);
            let unit = |v: [f64; 3]| (dot(v, v).sqrt() - 1.0).abs() < 1e-3;
            let rc = cross(r, c);
            if !d.iter().all(|x| x.is_finite())
                || !unit(r)
                || !unit(c)
                || !unit(n)
                || dot(r, c).abs() > 1e-3
                || (dot(rc, n).abs() - 1.0).abs() > 1e-3
            {
                return Err(bad(format!(
                    "direction {d:?}: row, column and slice directions must be orthonormal"
                )));
            }
            Some((r, c, n))
        }
    };
    let modality = spec.modality.as_deref().unwrap_or("OT");
    if modality.is_empty()
        || modality.len() > 16
        || !modality
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_' || b == b' ')
    {
        return Err(bad(format!(
            "modality {modality:?}: a DICOM modality code such as CT, MR, PT"
        )));
    }
    let description = spec.description.as_deref().unwrap_or("");
    if description.len() > 64 || description.chars().any(|c| c.is_control()) {
        return Err(bad(
            "description: at most 64 characters, no control characters",
        ));
    }
    let uids = spec.uids.clone().unwrap_or_default();
    for u in [
        &uids.study,
        &uids.series,
        &uids.sop_class,
        &uids.frame_of_reference,
    ]
    .into_iter()
    .flatten()
    {
        if !super::is_uid(u) {
            return Err(bad(format!("uid {u:?} is not a DICOM UID")));
        }
    }
    if let Some(list) = &uids.instances {
        if list.len() != frames as usize {
            return Err(bad(format!(
                "uids.instances has {} UIDs for {frames} frame(s)",
                list.len()
            )));
        }
        if let Some(u) = list.iter().find(|u| !super::is_uid(u)) {
            return Err(bad(format!("uid {u:?} is not a DICOM UID")));
        }
    }
    let identity = identity(spec)?;
    let store = storage(&values)?;
    let made = made_uids(spec, &values);
    let study = uids.study.clone().unwrap_or_else(|| made("study", 0));
    let series = uids.series.clone().unwrap_or_else(|| made("series", 0));
    let frame_of_reference = uids
        .frame_of_reference
        .clone()
        .unwrap_or_else(|| made("frame-of-reference", 0));
    let sop_class = uids.sop_class.as_deref().unwrap_or(SECONDARY_CAPTURE);

    let mut out = Vec::with_capacity(frames as usize);
    for k in 0..frames as usize {
        let sop = match &uids.instances {
            Some(list) => list[k].clone(),
            None => made("instance", k as u64),
        };
        let mut obj = InMemDicomObject::new_empty();
        obj.put(el(tags::SOP_CLASS_UID, VR::UI, sop_class));
        obj.put(el(tags::SOP_INSTANCE_UID, VR::UI, sop.as_str()));
        obj.put(el(tags::STUDY_INSTANCE_UID, VR::UI, study.as_str()));
        obj.put(el(tags::SERIES_INSTANCE_UID, VR::UI, series.as_str()));
        obj.put(el(tags::MODALITY, VR::CS, modality));
        obj.put(el(tags::SERIES_DESCRIPTION, VR::LO, description));
        for (tag, vr, value) in &identity {
            obj.put(el(*tag, *vr, value.as_str()));
        }
        obj.put(el(tags::INSTANCE_NUMBER, VR::IS, format!("{}", k + 1)));
        if let Some(s) = spec.spacing {
            // PixelSpacing is row spacing (y) \ column spacing (x).
            obj.put(el(tags::PIXEL_SPACING, VR::DS, ds_all(&[s[1], s[0]])));
            obj.put(el(tags::SLICE_THICKNESS, VR::DS, ds(s[2])));
        }
        if spec.origin.is_some() || direction.is_some() {
            let (r, c, n) =
                direction.unwrap_or(([1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]));
            let o = spec.origin.unwrap_or([0.0; 3]);
            let step = spec.spacing.map_or(1.0, |s| s[2]) * k as f64;
            let p = [o[0] + step * n[0], o[1] + step * n[1], o[2] + step * n[2]];
            obj.put(el(tags::IMAGE_POSITION_PATIENT, VR::DS, ds_all(&p)));
            let iop = ds_all(&[r[0], r[1], r[2], c[0], c[1], c[2]]);
            obj.put(el(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, iop));
            obj.put(el(
                tags::FRAME_OF_REFERENCE_UID,
                VR::UI,
                frame_of_reference.as_str(),
            ));
        }
        obj.put(el(tags::SAMPLES_PER_PIXEL, VR::US, samples));
        obj.put(el(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, photometric));
        if samples == 3 {
            obj.put(el(tags::PLANAR_CONFIGURATION, VR::US, 0u16));
        }
        obj.put(el(tags::ROWS, VR::US, h as u16));
        obj.put(el(tags::COLUMNS, VR::US, w as u16));
        obj.put(el(tags::BITS_ALLOCATED, VR::US, store.bits));
        obj.put(el(tags::BITS_STORED, VR::US, store.bits));
        obj.put(el(tags::HIGH_BIT, VR::US, store.bits - 1));
        obj.put(el(tags::PIXEL_REPRESENTATION, VR::US, store.signed as u16));
        if let Some((slope, intercept)) = &store.rescale {
            obj.put(el(tags::RESCALE_INTERCEPT, VR::DS, intercept.text.as_str()));
            obj.put(el(tags::RESCALE_SLOPE, VR::DS, slope.text.as_str()));
            obj.put(el(tags::RESCALE_TYPE, VR::LO, "US"));
        }
        if let Some(win) = spec.window {
            obj.put(el(tags::WINDOW_CENTER, VR::DS, ds(win.center)));
            obj.put(el(tags::WINDOW_WIDTH, VR::DS, ds(win.width)));
        }
        let range = k * plane..(k + 1) * plane;
        let (vr, bytes) = frame_bytes(&values, range, &store);
        obj.put(el(tags::PIXEL_DATA, vr, bytes));
        let file =
            part10(obj, sop_class, &sop, EXPLICIT_VR_LE, "the pixels' instance").map_err(bad)?;
        out.push(file);
    }
    Ok(out)
}

/// The stored bytes of `range` (little endian) and their VR.
fn frame_bytes(values: &Values, range: std::ops::Range<usize>, store: &Storage) -> (VR, Vec<u8>) {
    match (values, &store.rescale) {
        (Values::U8(v), _) => (VR::OB, v[range].to_vec()),
        (Values::I16(v), _) => (
            VR::OW,
            v[range].iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        (Values::U16(v), _) => (
            VR::OW,
            v[range].iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        (Values::F32(v), None) if store.signed => (
            VR::OW,
            v[range]
                .iter()
                .flat_map(|&x| (x as i16).to_le_bytes())
                .collect(),
        ),
        (Values::F32(v), None) => (
            VR::OW,
            v[range]
                .iter()
                .flat_map(|&x| (x as u16).to_le_bytes())
                .collect(),
        ),
        (Values::F32(v), Some((slope, intercept))) => {
            let (m, b) = (slope.value, intercept.value);
            let stored = |x: f32| ((x as f64 - b) / m).round().clamp(0.0, LEVELS) as i32;
            (
                VR::OW,
                v[range]
                    .iter()
                    .flat_map(|&x| stored(x).to_le_bytes())
                    .collect(),
            )
        }
    }
}

/// Made UIDs for what the caller did not name: derived from the pixels and the spec
/// (the same pixels opened twice are the same instances, as a file opened twice is), one
/// per purpose and index.
fn made_uids<'a>(spec: &'a PixelSpec, values: &'a Values) -> impl Fn(&str, u64) -> String + 'a {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"medfm pixels v1");
    h.update(format!("{spec:?}").as_bytes());
    match values {
        Values::U8(v) => h.update(v),
        Values::I16(v) => v.iter().for_each(|x| h.update(x.to_le_bytes())),
        Values::U16(v) => v.iter().for_each(|x| h.update(x.to_le_bytes())),
        Values::F32(v) => v.iter().for_each(|x| h.update(x.to_le_bytes())),
    }
    let digest: [u8; 32] = h.finalize().into();
    move |purpose: &str, index: u64| {
        derived_uid(&[&digest, purpose.as_bytes(), &index.to_le_bytes()])
    }
}

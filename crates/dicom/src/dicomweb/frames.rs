//! WADO-RS frames and metadata (PS3.18 10.4): one frame of a large multi-frame instance
//! without the rest of it. `…/instances/UID/frames/3` answers a multipart body with one
//! part per frame (uncompressed as `application/octet-stream`, or in the stored
//! compression as `image/jpeg`, `image/jls`, …, each with its transfer syntax), and
//! `…/instances/UID/metadata` the instance's attributes as DICOM JSON (bulk data by
//! reference). [`single_frame`] joins the two into a single-frame DICOM file that the
//! library reads like any other: the frame's own per-frame attributes (its functional
//! group item, its entry of the vectors the FrameIncrementPointer names) and its pixels.

use dicom_core::value::{DataSetSequence, PixelFragmentSequence};
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use serde_json::{Map, Value};

use super::Error;
use super::json::Attributes;
use super::multipart::{Part, parameter};

/// The `Accept` of a frames request: the frames as the server stores them (compressed
/// ones in their own media type), so nothing is transcoded on the way.
pub const ACCEPT: &str = "multipart/related; type=\"application/octet-stream\"; transfer-syntax=*";

use crate::part10::EXPLICIT_VR_LE;
/// Transfer syntaxes whose frames are plain little-endian pixels.
const NATIVE: [&str; 3] = [
    "1.2.840.10008.1.2",
    EXPLICIT_VR_LE,
    "1.2.840.10008.1.2.1.99",
];

/// One retrieved frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Its number in the instance (1-based, as DICOMweb counts).
    pub number: u32,
    /// Its transfer syntax (from the part's Content-Type, else the response's, else the
    /// media type's default).
    pub transfer_syntax: String,
    /// The frame's bytes: native pixels, or one compressed frame.
    pub bytes: Vec<u8>,
}

/// The default transfer syntax of a frame media type (PS3.18 Table 8.7.3-5).
fn default_syntax(media: &str) -> Option<&'static str> {
    Some(match media.to_ascii_lowercase().as_str() {
        "application/octet-stream" => EXPLICIT_VR_LE,
        "image/jpeg" => "1.2.840.10008.1.2.4.50",
        "image/dicom-rle" | "image/x-dicom-rle" => "1.2.840.10008.1.2.5",
        "image/jls" | "image/x-jls" => "1.2.840.10008.1.2.4.80",
        "image/jp2" => "1.2.840.10008.1.2.4.90",
        "image/jpx" => "1.2.840.10008.1.2.4.92",
        "image/jphc" => "1.2.840.10008.1.2.4.201",
        _ => return None,
    })
}

/// The transfer syntax a Content-Type names (`image/jls; transfer-syntax=…`, or the
/// `type` parameter of a multipart one, which some servers fill the same way).
fn syntax_of(content_type: &str) -> Option<String> {
    if let Some(ts) = parameter(content_type, "transfer-syntax") {
        return Some(ts);
    }
    if let Some(inner) = parameter(content_type, "type") {
        if let Some(ts) = parameter(&inner, "transfer-syntax") {
            return Some(ts);
        }
        let media = inner.split(';').next().unwrap_or("").trim();
        return default_syntax(media).map(str::to_string);
    }
    let media = content_type.split(';').next().unwrap_or("").trim();
    if media.to_ascii_lowercase().starts_with("multipart/") {
        return None;
    }
    default_syntax(media).map(str::to_string)
}

/// The frames of a frames response (`content_type` its Content-Type, `parts` its parts
/// in order) for the `requested` frame numbers: one part per frame, in the order asked.
pub fn frames(
    requested: &[u32],
    content_type: &str,
    parts: Vec<Part>,
) -> Result<Vec<Frame>, Error> {
    if parts.len() != requested.len() {
        return Err(Error::Multipart(format!(
            "asked for {} frame(s), the server sent {} part(s)",
            requested.len(),
            parts.len()
        )));
    }
    let outer = syntax_of(content_type);
    requested
        .iter()
        .zip(parts)
        .map(|(&number, part)| {
            let transfer_syntax = part
                .content_type()
                .and_then(syntax_of)
                .or_else(|| outer.clone())
                .ok_or_else(|| {
                    Error::Multipart(format!(
                        "frame {number}: the part's type {:?} names no transfer syntax",
                        part.content_type().unwrap_or("")
                    ))
                })?;
            Ok(Frame {
                number,
                transfer_syntax,
                bytes: part.body,
            })
        })
        .collect()
}

/// Standard base64 (padding optional, whitespace ignored); None if malformed.
fn base64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

fn json_error(tag: &str, what: impl std::fmt::Display) -> Error {
    Error::Json(format!("attribute {tag}: {what}"))
}

fn parse_tag(key: &str) -> Result<Tag, Error> {
    let bad = || json_error(key, "is not 8 hex digits");
    // (ASCII first: slicing a multi-byte key at byte 4 would panic.)
    if key.len() != 8 || !key.is_ascii() {
        return Err(bad());
    }
    let g = u16::from_str_radix(&key[..4], 16).map_err(|_| bad())?;
    let e = u16::from_str_radix(&key[4..], 16).map_err(|_| bad())?;
    Ok(Tag(g, e))
}

fn numbers<T: std::str::FromStr>(key: &str, values: &[Value], vr: &str) -> Result<Vec<T>, Error> {
    values
        .iter()
        .map(|v| {
            let text = match v {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.trim().to_string(),
                other => return Err(json_error(key, format!("{vr} value {other}"))),
            };
            text.parse::<T>()
                .map_err(|_| json_error(key, format!("{vr} value {text:?} out of range")))
        })
        .collect()
}

/// The text of a value (a person name by its components, `Alphabetic=Ideographic=Phonetic`).
fn text(key: &str, v: &Value) -> Result<String, Error> {
    Ok(match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Object(o) => {
            let parts: Vec<&str> = ["Alphabetic", "Ideographic", "Phonetic"]
                .iter()
                .map(|k| o.get(*k).and_then(Value::as_str).unwrap_or(""))
                .collect();
            parts.join("=").trim_end_matches('=').to_string()
        }
        other => return Err(json_error(key, format!("unexpected value {other}"))),
    })
}

/// A data set from a DICOM JSON object (PS3.18 F.2): every attribute by its VR; binary
/// values inline (base64) or by `BulkDataURI`, read through `bulk`. Strings are Unicode,
/// so the data set says so (SpecificCharacterSet ISO_IR 192) when it has any text.
pub fn dataset(
    object: &Map<String, Value>,
    bulk: &mut dyn FnMut(&str) -> Result<Vec<u8>, Error>,
) -> Result<InMemDicomObject, Error> {
    let mut obj = InMemDicomObject::new_empty();
    for (key, attr) in object {
        let tag = parse_tag(key)?;
        if tag.group() == 0x0002 || tag == tags::SPECIFIC_CHARACTER_SET {
            continue;
        }
        let vr_text = attr
            .get("vr")
            .and_then(Value::as_str)
            .ok_or_else(|| json_error(key, "has no vr"))?;
        let vr: VR = vr_text
            .parse()
            .map_err(|_| json_error(key, format!("unknown vr {vr_text:?}")))?;
        let values = attr.get("Value").and_then(Value::as_array);
        let element = if vr == VR::SQ {
            let mut items = Vec::new();
            for item in values.map_or(&[][..], Vec::as_slice) {
                let item = item
                    .as_object()
                    .ok_or_else(|| json_error(key, "a sequence item is not an object"))?;
                items.push(dataset(item, bulk)?);
            }
            DataElement::new(tag, vr, DataSetSequence::from(items))
        } else if let Some(b64) = attr.get("InlineBinary").and_then(Value::as_str) {
            let bytes = base64(b64).ok_or_else(|| json_error(key, "InlineBinary is not base64"))?;
            DataElement::new(tag, vr, PrimitiveValue::from(bytes))
        } else if let Some(uri) = attr.get("BulkDataURI").and_then(Value::as_str) {
            DataElement::new(tag, vr, PrimitiveValue::from(bulk(uri)?))
        } else if let Some(values) = values {
            let value = match vr {
                VR::US => PrimitiveValue::U16(numbers(key, values, vr_text)?.into()),
                VR::SS => PrimitiveValue::I16(numbers(key, values, vr_text)?.into()),
                VR::UL => PrimitiveValue::U32(numbers(key, values, vr_text)?.into()),
                VR::SL => PrimitiveValue::I32(numbers(key, values, vr_text)?.into()),
                VR::UV => PrimitiveValue::U64(numbers(key, values, vr_text)?.into()),
                VR::SV => PrimitiveValue::I64(numbers(key, values, vr_text)?.into()),
                VR::FL => PrimitiveValue::F32(numbers(key, values, vr_text)?.into()),
                VR::FD => PrimitiveValue::F64(numbers(key, values, vr_text)?.into()),
                VR::AT => {
                    let tags: Result<Vec<Tag>, Error> = values
                        .iter()
                        .map(|v| parse_tag(v.as_str().unwrap_or("")))
                        .collect();
                    PrimitiveValue::Tags(tags?.into())
                }
                _ => {
                    let texts: Result<Vec<String>, Error> =
                        values.iter().map(|v| text(key, v)).collect();
                    PrimitiveValue::Strs(texts?.into())
                }
            };
            DataElement::new(tag, vr, value)
        } else {
            DataElement::new(tag, vr, PrimitiveValue::Empty)
        };
        obj.put(element);
    }
    if obj.iter().any(|e| {
        matches!(
            e.vr(),
            VR::LO | VR::LT | VR::PN | VR::SH | VR::ST | VR::UC | VR::UT
        )
    }) {
        obj.put(DataElement::new(
            tags::SPECIFIC_CHARACTER_SET,
            VR::CS,
            PrimitiveValue::from("ISO_IR 192"),
        ));
    }
    Ok(obj)
}

/// Only entry `n` (0-based) of a per-frame attribute of `frames` values.
fn keep_entry(object: &mut Map<String, Value>, key: &str, n: usize, frames: usize) {
    if let Some(values) = object
        .get_mut(key)
        .and_then(|a| a.get_mut("Value"))
        .and_then(Value::as_array_mut)
        && values.len() == frames
    {
        let v = values.swap_remove(n);
        *values = vec![v];
    }
}

/// A single-frame DICOM file (Part 10 bytes) of `frame` of the instance `metadata`
/// describes: its attributes (binary ones read through `bulk`), NumberOfFrames 1, of the
/// per-frame functional groups and of each vector the FrameIncrementPointer names only
/// this frame's entry, and the frame's pixels (native, or one encapsulated fragment in its
/// transfer syntax).
pub fn single_frame(
    metadata: &Attributes,
    frame: &Frame,
    bulk: &mut dyn FnMut(&str) -> Result<Vec<u8>, Error>,
) -> Result<Vec<u8>, Error> {
    let mut object = metadata.as_map().clone();
    let frames = metadata.number("00280008").unwrap_or(1).max(1) as usize;
    let n = frame.number as usize;
    if n == 0 || n > frames {
        return Err(Error::Url(format!(
            "frame {n}: the instance has frames 1 to {frames}"
        )));
    }
    for key in ["7FE00010", "7FE00008", "7FE00009"] {
        object.remove(key);
    }
    if frames > 1 {
        keep_entry(&mut object, "52009230", n - 1, frames);
        for pointer in metadata.strings("00280009") {
            keep_entry(&mut object, &pointer.to_ascii_uppercase(), n - 1, frames);
        }
        object.insert(
            "00280008".into(),
            serde_json::json!({"vr": "IS", "Value": ["1"]}),
        );
    }
    let sop_class = metadata
        .string("00080016")
        .ok_or_else(|| Error::Json("the metadata lacks its SOPClassUID (00080016)".into()))?;
    let sop_instance = metadata
        .string("00080018")
        .ok_or_else(|| Error::Json("the metadata lacks its SOPInstanceUID (00080018)".into()))?;
    let mut obj = dataset(&object, bulk)?;
    let ts = frame.transfer_syntax.as_str();
    let mut bytes = frame.bytes.clone();
    if bytes.len() % 2 == 1 {
        bytes.push(0);
    }
    let file_ts = if NATIVE.contains(&ts) {
        let vr = if metadata.number("00280100").unwrap_or(16) > 8 {
            VR::OW
        } else {
            VR::OB
        };
        obj.put(DataElement::new(
            tags::PIXEL_DATA,
            vr,
            PrimitiveValue::from(bytes),
        ));
        EXPLICIT_VR_LE
    } else if ts.starts_with("1.2.840.10008.1.2.") && ts != "1.2.840.10008.1.2.2" {
        obj.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OB,
            PixelFragmentSequence::new(Vec::<u32>::new(), vec![bytes]),
        ));
        ts
    } else {
        return Err(Error::Multipart(format!(
            "frame {n} came in transfer syntax {ts:?}: ask for little endian or a compressed one"
        )));
    };
    crate::part10::part10(
        obj,
        &sop_class,
        &sop_instance,
        file_ts,
        &format!("frame {n} as DICOM"),
    )
    .map_err(Error::Json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dicomweb::json::parse;

    fn part(ct: Option<&str>, body: &[u8]) -> Part {
        Part {
            headers: ct
                .map(|c| vec![("content-type".to_string(), c.to_string())])
                .unwrap_or_default(),
            body: body.to_vec(),
        }
    }

    #[test]
    fn frame_syntaxes() {
        // The part's own transfer syntax; else the response's `type`; else the default.
        let f = frames(
            &[2, 5],
            "multipart/related; type=\"application/octet-stream\"; boundary=x",
            vec![
                part(
                    Some("image/jls; transfer-syntax=1.2.840.10008.1.2.4.81"),
                    b"a",
                ),
                part(None, b"b"),
            ],
        )
        .unwrap();
        assert_eq!(
            (f[0].number, f[0].transfer_syntax.as_str()),
            (2, "1.2.840.10008.1.2.4.81")
        );
        assert_eq!(
            (f[1].number, f[1].transfer_syntax.as_str()),
            (5, EXPLICIT_VR_LE)
        );
        // Orthanc's form: the syntax inside the quoted `type`.
        let f = frames(
            &[1],
            "multipart/related; type=\"image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.51\"; boundary=x",
            vec![part(None, b"c")],
        )
        .unwrap();
        assert_eq!(f[0].transfer_syntax, "1.2.840.10008.1.2.4.51");
        assert_eq!(
            frames(
                &[1],
                "multipart/related; boundary=x",
                vec![part(Some("image/png"), b"")]
            )
            .unwrap_err()
            .to_string(),
            "malformed multipart body: frame 1: the part's type \"image/png\" names no transfer syntax"
        );
        assert!(
            frames(
                &[1, 2],
                "multipart/related; boundary=x",
                vec![part(None, b"")]
            )
            .unwrap_err()
            .to_string()
            .contains("asked for 2 frame(s), the server sent 1 part(s)")
        );
    }

    const META: &str = r#"[{
        "00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.4"]},
        "00080018": {"vr": "UI", "Value": ["1.2.3.4"]},
        "00080060": {"vr": "CS", "Value": ["MR"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane", "Ideographic": "山田^太郎"}]},
        "00180050": {"vr": "DS", "Value": [1.5]},
        "00200013": {"vr": "IS", "Value": [7]},
        "00280002": {"vr": "US", "Value": [1]},
        "00280004": {"vr": "CS", "Value": ["MONOCHROME2"]},
        "00280008": {"vr": "IS", "Value": [3]},
        "00280009": {"vr": "AT", "Value": ["00181065"]},
        "00181065": {"vr": "DS", "Value": [0, 10, 20]},
        "00280010": {"vr": "US", "Value": [2]},
        "00280011": {"vr": "US", "Value": [2]},
        "00280100": {"vr": "US", "Value": [16]},
        "00280101": {"vr": "US", "Value": [12]},
        "00280102": {"vr": "US", "Value": [11]},
        "00280103": {"vr": "US", "Value": [0]},
        "00281050": {"vr": "DS", "Value": [40]},
        "00281051": {"vr": "DS", "Value": [400]},
        "00283006": {"vr": "US", "InlineBinary": "AQACAA=="},
        "00290010": {"vr": "LO"},
        "00400275": {"vr": "SQ", "Value": [{"00401001": {"vr": "SH", "Value": ["RP1"]}}]},
        "52009230": {"vr": "SQ", "Value": [
            {"00209111": {"vr": "SQ", "Value": [{"00209057": {"vr": "UL", "Value": [1]}}]}},
            {"00209111": {"vr": "SQ", "Value": [{"00209057": {"vr": "UL", "Value": [2]}}]}},
            {"00209111": {"vr": "SQ", "Value": [{"00209057": {"vr": "UL", "Value": [3]}}]}}
        ]},
        "7FE00010": {"vr": "OW", "BulkDataURI": "http://pacs/bulk/7FE00010"}
    }]"#;

    #[test]
    fn single_frame_file() {
        let meta = parse(META.as_bytes()).unwrap().remove(0);
        let frame = Frame {
            number: 2,
            transfer_syntax: EXPLICIT_VR_LE.into(),
            bytes: vec![1, 0, 2, 0, 3, 0, 4, 0],
        };
        let mut asked = Vec::new();
        let bytes = single_frame(&meta, &frame, &mut |u| {
            asked.push(u.to_string());
            Ok(vec![])
        })
        .unwrap();
        // Pixel data is the frame's, never fetched as bulk data.
        assert!(asked.is_empty(), "{asked:?}");
        let image = crate::read(&bytes).unwrap();
        assert_eq!(
            (image.meta.rows, image.meta.cols, image.meta.frames),
            (2, 2, 1)
        );
        let obj = dicom_object::from_reader(&bytes[128..]).unwrap();
        let s = |t: Tag| obj.element(t).unwrap().to_str().unwrap().to_string();
        assert_eq!(s(tags::PATIENT_NAME), "Doe^Jane=山田^太郎");
        assert_eq!(s(tags::NUMBER_OF_FRAMES), "1");
        assert_eq!(s(tags::FRAME_TIME_VECTOR), "10");
        assert_eq!(s(tags::SPECIFIC_CHARACTER_SET), "ISO_IR 192");
        let pffg = obj
            .element(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
            .unwrap()
            .items()
            .unwrap();
        assert_eq!(pffg.len(), 1);
        let stack = pffg[0]
            .element(tags::FRAME_CONTENT_SEQUENCE)
            .unwrap()
            .items()
            .unwrap()[0]
            .element(tags::IN_STACK_POSITION_NUMBER)
            .unwrap()
            .to_int::<u32>()
            .unwrap();
        assert_eq!(stack, 2, "the frame's own functional group item");
        assert_eq!(
            obj.element(Tag(0x0028, 0x3006))
                .unwrap()
                .to_bytes()
                .unwrap()
                .as_ref(),
            &[1, 0, 2, 0]
        );
        // A compressed frame: one fragment in its own transfer syntax.
        let jls = Frame {
            number: 1,
            transfer_syntax: "1.2.840.10008.1.2.4.80".into(),
            bytes: vec![0xFF, 0xD8, 0xFF],
        };
        let bytes = single_frame(&meta, &jls, &mut |_| Ok(vec![])).unwrap();
        let obj = dicom_object::from_reader(&bytes[128..]).unwrap();
        assert_eq!(obj.meta().transfer_syntax(), "1.2.840.10008.1.2.4.80");
        // Out of range, and a big-endian frame: errors.
        let far = Frame {
            number: 4,
            ..frame.clone()
        };
        assert!(
            single_frame(&meta, &far, &mut |_| Ok(vec![]))
                .unwrap_err()
                .to_string()
                .contains("frames 1 to 3")
        );
        let be = Frame {
            transfer_syntax: "1.2.840.10008.1.2.2".into(),
            ..frame
        };
        assert!(
            single_frame(&meta, &be, &mut |_| Ok(vec![]))
                .unwrap_err()
                .to_string()
                .contains("little endian")
        );
    }

    #[test]
    fn base64_decoding() {
        assert_eq!(base64("AQACAA==").unwrap(), vec![1, 0, 2, 0]);
        assert_eq!(base64("TWFu").unwrap(), b"Man");
        assert_eq!(base64("TWE").unwrap(), b"Ma");
        assert_eq!(base64("T W\nE=").unwrap(), b"Ma");
        assert!(base64("TW$=").is_none());
    }

    #[test]
    fn bulk_data_by_reference() {
        let json = r#"{"00283006": {"vr": "US", "BulkDataURI": "http://pacs/bulk/lut"}, "00280010": {"vr": "US", "Value": [2]}}"#;
        let map: Map<String, Value> = serde_json::from_str(json).unwrap();
        let mut asked = Vec::new();
        let obj = dataset(&map, &mut |u| {
            asked.push(u.to_string());
            Ok(vec![9, 0])
        })
        .unwrap();
        assert_eq!(asked, vec!["http://pacs/bulk/lut"]);
        assert_eq!(
            obj.element(Tag(0x0028, 0x3006))
                .unwrap()
                .to_bytes()
                .unwrap()
                .as_ref(),
            &[9, 0]
        );
        // A bulk read that fails fails the whole.
        assert!(dataset(&map, &mut |_| Err(Error::Network("down".into()))).is_err());
        for key in ["aaa€bb", "0028001G"] {
            let bad: Map<String, Value> =
                serde_json::from_str(&format!(r#"{{"{key}": {{"vr": "US"}}}}"#)).unwrap();
            assert!(dataset(&bad, &mut |_| Ok(vec![])).is_err(), "{key}");
        }
        let bad: Map<String, Value> = serde_json::from_str(r#"{"0028001": {"vr": "US"}}"#).unwrap();
        assert!(
            dataset(&bad, &mut |_| Ok(vec![]))
                .unwrap_err()
                .to_string()
                .contains("8 hex digits")
        );
    }
}

//! The DICOM JSON model (PS3.18 F.2) of QIDO-RS answers and STOW-RS responses: an array of
//! objects keyed by 8-hex-digit tags, each `{"vr": ..., "Value": [...]}` (person names as
//! `{"Alphabetic": ...}`), into typed results.

use serde_json::Value;

use super::Error;

/// One object of a DICOM JSON array.
#[derive(Debug, Clone)]
pub struct Attributes(serde_json::Map<String, Value>);

impl Attributes {
    /// The object itself, tag keys to `{vr, Value | InlineBinary | BulkDataURI}`.
    pub fn as_map(&self) -> &serde_json::Map<String, Value> {
        &self.0
    }

    fn values(&self, tag: &str) -> &[Value] {
        self.0
            .get(tag)
            .and_then(|e| e.get("Value"))
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }

    /// Every value of `tag` (8 hex digits) as text (person names by their alphabetic
    /// form, numbers as written).
    pub fn strings(&self, tag: &str) -> Vec<String> {
        self.values(tag)
            .iter()
            .filter_map(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                Value::Object(o) => o
                    .get("Alphabetic")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                _ => None,
            })
            .collect()
    }

    /// The first value of `tag` as text.
    pub fn string(&self, tag: &str) -> Option<String> {
        self.strings(tag).into_iter().next()
    }

    /// The first value of `tag` as a number.
    pub fn number(&self, tag: &str) -> Option<u64> {
        self.values(tag).first().and_then(|v| match v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        })
    }

    /// The items of sequence `tag`.
    pub fn items(&self, tag: &str) -> Vec<Attributes> {
        self.values(tag)
            .iter()
            .filter_map(|v| v.as_object().cloned().map(Attributes))
            .collect()
    }
}

/// Parse a DICOM JSON array (an empty body, as some servers answer a search with no
/// match, is an empty list).
pub fn parse(body: &[u8]) -> Result<Vec<Attributes>, Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| Error::Json(e.to_string()))?;
    let items = match v {
        Value::Array(a) => a,
        Value::Object(o) => vec![Value::Object(o)],
        other => {
            return Err(Error::Json(format!(
                "expected an array of objects, got {}",
                match other {
                    Value::Null => "null",
                    Value::Bool(_) => "a boolean",
                    Value::Number(_) => "a number",
                    Value::String(_) => "a string",
                    _ => "something else",
                }
            )));
        }
    };
    items
        .into_iter()
        .map(|i| match i {
            Value::Object(o) => Ok(Attributes(o)),
            _ => Err(Error::Json(
                "an element of the array is not an object".into(),
            )),
        })
        .collect()
}

/// A study found by QIDO-RS.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Study {
    /// StudyInstanceUID.
    pub uid: String,
    /// PatientID.
    pub patient_id: String,
    /// PatientName (alphabetic form).
    pub patient_name: String,
    /// StudyDate.
    pub date: String,
    /// AccessionNumber.
    pub accession: String,
    /// StudyDescription.
    pub description: String,
    /// ModalitiesInStudy.
    pub modalities: Vec<String>,
    /// NumberOfStudyRelatedSeries.
    pub series: Option<u64>,
    /// NumberOfStudyRelatedInstances.
    pub instances: Option<u64>,
}

/// A series found by QIDO-RS.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Series {
    /// SeriesInstanceUID.
    pub uid: String,
    /// Modality.
    pub modality: String,
    /// SeriesNumber.
    pub number: Option<u64>,
    /// SeriesDescription.
    pub description: String,
    /// NumberOfSeriesRelatedInstances.
    pub instances: Option<u64>,
}

/// An instance found by QIDO-RS.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    /// SOPInstanceUID.
    pub uid: String,
    /// SOPClassUID.
    pub sop_class: String,
    /// InstanceNumber.
    pub number: Option<u64>,
    /// NumberOfFrames.
    pub frames: Option<u64>,
}

fn required(a: &Attributes, tag: &str, name: &str) -> Result<String, Error> {
    a.string(tag)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Error::Json(format!("a result lacks its {name} ({tag})")))
}

/// Studies from a QIDO-RS `/studies` answer.
pub fn studies(body: &[u8]) -> Result<Vec<Study>, Error> {
    parse(body)?
        .iter()
        .map(|a| {
            Ok(Study {
                uid: required(a, "0020000D", "StudyInstanceUID")?,
                patient_id: a.string("00100020").unwrap_or_default(),
                patient_name: a.string("00100010").unwrap_or_default(),
                date: a.string("00080020").unwrap_or_default(),
                accession: a.string("00080050").unwrap_or_default(),
                description: a.string("00081030").unwrap_or_default(),
                modalities: a.strings("00080061"),
                series: a.number("00201206"),
                instances: a.number("00201208"),
            })
        })
        .collect()
}

/// Series from a QIDO-RS `/series` answer.
pub fn series(body: &[u8]) -> Result<Vec<Series>, Error> {
    parse(body)?
        .iter()
        .map(|a| {
            Ok(Series {
                uid: required(a, "0020000E", "SeriesInstanceUID")?,
                modality: a.string("00080060").unwrap_or_default(),
                number: a.number("00200011"),
                description: a.string("0008103E").unwrap_or_default(),
                instances: a.number("00201209"),
            })
        })
        .collect()
}

/// Instances from a QIDO-RS `/instances` answer.
pub fn instances(body: &[u8]) -> Result<Vec<Instance>, Error> {
    parse(body)?
        .iter()
        .map(|a| {
            Ok(Instance {
                uid: required(a, "00080018", "SOPInstanceUID")?,
                sop_class: a.string("00080016").unwrap_or_default(),
                number: a.number("00200013"),
                frames: a.number("00280008"),
            })
        })
        .collect()
}

/// What a STOW-RS server did with one instance.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stored {
    /// SOPInstanceUID.
    pub uid: String,
    /// `success`, `warning` or `failure`.
    pub status: &'static str,
    /// WarningReason or FailureReason (hex, as PS3.18 Table 10.5.3-1 lists them), if any.
    pub reason: Option<String>,
}

/// The per-instance results of a STOW-RS response (PS3.18 10.5.3): ReferencedSOPSequence
/// (stored; a WarningReason makes it a warning) and FailedSOPSequence (with FailureReason).
pub fn stow_response(body: &[u8]) -> Result<Vec<Stored>, Error> {
    let mut out = Vec::new();
    for a in parse(body)? {
        for item in a.items("00081199") {
            let reason = item.number("00081196").map(|r| format!("{r:04X}"));
            out.push(Stored {
                uid: item.string("00081155").unwrap_or_default(),
                status: if reason.is_some() {
                    "warning"
                } else {
                    "success"
                },
                reason,
            });
        }
        for item in a.items("00081198") {
            out.push(Stored {
                uid: item.string("00081155").unwrap_or_default(),
                status: "failure",
                reason: item.number("00081197").map(|r| format!("{r:04X}")),
            });
        }
    }
    Ok(out)
}

//! A segment's prompt as the fronts receive it in JSON: an entry of `medfm segment
//! --segments`' prompts file, the node's `POST /api/segment`, a Python call. Each front
//! adds its own keys (where the start slice is); [`PromptSpec::split`] takes those out and
//! reads the rest, [`PromptSpec::job`] makes the [`SegmentJob`] by one rule.

use serde::Deserialize;

use super::SegmentJob;
use crate::Error;
use crate::dicom::seg::PALETTE;
use crate::pipeline::propagate::Options;
use crate::pipeline::{PixelPrompt, point_label};

/// One segment's prompt (JSON keys as the field names; `box` for [`PromptSpec::bbox`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptSpec {
    /// SegmentLabel (default `Segment N`, N its number).
    pub label: Option<String>,
    /// sRGB display colour (default: the palette's colour of its number).
    pub color: Option<[u8; 3]>,
    /// Box `[x0, y0, x1, y1]` in pixels of the start slice.
    #[serde(rename = "box")]
    pub bbox: Option<[f32; 4]>,
    /// Points `[x, y]` (foreground) or `[x, y, 0|1]`.
    #[serde(default)]
    pub points: Vec<Vec<f32>>,
    /// Carry the prompt through the series (else: the start slice only).
    #[serde(default)]
    pub propagate: bool,
    /// With `propagate`: slices each way at most (the official recipe's z range).
    pub extent: Option<usize>,
    /// With `propagate`: the stopping IoU (default 0.5).
    pub min_iou: Option<f32>,
}

/// Points as users give them: `[x, y]` (foreground) or `[x, y, label]`, label 1 or 0
/// ([`point_label`]); the rule of a prompts file, the node's requests and Python's calls.
pub fn points(given: &[Vec<f32>]) -> Result<Vec<(f32, f32, bool)>, Error> {
    given
        .iter()
        .map(|p| {
            let positive = match p[..] {
                [_, _] => true,
                [_, _, l] => {
                    point_label(l).map_err(|e| Error::bad_input(format!("point {p:?}: {e}")))?
                }
                _ => {
                    return Err(Error::bad_input(format!(
                        "a point is [x, y] or [x, y, 0|1], got {p:?}"
                    )));
                }
            };
            Ok((p[0], p[1], positive))
        })
        .collect()
}

impl PromptSpec {
    /// Reads a JSON object holding a prompt and a front's own keys `own`: the prompt, and
    /// the object of the `own` keys present (for the front to read). Any other key is
    /// refused by name.
    pub fn split(
        value: serde_json::Value,
        own: &[&str],
    ) -> Result<(PromptSpec, serde_json::Value), Error> {
        let serde_json::Value::Object(mut all) = value else {
            return Err(Error::bad_input("a segment's prompt is a JSON object"));
        };
        let mut mine = serde_json::Map::new();
        for key in own {
            if let Some(v) = all.remove(*key) {
                mine.insert((*key).to_string(), v);
            }
        }
        let spec = PromptSpec::deserialize(serde_json::Value::Object(all))
            .map_err(|e| Error::bad_input(e.to_string()))?;
        Ok((spec, serde_json::Value::Object(mine)))
    }

    /// The job of the `number`-th segment (from 1) on its start slice (`start` 0; the
    /// caller places it): label `Segment N` and the palette's N-th colour unless given.
    /// Refused: a point that is not `[x, y]` or `[x, y, 0|1]`, neither box nor points,
    /// `extent` or `min_iou` without `propagate`.
    pub fn job(&self, number: usize) -> Result<SegmentJob, Error> {
        let points = points(&self.points)?;
        if self.bbox.is_none() && points.is_empty() {
            return Err(Error::bad_input("give a \"box\" and/or \"points\""));
        }
        if !self.propagate && (self.extent.is_some() || self.min_iou.is_some()) {
            return Err(Error::bad_input(
                "\"extent\" and \"min_iou\" go with \"propagate\": true",
            ));
        }
        let index = number.saturating_sub(1);
        Ok(SegmentJob {
            label: self
                .label
                .clone()
                .unwrap_or_else(|| format!("Segment {}", index + 1)),
            color: Some(self.color.unwrap_or(PALETTE[index % PALETTE.len()])),
            start: 0,
            prompt: PixelPrompt {
                bbox: self.bbox,
                points,
                multimask: false,
            },
            propagate: self.propagate.then(|| Options {
                extent: self.extent,
                min_iou: self.min_iou.unwrap_or(Options::default().min_iou),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_front_keeps_its_keys_and_the_prompt_is_read_by_one_rule() {
        let (spec, own) = PromptSpec::split(
            json!({"slice": "a.dcm", "frame": 2, "box": [1, 2, 30, 40], "points": [[5, 6, 0]]}),
            &["slice", "frame", "series"],
        )
        .unwrap();
        assert_eq!(own, json!({"slice": "a.dcm", "frame": 2}));
        let job = spec.job(3).unwrap();
        assert_eq!(job.label, "Segment 3");
        assert_eq!(job.color, Some(PALETTE[2]));
        assert_eq!(job.prompt.bbox, Some([1.0, 2.0, 30.0, 40.0]));
        assert_eq!(job.prompt.points, vec![(5.0, 6.0, false)]);
        assert!(job.propagate.is_none());
        let err = |v: serde_json::Value| {
            PromptSpec::split(v, &["slice"])
                .and_then(|(s, _)| s.job(1))
                .unwrap_err()
                .to_string()
        };
        assert!(err(json!({"box": [1, 2, 3, 4], "colour": [1, 2, 3]})).contains("colour"));
        assert!(err(json!({"slice": "a"})).contains("give a \"box\""));
        assert!(err(json!({"box": [1, 2, 3, 4], "extent": 2})).contains("go with"));
        assert!(err(json!({"points": [[1, 2, 3, 4]]})).contains("a point is"));
        assert!(err(json!({"points": [[1, 2, 7]]})).contains("point [1.0, 2.0, 7.0]"));
        assert!(err(json!([1])).contains("JSON object"));
        let p = PromptSpec::split(json!({"box": [1, 2, 3, 4], "propagate": true}), &[])
            .unwrap()
            .0
            .job(1)
            .unwrap();
        assert_eq!(p.propagate.unwrap().min_iou, Options::default().min_iou);
    }
}

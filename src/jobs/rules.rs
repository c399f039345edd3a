//! Rules: which series get which jobs, and the segments of a `segment` job as boxes
//! relative to the series' middle slice. The edge node reads them from `node.toml`'s
//! `[[rule]]` tables, the archive batch (Python `medfm.batch --rule`) from a file of the
//! same tables ([`read_rules`]); both check them by [`Rule::check`], match series by
//! [`Rule::matches`] and turn the segments into jobs by [`Rule::segment_jobs`].

use serde::{Deserialize, Serialize};

use super::{PromptSpec, SegmentJob, Series};
use crate::Error;
use crate::dicom::InstanceIds;

/// A job a rule runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// Send the series' instances to the rule's destinations.
    Forward,
    /// Embed every frame of the series (as `medfm embed`, on the node's model) into the
    /// node's index, `<spool>/.node/index/` (`medfm search` reads the folder).
    Embed,
    /// Segment the series with the rule's `[[rule.segment]]` prompts (as `medfm segment
    /// --segments`, on the node's model); the SEG goes to the spool and the destinations.
    Segment,
}

/// One segment of a `segment` job: a box relative to the series' middle slice.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentRule {
    /// SegmentLabel.
    pub label: String,
    /// `[x0, y0, x1, y1]` as fractions (0..1) of the middle slice's columns and rows.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// Carry the mask through the series (the 3D recipe); else the middle slice only.
    #[serde(default)]
    pub propagate: bool,
    /// Slices each way at most (with propagate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extent: Option<usize>,
    /// Stop where the predicted IoU falls below this (with propagate; default 0.5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_iou: Option<f32>,
    /// sRGB display colour.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub color: Option<[u8; 3]>,
}

/// Jobs for the series that match every condition given (absent: any). Matching is
/// case-insensitive; `series_description` is a pattern with `*` and `?`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// What the node's jobs record of the rule (see [`Rule::key`]); unique. Absent: the
    /// rule's content names it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Modality (0008,0060), as given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modality: Option<String>,
    /// BodyPartExamined (0018,0015).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_part: Option<String>,
    /// SeriesDescription (0008,103E): a pattern with `*` and `?`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series_description: Option<String>,
    /// SOPClassUID (0008,0016).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sop_class: Option<String>,
    /// What to do with a matching series.
    pub jobs: Vec<JobKind>,
    /// Destinations (names) of `forward` and of results; empty: all destinations.
    #[serde(default)]
    pub send_to: Vec<String>,
    /// The segments of a `segment` job.
    #[serde(default, rename = "segment", skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<SegmentRule>,
}

impl Rule {
    /// The rule as the node's job records name it: its `name`, or, without one,
    /// `rule-` and a digest of its content. Either way not its position: rules can be
    /// reordered, added and removed while jobs wait, and each job still runs the rule it
    /// was made for (an edited unnamed rule is another rule; its waiting jobs fail with
    /// "no longer in the configuration").
    pub fn key(&self) -> String {
        if !self.name.is_empty() {
            return self.name.clone();
        }
        use sha2::Digest;
        let content = toml::to_string(self).unwrap_or_default();
        let digest = sha2::Sha256::digest(content.as_bytes());
        let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        format!("rule-{hex}")
    }

    /// Whether the series of `ids` (one of its instances) matches.
    pub fn matches(&self, ids: &InstanceIds) -> bool {
        let eq = |want: &Option<String>, got: &str| {
            want.as_ref()
                .is_none_or(|w| w.eq_ignore_ascii_case(got.trim()))
        };
        eq(&self.modality, &ids.modality)
            && eq(&self.body_part, &ids.body_part)
            && eq(&self.sop_class, &ids.sop_class_uid)
            && self.series_description.as_ref().is_none_or(|p| {
                glob(
                    &p.to_ascii_lowercase(),
                    &ids.series_description.to_ascii_lowercase(),
                )
            })
    }

    /// Whether `series` matches: its first instance's [`InstanceIds`], as the node
    /// matches a series by the instance that completed it (one series shares these).
    pub fn matches_series(&self, series: &Series) -> Result<bool, Error> {
        let first = series
            .images
            .first()
            .ok_or_else(|| Error::bad_input("the series has no instances"))?;
        Ok(self.matches(&first.ids()?))
    }

    /// What makes a rule wrong on its own (the node adds its destinations): no jobs, a
    /// segment job without segments or segments without one, box fractions outside
    /// `0 <= x0 < x1 <= 1, 0 <= y0 < y1 <= 1`, `min_iou` outside 0..1, `extent` or
    /// `min_iou` without `propagate`.
    pub fn check(&self) -> Result<(), Error> {
        if self.jobs.is_empty() {
            return Err(Error::bad_input("no jobs"));
        }
        if self.jobs.contains(&JobKind::Segment) == self.segments.is_empty() {
            return Err(Error::bad_input(
                "a segment job and [[rule.segment]] entries go together",
            ));
        }
        for s in &self.segments {
            let [x0, y0, x1, y1] = s.bbox;
            let unit = |v: f32| (0.0..=1.0).contains(&v);
            if !(unit(x0) && unit(y0) && unit(x1) && unit(y1)) || x0 >= x1 || y0 >= y1 {
                return Err(Error::bad_input(format!(
                    "segment {:?}: box fractions 0 <= x0 < x1 <= 1, 0 <= y0 < y1 <= 1",
                    s.label
                )));
            }
            if s.min_iou.is_some_and(|m| !(0.0..=1.0).contains(&m)) {
                return Err(Error::bad_input(format!(
                    "segment {:?}: min_iou outside 0..1",
                    s.label
                )));
            }
            if !s.propagate && (s.extent.is_some() || s.min_iou.is_some()) {
                return Err(Error::bad_input(format!(
                    "segment {:?}: extent and min_iou need propagate = true",
                    s.label
                )));
            }
        }
        Ok(())
    }

    /// The segment jobs of the rule's segments on `series`: each box's fractions as
    /// pixels of the middle slice (`x * (cols - 1)`, `y * (rows - 1)`), that slice the
    /// start, then the prompt rule of every front ([`PromptSpec::job`]: default colour by
    /// the segment's number).
    pub fn segment_jobs(&self, series: &Series) -> Result<Vec<SegmentJob>, Error> {
        if series.is_empty() {
            return Err(Error::bad_input("the series has no frames"));
        }
        let mid = series.len() / 2;
        let meta = series.meta(mid);
        let (cols, rows) = (meta.cols as f32, meta.rows as f32);
        self.segments
            .iter()
            .enumerate()
            .map(|(k, s)| {
                let [x0, y0, x1, y1] = s.bbox;
                let prompt = PromptSpec {
                    label: Some(s.label.clone()),
                    color: s.color,
                    bbox: Some([
                        x0 * (cols - 1.0),
                        y0 * (rows - 1.0),
                        x1 * (cols - 1.0),
                        y1 * (rows - 1.0),
                    ]),
                    points: Vec::new(),
                    propagate: s.propagate,
                    extent: s.extent,
                    min_iou: s.min_iou,
                };
                Ok(SegmentJob {
                    start: mid,
                    ..prompt.job(k + 1)?
                })
            })
            .collect()
    }
}

/// `*` any run of characters, `?` one character.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // Iterative matching with the last star's position (linear in practice).
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < t.len() {
        if i < p.len() && (p[i] == '?' || p[i] == t[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

/// Rules as a list is checked: each by [`Rule::check`], each known by its own
/// [`Rule::key`]. Errors name the rule by its number (from 1). `node.toml`'s rules and a
/// rules file.
pub fn check_rules(rules: &[Rule]) -> Result<(), Error> {
    for (i, r) in rules.iter().enumerate() {
        r.check()
            .map_err(|e| e.context(format!("rule {}", i + 1)))?;
        if let Some(j) = rules[..i].iter().position(|o| o.key() == r.key()) {
            return Err(Error::bad_input(format!(
                "rule {}: the same name as rule {} ({:?}); give each rule its own name",
                i + 1,
                j + 1,
                r.key()
            )));
        }
    }
    Ok(())
}

/// A rules file: `[[rule]]` tables as in `node.toml` and nothing else, checked by
/// [`check_rules`].
pub fn read_rules(text: &str) -> Result<Vec<Rule>, Error> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        rule: Vec<Rule>,
    }
    let file: File = toml::from_str(text).map_err(|e| Error::bad_input(e.to_string()))?;
    if file.rule.is_empty() {
        return Err(Error::bad_input("no [[rule]] in the rules file"));
    }
    check_rules(&file.rule)?;
    Ok(file.rule)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_with_stars_and_question_marks() {
        assert!(glob("a*b*c", "axxbyyc") && !glob("a*b*c", "axxbyy") && glob("*", ""));
        assert!(glob("fse ?? axial*", "fse pd axial obl") && !glob("?", ""));
    }

    #[test]
    fn a_rules_file_is_rules_only_and_each_is_checked() {
        let seg =
            "[[rule]]\nmodality = \"CT\"\njobs = [\"segment\"]\n[[rule.segment]]\nlabel = \"x\"\n";
        let ok = read_rules(&format!(
            "{seg}box = [0.1, 0.2, 0.4, 0.9]\npropagate = true"
        ))
        .unwrap();
        assert_eq!(ok[0].segments[0].bbox, [0.1, 0.2, 0.4, 0.9]);
        let err = |t: &str| read_rules(t).unwrap_err().to_string();
        assert!(err("").contains("no [[rule]]"));
        assert!(err("port = 104").contains("unknown field"));
        assert!(err(&format!("{seg}box = [0.5, 0.1, 0.4, 0.9]")).contains("rule 1: segment"));
        assert!(err(&format!("{seg}box = [0.1, 0.1, 0.4, 0.9]\nextent = 2")).contains("propagate"));
        assert!(err("[[rule]]\njobs = [\"segment\"]").contains("go together"));
        let named = "[[rule]]\nname = \"a\"\njobs = [\"embed\"]\n";
        assert!(err(&format!("{named}{named}")).contains("the same name as rule 1"));
    }
}

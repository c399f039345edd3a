//! DICOMweb resource URLs: `BASE/studies/UID[/series/UID[/instances/UID]]`, and QIDO-RS
//! queries. Credentials never live in a URL here (they travel as headers, from the
//! caller); a URL with a user or password is refused so it cannot end up in a log.

use super::Error;
pub use crate::is_uid;

/// A DICOMweb resource: the service root and the study, series and instance it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// The service root, e.g. `http://host:8042/dicom-web` (no trailing slash).
    pub base: String,
    /// StudyInstanceUID.
    pub study: Option<String>,
    /// SeriesInstanceUID (with a study).
    pub series: Option<String>,
    /// SOPInstanceUID (with a series).
    pub instance: Option<String>,
}

impl Resource {
    /// Parse `http(s)://host[:port]/root[/studies/UID[/series/UID[/instances/UID]]]`. The
    /// root is everything before `/studies` (the whole path when there is none).
    pub fn parse(url: &str) -> Result<Self, Error> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| Error::Url(format!("{url:?} is not an http(s) URL")))?;
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Err(Error::Url(format!(
                "{url:?}: DICOMweb is served over http or https, not {scheme}"
            )));
        }
        let authority = rest.split('/').next().unwrap_or("");
        if authority.contains('@') {
            return Err(Error::Url(
                "credentials in a URL are refused (they would be logged): pass a token or \
                 --user instead"
                    .into(),
            ));
        }
        if authority.is_empty() {
            return Err(Error::Url(format!("{url:?} has no host")));
        }
        if rest.contains(['?', '#']) {
            return Err(Error::Url(format!(
                "{url:?}: give the resource without a query or fragment"
            )));
        }
        let path = rest[authority.len()..].trim_end_matches('/');
        let segments: Vec<&str> = path.split('/').collect();
        let at = segments.iter().position(|s| *s == "studies");
        let (root, tail) = match at {
            Some(i) => (segments[..i].join("/"), &segments[i..]),
            None => (segments.join("/"), &segments[segments.len()..]),
        };
        let base = format!("{scheme}://{authority}{root}");
        let mut r = Resource {
            base,
            study: None,
            series: None,
            instance: None,
        };
        let mut it = tail.iter();
        while let Some(&key) = it.next() {
            let value = it
                .next()
                .copied()
                .ok_or_else(|| Error::Url(format!("{url:?}: `{key}` is not followed by a UID")))?;
            if !is_uid(value) {
                return Err(Error::Url(format!("{url:?}: {value:?} is not a DICOM UID")));
            }
            let slot = match (key, &r) {
                ("studies", Resource { study: None, .. }) => &mut r.study,
                (
                    "series",
                    Resource {
                        study: Some(_),
                        series: None,
                        ..
                    },
                ) => &mut r.series,
                (
                    "instances",
                    Resource {
                        series: Some(_),
                        instance: None,
                        ..
                    },
                ) => &mut r.instance,
                _ => {
                    return Err(Error::Url(format!(
                        "{url:?}: expected /studies/UID[/series/UID[/instances/UID]] after \
                         the service root, found `{key}`"
                    )));
                }
            };
            *slot = Some(value.to_string());
        }
        Ok(r)
    }

    /// The resource's URL (WADO-RS retrieve of the whole study, series or instance).
    pub fn url(&self) -> String {
        let mut u = self.base.clone();
        if let Some(s) = &self.study {
            u += &format!("/studies/{s}");
            if let Some(s) = &self.series {
                u += &format!("/series/{s}");
                if let Some(i) = &self.instance {
                    u += &format!("/instances/{i}");
                }
            }
        }
        u
    }

    /// `…/instances/UID/frames/1,2,…` of an instance: WADO-RS of those frames (numbered
    /// from 1, as DICOMweb counts).
    pub fn frames_url(&self, frames: &[u32]) -> Result<String, Error> {
        if self.instance.is_none() {
            return Err(Error::Url(format!(
                "{}: frames belong to an instance (…/instances/UID)",
                Resource::path_of(&self.url())
            )));
        }
        if frames.is_empty() || frames.contains(&0) {
            return Err(Error::Url(format!(
                "frames {frames:?}: give one or more, numbered from 1"
            )));
        }
        let list: Vec<String> = frames.iter().map(u32::to_string).collect();
        Ok(format!("{}/frames/{}", self.url(), list.join(",")))
    }

    /// `…/metadata` of the study, series or instance: its attributes as DICOM JSON.
    pub fn metadata_url(&self) -> Result<String, Error> {
        if self.study.is_none() {
            return Err(Error::Url(format!(
                "{}: metadata belongs to a study, series or instance",
                self.base
            )));
        }
        Ok(format!("{}/metadata", self.url()))
    }

    /// The STOW-RS endpoint of the service (`BASE/studies`).
    pub fn stow_url(&self) -> String {
        format!("{}/studies", self.base)
    }

    /// The URL's path (for messages: no scheme, host or credentials).
    pub fn path_of(url: &str) -> String {
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        match rest.find('/') {
            Some(i) => rest[i..].split('?').next().unwrap_or("").to_string(),
            None => "/".into(),
        }
    }
}

/// A QIDO-RS search. As JSON (the browser's `query`), its fields are camelCase
/// (`patientId`, `patientName`, `date`, `modality`, `accession`, `limit`, `offset`) and
/// an unknown one is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Query {
    /// PatientID (exact, or with `*` / `?` wildcards).
    pub patient_id: Option<String>,
    /// PatientName, with `*` / `?` wildcards.
    pub patient_name: Option<String>,
    /// StudyDate `YYYYMMDD` or a range `YYYYMMDD-YYYYMMDD` (either end open).
    pub date: Option<String>,
    /// ModalitiesInStudy (studies) or Modality (series, instances).
    pub modality: Option<String>,
    /// AccessionNumber.
    pub accession: Option<String>,
    /// At most this many results.
    pub limit: Option<u32>,
    /// Skip this many results.
    pub offset: Option<u32>,
}

/// What a QIDO-RS search lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// `/studies`.
    Studies,
    /// `/studies/UID/series`.
    Series,
    /// `/studies/UID/series/UID/instances`.
    Instances,
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'*' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl Query {
    /// Check the values a server would misread: a date or range of `YYYYMMDD`.
    pub fn validate(&self) -> Result<(), Error> {
        if let Some(d) = &self.date {
            let ok =
                |x: &str| x.is_empty() || (x.len() == 8 && x.bytes().all(|b| b.is_ascii_digit()));
            let parts: Vec<&str> = d.split('-').collect();
            let good = match parts[..] {
                [one] => !one.is_empty() && ok(one),
                [a, b] => ok(a) && ok(b) && !(a.is_empty() && b.is_empty()),
                _ => false,
            };
            if !good {
                return Err(Error::Url(format!(
                    "date {d:?}: use YYYYMMDD or a range YYYYMMDD-YYYYMMDD (an end may be open)"
                )));
            }
        }
        Ok(())
    }

    /// The search URL at `level` under `resource` (its study for series, its series for
    /// instances), with the attributes each result should carry (`includefield`).
    pub fn url(&self, resource: &Resource, level: Level) -> Result<String, Error> {
        self.validate()?;
        let mut u = resource.base.clone();
        let need = |what: &str| Error::Url(format!("searching {what} needs a study in the URL"));
        match level {
            Level::Studies => u += "/studies",
            Level::Series => {
                u += &format!(
                    "/studies/{}/series",
                    resource.study.as_ref().ok_or_else(|| need("series"))?
                )
            }
            Level::Instances => {
                let study = resource.study.as_ref().ok_or_else(|| need("instances"))?;
                let series = resource.series.as_ref().ok_or_else(|| {
                    Error::Url("searching instances needs a series in the URL".into())
                })?;
                u += &format!("/studies/{study}/series/{series}/instances");
            }
        }
        let mut q: Vec<String> = Vec::new();
        let mut put = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                q.push(format!("{k}={}", encode(v)));
            }
        };
        put("PatientID", &self.patient_id);
        put("PatientName", &self.patient_name);
        put("StudyDate", &self.date);
        put("AccessionNumber", &self.accession);
        let modality_key = match level {
            Level::Studies => "ModalitiesInStudy",
            _ => "Modality",
        };
        put(modality_key, &self.modality);
        if let Some(n) = self.limit {
            q.push(format!("limit={n}"));
        }
        if let Some(n) = self.offset {
            q.push(format!("offset={n}"));
        }
        let fields: &[&str] = match level {
            Level::Studies => &[
                "StudyDescription",
                "ModalitiesInStudy",
                "NumberOfStudyRelatedSeries",
                "NumberOfStudyRelatedInstances",
            ],
            Level::Series => &["SeriesDescription", "NumberOfSeriesRelatedInstances"],
            Level::Instances => &["NumberOfFrames", "Rows", "Columns"],
        };
        for f in fields {
            q.push(format!("includefield={f}"));
        }
        if !q.is_empty() {
            u += "?";
            u += &q.join("&");
        }
        Ok(u)
    }
}

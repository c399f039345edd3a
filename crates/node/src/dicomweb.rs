//! The spool as a DICOMweb subset for viewers (docs/node.md, "HTTP API"): QIDO-RS
//! studies, series and instances of a study, WADO-RS instances, series and studies as
//! multipart. Served by `http.rs`, behind its authorisation and limits.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use dicom_dictionary_std::tags;
use medfm::dicom::is_uid;
use serde_json::{Value, json};

use super::http::{Api, Reply, param};
use super::server::{Answer, CHUNK};
use super::spool::instances_of;
use medfm::dicomweb::multipart;

/// Folders of `dir` whose names are UIDs.
pub(crate) fn uid_dirs(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .filter(|n| is_uid(n))
                .map(|n| (n.to_string(), e.path()))
        })
        .collect();
    out.sort();
    out
}

/// The header of a file (up to its pixel data).
pub(crate) fn header(path: &Path) -> Result<dicom_object::DefaultDicomObject> {
    dicom_object::OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .with_context(|| format!("cannot read {}", path.display()))
}

pub(crate) fn text(obj: &dicom_object::DefaultDicomObject, tag: dicom_core::Tag) -> Option<String> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
        .filter(|s| !s.is_empty())
}

/// One DICOM JSON attribute (PS3.18 F.2), or nothing when absent.
fn attr(out: &mut serde_json::Map<String, Value>, tag: &str, vr: &str, value: Option<Value>) {
    match value {
        Some(v) if vr == "PN" => {
            out.insert(
                tag.into(),
                json!({ "vr": vr, "Value": [{ "Alphabetic": v }] }),
            );
        }
        Some(v) => {
            out.insert(tag.into(), json!({ "vr": vr, "Value": [v] }));
        }
        None => {
            out.insert(tag.into(), json!({ "vr": vr }));
        }
    }
}

pub(crate) fn study_dir(api: &Api, study: &str) -> Option<PathBuf> {
    is_uid(study)
        .then(|| api.work.root().join(study))
        .filter(|d| d.is_dir())
}

fn study_json(study: &str, dir: &Path) -> Result<Option<Value>> {
    let series = uid_dirs(dir);
    let mut first = None;
    let (mut modalities, mut instances) = (Vec::<String>::new(), 0);
    for (_, sdir) in &series {
        let files = instances_of(sdir)?;
        instances += files.len();
        if let Some(f) = files.first() {
            let h = header(f)?;
            if let Some(m) = text(&h, tags::MODALITY)
                && !modalities.contains(&m)
            {
                modalities.push(m);
            }
            first.get_or_insert(h);
        }
    }
    let Some(h) = first else { return Ok(None) };
    let mut o = serde_json::Map::new();
    attr(
        &mut o,
        "00080020",
        "DA",
        text(&h, tags::STUDY_DATE).map(Value::from),
    );
    attr(
        &mut o,
        "00080050",
        "SH",
        text(&h, tags::ACCESSION_NUMBER).map(Value::from),
    );
    o.insert(
        "00080061".into(),
        json!({ "vr": "CS", "Value": modalities }),
    );
    attr(
        &mut o,
        "00081030",
        "LO",
        text(&h, tags::STUDY_DESCRIPTION).map(Value::from),
    );
    attr(
        &mut o,
        "00100010",
        "PN",
        text(&h, tags::PATIENT_NAME).map(Value::from),
    );
    attr(
        &mut o,
        "00100020",
        "LO",
        text(&h, tags::PATIENT_ID).map(Value::from),
    );
    attr(&mut o, "0020000D", "UI", Some(study.into()));
    attr(&mut o, "00201206", "IS", Some(series.len().into()));
    attr(&mut o, "00201208", "IS", Some(instances.into()));
    Ok(Some(Value::Object(o)))
}

pub(crate) fn qido_studies(api: &Api, query: &str) -> Result<Reply> {
    let wanted = param(query, "StudyInstanceUID").or_else(|| param(query, "0020000D"));
    let mut out = Vec::new();
    for (study, dir) in uid_dirs(api.work.root()) {
        if wanted.is_some_and(|w| w != study) {
            continue;
        }
        if let Some(j) = study_json(&study, &dir)? {
            out.push(j);
        }
    }
    Ok(Reply::dicom_json(&Value::Array(out)))
}

pub(crate) fn qido_series(api: &Api, study: &str) -> Result<Reply> {
    let Some(dir) = study_dir(api, study) else {
        return Ok(Reply::error(404, format!("no study {study} in the spool")));
    };
    let mut out = Vec::new();
    for (series, sdir) in uid_dirs(&dir) {
        let files = instances_of(&sdir)?;
        let Some(f) = files.first() else { continue };
        let h = header(f)?;
        let mut o = serde_json::Map::new();
        attr(
            &mut o,
            "00080060",
            "CS",
            text(&h, tags::MODALITY).map(Value::from),
        );
        attr(
            &mut o,
            "0008103E",
            "LO",
            text(&h, tags::SERIES_DESCRIPTION).map(Value::from),
        );
        attr(&mut o, "0020000D", "UI", Some(study.into()));
        attr(&mut o, "0020000E", "UI", Some(series.into()));
        attr(
            &mut o,
            "00200011",
            "IS",
            text(&h, tags::SERIES_NUMBER).map(Value::from),
        );
        attr(&mut o, "00201209", "IS", Some(files.len().into()));
        out.push(Value::Object(o));
    }
    Ok(Reply::dicom_json(&Value::Array(out)))
}

pub(crate) fn qido_instances(api: &Api, study: &str, series: &str) -> Result<Reply> {
    let Some(dir) = study_dir(api, study)
        .filter(|_| is_uid(series))
        .map(|d| d.join(series))
        .filter(|d| d.is_dir())
    else {
        return Ok(Reply::error(
            404,
            format!("no series {series} of study {study} in the spool"),
        ));
    };
    let mut out = Vec::new();
    for f in instances_of(&dir)? {
        let h = header(&f)?;
        let mut o = serde_json::Map::new();
        attr(
            &mut o,
            "00080016",
            "UI",
            text(&h, tags::SOP_CLASS_UID).map(Value::from),
        );
        attr(
            &mut o,
            "00080018",
            "UI",
            text(&h, tags::SOP_INSTANCE_UID).map(Value::from),
        );
        attr(&mut o, "0020000D", "UI", Some(study.into()));
        attr(&mut o, "0020000E", "UI", Some(series.into()));
        attr(
            &mut o,
            "00200013",
            "IS",
            text(&h, tags::INSTANCE_NUMBER).map(Value::from),
        );
        attr(
            &mut o,
            "00280008",
            "IS",
            text(&h, tags::NUMBER_OF_FRAMES).map(Value::from),
        );
        out.push(Value::Object(o));
    }
    Ok(Reply::dicom_json(&Value::Array(out)))
}

/// WADO-RS: a study, a series or an instance as multipart/related application/dicom
/// (the Part 10 files as stored), streamed: one instance in memory at a time, whatever
/// the study's size. The boundary is random (128 bits); each file is checked not to hold
/// it before it goes out, and one that does ends the reply without its close delimiter
/// (a client sees a truncated body, never a wrong part).
pub(crate) fn wado(api: &Api, rest: &[&str]) -> Result<Answer> {
    // rest: [study] | [study, "series", series] | [study, "series", series, "instances", sop]
    let names = ["", "series", "", "instances", ""];
    let mut path = api.work.root().to_path_buf();
    for (i, part) in rest.iter().enumerate() {
        if i % 2 == 1 {
            if *part != names[i] {
                return Ok(Answer::Whole(Reply::error(404, "no such resource")));
            }
            continue;
        }
        if !is_uid(part) {
            return Ok(Answer::Whole(Reply::error(
                400,
                format!("{part:?} is not a UID"),
            )));
        }
        path = if i == 4 {
            path.join(format!("{part}.dcm"))
        } else {
            path.join(part)
        };
    }
    let files: Vec<PathBuf> = if rest.len() == 5 {
        vec![path].into_iter().filter(|p| p.is_file()).collect()
    } else if rest.len() == 3 {
        instances_of(&path)?
    } else {
        uid_dirs(&path)
            .into_iter()
            .map(|(_, d)| instances_of(&d))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect()
    };
    if files.is_empty() {
        return Ok(Answer::Whole(Reply::error(
            404,
            "nothing of that in the spool",
        )));
    }
    let boundary = multipart::boundary_for(&[])?;
    let head = hyper::Response::builder()
        .status(200)
        .header(
            "Content-Type",
            format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"),
        )
        .body(())?;
    Ok(Answer::Stream(
        head,
        Box::new(move |out| {
            for file in &files {
                let body = match std::fs::read(file) {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::error!(file = %file.display(), "WADO-RS: {e}; reply cut");
                        return;
                    }
                };
                if !multipart::fits(&boundary, &body) {
                    tracing::error!(file = %file.display(), "WADO-RS: the file holds the boundary; reply cut");
                    return;
                }
                if !out.send(multipart::part_head(&boundary, "application/dicom")) {
                    return;
                }
                for chunk in body.chunks(CHUNK) {
                    if !out.send(chunk.to_vec()) {
                        return;
                    }
                }
                if !out.send(b"\r\n".to_vec()) {
                    return;
                }
            }
            out.send(multipart::close(&boundary));
        }),
    ))
}

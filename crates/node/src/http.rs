//! The node's HTTP API (docs/node.md, "HTTP API"): status, the spool's studies, segment
//! on request, and the spool as a DICOMweb subset (QIDO-RS, WADO-RS) for viewers. On
//! 127.0.0.1 by default; bound elsewhere it needs `http_token` (Bearer) on every request.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use dicom_dictionary_std::tags;
use medfm::dicom::is_uid;
use serde_json::{Value, json};
use tiny_http::{Header, Method, Request, Response, Server};

use super::spool::{Spool, instances_of};
use super::work::Work;
use super::{Config, Counters, STOP, scu};

/// Requests served at once; more get 503.
const MAX_REQUESTS: usize = 8;
/// Largest request body (a segment request is a few hundred bytes).
const MAX_BODY: u64 = 1 << 20;

/// What the handlers share.
pub struct Api<'a> {
    pub config: &'a Config,
    pub spool: &'a Spool,
    pub work: &'a Work,
    pub counters: &'a Counters,
    pub started: Instant,
}

/// A reply: status, content type, body.
struct Reply(u16, String, Vec<u8>);

/// The content type of a file of the web app, by its extension.
fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript",
        "css" => "text/css",
        "wasm" => "application/wasm",
        "json" | "webmanifest" => "application/json",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        "ico" => "image/x-icon",
        "dcm" => "application/dicom",
        _ => "application/octet-stream",
    }
}

/// A file of `web_root` (the built web app, `trunk build --release` -> dist/): `/` is
/// index.html; only plain names (no `..`, no hidden files) are served.
fn static_file(api: &Api, segments: &[&str]) -> Reply {
    if segments
        .iter()
        .any(|s| s.starts_with('.') || s.contains('\\') || s.contains('%'))
    {
        return Reply::error(404, "no such file");
    }
    let mut path = PathBuf::from(&api.config.web_root);
    for s in segments {
        path.push(s);
    }
    if segments.is_empty() || path.is_dir() {
        path.push("index.html");
    }
    match std::fs::read(&path) {
        Ok(bytes) => Reply(200, content_type(&path).into(), bytes),
        Err(_) => Reply::error(404, "no such file"),
    }
}

impl Reply {
    fn json(status: u16, v: &Value) -> Reply {
        Reply(
            status,
            "application/json".into(),
            v.to_string().into_bytes(),
        )
    }
    fn dicom_json(v: &Value) -> Reply {
        Reply(
            200,
            "application/dicom+json".into(),
            v.to_string().into_bytes(),
        )
    }
    fn error(status: u16, message: impl std::fmt::Display) -> Reply {
        Reply::json(status, &json!({ "error": message.to_string() }))
    }
}

/// Serve until STOP, one thread per request (at most MAX_REQUESTS).
pub fn serve(server: &Server, api: &Api) {
    let active = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        while !STOP.load(Ordering::SeqCst) {
            let request = match server.recv_timeout(Duration::from_millis(200)) {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!("http: {e}");
                    continue;
                }
            };
            if active.load(Ordering::SeqCst) >= MAX_REQUESTS {
                let _ = respond(request, Reply::error(503, "busy: try again"));
                continue;
            }
            active.fetch_add(1, Ordering::SeqCst);
            let active = &active;
            scope.spawn(move || {
                handle(request, api);
                active.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
}

fn respond(request: Request, reply: Reply) -> std::io::Result<()> {
    let Reply(status, content_type, body) = reply;
    let header = Header::from_bytes("Content-Type", content_type.as_bytes()).expect("a header");
    request.respond(
        Response::from_data(body)
            .with_status_code(status)
            .with_header(header),
    )
}

fn handle(mut request: Request, api: &Api) {
    let method = request.method().clone();
    let url = request.url().to_string();
    let reply = if !authorised(&request, api.config) {
        tracing::warn!(%method, url, "http: refused, no valid token");
        Reply::error(401, "a valid token is needed (Authorization: Bearer ...)")
    } else {
        let (path, query) = url.split_once('?').unwrap_or((&url, ""));
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        match route(&method, &segments, query, &mut request, api) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(%method, url, "http: {e:#}");
                Reply::error(500, format!("{e:#}"))
            }
        }
    };
    if reply.0 >= 400 {
        tracing::info!(%method, url, status = reply.0, "http");
    }
    let _ = respond(request, reply);
}

fn authorised(request: &Request, config: &Config) -> bool {
    if config.http_token.is_empty() {
        return true;
    }
    let want = format!("Bearer {}", config.http_token);
    request
        .headers()
        .iter()
        .any(|h| h.field.equiv("Authorization") && constant_time_eq(h.value.as_str(), &want))
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn route(
    method: &Method,
    seg: &[&str],
    query: &str,
    request: &mut Request,
    api: &Api,
) -> Result<Reply> {
    Ok(match (method, seg) {
        (Method::Get, ["api", "health"]) => health(api),
        (Method::Get, ["api", "studies"]) => studies_summary(api)?,
        (Method::Post, ["api", "segment"]) => {
            let mut body = Vec::new();
            request
                .as_reader()
                .take(MAX_BODY)
                .read_to_end(&mut body)
                .context("reading the request")?;
            segment(api, &body)?
        }
        (Method::Get, ["api", "search"]) => search(api, query)?,
        (Method::Get, ["dicomweb", "studies"]) => qido_studies(api, query)?,
        (Method::Get, ["dicomweb", "studies", study, "series"]) => qido_series(api, study)?,
        (Method::Get, ["dicomweb", "studies", study, "series", series, "instances"]) => {
            qido_instances(api, study, series)?
        }
        (Method::Get, ["dicomweb", "studies", rest @ ..])
            if (1..=5).contains(&rest.len()) && rest.len() % 2 == 1 =>
        {
            wado(api, rest)?
        }
        (Method::Get, rest)
            if !api.config.web_root.is_empty()
                && !matches!(rest.first(), Some(&"api" | &"dicomweb")) =>
        {
            return Ok(static_file(api, rest));
        }
        (Method::Get, _) | (Method::Post, _) => Reply::error(404, "no such resource"),
        _ => Reply::error(405, "method not allowed"),
    })
}

fn health(api: &Api) -> Reply {
    let c = api.counters.snapshot();
    Reply::json(
        200,
        &json!({
            "status": "ok",
            "version": env!("CARGO_PKG_VERSION"),
            "ae_title": api.config.ae_title,
            "uptime_s": api.started.elapsed().as_secs(),
            "received": c,
            "queues": api.work.queues(),
            "last_errors": api.work.errors.lock().expect("lock").iter().cloned().collect::<Vec<_>>(),
            "disk": {
                "spool_bytes": api.spool.used(),
                "quota_bytes": api.config.quota_bytes(),
                "free_bytes": free_bytes(api.work.root()),
            },
        }),
    )
}

/// Bytes free on the spool's file system for the node's user.
fn free_bytes(path: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a valid C string and a zeroed struct to fill.
        if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
            return None;
        }
        Some(s.f_bavail as u64 * s.f_frsize as u64)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Folders of `dir` whose names are UIDs.
fn uid_dirs(dir: &Path) -> Vec<(String, PathBuf)> {
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
fn header(path: &Path) -> Result<dicom_object::DefaultDicomObject> {
    dicom_object::OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .with_context(|| format!("cannot read {}", path.display()))
}

fn text(obj: &dicom_object::DefaultDicomObject, tag: dicom_core::Tag) -> Option<String> {
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

fn study_dir(api: &Api, study: &str) -> Option<PathBuf> {
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

fn qido_studies(api: &Api, query: &str) -> Result<Reply> {
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

fn qido_series(api: &Api, study: &str) -> Result<Reply> {
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

fn qido_instances(api: &Api, study: &str, series: &str) -> Result<Reply> {
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
/// (the Part 10 files as stored).
fn wado(api: &Api, rest: &[&str]) -> Result<Reply> {
    // rest: [study] | [study, "series", series] | [study, "series", series, "instances", sop]
    let names = ["", "series", "", "instances", ""];
    let mut path = api.work.root().to_path_buf();
    for (i, part) in rest.iter().enumerate() {
        if i % 2 == 1 {
            if *part != names[i] {
                return Ok(Reply::error(404, "no such resource"));
            }
            continue;
        }
        if !is_uid(part) {
            return Ok(Reply::error(400, format!("{part:?} is not a UID")));
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
        return Ok(Reply::error(404, "nothing of that in the spool"));
    }
    let bodies: Vec<Vec<u8>> = files
        .iter()
        .map(std::fs::read)
        .collect::<std::io::Result<_>>()?;
    let refs: Vec<&[u8]> = bodies.iter().map(|b| b.as_slice()).collect();
    let boundary = medfm::dicomweb::multipart::boundary_for(&refs)?;
    let parts: Vec<(&str, &[u8])> = refs.iter().map(|b| ("application/dicom", *b)).collect();
    Ok(Reply(
        200,
        format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"),
        medfm::dicomweb::multipart::write(&boundary, &parts),
    ))
}

fn studies_summary(api: &Api) -> Result<Reply> {
    let mut out = Vec::new();
    for (study, dir) in uid_dirs(api.work.root()) {
        let mut series = Vec::new();
        for (uid, sdir) in uid_dirs(&dir) {
            let files = instances_of(&sdir)?;
            let Some(f) = files.first() else { continue };
            let h = header(f)?;
            series.push(json!({
                "series": uid,
                "modality": text(&h, tags::MODALITY),
                "description": text(&h, tags::SERIES_DESCRIPTION),
                "instances": files.len(),
            }));
        }
        out.push(json!({ "study": study, "series": series }));
    }
    Ok(Reply::json(200, &Value::Array(out)))
}

/// The value of `key` in a query string (no percent-decoding: UIDs and numbers only).
fn param<'q>(query: &'q str, key: &str) -> Option<&'q str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// The spool file of a SOP instance: of the series given, else of any series (any study).
fn find_instance(api: &Api, series: Option<&str>, instance: &str) -> Option<PathBuf> {
    if !is_uid(instance) || series.is_some_and(|s| !is_uid(s)) {
        return None;
    }
    uid_dirs(api.work.root())
        .into_iter()
        .flat_map(|(_, study)| uid_dirs(&study))
        .filter(|(uid, _)| series.is_none_or(|s| s == uid))
        .map(|(_, dir)| dir.join(format!("{instance}.dcm")))
        .find(|p| p.is_file())
}

/// `GET /api/search?instance=UID[&frame=N][&k=K]`: the index entries most similar to
/// that frame (`medfm search` over the node's index).
fn search(api: &Api, query: &str) -> Result<Reply> {
    let Some(instance) = param(query, "instance") else {
        return Ok(Reply::error(400, "instance=UID is needed"));
    };
    let (Ok(frame), Ok(k)) = (
        param(query, "frame").unwrap_or("0").parse::<u32>(),
        param(query, "k").unwrap_or("5").parse::<u32>(),
    ) else {
        return Ok(Reply::error(400, "frame and k are numbers"));
    };
    let Some(file) = find_instance(api, None, instance) else {
        return Ok(Reply::error(
            404,
            format!("no instance {instance} in the spool"),
        ));
    };
    let index = api.work.root().join(".node").join("index");
    if !index.is_dir() {
        return Ok(Reply::error(
            404,
            "the index is empty: no embed job has run",
        ));
    }
    let args = [
        "search".to_string(),
        index.display().to_string(),
        file.display().to_string(),
        "--frame".into(),
        frame.to_string(),
        "-k".into(),
        k.min(100).to_string(),
        "--json".into(),
    ];
    match api.work.run_model(&args) {
        Ok(stdout) => Ok(Reply(200, "application/json".into(), stdout)),
        Err(e) if format!("{e:#}").contains("exit status: 2") => {
            Ok(Reply::error(400, format!("{e:#}")))
        }
        Err(e) => Err(e),
    }
}

/// `POST /api/segment`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SegmentRequest {
    series: String,
    instance: String,
    #[serde(default)]
    frame: u32,
    #[serde(rename = "box")]
    bbox: Option<[f32; 4]>,
    #[serde(default)]
    points: Vec<Vec<f32>>,
    #[serde(default)]
    propagate: bool,
    extent: Option<usize>,
    min_iou: Option<f32>,
    label: Option<String>,
    send_to: Option<String>,
}

fn segment(api: &Api, body: &[u8]) -> Result<Reply> {
    let req: SegmentRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return Ok(Reply::error(400, format!("the request: {e}"))),
    };
    if !is_uid(&req.series) || !is_uid(&req.instance) {
        return Ok(Reply::error(400, "series and instance must be UIDs"));
    }
    let dest = match &req.send_to {
        Some(name) => match api.config.destinations.iter().find(|d| &d.name == name) {
            Some(d) => Some(d.clone()),
            None => {
                return Ok(Reply::error(
                    400,
                    format!("send_to {name:?} is not a [[destination]]"),
                ));
            }
        },
        None => None,
    };
    let Some(file) = find_instance(api, Some(&req.series), &req.instance) else {
        return Ok(Reply::error(
            404,
            format!(
                "no instance {} of series {} in the spool",
                req.instance, req.series
            ),
        ));
    };
    let mut prompt = json!({
        "label": req.label.clone().unwrap_or_else(|| "Segment 1".into()),
        "slice": file,
        "frame": req.frame,
        "propagate": req.propagate,
    });
    if let Some(b) = req.bbox {
        prompt["box"] = json!(b);
    }
    if !req.points.is_empty() {
        prompt["points"] = json!(req.points);
    }
    if let Some(e) = req.extent {
        prompt["extent"] = json!(e);
    }
    if let Some(m) = req.min_iou {
        prompt["min_iou"] = json!(m);
    }
    let name = format!("http-{}", super::records::new_id());
    let (ids, rel, summary) = match api.work.segment(api.spool, &name, &[prompt]) {
        Ok(r) => r,
        // The command's refusals (a box outside the image, a frame that does not exist)
        // are the request's fault.
        Err(e) if format!("{e:#}").contains("exit status: 2") => {
            return Ok(Reply::error(400, format!("{e:#}")));
        }
        Err(e) => return Err(e),
    };
    tracing::info!(
        series = req.series,
        seg = ids.sop_instance_uid,
        "segmented on request"
    );
    let send = match dest {
        None => json!(null),
        Some(d) => {
            let path = api.work.root().join(&rel);
            let outcome = scu::send(
                &d,
                &api.config.ae_title,
                std::slice::from_ref(&path),
                api.config.association_timeout(),
            )
            .and_then(|o| o.into_iter().next().context("no outcome"))
            .and_then(|o| o.result.map_err(|e| anyhow::anyhow!(e)));
            match outcome {
                Ok(()) => json!({ "destination": d.name, "status": "sent" }),
                Err(e) => {
                    api.work.queue(&d.name, vec![rel.clone()])?;
                    json!({ "destination": d.name, "status": "queued", "error": format!("{e:#}") })
                }
            }
        }
    };
    Ok(Reply::json(
        200,
        &json!({
            "seg_sop_instance_uid": ids.sop_instance_uid,
            "seg_series_instance_uid": ids.series_instance_uid,
            "study_instance_uid": ids.study_instance_uid,
            "segments": summary["segments"],
            "send": send,
        }),
    ))
}

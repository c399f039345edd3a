//! The node's HTTP API (docs/node.md, "HTTP API"): status, the spool's studies, segment
//! on request, and the spool as a DICOMweb subset (QIDO-RS, WADO-RS, in `dicomweb.rs`)
//! for viewers. The transport, its limits and its checks (Host, Origin, token) are
//! `server.rs`; here each request becomes an answer. An error answer has a kind and a
//! message and never names a file: a 500 says only that the log has the details.

use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use dicom_dictionary_std::tags;
use hyper::{Method, Response};
use medfm::dicom::is_uid;
use serde_json::{Value, json};

use super::dicomweb::{header, qido_instances, qido_series, qido_studies, text, uid_dirs, wado};
use super::runner::RunError;
use super::server::{Answer, CHUNK, Req};
use super::spool::{Spool, instances_of};
use super::work::Work;
use super::{Config, Counters, Stop, scu};
use medfm::jobs::{PromptSpec, SegmentJob};

/// What the handlers share.
pub struct Api<'a> {
    pub config: &'a Config,
    pub spool: &'a Spool,
    pub work: &'a Work,
    pub counters: &'a Counters,
    pub started: Instant,
    pub stop: &'a Stop,
    /// The DICOM listener's loop.
    pub listener: &'a super::liveness::Heartbeat,
}

/// A reply: status, content type, body.
pub(crate) struct Reply(pub u16, pub String, pub Vec<u8>);

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

/// A file of `web_root` (the built web app, `trunk build --release` -> dist/), streamed
/// from the disk (never read whole), with single byte ranges (`Range: bytes=a-b`, `a-`,
/// `-n`: 206; unsatisfiable: 416; several ranges: the whole file). `/` is index.html; only
/// plain names (no `..`, no hidden files) are served.
fn static_file(api: &Api, segments: &[&str], req: &Req) -> Result<Answer, Reply> {
    if segments
        .iter()
        .any(|s| s.starts_with('.') || s.contains('\\') || s.contains('%'))
    {
        return Err(Reply::error(404, "no such file"));
    }
    let mut path = PathBuf::from(&api.config.web_root);
    for s in segments {
        path.push(s);
    }
    if segments.is_empty() || path.is_dir() {
        path.push("index.html");
    }
    let not_found = |_| Reply::error(404, "no such file");
    let mut file = std::fs::File::open(&path).map_err(not_found)?;
    let total = file.metadata().map_err(not_found)?.len();
    let range = req
        .headers
        .get("range")
        .and_then(|v| v.to_str().ok())
        .map(|v| byte_range(v, total));
    let mut head = Response::builder()
        .header("Content-Type", content_type(&path))
        .header("Accept-Ranges", "bytes");
    let (status, start, len) = match range {
        None | Some(Ok(None)) => (200, 0, total),
        Some(Ok(Some((start, end)))) => {
            head = head.header("Content-Range", format!("bytes {start}-{end}/{total}"));
            (206, start, end - start + 1)
        }
        Some(Err(())) => {
            head = head.header("Content-Range", format!("bytes */{total}"));
            (416, 0, 0)
        }
    };
    file.seek(std::io::SeekFrom::Start(start))
        .map_err(|e| Reply::error(500, e))?;
    let head = head
        .status(status)
        .header("Content-Length", len)
        .body(())
        .map_err(|e| Reply::error(500, e))?;
    let mut file = file.take(len);
    Ok(Answer::Stream(
        head,
        Box::new(move |out| {
            let mut buf = vec![0u8; CHUNK];
            loop {
                match file.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if !out.send(buf[..n].to_vec()) {
                            return;
                        }
                    }
                }
            }
        }),
    ))
}

/// The one byte range of a `Range` header over `total` bytes, inclusive: `Ok(None)` to
/// serve the whole file (not a single `bytes` range), `Err` when unsatisfiable.
fn byte_range(value: &str, total: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let num = |s: &str| s.trim().parse::<u64>().map_err(|_| ());
    let (start, end) = match (a.trim().is_empty(), b.trim().is_empty()) {
        // The last n bytes.
        (true, false) => {
            let n = num(b)?;
            if n == 0 || total == 0 {
                return Err(());
            }
            (total.saturating_sub(n), total - 1)
        }
        (false, true) => (num(a)?, total.saturating_sub(1)),
        (false, false) => (num(a)?, num(b)?.min(total.saturating_sub(1))),
        (true, true) => return Err(()),
    };
    if start >= total || start > end {
        return Err(());
    }
    Ok(Some((start, end)))
}

impl Reply {
    pub(crate) fn json(status: u16, v: &Value) -> Reply {
        Reply(
            status,
            "application/json".into(),
            v.to_string().into_bytes(),
        )
    }
    pub(crate) fn dicom_json(v: &Value) -> Reply {
        Reply(
            200,
            "application/dicom+json".into(),
            v.to_string().into_bytes(),
        )
    }
    /// An error answer: `{"error": message, "kind": ...}`, the kind by the status.
    pub(crate) fn error(status: u16, message: impl std::fmt::Display) -> Reply {
        let kind = match status {
            400 | 408 | 413 | 415 | 416 => "bad_request",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "not_found",
            405 => "method_not_allowed",
            422 => "unsupported",
            503 => "busy",
            _ => "internal",
        };
        Reply::refusal(status, kind, &message.to_string())
    }

    pub(crate) fn refusal(status: u16, kind: &str, message: &str) -> Reply {
        Reply::json(status, &json!({ "error": message, "kind": kind }))
    }
}

/// Answer one request (on a pool thread of `server.rs`, after its checks).
pub(crate) fn handle(req: &Req, api: &Api) -> Answer {
    let (method, url) = (&req.method, &req.path);
    let segments: Vec<&str> = req.path.split('/').filter(|s| !s.is_empty()).collect();
    let web = *method == Method::GET
        && !api.config.web_root.is_empty()
        && !matches!(segments.first(), Some(&"api" | &"dicomweb"));
    let routed = if web {
        static_file(api, &segments, req).or_else(|reply| Ok(Answer::Whole(reply)))
    } else {
        route(method, &segments, &req.query, &req.body, api)
    };
    let reply = match routed {
        Ok(Answer::Whole(reply)) => reply,
        Ok(stream) => return stream,
        Err(e) => {
            tracing::error!(%method, url, "http: {e:#}");
            Reply::error(500, "internal error: the node's log has the details")
        }
    };
    if reply.0 >= 400 {
        tracing::info!(%method, url, status = reply.0, "http");
    }
    Answer::Whole(scrub(reply, api.work.root()))
}

/// An error answer never names the spool's folder (its messages may quote a file of it).
fn scrub(reply: Reply, root: &Path) -> Reply {
    let root = root.display().to_string();
    if reply.0 < 400 || root.is_empty() {
        return reply;
    }
    let text = String::from_utf8_lossy(&reply.2);
    if !text.contains(&root) {
        return reply;
    }
    Reply(
        reply.0,
        reply.1,
        text.replace(&root, "<spool>").into_bytes(),
    )
}

fn route(method: &Method, seg: &[&str], query: &str, body: &[u8], api: &Api) -> Result<Answer> {
    let (get, post) = (*method == Method::GET, *method == Method::POST);
    let reply = match seg {
        ["api", "health"] if get => health(api),
        ["api", "studies"] if get => studies_summary(api)?,
        ["api", "segment"] if post => segment(api, body)?,
        ["api", "search"] if get => search(api, query)?,
        ["dicomweb", "studies"] if get => qido_studies(api, query)?,
        ["dicomweb", "studies", study, "series"] if get => qido_series(api, study)?,
        ["dicomweb", "studies", study, "series", series, "instances"] if get => {
            qido_instances(api, study, series)?
        }
        ["dicomweb", "studies", rest @ ..]
            if get && (1..=5).contains(&rest.len()) && rest.len() % 2 == 1 =>
        {
            return wado(api, rest);
        }
        _ if get || post => Reply::error(404, "no such resource"),
        _ => Reply::error(405, "method not allowed"),
    };
    Ok(Answer::Whole(reply))
}

fn health(api: &Api) -> Reply {
    let c = api.counters.snapshot();
    let (step, step_s, ended) = api.work.liveness.now();
    let (since_pass_s, listener_ended) = api.listener.now();
    let (code, status) = verdict(
        (&step, step_s, ended),
        (since_pass_s, listener_ended),
        api.stop.is_stopped(),
        api.config.work_stuck_seconds,
    );
    Reply::json(
        code,
        &json!({
            "status": status,
            "work": { "step": step, "step_s": step_s, "ended": ended },
            "dicom_listener": { "since_pass_s": since_pass_s, "ended": listener_ended },
            "memory_budget": {
                "used_bytes": api.work.budget.used(),
                "limit_bytes": api.config.memory_budget_bytes(),
            },
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

/// A DICOM listener that has not passed its loop for this long is stuck (it passes at
/// least every 100 ms while it waits).
const LISTENER_STUCK_S: u64 = 10;

/// The health's verdict: 503 with the reason when the work thread has been in one step
/// (not idle) for `work_stuck_s` seconds or, the node not stopping (when both loops leave),
/// the work thread or the DICOM listener has ended or the listener has not passed for
/// [`LISTENER_STUCK_S`]; else 200 "ok". `work`: (step, seconds in it, ended); `listener`:
/// (seconds since its last pass, ended).
fn verdict(
    work: (&str, u64, bool),
    listener: (u64, bool),
    stopping: bool,
    work_stuck_s: u64,
) -> (u16, &'static str) {
    let (step, step_s, work_ended) = work;
    let (since_pass_s, listener_ended) = listener;
    if work_ended && !stopping {
        (503, "work thread ended")
    } else if listener_ended && !stopping {
        (503, "DICOM listener ended")
    } else if step != "idle" && step_s >= work_stuck_s {
        (503, "work thread stuck")
    } else if since_pass_s >= LISTENER_STUCK_S && !stopping {
        (503, "DICOM listener stuck")
    } else {
        (200, "ok")
    }
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
pub(crate) fn param<'q>(query: &'q str, key: &str) -> Option<&'q str> {
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
    let found = (|| -> Result<Vec<Value>> {
        let (index, _) = medfm::pipeline::embed::Index::read_folder(&index)?;
        let image = medfm::jobs::Series::read_file(&file)?;
        let q = api.work.runner.vector(&image, frame)?;
        if q.len() != index.dim {
            return Err(medfm::Error::bad_input(format!(
                "the index holds {}-d vectors, the query is {}-d",
                index.dim,
                q.len()
            ))
            .into());
        }
        Ok(index
            .search(&q, k.min(100) as usize)
            .into_iter()
            .map(|(i, score)| json!({ "score": score, "entry": index.meta[i] }))
            .collect())
    })();
    match found {
        Ok(hits) => Ok(Reply::json(200, &json!(hits))),
        Err(e) => model_error(e),
    }
}

/// A model run's error as the answer: busy or past `model_timeout_seconds` 503, the
/// request's fault (bad input: a frame that does not exist, a box outside the image) 400,
/// an image in an encoding this build does not decode 422, anything else the caller's
/// 500. By the error's kind, never its text.
fn model_error(e: anyhow::Error) -> Result<Reply> {
    let kind = match e.downcast_ref::<RunError>() {
        Some(RunError::Busy | RunError::TimedOut { .. }) => {
            return Ok(Reply::error(503, format!("{e:#}")));
        }
        // Transparent: the chain below it starts under the medfm::Error.
        Some(RunError::Failed(inner)) => Some(inner.kind()),
        None => e.chain().find_map(medfm::Error::kind_of),
    };
    match kind {
        Some(medfm::ErrorKind::BadInput) => Ok(Reply::error(400, format!("{e:#}"))),
        // The request is right, the image's encoding is not one this build decodes.
        Some(medfm::ErrorKind::Unsupported) => Ok(Reply::error(422, format!("{e:#}"))),
        _ => Err(e),
    }
}

/// `POST /api/segment`: a prompt ([`PromptSpec`]: label, color, box, points, propagate,
/// extent, min_iou) and these keys.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SegmentRequest {
    series: String,
    instance: String,
    #[serde(default)]
    frame: u32,
    send_to: Option<String>,
}

fn segment(api: &Api, body: &[u8]) -> Result<Reply> {
    let read = serde_json::from_slice(body)
        .map_err(|e| medfm::Error::bad_input(e.to_string()))
        .and_then(|v| PromptSpec::split(v, &["series", "instance", "frame", "send_to"]))
        .and_then(|(prompt, own)| {
            let req: SegmentRequest =
                serde_json::from_value(own).map_err(|e| medfm::Error::bad_input(e.to_string()))?;
            Ok((req, prompt))
        });
    let (req, prompt) = match read {
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
    let made = (|| -> Result<_> {
        let job = prompt.job(1)?;
        let dir = file.parent().context("an instance file in the spool")?;
        let series = medfm::jobs::Series::read(&[dir.to_path_buf()], &req.series)?;
        let Some(start) = series.slice_of(&req.instance, req.frame) else {
            return Err(medfm::Error::bad_input(format!(
                "frame {}: instance {} has no such frame",
                req.frame, req.instance
            ))
            .into());
        };
        let jobs = [SegmentJob { start, ..job }];
        api.work.segment(api.spool, &series, &jobs)
    })();
    let (ids, rel, summary) = match made {
        Ok(r) => r,
        Err(e) => return model_error(e),
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
            let outcome = scu::deliver(
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
            "segments": summary,
            "send": send,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::{LISTENER_STUCK_S, byte_range, verdict};

    #[test]
    fn health_turns_503_for_a_loop_that_ended_or_is_stuck() {
        let idle = ("idle", 5000, false);
        let fine = (0, false);
        assert_eq!(verdict(idle, fine, false, 60), (200, "ok"));
        // The work thread: ended, stuck in one step; idle for long is fine.
        assert_eq!(
            verdict(("idle", 0, true), fine, false, 60).1,
            "work thread ended"
        );
        assert_eq!(
            verdict(("job", 60, false), fine, false, 60).1,
            "work thread stuck"
        );
        assert_eq!(verdict(("job", 59, false), fine, false, 60).0, 200);
        // The DICOM listener: ended, or no pass for LISTENER_STUCK_S.
        assert_eq!(
            verdict(idle, (0, true), false, 60).1,
            "DICOM listener ended"
        );
        let late = (LISTENER_STUCK_S, false);
        assert_eq!(verdict(idle, late, false, 60).1, "DICOM listener stuck");
        assert_eq!(
            verdict(idle, (LISTENER_STUCK_S - 1, false), false, 60).0,
            200
        );
        // Stopping, both loops leave: not a fault.
        assert_eq!(
            verdict(("idle", 0, true), (99, true), true, 60),
            (200, "ok")
        );
    }

    #[test]
    fn byte_ranges_are_read_as_rfc_9110_says() {
        let r = |v: &str| byte_range(v, 8);
        assert_eq!(r("bytes=2-5"), Ok(Some((2, 5))));
        assert_eq!(r("bytes=4-"), Ok(Some((4, 7))));
        assert_eq!(r("bytes=-3"), Ok(Some((5, 7))));
        assert_eq!(r("bytes=-20"), Ok(Some((0, 7))));
        assert_eq!(r("bytes=0-100"), Ok(Some((0, 7))));
        // Several ranges, or another unit: the whole file.
        assert_eq!(r("bytes=0-1,4-5"), Ok(None));
        assert_eq!(r("items=0-1"), Ok(None));
        for bad in [
            "bytes=8-",
            "bytes=5-2",
            "bytes=abc",
            "bytes=-0",
            "bytes=-",
            "bytes=1",
        ] {
            assert_eq!(r(bad), Err(()), "{bad}");
        }
        assert_eq!(byte_range("bytes=0-", 0), Err(()));
    }
}

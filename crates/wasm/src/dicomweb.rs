//! DICOMweb for the browser: the library's protocol ([`medfm::dicomweb`]) for the
//! worker, which moves the bytes with `fetch` (www/worker.js). URLs, answers, the
//! streaming multipart parser and the STOW-RS body are the ones the CLI uses.

use js_sys::{Array, Object, Uint8Array};
use wasm_bindgen::prelude::*;

use super::{bad, err, set, to_js};
use medfm::dicomweb::url::{Level, Query, Resource};
use medfm::dicomweb::{Error, json, multipart};

/// The largest part a retrieve accepts (one instance): a whole-slide or long cine
/// instance beyond this would not fit the wasm heap anyway.
const MAX_PART: usize = 1 << 30;

/// The resource `server` (a service root, `http(s)://host[:port]/path`) with `study` and
/// `series` (UIDs, checked by the library's URL rule).
fn resource(server: &str, study: Option<&str>, series: Option<&str>) -> Result<Resource, Error> {
    let root = Resource::parse(server)?;
    if root.study.is_some() {
        return Err(Error::Url(format!(
            "{server:?}: give the service root (the URL before /studies)"
        )));
    }
    let mut url = root.base;
    if let Some(study) = study {
        url += &format!("/studies/{study}");
        if let Some(series) = series {
            url += &format!("/series/{series}");
        }
    } else if series.is_some() {
        return Err(Error::Url("a series needs its study".into()));
    }
    Resource::parse(&url)
}

/// A DICOMweb URL of `server` (its service root): `what` is `studies`, `series` or
/// `instances` (a QIDO-RS search with `query`: `{patientId, patientName, date, modality,
/// accession, limit, offset}`, series of `study`, instances of `series`), `retrieve`
/// (WADO-RS of `study`, or of its `series`) or `stow` (STOW-RS).
#[wasm_bindgen(js_name = dicomwebUrl)]
pub fn dicomweb_url(
    server: &str,
    what: &str,
    study: Option<String>,
    series: Option<String>,
    query: JsValue,
) -> Result<String, JsValue> {
    let r = resource(server, study.as_deref(), series.as_deref()).map_err(err)?;
    let query: Query = if query.is_undefined() || query.is_null() {
        Query::default()
    } else {
        serde_wasm_bindgen::from_value(query).map_err(|e| bad(format!("query: {e}")))?
    };
    let level = match what {
        "studies" => Level::Studies,
        "series" => Level::Series,
        "instances" => Level::Instances,
        "retrieve" if r.study.is_some() => return Ok(r.url()),
        "retrieve" => return Err(bad("a retrieve names a study (and maybe a series)")),
        "stow" => return Ok(r.stow_url()),
        _ => {
            return Err(bad(format!(
                "unknown DICOMweb request {what:?}: studies, series, instances, retrieve or stow"
            )));
        }
    };
    query.url(&r, level).map_err(err)
}

/// A DICOMweb answer as JS values: `what` is `studies`, `series`, `instances` (a QIDO-RS
/// answer: `[{uid, ...}]`, the fields of `medfm query --json`) or `stow` (a STOW-RS
/// response: `[{uid, status: 'success' | 'warning' | 'failure', reason}]`).
#[wasm_bindgen(js_name = dicomwebParse)]
pub fn dicomweb_parse(what: &str, body: &[u8]) -> Result<JsValue, JsValue> {
    match what {
        "studies" => to_js(&json::studies(body).map_err(err)?),
        "series" => to_js(&json::series(body).map_err(err)?),
        "instances" => to_js(&json::instances(body).map_err(err)?),
        "stow" => to_js(&json::stow_response(body).map_err(err)?),
        _ => Err(bad(format!("unknown DICOMweb answer {what:?}"))),
    }
}

/// The error of a refused request (`status` and the server's `body`), as the CLI says it:
/// `GET /path: HTTP 404: message`, code `bad-input` for 4xx, `io` otherwise.
#[wasm_bindgen(js_name = dicomwebHttpError)]
pub fn dicomweb_http_error(method: &str, url: &str, status: u16, body: &[u8]) -> JsValue {
    let method = if method.eq_ignore_ascii_case("POST") {
        "POST"
    } else {
        "GET"
    };
    err(Error::http(method, url, status, body))
}

/// A STOW-RS request body of `parts` (DICOM Part 10 instances): `{contentType, body}`.
#[wasm_bindgen(js_name = stowBody)]
pub fn stow_body(parts: Array) -> Result<JsValue, JsValue> {
    let bodies: Vec<Vec<u8>> = parts
        .iter()
        .map(|p| {
            p.dyn_into::<Uint8Array>()
                .map(|a| a.to_vec())
                .map_err(|_| bad("stowBody takes Uint8Arrays"))
        })
        .collect::<Result<_, _>>()?;
    if bodies.is_empty() {
        return Err(bad("nothing to store"));
    }
    for (i, b) in bodies.iter().enumerate() {
        medfm::dicom::read(b).map_err(|e| bad(format!("instance {}: {e}", i + 1)))?;
    }
    let refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
    let boundary = multipart::boundary_for(&refs).map_err(err)?;
    let parts: Vec<(&str, &[u8])> = refs.iter().map(|b| ("application/dicom", *b)).collect();
    let out = Object::new();
    set(
        &out,
        "contentType",
        format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"),
    );
    set(
        &out,
        "body",
        Uint8Array::from(&multipart::write(&boundary, &parts)[..]),
    );
    Ok(out.into())
}

/// The streaming multipart parser of a WADO-RS response: `feed` each chunk as it arrives
/// (returns the parts it completed, as `Uint8Array`s), `finish` at the end (an error
/// when the body was cut short).
#[wasm_bindgen]
pub struct MultipartParser {
    inner: Option<multipart::Parser>,
}

#[wasm_bindgen]
impl MultipartParser {
    /// A parser for a response with this Content-Type (its boundary, quoted or not).
    #[wasm_bindgen(constructor)]
    pub fn new(content_type: &str) -> Result<MultipartParser, JsValue> {
        let p = multipart::Parser::for_content_type(content_type).map_err(err)?;
        Ok(MultipartParser {
            inner: Some(p.with_max_part(MAX_PART)),
        })
    }

    /// The next chunk of the body; the parts it completed, in order.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Array, JsValue> {
        let p = self
            .inner
            .as_mut()
            .ok_or_else(|| bad("the parser has finished"))?;
        let out = Array::new();
        for part in p.feed(chunk).map_err(err)? {
            out.push(&Uint8Array::from(&part.body[..]));
        }
        Ok(out)
    }

    /// The body has ended: an error unless its closing boundary was seen.
    pub fn finish(&mut self) -> Result<(), JsValue> {
        let p = self
            .inner
            .take()
            .ok_or_else(|| bad("the parser has finished"))?;
        p.finish().map_err(err)
    }
}

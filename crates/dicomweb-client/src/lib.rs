//! medfm's DICOMweb client: WADO-RS retrieve, QIDO-RS search and STOW-RS store over
//! HTTP(S), blocking. The protocol (URLs, DICOM JSON, multipart, frames) is the core's
//! ([`medfm_dicom::dicomweb`]); this crate moves its bytes with ureq and rustls, for every
//! native front (the command line, the Python package). The browser has its own transport
//! (`fetch`).
//!
//! Bounds: a connect timeout ([`CONNECT_TIMEOUT`]), a timeout for a response's head and
//! for every read and write ([`READ_TIMEOUT`]), a largest instance ([`MAX_PART`]), a largest
//! JSON answer ([`MAX_JSON`]) and error body ([`MAX_ERROR_BODY`]). An https URL never
//! leaves https, redirects included, so credentials and images never cross the network
//! in clear text once the caller asked for TLS.
//!
//! Credentials ([`Auth`]): a bearer token or a basic user and password, sent as a header,
//! never printed, logged or put in an error.

use std::io::Read;

use medfm_dicom::dicomweb::url::Resource;
use medfm_dicom::dicomweb::{Error, multipart};

/// The longest wait for a connection.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// The longest wait for one read or write on the connection, and for a response's head.
pub const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Largest part (an instance, a frame, a bulk data value) of a multipart answer: one is
/// held whole.
pub const MAX_PART: usize = 1 << 31;
/// Largest JSON answer (a search's results, an instance's metadata).
pub const MAX_JSON: u64 = 64 << 20;
/// Largest part of an error answer kept for its message.
pub const MAX_ERROR_BODY: u64 = 4096;
/// Largest answer to a store (its per-instance results).
pub const MAX_STORE_ANSWER: u64 = 16 << 20;

/// The environment variable of a bearer token, where the caller gives none.
pub const TOKEN_VAR: &str = "MEDFM_DICOMWEB_TOKEN";
/// The environment variable of basic credentials `USER:PASSWORD`, where the caller gives
/// none.
pub const USER_VAR: &str = "MEDFM_DICOMWEB_USER";

/// Credentials for a DICOMweb server: the `Authorization` header's value, or none.
#[derive(Clone, Default)]
pub struct Auth(Option<String>);

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.write_str(match &self.0 {
            None => "Auth(none)",
            Some(a) if a.starts_with("Bearer ") => "Auth(bearer)",
            Some(_) => "Auth(basic)",
        })
    }
}

impl Auth {
    /// No credentials.
    pub fn none() -> Auth {
        Auth(None)
    }

    /// A bearer `token` or basic `user` (`USER:PASSWORD`), at most one of them. When both
    /// are `None`, the environment's ([`TOKEN_VAR`], [`USER_VAR`]): the caller's
    /// credentials win over the environment's, never mixed with them.
    pub fn new(token: Option<String>, user: Option<String>) -> Result<Auth, Error> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let (token, user) = match (token, user) {
            (None, None) => (env(TOKEN_VAR), env(USER_VAR)),
            given => given,
        };
        match (token, user) {
            (Some(_), Some(_)) => Err(Error::Url(format!(
                "give a token or a user (or {TOKEN_VAR} / {USER_VAR}), not both"
            ))),
            (Some(t), None) => Ok(Auth(Some(format!("Bearer {t}")))),
            (None, Some(u)) if !u.contains(':') => Err(Error::Url(
                "DICOMweb basic credentials take USER:PASSWORD".into(),
            )),
            (None, Some(u)) => Ok(Auth(Some(format!("Basic {}", base64(u.as_bytes()))))),
            (None, None) => Ok(Auth(None)),
        }
    }
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Is `s` a DICOMweb URL (rather than a path)?
pub fn is_url(s: &str) -> bool {
    let lower = |n: usize| s.get(..n).map(str::to_ascii_lowercase);
    lower(7).as_deref() == Some("http://") || lower(8).as_deref() == Some("https://")
}

/// A response: ureq's.
pub type Response = ureq::http::Response<ureq::Body>;

/// An HTTP client with the caller's credentials (see the crate docs for its bounds).
pub struct Client {
    /// For http URLs.
    agent: ureq::Agent,
    /// For https URLs: https only, redirects included.
    agent_https: ureq::Agent,
    auth: Auth,
}

/// The HTTP agent: connect, response and per-read/per-write timeouts; https only when
/// `https_only`.
fn agent(https_only: bool) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .https_only(https_only)
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_recv_response(Some(READ_TIMEOUT))
        .timeout_per_read(Some(READ_TIMEOUT))
        .timeout_per_write(Some(READ_TIMEOUT))
        .build()
        .into()
}

impl Client {
    /// A client sending `auth`.
    pub fn new(auth: Auth) -> Client {
        Client {
            agent: agent(false),
            agent_https: agent(true),
            auth,
        }
    }

    /// The agent for `url`: https URLs never leave https.
    fn agent_for(&self, url: &str) -> &ureq::Agent {
        if url
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
        {
            &self.agent_https
        } else {
            &self.agent
        }
    }

    fn network(method: &'static str, url: &str, e: ureq::Error) -> Error {
        Error::Network(format!(
            "{method} {}: {e} (is the server running and the URL right?)",
            Resource::path_of(url)
        ))
    }

    /// An error status as [`Error::Http`] with the start of the server's message.
    fn check(method: &'static str, url: &str, resp: Response) -> Result<Response, Error> {
        let status = resp.status().as_u16();
        if status < 400 {
            return Ok(resp);
        }
        let mut body = Vec::new();
        let _ = resp
            .into_body()
            .into_with_config()
            .limit(MAX_ERROR_BODY)
            .reader()
            .take(MAX_ERROR_BODY)
            .read_to_end(&mut body);
        Err(Error::http(method, url, status, &body))
    }

    /// A GET of `url` accepting `accept`; an error status is an error.
    pub fn get(&self, url: &str, accept: &str) -> Result<Response, Error> {
        let mut req = self.agent_for(url).get(url).header("Accept", accept);
        if let Some(a) = &self.auth.0 {
            req = req.header("Authorization", a);
        }
        let resp = req.call().map_err(|e| Self::network("GET", url, e))?;
        Self::check("GET", url, resp)
    }

    /// A GET of a multipart answer, whole (at most [`MAX_PART`]: one frame or bulk value,
    /// not a series): its Content-Type and parts.
    pub fn get_parts(
        &self,
        url: &str,
        accept: &str,
    ) -> Result<(String, Vec<multipart::Part>), Error> {
        let resp = self.get(url, accept)?;
        let ct = content_type(&resp);
        let body = resp
            .into_body()
            .into_with_config()
            .limit(MAX_PART as u64)
            .read_to_vec()
            .map_err(|e| Self::network("GET", url, e))?;
        let mut parser = multipart::Parser::for_content_type(&ct)?.with_max_part(MAX_PART);
        let parts = parser.feed(&body)?;
        parser.finish()?;
        Ok((ct, parts))
    }

    /// A GET of a DICOM JSON answer, whole (at most [`MAX_JSON`]); empty for 204 No
    /// Content.
    pub fn get_json(&self, url: &str) -> Result<Vec<u8>, Error> {
        let resp = self.get(url, "application/dicom+json")?;
        if resp.status().as_u16() == 204 {
            return Ok(Vec::new());
        }
        resp.into_body()
            .into_with_config()
            .limit(MAX_JSON)
            .read_to_vec()
            .map_err(|e| Self::network("GET", url, e))
    }

    /// A POST of `body` (`content_type`) accepting DICOM JSON, as STOW-RS sends: the status
    /// and the answer (at most [`MAX_STORE_ANSWER`]). 409 Conflict is an answer, not an
    /// error: a store's per-instance results come with it.
    pub fn post(
        &self,
        url: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<(u16, Vec<u8>), Error> {
        let mut req = self
            .agent_for(url)
            .post(url)
            .header("Accept", "application/dicom+json")
            .header("Content-Type", content_type);
        if let Some(a) = &self.auth.0 {
            req = req.header("Authorization", a);
        }
        let resp = req.send(body).map_err(|e| Self::network("POST", url, e))?;
        let status = resp.status().as_u16();
        let resp = if status == 409 {
            resp
        } else {
            Self::check("POST", url, resp)?
        };
        let answer = resp
            .into_body()
            .into_with_config()
            .limit(MAX_STORE_ANSWER)
            .read_to_vec()
            .map_err(|e| Self::network("POST", url, e))?;
        Ok((status, answer))
    }

    /// STOW-RS of `instances` (Part 10 files) to the service `root` (`ROOT/studies`), in
    /// one multipart request: the HTTP status and each instance's result (PS3.18 10.5.3).
    /// An answer of another status than 200, 202 or 409 is an error; so is one that
    /// reports fewer instances than were sent.
    pub fn store(
        &self,
        root: &str,
        instances: &[&[u8]],
    ) -> Result<(u16, Vec<medfm_dicom::dicomweb::json::Stored>), Error> {
        let url = Resource::parse(root)?.stow_url();
        let boundary = multipart::boundary_for(instances)?;
        let parts: Vec<(&str, &[u8])> = instances
            .iter()
            .map(|b| ("application/dicom", *b))
            .collect();
        let body = multipart::write(&boundary, &parts);
        let (status, answer) = self.post(
            &url,
            &format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"),
            &body,
        )?;
        let results = medfm_dicom::dicomweb::json::stow_response(&answer)?;
        if results.len() < instances.len() {
            return Err(Error::Http {
                method: "POST",
                path: Resource::path_of(&url),
                status,
                message: format!(
                    "{} instance(s) sent, {} reported",
                    instances.len(),
                    results.len()
                ),
            });
        }
        Ok((status, results))
    }

    /// WADO-RS retrieve of `url` (a study, series or instance), streamed: `each` gets every
    /// instance's bytes as soon as its part has arrived, with its 1-based number in the
    /// answer, and nothing else is kept; `progress` gets the bytes received so far and the
    /// instances. Instances as stored, or in `transfer_syntax` (a UID: the server
    /// transcodes, or refuses with 406). Returns the number of instances; none is an
    /// error, as is an answer cut short (after `each` had the instances before the cut).
    pub fn retrieve_each<E: From<Error>>(
        &self,
        url: &str,
        transfer_syntax: Option<&str>,
        mut each: impl FnMut(usize, Vec<u8>) -> Result<(), E>,
        mut progress: impl FnMut(u64, usize),
    ) -> Result<usize, E> {
        let resource = Resource::parse(url)?;
        if resource.study.is_none() {
            return Err(Error::Url(format!(
                "{}: name a study, series or instance to retrieve (…/studies/UID[…])",
                Resource::path_of(url)
            ))
            .into());
        }
        let accept = medfm_dicom::dicomweb::accept_instances(transfer_syntax)?;
        let target = resource.url();
        let resp = self.get(&target, &accept)?;
        let ct = content_type(&resp);
        let mut parser = multipart::Parser::for_content_type(&ct)?.with_max_part(MAX_PART);
        // The parser bounds what is held (one part); the body's length is the archive's.
        let mut reader = resp.into_body().into_with_config().limit(u64::MAX).reader();
        let mut buf = vec![0u8; 1 << 16];
        let (mut count, mut bytes) = (0usize, 0u64);
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    return Err(Error::Truncated(format!(
                        "GET {}: the connection failed after {count} instance(s): {e}",
                        Resource::path_of(&target),
                    ))
                    .into());
                }
            };
            bytes += n as u64;
            for part in parser.feed(&buf[..n])? {
                count += 1;
                each(count, part.body)?;
            }
            progress(bytes, count);
        }
        parser.finish().map_err(|e| match e {
            Error::Truncated(m) => Error::Truncated(format!(
                "GET {}: {m} ({count} instance(s) received)",
                Resource::path_of(&target),
            )),
            e => e,
        })?;
        if count == 0 {
            return Err(Error::Url(format!(
                "{}: the server sent no instance",
                Resource::path_of(&target)
            ))
            .into());
        }
        Ok(count)
    }
}

/// The Content-Type of `resp` ("" when absent).
pub fn content_type(resp: &Response) -> String {
    resp.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// `scheme://authority` of a URL, lower-cased.
pub fn origin_of(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    format!("{}://{}", scheme, authority).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_urls_never_leave_https() {
        let c = Client::new(Auth::none());
        assert!(
            c.agent_for("https://pacs.example/dicomweb")
                .config()
                .https_only()
        );
        assert!(
            c.agent_for("HTTPS://pacs.example/dicomweb")
                .config()
                .https_only()
        );
        assert!(
            !c.agent_for("http://127.0.0.1:8042/dicom-web")
                .config()
                .https_only()
        );
        let a = c.agent_for("https://x");
        assert_eq!(a.config().timeout_per_read(), Some(READ_TIMEOUT));
        assert_eq!(a.config().timeouts().connect, Some(CONNECT_TIMEOUT));
    }

    #[test]
    fn credentials_one_kind_never_shown() {
        let both = Auth::new(Some("t".into()), Some("u:p".into()));
        assert!(matches!(both, Err(Error::Url(m)) if m.contains("not both")));
        assert!(matches!(
            Auth::new(None, Some("nopassword".into())),
            Err(Error::Url(_))
        ));
        let basic = Auth::new(None, Some("Aladdin:open sesame".into())).unwrap();
        assert_eq!(
            basic.0.as_deref(),
            Some("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")
        );
        assert_eq!(format!("{basic:?}"), "Auth(basic)");
        let bearer = Auth::new(Some("secret".into()), None).unwrap();
        assert!(!format!("{bearer:?}").contains("secret"));
    }

    #[test]
    fn urls_and_paths() {
        assert!(is_url("http://h/dicom-web/studies/1"));
        assert!(is_url("HTTPS://h/x"));
        assert!(!is_url("/data/http://x"));
        assert!(!is_url("series/ct"));
        assert!(!is_url("ht"));
        assert_eq!(origin_of("HTTP://H:80/a?b"), "http://h:80");
    }
}

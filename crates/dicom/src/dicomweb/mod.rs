//! DICOMweb (PS3.18) without the transport: what a client says and understands, so the
//! CLI (over HTTP natively), the coming edge node and the browser (over `fetch`) share one
//! implementation. The shells only move bytes.
//!
//! - [`url`]: QIDO-RS search URLs (studies, series, instances of a study; PatientID,
//!   PatientName with wildcards, StudyDate ranges, ModalitiesInStudy, AccessionNumber,
//!   limit/offset) and WADO-RS / STOW-RS resource URLs, parsed from and built to text.
//! - [`json`]: the DICOM JSON model of QIDO-RS answers and STOW-RS responses, into typed
//!   results.
//! - [`frames`]: WADO-RS frames and metadata: one frame of a multi-frame instance as a
//!   single-frame DICOM file, without retrieving the rest.
//! - [`multipart`]: the streaming `multipart/related` parser of WADO-RS responses and the
//!   writer of STOW-RS requests.
//! - [`accept_instances`]: the `Accept` header of a WADO-RS retrieve (as stored, or in a
//!   transfer syntax the server transcodes to).

pub mod frames;
pub mod json;
pub mod multipart;
pub mod url;

/// What went wrong talking DICOMweb.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A multipart body that does not follow RFC 2046.
    #[error("malformed multipart body: {0}")]
    Multipart(String),
    /// A multipart body that ended early (a dropped connection, a server that died).
    #[error("truncated response: {0}")]
    Truncated(String),
    /// A JSON answer that is not the DICOM JSON model.
    #[error("malformed DICOM JSON: {0}")]
    Json(String),
    /// A URL or query that is not a DICOMweb resource.
    #[error("{0}")]
    Url(String),
    /// The server answered with an error status.
    #[error("{method} {path}: HTTP {status}{}", if message.is_empty() { String::new() } else { format!(": {message}") })]
    Http {
        /// GET, POST.
        method: &'static str,
        /// The URL path (no credentials, no query).
        path: String,
        /// HTTP status.
        status: u16,
        /// What the server said (its body, shortened).
        message: String,
    },
    /// The server could not be reached or the connection failed.
    #[error("{0}")]
    Network(String),
}

impl Error {
    /// The error of a request the server refused: `status` with the start of its `body`
    /// (whitespace folded, at most 300 characters), and for 401 / 403 a hint to check the
    /// credentials. `url` is reduced to its path ([`url::Resource::path_of`]), so neither a
    /// query nor a host's credentials reach a message.
    pub fn http(method: &'static str, url: &str, status: u16, body: &[u8]) -> Error {
        let text = String::from_utf8_lossy(&body[..body.len().min(4096)]);
        let folded = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let message = if status == 401 || status == 403 {
            format!("{folded} (check the credentials: a token or a user and password)")
                .trim()
                .to_string()
        } else {
            folded.chars().take(300).collect()
        };
        Error::Http {
            method,
            path: url::Resource::path_of(url),
            status,
            message,
        }
    }

    /// The kind (CLI exit code, JS error code): a bad URL or a server refusing the request
    /// is bad input; a malformed, truncated or failed transfer is I/O.
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            Error::Url(_) => crate::ErrorKind::BadInput,
            Error::Http { status, .. } if (400..500).contains(status) => crate::ErrorKind::BadInput,
            _ => crate::ErrorKind::Io,
        }
    }
}

/// The `Accept` header of a WADO-RS retrieve of instances (PS3.18 8.7.3.5.2): Part 10 files
/// as stored (`None` or `*`), or in `transfer_syntax`, a UID (the server transcodes, or
/// refuses with 406 Not Acceptable).
pub fn accept_instances(transfer_syntax: Option<&str>) -> Result<String, Error> {
    const MEDIA: &str = "multipart/related; type=\"application/dicom\"";
    match transfer_syntax.map(str::trim) {
        None | Some("*") => Ok(format!("{MEDIA}; transfer-syntax=*")),
        Some(ts) if crate::is_uid(ts) => Ok(format!("{MEDIA}; transfer-syntax={ts}")),
        Some(ts) => Err(Error::Url(format!(
            "transfer syntax {ts:?} is not a UID (nor `*`, as stored)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_header_names_the_transfer_syntax() {
        assert_eq!(
            accept_instances(None).unwrap(),
            "multipart/related; type=\"application/dicom\"; transfer-syntax=*"
        );
        assert_eq!(
            accept_instances(Some("*")).unwrap(),
            accept_instances(None).unwrap()
        );
        assert_eq!(
            accept_instances(Some("1.2.840.10008.1.2.1")).unwrap(),
            "multipart/related; type=\"application/dicom\"; transfer-syntax=1.2.840.10008.1.2.1"
        );
        for bad in ["jpeg", "1.2..3", "1.2.3; q=1", ""] {
            let e = accept_instances(Some(bad)).unwrap_err();
            assert!(e.to_string().contains("not a UID"), "{bad}: {e}");
        }
    }
}

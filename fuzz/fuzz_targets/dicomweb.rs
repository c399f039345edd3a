//! Fuzz target: the DICOMweb parsers over arbitrary bytes. The first byte sets the size of
//! the pieces the rest is fed in (a body arriving in reads of any size); the rest goes to
//! the multipart parser (boundary `b`), whose parts must hold only bytes of the input, and
//! to the DICOM JSON readers (QIDO studies, series, instances; STOW responses). Errors are
//! expected; any panic is a bug.
#![no_main]

/// The kinds `dicomweb::Error::kind` names (the main crate's `ErrorKind`).
#[allow(dead_code)]
#[derive(Debug)]
pub enum ErrorKind {
    BadInput,
    Io,
}

#[allow(dead_code)]
#[path = "../../src/dicomweb/mod.rs"]
mod dicomweb;

/// `crate::dicom::is_uid`, which the URL parser uses.
#[path = "../../src/dicom/uid.rs"]
mod dicom;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Some((&size, body)) = bytes.split_first() else {
        return;
    };
    let step = usize::from(size).max(1);
    if let Ok(mut p) = dicomweb::multipart::Parser::for_content_type("multipart/related; boundary=b") {
        let mut total = 0;
        for piece in body.chunks(step) {
            match p.feed(piece) {
                Ok(parts) => total += parts.iter().map(|x| x.body.len()).sum::<usize>(),
                Err(_) => break,
            }
        }
        assert!(total <= body.len());
        let _ = p.finish();
    }
    let _ = dicomweb::json::studies(body);
    let _ = dicomweb::json::series(body);
    let _ = dicomweb::json::instances(body);
    let _ = dicomweb::json::stow_response(body);
});

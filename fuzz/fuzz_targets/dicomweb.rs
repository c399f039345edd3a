//! Fuzz target: the DICOMweb parsers over arbitrary bytes. The first byte sets the size of
//! the pieces the rest is fed in (a body arriving in reads of any size); the rest goes to
//! the multipart parser (boundary `b`), whose parts must hold only bytes of the input, to
//! the DICOM JSON readers (QIDO studies, series, instances; STOW responses) and, as WADO-RS
//! metadata, to the single-frame builder (`frames::single_frame`: the JSON made a data set,
//! bulk data answered from the input, one frame whose number and transfer syntax the first
//! byte picks, the last bytes as its pixels), and a file it builds is read and its frame
//! decoded. Errors are expected; any panic is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use medfm_dicom::dicomweb;
use medfm_dicom as dicom;

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
    single_frame(size, body);
});

/// The transfer syntaxes a frame may come in: native, encapsulated, refused (big endian),
/// nonsense.
const SYNTAXES: [&str; 4] = [
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.2",
    "x",
];

fn single_frame(size: u8, body: &[u8]) {
    let Ok(objects) = dicomweb::json::parse(body) else {
        return;
    };
    let Some(metadata) = objects.first() else {
        return;
    };
    let frame = dicomweb::frames::Frame {
        number: u32::from(size % 3) + 1,
        transfer_syntax: SYNTAXES[usize::from(size / 3) % SYNTAXES.len()].to_string(),
        bytes: body[body.len().saturating_sub(64)..].to_vec(),
    };
    let mut bulk = |uri: &str| -> Result<Vec<u8>, dicomweb::Error> {
        if uri.len().is_multiple_of(2) {
            Ok(body[..body.len().min(uri.len() * 4)].to_vec())
        } else {
            Err(dicomweb::Error::Url(format!("no bulk data at {uri}")))
        }
    };
    if let Ok(file) = dicomweb::frames::single_frame(metadata, &frame, &mut bulk) {
        let _ = dicom::identify(&file);
        if let Ok(image) = dicom::read(&file) {
            let _ = image.frame(0);
        }
    }
}

//! STOW-RS to a DICOMweb destination (`dicomweb` in its `[[destination]]`): the spool's
//! files posted to ROOT/studies as they are stored, in requests of at most
//! [`MAX_REQUEST_BYTES`] (a larger file goes alone), each file's outcome read from the
//! answer's per-instance results. The client's bounds hold (medfm-dicomweb-client: connect,
//! every read and write, the answer's size); an https root never falls back to http.

use std::path::PathBuf;

use anyhow::{Context, Result};
use medfm_dicomweb_client::Client;

use super::config::Destination;
use super::scu::{Outcome, read_whole};

/// The most bytes of files one request carries (more files go in more requests).
pub const MAX_REQUEST_BYTES: usize = 64 << 20;

/// Store `files` at `dest`. Err: the destination could not be reached or refused the
/// request as a whole (no file of that request counts as sent); Ok: each file's outcome.
pub fn send(dest: &Destination, files: &[PathBuf]) -> Result<Vec<Outcome>> {
    let client = Client::new(dest.dicomweb_auth()?);
    let mut outcomes = Vec::new();
    // (file, its bytes, its SOPInstanceUID)
    let mut batch: Vec<(PathBuf, Vec<u8>, String)> = Vec::new();
    let mut held = 0usize;
    for file in files {
        // A file that cannot be read is that file's failure, not the request's.
        let (bytes, uid) = match read_whole(file) {
            Ok((bytes, meta)) => (bytes, meta.sop_instance),
            Err(e) => {
                outcomes.push(Outcome {
                    file: file.clone(),
                    result: Err(e),
                });
                continue;
            }
        };
        if !batch.is_empty() && held + bytes.len() > MAX_REQUEST_BYTES {
            outcomes.extend(post(&client, dest, &batch)?);
            batch.clear();
            held = 0;
        }
        held += bytes.len();
        batch.push((file.clone(), bytes, uid));
    }
    if !batch.is_empty() {
        outcomes.extend(post(&client, dest, &batch)?);
    }
    Ok(outcomes)
}

/// One request: the files of `batch`, each one's outcome by its SOPInstanceUID.
fn post(
    client: &Client,
    dest: &Destination,
    batch: &[(PathBuf, Vec<u8>, String)],
) -> Result<Vec<Outcome>> {
    let bodies: Vec<&[u8]> = batch.iter().map(|(_, b, _)| b.as_slice()).collect();
    let (_, results) = client
        .store(&dest.dicomweb, &bodies)
        .map_err(medfm::Error::from)
        .with_context(|| format!("STOW-RS to {}", dest.name))?;
    Ok(batch
        .iter()
        .map(|(file, _, uid)| {
            let result = match results.iter().find(|r| &r.uid == uid) {
                None => Err(format!("{} did not report instance {uid}", dest.name)),
                Some(r) if r.status == "failure" => Err(format!(
                    "{} refused instance {uid} (FailureReason {})",
                    dest.name,
                    r.reason.as_deref().unwrap_or("not given")
                )),
                Some(_) => Ok(()),
            };
            Outcome {
                file: file.clone(),
                result,
            }
        })
        .collect())
}

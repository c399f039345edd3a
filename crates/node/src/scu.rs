//! C-STORE SCU: send Part 10 files of the spool to a destination, each in the transfer
//! syntax it is stored in (the data set bytes go out as they are in the file: what the
//! node received is what the destination gets).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use dicom_ul::ClientAssociationOptions;
use dicom_ul::pdu::{PDataValue, PDataValueType, Pdu};
use medfm::dimse::{self, Command, FILE_META_HEAD, FileMeta, MAX_FILE_META, file_meta};

use super::config::Destination;

/// Presentation contexts one association may propose (PS3.8: odd IDs 1..=255).
const MAX_CONTEXTS: usize = 128;

/// The outcome of one file.
pub struct Outcome {
    pub file: PathBuf,
    /// Ok, or why the destination did not store it.
    pub result: Result<(), String>,
}

/// Send `files` to `dest` by its protocol: C-STORE ([`send`]), or STOW-RS when it names a
/// DICOMweb service ([`super::stow::send`]).
pub fn deliver(
    dest: &Destination,
    calling_ae: &str,
    files: &[PathBuf],
    timeout: Duration,
) -> Result<Vec<Outcome>> {
    if dest.dicomweb.is_empty() {
        send(dest, calling_ae, files, timeout)
    } else {
        super::stow::send(dest, files)
    }
}

/// Send `files` to `dest`, in as many associations as their (SOP class, transfer syntax)
/// pairs need. Err: the destination could not be reached or the association failed (no
/// file of that association counts as sent); Ok: each file's outcome.
pub fn send(
    dest: &Destination,
    calling_ae: &str,
    files: &[PathBuf],
    timeout: Duration,
) -> Result<Vec<Outcome>> {
    let mut outcomes = Vec::new();
    let mut batch: Vec<(PathBuf, (String, String))> = Vec::new();
    let mut pairs: Vec<(String, String)> = Vec::new();
    for file in files {
        let head = match read_meta(file) {
            Ok(m) => m,
            Err(e) => {
                outcomes.push(Outcome {
                    file: file.clone(),
                    result: Err(format!("{e:#}")),
                });
                continue;
            }
        };
        let pair = (head.sop_class, head.transfer_syntax);
        if !pairs.contains(&pair) {
            if pairs.len() == MAX_CONTEXTS {
                outcomes.extend(send_batch(dest, calling_ae, &pairs, &batch, timeout)?);
                batch.clear();
                pairs.clear();
            }
            pairs.push(pair.clone());
        }
        batch.push((file.clone(), pair));
    }
    if !batch.is_empty() {
        outcomes.extend(send_batch(dest, calling_ae, &pairs, &batch, timeout)?);
    }
    Ok(outcomes)
}

/// The file meta of a file, reading only its first bytes (preamble, `DICM`, the group):
/// the whole file is read once, when it is sent.
fn read_meta(file: &Path) -> Result<FileMeta> {
    use std::io::Read;
    let f = std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut head = Vec::new();
    // Whatever the group length says: the group is read up to its first element of
    // another group, within MAX_FILE_META bytes (and a few of the data set).
    f.take((FILE_META_HEAD + MAX_FILE_META + 16) as u64)
        .read_to_end(&mut head)
        .with_context(|| format!("cannot read {}", file.display()))?;
    file_meta(&head).with_context(|| file.display().to_string())
}

/// A spool file to send, whole, with its file meta; Err: that file's failure, why.
pub(crate) fn read_whole(file: &Path) -> Result<(Vec<u8>, FileMeta), String> {
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let meta = file_meta(&bytes).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok((bytes, meta))
}

fn send_batch(
    dest: &Destination,
    calling_ae: &str,
    pairs: &[(String, String)],
    batch: &[(PathBuf, (String, String))],
    timeout: Duration,
) -> Result<Vec<Outcome>> {
    let mut options = ClientAssociationOptions::new()
        .calling_ae_title(calling_ae)
        .called_ae_title(dest.ae_title.as_str())
        .connection_timeout(timeout)
        .read_timeout(timeout)
        .write_timeout(timeout);
    for (class, ts) in pairs {
        options = options.with_presentation_context(class.as_str(), vec![ts.as_str()]);
    }
    let address = format!("{}:{}", dest.host, dest.port);
    let context = || {
        format!(
            "cannot associate with {} ({} at {address})",
            dest.name, dest.ae_title
        )
    };
    match dest.tls()? {
        None => {
            let a = options.establish(address.as_str()).with_context(context)?;
            send_on(a, dest, batch)
        }
        Some(tls) => {
            let a = options
                .tls_config(tls)
                .server_name(dest.host.as_str())
                .establish_tls(address.as_str())
                .with_context(context)?;
            send_on(a, dest, batch)
        }
    }
}

/// The files of `batch` over an established association (plain or TLS).
fn send_on<S>(
    mut a: dicom_ul::ClientAssociation<S>,
    dest: &Destination,
    batch: &[(PathBuf, (String, String))],
) -> Result<Vec<Outcome>>
where
    S: std::io::Read + std::io::Write + dicom_ul::association::CloseSocket,
{
    let contexts: Vec<_> = a
        .presentation_contexts()
        .iter()
        .map(|pc| {
            (
                pc.id,
                pc.abstract_syntax.clone(),
                pc.transfer_syntax.clone(),
            )
        })
        .collect();
    let mut outcomes = Vec::new();
    for (i, (file, (class, ts))) in batch.iter().enumerate() {
        let Some((context, _, _)) = contexts.iter().find(|(_, c, t)| c == class && t == ts) else {
            outcomes.push(Outcome {
                file: file.clone(),
                result: Err(format!(
                    "{} does not accept SOP class {class} in transfer syntax {ts}",
                    dest.name
                )),
            });
            continue;
        };
        // A file that cannot be read is that file's failure, not the association's.
        let (bytes, head) = match read_whole(file) {
            Ok(r) => r,
            Err(e) => {
                outcomes.push(Outcome {
                    file: file.clone(),
                    result: Err(e),
                });
                continue;
            }
        };
        let offset = head.data_set_offset;
        let message_id = (i % 0xFFFF) as u16 + 1;
        a.send(&Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: *context,
                value_type: PDataValueType::Command,
                is_last: true,
                data: dimse::store_rq(message_id, &head.sop_class, &head.sop_instance),
            }],
        })
        .context("cannot send C-STORE-RQ")?;
        {
            let mut w = a.send_pdata(*context);
            std::io::Write::write_all(&mut w, &bytes[offset..])
                .context("cannot send the data set")?;
            w.finish().context("cannot send the data set")?;
        }
        let reply = receive_command(&mut a)?;
        if reply.message_id_responded().ok() != Some(message_id) {
            let _ = a.abort();
            bail!("{} answered another message than {message_id}", dest.name);
        }
        let status = reply.status().context("C-STORE-RSP")?;
        outcomes.push(Outcome {
            file: file.clone(),
            result: if dimse::is_stored(status) {
                Ok(())
            } else {
                Err(format!(
                    "{} refused it: status 0x{status:04X} {}",
                    dest.name,
                    reply.error_comment().unwrap_or_default()
                ))
            },
        });
    }
    let _ = a.release();
    Ok(outcomes)
}

/// The next complete command set from the peer.
fn receive_command<S>(a: &mut dicom_ul::ClientAssociation<S>) -> Result<Command>
where
    S: std::io::Read + std::io::Write + dicom_ul::association::CloseSocket,
{
    let mut bytes = Vec::new();
    loop {
        match a.receive().context("no response")? {
            Pdu::PData { data } => {
                for v in data {
                    if v.value_type != PDataValueType::Command {
                        bail!("a data set where a response was expected");
                    }
                    bytes.extend_from_slice(&v.data);
                    if v.is_last {
                        return Ok(Command::read(&bytes)?);
                    }
                }
            }
            Pdu::AbortRQ { source } => bail!("the destination aborted: {source:?}"),
            other => bail!("unexpected {}", other.short_description()),
        }
    }
}

//! C-STORE SCU: send Part 10 files of the spool to a destination, each in the transfer
//! syntax it is stored in (the data set bytes go out as they are in the file: what the
//! node received is what the destination gets).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use dicom_ul::ClientAssociationOptions;
use dicom_ul::pdu::{PDataValue, PDataValueType, Pdu};
use medfm::dimse::{self, Command};

use super::config::Destination;

/// Presentation contexts one association may propose (PS3.8: odd IDs 1..=255).
const MAX_CONTEXTS: usize = 128;

/// The outcome of one file.
pub struct Outcome {
    pub file: PathBuf,
    /// Ok, or why the destination did not store it.
    pub result: Result<(), String>,
}

/// What the file meta says, and where the data set starts.
struct Part10File {
    sop_class: String,
    sop_instance: String,
    transfer_syntax: String,
}

/// Read the file meta group of a Part 10 file as the node writes it (preamble, `DICM`,
/// (0002,0000) first) and return it with the data set's offset.
fn meta(bytes: &[u8]) -> Result<(Part10File, usize)> {
    if bytes.len() < 144
        || &bytes[128..132] != b"DICM"
        || bytes[132..140] != [2, 0, 0, 0, b'U', b'L', 4, 0]
    {
        bail!("not a Part 10 file with a file meta group length");
    }
    let len = u32::from_le_bytes(bytes[140..144].try_into().expect("4 bytes")) as usize;
    let end = 144usize
        .checked_add(len)
        .filter(|e| *e <= bytes.len())
        .context("file meta longer than the file")?;
    let (mut class, mut instance, mut ts) = (None, None, None);
    let mut pos = 144;
    while pos + 8 <= end {
        let element = u16::from_le_bytes([bytes[pos + 2], bytes[pos + 3]]);
        let vr = &bytes[pos + 4..pos + 6];
        let (value_at, value_len) = if matches!(vr, b"OB" | b"OW" | b"UN" | b"SQ" | b"UT") {
            let l =
                u32::from_le_bytes(bytes[pos + 8..pos + 12].try_into().expect("4 bytes")) as usize;
            (pos + 12, l)
        } else {
            (
                pos + 8,
                u16::from_le_bytes([bytes[pos + 6], bytes[pos + 7]]) as usize,
            )
        };
        let value = bytes
            .get(value_at..value_at + value_len)
            .context("file meta element past its group")?;
        let text = || {
            String::from_utf8_lossy(value)
                .trim_end_matches(['\0', ' '])
                .to_string()
        };
        match element {
            0x0002 => class = Some(text()),
            0x0003 => instance = Some(text()),
            0x0010 => ts = Some(text()),
            _ => {}
        }
        pos = value_at + value_len;
    }
    Ok((
        Part10File {
            sop_class: class.context("no MediaStorageSOPClassUID")?,
            sop_instance: instance.context("no MediaStorageSOPInstanceUID")?,
            transfer_syntax: ts.context("no TransferSyntaxUID")?,
        },
        end,
    ))
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
fn read_meta(file: &Path) -> Result<Part10File> {
    use std::io::Read;
    let mut f =
        std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut head = vec![0u8; 144];
    f.read_exact(&mut head)
        .with_context(|| format!("{}: not a Part 10 file (too short)", file.display()))?;
    let group = u32::from_le_bytes(head[140..144].try_into().expect("4 bytes")).min(1 << 20);
    f.take(group as u64)
        .read_to_end(&mut head)
        .with_context(|| format!("cannot read {}", file.display()))?;
    Ok(meta(&head).with_context(|| file.display().to_string())?.0)
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
    let mut a = options.establish(address.as_str()).with_context(|| {
        format!(
            "cannot associate with {} ({} at {address})",
            dest.name, dest.ae_title
        )
    })?;
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
        let bytes =
            std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        let (head, offset) = meta(&bytes)?;
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
fn receive_command(a: &mut dicom_ul::ClientAssociation<std::net::TcpStream>) -> Result<Command> {
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

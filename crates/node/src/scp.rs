//! One association: negotiation (AE titles, storage SOP classes, transfer syntaxes), then
//! C-ECHO and C-STORE until release, abort or the idle timeout.
//!
//! A C-STORE is answered only after the instance is checked (`medfm::dicom::identify`:
//! the whole data set parses, its UIDs are valid and match the command) and durably in the
//! spool (`Spool::store`). Every refusal is a DIMSE status with an error comment and a log
//! line; nothing is written for a refused instance.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use dicom_ul::ServerAssociationOptions;
use dicom_ul::association::Association;
use dicom_ul::association::server::AccessControl;
use dicom_ul::pdu::{
    AssociationRJ, AssociationRJResult, AssociationRJServiceProviderPresentationReason,
    AssociationRJServiceUserReason, AssociationRJSource, PDataValue, PDataValueType, Pdu,
    PresentationContextResultReason, UserIdentity,
};

use super::spool::{Part10, Spool, StoreError, Stored};
use super::work::Work;
use super::{Config, Counters};
use medfm::dimse::{self, Command, STORAGE_SOP_CLASSES, status};

/// The node's association options.
pub type Options =
    ServerAssociationOptions<'static, Access, dicom_ul::association::server::DefaultNegotiation>;

/// Who may associate: the called AE title must be the node's, the calling one in the
/// allowed list (when there is one).
pub struct Access {
    allowed: Vec<String>,
}

impl AccessControl for Access {
    fn check_access(
        &self,
        this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        let calling = calling_ae_title.trim();
        if called_ae_title.trim() != this_ae_title {
            tracing::warn!(
                calling,
                called = called_ae_title.trim(),
                "association rejected: called AE title is not this node's"
            );
            return Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized);
        }
        if !self.allowed.is_empty() && !self.allowed.iter().any(|a| a == calling) {
            tracing::warn!(
                calling,
                "association rejected: calling AE title not allowed"
            );
            return Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized);
        }
        Ok(())
    }
}

/// The association options of the node.
pub fn options(config: &Config) -> Options {
    let mut o = ServerAssociationOptions::new()
        .ae_access_control(Access {
            allowed: config.allowed_calling_aes.clone(),
        })
        .ae_title(config.ae_title.clone())
        .max_pdu_length(config.max_pdu)
        .read_timeout(config.association_timeout())
        .write_timeout(config.idle_timeout())
        .with_abstract_syntax(dimse::VERIFICATION);
    for (uid, _) in STORAGE_SOP_CLASSES {
        o = o.with_abstract_syntax(*uid);
    }
    // Every transfer syntax whose data set can be parsed: the ones medfm decodes, and
    // the others stored as received.
    for ts in dicom_transfer_syntax_registry::TransferSyntaxRegistry.iter() {
        if !ts.is_unsupported() {
            o = o.with_transfer_syntax(ts.uid());
        }
    }
    o
}

/// A message being received: its command and the data set so far (behind the Part 10
/// header of the file it will become).
struct Pending {
    context: u8,
    command: u16,
    message_id: u16,
    sop_class: String,
    sop_instance: String,
    file: Vec<u8>,
    /// Data set bytes received (counted on after the buffer is dropped for size).
    received: u64,
    /// Why the instance will be refused, once known before its end (size, header).
    refusal: Option<(u16, String)>,
}

/// Serve one connection to its end. Errors are the connection's (logged by the caller).
pub fn serve(
    stream: TcpStream,
    options: &Options,
    config: &Config,
    spool: &Spool,
    work: &Work,
    counters: &Counters,
) -> Result<()> {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let mut association = match options.establish(stream) {
        Ok(a) => a,
        Err(e) => {
            counters.rejected();
            bail!("association from {peer} not established: {e}");
        }
    };
    let calling = association.peer_ae_title().trim().to_string();
    let accepted: Vec<_> = association
        .presentation_contexts()
        .iter()
        .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        .map(|pc| {
            (
                pc.id,
                pc.abstract_syntax.clone(),
                pc.transfer_syntax.clone(),
            )
        })
        .collect();
    for pc in association.presentation_contexts() {
        if pc.reason != PresentationContextResultReason::Acceptance {
            tracing::warn!(
                calling,
                abstract_syntax = pc.abstract_syntax,
                reason = ?pc.reason,
                "presentation context refused"
            );
        }
    }
    tracing::info!(
        calling,
        peer,
        contexts = accepted.len(),
        "association accepted"
    );
    association
        .inner_stream()
        .set_read_timeout(Some(config.idle_timeout()))
        .context("socket")?;

    let mut command_bytes = Vec::new();
    let mut pending: Option<Pending> = None;
    loop {
        let pdu = match association.receive() {
            Ok(pdu) => pdu,
            Err(e) => {
                if pending.is_some() {
                    tracing::warn!(
                        calling,
                        "association lost in the middle of an instance: {e}"
                    );
                }
                bail!("association with {calling} ended: {e}");
            }
        };
        let values = match pdu {
            Pdu::PData { data } => data,
            Pdu::ReleaseRQ => {
                if pending.is_some() {
                    tracing::warn!(
                        calling,
                        "released in the middle of an instance (not stored)"
                    );
                }
                let _ = association.send(&Pdu::ReleaseRP);
                tracing::info!(calling, "association released");
                return Ok(());
            }
            Pdu::AbortRQ { source } => {
                tracing::warn!(calling, ?source, "association aborted by the peer");
                return Ok(());
            }
            other => {
                let _ = association.abort();
                bail!(
                    "unexpected PDU from {calling}: {}",
                    other.short_description()
                );
            }
        };
        for value in values {
            let PDataValue {
                presentation_context_id: context,
                value_type,
                is_last,
                data,
            } = value;
            let Some((_, abstract_syntax, transfer_syntax)) =
                accepted.iter().find(|(id, _, _)| *id == context)
            else {
                let _ = association.abort();
                bail!("{calling} used presentation context {context}, which was not accepted");
            };
            match value_type {
                PDataValueType::Command => {
                    if pending.is_some() {
                        let _ = association.abort();
                        bail!("{calling} sent a command before the previous data set ended");
                    }
                    command_bytes.extend_from_slice(&data);
                    if !is_last {
                        continue;
                    }
                    let command = Command::read(&command_bytes);
                    command_bytes.clear();
                    let command = match command {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = association.abort();
                            bail!("unreadable command from {calling}: {e:#}");
                        }
                    };
                    match start(
                        &command,
                        context,
                        abstract_syntax,
                        transfer_syntax,
                        &calling,
                    ) {
                        Start::Reply(bytes) => send_command(&mut association, context, bytes)?,
                        Start::Data(p) => pending = Some(*p),
                        Start::Abort(why) => {
                            let _ = association.abort();
                            bail!("{calling}: {why}");
                        }
                    }
                }
                PDataValueType::Data => {
                    let Some(p) = pending.as_mut() else {
                        let _ = association.abort();
                        bail!("{calling} sent data without a command");
                    };
                    if p.context != context {
                        let _ = association.abort();
                        bail!("{calling} changed presentation context within a message");
                    }
                    p.received += data.len() as u64;
                    if p.refusal.is_none() {
                        if p.received > config.max_instance_bytes() {
                            p.file = Vec::new();
                            p.refusal = Some((
                                status::OUT_OF_RESOURCES,
                                format!(
                                    "instance larger than max_instance_mb ({} MiB)",
                                    config.max_instance_mb
                                ),
                            ));
                        } else {
                            p.file.extend_from_slice(&data);
                        }
                    }
                    if is_last {
                        let p = pending.take().expect("pending");
                        let reply = finish(p, spool, work, &calling, counters);
                        send_command(&mut association, context, reply)?;
                    }
                }
            }
        }
    }
}

enum Start {
    Reply(Vec<u8>),
    Data(Box<Pending>),
    Abort(String),
}

/// What a complete command asks.
fn start(
    command: &Command,
    context: u8,
    abstract_syntax: &str,
    transfer_syntax: &str,
    calling: &str,
) -> Start {
    let (Ok(field), Ok(message_id), Ok(has_data)) = (
        command.command_field(),
        command.message_id(),
        command.has_data_set(),
    ) else {
        return Start::Abort(
            "a command without CommandField, MessageID or CommandDataSetType".into(),
        );
    };
    match field {
        dimse::C_ECHO_RQ if !has_data => {
            tracing::info!(calling, "C-ECHO");
            Start::Reply(dimse::echo_rsp(message_id))
        }
        dimse::C_STORE_RQ if has_data => {
            let sop_class = command.affected_sop_class().unwrap_or_default();
            let sop_instance = command.affected_sop_instance().unwrap_or_default();
            let mut p = Pending {
                context,
                command: field,
                message_id,
                sop_class: sop_class.clone(),
                sop_instance: sop_instance.clone(),
                file: Vec::new(),
                received: 0,
                refusal: None,
            };
            if sop_class != abstract_syntax {
                p.refusal = Some((
                    status::DATA_SET_MISMATCH,
                    format!(
                        "AffectedSOPClassUID {sop_class} differs from the presentation context's {abstract_syntax}"
                    ),
                ));
            } else {
                match Part10::header(&sop_class, &sop_instance, transfer_syntax, calling) {
                    Ok(h) => p.file = h,
                    Err(e) => p.refusal = Some((status::CANNOT_UNDERSTAND, format!("{e:#}"))),
                }
            }
            Start::Data(Box::new(p))
        }
        _ if has_data => Start::Data(Box::new(Pending {
            context,
            command: field,
            message_id,
            sop_class: String::new(),
            sop_instance: String::new(),
            file: Vec::new(),
            received: 0,
            refusal: Some((
                status::UNRECOGNIZED_OPERATION,
                format!("command 0x{field:04X} is not served by this node"),
            )),
        })),
        _ => {
            tracing::warn!(calling, field, "unrecognized command refused");
            Start::Reply(dimse::response(
                field,
                message_id,
                "",
                "",
                status::UNRECOGNIZED_OPERATION,
                "only C-ECHO and C-STORE are served",
            ))
        }
    }
}

/// Check and store a complete instance; the response to send.
fn finish(p: Pending, spool: &Spool, work: &Work, calling: &str, counters: &Counters) -> Vec<u8> {
    let outcome = match p.refusal {
        Some(r) => Err(r),
        None => check_and_store(&p, spool, work),
    };
    let (code, comment) = match outcome {
        Ok(Stored::New) => {
            counters.stored(p.file.len() as u64);
            tracing::info!(
                calling,
                sop_instance = p.sop_instance,
                bytes = p.file.len(),
                "stored"
            );
            (status::SUCCESS, String::new())
        }
        Ok(Stored::Duplicate) => {
            counters.duplicate();
            tracing::info!(
                calling,
                sop_instance = p.sop_instance,
                "duplicate, already in the spool"
            );
            (status::SUCCESS, String::new())
        }
        Err((code, comment)) => {
            counters.refused();
            tracing::warn!(
                calling,
                sop_instance = p.sop_instance,
                status = format!("0x{code:04X}"),
                reason = comment,
                "C-STORE refused"
            );
            (code, comment)
        }
    };
    dimse::response(
        p.command,
        p.message_id,
        &p.sop_class,
        &p.sop_instance,
        code,
        &comment,
    )
}

fn check_and_store(p: &Pending, spool: &Spool, work: &Work) -> Result<Stored, (u16, String)> {
    let ids =
        medfm::dicom::identify(&p.file).map_err(|e| (status::CANNOT_UNDERSTAND, e.to_string()))?;
    if ids.sop_instance_uid != p.sop_instance {
        return Err((
            status::DATA_SET_MISMATCH,
            format!(
                "SOPInstanceUID {} differs from the command's {}",
                ids.sop_instance_uid, p.sop_instance
            ),
        ));
    }
    if ids.sop_class_uid != p.sop_class {
        return Err((
            status::DATA_SET_MISMATCH,
            format!(
                "SOPClassUID {} differs from the command's {}",
                ids.sop_class_uid, p.sop_class
            ),
        ));
    }
    work.admit(spool, &ids, &p.file).map_err(|e| match e {
        StoreError::Invalid(m) => (status::CANNOT_UNDERSTAND, m),
        StoreError::Quota { .. } => (status::OUT_OF_RESOURCES, e.to_string()),
        StoreError::Io(_) => {
            tracing::error!("{e}");
            (
                status::OUT_OF_RESOURCES,
                "the node cannot write its spool".into(),
            )
        }
    })
}

fn send_command(
    association: &mut dicom_ul::ServerAssociation<TcpStream>,
    context: u8,
    bytes: Vec<u8>,
) -> Result<()> {
    association
        .send(&Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: context,
                value_type: PDataValueType::Command,
                is_last: true,
                data: bytes,
            }],
        })
        .context("cannot send the response")
}

/// Refuse a connection while the node serves `max_associations` already: read its
/// association request, answer A-ASSOCIATE-RJ (transient, local limit exceeded).
pub fn reject_busy(mut stream: TcpStream, timeout: Duration) {
    let _ = stream.set_read_timeout(Some(timeout));
    let mut head = [0u8; 6];
    if stream.read_exact(&mut head).is_ok() {
        let len = u32::from_be_bytes([head[2], head[3], head[4], head[5]]).min(1 << 20);
        let _ = std::io::copy(&mut (&mut stream).take(len as u64), &mut std::io::sink());
    }
    let mut out = Vec::new();
    let pdu = Pdu::AssociationRJ(AssociationRJ {
        result: AssociationRJResult::Transient,
        source: AssociationRJSource::ServiceProviderPresentation(
            AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
        ),
    });
    if dicom_ul::write_pdu(&mut out, &pdu).is_ok() {
        let _ = stream.write_all(&out);
    }
}

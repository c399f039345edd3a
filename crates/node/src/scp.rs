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
use super::work::{Taken, Work};
use super::{Config, Counters, Deadline};
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

/// How the node accepts associations: its options, and whether only over TLS.
pub struct Listener {
    options: Options,
    tls: bool,
}

/// The node's [`Listener`]; with `tls`, associations are accepted only over TLS.
pub fn listener(config: &Config, tls: Option<std::sync::Arc<rustls::ServerConfig>>) -> Listener {
    Listener {
        tls: tls.is_some(),
        options: options(config, tls),
    }
}

fn options(config: &Config, tls: Option<std::sync::Arc<rustls::ServerConfig>>) -> Options {
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
    if let Some(tls) = tls {
        o = o.tls_config(tls);
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
struct Pending<'b> {
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
    /// Its bytes in the node's memory budget (None once refused).
    taken: Option<Taken<'b>>,
}

/// Largest command set accepted (its fragments together): real ones are a few hundred
/// bytes; a peer sending more is aborted.
pub const MAX_COMMAND_BYTES: usize = 64 << 10;

/// Serve one connection to its end. Errors are the connection's (logged by the caller).
pub fn serve(
    stream: TcpStream,
    deadline: &Deadline,
    listener: &Listener,
    config: &Config,
    spool: &Spool,
    work: &Work,
    counters: &Counters,
) -> Result<()> {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let options = &listener.options;
    let established = if listener.tls {
        options
            .establish_tls(stream)
            .map(|a| session(a, &peer, deadline, config, spool, work, counters))
    } else {
        options
            .establish(stream)
            .map(|a| session(a, &peer, deadline, config, spool, work, counters))
    };
    match established {
        Ok(served) => served,
        Err(e) => {
            counters.rejected();
            bail!("association from {peer} not established: {e}");
        }
    }
}

/// The socket under an association, plain or TLS (for its read timeout).
pub trait Socket: Read + Write + dicom_ul::association::CloseSocket {
    fn tcp(&self) -> &TcpStream;
}

impl Socket for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Socket for dicom_ul::association::server::TlsStream {
    fn tcp(&self) -> &TcpStream {
        &self.sock
    }
}

/// An established association to its end: C-ECHO and C-STORE until release, abort or a
/// deadline.
fn session<S: Socket>(
    mut association: dicom_ul::ServerAssociation<S>,
    peer: &str,
    deadline: &Deadline,
    config: &Config,
    spool: &Spool,
    work: &Work,
    counters: &Counters,
) -> Result<()> {
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
        .tcp()
        .set_read_timeout(Some(config.idle_timeout()))
        .context("socket")?;

    let mut command_bytes = Vec::new();
    let mut pending: Option<Pending> = None;
    // Between messages: idle_timeout_seconds for the next one to start.
    deadline.set_in(config.idle_timeout());
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
            // A message (command and data set) must end within message_timeout_seconds
            // of its first fragment.
            if command_bytes.is_empty() && pending.is_none() {
                deadline.set_in(config.message_timeout());
            }
            match value_type {
                PDataValueType::Command => {
                    if pending.is_some() {
                        let _ = association.abort();
                        bail!("{calling} sent a command before the previous data set ended");
                    }
                    if command_bytes.len() + data.len() > MAX_COMMAND_BYTES {
                        let _ = association.abort();
                        bail!(
                            "{calling} sent a command set over {MAX_COMMAND_BYTES} bytes: aborted"
                        );
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
                        work,
                    ) {
                        Start::Reply(bytes) => {
                            send_command(&mut association, context, bytes)?;
                            deadline.set_in(config.idle_timeout());
                        }
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
                        let refusal = if p.received > config.max_instance_bytes() {
                            Some(format!(
                                "instance larger than max_instance_mb ({} MiB)",
                                config.max_instance_mb
                            ))
                        } else if !p.taken.as_mut().is_some_and(|t| t.grow(data.len() as u64)) {
                            Some("the node's memory budget is in use: try again later".into())
                        } else {
                            None
                        };
                        match refusal {
                            // The rest of the data set is read and dropped.
                            Some(why) => {
                                p.file = Vec::new();
                                p.taken = None;
                                p.refusal = Some((status::OUT_OF_RESOURCES, why));
                            }
                            None => p.file.extend_from_slice(&data),
                        }
                    }
                    if is_last {
                        let p = pending.take().expect("pending");
                        let reply = finish(p, config, spool, work, &calling, counters);
                        send_command(&mut association, context, reply)?;
                        deadline.set_in(config.idle_timeout());
                    }
                }
            }
        }
    }
}

enum Start<'b> {
    Reply(Vec<u8>),
    Data(Box<Pending<'b>>),
    Abort(String),
}

/// What a complete command asks.
fn start<'b>(
    command: &Command,
    context: u8,
    abstract_syntax: &str,
    transfer_syntax: &str,
    calling: &str,
    work: &'b Work,
) -> Start<'b> {
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
                taken: work.budget.take(0),
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
            taken: None,
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
fn finish(
    p: Pending,
    config: &Config,
    spool: &Spool,
    work: &Work,
    calling: &str,
    counters: &Counters,
) -> Vec<u8> {
    let outcome = match &p.refusal {
        Some(r) => Err(r.clone()),
        None => check_and_store(&p, config, spool, work),
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

fn check_and_store(
    p: &Pending,
    config: &Config,
    spool: &Spool,
    work: &Work,
) -> Result<Stored, (u16, String)> {
    let ids = work
        .check(&p.file, config.max_instance_bytes())
        .map_err(store_status)?;
    work.admit(spool, &ids, &p.file).map_err(store_status)
}

/// The DIMSE status and comment of a refusal.
fn store_status(e: StoreError) -> (u16, String) {
    match e {
        StoreError::Invalid(m) => (status::CANNOT_UNDERSTAND, m),
        StoreError::Mismatch(m) => (status::DATA_SET_MISMATCH, m),
        StoreError::Resources(m) => (status::OUT_OF_RESOURCES, m),
        StoreError::Quota { .. } => (status::OUT_OF_RESOURCES, e.to_string()),
        StoreError::Io(_) => {
            tracing::error!("{e}");
            (
                status::OUT_OF_RESOURCES,
                "the node cannot write its spool".into(),
            )
        }
    }
}

fn send_command<S: Socket>(
    association: &mut dicom_ul::ServerAssociation<S>,
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

/// Refuse a connection while the node serves `max_associations` already, without a
/// thread: answer A-ASSOCIATE-RJ (transient, local limit exceeded) on the non-blocking
/// socket and close our side for writing; the accept loop keeps it a moment
/// ([`linger_busy`]) to read the request, so the peer gets the rejection rather than a
/// reset. False: the answer could not be written (the connection is dropped).
pub fn reject_busy(stream: &TcpStream) -> bool {
    let mut out = Vec::new();
    let pdu = Pdu::AssociationRJ(AssociationRJ {
        result: AssociationRJResult::Transient,
        source: AssociationRJSource::ServiceProviderPresentation(
            AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
        ),
    });
    stream.set_nonblocking(true).is_ok()
        && dicom_ul::write_pdu(&mut out, &pdu).is_ok()
        // 10 bytes into a new socket's empty send buffer.
        && (&*stream).write_all(&out).is_ok()
        && stream.shutdown(std::net::Shutdown::Write).is_ok()
}

/// Read and drop what the rejected connections sent; close those done or older than
/// `linger`.
pub fn linger_busy(busy: &mut Vec<(TcpStream, std::time::Instant)>, linger: Duration) {
    let mut buf = [0u8; 4096];
    busy.retain(|(stream, since)| {
        if since.elapsed() > linger {
            return false;
        }
        loop {
            match (&*stream).read(&mut buf) {
                Ok(0) => return false,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
        }
    });
}

//! The edge node (docs/node.md), as a library: `medfm node` parses its arguments and
//! calls [`run`].
//!
//! What it does: the DICOM listener (C-ECHO, C-STORE of every storage SOP class, allowed
//! calling AE titles, concurrent associations with a limit, timeouts), the durable spool,
//! series completion, rules and their jobs (`forward`), the outbox (C-STORE SCU with
//! retries). One thread per association and one work thread; a [`Stop`] (the CLI fires
//! it on SIGTERM/SIGINT) stops accepting, lets the open associations finish (at most
//! `idle_timeout_seconds`) and the work thread its current step, then [`run`] returns.

mod budget;
mod config;
mod dicomweb;
mod http;
mod inbox;
mod liveness;
mod records;
mod runner;
mod scp;
mod scu;
mod server;
mod spool;
mod stow;
mod work;

use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

pub use config::Config;
use records::now_ms;

/// What the node has done since it started (logged at exit; the HTTP status later).
#[derive(Default)]
pub struct Counters {
    stored: AtomicU64,
    bytes: AtomicU64,
    duplicates: AtomicU64,
    refused: AtomicU64,
    rejected: AtomicU64,
}

impl Counters {
    /// The counts, for the status.
    fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({
            "stored": self.stored.load(Ordering::Relaxed),
            "bytes": self.bytes.load(Ordering::Relaxed),
            "duplicates": self.duplicates.load(Ordering::Relaxed),
            "refused": self.refused.load(Ordering::Relaxed),
            "rejected": self.rejected.load(Ordering::Relaxed),
        })
    }

    pub(crate) fn stored(&self, bytes: u64) {
        self.stored.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
    pub(crate) fn duplicate(&self) {
        self.duplicates.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }
    fn rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }
}

/// Asks a running node to stop, or to reload its TLS certificates. Clone it, give one to
/// [`run`], call [`Stop::stop`] or [`Stop::reload`] from anywhere: another thread, or a
/// signal handler (each is one atomic store).
#[derive(Clone, Default)]
pub struct Stop(Arc<AtomicBool>, Arc<AtomicU64>);

impl Stop {
    pub fn new() -> Stop {
        Stop::default()
    }

    /// Stop accepting, drain, and make [`run`] return.
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Read the TLS certificate and key files (HTTPS, DICOM) again (the CLI's SIGHUP).
    pub fn reload(&self) {
        self.1.fetch_add(1, Ordering::SeqCst);
    }

    /// Reloads asked so far: each listener compares it with the count it last acted on.
    pub(crate) fn reloads(&self) -> u64 {
        self.1.load(Ordering::SeqCst)
    }
}

/// When a connection must have done its current step (Unix ms; 0: no deadline). The
/// association's thread moves it (negotiation, each message, idle between messages); the
/// accept loop shuts down the socket of any connection past it, however its peer trickles
/// bytes (a read timeout alone restarts with every byte).
#[derive(Default)]
pub(crate) struct Deadline(AtomicU64);

impl Deadline {
    /// The step now under way must end within `d`.
    pub(crate) fn set_in(&self, d: Duration) {
        self.0.store(
            now_ms().saturating_add(d.as_millis() as u64),
            Ordering::SeqCst,
        );
    }

    fn passed(&self) -> bool {
        let d = self.0.load(Ordering::SeqCst);
        d != 0 && now_ms() > d
    }
}

/// Connections refused as busy and not yet closed (each is answered A-ASSOCIATE-RJ by the
/// accept loop itself, no thread); more are closed at once.
const MAX_BUSY: usize = 64;

/// How long a busy connection is kept to read its request after the rejection.
const BUSY_LINGER: Duration = Duration::from_secs(2);

/// Shut down the sockets of the connections past their deadline (their threads then end
/// on the next read).
fn cut_past_deadline(open: &Mutex<Vec<(u64, TcpStream, Arc<Deadline>)>>) {
    for (_, stream, deadline) in open.lock().expect("lock").iter() {
        if deadline.passed() {
            let peer = stream
                .peer_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            tracing::warn!(peer, "association past its deadline: closed");
            // Once: the thread removes it from the list when it ends.
            deadline.0.store(0, Ordering::SeqCst);
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// The token the HTTP API requires: `http_token`, or, without one, the node's own:
/// generated at its first start (32 random bytes, hex) into `<spool>/.node/http_token`
/// (mode 0600) and read from there after. `medfm node --print-token` shows it.
pub fn http_token(config: &Config) -> Result<String, medfm::Error> {
    make_http_token(config).map_err(medfm_error)
}

fn make_http_token(config: &Config) -> Result<String> {
    if !config.http_token.is_empty() {
        return Ok(config.http_token.clone());
    }
    let path = config.spool.join(".node").join("http_token");
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    spool::create_dir(path.parent().context("the state folder")?)?;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness for a token: {e}"))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    medfm::fs::write_private(&path, token.as_bytes())?;
    tracing::info!(file = %path.display(), "HTTP token generated (medfm node --print-token shows it)");
    Ok(token)
}

/// Ends the DICOM listener's loop for the health and, unless the node is stopping
/// already, stops the node (see `serve`).
struct LoopGuard<'a>(&'a liveness::Heartbeat, &'a Stop);

impl Drop for LoopGuard<'_> {
    fn drop(&mut self) {
        self.0.end();
        if !self.1.is_stopped() {
            tracing::error!("the DICOM listener's loop ended: the node stops");
            self.1.stop();
        }
    }
}

/// Run the node with `config` until `stop` fires, then drain and return. An error that
/// stops it (a port in use, a spool it cannot open) has the kind of its cause.
pub fn run(config: Config, stop: Stop) -> Result<(), medfm::Error> {
    serve(config, stop).map_err(medfm_error)
}

/// The library's errors are medfm's one error type ([`medfm::Error`]); inside, the node
/// adds what it was doing with anyhow's context. The kind: that of the first error of the
/// chain whose kind is known (an `std::io::Error`: io), else internal; the message: the
/// whole chain.
fn medfm_error(e: anyhow::Error) -> medfm::Error {
    let kind = e
        .chain()
        .find_map(medfm::Error::kind_of)
        .unwrap_or(medfm::ErrorKind::Internal);
    medfm::Error::new(kind, format!("{e:#}"))
}

fn serve(config: Config, stop: Stop) -> Result<()> {
    let spool = spool::Spool::open(&config.spool, config.quota_bytes())?;
    let runner = runner::ModelRunner::new(
        medfm::RunConfig {
            threads: config.threads,
            device: config.device,
        },
        config.model_timeout(),
        config.test_panic_series.clone(),
    );
    let work = work::Work::open(
        &config.spool,
        runner,
        config.memory_budget_bytes(),
        stop.clone(),
    )?;
    let inbox = match config.inbox_dirs() {
        Some((dir, rejected)) => Some(inbox::Inbox::open(
            &dir,
            &rejected,
            config.max_instance_bytes(),
        )?),
        None => None,
    };
    let dicom_tls = config.dicom_tls()?.map(Arc::new);
    let listener = TcpListener::bind(config.dicom_addr())
        .with_context(|| format!("cannot listen on {}", config.dicom_addr()))?;
    listener.set_nonblocking(true)?;
    let http = match config.http_addr()? {
        Some(addr) => Some((
            TcpListener::bind(addr).with_context(|| format!("cannot serve HTTP on {addr}"))?,
            server::Hosts::new(addr, &config.http_hosts),
            make_http_token(&config)?,
            config.http_tls()?,
        )),
        None => None,
    };
    tracing::info!(
        ae_title = config.ae_title,
        addr = %listener.local_addr()?,
        spool = %config.spool.display(),
        spool_bytes = spool.used(),
        tls = dicom_tls.is_some(),
        "medfm node listening"
    );

    let listener_options = scp::listener(&config, dicom_tls.as_ref().map(|t| t.server_config()));
    let mut reloads = stop.reloads();
    let counters = Counters::default();
    let active = AtomicUsize::new(0);
    let open: Mutex<Vec<(u64, TcpStream, Arc<Deadline>)>> = Mutex::new(Vec::new());
    let mut busy: Vec<(TcpStream, Instant)> = Vec::new();
    let next_id = AtomicU64::new(0);
    let listener_beat = liveness::Heartbeat::default();
    listener_beat.beat();
    let api = http::Api {
        config: &config,
        spool: &spool,
        work: &work,
        counters: &counters,
        started: Instant::now(),
        stop: &stop,
        listener: &listener_beat,
    };
    std::thread::scope(|scope| -> Result<()> {
        let worker = scope.spawn(|| work.run(&config, &spool, inbox.as_ref(), &counters));
        if let Some((listener, hosts, token, tls)) = http {
            tracing::info!(addr = %config.http, https = tls.is_some(), "HTTP API listening");
            let api = &api;
            scope.spawn(move || server::serve(listener, api, hosts, token, tls));
        }
        // However this loop is left (a panic included), the health says so and, the node not
        // stopping, the node stops: drained, then ended with the panic, for its supervisor
        // (systemd) to restart it.
        let _left = LoopGuard(&listener_beat, &stop);
        while !stop.is_stopped() {
            listener_beat.beat();
            if stop.reloads() != reloads {
                reloads = stop.reloads();
                if let Some(t) = &dicom_tls {
                    t.reload();
                }
            }
            cut_past_deadline(&open);
            scp::linger_busy(&mut busy, BUSY_LINGER);
            let (stream, peer) = match listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            if active.load(Ordering::SeqCst) >= config.max_associations {
                tracing::warn!(%peer, max = config.max_associations, "association rejected: max_associations reached");
                counters.rejected();
                if busy.len() < MAX_BUSY && scp::reject_busy(&stream) {
                    busy.push((stream, Instant::now()));
                }
                continue;
            }
            if let Err(e) = stream.set_nonblocking(false) {
                tracing::warn!(%peer, "cannot serve the connection: {e}; closed");
                continue;
            }
            // The whole negotiation must end within association_timeout_seconds.
            let deadline = Arc::new(Deadline::default());
            deadline.set_in(config.association_timeout());
            let Ok(clone) = stream.try_clone() else {
                tracing::warn!(%peer, "cannot watch the connection; closed");
                continue;
            };
            active.fetch_add(1, Ordering::SeqCst);
            let id = next_id.fetch_add(1, Ordering::Relaxed);
            open.lock()
                .expect("lock")
                .push((id, clone, deadline.clone()));
            let (options, config, spool, work, counters, active, open) = (
                &listener_options,
                &config,
                &spool,
                &work,
                &counters,
                &active,
                &open,
            );
            scope.spawn(move || {
                if let Err(e) =
                    scp::serve(stream, &deadline, options, config, spool, work, counters)
                {
                    tracing::info!("{e:#}");
                }
                open.lock().expect("lock").retain(|(i, _, _)| *i != id);
                active.fetch_sub(1, Ordering::SeqCst);
            });
        }
        // Drain: no new associations; the open ones finish, or are cut at the deadline
        // (whatever they sent and was acknowledged is in the spool already).
        let open_now = active.load(Ordering::SeqCst);
        tracing::info!(open = open_now, "stopping: draining the open associations");
        let deadline = Instant::now() + config.idle_timeout();
        while active.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        for (_, s, _) in open.lock().expect("lock").iter() {
            let _ = s.shutdown(Shutdown::Both);
        }
        // The work thread stops after its current job or send.
        let _ = worker.join();
        Ok(())
    })?;
    tracing::info!(
        stored = counters.stored.load(Ordering::Relaxed),
        bytes = counters.bytes.load(Ordering::Relaxed),
        duplicates = counters.duplicates.load(Ordering::Relaxed),
        refused = counters.refused.load(Ordering::Relaxed),
        rejected = counters.rejected.load(Ordering::Relaxed),
        "medfm node stopped"
    );
    Ok(())
}

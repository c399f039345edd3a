//! The edge node (docs/node.md), as a library: `medfm node` parses its arguments and
//! calls [`run`].
//!
//! What it does: the DICOM listener (C-ECHO, C-STORE of every storage SOP class, allowed
//! calling AE titles, concurrent associations with a limit, timeouts), the durable spool,
//! series completion, rules and their jobs (`forward`), the outbox (C-STORE SCU with
//! retries). One thread per association and one work thread; a [`Stop`] (the CLI fires
//! it on SIGTERM/SIGINT) stops accepting, lets the open associations finish (at most
//! `idle_timeout_seconds`) and the work thread its current step, then [`run`] returns.

mod config;
mod dicomweb;
mod http;
mod inbox;
mod records;
mod runner;
mod scp;
mod scu;
mod spool;
mod work;

use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

pub use config::Config;

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

/// Asks a running node to stop. Clone it, give one to [`run`], call [`Stop::stop`] from
/// anywhere: another thread, or a signal handler (it is one atomic store).
#[derive(Clone, Default)]
pub struct Stop(Arc<AtomicBool>);

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
}

/// Run the node with `config` until `stop` fires, then drain and return.
pub fn run(config: Config, stop: Stop) -> Result<()> {
    let spool = spool::Spool::open(&config.spool, config.quota_bytes())?;
    let runner = runner::ModelRunner::new(
        medfm::RunConfig {
            threads: config.threads,
            device: config.device,
        },
        config.test_panic_series.clone(),
    );
    let work = work::Work::open(&config.spool, runner, stop.clone())?;
    let inbox = match config.inbox_dirs() {
        Some((dir, rejected)) => Some(inbox::Inbox::open(&dir, &rejected)?),
        None => None,
    };
    let listener = TcpListener::bind(config.dicom_addr())
        .with_context(|| format!("cannot listen on {}", config.dicom_addr()))?;
    listener.set_nonblocking(true)?;
    let http = match config.http_addr()? {
        Some(addr) => Some(
            tiny_http::Server::http(addr)
                .map_err(|e| anyhow::anyhow!("cannot serve HTTP on {addr}: {e}"))?,
        ),
        None => None,
    };
    tracing::info!(
        ae_title = config.ae_title,
        addr = %listener.local_addr()?,
        spool = %config.spool.display(),
        spool_bytes = spool.used(),
        "medfm node listening"
    );

    let options = scp::options(&config);
    let counters = Counters::default();
    let active = AtomicUsize::new(0);
    let open: Mutex<Vec<(u64, TcpStream)>> = Mutex::new(Vec::new());
    let next_id = AtomicU64::new(0);
    let api = http::Api {
        config: &config,
        spool: &spool,
        work: &work,
        counters: &counters,
        started: Instant::now(),
        stop: &stop,
    };
    std::thread::scope(|scope| -> Result<()> {
        let worker = scope.spawn(|| work.run(&config, &spool, inbox.as_ref(), &counters));
        if let Some(server) = &http {
            tracing::info!(addr = %config.http, "HTTP API listening");
            let api = &api;
            scope.spawn(move || http::serve(server, api));
        }
        while !stop.is_stopped() {
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
            stream.set_nonblocking(false)?;
            let _ = stream.set_nodelay(true);
            if active.load(Ordering::SeqCst) >= config.max_associations {
                tracing::warn!(%peer, max = config.max_associations, "association rejected: max_associations reached");
                counters.rejected();
                let timeout = config.association_timeout();
                scope.spawn(move || scp::reject_busy(stream, timeout));
                continue;
            }
            active.fetch_add(1, Ordering::SeqCst);
            let id = next_id.fetch_add(1, Ordering::Relaxed);
            if let Ok(clone) = stream.try_clone() {
                open.lock().expect("lock").push((id, clone));
            }
            let (options, config, spool, work, counters, active, open) =
                (&options, &config, &spool, &work, &counters, &active, &open);
            scope.spawn(move || {
                if let Err(e) = scp::serve(stream, options, config, spool, work, counters) {
                    tracing::info!("{e:#}");
                }
                open.lock().expect("lock").retain(|(i, _)| *i != id);
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
        for (_, s) in open.lock().expect("lock").iter() {
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

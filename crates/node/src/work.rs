//! What happens after an instance is stored: series completion, jobs, the outbox.
//!
//! - An instance of a series with no open record opens one (`.node/series/`, written before
//!   the instance is acknowledged). A series is complete after `series_idle_seconds`
//!   without a new instance; then one job per rule job that matches it is written
//!   (`.node/jobs/`) and the series record removed. After a restart the open series wait
//!   their idle time again.
//! - Jobs run one at a time: `forward` writes one outbox record per destination;
//!   `segment` runs the core's segment jobs in process ([`ModelRunner`]: one loaded model,
//!   a panic caught as that job's failure) from the rule's boxes on the series' middle
//!   slice, stores the SEG in the spool (it opens no series: results run no rules) and
//!   queues it for the rule's destinations; `embed` writes the series' vectors to the
//!   node's index.
//! - The outbox (`.node/outbox/`) sends its records' files by C-STORE; what the
//!   destination stored leaves the record, the rest is retried after `retry_seconds`,
//!   doubled each time (at most an hour); after `max_attempts` the record is parked
//!   (`.node/parked/`) with its error. A crash repeats at most the send in flight
//!   (delivery at least once; the destination keeps one copy per SOP instance).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Result;
use medfm::dicom::InstanceIds;
use serde::{Deserialize, Serialize};

pub use super::budget::{Budget, Taken};
use super::config::{Config, JobKind};
pub use super::liveness::{Liveness, supervised};
use super::records::{Records, now_unix};
use super::runner::ModelRunner;
use super::spool::{Spool, StoreError, Stored};
use super::{Stop, scu};

mod jobs;

/// An open series (its record).
#[derive(Serialize, Deserialize)]
struct OpenSeries {
    study: String,
    series: String,
}

/// How a job or a send has fared: failed attempts, when the next may run (Unix
/// seconds), the last error.
#[derive(Default, Serialize, Deserialize)]
struct Attempts {
    attempts: u32,
    not_before: u64,
    #[serde(default)]
    error: String,
}

/// A job to run on a complete series.
#[derive(Serialize, Deserialize)]
pub struct Job {
    kind: JobKind,
    study: String,
    series: String,
    /// The rule's [`Rule::key`](super::config::Rule::key).
    rule: RuleRef,
    /// A forward of a series completed again: the file names of the instances new since
    /// the rule last ran (absent: every instance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    only: Option<Vec<String>>,
    #[serde(flatten)]
    tries: Attempts,
}

/// The rule of a job: its key; records written before rules had keys hold the rule's
/// position (read as it was, for the jobs waiting across the upgrade).
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum RuleRef {
    Key(String),
    Index(usize),
}

/// Files to send to one destination.
#[derive(Serialize, Deserialize)]
pub struct Send {
    destination: String,
    /// Paths relative to the spool root.
    files: Vec<PathBuf>,
    #[serde(flatten)]
    tries: Attempts,
}

/// A record that is retried: a job or a send.
trait Retried: Serialize {
    /// "job" or "send", for the log.
    const KIND: &'static str;
    fn tries(&mut self) -> &mut Attempts;
    /// What it is about, for the status's last errors.
    fn about(&self) -> String;
}

impl Retried for Job {
    const KIND: &'static str = "job";
    fn tries(&mut self) -> &mut Attempts {
        &mut self.tries
    }
    fn about(&self) -> String {
        format!("job {:?} of series {}", self.kind, self.series)
    }
}

impl Retried for Send {
    const KIND: &'static str = "send";
    fn tries(&mut self) -> &mut Attempts {
        &mut self.tries
    }
    fn about(&self) -> String {
        format!("send to {}", self.destination)
    }
}

pub struct Work {
    root: PathBuf,
    series: Records,
    jobs: Records,
    outbox: Records,
    parked: Records,
    /// Series (`<study>_<series>`) a send of which completed: eviction may remove them
    /// when nothing of theirs is pending. (Records of whole studies, from before, name
    /// no series and are ignored: those studies are kept.)
    sent: Records,
    /// Per series and rule, the instances (file names) its jobs were last made for: a
    /// series completed again (a late instance) runs only the rules whose instances
    /// changed, and a forward sends only the new ones (`work/jobs.rs`, `jobs_of_rule`).
    ran: Records,
    /// Open series and when their last instance arrived.
    open: Mutex<HashMap<(String, String), Instant>>,
    /// The model, one run at a time across jobs and HTTP requests.
    pub runner: ModelRunner,
    /// The last errors of jobs and sends (newest last), for the status.
    pub errors: Mutex<std::collections::VecDeque<String>>,
    /// The work thread's liveness, for `/api/health`.
    pub liveness: Liveness,
    /// The node's memory budget (`memory_budget_mb`).
    pub budget: Budget,
    stop: Stop,
}

/// Deflated Explicit VR Little Endian.
const DEFLATED: &str = "1.2.840.10008.1.2.1.99";

impl Work {
    pub fn open(
        root: &std::path::Path,
        runner: ModelRunner,
        budget: u64,
        stop: Stop,
    ) -> Result<Work> {
        let state = root.join(".node");
        let work = Work {
            root: root.to_path_buf(),
            series: Records::open(&state.join("series"))?,
            jobs: Records::open(&state.join("jobs"))?,
            outbox: Records::open(&state.join("outbox"))?,
            parked: Records::open(&state.join("parked"))?,
            sent: Records::open(&state.join("sent"))?,
            ran: Records::open(&state.join("ran"))?,
            open: Mutex::new(HashMap::new()),
            runner,
            errors: Mutex::new(std::collections::VecDeque::new()),
            liveness: Liveness::default(),
            budget: Budget::new(budget),
            stop,
        };
        // Work folders of the versions that ran models in child processes.
        let _ = std::fs::remove_dir_all(state.join("run"));
        // Series open at the last stop wait their idle time again from now.
        let mut open = work.open.lock().expect("lock");
        for name in work.series.names()? {
            let s: OpenSeries = work.series.get(&name)?;
            open.insert((s.study, s.series), Instant::now());
        }
        drop(open);
        tracing::info!(
            open_series = work.series.len(),
            jobs = work.jobs.len(),
            outbox = work.outbox.len(),
            parked = work.parked.len(),
            "resuming"
        );
        Ok(work)
    }

    /// Make room for `needed` bytes: remove the oldest series that were delivered (every
    /// send of their instances, or of the SEG that is the series, completed) and have
    /// nothing pending (no open series, no job, no send waiting or parked), until enough
    /// is free. A series never delivered (no rule forwards it, a SEG without a
    /// destination, a send still failing) is never removed. The bytes freed.
    pub fn evict(&self, spool: &Spool, needed: u64) -> Result<u64> {
        // Arrivals wait: a series receiving an instance is open, so it is kept.
        let open = self.open.lock().expect("lock");
        let mut pending: Vec<String> = open.keys().map(|(st, se)| series_name(st, se)).collect();
        for name in self.jobs.names()? {
            if let Ok(job) = self.jobs.get::<Job>(&name) {
                pending.push(series_name(&job.study, &job.series));
            }
        }
        for records in [&self.outbox, &self.parked] {
            for name in records.names()? {
                if let Ok(v) = records.get::<serde_json::Value>(&name) {
                    // A parked job names its series; a send, its files.
                    if let (Some(st), Some(se)) = (v["study"].as_str(), v["series"].as_str()) {
                        pending.push(series_name(st, se));
                    }
                    for f in v["files"].as_array().into_iter().flatten() {
                        let mut parts = f.as_str().unwrap_or("").split('/');
                        if let (Some(st), Some(se)) = (parts.next(), parts.next()) {
                            pending.push(series_name(st, se));
                        }
                    }
                }
            }
        }
        let sent = self.sent.names()?;
        let ran = self.ran.names()?;
        let mut freed = 0;
        for (study, series) in spool.series_by_age()? {
            if freed >= needed {
                break;
            }
            let name = series_name(&study, &series);
            if !sent.contains(&name) || pending.contains(&name) {
                continue;
            }
            let bytes = spool.remove_series(&study, &series)?;
            self.sent.remove(&name)?;
            // What its rules ran on goes with it: sent again, it is a new series.
            for record in &ran {
                if record
                    .strip_prefix(&name)
                    .is_some_and(|r| r.starts_with('_'))
                {
                    self.ran.remove(record)?;
                }
            }
            freed += bytes;
            tracing::info!(
                study,
                series,
                bytes,
                "evicted (delivered, nothing pending) to make room"
            );
        }
        drop(open);
        Ok(freed)
    }

    /// Check a Part 10 file before it is admitted, as C-STORE and the watch folder both
    /// do: its file meta group is one the outbox can read (a file it cannot send is
    /// refused now, with the reason, rather than failing every send later); a deflated
    /// data set inflates to at most `max_bytes` (counted without keeping it), and the two
    /// inflated copies the check makes are taken from the node's memory budget while it
    /// runs; the whole data set parses and its UIDs match the file meta.
    pub fn check(&self, file: &[u8], max_bytes: u64) -> Result<InstanceIds, StoreError> {
        let meta = medfm::dimse::file_meta(file).map_err(|e| {
            // Not DICOM at all: the reader's own words for it.
            match file.get(128..132) {
                Some(b"DICM") => StoreError::Invalid(e.to_string()),
                _ => StoreError::Invalid(
                    medfm::dicom::identify(file)
                        .err()
                        .map_or_else(|| e.to_string(), |e| e.to_string()),
                ),
            }
        })?;
        let _inflated = if meta.transfer_syntax == DEFLATED {
            use std::io::Read;
            let stream = flate2::read::DeflateDecoder::new(&file[meta.data_set_offset..]);
            let n = std::io::copy(&mut stream.take(max_bytes + 1), &mut std::io::sink())
                .map_err(|e| StoreError::Invalid(format!("the deflated data set: {e}")))?;
            if n > max_bytes {
                // Never fits: refused for good (the watch folder rejects the file).
                return Err(StoreError::Invalid(format!(
                    "the deflated data set inflates past max_instance_mb ({max_bytes} bytes)"
                )));
            }
            Some(self.budget.take(2 * n).ok_or_else(|| {
                StoreError::Resources("the node's memory budget is in use: try again later".into())
            })?)
        } else {
            None
        };
        let ids = medfm::dicom::identify(file).map_err(|e| StoreError::Invalid(e.to_string()))?;
        // For a C-STORE the file meta is the command's.
        for (name, data_set, meta) in [
            ("SOPInstanceUID", &ids.sop_instance_uid, &meta.sop_instance),
            ("SOPClassUID", &ids.sop_class_uid, &meta.sop_class),
        ] {
            if data_set != meta {
                return Err(StoreError::Mismatch(format!(
                    "{name} {data_set} differs from the command's (file meta's) {meta}"
                )));
            }
        }
        Ok(ids)
    }

    /// Put a checked instance ([`Work::check`]) into the spool, as C-STORE and the watch folder both do:
    /// its series is opened (durably) before the instance is stored, so a crash in between
    /// leaves an open series without this instance, never an instance without its series;
    /// an instance over the quota first makes room ([`Work::evict`]) and is tried once more.
    pub fn admit(
        &self,
        spool: &Spool,
        ids: &InstanceIds,
        file: &[u8],
    ) -> Result<Stored, StoreError> {
        if !spool.contains(ids)
            && let Err(e) = self.arrived(ids)
        {
            return Err(StoreError::Io(e.context("cannot record the series")));
        }
        let stored = spool.store(ids, file);
        if !matches!(stored, Err(StoreError::Quota { .. })) {
            return stored;
        }
        match self.evict(spool, file.len() as u64) {
            Ok(freed) if freed > 0 => spool.store(ids, file),
            Ok(_) => stored,
            Err(e) => {
                tracing::error!("eviction: {e:#}");
                stored
            }
        }
    }

    /// A failed attempt of record `name` of `records`: retried after its backoff, or
    /// parked after `max_attempts` with its error; logged and kept for the status.
    fn failed<T: Retried>(
        &self,
        config: &Config,
        records: &Records,
        name: &str,
        mut record: T,
        error: String,
    ) -> Result<()> {
        self.note_error(format!("{}: {error}", record.about()));
        let tries = record.tries();
        tries.attempts += 1;
        tries.error = error;
        let attempts = tries.attempts;
        if attempts >= config.max_attempts {
            tracing::error!(
                record = name,
                error = tries.error,
                "{} parked after {attempts} attempts",
                T::KIND
            );
            records.move_to(name, &self.parked, &record)
        } else {
            tries.not_before = now_unix() + backoff(config, attempts);
            tracing::warn!(
                record = name,
                error = tries.error,
                attempts,
                "{} failed; will retry",
                T::KIND
            );
            records.put(name, &record)
        }
    }

    /// Keep an error for the status (the last 20).
    fn note_error(&self, e: String) {
        let mut errors = self.errors.lock().expect("lock");
        if errors.len() == 20 {
            errors.pop_front();
        }
        errors.push_back(format!("{} {e}", now_unix()));
    }

    /// Counts of the queues: open series, jobs, outbox, parked.
    pub fn queues(&self) -> serde_json::Value {
        serde_json::json!({
            "open_series": self.series.len(),
            "jobs": self.jobs.len(),
            "outbox": self.outbox.len(),
            "parked": self.parked.len(),
        })
    }

    /// The spool root.
    pub fn root(&self) -> &std::path::Path {
        &self.root
    }

    /// An instance was stored: its series is open (durably) and its clock restarts.
    pub fn arrived(&self, ids: &InstanceIds) -> Result<()> {
        let key = (
            ids.study_instance_uid.clone(),
            ids.series_instance_uid.clone(),
        );
        let mut open = self.open.lock().expect("lock");
        if !open.contains_key(&key) {
            self.series.put(
                &series_name(&key.0, &key.1),
                &OpenSeries {
                    study: key.0.clone(),
                    series: key.1.clone(),
                },
            )?;
        }
        open.insert(key, Instant::now());
        Ok(())
    }

    /// Complete the series idle long enough: write their jobs, close their records. A
    /// series that fails (its first instance unreadable is not a failure: it gets no jobs)
    /// is logged, kept in the status' errors and tried again after its idle time.
    fn complete_idle(&self, config: &Config) -> Result<()> {
        let mut open = self.open.lock().expect("lock");
        let idle: Vec<_> = open
            .iter()
            .filter(|(_, t)| t.elapsed() >= config.series_idle())
            .map(|(k, _)| k.clone())
            .collect();
        for (study, series) in idle {
            self.liveness.begin(format!("completing series {series}"));
            match supervised(|| self.complete(config, &study, &series)) {
                Ok(jobs) => {
                    tracing::info!(study, series, jobs, "series complete");
                    open.remove(&(study, series));
                }
                Err(e) => {
                    let e = format!("{e:#}");
                    tracing::error!(study, series, "series completion failed: {e}");
                    self.note_error(format!("completion of series {series}: {e}"));
                    open.insert((study, series), Instant::now());
                }
            }
        }
        Ok(())
    }

    /// Write the jobs of a complete series, close its record; how many jobs.
    fn complete(&self, config: &Config, study: &str, series: &str) -> Result<usize> {
        let dir = self.root.join(study).join(series);
        let instances = super::spool::instances_of(&dir)?;
        let ids = match instances.first().map(|p| {
            std::fs::read(p)
                .map_err(anyhow::Error::from)
                .and_then(|b| Ok(medfm::dicom::identify(&b)?))
        }) {
            Some(Ok(ids)) => Some(ids),
            Some(Err(e)) => {
                tracing::warn!(
                    study,
                    series,
                    "series complete, but its first instance is unreadable: {e:#}"
                );
                None
            }
            None => None,
        };
        let mut jobs = 0;
        if let Some(ids) = ids {
            let now: Vec<String> = instances
                .iter()
                .filter_map(|p| Some(p.file_name()?.to_str()?.to_string()))
                .collect();
            for rule in config.rules.iter().filter(|r| r.matches(&ids)) {
                jobs += self.jobs_of_rule(rule, study, series, &now)?;
            }
        }
        self.series.remove(&series_name(study, series))?;
        Ok(jobs)
    }

    /// Read record `name` of `records`; one that cannot be read is parked as it is (its
    /// text and why), so it stops no other record. None then.
    fn read_record<T: serde::de::DeserializeOwned>(
        &self,
        records: &Records,
        name: &str,
    ) -> Option<T> {
        match records.get::<T>(name) {
            Ok(r) => Some(r),
            Err(e) => {
                let e = format!("{e:#}");
                tracing::error!(record = name, "unreadable record parked: {e}");
                self.note_error(format!("record {name}: {e}"));
                let parked = serde_json::json!({ "unreadable": true, "error": e });
                if let Err(e) = records.move_to(name, &self.parked, &parked) {
                    tracing::error!(record = name, "cannot park it: {e:#}");
                }
                None
            }
        }
    }

    /// Send what is due in the outbox.
    fn send_due(&self, config: &Config) -> Result<()> {
        for name in self.outbox.names()? {
            if self.stop.is_stopped() {
                break;
            }
            let Some(mut send) = self.read_record::<Send>(&self.outbox, &name) else {
                continue;
            };
            if send.tries.not_before > now_unix() {
                continue;
            }
            self.liveness.begin(send.about());
            let result = match config
                .destinations
                .iter()
                .find(|d| d.name == send.destination)
            {
                None => Err(anyhow::anyhow!(
                    "destination {:?} is no longer configured",
                    send.destination
                )),
                Some(dest) => {
                    let files: Vec<PathBuf> =
                        send.files.iter().map(|f| self.root.join(f)).collect();
                    supervised(|| {
                        scu::deliver(dest, &config.ae_title, &files, config.association_timeout())
                    })
                }
            };
            let failed: Vec<(PathBuf, String)> = match result {
                Ok(outcomes) => outcomes
                    .into_iter()
                    .filter_map(|o| o.result.err().map(|e| (o.file, e)))
                    .collect(),
                Err(e) => vec![(PathBuf::new(), format!("{e:#}"))],
            };
            if failed.is_empty() {
                tracing::info!(
                    destination = send.destination,
                    files = send.files.len(),
                    "sent"
                );
                // Delivered: each series of the files (forwarded instances, or a SEG).
                let mut series: Vec<String> = send
                    .files
                    .iter()
                    .filter_map(|f| {
                        let mut c = f.iter().filter_map(|c| c.to_str());
                        Some(series_name(c.next()?, c.next()?))
                    })
                    .collect();
                series.dedup();
                for name in series {
                    self.sent.put(&name, &now_unix())?;
                }
                self.outbox.remove(&name)?;
                continue;
            }
            if !failed[0].0.as_os_str().is_empty() {
                // Keep only the files that were not stored.
                send.files
                    .retain(|f| failed.iter().any(|(p, _)| p.ends_with(f)));
            }
            let error = failed[0].1.clone();
            self.failed(config, &self.outbox, &name, send, error)?;
        }
        Ok(())
    }

    /// The loop of the work thread: watch folder, series completion, jobs, outbox, until
    /// the node is stopped. Each file, series, job and send runs inside [`supervised`]: a
    /// panic or an error is that item's recorded failure; the pass itself is supervised
    /// too, so nothing ends the loop but the stop.
    pub fn run(
        &self,
        config: &Config,
        spool: &Spool,
        inbox: Option<&super::inbox::Inbox>,
        counters: &super::Counters,
    ) {
        while !self.stop.is_stopped() {
            let pass = supervised(|| {
                if let Some(inbox) = inbox {
                    self.liveness.begin("inbox scan");
                    if let Err(e) = inbox.scan(spool, self, counters) {
                        tracing::error!("inbox: {e:#}");
                        self.note_error(format!("inbox: {e:#}"));
                    }
                }
                for (what, step) in [
                    (
                        "series completion",
                        &(|| self.complete_idle(config)) as &dyn Fn() -> Result<()>,
                    ),
                    ("jobs", &|| self.run_jobs(config, spool)),
                    ("outbox", &|| self.send_due(config)),
                ] {
                    self.liveness.begin(what);
                    if let Err(e) = step() {
                        tracing::error!("{what}: {e:#}");
                        self.note_error(format!("{what}: {e:#}"));
                    }
                }
                Ok(())
            });
            if let Err(e) = pass {
                tracing::error!("work pass: {e:#}");
                self.note_error(format!("work pass: {e:#}"));
            }
            self.liveness.begin("idle");
            std::thread::sleep(Duration::from_millis(200));
        }
        self.liveness.end();
    }
}

fn series_name(study: &str, series: &str) -> String {
    format!("{study}_{series}")
}

/// Seconds before retry `attempts` (1-based): retry_seconds doubled each time, at most an hour.
fn backoff(config: &Config, attempts: u32) -> u64 {
    config
        .retry_seconds
        .saturating_mul(1u64 << attempts.saturating_sub(1).min(20))
        .min(3600)
}

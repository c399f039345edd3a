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

use anyhow::{Context, Result};
use medfm::dicom::InstanceIds;
use medfm::jobs::{PromptSpec, SegmentJob, Series};
use serde::{Deserialize, Serialize};

use super::config::{Config, JobKind, Rule};
use super::records::{Records, new_id, now_unix};
use super::runner::ModelRunner;
use super::spool::{Spool, StoreError, Stored};
use super::{Stop, scu};

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
    /// Studies every send of which completed (eviction may remove them).
    sent: Records,
    /// Open series and when their last instance arrived.
    open: Mutex<HashMap<(String, String), Instant>>,
    /// The model, one run at a time across jobs and HTTP requests.
    pub runner: ModelRunner,
    /// The last errors of jobs and sends (newest last), for the status.
    pub errors: Mutex<std::collections::VecDeque<String>>,
    stop: Stop,
}

impl Work {
    pub fn open(root: &std::path::Path, runner: ModelRunner, stop: Stop) -> Result<Work> {
        let state = root.join(".node");
        let work = Work {
            root: root.to_path_buf(),
            series: Records::open(&state.join("series"))?,
            jobs: Records::open(&state.join("jobs"))?,
            outbox: Records::open(&state.join("outbox"))?,
            parked: Records::open(&state.join("parked"))?,
            sent: Records::open(&state.join("sent"))?,
            open: Mutex::new(HashMap::new()),
            runner,
            errors: Mutex::new(std::collections::VecDeque::new()),
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

    /// Make room for `needed` bytes: remove the oldest studies that were sent and have
    /// nothing pending (no open series, no job, no send waiting or parked), until enough
    /// is free. Studies never sent are never removed. The bytes freed.
    pub fn evict(&self, spool: &Spool, needed: u64) -> Result<u64> {
        // Arrivals wait: a study receiving an instance has an open series, so it is kept.
        let open = self.open.lock().expect("lock");
        let mut pending: Vec<String> = open.keys().map(|(study, _)| study.clone()).collect();
        for name in self.jobs.names()? {
            if let Ok(job) = self.jobs.get::<Job>(&name) {
                pending.push(job.study);
            }
        }
        for records in [&self.outbox, &self.parked] {
            for name in records.names()? {
                if let Ok(v) = records.get::<serde_json::Value>(&name) {
                    // A parked job names its study; a send, its files.
                    if let Some(s) = v["study"].as_str() {
                        pending.push(s.to_string());
                    }
                    for f in v["files"].as_array().into_iter().flatten() {
                        if let Some(study) = f.as_str().and_then(|p| p.split('/').next()) {
                            pending.push(study.to_string());
                        }
                    }
                }
            }
        }
        let sent = self.sent.names()?;
        let mut freed = 0;
        for study in spool.studies_by_age()? {
            if freed >= needed {
                break;
            }
            if !sent.contains(&study) || pending.contains(&study) {
                continue;
            }
            let bytes = spool.remove_study(&study)?;
            self.sent.remove(&study)?;
            freed += bytes;
            tracing::info!(study, bytes, "evicted (sent, nothing pending) to make room");
        }
        drop(open);
        Ok(freed)
    }

    /// Put a checked instance into the spool, as C-STORE and the watch folder both do:
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

    /// Complete the series idle long enough: write their jobs, close their records.
    fn complete_idle(&self, config: &Config) -> Result<()> {
        let mut open = self.open.lock().expect("lock");
        let idle: Vec<_> = open
            .iter()
            .filter(|(_, t)| t.elapsed() >= config.series_idle())
            .map(|(k, _)| k.clone())
            .collect();
        for (study, series) in idle {
            let dir = self.root.join(&study).join(&series);
            let first = super::spool::instances_of(&dir)?.into_iter().next();
            let ids = match first.map(|p| {
                std::fs::read(&p)
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
                for rule in &config.rules {
                    if !rule.matches(&ids) {
                        continue;
                    }
                    for kind in &rule.jobs {
                        self.jobs.put(
                            &new_id(),
                            &Job {
                                kind: *kind,
                                study: study.clone(),
                                series: series.clone(),
                                rule: RuleRef::Key(rule.key()),
                                tries: Attempts::default(),
                            },
                        )?;
                        jobs += 1;
                    }
                }
            }
            tracing::info!(study, series, jobs, "series complete");
            self.series.remove(&series_name(&study, &series))?;
            open.remove(&(study, series));
        }
        Ok(())
    }

    /// Run the jobs that are due, oldest first.
    fn run_jobs(&self, config: &Config, spool: &Spool) -> Result<()> {
        for name in self.jobs.names()? {
            if self.stop.is_stopped() {
                break;
            }
            let job: Job = self.jobs.get(&name)?;
            if job.tries.not_before > now_unix() {
                continue;
            }
            match self.run_job(config, spool, &job) {
                Ok(()) => self.jobs.remove(&name)?,
                Err(e) => self.failed(config, &self.jobs, &name, job, format!("{e:#}"))?,
            }
        }
        Ok(())
    }

    fn run_job(&self, config: &Config, spool: &Spool, job: &Job) -> Result<()> {
        let rule = match &job.rule {
            RuleRef::Key(key) => config.rule(key),
            RuleRef::Index(i) => config.rules.get(*i),
        };
        let rule = rule.with_context(|| match &job.rule {
            RuleRef::Key(key) => format!("rule {key:?} is no longer in the configuration"),
            RuleRef::Index(i) => format!("rule {} is no longer in the configuration", i + 1),
        })?;
        match job.kind {
            JobKind::Forward => {
                let dir = self.root.join(&job.study).join(&job.series);
                let files: Vec<PathBuf> = super::spool::instances_of(&dir)?
                    .into_iter()
                    .filter_map(|p| p.strip_prefix(&self.root).ok().map(PathBuf::from))
                    .collect();
                for dest in config.destinations_of(rule) {
                    self.queue(&dest.name, files.clone())?;
                    tracing::info!(
                        series = job.series,
                        destination = dest.name,
                        files = files.len(),
                        "forward queued"
                    );
                }
                Ok(())
            }
            JobKind::Embed => {
                let index = self.root.join(".node").join("index");
                super::spool::create_dir(&index)?;
                let name = series_name(&job.study, &job.series);
                let (npy, jsonl) = (
                    index.join(format!("{name}.npy")),
                    index.join(format!("{name}.jsonl")),
                );
                let dir = self.root.join(&job.study).join(&job.series);
                let series = Series::read(&[dir], &job.series)?;
                let index = self.runner.embed(&series)?;
                // The vectors first: a .npy without its .jsonl is left out by readers.
                medfm::fs::write_atomic(&npy, &index.to_npy())?;
                medfm::fs::write_atomic(&jsonl, index.to_jsonl().as_bytes())?;
                let vectors = index.len();
                tracing::info!(series = job.series, vectors, "embedded");
                Ok(())
            }
            JobKind::Segment => {
                let (series, segments) = self.rule_jobs(rule, job)?;
                let (ids, file, _) = self.segment(spool, &series, &segments)?;
                for dest in config.destinations_of(rule) {
                    self.queue(&dest.name, vec![file.clone()])?;
                }
                tracing::info!(
                    series = job.series,
                    seg = ids.sop_instance_uid,
                    seg_series = ids.series_instance_uid,
                    "segmented"
                );
                Ok(())
            }
        }
    }

    /// Queue `files` (relative to the spool) for `destination`.
    pub fn queue(&self, destination: &str, files: Vec<PathBuf>) -> Result<()> {
        self.outbox.put(
            &new_id(),
            &Send {
                destination: destination.to_string(),
                files,
                tries: Attempts::default(),
            },
        )
    }

    /// The series of a job and the segment jobs of its rule's `[[rule.segment]]`s: boxes
    /// given as fractions of the series' middle slice.
    fn rule_jobs(&self, rule: &Rule, job: &Job) -> Result<(Series, Vec<SegmentJob>)> {
        let dir = self.root.join(&job.study).join(&job.series);
        let series = Series::read(&[dir], &job.series)?;
        let mid = series.len() / 2;
        let meta = series.meta(mid);
        let (cols, rows) = (meta.cols as f32, meta.rows as f32);
        // The rule's fractions as pixels of the middle slice, then the prompt rule every
        // front uses (default label and colour by the segment's number).
        let jobs = rule
            .segments
            .iter()
            .enumerate()
            .map(|(k, s)| {
                let [x0, y0, x1, y1] = s.bbox;
                let prompt = PromptSpec {
                    label: Some(s.label.clone()),
                    color: s.color,
                    bbox: Some([
                        x0 * (cols - 1.0),
                        y0 * (rows - 1.0),
                        x1 * (cols - 1.0),
                        y1 * (rows - 1.0),
                    ]),
                    points: Vec::new(),
                    propagate: s.propagate,
                    extent: s.extent,
                    min_iou: s.min_iou,
                };
                Ok(SegmentJob {
                    start: mid,
                    ..prompt.job(k + 1)?
                })
            })
            .collect::<Result<Vec<_>, medfm::Error>>()?;
        Ok((series, jobs))
    }

    /// Run `jobs` on `series` with the node's model, store the SEG in the spool (it opens
    /// no series) and return its identity, its path relative to the spool and the jobs'
    /// summary ([`medfm::jobs::describe`]).
    pub fn segment(
        &self,
        spool: &Spool,
        series: &Series,
        jobs: &[SegmentJob],
    ) -> Result<(InstanceIds, PathBuf, Vec<serde_json::Value>)> {
        let (outcomes, _) = self.runner.segment(series, jobs)?;
        let summary = medfm::jobs::describe(series, jobs, &outcomes);
        for s in &summary {
            tracing::info!(
                label = s["label"].as_str().unwrap_or(""),
                voxels = s["voxels"].as_u64().unwrap_or(0),
                volume_ml = s["volume_ml"].as_f64().unwrap_or(f64::NAN),
                "segment"
            );
        }
        let bytes = medfm::jobs::write_seg(series, jobs, &outcomes)?;
        let ids = medfm::dicom::identify(&bytes).context("the SEG medfm wrote")?;
        spool
            .store(&ids, &bytes)
            .map_err(|e| anyhow::anyhow!("cannot store the SEG: {e}"))?;
        let stored = spool.path_of(&ids).map_err(|e| anyhow::anyhow!("{e}"))?;
        let file = stored.strip_prefix(&self.root)?.to_path_buf();
        Ok((ids, file, summary))
    }

    /// Send what is due in the outbox.
    fn send_due(&self, config: &Config) -> Result<()> {
        for name in self.outbox.names()? {
            if self.stop.is_stopped() {
                break;
            }
            let mut send: Send = self.outbox.get(&name)?;
            if send.tries.not_before > now_unix() {
                continue;
            }
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
                    scu::send(dest, &config.ae_title, &files, config.association_timeout())
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
                let mut studies: Vec<&str> = send
                    .files
                    .iter()
                    .filter_map(|f| f.iter().next().and_then(|c| c.to_str()))
                    .collect();
                studies.dedup();
                for study in studies {
                    self.sent.put(study, &now_unix())?;
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
    /// the node is stopped.
    pub fn run(
        &self,
        config: &Config,
        spool: &Spool,
        inbox: Option<&super::inbox::Inbox>,
        counters: &super::Counters,
    ) {
        while !self.stop.is_stopped() {
            if let Some(inbox) = inbox
                && let Err(e) = inbox.scan(spool, self, counters)
            {
                tracing::error!("inbox: {e:#}");
            }
            for (what, r) in [
                ("series completion", self.complete_idle(config)),
                ("jobs", self.run_jobs(config, spool)),
                ("outbox", self.send_due(config)),
            ] {
                if let Err(e) = r {
                    tracing::error!("{what}: {e:#}");
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
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

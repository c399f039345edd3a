//! The work thread's jobs: a rule's `forward`, `embed` and `segment` on a complete
//! series, one at a time, each inside the supervisor (see the parent module).

use std::path::PathBuf;

use anyhow::{Context, Result};
use medfm::dicom::InstanceIds;
use medfm::jobs::{SegmentJob, Series};

use super::{Attempts, Job, Retried, RuleRef, Send, Work, series_name, supervised};
use crate::config::{Config, JobKind, Rule};
use crate::records::{new_id, now_unix};
use crate::spool::Spool;

impl Work {
    /// Run the jobs that are due, oldest first.
    pub(super) fn run_jobs(&self, config: &Config, spool: &Spool) -> Result<()> {
        for name in self.jobs.names()? {
            if self.stop.is_stopped() {
                break;
            }
            let Some(job) = self.read_record::<Job>(&self.jobs, &name) else {
                continue;
            };
            if job.tries.not_before > now_unix() {
                continue;
            }
            self.liveness.begin(job.about());
            match supervised(|| self.run_job(config, spool, &job)) {
                Ok(()) => self.jobs.remove(&name)?,
                Err(e) => self.failed(config, &self.jobs, &name, job, format!("{e:#}"))?,
            }
        }
        Ok(())
    }

    /// The jobs of `rule` on a series completed with the instances `now` (file names, in
    /// order), how many: none when its jobs were last made for the same instances (a
    /// series sent again), and a forward of only the instances new since then (a late
    /// instance); a segment or embed job runs on the whole series again (its result
    /// depends on every slice; a SEG's UIDs come from its content, so an unchanged one is
    /// the same instance). A record that can't be read counts as none: everything runs.
    pub(super) fn jobs_of_rule(
        &self,
        rule: &Rule,
        study: &str,
        series: &str,
        now: &[String],
    ) -> Result<usize> {
        use sha2::Digest;
        let key = rule.key();
        let digest = sha2::Sha256::digest(key.as_bytes());
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        let record = format!("{}_{hex}", series_name(study, series));
        let before: Option<Vec<String>> = self.ran.get(&record).ok();
        if before.as_deref() == Some(now) {
            tracing::info!(
                study,
                series,
                rule = key,
                "instances unchanged: the rule does not run again"
            );
            return Ok(0);
        }
        let new: Option<Vec<String>> =
            before.map(|b| now.iter().filter(|n| !b.contains(n)).cloned().collect());
        let mut jobs = 0;
        for kind in &rule.jobs {
            let only = matches!(kind, JobKind::Forward)
                .then(|| new.clone())
                .flatten();
            if only.as_ref().is_some_and(Vec::is_empty) {
                continue;
            }
            self.jobs.put(
                &new_id(),
                &Job {
                    kind: *kind,
                    study: study.to_string(),
                    series: series.to_string(),
                    rule: RuleRef::Key(key.clone()),
                    only,
                    tries: Attempts::default(),
                },
            )?;
            jobs += 1;
        }
        self.ran.put(&record, &now)?;
        Ok(jobs)
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
                let wanted = |p: &PathBuf| {
                    job.only.as_ref().is_none_or(|only| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| only.iter().any(|o| o == n))
                    })
                };
                let files: Vec<PathBuf> = crate::spool::instances_of(&dir)?
                    .into_iter()
                    .filter(wanted)
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
                crate::spool::create_dir(&index)?;
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

    /// The series of a job and the segment jobs of its rule's `[[rule.segment]]`s
    /// ([`Rule::segment_jobs`]).
    fn rule_jobs(&self, rule: &Rule, job: &Job) -> Result<(Series, Vec<SegmentJob>)> {
        let dir = self.root.join(&job.study).join(&job.series);
        let series = Series::read(&[dir], &job.series)?;
        let jobs = rule.segment_jobs(&series)?;
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
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::runner::ModelRunner;

    /// The jobs written so far, by kind, each with the instances it is limited to.
    fn jobs_of(work: &Work) -> Vec<(JobKind, Option<Vec<String>>)> {
        let mut out: Vec<_> = (work.jobs.names().unwrap().iter())
            .map(|n| work.jobs.get::<Job>(n).unwrap())
            .map(|j| (j.kind, j.only))
            .collect();
        out.sort_by_key(|(k, _)| format!("{k:?}"));
        out
    }

    #[test]
    fn a_series_completed_again_runs_only_what_its_instances_change() {
        let dir = medfm::fs::TempDir::new("jobs").unwrap();
        let config = Config::parse(
            "[[destination]]\nname = \"pacs\"\nae_title = \"PACS\"\nhost = \"127.0.0.1\"\nport = 104\n\
             [[rule]]\nname = \"brain\"\njobs = [\"forward\", \"segment\"]\n\
             [[rule.segment]]\nlabel = \"Brain\"\nbox = [0.2, 0.2, 0.8, 0.8]\n",
        )
        .unwrap();
        let runner = ModelRunner::new(Default::default(), Duration::from_secs(60), Vec::new());
        let work = Work::open(dir.path(), runner, 1 << 30, crate::Stop::new()).unwrap();
        // Three slices of a real series, stored as the spool stores them.
        let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/data/series/brain11");
        let bytes: Vec<Vec<u8>> = ["brain_005.dcm", "brain_006.dcm", "brain_007.dcm"]
            .iter()
            .map(|f| std::fs::read(data.join(f)).unwrap())
            .collect();
        let ids: Vec<InstanceIds> = bytes
            .iter()
            .map(|b| medfm::dicom::identify(b).unwrap())
            .collect();
        let (study, series) = (&ids[0].study_instance_uid, &ids[0].series_instance_uid);
        let folder = dir.path().join(study).join(series);
        std::fs::create_dir_all(&folder).unwrap();
        let store = |i: usize| {
            let name = format!("{}.dcm", ids[i].sop_instance_uid);
            std::fs::write(folder.join(&name), &bytes[i]).unwrap();
            name
        };
        store(0);
        store(1);

        // First completion: every job of the rule, the forward of every instance.
        assert_eq!(work.complete(&config, study, series).unwrap(), 2);
        assert_eq!(
            jobs_of(&work),
            [(JobKind::Forward, None), (JobKind::Segment, None)]
        );
        for n in work.jobs.names().unwrap() {
            work.jobs.remove(&n).unwrap();
        }

        // Completed again with the same instances (a series reopened at a restart after
        // its jobs were written): nothing runs again.
        assert_eq!(work.complete(&config, study, series).unwrap(), 0);
        assert!(jobs_of(&work).is_empty());

        // A late instance: the forward of that instance only, the segment job again.
        let late = store(2);
        assert_eq!(work.complete(&config, study, series).unwrap(), 2);
        assert_eq!(
            jobs_of(&work),
            [
                (JobKind::Forward, Some(vec![late])),
                (JobKind::Segment, None)
            ]
        );
    }
}

//! The watch folder: DICOM files dropped in `inbox` (an export share, a USB stick) are
//! taken once complete, checked like a C-STORE and moved into the spool; what cannot be
//! read goes to `rejected` with the reason beside it.
//!
//! Complete means: its size and modification time unchanged for [`SETTLE`] (a copy in
//! progress keeps growing; a file moved in is complete at once and waits the same). Names
//! starting with `.` are left alone (partial uploads by rsync and the like). The spool's
//! copy is durable before the inbox file is removed, so a crash in between only imports it
//! again (and a duplicate is stored once).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};

use super::Counters;
use super::spool::{Spool, StoreError, Stored};
use super::work::Work;

/// How long a file must stay unchanged before it is taken.
pub const SETTLE: Duration = Duration::from_secs(2);

/// A file's size and modification time.
type FileState = (u64, SystemTime);

pub struct Inbox {
    dir: PathBuf,
    rejected: PathBuf,
    /// Largest file taken (`max_instance_mb`); larger ones are rejected unread.
    max_bytes: u64,
    /// Files seen: their state and since when it is unchanged.
    seen: Mutex<HashMap<PathBuf, (FileState, Instant)>>,
}

impl Inbox {
    pub fn open(dir: &Path, rejected: &Path, max_bytes: u64) -> Result<Inbox> {
        super::spool::create_dir(dir).with_context(|| format!("inbox {}", dir.display()))?;
        super::spool::create_dir(rejected)
            .with_context(|| format!("rejected {}", rejected.display()))?;
        Ok(Inbox {
            dir: dir.to_path_buf(),
            rejected: rejected.to_path_buf(),
            max_bytes,
            seen: Mutex::new(HashMap::new()),
        })
    }

    /// One pass: take the files that have settled.
    pub fn scan(&self, spool: &Spool, work: &Work, counters: &Counters) -> Result<()> {
        // Names starting with `.` are files being written; a folder below that can't be
        // listed is logged and passed over: it stops no other file.
        let files = medfm::fs::walk_with(
            std::slice::from_ref(&self.dir),
            &medfm::fs::Walk::watched_folder(),
            |e| {
                tracing::warn!("inbox: {e}; its files wait");
                Ok(())
            },
        )
        .with_context(|| format!("cannot list {}", self.dir.display()))?;
        let mut seen = self.seen.lock().expect("lock");
        seen.retain(|p, _| files.contains(p));
        let mut ready = Vec::new();
        for f in files {
            let Ok(m) = std::fs::metadata(&f) else {
                continue;
            };
            let state = (m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH));
            match seen.get(&f) {
                Some((s, since)) if *s == state => {
                    if since.elapsed() >= SETTLE {
                        ready.push(f);
                    }
                }
                _ => {
                    seen.insert(f, (state, Instant::now()));
                }
            }
        }
        for f in ready {
            seen.remove(&f);
            work.liveness.begin(format!("inbox file {}", f.display()));
            // A panic while importing a file rejects that file, with the panic's message.
            let taken = super::work::supervised(|| {
                self.take(&f, spool, work, counters);
                Ok(())
            });
            if let Err(e) = taken
                && f.exists()
            {
                self.reject(&f, &format!("{e:#}"), counters);
            }
        }
        Ok(())
    }

    fn take(&self, path: &Path, spool: &Spool, work: &Work, counters: &Counters) {
        // No file larger than an instance the node accepts is read into memory.
        match std::fs::metadata(path) {
            Ok(m) if m.len() > self.max_bytes => {
                return self.reject(
                    path,
                    &format!(
                        "{} bytes: larger than max_instance_mb ({} bytes)",
                        m.len(),
                        self.max_bytes
                    ),
                    counters,
                );
            }
            _ => {}
        }
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(file = %path.display(), "inbox: cannot read: {e}");
                return;
            }
        };
        // The spool keeps Part 10 files with their preamble.
        let file = if bytes.len() >= 132 && &bytes[128..132] == b"DICM" {
            bytes
        } else {
            [vec![0u8; 128], bytes].concat()
        };
        let ids = match work.check(&file, self.max_bytes) {
            Ok(ids) => ids,
            Err(StoreError::Invalid(reason) | StoreError::Mismatch(reason)) => {
                return self.reject(path, &reason, counters);
            }
            Err(e) => {
                return tracing::warn!(file = %path.display(), "inbox: not imported now: {e}");
            }
        };
        match work.admit(spool, &ids, &file) {
            Ok(stored) => {
                if stored == Stored::New {
                    counters.stored(file.len() as u64);
                } else {
                    counters.duplicate();
                }
                tracing::info!(file = %path.display(), sop_instance = ids.sop_instance_uid, duplicate = stored == Stored::Duplicate, "inbox: imported");
                if let Err(e) = std::fs::remove_file(path) {
                    tracing::warn!(file = %path.display(), "inbox: imported but cannot remove it: {e}");
                }
            }
            Err(StoreError::Invalid(reason)) => self.reject(path, &reason, counters),
            // Quota or disk: left in the inbox, tried again later.
            Err(e) => tracing::warn!(file = %path.display(), "inbox: not imported now: {e}"),
        }
    }

    /// Move `path` to the rejected folder with `<name>.reason.txt` beside it.
    fn reject(&self, path: &Path, reason: &str, counters: &Counters) {
        counters.refused();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let mut target = self.rejected.join(&name);
        let mut k = 1;
        while target.exists() {
            target = self.rejected.join(format!("{name}.{k}"));
            k += 1;
        }
        let reason_file = PathBuf::from(format!("{}.reason.txt", target.display()));
        let moved = std::fs::write(&reason_file, format!("{reason}\n")).and_then(|_| {
            std::fs::rename(path, &target).or_else(|_| {
                std::fs::copy(path, &target)?;
                std::fs::remove_file(path)
            })
        });
        match moved {
            Ok(()) => {
                tracing::warn!(file = %path.display(), to = %target.display(), reason, "inbox: rejected")
            }
            Err(e) => {
                tracing::error!(file = %path.display(), reason, "inbox: rejected but cannot move it: {e}")
            }
        }
    }
}

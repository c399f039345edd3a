//! The node's durable state: folders of small JSON records under `<spool>/.node/`
//! (open series, jobs, the outbox, what was parked), each written like an instance
//! (temporary file, fsync, rename, folder fsync), so a crash leaves every record either
//! as it was or as it became, and a restart resumes from them.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// One folder of records, `<name>.json` each.
pub struct Records {
    dir: PathBuf,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A record name unique to this node: time (µs) and a counter, so names sort by age.
pub fn new_id() -> String {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    format!(
        "{micros:020}-{:06}",
        COUNTER.fetch_add(1, Ordering::Relaxed) % 1_000_000
    )
}

/// Seconds since the Unix epoch (records keep wall-clock times: they outlive the process).
pub fn now_unix() -> u64 {
    now_ms() / 1000
}

/// Milliseconds since the Unix epoch (deadlines and the work thread's step clock).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Records {
    /// Open (create) `dir`; leftovers of interrupted writes are removed.
    pub fn open(dir: &Path) -> Result<Records> {
        super::spool::create_dir(dir)?;
        for entry in fs::read_dir(dir)? {
            let p = entry?.path();
            if p.extension().is_some_and(|e| e == "tmp") {
                fs::remove_file(&p).with_context(|| format!("cannot remove {}", p.display()))?;
            }
        }
        Ok(Records {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// Write (or replace) a record durably.
    pub fn put<T: Serialize>(&self, name: &str, value: &T) -> Result<()> {
        let tmp = self.dir.join(format!("{name}.tmp"));
        let bytes = serde_json::to_vec_pretty(value)?;
        let mut f =
            fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(&bytes)
            .and_then(|_| f.sync_all())
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        fs::rename(&tmp, self.path(name))
            .with_context(|| format!("cannot rename {}", tmp.display()))?;
        super::spool::sync_dir(&self.dir)
    }

    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<T> {
        let p = self.path(name);
        let bytes = fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a valid record", p.display()))
    }

    /// Remove a record durably (absent: nothing to do).
    pub fn remove(&self, name: &str) -> Result<()> {
        match fs::remove_file(self.path(name)) {
            Ok(()) => super::spool::sync_dir(&self.dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot remove record {name}")),
        }
    }

    /// Move a record to another folder (durably: written there, then removed here).
    pub fn move_to<T: Serialize>(&self, name: &str, other: &Records, value: &T) -> Result<()> {
        other.put(name, value)?;
        self.remove(name)
    }

    /// The records' names, oldest first.
    pub fn names(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let p = entry?.path();
            if p.extension().is_some_and(|e| e == "json")
                && let Some(stem) = p.file_stem().and_then(|s| s.to_str())
            {
                out.push(stem.to_string());
            }
        }
        out.sort();
        Ok(out)
    }

    pub fn len(&self) -> usize {
        self.names().map(|n| n.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopening_and_leftovers_go() {
        let dir = medfm::fs::TempDir::new("test").unwrap();
        let r = Records::open(dir.path()).unwrap();
        let a = new_id();
        let b = new_id();
        assert!(a < b);
        r.put(&a, &vec![1, 2]).unwrap();
        r.put(&b, &vec![3]).unwrap();
        r.put(&a, &vec![4]).unwrap();
        fs::write(dir.path().join("x.tmp"), b"half").unwrap();
        let r = Records::open(dir.path()).unwrap();
        assert_eq!(r.names().unwrap(), vec![a.clone(), b.clone()]);
        assert_eq!(r.get::<Vec<i32>>(&a).unwrap(), vec![4]);
        let other = Records::open(&dir.path().join("parked")).unwrap();
        r.move_to(&b, &other, &vec![3]).unwrap();
        assert_eq!(r.names().unwrap(), vec![a]);
        assert_eq!(other.get::<Vec<i32>>(&b).unwrap(), vec![3]);
        assert!(!dir.path().join("x.tmp").exists());
    }
}

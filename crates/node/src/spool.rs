//! The spool: every instance the node acknowledged, as a Part 10 file at
//! `<root>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm` (docs/node.md).
//!
//! Durability: an instance is written to `<root>/.tmp/` under a temporary name, fsynced,
//! renamed into place, and the folders that changed are fsynced; only then does `store`
//! return, and only then is the peer told Success. A crash at any moment leaves either
//! nothing, or a whole file, or a stray temporary file (removed at the next start): never
//! a half file under a final name. UIDs are checked (`medfm::dicom::is_uid`: digits and
//! dots) before they become names. The first copy of a SOP instance is kept; later ones
//! are acknowledged and dropped.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use medfm::dicom::part10::{IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME};
use medfm::dicom::{InstanceIds, is_uid};

/// Folder of temporary files, inside the root (same file system, so a rename is atomic).
const TMP: &str = ".tmp";

/// What `store` did.
#[derive(Debug, PartialEq)]
pub enum Stored {
    /// Written.
    New,
    /// The SOP instance was already in the spool; nothing written.
    Duplicate,
}

/// Why `store` refused.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the spool's quota of {quota} bytes would be exceeded ({used} used, {len} more)")]
    Quota { quota: u64, used: u64, len: u64 },
    #[error("{0}")]
    Invalid(String),
    /// The data set names another instance than its command or file meta (A900).
    #[error("{0}")]
    Mismatch(String),
    /// The node's memory budget or size limits (status A700; the peer may retry).
    #[error("{0}")]
    Resources(String),
    #[error("cannot write the spool: {0:#}")]
    Io(anyhow::Error),
}

pub struct Spool {
    root: PathBuf,
    quota: Option<u64>,
    /// Bytes of the instances in the spool (quota accounting).
    used: Mutex<u64>,
    counter: AtomicU64,
}

impl Spool {
    /// Open (or create) the spool at `root`: stray temporary files of an earlier run are
    /// removed and the instances' bytes counted.
    pub fn open(root: &Path, quota: Option<u64>) -> Result<Spool> {
        create_dir(root).with_context(|| format!("cannot create the spool {}", root.display()))?;
        let tmp = root.join(TMP);
        create_dir(&tmp)?;
        let mut stray = 0;
        for entry in fs::read_dir(&tmp)? {
            let entry = entry?;
            fs::remove_file(entry.path())
                .with_context(|| format!("cannot remove {}", entry.path().display()))?;
            stray += 1;
        }
        if stray > 0 {
            tracing::info!(stray, "removed temporary files of an interrupted write");
        }
        let used = instances(root)?
            .iter()
            .map(|p| fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .sum();
        Ok(Spool {
            root: root.to_path_buf(),
            quota,
            used: Mutex::new(used),
            counter: AtomicU64::new(0),
        })
    }

    /// Bytes of the stored instances.
    pub fn used(&self) -> u64 {
        *self.used.lock().expect("spool lock")
    }

    /// Where an instance lives. The UIDs must be valid (checked).
    pub fn path_of(&self, ids: &InstanceIds) -> Result<PathBuf, StoreError> {
        for (name, uid) in [
            ("StudyInstanceUID", &ids.study_instance_uid),
            ("SeriesInstanceUID", &ids.series_instance_uid),
            ("SOPInstanceUID", &ids.sop_instance_uid),
        ] {
            if !is_uid(uid) {
                return Err(StoreError::Invalid(format!(
                    "{name} {uid:?} is not a valid UID"
                )));
            }
        }
        Ok(self
            .root
            .join(&ids.study_instance_uid)
            .join(&ids.series_instance_uid)
            .join(format!("{}.dcm", ids.sop_instance_uid)))
    }

    /// The spool's series as (study, series), oldest first (by the newest modification
    /// time of their instances).
    pub fn series_by_age(&self) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for study in read_dirs(&self.root)? {
            let Some(study_uid) = study.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            for series in read_dirs(&study)? {
                let mut newest = std::time::SystemTime::UNIX_EPOCH;
                for f in instances_of(&series)? {
                    if let Ok(t) = fs::metadata(&f).and_then(|m| m.modified()) {
                        newest = newest.max(t);
                    }
                }
                if let Some(name) = series.file_name().and_then(|n| n.to_str()) {
                    out.push((newest, study_uid.to_string(), name.to_string()));
                }
            }
        }
        out.sort();
        Ok(out.into_iter().map(|(_, st, se)| (st, se)).collect())
    }

    /// Remove a series (every instance; its study's folder too when that is left empty)
    /// and give its bytes back to the quota.
    pub fn remove_series(&self, study: &str, series: &str) -> Result<u64> {
        if !is_uid(study) || !is_uid(series) {
            bail!("{study:?}/{series:?}: not UIDs");
        }
        let study_dir = self.root.join(study);
        let dir = study_dir.join(series);
        let bytes: u64 = instances_of(&dir)?
            .iter()
            .map(|f| fs::metadata(f).map(|m| m.len()).unwrap_or(0))
            .sum();
        fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
        sync_dir(&study_dir)?;
        if read_dirs(&study_dir)?.is_empty() && fs::remove_dir(&study_dir).is_ok() {
            sync_dir(&self.root)?;
        }
        let mut used = self.used.lock().expect("spool lock");
        *used = used.saturating_sub(bytes);
        Ok(bytes)
    }

    /// Whether the SOP instance of `ids` is in the spool.
    pub fn contains(&self, ids: &InstanceIds) -> bool {
        self.path_of(ids).is_ok_and(|p| p.exists())
    }

    /// Store a whole Part 10 file durably (see the module docs).
    pub fn store(&self, ids: &InstanceIds, file: &[u8]) -> Result<Stored, StoreError> {
        let path = self.path_of(ids)?;
        let series_dir = path.parent().expect("a series folder");
        if path.exists() {
            // Its ack may not have been sent (a crash between rename and fsync): make the
            // entry durable before acknowledging this copy.
            sync_dir(series_dir).map_err(StoreError::Io)?;
            return Ok(Stored::Duplicate);
        }
        let len = file.len() as u64;
        self.reserve(len)?;
        let result = self.write(&path, file);
        if !matches!(result, Ok(Stored::New)) {
            // Not stored (an error), or stored by a concurrent copy first: its bytes
            // are not this one's.
            *self.used.lock().expect("spool lock") -= len;
        }
        result.map_err(StoreError::Io)
    }

    fn reserve(&self, len: u64) -> Result<(), StoreError> {
        let mut used = self.used.lock().expect("spool lock");
        if let Some(quota) = self.quota
            && *used + len > quota
        {
            return Err(StoreError::Quota {
                quota,
                used: *used,
                len,
            });
        }
        *used += len;
        Ok(())
    }

    /// Write `bytes` durably to a new file at `path`: New; Duplicate when a concurrent
    /// store of the same instance put it there first (linked, never replaced).
    fn write(&self, path: &Path, bytes: &[u8]) -> Result<Stored> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self.root.join(TMP).join(format!(
            "{}.{}.{n}.part",
            path.file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("instance"),
            std::process::id()
        ));
        let mut f =
            File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(bytes)
            .and_then(|_| f.sync_all())
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        drop(f);
        let series_dir = path.parent().expect("a series folder");
        let study_dir = series_dir.parent().expect("a study folder");
        // New folders become durable with their parents' entries.
        for (dir, parent) in [(study_dir, &*self.root), (series_dir, study_dir)] {
            if !dir.exists() {
                create_dir(dir)?;
                sync_dir(parent)?;
            }
        }
        // A hard link never replaces: of two stores of one instance at once, one links and
        // the other finds it there (and counts nothing against the quota).
        // (A file system without hard links, FAT say, gets the rename, and the race.)
        match fs::hard_link(&tmp, path) {
            Ok(()) => {
                let _ = fs::remove_file(&tmp);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let _ = fs::remove_file(&tmp);
                sync_dir(series_dir)?;
                return Ok(Stored::Duplicate);
            }
            Err(_) => fs::rename(&tmp, path)
                .with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))?,
        }
        sync_dir(series_dir)?;
        Ok(Stored::New)
    }
}

/// Every `.dcm` file at `<root>/<study>/<series>/`.
pub fn instances(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for study in read_dirs(root)? {
        for series in read_dirs(&study)? {
            out.extend(instances_of(&series)?);
        }
    }
    out.sort();
    Ok(out)
}

/// The `.dcm` files of one series folder, sorted (none when it does not exist).
pub fn instances_of(series: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(series) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", series.display())),
    };
    for entry in entries {
        let p = entry?.path();
        if p.extension().is_some_and(|e| e == "dcm") {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

fn read_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        if entry.file_type()?.is_dir() && name.to_str().is_some_and(is_uid) {
            out.push(entry.path());
        }
    }
    Ok(out)
}

/// A folder only its owner (the node's user) and group can read: the spool holds
/// patient data.
pub(super) fn create_dir(dir: &Path) -> Result<()> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o750);
    match b.create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot create {}", dir.display())),
    }
}

/// fsync a folder, so the entries created or renamed in it survive a crash.
pub(super) fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot fsync {}", dir.display()))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// The Part 10 file of a received data set: preamble, `DICM`, file meta (explicit VR
/// little endian), then the data set exactly as received. The data set bytes are
/// appended by the caller (see [`Part10`]).
pub struct Part10;

impl Part10 {
    /// Preamble and file meta group for a data set in `transfer_syntax`.
    pub fn header(
        sop_class: &str,
        sop_instance: &str,
        transfer_syntax: &str,
        source_ae: &str,
    ) -> Result<Vec<u8>> {
        for (name, uid) in [
            ("SOP class", sop_class),
            ("SOP instance", sop_instance),
            ("transfer syntax", transfer_syntax),
        ] {
            if !is_uid(uid) {
                bail!("{name} UID {uid:?} is not a valid UID");
            }
        }
        let mut meta = Vec::new();
        let mut el = |element: u16, vr: &[u8; 2], value: &[u8], pad: u8| {
            let mut v = value.to_vec();
            if v.len() % 2 == 1 {
                v.push(pad);
            }
            meta.extend_from_slice(&0x0002u16.to_le_bytes());
            meta.extend_from_slice(&element.to_le_bytes());
            meta.extend_from_slice(vr);
            if vr == b"OB" {
                meta.extend_from_slice(&[0, 0]);
                meta.extend_from_slice(&(v.len() as u32).to_le_bytes());
            } else {
                meta.extend_from_slice(&(v.len() as u16).to_le_bytes());
            }
            meta.extend_from_slice(&v);
        };
        el(0x0001, b"OB", &[0, 1], 0);
        el(0x0002, b"UI", sop_class.as_bytes(), 0);
        el(0x0003, b"UI", sop_instance.as_bytes(), 0);
        el(0x0010, b"UI", transfer_syntax.as_bytes(), 0);
        el(0x0012, b"UI", IMPLEMENTATION_CLASS_UID.as_bytes(), 0);
        el(0x0013, b"SH", IMPLEMENTATION_VERSION_NAME.as_bytes(), b' ');
        if !source_ae.is_empty() {
            el(0x0016, b"AE", source_ae.as_bytes(), b' ');
        }
        let mut out = vec![0u8; 128];
        out.extend_from_slice(b"DICM");
        out.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, b'U', b'L', 4, 0]);
        out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        out.extend_from_slice(&meta);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(study: &str, sop: &str) -> InstanceIds {
        InstanceIds {
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.7".into(),
            sop_instance_uid: sop.into(),
            study_instance_uid: study.into(),
            series_instance_uid: "1.2.3.2".into(),
            transfer_syntax: "1.2.840.10008.1.2.1".into(),
            modality: String::new(),
            body_part: String::new(),
            series_description: String::new(),
        }
    }

    #[test]
    fn stores_once_refuses_traversal_and_keeps_the_quota() {
        let dir = medfm::fs::TempDir::new("test").unwrap();
        let spool = Spool::open(dir.path(), Some(10)).unwrap();
        assert_eq!(
            spool.store(&ids("1.2.3", "1.2.3.4"), b"abcdef").unwrap(),
            Stored::New
        );
        assert_eq!(
            spool.store(&ids("1.2.3", "1.2.3.4"), b"xyz").unwrap(),
            Stored::Duplicate
        );
        let path = dir.path().join("1.2.3/1.2.3.2/1.2.3.4.dcm");
        assert_eq!(fs::read(&path).unwrap(), b"abcdef");
        let err = spool.store(&ids("../../etc", "1.2.3.5"), b"a").unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{err}");
        let err = spool.store(&ids("1.2.3", "1.2.3.6"), b"abcde").unwrap_err();
        assert!(matches!(err, StoreError::Quota { used: 6, .. }), "{err}");
        assert_eq!(spool.used(), 6);
        // A stray temporary file is removed at the next start; the count is kept.
        fs::write(dir.path().join(TMP).join("x.part"), b"half").unwrap();
        let again = Spool::open(dir.path(), None).unwrap();
        assert_eq!(fs::read_dir(dir.path().join(TMP)).unwrap().count(), 0);
        assert_eq!(again.used(), 6);
        assert_eq!(instances(dir.path()).unwrap(), vec![path]);
    }

    /// Eight stores of one instance at once, for 40 instances: each stored once, the
    /// quota counting its bytes once (two copies used to race between the existence
    /// check and the rename, and both counted).
    #[test]
    fn concurrent_stores_of_one_instance_count_once() {
        let root = std::env::temp_dir().join(format!("medfm-spool-race-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let spool = Spool::open(&root, None).unwrap();
        let file = vec![7u8; 4096];
        for k in 0..40 {
            let ids = ids("1.2.3", &format!("1.2.3.{k}"));
            let new = std::thread::scope(|s| {
                let handles: Vec<_> = (0..8)
                    .map(|_| s.spawn(|| spool.store(&ids, &file).unwrap()))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap())
                    .filter(|r| *r == Stored::New)
                    .count()
            });
            assert_eq!(new, 1, "instance {k} stored {new} times");
            assert_eq!(spool.used(), (k + 1) * 4096, "after instance {k}");
        }
        assert_eq!(instances(&root).unwrap().len(), 40);
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn the_header_makes_a_file_medfm_reads() {
        let original = fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/data/MR_small.dcm"
        ))
        .unwrap();
        let found = medfm::dicom::identify(&original).unwrap();
        // The data set of the original: after its file meta group.
        let meta_len = u32::from_le_bytes(original[140..144].try_into().unwrap()) as usize;
        let data_set = &original[144 + meta_len..];
        let mut file = Part10::header(
            &found.sop_class_uid,
            &found.sop_instance_uid,
            &found.transfer_syntax,
            "MODALITY",
        )
        .unwrap();
        file.extend_from_slice(data_set);
        assert_eq!(medfm::dicom::identify(&file).unwrap(), found);
        let a = medfm::dicom::read(&original).unwrap().frame(0).unwrap();
        let b = medfm::dicom::read(&file).unwrap().frame(0).unwrap();
        assert_eq!(a.values, b.values);
        assert!(Part10::header("1.2/..", "1", "1.2", "").is_err());
    }
}

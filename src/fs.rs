//! Files: the one atomic writer, the one folder walker and private temporary folders that
//! every front uses (the CLI's outputs, the node's spool and records, the Python package's
//! outputs).
//!
//! Errors are `std::io::Error`s of the same kind whose message names the path, so a
//! caller can pass them on as they are.

use std::io::Write;
use std::path::{Path, PathBuf};

/// `e` with `what` and `path` in front of its message (same kind).
fn context(e: std::io::Error, what: &str, path: &Path) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// fsync a folder, so that the entries created or renamed in it survive a crash.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| context(e, "syncing the folder", dir))
}

/// Write `bytes` to `path` so that a crash, a full disk or an error leaves the old file
/// (or none), never a truncated one: a temporary file in the same folder, written,
/// flushed and synced, renamed over `path`, then the folder synced (best effort: not every
/// file system lets a folder be opened). A `path` that exists and is not a regular file
/// (`/dev/stdout`, a FIFO) is written in place, since renaming over it would replace the
/// device; its write errors are still returned.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_as(path, bytes, false)
}

/// [`write_atomic`] for a secret (a token): the file is readable by its owner only (mode
/// 0600 on Unix) from its creation on.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_as(path, bytes, true)
}

fn write_atomic_as(path: &Path, bytes: &[u8], private: bool) -> std::io::Result<()> {
    let _span = tracing::info_span!("write", path = %path.display()).entered();
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(path)
            .map_err(|e| context(e, "opening", path))?;
        return f
            .write_all(bytes)
            .and_then(|()| f.flush())
            .map_err(|e| context(e, "writing", path));
    }
    let Some(name) = path.file_name() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} names no file", path.display()),
        ));
    };
    let tmp = path.with_file_name(format!(
        ".{}.medfm-{}-{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        unique()
    ));
    let written = (|| -> std::io::Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true);
        if private {
            // A leftover of a crashed writer with this name is replaced, never reused: its
            // permissions could be wider.
            let _ = std::fs::remove_file(&tmp);
            options.create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        } else {
            options.create(true).truncate(true);
        }
        let mut f = options.open(&tmp)?;
        f.write_all(bytes)?;
        f.flush()?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        std::fs::remove_file(&tmp).ok();
        return Err(context(e, "writing", path));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        sync_dir(dir).ok();
    }
    Ok(())
}

/// A number no other call in this process returns: temporary names of concurrent writers
/// (threads) differ.
fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The files below `paths`, sorted and without repeats; folders are walked recursively.
/// Symbolic links are followed, but a folder already walked (a link back up the tree, or
/// two links to one folder) is walked once, so a link loop cannot make this run forever.
/// Any error stops the walk: [`walk_with`] for other rules.
pub fn walk(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    walk_with(paths, &Walk::default(), Err)
}

/// How [`walk_with`] walks.
#[derive(Debug, Clone, Copy)]
pub struct Walk {
    /// Follow symbolic links (each folder walked once); else a link is passed over.
    follow_links: bool,
    /// Pass over names starting with `.` below the paths (files being written, by the
    /// convention of watched folders).
    skip_hidden: bool,
}

impl Default for Walk {
    fn default() -> Self {
        Walk {
            follow_links: true,
            skip_hidden: false,
        }
    }
}

impl Walk {
    /// A watched folder's rules (the node's inbox): links and hidden names passed over.
    pub fn watched_folder() -> Self {
        Walk {
            follow_links: false,
            skip_hidden: true,
        }
    }
}

/// [`walk`] by `rules`. An error below `paths` (a folder that can't be listed, an entry
/// gone while it was walked) goes to `below`: its `Err` stops the walk, `Ok` passes the
/// entry over. An error of `paths` themselves stops it.
pub fn walk_with(
    paths: &[PathBuf],
    rules: &Walk,
    mut below: impl FnMut(std::io::Error) -> std::io::Result<()>,
) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut seen_dirs = std::collections::HashSet::new();
    let mut stack: Vec<(PathBuf, bool)> = paths.iter().map(|p| (p.clone(), true)).collect();
    while let Some((p, given)) = stack.pop() {
        let walked = (|| -> std::io::Result<()> {
            let md = if rules.follow_links || given {
                std::fs::metadata(&p)
            } else {
                std::fs::symlink_metadata(&p)
            }
            .map_err(|e| context(e, "reading", &p))?;
            if md.is_dir() {
                let real = std::fs::canonicalize(&p).map_err(|e| context(e, "resolving", &p))?;
                if !seen_dirs.insert(real) {
                    return Ok(());
                }
                for entry in std::fs::read_dir(&p).map_err(|e| context(e, "listing", &p))? {
                    let entry = entry.map_err(|e| context(e, "listing", &p))?;
                    if rules.skip_hidden && entry.file_name().as_encoded_bytes().starts_with(b".") {
                        continue;
                    }
                    stack.push((entry.path(), false));
                }
            } else if md.is_file() || rules.follow_links {
                // With links followed every entry that is no folder is listed (as `walk`
                // always did); otherwise regular files only, never a link.
                out.push(p.clone());
            }
            Ok(())
        })();
        match walked {
            Err(e) if given => return Err(e),
            Err(e) => below(e)?,
            Ok(()) => {}
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// How `file`, found by [`walk`] below `roots`, is named in an output: its path below the
/// root it was found under, or its file name when it was given itself (or under none).
pub fn relative_to(file: &Path, roots: &[PathBuf]) -> String {
    let name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    for root in roots {
        if file == root {
            return name(root);
        }
        if let Ok(rest) = file.strip_prefix(root) {
            return rest.display().to_string();
        }
    }
    name(file)
}

/// A private temporary folder (mode 0700 on Unix), removed with everything in it when
/// dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new folder under the system's temporary folder, named `medfm-<what>-<pid>-<random>`.
    pub fn new(what: &str) -> std::io::Result<Self> {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b)
            .map_err(|e| std::io::Error::other(format!("no randomness: {e}")))?;
        let name = format!(
            "medfm-{what}-{}-{}",
            std::process::id(),
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        );
        let dir = std::env::temp_dir().join(name);
        #[cfg_attr(not(unix), allow(unused_mut))]
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(&dir)
            .map_err(|e| context(e, "creating", &dir))?;
        Ok(TempDir(dir))
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_whole_and_leaves_no_temporary() {
        let dir = TempDir::new("atomic").unwrap();
        let path = dir.path().join("out.bin");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "a temporary file was left"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let secret = dir.path().join("token");
            write_private(&secret, b"s").unwrap();
            let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            std::fs::remove_file(&secret).unwrap();
        }
        let err = write_atomic(&dir.path().join("no/such/folder/x"), b"x").unwrap_err();
        assert!(err.to_string().contains("no/such/folder/x"), "{err}");
    }

    #[test]
    fn walking_sorts_and_survives_a_link_loop() {
        let dir = TempDir::new("walk").unwrap();
        std::fs::create_dir(dir.path().join("b")).unwrap();
        std::fs::write(dir.path().join("b/2"), b"").unwrap();
        std::fs::write(dir.path().join("1"), b"").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(dir.path(), dir.path().join("b/up")).unwrap();
        let files = walk(&[dir.path().to_path_buf()]).unwrap();
        assert_eq!(files, vec![dir.path().join("1"), dir.path().join("b/2")]);
        // An entry below the paths that can't be read (a dangling link): the strict walk
        // stops with it, `below` may pass it over; a watched folder's rules pass over
        // links and hidden names.
        std::fs::write(dir.path().join(".partial"), b"").unwrap();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(dir.path().join("nowhere"), dir.path().join("b/dangling"))
                .unwrap();
            let err = walk(&[dir.path().to_path_buf()]).unwrap_err();
            assert!(err.to_string().contains("dangling"), "{err}");
            let mut passed = Vec::new();
            let files = walk_with(&[dir.path().to_path_buf()], &Walk::default(), |e| {
                passed.push(e.to_string());
                Ok(())
            })
            .unwrap();
            assert_eq!(files.len(), 3, "{files:?}");
            assert!(
                passed.len() == 1 && passed[0].contains("dangling"),
                "{passed:?}"
            );
        }
        let watched = walk_with(&[dir.path().to_path_buf()], &Walk::watched_folder(), |e| {
            Err(e)
        })
        .unwrap();
        assert_eq!(watched, vec![dir.path().join("1"), dir.path().join("b/2")]);
        assert!(walk(&[dir.path().join("missing")]).is_err());
        let gone = dir.path().to_path_buf();
        drop(dir);
        assert!(!gone.exists(), "the temporary folder was left");
    }
}

//! Walking one root: regular files with their stat, ignored names pruned on the way down,
//! symlinks not followed, FIFOs, sockets and devices skipped without being opened.
//!
//! A directory that cannot be read is reported in `unreadable_dirs`: the catalog rows under
//! it must not be taken for deleted files.

use super::ignore::IgnoreMatcher;
use std::ffi::OsString;
use std::fs::Metadata;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// A regular file found by the walk.
#[derive(Clone, Debug)]
pub struct WalkEntry {
    /// Relative to the root, '/'-separated, raw bytes.
    pub relative: OsString,
    pub stat: super::FileStat,
}

#[derive(Debug, Default)]
pub struct WalkOutcome {
    pub files: Vec<WalkEntry>,
    /// Entries pruned by an ignore pattern (an ignored folder counts once).
    pub ignored: u64,
    /// Symlinks (not followed) and FIFOs, sockets, devices (never opened), with a reason.
    pub skipped: Vec<(PathBuf, &'static str)>,
    /// Directories (relative) that could not be read: their catalog rows stay as they are.
    pub unreadable_dirs: Vec<OsString>,
    /// Everything that went wrong, with the path, for the log.
    pub errors: Vec<String>,
}

impl super::FileStat {
    pub fn from_metadata(metadata: &Metadata) -> super::FileStat {
        super::FileStat {
            size: metadata.size(),
            mtime_ns: metadata.mtime() as i128 * 1_000_000_000 + metadata.mtime_nsec() as i128,
            inode: metadata.ino(),
            device: metadata.dev(),
        }
    }
}

/// Walk `root`. `progress` is called with each file found (for a live counter).
///
/// Each directory is read with `std::fs::read_dir`, and each file's stat is taken relative to
/// its open directory (`statx` on the directory's descriptor, as `find` does) rather than by
/// its full path: a rescan of a million files is mostly these stats.
pub fn walk_root(root: &Path, ignore: &IgnoreMatcher, progress: &dyn Fn(&WalkEntry)) -> WalkOutcome {
    let mut outcome = WalkOutcome::default();
    let mut ignored = 0u64;
    // Directories still to read, relative to the root ("" is the root itself).
    let mut pending: Vec<PathBuf> = vec![PathBuf::new()];
    while let Some(dir) = pending.pop() {
        let absolute = root.join(&dir);
        let entries = match std::fs::read_dir(&absolute) {
            Ok(entries) => entries,
            Err(error) => {
                record_unreadable(root, &dir, &error, &mut outcome);
                continue;
            }
        };
        for item in entries {
            let entry = match item {
                Ok(entry) => entry,
                Err(error) => {
                    // The directory failed part-way through: what is under it is protected.
                    record_unreadable(root, &dir, &error, &mut outcome);
                    break;
                }
            };
            let name = entry.file_name();
            let relative = dir.join(&name);
            if ignore.is_ignored(&name, relative.as_os_str()) {
                ignored += 1;
                continue;
            }
            let file_type = match entry.file_type() {
                Ok(file_type) => file_type,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(error) => {
                    outcome.errors.push(describe(&root.join(&relative), &error));
                    continue;
                }
            };
            if file_type.is_dir() {
                pending.push(relative);
                continue;
            }
            if file_type.is_symlink() {
                outcome.skipped.push((relative, "symlink (not followed)"));
                continue;
            }
            if file_type.is_fifo() || file_type.is_socket() || file_type.is_block_device() || file_type.is_char_device()
            {
                outcome
                    .skipped
                    .push((relative, "not a regular file (FIFO, socket or device)"));
                continue;
            }
            match entry.metadata() {
                Ok(metadata) => {
                    let found = WalkEntry {
                        relative: relative.into_os_string(),
                        stat: super::FileStat::from_metadata(&metadata),
                    };
                    progress(&found);
                    outcome.files.push(found);
                }
                // Gone between readdir and stat: it is simply not there.
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => outcome.errors.push(describe(&root.join(&relative), &error)),
            }
        }
    }
    outcome.ignored = ignored;
    outcome
}

/// `path: reason`, and for a path the kernel cannot take what the operator can do about it.
fn describe(path: &Path, error: &std::io::Error) -> String {
    let reason = if error.raw_os_error() == Some(libc::ENAMETOOLONG) {
        format!(
            "the path is {} bytes, over the system's limit of {} bytes, and cannot be opened: \
             shorten a folder name above it (nothing under it is synced, nothing of it is deleted)",
            path.as_os_str().len(),
            libc::PATH_MAX - 1
        )
    } else {
        error.to_string()
    };
    format!("{}: {reason}", path.display())
}

/// A directory (`relative` to the root) that could not be read: reported, and protected from
/// soft deletion. One that vanished since its parent was read is simply not there; the root
/// itself missing is always reported.
fn record_unreadable(root: &Path, relative: &Path, error: &std::io::Error, outcome: &mut WalkOutcome) {
    let vanished = error.kind() == std::io::ErrorKind::NotFound;
    if vanished && !relative.as_os_str().is_empty() {
        return;
    }
    outcome.errors.push(describe(&root.join(relative), error));
    outcome.unreadable_dirs.push(relative.as_os_str().to_owned());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn walk_prunes_ignored_and_skips_special_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("A/@eaDir/thumbs")).unwrap();
        std::fs::write(root.join("A/@eaDir/thumbs/x.jpg"), b"t").unwrap();
        std::fs::write(root.join("A/plan.pdf"), b"plan").unwrap();
        std::fs::write(root.join("A/~$lock.docx"), b"l").unwrap();
        std::fs::write(root.join(OsStr::from_bytes(b"A/caf\xe9.txt")), b"latin1").unwrap();
        std::os::unix::fs::symlink("plan.pdf", root.join("A/link.pdf")).unwrap();
        let fifo = std::ffi::CString::new(root.join("A/pipe").as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);

        let matcher = IgnoreMatcher::new::<&str>(&[]).unwrap();
        let outcome = walk_root(root, &matcher, &|_| {});
        let found: BTreeSet<Vec<u8>> = outcome.files.iter().map(|e| e.relative.as_bytes().to_vec()).collect();
        let expected: BTreeSet<Vec<u8>> = [b"A/plan.pdf".to_vec(), b"A/caf\xe9.txt".to_vec()].into();
        assert_eq!(found, expected);
        assert_eq!(outcome.ignored, 2);
        assert_eq!(outcome.skipped.len(), 2);
        assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    }
}

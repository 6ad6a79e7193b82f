//! `filemetasync restore`: files of a root as they were at a moment, from the catalog and the
//! store, into a folder.
//!
//! The tree at the moment is replayed from the root's events ([`timeline`]). Each content is
//! downloaded once into a staging folder inside the target, hashed on the way, and used only
//! if it is the registered SHA-256; every target file is written under a temporary name, given
//! its mtime, and renamed into place, so a target path never holds a partial or wrong file. A
//! file already right at its target (same size and SHA-256) is left alone: the same command
//! after an interruption picks up where it stopped.

pub mod timeline;

use crate::catalog::{Catalog, CatalogError};
use crate::pathenc;
use crate::store::ObjectStore;
use futures::stream::{self, StreamExt};
use serde::Serialize;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use timeline::Version;

/// The folder inside the target where downloads wait for their check.
pub const STAGING: &str = ".filemetasync-restore";

/// What to do with a target path that exists with other content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    /// Leave it and report the file as failed (the default).
    Refuse,
    Overwrite,
    Skip,
}

#[derive(Clone, Debug)]
pub struct RestoreRequest {
    pub root: String,
    /// Root-relative paths (a file, or a folder and all under it) or globs; none: everything.
    pub patterns: Vec<String>,
    /// RFC 3339.
    pub at: String,
    pub to: PathBuf,
    pub existing: Existing,
    pub dry_run: bool,
    /// Contents downloaded at once.
    pub parallel: usize,
}

/// One file to bring back: its version (its path under the target is its stored path).
pub type Planned = Version;

#[derive(Clone, Debug, Serialize)]
pub struct Failure {
    pub path: String,
    pub sha256: String,
    pub reason: String,
}

#[derive(Debug, Default, Serialize)]
pub struct RestoreReport {
    pub at: String,
    /// Files of the tree at that moment that the request selected.
    pub files: u64,
    pub bytes: u64,
    pub restored: u64,
    pub restored_bytes: u64,
    /// Already right at the target (same size and SHA-256): not downloaded again.
    pub already_right: u64,
    /// Left as they were (`--skip-existing`).
    pub skipped_existing: u64,
    pub downloaded_contents: u64,
    pub downloaded_bytes: u64,
    pub failed: Vec<Failure>,
    /// `--dry-run`: the paths that would be written.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub planned: Vec<String>,
}

/// Live counters for a progress line.
#[derive(Debug, Default)]
pub struct RestoreProgress {
    pub files_total: AtomicU64,
    pub bytes_total: AtomicU64,
    pub files_done: AtomicU64,
    pub bytes_done: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The request cannot be served as asked; nothing was written.
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("{0}")]
    Io(String),
}

/// One PATH or GLOB of a request: matched as the literal path (a file, or a folder and all
/// under it) and, when it has glob characters, as a glob (`*` stays within a folder, `**`
/// crosses folders; a glob matching a folder takes everything under it). A folder named
/// `Projekt [2024]` is found by its name as well as by the glob it also is.
#[derive(Clone, Debug)]
pub struct Selector {
    literal: String,
    glob: Option<glob::Pattern>,
}

/// Does a root-relative `path` fall under one of `selectors` (all paths when there are none)?
pub fn selected(path: &str, selectors: &[Selector]) -> bool {
    if selectors.is_empty() {
        return true;
    }
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    let mut prefix = path;
    loop {
        let hit = selectors.iter().any(|selector| {
            selector.literal == prefix
                || selector
                    .glob
                    .as_ref()
                    .is_some_and(|glob| glob.matches_with(prefix, options))
        });
        if hit {
            return true;
        }
        match prefix.rfind('/') {
            Some(slash) => prefix = &prefix[..slash],
            None => return false,
        }
    }
}

/// The selectors of a request, each trimmed of leading and trailing slashes.
pub fn compile_patterns(patterns: &[String]) -> Result<Vec<Selector>, RestoreError> {
    patterns
        .iter()
        .map(|text| {
            let literal = text.trim_matches('/').to_owned();
            let glob = if literal.contains(['*', '?', '[']) {
                let pattern = glob::Pattern::new(&literal).map_err(|error| {
                    RestoreError::BadRequest(format!("pattern {text:?} is not a valid glob: {error}"))
                })?;
                Some(pattern)
            } else {
                None
            };
            Ok(Selector { literal, glob })
        })
        .collect()
}

/// The files a request brings back, grouped by content (each content's files together,
/// in path order), so that each content is downloaded once.
pub async fn plan(catalog: &Catalog, request: &RestoreRequest) -> Result<Vec<Planned>, RestoreError> {
    let patterns = compile_patterns(&request.patterns)?;
    let mut replayed = timeline::Timeline::default();
    catalog.replay_until(&request.root, &request.at, &mut replayed).await?;
    let mut planned = replayed.finish();
    planned.retain(|version| selected(&version.path, &patterns));
    if let Some(unsafe_path) = planned.iter().find(|version| relative_path(version).is_none()) {
        return Err(RestoreError::Io(format!(
            "the catalog holds a path that cannot be restored safely: {:?}",
            unsafe_path.path
        )));
    }
    planned.sort_unstable_by(|a, b| (&a.sha256, &a.path).cmp(&(&b.sha256, &b.path)));
    Ok(planned)
}

/// The stored path as a relative path on disk, byte-exact; None for anything that would
/// leave the target (absolute, `..`).
fn relative_path(version: &Version) -> Option<PathBuf> {
    let decoded: OsString = pathenc::decode(&version.path, version.encoding).ok()?;
    let path = PathBuf::from(decoded);
    path.components()
        .all(|component| matches!(component, Component::Normal(_)))
        .then_some(path)
}

/// Bring the planned files back under `request.to`.
pub async fn restore(
    store: &ObjectStore,
    request: &RestoreRequest,
    planned: Vec<Planned>,
    progress: &RestoreProgress,
) -> Result<RestoreReport, RestoreError> {
    let mut report = RestoreReport {
        at: request.at.clone(),
        files: planned.len() as u64,
        bytes: planned.iter().map(|p| p.size.max(0) as u64).sum(),
        ..Default::default()
    };
    progress.files_total.store(report.files, Ordering::Relaxed);
    progress.bytes_total.store(report.bytes, Ordering::Relaxed);
    if request.dry_run {
        let mut paths: Vec<String> = planned.iter().map(|p| p.path.clone()).collect();
        paths.sort_unstable();
        report.planned = paths;
        return Ok(report);
    }
    let staging = request.to.join(STAGING);
    std::fs::create_dir_all(&staging)
        .map_err(|error| RestoreError::Io(format!("cannot create {}: {error}", staging.display())))?;

    // One group per content (plan sorted them so): downloaded once for all its paths.
    let outcomes: Vec<GroupOutcome> = stream::iter(planned.chunk_by(|a, b| a.sha256 == b.sha256))
        .map(|files| restore_group(store, request, &staging, files, progress))
        .buffer_unordered(request.parallel.max(1))
        .collect()
        .await;
    for outcome in outcomes {
        report.restored += outcome.restored;
        report.restored_bytes += outcome.restored_bytes;
        report.already_right += outcome.already_right;
        report.skipped_existing += outcome.skipped_existing;
        report.downloaded_contents += u64::from(outcome.downloaded_bytes.is_some());
        report.downloaded_bytes += outcome.downloaded_bytes.unwrap_or(0);
        report.failed.extend(outcome.failed);
    }
    report.failed.sort_by(|a, b| a.path.cmp(&b.path));
    // Every download is placed or given up by now; what is left is an earlier run's.
    let _ = std::fs::remove_dir_all(&staging);
    Ok(report)
}

#[derive(Default)]
struct GroupOutcome {
    restored: u64,
    restored_bytes: u64,
    already_right: u64,
    skipped_existing: u64,
    downloaded_bytes: Option<u64>,
    failed: Vec<Failure>,
}

async fn restore_group(
    store: &ObjectStore,
    request: &RestoreRequest,
    staging: &Path,
    files: &[Planned],
    progress: &RestoreProgress,
) -> GroupOutcome {
    let mut outcome = GroupOutcome::default();
    let fail = |outcome: &mut GroupOutcome, file: &Planned, reason: String| {
        outcome.failed.push(Failure {
            path: file.path.clone(),
            sha256: file.sha256.clone(),
            reason,
        });
    };
    // What is at each target now.
    let mut todo = Vec::new();
    for file in files {
        let Some(relative) = relative_path(file) else { continue };
        let target = request.to.join(relative);
        let size = file.size.max(0) as u64;
        match target_state(&target, file).await {
            TargetState::Missing => todo.push((file, target)),
            TargetState::Right => {
                set_mtime(&target, file.mtime_ns);
                outcome.already_right += 1;
                done(progress, size);
            }
            TargetState::Other => match request.existing {
                Existing::Overwrite => todo.push((file, target)),
                Existing::Skip => {
                    outcome.skipped_existing += 1;
                    done(progress, size);
                }
                Existing::Refuse => {
                    let reason = format!(
                        "{} exists with other content; left as it is (--overwrite replaces it, --skip-existing skips it)",
                        target.display()
                    );
                    fail(&mut outcome, file, reason);
                }
            },
        }
    }
    let Some(first) = todo.first().map(|(file, _)| *file) else {
        return outcome;
    };
    let (sha256, key) = (&first.sha256, first.storage_key.clone().unwrap_or_default());
    if !first.stored || key.is_empty() {
        let reason = match &first.purged_at {
            Some(when) => format!("its content was purged by retention on {when}; not restored"),
            None => "its content was never stored (not uploaded yet)".into(),
        };
        for (file, _) in &todo {
            fail(&mut outcome, file, reason.clone());
        }
        return outcome;
    }
    let download = staging.join(format!("{sha256}.part"));
    let fetched = store.download(&key, &download).await;
    let reason = match fetched {
        Ok(Some((digest, size))) if digest == *sha256 => {
            outcome.downloaded_bytes = Some(size);
            None
        }
        Ok(Some((digest, size))) => Some(format!(
            "the store's object {key} holds {size} bytes with SHA-256 {digest}, not the registered {sha256}; not restored"
        )),
        Ok(None) => Some(format!(
            "the store has no object {key}; not restored (`verify --repair` re-queues it)"
        )),
        Err(error) => Some(format!("cannot download {key}: {error}")),
    };
    if let Some(reason) = reason {
        let _ = std::fs::remove_file(&download);
        for (file, _) in &todo {
            fail(&mut outcome, file, reason.clone());
        }
        return outcome;
    }
    let last = todo.len() - 1;
    for (index, (file, target)) in todo.into_iter().enumerate() {
        let size = file.size.max(0) as u64;
        match place(&download, &target, file.mtime_ns, index == last) {
            Ok(()) => {
                outcome.restored += 1;
                outcome.restored_bytes += size;
                done(progress, size);
            }
            Err(error) => fail(
                &mut outcome,
                file,
                format!("cannot write {}: {error}", target.display()),
            ),
        }
    }
    let _ = std::fs::remove_file(&download);
    outcome
}

fn done(progress: &RestoreProgress, bytes: u64) {
    progress.files_done.fetch_add(1, Ordering::Relaxed);
    progress.bytes_done.fetch_add(bytes, Ordering::Relaxed);
}

enum TargetState {
    Missing,
    /// Same size and SHA-256 as the version.
    Right,
    Other,
}

async fn target_state(target: &Path, version: &Version) -> TargetState {
    let metadata = match std::fs::symlink_metadata(target) {
        Ok(metadata) => metadata,
        Err(_) => return TargetState::Missing,
    };
    if !metadata.is_file() || metadata.len() != version.size.max(0) as u64 {
        return TargetState::Other;
    }
    let path = target.to_owned();
    let digest = tokio::task::spawn_blocking(move || std::fs::File::open(path).and_then(crate::fs::hash::digest)).await;
    match digest {
        Ok(Ok((sha256, _))) if sha256 == version.sha256 => TargetState::Right,
        _ => TargetState::Other,
    }
}

/// Put the checked download at `target`: copied (or, for the last path of the content,
/// moved) under a temporary name beside it, given its mtime, then renamed into place.
fn place(download: &Path, target: &Path, mtime_ns: Option<i64>, last: bool) -> std::io::Result<()> {
    let parent = target.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let mut name = OsString::from(".");
    name.push(target.file_name().unwrap_or_default());
    name.push(".filemetasync-part");
    let temporary = parent.join(name);
    if last {
        std::fs::rename(download, &temporary)?;
    } else {
        std::fs::copy(download, &temporary)?;
    }
    set_mtime(&temporary, mtime_ns);
    std::fs::rename(&temporary, target)
}

fn set_mtime(path: &Path, mtime_ns: Option<i64>) {
    let Some(ns) = mtime_ns else { return };
    let when = if ns >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    };
    if let Ok(file) = std::fs::File::options().write(true).open(path) {
        let _ = file.set_modified(when);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(path: &str, patterns: &[&str]) -> bool {
        let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
        selected(path, &compile_patterns(&patterns).unwrap())
    }

    #[test]
    fn paths_folders_and_globs_select() {
        assert!(sel("a/b/c.pdf", &[]));
        assert!(sel("a/b/c.pdf", &["a/b/c.pdf"]));
        assert!(sel("a/b/c.pdf", &["a"]), "a folder takes what is under it");
        assert!(sel("a/b/c.pdf", &["/a/b/"]));
        assert!(!sel("ab/c.pdf", &["a"]), "a folder, not a name prefix");
        assert!(sel("a/b/c.pdf", &["a/*/c.pdf"]));
        assert!(!sel("a/b/c.pdf", &["*.pdf"]), "* stays within a folder");
        assert!(sel("a/b/c.pdf", &["**/*.pdf"]));
        assert!(
            sel("Projekt [2024]/x", &["Projekt [2024]"]),
            "a literal path is not a glob"
        );
        assert!(sel("a/b/c.pdf", &["a/?"]), "a glob matching a folder takes it");
        assert!(matches!(
            compile_patterns(&["a/[".to_string(), "x*[".to_string()]),
            Err(RestoreError::BadRequest(_))
        ));
    }

    #[test]
    fn stored_paths_that_would_leave_the_target_are_refused() {
        let version = |path: &str| Version {
            path: path.into(),
            encoding: pathenc::PathEncoding::Utf8,
            sha256: String::new(),
            size: 0,
            mtime_ns: None,
            storage_key: None,
            stored: false,
            purged_at: None,
        };
        assert!(relative_path(&version("a/b")).is_some());
        assert!(relative_path(&version("../b")).is_none());
        assert!(relative_path(&version("/etc/passwd")).is_none());
        let mut odd = version("caf%E9.txt");
        odd.encoding = pathenc::PathEncoding::Percent;
        use std::os::unix::ffi::OsStrExt;
        assert_eq!(relative_path(&odd).unwrap().as_os_str().as_bytes(), b"caf\xe9.txt");
    }
}

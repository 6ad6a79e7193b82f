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
use std::collections::BTreeMap;
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

/// One file to bring back: its version, and where it goes under the target.
#[derive(Clone, Debug)]
pub struct Planned {
    pub relative: PathBuf,
    pub version: Version,
}

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

/// The files a request brings back, in path order.
pub async fn plan(catalog: &Catalog, request: &RestoreRequest) -> Result<Vec<Planned>, RestoreError> {
    let patterns = compile_patterns(&request.patterns)?;
    let mut replayed = timeline::Timeline::default();
    catalog.replay_until(&request.root, &request.at, &mut replayed).await?;
    let mut planned = Vec::new();
    for (path, version) in replayed.finish() {
        if !selected(&path, &patterns) {
            continue;
        }
        let relative = relative_path(&version).ok_or_else(|| {
            RestoreError::Io(format!(
                "the catalog holds a path that cannot be restored safely: {path:?}"
            ))
        })?;
        planned.push(Planned { relative, version });
    }
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
    catalog: &Catalog,
    store: &ObjectStore,
    request: &RestoreRequest,
    planned: Vec<Planned>,
    progress: &RestoreProgress,
) -> Result<RestoreReport, RestoreError> {
    let mut report = RestoreReport {
        at: request.at.clone(),
        files: planned.len() as u64,
        bytes: planned.iter().map(|p| p.version.size.max(0) as u64).sum(),
        ..Default::default()
    };
    progress.files_total.store(report.files, Ordering::Relaxed);
    progress.bytes_total.store(report.bytes, Ordering::Relaxed);
    if request.dry_run {
        report.planned = planned.iter().map(|p| p.version.path.clone()).collect();
        return Ok(report);
    }
    // One group per content: downloaded once for all its paths.
    let mut groups: BTreeMap<String, Vec<Planned>> = BTreeMap::new();
    for file in planned {
        groups.entry(file.version.sha256.clone()).or_default().push(file);
    }
    let shas: Vec<String> = groups.keys().cloned().collect();
    let keys: BTreeMap<String, (String, bool)> = catalog
        .content_keys(&shas)
        .await?
        .into_iter()
        .map(|(sha, key, uploaded)| (sha, (key, uploaded)))
        .collect();
    let staging = request.to.join(STAGING);
    std::fs::create_dir_all(&staging)
        .map_err(|error| RestoreError::Io(format!("cannot create {}: {error}", staging.display())))?;

    let outcomes: Vec<GroupOutcome> = stream::iter(groups)
        .map(|(sha256, files)| {
            let key = keys.get(&sha256).cloned();
            restore_group(store, request, &staging, sha256, key, files, progress)
        })
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
    sha256: String,
    key: Option<(String, bool)>,
    files: Vec<Planned>,
    progress: &RestoreProgress,
) -> GroupOutcome {
    let mut outcome = GroupOutcome::default();
    let fail = |outcome: &mut GroupOutcome, file: &Planned, reason: String| {
        outcome.failed.push(Failure {
            path: file.version.path.clone(),
            sha256: file.version.sha256.clone(),
            reason,
        });
    };
    // What is at each target now.
    let mut todo = Vec::new();
    for file in files {
        let target = request.to.join(&file.relative);
        let size = file.version.size.max(0) as u64;
        match target_state(&target, &file.version).await {
            TargetState::Missing => todo.push((file, target)),
            TargetState::Right => {
                set_mtime(&target, file.version.mtime_ns);
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
                    fail(&mut outcome, &file, reason);
                }
            },
        }
    }
    if todo.is_empty() {
        return outcome;
    }
    let Some((key, true)) = key else {
        for (file, _) in &todo {
            fail(
                &mut outcome,
                file,
                "its content was never stored (not uploaded yet)".into(),
            );
        }
        return outcome;
    };
    let download = staging.join(format!("{sha256}.part"));
    let fetched = store.download(&key, &download).await;
    let reason = match fetched {
        Ok(Some((digest, size))) if digest == sha256 => {
            outcome.downloaded_bytes = Some(size);
            None
        }
        Ok(Some((digest, size))) => Some(format!(
            "the store's object {key} holds {size} bytes with SHA-256 {digest}, not the registered {sha256}; not restored"
        )),
        Ok(None) => Some(format!("the store has no object {key}; not restored (`verify --repair` re-queues it)")),
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
        let size = file.version.size.max(0) as u64;
        match place(&download, &target, file.version.mtime_ns, index == last) {
            Ok(()) => {
                outcome.restored += 1;
                outcome.restored_bytes += size;
                done(progress, size);
            }
            Err(error) => fail(
                &mut outcome,
                &file,
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

//! One full reconciliation of a root: walk it, compare with the catalog, hash what changed,
//! register in batches, soft-delete what vanished. The safety checks come first: a root that
//! looks unmounted never loses its catalog rows.

mod plan;
mod register;

pub use plan::{plan, HashJob, Plan};

use crate::catalog::{BatchOutcome, Catalog, CatalogError, Deletion, Move, Registration, ScanRecord};
use crate::fs::{walk_root, HashError, Hashed, IgnoreMatcher};
use serde::Serialize;
use slog::{error, info, warn, Logger};
use std::future::Future;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A configured root: its label in the catalog and where it is mounted here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootSpec {
    pub label: String,
    pub path: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanOptions {
    /// Registrations per transaction.
    pub batch_size: usize,
    /// Take an empty root, or one on another filesystem than at its last scan, at its word
    /// (the operator really emptied or moved it). Off by default: such a root is reported
    /// unavailable and nothing is deleted.
    pub accept_root_change: bool,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            batch_size: 1000,
            accept_root_change: false,
        }
    }
}

/// What one root's scan did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RootCounts {
    pub seen: u64,
    pub unchanged: u64,
    pub new: u64,
    pub changed: u64,
    pub restored: u64,
    pub moved: u64,
    pub deleted: u64,
    pub ignored: u64,
    pub skipped: u64,
    pub failed: u64,
    pub hashed_files: u64,
    pub bytes_hashed: u64,
    /// Catalog rows under folders that could not be read, kept as they were.
    pub protected: u64,
    /// Catalog batches that met a deadlock or serialization failure and were run again.
    pub retried_batches: u64,
    /// Contents whose metadata was written (`metadata.extract`).
    pub metadata_written: u64,
    /// Batches whose metadata PostgreSQL refused; their files were registered without it.
    pub metadata_refused: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(tag = "outcome", content = "message", rename_all = "snake_case")]
pub enum RootOutcome {
    Complete,
    /// Missing, unreadable, or looking unmounted: nothing was deleted.
    Unavailable(String),
    /// The catalog failed mid-scan; what was committed stays, the next scan goes on from it.
    Failed(String),
}

#[derive(Clone, Debug, Serialize)]
pub struct RootReport {
    pub root: String,
    #[serde(flatten)]
    pub outcome: RootOutcome,
    pub counts: RootCounts,
}

impl RootReport {
    /// A root that could not be scanned at all.
    pub fn failed(root: &RootSpec, reason: String) -> RootReport {
        RootReport {
            root: root.label.clone(),
            outcome: RootOutcome::Failed(reason),
            counts: RootCounts::default(),
        }
    }
}

/// Live counters for a progress display.
#[derive(Debug, Default)]
pub struct ScanProgress {
    pub walked: AtomicU64,
}

/// One transaction's worth of catalog writes for a root.
#[derive(Debug, Default)]
pub struct Batch {
    pub registrations: Vec<Registration>,
    pub moves: Vec<Move>,
    pub deletions: Vec<Deletion>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.registrations.len() + self.moves.len() + self.deletions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where a scan sends its hashing and its catalog writes: the daemon's hasher and registrar
/// actors (in `run` and in the one-shot `scan` alike).
pub trait ScanSink {
    /// Hash requests a scan keeps in flight.
    fn hash_slots(&self) -> usize;

    /// Hash one file (with the re-stat check and retries on change); `size` is what the walk
    /// saw.
    fn hash(&self, path: PathBuf, size: u64) -> impl Future<Output = Result<Hashed, HashError>>;

    /// Write one batch in one transaction; `catalog` is the scan's own connection.
    fn write(
        &self,
        catalog: &mut Catalog,
        root: &str,
        batch: Batch,
    ) -> impl Future<Output = Result<BatchOutcome, CatalogError>>;
}

/// Everything a root scan needs besides its catalog connection and its sink.
pub struct ScanContext {
    pub ignore: IgnoreMatcher,
    pub options: ScanOptions,
    pub progress: Arc<ScanProgress>,
    pub log: Logger,
}

pub async fn scan_root<S: ScanSink>(
    catalog: &mut Catalog,
    sink: &S,
    context: &ScanContext,
    root: &RootSpec,
) -> RootReport {
    let log = context.log.new(slog::o!("root" => root.label.clone()));
    let mut counts = RootCounts::default();
    let outcome = match run(catalog, sink, context, root, &log, &mut counts).await {
        Ok(outcome) => outcome,
        Err(error) => RootOutcome::Failed(error.detail()),
    };
    match &outcome {
        RootOutcome::Complete => info!(log, "scan finished"; "seen" => counts.seen, "new" => counts.new,
            "changed" => counts.changed, "moved" => counts.moved, "deleted" => counts.deleted,
            "bytes_hashed" => counts.bytes_hashed, "failed" => counts.failed),
        RootOutcome::Unavailable(reason) => error!(log, "root unavailable"; "reason" => reason.as_str(),
            "path" => root.path.display().to_string()),
        RootOutcome::Failed(reason) => error!(log, "scan failed"; "reason" => reason.as_str()),
    }
    RootReport {
        root: root.label.clone(),
        outcome,
        counts,
    }
}

async fn run<S: ScanSink>(
    catalog: &mut Catalog,
    sink: &S,
    context: &ScanContext,
    root: &RootSpec,
    log: &Logger,
    counts: &mut RootCounts,
) -> Result<RootOutcome, CatalogError> {
    let accept = context.options.accept_root_change;
    let device = match usable_device(catalog, root, accept).await? {
        Ok(device) => device,
        Err((device, reason)) => return record_unavailable(catalog, root, device, reason).await,
    };
    let scan_id = catalog.start_scan(&root.label, Some(device)).await?;
    // The catalog's rows and the disk are read at the same time: neither needs the other.
    let (rows, walk) = tokio::join!(catalog.load_root(&root.label), walk(context, root));
    let rows = rows?;
    let live_rows = rows.iter().filter(|row| !row.deleted).count();
    counts.ignored = walk.ignored;
    counts.skipped = walk.skipped.len() as u64;
    for (path, reason) in &walk.skipped {
        info!(log, "file skipped"; "path" => path.display().to_string(), "reason" => *reason);
    }
    for message in &walk.errors {
        warn!(log, "cannot read"; "error" => message.as_str());
    }
    counts.failed += walk.errors.len() as u64;
    let unavailable = if walk.unreadable_dirs.iter().any(|dir| dir.is_empty()) {
        Some(format!("{} cannot be read; nothing was deleted", root.path.display()))
    } else if walk.files.is_empty() && live_rows > 0 && !accept {
        Some(format!(
            "{} is empty but the catalog holds {live_rows} files for it; is the share mounted? Nothing was deleted",
            root.path.display()
        ))
    } else {
        None
    };
    if let Some(reason) = unavailable {
        catalog
            .finish_scan(scan_id, "unavailable", Some(&reason), &ScanRecord::default())
            .await?;
        return Ok(RootOutcome::Unavailable(reason));
    }
    let plan = plan::plan(walk.files, rows, &walk.unreadable_dirs);
    register::apply(catalog, sink, context, root, plan, log, counts).await?;
    let record = ScanRecord {
        files_seen: counts.seen,
        files_new: counts.new,
        files_changed: counts.changed + counts.restored,
        files_moved: counts.moved,
        files_deleted: counts.deleted,
        bytes_hashed: counts.bytes_hashed,
    };
    catalog.finish_scan(scan_id, "complete", None, &record).await?;
    Ok(RootOutcome::Complete)
}

async fn walk(context: &ScanContext, root: &RootSpec) -> crate::fs::WalkOutcome {
    let ignore = context.ignore.clone();
    let path = root.path.clone();
    let progress = context.progress.clone();
    tokio::task::spawn_blocking(move || {
        walk_root(&path, &ignore, &|_| {
            progress.walked.fetch_add(1, Ordering::Relaxed);
        })
    })
    .await
    .expect("walk thread panicked")
}

/// The root-safety rules, one set for full scans and path syncs: the root is a readable
/// folder, on the filesystem of its last complete scan unless `accept` (a moved share taken
/// as such). The device, or why the root is not used now (with the device if it has one).
async fn usable_device(
    catalog: &mut Catalog,
    root: &RootSpec,
    accept: bool,
) -> Result<Result<u64, (Option<u64>, String)>, CatalogError> {
    let device = match root_device(root) {
        Ok(device) => device,
        Err(reason) => return Ok(Err((None, reason))),
    };
    match catalog.last_complete_device(&root.label).await? {
        Some(previous) if previous != device && !accept => Ok(Err((
            Some(device),
            format!(
                "{} is on another filesystem (device {device}) than at its last complete scan (device {previous}); \
                 is the share mounted? Nothing was deleted",
                root.path.display()
            ),
        ))),
        _ => Ok(Ok(device)),
    }
}

/// The device the root folder is on, or why it cannot be used.
fn root_device(root: &RootSpec) -> Result<u64, String> {
    let metadata = std::fs::metadata(&root.path).map_err(|error| {
        format!(
            "{} is not there ({error}); is the share mounted? Nothing was deleted",
            root.path.display()
        )
    })?;
    if !metadata.is_dir() {
        return Err(format!("{} is not a folder; nothing was deleted", root.path.display()));
    }
    std::fs::read_dir(&root.path)
        .map_err(|error| format!("{} cannot be read ({error}); nothing was deleted", root.path.display()))?;
    Ok(metadata.dev())
}

async fn record_unavailable(
    catalog: &mut Catalog,
    root: &RootSpec,
    device: Option<u64>,
    reason: String,
) -> Result<RootOutcome, CatalogError> {
    let scan_id = catalog.start_scan(&root.label, device).await?;
    catalog
        .finish_scan(scan_id, "unavailable", Some(&reason), &ScanRecord::default())
        .await?;
    Ok(RootOutcome::Unavailable(reason))
}

/// Reconcile only `paths` (relative to the root) — what the watcher reports as touched —
/// through the same plan and batches as a full scan: a path that is a regular file is
/// compared with its row and hashed if it changed, a path that is gone loses its row (soft
/// delete), and a removed and a created path holding the same inode become a move. Nothing
/// happens while the root looks unmounted.
pub async fn sync_paths<S: ScanSink>(
    catalog: &mut Catalog,
    sink: &S,
    context: &ScanContext,
    root: &RootSpec,
    paths: Vec<std::ffi::OsString>,
) -> RootReport {
    let log = context.log.new(slog::o!("root" => root.label.clone()));
    let mut counts = RootCounts::default();
    let outcome = match sync(catalog, sink, context, root, paths, &log, &mut counts).await {
        Ok(outcome) => outcome,
        Err(error) => RootOutcome::Failed(error.detail()),
    };
    if let RootOutcome::Failed(reason) = &outcome {
        error!(log, "path sync failed"; "reason" => reason.as_str());
    }
    RootReport {
        root: root.label.clone(),
        outcome,
        counts,
    }
}

async fn sync<S: ScanSink>(
    catalog: &mut Catalog,
    sink: &S,
    context: &ScanContext,
    root: &RootSpec,
    paths: Vec<std::ffi::OsString>,
    log: &Logger,
    counts: &mut RootCounts,
) -> Result<RootOutcome, CatalogError> {
    if let Err((_, reason)) = usable_device(catalog, root, context.options.accept_root_change).await? {
        return Ok(RootOutcome::Unavailable(reason));
    }
    let base = root.path.clone();
    let ignore = context.ignore.clone();
    let (walked, asked, unreadable) = tokio::task::spawn_blocking(move || stat_paths(&base, &ignore, paths))
        .await
        .unwrap_or_default();
    counts.ignored = 0;
    for (path, error) in &unreadable {
        warn!(log, "cannot read; its catalog row is kept as it was"; "path" => path.as_str(), "error" => error.as_str());
    }
    counts.failed += unreadable.len() as u64;
    let rows = catalog.load_paths(&root.label, &asked).await?;
    let plan = plan::plan(walked, rows, &[]);
    register::apply(catalog, sink, context, root, plan, log, counts).await?;
    Ok(RootOutcome::Complete)
}

/// lstat each path: regular files become walk entries; every path that is not ignored and
/// not unreadable is asked of the catalog (so that a vanished one loses its row).
fn stat_paths(
    base: &std::path::Path,
    ignore: &IgnoreMatcher,
    paths: Vec<std::ffi::OsString>,
) -> (Vec<crate::fs::WalkEntry>, Vec<String>, Vec<(String, String)>) {
    let mut walked = Vec::new();
    let mut asked = Vec::new();
    let mut unreadable = Vec::new();
    for relative in paths {
        if ignore.is_ignored_path(std::path::Path::new(&relative)) {
            continue;
        }
        let (encoded, _) = crate::pathenc::encode(&relative);
        match std::fs::symlink_metadata(base.join(&relative)) {
            Ok(metadata) if metadata.file_type().is_file() => walked.push(crate::fs::WalkEntry {
                relative,
                stat: crate::fs::FileStat::from_metadata(&metadata),
            }),
            // Gone, or no longer a regular file: its row (if any) goes.
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                unreadable.push((encoded, error.to_string()));
                continue;
            }
        }
        asked.push(encoded);
    }
    (walked, asked, unreadable)
}

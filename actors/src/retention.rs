//! Retention (`filemetasync gc`, and the daemon's scheduled run): the store's size follows
//! the policy, and no content a live file holds is ever deleted.
//!
//! Two phases. The mark phase asks the catalog which stored contents the policy lets go
//! (`fms_gc_collectable`: no live file holds them and none of their versions is kept) and
//! marks them, unmarking those no longer collectable. The sweep takes marked contents whose
//! grace period is over, records the intent to delete them, then — holding FOR UPDATE on
//! their rows, so that a registration of the same content either happened before (and is
//! seen) or waits — deletes the objects of those still held by no live file and records
//! them purged. A registration that meets a mark or an intent clears it, and one that meets a
//! purged content queues it for upload again. No lock stops scans, the watcher or uploads of
//! other contents; catalog rows and events are never deleted.

use crate::catalog::retention::{Collectable, RetentionPolicy, RootShare};
use crate::catalog::Catalog;
use crate::store::ObjectStore;
use futures::stream::{self, StreamExt};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};

/// Contents claimed and swept per transaction.
const SWEEP_BATCH: i64 = 200;
/// Object deletions in flight during a sweep.
const DELETE_PARALLEL: usize = 8;

#[derive(Debug, Default, serde::Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    /// False when the policy keeps everything (the default): nothing is marked or deleted.
    pub policy_collects: bool,
    /// What the policy lets go now: objects and bytes, and per root.
    pub collectable_objects: u64,
    pub collectable_bytes: u64,
    pub by_root: Vec<RootShare>,
    /// Marked in this run, and unmarked (registered again, or the policy changed).
    pub marked: u64,
    pub unmarked: u64,
    /// Marked and past the grace period: deleted by this run (or, in a dry run, by a run now).
    pub due_objects: u64,
    pub due_bytes: u64,
    pub purged_objects: u64,
    pub purged_bytes: u64,
    /// Due, but a file holds the content again: kept.
    pub kept_registered_again: u64,
    /// Objects the store did not delete, with the reason (tried again by the next run).
    pub failed: Vec<GcFailure>,
}

#[derive(Debug, serde::Serialize)]
pub struct GcFailure {
    pub sha256: String,
    pub key: String,
    pub reason: String,
}

/// Running totals, for a progress line and `/metrics`.
#[derive(Debug, Default)]
pub struct GcProgress {
    pub marked: AtomicU64,
    pub purged: AtomicU64,
    pub reclaimed_bytes: AtomicU64,
}

/// One gc run: mark, then sweep what is due. With `dry_run`, nothing is written.
pub async fn run(
    catalog: &mut Catalog,
    store: &ObjectStore,
    policy: &RetentionPolicy,
    dry_run: bool,
    progress: &GcProgress,
) -> Result<GcReport, String> {
    let describe = |error: crate::catalog::CatalogError| error.detail();
    let mut report = GcReport {
        dry_run,
        policy_collects: !policy.keeps_everything(),
        ..Default::default()
    };
    let collectable = if report.policy_collects {
        let (collectable, by_root) = catalog.gc_collectable(policy).await.map_err(describe)?;
        report.by_root = by_root;
        collectable
    } else {
        Vec::new()
    };
    report.collectable_objects = collectable.len() as u64;
    report.collectable_bytes = collectable.iter().map(|c| c.size).sum();
    if !dry_run {
        let (marked, unmarked) = catalog.gc_mark(&collectable).await.map_err(describe)?;
        report.marked = marked;
        report.unmarked = unmarked;
        progress.marked.fetch_add(marked, Ordering::Relaxed);
    }
    let still_collectable: HashSet<&str> = collectable.iter().map(|c| c.sha256.as_str()).collect();
    let mut after = String::new();
    loop {
        let mut due = catalog
            .gc_due(policy.grace, &after, SWEEP_BATCH)
            .await
            .map_err(describe)?;
        let Some(last) = due.last() else { break };
        after = last.sha256.clone();
        if dry_run {
            // What a run now would delete: marked past grace, and still collectable.
            due.retain(|d| still_collectable.contains(d.sha256.as_str()));
        }
        report.due_objects += due.len() as u64;
        report.due_bytes += due.iter().map(|c| c.size).sum::<u64>();
        if dry_run {
            continue;
        }
        let claimed = catalog.gc_claim(&due).await.map_err(describe)?;
        report.kept_registered_again += (due.len() - claimed.len()) as u64;
        if claimed.is_empty() {
            continue;
        }
        let failures = std::sync::Mutex::new(Vec::new());
        let (purged, kept) = catalog
            .gc_sweep(&claimed, |going| {
                Box::pin(delete_objects(store, &due, going, &failures))
            })
            .await
            .map_err(describe)?;
        let failures = failures.into_inner().unwrap_or_else(|e| e.into_inner());
        report.kept_registered_again += kept.len() as u64;
        let bytes: u64 = due.iter().filter(|c| purged.contains(&c.sha256)).map(|c| c.size).sum();
        report.purged_objects += purged.len() as u64;
        report.purged_bytes += bytes;
        progress.purged.fetch_add(purged.len() as u64, Ordering::Relaxed);
        progress.reclaimed_bytes.fetch_add(bytes, Ordering::Relaxed);
        report.failed.extend(failures);
    }
    Ok(report)
}

/// Delete the objects of `going`; returns those the store confirmed deleted.
async fn delete_objects(
    store: &ObjectStore,
    due: &[Collectable],
    going: Vec<String>,
    failures: &std::sync::Mutex<Vec<GcFailure>>,
) -> Vec<String> {
    let work: Vec<Collectable> = due.iter().filter(|c| going.contains(&c.sha256)).cloned().collect();
    let outcomes: Vec<(Collectable, Result<(), String>)> = stream::iter(work)
        .map(|content| {
            let store = store.clone();
            async move {
                let outcome = store
                    .delete(&content.storage_key)
                    .await
                    .map_err(|error| error.to_string());
                (content, outcome)
            }
        })
        .buffer_unordered(DELETE_PARALLEL)
        .collect()
        .await;
    let mut deleted = Vec::new();
    for (content, outcome) in outcomes {
        match outcome {
            Ok(()) => deleted.push(content.sha256),
            Err(reason) => failures.lock().unwrap_or_else(|e| e.into_inner()).push(GcFailure {
                sha256: content.sha256,
                key: content.storage_key,
                reason,
            }),
        }
    }
    deleted
}

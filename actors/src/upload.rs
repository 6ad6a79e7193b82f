//! The upload side: lease contents from the queue, skip those the store already has (HEAD),
//! store the rest from a live copy on disk whose stat still matches its registration, and
//! record the outcome. Failures back off exponentially, then end in the `failed` state.

use crate::catalog::{Catalog, CatalogError, QueueItem, SourceFile};
use crate::pathenc;
use crate::store::{Content, ObjectStore, StoreError};
use futures::stream::{self, StreamExt};
use serde::Serialize;
use slog::{debug, info, warn, Logger};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct UploadSettings {
    /// Transfers at once.
    pub concurrency: usize,
    /// A content that failed this many times is marked failed.
    pub max_attempts: i32,
    /// How long a leased row is ours before another worker may take it.
    pub lease: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl Default for UploadSettings {
    fn default() -> Self {
        UploadSettings {
            concurrency: 8,
            max_attempts: 10,
            lease: Duration::from_secs(15 * 60),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
        }
    }
}

/// Counters of this process's uploads.
#[derive(Debug, Default, Serialize)]
pub struct UploadCounters {
    pub uploaded: AtomicU64,
    pub uploaded_bytes: AtomicU64,
    /// Contents the store already had (another agent, or an earlier run, stored them).
    pub skipped_existing: AtomicU64,
    /// Contents no live file holds any more: nothing left to store.
    pub dropped: AtomicU64,
    pub failed_attempts: AtomicU64,
    pub failed_final: AtomicU64,
}

/// The retry delay after `attempts` failed attempts: initial * 2^(attempts-1), capped.
pub fn backoff(attempts: i32, initial: Duration, max: Duration) -> Duration {
    let exponent = attempts.saturating_sub(1).clamp(0, 30) as u32;
    initial.saturating_mul(2u32.saturating_pow(exponent)).min(max)
}

pub struct Uploader {
    catalog: Catalog,
    store: ObjectStore,
    /// Root label to where it is mounted here; only these roots are read.
    roots: HashMap<String, PathBuf>,
    root_labels: Vec<String>,
    settings: UploadSettings,
    pub counters: Arc<UploadCounters>,
    log: Logger,
}

enum ItemOutcome {
    Stored(u64),
    AlreadyStored,
    Dropped,
    Retry(String),
}

impl Uploader {
    pub fn new(
        catalog: Catalog,
        store: ObjectStore,
        roots: HashMap<String, PathBuf>,
        settings: UploadSettings,
        log: Logger,
    ) -> Uploader {
        let mut root_labels: Vec<String> = roots.keys().cloned().collect();
        root_labels.sort();
        Uploader {
            catalog,
            store,
            roots,
            root_labels,
            settings,
            counters: Arc::default(),
            log,
        }
    }

    /// Lease one batch and work it off. Returns how many rows were leased (0: nothing ready).
    pub async fn run_batch(&self) -> Result<usize, CatalogError> {
        let batch_size = (self.settings.concurrency * 4).max(8) as i32;
        let items = self
            .catalog
            .dequeue(batch_size, self.settings.lease, &self.root_labels)
            .await?;
        let count = items.len();
        let results: Vec<Result<(), CatalogError>> = stream::iter(items)
            .map(|item| self.process(item))
            .buffer_unordered(self.settings.concurrency.max(1))
            .collect()
            .await;
        results.into_iter().collect::<Result<Vec<()>, _>>()?;
        Ok(count)
    }

    /// Rows still waiting for an upload (failed rows do not count).
    pub async fn pending(&self) -> Result<i64, CatalogError> {
        Ok(self.catalog.queue_counts().await?.pending)
    }

    /// Give back our leases (on shutdown).
    pub async fn release(&self) -> Result<u64, CatalogError> {
        self.catalog.release_leases().await
    }

    async fn process(&self, item: QueueItem) -> Result<(), CatalogError> {
        let started = Instant::now();
        let outcome = self.try_upload(&item).await?;
        match outcome {
            ItemOutcome::Stored(bytes) => {
                self.catalog.mark_uploaded(&item.sha256).await?;
                self.counters.uploaded.fetch_add(1, Ordering::Relaxed);
                self.counters.uploaded_bytes.fetch_add(bytes, Ordering::Relaxed);
                debug!(self.log, "upload finished"; "sha256" => &item.sha256, "bytes" => bytes,
                    "ms" => started.elapsed().as_millis() as u64);
            }
            ItemOutcome::AlreadyStored => {
                self.catalog.mark_uploaded(&item.sha256).await?;
                self.counters.skipped_existing.fetch_add(1, Ordering::Relaxed);
            }
            ItemOutcome::Dropped => {
                if self.catalog.drop_from_queue(&item.sha256).await? {
                    self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    info!(self.log, "upload dropped: no file holds this content any more"; "sha256" => &item.sha256);
                } else {
                    self.fail(&item, "no readable copy under this agent's roots".into())
                        .await?;
                }
            }
            ItemOutcome::Retry(reason) => self.fail(&item, reason).await?,
        }
        Ok(())
    }

    async fn fail(&self, item: &QueueItem, reason: String) -> Result<(), CatalogError> {
        let retry_in = backoff(item.attempts, self.settings.backoff_initial, self.settings.backoff_max);
        let failed = self
            .catalog
            .mark_failed(&item.sha256, &reason, retry_in, self.settings.max_attempts)
            .await?;
        self.counters.failed_attempts.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.counters.failed_final.fetch_add(1, Ordering::Relaxed);
        }
        warn!(self.log, "upload failed"; "sha256" => &item.sha256, "attempt" => item.attempts,
            "final" => failed, "retry_in_ms" => retry_in.as_millis() as u64, "error" => reason);
        Ok(())
    }

    async fn try_upload(&self, item: &QueueItem) -> Result<ItemOutcome, CatalogError> {
        if item.already_uploaded {
            return Ok(ItemOutcome::AlreadyStored);
        }
        match self.store.head(&item.storage_key).await {
            Ok(Some(size)) if size == item.size => return Ok(ItemOutcome::AlreadyStored),
            Ok(_) => {}
            Err(error) => return Ok(ItemOutcome::Retry(error.to_string())),
        }
        let sources = self.catalog.sources(&item.sha256, &self.root_labels).await?;
        if sources.is_empty() {
            return Ok(ItemOutcome::Dropped);
        }
        let content = Content {
            sha256: item.sha256.clone(),
            size: item.size,
            key: item.storage_key.clone(),
        };
        let mut last_problem = String::new();
        for source in &sources {
            let Some(path) = self.local_path(source) else { continue };
            if let Err(problem) = stat_matches(&path, source) {
                last_problem = problem;
                continue;
            }
            match self.store.put_file(&content, &path).await {
                Ok(()) => return Ok(ItemOutcome::Stored(item.size)),
                Err(StoreError::ContentMismatch(message)) => last_problem = message,
                Err(StoreError::Other(message)) => return Ok(ItemOutcome::Retry(message)),
            }
        }
        Ok(ItemOutcome::Retry(format!(
            "no copy on disk matches the registered content ({last_problem})"
        )))
    }

    fn local_path(&self, source: &SourceFile) -> Option<PathBuf> {
        let base = self.roots.get(&source.root)?;
        let relative = pathenc::decode(&source.path, source.encoding).ok()?;
        Some(base.join(relative))
    }
}

/// The file must still have the stat it was hashed with; otherwise it changed since.
fn stat_matches(path: &std::path::Path, source: &SourceFile) -> Result<(), String> {
    let metadata = std::fs::symlink_metadata(path).map_err(|error| format!("{}: {error}", path.display()))?;
    let mtime_ns = metadata.mtime() as i128 * 1_000_000_000 + metadata.mtime_nsec() as i128;
    if metadata.size() != source.size || mtime_ns != source.mtime_ns || metadata.ino() != source.inode {
        return Err(format!("{} changed since it was hashed", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let initial = Duration::from_millis(500);
        let max = Duration::from_secs(60);
        let table = [
            (0, 500),
            (1, 500),
            (2, 1000),
            (3, 2000),
            (8, 60_000),
            (9, 60_000),
            (1000, 60_000),
        ];
        for (attempts, expected_ms) in table {
            assert_eq!(
                backoff(attempts, initial, max),
                Duration::from_millis(expected_ms),
                "attempts {attempts}"
            );
        }
    }
}

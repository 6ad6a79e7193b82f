//! The upload side: lease contents from the queue, skip those the store already has (HEAD),
//! store the rest from a live copy on disk whose stat still matches its registration, and
//! record the outcome. Failures back off exponentially, then end in the `failed` state.

use crate::catalog::{Catalog, CatalogError, QueueItem, SourceFile};
use crate::daemon::supervisor::Liveness;
use crate::pathenc;
use crate::store::{Content, Integrity, ObjectStore, StoreError};
use crate::upload_controls::UploadKnobs;
use crate::upload_handoff::{Handoff, Taker};
use crate::upload_inflight::InFlight;
use futures::stream::{FuturesUnordered, StreamExt};
use serde::Serialize;
use slog::{debug, info, warn, Logger};
use std::collections::{HashMap, VecDeque};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadSettings {
    /// Transfers at once.
    pub concurrency: usize,
    /// A content that failed this many times is marked failed.
    pub max_attempts: i32,
    /// How long a leased row is ours before another worker may take it.
    pub lease: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// An unreachable store ends `run` with [`UploadError::StoreUnavailable`] (the daemon's
    /// supervisor restarts the uploader with backoff) instead of counting against each
    /// item's attempts (the `scan` command's behaviour).
    pub stop_when_store_down: bool,
}

impl Default for UploadSettings {
    fn default() -> Self {
        UploadSettings {
            concurrency: 8,
            max_attempts: 10,
            lease: Duration::from_secs(15 * 60),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            stop_when_store_down: false,
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
    /// 1 while the upload window holds new uploads back.
    pub held: AtomicU64,
    /// HEAD requests sent (only for contents the store may already hold).
    pub heads: AtomicU64,
    /// Slots of transfers in flight allowed now (see `upload_inflight`; a small transfer
    /// takes one, a large one four) and the most transfers that were in flight at once.
    pub in_flight_limit: AtomicU64,
    pub in_flight_peak: AtomicU64,
}

/// The retry delay after `attempts` failed attempts: initial * 2^(attempts-1), capped.
pub fn backoff(attempts: i32, initial: Duration, max: Duration) -> Duration {
    let exponent = attempts.saturating_sub(1).clamp(0, 30) as u32;
    initial.saturating_mul(2u32.saturating_pow(exponent)).min(max)
}

/// How long the uploader runs.
#[derive(Debug, Default)]
pub struct UploadControl {
    /// Registration is still running: an empty queue is not the end.
    pub producing: AtomicBool,
    /// Once registration has ended, keep going until no row is pending (`scan --wait`);
    /// otherwise stop once what is in flight is done.
    pub drain: bool,
    /// Stop now: finish what is in flight, record it, give back the rest.
    pub stop: AtomicBool,
    /// Wakes an idle uploader at once when `producing` or `stop` change, instead of at its
    /// next poll (a scan's end would otherwise wait out the poll interval).
    pub wake: tokio::sync::Notify,
    /// Concurrency, bandwidth limit and window, changeable while the uploads run.
    pub knobs: Arc<UploadKnobs>,
}

impl UploadControl {
    /// Registration has ended.
    pub fn finish_producing(&self) {
        self.producing.store(false, Ordering::SeqCst);
        self.wake.notify_one();
    }

    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("object store unreachable: {0}")]
    StoreUnavailable(String),
    #[error("object store: {0}")]
    Store(String),
}

pub struct Uploader {
    catalog: Catalog,
    store: ObjectStore,
    /// Root label to where it is mounted here; only these roots are read.
    roots: HashMap<String, PathBuf>,
    root_labels: Vec<String>,
    settings: UploadSettings,
    pub counters: Arc<UploadCounters>,
    /// New contents the registrar leased to this uploader, see [`crate::upload_handoff`].
    handoff: Arc<Handoff>,
    log: Logger,
}

/// Takes the hand-overs while it lives; none are made to an uploader whose run has ended.
struct Taking<'a>(&'a Handoff);

impl Drop for Taking<'_> {
    fn drop(&mut self) {
        self.0.set_taker(None);
    }
}

enum ItemOutcome {
    Stored(u64),
    AlreadyStored,
    Dropped,
    Retry(String),
    /// The store did not answer: the item goes back to the queue untouched.
    StoreDown(String),
}

/// Outcomes are recorded in the catalog in batches of this many, or this often. Each record
/// is one statement over the queue and the contents, whose cost in a first sync is mostly
/// per statement (plans without statistics yet): in batches of 128 every 200 ms, the
/// uploader's PostgreSQL backend used 0.31-0.33 core-s for 10,000 files, 0.16-0.18 now.
/// A mark lost in a crash costs one HEAD when the row is leased again.
const COMMIT_BATCH: usize = 512;
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);
/// How long to wait before asking an empty queue again.
const IDLE_POLL: Duration = Duration::from_millis(200);
/// Leases ask for at least this many rows: during a first sync, a lease per batch of
/// rows instead of one per few transfers.
const LEASE_AT_LEAST: usize = 128;
/// How often a closed upload window is looked at again.
const WINDOW_POLL: Duration = Duration::from_secs(1);
/// How often an idle uploader clears failed rows that no live file needs any more.
const FAILURE_SWEEP: Duration = Duration::from_secs(60);

impl Uploader {
    pub fn new(
        catalog: Catalog,
        store: ObjectStore,
        roots: HashMap<String, PathBuf>,
        settings: UploadSettings,
        counters: Arc<UploadCounters>,
        handoff: Arc<Handoff>,
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
            counters,
            handoff,
            log,
        }
    }

    /// Decide how this store's uploads are verified (`storage.integrity`; `auto` probes the
    /// store), say so in one log event, and record it for `status`. Called before `run`.
    ///
    /// A store that does not answer now is not an error here: the uploads meet it as they
    /// would any outage (backoff, or the daemon's restart, whose next start probes again),
    /// and meanwhile the checks safe on any store are in force (signed payload and a
    /// read-back). A store that answers with an error (keys, bucket) is one.
    pub async fn prepare(&self) -> Result<Integrity, UploadError> {
        // A store that has just started may refuse for a moment (503 while its layout
        // settles): ask again a few times before going on without a probe.
        let mut probed = self.store.prepare_integrity().await;
        for pause_ms in [250, 500, 1000] {
            if !matches!(probed, Err(StoreError::Unavailable(_))) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(pause_ms)).await;
            probed = self.store.prepare_integrity().await;
        }
        let integrity = match probed {
            Ok(integrity) => integrity,
            Err(StoreError::Unavailable(reason)) => {
                let safe = self.store.integrity();
                warn!(self.log, "store integrity not probed"; "store" => self.store.describe(),
                    "reason" => &reason, "checks" => safe.checks());
                return Ok(safe);
            }
            Err(other) => return Err(UploadError::Store(other.to_string())),
        };
        info!(self.log, "store integrity"; "store" => self.store.describe(), "mode" => integrity.mode,
            "checks" => integrity.checks(), "reason" => &integrity.reason);
        self.catalog
            .record_store_check(&self.store.describe(), &integrity)
            .await?;
        Ok(integrity)
    }

    /// Keep transfers in flight as [`InFlight`] admits them (up to `upload.concurrency` large
    /// ones, small ones as many as the link's latency calls for, within a memory bound),
    /// leasing more as they end, and record outcomes in batches, until `control` says to
    /// stop. Leases still held at the end are given back.
    /// `liveness`: the transfers in flight are its work; each finished transfer and each file
    /// or part let through the bandwidth limiter is progress.
    pub async fn run(&self, control: &UploadControl, liveness: &Liveness) -> Result<(), UploadError> {
        self.catalog.relax_commit_durability().await?;
        let knobs = control.knobs.clone();
        let mut held = false;
        let mut ready: VecDeque<QueueItem> = VecDeque::new();
        let mut in_flight = FuturesUnordered::new();
        let mut done: Vec<(QueueItem, ItemOutcome)> = Vec::new();
        let mut last_commit = Instant::now();
        let mut next_poll = Instant::now();
        let mut store_down: Option<String> = None;
        // The first idle moment sweeps; then once per FAILURE_SWEEP.
        let mut last_failure_sweep = Instant::now().checked_sub(FAILURE_SWEEP).unwrap_or_else(Instant::now);
        let mut granted = knobs.limiter.granted();
        let mut admission = InFlight::new(knobs.concurrency());
        let (worker, lock_key) = self.catalog.lease_identity().await?;
        let taker = Taker {
            worker,
            lock_key,
            lease: self.settings.lease,
        };
        let _taking = Taking(&self.handoff);
        // When we stop taking hand-overs, what was handed over and not taken is still leased
        // to us: given back (`release_due`), and once more before taking again, for a batch
        // leased to us before we stopped and committed after (`stray_leases`).
        let (mut release_due, mut stray_leases) = (false, false);
        loop {
            liveness.set_work(in_flight.len() as u64);
            if knobs.limiter.granted() != granted {
                granted = knobs.limiter.granted();
                liveness.step();
            }
            admission.set_concurrency(knobs.concurrency());
            let slots = admission.limit();
            self.counters.in_flight_limit.store(slots as u64, Ordering::Relaxed);
            let open = knobs.open(chrono::Utc::now());
            if open == held {
                held = !open;
                self.counters.held.store(u64::from(held), Ordering::Relaxed);
                if let Some(window) = knobs.window().filter(|_| held) {
                    info!(self.log, "uploads held by the window"; "window" => window.describe(),
                        "opens_at" => window.next_open(chrono::Utc::now()).to_rfc3339());
                } else {
                    info!(self.log, "uploads resumed");
                }
            }
            let stopping = store_down.is_some()
                || control.stop.load(Ordering::SeqCst)
                || (!control.producing.load(Ordering::SeqCst) && !control.drain);
            let taking = !stopping && open;
            if self.handoff.set_taker(taking.then(|| taker.clone())) {
                if !taking {
                    (release_due, stray_leases) = (true, true);
                } else if std::mem::take(&mut stray_leases) && ready.is_empty() && in_flight.is_empty() {
                    self.catalog.release_leases().await?;
                }
            }
            if taking && ready.len() < slots {
                ready.extend(self.handoff.take(slots.max(LEASE_AT_LEAST) - ready.len()));
            }
            if taking && ready.len() < slots && Instant::now() >= next_poll {
                let want = slots.max(LEASE_AT_LEAST);
                let leased = self.lease(want as i32).await?;
                if leased.len() < want {
                    // The queue has nothing more ready now: look again after a pause, not at
                    // every transfer that ends (each lease costs the catalog a query).
                    next_poll = Instant::now() + IDLE_POLL;
                }
                if leased.is_empty() && last_failure_sweep.elapsed() >= FAILURE_SWEEP {
                    last_failure_sweep = Instant::now();
                    self.drop_unneeded_failures().await?;
                }
                ready.extend(leased);
            }
            if !stopping && open {
                // One transfer always goes, whatever its size.
                while let Some(next) = ready.front() {
                    if !admission.admits(next.size) {
                        break;
                    }
                    let Some(item) = ready.pop_front() else { break };
                    admission.start(item.size);
                    // Boxed: the transfer's state is large, and pushing it by value copied it.
                    in_flight.push(Box::pin(self.transfer(item, &knobs)));
                }
                self.counters
                    .in_flight_peak
                    .fetch_max(admission.peak() as u64, Ordering::Relaxed);
            }
            if in_flight.is_empty() {
                self.record(&mut done).await?;
                last_commit = Instant::now();
                if stopping {
                    break;
                }
                if open && self.drained(control).await? {
                    // Registration has ended (a scan's deletions are in): a last look.
                    self.drop_unneeded_failures().await?;
                    break;
                }
                if !open {
                    // Held by the window: give the leases back, look again in a second.
                    if !ready.is_empty() || std::mem::take(&mut release_due) {
                        ready.clear();
                        self.catalog.release_leases().await?;
                    }
                    next_poll = Instant::now() + WINDOW_POLL;
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(next_poll.into()) => {}
                    _ = control.wake.notified() => {}
                    _ = self.handoff.arrived.notified() => {}
                }
                continue;
            }
            tokio::select! {
                Some((item, outcome, took)) = in_flight.next() => {
                    liveness.step();
                    let requests = match &outcome {
                        ItemOutcome::Stored(_) => 1 + u32::from(item.maybe_stored),
                        ItemOutcome::AlreadyStored => u32::from(!item.already_uploaded),
                        ItemOutcome::Dropped => 0,
                        ItemOutcome::Retry(_) | ItemOutcome::StoreDown(_) => 1,
                    };
                    let failed = matches!(outcome, ItemOutcome::Retry(_) | ItemOutcome::StoreDown(_));
                    admission.finish(item.size, took, requests, failed);
                    if let ItemOutcome::StoreDown(reason) = &outcome {
                        store_down.get_or_insert_with(|| reason.clone());
                    }
                    done.push((item, outcome));
                }
                _ = tokio::time::sleep(COMMIT_INTERVAL) => {}
            }
            if done.len() >= COMMIT_BATCH || last_commit.elapsed() >= COMMIT_INTERVAL {
                self.record(&mut done).await?;
                last_commit = Instant::now();
            }
        }
        liveness.set_work(0);
        self.catalog.release_leases().await?;
        match store_down {
            Some(reason) => Err(UploadError::StoreUnavailable(reason)),
            None => Ok(()),
        }
    }

    /// Failed rows whose content no live file holds leave the queue.
    async fn drop_unneeded_failures(&self) -> Result<(), CatalogError> {
        let dropped = self.catalog.drop_unneeded_failures().await?;
        if dropped > 0 {
            self.counters.dropped.fetch_add(dropped, Ordering::Relaxed);
            info!(self.log, "failed uploads dropped: no file holds their contents any more"; "count" => dropped);
        }
        Ok(())
    }

    /// Give back every lease this uploader holds (after its run was cut short).
    pub async fn release_leases(&self) -> Result<u64, CatalogError> {
        self.catalog.release_leases().await
    }

    async fn lease(&self, batch_size: i32) -> Result<Vec<QueueItem>, CatalogError> {
        self.catalog
            .dequeue(batch_size, self.settings.lease, &self.root_labels)
            .await
    }

    /// Registration has ended and no row is pending any more.
    async fn drained(&self, control: &UploadControl) -> Result<bool, CatalogError> {
        if control.producing.load(Ordering::SeqCst) {
            return Ok(false);
        }
        Ok(self.pending().await? == 0)
    }

    /// Rows still waiting for an upload that this agent can do (failed rows do not count).
    pub async fn pending(&self) -> Result<i64, CatalogError> {
        self.catalog.pending_for(&self.root_labels).await
    }

    /// Write the outcomes gathered so far: all stored contents in one statement, the rare
    /// failures and drops one by one.
    async fn record(&self, done: &mut Vec<(QueueItem, ItemOutcome)>) -> Result<(), CatalogError> {
        let stored: Vec<&str> = done
            .iter()
            .filter(|(_, outcome)| matches!(outcome, ItemOutcome::Stored(_) | ItemOutcome::AlreadyStored))
            .map(|(item, _)| item.sha256.as_str())
            .collect();
        self.catalog.mark_uploaded(&stored).await?;
        for (item, outcome) in done.drain(..) {
            match outcome {
                ItemOutcome::Stored(bytes) => {
                    self.counters.uploaded.fetch_add(1, Ordering::Relaxed);
                    self.counters.uploaded_bytes.fetch_add(bytes, Ordering::Relaxed);
                }
                ItemOutcome::AlreadyStored => {
                    self.counters.skipped_existing.fetch_add(1, Ordering::Relaxed);
                }
                ItemOutcome::Dropped => self.drop_item(&item).await?,
                ItemOutcome::Retry(reason) => self.fail(&item, reason).await?,
                // Its lease is given back when the run ends; no attempt is counted.
                ItemOutcome::StoreDown(_) => {}
            }
        }
        Ok(())
    }

    async fn drop_item(&self, item: &QueueItem) -> Result<(), CatalogError> {
        if self.catalog.drop_from_queue(&item.sha256).await? {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            info!(self.log, "upload dropped: no file holds this content any more"; "sha256" => &item.sha256);
            return Ok(());
        }
        self.fail(item, "no readable copy under this agent's roots".into())
            .await
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

    /// HEAD, then PUT from the first copy whose stat still matches. No catalog access.
    async fn transfer(&self, item: QueueItem, knobs: &UploadKnobs) -> (QueueItem, ItemOutcome, Duration) {
        let started = Instant::now();
        let outcome = self.try_transfer(&item, knobs).await;
        let took = started.elapsed();
        if let ItemOutcome::Stored(bytes) = &outcome {
            debug!(self.log, "upload finished"; "sha256" => &item.sha256, "bytes" => *bytes,
                "ms" => took.as_millis() as u64);
        }
        (item, outcome, took)
    }

    async fn try_transfer(&self, item: &QueueItem, knobs: &UploadKnobs) -> ItemOutcome {
        if item.already_uploaded {
            return ItemOutcome::AlreadyStored;
        }
        // A content registered for the first time and leased for the first time cannot be in
        // the store: one round trip fewer. Anything else is asked about first.
        if item.maybe_stored {
            self.counters.heads.fetch_add(1, Ordering::Relaxed);
            match self.store.head(&item.storage_key).await {
                Ok(Some(size)) if size == item.size => return ItemOutcome::AlreadyStored,
                Ok(_) => {}
                Err(error) => return self.on_store_error(error),
            }
        }
        if item.sources.is_empty() {
            return ItemOutcome::Dropped;
        }
        let content = Content {
            sha256: item.sha256.clone(),
            size: item.size,
            key: item.storage_key.clone(),
            parts: item.parts.clone(),
        };
        let mut last_problem = String::new();
        for source in &item.sources {
            let Some(path) = self.local_path(source) else { continue };
            if let Err(problem) = stat_matches(&path, source) {
                last_problem = problem;
                continue;
            }
            match self.store.put_file_paced(&content, &path, &knobs.limiter).await {
                Ok(()) => return ItemOutcome::Stored(item.size),
                Err(StoreError::ContentMismatch(message)) => {
                    // The store (or our read-back) refused the bytes; another copy of the
                    // same content, if any, is tried at once, else the item is retried later.
                    warn!(self.log, "upload refused: stored bytes did not match";
                        "sha256" => &item.sha256, "path" => path.display().to_string(), "error" => &message);
                    last_problem = message;
                }
                Err(error) => return self.on_store_error(error),
            }
        }
        ItemOutcome::Retry(format!(
            "no copy on disk matches the registered content ({last_problem})"
        ))
    }

    fn on_store_error(&self, error: StoreError) -> ItemOutcome {
        match error {
            StoreError::Unavailable(reason) if self.settings.stop_when_store_down => ItemOutcome::StoreDown(reason),
            other => ItemOutcome::Retry(other.to_string()),
        }
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

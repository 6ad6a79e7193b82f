//! Carrying out a plan: moves first, then hashing on the pool with registrations streamed
//! into batched transactions as the hashes come back, then soft deletion of what is still
//! missing at the end.

use super::plan::{make_move, make_registration, HashJob, Plan};
use super::{Batch, RootCounts, RootSpec, ScanContext, ScanSink};
use crate::catalog::{BatchOutcome, Catalog, CatalogError, Deletion};
use crate::fs::HashError;
use futures::stream::{FuturesUnordered, StreamExt};
use slog::{warn, Logger};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A batch is written when it is this old even if it is not full, so uploads can start early.
const MAX_BATCH_AGE: Duration = Duration::from_millis(500);

/// Writes waiting for the next transaction.
#[derive(Default)]
struct Pending {
    batch: Batch,
    since: Option<Instant>,
}

impl Pending {
    fn len(&self) -> usize {
        self.batch.len()
    }

    fn touch(&mut self) {
        self.since.get_or_insert_with(Instant::now);
    }

    async fn flush<S: ScanSink>(
        &mut self,
        sink: &S,
        catalog: &mut Catalog,
        root: &str,
        counts: &mut RootCounts,
    ) -> Result<(), CatalogError> {
        if self.len() == 0 {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        self.since = None;
        let outcome = sink.write(catalog, root, batch).await?;
        add_outcome(counts, &outcome);
        Ok(())
    }
}

fn add_outcome(counts: &mut RootCounts, outcome: &BatchOutcome) {
    counts.new += outcome.created;
    counts.changed += outcome.modified;
    counts.restored += outcome.restored;
    counts.moved += outcome.moved;
    counts.deleted += outcome.deleted;
    counts.retried_batches += outcome.retries;
    counts.metadata_written += outcome.metadata_written;
    counts.metadata_refused += outcome.metadata_refused;
}

pub(super) async fn apply<S: ScanSink>(
    catalog: &mut Catalog,
    sink: &S,
    context: &ScanContext,
    root: &RootSpec,
    mut plan: Plan,
    log: &Logger,
    counts: &mut RootCounts,
) -> Result<(), CatalogError> {
    counts.seen = plan.seen;
    counts.unchanged = plan.unchanged;
    counts.protected = plan.protected;
    for path in &plan.collisions {
        warn!(log, "path collides with another path's encoded form; not registered"; "path" => path.as_str());
        counts.failed += 1;
    }
    let mut pending = Pending {
        batch: Batch {
            registrations: std::mem::take(&mut plan.carried),
            moves: std::mem::take(&mut plan.moves),
            deletions: Vec::new(),
        },
        since: None,
    };
    pending.flush(sink, catalog, &root.label, counts).await?;
    let jobs = std::mem::take(&mut plan.to_hash);
    let mut run = Run {
        sink,
        catalog,
        root,
        plan: &mut plan,
        pending: &mut pending,
        batch_size: context.options.batch_size,
        log,
        counts,
    };
    run.hash_and_register(jobs).await?;
    for id in plan.vanished.keys() {
        pending.batch.deletions.push(Deletion { id: *id });
        if pending.len() >= context.options.batch_size {
            pending.flush(sink, catalog, &root.label, counts).await?;
        }
    }
    pending.flush(sink, catalog, &root.label, counts).await
}

/// The hashing phase of one root's scan.
struct Run<'a, S> {
    sink: &'a S,
    catalog: &'a mut Catalog,
    root: &'a RootSpec,
    plan: &'a mut Plan,
    pending: &'a mut Pending,
    batch_size: usize,
    log: &'a Logger,
    counts: &'a mut RootCounts,
}

impl<S: ScanSink> Run<'_, S> {
    /// Hash every job, `hash_slots` at a time, registering the results in batches as they
    /// come back (a batch goes out when full or `MAX_BATCH_AGE` old).
    async fn hash_and_register(&mut self, jobs: Vec<HashJob>) -> Result<(), CatalogError> {
        let mut vanished_by_sha: HashMap<String, Vec<i64>> = HashMap::new();
        for row in self.plan.vanished.values() {
            vanished_by_sha.entry(row.sha256.clone()).or_default().push(row.id);
        }
        let slots = self.sink.hash_slots().max(1);
        let sink = self.sink;
        let base = self.root.path.clone();
        let mut next = 0;
        let mut in_flight = FuturesUnordered::new();
        loop {
            while in_flight.len() < slots && next < jobs.len() {
                let index = next;
                let path = base.join(&jobs[index].relative);
                let size = jobs[index].walked.size;
                in_flight.push(async move { (index, sink.hash(path, size).await) });
                next += 1;
            }
            let reply = match tokio::time::timeout(MAX_BATCH_AGE, in_flight.next()).await {
                Ok(Some(reply)) => reply,
                Ok(None) => break,
                Err(_elapsed) => {
                    self.flush().await?;
                    continue;
                }
            };
            let (index, result) = reply;
            on_hashed(
                &jobs[index],
                result,
                self.plan,
                &mut vanished_by_sha,
                self.pending,
                self.log,
                self.counts,
            );
            let too_old = self.pending.since.is_some_and(|since| since.elapsed() >= MAX_BATCH_AGE);
            if self.pending.len() >= self.batch_size || too_old {
                self.flush().await?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), CatalogError> {
        self.pending
            .flush(self.sink, self.catalog, &self.root.label, self.counts)
            .await
    }
}

fn on_hashed(
    job: &HashJob,
    result: Result<crate::fs::Hashed, HashError>,
    plan: &mut Plan,
    vanished_by_sha: &mut HashMap<String, Vec<i64>>,
    pending: &mut Pending,
    log: &Logger,
    counts: &mut RootCounts,
) {
    pending.touch();
    let display = || job.relative.to_string_lossy().into_owned();
    let hashed = match result {
        Ok(hashed) => hashed,
        Err(HashError::Vanished) | Err(HashError::NotRegular) => {
            // Gone (or no longer a regular file) since the walk: whatever row it had goes.
            if let Some(id) = job.existing {
                pending.batch.deletions.push(Deletion { id });
            }
            return;
        }
        Err(HashError::Changed) => {
            warn!(log, "file changed while being hashed; it will be picked up again"; "path" => display());
            counts.failed += 1;
            return;
        }
        Err(HashError::Io(error)) => {
            warn!(log, "cannot read file; its catalog row is kept as it was"; "path" => display(), "error" => error.to_string());
            counts.failed += 1;
            return;
        }
    };
    counts.hashed_files += 1;
    counts.bytes_hashed += hashed.stat.size;
    if job.existing.is_none() {
        if let Some(id) = vanished_by_sha.get_mut(&hashed.sha256).and_then(|ids| ids.pop()) {
            plan.vanished.remove(&id);
            pending
                .batch
                .moves
                .push(make_move(id, job.path.clone(), job.encoding, &hashed.stat));
            return;
        }
    }
    let key = crate::key::storage_key(&hashed.sha256, &job.relative);
    let mut registration = make_registration(
        job.path.clone(),
        job.encoding,
        &hashed.stat,
        hashed.sha256,
        key,
        hashed.metadata,
    );
    registration.parts = hashed.parts;
    pending.batch.registrations.push(registration);
}

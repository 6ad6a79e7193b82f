//! Carrying out a plan: moves first, then hashing on the pool with registrations streamed
//! into batched transactions as the hashes come back, then soft deletion of what is still
//! missing at the end.

use super::plan::{make_move, make_registration, HashJob, Plan};
use super::{RootCounts, RootSpec, ScanContext};
use crate::catalog::{BatchOutcome, Catalog, CatalogError, Deletion, Move, Registration};
use crate::fs::HashError;
use crate::hashing::{HashReply, HashRequest};
use slog::{warn, Logger};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A batch is written when it is this old even if it is not full, so uploads can start early.
const MAX_BATCH_AGE: Duration = Duration::from_millis(500);

/// Writes waiting for the next transaction.
#[derive(Default)]
struct Pending {
    registrations: Vec<Registration>,
    moves: Vec<Move>,
    deletions: Vec<Deletion>,
    since: Option<Instant>,
}

impl Pending {
    fn len(&self) -> usize {
        self.registrations.len() + self.moves.len() + self.deletions.len()
    }

    fn touch(&mut self) {
        self.since.get_or_insert_with(Instant::now);
    }

    async fn flush(&mut self, catalog: &mut Catalog, root: &str, counts: &mut RootCounts) -> Result<(), CatalogError> {
        if self.len() == 0 {
            return Ok(());
        }
        let outcome = catalog
            .write_batch(root, &self.registrations, &self.moves, &self.deletions)
            .await?;
        add_outcome(counts, &outcome);
        *self = Pending::default();
        Ok(())
    }
}

fn add_outcome(counts: &mut RootCounts, outcome: &BatchOutcome) {
    counts.new += outcome.created;
    counts.changed += outcome.modified;
    counts.restored += outcome.restored;
    counts.moved += outcome.moved;
    counts.deleted += outcome.deleted;
}

pub(super) async fn apply(
    catalog: &mut Catalog,
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
        registrations: std::mem::take(&mut plan.carried),
        moves: std::mem::take(&mut plan.moves),
        ..Pending::default()
    };
    pending.flush(catalog, &root.label, counts).await?;
    let jobs = std::mem::take(&mut plan.to_hash);
    hash_and_register(catalog, context, root, jobs, &mut plan, &mut pending, log, counts).await?;
    for id in plan.vanished.keys() {
        pending.deletions.push(Deletion { id: *id });
        if pending.len() >= context.options.batch_size {
            pending.flush(catalog, &root.label, counts).await?;
        }
    }
    pending.flush(catalog, &root.label, counts).await
}

#[allow(clippy::too_many_arguments)]
async fn hash_and_register(
    catalog: &mut Catalog,
    context: &ScanContext,
    root: &RootSpec,
    jobs: Vec<HashJob>,
    plan: &mut Plan,
    pending: &mut Pending,
    log: &Logger,
    counts: &mut RootCounts,
) -> Result<(), CatalogError> {
    let mut vanished_by_sha: HashMap<String, Vec<i64>> = HashMap::new();
    for row in plan.vanished.values() {
        vanished_by_sha.entry(row.sha256.clone()).or_default().push(row.id);
    }
    let (reply_sender, mut replies) = tokio::sync::mpsc::channel::<HashReply<usize>>(256);
    let submitter = context.pool.submitter();
    let requests: Vec<HashRequest<usize>> = jobs
        .iter()
        .enumerate()
        .map(|(index, job)| HashRequest {
            path: root.path.join(&job.relative),
            tag: index,
            reply: reply_sender.clone(),
        })
        .collect();
    drop(reply_sender);
    // Feeding blocks while the pool is busy, so it runs on a blocking thread.
    let feeder = tokio::task::spawn_blocking(move || {
        for request in requests {
            if submitter.send(request).is_err() {
                break;
            }
        }
    });
    loop {
        let reply = match tokio::time::timeout(MAX_BATCH_AGE, replies.recv()).await {
            Ok(Some(reply)) => reply,
            Ok(None) => break,
            Err(_elapsed) => {
                pending.flush(catalog, &root.label, counts).await?;
                continue;
            }
        };
        let job = &jobs[reply.tag];
        on_hashed(job, reply.result, plan, &mut vanished_by_sha, pending, log, counts);
        let too_old = pending.since.is_some_and(|since| since.elapsed() >= MAX_BATCH_AGE);
        if pending.len() >= context.options.batch_size || too_old {
            pending.flush(catalog, &root.label, counts).await?;
        }
    }
    let _ = feeder.await;
    Ok(())
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
                pending.deletions.push(Deletion { id });
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
                .moves
                .push(make_move(id, job.path.clone(), job.encoding, &hashed.stat));
            return;
        }
    }
    let key = crate::key::storage_key(&hashed.sha256, &job.relative);
    pending.registrations.push(make_registration(
        job.path.clone(),
        job.encoding,
        &hashed.stat,
        hashed.sha256,
        key,
    ));
}

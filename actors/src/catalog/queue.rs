//! The upload side's use of the catalog: lease a batch, find a readable copy of a content,
//! and record the outcome.

use super::{Catalog, CatalogError};
use crate::pathenc::PathEncoding;
use std::time::Duration;

/// A leased queue row with what the uploader needs to know about its content.
#[derive(Clone, Debug)]
pub struct QueueItem {
    pub sha256: String,
    pub size: u64,
    pub storage_key: String,
    /// Counted at dequeue, so a content that crashes the uploader still reaches its limit.
    pub attempts: i32,
    pub already_uploaded: bool,
    /// The store may hold it already (see migration 0009): false only at the first lease of
    /// a content registered for the first time, which needs no HEAD.
    pub maybe_stored: bool,
    /// Live files holding this content under the dequeuing agent's roots, newest first.
    pub sources: Vec<SourceFile>,
    /// The digests of its parts, taken while it was hashed (a content handed over at its
    /// registration; none for a leased row).
    pub parts: Option<std::sync::Arc<crate::fs::PartDigests>>,
}

/// A live file that holds a content, with the stat it had when it was hashed.
#[derive(Clone, Debug)]
pub struct SourceFile {
    pub root: String,
    pub path: String,
    pub encoding: PathEncoding,
    pub size: u64,
    pub mtime_ns: i128,
    pub inode: u64,
}

/// Leases, and the live copies of each leased content, in one round trip. Each lookup is a
/// LATERAL with a LIMIT, so it stays one index probe per leased row whatever the planner's
/// statistics say (during a first sync they describe a table a fraction of its size): the
/// copies are found by sha256 alone and only then filtered by root.
const DEQUEUE: &str = "
    SELECT q.sha256, c.size, c.storage_key, q.attempts, c.uploaded_at IS NOT NULL,
           s.roots, s.paths, s.encodings, s.sizes, s.mtimes, s.inodes, q.maybe_stored
      FROM dequeue_upload_batch($1, $2, $3::text::interval, $4, $5) q
      CROSS JOIN LATERAL (
            SELECT size, storage_key, uploaded_at FROM file_contents c WHERE c.sha256 = q.sha256 LIMIT 1) c
      CROSS JOIN LATERAL (
            SELECT coalesce(array_agg(f.root), '{}') AS roots, coalesce(array_agg(f.path), '{}') AS paths,
                   coalesce(array_agg(f.path_encoding), '{}') AS encodings, coalesce(array_agg(f.size), '{}') AS sizes,
                   coalesce(array_agg(f.mtime_ns), '{}') AS mtimes, coalesce(array_agg(f.inode), '{}') AS inodes
              FROM (SELECT root, path, path_encoding, size, mtime_ns, inode FROM files
                     WHERE sha256 = q.sha256 AND deleted_at IS NULL LIMIT 64) f
             WHERE f.root = ANY ($4)) s";

/// Above this many pending rows in the whole queue, a scan's summary reports that number
/// instead of counting its own agent's share.
const PENDING_COUNTED_UP_TO: i64 = 50_000;

impl Catalog {
    /// Lease up to `batch_size` ready contents, only those with a live file under one of
    /// `roots` (this agent can read nothing else).
    pub async fn dequeue(
        &self,
        batch_size: i32,
        lease: Duration,
        roots: &[String],
    ) -> Result<Vec<QueueItem>, CatalogError> {
        let lease = format!("{} milliseconds", lease.as_millis());
        let lock = self.liveness_lock().await?;
        let rows = self
            .client
            .query(DEQUEUE, &[&self.worker, &batch_size, &lease, &roots, &lock])
            .await?;
        Ok(rows.iter().map(queue_item).collect())
    }

    /// The name this connection leases under and the key of the advisory lock it holds
    /// while it lives (taken now if it is not yet): what the registrar leases new contents
    /// to (see [`crate::upload_handoff`]).
    pub async fn lease_identity(&self) -> Result<(String, i64), CatalogError> {
        Ok((self.worker.clone(), self.liveness_lock().await?))
    }

    /// The advisory lock this connection holds while it lives (taken on first use); the
    /// queue reclaims our leases as soon as it is gone.
    async fn liveness_lock(&self) -> Result<i64, CatalogError> {
        let key = self.lock_key;
        if !self.lock_taken.swap(true, std::sync::atomic::Ordering::SeqCst) {
            self.client.execute("SELECT pg_advisory_lock($1)", &[&key]).await?;
        }
        Ok(key)
    }

    /// For the uploader's session: commits need not wait for the WAL flush. A mark lost in a
    /// database crash only means the content is tried again, and HEAD finds it stored.
    pub async fn relax_commit_durability(&self) -> Result<(), CatalogError> {
        self.client.batch_execute("SET synchronous_commit = off").await?;
        Ok(())
    }

    /// These objects are stored: mark the contents and take them off the queue, in one
    /// statement.
    pub async fn mark_uploaded(&self, sha256s: &[&str]) -> Result<(), CatalogError> {
        if sha256s.is_empty() {
            return Ok(());
        }
        self.client
            .execute(
                // Row locks by SHA-256, as registration takes them (no deadlock between them);
                // NO KEY UPDATE on the contents, which the files' foreign keys share-lock.
                "WITH done AS (
                      DELETE FROM upload_queue WHERE sha256 IN (
                          SELECT sha256 FROM upload_queue WHERE sha256 = ANY($1) ORDER BY sha256 FOR UPDATE))
                 UPDATE file_contents SET uploaded_at = coalesce(uploaded_at, now()), purged_at = NULL
                  WHERE sha256 IN (SELECT sha256 FROM file_contents WHERE sha256 = ANY($1)
                                    ORDER BY sha256 FOR NO KEY UPDATE)",
                &[&sha256s],
            )
            .await?;
        Ok(())
    }

    /// The attempt failed: release the lease and retry after `retry_in`, or give up and mark
    /// the row failed once `max_attempts` is reached. Returns true if it is now failed.
    pub async fn mark_failed(
        &self,
        sha256: &str,
        error: &str,
        retry_in: Duration,
        max_attempts: i32,
    ) -> Result<bool, CatalogError> {
        let retry_in = format!("{} milliseconds", retry_in.as_millis());
        let row = self
            .client
            .query_opt(
                "UPDATE upload_queue
                    SET lease_owner = NULL, lease_expires_at = NULL, lease_lock = NULL, last_error = $2,
                        next_attempt_at = now() + $3::text::interval,
                        state = CASE WHEN attempts >= $4 THEN 'failed' ELSE 'pending' END
                  WHERE sha256 = $1 AND lease_owner = $5
                 RETURNING state = 'failed'",
                &[&sha256, &error, &retry_in, &max_attempts, &self.worker],
            )
            .await?;
        Ok(row.map(|row| row.get(0)).unwrap_or(false))
    }

    /// No live file holds this content any more (it changed or was deleted before it could
    /// be stored): there is nothing left to upload.
    pub async fn drop_from_queue(&self, sha256: &str) -> Result<bool, CatalogError> {
        let removed = self
            .client
            .execute(
                "DELETE FROM upload_queue q WHERE q.sha256 = $1
                    AND NOT EXISTS (SELECT 1 FROM files f WHERE f.sha256 = q.sha256 AND f.deleted_at IS NULL)",
                &[&sha256],
            )
            .await?;
        Ok(removed > 0)
    }

    /// Failed rows (given up after their last attempt) whose content no live file holds any
    /// more: nobody needs them stored, so they leave the queue instead of being reported as
    /// failed for ever. Returns how many.
    pub async fn drop_unneeded_failures(&self) -> Result<u64, CatalogError> {
        self.client
            .execute(
                "DELETE FROM upload_queue q
                  WHERE q.sha256 IN (SELECT sha256 FROM upload_queue WHERE state = 'failed'
                                      ORDER BY sha256 FOR UPDATE SKIP LOCKED)
                    AND NOT EXISTS (SELECT 1 FROM files f WHERE f.sha256 = q.sha256 AND f.deleted_at IS NULL)",
                &[],
            )
            .await
    }

    /// Pending rows this agent can work off: a live file under `roots` holds the content, or
    /// none holds it any more (the row is dropped). Rows only another agent's roots can serve
    /// are left to that agent.
    pub async fn pending_for(&self, roots: &[String]) -> Result<i64, CatalogError> {
        let row = self
            .client
            .query_one(
                "SELECT count(*) FROM upload_queue q
                  CROSS JOIN LATERAL (
                        SELECT count(*) AS live, count(*) FILTER (WHERE f.root = ANY ($1)) AS readable
                          FROM (SELECT root FROM files f WHERE f.sha256 = q.sha256 AND f.deleted_at IS NULL LIMIT 64) f) h
                  WHERE q.state = 'pending' AND (h.readable > 0 OR h.live = 0)",
                &[&roots],
            )
            .await?;
        Ok(row.get(0))
    }

    /// What a scan's summary reports as waiting: this agent's pending rows ([`pending_for`],
    /// exact) while the whole queue is small, else the whole queue's pending count from the
    /// running totals (`Err`), which costs nothing however long the queue: counting this
    /// agent's share of a million rows costs seconds.
    ///
    /// [`pending_for`]: Catalog::pending_for
    pub async fn pending_for_summary(&self, roots: &[String]) -> Result<Result<i64, i64>, CatalogError> {
        let all = self.queue_counts().await?.pending;
        if all > PENDING_COUNTED_UP_TO {
            return Ok(Err(all));
        }
        Ok(Ok(self.pending_for(roots).await?))
    }

    /// Give back leases this process still holds (on shutdown), without counting the attempt.
    pub async fn release_leases(&self) -> Result<u64, CatalogError> {
        self.client
            .execute(
                "UPDATE upload_queue SET lease_owner = NULL, lease_expires_at = NULL, lease_lock = NULL,
                        attempts = greatest(attempts - 1, 0)
                  WHERE sha256 IN (SELECT sha256 FROM upload_queue WHERE lease_owner = $1
                                    ORDER BY sha256 FOR NO KEY UPDATE)",
                &[&self.worker],
            )
            .await
    }
}

fn queue_item(row: &tokio_postgres::Row) -> QueueItem {
    let roots: Vec<String> = row.get(5);
    let paths: Vec<String> = row.get(6);
    let encodings: Vec<String> = row.get(7);
    let sizes: Vec<i64> = row.get(8);
    let mtimes: Vec<i64> = row.get(9);
    let inodes: Vec<i64> = row.get(10);
    let sources = (0..roots.len())
        .map(|index| SourceFile {
            root: roots[index].clone(),
            path: paths[index].clone(),
            encoding: PathEncoding::parse(&encodings[index]).unwrap_or(PathEncoding::Utf8),
            size: sizes[index] as u64,
            mtime_ns: mtimes[index] as i128,
            inode: inodes[index] as u64,
        })
        .collect();
    QueueItem {
        sha256: row.get(0),
        size: row.get::<_, i64>(1) as u64,
        storage_key: row.get(2),
        attempts: row.get(3),
        already_uploaded: row.get(4),
        maybe_stored: row.get(11),
        sources,
        parts: None,
    }
}

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
        let rows = self
            .client
            .query(
                "SELECT q.sha256, c.size, c.storage_key, q.attempts, c.uploaded_at IS NOT NULL
                   FROM dequeue_upload_batch($1, $2, $3::text::interval, $4, $5) q
                   JOIN file_contents c USING (sha256)",
                &[&self.worker, &batch_size, &lease, &roots, &self.liveness_lock().await?],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| QueueItem {
                sha256: row.get(0),
                size: row.get::<_, i64>(1) as u64,
                storage_key: row.get(2),
                attempts: row.get(3),
                already_uploaded: row.get(4),
            })
            .collect())
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

    /// Live files holding `sha256` under `roots`, newest first.
    pub async fn sources(&self, sha256: &str, roots: &[String]) -> Result<Vec<SourceFile>, CatalogError> {
        let rows = self
            .client
            .query(
                "SELECT root, path, path_encoding, size, mtime_ns, inode FROM files
                  WHERE sha256 = $1 AND deleted_at IS NULL AND root = ANY($2)
                  ORDER BY updated_at DESC LIMIT 16",
                &[&sha256, &roots],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| SourceFile {
                root: row.get(0),
                path: row.get(1),
                encoding: PathEncoding::parse(row.get(2)).unwrap_or(PathEncoding::Utf8),
                size: row.get::<_, i64>(3) as u64,
                mtime_ns: row.get::<_, i64>(4) as i128,
                inode: row.get::<_, i64>(5) as u64,
            })
            .collect())
    }

    /// The object is stored: mark the content and take it off the queue, in one statement.
    pub async fn mark_uploaded(&self, sha256: &str) -> Result<(), CatalogError> {
        self.client
            .execute(
                "WITH done AS (DELETE FROM upload_queue WHERE sha256 = $1)
                 UPDATE file_contents SET uploaded_at = coalesce(uploaded_at, now()) WHERE sha256 = $1",
                &[&sha256],
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

    /// Give back leases this process still holds (on shutdown), without counting the attempt.
    pub async fn release_leases(&self) -> Result<u64, CatalogError> {
        Ok(self
            .client
            .execute(
                "UPDATE upload_queue SET lease_owner = NULL, lease_expires_at = NULL, lease_lock = NULL,
                        attempts = greatest(attempts - 1, 0)
                  WHERE lease_owner = $1",
                &[&self.worker],
            )
            .await?)
    }
}

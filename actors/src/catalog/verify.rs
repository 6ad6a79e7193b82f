//! What `verify` reads and writes: the uploaded contents, page by page, and the re-queueing
//! of contents whose object is missing or wrong.

use super::{Catalog, CatalogError};

/// A content the catalog says is stored.
#[derive(Clone, Debug)]
pub struct StoredContent {
    pub sha256: String,
    pub size: u64,
    pub storage_key: String,
}

/// Contents per page: verify never holds the whole table.
pub const VERIFY_PAGE: i64 = 10_000;

impl Catalog {
    /// Uploaded contents after `after` (by sha256), at most `VERIFY_PAGE`.
    pub async fn uploaded_contents(&self, after: &str) -> Result<Vec<StoredContent>, CatalogError> {
        let rows = self
            .client
            .query(
                "SELECT sha256, size, storage_key FROM file_contents
                  WHERE uploaded_at IS NOT NULL AND sha256 > $1 ORDER BY sha256 LIMIT $2",
                &[&after, &VERIFY_PAGE],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| StoredContent {
                sha256: row.get(0),
                size: row.get::<_, i64>(1) as u64,
                storage_key: row.get(2),
            })
            .collect())
    }

    /// Mark contents as not stored and queue them for upload again, in one transaction.
    pub async fn requeue(&mut self, sha256s: &[String], reason: &str) -> Result<u64, CatalogError> {
        let transaction = self.client.inner_mut().transaction().await?;
        transaction
            .execute(
                "UPDATE file_contents SET uploaded_at = NULL WHERE sha256 = ANY($1)",
                &[&sha256s],
            )
            .await?;
        let queued = transaction
            .execute(
                "INSERT INTO upload_queue (sha256, last_error)
                 SELECT unnest($1::text[]), $2
                 ON CONFLICT (sha256) DO UPDATE
                    SET state = 'pending', attempts = 0, next_attempt_at = now(), last_error = EXCLUDED.last_error,
                        lease_owner = NULL, lease_expires_at = NULL, lease_lock = NULL",
                &[&sha256s, &reason],
            )
            .await?;
        transaction.commit().await?;
        Ok(queued)
    }
}

//! What retention (`gc`) reads and writes. The policy is evaluated by
//! `fms_gc_collectable` (migration 0008); this module marks, unmarks and sweeps, with the
//! locking rules that make a sweep safe beside registrations of every agent (see the
//! migration's header).

use super::{Catalog, CatalogError};
use std::time::Duration;

/// How long what is no longer live is kept. `None`: for ever.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// The content of a deleted file.
    pub deleted_for: Option<Duration>,
    /// A version replaced by a newer one.
    pub replaced_for: Option<Duration>,
    /// The newest versions of each existing file kept whatever their age (the current one
    /// counts).
    pub keep_versions: u32,
    /// Between the mark and the deletion of an object.
    pub grace: Duration,
}

impl RetentionPolicy {
    /// Nothing can ever be collected: both durations are "for ever".
    pub fn keeps_everything(&self) -> bool {
        self.deleted_for.is_none() && self.replaced_for.is_none()
    }
}

/// A content the policy lets go.
#[derive(Clone, Debug)]
pub struct Collectable {
    pub sha256: String,
    pub size: u64,
    pub storage_key: String,
}

/// Per root, the contents that would go (a content once held in two roots counts in both).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RootShare {
    pub root: String,
    pub objects: u64,
    pub bytes: u64,
}

fn interval(duration: Option<Duration>) -> Option<String> {
    duration.map(|d| format!("{} milliseconds", d.as_millis()))
}

/// The policy's answer, with the roots each content was ever registered under (one pass
/// over the events, hash-joined: a lookup per content would read `files` once per content).
const COLLECTABLE: &str = "
    WITH c AS (SELECT sha256, size, storage_key
                 FROM fms_gc_collectable($1::text::interval, $2::text::interval, $3)),
         r AS (SELECT DISTINCT e.new_sha256 AS sha256, e.root FROM file_events e WHERE e.new_sha256 IS NOT NULL)
    SELECT c.sha256, c.size, c.storage_key, coalesce(array_agg(r.root ORDER BY r.root) FILTER (WHERE r.root IS NOT NULL), '{}')
      FROM c LEFT JOIN r ON r.sha256 = c.sha256
     GROUP BY c.sha256, c.size, c.storage_key
     ORDER BY c.sha256";

/// The policy query reads every event; on a large catalog it may take much longer than one
/// ordinary statement, so it gets this many statement timeouts.
const POLICY_QUERY_TIMEOUTS: u32 = 10;

impl Catalog {
    /// The stored contents the policy lets go now, and per root what that comes to.
    pub async fn gc_collectable(
        &self,
        policy: &RetentionPolicy,
    ) -> Result<(Vec<Collectable>, Vec<RootShare>), CatalogError> {
        let (deleted, replaced) = (interval(policy.deleted_for), interval(policy.replaced_for));
        let keep = policy.keep_versions as i32;
        let rows = self
            .client
            .query_within(
                self.client.timeout() * POLICY_QUERY_TIMEOUTS,
                COLLECTABLE,
                &[&deleted, &replaced, &keep],
            )
            .await?;
        let mut shares: std::collections::BTreeMap<String, RootShare> = Default::default();
        let mut contents = Vec::with_capacity(rows.len());
        for row in &rows {
            let content = collectable(row);
            for root in row.get::<_, Vec<String>>(3) {
                let share = shares.entry(root.clone()).or_insert_with(|| RootShare {
                    root,
                    ..Default::default()
                });
                share.objects += 1;
                share.bytes += content.size;
            }
            contents.push(content);
        }
        Ok((contents, shares.into_values().collect()))
    }

    /// The mark phase: contents collectable now get a mark (if they have none), marked
    /// contents no longer collectable lose it. Returns (newly marked, unmarked).
    pub async fn gc_mark(&self, collectable: &[Collectable]) -> Result<(u64, u64), CatalogError> {
        let shas: Vec<&str> = collectable.iter().map(|c| c.sha256.as_str()).collect();
        let unmarked = self
            .client
            .execute(
                "UPDATE file_contents SET gc_marked_at = NULL
                  WHERE sha256 IN (SELECT sha256 FROM file_contents
                                    WHERE gc_marked_at IS NOT NULL AND purging_since IS NULL AND purged_at IS NULL
                                      AND sha256 <> ALL ($1)
                                    ORDER BY sha256 FOR NO KEY UPDATE)",
                &[&shas],
            )
            .await?;
        let marked = self
            .client
            .execute(
                "UPDATE file_contents SET gc_marked_at = now()
                  WHERE sha256 IN (SELECT sha256 FROM file_contents
                                    WHERE sha256 = ANY ($1) AND gc_marked_at IS NULL AND purged_at IS NULL
                                    ORDER BY sha256 FOR NO KEY UPDATE)",
                &[&shas],
            )
            .await?;
        Ok((marked, unmarked))
    }

    /// Marked contents whose grace period is over (and those a sweep began and did not
    /// finish), at most `limit`, by SHA-256 after `after`.
    pub async fn gc_due(&self, grace: Duration, after: &str, limit: i64) -> Result<Vec<Collectable>, CatalogError> {
        let grace = format!("{} milliseconds", grace.as_millis());
        let rows = self
            .client
            .query(
                "SELECT sha256, size, storage_key FROM file_contents
                  WHERE gc_marked_at IS NOT NULL AND gc_marked_at <= now() - $1::text::interval
                    AND purged_at IS NULL AND sha256 > $2
                  ORDER BY sha256 LIMIT $3",
                &[&grace, &after, &limit],
            )
            .await?;
        Ok(rows.iter().map(collectable).collect())
    }

    /// First step of a sweep: record the intent to delete these objects (committed before
    /// any DELETE is sent), for those still marked and still held by no live file. From here
    /// on they no longer count as stored (`verify` leaves them alone; a registration queues
    /// them, and the uploader's HEAD finds out). Returns the contents claimed.
    pub async fn gc_claim(&self, due: &[Collectable]) -> Result<Vec<String>, CatalogError> {
        let shas: Vec<&str> = due.iter().map(|c| c.sha256.as_str()).collect();
        let rows = self
            .client
            .query(
                "UPDATE file_contents c SET purging_since = coalesce(c.purging_since, now()), uploaded_at = NULL
                  WHERE c.sha256 IN (SELECT sha256 FROM file_contents WHERE sha256 = ANY ($1)
                                      ORDER BY sha256 FOR NO KEY UPDATE)
                    AND c.gc_marked_at IS NOT NULL AND c.purged_at IS NULL
                    AND NOT EXISTS (SELECT 1 FROM files f WHERE f.sha256 = c.sha256 AND f.deleted_at IS NULL)
                 RETURNING c.sha256",
                &[&shas],
            )
            .await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    /// Second step: under FOR UPDATE on the claimed rows (a registration of any of them waits,
    /// or is waited for), keep those that a registration took back or that a live file holds
    /// now, let `delete` remove the objects of the others, and record them purged. Returns
    /// (purged, kept).
    pub async fn gc_sweep<'a>(
        &mut self,
        claimed: &[String],
        delete: impl FnOnce(Vec<String>) -> futures::future::BoxFuture<'a, Vec<String>> + Send,
    ) -> Result<(Vec<String>, Vec<String>), CatalogError> {
        // Every statement within the statement timeout (and cancelled on the server past
        // it); the deletions in between are bounded by the store's own timeout.
        let (timeout, canceller) = (self.client.timeout(), self.client.canceller());
        use super::bounded::bounded;
        let transaction =
            canceller.on_timeout(bounded(timeout, async { Ok(self.client.inner_mut().transaction().await?) }).await)?;
        let lock = "SELECT 1 FROM file_contents WHERE sha256 = ANY ($1) ORDER BY sha256 FOR UPDATE";
        canceller.on_timeout(bounded(timeout, async { Ok(transaction.execute(lock, &[&claimed]).await?) }).await)?;
        // A new statement: it sees every registration that held one of these rows.
        let unreferenced = "SELECT c.sha256 FROM file_contents c
              WHERE c.sha256 = ANY ($1) AND c.purging_since IS NOT NULL AND c.purged_at IS NULL
                AND NOT EXISTS (SELECT 1 FROM files f WHERE f.sha256 = c.sha256 AND f.deleted_at IS NULL)";
        let rows = canceller.on_timeout(
            bounded(timeout, async {
                Ok(transaction.query(unreferenced, &[&claimed]).await?)
            })
            .await,
        )?;
        let going: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
        let kept: Vec<String> = claimed.iter().filter(|sha| !going.contains(sha)).cloned().collect();
        // Only what the store confirmed deleted is recorded; the rest keeps its intent and is
        // swept again by the next run (or taken back by a registration).
        let deleted = delete(going).await;
        // Held by a live file again but still carrying an intent (an earlier sweep may have
        // deleted the object before it could record it): treated as a registration would.
        let take_back = "WITH taken AS (
                  UPDATE file_contents
                     SET gc_marked_at = NULL, purging_since = NULL, uploaded_at = NULL
                   WHERE sha256 = ANY ($1) AND purging_since IS NOT NULL
                  RETURNING sha256)
             INSERT INTO upload_queue (sha256) SELECT sha256 FROM taken ORDER BY sha256
             ON CONFLICT (sha256) DO NOTHING";
        canceller.on_timeout(bounded(timeout, async { Ok(transaction.execute(take_back, &[&kept]).await?) }).await)?;
        let purged = "UPDATE file_contents
                SET purged_at = now(), uploaded_at = NULL, purging_since = NULL, gc_marked_at = NULL
              WHERE sha256 = ANY ($1)";
        canceller.on_timeout(bounded(timeout, async { Ok(transaction.execute(purged, &[&deleted]).await?) }).await)?;
        canceller.on_timeout(bounded(timeout, async { Ok(transaction.commit().await?) }).await)?;
        Ok((deleted, kept))
    }
}

/// A (sha256, size, storage_key) row.
fn collectable(row: &tokio_postgres::Row) -> Collectable {
    Collectable {
        sha256: row.get(0),
        size: row.get::<_, i64>(1) as u64,
        storage_key: row.get(2),
    }
}

//! What the operator's page reads and the one thing it changes (a retry): each query bounded
//! so that it stays quick in a catalog of millions of files.

use super::{Catalog, CatalogError};
use serde::Serialize;

/// Live files and bytes of one root (`root_counts`, migration 11).
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct RootTotals {
    pub root: String,
    pub files: i64,
    pub bytes: i64,
}

/// One line of the audit trail.
#[derive(Clone, Debug, Serialize)]
pub struct ActivityEvent {
    pub id: i64,
    pub at: String,
    pub kind: String,
    pub root: String,
    pub agent: String,
    pub old_path: Option<String>,
    pub new_path: Option<String>,
    pub sha256: Option<String>,
}

/// Which events the activity list shows; every part optional.
#[derive(Clone, Debug, Default)]
pub struct ActivityFilter {
    pub root: Option<String>,
    pub kind: Option<String>,
    /// Part of the path (old or new), any case.
    pub path: Option<String>,
    pub limit: i64,
}

/// The activity list looks through at most this many of the newest events, so that a rare
/// filter never reads a trail of tens of millions of rows.
pub const ACTIVITY_WINDOW: i64 = 200_000;

/// Delta rows in `root_counts` above which a reader folds them into one per root.
const FOLD_ROOTS_ABOVE: i64 = 2_000;

/// A content as the page downloads it.
#[derive(Clone, Debug)]
pub struct ContentLocation {
    pub storage_key: String,
    pub size: i64,
    pub stored: bool,
    pub purged: bool,
}

impl Catalog {
    /// Live files and bytes of every root the catalog knows.
    pub async fn root_totals(&self) -> Result<Vec<RootTotals>, CatalogError> {
        let rows = self
            .client
            .query(
                "SELECT root, sum(live_files)::int8, sum(live_bytes)::int8, count(*)
                   FROM root_counts GROUP BY root ORDER BY root",
                &[],
            )
            .await?;
        let delta_rows: i64 = rows.iter().map(|row| row.get::<_, i64>(3)).sum();
        if delta_rows > FOLD_ROOTS_ABOVE {
            // Best effort, as for catalog_counts.
            let _ = self.client.execute("SELECT fms_fold_root_counts()", &[]).await;
        }
        Ok(rows
            .iter()
            .map(|row| RootTotals {
                root: row.get(0),
                files: row.get(1),
                bytes: row.get(2),
            })
            .filter(|totals| totals.files != 0 || totals.bytes != 0)
            .collect())
    }

    /// Pending contents that a live file under `root` holds, counted up to `cap` (a queue of
    /// a million rows is shown as "at least cap").
    pub async fn pending_in_root(&self, root: &str, cap: i64) -> Result<i64, CatalogError> {
        let row = self
            .client
            .query_one(
                "SELECT count(*) FROM (
                    SELECT 1 FROM upload_queue q
                     WHERE q.state = 'pending'
                       AND EXISTS (SELECT 1 FROM files f
                                    WHERE f.sha256 = q.sha256 AND f.deleted_at IS NULL AND f.root = $1)
                     LIMIT $2) p",
                &[&root, &cap],
            )
            .await?;
        Ok(row.get(0))
    }

    /// The newest events that pass `filter`, newest first, from the last
    /// [`ACTIVITY_WINDOW`] events.
    pub async fn activity(&self, filter: &ActivityFilter) -> Result<Vec<ActivityEvent>, CatalogError> {
        let rows = self
            .client
            .query(
                "SELECT e.id, to_char(e.at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), e.kind, e.root, e.agent,
                        e.old_path, e.new_path, coalesce(e.new_sha256, e.old_sha256)
                   FROM file_events e
                  WHERE e.id > (SELECT coalesce(max(id), 0) FROM file_events) - $5
                    AND ($1::text IS NULL OR e.root = $1)
                    AND ($2::text IS NULL OR e.kind = $2)
                    AND ($3::text IS NULL OR strpos(lower(coalesce(e.new_path, '')), lower($3)) > 0
                                          OR strpos(lower(coalesce(e.old_path, '')), lower($3)) > 0)
                  ORDER BY e.id DESC
                  LIMIT $4",
                &[
                    &filter.root,
                    &filter.kind,
                    &filter.path,
                    &filter.limit,
                    &ACTIVITY_WINDOW,
                ],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| ActivityEvent {
                id: row.get(0),
                at: row.get(1),
                kind: row.get(2),
                root: row.get(3),
                agent: row.get(4),
                old_path: row.get(5),
                new_path: row.get(6),
                sha256: row.get(7),
            })
            .collect())
    }

    /// Put a failed upload back into the queue, due now, with its attempts counted from zero
    /// (the operator has fixed what made it fail). False when it was not failed (any more).
    pub async fn retry_failed(&self, sha256: &str) -> Result<bool, CatalogError> {
        let changed = self
            .client
            .execute(
                "UPDATE upload_queue SET state = 'pending', attempts = 0, next_attempt_at = now()
                  WHERE sha256 = $1 AND state = 'failed'",
                &[&sha256],
            )
            .await?;
        Ok(changed == 1)
    }

    /// Every failed upload back into the queue; how many.
    pub async fn retry_all_failed(&self) -> Result<u64, CatalogError> {
        self.client
            .execute(
                "UPDATE upload_queue SET state = 'pending', attempts = 0, next_attempt_at = now()
                  WHERE state = 'failed'",
                &[],
            )
            .await
    }

    /// Where a content is kept, for a download; None when the catalog has no such content.
    pub async fn content_location(&self, sha256: &str) -> Result<Option<ContentLocation>, CatalogError> {
        let row = self
            .client
            .query_opt(
                "SELECT storage_key, size, uploaded_at IS NOT NULL, purged_at IS NOT NULL
                   FROM file_contents WHERE sha256 = $1",
                &[&sha256],
            )
            .await?;
        Ok(row.map(|row| ContentLocation {
            storage_key: row.get(0),
            size: row.get(1),
            stored: row.get(2),
            purged: row.get(3),
        }))
    }

    /// The roots, projects and buildings the catalog knows, for the search form's choices.
    pub async fn search_choices(&self) -> Result<SearchChoices, CatalogError> {
        let projects = self
            .client
            .query("SELECT code FROM projects ORDER BY code LIMIT 500", &[])
            .await?;
        let roots = self
            .client
            .query("SELECT DISTINCT root FROM root_counts ORDER BY root", &[])
            .await?;
        let cost_groups = self
            .client
            .query("SELECT code, name FROM cost_groups ORDER BY code", &[])
            .await?;
        Ok(SearchChoices {
            roots: roots.iter().map(|row| row.get(0)).collect(),
            projects: projects.iter().map(|row| row.get(0)).collect(),
            cost_groups: cost_groups.iter().map(|row| (row.get(0), row.get(1))).collect(),
        })
    }
}

#[derive(Clone, Debug, Default)]
pub struct SearchChoices {
    pub roots: Vec<String>,
    pub projects: Vec<String>,
    pub cost_groups: Vec<(i32, String)>,
}

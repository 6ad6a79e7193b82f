//! What `restore` and `history` read: a root's events up to a moment, the keys of contents,
//! and the checks of a requested moment.

use super::{Catalog, CatalogError};
use crate::pathenc::PathEncoding;
use crate::restore::timeline::{Event, EventKind, Timeline};

/// One version of a file, for `history`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct HistoryEntry {
    pub file_id: i64,
    pub at: String,
    pub kind: String,
    pub agent: String,
    pub old_path: Option<String>,
    pub new_path: Option<String>,
    pub sha256: Option<String>,
    pub size: Option<i64>,
    /// The content is in the store.
    pub stored: bool,
}

/// Where a moment stands in a root's life.
#[derive(Clone, Debug)]
pub struct MomentCheck {
    /// The moment as PostgreSQL reads it, in UTC.
    pub at: String,
    pub in_future: bool,
    /// The root's first scan began, if it ever was scanned.
    pub first_scan: Option<String>,
    pub before_first_scan: bool,
}

impl Catalog {
    /// Is `at` (RFC 3339) in the future, or before `root`'s first scan?
    pub async fn check_moment(&self, root: &str, at: &str) -> Result<MomentCheck, CatalogError> {
        let row = self
            .client
            .query_one(
                "SELECT to_char($2::text::timestamptz AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
                        $2::text::timestamptz > now() + interval '1 second',
                        to_char(first AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                        coalesce($2::text::timestamptz < first, true)
                   FROM (SELECT least((SELECT min(started_at) FROM scans WHERE root = $1),
                                      (SELECT min(at) FROM file_events WHERE root = $1)) AS first) f",
                &[&root, &at],
            )
            .await?;
        Ok(MomentCheck {
            at: row.get(0),
            in_future: row.get(1),
            first_scan: row.get(2),
            before_first_scan: row.get(3),
        })
    }

    /// Replay every event of `root` up to and including `at` (RFC 3339) into `timeline`,
    /// file by file in order, as the rows arrive. Events written before migration 7 lack
    /// encoding, size and mtime: the file's row and the content give them (the mtime only
    /// where the row still holds that content).
    pub async fn replay_until(&self, root: &str, at: &str, timeline: &mut Timeline) -> Result<(), CatalogError> {
        self.client
            .for_each_row(
                "SELECT e.file_id, e.kind, e.new_path, e.new_sha256,
                        coalesce(e.path_encoding, f.path_encoding),
                        coalesce(e.size, c.size, 0),
                        coalesce(e.mtime_ns, CASE WHEN c.sha256 = f.sha256 THEN f.mtime_ns END)
                   FROM file_events e
                   JOIN files f ON f.id = e.file_id
                   LEFT JOIN file_contents c ON c.sha256 = e.new_sha256
                  WHERE e.root = $1 AND e.at <= $2::text::timestamptz
                  ORDER BY e.file_id, e.id",
                &[&root, &at],
                |row| {
                    let Some(kind) = EventKind::parse(row.get(1)) else {
                        return;
                    };
                    timeline.push(Event {
                        file_id: row.get(0),
                        kind,
                        new_path: row.get(2),
                        new_sha256: row.get(3),
                        encoding: PathEncoding::parse(row.get(4)).unwrap_or(PathEncoding::Utf8),
                        size: row.get(5),
                        mtime_ns: row.get(6),
                    });
                },
            )
            .await
    }

    /// (storage key, uploaded) of each of these contents.
    pub async fn content_keys(&self, sha256s: &[String]) -> Result<Vec<(String, String, bool)>, CatalogError> {
        let rows = self
            .client
            .query(
                "SELECT sha256, storage_key, uploaded_at IS NOT NULL FROM file_contents WHERE sha256 = ANY ($1)",
                &[&sha256s],
            )
            .await?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1), row.get(2))).collect())
    }

    /// Every event of the rows of `root` that ever had `path` (stored form), oldest first.
    pub async fn history(&self, root: &str, path: &str) -> Result<Vec<HistoryEntry>, CatalogError> {
        let rows = self
            .client
            .query(
                "SELECT e.file_id, to_char(e.at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
                        e.kind, e.agent, e.old_path, e.new_path,
                        coalesce(e.new_sha256, e.old_sha256), coalesce(e.size, c.size),
                        c.uploaded_at IS NOT NULL
                   FROM file_events e
                   LEFT JOIN file_contents c ON c.sha256 = coalesce(e.new_sha256, e.old_sha256)
                  WHERE e.root = $1
                    AND e.file_id IN (SELECT file_id FROM file_events WHERE root = $1 AND new_path = $2)
                  ORDER BY e.at, e.id",
                &[&root, &path],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| HistoryEntry {
                file_id: row.get(0),
                at: row.get(1),
                kind: row.get(2),
                agent: row.get(3),
                old_path: row.get(4),
                new_path: row.get(5),
                sha256: row.get(6),
                size: row.get(7),
                stored: row.get(8),
            })
            .collect())
    }
}

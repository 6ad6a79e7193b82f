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
    /// When retention deleted the content from the store, if it did.
    pub purged_at: Option<String>,
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
                        coalesce(e.mtime_ns, CASE WHEN c.sha256 = f.sha256 THEN f.mtime_ns END),
                        c.storage_key, c.uploaded_at IS NOT NULL,
                        to_char(c.purged_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
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
                        storage_key: row.get(7),
                        stored: row.get::<_, Option<bool>>(8).unwrap_or(false),
                        purged_at: row.get(9),
                    });
                },
            )
            .await
    }

    /// Every event of the rows of `root` that ever had `path` (stored form), oldest first.
    pub async fn history(&self, root: &str, path: &str) -> Result<Vec<HistoryEntry>, CatalogError> {
        let rows = self
            .client
            .query(
                "SELECT e.file_id, to_char(e.at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
                        e.kind, e.agent, e.old_path, e.new_path,
                        coalesce(e.new_sha256, e.old_sha256), coalesce(e.size, c.size),
                        c.uploaded_at IS NOT NULL,
                        to_char(c.purged_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
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
                purged_at: row.get(9),
            })
            .collect())
    }
}

/// What `find` looks for; every part optional.
#[derive(Clone, Debug, Default)]
pub struct FindQuery {
    pub root: Option<String>,
    /// A POSIX regular expression the file name (the last part of its path) must match.
    pub name_regex: Option<String>,
    /// Match `name_regex` in any case (the page's search).
    pub name_ignore_case: bool,
    /// Any `limit` matching files (sorted by root and path), not the first `limit` by path:
    /// quick even when a broad pattern matches a tenth of a catalog of millions, where the
    /// first by path would need every match sorted.
    pub any_matches: bool,
    pub sha256: Option<String>,
    pub project: Option<String>,
    pub building: Option<String>,
    /// A DIN 276 cost group (300, 340, ...).
    pub cost_group: Option<i32>,
    /// Deleted files instead of live ones.
    pub deleted: bool,
    /// RFC 3339: changed (registered, modified, moved or deleted) at or after.
    pub changed_since: Option<String>,
    pub limit: i64,
}

/// One file found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Found {
    pub root: String,
    pub path: String,
    pub path_encoding: String,
    pub size: i64,
    pub mtime: String,
    pub sha256: String,
    pub stored: bool,
    pub project: Option<String>,
    pub building: Option<String>,
    pub cost_group: Option<i32>,
    pub changed_at: String,
    pub deleted_at: Option<String>,
}

impl Catalog {
    /// The files that match `query`, by root and path, at most `query.limit`.
    pub async fn find(&self, query: &FindQuery) -> Result<Vec<Found>, CatalogError> {
        // The file name's expression is the one the trigram index (migration 11) is built on.
        let matches = if query.name_ignore_case { "~*" } else { "~" };
        let order = if query.any_matches {
            ""
        } else {
            "ORDER BY f.root, f.path"
        };
        let sql = format!(
            "SELECT f.root, f.path, f.path_encoding, f.size,
                        to_char(f.mtime AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), f.sha256,
                        c.uploaded_at IS NOT NULL, p.code, b.name, l.cost_group,
                        to_char(f.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                        to_char(f.deleted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
                   FROM files f
                   JOIN file_contents c ON c.sha256 = f.sha256
                   LEFT JOIN file_links l ON l.file_id = f.id
                   LEFT JOIN projects p ON p.id = l.project_id
                   LEFT JOIN buildings b ON b.id = l.building_id
                  WHERE ($1::text IS NULL OR f.root = $1)
                    AND ($2::text IS NULL OR substring(f.path from '[^/]*$') {matches} $2)
                    AND ($3::text IS NULL OR f.sha256 = $3)
                    AND ($4::text IS NULL OR p.code = $4)
                    AND (f.deleted_at IS NOT NULL) = $5
                    AND ($6::text IS NULL OR f.updated_at >= $6::text::timestamptz)
                    AND ($8::text IS NULL OR b.name = $8)
                    AND ($9::int4 IS NULL OR l.cost_group = $9)
                  {order} LIMIT $7"
        );
        let sql = if query.any_matches {
            format!("SELECT * FROM ({sql}) found ORDER BY 1, 2")
        } else {
            sql
        };
        let rows = self
            .client
            .query(
                &sql,
                &[
                    &query.root,
                    &query.name_regex,
                    &query.sha256,
                    &query.project,
                    &query.deleted,
                    &query.changed_since,
                    &query.limit,
                    &query.building,
                    &query.cost_group,
                ],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| Found {
                root: row.get(0),
                path: row.get(1),
                path_encoding: row.get(2),
                size: row.get(3),
                mtime: row.get(4),
                sha256: row.get(5),
                stored: row.get(6),
                project: row.get(7),
                building: row.get(8),
                cost_group: row.get(9),
                changed_at: row.get(10),
                deleted_at: row.get(11),
            })
            .collect())
    }
}

/// A shell glob for one file name (`*`, `?`, `[...]`) as an anchored POSIX regular
/// expression; None when the glob is malformed (an unclosed `[`).
pub fn glob_to_regex(glob: &str) -> Option<String> {
    let mut regex = String::from("^");
    let mut chars = glob.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => regex.push_str("[^/]*"),
            '?' => regex.push_str("[^/]"),
            '[' => {
                regex.push('[');
                if chars.peek() == Some(&'!') {
                    chars.next();
                    regex.push('^');
                }
                let mut closed = false;
                for inner in chars.by_ref() {
                    if inner == ']' {
                        closed = true;
                        break;
                    }
                    if inner == '\\' {
                        regex.push('\\');
                    }
                    regex.push(inner);
                }
                if !closed {
                    return None;
                }
                regex.push(']');
            }
            c if "\\.^$+(){}|".contains(c) => {
                regex.push('\\');
                regex.push(c);
            }
            c => regex.push(c),
        }
    }
    regex.push('$');
    Some(regex)
}

#[cfg(test)]
mod tests {
    use super::glob_to_regex;

    #[test]
    fn globs_become_anchored_regular_expressions() {
        assert_eq!(glob_to_regex("*.pdf").as_deref(), Some("^[^/]*\\.pdf$"));
        assert_eq!(glob_to_regex("Plan_??.dwg").as_deref(), Some("^Plan_[^/][^/]\\.dwg$"));
        assert_eq!(glob_to_regex("[!a]b(1)").as_deref(), Some("^[^a]b\\(1\\)$"));
        assert_eq!(glob_to_regex("a[b").as_deref(), None);
    }
}

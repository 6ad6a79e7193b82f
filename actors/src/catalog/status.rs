//! Scan records and the numbers behind `status`.

use super::{Catalog, CatalogError};
use serde::Serialize;

/// Counters of one root's scan, stored in `scans`.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ScanRecord {
    pub files_seen: u64,
    pub files_new: u64,
    pub files_changed: u64,
    pub files_moved: u64,
    pub files_deleted: u64,
    pub bytes_hashed: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct QueueCounts {
    /// Waiting for an upload (including retries not yet due and rows leased right now).
    pub pending: i64,
    pub leased: i64,
    /// Gave up after the configured number of attempts; `last_error` says why.
    pub failed: i64,
}

/// How uploads to one store are verified, as last decided (`store_checks`).
#[derive(Clone, Debug, Serialize)]
pub struct StoreCheck {
    pub store: String,
    pub mode: String,
    pub checks: String,
    pub reason: String,
    pub agent: String,
    pub decided_at: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct FailedUpload {
    pub sha256: String,
    pub attempts: i32,
    pub last_error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LastScan {
    pub root: String,
    pub agent: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub outcome: Option<String>,
    pub message: Option<String>,
    pub files_seen: i64,
}

#[derive(Clone, Debug, Serialize)]
pub struct StatusReport {
    pub files: i64,
    pub deleted_files: i64,
    pub contents: i64,
    pub content_bytes: i64,
    pub uploaded_contents: i64,
    pub uploaded_bytes: i64,
    pub queue: QueueCounts,
    pub failed_uploads: Vec<FailedUpload>,
    pub last_scans: Vec<LastScan>,
    /// Daemons that reported in the last day, newest heartbeat first.
    pub processes: Vec<ProcessStatus>,
    /// How uploads to each store are verified (newest first).
    pub store_checks: Vec<StoreCheck>,
}

/// The running totals kept by `catalog_counts` (migration 6).
struct Totals {
    live_files: i64,
    deleted_files: i64,
    contents: i64,
    content_bytes: i64,
    uploaded_contents: i64,
    uploaded_bytes: i64,
    pending: i64,
    failed: i64,
}

/// Delta rows in `catalog_counts` above which a reader folds them into one.
const FOLD_ABOVE: i64 = 500;

/// A daemon whose heartbeat is older than this is shown as not responding (it writes one
/// every few seconds).
pub const HEARTBEAT_STALE_SECONDS: f64 = 30.0;

#[derive(Clone, Debug, Serialize)]
pub struct ProcessStatus {
    pub agent: String,
    pub role: String,
    pub pid: i32,
    pub started_at: String,
    pub heartbeat_at: String,
    /// running | not responding | stopped
    pub state: String,
    /// As the daemon reported them: [{actor, state, restarts, reason}].
    pub actors: serde_json::Value,
}

impl Catalog {
    pub async fn start_scan(&self, root: &str, device: Option<u64>) -> Result<i64, CatalogError> {
        let device = device.map(|d| d as i64);
        let row = self
            .client
            .query_one(
                "INSERT INTO scans (agent, root, device) VALUES ($1, $2, $3) RETURNING id",
                &[&self.agent, &root, &device],
            )
            .await?;
        Ok(row.get(0))
    }

    pub async fn finish_scan(
        &self,
        id: i64,
        outcome: &str,
        message: Option<&str>,
        record: &ScanRecord,
    ) -> Result<(), CatalogError> {
        let values = [
            record.files_seen as i64,
            record.files_new as i64,
            record.files_changed as i64,
            record.files_moved as i64,
            record.files_deleted as i64,
            record.bytes_hashed as i64,
        ];
        self.client
            .execute(
                "UPDATE scans SET finished_at = now(), outcome = $2, message = $3,
                        files_seen = $4, files_new = $5, files_changed = $6, files_moved = $7,
                        files_deleted = $8, bytes_hashed = $9
                  WHERE id = $1",
                &[
                    &id, &outcome, &message, &values[0], &values[1], &values[2], &values[3], &values[4], &values[5],
                ],
            )
            .await?;
        Ok(())
    }

    /// The device the root was on at its last complete scan (None if it never had one).
    pub async fn last_complete_device(&self, root: &str) -> Result<Option<u64>, CatalogError> {
        let row = self
            .client
            .query_opt(
                "SELECT device FROM scans WHERE root = $1 AND outcome = 'complete' AND device IS NOT NULL
                  ORDER BY id DESC LIMIT 1",
                &[&root],
            )
            .await?;
        Ok(row.map(|row| row.get::<_, i64>(0) as u64))
    }

    /// The catalog's totals from `catalog_counts` (a sum over a few delta rows, however
    /// large the catalog), folding the rows into one when they have piled up.
    async fn totals(&self) -> Result<Totals, CatalogError> {
        let row = self
            .client
            .query_one(
                "SELECT coalesce(sum(live_files), 0)::int8, coalesce(sum(deleted_files), 0)::int8,
                        coalesce(sum(contents), 0)::int8, coalesce(sum(content_bytes), 0)::int8,
                        coalesce(sum(uploaded_contents), 0)::int8, coalesce(sum(uploaded_bytes), 0)::int8,
                        coalesce(sum(queue_pending), 0)::int8, coalesce(sum(queue_failed), 0)::int8,
                        count(*)
                   FROM catalog_counts",
                &[],
            )
            .await?;
        let delta_rows: i64 = row.get(8);
        if delta_rows > FOLD_ABOVE {
            // Best effort: a reader without the right to fold still gets its sums.
            let _ = self.client.execute("SELECT fms_fold_counts()", &[]).await;
        }
        Ok(Totals {
            live_files: row.get(0),
            deleted_files: row.get(1),
            contents: row.get(2),
            content_bytes: row.get(3),
            uploaded_contents: row.get(4),
            uploaded_bytes: row.get(5),
            pending: row.get(6),
            failed: row.get(7),
        })
    }

    pub async fn queue_counts(&self) -> Result<QueueCounts, CatalogError> {
        let totals = self.totals().await?;
        self.queue_counts_with(&totals).await
    }

    async fn queue_counts_with(&self, totals: &Totals) -> Result<QueueCounts, CatalogError> {
        // Leases held now: few rows, found through their partial index.
        let leased = self
            .client
            .query_one(
                "SELECT count(*) FROM upload_queue
                  WHERE lease_owner IS NOT NULL AND lease_expires_at > now() AND state = 'pending'",
                &[],
            )
            .await?;
        Ok(QueueCounts {
            pending: totals.pending,
            leased: leased.get(0),
            failed: totals.failed,
        })
    }

    /// Record how uploads to `store` are verified (when an uploader starts).
    pub async fn record_store_check(
        &self,
        store: &str,
        integrity: &crate::store::Integrity,
    ) -> Result<(), CatalogError> {
        self.client
            .execute(
                "INSERT INTO store_checks (store, mode, checks, reason, agent) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (store) DO UPDATE
                    SET mode = EXCLUDED.mode, checks = EXCLUDED.checks, reason = EXCLUDED.reason,
                        agent = EXCLUDED.agent, decided_at = now()",
                &[
                    &store,
                    &integrity.mode,
                    &integrity.checks(),
                    &integrity.reason,
                    &self.agent,
                ],
            )
            .await?;
        Ok(())
    }

    /// Record this process and its actors (every few seconds while the daemon runs).
    pub async fn heartbeat(&self, role: &str, actors: &serde_json::Value, stopped: bool) -> Result<(), CatalogError> {
        self.client
            .execute(
                "INSERT INTO agent_processes (worker, agent, role, pid, actors)
                 VALUES ($1, $2, $3, $4, $5::text::jsonb)
                 ON CONFLICT (worker) DO UPDATE
                    SET heartbeat_at = now(), actors = EXCLUDED.actors,
                        stopped_at = CASE WHEN $6 THEN now() END",
                &[
                    &self.worker,
                    &self.agent,
                    &role,
                    &(std::process::id() as i32),
                    &actors.to_string(),
                    &stopped,
                ],
            )
            .await?;
        Ok(())
    }

    pub async fn status(&self) -> Result<StatusReport, CatalogError> {
        let totals = self.totals().await?;
        let failed = self
            .client
            .query(
                "SELECT sha256, attempts, last_error FROM upload_queue WHERE state = 'failed'
                  ORDER BY next_attempt_at DESC LIMIT 20",
                &[],
            )
            .await?;
        let scans = self
            .client
            .query(
                "SELECT DISTINCT ON (root) root, agent, started_at::text, finished_at::text, outcome, message, files_seen
                   FROM scans ORDER BY root, id DESC",
                &[],
            )
            .await?;
        let processes = self
            .client
            .query(
                "SELECT agent, role, pid, started_at::text, heartbeat_at::text,
                        extract(epoch FROM now() - heartbeat_at)::float8, stopped_at IS NOT NULL, actors::text
                   FROM agent_processes
                  WHERE heartbeat_at > now() - interval '1 day'
                  ORDER BY heartbeat_at DESC LIMIT 50",
                &[],
            )
            .await?;
        let store_checks = self
            .client
            .query(
                "SELECT store, mode, checks, reason, agent, decided_at::text FROM store_checks
                  ORDER BY decided_at DESC LIMIT 10",
                &[],
            )
            .await?;
        Ok(StatusReport {
            store_checks: store_checks
                .iter()
                .map(|row| StoreCheck {
                    store: row.get(0),
                    mode: row.get(1),
                    checks: row.get(2),
                    reason: row.get(3),
                    agent: row.get(4),
                    decided_at: row.get(5),
                })
                .collect(),
            processes: processes
                .iter()
                .map(|row| {
                    let age: f64 = row.get(5);
                    let stopped: bool = row.get(6);
                    ProcessStatus {
                        agent: row.get(0),
                        role: row.get(1),
                        pid: row.get(2),
                        started_at: row.get(3),
                        heartbeat_at: row.get(4),
                        state: if stopped {
                            "stopped".into()
                        } else if age > HEARTBEAT_STALE_SECONDS {
                            "not responding".into()
                        } else {
                            "running".into()
                        },
                        actors: serde_json::from_str(&row.get::<_, String>(7)).unwrap_or_default(),
                    }
                })
                .collect(),
            files: totals.live_files,
            deleted_files: totals.deleted_files,
            contents: totals.contents,
            content_bytes: totals.content_bytes,
            uploaded_contents: totals.uploaded_contents,
            uploaded_bytes: totals.uploaded_bytes,
            queue: self.queue_counts_with(&totals).await?,
            failed_uploads: failed
                .iter()
                .map(|row| FailedUpload {
                    sha256: row.get(0),
                    attempts: row.get(1),
                    last_error: row.get(2),
                })
                .collect(),
            last_scans: scans
                .iter()
                .map(|row| LastScan {
                    root: row.get(0),
                    agent: row.get(1),
                    started_at: row.get(2),
                    finished_at: row.get(3),
                    outcome: row.get(4),
                    message: row.get(5),
                    files_seen: row.get(6),
                })
                .collect(),
        })
    }
}

//! Registration writes: new and changed files, moves and soft deletions, each batch in one
//! transaction together with its `file_events` rows and the upload queue entries of the
//! contents it introduces. Batches are sent as arrays (`unnest`), one statement per kind,
//! so a batch of a thousand files costs a handful of round trips.
//!
//! Every writer takes its row locks in one order, by key (contents and queue rows by
//! SHA-256, files by path or id), so two of our own transactions cannot deadlock: scans of
//! several roots, the watcher and upload marks on overlapping contents. A deadlock or
//! serialization failure from anywhere else is retried with the whole transaction.

use super::{Catalog, CatalogError, QueueItem, SourceFile};
use crate::pathenc::PathEncoding;
use crate::upload_handoff::LeaseRequest;
use std::collections::HashMap;

/// A file whose content is known (hashed now, or carried over from a moved row).
#[derive(Clone, Debug)]
pub struct Registration {
    pub path: String,
    pub encoding: PathEncoding,
    pub size: u64,
    pub mtime_ns: i128,
    pub inode: u64,
    pub device: u64,
    pub sha256: String,
    /// The content's key, used only if the content is new to the catalog.
    pub storage_key: String,
    /// What the bytes are, when the hasher read it: written if the content has none yet.
    pub metadata: Option<Box<crate::metadata::ContentMetadata>>,
    /// The digests of its parts, when the hasher took them (handed to the uploader with a
    /// new content; see [`crate::fs::PartDigests`]).
    pub parts: Option<std::sync::Arc<crate::fs::PartDigests>>,
}

/// An existing row that now lives at another path (same inode, or same content).
#[derive(Clone, Debug)]
pub struct Move {
    pub id: i64,
    pub path: String,
    pub encoding: PathEncoding,
    pub size: u64,
    pub mtime_ns: i128,
    pub inode: u64,
    pub device: u64,
}

/// A row whose file is gone.
#[derive(Clone, Copy, Debug)]
pub struct Deletion {
    pub id: i64,
}

/// What one batch changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    pub created: u64,
    pub modified: u64,
    pub restored: u64,
    pub moved: u64,
    pub deleted: u64,
    pub new_contents: u64,
    /// Contents whose metadata was written now.
    pub metadata_written: u64,
    /// Batches whose metadata PostgreSQL refused (the files were registered without it).
    pub metadata_refused: u64,
    /// Times the batch was run again after a deadlock or serialization failure.
    pub retries: u64,
}

/// New contents, and the upload queue entries of those not stored. Existing contents are
/// locked (KEY SHARE, by SHA-256) before anything is decided from them, so that retention's
/// sweep, which deletes an object only under FOR UPDATE on its row, either sees the file that
/// holds the content now or is waited for: the locking read returns the row as the sweep
/// left it, and a content it purged (or was purging) is queued for upload again.
const UPSERT_CONTENTS: &str = "
    WITH input AS (
        SELECT DISTINCT ON (sha256) sha256, size, storage_key
          FROM unnest($1::text[], $2::int8[], $3::text[]) AS t(sha256, size, storage_key)),
    locked AS (
        SELECT c.sha256, c.uploaded_at, c.gc_marked_at, c.purging_since FROM file_contents c
         WHERE c.sha256 IN (SELECT sha256 FROM input)
         ORDER BY c.sha256 FOR KEY SHARE),
    inserted AS (
        INSERT INTO file_contents (sha256, size, storage_key)
        SELECT sha256, size, storage_key FROM input ORDER BY sha256
        ON CONFLICT (sha256) DO NOTHING
        RETURNING sha256, size, storage_key),
    queued AS (
        -- A content this catalog sees for the first time cannot be stored yet (no HEAD needed
        -- at its first upload); one it knew may be. One already waiting (pending) is left
        -- alone: the conflict below would lock its row until this batch commits, and the
        -- uploader's mark of it, which locks it too, waited for the batch (up to 80 ms a
        -- time in a first sync, while no transfer started).
        -- With a taker ($4, see upload_handoff), up to $7 of the new contents are queued
        -- already leased to it, their first attempt counted; the uploader is handed them.
        INSERT INTO upload_queue (sha256, maybe_stored, lease_owner, lease_expires_at, lease_lock, attempts)
        SELECT sha256, known OR taken, CASE WHEN taken THEN $4::text END,
               CASE WHEN taken THEN now() + $6::text::interval END,
               CASE WHEN taken THEN $5::int8 END, CASE WHEN taken THEN 1 ELSE 0 END
          FROM (SELECT sha256, known,
                       $4::text IS NOT NULL AND NOT known AND row_number() OVER (ORDER BY sha256) <= $7::int8 AS taken
                  FROM (SELECT sha256, bool_or(known) AS known FROM (
                            SELECT l.sha256, true AS known FROM locked l
                             WHERE (l.uploaded_at IS NULL OR l.purging_since IS NOT NULL)
                               AND NOT EXISTS (SELECT 1 FROM upload_queue p
                                                WHERE p.sha256 = l.sha256 AND p.state = 'pending')
                            UNION ALL SELECT sha256, false FROM inserted) wanted
                         GROUP BY sha256) grouped) w
        ORDER BY sha256
        ON CONFLICT (sha256) DO UPDATE
           SET state = 'pending', attempts = 0, next_attempt_at = now(), last_error = NULL
         WHERE upload_queue.state = 'failed'
        RETURNING sha256, $4::text IS NOT NULL AND lease_owner IS NOT DISTINCT FROM $4::text AS taken),
    taken AS MATERIALIZED (
        SELECT i.sha256, i.size, i.storage_key FROM queued q JOIN inserted i USING (sha256) WHERE q.taken)
    SELECT (SELECT count(*) FROM inserted), (SELECT count(*) FROM queued),
           (SELECT coalesce(array_agg(sha256), '{}') FROM locked
             WHERE gc_marked_at IS NOT NULL OR purging_since IS NOT NULL),
           (SELECT coalesce(array_agg(sha256 ORDER BY sha256), '{}') FROM taken),
           (SELECT coalesce(array_agg(size ORDER BY sha256), '{}') FROM taken),
           (SELECT coalesce(array_agg(storage_key ORDER BY sha256), '{}') FROM taken)";

/// Contents registered again while retention had marked them (or was deleting their
/// object): unmarked, and a content whose object may be gone is no longer counted as stored
/// (its queue row, written above, lets the uploader find out: HEAD, then PUT if need be).
const UNMARK_CONTENTS: &str = "
    UPDATE file_contents
       SET gc_marked_at = NULL, purging_since = NULL,
           uploaded_at = CASE WHEN purging_since IS NOT NULL THEN NULL ELSE uploaded_at END
     WHERE sha256 IN (SELECT sha256 FROM file_contents WHERE sha256 = ANY($1)
                       ORDER BY sha256 FOR NO KEY UPDATE)";

const UPSERT_FILES: &str = "
    WITH input AS (
        SELECT * FROM unnest($2::text[], $3::text[], $4::int8[], $5::int8[], $6::int8[], $7::int8[], $8::text[])
            AS t(path, path_encoding, size, mtime_ns, inode, device, sha256)),
    -- One index lookup per input path, whatever the planner believes of the root: a join
    -- planned from the statistics of a large catalog, in which a new root has none yet, read
    -- the root's every row for each batch (LIMIT keeps the lookup from being made a join).
    old AS (
        SELECT f.id, f.path, f.sha256, f.deleted_at
          FROM input i
          CROSS JOIN LATERAL (
                SELECT f.id, f.path, f.sha256, f.deleted_at FROM files f
                 WHERE f.root = $1 AND f.path = i.path LIMIT 1) f),
    written AS (
        INSERT INTO files (root, path, path_encoding, size, mtime, mtime_ns, inode, device, sha256, agent)
        SELECT $1, path, path_encoding, size,
               timestamptz 'epoch' + (mtime_ns / 1000) * interval '1 microsecond',
               mtime_ns, inode, device, sha256, $9
          FROM input ORDER BY path
        ON CONFLICT (root, path) DO UPDATE
           SET path_encoding = excluded.path_encoding, size = excluded.size, mtime = excluded.mtime,
               mtime_ns = excluded.mtime_ns, inode = excluded.inode, device = excluded.device,
               sha256 = excluded.sha256, agent = excluded.agent, updated_at = now(), deleted_at = NULL
        RETURNING id, path, sha256, path_encoding, size, mtime_ns),
    events AS (
        INSERT INTO file_events (agent, file_id, kind, root, old_path, new_path, old_sha256, new_sha256,
                                 path_encoding, size, mtime_ns)
        SELECT $9, w.id,
               CASE WHEN o.id IS NULL THEN 'created' WHEN o.deleted_at IS NOT NULL THEN 'restored' ELSE 'modified' END,
               $1, o.path, w.path, o.sha256, w.sha256, w.path_encoding, w.size, w.mtime_ns
          FROM written w LEFT JOIN old o ON o.id = w.id
         WHERE o.id IS NULL OR o.deleted_at IS NOT NULL OR o.sha256 <> w.sha256
        RETURNING kind)
    SELECT count(*) FILTER (WHERE kind = 'created'), count(*) FILTER (WHERE kind = 'modified'),
           count(*) FILTER (WHERE kind = 'restored')
      FROM events";

const MOVE_FILES: &str = "
    WITH input AS (
        SELECT * FROM unnest($2::int8[], $3::text[], $4::text[], $5::int8[], $6::int8[], $7::int8[], $8::int8[])
            AS t(id, path, path_encoding, size, mtime_ns, inode, device)),
    old AS (SELECT f.id, f.path, f.sha256 FROM files f JOIN input i USING (id)),
    locked AS (SELECT f.id FROM files f WHERE f.id = ANY ($2) ORDER BY f.id FOR NO KEY UPDATE),
    moved AS (
        UPDATE files f
           SET path = i.path, path_encoding = i.path_encoding, size = i.size,
               mtime = timestamptz 'epoch' + (i.mtime_ns / 1000) * interval '1 microsecond',
               mtime_ns = i.mtime_ns, inode = i.inode, device = i.device, agent = $9,
               updated_at = now(), deleted_at = NULL
          FROM input i
         WHERE f.id = i.id AND f.root = $1 AND f.id IN (SELECT id FROM locked)
        RETURNING f.id, f.path, f.path_encoding, f.size, f.mtime_ns)
    INSERT INTO file_events (agent, file_id, kind, root, old_path, new_path, old_sha256, new_sha256,
                             path_encoding, size, mtime_ns)
    SELECT $9, m.id, 'moved', $1, o.path, m.path, o.sha256, o.sha256, m.path_encoding, m.size, m.mtime_ns
      FROM moved m JOIN old o USING (id)";

const SOFT_DELETE: &str = "
    WITH deleted AS (
        UPDATE files SET deleted_at = now(), updated_at = now(), agent = $3
         WHERE id IN (SELECT id FROM files WHERE root = $1 AND id = ANY($2::int8[]) AND deleted_at IS NULL
                       ORDER BY id FOR NO KEY UPDATE)
        RETURNING id, path, sha256)
    INSERT INTO file_events (agent, file_id, kind, root, old_path, old_sha256)
    SELECT $3, id, 'deleted', $1, path, sha256 FROM deleted";

/// How often a batch is tried when PostgreSQL reports a deadlock or serialization failure.
const TRANSIENT_ATTEMPTS: u32 = 5;

/// A real deadlock error (SQLSTATE 40P01) raised by the server, for the fault hook.
#[cfg_attr(not(feature = "fault-hooks"), allow(dead_code))]
const INJECTED_DEADLOCK: &str =
    "DO $$ BEGIN RAISE EXCEPTION 'injected deadlock (test hook)' USING ERRCODE = '40P01'; END $$";

impl Catalog {
    /// Write one batch for `root` in one transaction. Moves go first, so that a path freed by
    /// a move can be taken by a registration in the same batch. A deadlock or serialization
    /// failure rolls the transaction back and runs it again (a few times, with a short
    /// random pause); any other error is returned.
    pub async fn write_batch(
        &mut self,
        root: &str,
        registrations: &[Registration],
        moves: &[Move],
        deletions: &[Deletion],
    ) -> Result<BatchOutcome, CatalogError> {
        let written = self
            .write_batch_leasing(root, registrations, moves, deletions, None)
            .await?;
        Ok(written.outcome)
    }

    /// [`write_batch`](Catalog::write_batch), and with `lease`, up to `lease.room` of the
    /// contents new to the catalog are queued already leased to `lease.taker`: returned as
    /// queue items, with the files of this batch that hold them as their sources.
    pub async fn write_batch_leasing(
        &mut self,
        root: &str,
        registrations: &[Registration],
        moves: &[Move],
        deletions: &[Deletion],
        lease: Option<&LeaseRequest>,
    ) -> Result<BatchWritten, CatalogError> {
        let mut attempt = 1;
        loop {
            let (timeout, canceller) = (self.client.timeout(), self.client.canceller());
            let once = self.write_batch_once(root, registrations, moves, deletions, lease);
            match canceller.on_timeout(super::bounded::bounded(timeout, once).await) {
                Err(error) if error.is_transient() && attempt < TRANSIENT_ATTEMPTS => {
                    attempt += 1;
                    let pause = std::time::Duration::from_millis(rand::random_range(10..100) * attempt as u64);
                    tokio::time::sleep(pause).await;
                }
                Ok((outcome, taken)) => {
                    return Ok(BatchWritten {
                        outcome: BatchOutcome {
                            retries: (attempt - 1) as u64,
                            ..outcome
                        },
                        leased: leased_items(root, registrations, taken),
                    })
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn write_batch_once(
        &mut self,
        root: &str,
        registrations: &[Registration],
        moves: &[Move],
        deletions: &[Deletion],
        lease: Option<&LeaseRequest>,
    ) -> Result<(BatchOutcome, Vec<Taken>), CatalogError> {
        let agent = self.agent.clone();
        let mut taken = Vec::new();
        let mut transaction = self.client.inner_mut().transaction().await?;
        if crate::hooks::inject_deadlock(root) {
            transaction.batch_execute(INJECTED_DEADLOCK).await?;
        }
        if let Some(seconds) = crate::hooks::slow_batch() {
            transaction
                .batch_execute(&format!("SELECT pg_sleep({seconds}) /* test hook: slow batch */"))
                .await?;
        }
        let mut outcome = BatchOutcome::default();
        if !moves.is_empty() {
            let columns = MoveColumns::from(moves);
            outcome.moved = transaction
                .execute(
                    MOVE_FILES,
                    &[
                        &root,
                        &columns.ids,
                        &columns.paths,
                        &columns.encodings,
                        &columns.sizes,
                        &columns.mtimes,
                        &columns.inodes,
                        &columns.devices,
                        &agent,
                    ],
                )
                .await?;
        }
        if !registrations.is_empty() {
            let shas: Vec<&str> = registrations.iter().map(|r| r.sha256.as_str()).collect();
            let sizes: Vec<i64> = registrations.iter().map(|r| r.size as i64).collect();
            let keys: Vec<&str> = registrations.iter().map(|r| r.storage_key.as_str()).collect();
            let worker = lease.map(|l| l.taker.worker.as_str());
            let lock_key = lease.map(|l| l.taker.lock_key);
            let duration = lease.map(|l| format!("{} milliseconds", l.taker.lease.as_millis()));
            let room = lease.map_or(0, |l| l.room as i64);
            let row = transaction
                .query_one(
                    UPSERT_CONTENTS,
                    &[&shas, &sizes, &keys, &worker, &lock_key, &duration, &room],
                )
                .await?;
            outcome.new_contents = row.get::<_, i64>(0) as u64;
            let (taken_shas, taken_sizes, taken_keys): (Vec<String>, Vec<i64>, Vec<String>) =
                (row.get(3), row.get(4), row.get(5));
            taken = taken_shas
                .into_iter()
                .zip(taken_sizes)
                .zip(taken_keys)
                .map(|((sha256, size), storage_key)| Taken {
                    sha256,
                    size: size as u64,
                    storage_key,
                })
                .collect();
            let marked: Vec<String> = row.get(2);
            if !marked.is_empty() {
                transaction.execute(UNMARK_CONTENTS, &[&marked]).await?;
            }
            let mut described = registrations
                .iter()
                .filter_map(|r| Some((r.sha256.as_str(), r.metadata.as_deref()?)))
                .peekable();
            if described.peek().is_some() {
                match super::metadata::write(&mut transaction, described, false).await? {
                    Ok(written) => outcome.metadata_written = written,
                    Err(_) => outcome.metadata_refused = 1,
                }
            }
            let columns = RegistrationColumns::from(registrations);
            let row = transaction
                .query_one(
                    UPSERT_FILES,
                    &[
                        &root,
                        &columns.paths,
                        &columns.encodings,
                        &columns.sizes,
                        &columns.mtimes,
                        &columns.inodes,
                        &columns.devices,
                        &shas,
                        &agent,
                    ],
                )
                .await?;
            outcome.created = row.get::<_, i64>(0) as u64;
            outcome.modified = row.get::<_, i64>(1) as u64;
            outcome.restored = row.get::<_, i64>(2) as u64;
        }
        if !deletions.is_empty() {
            let ids: Vec<i64> = deletions.iter().map(|d| d.id).collect();
            outcome.deleted = transaction.execute(SOFT_DELETE, &[&root, &ids, &agent]).await?;
        }
        transaction.commit().await?;
        Ok((outcome, taken))
    }
}

/// What a batch changed, and the new contents it leased (see [`Catalog::write_batch_leasing`]).
#[derive(Debug, Default)]
pub struct BatchWritten {
    pub outcome: BatchOutcome,
    pub leased: Vec<QueueItem>,
}

/// A content queued leased to the taker, as file_contents holds it.
struct Taken {
    sha256: String,
    size: u64,
    storage_key: String,
}

/// Queue items of the leased contents, each with the files of the batch that hold it.
fn leased_items(root: &str, registrations: &[Registration], taken: Vec<Taken>) -> Vec<QueueItem> {
    if taken.is_empty() {
        return Vec::new();
    }
    let mut items: HashMap<String, QueueItem> = taken
        .into_iter()
        .map(|taken| {
            let item = QueueItem {
                sha256: taken.sha256.clone(),
                size: taken.size,
                storage_key: taken.storage_key,
                attempts: 1,
                already_uploaded: false,
                maybe_stored: false,
                sources: Vec::new(),
                parts: None,
            };
            (taken.sha256, item)
        })
        .collect();
    for registration in registrations {
        if let Some(item) = items.get_mut(&registration.sha256) {
            if item.parts.is_none() {
                item.parts = registration.parts.clone();
            }
            item.sources.push(SourceFile {
                root: root.to_owned(),
                path: registration.path.clone(),
                encoding: registration.encoding,
                size: registration.size,
                mtime_ns: registration.mtime_ns,
                inode: registration.inode,
            });
        }
    }
    items.into_values().collect()
}

/// Column arrays of a batch of registrations, as the `unnest` statements take them.
struct RegistrationColumns<'a> {
    paths: Vec<&'a str>,
    encodings: Vec<&'static str>,
    sizes: Vec<i64>,
    mtimes: Vec<i64>,
    inodes: Vec<i64>,
    devices: Vec<i64>,
}

impl<'a> From<&'a [Registration]> for RegistrationColumns<'a> {
    fn from(batch: &'a [Registration]) -> Self {
        RegistrationColumns {
            paths: batch.iter().map(|r| r.path.as_str()).collect(),
            encodings: batch.iter().map(|r| r.encoding.as_str()).collect(),
            sizes: batch.iter().map(|r| r.size as i64).collect(),
            mtimes: batch.iter().map(|r| r.mtime_ns as i64).collect(),
            // Inode and device numbers are unsigned; bigint keeps their bits.
            inodes: batch.iter().map(|r| r.inode as i64).collect(),
            devices: batch.iter().map(|r| r.device as i64).collect(),
        }
    }
}

struct MoveColumns<'a> {
    ids: Vec<i64>,
    paths: Vec<&'a str>,
    encodings: Vec<&'static str>,
    sizes: Vec<i64>,
    mtimes: Vec<i64>,
    inodes: Vec<i64>,
    devices: Vec<i64>,
}

impl<'a> From<&'a [Move]> for MoveColumns<'a> {
    fn from(batch: &'a [Move]) -> Self {
        MoveColumns {
            ids: batch.iter().map(|m| m.id).collect(),
            paths: batch.iter().map(|m| m.path.as_str()).collect(),
            encodings: batch.iter().map(|m| m.encoding.as_str()).collect(),
            sizes: batch.iter().map(|m| m.size as i64).collect(),
            mtimes: batch.iter().map(|m| m.mtime_ns as i64).collect(),
            inodes: batch.iter().map(|m| m.inode as i64).collect(),
            devices: batch.iter().map(|m| m.device as i64).collect(),
        }
    }
}

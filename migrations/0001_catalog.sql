-- FileMetadataSync catalog, version 1.
--
-- The catalog is the source of truth and the only channel between the registration side
-- (walk, hash, register) and the upload side. See README.md, "Catalog schema".

-- One row per distinct content. The object key is fixed here, when the content is first seen.
CREATE TABLE file_contents (
    sha256        text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size          bigint NOT NULL CHECK (size >= 0),
    storage_key   text NOT NULL,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    uploaded_at   timestamptz
);

-- One row per path under a root. Never hard-deleted by a sync: deleted_at marks a vanished file.
CREATE TABLE files (
    id            bigserial PRIMARY KEY,
    root          text NOT NULL,
    -- Relative to the root, '/'-separated. A path that is not valid UTF-8 is stored with
    -- path_encoding = 'percent': each byte that is not part of valid UTF-8, and each '%',
    -- written as %XX (upper-case hex). Valid UTF-8 paths are stored verbatim.
    path          text NOT NULL,
    path_encoding text NOT NULL DEFAULT 'utf8' CHECK (path_encoding IN ('utf8', 'percent')),
    size          bigint NOT NULL CHECK (size >= 0),
    mtime         timestamptz NOT NULL,
    -- mtime with nanoseconds (timestamptz keeps microseconds only); used by the quick check.
    mtime_ns      bigint NOT NULL,
    inode         bigint NOT NULL,
    device        bigint NOT NULL,
    sha256        text NOT NULL REFERENCES file_contents (sha256),
    agent         text NOT NULL,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    deleted_at    timestamptz,
    UNIQUE (root, path)
);
CREATE INDEX files_sha256_live ON files (sha256) WHERE deleted_at IS NULL;
CREATE INDEX files_updated_at ON files (updated_at);

-- One row per content waiting to be stored. Deleted when the object is stored.
CREATE TABLE upload_queue (
    sha256           text PRIMARY KEY REFERENCES file_contents (sha256),
    state            text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    lease_owner      text,
    lease_expires_at timestamptz,
    -- Key of a session-level advisory lock the lease owner holds while its connection lives:
    -- when it is gone (a crashed or killed uploader), the lease is reclaimed at once instead
    -- of at lease_expires_at.
    lease_lock       bigint,
    last_error       text,
    enqueued_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX upload_queue_ready ON upload_queue (next_attempt_at) WHERE state = 'pending';
CREATE INDEX upload_queue_leased ON upload_queue (lease_lock) WHERE lease_owner IS NOT NULL;

-- Append-only audit trail.
CREATE TABLE file_events (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    agent       text NOT NULL,
    file_id     bigint NOT NULL REFERENCES files (id),
    kind        text NOT NULL CHECK (kind IN ('created', 'modified', 'moved', 'deleted', 'restored')),
    root        text NOT NULL,
    old_path    text,
    new_path    text,
    old_sha256  text,
    new_sha256  text
);
CREATE INDEX file_events_file ON file_events (file_id, id);

-- One row per scan of a root: progress and outcome, for `status` and for the unmounted-share
-- check (the device a root was on at its last complete scan).
CREATE TABLE scans (
    id           bigserial PRIMARY KEY,
    agent        text NOT NULL,
    root         text NOT NULL,
    device       bigint,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    outcome      text CHECK (outcome IN ('complete', 'unavailable', 'failed')),
    message      text,
    files_seen   bigint NOT NULL DEFAULT 0,
    files_new    bigint NOT NULL DEFAULT 0,
    files_changed bigint NOT NULL DEFAULT 0,
    files_moved  bigint NOT NULL DEFAULT 0,
    files_deleted bigint NOT NULL DEFAULT 0,
    bytes_hashed bigint NOT NULL DEFAULT 0
);
CREATE INDEX scans_root ON scans (root, id DESC);

-- Atomic batch dequeue. Takes up to batch_size ready rows that no live lease holds, leases
-- them to worker, and counts the attempt. Several uploader processes may call this at once.
-- A lease is dead when it expired, or when its lease_lock advisory lock is no longer held
-- (its owner's connection is gone): its rows come back. With roots, only contents that a
-- live file under one of those roots holds (what this worker can read), and contents that
-- no live file holds at all (the worker drops them from the queue). With lock_key, the
-- caller holds pg_advisory_lock(lock_key) on its session for as long as it works.
--
-- The live-file check is a LATERAL lookup so that it stays an index probe per queue row in
-- the function's generic plan (an EXISTS became a hashed scan of all of files).
CREATE FUNCTION dequeue_upload_batch(worker text, batch_size integer, lease interval,
                                     roots text[] DEFAULT NULL, lock_key bigint DEFAULT NULL)
RETURNS SETOF upload_queue
LANGUAGE sql ROWS 64 AS $$
    WITH held AS MATERIALIZED (
        SELECT (classid::bigint << 32) | objid::bigint AS key
          FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 AND granted),
    candidates AS (
        SELECT q.sha256 FROM upload_queue q
         CROSS JOIN LATERAL (
               SELECT count(*) AS live,
                      count(*) FILTER (WHERE roots IS NULL OR f.root = ANY (roots)) AS readable
                 FROM (SELECT root FROM files f
                        WHERE f.sha256 = q.sha256 AND f.deleted_at IS NULL LIMIT 64) f) holders
         WHERE q.state = 'pending'
           AND q.next_attempt_at <= now()
           AND (q.lease_owner IS NULL
                OR q.lease_expires_at < now()
                OR (q.lease_lock IS NOT NULL AND q.lease_lock NOT IN (SELECT key FROM held)))
           AND (holders.readable > 0 OR holders.live = 0)
         ORDER BY q.next_attempt_at
         LIMIT batch_size
           FOR UPDATE OF q SKIP LOCKED)
    UPDATE upload_queue q
       SET lease_owner = worker,
           lease_expires_at = now() + lease,
           lease_lock = lock_key,
           attempts = q.attempts + 1
     WHERE q.sha256 = ANY (ARRAY(SELECT sha256 FROM candidates))
    RETURNING q.*;
$$;

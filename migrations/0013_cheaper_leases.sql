-- Cheaper leases and upload marks. The lease function is as before (0009), with two changes
-- that keep its meaning:
--   * A row leased by the caller's own connection (its lease_lock is the caller's lock_key,
--     which that connection holds while it lives) is skipped without reading pg_locks. During
--     a sync nearly every leased row is the caller's own, and pg_locks, a snapshot of the
--     server's whole lock table, was read at every lease.
--   * The leased rows are updated through a join with the candidates, each found by its
--     primary key, instead of `sha256 = ANY (ARRAY(...))`.
CREATE OR REPLACE FUNCTION dequeue_upload_batch(worker text, batch_size integer, lease interval,
                                                roots text[] DEFAULT NULL, lock_key bigint DEFAULT NULL)
RETURNS SETOF upload_queue
LANGUAGE sql ROWS 64 AS $$
    WITH held AS MATERIALIZED (
        SELECT (classid::bigint << 32) | objid::bigint AS key
          FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 AND granted),
    candidates AS MATERIALIZED (
        SELECT q.sha256, q.maybe_stored FROM upload_queue q
         CROSS JOIN LATERAL (
               SELECT count(*) AS live,
                      count(*) FILTER (WHERE roots IS NULL OR f.root = ANY (roots)) AS readable
                 FROM (SELECT root FROM files f
                        WHERE f.sha256 = q.sha256 AND f.deleted_at IS NULL LIMIT 64) f) holders
         WHERE q.state = 'pending'
           AND q.next_attempt_at <= now()
           AND (q.lease_owner IS NULL
                OR q.lease_expires_at < now()
                OR (q.lease_lock IS NOT NULL AND q.lease_lock IS DISTINCT FROM lock_key
                    AND q.lease_lock NOT IN (SELECT key FROM held)))
           AND (holders.readable > 0 OR holders.live = 0)
         ORDER BY q.next_attempt_at
         LIMIT batch_size
           FOR UPDATE OF q SKIP LOCKED)
    UPDATE upload_queue q
       SET lease_owner = worker,
           lease_expires_at = now() + lease,
           lease_lock = lock_key,
           attempts = q.attempts + 1,
           maybe_stored = true
      FROM candidates c
     WHERE q.sha256 = c.sha256
    RETURNING q.sha256, q.state, q.attempts, q.next_attempt_at, q.lease_owner, q.lease_expires_at,
              q.lease_lock, q.last_error, q.enqueued_at, c.maybe_stored;
$$;

-- Room on each page of the contents for the new version of a row: marking a content
-- uploaded (uploaded_at) then changes no indexed column and stays on its page, a HOT update
-- with no new index entry. Pages written from now on keep the room.
ALTER TABLE file_contents SET (fillfactor = 85);

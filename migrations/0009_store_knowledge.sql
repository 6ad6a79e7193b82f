-- Fewer round trips to the store: a content the catalog has never seen before (registered
-- now, for the first time) cannot be in the store yet, so its first upload needs no HEAD.
--
--   maybe_stored  the store may already hold this content: true for every row the catalog
--                 cannot vouch for (the default: re-queued after retention, after a failed
--                 verification, after an import, and every row from before this migration),
--                 false only for a content registered for the first time. Set to true when
--                 the row is leased, so that any later lease (a retry, a crashed uploader, a
--                 lost lease, a PUT whose answer never came) asks the store first.
--
-- The uploader sends a HEAD only for rows leased with maybe_stored true.
ALTER TABLE upload_queue ADD COLUMN maybe_stored boolean NOT NULL DEFAULT true;

-- As before (0001), and the row's maybe_stored as it was before this lease is returned.
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
                OR (q.lease_lock IS NOT NULL AND q.lease_lock NOT IN (SELECT key FROM held)))
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
     WHERE q.sha256 = ANY (ARRAY(SELECT sha256 FROM candidates))
    RETURNING q.sha256, q.state, q.attempts, q.next_attempt_at, q.lease_owner, q.lease_expires_at,
              q.lease_lock, q.last_error, q.enqueued_at,
              (SELECT c.maybe_stored FROM candidates c WHERE c.sha256 = q.sha256);
$$;

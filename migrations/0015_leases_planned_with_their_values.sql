-- Leasing in a large catalog: the lease function (0013) was an SQL function, whose statement
-- PostgreSQL plans without the values of its arguments. Not knowing batch_size, it took the
-- LIMIT for a tenth of the queue (48,830 of 488,000 rows in a catalog of 10,000,000 files),
-- joined the candidates to the whole queue by hashing it, and JIT-compiled that: 440-500 ms
-- for a lease of 64 rows that takes 1 ms when planned with its values, and the upload queue
-- of such a catalog gave out 430-460 contents a second. As PL/pgSQL the statement is planned
-- with the call's values (its cached plan stays custom, since a generic one would cost far
-- more), and JIT is off for it as for the link rules (0012). Its meaning is unchanged.
CREATE OR REPLACE FUNCTION dequeue_upload_batch(worker text, batch_size integer, lease interval,
                                                roots text[] DEFAULT NULL, lock_key bigint DEFAULT NULL)
RETURNS SETOF upload_queue
LANGUAGE plpgsql ROWS 64 SET jit = off AS $$
BEGIN
    RETURN QUERY
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
END $$;

-- Retention (`filemetasync gc`): contents that no live file holds and that the policy lets
-- go are deleted from the store in two phases, and the catalog keeps every row and event.
--
--   gc_marked_at   the mark phase found the content collectable at this time; the sweep
--                  deletes it only after the grace period, if it is still marked then.
--   purging_since  the sweep is deleting its object (an intent, committed before the
--                  DELETE is sent, with uploaded_at set to NULL: from then on the content
--                  does not count as stored): a registration that sees it takes the content
--                  back into the upload queue, whatever happened to the object.
--   purged_at      the object was deleted by retention; uploaded_at is NULL again.
--
-- Registration clears gc_marked_at and purging_since of every content it registers (it
-- takes a KEY SHARE lock on each such row first), and the sweep deletes an object only while
-- it holds FOR UPDATE on the content's row and no live file holds the content: either the
-- sweep sees the new file and keeps the content, or the registration waits for the sweep and
-- queues the content for upload again.
ALTER TABLE file_contents
    ADD COLUMN gc_marked_at  timestamptz,
    ADD COLUMN purging_since timestamptz,
    ADD COLUMN purged_at     timestamptz;

-- The sweep pages through marked contents by SHA-256.
CREATE INDEX file_contents_gc_marked ON file_contents (sha256) WHERE gc_marked_at IS NOT NULL AND purged_at IS NULL;
CREATE INDEX file_contents_purging ON file_contents (purging_since) WHERE purging_since IS NOT NULL;

-- The stored contents the retention policy lets go. A content is kept when a live file holds
-- it, or when one of the versions it was is kept:
--   * the current version of a file (not ended);
--   * a version ended by a deletion less than `deleted_for` ago (NULL: for ever);
--   * a version ended by a newer version less than `replaced_for` ago (NULL: for ever);
--   * one of the newest `keep_versions` versions of a file that still exists (the current
--     one counts), whatever their age.
-- A version runs from the event that gave the file its content (created, modified, restored)
-- to the next such event or its deletion; moves keep the version. A content that no event
-- names (history unknown) is never collectable.
CREATE FUNCTION fms_gc_collectable(deleted_for interval, replaced_for interval, keep_versions integer)
RETURNS TABLE (sha256 text, size bigint, storage_key text)
LANGUAGE sql STABLE AS $$
    WITH steps AS (
        SELECT e.file_id, e.kind, e.new_sha256, e.at,
               lead(e.at) OVER w AS ended_at, lead(e.kind) OVER w AS ended_by
          FROM file_events e
         WHERE e.kind IN ('created', 'modified', 'restored', 'deleted')
        WINDOW w AS (PARTITION BY e.file_id ORDER BY e.id)),
    versions AS (
        SELECT s.file_id, s.new_sha256 AS sha256, s.ended_at, s.ended_by,
               row_number() OVER (PARTITION BY s.file_id ORDER BY s.ended_at DESC NULLS FIRST) AS newest
          FROM steps s
         WHERE s.kind <> 'deleted' AND s.new_sha256 IS NOT NULL),
    kept AS (
        SELECT v.sha256 FROM versions v
         WHERE v.ended_at IS NULL
            OR (v.ended_by = 'deleted' AND (deleted_for IS NULL OR v.ended_at > now() - deleted_for))
            OR (v.ended_by <> 'deleted' AND (replaced_for IS NULL OR v.ended_at > now() - replaced_for))
            OR (v.newest <= keep_versions
                AND EXISTS (SELECT 1 FROM files f WHERE f.id = v.file_id AND f.deleted_at IS NULL))),
    candidates AS (
        SELECT DISTINCT v.sha256 FROM versions v
        EXCEPT
        SELECT k.sha256 FROM kept k)
    SELECT c.sha256, c.size, c.storage_key
      FROM candidates x
      JOIN file_contents c ON c.sha256 = x.sha256
     WHERE c.uploaded_at IS NOT NULL AND c.purged_at IS NULL
       AND NOT EXISTS (SELECT 1 FROM files f WHERE f.sha256 = c.sha256 AND f.deleted_at IS NULL)
$$;

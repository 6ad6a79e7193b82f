-- Running totals for `status` and /metrics. A count(*) over ten million files takes seconds;
-- these are a sum over a handful of rows. Statement-level triggers add each statement's change
-- as one row of deltas (no row is updated in place, so concurrent writers never wait on a
-- counter); `fms_fold_counts()` folds the rows into one now and then.
CREATE TABLE catalog_counts (
    id                 bigserial PRIMARY KEY,
    live_files         bigint NOT NULL DEFAULT 0,
    deleted_files      bigint NOT NULL DEFAULT 0,
    contents           bigint NOT NULL DEFAULT 0,
    content_bytes      bigint NOT NULL DEFAULT 0,
    uploaded_contents  bigint NOT NULL DEFAULT 0,
    uploaded_bytes     bigint NOT NULL DEFAULT 0,
    queue_pending      bigint NOT NULL DEFAULT 0,
    queue_failed       bigint NOT NULL DEFAULT 0
);

INSERT INTO catalog_counts (live_files, deleted_files, contents, content_bytes, uploaded_contents,
                            uploaded_bytes, queue_pending, queue_failed)
SELECT (SELECT count(*) FROM files WHERE deleted_at IS NULL),
       (SELECT count(*) FROM files WHERE deleted_at IS NOT NULL),
       (SELECT count(*) FROM file_contents),
       (SELECT coalesce(sum(size), 0) FROM file_contents),
       (SELECT count(*) FROM file_contents WHERE uploaded_at IS NOT NULL),
       (SELECT coalesce(sum(size), 0) FROM file_contents WHERE uploaded_at IS NOT NULL),
       (SELECT count(*) FROM upload_queue WHERE state = 'pending'),
       (SELECT count(*) FROM upload_queue WHERE state = 'failed');

-- files: live and deleted rows.
CREATE FUNCTION fms_count_files() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    live bigint := 0;
    deleted bigint := 0;
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        SELECT live + count(*) FILTER (WHERE deleted_at IS NULL), deleted + count(*) FILTER (WHERE deleted_at IS NOT NULL)
          INTO live, deleted FROM new_rows;
    END IF;
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        SELECT live - count(*) FILTER (WHERE deleted_at IS NULL), deleted - count(*) FILTER (WHERE deleted_at IS NOT NULL)
          INTO live, deleted FROM old_rows;
    END IF;
    IF live <> 0 OR deleted <> 0 THEN
        INSERT INTO catalog_counts (live_files, deleted_files) VALUES (live, deleted);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER files_count_insert AFTER INSERT ON files
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION fms_count_files();
CREATE TRIGGER files_count_update AFTER UPDATE ON files
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION fms_count_files();
CREATE TRIGGER files_count_delete AFTER DELETE ON files
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION fms_count_files();

-- file_contents: contents and bytes, uploaded or not.
CREATE FUNCTION fms_count_contents() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    d_contents bigint := 0;
    d_bytes bigint := 0;
    d_uploaded bigint := 0;
    d_uploaded_bytes bigint := 0;
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        SELECT d_contents + count(*), d_bytes + coalesce(sum(size), 0),
               d_uploaded + count(*) FILTER (WHERE uploaded_at IS NOT NULL),
               d_uploaded_bytes + coalesce(sum(size) FILTER (WHERE uploaded_at IS NOT NULL), 0)
          INTO d_contents, d_bytes, d_uploaded, d_uploaded_bytes FROM new_rows;
    END IF;
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        SELECT d_contents - count(*), d_bytes - coalesce(sum(size), 0),
               d_uploaded - count(*) FILTER (WHERE uploaded_at IS NOT NULL),
               d_uploaded_bytes - coalesce(sum(size) FILTER (WHERE uploaded_at IS NOT NULL), 0)
          INTO d_contents, d_bytes, d_uploaded, d_uploaded_bytes FROM old_rows;
    END IF;
    IF d_contents <> 0 OR d_bytes <> 0 OR d_uploaded <> 0 OR d_uploaded_bytes <> 0 THEN
        INSERT INTO catalog_counts (contents, content_bytes, uploaded_contents, uploaded_bytes)
        VALUES (d_contents, d_bytes, d_uploaded, d_uploaded_bytes);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER contents_count_insert AFTER INSERT ON file_contents
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION fms_count_contents();
CREATE TRIGGER contents_count_update AFTER UPDATE ON file_contents
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION fms_count_contents();
CREATE TRIGGER contents_count_delete AFTER DELETE ON file_contents
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION fms_count_contents();

-- upload_queue: pending and failed rows.
CREATE FUNCTION fms_count_queue() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    pending bigint := 0;
    failed bigint := 0;
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        SELECT pending + count(*) FILTER (WHERE state = 'pending'), failed + count(*) FILTER (WHERE state = 'failed')
          INTO pending, failed FROM new_rows;
    END IF;
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        SELECT pending - count(*) FILTER (WHERE state = 'pending'), failed - count(*) FILTER (WHERE state = 'failed')
          INTO pending, failed FROM old_rows;
    END IF;
    IF pending <> 0 OR failed <> 0 THEN
        INSERT INTO catalog_counts (queue_pending, queue_failed) VALUES (pending, failed);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER queue_count_insert AFTER INSERT ON upload_queue
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION fms_count_queue();
CREATE TRIGGER queue_count_update AFTER UPDATE ON upload_queue
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION fms_count_queue();
CREATE TRIGGER queue_count_delete AFTER DELETE ON upload_queue
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION fms_count_queue();

-- Fold the delta rows into one (the sums stay the same). Concurrent folds are safe: a row is
-- deleted, and summed, by exactly one of them.
CREATE FUNCTION fms_fold_counts() RETURNS void LANGUAGE sql AS $$
    WITH folded AS (DELETE FROM catalog_counts RETURNING *)
    INSERT INTO catalog_counts (live_files, deleted_files, contents, content_bytes, uploaded_contents,
                                uploaded_bytes, queue_pending, queue_failed)
    SELECT sum(live_files), sum(deleted_files), sum(contents), sum(content_bytes), sum(uploaded_contents),
           sum(uploaded_bytes), sum(queue_pending), sum(queue_failed)
      FROM folded HAVING count(*) > 0;
$$;

-- Failed uploads newest first, and leases held now, without a scan of the queue.
CREATE INDEX upload_queue_failed ON upload_queue (next_attempt_at DESC) WHERE state = 'failed';
CREATE INDEX upload_queue_lease_expiry ON upload_queue (lease_expires_at) WHERE lease_owner IS NOT NULL;

-- The run-time role keeps the counts as it writes.
CREATE OR REPLACE FUNCTION fms_grant_runtime(runtime_role text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', current_schema(), runtime_role);
    EXECUTE format('GRANT SELECT ON schema_migrations, files, file_contents, upload_queue, file_events,
                    scans, agent_processes, projects, buildings, cost_groups, link_rules, file_links,
                    store_checks, catalog_counts
                    TO %I', runtime_role);
    EXECUTE format('GRANT INSERT, UPDATE ON files, file_contents, upload_queue, scans, agent_processes,
                    store_checks TO %I', runtime_role);
    EXECUTE format('GRANT INSERT, DELETE ON catalog_counts TO %I', runtime_role);
    EXECUTE format('GRANT DELETE ON upload_queue TO %I', runtime_role);
    EXECUTE format('GRANT INSERT ON file_events TO %I', runtime_role);
    EXECUTE format('GRANT INSERT, UPDATE, DELETE ON file_links TO %I', runtime_role);
    EXECUTE format('GRANT INSERT ON projects, buildings TO %I', runtime_role);
    EXECUTE format('GRANT USAGE ON ALL SEQUENCES IN SCHEMA %I TO %I', current_schema(), runtime_role);
END
$$;

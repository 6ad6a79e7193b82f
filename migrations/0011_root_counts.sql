-- Live files and their bytes per root, for the operator's page: a count(*) and sum(size) over
-- a root of a million files takes a second; these are a sum over a handful of rows. Kept like
-- catalog_counts (0006): each statement on files adds one row of deltas per root it touched,
-- and fms_fold_root_counts() folds them now and then.
CREATE TABLE root_counts (
    id         bigserial PRIMARY KEY,
    root       text NOT NULL,
    live_files bigint NOT NULL DEFAULT 0,
    live_bytes bigint NOT NULL DEFAULT 0
);
CREATE INDEX root_counts_root ON root_counts (root);

INSERT INTO root_counts (root, live_files, live_bytes)
SELECT root, count(*), coalesce(sum(size), 0) FROM files WHERE deleted_at IS NULL GROUP BY root;

-- As in 0006, and per root: live files and bytes.
CREATE OR REPLACE FUNCTION fms_count_files() RETURNS trigger LANGUAGE plpgsql AS $$
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
    IF TG_OP = 'INSERT' THEN
        INSERT INTO root_counts (root, live_files, live_bytes)
        SELECT root, count(*), sum(size) FROM new_rows WHERE deleted_at IS NULL GROUP BY root;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO root_counts (root, live_files, live_bytes)
        SELECT root, -count(*), -sum(size) FROM old_rows WHERE deleted_at IS NULL GROUP BY root;
    ELSE
        INSERT INTO root_counts (root, live_files, live_bytes)
        SELECT root, sum(files), sum(bytes) FROM (
            SELECT root, 1 AS files, size AS bytes FROM new_rows WHERE deleted_at IS NULL
            UNION ALL
            SELECT root, -1, -size FROM old_rows WHERE deleted_at IS NULL) d
         GROUP BY root HAVING sum(files) <> 0 OR sum(bytes) <> 0;
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION fms_fold_root_counts() RETURNS void LANGUAGE sql AS $$
    WITH folded AS (DELETE FROM root_counts RETURNING *)
    INSERT INTO root_counts (root, live_files, live_bytes)
    SELECT root, sum(live_files), sum(live_bytes) FROM folded GROUP BY root;
$$;

-- As before (0010), and the runtime role keeps root_counts.
CREATE OR REPLACE FUNCTION fms_grant_runtime(runtime_role text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', current_schema(), runtime_role);
    EXECUTE format('GRANT SELECT ON schema_migrations, files, file_contents, upload_queue, file_events,
                    scans, agent_processes, projects, buildings, cost_groups, link_rules, file_links,
                    store_checks, catalog_counts, content_metadata, file_details, linked_files, root_counts
                    TO %I', runtime_role);
    EXECUTE format('GRANT INSERT, UPDATE ON files, file_contents, upload_queue, scans, agent_processes,
                    store_checks, content_metadata TO %I', runtime_role);
    EXECUTE format('GRANT INSERT, DELETE ON catalog_counts, root_counts TO %I', runtime_role);
    EXECUTE format('GRANT DELETE ON upload_queue TO %I', runtime_role);
    EXECUTE format('GRANT INSERT ON file_events TO %I', runtime_role);
    EXECUTE format('GRANT INSERT, UPDATE, DELETE ON file_links TO %I', runtime_role);
    EXECUTE format('GRANT INSERT ON projects, buildings TO %I', runtime_role);
    EXECUTE format('GRANT USAGE ON ALL SEQUENCES IN SCHEMA %I TO %I', current_schema(), runtime_role);
END
$$;

-- The page searches files by a part of their name in any case (`name ~* pattern`): a trigram
-- index on the file name answers that in milliseconds at millions of files, where a scan
-- takes a second. pg_trgm ships with PostgreSQL (contrib) and is a trusted extension; where
-- it cannot be created, the catalog works the same and name searches read every row.
DO $$
DECLARE
    trgm_schema text;
BEGIN
    BEGIN
        CREATE EXTENSION IF NOT EXISTS pg_trgm;
    EXCEPTION WHEN OTHERS THEN
        RAISE NOTICE 'pg_trgm is not available (%): searches by file name read every row', SQLERRM;
    END;
    SELECT n.nspname INTO trgm_schema
      FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
     WHERE e.extname = 'pg_trgm';
    IF trgm_schema IS NOT NULL THEN
        EXECUTE format('CREATE INDEX files_name_trgm ON files USING gin ((substring(path from %L)) %I.gin_trgm_ops)',
                       '[^/]*$', trgm_schema);
    END IF;
END $$;

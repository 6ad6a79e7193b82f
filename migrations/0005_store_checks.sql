-- How each object store's uploads are verified, as the uploader last decided it (see
-- storage.integrity): probed at every uploader start, shown by `status`. One row per store
-- (its kind, endpoint and bucket), whichever agent probed it last.
CREATE TABLE store_checks (
    store       text PRIMARY KEY,              -- "s3 bucket nas at https://…"
    mode        text NOT NULL,                 -- server | read-back | local
    checks      text NOT NULL,                 -- what goes with each upload
    reason      text NOT NULL,                 -- why, in a sentence
    agent       text NOT NULL,
    decided_at  timestamptz NOT NULL DEFAULT now()
);

-- The run-time role may record it too.
CREATE OR REPLACE FUNCTION fms_grant_runtime(runtime_role text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', current_schema(), runtime_role);
    EXECUTE format('GRANT SELECT ON schema_migrations, files, file_contents, upload_queue, file_events,
                    scans, agent_processes, projects, buildings, cost_groups, link_rules, file_links,
                    store_checks
                    TO %I', runtime_role);
    EXECUTE format('GRANT INSERT, UPDATE ON files, file_contents, upload_queue, scans, agent_processes,
                    store_checks TO %I', runtime_role);
    EXECUTE format('GRANT DELETE ON upload_queue TO %I', runtime_role);
    EXECUTE format('GRANT INSERT ON file_events TO %I', runtime_role);
    EXECUTE format('GRANT INSERT, UPDATE, DELETE ON file_links TO %I', runtime_role);
    EXECUTE format('GRANT INSERT ON projects, buildings TO %I', runtime_role);
    EXECUTE format('GRANT USAGE ON ALL SEQUENCES IN SCHEMA %I TO %I', current_schema(), runtime_role);
END
$$;

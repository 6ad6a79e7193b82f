-- The daemon needs neither superuser rights nor DDL at run time. Run the migrations as the
-- owner of the schema (`filemetasync migrate` with the owner's URL), then give the role the
-- daemon logs in with exactly what it uses:
--
--     SELECT fms_grant_runtime('fms_app');
--
-- (as the owner; the role must exist: CREATE ROLE fms_app LOGIN PASSWORD '...'). At start the
-- daemon finds the schema current and changes nothing; a newer binary needs `migrate` run by
-- the owner first.
CREATE FUNCTION fms_grant_runtime(runtime_role text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', current_schema(), runtime_role);
    -- Read everything it joins against.
    EXECUTE format('GRANT SELECT ON schema_migrations, files, file_contents, upload_queue, file_events,
                    scans, agent_processes, projects, buildings, cost_groups, link_rules, file_links
                    TO %I', runtime_role);
    -- Registration, the queue, scan records, heartbeats.
    EXECUTE format('GRANT INSERT, UPDATE ON files, file_contents, upload_queue, scans, agent_processes TO %I', runtime_role);
    EXECUTE format('GRANT DELETE ON upload_queue TO %I', runtime_role);
    -- The audit trail is append-only.
    EXECUTE format('GRANT INSERT ON file_events TO %I', runtime_role);
    -- Auto-linking runs in the registration's transaction (triggers run as the caller):
    -- links are written and pruned, unknown projects and buildings created where a rule says so.
    EXECUTE format('GRANT INSERT, UPDATE, DELETE ON file_links TO %I', runtime_role);
    EXECUTE format('GRANT INSERT ON projects, buildings TO %I', runtime_role);
    EXECUTE format('GRANT USAGE ON ALL SEQUENCES IN SCHEMA %I TO %I', current_schema(), runtime_role);
END
$$;

-- The link triggers are statement-level, and PostgreSQL fires a statement's triggers whether
-- or not it touched a row: every registration batch (INSERT ... ON CONFLICT DO UPDATE fires
-- the UPDATE triggers too) ran apply_link_rules on an empty list, once for moves and, on a
-- rescan that only saw changed files, once for inserts. Each such call truncated the
-- session's temporary match table twice and cost 2-3 ms of the server's CPU; a watcher that
-- registers one file per batch paid it for every event. Now a trigger with no file to link
-- does nothing.
CREATE OR REPLACE FUNCTION link_inserted_files() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    ids bigint[] := ARRAY(SELECT id FROM inserted_files);
BEGIN
    IF cardinality(ids) > 0 THEN
        PERFORM apply_link_rules(ids, prune => false);
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION link_moved_files() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    ids bigint[] := ARRAY(
        SELECT n.id FROM new_files n JOIN old_files o USING (id)
         WHERE n.path IS DISTINCT FROM o.path OR n.root IS DISTINCT FROM o.root);
BEGIN
    IF cardinality(ids) > 0 THEN
        PERFORM apply_link_rules(ids);
    END IF;
    RETURN NULL;
END $$;

-- Auto-linking: every file is linked to its project, building and DIN 276 cost group by
-- rules on its path, applied by the database itself (triggers), so no client has to remember.
-- See README.md, "Auto-linking".

CREATE TABLE projects (
    id         bigserial PRIMARY KEY,
    code       text NOT NULL UNIQUE,
    name       text,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- The rule that created it on first sight, NULL if entered by hand.
    created_by_rule bigint
);

CREATE TABLE buildings (
    id         bigserial PRIMARY KEY,
    project_id bigint NOT NULL REFERENCES projects (id),
    name       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    created_by_rule bigint,
    UNIQUE (project_id, name)
);

-- DIN 276 cost groups. The eight top-level groups are seeded; offices may add the lower
-- levels (310, 320, ...). A path naming a group that is not in the table is linked to its
-- top-level group (KG 341 -> 300).
CREATE TABLE cost_groups (
    code   integer PRIMARY KEY CHECK (code BETWEEN 100 AND 899),
    name   text NOT NULL,
    parent integer REFERENCES cost_groups (code)
);
INSERT INTO cost_groups (code, name) VALUES
    (100, 'Grundstück'),
    (200, 'Vorbereitende Maßnahmen'),
    (300, 'Bauwerk – Baukonstruktionen'),
    (400, 'Bauwerk – Technische Anlagen'),
    (500, 'Außenanlagen und Freiflächen'),
    (600, 'Ausstattung und Kunstwerke'),
    (700, 'Baunebenkosten'),
    (800, 'Finanzierung');

-- A rule: a PostgreSQL regular expression on the file's path (relative to its root), and
-- which capture group holds what. Rules are tried by priority (lowest first, then id); the
-- first that matches links the file.
CREATE TABLE link_rules (
    id                 bigserial PRIMARY KEY,
    priority           integer NOT NULL,
    name               text NOT NULL,
    -- Only files of this root (label); NULL: every root.
    root               text,
    -- 'path': the pattern is matched against the file's path. 'folder': against the path of
    -- its folder with a trailing '/' ('Projekte/X/Haus A/' for 'Projekte/X/Haus A/a.pdf'),
    -- evaluated once per folder, which is much cheaper for rules about folder conventions.
    subject            text NOT NULL DEFAULT 'path' CHECK (subject IN ('path', 'folder')),
    pattern            text NOT NULL,
    project_code_group integer CHECK (project_code_group > 0),
    project_name_group integer CHECK (project_name_group > 0),
    building_group     integer CHECK (building_group > 0),
    cost_group_group   integer CHECK (cost_group_group > 0),
    -- Create a project (building) that is not in the table yet when a path names it;
    -- otherwise the file is linked without it.
    create_projects    boolean NOT NULL DEFAULT true,
    create_buildings   boolean NOT NULL DEFAULT true,
    enabled            boolean NOT NULL DEFAULT true,
    CHECK (building_group IS NULL OR project_code_group IS NOT NULL)
);

-- A rule whose pattern is not a valid regular expression would make every registration
-- fail; it is refused when it is written instead.
CREATE FUNCTION check_link_rule() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM '' ~ NEW.pattern;
    RETURN NEW;
EXCEPTION WHEN invalid_regular_expression THEN
    RAISE EXCEPTION 'link rule %: pattern % is not a valid regular expression: %', NEW.name, NEW.pattern, SQLERRM
        USING ERRCODE = 'invalid_regular_expression';
END $$;

CREATE TRIGGER link_rules_check BEFORE INSERT OR UPDATE OF pattern ON link_rules
    FOR EACH ROW EXECUTE FUNCTION check_link_rule();

-- The layout make-corpus.py produces and many offices use:
--   Projekte/<code> <name>/<building>/KG <nnn>/...   project, building and cost group
--   Projekte/<code> <name>/...                       the project only
INSERT INTO link_rules (priority, name, subject, pattern, project_code_group, project_name_group, building_group, cost_group_group)
VALUES (10, 'Projekte/<code> <name>/<building>/KG <nnn>/', 'folder',
        '^Projekte/([^/ ]+) ([^/]+)/([^/]+)/KG ([1-8][0-9]{2})/', 1, 2, 3, 4),
       (20, 'Projekte/<code> <name>/', 'folder',
        '^Projekte/([^/ ]+) ([^/]+)/', 1, 2, NULL, NULL);

-- One row per linked file. A file no rule matches has none.
CREATE TABLE file_links (
    file_id    bigint PRIMARY KEY REFERENCES files (id),
    project_id bigint REFERENCES projects (id),
    building_id bigint REFERENCES buildings (id),
    cost_group integer REFERENCES cost_groups (code),
    -- 'rule': set by link_rules, replaced when the file moves or the rules are re-applied.
    -- 'manual': set by a person or another program; never overwritten by a rule.
    source     text NOT NULL CHECK (source IN ('rule', 'manual')),
    -- The rule that made the link (informational). Not a foreign key: a per-row check on
    -- every registration costs more than it protects; deleting a rule clears it (trigger).
    rule_id    bigint,
    linked_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX file_links_project ON file_links (project_id, building_id, cost_group);
CREATE INDEX file_links_rule ON file_links (rule_id);

CREATE FUNCTION forget_deleted_rules() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE file_links SET rule_id = NULL WHERE rule_id IN (SELECT id FROM deleted_rules);
    RETURN NULL;
END $$;

CREATE TRIGGER link_rules_forget AFTER DELETE ON link_rules
    REFERENCING OLD TABLE AS deleted_rules
    FOR EACH STATEMENT EXECUTE FUNCTION forget_deleted_rules();

-- Apply the rules to these files: first matching rule wins, unknown projects and buildings
-- created where the rule says so, manual links left alone, rule links of files that no rule
-- matches any more removed. Set-based: one pass per statement, not per file.
-- prune: also remove rule links of these files that no rule matches any more (moves and
-- re-application; a freshly inserted file has no link to remove).
CREATE FUNCTION apply_link_rules(file_ids bigint[], prune boolean DEFAULT true) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    linked integer;
BEGIN
    -- Lives as long as the session (emptied at each commit), so a registration batch does
    -- not create and drop a table every time.
    CREATE TEMP TABLE IF NOT EXISTS pg_temp.link_matches (
        file_id bigint PRIMARY KEY, rule_id bigint, create_projects boolean, create_buildings boolean,
        project_code text, project_name text, building text, cost_group integer
    ) ON COMMIT DELETE ROWS;
    TRUNCATE pg_temp.link_matches;

    -- Rules are tried in priority order and the first match ends the search. Folder rules
    -- are evaluated once per distinct folder of the batch, path rules once per file; each
    -- file takes whichever of its two first hits has the lower priority.
    INSERT INTO pg_temp.link_matches
    WITH targets AS (
        SELECT f.id, f.root, f.path, left(f.path, length(f.path) - strpos(reverse(f.path), '/') + 1) AS folder
          FROM files f WHERE f.id = ANY (file_ids)),
    folder_hits AS MATERIALIZED (
        SELECT d.root, d.folder, hit.*
          FROM (SELECT DISTINCT root, folder FROM targets) d
         CROSS JOIN LATERAL (
               SELECT r.id AS rule_id, r.priority, r.create_projects, r.create_buildings, r.project_code_group,
                      r.project_name_group, r.building_group, r.cost_group_group, m
                 FROM (SELECT * FROM link_rules r
                        WHERE r.enabled AND r.subject = 'folder' AND (r.root IS NULL OR r.root = d.root)
                        ORDER BY r.priority, r.id) r
                CROSS JOIN LATERAL regexp_match(d.folder, r.pattern) AS m
                WHERE m IS NOT NULL
                LIMIT 1) hit),
    path_hits AS (
        SELECT t.id, hit.*
          FROM targets t
         CROSS JOIN LATERAL (
               SELECT r.id AS rule_id, r.priority, r.create_projects, r.create_buildings, r.project_code_group,
                      r.project_name_group, r.building_group, r.cost_group_group, m
                 FROM (SELECT * FROM link_rules r
                        WHERE r.enabled AND r.subject = 'path' AND (r.root IS NULL OR r.root = t.root)
                        ORDER BY r.priority, r.id) r
                CROSS JOIN LATERAL regexp_match(t.path, r.pattern) AS m
                WHERE m IS NOT NULL
                LIMIT 1) hit),
    hits AS (
        SELECT t.id, fh.rule_id, fh.priority, fh.create_projects, fh.create_buildings, fh.project_code_group,
               fh.project_name_group, fh.building_group, fh.cost_group_group, fh.m
          FROM targets t JOIN folder_hits fh ON fh.root = t.root AND fh.folder = t.folder
        UNION ALL
        SELECT * FROM path_hits)
    SELECT DISTINCT ON (h.id) h.id, h.rule_id, h.create_projects, h.create_buildings,
           h.m[h.project_code_group], h.m[h.project_name_group], h.m[h.building_group],
           CASE WHEN h.m[h.cost_group_group] ~ '^[0-9]{1,3}$' THEN (h.m[h.cost_group_group])::integer END
      FROM hits h
     ORDER BY h.id, h.priority, h.rule_id;

    INSERT INTO projects (code, name, created_by_rule)
    SELECT DISTINCT ON (project_code) project_code, project_name, rule_id
      FROM pg_temp.link_matches
     WHERE create_projects AND project_code IS NOT NULL
     ORDER BY project_code, file_id
    ON CONFLICT (code) DO NOTHING;

    INSERT INTO buildings (project_id, name, created_by_rule)
    SELECT DISTINCT ON (p.id, lm.building) p.id, lm.building, lm.rule_id
      FROM pg_temp.link_matches lm JOIN projects p ON p.code = lm.project_code
     WHERE lm.create_buildings AND lm.building IS NOT NULL
     ORDER BY p.id, lm.building, lm.file_id
    ON CONFLICT (project_id, name) DO NOTHING;

    INSERT INTO file_links (file_id, project_id, building_id, cost_group, source, rule_id)
    SELECT lm.file_id, p.id, b.id,
           coalesce(exact.code, top.code), 'rule', lm.rule_id
      FROM pg_temp.link_matches lm
      LEFT JOIN projects p ON p.code = lm.project_code
      LEFT JOIN buildings b ON b.project_id = p.id AND b.name = lm.building
      LEFT JOIN cost_groups exact ON exact.code = lm.cost_group
      LEFT JOIN cost_groups top ON top.code = lm.cost_group / 100 * 100
    ON CONFLICT (file_id) DO UPDATE
       SET project_id = excluded.project_id, building_id = excluded.building_id,
           cost_group = excluded.cost_group, rule_id = excluded.rule_id, linked_at = now()
     WHERE file_links.source = 'rule';
    GET DIAGNOSTICS linked = ROW_COUNT;

    IF prune THEN
        DELETE FROM file_links l
         USING unnest(file_ids) AS target(file_id)
         WHERE l.file_id = target.file_id AND l.source = 'rule'
           AND NOT EXISTS (SELECT 1 FROM pg_temp.link_matches lm WHERE lm.file_id = l.file_id);
    END IF;

    TRUNCATE pg_temp.link_matches;
    RETURN linked;
END $$;

-- The triggers: statement-level with transition tables, so a registration batch of a
-- thousand files is linked in one pass. Inserts are linked; updates only where the path
-- (or root) changed, i.e. moves.
CREATE FUNCTION link_inserted_files() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM apply_link_rules(ARRAY(SELECT id FROM inserted_files), prune => false);
    RETURN NULL;
END $$;

CREATE FUNCTION link_moved_files() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM apply_link_rules(ARRAY(
        SELECT n.id FROM new_files n JOIN old_files o USING (id)
         WHERE n.path IS DISTINCT FROM o.path OR n.root IS DISTINCT FROM o.root));
    RETURN NULL;
END $$;

CREATE TRIGGER files_link_on_insert AFTER INSERT ON files
    REFERENCING NEW TABLE AS inserted_files
    FOR EACH STATEMENT EXECUTE FUNCTION link_inserted_files();

CREATE TRIGGER files_link_on_move AFTER UPDATE ON files
    REFERENCING OLD TABLE AS old_files NEW TABLE AS new_files
    FOR EACH STATEMENT EXECUTE FUNCTION link_moved_files();

-- Re-apply the rules to every file after the rules changed, batch_size files per
-- transaction, so the catalog is never locked for long:  CALL relink_all_files();
CREATE PROCEDURE relink_all_files(batch_size integer DEFAULT 5000)
LANGUAGE plpgsql AS $$
DECLARE
    last_id bigint := 0;
    ids bigint[];
BEGIN
    LOOP
        ids := ARRAY(SELECT id FROM files WHERE id > last_id ORDER BY id LIMIT batch_size);
        EXIT WHEN cardinality(ids) = 0;
        PERFORM apply_link_rules(ids);
        last_id := ids[cardinality(ids)];
        COMMIT;
    END LOOP;
END $$;

-- What downstream software queries: live files with their project, building and cost group.
CREATE VIEW linked_files AS
SELECT f.id AS file_id, f.root, f.path, f.path_encoding, f.size, f.mtime, f.sha256,
       c.storage_key, c.uploaded_at,
       p.code AS project_code, p.name AS project_name,
       b.name AS building,
       l.cost_group, g.name AS cost_group_name,
       l.source AS link_source
  FROM files f
  JOIN file_contents c ON c.sha256 = f.sha256
  LEFT JOIN file_links l ON l.file_id = f.id
  LEFT JOIN projects p ON p.id = l.project_id
  LEFT JOIN buildings b ON b.id = l.building_id
  LEFT JOIN cost_groups g ON g.code = l.cost_group
 WHERE f.deleted_at IS NULL;

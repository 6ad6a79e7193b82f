//! Auto-linking (migrations/0002_linking.sql): the triggers at the SQL level against the real
//! PostgreSQL, and end to end after a scan of a fms-corpus tree.

mod common;

use common::*;
use std::collections::BTreeMap;

/// A migrated catalog with one content row that test files can point at.
async fn catalog(name: &str) -> Database {
    let database = Database::create(name).await;
    let fms = Fms::new(
        &database,
        "[storage]\nkind = \"local\"\npath = \"/nonexistent\"\n",
        &[("docs", std::path::Path::new("/nonexistent"))],
        "",
    );
    fms.migrate();
    database
        .client
        .execute(
            "INSERT INTO file_contents (sha256, size, storage_key) VALUES (repeat('a', 64), 1, 'files/a')",
            &[],
        )
        .await
        .unwrap();
    database
}

async fn insert(database: &Database, paths: &[&str]) {
    for (inode, path) in paths.iter().enumerate() {
        database
            .client
            .execute(
                "INSERT INTO files (root, path, size, mtime, mtime_ns, inode, device, sha256, agent)
                 VALUES ('docs', $1, 1, now(), 0, $2, 1, repeat('a', 64), 'test')",
                &[path, &(inode as i64 + 1000 * paths.len() as i64)],
            )
            .await
            .unwrap();
    }
}

/// path -> (project code, building, cost group), as the downstream view shows it.
async fn links(database: &Database) -> BTreeMap<String, (Option<String>, Option<String>, Option<i32>)> {
    let rows = database
        .client
        .query("SELECT path, project_code, building, cost_group FROM linked_files", &[])
        .await
        .unwrap();
    rows.iter()
        .map(|row| (row.get(0), (row.get(1), row.get(2), row.get(3))))
        .collect()
}

/// path -> (row version, linked_at) of its link row.
async fn link_versions(database: &Database) -> BTreeMap<String, (String, String)> {
    let rows = database
        .client
        .query(
            "SELECT f.path, l.xmin::text, l.linked_at::text FROM file_links l JOIN files f ON f.id = l.file_id",
            &[],
        )
        .await
        .unwrap();
    rows.iter().map(|row| (row.get(0), (row.get(1), row.get(2)))).collect()
}

fn link(
    project: &str,
    building: Option<&str>,
    cost_group: Option<i32>,
) -> (Option<String>, Option<String>, Option<i32>) {
    (Some(project.to_string()), building.map(str::to_string), cost_group)
}

const NONE: (Option<String>, Option<String>, Option<i32>) = (None, None, None);

#[tokio::test]
async fn default_rules_link_project_building_and_cost_group() {
    let database = catalog("link_default").await;
    insert(
        &database,
        &[
            "Projekte/2024-017 Schule Nord/Haus B/KG 300/LP5 Ausfuehrung/Plan.pdf",
            "Projekte/2024-017 Schule Nord/Haus B/KG 341/Detail.pdf",
            "Projekte/2024-017 Schule Nord/Scans/Bestand.tif",
            "Vorlagen/Briefkopf.docx",
        ],
    )
    .await;
    let found = links(&database).await;
    assert_eq!(
        found["Projekte/2024-017 Schule Nord/Haus B/KG 300/LP5 Ausfuehrung/Plan.pdf"],
        link("2024-017", Some("Haus B"), Some(300))
    );
    assert_eq!(
        found["Projekte/2024-017 Schule Nord/Haus B/KG 341/Detail.pdf"],
        link("2024-017", Some("Haus B"), Some(300)),
        "unknown sub-group falls back to its top-level group"
    );
    assert_eq!(
        found["Projekte/2024-017 Schule Nord/Scans/Bestand.tif"],
        link("2024-017", None, None)
    );
    assert_eq!(found["Vorlagen/Briefkopf.docx"], NONE, "no rule matches: no link");
    let name: String = database
        .client
        .query_one("SELECT name FROM projects WHERE code = '2024-017'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, "Schule Nord");
    assert_eq!(database.count("SELECT count(*) FROM projects").await, 1);
    assert_eq!(database.count("SELECT count(*) FROM buildings").await, 1);
}

#[tokio::test]
async fn rule_priority_decides_and_a_rule_change_is_reapplied() {
    let database = catalog("link_priority").await;
    database
        .client
        .batch_execute(
            "INSERT INTO link_rules (priority, name, pattern, project_code_group, project_name_group)
             VALUES (5, 'Archiv/<code>_<name>', '^(?:Projekte|Archiv)/([^/ ]+) ([^/]+)/', 1, 2)",
        )
        .await
        .unwrap();
    // Priority 5 beats the default rules (10, 20): no building, no cost group.
    insert(
        &database,
        &["Projekte/2023-001 Bad/Haus A/KG 400/x.pdf", "Archiv/2020-009 Alt/y.pdf"],
    )
    .await;
    let found = links(&database).await;
    assert_eq!(
        found["Projekte/2023-001 Bad/Haus A/KG 400/x.pdf"],
        link("2023-001", None, None)
    );
    assert_eq!(found["Archiv/2020-009 Alt/y.pdf"], link("2020-009", None, None));
    let before = link_versions(&database).await;

    // The office lowers its rule below the defaults and re-applies all rules.
    database
        .client
        .batch_execute("UPDATE link_rules SET priority = 30 WHERE priority = 5")
        .await
        .unwrap();
    database.client.batch_execute("CALL relink_all_files(1)").await.unwrap();
    let found = links(&database).await;
    assert_eq!(
        found["Projekte/2023-001 Bad/Haus A/KG 400/x.pdf"],
        link("2023-001", Some("Haus A"), Some(400))
    );
    assert_eq!(found["Archiv/2020-009 Alt/y.pdf"], link("2020-009", None, None));
    // Only the link that changed was written (a new row version and linked_at); the other
    // keeps the version and the time it was linked at.
    let after = link_versions(&database).await;
    let changed = "Projekte/2023-001 Bad/Haus A/KG 400/x.pdf";
    assert_ne!(after[changed], before[changed]);
    assert_eq!(after["Archiv/2020-009 Alt/y.pdf"], before["Archiv/2020-009 Alt/y.pdf"]);

    // Deleting a rule keeps the links it made, without a dangling rule id.
    database
        .client
        .batch_execute("DELETE FROM link_rules WHERE priority = 30")
        .await
        .unwrap();
    assert_eq!(database.count("SELECT count(*) FROM file_links WHERE rule_id IS NOT NULL AND rule_id NOT IN (SELECT id FROM link_rules)").await, 0);
    assert_eq!(
        links(&database).await["Archiv/2020-009 Alt/y.pdf"],
        link("2020-009", None, None)
    );
}

#[tokio::test]
async fn unknown_projects_are_created_only_where_the_rule_says_so() {
    let database = catalog("link_create").await;
    database
        .client
        .batch_execute(
            "UPDATE link_rules SET create_projects = false, create_buildings = false;
             INSERT INTO projects (code, name) VALUES ('2024-100', 'Bekannt');",
        )
        .await
        .unwrap();
    insert(
        &database,
        &[
            "Projekte/2024-100 Bekannt/Haus C/KG 500/a.pdf",
            "Projekte/2024-999 Unbekannt/Haus C/KG 500/b.pdf",
        ],
    )
    .await;
    let found = links(&database).await;
    assert_eq!(
        found["Projekte/2024-100 Bekannt/Haus C/KG 500/a.pdf"],
        link("2024-100", None, Some(500)),
        "building not created"
    );
    assert_eq!(
        found["Projekte/2024-999 Unbekannt/Haus C/KG 500/b.pdf"],
        (None, None, Some(500)),
        "project not created"
    );
    assert_eq!(database.count("SELECT count(*) FROM projects").await, 1);
    assert_eq!(database.count("SELECT count(*) FROM buildings").await, 0);
}

#[tokio::test]
async fn moves_are_relinked_and_manual_links_are_kept() {
    let database = catalog("link_moves").await;
    insert(
        &database,
        &[
            "Projekte/2024-001 A/Haus A/KG 300/moved.pdf",
            "Projekte/2024-001 A/Haus A/KG 300/manual.pdf",
        ],
    )
    .await;
    database
        .client
        .batch_execute(
            "INSERT INTO projects (code, name) VALUES ('9999-000', 'Handverlesen');
             UPDATE file_links SET source = 'manual', project_id = (SELECT id FROM projects WHERE code = '9999-000'),
                    building_id = NULL, cost_group = 700
              WHERE file_id = (SELECT id FROM files WHERE path LIKE '%manual.pdf');
             UPDATE files SET path = 'Projekte/2024-002 B/Haus B/KG 400/moved.pdf' WHERE path LIKE '%/moved.pdf';
             UPDATE files SET path = 'Projekte/2024-002 B/Haus B/KG 400/manual.pdf' WHERE path LIKE '%/manual.pdf';",
        )
        .await
        .unwrap();
    let found = links(&database).await;
    assert_eq!(
        found["Projekte/2024-002 B/Haus B/KG 400/moved.pdf"],
        link("2024-002", Some("Haus B"), Some(400)),
        "a move relinks"
    );
    assert_eq!(
        found["Projekte/2024-002 B/Haus B/KG 400/manual.pdf"],
        link("9999-000", None, Some(700)),
        "a manual link survives a move"
    );

    database
        .client
        .batch_execute("UPDATE files SET path = 'Ablage/moved.pdf' WHERE path LIKE '%/moved.pdf'")
        .await
        .unwrap();
    database.client.batch_execute("CALL relink_all_files()").await.unwrap();
    let found = links(&database).await;
    assert_eq!(
        found["Ablage/moved.pdf"], NONE,
        "moved out of every project: the rule link goes"
    );
    assert_eq!(
        found["Projekte/2024-002 B/Haus B/KG 400/manual.pdf"],
        link("9999-000", None, Some(700)),
        "relinking keeps manual links"
    );
    // Metadata updates that are not moves leave links alone.
    database
        .client
        .batch_execute("UPDATE files SET size = 2")
        .await
        .unwrap();
    assert_eq!(
        database
            .count("SELECT count(*) FROM file_links WHERE source = 'manual'")
            .await,
        1
    );
}

#[tokio::test]
async fn an_invalid_rule_is_refused_instead_of_breaking_registration() {
    let database = catalog("link_invalid").await;
    let error = database
        .client
        .batch_execute("INSERT INTO link_rules (priority, name, pattern) VALUES (1, 'broken', '([')")
        .await
        .unwrap_err();
    assert!(
        format!("{:?}", error).contains("not a valid regular expression"),
        "{error:?}"
    );
    insert(&database, &["Projekte/2024-001 A/Haus A/KG 300/still-works.pdf"]).await;
    assert_eq!(links(&database).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_of_a_corpus_links_every_project_file() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    let manifest = make_corpus(&tree, 1500, &["--large", "1", "--large-mib", "6"]);
    let database = Database::create("link_e2e").await;
    let garage = Garage::start();
    let fms = Fms::new(&database, &garage.storage_toml(), &[("docs", &tree)], "");
    fms.scan(0);
    let found = links(&database).await;
    let expected = expected_files(&manifest);
    assert_eq!(found.len(), expected.len());
    for path in expected.keys() {
        assert_eq!(found[path], expected_link(path), "{path}");
    }
    let linked = found.values().filter(|l| l.0.is_some()).count();
    assert!(linked > 1400, "most corpus files live under a project: {linked}");
}

/// What the default rules should give for an fms-corpus path, derived independently of SQL.
fn expected_link(path: &str) -> (Option<String>, Option<String>, Option<i32>) {
    let parts: Vec<&str> = path.split('/').collect();
    if parts.len() < 3 || parts[0] != "Projekte" {
        return NONE;
    }
    let code = parts[1].split(' ').next().unwrap().to_string();
    let kg = parts
        .get(3)
        .and_then(|p| p.strip_prefix("KG "))
        .and_then(|n| n.parse::<i32>().ok());
    match kg {
        Some(kg) if parts.len() > 4 => (Some(code), Some(parts[2].to_string()), Some(kg)),
        _ => (Some(code), None, None),
    }
}

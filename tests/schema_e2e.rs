//! A database that already has tables of its own (a Supabase project's `public`, filled by
//! the system we replace with its own `files` and `file_contents`): `migrate` names the clash
//! and changes nothing; with `database.schema` the catalog lives beside them and every
//! command works, the other tables untouched.

mod common;

use common::daemon::http_section;
use common::*;
use std::time::Duration;

/// The other system's tables, with rows.
const THEIRS: &str = "
    CREATE TABLE files (id bigserial PRIMARY KEY, bucket_id text NOT NULL, name text NOT NULL);
    CREATE TABLE file_contents (hash text PRIMARY KEY, mime text);
    INSERT INTO files (bucket_id, name) VALUES ('plans', 'a.pdf'), ('plans', 'b.dwg');
    INSERT INTO file_contents VALUES ('abc', 'application/pdf');";

/// Everything in `public`: its tables with their columns, and the rows of the two.
async fn public_snapshot(database: &Database) -> Vec<String> {
    let mut lines = Vec::new();
    for row in database
        .client
        .query(
            "SELECT table_name::text, string_agg(column_name::text || ' ' || data_type::text, ', ' ORDER BY ordinal_position)
               FROM information_schema.columns WHERE table_schema = 'public'
              GROUP BY table_name ORDER BY table_name",
            &[],
        )
        .await
        .unwrap()
    {
        lines.push(format!("{}: {}", row.get::<_, String>(0), row.get::<_, String>(1)));
    }
    for sql in [
        "SELECT id::text || ' ' || bucket_id || ' ' || name FROM public.files ORDER BY id",
        "SELECT hash || ' ' || coalesce(mime, '') FROM public.file_contents ORDER BY hash",
    ] {
        for row in database.client.query(sql, &[]).await.unwrap() {
            lines.push(row.get(0));
        }
    }
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_of_our_names_are_left_alone_and_the_catalog_gets_a_schema_of_its_own() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    let manifest = make_corpus(&tree, 150, &["--large", "0"]);
    let database = Database::create("schema").await;
    database.client.batch_execute(THEIRS).await.unwrap();
    let before = public_snapshot(&database).await;
    assert_eq!(before.len(), 5);
    let garage = Garage::start();

    // Without database.schema: the clash is named, exit 2, nothing changed.
    let plain = Fms::new(&database, &garage.storage_toml(), &[("docs", &tree)], "");
    let output = plain.run(&["migrate"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("already has tables named file_contents, files") && stderr.contains("set database.schema"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    let output = plain.run(&["scan", "--wait"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("set database.schema"));
    assert_eq!(public_snapshot(&database).await, before, "nothing changed");

    // With it: migrate, scan --wait, status and run work in the schema of our own.
    let (http, port) = http_section();
    let fms = Fms::new(&database, &garage.storage_toml(), &[("docs", &tree)], &http);
    let text = std::fs::read_to_string(&fms.config).unwrap();
    std::fs::write(
        &fms.config,
        text.replacen("[database]\n", "[database]\nschema = \"filemetasync\"\n", 1),
    )
    .unwrap();
    let output = fms.run(&["migrate"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let summary = fms.scan(0);
    let expected = expected_files(&manifest);
    assert_eq!(summary["totals"]["new"], expected.len() as u64);
    let ours = live_files_in(&database, "filemetasync").await;
    assert_eq!(ours, expected);
    let status = fms.run(&["status", "--json"]);
    assert!(status.status.success());
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["files"], expected.len() as u64);

    let daemon = fms.start_daemon(port, &[], &[]);
    std::fs::write(tree.join("neu.txt"), b"written while the daemon runs").unwrap();
    daemon
        .wait_for("the new file is registered", Duration::from_secs(60), async || {
            live_files_in(&database, "filemetasync").await.contains_key("neu.txt")
        })
        .await;
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0));
    assert_eq!(public_snapshot(&database).await, before, "their tables untouched");
    let in_public = database
        .count("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        .await;
    assert_eq!(in_public, 2, "nothing of ours in public");
}

async fn live_files_in(database: &Database, schema: &str) -> std::collections::BTreeMap<String, (i64, String)> {
    let sql = format!("SELECT path, size, sha256 FROM {schema}.files WHERE root = 'docs' AND deleted_at IS NULL");
    let rows = database.client.query(&sql, &[]).await.unwrap();
    rows.iter().map(|row| (row.get(0), (row.get(1), row.get(2)))).collect()
}

//! The daemon needs no superuser: after the owner has migrated and run
//! `fms_grant_runtime(role)`, a plain login role scans, uploads and runs the daemon — and
//! cannot change the schema.

mod common;

use common::daemon::http_section;
use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_role_with_the_documented_grants_runs_everything_but_ddl() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    let manifest = make_corpus(&tree, 300, &["--large", "0"]);
    let database = Database::create("runtime_role").await;
    let garage = Garage::start();
    // The owner migrates.
    let owner = Fms::new(&database, &garage.storage_toml(), &[("docs", &tree)], "");
    owner.migrate();
    let role = format!("fms_app_{}", std::process::id());
    database
        .client
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;
             SELECT fms_grant_runtime('{role}');"
        ))
        .await
        .unwrap();
    let app_url = database
        .url
        .replacen("postgres://postgres@", &format!("postgres://{role}@"), 1);
    let as_app = Database::connect(app_url.clone()).await;
    let is_superuser: bool = as_app
        .client
        .query_one("SELECT rolsuper FROM pg_roles WHERE rolname = current_user", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!is_superuser);

    // The run-time role: a scan with uploads, then the daemon with a heartbeat and a change.
    let (http, port) = http_section();
    let app = Fms::new(
        &database,
        &garage.storage_toml(),
        &[("docs", &tree)],
        &format!("{http}[watch]\npoll_interval = \"1s\"\ndebounce = \"1s\"\n"),
    );
    let text = std::fs::read_to_string(&app.config)
        .unwrap()
        .replace(&database.url, &app_url);
    std::fs::write(&app.config, text).unwrap();
    let summary = app.scan(0);
    assert_eq!(summary["totals"]["new"], expected_files(&manifest).len() as u64);
    let daemon = app.start_daemon(port, &[], &[]);
    std::fs::write(tree.join("Projekte/new-by-app.txt"), b"registered by the plain role").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !database
        .live_files("docs")
        .await
        .contains_key("Projekte/new-by-app.txt")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "not registered:\n{}",
            tail(&daemon.log_text())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    daemon.wait_until("a heartbeat", Duration::from_secs(15), || {
        String::from_utf8_lossy(&app.run(&["status"]).stdout).contains("daemon test")
    });
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0));
    assert!(daemon_restarts_none(&app).await);

    // No DDL for it.
    for ddl in [
        "DROP TABLE files",
        "ALTER TABLE files ADD COLUMN x int",
        "CREATE TABLE evil (x int)",
        "DELETE FROM file_events",
    ] {
        let error = as_app.client.batch_execute(ddl).await.expect_err(ddl);
        assert_eq!(
            error.code(),
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{ddl}: {error:?}"
        );
    }
    drop(as_app);
    database
        .client
        .batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role};"))
        .await
        .unwrap();
}

/// The log of a clean run has no `actor restarted` events (a missing grant would restart the
/// actor that needs it).
async fn daemon_restarts_none(app: &Fms) -> bool {
    let logs: Vec<String> = std::fs::read_dir(app.dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("daemon-"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    logs.iter()
        .all(|log| !log.contains("\"actor restarted\"") && !log.contains("permission denied"))
}

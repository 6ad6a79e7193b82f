//! `filemetasync scan` end to end, against the real PostgreSQL and a real Garage.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_sync_stores_each_content_once_and_rescan_reads_nothing() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    let manifest = make_corpus(&tree, 5000, &["--large", "1", "--large-mib", "12"]);
    let expected = expected_files(&manifest);
    let distinct: BTreeSet<String> = expected.values().map(|(_, sha)| sha.clone()).collect();
    let database = Database::create("corpus").await;
    let garage = Garage::start();
    let fms = Fms::new(
        &database,
        &garage.storage_toml(),
        &[("docs", &tree)],
        "[upload]\nconcurrency = 16\n",
    );

    let first = fms.scan(0);
    assert_eq!(first["totals"]["new"], expected.len() as u64);
    assert_eq!(first["uploaded"], distinct.len() as u64);
    assert_eq!(
        database.live_files("docs").await,
        expected,
        "catalog equals the manifest, ignored files left out"
    );
    assert_eq!(
        database
            .count("SELECT count(*) FROM file_contents WHERE uploaded_at IS NULL")
            .await,
        0
    );
    assert_eq!(database.count("SELECT count(*) FROM upload_queue").await, 0);
    let stored = assert_store_matches_keys(&garage.store()).await;
    assert_eq!(stored, distinct, "exactly one object per distinct content");
    assert_eq!(
        garage.store_requests(),
        distinct.len() as u64,
        "each content stored by one request"
    );
    // New contents of a new catalog cannot be in the store: no existence check was sent.
    assert_eq!(first["upload_heads"], 0);
    assert_eq!(garage.requests("HeadObject"), 0, "no HEAD for a first upload");

    let second = fms.scan(0);
    assert_eq!(second["totals"]["unchanged"], expected.len() as u64);
    assert_eq!(
        second["totals"]["hashed_files"], 0,
        "no-change rescan reads no file content"
    );
    assert_eq!(second["totals"]["bytes_hashed"], 0);
    assert_eq!(second["uploaded"], 0);
    assert_eq!(
        garage.store_requests(),
        distinct.len() as u64,
        "nothing uploaded by the rescan"
    );
    let events = database.count("SELECT count(*) FROM file_events").await;
    assert_eq!(
        events,
        expected.len() as i64,
        "one created event per file, nothing else"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_between_scans_give_rows_moves_soft_deletes_and_restores() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    make_corpus(&tree, 200, &["--large", "0"]);
    let database = Database::create("changes").await;
    let garage = Garage::start();
    let fms = Fms::new(&database, &garage.storage_toml(), &[("docs", &tree)], "");
    fms.scan(0);
    let before = database.live_files("docs").await;

    let dir = tree.join("Sonderfaelle");
    std::fs::write(dir.join("UPPER.PDF"), b"new content of the pdf").unwrap();
    std::fs::create_dir(dir.join("moved here")).unwrap();
    std::fs::rename(dir.join("no_extension"), dir.join("moved here/renamed")).unwrap();
    std::fs::remove_file(dir.join(".hidden.cfg")).unwrap();
    let summary = fms.scan(0);
    let totals = &summary["totals"];
    assert_eq!(
        (
            totals["changed"].as_u64(),
            totals["moved"].as_u64(),
            totals["deleted"].as_u64()
        ),
        (Some(1), Some(1), Some(1))
    );
    assert_eq!(
        totals["hashed_files"], 1,
        "only the modified file is read; the move is recognised by inode"
    );
    assert_eq!(summary["uploaded"], 1);

    let after = database.live_files("docs").await;
    assert_eq!(
        after["Sonderfaelle/moved here/renamed"],
        before["Sonderfaelle/no_extension"]
    );
    assert!(!after.contains_key("Sonderfaelle/no_extension"));
    assert!(!after.contains_key("Sonderfaelle/.hidden.cfg"));
    assert_ne!(after["Sonderfaelle/UPPER.PDF"].1, before["Sonderfaelle/UPPER.PDF"].1);
    let mut kinds = event_kinds(&database).await;
    kinds.sort();
    assert_eq!(
        kinds,
        vec![
            "deleted:Sonderfaelle/.hidden.cfg",
            "modified:Sonderfaelle/UPPER.PDF",
            "moved:Sonderfaelle/moved here/renamed"
        ]
    );

    // The deleted file comes back: the same row is restored, not a second one added.
    std::fs::write(dir.join(".hidden.cfg"), b"back again").unwrap();
    let summary = fms.scan(0);
    assert_eq!(summary["totals"]["restored"], 1);
    assert_eq!(summary["totals"]["new"], 0);
    let rows = database
        .count("SELECT count(*) FROM files WHERE path = 'Sonderfaelle/.hidden.cfg'")
        .await;
    assert_eq!(rows, 1);
    assert_eq!(
        database
            .count("SELECT count(*) FROM files WHERE path = 'Sonderfaelle/.hidden.cfg' AND deleted_at IS NULL")
            .await,
        1
    );
    assert_eq!(
        event_kinds(&database).await.last().unwrap(),
        "restored:Sonderfaelle/.hidden.cfg"
    );
    // Creates, edits, moves, deletions and restores: the running totals kept up.
    database.assert_counts_match().await;
    let status = fms.run(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let live = database
        .count("SELECT count(*) FROM files WHERE deleted_at IS NULL")
        .await;
    assert_eq!(status["files"], live);
}

async fn event_kinds(database: &Database) -> Vec<String> {
    let rows = database
        .client
        .query(
            "SELECT kind || ':' || coalesce(new_path, old_path) FROM file_events WHERE kind <> 'created' ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    rows.iter().map(|row| row.get(0)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_scan_then_rescan_gives_the_same_catalog_and_objects() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    let manifest = make_corpus(&tree, 3000, &["--large", "0"]);
    let expected = expected_files(&manifest);
    let distinct: BTreeSet<String> = expected.values().map(|(_, sha)| sha.clone()).collect();
    let database = Database::create("sigkill").await;
    let garage = Garage::start();
    let concurrency = 8;
    let fms = Fms::new(
        &database,
        &garage.storage_toml(),
        &[("docs", &tree)],
        &format!("[upload]\nconcurrency = {concurrency}\n[scan]\nbatch_size = 100\n"),
    );

    fms.migrate();
    let mut running = fms.spawn(&["scan", "--wait"]);
    let child = running.child();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let uploaded = database
            .count("SELECT count(*) FROM file_contents WHERE uploaded_at IS NOT NULL")
            .await;
        if uploaded >= 200 {
            break;
        }
        assert!(Instant::now() < deadline, "no uploads within 60 s");
        assert!(
            child.try_wait().unwrap().is_none(),
            "scan finished before it could be killed; use a larger tree"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started_killing = Instant::now();
    child.kill().unwrap();
    child.wait().unwrap();
    eprintln!("killed after reaching 200 uploads ({:?})", started_killing.elapsed());
    let registered_at_kill = database.count("SELECT count(*) FROM files").await;
    assert!(
        registered_at_kill < expected.len() as i64 || database.count("SELECT count(*) FROM upload_queue").await > 0,
        "killed mid-way"
    );

    let rescan_started = Instant::now();
    fms.scan(0);
    eprintln!("rescan after the kill took {:?}", rescan_started.elapsed());
    assert_eq!(database.live_files("docs").await, expected);
    assert_eq!(
        database.count("SELECT count(*) FROM upload_queue").await,
        0,
        "no row left in the queue, leased or not"
    );
    assert_eq!(
        database
            .count("SELECT count(*) FROM file_contents WHERE uploaded_at IS NULL")
            .await,
        0
    );
    assert_eq!(assert_store_matches_keys(&garage.store()).await, distinct);
    // Only transfers cut off by the kill can be repeated; everything stored before is found by HEAD.
    let requests = garage.store_requests();
    assert!(
        requests <= distinct.len() as u64 + concurrency,
        "{requests} store requests for {} contents: something was uploaded twice",
        distinct.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_overlapping_roots_upload_each_content_once() {
    let work = tempfile::tempdir().unwrap();
    let tree_a = work.path().join("a");
    let manifest = make_corpus(&tree_a, 1500, &["--large", "0"]);
    let tree_b = work.path().join("b");
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(&tree_a)
        .arg(&tree_b)
        .status()
        .unwrap();
    assert!(copied.success());
    std::fs::write(tree_b.join("only-in-b.txt"), b"only in b").unwrap();
    let mut distinct: BTreeSet<String> = expected_files(&manifest).values().map(|(_, sha)| sha.clone()).collect();
    distinct.insert(sha256_hex(b"only in b"));
    let database = Database::create("two").await;
    let garage = Garage::start();
    let fms_a = Fms::new(&database, &garage.storage_toml(), &[("a", &tree_a)], "");
    let fms_b = Fms::new(&database, &garage.storage_toml(), &[("b", &tree_b)], "");

    let a = fms_a.command(&["scan", "--wait", "--json"]).output();
    let b = fms_b.command(&["scan", "--wait", "--json"]).output();
    let (a, b) = tokio::join!(
        tokio::task::spawn_blocking(move || a),
        tokio::task::spawn_blocking(move || b)
    );
    let (a, b) = (a.unwrap().unwrap(), b.unwrap().unwrap());
    assert_eq!(a.status.code(), Some(0), "{}", String::from_utf8_lossy(&a.stderr));
    assert_eq!(b.status.code(), Some(0), "{}", String::from_utf8_lossy(&b.stderr));
    let (summary_a, summary_b) = (
        summary_of(&String::from_utf8_lossy(&a.stdout)),
        summary_of(&String::from_utf8_lossy(&b.stdout)),
    );
    let uploaded = summary_a["uploaded"].as_u64().unwrap() + summary_b["uploaded"].as_u64().unwrap();
    assert_eq!(uploaded, distinct.len() as u64);
    assert_eq!(
        garage.store_requests(),
        distinct.len() as u64,
        "each content uploaded once across both processes"
    );
    assert_eq!(assert_store_matches_keys(&garage.store()).await, distinct);
    assert_eq!(
        database.count("SELECT count(*) FROM files WHERE root = 'a'").await + 1,
        database.count("SELECT count(*) FROM files WHERE root = 'b'").await
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garage_down_uploads_back_off_and_complete_when_it_returns() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    let manifest = make_corpus(&tree, 100, &["--large", "0"]);
    let distinct: BTreeSet<String> = expected_files(&manifest).values().map(|(_, sha)| sha.clone()).collect();
    let database = Database::create("garagedown").await;
    let mut garage = Garage::start();
    let fms = Fms::new(
        &database,
        &garage.storage_toml(),
        &[("docs", &tree)],
        "[upload]\nmax_attempts = 50\n",
    );
    fms.migrate();
    garage.stop();

    let mut running = fms.spawn(&["scan", "--wait", "--json"]);
    // A bound, not a timing: a content is leased again only after every content already
    // leased to the scan has had its first try. With the store refusing connections that is
    // the integrity probe (four asks, each with the SDK's three tries: 11 s measured) and
    // then, per content, three tries with jittered backoff (up to 3 s), `upload.concurrency`
    // (8) at a time once the failures have lowered the limit: 23-27 s measured alone, up to
    // about 14 s + 100 / 8 × 3 s = 52 s on the worst jitter, more on a machine that runs the
    // other tests beside this one.
    let started = Instant::now();
    let deadline = started + Duration::from_secs(180);
    while database
        .count("SELECT count(*) FROM upload_queue WHERE attempts >= 2 AND last_error IS NOT NULL")
        .await
        == 0
    {
        assert!(
            Instant::now() < deadline,
            "uploads never failed and were retried while Garage was down"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "a content was tried again {:.1} s after the scan started",
        started.elapsed().as_secs_f64()
    );
    let error: String = database
        .client
        .query_one(
            "SELECT last_error FROM upload_queue WHERE last_error IS NOT NULL LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!error.is_empty());
    garage.restart();
    let child = running.take();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let summary = summary_of(&String::from_utf8_lossy(&output.stdout));
    assert!(summary["upload_failed_attempts"].as_u64().unwrap() > 0);
    assert_eq!(summary["upload_failed_final"], 0);
    assert_eq!(
        assert_store_matches_keys(&garage.store()).await,
        distinct,
        "all stored once Garage is back"
    );
    assert_eq!(database.count("SELECT count(*) FROM upload_queue").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_deleted_before_its_upload_is_dropped_not_waited_for() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("keep.txt"), b"kept").unwrap();
    std::fs::write(tree.join("short-lived.txt"), b"deleted before it could be uploaded").unwrap();
    let database = Database::create("dropped").await;
    let mut garage = Garage::start();
    let fms = Fms::new(&database, &garage.storage_toml(), &[("docs", &tree)], "");
    garage.stop();
    // Registered, but the store is down: both contents stay queued.
    fms.scan_with(&["scan", "--json"], 0);
    assert_eq!(database.count("SELECT count(*) FROM upload_queue").await, 2);
    std::fs::remove_file(tree.join("short-lived.txt")).unwrap();
    garage.restart();
    let summary = fms.scan(0);
    assert_eq!(summary["totals"]["deleted"], 1);
    assert_eq!(
        summary["upload_dropped"], 1,
        "nothing left to upload for the deleted file's content"
    );
    assert_eq!(summary["uploaded"], 1);
    assert_eq!(database.count("SELECT count(*) FROM upload_queue").await, 0);
    assert_eq!(
        database
            .count("SELECT count(*) FROM file_contents WHERE uploaded_at IS NULL")
            .await,
        1,
        "the dropped content is honestly not stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_upload_registers_and_leaves_the_queue_to_other_workers() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    let manifest = make_corpus(&tree, 300, &["--large", "0"]);
    let distinct: BTreeSet<String> = expected_files(&manifest).values().map(|(_, sha)| sha.clone()).collect();
    let database = Database::create("noupload").await;
    let garage = Garage::start();
    let fms = Fms::new(&database, &garage.storage_toml(), &[("docs", &tree)], "");
    let summary = fms.scan_with(&["scan", "--no-upload", "--json"], 0);
    assert_eq!(summary["uploaded"], 0);
    assert_eq!(summary["queue_pending"], distinct.len() as i64);
    assert_eq!(garage.store_requests(), 0, "nothing reached the store");
    assert_eq!(
        database
            .count("SELECT count(*) FROM upload_queue WHERE lease_owner IS NULL")
            .await,
        distinct.len() as i64
    );
    // Another worker (here: a scan --wait of the same roots) does the uploads.
    let summary = fms.scan(0);
    assert_eq!(summary["uploaded"], distinct.len() as u64);
    assert_eq!(garage.store_requests(), distinct.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlock_in_a_registration_batch_is_retried_and_the_scan_succeeds() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    let manifest = make_corpus(&tree, 300, &["--large", "0"]);
    let database = Database::create("deadlock").await;
    let garage = Garage::start();
    let fms = Fms::new(&database, &garage.storage_toml(), &[("docs", &tree)], "");
    // PostgreSQL itself raises 40P01 in the first three batches' transactions.
    let output = fms
        .command(&["scan", "--wait", "--json"])
        .env("FILEMETASYNC_TEST_DEADLOCK", "3")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{}", tail(&stdout));
    let summary = summary_of(&stdout);
    assert_eq!(summary["totals"]["retried_batches"], 3, "{summary}");
    assert_eq!(summary["totals"]["failed"], 0);
    assert_eq!(database.live_files("docs").await, expected_files(&manifest));
}

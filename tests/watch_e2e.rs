//! The watcher end to end, in poll mode and in native mode, against the real PostgreSQL and
//! Garage: latency of every kind of change, slow writes, an Office-style save, a root that
//! goes away, and the scheduled reconciliation as the safety net.

mod common;

use common::daemon::http_section;
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime};

const DEBOUNCE_S: f64 = 1.0;
const POLL_S: f64 = 1.0;
/// The bound of the issue: debounce + poll interval + 1 s.
const BOUND_S: f64 = DEBOUNCE_S + POLL_S + 1.0;

fn watch_toml(mode: &str, http: &str, schedule: &str) -> String {
    format!(
        "[watch]\nmode = \"{mode}\"\npoll_interval = \"{POLL_S}s\"\ndebounce = \"{DEBOUNCE_S}s\"\n\
         [scan]\nschedule = \"{schedule}\"\n{http}"
    )
}

/// Polls every 50 ms until `expected(path)` holds for every path, recording when each did;
/// returns the latencies (seconds after `since`), sorted.
async fn latencies(
    database: &Database,
    paths: &[String],
    since: Instant,
    expected: impl Fn(&BTreeMap<String, (i64, String)>, &str) -> bool,
) -> Vec<f64> {
    let mut done: BTreeMap<String, f64> = BTreeMap::new();
    let deadline = since + Duration::from_secs(30);
    while done.len() < paths.len() && Instant::now() < deadline {
        let live = database.live_files("docs").await;
        let now = since.elapsed().as_secs_f64();
        for path in paths {
            if !done.contains_key(path) && expected(&live, path) {
                done.insert(path.clone(), now);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        done.len(),
        paths.len(),
        "not every change reached the catalog within 30 s"
    );
    let mut values: Vec<f64> = done.into_values().collect();
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values
}

/// The daemon's log lines about uploads, for a failure message.
fn upload_log_lines(daemon: &common::daemon::Daemon) -> String {
    let lines: Vec<String> = daemon
        .log_text()
        .lines()
        .filter(|line| line.contains("upload"))
        .map(str::to_owned)
        .collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn p95(values: &[f64]) -> f64 {
    values[((values.len() as f64 * 0.95).ceil() as usize).saturating_sub(1)]
}

fn sha(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

async fn every_kind_of_change_reaches_the_catalog_in_time(mode: &str) {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    let dir = tree.join("work");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(tree.join("seed.txt"), b"seed").unwrap();
    let database = Database::create(&format!("watch{mode}")).await;
    let garage = Garage::start();
    let (http, port) = http_section();
    let fms = Fms::new(
        &database,
        &garage.storage_toml(),
        &[("docs", &tree)],
        &watch_toml(mode, &http, "0 3 * * *"),
    );
    let daemon = fms.start_daemon(port, &[], &[]);
    daemon.wait_until("the first scan", Duration::from_secs(30), || {
        !daemon.events_named("scan finished").is_empty()
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let names: Vec<String> = (0..50).map(|i| format!("work/file-{i:02}.txt")).collect();
    let mut report = Vec::new();

    // Created.
    let since = Instant::now();
    for (i, name) in names.iter().enumerate() {
        std::fs::write(tree.join(name), format!("created {i}")).unwrap();
    }
    let created = latencies(&database, &names, since, |live, path| live.contains_key(path)).await;
    report.push(("created", created));

    // Modified in place.
    let since = Instant::now();
    for (i, name) in names.iter().enumerate() {
        std::fs::write(tree.join(name), format!("modified {i}!")).unwrap();
    }
    let expect_content = |prefix: &'static str, suffix: &'static str| {
        move |live: &BTreeMap<String, (i64, String)>, path: &str| {
            let i: usize = path[10..12].parse().unwrap();
            live.get(path)
                .is_some_and(|(_, s)| *s == sha(format!("{prefix} {i}{suffix}").as_bytes()))
        }
    };
    report.push((
        "modified",
        latencies(&database, &names, since, expect_content("modified", "!")).await,
    ));

    // Modified twice within one second, same size: the second write must win.
    let since = Instant::now();
    for (i, name) in names.iter().enumerate() {
        std::fs::write(tree.join(name), format!("twice-a {i}")).unwrap();
        std::fs::write(tree.join(name), format!("twice-b {i}")).unwrap();
    }
    report.push((
        "modified twice in a second",
        latencies(&database, &names, since, expect_content("twice-b", "")).await,
    ));

    // Modified with the mtime set a year back.
    let since = Instant::now();
    let year_ago = SystemTime::now() - Duration::from_secs(365 * 86400);
    for (i, name) in names.iter().enumerate() {
        std::fs::write(tree.join(name), format!("backdated {i}")).unwrap();
        std::fs::File::options()
            .write(true)
            .open(tree.join(name))
            .unwrap()
            .set_modified(year_ago)
            .unwrap();
    }
    report.push((
        "modified, mtime set backwards",
        latencies(&database, &names, since, expect_content("backdated", "")).await,
    ));

    // Renamed into another folder.
    std::fs::create_dir_all(tree.join("moved")).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let moved: Vec<String> = names.iter().map(|n| n.replace("work/", "moved/")).collect();
    let moves_before = database
        .count("SELECT count(*) FROM file_events WHERE kind = 'moved'")
        .await;
    let since = Instant::now();
    for (from, to) in names.iter().zip(&moved) {
        std::fs::rename(tree.join(from), tree.join(to)).unwrap();
    }
    let renamed = latencies(&database, &moved, since, |live, path| {
        live.contains_key(path) && !live.contains_key(&path.replace("moved/", "work/"))
    })
    .await;
    report.push(("renamed", renamed));
    assert_eq!(
        database
            .count("SELECT count(*) FROM file_events WHERE kind = 'moved'")
            .await
            - moves_before,
        50,
        "each rename is one move event"
    );

    // Deleted.
    let since = Instant::now();
    for path in &moved {
        std::fs::remove_file(tree.join(path)).unwrap();
    }
    report.push((
        "deleted",
        latencies(&database, &moved, since, |live, path| !live.contains_key(path)).await,
    ));

    for (kind, values) in &report {
        eprintln!(
            "{mode}: {kind}: p95 {:.2} s, max {:.2} s over {} changes (bound {BOUND_S} s)",
            p95(values),
            values.last().unwrap(),
            values.len()
        );
        assert!(
            p95(values) <= BOUND_S,
            "{mode} {kind}: p95 {:.2} s > {BOUND_S} s",
            p95(values)
        );
    }
    // Every content is uploaded right after.
    let deadline = Instant::now() + Duration::from_secs(20);
    while database.count("SELECT count(*) FROM upload_queue").await > 0 {
        if Instant::now() >= deadline {
            panic!(
                "uploads did not follow: rows still queued 20 s after the last change:\n{}\nupload log lines:\n{}",
                database.queue_rows().await,
                upload_log_lines(&daemon)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let uploaded: BTreeSet<String> = {
        let rows = database
            .client
            .query("SELECT sha256 FROM file_contents WHERE uploaded_at IS NOT NULL", &[])
            .await
            .unwrap();
        rows.iter().map(|r| r.get(0)).collect()
    };
    assert_eq!(assert_store_matches_keys(&garage.store()).await, uploaded);
}

async fn slow_writes_and_office_saves_give_one_change(mode: &str) {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("report.docx"), b"version 1 of the report").unwrap();
    let database = Database::create(&format!("slow{mode}")).await;
    let garage = Garage::start();
    let (http, port) = http_section();
    let fms = Fms::new(
        &database,
        &garage.storage_toml(),
        &[("docs", &tree)],
        &watch_toml(mode, &http, "0 3 * * *"),
    );
    let daemon = fms.start_daemon(port, &[], &[]);
    daemon.wait_until("the first scan", Duration::from_secs(30), || {
        !daemon.events_named("scan finished").is_empty()
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let hashed_before = daemon.metric("fms_files_hashed_total").unwrap();

    // Written slowly over 10 s: hashed once, after it stops changing.
    let mut content = Vec::new();
    {
        use std::io::Write;
        let mut file = std::fs::File::create(tree.join("slow.bin")).unwrap();
        for chunk in 0..20 {
            let piece = vec![chunk as u8; 50_000];
            file.write_all(&piece).unwrap();
            file.flush().unwrap();
            content.extend_from_slice(&piece);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while !database.live_files("docs").await.contains_key("slow.bin") {
        assert!(Instant::now() < deadline, "slow.bin never registered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        database.live_files("docs").await["slow.bin"].1,
        sha(&content),
        "the final content"
    );
    assert_eq!(
        daemon.metric("fms_files_hashed_total").unwrap() - hashed_before,
        1.0,
        "hashed once, after it stopped changing"
    );
    assert_eq!(
        database
            .count("SELECT count(*) FROM file_events WHERE new_path = 'slow.bin'")
            .await,
        1
    );

    // An Office-style save: new content to a temp file, the original renamed to a backup,
    // the temp file renamed over the original, the backup deleted.
    let events_before = database.count("SELECT count(*) FROM file_events").await;
    std::fs::write(tree.join("report.docx.tmp4711"), b"version 2 of the report, longer").unwrap();
    std::fs::rename(tree.join("report.docx"), tree.join("report.docx.backup")).unwrap();
    std::fs::rename(tree.join("report.docx.tmp4711"), tree.join("report.docx")).unwrap();
    std::fs::remove_file(tree.join("report.docx.backup")).unwrap();
    let expected = sha(b"version 2 of the report, longer");
    let deadline = Instant::now() + Duration::from_secs(15);
    while database.live_files("docs").await["report.docx"].1 != expected {
        assert!(Instant::now() < deadline, "the save never reached the catalog");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rows = database
        .client
        .query(
            "SELECT kind, coalesce(old_path, ''), coalesce(new_path, '') FROM file_events ORDER BY id OFFSET $1",
            &[&events_before],
        )
        .await
        .unwrap();
    let events: Vec<(String, String, String)> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    assert_eq!(
        events,
        [(
            "modified".to_owned(),
            "report.docx".to_owned(),
            "report.docx".to_owned()
        )],
        "one modification of the original, nothing for the temporary files"
    );
    let paths: Vec<String> = database.live_files("docs").await.into_keys().collect();
    assert_eq!(paths, ["report.docx", "slow.bin"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_mode_every_kind_of_change_within_debounce_plus_poll_plus_1s() {
    every_kind_of_change_reaches_the_catalog_in_time("poll").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_mode_every_kind_of_change_within_debounce_plus_poll_plus_1s() {
    every_kind_of_change_reaches_the_catalog_in_time("native").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_mode_slow_write_hashed_once_and_office_save_is_one_modification() {
    slow_writes_and_office_saves_give_one_change("poll").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_mode_slow_write_hashed_once_and_office_save_is_one_modification() {
    slow_writes_and_office_saves_give_one_change("native").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_that_goes_away_deletes_nothing_and_changes_are_found_when_it_returns() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("share");
    std::fs::create_dir_all(&tree).unwrap();
    for i in 0..10 {
        std::fs::write(tree.join(format!("doc-{i}.txt")), format!("doc {i}")).unwrap();
    }
    let database = Database::create("goneroot").await;
    let garage = Garage::start();
    let (http, port) = http_section();
    let fms = Fms::new(
        &database,
        &garage.storage_toml(),
        &[("docs", &tree)],
        &watch_toml("poll", &http, "0 3 * * *"),
    );
    let daemon = fms.start_daemon(port, &[], &[]);
    daemon.wait_until("the first scan", Duration::from_secs(30), || {
        !daemon.events_named("scan finished").is_empty()
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Unmounted: the folder is gone. Then "mounted" again empty: an empty mount point.
    let away = work.path().join("away");
    std::fs::rename(&tree, &away).unwrap();
    daemon.wait_until("the root is reported unavailable", Duration::from_secs(10), || {
        daemon
            .http("/healthz")
            .is_some_and(|(status, body)| status == 503 && body.contains("root docs: unavailable"))
    });
    std::fs::create_dir_all(&tree).unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        database.live_files("docs").await.len(),
        10,
        "no soft delete while it is away or empty"
    );
    assert_eq!(
        database
            .count("SELECT count(*) FROM file_events WHERE kind = 'deleted'")
            .await,
        0
    );
    assert!(!daemon.events_named("root unavailable").is_empty());
    daemon.wait_until("status shows the root", Duration::from_secs(10), || {
        String::from_utf8_lossy(&fms.run(&["status"]).stdout).contains("root docs")
    });

    // Changes made meanwhile, then the share comes back.
    std::fs::remove_file(away.join("doc-0.txt")).unwrap();
    std::fs::write(away.join("doc-1.txt"), b"changed while away").unwrap();
    std::fs::write(away.join("new.txt"), b"written while away").unwrap();
    std::fs::remove_dir(&tree).unwrap();
    std::fs::rename(&away, &tree).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let live = database.live_files("docs").await;
        if !live.contains_key("doc-0.txt")
            && live
                .get("doc-1.txt")
                .is_some_and(|(_, s)| *s == sha(b"changed while away"))
            && live.contains_key("new.txt")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "changes made while away were not found: {live:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    daemon.wait_until("healthz is ok again", Duration::from_secs(10), || {
        daemon.http("/healthz").is_some_and(|(status, _)| status == 200)
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_watcher_silenced_the_scheduled_scan_catches_every_change() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("a.txt"), b"a").unwrap();
    std::fs::write(tree.join("b.txt"), b"b").unwrap();
    let database = Database::create("silenced").await;
    let garage = Garage::start();
    let (http, port) = http_section();
    let fms = Fms::new(
        &database,
        &garage.storage_toml(),
        &[("docs", &tree)],
        &watch_toml("poll", &http, "*/5 * * * * *"),
    );
    let daemon = fms.start_daemon(port, &[], &[("FILEMETASYNC_TEST_NO_WATCH_DELIVERY", "1")]);
    daemon.wait_until("the first scan", Duration::from_secs(30), || {
        !daemon.events_named("scan finished").is_empty()
    });
    std::fs::write(tree.join("a.txt"), b"a, changed").unwrap();
    std::fs::rename(tree.join("b.txt"), tree.join("b-renamed.txt")).unwrap();
    std::fs::write(tree.join("c.txt"), b"c").unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let live = database.live_files("docs").await;
        let paths: Vec<&str> = live.keys().map(String::as_str).collect();
        if paths == ["a.txt", "b-renamed.txt", "c.txt"] && live["a.txt"].1 == sha(b"a, changed") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the scheduled scan missed something: {live:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        daemon.metric("fms_paths_synced_total"),
        Some(0.0),
        "the watcher delivered nothing"
    );
    assert!(!daemon.events_named("scheduled scan due").is_empty());
}

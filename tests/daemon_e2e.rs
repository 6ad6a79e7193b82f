//! `filemetasync run` end to end: supervision, outages, panics, shutdown, upload workers and
//! the schedule, against the real PostgreSQL and a real Garage.

mod common;

use common::daemon::{http_section, Daemon, PrivatePostgres};
use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

/// Polls `condition` every 200 ms until it holds; panics with the daemon's log after `timeout`.
async fn until(daemon: &Daemon, what: &str, timeout: Duration, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}\nlog tail:\n{}",
            tail(&daemon.log_text())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Everything registered and uploaded: the catalog equals `expected`, the queue is empty.
async fn synced(database: &Database, expected: &std::collections::BTreeMap<String, (i64, String)>) -> bool {
    database.synced("docs", expected).await
}

/// Restart events of `actor`, in order.
fn restarts_of(daemon: &Daemon, actor: &str) -> Vec<Value> {
    daemon
        .events_named("actor restarted")
        .into_iter()
        .filter(|event| event["actor"] == actor)
        .collect()
}

fn write_files(dir: &Path, prefix: &str, count: usize) -> Vec<String> {
    std::fs::create_dir_all(dir).unwrap();
    (0..count)
        .map(|index| {
            let name = format!("{prefix}-{index}.txt");
            std::fs::write(
                dir.join(&name),
                format!("{prefix} file {index}, written while the test ran"),
            )
            .unwrap();
            name
        })
        .collect()
}

/// The expected catalog of `tree` as the manifest says plus whatever the test wrote since.
fn expected_now(
    tree: &Path,
    manifest: &[ManifestEntry],
    extra_dir: &str,
) -> std::collections::BTreeMap<String, (i64, String)> {
    use sha2::{Digest, Sha256};
    let mut expected = expected_files(manifest);
    let Ok(entries) = std::fs::read_dir(tree.join(extra_dir)) else {
        return expected;
    };
    for entry in entries {
        let entry = entry.unwrap();
        let bytes = std::fs::read(entry.path()).unwrap();
        let path = format!("{extra_dir}/{}", entry.file_name().to_string_lossy());
        expected.insert(path, (bytes.len() as i64, hex::encode(Sha256::digest(&bytes))));
    }
    expected
}

const FAST_SCHEDULE: &str = "[scan]\nschedule = \"*/5 * * * * *\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_restarts_the_catalog_actors_with_backoff_and_loses_nothing() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    let manifest = make_corpus(&tree, 200, &["--large", "0"]);
    let postgres = tokio::task::spawn_blocking(PrivatePostgres::start).await.unwrap();
    let database = Database::create_on(&postgres.admin_url(), "pgdown").await;
    let garage = Garage::start();
    let (http, port) = http_section();
    let fms = Fms::new(
        &database,
        &garage.storage_toml(),
        &[("docs", &tree)],
        &format!("{FAST_SCHEDULE}{http}"),
    );
    let mut daemon = fms.start_daemon(port, &[], &[]);
    let expected = expected_files(&manifest);
    until(&daemon, "the corpus is synced", Duration::from_secs(90), async || {
        synced(&database, &expected).await
    })
    .await;

    postgres.stop_server();
    let outage = Instant::now();
    write_files(&tree.join("during-outage"), "outage", 25);
    while outage.elapsed() < Duration::from_secs(20) {
        assert!(daemon.is_running(), "the daemon exited while PostgreSQL was down");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (status, body) = daemon.http("/healthz").expect("the endpoint keeps answering");
    assert_eq!(status, 503, "healthz during the outage: {body}");
    assert!(body.contains("catalog"), "healthz names the catalog: {body}");
    assert_eq!(
        fms.run(&["health"]).status.code(),
        Some(1),
        "the container's health check fails"
    );
    postgres.start_server();
    let database = Database::connect(database.url.clone()).await;

    let expected = expected_now(&tree, &manifest, "during-outage");
    assert_eq!(expected.len(), expected_files(&manifest).len() + 25);
    until(
        &daemon,
        "the files written during the outage are synced",
        Duration::from_secs(120),
        async || synced(&database, &expected).await,
    )
    .await;
    assert!(daemon.is_running());

    for actor in ["registrar", "scanner", "uploader"] {
        let restarts = restarts_of(&daemon, actor);
        assert!(
            restarts.len() >= 2,
            "{actor} restarted {} times: {restarts:?}",
            restarts.len()
        );
        let backoffs: Vec<u64> = restarts.iter().map(|e| e["backoff_ms"].as_u64().unwrap()).collect();
        assert!(
            backoffs.windows(2).all(|pair| pair[1] >= pair[0]) && backoffs.last() > backoffs.first(),
            "{actor}'s backoff grows: {backoffs:?}"
        );
        let counts: Vec<u64> = restarts.iter().map(|e| e["restart_count"].as_u64().unwrap()).collect();
        assert_eq!(
            counts,
            (1..=counts.len() as u64).collect::<Vec<_>>(),
            "{actor}'s restart count"
        );
    }
    for hasher in ["hasher-0", "hasher-1"] {
        assert!(
            restarts_of(&daemon, hasher).is_empty(),
            "{hasher} does not need the catalog and kept running"
        );
    }
    let stored = assert_store_matches_keys(&garage.store()).await;
    let distinct: BTreeSet<String> = expected.values().map(|(_, sha)| sha.clone()).collect();
    assert_eq!(stored, distinct);
    assert_eq!(garage.store_requests(), distinct.len() as u64, "nothing uploaded twice");
    until(&daemon, "healthz is ok again", Duration::from_secs(30), async || {
        daemon.http("/healthz").is_some_and(|(status, _)| status == 200)
    })
    .await;
    assert_eq!(
        fms.run(&["health"]).status.code(),
        Some(0),
        "the container's health check passes"
    );
    let (code, took) = daemon.terminate();
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garage_outage_restarts_only_the_uploader_and_every_file_is_stored_after() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    let manifest = make_corpus(&tree, 150, &["--large", "0"]);
    let database = Database::create("s3down").await;
    let mut garage = Garage::start();
    let (http, port) = http_section();
    let fms = Fms::new(
        &database,
        &garage.storage_toml(),
        &[("docs", &tree)],
        &format!("{FAST_SCHEDULE}{http}"),
    );
    let mut daemon = fms.start_daemon(port, &[], &[]);
    until(&daemon, "the corpus is synced", Duration::from_secs(90), async || {
        synced(&database, &expected_files(&manifest)).await
    })
    .await;

    // Garage's request counter starts again from zero when it restarts.
    let stored_before = garage.store_requests();
    garage.stop();
    let outage = Instant::now();
    write_files(&tree.join("during-outage"), "outage", 20);
    let expected = expected_now(&tree, &manifest, "during-outage");
    until(
        &daemon,
        "the new files are registered while the store is down",
        Duration::from_secs(30),
        async || database.live_files("docs").await == expected,
    )
    .await;
    // The uploader meets the outage once it has leased the new files; wait for a second
    // restart (a busy machine may take longer than a fixed pause to get there), and at
    // least 20 s of outage.
    until(
        &daemon,
        "the uploader has restarted twice while the store is down",
        Duration::from_secs(90),
        async || restarts_of(&daemon, "uploader").len() >= 2 && outage.elapsed() >= Duration::from_secs(20),
    )
    .await;
    assert!(daemon.is_running(), "the daemon exited while Garage was down");
    assert_eq!(
        database
            .count("SELECT count(*) FROM file_contents WHERE uploaded_at IS NULL")
            .await,
        20,
        "nothing can be stored while the store is down"
    );
    garage.restart();
    until(
        &daemon,
        "everything is stored after Garage returns",
        Duration::from_secs(120),
        async || synced(&database, &expected).await,
    )
    .await;

    let restarts = restarts_of(&daemon, "uploader");
    assert!(restarts.len() >= 2, "uploader restarts: {restarts:?}");
    let backoffs: Vec<u64> = restarts.iter().map(|e| e["backoff_ms"].as_u64().unwrap()).collect();
    assert!(
        backoffs.last() > backoffs.first(),
        "uploader backoff grows: {backoffs:?}"
    );
    assert!(
        restarts
            .iter()
            .all(|e| e["reason"].as_str().unwrap().contains("unreachable")),
        "the reason names the store: {restarts:?}"
    );
    for actor in ["scanner", "registrar", "hasher-0", "hasher-1"] {
        assert!(restarts_of(&daemon, actor).is_empty(), "{actor} kept running");
    }
    assert_eq!(
        database
            .count("SELECT count(*) FROM upload_queue WHERE state = 'failed'")
            .await,
        0,
        "an outage spends no item's attempts"
    );
    let distinct: BTreeSet<String> = expected.values().map(|(_, sha)| sha.clone()).collect();
    assert_eq!(assert_store_matches_keys(&garage.store()).await, distinct);
    assert_eq!(
        stored_before + garage.store_requests(),
        distinct.len() as u64,
        "nothing uploaded twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_in_a_handler_and_in_a_hashing_thread_restart_only_that_actor() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    let manifest = make_corpus(&tree, 400, &["--large", "0"]);
    let victim = manifest.iter().find(|entry| !entry.ignored).unwrap().path.clone();
    let database = Database::create("panics").await;
    let garage = Garage::start();
    let (http, port) = http_section();
    let fms = Fms::new(
        &database,
        &garage.storage_toml(),
        &[("docs", &tree)],
        &format!("[hash]\nworkers = 3\n{http}"),
    );
    let hook = format!("hasher:{victim},registrar");
    let daemon = fms.start_daemon(port, &[], &[("FILEMETASYNC_TEST_PANIC", &hook)]);
    let expected = expected_files(&manifest);
    until(
        &daemon,
        "the corpus is synced despite the panics",
        Duration::from_secs(120),
        async || synced(&database, &expected).await,
    )
    .await;

    let restarted: Vec<Value> = daemon.events_named("actor restarted");
    let hasher_restarts: Vec<&Value> = restarted
        .iter()
        .filter(|e| e["actor"].as_str().unwrap().starts_with("hasher-"))
        .collect();
    assert_eq!(hasher_restarts.len(), 1, "one hasher restarted: {restarted:?}");
    assert!(hasher_restarts[0]["reason"]
        .as_str()
        .unwrap()
        .contains("hashing thread panicked"));
    let registrar = restarts_of(&daemon, "registrar");
    assert_eq!(registrar.len(), 1, "{restarted:?}");
    assert!(registrar[0]["reason"].as_str().unwrap().starts_with("panic: test hook"));
    assert_eq!(restarted.len(), 2, "no other actor restarted: {restarted:?}");
    assert_eq!(daemon.metric("fms_hashers"), Some(3.0), "the pool keeps its size");
    for index in 0..3 {
        let series = format!("fms_actor_up{{actor=\"hasher-{index}\"}}");
        assert_eq!(daemon.metric(&series), Some(1.0), "{series}");
    }
    let distinct: BTreeSet<String> = expected.values().map(|(_, sha)| sha.clone()).collect();
    assert_eq!(assert_store_matches_keys(&garage.store()).await, distinct);
    assert_eq!(garage.store_requests(), distinct.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_large_sync_exits_within_10s_and_the_next_start_finishes() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    let manifest = make_corpus(&tree, 6000, &["--large", "2", "--large-mib", "24"]);
    let expected = expected_files(&manifest);
    let distinct: BTreeSet<String> = expected.values().map(|(_, sha)| sha.clone()).collect();
    let database = Database::create("sigterm").await;
    let garage = Garage::start();
    let (http, port) = http_section();
    let fms = Fms::new(
        &database,
        &garage.storage_toml(),
        &[("docs", &tree)],
        &format!("[upload]\nconcurrency = 4\n{http}"),
    );
    let daemon = fms.start_daemon(port, &[], &[]);
    // Progress is visible while it runs, in /metrics and in `status`.
    until(&daemon, "uploads are under way", Duration::from_secs(60), async || {
        daemon.metric("fms_uploads_total").unwrap_or(0.0) >= 20.0
    })
    .await;
    let samples: Vec<(f64, f64)> = {
        let mut samples = Vec::new();
        for _ in 0..3 {
            let sample = (
                daemon.metric("fms_files_hashed_total").unwrap(),
                daemon.metric("fms_uploads_total").unwrap(),
            );
            samples.push(sample);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        samples
    };
    assert!(
        samples
            .windows(2)
            .any(|pair| pair[1].0 > pair[0].0 || pair[1].1 > pair[0].1),
        "progress in /metrics (hashed, uploaded): {samples:?}"
    );
    // `status` shows the daemon and its actors from its heartbeat (every 5 s).
    let mut status = Value::Null;
    until(
        &daemon,
        "status shows the daemon's actors",
        Duration::from_secs(15),
        async || {
            status = serde_json::from_slice(&fms.run(&["status", "--json"]).stdout).unwrap();
            status["processes"][0]["actors"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
        },
    )
    .await;
    let process = &status["processes"][0];
    assert_eq!(process["state"], "running", "{status:#}");
    let actors: Vec<(&str, &str)> = process["actors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["actor"].as_str().unwrap(), a["state"].as_str().unwrap()))
        .collect();
    for actor in ["scanner", "registrar", "uploader", "hasher-0"] {
        assert!(actors.contains(&(actor, "running")), "{actor} in {actors:?}");
    }
    assert!(
        database.count("SELECT count(*) FROM upload_queue").await > 0,
        "the sync is still going when SIGTERM comes"
    );

    let (code, took) = daemon.terminate();
    eprintln!("SIGTERM during the sync: exit {code:?} after {took:?}");
    assert_eq!(code, Some(0), "exit code after SIGTERM");
    assert!(took < Duration::from_secs(10), "SIGTERM to exit took {took:?}");
    assert_eq!(
        database
            .count("SELECT count(*) FROM upload_queue WHERE lease_owner IS NOT NULL AND lease_expires_at > now()")
            .await,
        0,
        "no lease is left behind"
    );
    let daemon = fms.start_daemon(port, &[], &[]);
    until(
        &daemon,
        "the second start finishes the sync",
        Duration::from_secs(300),
        async || synced(&database, &expected).await,
    )
    .await;
    assert_eq!(assert_store_matches_keys(&garage.store()).await, distinct);
    assert_eq!(garage.store_requests(), distinct.len() as u64, "nothing uploaded twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_upload_workers_share_one_queue_without_double_uploads() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    let manifest = make_corpus(&tree, 2000, &["--large", "0"]);
    let expected = expected_files(&manifest);
    let distinct: BTreeSet<String> = expected.values().map(|(_, sha)| sha.clone()).collect();
    let database = Database::create("workers").await;
    let garage = Garage::start();
    let fms = Fms::new(
        &database,
        &garage.storage_toml(),
        &[("docs", &tree)],
        "[upload]\nconcurrency = 4\n",
    );
    fms.scan_with(&["scan", "--no-upload", "--json"], 0);
    assert_eq!(
        database.count("SELECT count(*) FROM upload_queue").await,
        distinct.len() as i64
    );
    // Each worker its own configuration, differing only in the HTTP port.
    let workers: Vec<(Fms, u16)> = (0..2)
        .map(|_| {
            let (http, port) = http_section();
            let config = Fms::new(
                &database,
                &garage.storage_toml(),
                &[("docs", &tree)],
                &format!("[upload]\nconcurrency = 4\n{http}"),
            );
            (config, port)
        })
        .collect();
    let daemons: Vec<Daemon> = workers
        .iter()
        .map(|(config, port)| config.start_daemon(*port, &["--role", "upload"], &[]))
        .collect();
    until(
        &daemons[0],
        "the queue is drained",
        Duration::from_secs(180),
        async || synced(&database, &expected).await,
    )
    .await;
    let uploaded: Vec<f64> = daemons
        .iter()
        .map(|daemon| daemon.metric("fms_uploads_total").unwrap())
        .collect();
    assert!(uploaded.iter().all(|n| *n > 0.0), "both workers uploaded: {uploaded:?}");
    assert_eq!(uploaded.iter().sum::<f64>() as usize, distinct.len(), "{uploaded:?}");
    assert_eq!(assert_store_matches_keys(&garage.store()).await, distinct);
    assert_eq!(
        garage.store_requests(),
        distinct.len() as u64,
        "no content uploaded twice"
    );
    for daemon in &daemons {
        assert!(
            daemon.events_named("scan started").is_empty(),
            "an upload worker does not scan"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cron_schedule_fires_on_time_and_never_overlaps() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    write_files(&tree.join("first"), "first", 5);
    let database = Database::create("cron").await;
    let garage = Garage::start();
    let (http, port) = http_section();
    let fms = Fms::new(
        &database,
        &garage.storage_toml(),
        &[("docs", &tree)],
        &format!("[scan]\nschedule = \"*/3 * * * * *\"\ntimezone = \"Europe/Berlin\"\non_start = false\n{http}"),
    );
    let daemon = fms.start_daemon(port, &[], &[]);
    until(
        &daemon,
        "three scheduled scans have run",
        Duration::from_secs(20),
        async || daemon.events_named("scheduled scan due").len() >= 3,
    )
    .await;
    let due = daemon.events_named("scheduled scan due");
    for event in &due {
        let scheduled = event["scheduled_for"].as_str().unwrap();
        let seconds: u32 = scheduled[17..19].parse().unwrap();
        assert_eq!(seconds % 3, 0, "fires on the schedule's seconds: {scheduled}");
        assert!(event["late_ms"].as_i64().unwrap() < 1000, "on time: {event}");
    }
    let starts = daemon.events_named("scan started");
    assert!(
        starts.iter().all(|e| e["trigger"] == "schedule"),
        "on_start = false: {starts:?}"
    );
    assert_eq!(database.live_files("docs").await.len(), 5);
    write_files(&tree.join("later"), "later", 3);
    until(
        &daemon,
        "the next scheduled scan registers new files",
        Duration::from_secs(10),
        async || database.live_files("docs").await.len() == 8,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_scan_never_overlaps_a_running_one() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    let manifest = make_corpus(&tree, 6000, &["--large", "1", "--large-mib", "64"]);
    let database = Database::create("overlap").await;
    let garage = Garage::start();
    let (http, port) = http_section();
    // A tick every second while the first scan takes several.
    let fms = Fms::new(
        &database,
        &garage.storage_toml(),
        &[("docs", &tree)],
        &format!("[scan]\nschedule = \"* * * * * *\"\n[hash]\nworkers = 1\n{http}"),
    );
    let daemon = fms.start_daemon(port, &[], &[]);
    let expected = expected_files(&manifest);
    until(&daemon, "the corpus is synced", Duration::from_secs(180), async || {
        synced(&database, &expected).await
    })
    .await;
    let events: Vec<String> = daemon
        .events()
        .into_iter()
        .filter(|e| e["actor"] == "scanner" && e.get("root").is_none())
        .filter_map(|e| e["msg"].as_str().map(str::to_owned))
        .filter(|msg| msg == "scan started" || msg == "scan finished" || msg == "scan skipped")
        .collect();
    let mut running = false;
    for msg in &events {
        match msg.as_str() {
            "scan started" => {
                assert!(!running, "a scan started while another ran: {events:?}");
                running = true;
            }
            "scan finished" => running = false,
            _ => assert!(running, "skipped although nothing ran: {events:?}"),
        }
    }
    assert!(
        events.iter().any(|msg| msg == "scan skipped"),
        "ticks during the long first scan were skipped: {events:?}"
    );
}

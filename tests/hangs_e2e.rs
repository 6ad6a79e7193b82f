//! Nothing hangs unseen: a front that takes connections and requests and never answers, put
//! before Garage and, separately, before PostgreSQL while the daemon syncs. The actor waiting
//! on it fails at the configured timeout with a reason that names it and restarts with
//! backoff; no lease stays held; once the front passes requests on again, everything syncs.

mod common;

use common::daemon::{http_section, Daemon};
use common::front::{Front, FrontOptions, TcpFront};
use common::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

async fn until(daemon: &Daemon, what: &str, timeout: Duration, mut condition: impl AsyncFnMut() -> bool) {
    daemon.wait_for(what, timeout, async || condition().await).await;
}

/// The tree as it is on disk now (the manifest's files plus what the test wrote).
fn expected_now(
    tree: &std::path::Path,
    manifest: &[ManifestEntry],
    extra: &[(String, Vec<u8>)],
) -> BTreeMap<String, (i64, String)> {
    use sha2::{Digest, Sha256};
    let mut expected = expected_files(manifest);
    for (path, bytes) in extra {
        assert!(tree.join(path).exists());
        expected.insert(path.clone(), (bytes.len() as i64, hex::encode(Sha256::digest(bytes))));
    }
    expected
}

fn write_new_files(tree: &std::path::Path, prefix: &str, count: usize) -> Vec<(String, Vec<u8>)> {
    std::fs::create_dir_all(tree.join(prefix)).unwrap();
    (0..count)
        .map(|index| {
            let path = format!("{prefix}/{prefix}-{index}.txt");
            let bytes = format!("{prefix} {index}: written while the front was silent").into_bytes();
            std::fs::write(tree.join(&path), &bytes).unwrap();
            (path, bytes)
        })
        .collect()
}

async fn synced(database: &Database, expected: &BTreeMap<String, (i64, String)>) -> bool {
    database.synced("docs", expected).await
}

/// Restarts of `actor` whose reason contains `needle`.
fn restarts_naming(daemon: &Daemon, actor: &str, needle: &str) -> usize {
    daemon
        .events_named("actor restarted")
        .iter()
        .filter(|event| event["actor"] == actor && event["reason"].as_str().unwrap_or("").contains(needle))
        .count()
}

const FAST: &str = "[watch]\nmode = \"poll\"\npoll_interval = \"1s\"\ndebounce = \"1s\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_never_answers_restarts_the_uploader_at_its_timeout_and_nothing_is_lost() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    let manifest = make_corpus(&tree, 100, &["--large", "0"]);
    let database = Database::create("silent_store").await;
    let garage = Garage::start();
    let front = Front::start(garage.upstream(), FrontOptions::default());
    let storage = garage.storage_toml_at(&front.endpoint) + "timeout = \"3s\"\n";
    let (http, port) = http_section();
    let fms = Fms::new(&database, &storage, &[("docs", &tree)], &format!("{FAST}{http}"));
    let mut daemon = fms.start_daemon(port, &[], &[]);
    let expected = expected_files(&manifest);
    until(&daemon, "the tree is synced", Duration::from_secs(90), async || {
        synced(&database, &expected).await
    })
    .await;

    front.set_silent(true);
    let silent_since = Instant::now();
    let written = write_new_files(&tree, "silent", 6);
    let expected = expected_now(&tree, &manifest, &written);
    until(
        &daemon,
        "the uploader restarts naming the timeout",
        Duration::from_secs(30),
        async || restarts_naming(&daemon, "uploader", "storage.timeout") >= 1,
    )
    .await;
    let first_restart = silent_since.elapsed();
    assert!(
        first_restart < Duration::from_secs(20),
        "restarted after {first_restart:?}"
    );
    until(
        &daemon,
        "the new files are registered",
        Duration::from_secs(30),
        async || database.live_files("docs").await == expected,
    )
    .await;
    assert_eq!(
        database
            .count("SELECT count(*) FROM upload_queue WHERE lease_owner IS NOT NULL AND lease_expires_at > now()")
            .await,
        0,
        "no lease held while the store does not answer"
    );
    assert!(daemon.is_running());

    front.set_silent(false);
    until(&daemon, "everything is stored", Duration::from_secs(120), async || {
        synced(&database, &expected).await
    })
    .await;
    let stored = assert_store_matches_keys(&garage.store()).await;
    for (_, sha256) in expected.values() {
        assert!(stored.contains(sha256), "{sha256} is stored");
    }
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_never_answers_restarts_its_actors_at_the_timeout_and_nothing_is_lost() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    let manifest = make_corpus(&tree, 100, &["--large", "0"]);
    let database = Database::create("silent_db").await;
    let garage = Garage::start();
    // The daemon reaches PostgreSQL only through the front.
    let front = TcpFrontHolder::start(&database.url);
    let url = url_through(&database.url, &front.front);
    let (http, port) = http_section();
    let fms = Fms::new(
        &Database::connect(url).await,
        &garage.storage_toml(),
        &[("docs", &tree)],
        &format!("{FAST}{http}"),
    );
    let text = std::fs::read_to_string(&fms.config).unwrap();
    let timeouts = "[database]\nconnect_timeout = \"3s\"\nstatement_timeout = \"3s\"\n";
    std::fs::write(&fms.config, text.replacen("[database]\n", timeouts, 1)).unwrap();
    let mut daemon = fms.start_daemon(port, &[], &[]);
    let expected = expected_files(&manifest);
    until(&daemon, "the tree is synced", Duration::from_secs(90), async || {
        synced(&database, &expected).await
    })
    .await;

    front.front.set_silent(true);
    let written = write_new_files(&tree, "silent", 6);
    let expected = expected_now(&tree, &manifest, &written);
    until(
        &daemon,
        "the catalog actors restart naming the timeout",
        Duration::from_secs(40),
        async || {
            restarts_naming(&daemon, "uploader", "did not answer within 3 s") >= 1
                || restarts_naming(&daemon, "registrar", "did not answer within 3 s") >= 1
                || restarts_naming(&daemon, "scanner", "did not answer within 3 s") >= 1
        },
    )
    .await;
    let (status, body) = daemon
        .http("/healthz")
        .expect("healthz answers while the database does not");
    assert_eq!(status, 503, "{body}");
    assert!(daemon.is_running());

    front.front.set_silent(false);
    until(
        &daemon,
        "everything written meanwhile is synced",
        Duration::from_secs(150),
        async || synced(&database, &expected).await,
    )
    .await;
    assert_eq!(
        database
            .count("SELECT count(*) FROM upload_queue WHERE lease_owner IS NOT NULL")
            .await,
        0,
        "no lease left"
    );
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0));
}

/// A TCP front before the PostgreSQL of a database URL.
struct TcpFrontHolder {
    front: TcpFront,
}

impl TcpFrontHolder {
    fn start(url: &str) -> TcpFrontHolder {
        let config: tokio_postgres::Config = url.parse().unwrap();
        let host = match &config.get_hosts()[0] {
            tokio_postgres::config::Host::Tcp(host) => host.clone(),
            other => panic!("a TCP database URL is needed, not {other:?}"),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let address = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
            .unwrap()
            .next()
            .unwrap();
        TcpFrontHolder {
            front: TcpFront::start(address),
        }
    }
}

/// `url` with its host and port replaced by the front's.
fn url_through(url: &str, front: &TcpFront) -> String {
    let (scheme_user, rest) = url.split_once('@').expect("postgres://user@host:port/db");
    let (_, database) = rest.split_once('/').unwrap();
    format!("{scheme_user}@127.0.0.1:{}/{database}", front.port)
}

/// PostgreSQL backends of `database` whose query is the test hook's sleep.
async fn sleeping_backends(database: &Database) -> i64 {
    database
        .count(
            "SELECT count(*) FROM pg_stat_activity
              WHERE datname = current_database() AND state = 'active'
                AND query LIKE '%test hook: slow batch%' AND pid <> pg_backend_pid()",
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_given_up_at_its_deadline_is_cancelled_on_the_server() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    let manifest = make_corpus(&tree, 40, &["--large", "0"]);
    let database = Database::create("cancelled").await;
    let garage = Garage::start();
    let fms = Fms::new(&database, &garage.storage_toml(), &[("docs", &tree)], "");
    // The first registration batch sleeps 60 s on the server; our deadline is 2 s.
    let started = Instant::now();
    let output = fms
        .command(&["scan", "--json"])
        .env("FMS_DATABASE__STATEMENT_TIMEOUT", "2s")
        .env("FILEMETASYNC_TEST_SLOW_BATCH", "60")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{}\n{}", tail(&stdout), tail(&stderr));
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
    let summary = summary_of(&stdout);
    let reason = summary["roots"][0]["message"].as_str().unwrap_or_default().to_owned();
    assert!(reason.contains("did not answer within 2 s"), "{summary}");
    // Without the cancel request the sleep would go on for the rest of its minute.
    let deadline = Instant::now() + Duration::from_secs(5);
    while sleeping_backends(&database).await > 0 {
        assert!(
            Instant::now() < deadline,
            "the abandoned statement still runs on the server"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The next scan (no hook) registers everything.
    let output = fms.command(&["scan", "--wait", "--json"]).output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        tail(&String::from_utf8_lossy(&output.stdout))
    );
    assert_eq!(database.live_files("docs").await, expected_files(&manifest));
}

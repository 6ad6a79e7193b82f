//! The fault suite: break things during a sync, recover, and check every invariant.
//! `scripts/test.sh` runs it in its short form (one round of each fault);
//! `scripts/faults --long` runs FMSTEST_FAULT_ROUNDS=10.
//!
//! After recovery, each time: the catalog equals the disk, the store equals the catalog
//! (`verify --deep` and a re-read of every object), no content was uploaded twice (Garage's
//! own request counter), no lease is left, no file is lost.

mod common;

use common::daemon::{http_section, Daemon, PrivatePostgres};
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

fn rounds() -> usize {
    std::env::var("FMSTEST_FAULT_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
}

/// A pseudo-random number in 0..n (no dependency; varied by time).
fn random_below(n: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    (nanos
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        >> 33)
        % n.max(1)
}

/// What the disk holds now (ignored names left out, as the scan sees them).
fn disk_now(tree: &Path) -> BTreeMap<String, (i64, String)> {
    use sha2::{Digest, Sha256};
    let ignore = fms_actors::fs::IgnoreMatcher::new::<&str>(&[]).unwrap();
    let outcome = fms_actors::fs::walk_root(tree, &ignore, &|_| {});
    outcome
        .files
        .into_iter()
        .map(|entry| {
            let bytes = std::fs::read(tree.join(&entry.relative)).unwrap();
            (
                entry.relative.to_string_lossy().into_owned(),
                (bytes.len() as i64, hex::encode(Sha256::digest(&bytes))),
            )
        })
        .collect()
}

/// Wait until the catalog equals the disk and the queue is empty.
async fn settle(database: &Database, tree: &Path, timeout: Duration) -> BTreeMap<String, (i64, String)> {
    let deadline = Instant::now() + timeout;
    loop {
        let disk = disk_now(tree);
        if database.live_files("docs").await == disk && database.count("SELECT count(*) FROM upload_queue").await == 0 {
            return disk;
        }
        assert!(Instant::now() < deadline, "the catalog never caught up with the disk");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every invariant, after a clean stop of the daemon.
/// `unseen`: PUTs Garage may have completed but not counted in what was read of its counter
/// before it was killed (at most the uploads in flight at each kill).
async fn check_invariants(
    fms: &Fms,
    database: &Database,
    garage: &Garage,
    tree: &Path,
    stored_before_restarts: u64,
    unseen: u64,
) {
    let disk = disk_now(tree);
    assert_eq!(
        database.live_files("docs").await,
        disk,
        "catalog equals disk: no file lost"
    );
    assert_eq!(
        database
            .count("SELECT count(*) FROM upload_queue WHERE lease_owner IS NOT NULL")
            .await,
        0,
        "no lease left behind"
    );
    let verify = fms.run(&["verify", "--deep", "--json"]);
    assert_eq!(
        verify.status.code(),
        Some(0),
        "verify --deep: {}",
        String::from_utf8_lossy(&verify.stdout)
    );
    let uploaded: BTreeSet<String> = database
        .client
        .query("SELECT sha256 FROM file_contents WHERE uploaded_at IS NOT NULL", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let live: BTreeSet<String> = disk.values().map(|(_, sha)| sha.clone()).collect();
    assert!(live.is_subset(&uploaded), "every live content is stored");
    assert_eq!(
        assert_store_matches_keys(&garage.store()).await,
        uploaded,
        "store equals catalog"
    );
    let stored = stored_before_restarts + garage.store_requests();
    let contents = uploaded.len() as u64;
    eprintln!("{stored} counted PUTs for {contents} contents ({unseen} may have gone uncounted)");
    assert!(
        stored <= contents,
        "no content uploaded twice: {stored} PUTs for {contents} contents"
    );
    assert!(
        stored + unseen >= contents,
        "every content stored by a counted PUT, but for those in flight at a kill: {stored} PUTs for {contents} contents"
    );
}

/// Work for the next round: rewrite, add and delete some files.
fn mutate(tree: &Path, round: usize) {
    let files: Vec<String> = disk_now(tree).into_keys().collect();
    for i in 0..200 {
        let path = &files[random_below(files.len() as u64) as usize];
        let _ = std::fs::write(tree.join(path), format!("round {round}, rewrite {i} of {path}"));
    }
    let folder = tree.join(format!("round-{round}"));
    std::fs::create_dir_all(&folder).unwrap();
    for i in 0..200 {
        std::fs::write(
            folder.join(format!("new-{i}.txt")),
            format!("new in round {round}: {i}"),
        )
        .unwrap();
    }
    for _ in 0..100 {
        let path = &files[random_below(files.len() as u64) as usize];
        let _ = std::fs::remove_file(tree.join(path));
    }
}

fn kill(daemon: Daemon) {
    unsafe {
        libc::kill(daemon.pid() as i32, libc::SIGKILL);
    }
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_during_a_20000_file_sync() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    make_corpus(&tree, 20_000, &["--large", "1", "--large-mib", "16"]);
    let database = Database::create("fault_kill").await;
    let garage = Garage::start();
    let (http, port) = http_section();
    let fms = Fms::new(&database, &garage.storage_toml(), &[("docs", &tree)], &http);
    for round in 0..rounds() {
        if round > 0 {
            mutate(&tree, round);
        }
        let daemon = fms.start_daemon(port, &[], &[]);
        let after = Duration::from_millis(500 + random_below(4000));
        tokio::time::sleep(after).await;
        eprintln!("round {round}: SIGKILL after {after:?}");
        kill(daemon);
        let daemon = fms.start_daemon(port, &[], &[]);
        settle(&database, &tree, Duration::from_secs(600)).await;
        let (code, _) = daemon.terminate();
        assert_eq!(code, Some(0));
        check_invariants(&fms, &database, &garage, &tree, 0, 0).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_during_a_sync() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    make_corpus(&tree, 3_000, &["--large", "0"]);
    let postgres = tokio::task::spawn_blocking(PrivatePostgres::start).await.unwrap();
    let database = Database::create_on(&postgres.admin_url(), "fault_pg").await;
    let garage = Garage::start();
    let (http, port) = http_section();
    let fms = Fms::new(&database, &garage.storage_toml(), &[("docs", &tree)], &http);
    let daemon = fms.start_daemon(port, &[], &[]);
    let url = database.url.clone();
    drop(database);
    for round in 0..rounds() {
        if round > 0 {
            mutate(&tree, round);
        }
        tokio::time::sleep(Duration::from_millis(300 + random_below(2000))).await;
        eprintln!("round {round}: restarting PostgreSQL");
        postgres.stop_server();
        tokio::time::sleep(Duration::from_millis(random_below(3000))).await;
        postgres.start_server();
        let database = Database::connect(url.clone()).await;
        settle(&database, &tree, Duration::from_secs(300)).await;
        check_invariants(&fms, &database, &garage, &tree, 0, 0).await;
    }
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garage_stopped_and_restarted_during_a_sync() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    make_corpus(&tree, 3_000, &["--large", "1", "--large-mib", "12"]);
    let database = Database::create("fault_s3").await;
    let mut garage = Garage::start();
    let (http, port) = http_section();
    let fms = Fms::new(&database, &garage.storage_toml(), &[("docs", &tree)], &http);
    let daemon = fms.start_daemon(port, &[], &[]);
    // Garage counts requests since its own start: add up what each run of it stored.
    let mut stored = 0;
    for round in 0..rounds() {
        if round > 0 {
            mutate(&tree, round);
        }
        tokio::time::sleep(Duration::from_millis(300 + random_below(2000))).await;
        eprintln!("round {round}: stopping Garage");
        stored += garage.store_requests();
        garage.stop();
        tokio::time::sleep(Duration::from_millis(random_below(3000))).await;
        garage.restart();
        settle(&database, &tree, Duration::from_secs(300)).await;
        // Each kill may lose the count of the uploads in flight: Garage may complete them
        // after its counter was read. How many fly at once adapts to the store's latency
        // (up to 32 × upload.concurrency small ones): the daemon reports its peak.
        let peak = daemon
            .metric("fms_upload_in_flight_peak")
            .expect("the daemon reports its peak in flight");
        assert!(peak >= 1.0, "uploads were in flight");
        check_invariants(
            &fms,
            &database,
            &garage,
            &tree,
            stored,
            peak as u64 * (round as u64 + 1),
        )
        .await;
    }
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_rewritten_while_they_are_uploaded() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    make_corpus(&tree, 2_000, &["--large", "1", "--large-mib", "12"]);
    let database = Database::create("fault_rewrite").await;
    let garage = Garage::start();
    let (http, port) = http_section();
    let fms = Fms::new(
        &database,
        &garage.storage_toml(),
        &[("docs", &tree)],
        &format!("{http}[watch]\npoll_interval = \"1s\"\ndebounce = \"1s\"\n"),
    );
    let daemon = fms.start_daemon(port, &[], &[]);
    let files: Vec<String> = disk_now(&tree).into_keys().collect();
    for round in 0..rounds() {
        // Bursts of rewrites while the uploads of the previous ones run.
        for burst in 0..5 {
            tokio::time::sleep(Duration::from_millis(100 + random_below(500))).await;
            for _ in 0..20 {
                let path = &files[random_below(files.len() as u64) as usize];
                let old = std::fs::read(tree.join(path)).unwrap_or_default();
                let mut new = format!("rewritten in round {round}, burst {burst}: ").into_bytes();
                new.extend_from_slice(&old[..old.len().min(2000)]);
                std::fs::write(tree.join(path), new).unwrap();
            }
        }
        settle(&database, &tree, Duration::from_secs(300)).await;
        check_invariants(&fms, &database, &garage, &tree, 0, 0).await;
    }
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0));
}

/// The local store's disk fills up, round after round: each round brings new files, the
/// store's tmpfs is shrunk to what it holds plus 64 KiB, uploads fail with ENOSPC, then it is
/// given room again. After each round: catalog == disk, every object re-reads to its key,
/// no half-written object left in `.incoming`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_store_runs_out_of_disk() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    make_corpus(&tree, 600, &["--large", "0"]);
    let store = work.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let mount = |options: &str| {
        let mut command = std::process::Command::new("mount");
        if options.starts_with("remount") {
            command.args(["-o", options]);
        } else {
            command.args(["-t", "tmpfs", "-o", options, "tmpfs"]);
        }
        let status = command.arg(&store).status().unwrap();
        assert!(status.success(), "mount {options}");
    };
    // Bytes the store's filesystem holds now.
    let used = |store: &Path| {
        let stat = statvfs_of(store);
        (stat.0 - stat.1) * stat.2
    };
    // A store far too small for the tree.
    mount("size=1m");
    let database = Database::create("fault_disk").await;
    let (http, port) = http_section();
    let storage = format!("[storage]\nkind = \"local\"\npath = \"{}\"\n", store.display());
    let fms = Fms::new(
        &database,
        &storage,
        &[("docs", &tree)],
        &format!("{http}[upload]\nmax_attempts = 1000\n[watch]\npoll_interval = \"1s\"\ndebounce = \"1s\"\n"),
    );
    let daemon = fms.start_daemon(port, &[], &[]);
    let full_events = || daemon.log_text().matches("No space left on device").count();
    for round in 0..rounds() {
        if round > 0 {
            // New contents, and a disk with room for only a few of them.
            let folder = tree.join(format!("round-{round}"));
            std::fs::create_dir_all(&folder).unwrap();
            let room = used(&store) + (64 << 10);
            mount(&format!("remount,size={room}"));
            for index in 0..100 {
                let body = format!("round {round} file {index} ").repeat(2000);
                std::fs::write(folder.join(format!("plan-{index}.pdf")), body).unwrap();
            }
        }
        let before = if round == 0 { 0 } else { full_events() };
        daemon.wait_until("uploads fail for lack of space", Duration::from_secs(60), || {
            full_events() > before
        });
        // More room (a remount keeps the files): everything is stored, nothing half-written.
        mount("remount,size=256m");
        let disk = settle(&database, &tree, Duration::from_secs(300)).await;
        let verify = fms.run(&["verify", "--deep", "--json"]);
        assert_eq!(
            verify.status.code(),
            Some(0),
            "round {round}: {}",
            String::from_utf8_lossy(&verify.stdout)
        );
        assert_eq!(database.live_files("docs").await, disk, "round {round}");
        let leftovers = std::fs::read_dir(store.join(".incoming"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(leftovers, 0, "round {round}: no half-written object left behind");
        eprintln!("round {round}: disk full, then room: {} files, all stored", disk.len());
    }
    let (code, _) = daemon.terminate();
    let _ = std::process::Command::new("umount").arg(&store).status();
    assert_eq!(code, Some(0));
}

/// (blocks, free blocks, fragment size) of the filesystem at `path`.
fn statvfs_of(path: &Path) -> (u64, u64, u64) {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) }, 0);
    (stat.f_blocks as u64, stat.f_bfree as u64, stat.f_frsize as u64)
}

//! The S3 stores offices really use, reproduced by fronts before a real Garage
//! (`common::front`): an endpoint with a path (Supabase), a store that verifies nothing
//! (Supabase Storage), one that refuses checksum headers (Backblaze B2); and what
//! `storage.integrity = "auto"` makes of each.

mod common;

use common::front::{Front, FrontOptions};
use common::*;
use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;

fn distinct_contents(manifest: &[ManifestEntry]) -> BTreeSet<String> {
    expected_files(manifest).values().map(|(_, sha)| sha.clone()).collect()
}

/// `scan --wait --json`, expecting `code`: its summary and its log (JSON lines on stdout).
fn scan_logged(fms: &Fms, code: i32) -> (serde_json::Value, Vec<u8>) {
    let output = fms.run(&["scan", "--wait", "--json"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(code),
        "scan exit code\nstdout:\n{stdout}\nstderr:\n{}",
        tail(&String::from_utf8_lossy(&output.stderr))
    );
    (summary_of(&stdout), output.stdout)
}

/// The one "store integrity" event of a command's log: (mode, checks).
fn integrity_event(log: &[u8]) -> (String, String) {
    let events = log_events(log, "store integrity");
    assert_eq!(
        events.len(),
        1,
        "one integrity event per uploader start:\n{}",
        tail(&String::from_utf8_lossy(log))
    );
    (
        events[0]["mode"].as_str().unwrap().to_owned(),
        events[0]["checks"].as_str().unwrap().to_owned(),
    )
}

fn verify_deep_exits_0(fms: &Fms) {
    let output = fms.run(&["verify", "--deep", "--json"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "verify --deep: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        tail(&String::from_utf8_lossy(&output.stderr))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_with_a_path_syncs_with_and_without_the_trailing_slash() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    let manifest = make_corpus(&tree, 120, &["--large", "1", "--large-mib", "6"]);
    let distinct = distinct_contents(&manifest);
    for slash in ["", "/"] {
        // Supabase's S3 API lives under /storage/v1/s3.
        let garage = Garage::start();
        let front = Front::start(
            garage.upstream(),
            FrontOptions {
                path_prefix: Some("/storage/v1/s3".into()),
                ..Default::default()
            },
        );
        assert!(front.endpoint.ends_with("/storage/v1/s3"));
        let endpoint = format!("{}{slash}", front.endpoint);
        let database = Database::create("prefix").await;
        let fms = Fms::new(&database, &garage.storage_toml_at(&endpoint), &[("docs", &tree)], "");
        let check = fms.run(&["config", "check"]);
        let printed = String::from_utf8_lossy(&check.stdout);
        let expected_url = format!("requests go to {}/fms/files/{{sha256}}{{.ext}}", front.endpoint);
        assert!(
            printed.contains(&expected_url),
            "config check shows the request URL:\n{printed}"
        );

        let (summary, log) = scan_logged(&fms, 0);
        assert_eq!(summary["uploaded"], distinct.len() as u64, "{endpoint}: {summary}");
        assert_eq!(
            integrity_event(&log).0,
            "server",
            "Garage behind the prefix verifies payloads"
        );
        assert_eq!(database.live_files("docs").await, expected_files(&manifest));
        verify_deep_exits_0(&fms);
        assert_eq!(
            front.counters.outside_prefix.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "{endpoint}: no request missed the prefix"
        );
        assert_eq!(assert_store_matches_keys(&garage.store()).await, distinct);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_garage_gets_server_verification_and_nothing_is_read_back() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    let manifest = make_corpus(&tree, 200, &["--large", "1", "--large-mib", "12"]);
    let distinct = distinct_contents(&manifest);
    let database = Database::create("server_mode").await;
    let garage = Garage::start();
    let fms = Fms::new(&database, &garage.storage_toml(), &[("docs", &tree)], "");

    let (summary, log) = scan_logged(&fms, 0);
    assert_eq!(summary["uploaded"], distinct.len() as u64);
    let (mode, checks) = integrity_event(&log);
    assert_eq!((mode.as_str(), checks.as_str()), ("server", "signed payload SHA-256"));
    assert_eq!(garage.requests("GetObject"), 0, "nothing read back");
    assert!(garage.requests("UploadPart") >= 3, "the large file went in parts");
    let status = fms.run(&["status"]);
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains("store integrity  server (signed payload SHA-256)"),
        "status shows the mode:\n{status}"
    );
    // The probes wrote nothing that stayed, and nothing outside files/ but them.
    assert_eq!(assert_store_matches_keys(&garage.store()).await, distinct);
    assert_eq!(
        garage.store_requests(),
        distinct.len() as u64,
        "each content stored once"
    );
    assert!(
        garage.requests("PutObject") >= 2,
        "the two probes reached the store (and were rejected)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_verifies_nothing_gets_every_object_read_back() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    let manifest = make_corpus(&tree, 150, &["--large", "1", "--large-mib", "7"]);
    let distinct = distinct_contents(&manifest);
    let database = Database::create("read_back").await;
    let garage = Garage::start();
    // Supabase Storage: stores what arrives; and three object PUTs damaged on the way.
    let front = Front::start(
        garage.upstream(),
        FrontOptions {
            verify_nothing: true,
            corrupt_puts: 3,
            ..Default::default()
        },
    );
    let fms = Fms::new(
        &database,
        &garage.storage_toml_at(&front.endpoint),
        &[("docs", &tree)],
        "[upload]\nmax_attempts = 4\n",
    );

    let (summary, log) = scan_logged(&fms, 0);
    let (mode, checks) = integrity_event(&log);
    assert_eq!((mode.as_str(), checks.as_str()), ("read-back", "read back and hashed"));
    assert_eq!(front.counters.corrupted.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert_eq!(summary["uploaded"], distinct.len() as u64);
    assert!(
        summary["upload_failed_attempts"].as_u64().unwrap() >= 3,
        "each damaged object was caught: {summary}"
    );
    let failed = log_events(&log, "upload failed");
    assert!(
        failed
            .iter()
            .any(|event| event["error"].as_str().unwrap_or("").contains("read back files/")),
        "the read-back names the key"
    );
    assert!(
        front.counters.object_gets.load(std::sync::atomic::Ordering::SeqCst) >= distinct.len() as u64,
        "every object was read back"
    );
    verify_deep_exits_0(&fms);
    assert_eq!(assert_store_matches_keys(&garage.store()).await, distinct);

    // A file rewritten after it was hashed, with its size, inode and mtime kept, so no stat
    // notices: registered, then changed, then uploaded. The store takes the new bytes; the
    // read-back finds they are not the registered hash and deletes them.
    let new_tree = work.path().join("second");
    std::fs::create_dir_all(&new_tree).unwrap();
    let path = new_tree.join("rewritten.bin");
    std::fs::write(&path, vec![7u8; 5000]).unwrap();
    let fms2 = Fms::new(
        &database,
        &garage.storage_toml_at(&front.endpoint),
        &[("docs", &tree), ("second", &new_tree)],
        "[upload]\nmax_attempts = 2\n",
    );
    fms2.scan_with(&["scan", "--no-upload", "--json"], 0);
    let registered: String = database
        .client
        .query_one("SELECT sha256 FROM files WHERE root = 'second'", &[])
        .await
        .unwrap()
        .get(0);
    rewrite_in_place_keeping_stat(&path);
    let (summary, _) = scan_logged(&fms2, 1);
    assert_eq!(summary["upload_failed_final"], 1, "{summary}");
    let store = garage.store();
    let keys = store.list_keys().await.unwrap();
    assert!(
        !keys.iter().any(|(key, _)| key.contains(&registered)),
        "nothing is left under the old hash"
    );
    assert_eq!(assert_store_matches_keys(&store).await, distinct);
    verify_deep_exits_0(&fms2);
    // Once no file holds the content any more, its failed row leaves the queue (it would
    // otherwise be reported as a failed upload for ever).
    assert_eq!(
        database
            .count("SELECT count(*) FROM upload_queue WHERE state = 'failed'")
            .await,
        1
    );
    // (Another file keeps the root from looking emptied, which would delete nothing.)
    std::fs::write(new_tree.join("other.bin"), b"another file").unwrap();
    std::fs::remove_file(&path).unwrap();
    let summary = fms2.scan(0);
    assert_eq!(summary["upload_dropped"], 1, "{summary}");
    assert_eq!(database.count("SELECT count(*) FROM upload_queue").await, 0);
}

/// Other bytes of the same length, then the old mtime back: inode, size and mtime as before.
fn rewrite_in_place_keeping_stat(path: &std::path::Path) {
    let before = std::fs::metadata(path).unwrap();
    let length = before.len() as usize;
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut file| std::io::Write::write_all(&mut file, &vec![9u8; length]))
        .unwrap();
    let times = [
        libc::timespec {
            tv_sec: before.atime(),
            tv_nsec: before.atime_nsec(),
        },
        libc::timespec {
            tv_sec: before.mtime(),
            tv_nsec: before.mtime_nsec(),
        },
    ];
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(
        unsafe { libc::utimensat(libc::AT_FDCWD, c_path.as_ptr(), times.as_ptr(), 0) },
        0
    );
    let after = std::fs::metadata(path).unwrap();
    assert_eq!(
        (after.ino(), after.len(), after.mtime_nsec()),
        (before.ino(), before.len(), before.mtime_nsec())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_refuses_checksum_headers_is_still_verified_by_the_store() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    let manifest = make_corpus(&tree, 150, &["--large", "1", "--large-mib", "7"]);
    let distinct = distinct_contents(&manifest);
    let database = Database::create("b2_like").await;
    let garage = Garage::start();
    // Backblaze B2: "Unsupported header" for x-amz-checksum-*; one object damaged on the way.
    let front = Front::start(
        garage.upstream(),
        FrontOptions {
            refuse_checksum_headers: true,
            corrupt_puts: 1,
            ..Default::default()
        },
    );
    let fms = Fms::new(
        &database,
        &garage.storage_toml_at(&front.endpoint),
        &[("docs", &tree)],
        "",
    );

    let (summary, log) = scan_logged(&fms, 0);
    let (mode, checks) = integrity_event(&log);
    assert_eq!((mode.as_str(), checks.as_str()), ("server", "signed payload SHA-256"));
    assert_eq!(
        front.counters.refused.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "only the probe sent a checksum header"
    );
    assert_eq!(summary["uploaded"], distinct.len() as u64);
    assert_eq!(front.counters.corrupted.load(std::sync::atomic::Ordering::SeqCst), 1);
    // The store refused the damaged PUT; the content was then sent again, from another copy
    // at once when it has one, else on the item's next attempt.
    let refused = log_events(&log, "upload refused: stored bytes did not match");
    assert_eq!(
        refused.len(),
        1,
        "the store rejected the damaged upload once: {summary}"
    );
    assert!(
        refused[0]["error"].as_str().unwrap_or("").contains("400"),
        "the refusal names the store's answer: {}",
        refused[0]
    );
    assert_eq!(garage.requests("GetObject"), 0, "the store verified; nothing read back");
    verify_deep_exits_0(&fms);
    assert_eq!(assert_store_matches_keys(&garage.store()).await, distinct);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_errors_are_one_line_with_status_code_and_hint() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    make_corpus(&tree, 20, &["--large", "0"]);
    let database = Database::create("store_errors").await;
    let garage = Garage::start();

    // A wrong bucket: the probe fails with the bucket named.
    let wrong_bucket = garage
        .storage_toml()
        .replace("bucket = \"fms\"", "bucket = \"no-such-bucket\"");
    let fms = Fms::new(&database, &wrong_bucket, &[("docs", &tree)], "");
    let output = fms.run(&["scan", "--wait"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr
        .lines()
        .find(|line| line.contains("integrity probe"))
        .unwrap_or_else(|| panic!("no probe error in:\n{stderr}"));
    assert!(line.contains("HTTP 404"), "{line}");
    assert!(line.contains("storage.bucket"), "{line}");
    for debug in ["ServiceError", "Unhandled", "ErrorMetadata", "source:"] {
        assert!(!stderr.contains(debug), "no debug structure ({debug}) in:\n{stderr}");
    }

    // A wrong secret: 403 with the keys and the clock named.
    let wrong_secret = garage.storage_toml_with(&garage.key_id, &"0".repeat(64));
    let fms = Fms::new(&database, &wrong_secret, &[("docs", &tree)], "");
    let output = fms.run(&["scan", "--wait"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr.contains("HTTP 403"), "{stderr}");
    assert!(
        stderr.contains("check storage.access_key_id and storage.secret_access_key"),
        "{stderr}"
    );

    // A prefix the store does not serve: the bare 404 Supabase gives, with the endpoint named.
    let front = Front::start(
        garage.upstream(),
        FrontOptions {
            path_prefix: Some("/storage/v1/s3".into()),
            ..Default::default()
        },
    );
    let wrong_path = garage.storage_toml_at(&front.endpoint.replace("/storage/v1/s3", "/storage/v1"));
    let fms = Fms::new(&database, &wrong_path, &[("docs", &tree)], "");
    let output = fms.run(&["scan", "--wait"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr.contains("HTTP 404"), "{stderr}");
    assert!(stderr.contains("check storage.endpoint and storage.bucket"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_distant_store_gets_more_small_uploads_at_once() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    let files = 800;
    for i in 0..files {
        std::fs::write(
            tree.join(format!("Notiz {i:04}.txt")),
            format!("note {i}\n").repeat(50 + i % 40),
        )
        .unwrap();
    }
    let database = Database::create("distant").await;
    let garage = Garage::start();
    // 60 ms before each request reaches the store: transfers are nearly all waiting.
    let front = Front::start(
        garage.upstream(),
        FrontOptions {
            delay: Some(std::time::Duration::from_millis(60)),
            ..Default::default()
        },
    );
    let fms = Fms::new(
        &database,
        &garage.storage_toml_at(&front.endpoint),
        &[("docs", &tree)],
        "[upload]\nconcurrency = 4\n",
    );
    let puts_before = garage.requests("PutObject");
    let (summary, _) = scan_logged(&fms, 0);
    assert_eq!(summary["uploaded"], files as u64, "{summary}");
    assert_eq!(summary["upload_heads"], 0, "{summary}");
    // The fixed scheme allowed 4 small transfers per unit of concurrency (16 here); the
    // latency lets the uploader go further, up to 32 per unit.
    let peak = summary["upload_in_flight_peak"].as_u64().unwrap();
    assert!(peak > 16 && peak <= 4 * 32, "in flight at most: {peak}");
    // Still one PUT per content (the probe's two aside), and every object in place.
    assert_eq!(garage.requests("PutObject") - puts_before, files as u64 + 2);
    assert_eq!(assert_store_matches_keys(&garage.store()).await.len(), files);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_store_is_asked_again_without_spending_attempts() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    let files = 12;
    for i in 0..files {
        std::fs::write(
            tree.join(format!("Plan {i:02}.txt")),
            format!("plan {i}\n").repeat(100 + i),
        )
        .unwrap();
    }
    let database = Database::create("busy").await;
    let garage = Garage::start();
    // The first six PUTs of objects are refused with 503 SlowDown.
    let front = Front::start(
        garage.upstream(),
        FrontOptions {
            unavailable_puts: 6,
            ..Default::default()
        },
    );
    let fms = Fms::new(
        &database,
        &garage.storage_toml_at(&front.endpoint),
        &[("docs", &tree)],
        "[upload]\nconcurrency = 2\n",
    );
    let (summary, _) = scan_logged(&fms, 0);
    // Each refused PUT was sent again within its own attempt, as the SDK's standard retry
    // mode does: nothing failed, nothing went back to the queue.
    assert_eq!(front.counters.slowed_down.load(std::sync::atomic::Ordering::SeqCst), 6);
    assert_eq!(summary["uploaded"], files as u64, "{summary}");
    assert_eq!(summary["upload_failed_attempts"], 0, "{summary}");
    assert_eq!(assert_store_matches_keys(&garage.store()).await.len(), files);
}

/// A large file's parts are signed with the digests its hasher took in the same read as its
/// hash, and nothing is hashed again for the upload: the store's check of each part is what
/// proves the bytes sent are the bytes hashed. A file rewritten in place since (same inode,
/// size and mtime, so the uploader's stat check passes) is refused part by part and nothing
/// is stored under its key; hashed anew, it is stored with its new digests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_signed_with_the_hashers_digests_store_the_hashed_bytes_only() {
    use fms_actors::fs::{hash_file_in_parts, PartLayout};
    use fms_actors::store::{Content, StoreError};
    use std::sync::atomic::AtomicU64;

    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("Plan.pdf");
    let bytes: Vec<u8> = (0..(12usize << 20) + 4321)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    std::fs::write(&path, &bytes).unwrap();
    let garage = Garage::start();
    let store = garage.store();
    let integrity = store.prepare_integrity().await.unwrap();
    assert_eq!(integrity.mode, "server", "Garage checks signed payloads");
    let layout = PartLayout {
        threshold: 5 << 20,
        part_size: 5 << 20,
    };
    let hash =
        |path: &std::path::Path| hash_file_in_parts(path, &mut || {}, &AtomicU64::new(0), false, Some(layout)).unwrap();
    let content_of = |hashed: fms_actors::fs::Hashed| Content {
        key: format!("files/{}.pdf", hashed.sha256),
        size: hashed.stat.size,
        sha256: hashed.sha256,
        parts: hashed.parts,
    };

    let hashed = hash(&path);
    assert_eq!(hashed.parts.as_ref().unwrap().digests.len(), 3);
    let old = content_of(hashed);
    rewrite_in_place_keeping_stat(&path);
    let uploads_before = garage.requests("UploadPart");
    let error = store.put_file(&old, &path).await.unwrap_err();
    assert!(matches!(error, StoreError::ContentMismatch(_)), "{error}");
    assert!(
        garage.requests("UploadPart") > uploads_before,
        "the part went to the store, which refused it"
    );
    assert_eq!(
        store.head(&old.key).await.unwrap(),
        None,
        "nothing stored under the old key"
    );

    let new = content_of(hash(&path));
    store.put_file(&new, &path).await.unwrap();
    let stored = store.read_digest(&new.key).await.unwrap();
    assert_eq!(stored, Some((new.sha256.clone(), new.size)));
    assert_eq!(garage.requests("CompleteMultipartUpload"), 1);
}

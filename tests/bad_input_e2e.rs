//! Bad input and unsafe-looking roots, end to end against the real PostgreSQL and Garage:
//! each gives its documented behaviour and a clear message, and loses nothing.

mod common;

use common::*;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn stdout_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_files_odd_names_and_empty_files() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    write(&tree.join("plain.txt"), b"plain");
    write(&tree.join("empty.bin"), b"");
    write(&tree.join(OsStr::from_bytes(b"caf\xe9 50%.txt")), b"latin-1 name");
    write(&tree.join("line\nbreak\tand\x07bell.txt"), b"control characters");
    std::os::unix::fs::symlink("/etc/passwd", tree.join("link-out")).unwrap();
    let fifo = std::ffi::CString::new(tree.join("pipe").as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let _socket = std::os::unix::net::UnixListener::bind(tree.join("socket")).unwrap();
    let database = Database::create("odd").await;
    let garage = Garage::start();
    let fms = Fms::new(&database, &garage.storage_toml(), &[("docs", &tree)], "");

    let output = fms.run(&["scan", "--wait", "--json"]);
    assert_eq!(output.status.code(), Some(0), "a FIFO must not hang or fail the scan");
    let stdout = stdout_of(&output);
    let summary = summary_of(&stdout);
    assert_eq!(summary["totals"]["new"], 4);
    assert_eq!(summary["totals"]["skipped"], 3, "symlink, FIFO and socket skipped");
    for reason in ["symlink (not followed)", "not a regular file (FIFO, socket or device)"] {
        assert!(stdout.contains(reason), "the log says why a file was skipped: {reason}");
    }

    let row = database
        .client
        .query_one(
            "SELECT path, path_encoding, sha256 FROM files WHERE path_encoding = 'percent'",
            &[],
        )
        .await
        .unwrap();
    let (path, encoding): (String, String) = (row.get(0), row.get(1));
    assert_eq!(
        (path.as_str(), encoding.as_str()),
        ("caf%E9 50%25.txt", "percent"),
        "non-UTF-8 name stored losslessly"
    );
    let decoded = fms_actors::pathenc::decode(&path, fms_actors::pathenc::PathEncoding::Percent).unwrap();
    assert_eq!(decoded.as_bytes(), b"caf\xe9 50%.txt");

    let files = database.live_files("docs").await;
    let empty_sha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    assert_eq!(files["empty.bin"], (0, empty_sha.to_string()));
    assert!(files.contains_key("line\nbreak\tand\x07bell.txt"));
    let store = garage.store();
    assert_eq!(
        store.head(&format!("files/{empty_sha}.bin")).await.unwrap(),
        Some(0),
        "0-byte content stored"
    );
    assert_eq!(assert_store_matches_keys(&store).await.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_file_is_reported_and_keeps_its_row() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    write(&tree.join("ok.txt"), b"readable");
    write(&tree.join("secret.txt"), b"version 1");
    let database = Database::create("unreadable").await;
    let garage = Garage::start();
    let fms = Fms::new(&database, &garage.storage_toml(), &[("docs", &tree)], "");
    fms.scan(0);
    let before = database.live_files("docs").await;

    std::fs::write(tree.join("secret.txt"), b"version 2, unreadable").unwrap();
    std::fs::write(tree.join("new-secret.txt"), b"never readable").unwrap();
    for name in ["secret.txt", "new-secret.txt"] {
        std::fs::set_permissions(tree.join(name), std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    }
    // Root reads everything, so the scan runs as an unprivileged user, as in the container.
    for path in [work.path(), tree.as_path(), fms.dir.path()] {
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&fms.config, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let mut command = fms.command(&["scan", "--wait", "--json"]);
    if unsafe { libc::geteuid() } == 0 {
        let program = command.get_program().to_owned();
        let args: Vec<_> = command.get_args().map(|a| a.to_owned()).collect();
        command = std::process::Command::new("setpriv");
        command
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(program)
            .args(args);
    }
    let output = command.output().unwrap();
    let stdout = stdout_of(&output);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = summary_of(&stdout);
    assert_eq!(summary["totals"]["failed"], 2);
    assert!(stdout.contains("cannot read file; its catalog row is kept as it was"));
    assert!(stdout.contains("secret.txt") && stdout.contains("Permission denied"));
    let after = database.live_files("docs").await;
    assert_eq!(
        after, before,
        "the unreadable file keeps its old row; the new one is not registered as anything"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emptied_missing_or_remounted_root_deletes_nothing() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("share");
    make_corpus(&tree, 50, &["--large", "0"]);
    let database = Database::create("unmounted").await;
    let garage = Garage::start();
    let fms = Fms::new(&database, &garage.storage_toml(), &[("docs", &tree)], "");
    fms.scan(0);
    let live = database.live_files("docs").await;
    let deleted = || database.count("SELECT count(*) FROM files WHERE deleted_at IS NOT NULL");

    // Unmounted: the mount point is gone.
    let away = work.path().join("away");
    std::fs::rename(&tree, &away).unwrap();
    let output = fms.run(&["scan"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout_of(&output).contains("is not there"), "{}", stdout_of(&output));
    assert_eq!(deleted().await, 0);

    // Unmounted: an empty mount point.
    std::fs::create_dir(&tree).unwrap();
    let output = fms.run(&["scan"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout_of(&output).contains(&format!("is empty but the catalog holds {} files", live.len())));
    assert_eq!(deleted().await, 0);

    // Back again: nothing changed, nothing to do.
    std::fs::remove_dir(&tree).unwrap();
    std::fs::rename(&away, &tree).unwrap();
    let summary = fms.scan(0);
    assert_eq!(summary["totals"]["unchanged"], live.len() as u64);
    assert_eq!(database.live_files("docs").await, live);

    // Another filesystem than at the last complete scan.
    database
        .client
        .execute("UPDATE scans SET device = device + 1 WHERE outcome = 'complete'", &[])
        .await
        .unwrap();
    let output = fms.run(&["scan"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout_of(&output).contains("is on another filesystem"));
    let status = fms.run(&["status"]);
    assert!(
        stdout_of(&status).contains("unavailable"),
        "status shows the root unavailable"
    );

    // Really emptied, and the operator says so.
    for entry in std::fs::read_dir(&tree).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            std::fs::remove_dir_all(path).unwrap()
        } else {
            std::fs::remove_file(path).unwrap()
        }
    }
    let summary = fms.scan_with(&["scan", "--wait", "--json", "--accept-root-change"], 0);
    assert_eq!(summary["totals"]["deleted"], live.len() as u64);
    assert_eq!(deleted().await, live.len() as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_names_deep_trees_symlink_loops_and_hard_links() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    // A 255-byte name (the Linux limit), and one of 255 bytes that are not UTF-8.
    let long_name = format!("{}.pdf", "n".repeat(251));
    write(&tree.join(&long_name), b"longest allowed name");
    let latin1: Vec<u8> = std::iter::repeat_n(0xe9u8, 251).chain(*b".txt").collect();
    write(&tree.join(OsStr::from_bytes(&latin1)), b"longest name, not UTF-8");
    // A path near 4,096 bytes: 16 folders of 240 bytes and a file.
    let mut long_path = std::path::PathBuf::new();
    for level in 0..16 {
        long_path.push(format!("{level:02}{}", "d".repeat(238)));
    }
    long_path.push("file-at-the-end.txt");
    write(&tree.join(&long_path), b"a very long path");
    assert!(long_path.as_os_str().len() > 3_800);
    // 300 levels deep.
    let mut deep = std::path::PathBuf::new();
    for _ in 0..300 {
        deep.push("d");
    }
    deep.push("bottom.txt");
    write(&tree.join(&deep), b"300 levels down");
    // Symlink loops: neither followed nor a problem.
    std::os::unix::fs::symlink(".", tree.join("loop-to-self")).unwrap();
    std::os::unix::fs::symlink("../tree", tree.join("loop-to-parent")).unwrap();
    // Hard links: one content, two paths, one object.
    write(&tree.join("original.dwg"), b"one content under two names");
    std::fs::hard_link(tree.join("original.dwg"), tree.join("hard-link.dwg")).unwrap();

    let database = Database::create("extreme").await;
    let garage = Garage::start();
    let fms = Fms::new(&database, &garage.storage_toml(), &[("docs", &tree)], "");
    let summary = fms.scan(0);
    assert_eq!(summary["totals"]["new"], 6, "{summary:#}");
    assert_eq!(summary["totals"]["skipped"], 2, "the two symlinks");
    let live = database.live_files("docs").await;
    assert!(live.contains_key(&long_name));
    assert!(live.contains_key(&long_path.to_string_lossy().into_owned()));
    assert!(live.contains_key(&deep.to_string_lossy().into_owned()));
    assert_eq!(
        live["original.dwg"].1, live["hard-link.dwg"].1,
        "hard links: one content"
    );
    // Six files, five contents (the hard links share one), each stored once.
    let contents: std::collections::BTreeSet<String> = live.values().map(|(_, sha)| sha.clone()).collect();
    assert_eq!(contents.len(), 5);
    assert_eq!(assert_store_matches_keys(&garage.store()).await, contents);
    assert_eq!(garage.store_requests(), 5);
    // The object key of the long name keeps only a sanitised extension.
    let key: String = database
        .client
        .query_one(
            "SELECT c.storage_key FROM files f JOIN file_contents c USING (sha256) WHERE f.path = $1",
            &[&long_name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(key, format!("files/{}.pdf", live[&long_name].1));
    // A second scan finds nothing to do.
    assert_eq!(fms.scan(0)["totals"]["unchanged"], 6);
}

/// Linux takes paths of up to 4,095 bytes. A file at exactly that length syncs like any
/// other; a folder whose path is longer cannot be opened at all, and is reported with its
/// length and what to do, without failing the rest of the scan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_at_the_kernel_limit_syncs_and_one_beyond_it_is_reported() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    let mut relative = std::path::PathBuf::new();
    let mut left = 4_095 - tree.as_os_str().len() - 1;
    while left > 255 {
        relative.push("a".repeat(200));
        left -= 201;
    }
    relative.push("f".repeat(left));
    let at_limit = tree.join(&relative);
    assert_eq!(at_limit.as_os_str().len(), 4_095);
    write(&at_limit, b"a file at the longest path Linux can open");
    write(&tree.join("ordinary.txt"), b"an ordinary file");
    // Beyond the limit: made one folder at a time (only relative paths reach down there).
    let made = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import os,sys\nos.chdir(sys.argv[1])\nfor i in range(18):\n    n='%02d'%i+'d'*238\n    os.mkdir(n)\n    os.chdir(n)\n\
             open('beyond.txt','w').write('too deep to open')",
        )
        .arg(&tree)
        .status()
        .unwrap();
    assert!(made.success());

    let database = Database::create("path_limit").await;
    let garage = Garage::start();
    let fms = Fms::new(&database, &garage.storage_toml(), &[("docs", &tree)], "");
    let output = fms.run(&["scan", "--wait", "--json"]);
    let (stdout, stderr) = (stdout_of(&output), String::from_utf8_lossy(&output.stderr).into_owned());
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let summary = summary_of(&stdout);
    assert_eq!(summary["totals"]["new"], 2, "{summary:#}");
    assert_eq!(summary["totals"]["failed"], 1, "the folder beyond the limit");
    let printed = format!("{stdout}{stderr}");
    assert!(
        printed.contains("over the system's limit of 4095 bytes") && printed.contains("shorten a folder name"),
        "{}",
        tail(&printed)
    );
    let live = database.live_files("docs").await;
    assert!(live.contains_key(&relative.to_string_lossy().into_owned()));
    assert!(live.contains_key("ordinary.txt"));
    assert_eq!(assert_store_matches_keys(&garage.store()).await.len(), 2);
    // Nothing changes on the next scan: the file at the limit is read by its stat alone.
    let again = fms.scan(0);
    assert_eq!(again["totals"]["unchanged"], 2);
    assert_eq!(again["totals"]["hashed_files"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sparse_file_is_uploaded_in_verified_parts() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    // Sparse: the size of a large CAD archive, almost no disk. 1 GiB here; scripts/faults
    // --long uses 10 GiB.
    let size: u64 = std::env::var("FMSTEST_SPARSE_GIB")
        .ok()
        .and_then(|g| g.parse().ok())
        .unwrap_or(1)
        << 30;
    let file = std::fs::File::create(tree.join("archive.zip")).unwrap();
    file.set_len(size).unwrap();
    std::os::unix::fs::FileExt::write_at(&file, b"the end", size - 7).unwrap();
    drop(file);
    let database = Database::create("sparse").await;
    let garage = Garage::start();
    let storage = garage.storage_toml().replace(
        "multipart_threshold = \"5MiB\"\npart_size = \"5MiB\"",
        "multipart_threshold = \"64MiB\"\npart_size = \"64MiB\"",
    );
    let fms = Fms::new(&database, &storage, &[("docs", &tree)], "");
    let summary = fms.scan(0);
    assert_eq!(summary["uploaded"], 1);
    assert_eq!(summary["uploaded_bytes"], size);
    let registered = database.live_files("docs").await["archive.zip"].1.clone();
    let (sha, read) = garage
        .store()
        .read_digest(&format!("files/{registered}.zip"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read, size);
    assert_eq!(sha, registered, "the stored object hashes to the registered content");
}

/// When the file is cut short.
#[derive(Clone, Copy, PartialEq)]
enum Cut {
    /// After the stat check, while the upload waits for its share of the bandwidth.
    WhileWaiting,
    /// After Garage has taken the first part of its multipart upload.
    AfterTheFirstPart,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_truncated_while_waiting_for_its_upload_is_never_stored_under_the_old_hash() {
    let log = truncate_during_upload("truncated_waiting", Cut::WhileWaiting).await;
    assert!(log.contains("no copy on disk matches the registered content"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_truncated_while_it_is_uploaded_is_aborted_and_never_stored_under_the_old_hash() {
    let log = truncate_during_upload("truncated_uploading", Cut::AfterTheFirstPart).await;
    assert!(
        log.contains("changed during the upload"),
        "{}",
        log.lines()
            .filter(|l| l.contains("upload"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// A daemon uploads one 24 MB drawing in 5 MiB parts at 2 MB/s; the file is cut to 3 MB at
/// `cut`. The watcher registers what it holds now, that is stored; the old content, which
/// no file holds any more, is dropped from the queue and never stored. Returns the log.
async fn truncate_during_upload(name: &str, cut: Cut) -> String {
    use std::time::{Duration, Instant};
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    let original: Vec<u8> = (0..24_000_000u32).map(|i| (i % 251) as u8).collect();
    write(&tree.join("drawing.dwg"), &original);
    let old_sha = {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(&original))
    };
    let database = Database::create(name).await;
    let garage = Garage::start();
    let (http, port) = common::daemon::http_section();
    let fms = Fms::new(
        &database,
        &garage.storage_toml(),
        &[("docs", &tree)],
        &format!("[upload]\nbandwidth_limit = 2000000\n[watch]\npoll_interval = \"1s\"\ndebounce = \"1s\"\n{http}"),
    );
    let daemon = fms.start_daemon(port, &[], &[]);
    daemon
        .wait_for("the upload started", Duration::from_secs(30), async || match cut {
            Cut::WhileWaiting => {
                database
                    .count("SELECT count(*) FROM upload_queue WHERE lease_owner IS NOT NULL")
                    .await
                    > 0
            }
            Cut::AfterTheFirstPart => garage.requests("UploadPart") >= 1,
        })
        .await;
    if cut == Cut::WhileWaiting {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(tree.join("drawing.dwg"))
        .unwrap();
    file.set_len(3_000_000).unwrap();
    drop(file);
    let parts_before_the_cut = garage.requests("UploadPart");

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let live = database.live_files("docs").await;
        let queued = database.count("SELECT count(*) FROM upload_queue").await;
        if live["drawing.dwg"].0 == 3_000_000 && queued == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not settled: {live:?}, {queued} queued\n{}",
            tail(&daemon.log_text())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let now = database.live_files("docs").await["drawing.dwg"].1.clone();
    assert!(
        garage
            .store()
            .head(&format!("files/{old_sha}.dwg"))
            .await
            .unwrap()
            .is_none(),
        "the truncated bytes were not stored under the original hash"
    );
    assert_eq!(
        assert_store_matches_keys(&garage.store()).await,
        std::collections::BTreeSet::from([now])
    );
    match cut {
        Cut::WhileWaiting => assert_eq!(parts_before_the_cut, 0, "cut before any byte was sent"),
        Cut::AfterTheFirstPart => {
            assert!(parts_before_the_cut >= 1);
            assert!(
                garage.requests("AbortMultipartUpload") >= 1,
                "the half-sent upload is aborted"
            );
        }
    }
    let log = daemon.log_text();
    assert!(
        log.contains("upload dropped"),
        "the log says the old content was dropped:\n{}",
        log.lines()
            .filter(|l| l.contains("upload"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    log
}

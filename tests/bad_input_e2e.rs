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

//! `restore` and `history` against a real PostgreSQL and Garage (or the local store, where a
//! test damages an object on disk): a tree changed in five rounds comes back exactly as it
//! was after each round; a damaged object fails its files by name while the others restore;
//! a killed restore finishes when run again without downloading what is already right; bad
//! requests get one line and exit 2 with nothing written.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every file under `dir` (staging and part files included, so that a leftover shows):
/// relative path bytes -> (SHA-256, mtime in ns).
fn snapshot(dir: &Path) -> BTreeMap<Vec<u8>, (String, i64)> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(Result::unwrap)
        .filter(|entry| entry.file_type().is_file())
        .map(|entry| {
            let metadata = entry.metadata().unwrap();
            let relative = entry.path().strip_prefix(dir).unwrap().as_os_str().as_bytes().to_vec();
            let (sha256, _) = fms_actors::fs::hash::digest(std::fs::File::open(entry.path()).unwrap()).unwrap();
            (
                relative,
                (sha256, metadata.mtime() * 1_000_000_000 + metadata.mtime_nsec()),
            )
        })
        .collect()
}

fn show(tree: &BTreeMap<Vec<u8>, (String, i64)>) -> Vec<String> {
    tree.iter()
        .map(|(path, (sha, mtime))| format!("{} {} {mtime}", String::from_utf8_lossy(path), &sha[..8]))
        .collect()
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn noise(seed: u64, size: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..size)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u8
        })
        .collect()
}

fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    // Seconds and nanoseconds as RFC 3339 in UTC, without a date library.
    let output = std::process::Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("@{}.{:09}", now.as_secs(), now.subsec_nanos()),
            "+%Y-%m-%dT%H:%M:%S.%NZ",
        ])
        .output()
        .unwrap();
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn restore(fms: &Fms, args: &[&str]) -> (i32, serde_json::Value, String) {
    let mut all = vec!["restore", "--json"];
    all.extend_from_slice(args);
    let output = fms.run(&all);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let report = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
    (output.status.code().unwrap_or(-1), report, format!("{stdout}{stderr}"))
}

fn odd_name(dir: &Path) -> PathBuf {
    dir.join(std::ffi::OsString::from_vec(b"caf\xe9 plan.txt".to_vec()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_of_five_rounds_comes_back_byte_for_byte_with_its_mtimes() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("docs");
    let database = Database::create("restore_rounds").await;
    let garage = Garage::start();
    let fms = Fms::new(&database, &garage.storage_toml(), &[("docs", &tree)], "");

    let rounds: [fn(&Path); 5] = [
        |t: &Path| {
            write(&t.join("a.txt"), b"first a\n");
            write(&t.join("Plaene/b.pdf"), &noise(1, 30_000));
            write(&t.join("Plaene/c.dwg"), &noise(2, 50_000));
            // Above the tests' 5 MiB multipart threshold.
            write(&t.join("Modelle/gross.ifc"), &noise(3, 6 << 20));
            write(&t.join("dup1.txt"), b"same bytes\n");
            write(&t.join("Kopie/dup2.txt"), b"same bytes\n");
            write(&odd_name(t), b"latin-1 name\n");
            write(&t.join("Projekt/x/1.txt"), b"one\n");
            write(&t.join("Projekt/x/2.txt"), b"two\n");
            write(
                &t.join("Projekte/2024-017 Wohnpark/Haus B/KG 300/Schnitt.pdf"),
                &noise(7, 9_000),
            );
        },
        |t: &Path| {
            write(&t.join("a.txt"), b"second a, longer\n");
            std::fs::rename(t.join("Plaene/b.pdf"), t.join("Plaene/b umbenannt.pdf")).unwrap();
            std::fs::remove_file(t.join("Plaene/c.dwg")).unwrap();
            write(&t.join("Modelle/gross.ifc"), &noise(4, 6 << 20));
        },
        |t: &Path| {
            write(&t.join("Plaene/c.dwg"), &noise(5, 20_000));
            std::fs::rename(t.join("Projekt/x"), t.join("Projekt/y")).unwrap();
            std::fs::remove_file(odd_name(t)).unwrap();
        },
        |t: &Path| {
            write(&t.join("dup1.txt"), b"now different\n");
            write(&t.join("neu/\u{fc}ber.txt"), b"umlaut\n");
            std::fs::remove_file(t.join("a.txt")).unwrap();
        },
        |t: &Path| {
            write(&odd_name(t), b"latin-1 name\n");
            std::fs::rename(t.join("Projekt/y"), t.join("Projekt/x")).unwrap();
            write(&t.join("Modelle/gross.ifc"), &noise(6, 6 << 20 | 12345));
            write(&t.join("a.txt"), b"first a\n");
        },
    ];
    let mut moments = Vec::new();
    for (number, round) in rounds.iter().enumerate() {
        round(&tree);
        let summary = fms.scan(0);
        assert_eq!(summary["totals"]["failed"], 0, "round {}: {summary}", number + 1);
        moments.push((now_rfc3339(), snapshot(&tree)));
        // Whatever the next round does happens after this moment.
        std::thread::sleep(Duration::from_millis(50));
    }
    for (number, (at, expected)) in moments.iter().enumerate() {
        let out = work.path().join(format!("restored-{}", number + 1));
        let (code, report, output) = restore(&fms, &["--root", "docs", "--at", at, "--to", out.to_str().unwrap()]);
        assert_eq!(code, 0, "round {}: {output}", number + 1);
        assert_eq!(report["files"], expected.len() as u64, "round {}: {report}", number + 1);
        let restored = snapshot(&out);
        assert_eq!(show(&restored), show(expected), "round {} at {at}", number + 1);
    }
    // Contents shared by several paths were downloaded once.
    let (_, report, _) = restore(
        &fms,
        &[
            "--root",
            "docs",
            "--at",
            &moments[0].0,
            "--to",
            work.path().join("again").to_str().unwrap(),
        ],
    );
    assert_eq!(report["restored"], 10);
    assert_eq!(
        report["downloaded_contents"], 9,
        "dup1.txt and Kopie/dup2.txt share one download: {report}"
    );

    // One path and one folder, at round 2.
    let out = work.path().join("some");
    let (code, report, output) = restore(
        &fms,
        &[
            "--root",
            "docs",
            "--at",
            &moments[1].0,
            "--to",
            out.to_str().unwrap(),
            "a.txt",
            "Projekt",
        ],
    );
    assert_eq!(code, 0, "{output}");
    assert_eq!(report["restored"], 3, "{report}");
    assert_eq!(std::fs::read(out.join("a.txt")).unwrap(), b"second a, longer\n");
    assert!(out.join("Projekt/x/2.txt").exists());

    // The history of a.txt: created, modified, deleted, created again.
    let output = fms.run(&["history", "--root", "docs", "a.txt", "--json"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let history: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    let kinds: Vec<&str> = history.iter().map(|entry| entry["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["created", "modified", "deleted", "restored"], "{history:?}");
    assert!(history.iter().all(|entry| entry["stored"] == true), "{history:?}");
    // Version 2 of a.txt, by its number in the history.
    let out = work.path().join("version");
    let (code, report, output) = restore(
        &fms,
        &[
            "--root",
            "docs",
            "--version",
            "2",
            "--to",
            out.to_str().unwrap(),
            "a.txt",
        ],
    );
    assert_eq!((code, report["restored"].as_u64()), (0, Some(1)), "{output}");
    assert_eq!(std::fs::read(out.join("a.txt")).unwrap(), b"second a, longer\n");

    // find: by name, by content, by project, by change time; a bad glob is refused.
    let find = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["find", "--json"];
        all.extend_from_slice(args);
        let output = fms.run(&all);
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let found: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
        found.iter().map(|f| f["path"].as_str().unwrap().to_owned()).collect()
    };
    let pdf = "Projekte/2024-017 Wohnpark/Haus B/KG 300/Schnitt.pdf";
    assert_eq!(
        find(&["--root", "docs", "--name", "*.pdf"]),
        ["Plaene/b umbenannt.pdf", pdf]
    );
    let (same, _) = fms_actors::fs::hash::digest(&b"same bytes\n"[..]).unwrap();
    assert_eq!(
        find(&["--hash", &same]),
        ["Kopie/dup2.txt"],
        "dup1.txt changed in round 4"
    );
    assert_eq!(find(&["--project", "2024-017"]), [pdf]);
    let mut round5 = find(&["--changed-since", &moments[3].0]);
    round5.sort();
    assert_eq!(
        round5,
        [
            "Modelle/gross.ifc",
            "Projekt/x/1.txt",
            "Projekt/x/2.txt",
            "a.txt",
            "caf%E9 plan.txt"
        ],
        "what round 5 changed"
    );
    assert_eq!(
        find(&["--deleted", "--name", "c.dwg"]),
        Vec::<String>::new(),
        "c.dwg came back"
    );
    let output = fms.run(&["find", "--name", "a[b"]);
    assert_eq!(output.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_object_fails_its_files_by_name_and_the_others_restore() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("docs");
    let store = work.path().join("store");
    let manifest = make_corpus(&tree, 60, &["--large", "0"]);
    let database = Database::create("restore_damaged").await;
    let fms = Fms::new(
        &database,
        &format!("[storage]\nkind = \"local\"\npath = \"{}\"\n", store.display()),
        &[("docs", &tree)],
        "",
    );
    fms.scan(0);
    let expected = expected_files(&manifest);
    // Damage the object of one content (a byte flipped in the middle).
    let (victim_path, (_, victim_sha)) = expected.iter().find(|(_, (size, _))| *size > 100).unwrap();
    let object = walkdir::WalkDir::new(&store)
        .into_iter()
        .map(Result::unwrap)
        .find(|entry| entry.file_name().to_string_lossy().starts_with(victim_sha.as_str()))
        .expect("the object is stored")
        .into_path();
    let mut bytes = std::fs::read(&object).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&object, bytes).unwrap();

    let out = work.path().join("out");
    let (code, report, output) = restore(&fms, &["--root", "docs", "--to", out.to_str().unwrap()]);
    assert_eq!(code, 1, "{output}");
    let failed = report["failed"].as_array().unwrap();
    let holders: Vec<&String> = expected
        .iter()
        .filter(|(_, (_, sha))| sha == victim_sha)
        .map(|(p, _)| p)
        .collect();
    assert_eq!(failed.len(), holders.len(), "{report}");
    assert!(failed.iter().any(|f| f["path"] == victim_path.as_str()), "{report}");
    for failure in failed {
        assert_eq!(failure["sha256"], victim_sha.as_str());
        assert!(
            failure["reason"].as_str().unwrap().contains(victim_sha.as_str()),
            "{failure}"
        );
    }
    // Everything else is there and right; nothing at the damaged content's paths.
    let restored = snapshot(&out);
    assert_eq!(restored.len(), expected.len() - holders.len());
    for (path, (_, sha)) in &expected {
        match restored.get(path.as_bytes()) {
            Some((found, _)) => assert_eq!(found, sha, "{path}"),
            None => assert!(holders.contains(&path), "{path} missing"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_restore_finishes_when_run_again_without_downloading_what_is_right() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("docs");
    let manifest = make_corpus(&tree, 400, &["--large", "3", "--large-mib", "20"]);
    let database = Database::create("restore_killed").await;
    let garage = Garage::start();
    let fms = Fms::new(&database, &garage.storage_toml(), &[("docs", &tree)], "");
    fms.scan(0);
    let expected = expected_files(&manifest);

    let out = work.path().join("out");
    let mut running = fms.spawn(&[
        "restore",
        "--root",
        "docs",
        "--to",
        out.to_str().unwrap(),
        "--parallel",
        "1",
    ]);
    // Kill it once some files are in place, well before the end.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while snapshot_count(&out) < 20 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let child = running.child();
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let status = child.wait().unwrap();
    assert!(!status.success(), "the restore was killed, not finished");

    // No partial or wrong file at any target path.
    let after_kill = snapshot(&out);
    let mut right = 0;
    for (path, (sha, _)) in &after_kill {
        let name = String::from_utf8_lossy(path);
        if name.starts_with(".filemetasync-restore/") || name.ends_with(".filemetasync-part") {
            continue;
        }
        assert_eq!(
            Some(sha),
            expected.get(name.as_ref()).map(|(_, s)| s),
            "{name} after the kill"
        );
        right += 1;
    }
    assert!(
        right >= 20 && right < expected.len(),
        "killed in the middle: {right} of {}",
        expected.len()
    );

    let (code, report, output) = restore(&fms, &["--root", "docs", "--to", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{output}");
    assert_eq!(report["already_right"], right as u64, "{report}");
    assert_eq!(report["restored"], (expected.len() - right) as u64, "{report}");
    let restored = snapshot(&out);
    let got: BTreeMap<String, String> = restored
        .iter()
        .map(|(path, (sha, _))| (String::from_utf8_lossy(path).into_owned(), sha.clone()))
        .collect();
    let want: BTreeMap<String, String> = expected.iter().map(|(p, (_, s))| (p.clone(), s.clone())).collect();
    assert_eq!(got, want, "the finished tree, with no staging or part file left");
}

fn snapshot_count(dir: &Path) -> usize {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_file() && !entry.path().to_string_lossy().contains(".filemetasync"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_one_line_and_exit_2_with_nothing_written() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("docs");
    make_corpus(&tree, 20, &["--large", "0"]);
    let database = Database::create("restore_bad").await;
    let garage = Garage::start();
    let fms = Fms::new(&database, &garage.storage_toml(), &[("docs", &tree)], "");
    let before_first_scan = now_rfc3339();
    std::thread::sleep(Duration::from_millis(50));
    fms.scan(0);
    let out = work.path().join("out");
    let to = out.to_str().unwrap();
    let inside = tree.join("restored");
    let cases: &[(&[&str], &str)] = &[
        (&["--root", "nope", "--to", to], "no root \"nope\""),
        (
            &["--root", "docs", "--to", inside.to_str().unwrap()],
            "inside the watched root docs",
        ),
        (
            &["--root", "docs", "--to", to, "--at", "2999-01-01T00:00:00Z"],
            "in the future",
        ),
        (
            &["--root", "docs", "--to", to, "--at", &before_first_scan],
            "before root docs's first scan",
        ),
        (
            &["--root", "docs", "--to", to, "--at", "yesterday-ish"],
            "is not a moment",
        ),
        (&["--root", "docs", "--to", to, "a/[b"], "not a valid glob"),
    ];
    for (args, message) in cases {
        let mut all = vec!["restore"];
        all.extend_from_slice(args);
        let output = fms.run(&all);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: one line: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(!out.exists() && !inside.exists(), "{args:?} wrote something");
    }
    let output = fms.run(&["restore", "--root", "docs", "--to", to, "no/such/*.pdf"]);
    assert_eq!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stdout).contains("nothing to restore"));
    assert!(!out.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_database_comes_back_from_the_bucket_and_restores_the_same_trees() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("docs");
    let manifest = make_corpus(&tree, 200, &["--large", "1", "--large-mib", "6"]);
    let database = Database::create("catalog_lost").await;
    let garage = Garage::start();
    let fms = Fms::new(&database, &garage.storage_toml(), &[("docs", &tree)], "");
    fms.scan(0);
    let first = now_rfc3339();
    std::thread::sleep(Duration::from_millis(50));
    // A second round: one file gone, one changed, one new.
    let expected = expected_files(&manifest);
    let mut paths = expected.keys();
    std::fs::remove_file(tree.join(paths.next().unwrap())).unwrap();
    write(&tree.join(paths.next().unwrap()), b"changed after the first scan\n");
    write(&tree.join("neu/nach dem Export.txt"), b"new\n");
    fms.scan(0);
    let before = work.path().join("before-first");
    assert_eq!(
        restore(
            &fms,
            &["--root", "docs", "--at", &first, "--to", before.to_str().unwrap()]
        )
        .0,
        0
    );

    let output = fms.run(&["catalog", "export", "--json"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let exported: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let key = exported["key"].as_str().unwrap();
    assert!(
        key.starts_with("_filemetasync/catalog/") && key.ends_with(".fmscatalog.gz"),
        "{exported}"
    );

    // The database is lost.
    let admin_url = std::env::var("FMSTEST_PG_ADMIN_URL").unwrap();
    let name = database.url.rsplit('/').next().unwrap().to_owned();
    drop(database);
    let (admin, connection) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    admin
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .unwrap();

    let rebuilt = Database::create("catalog_rebuilt").await;
    let fms = Fms::new(&rebuilt, &garage.storage_toml(), &[("docs", &tree)], "");
    let output = fms.run(&["catalog", "import", "--json"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let imported: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(imported["key"], key);
    assert_eq!(imported["missing_objects"], 0, "{imported}");
    assert_eq!(imported["queued"], 0, "{imported}");
    rebuilt.assert_counts_match().await;
    // A second import into the now filled catalog is refused, and changes nothing.
    let again = fms.run(&["catalog", "import"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));

    // The same trees come back: now (equal to the disk) and before the second round.
    let now_out = work.path().join("now");
    let (code, _, output) = restore(&fms, &["--root", "docs", "--to", now_out.to_str().unwrap()]);
    assert_eq!(code, 0, "{output}");
    assert_eq!(show(&snapshot(&now_out)), show(&snapshot_registered(&tree)));
    let first_out = work.path().join("first");
    let (code, _, output) = restore(
        &fms,
        &["--root", "docs", "--at", &first, "--to", first_out.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{output}");
    assert_eq!(show(&snapshot(&first_out)), show(&snapshot(&before)));
    // And the rebuilt catalog equals the disk: a scan finds nothing to do.
    let summary = fms.scan(0);
    for counter in ["new", "changed", "moved", "deleted"] {
        assert_eq!(summary["totals"][counter], 0, "{counter}: {summary}");
    }
    assert_eq!(summary["uploaded"], 0, "{summary}");
}

/// The snapshot of what a sync registers of `tree`: the built-in ignore rules applied.
fn snapshot_registered(tree: &Path) -> BTreeMap<Vec<u8>, (String, i64)> {
    let matcher = fms_actors::fs::ignore::IgnoreMatcher::new::<&str>(&[]).unwrap();
    let mut all = snapshot(tree);
    all.retain(|path, _| !matcher.is_ignored_path(Path::new(std::ffi::OsStr::from_bytes(path))));
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_exports_the_catalog_on_its_schedule_and_keeps_the_newest() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("docs");
    make_corpus(&tree, 30, &["--large", "0"]);
    let database = Database::create("export_schedule").await;
    let garage = Garage::start();
    let (http, port) = common::daemon::http_section();
    // Every two seconds (cron with seconds), two kept.
    let extra = format!("{http}[catalog]\nexport_schedule = \"*/2 * * * * *\"\nexport_keep = 2\n");
    let fms = Fms::new(&database, &garage.storage_toml(), &[("docs", &tree)], &extra);
    let daemon = fms.start_daemon(port, &[], &[]);
    daemon.wait_until("three exports", Duration::from_secs(30), || {
        daemon.events_named("catalog exported").len() >= 3
    });
    let exported = daemon.events_named("catalog exported");
    assert!(
        exported
            .iter()
            .all(|e| e["actor"] == "exporter" && e["bytes"].as_u64() > Some(0)),
        "{exported:?}"
    );
    assert!(
        exported.iter().skip(2).all(|e| e["pruned"].as_u64() >= Some(1)),
        "{exported:?}"
    );
    assert!(daemon.metric("fms_catalog_exports_total") >= Some(3.0));
    assert_eq!(daemon.metric("fms_catalog_export_failures_total"), Some(0.0));
    let failed = daemon.events_named("catalog export failed");
    assert!(failed.is_empty(), "{failed:?}");
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0));
    let listed = fms.run(&["catalog", "list"]);
    let keys: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(|line| line.split_whitespace().next().unwrap().to_owned())
        .collect();
    assert_eq!(keys.len(), 2, "the newest two are kept: {keys:?}");
    let newest = exported.last().unwrap()["key"].as_str().unwrap().to_owned();
    assert!(keys.contains(&newest), "{keys:?} holds {newest}");
}

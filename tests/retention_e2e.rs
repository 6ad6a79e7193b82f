//! Retention (`gc`) against the real PostgreSQL (and Garage, end to end): what the policy
//! keeps stays, what it lets go leaves the store, a content any live file holds is never
//! deleted — by property over random histories, through five rounds of a real tree, while
//! scans, the watcher and a second agent register marked contents again, and with the gc
//! killed at random moments.

mod common;

use common::daemon::http_section;
use common::*;
use fms_actors::catalog::retention::RetentionPolicy;
use fms_actors::catalog::{Catalog, Deletion, Move, Registration, Target};
use fms_actors::pathenc::PathEncoding;
use fms_actors::store::{Content, LocalStore, ObjectStore};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

fn sha(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

// --- the property ---------------------------------------------------------------------------

const PATHS: u8 = 10;
const CONTENTS: u8 = 7;

/// One step of a history, read against the state it meets (steps that do not apply are
/// skipped): write content `b` at path `a` (a creation, an edit or a re-creation), move the
/// `a`-th live file to path `b`, delete the `a`-th live file.
#[derive(Clone, Debug)]
enum Step {
    Write(u8, u8),
    Move(u8, u8),
    Delete(u8),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..PATHS, 0..CONTENTS).prop_map(|(a, b)| Step::Write(a, b)),
        1 => (any::<u8>(), 0..PATHS).prop_map(|(a, b)| Step::Move(a, b)),
        2 => any::<u8>().prop_map(Step::Delete),
    ]
}

/// (deleted_for, replaced_for) in whole hours (None: for ever), keep_versions.
fn policy() -> impl Strategy<Value = (Option<u32>, Option<u32>, u32)> {
    (
        prop::option::weighted(0.8, 0u32..30),
        prop::option::weighted(0.8, 0u32..30),
        1u32..4,
    )
}

fn content_bytes(index: u8) -> Vec<u8> {
    format!("content number {index} of the retention property\n").into_bytes()
}

/// The model: each file row (by the order it was made) with its path, whether it is live,
/// and its events; the events in the order the catalog writes them.
#[derive(Default)]
struct Model {
    rows: Vec<ModelRow>,
    /// (row, kind, content) of every event, oldest first.
    events: Vec<(usize, &'static str, Option<String>)>,
}

struct ModelRow {
    path: String,
    live: bool,
    sha256: String,
}

impl Model {
    fn row_at(&self, path: &str) -> Option<usize> {
        self.rows.iter().position(|row| row.path == path)
    }

    fn live_rows(&self) -> Vec<usize> {
        (0..self.rows.len()).filter(|&i| self.rows[i].live).collect()
    }

    /// The contents the policy keeps, computed from the model alone: event `k` of `n`
    /// happened `n - k` hours ago.
    fn kept(&self, deleted_for: Option<u32>, replaced_for: Option<u32>, keep_versions: u32) -> BTreeSet<String> {
        let n = self.events.len();
        let mut kept = BTreeSet::new();
        for (index, row) in self.rows.iter().enumerate() {
            if row.live {
                kept.insert(row.sha256.clone());
            }
            // This row's versions: (content, ended at event k by kind).
            let mut versions: Vec<(String, Option<(usize, &'static str)>)> = Vec::new();
            for (k, (event_row, kind, content)) in self.events.iter().enumerate() {
                if *event_row != index {
                    continue;
                }
                match *kind {
                    "created" | "modified" | "restored" => {
                        if let Some(last) = versions.last_mut() {
                            if last.1.is_none() {
                                last.1 = Some((k, *kind));
                            }
                        }
                        versions.push((content.clone().unwrap(), None));
                    }
                    "deleted" => {
                        if let Some(last) = versions.last_mut() {
                            last.1 = Some((k, "deleted"));
                        }
                    }
                    _ => {}
                }
            }
            for (rank, (content, end)) in versions.iter().rev().enumerate() {
                let keep = match end {
                    None => true,
                    Some((k, kind)) => {
                        let age = (n - k) as u32;
                        let window = if *kind == "deleted" { deleted_for } else { replaced_for };
                        window.is_none_or(|hours| age <= hours)
                    }
                } || (row.live && (rank as u32) < keep_versions);
                if keep {
                    kept.insert(content.clone());
                }
            }
        }
        kept
    }
}

fn registration(path: &str, content: u8) -> Registration {
    let bytes = content_bytes(content);
    let sha256 = sha(&bytes);
    Registration {
        path: path.to_owned(),
        encoding: PathEncoding::Utf8,
        size: bytes.len() as u64,
        mtime_ns: 1_700_000_000_000_000_000,
        inode: 1,
        device: 1,
        storage_key: format!("files/{sha256}.txt"),
        sha256,
        metadata: None,
        parts: None,
    }
}

async fn file_id(database: &Database, path: &str) -> i64 {
    database
        .client
        .query_one("SELECT id FROM files WHERE root = 'r' AND path = $1", &[&path])
        .await
        .unwrap()
        .get(0)
}

/// Apply `steps` through the catalog's own writes, keeping the model in step.
async fn apply(database: &Database, catalog: &mut Catalog, steps: &[Step]) -> Model {
    let mut model = Model::default();
    for step in steps {
        match *step {
            Step::Write(a, b) => {
                let path = format!("p{a}.txt");
                let content = sha(&content_bytes(b));
                let (row, kind) = match model.row_at(&path) {
                    Some(row) if model.rows[row].live && model.rows[row].sha256 == content => continue,
                    Some(row) if model.rows[row].live => (row, "modified"),
                    Some(row) => (row, "restored"),
                    None => {
                        model.rows.push(ModelRow {
                            path: path.clone(),
                            live: false,
                            sha256: String::new(),
                        });
                        (model.rows.len() - 1, "created")
                    }
                };
                catalog
                    .write_batch("r", &[registration(&path, b)], &[], &[])
                    .await
                    .unwrap();
                model.rows[row].live = true;
                model.rows[row].sha256 = content.clone();
                model.events.push((row, kind, Some(content)));
            }
            Step::Move(a, b) => {
                let live = model.live_rows();
                let to = format!("p{b}.txt");
                if live.is_empty() || model.row_at(&to).is_some() {
                    continue;
                }
                let row = live[a as usize % live.len()];
                let id = file_id(database, &model.rows[row].path).await;
                let moved = Move {
                    id,
                    path: to.clone(),
                    encoding: PathEncoding::Utf8,
                    size: 1,
                    mtime_ns: 1_700_000_000_000_000_000,
                    inode: 1,
                    device: 1,
                };
                catalog.write_batch("r", &[], &[moved], &[]).await.unwrap();
                model.rows[row].path = to;
                model.events.push((row, "moved", None));
            }
            Step::Delete(a) => {
                let live = model.live_rows();
                if live.is_empty() {
                    continue;
                }
                let row = live[a as usize % live.len()];
                let id = file_id(database, &model.rows[row].path).await;
                catalog.write_batch("r", &[], &[], &[Deletion { id }]).await.unwrap();
                model.rows[row].live = false;
                model.events.push((row, "deleted", None));
            }
        }
    }
    model
}

/// Every content stored (objects put, queue emptied), as after a finished upload.
async fn store_everything(database: &Database, store: &ObjectStore, dir: &std::path::Path) {
    for index in 0..CONTENTS {
        let bytes = content_bytes(index);
        let sha256 = sha(&bytes);
        let known = database
            .count(&format!("SELECT count(*) FROM file_contents WHERE sha256 = '{sha256}'"))
            .await;
        if known == 0 {
            continue;
        }
        let source = dir.join(format!("c{index}"));
        std::fs::write(&source, &bytes).unwrap();
        let content = Content {
            key: format!("files/{sha256}.txt"),
            size: bytes.len() as u64,
            sha256,
            parts: None,
        };
        store.put_file(&content, &source).await.unwrap();
    }
    database
        .client
        .batch_execute("UPDATE file_contents SET uploaded_at = now(); DELETE FROM upload_queue;")
        .await
        .unwrap();
}

async fn stored_contents(store: &ObjectStore) -> BTreeSet<String> {
    store
        .list_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|(key, _)| key["files/".len().."files/".len() + 64].to_owned())
        .collect()
}

async fn check_history(steps: Vec<Step>, (deleted_for, replaced_for, keep_versions): (Option<u32>, Option<u32>, u32)) {
    let database = Database::create("gcprop").await;
    let target = Target::new(database.url.clone());
    let mut catalog = Catalog::connect(&target, "agent").await.unwrap();
    catalog.migrate().await.unwrap();
    let model = apply(&database, &mut catalog, &steps).await;
    // Event k of n happened n - k hours ago (half an hour more, to stay off the boundary).
    database
        .client
        .batch_execute(
            "UPDATE file_events e SET at = now() - (o.age - 0.5) * interval '1 hour'
               FROM (SELECT id, count(*) OVER () - row_number() OVER (ORDER BY id) + 1 AS age FROM file_events) o
              WHERE o.id = e.id",
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStore::Local(LocalStore::new(dir.path().join("store")));
    store_everything(&database, &store, dir.path()).await;
    let before = stored_contents(&store).await;

    let hours = |h: Option<u32>| h.map(|h| Duration::from_secs(h as u64 * 3600));
    let policy = RetentionPolicy {
        deleted_for: hours(deleted_for),
        replaced_for: hours(replaced_for),
        keep_versions,
        grace: Duration::ZERO,
    };
    let progress = Default::default();
    let report = fms_actors::retention::run(&mut catalog, &store, &policy, false, &progress)
        .await
        .unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);

    let expected: BTreeSet<String> = model
        .kept(deleted_for, replaced_for, keep_versions)
        .intersection(&before)
        .cloned()
        .collect();
    let after = stored_contents(&store).await;
    assert_eq!(
        after, expected,
        "the store keeps exactly what the policy keeps ({steps:?})"
    );
    // No live file lacks its object, and the catalog says which contents were purged.
    let live: BTreeSet<String> = model
        .live_rows()
        .iter()
        .map(|&row| model.rows[row].sha256.clone())
        .collect();
    assert!(live.is_subset(&after));
    let purged: BTreeSet<String> = database
        .client
        .query(
            "SELECT sha256 FROM file_contents WHERE purged_at IS NOT NULL AND uploaded_at IS NULL",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(purged, before.difference(&after).cloned().collect());
    assert_eq!(report.purged_objects as usize, purged.len());
    // A purged content registered again goes back on the upload queue.
    if let Some(gone) = purged.iter().next() {
        let index = (0..CONTENTS).find(|&i| sha(&content_bytes(i)) == *gone).unwrap();
        catalog
            .write_batch("r", &[registration("again.txt", index)], &[], &[])
            .await
            .unwrap();
        let queued = database
            .count(&format!("SELECT count(*) FROM upload_queue WHERE sha256 = '{gone}'"))
            .await;
        assert_eq!(queued, 1, "a purged content registered again is queued for upload");
    }
    database.assert_counts_match().await;
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        max_shrink_iters: 40,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Over random histories of creations, edits, moves, deletions and re-creations, and a
    /// random policy: exactly the contents the policy keeps remain (computed by the model
    /// above, independently of the SQL), and every live file's content is among them.
    #[test]
    fn the_store_keeps_exactly_what_the_policy_keeps(
        steps in prop::collection::vec(step(), 1..40),
        policy in policy(),
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(check_history(steps, policy));
    }
}

// --- end to end -------------------------------------------------------------------------------

fn retention_toml(policy: &str, grace: &str) -> String {
    format!("[retention]\n{policy}\ngrace = \"{grace}\"\nschedule = \"off\"\n[upload]\nlease = \"1s\"\n")
}

fn gc_report(fms: &Fms, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["gc", "--json"];
    all.extend_from_slice(args);
    let output = fms.run(&all);
    assert!(
        output.status.success(),
        "gc failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        tail(&String::from_utf8_lossy(&output.stdout))
    );
    summary_of(&String::from_utf8_lossy(&output.stdout))
}

/// A version of the five-round plan: its content, and the round it ended in (and whether by a
/// deletion).
type PlannedVersion = (String, Option<(u32, bool)>);

/// Shift every event an hour back: the rounds of a test are hours apart for the policy.
async fn an_hour_passes(database: &Database) {
    database
        .client
        .batch_execute("UPDATE file_events SET at = at - interval '1 hour'")
        .await
        .unwrap();
}

/// Five rounds of a real tree synced into Garage, an hour apart: afterwards exactly the
/// contents the policy keeps remain in the store; `history` and `restore` say which versions
/// were purged, and `verify --deep` does not count them as missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_rounds_leave_exactly_what_the_policy_keeps() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    std::fs::create_dir_all(tree.join("plans")).unwrap();
    let database = Database::create("gcrounds").await;
    let garage = Garage::start();
    // Deleted files' contents: 2.5 hours; replaced versions: 3.5 hours; the newest two
    // versions of each existing file whatever their age.
    let fms = Fms::new(
        &database,
        &garage.storage_toml(),
        &[("docs", &tree)],
        &retention_toml(
            "deleted_for = \"2h 30m\"\nreplaced_for = \"3h 30m\"\nkeep_versions = 2",
            "2s",
        ),
    );
    fms.migrate();
    // Each file: its versions as (content, round it ended, ended by deletion).
    let mut versions: BTreeMap<&str, Vec<PlannedVersion>> = BTreeMap::new();
    let mut live: BTreeMap<&str, String> = BTreeMap::new();
    let write = |name: &str, text: String| {
        std::fs::write(tree.join(name), &text).unwrap();
        sha(text.as_bytes())
    };
    // (round, file, what happens): "w" writes a new version, "d" deletes it, "m" renames.
    let plan: &[(u32, &str, &str)] = &[
        (0, "plans/a.txt", "w"),
        (0, "plans/b.txt", "w"),
        (0, "plans/c.txt", "w"),
        (0, "plans/d.txt", "w"),
        (1, "plans/a.txt", "w"),
        (1, "plans/b.txt", "d"),
        (2, "plans/a.txt", "w"),
        (2, "plans/c.txt", "w"),
        (2, "plans/e.txt", "w"),
        (3, "plans/d.txt", "d"),
        (3, "plans/c.txt", "w"),
        (3, "plans/e.txt", "m"),
        (4, "plans/a.txt", "w"),
        (4, "plans/f.txt", "w"),
        (4, "plans/f2.txt", "w"),
    ];
    for round in 0..5u32 {
        for &(when, name, what) in plan.iter().filter(|(r, _, _)| *r == round) {
            let history = versions.entry(name).or_default();
            if let Some(last) = history.last_mut().filter(|v| v.1.is_none()) {
                if what != "m" {
                    last.1 = Some((when, what == "d"));
                }
            }
            match what {
                "w" => {
                    let content = write(name, format!("{name} as of round {round}\n"));
                    history.push((content.clone(), None));
                    live.insert(name, content);
                }
                "d" => {
                    std::fs::remove_file(tree.join(name)).unwrap();
                    live.remove(name);
                }
                _ => {
                    // A rename keeps the version (and its file row).
                    std::fs::rename(tree.join(name), tree.join("plans/e-renamed.txt")).unwrap();
                }
            }
        }
        fms.scan(0);
        an_hour_passes(&database).await;
    }
    // Round r's events are now 5 - r hours old. The model: a version ended by a deletion in
    // round r is kept while 5 - r <= 2, one replaced in round r while 5 - r <= 3; a live
    // file keeps its newest two.
    let mut expected: BTreeSet<String> = BTreeSet::new();
    for (name, history) in &versions {
        let exists = live.contains_key(name) || *name == "plans/e.txt";
        for (rank, (content, end)) in history.iter().rev().enumerate() {
            let keep = match end {
                None => true,
                Some((round, true)) => 5 - round <= 2,
                Some((round, false)) => 5 - round <= 3,
            } || (exists && rank < 2);
            if keep {
                expected.insert(content.clone());
            }
        }
    }
    let all: BTreeSet<String> = versions.values().flatten().map(|(c, _)| c.clone()).collect();
    assert!(expected.len() < all.len(), "the plan must let something go");

    let dry = gc_report(&fms, &["--dry-run"]);
    assert_eq!(dry["collectable_objects"], (all.len() - expected.len()) as u64);
    assert_eq!(dry["by_root"][0]["root"], "docs");
    assert_eq!(stored(&garage).await, all, "a dry run deletes nothing");
    let first = gc_report(&fms, &[]);
    assert_eq!(first["marked"], (all.len() - expected.len()) as u64);
    assert_eq!(first["purged_objects"], 0, "nothing goes before the grace period");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let second = gc_report(&fms, &[]);
    assert_eq!(second["purged_objects"], (all.len() - expected.len()) as u64);
    assert_eq!(
        stored(&garage).await,
        expected,
        "the store keeps exactly what the policy keeps"
    );

    // The audit trail stays, and says what was purged.
    let history = fms.run(&["history", "--root", "docs", "plans/a.txt"]);
    let text = String::from_utf8_lossy(&history.stdout);
    assert!(text.contains("purged by retention on"), "{text}");
    assert_eq!(
        database
            .count(
                "SELECT count(*) FROM file_events WHERE file_id IN (SELECT id FROM files WHERE path = 'plans/a.txt')"
            )
            .await,
        4
    );
    // Restoring a moment whose version is gone names the reason; the rest comes back.
    let to = work.path().join("restored");
    let at = database
        .client
        .query_one(
            "SELECT to_char((min(at) + interval '1 minute') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
               FROM file_events",
            &[],
        )
        .await
        .unwrap()
        .get::<_, String>(0);
    let restore = fms.run(&["restore", "--root", "docs", "--at", &at, "--to", to.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&restore.stdout);
    assert_eq!(restore.status.code(), Some(1), "{text}");
    assert!(text.contains("purged by retention on"), "{text}");
    // verify --deep: purged contents are not missing.
    let verify = fms.run(&["verify", "--deep"]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
    database.assert_counts_match().await;
}

async fn stored(garage: &Garage) -> BTreeSet<String> {
    assert_store_matches_keys(&garage.store()).await
}

/// Many gc rounds with a short grace period while marked contents come back — by scans of a
/// second agent, by the watcher of a running daemon — and files are deleted again: afterwards
/// no live file lacks its object and `verify --deep` exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marked_contents_that_come_back_are_never_lost() {
    let work = tempfile::tempdir().unwrap();
    let (watched, scanned) = (work.path().join("watched"), work.path().join("scanned"));
    std::fs::create_dir_all(&watched).unwrap();
    std::fs::create_dir_all(&scanned).unwrap();
    let database = Database::create("gcrace").await;
    let garage = Garage::start();
    let policy = retention_toml("deleted_for = \"0s\"\nreplaced_for = \"0s\"", "1500ms");
    let (http, port) = http_section();
    let daemon_fms = Fms::new(
        &database,
        &garage.storage_toml(),
        &[("watched", &watched)],
        &format!(
            "{policy}[watch]\nmode = \"poll\"\npoll_interval = \"300ms\"\ndebounce = \"200ms\"\n\
             [scan]\nschedule = \"0 3 * * *\"\n{http}"
        ),
    );
    let second = Fms::new(&database, &garage.storage_toml(), &[("scanned", &scanned)], &policy);
    // Two agents on one catalog.
    for (fms, agent) in [(&daemon_fms, "nas-a"), (&second, "nas-b")] {
        let text = std::fs::read_to_string(&fms.config).unwrap();
        std::fs::write(
            &fms.config,
            text.replacen("agent = \"test\"", &format!("agent = \"{agent}\""), 1),
        )
        .unwrap();
    }
    daemon_fms.migrate();
    let daemon = daemon_fms.start_daemon(port, &[], &[]);
    let pool: Vec<String> = (0..24)
        .map(|i| format!("pooled content {i}\n").repeat(50 + i))
        .collect();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut gc_runs = 0;
    let mut purged_total = 0u64;
    let mut kept_total = 0u64;
    let mut ever_purged: BTreeSet<String> = BTreeSet::new();
    for round in 0..12 {
        // Both agents' trees get pooled contents (some of them marked or purged by now) and
        // lose others.
        for (dir, fms) in [(&watched, None), (&scanned, Some(&second))] {
            for slot in 0..8 {
                let path = dir.join(format!("slot-{slot}.txt"));
                match next() % 3 {
                    0 => {
                        let _ = std::fs::remove_file(&path);
                    }
                    _ => std::fs::write(&path, &pool[(next() % pool.len() as u64) as usize]).unwrap(),
                }
            }
            if let Some(fms) = fms {
                fms.scan(0);
            }
        }
        // gc runs back to back while the watcher registers what changed.
        for _ in 0..3 {
            let report = gc_report(&second, &[]);
            gc_runs += 1;
            for row in database
                .client
                .query("SELECT sha256 FROM file_contents WHERE purged_at IS NOT NULL", &[])
                .await
                .unwrap()
            {
                ever_purged.insert(row.get::<_, String>(0));
            }
            purged_total += report["purged_objects"].as_u64().unwrap();
            kept_total += report["kept_registered_again"].as_u64().unwrap();
            tokio::time::sleep(Duration::from_millis(200 + (next() % 600))).await;
        }
        let _ = round;
    }
    // Quiet: everything registered and uploaded, then the store checked.
    second.scan(0);
    daemon
        .wait_for("the queue is empty", Duration::from_secs(60), async || {
            database.count("SELECT count(*) FROM upload_queue").await == 0
        })
        .await;
    let missing = database
        .count(
            "SELECT count(*) FROM files f JOIN file_contents c USING (sha256)
              WHERE f.deleted_at IS NULL AND c.uploaded_at IS NULL",
        )
        .await;
    assert_eq!(missing, 0, "every live file's content is stored");
    let live: BTreeSet<String> = database
        .client
        .query("SELECT DISTINCT sha256 FROM files WHERE deleted_at IS NULL", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let in_store = stored(&garage).await;
    assert!(
        live.is_subset(&in_store),
        "a live file lacks its object: {:?}",
        live.difference(&in_store)
    );
    let verify = second.run(&["verify", "--deep"]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
    let came_back = live.intersection(&ever_purged).count();
    eprintln!(
        "{gc_runs} gc runs: {purged_total} objects deleted, {kept_total} kept at the sweep because they came back, \
         {came_back} purged contents registered again and stored again"
    );
    assert!(purged_total > 0, "the rounds must delete something");
    assert!(came_back > 0, "the rounds must bring purged contents back");
    drop(daemon);
}

/// SIGKILL of gc at random moments, ten rounds: after each, the catalog and the store agree
/// (`verify` exits 0: nothing counted as stored is missing), and a last run finishes the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_killed_at_random_moments_leaves_catalog_and_store_consistent() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    let database = Database::create("gckill").await;
    let garage = Garage::start();
    let fms = Fms::new(
        &database,
        &garage.storage_toml(),
        &[("docs", &tree)],
        &retention_toml("deleted_for = \"0s\"", "1500ms"),
    );
    // 600 contents stored, then deleted: all collectable.
    for i in 0..600 {
        std::fs::write(tree.join(format!("f{i:03}.txt")), format!("doomed {i}\n")).unwrap();
    }
    std::fs::write(tree.join("keeper.txt"), b"kept for ever").unwrap();
    fms.scan(0);
    for i in 0..600 {
        std::fs::remove_file(tree.join(format!("f{i:03}.txt"))).unwrap();
    }
    fms.scan(0);
    gc_report(&fms, &[]);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    for round in 0..10 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let mut child = fms.spawn(&["gc"]);
        std::thread::sleep(Duration::from_millis(50 + state % 400));
        let child = child.take();
        unsafe {
            libc::kill(child.id() as i32, libc::SIGKILL);
        }
        let _ = child.wait_with_output();
        let verify = fms.run(&["verify"]);
        assert!(
            verify.status.success(),
            "round {round}: {}",
            String::from_utf8_lossy(&verify.stdout)
        );
        // Nothing purged still has its object counted as stored, and every content counted as
        // stored has its object.
        let stored_count = database
            .count("SELECT count(*) FROM file_contents WHERE uploaded_at IS NOT NULL")
            .await;
        assert!(stored_count >= 1);
    }
    let last = gc_report(&fms, &[]);
    let purged = database
        .count("SELECT count(*) FROM file_contents WHERE purged_at IS NOT NULL")
        .await;
    assert_eq!(purged, 600, "every doomed content purged in the end ({last})");
    assert_eq!(
        stored(&garage).await,
        BTreeSet::from([sha(b"kept for ever")]),
        "only the live file's content is left"
    );
    let verify = fms.run(&["verify", "--deep"]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
    database.assert_counts_match().await;
}

/// The daemon runs retention on `retention.schedule`: a deleted file's content leaves the
/// store once its grace period is over, the run is logged and counted in `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_runs_retention_on_its_schedule() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("stays.txt"), b"stays").unwrap();
    std::fs::write(tree.join("goes.txt"), b"goes").unwrap();
    let database = Database::create("gcdaemon").await;
    let garage = Garage::start();
    let (http, port) = http_section();
    let fms = Fms::new(
        &database,
        &garage.storage_toml(),
        &[("docs", &tree)],
        &format!(
            "[retention]\ndeleted_for = \"0s\"\ngrace = \"1500ms\"\nschedule = \"*/1 * * * * *\"\n\
             [upload]\nlease = \"1s\"\n[watch]\nmode = \"poll\"\npoll_interval = \"300ms\"\ndebounce = \"200ms\"\n{http}"
        ),
    );
    fms.migrate();
    let daemon = fms.start_daemon(port, &[], &[]);
    daemon
        .wait_for("both contents are stored", Duration::from_secs(30), async || {
            stored(&garage).await.len() == 2
        })
        .await;
    std::fs::remove_file(tree.join("goes.txt")).unwrap();
    // Listed only while retention runs: an object deleted between a listing and its read is
    // what is waited for, not a failure.
    daemon
        .wait_for(
            "retention deletes the deleted file's content",
            Duration::from_secs(30),
            async || stored_contents(&garage.store()).await == BTreeSet::from([sha(b"stays")]),
        )
        .await;
    assert_eq!(
        stored(&garage).await,
        BTreeSet::from([sha(b"stays")]),
        "what stays is intact"
    );
    assert!(daemon.metric("fms_gc_purged_total") >= Some(1.0));
    assert!(daemon.metric("fms_gc_reclaimed_bytes_total") >= Some(4.0));
    let runs = daemon.events_named("retention run finished");
    assert!(runs.iter().any(|e| e["deleted"] == 1), "{runs:?}");
    let purged = database
        .count(&format!(
            "SELECT count(*) FROM file_contents WHERE sha256 = '{}' AND purged_at IS NOT NULL",
            sha(b"goes")
        ))
        .await;
    assert_eq!(purged, 1);
}

//! The core end to end against two independent S3 implementations: Garage and s3s-fs (the
//! s3s protocol crate over a folder). Sync with a multipart file, a no-change rescan, dedup
//! of copies under another root, and `verify --deep`, with the same assertions on both.

mod common;

use common::*;
use std::collections::BTreeSet;

/// What differs between the two servers for the scenario.
struct Server {
    storage_toml: String,
    store: fms_actors::store::ObjectStore,
    /// Everything the server holds in the bucket (to see that no probe object stays).
    all_keys: Box<dyn Fn() -> Vec<String>>,
}

async fn core_scenario(name: &str, server: Server) {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    let manifest = make_corpus(&tree, 400, &["--large", "1", "--large-mib", "12"]);
    let expected = expected_files(&manifest);
    let distinct: BTreeSet<String> = expected.values().map(|(_, sha)| sha.clone()).collect();
    let database = Database::create(name).await;
    let copies = work.path().join("copies");
    let fms = Fms::new(
        &database,
        &server.storage_toml,
        &[("docs", &tree), ("copies", &copies)],
        "",
    );
    std::fs::create_dir_all(&copies).unwrap();

    // Sync: every content stored once, the large one in parts, each object hashing to its key.
    let output = fms.run(&["scan", "--wait", "--json"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{name}: {}", tail(&stdout));
    let first = summary_of(&stdout);
    let integrity = log_events(&output.stdout, "store integrity");
    assert_eq!(integrity.len(), 1, "{name}: the store's checks are decided once");
    println!("{name}: integrity {}", integrity[0]);
    assert_eq!(first["uploaded"], distinct.len() as u64, "{name}");
    assert_eq!(
        database.live_files("docs").await,
        expected,
        "{name}: catalog == manifest"
    );
    assert_eq!(assert_store_matches_keys(&server.store).await, distinct, "{name}");
    let keys = (server.all_keys)();
    assert_eq!(
        keys.len(),
        distinct.len(),
        "{name}: nothing but the contents is left: {keys:?}"
    );
    assert!(keys.iter().all(|key| key.starts_with("files/")), "{name}");

    // A no-change rescan reads nothing and uploads nothing.
    let second = fms.scan(0);
    assert_eq!(second["totals"]["unchanged"], expected.len() as u64, "{name}");
    assert_eq!(second["totals"]["hashed_files"], 0, "{name}");
    assert_eq!(second["uploaded"], 0, "{name}");

    // Copies under another root: registered, nothing uploaded again.
    let copied: Vec<&ManifestEntry> = manifest.iter().filter(|entry| !entry.ignored).take(50).collect();
    for (index, entry) in copied.iter().enumerate() {
        std::fs::copy(tree.join(&entry.path), copies.join(format!("copy-{index}.bin"))).unwrap();
    }
    let third = fms.scan(0);
    assert_eq!(third["totals"]["new"], copied.len() as u64, "{name}");
    assert_eq!(third["uploaded"], 0, "{name}: dedup");
    assert_eq!((server.all_keys)().len(), distinct.len(), "{name}: no new object");

    let output = fms.run(&["verify", "--deep", "--json"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{name}: verify --deep: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["ok"], distinct.len() as u64, "{name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_core_sync_holds_on_garage() {
    let garage = Garage::start();
    let store = garage.store();
    let fms_actors::store::ObjectStore::S3(lister) = garage.store() else {
        unreachable!("Garage is an S3 store")
    };
    // Called from the test's runtime: list on a thread with a runtime of its own.
    let all_keys = Box::new(move || {
        let lister = lister.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            let keys = runtime.block_on(lister.list_prefix("")).unwrap();
            keys.into_iter().map(|(key, _)| key).collect()
        })
        .join()
        .unwrap()
    });
    core_scenario(
        "core_garage",
        Server {
            storage_toml: garage.storage_toml(),
            store,
            all_keys,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_core_sync_holds_on_s3s_fs() {
    let server = std::sync::Arc::new(S3sFs::start());
    let lister = server.clone();
    core_scenario(
        "core_s3s",
        Server {
            storage_toml: server.storage_toml(),
            store: server.store(),
            all_keys: Box::new(move || lister.stored_paths()),
        },
    )
    .await;
}

//! `filemetasync verify` against a real Garage: a deleted object and an object whose bytes were
//! replaced are found, `--repair` queues them again, and the next upload stores them.

mod common;

use common::*;
use fms_actors::store::Content;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_missing_and_replaced_objects_and_repair_restores_them() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    let manifest = make_corpus(&tree, 300, &["--large", "0"]);
    let distinct: BTreeSet<String> = expected_files(&manifest).values().map(|(_, sha)| sha.clone()).collect();
    let database = Database::create("verify").await;
    let garage = Garage::start();
    let fms = Fms::new(&database, &garage.storage_toml(), &[("docs", &tree)], "");
    fms.scan(0);

    let clean = verify(&fms, &["--deep"], 0);
    assert_eq!(clean["checked"], distinct.len() as u64);
    assert_eq!(clean["ok"], distinct.len() as u64);
    assert!(clean["bytes_read"].as_u64().unwrap() > 0);

    // Break two objects: delete one, replace another's bytes with as many other bytes.
    let store = garage.store();
    let mut keys: Vec<(String, u64)> = store.list_keys().await.unwrap();
    keys.sort();
    keys.retain(|(_, size)| *size > 0);
    let deleted = keys[0].0.clone();
    let (replaced, size) = keys[1].clone();
    store.delete(&deleted).await.unwrap();
    let forged = work.path().join("forged");
    std::fs::write(&forged, vec![b'x'; size as usize]).unwrap();
    let forged_content = Content {
        sha256: hex::encode(Sha256::digest(std::fs::read(&forged).unwrap())),
        size,
        key: replaced.clone(),
        parts: None,
    };
    store.put_file(&forged_content, &forged).await.unwrap();

    let shallow = verify(&fms, &[], 1);
    let problems = findings(&shallow);
    assert_eq!(
        problems,
        vec![(deleted.clone(), "missing".to_owned())],
        "a listing sees the missing object only"
    );

    let deep = verify(&fms, &["--deep"], 1);
    let mut problems = findings(&deep);
    problems.sort();
    let mut expected = vec![
        (deleted.clone(), "missing".to_owned()),
        (replaced.clone(), "wrong_content".to_owned()),
    ];
    expected.sort();
    assert_eq!(problems, expected, "--deep also sees the replaced bytes");

    let repaired = verify(&fms, &["--deep", "--repair"], 1);
    assert_eq!(repaired["requeued"], 2);
    assert_eq!(repaired["deleted_objects"], 1);
    assert_eq!(database.count("SELECT count(*) FROM upload_queue").await, 2);

    let rescan = fms.scan(0);
    assert_eq!(rescan["uploaded"], 2, "the repaired contents are uploaded again");
    let after = verify(&fms, &["--deep"], 0);
    assert_eq!(after["ok"], distinct.len() as u64);
    assert_eq!(assert_store_matches_keys(&garage.store()).await, distinct);
}

fn verify(fms: &Fms, args: &[&str], code: i32) -> serde_json::Value {
    let mut all = vec!["verify", "--json"];
    all.extend_from_slice(args);
    let output = fms.run(&all);
    assert_eq!(
        output.status.code(),
        Some(code),
        "verify {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// (key, problem kind) of each finding.
fn findings(report: &serde_json::Value) -> Vec<(String, String)> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|finding| {
            let problem = &finding["problem"];
            let kind = match problem {
                serde_json::Value::String(kind) => kind.clone(),
                serde_json::Value::Object(map) => map.keys().next().unwrap().clone(),
                other => panic!("unexpected problem {other}"),
            };
            (finding["key"].as_str().unwrap().to_owned(), kind)
        })
        .collect()
}

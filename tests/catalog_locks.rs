//! Our own catalog writers cannot deadlock each other: registration batches of two roots and
//! an uploader's leases, marks and releases run at once on overlapping contents (new ones, and
//! known ones that go back on the queue), round after round, and PostgreSQL's own deadlock
//! counter for the database stays where it was.

mod common;

use common::*;
use fms_actors::catalog::{Catalog, QueueItem, Registration, Target};
use fms_actors::pathenc::PathEncoding;
use fms_actors::upload_handoff::{LeaseRequest, Taker};
use std::time::Duration;

const ROUNDS: usize = 40;
const CONTENTS_PER_ROUND: usize = 1000;

fn registrations(round: usize, order_seed: u64, prefix: &str) -> Vec<Registration> {
    let mut indexes: Vec<usize> = (0..CONTENTS_PER_ROUND).collect();
    // Each writer sends the shared contents in an order of its own.
    let mut state = order_seed.wrapping_add(round as u64 * 7919) | 1;
    for i in (1..indexes.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        indexes.swap(i, (state % (i as u64 + 1)) as usize);
    }
    indexes
        .into_iter()
        .map(|index| {
            let sha256 = format!("{round:032x}{index:032x}");
            Registration {
                path: format!("{prefix}/{round}/{index}.bin"),
                encoding: PathEncoding::Utf8,
                size: 100 + index as u64,
                mtime_ns: 1_700_000_000_000_000_000,
                inode: (round * 1000 + index) as u64,
                device: 1,
                storage_key: format!("files/{sha256}.bin"),
                sha256,
                metadata: None,
                parts: None,
            }
        })
        .collect()
}

/// Contents the catalog knew before, waiting for an upload without a queue row.
async fn insert_known(database: &Database, known: &[&str]) {
    database
        .client
        .execute(
            "INSERT INTO file_contents (sha256, size, storage_key)
             SELECT sha256, 1, 'files/' || sha256 FROM unnest($1::text[]) AS t(sha256)",
            &[&known],
        )
        .await
        .unwrap();
}

async fn deadlocks(database: &Database) -> i64 {
    database
        .count("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registration_and_upload_marks_on_overlapping_contents_never_deadlock() {
    let database = Database::create("locks").await;
    let target = Target::new(database.url.clone());
    let mut first = Catalog::connect(&target, "a").await.unwrap();
    first.migrate().await.unwrap();
    let mut second = Catalog::connect(&target, "b").await.unwrap();
    let uploader = Catalog::connect(&target, "u").await.unwrap();
    let before = deadlocks(&database).await;
    let roots = vec!["one".to_owned(), "two".to_owned()];

    for round in 0..ROUNDS {
        let (batch_one, batch_two) = (registrations(round, 1, "x"), registrations(round, 2, "y"));
        // All (even rounds) or half the contents are known already and wait for an upload without a queue row (as
        // after a content was dropped from the queue and comes back): both writers queue them.
        let known: Vec<&str> = batch_one
            .iter()
            .filter(|registration| round % 2 == 0 || registration.size % 2 == 0)
            .map(|registration| registration.sha256.as_str())
            .collect();
        insert_known(&database, &known).await;
        let write_one = first.write_batch("one", &batch_one, &[], &[]);
        let write_two = second.write_batch("two", &batch_two, &[], &[]);
        let upload = async {
            // Lease what is there, mark half uploaded, give the rest back: row locks on the
            // queue and the contents while the registrations take theirs.
            for _ in 0..3 {
                let items = uploader.dequeue(256, Duration::from_secs(60), &roots).await?;
                let done: Vec<&str> = items.iter().step_by(2).map(|item| item.sha256.as_str()).collect();
                uploader.mark_uploaded(&done).await?;
                uploader.release_leases().await?;
            }
            Ok::<_, fms_actors::catalog::CatalogError>(())
        };
        let (one, two, marks) = tokio::join!(write_one, write_two, upload);
        one.unwrap_or_else(|error| panic!("round {round}, root one: {}", error.detail()));
        two.unwrap_or_else(|error| panic!("round {round}, root two: {}", error.detail()));
        marks.unwrap_or_else(|error| panic!("round {round}, uploader: {}", error.detail()));
    }

    // pg_stat counters reach the view after the backends report them.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(deadlocks(&database).await - before, 0, "PostgreSQL detected a deadlock");
    let contents = database.count("SELECT count(*) FROM file_contents").await;
    assert_eq!(contents, (ROUNDS * CONTENTS_PER_ROUND) as i64);
    let files = database.count("SELECT count(*) FROM files").await;
    assert_eq!(files, (2 * ROUNDS * CONTENTS_PER_ROUND) as i64);
    // The running totals kept by statement triggers survived the concurrent writers.
    database.assert_counts_match().await;
    database.client.execute("SELECT fms_fold_counts()", &[]).await.unwrap();
    assert_eq!(database.count("SELECT count(*) FROM catalog_counts").await, 1);
    database.assert_counts_match().await;
}

/// The uploader asks the store (HEAD) only about contents it may hold already: a content
/// registered for the first time is leased without, and every later lease of it (a lost lease,
/// a crashed uploader, a PUT whose answer never came) and every content the catalog knew
/// before is asked about.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_contents_the_store_may_hold_are_asked_about() {
    let database = Database::create("heads").await;
    let target = Target::new(database.url.clone());
    let mut catalog = Catalog::connect(&target, "a").await.unwrap();
    catalog.migrate().await.unwrap();
    let uploader = Catalog::connect(&target, "u").await.unwrap();
    let roots = vec!["one".to_owned()];
    let batch = registrations(0, 1, "x");
    // A tenth were known before (stored once, then their object went: retention, a failed
    // verification): the store may hold them.
    let known: Vec<&str> = batch.iter().take(100).map(|r| r.sha256.as_str()).collect();
    insert_known(&database, &known).await;
    catalog.write_batch("one", &batch, &[], &[]).await.unwrap();

    let first = uploader.dequeue(2000, Duration::from_secs(60), &roots).await.unwrap();
    assert_eq!(first.len(), CONTENTS_PER_ROUND);
    let asked: Vec<&str> = first
        .iter()
        .filter(|item| item.maybe_stored)
        .map(|item| item.sha256.as_str())
        .collect();
    let mut expected = known.clone();
    expected.sort();
    let mut asked_sorted = asked.clone();
    asked_sorted.sort();
    assert_eq!(asked_sorted, expected, "only the contents known before are asked about");

    // The answer of every transfer was lost: all of them are asked about next time.
    assert_eq!(uploader.release_leases().await.unwrap(), CONTENTS_PER_ROUND as u64);
    let second = uploader.dequeue(2000, Duration::from_secs(60), &roots).await.unwrap();
    assert_eq!(second.len(), CONTENTS_PER_ROUND);
    assert!(second.iter().all(|item| item.maybe_stored), "a second lease asks first");
    // The lease counted its attempt as before.
    assert!(
        second.iter().all(|item| item.attempts == 1),
        "released attempts are given back"
    );
}

/// New contents written already leased to an uploader (`write_batch_leasing`) are that
/// uploader's alone while its connection lives, as many as the room allows; the rest are
/// queued for anyone. When the uploader's connection is gone, another uploader takes them at
/// once, counting the first attempt and asking the store first (the first may have stored them).
#[tokio::test]
async fn contents_leased_at_registration_go_to_another_uploader_when_theirs_is_gone() {
    let database = Database::create("handoff").await;
    let target = Target::new(database.url.clone());
    let mut registrar = Catalog::connect(&target, "a").await.unwrap();
    registrar.migrate().await.unwrap();
    let taker_catalog = Catalog::connect(&target, "a").await.unwrap();
    let (worker, lock_key) = taker_catalog.lease_identity().await.unwrap();
    let other = Catalog::connect(&target, "a").await.unwrap();

    // Three new contents; the second is held by two files of the batch.
    let mut batch = registrations(0, 1, "x");
    batch.truncate(4);
    batch[3].sha256 = batch[1].sha256.clone();
    batch[3].size = batch[1].size;
    let lease = LeaseRequest {
        taker: Taker {
            worker: worker.clone(),
            lock_key,
            lease: Duration::from_secs(600),
        },
        room: 2,
    };
    let written = registrar
        .write_batch_leasing("one", &batch, &[], &[], Some(&lease))
        .await
        .unwrap();
    assert_eq!(written.outcome.created, 4);
    assert_eq!(written.outcome.new_contents, 3);
    let mut leased = written.leased;
    leased.sort_by(|a, b| a.sha256.cmp(&b.sha256));
    assert_eq!(leased.len(), 2, "as many as the room allows: {leased:?}");
    for item in &leased {
        let files: Vec<&Registration> = batch.iter().filter(|r| r.sha256 == item.sha256).collect();
        assert_eq!(item.size, files[0].size);
        assert_eq!(item.storage_key, files[0].storage_key);
        assert_eq!(
            (item.attempts, item.maybe_stored, item.already_uploaded),
            (1, false, false)
        );
        let mut paths: Vec<&str> = item.sources.iter().map(|s| s.path.as_str()).collect();
        paths.sort();
        let mut expected: Vec<&str> = files.iter().map(|r| r.path.as_str()).collect();
        expected.sort();
        assert_eq!(paths, expected, "every file of the batch that holds it is a source");
        assert!(item.sources.iter().all(|s| s.root == "one"));
    }
    let owners: Vec<(String, Option<String>, i32)> = database
        .client
        .query(
            "SELECT sha256, lease_owner, attempts FROM upload_queue ORDER BY sha256",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    assert_eq!(owners.len(), 3);
    assert_eq!(
        owners
            .iter()
            .filter(|(_, owner, _)| owner.as_deref() == Some(worker.as_str()))
            .count(),
        2
    );

    // While the taker's connection lives, another uploader gets only the unleased content.
    let roots = vec!["one".to_owned()];
    let got = other.dequeue(10, Duration::from_secs(600), &roots).await.unwrap();
    assert_eq!(got.len(), 1);
    assert!(leased.iter().all(|item| item.sha256 != got[0].sha256));
    assert!(!got[0].maybe_stored, "its first lease: the store cannot hold it");

    // The taker is gone: its leases are the other uploader's at once, not after 600 s.
    drop(taker_catalog);
    let mut again = Vec::new();
    for _ in 0..50 {
        again = other.dequeue(10, Duration::from_secs(600), &roots).await.unwrap();
        if !again.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    again.sort_by(|a, b| a.sha256.cmp(&b.sha256));
    let shas = |items: &[QueueItem]| items.iter().map(|i| i.sha256.clone()).collect::<Vec<_>>();
    assert_eq!(shas(&again), shas(&leased));
    assert!(again.iter().all(|item| item.maybe_stored && item.attempts == 2));

    // Without a lease request nothing is leased.
    let written = registrar
        .write_batch_leasing("one", &registrations(1, 1, "x")[..3], &[], &[], None)
        .await
        .unwrap();
    assert_eq!((written.outcome.new_contents, written.leased.len()), (3, 0));
}

/// A file registered with a content that is already waiting for its upload does not lock
/// that content's queue row: the uploader marking it uploaded at that moment (which locks the
/// row) neither waits for the registration batch nor makes it wait. A failed row is still
/// put back on the queue by the same registration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_a_content_already_waiting_leaves_its_queue_row_unlocked() {
    let database = Database::create("waiting").await;
    let target = Target::new(database.url.clone());
    let mut registrar = Catalog::connect(&target, "a").await.unwrap();
    registrar.migrate().await.unwrap();
    let first = registrations(0, 1, "x");
    let (waiting, failed) = (&first[0], &first[1]);
    registrar.write_batch("one", &first[..2], &[], &[]).await.unwrap();
    database
        .client
        .execute(
            "UPDATE upload_queue SET state = 'failed', last_error = 'gave up' WHERE sha256 = $1",
            &[&failed.sha256],
        )
        .await
        .unwrap();

    // The uploader's mark of the waiting content is under way: its row is locked.
    let (mut marker, connection) = tokio_postgres::connect(&database.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let mark = marker.transaction().await.unwrap();
    mark.execute(
        "SELECT 1 FROM upload_queue WHERE sha256 = $1 FOR UPDATE",
        &[&waiting.sha256],
    )
    .await
    .unwrap();

    // Copies of both contents at new paths.
    let copies: Vec<Registration> = [waiting, failed]
        .into_iter()
        .map(|original| Registration {
            path: format!("{}-copy", original.path),
            inode: original.inode + 10_000,
            ..original.clone()
        })
        .collect();
    let written = tokio::time::timeout(Duration::from_secs(30), registrar.write_batch("one", &copies, &[], &[]))
        .await
        .expect("the registration did not wait for the uploader's lock")
        .unwrap();
    assert_eq!(written.created, 2);
    mark.rollback().await.unwrap();

    let states: Vec<(String, String, i32)> = database
        .client
        .query("SELECT sha256, state, attempts FROM upload_queue ORDER BY sha256", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    let mut expected = vec![
        (waiting.sha256.clone(), "pending".to_owned(), 0),
        (failed.sha256.clone(), "pending".to_owned(), 0),
    ];
    expected.sort();
    assert_eq!(
        states, expected,
        "the waiting row as it was, the failed one queued again"
    );
}

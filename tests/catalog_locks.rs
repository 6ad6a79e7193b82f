//! Our own catalog writers cannot deadlock each other: registration batches of two roots and
//! an uploader's leases, marks and releases run at once on overlapping contents (new ones, and
//! known ones that go back on the queue), round after round, and PostgreSQL's own deadlock
//! counter for the database stays where it was.

mod common;

use common::*;
use fms_actors::catalog::{Catalog, Registration, Target};
use fms_actors::pathenc::PathEncoding;
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

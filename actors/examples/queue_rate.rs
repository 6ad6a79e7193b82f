//! How fast the upload queue gives out work: the uploader's own calls (`Catalog::dequeue`
//! with its batch of 64, then `Catalog::mark_uploaded`), with no store in between, until
//! COUNT contents have been leased and marked or the queue has nothing more for ROOTS.
//! Prints one JSON line: contents, seconds, contents per second.
//!
//!   cargo run --release -p fms-actors --example queue_rate -- DATABASE_URL ROOT[,ROOT...] COUNT

use fms_actors::catalog::{Catalog, Target};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: queue_rate DATABASE_URL ROOT[,ROOT...] COUNT");
        std::process::exit(2);
    }
    let roots: Vec<String> = args[2].split(',').map(str::to_owned).collect();
    let count: usize = args[3].parse().expect("COUNT is a number");
    let target = Target {
        url: args[1].clone(),
        ca_file: None,
        schema: None,
        connect_timeout: Duration::from_secs(10),
        statement_timeout: Duration::from_secs(300),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = runtime.block_on(async {
        let catalog = Catalog::open(&target, "queue-rate").await?;
        catalog.relax_commit_durability().await?;
        let started = Instant::now();
        let mut done = 0;
        while done < count {
            let batch = catalog.dequeue(64, Duration::from_secs(600), &roots).await?;
            if batch.is_empty() {
                break;
            }
            let keys: Vec<&str> = batch.iter().map(|item| item.sha256.as_str()).collect();
            catalog.mark_uploaded(&keys).await?;
            done += batch.len();
        }
        Ok::<_, fms_actors::catalog::CatalogError>((done, started.elapsed().as_secs_f64()))
    });
    match result {
        Ok((done, seconds)) => println!(
            "{{\"contents\":{done},\"seconds\":{seconds:.3},\"per_second\":{:.0}}}",
            done as f64 / seconds
        ),
        Err(error) => {
            eprintln!("queue_rate: {}", error.detail());
            std::process::exit(1);
        }
    }
}

//! `filemetasync metadata backfill [--limit N] [--reread] [--json]`: content metadata for
//! contents registered before it was read (or, with `--reread`, by older extractors).
//!
//! It reads each content from the NAS (one live file that holds it, under a root of this
//! configuration), never from the store, and checks while it reads that the file still holds
//! that content: a file changed since its registration is skipped (the next scan registers
//! its new content, with metadata). Bounded: at most `--limit` contents per run, a page of
//! them at a time, `hash.workers` files at once. Resumable: what is written stays written,
//! and a new run takes up what is left.

use crate::app;
use crate::config::Config;
use fms_actors::catalog::metadata::Undescribed;
use fms_actors::metadata::ContentMetadata;
use futures::StreamExt;
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

#[derive(clap::Subcommand, Debug)]
pub enum MetadataAction {
    /// Read the metadata of contents that have none, from their files on the NAS.
    Backfill(BackfillArgs),
}

#[derive(clap::Args, Debug)]
pub struct BackfillArgs {
    /// Contents to read in this run at most (a later run goes on).
    #[arg(long, default_value_t = 1_000_000)]
    pub limit: u64,
    /// Also read again the contents whose metadata older extractors wrote.
    #[arg(long)]
    pub reread: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Contents asked for and written per round trip.
const PAGE: i64 = 500;

#[derive(Debug, Default, Serialize)]
pub struct BackfillReport {
    pub read: u64,
    pub written: u64,
    /// Of those written, the ones an extractor could not read (their reason is in the row).
    pub unreadable: u64,
    /// Files that no longer hold the content they were registered with.
    pub changed: u64,
    /// Files that could not be opened or read (gone, unreadable); the next run tries again.
    pub failed: u64,
    pub bytes_read: u64,
    /// More contents are left than `--limit` allowed.
    pub more_left: bool,
    pub duration_ms: u64,
}

enum Outcome {
    Read(Box<ContentMetadata>, u64),
    Changed,
    Failed(String),
}

pub async fn run(config: &Config, action: &MetadataAction) -> anyhow::Result<ExitCode> {
    let MetadataAction::Backfill(args) = action;
    let started = Instant::now();
    let mut catalog = app::open_catalog(config).await?;
    let roots: HashMap<String, PathBuf> = config
        .roots
        .iter()
        .map(|root| (root.label.clone(), root.path.clone()))
        .collect();
    let labels: Vec<String> = roots.keys().cloned().collect();
    let workers = (config.hash.workers as usize).max(1);
    let mut report = BackfillReport::default();
    let progress = Arc::new(AtomicU64::new(0));
    let shown = progress.clone();
    let ticker = super::spinner(move || format!("read {} contents", shown.load(Ordering::Relaxed)));
    let mut after = String::new();
    loop {
        let left = args.limit.saturating_sub(report.read) as i64;
        if left == 0 {
            report.more_left = !catalog
                .undescribed_contents(&after, 1, &labels, args.reread)
                .await?
                .is_empty();
            break;
        }
        let page = catalog
            .undescribed_contents(&after, left.min(PAGE), &labels, args.reread)
            .await?;
        let Some(last) = page.last() else { break };
        after = last.sha256.clone();
        let results: Vec<(String, Outcome)> = futures::stream::iter(page.into_iter().map(|content| {
            let root = roots.get(&content.root).cloned();
            tokio::task::spawn_blocking(move || (content.sha256.clone(), read_content(root, &content)))
        }))
        .buffer_unordered(workers)
        .filter_map(|joined| async move { joined.ok() })
        .collect()
        .await;
        let mut rows = Vec::new();
        for (sha256, outcome) in results {
            report.read += 1;
            progress.fetch_add(1, Ordering::Relaxed);
            match outcome {
                Outcome::Read(metadata, bytes) => {
                    report.bytes_read += bytes;
                    report.unreadable += u64::from(metadata.unreadable.is_some());
                    rows.push((sha256, *metadata));
                }
                Outcome::Changed => report.changed += 1,
                Outcome::Failed(error) => {
                    report.failed += 1;
                    if !args.json {
                        eprintln!("filemetasync: {sha256}: {error}");
                    }
                }
            }
        }
        if !rows.is_empty() {
            report.written += catalog.write_content_metadata(&rows, args.reread).await?;
        }
    }
    if let Some(ticker) = ticker {
        ticker.finish_and_clear();
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "read             {:>10}   contents ({})",
            report.read,
            bytesize::ByteSize(report.bytes_read)
        );
        println!(
            "written          {:>10}   ({} marked unreadable, the reason in the row)",
            report.written, report.unreadable
        );
        println!(
            "changed          {:>10}   (the file holds other bytes now; the next scan registers them)",
            report.changed
        );
        println!(
            "failed           {:>10}   (could not be read; a later run tries again)",
            report.failed
        );
        if report.more_left {
            println!("more contents are left: run `filemetasync metadata backfill` again");
        }
        println!("duration         {:>10.1}s", started.elapsed().as_secs_f64());
    }
    Ok(if report.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Read one content from its file: hash it as the scan does, with metadata, and keep the
/// metadata only if the file still holds that content.
fn read_content(root: Option<PathBuf>, content: &Undescribed) -> Outcome {
    let Some(root) = root else {
        return Outcome::Failed(format!("root {} is not in this configuration", content.root));
    };
    let relative = match fms_actors::pathenc::decode(&content.path, content.encoding) {
        Ok(relative) => relative,
        Err(error) => return Outcome::Failed(format!("path {:?} cannot be decoded: {error}", content.path)),
    };
    let path = root.join(relative);
    match fms_actors::fs::hash_file_with(&path, &mut || {}, &AtomicU64::new(0), true) {
        Ok(hashed) if hashed.sha256 == content.sha256 => {
            Outcome::Read(hashed.metadata.unwrap_or_default(), hashed.stat.size)
        }
        Ok(_) => Outcome::Changed,
        Err(error) => Outcome::Failed(format!("{}: {error}", path.display())),
    }
}

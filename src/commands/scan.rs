//! `filemetasync scan [--wait]`: one full reconciliation of every root, uploads running
//! alongside; with `--wait`, also until the upload queue is empty. Progress on a terminal,
//! a summary at the end.

use crate::app;
use crate::config::Config;
use fms_actors::hashing::{HashCounters, HasherPool};
use fms_actors::scan::{scan_root, RootCounts, RootOutcome, RootReport, ScanContext, ScanOptions, ScanProgress};
use fms_actors::upload::{UploadControl, UploadCounters, Uploader};
use serde::Serialize;
use slog::{info, Logger};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct ScanArgs {
    /// Also wait until the upload queue is empty.
    #[arg(long)]
    pub wait: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Register only; leave the upload queue to the daemon or other upload workers.
    #[arg(long, conflicts_with = "wait")]
    pub no_upload: bool,
    /// Accept a root that is empty, or on another filesystem than at its last scan, as
    /// really emptied or moved (otherwise it is reported unavailable and nothing is deleted).
    #[arg(long)]
    pub accept_root_change: bool,
}

#[derive(Debug, Serialize)]
pub struct ScanSummary {
    pub roots: Vec<RootReport>,
    pub totals: RootCounts,
    pub uploaded: u64,
    pub uploaded_bytes: u64,
    /// Contents the store already had (dedup across agents and runs).
    pub upload_skipped_existing: u64,
    pub upload_dropped: u64,
    pub upload_failed_attempts: u64,
    pub upload_failed_final: u64,
    pub queue_pending: i64,
    pub duration_ms: u64,
}

pub async fn run(config: &Config, log: &Logger, args: &ScanArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let store = app::object_store(config);
    info!(log, "scan started"; "roots" => config.roots.len(), "store" => store.describe(),
        "wait" => args.wait, "upload" => !args.no_upload);
    let first = app::open_catalog_migrated(config).await?;
    let pool = Arc::new(HasherPool::new(config.hash.workers as usize));
    let context = Arc::new(ScanContext {
        ignore: app::ignore_matcher(config),
        options: ScanOptions {
            batch_size: config.scan.batch_size as usize,
            accept_root_change: args.accept_root_change,
        },
        progress: Arc::new(ScanProgress::default()),
        log: log.clone(),
    });
    let uploader = Uploader::new(
        app::open_catalog(config).await?,
        store,
        app::root_paths(config),
        app::upload_settings(config),
        Arc::default(),
        log.clone(),
    );
    let upload_counters = uploader.counters.clone();
    let control = Arc::new(UploadControl {
        producing: AtomicBool::new(true),
        drain: args.wait,
        stop: AtomicBool::new(args.no_upload),
        wake: Default::default(),
        knobs: Arc::new(app::upload_knobs(config)),
    });
    let progress = start_progress(context.clone(), pool.counters.clone(), upload_counters.clone());
    let upload_task = tokio::spawn(upload_loop(uploader, control.clone()));
    let reports = scan_all_roots(config, context.clone(), pool, first).await?;
    control.finish_producing();
    let uploader = upload_task.await??;
    // Asked only now: with --no-upload the uploader stopped before anything was registered.
    let queue_pending = uploader.pending().await?;
    if let Some(progress) = progress {
        progress.finish_and_clear();
    }
    let summary = summarise(reports, &upload_counters, queue_pending, started.elapsed());
    print_summary(&summary, args.json)?;
    info!(log, "scan command finished"; "duration_ms" => summary.duration_ms);
    let roots_ok = summary
        .roots
        .iter()
        .all(|report| report.outcome == RootOutcome::Complete);
    Ok(if roots_ok && summary.upload_failed_final == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Scan every root at once, each on its own catalog connection.
async fn scan_all_roots(
    config: &Config,
    context: Arc<ScanContext>,
    pool: Arc<HasherPool>,
    first: fms_actors::catalog::Catalog,
) -> anyhow::Result<Vec<RootReport>> {
    let mut first = Some(first);
    let mut tasks = Vec::new();
    for root in app::roots(config) {
        let mut catalog = match first.take() {
            Some(catalog) => catalog,
            None => app::open_catalog(config).await?,
        };
        let (context, pool) = (context.clone(), pool.clone());
        tasks.push(tokio::spawn(async move {
            scan_root(&mut catalog, &*pool, &context, &root).await
        }));
    }
    let mut reports = Vec::new();
    for task in tasks {
        reports.push(task.await?);
    }
    Ok(reports)
}

/// Upload while the scan runs; afterwards stop (without `--wait`) or drain the queue.
async fn upload_loop(uploader: Uploader, control: Arc<UploadControl>) -> anyhow::Result<Uploader> {
    if !control.stop.load(std::sync::atomic::Ordering::SeqCst) {
        uploader.prepare().await?;
    }
    uploader.run(&control).await?;
    Ok(uploader)
}

fn summarise(reports: Vec<RootReport>, uploads: &UploadCounters, queue_pending: i64, elapsed: Duration) -> ScanSummary {
    let mut totals = RootCounts::default();
    for report in &reports {
        let counts = &report.counts;
        totals.seen += counts.seen;
        totals.unchanged += counts.unchanged;
        totals.new += counts.new;
        totals.changed += counts.changed;
        totals.restored += counts.restored;
        totals.moved += counts.moved;
        totals.deleted += counts.deleted;
        totals.ignored += counts.ignored;
        totals.skipped += counts.skipped;
        totals.failed += counts.failed;
        totals.hashed_files += counts.hashed_files;
        totals.bytes_hashed += counts.bytes_hashed;
        totals.protected += counts.protected;
        totals.retried_batches += counts.retried_batches;
    }
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    ScanSummary {
        roots: reports,
        totals,
        uploaded: load(&uploads.uploaded),
        uploaded_bytes: load(&uploads.uploaded_bytes),
        upload_skipped_existing: load(&uploads.skipped_existing),
        upload_dropped: load(&uploads.dropped),
        upload_failed_attempts: load(&uploads.failed_attempts),
        upload_failed_final: load(&uploads.failed_final),
        queue_pending,
        duration_ms: elapsed.as_millis() as u64,
    }
}

fn print_summary(summary: &ScanSummary, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(summary)?);
        return Ok(());
    }
    let t = &summary.totals;
    let seconds = summary.duration_ms as f64 / 1000.0;
    for report in &summary.roots {
        if let RootOutcome::Unavailable(reason) | RootOutcome::Failed(reason) = &report.outcome {
            println!("root {}: NOT SCANNED: {reason}", report.root);
        }
    }
    println!(
        "files seen       {:>10}   (unchanged {}, ignored {}, skipped {})",
        t.seen, t.unchanged, t.ignored, t.skipped
    );
    println!("new              {:>10}", t.new);
    println!("changed          {:>10}   (restored {})", t.changed, t.restored);
    println!("moved            {:>10}", t.moved);
    println!("deleted          {:>10}", t.deleted);
    println!(
        "hashed           {:>10}   files, {}",
        t.hashed_files,
        bytesize::ByteSize(t.bytes_hashed)
    );
    println!(
        "uploaded         {:>10}   contents, {}",
        summary.uploaded,
        bytesize::ByteSize(summary.uploaded_bytes)
    );
    println!(
        "already stored   {:>10}   (upload skipped by dedup)",
        summary.upload_skipped_existing
    );
    println!(
        "failures         {:>10}   (files {}, upload attempts {}, uploads given up {})",
        t.failed + summary.upload_failed_final,
        t.failed,
        summary.upload_failed_attempts,
        summary.upload_failed_final
    );
    println!("queue pending    {:>10}", summary.queue_pending);
    println!("duration         {:>10.1}s", seconds);
    Ok(())
}

/// A live line on stderr while the scan runs, only on a terminal.
fn start_progress(
    context: Arc<ScanContext>,
    hashing: Arc<HashCounters>,
    uploads: Arc<UploadCounters>,
) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new_spinner();
    let shown = bar.clone();
    let started = Instant::now();
    tokio::spawn(async move {
        while !shown.is_finished() {
            let bytes = hashing.bytes.load(Ordering::Relaxed);
            let rate = bytes as f64 / started.elapsed().as_secs_f64().max(0.001);
            shown.set_message(format!(
                "walked {} files · hashed {} files, {} ({}/s) · uploaded {}",
                context.progress.walked.load(Ordering::Relaxed),
                hashing.files.load(Ordering::Relaxed),
                bytesize::ByteSize(bytes),
                bytesize::ByteSize(rate as u64),
                uploads.uploaded.load(Ordering::Relaxed),
            ));
            shown.tick();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    Some(bar)
}

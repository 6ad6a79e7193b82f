//! `filemetasync scan [--wait]`: one full reconciliation of every root, uploads running
//! alongside; with `--wait`, also until the upload queue is empty. Progress on a terminal,
//! a summary at the end. It runs the daemon's own actors once, so `scan` and `run` share
//! one wiring.

use crate::app;
use crate::config::Config;
use fms_actors::daemon::{Observed, OnceRun, Role};
use fms_actors::scan::{RootCounts, RootOutcome, RootReport};
use fms_actors::upload::UploadCounters;
use serde::Serialize;
use slog::{info, Logger};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
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
    /// Existence checks sent to the store (only for contents it may hold already).
    pub upload_heads: u64,
    /// The most uploads that were in flight at once (adapted to the store's latency).
    pub upload_in_flight_peak: u64,
    pub upload_dropped: u64,
    pub upload_failed_attempts: u64,
    pub upload_failed_final: u64,
    /// Contents waiting for upload that this agent can send; when the whole queue is long,
    /// the whole queue's count instead (`queue_pending_all_agents` true).
    pub queue_pending: i64,
    pub queue_pending_all_agents: bool,
    pub duration_ms: u64,
}

/// One full reconciliation on the daemon's own actors (see `fms_actors::daemon::OnceRun`).
/// Runs its own actix system, like `run`: no runtime around it.
pub fn run(config: &Config, log: &Logger, args: &ScanArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(app::open_catalog_migrated(config))?;
    let role = if args.no_upload { Role::Index } else { Role::All };
    let mut settings = super::run::daemon_settings(config, role);
    settings.scan.accept_root_change = args.accept_root_change;
    settings.http_listen = None;
    let observed = Observed::new(&settings);
    let once = OnceRun::new(role.uploads(), args.wait, observed.knobs.clone());
    settings.once = Some(once.clone());
    info!(log, "scan started"; "roots" => config.roots.len(), "store" => settings.store.describe(),
        "wait" => args.wait, "upload" => !args.no_upload);
    let progress = Progress::start(&observed);
    let signal_log = log.clone();
    fms_actors::daemon::run(settings, observed.clone(), log.clone(), move |handle| {
        tokio::spawn(crate::signals::handle(
            handle,
            None,
            crate::signals::INTERRUPTED,
            signal_log,
        ));
    })?;
    progress.finish();
    if let Some(reason) = once.failure() {
        anyhow::bail!("the uploads stopped: {reason}");
    }
    let Some(reports) = once.take_reports() else {
        anyhow::bail!("the scan was interrupted; what it registered stays, and the next scan goes on from there");
    };
    let queue_pending = runtime.block_on(async {
        let catalog = app::open_catalog(config).await?;
        anyhow::Ok(catalog.pending_for_summary(&app::root_labels(config)).await?)
    })?;
    let summary = summarise(reports, &observed.uploads, queue_pending, started.elapsed());
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

fn summarise(
    reports: Vec<RootReport>,
    uploads: &UploadCounters,
    queue_pending: Result<i64, i64>,
    elapsed: Duration,
) -> ScanSummary {
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
        totals.metadata_written += counts.metadata_written;
        totals.metadata_refused += counts.metadata_refused;
    }
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    ScanSummary {
        roots: reports,
        totals,
        uploaded: load(&uploads.uploaded),
        uploaded_bytes: load(&uploads.uploaded_bytes),
        upload_skipped_existing: load(&uploads.skipped_existing),
        upload_heads: load(&uploads.heads),
        upload_in_flight_peak: load(&uploads.in_flight_peak),
        upload_dropped: load(&uploads.dropped),
        upload_failed_attempts: load(&uploads.failed_attempts),
        upload_failed_final: load(&uploads.failed_final),
        queue_pending: queue_pending.unwrap_or_else(|all| all),
        queue_pending_all_agents: queue_pending.is_err(),
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
    if summary.queue_pending_all_agents {
        println!("queue pending    {:>10}   (all agents)", summary.queue_pending);
    } else {
        println!("queue pending    {:>10}", summary.queue_pending);
    }
    println!("duration         {:>10.1}s", seconds);
    Ok(())
}

/// A live line on stderr while the scan runs, only on a terminal.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn start(observed: &Observed) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress { bar: None };
        }
        let bar = indicatif::ProgressBar::new_spinner();
        let shown = bar.clone();
        let (walk, hashing, uploads) = (
            observed.progress.clone(),
            observed.hashing.clone(),
            observed.uploads.clone(),
        );
        let started = Instant::now();
        std::thread::spawn(move || {
            while !shown.is_finished() {
                let bytes = hashing.bytes.load(Ordering::Relaxed);
                let rate = bytes as f64 / started.elapsed().as_secs_f64().max(0.001);
                shown.set_message(format!(
                    "walked {} files · hashed {} files, {} ({}/s) · uploaded {}",
                    walk.walked.load(Ordering::Relaxed),
                    hashing.files.load(Ordering::Relaxed),
                    bytesize::ByteSize(bytes),
                    bytesize::ByteSize(rate as u64),
                    uploads.uploaded.load(Ordering::Relaxed),
                ));
                shown.tick();
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        Progress { bar: Some(bar) }
    }

    fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

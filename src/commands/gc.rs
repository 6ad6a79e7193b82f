//! `filemetasync gc [--dry-run] [--json]`: retention. Marks the stored contents that the
//! `[retention]` policy lets go and deletes, from the store only, those marked longer than
//! the grace period and still held by no live file. Catalog rows and events stay; a purged
//! content's versions say "purged by retention" in `history` and `restore`.
//! Exit 0 when the run finished (objects the store would not delete are listed and tried
//! again by the next run: exit 1).

use crate::app;
use crate::config::Config;
use fms_actors::retention::{run as gc, GcProgress, GcReport};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct GcArgs {
    /// Show what the policy lets go (objects and bytes, per root) and what a run now would
    /// delete; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(config: &Config, args: &GcArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut catalog = app::open_catalog(config).await?;
    let store = app::object_store(config);
    let policy = config.retention.policy();
    let progress = Arc::new(GcProgress::default());
    let shown = progress.clone();
    let ticker = super::spinner(move || {
        format!(
            "marked {} · deleted {} objects ({})",
            shown.marked.load(Ordering::Relaxed),
            shown.purged.load(Ordering::Relaxed),
            bytesize::ByteSize(shown.reclaimed_bytes.load(Ordering::Relaxed))
        )
    });
    let report = gc(&mut catalog, &store, &policy, args.dry_run, &progress)
        .await
        .map_err(|error| anyhow::anyhow!("gc: {error}"))?;
    if let Some(ticker) = ticker {
        ticker.finish_and_clear();
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(config, &report, started);
    }
    Ok(if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn forever(duration: Option<std::time::Duration>) -> String {
    duration.map_or_else(|| "forever".into(), |d| humantime::format_duration(d).to_string())
}

fn print_report(config: &Config, report: &GcReport, started: Instant) {
    let retention = &config.retention;
    println!(
        "policy           deleted files' contents kept {}, replaced versions kept {}, newest {} version(s) of each file kept; grace {}",
        forever(retention.deleted_for),
        forever(retention.replaced_for),
        retention.keep_versions,
        humantime::format_duration(retention.grace)
    );
    if !report.policy_collects {
        println!("nothing to do: the policy keeps everything (set retention.deleted_for or retention.replaced_for)");
    }
    let size = |bytes: u64| bytesize::ByteSize(bytes).to_string();
    println!(
        "collectable      {:>10}   objects, {} (no live file holds them; the policy lets them go)",
        report.collectable_objects,
        size(report.collectable_bytes)
    );
    for share in &report.by_root {
        println!(
            "  root {:<12}{:>9}   objects, {}",
            share.root,
            share.objects,
            size(share.bytes)
        );
    }
    if report.dry_run {
        println!(
            "would delete now {:>10}   objects, {} (marked longer than the grace period)",
            report.due_objects,
            size(report.due_bytes)
        );
        println!("dry run: nothing was marked or deleted");
    } else {
        println!(
            "marked           {:>10}   (unmarked {})",
            report.marked, report.unmarked
        );
        println!(
            "deleted          {:>10}   objects, {} reclaimed",
            report.purged_objects,
            size(report.purged_bytes)
        );
        println!(
            "kept             {:>10}   (a file holds the content again)",
            report.kept_registered_again
        );
        for failure in &report.failed {
            println!("not deleted      {}  {}", failure.key, failure.reason);
        }
    }
    println!("duration         {:>10.1}s", started.elapsed().as_secs_f64());
}

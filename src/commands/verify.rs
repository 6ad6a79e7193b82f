//! `filemetasync verify [--deep] [--repair] [--json]`: compare the catalog with the object
//! store. Exit 0 when every uploaded content is stored with the right size (and, with
//! `--deep`, the right SHA-256); 1 when something is wrong (also after `--repair` re-queued
//! it: the next upload stores it, and a second verify then exits 0).

use crate::app;
use crate::config::Config;
use fms_actors::verify::{verify, Problem, VerifyProgress};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// Read every object back and check its SHA-256 (reads the whole store).
    #[arg(long)]
    pub deep: bool,
    /// Delete wrong objects and queue their contents, and missing ones, for upload again.
    #[arg(long)]
    pub repair: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(config: &Config, args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut catalog = app::open_catalog(config).await?;
    let store = app::object_store(config);
    let progress = Arc::new(VerifyProgress::default());
    let ticker = show_progress(progress.clone());
    let report = verify(&mut catalog, &store, args.deep, args.repair, &progress).await?;
    if let Some(ticker) = ticker {
        ticker.finish_and_clear();
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for finding in &report.findings {
            let what = match &finding.problem {
                Problem::Missing => "missing".to_owned(),
                Problem::WrongSize { expected, found } => format!("wrong size: {found} bytes, catalog says {expected}"),
                Problem::WrongContent { found_sha256 } => format!("wrong content: the object hashes to {found_sha256}"),
                Problem::Unreadable { error } => format!("unreadable: {error}"),
            };
            println!("{}  {what}", finding.key);
        }
        println!(
            "checked          {:>10}   uploaded contents ({})",
            report.checked,
            store.describe()
        );
        println!("ok               {:>10}", report.ok);
        println!("problems         {:>10}", report.findings.len());
        if args.deep {
            println!("read back        {:>10}", bytesize::ByteSize(report.bytes_read));
        }
        println!(
            "unknown objects  {:>10}   (in the store, not in the catalog; left alone)",
            report.unknown_objects
        );
        if args.repair {
            println!(
                "repaired         {:>10}   re-queued ({} wrong objects deleted); the daemon or `scan --wait` uploads them",
                report.requeued, report.deleted_objects
            );
        } else if !report.findings.is_empty() {
            println!("run `filemetasync verify --repair` to queue them for upload again");
        }
        println!("duration         {:>10.1}s", started.elapsed().as_secs_f64());
    }
    Ok(if report.findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn show_progress(progress: Arc<VerifyProgress>) -> Option<indicatif::ProgressBar> {
    super::spinner(move || {
        format!(
            "checked {} contents · read {}",
            progress.checked.load(Ordering::Relaxed),
            bytesize::ByteSize(progress.bytes_read.load(Ordering::Relaxed))
        )
    })
}

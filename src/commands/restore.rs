//! `filemetasync restore` and `filemetasync history`: files back as they were at a moment,
//! and the versions of one path. Exit 0 when everything asked for is in place, 1 when a file
//! could not be restored (each named with its reason), 2 for a request that cannot be served
//! as asked (nothing is written then).

use crate::app;
use crate::config::Config;
use chrono::{DateTime, Local, NaiveDate, NaiveDateTime, TimeZone, Utc};
use fms_actors::catalog::Catalog;
use fms_actors::pathenc;
use fms_actors::restore::{self, Existing, RestoreError, RestoreProgress, RestoreRequest};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;

#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// The root (its label) to restore from.
    #[arg(long)]
    pub root: String,
    /// Root-relative paths (a file, or a folder with everything under it) or globs (`*`
    /// within a folder, `**` across folders); none: the whole root.
    pub paths: Vec<String>,
    /// The moment: RFC 3339 (2026-11-24T17:30:00+01:00), or local time as
    /// "2026-11-24 17:30[:00]" or a date (its midnight). Default: now.
    #[arg(long)]
    pub at: Option<String>,
    /// The version of one PATH as `history` numbers them (1 = the oldest), instead of --at.
    #[arg(long, conflicts_with = "at")]
    pub version: Option<usize>,
    /// The folder to restore into (created if missing).
    #[arg(long)]
    pub to: PathBuf,
    /// Replace files at the target that have other content (and allow a target inside a
    /// watched root).
    #[arg(long, conflicts_with = "skip_existing")]
    pub overwrite: bool,
    /// Leave files at the target that have other content.
    #[arg(long)]
    pub skip_existing: bool,
    /// Show what would be restored; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Contents downloaded at once (small objects are bound by the store's latency, not
    /// by bandwidth, so many at once pay: against Garage here 8 took 28 s for 7,911
    /// objects, 32 took 9 s, 64 took 7 s, and more only cost memory).
    #[arg(long, default_value_t = 64)]
    pub parallel: usize,
}

#[derive(clap::Args, Debug)]
pub struct HistoryArgs {
    /// The root (its label).
    #[arg(long)]
    pub root: Option<String>,
    /// The path: root-relative with --root, or an absolute path under a configured root.
    pub path: PathBuf,
    /// Print the versions as JSON.
    #[arg(long)]
    pub json: bool,
}

/// A request that cannot be served: one line, exit 2, nothing written.
fn refuse(message: impl std::fmt::Display) -> anyhow::Result<ExitCode> {
    eprintln!("filemetasync: {message}");
    Ok(ExitCode::from(2))
}

pub async fn run(config: &Config, args: &RestoreArgs) -> anyhow::Result<ExitCode> {
    let catalog = app::open_catalog(config).await?;
    let at = match (&args.at, args.version) {
        (_, Some(number)) => {
            let [path] = args.paths.as_slice() else {
                return refuse("--version needs exactly one PATH (the numbers are those of `filemetasync history`)");
            };
            let entries = catalog.history(&args.root, path.trim_matches('/')).await?;
            let Some(entry) = number.checked_sub(1).and_then(|index| entries.get(index)) else {
                return refuse(format!(
                    "{path} has {} versions in root {}; see `filemetasync history --root {} {path}`",
                    entries.len(),
                    args.root,
                    args.root
                ));
            };
            match DateTime::parse_from_rfc3339(&entry.at) {
                Ok(at) => at.with_timezone(&Utc),
                Err(_) => anyhow::bail!("the catalog gave a time that does not parse: {}", entry.at),
            }
        }
        (None, None) => Utc::now(),
        (Some(text), None) => match parse_moment(text) {
            Some(at) => at,
            None => {
                return refuse(format!(
                    "--at {text:?} is not a moment: use RFC 3339 (2026-11-24T17:30:00+01:00), \"2026-11-24 17:30\" (local time) or a date"
                ))
            }
        },
    };
    let at_text = at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    if args.parallel == 0 {
        return refuse("--parallel must be at least 1");
    }
    let moment = catalog.check_moment(&args.root, &at_text).await?;
    let Some(first_scan) = &moment.first_scan else {
        let known: Vec<&str> = config.roots.iter().map(|root| root.label.as_str()).collect();
        if known.contains(&args.root.as_str()) {
            return refuse(format!(
                "root {} has not been scanned yet: nothing to restore",
                args.root
            ));
        }
        return refuse(format!(
            "no root {:?} in the catalog (configured roots: {})",
            args.root,
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        ));
    };
    if moment.in_future {
        return refuse(format!("--at {} is in the future", moment.at));
    }
    if moment.before_first_scan {
        return refuse(format!(
            "--at {} is before root {}'s first scan ({first_scan}): nothing was recorded then",
            moment.at, args.root
        ));
    }
    if let Some(root) = watched_root_holding(config, &args.to) {
        if !args.overwrite {
            return refuse(format!(
                "--to {} is inside the watched root {root}: restoring there changes what is synced; add --overwrite if that is meant",
                args.to.display()
            ));
        }
    }
    let request = RestoreRequest {
        root: args.root.clone(),
        patterns: args.paths.clone(),
        at: at_text,
        to: args.to.clone(),
        existing: if args.overwrite {
            Existing::Overwrite
        } else if args.skip_existing {
            Existing::Skip
        } else {
            Existing::Refuse
        },
        dry_run: args.dry_run,
        parallel: args.parallel,
    };
    let planned = match restore::plan(&catalog, &request).await {
        Ok(planned) => planned,
        Err(RestoreError::BadRequest(message)) => return refuse(message),
        Err(error) => return Err(error.into()),
    };
    if planned.is_empty() {
        println!(
            "nothing to restore: no file of root {} matches at {}",
            args.root, moment.at
        );
        return Ok(ExitCode::SUCCESS);
    }
    let store = app::object_store(config);
    let progress = Arc::new(RestoreProgress::default());
    let ticker = show_progress(progress.clone());
    let report = restore::restore(&store, &request, planned, &progress).await;
    if let Some(ticker) = ticker {
        ticker.finish_and_clear();
    }
    let report = report?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for path in &report.planned {
            println!("would restore  {path}");
        }
        for failure in &report.failed {
            println!("FAILED  {}  ({}): {}", failure.path, failure.sha256, failure.reason);
        }
        println!("moment             {}", report.at);
        println!(
            "files              {:>10}   {}",
            report.files,
            bytesize::ByteSize(report.bytes)
        );
        if !args.dry_run {
            println!(
                "restored           {:>10}   {}",
                report.restored,
                bytesize::ByteSize(report.restored_bytes)
            );
            println!("already right      {:>10}", report.already_right);
            println!("skipped (existing) {:>10}", report.skipped_existing);
            println!(
                "downloaded         {:>10}   contents, {}",
                report.downloaded_contents,
                bytesize::ByteSize(report.downloaded_bytes)
            );
            println!("failed             {:>10}", report.failed.len());
        }
    }
    Ok(if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub async fn history(config: &Config, args: &HistoryArgs) -> anyhow::Result<ExitCode> {
    let (root, relative) = match &args.root {
        Some(root) => (root.clone(), args.path.clone()),
        None => match config.roots.iter().find_map(|root| {
            args.path
                .strip_prefix(&root.path)
                .ok()
                .map(|rest| (root.label.clone(), rest.to_owned()))
        }) {
            Some(found) => found,
            None => {
                return refuse(format!(
                    "{} is under no configured root; give --root LABEL with a root-relative path",
                    args.path.display()
                ))
            }
        },
    };
    let (stored, _) = pathenc::encode(relative.as_os_str());
    let catalog: Catalog = app::open_catalog(config).await?;
    let entries = catalog.history(&root, stored.trim_matches('/')).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(ExitCode::SUCCESS);
    }
    if entries.is_empty() {
        println!("no version of {} in root {root}", relative.display());
        return Ok(ExitCode::SUCCESS);
    }
    for (number, entry) in entries.iter().enumerate() {
        let path = match (&entry.old_path, &entry.new_path) {
            (Some(old), Some(new)) if old != new => format!("{old} -> {new}"),
            (_, Some(new)) => new.clone(),
            (Some(old), None) => old.clone(),
            (None, None) => String::new(),
        };
        let content = match (&entry.sha256, entry.size) {
            (Some(sha), Some(size)) => format!(
                "{} {} {}",
                bytesize::ByteSize(size.max(0) as u64),
                &sha[..12.min(sha.len())],
                match (&entry.purged_at, entry.stored) {
                    (_, true) => "stored".to_owned(),
                    (Some(when), false) => format!("purged by retention on {when}"),
                    (None, false) => "not stored".to_owned(),
                }
            ),
            _ => String::new(),
        };
        println!(
            "{:>3}  {}  {:<9} {}  {}  (by {})",
            number + 1,
            entry.at,
            entry.kind,
            path,
            content,
            entry.agent
        );
    }
    println!("restore one with: filemetasync restore --root {root} --at <time> --to <folder> <path>");
    Ok(ExitCode::SUCCESS)
}

/// RFC 3339, or local "YYYY-MM-DD HH:MM[:SS]" (also with a T), or a local date's midnight.
pub fn parse_moment(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Some(at.with_timezone(&Utc));
    }
    let local = [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ]
    .iter()
    .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
    .or_else(|| {
        NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .ok()
            .and_then(|day| day.and_hms_opt(0, 0, 0))
    })?;
    Local
        .from_local_datetime(&local)
        .earliest()
        .map(|at| at.with_timezone(&Utc))
}

/// The label of the configured root that holds `target` (or that `target` holds), if any.
fn watched_root_holding(config: &Config, target: &Path) -> Option<String> {
    let target = absolute(target);
    config.roots.iter().find_map(|root| {
        let root_path = absolute(&root.path);
        (target.starts_with(&root_path) || root_path.starts_with(&target)).then(|| root.label.clone())
    })
}

/// The path made absolute, with what exists of it resolved (symlinks, `..`).
fn absolute(path: &Path) -> PathBuf {
    let joined = std::env::current_dir()
        .map(|dir| dir.join(path))
        .unwrap_or_else(|_| path.to_owned());
    let mut existing = joined.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(resolved) = existing.canonicalize() {
            return rest.iter().rev().fold(resolved, |path: PathBuf, part| path.join(part));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => return joined,
        }
    }
}

fn show_progress(progress: Arc<RestoreProgress>) -> Option<indicatif::ProgressBar> {
    super::spinner(move || {
        format!(
            "restored {} of {} files · {} of {}",
            progress.files_done.load(Ordering::Relaxed),
            progress.files_total.load(Ordering::Relaxed),
            bytesize::ByteSize(progress.bytes_done.load(Ordering::Relaxed)),
            bytesize::ByteSize(progress.bytes_total.load(Ordering::Relaxed))
        )
    })
}

#[cfg(test)]
mod tests {
    use super::parse_moment;

    #[test]
    fn moments_in_the_forms_people_type() {
        let utc = |text: &str| parse_moment(text).map(|at| at.to_rfc3339());
        assert_eq!(
            utc("2026-11-24T17:30:00+01:00").as_deref(),
            Some("2026-11-24T16:30:00+00:00")
        );
        assert_eq!(
            utc("2026-11-24T16:30:00Z").as_deref(),
            Some("2026-11-24T16:30:00+00:00")
        );
        assert!(parse_moment("2026-11-24 17:30").is_some());
        assert!(parse_moment("2026-11-24 17:30:05.25").is_some());
        assert!(parse_moment("2026-11-24").is_some());
        assert!(parse_moment("last tuesday").is_none());
        assert!(parse_moment("2026-13-01").is_none());
    }
}

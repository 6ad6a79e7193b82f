//! `filemetasync find`: the catalog as a search tool, to find what to restore.

use crate::app;
use crate::config::Config;
use fms_actors::catalog::history::{glob_to_regex, FindQuery};
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct FindArgs {
    /// Only this root (its label).
    #[arg(long)]
    pub root: Option<String>,
    /// The file name (the last part of the path) matches this glob (`*`, `?`, `[...]`).
    #[arg(long)]
    pub name: Option<String>,
    /// Files with this content (SHA-256, hex).
    #[arg(long)]
    pub hash: Option<String>,
    /// Files linked to this project (its code).
    #[arg(long)]
    pub project: Option<String>,
    /// Deleted files instead of live ones.
    #[arg(long)]
    pub deleted: bool,
    /// Changed (registered, modified, moved or deleted) at or after this moment: RFC 3339,
    /// local "2026-11-24 17:30" or a date.
    #[arg(long)]
    pub changed_since: Option<String>,
    /// At most this many files.
    #[arg(long, default_value_t = 1000)]
    pub limit: i64,
    #[arg(long)]
    pub json: bool,
}

fn refuse(message: impl std::fmt::Display) -> anyhow::Result<ExitCode> {
    eprintln!("filemetasync: {message}");
    Ok(ExitCode::from(2))
}

pub async fn run(config: &Config, args: &FindArgs) -> anyhow::Result<ExitCode> {
    let name_regex = match &args.name {
        None => None,
        Some(glob) => match glob_to_regex(glob) {
            Some(regex) => Some(regex),
            None => return refuse(format!("--name {glob:?} is not a valid glob (an unclosed [)")),
        },
    };
    if let Some(hash) = &args.hash {
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return refuse(format!("--hash {hash:?} is not a SHA-256 (64 hex digits)"));
        }
    }
    let changed_since = match &args.changed_since {
        None => None,
        Some(text) => match super::restore::parse_moment(text) {
            Some(at) => Some(at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)),
            None => return refuse(format!("--changed-since {text:?} is not a moment")),
        },
    };
    if args.limit < 1 {
        return refuse("--limit must be at least 1");
    }
    let query = FindQuery {
        root: args.root.clone(),
        name_regex,
        sha256: args.hash.as_ref().map(|hash| hash.to_ascii_lowercase()),
        project: args.project.clone(),
        deleted: args.deleted,
        changed_since,
        limit: args.limit + 1,
        ..FindQuery::default()
    };
    let catalog = app::open_catalog(config).await?;
    let mut found = catalog.find(&query).await?;
    let more = found.len() as i64 > args.limit;
    found.truncate(args.limit as usize);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&found)?);
        return Ok(ExitCode::SUCCESS);
    }
    for file in &found {
        let link = [
            file.project.clone(),
            file.building.clone(),
            file.cost_group.map(|code| format!("KG {code}")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" / ");
        println!(
            "{}:{}  {}  {}  {}{}{}{}",
            file.root,
            file.path,
            bytesize::ByteSize(file.size.max(0) as u64),
            file.mtime,
            &file.sha256[..12],
            if file.stored { "" } else { "  (not stored yet)" },
            if link.is_empty() {
                String::new()
            } else {
                format!("  [{link}]")
            },
            file.deleted_at
                .as_ref()
                .map(|at| format!("  deleted {at}"))
                .unwrap_or_default()
        );
    }
    println!(
        "{} files{}",
        found.len(),
        if more {
            format!(" (more match: narrow the search or raise --limit {})", args.limit)
        } else {
            String::new()
        }
    );
    Ok(ExitCode::SUCCESS)
}

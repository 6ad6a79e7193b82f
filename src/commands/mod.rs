//! One module per command of the command line (design §6).

pub mod health;
pub mod run;
pub mod scan;
pub mod status;
pub mod verify;

use crate::config::Config;
use slog::{info, Logger};
use std::process::ExitCode;

/// `filemetasync migrate`: bring the catalog schema up to date.
pub async fn migrate(config: &Config, log: &Logger) -> anyhow::Result<ExitCode> {
    let mut catalog = fms_actors::catalog::Catalog::connect(&config.database.target(), &config.agent).await?;
    let applied = catalog
        .migrate()
        .await
        .map_err(|error| anyhow::anyhow!("migration failed: {}", error.detail()))?;
    let version = catalog.schema_version().await?;
    info!(log, "migrations applied"; "applied" => format!("{applied:?}"), "version" => version);
    println!("schema at version {version} (applied now: {applied:?})");
    Ok(ExitCode::SUCCESS)
}

/// `filemetasync config check`: the effective configuration, secrets redacted.
pub fn config_check(config: &Config) -> anyhow::Result<ExitCode> {
    print!("{}", toml::to_string_pretty(config)?);
    Ok(ExitCode::SUCCESS)
}

/// `filemetasync hash FILE...`: `sha256  path` lines, as sha256sum prints them.
pub fn hash(files: &[std::path::PathBuf], stats: bool) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let mut bytes = 0u64;
    let mut failed = false;
    for path in files {
        match fms_actors::fs::hash_file(path) {
            Ok(hashed) => {
                bytes += hashed.stat.size;
                println!("{}  {}", hashed.sha256, path.display());
            }
            Err(error) => {
                eprintln!("filemetasync: {}: {error}", path.display());
                failed = true;
            }
        }
    }
    if stats {
        let seconds = started.elapsed().as_secs_f64();
        eprintln!(
            "hashed {bytes} bytes in {seconds:.3} s: {:.1} MB/s",
            bytes as f64 / seconds / 1e6
        );
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

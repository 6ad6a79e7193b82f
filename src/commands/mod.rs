//! One module per command of the command line (design §6).

pub mod scan;
pub mod status;

use crate::config::Config;
use slog::{info, Logger};
use std::process::ExitCode;

/// `filemetasync migrate`: bring the catalog schema up to date.
pub async fn migrate(config: &Config, log: &Logger) -> anyhow::Result<ExitCode> {
    let mut catalog = fms_actors::catalog::Catalog::connect(&config.database.url, &config.agent).await?;
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

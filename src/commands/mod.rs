//! One module per command of the command line (design §6).

pub mod catalog;
pub mod find;
pub mod gc;
pub mod health;
pub mod metadata;
pub mod restore;
pub mod run;
pub mod scan;
pub mod status;
pub mod verify;

use crate::config::Config;
use slog::{info, Logger};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

/// A spinner on stderr with the line `message` gives, redrawn five times a second while the
/// command works; none when stderr is not a terminal. Finish it with `finish_and_clear`.
pub fn spinner(message: impl Fn() -> String + Send + 'static) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new_spinner();
    let shown = bar.clone();
    tokio::spawn(async move {
        while !shown.is_finished() {
            shown.set_message(message());
            shown.tick();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    Some(bar)
}

/// `filemetasync migrate`: bring the catalog schema up to date.
pub async fn migrate(config: &Config, log: &Logger) -> anyhow::Result<ExitCode> {
    let mut catalog = fms_actors::catalog::Catalog::connect(&config.database.target(), &config.agent).await?;
    let applied = match catalog.migrate().await {
        Ok(applied) => applied,
        // Tables of someone else's where ours would go: a matter of configuration.
        Err(fms_actors::catalog::CatalogError::Clash(message)) => {
            eprintln!("filemetasync: {message}");
            return Ok(ExitCode::from(2));
        }
        Err(error) => anyhow::bail!("migration failed: {}", error.detail()),
    };
    let version = catalog.schema_version().await?;
    info!(log, "migrations applied"; "applied" => format!("{applied:?}"), "version" => version);
    println!("schema at version {version} (applied now: {applied:?})");
    Ok(ExitCode::SUCCESS)
}

/// `filemetasync config check`: the effective configuration, secrets redacted, then what
/// follows from it for the store: where requests go and how uploads are verified.
pub fn config_check(config: &Config) -> anyhow::Result<ExitCode> {
    print!("{}", toml::to_string_pretty(config)?);
    println!();
    for line in store_notes(config) {
        println!("# {line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// What `config check` says of the store, as comment lines after the configuration.
fn store_notes(config: &Config) -> Vec<String> {
    use crate::config::StorageConfig;
    use fms_actors::store::IntegrityMode;
    match &config.storage {
        StorageConfig::Local { path } => vec![
            format!("objects are written to {}/files/{{sha256}}{{.ext}}", path.display()),
            "integrity: local (every byte is hashed while it is copied)".into(),
        ],
        StorageConfig::S3 {
            bucket,
            endpoint,
            region,
            path_style,
            integrity,
            ..
        } => {
            let url = fms_actors::store::request_url(
                endpoint.as_deref(),
                region,
                bucket,
                *path_style,
                "files/{sha256}{.ext}",
            );
            let integrity = match integrity {
                IntegrityMode::Auto => "integrity: auto (each uploader start probes the store with a wrong hash under _filemetasync/probe/ and uses what it verifies: the signed payload hash, x-amz-checksum-sha256, or else a read-back of every object; `status` shows the outcome)",
                IntegrityMode::Server => "integrity: server (each upload is signed with its SHA-256; the store is trusted to check it, nothing is read back)",
                IntegrityMode::Checksum => "integrity: checksum (each upload carries x-amz-checksum-sha256, the payload unsigned; the store is trusted to check it, nothing is read back)",
                IntegrityMode::ReadBack => "integrity: read-back (each object is read back and hashed before its content counts as stored)",
            };
            vec![format!("requests go to {url}"), integrity.into()]
        }
    }
}

/// `filemetasync hash-password`: one line from standard input (a terminal, a pipe or a
/// Docker secret file) as an Argon2id hash for `http.password_hash`.
pub fn hash_password() -> anyhow::Result<ExitCode> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let password = line.trim_end_matches(['\r', '\n']);
    if password.chars().count() < 8 {
        eprintln!("filemetasync: the password is shorter than 8 characters; choose a longer one");
        return Ok(ExitCode::from(2));
    }
    let hash = fms_actors::daemon::page::hash_password(password).map_err(anyhow::Error::msg)?;
    println!("{hash}");
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

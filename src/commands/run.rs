//! `filemetasync run [--role all|index|upload]`: the daemon. Brings the catalog schema up to
//! date (under the migration lock), then hands over to the supervised actors until SIGTERM
//! or SIGINT.

use crate::app;
use crate::config::Config;
use fms_actors::daemon::schedule::Schedule;
use fms_actors::daemon::{DaemonSettings, Role};
use fms_actors::scan::ScanOptions;
use slog::{info, warn, Logger};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Which actors to run: everything, only scanning and registration, or only uploads
    /// (extra upload workers, in other containers or on other hosts, on the same catalog).
    #[arg(long, value_enum, default_value = "all")]
    pub role: RoleArg,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum RoleArg {
    All,
    Index,
    Upload,
}

/// How long the daemon waits at start for PostgreSQL to accept the migration (a container
/// started next to its database usually comes up first).
const CATALOG_WAIT: Duration = Duration::from_secs(60);

pub fn run(config: &Config, log: &Logger, args: &RunArgs) -> anyhow::Result<ExitCode> {
    migrate_at_start(config, log)?;
    let settings = DaemonSettings {
        agent: config.agent.clone(),
        role: match args.role {
            RoleArg::All => Role::All,
            RoleArg::Index => Role::Index,
            RoleArg::Upload => Role::Upload,
        },
        database_url: config.database.url.clone(),
        store: app::object_store(config),
        roots: app::roots(config),
        ignore: app::ignore_matcher(config),
        scan: ScanOptions {
            batch_size: config.scan.batch_size as usize,
            accept_root_change: false,
        },
        schedule: Schedule::parse(&config.scan.schedule, &config.scan.timezone)
            .map_err(|error| anyhow::anyhow!("scan.schedule: {error}"))?,
        scan_on_start: config.scan.on_start,
        hash_workers: config.hash.workers as usize,
        upload: app::upload_settings(config),
        http_listen: Some(config.http.listen.parse()?),
    };
    fms_actors::daemon::run(settings, log.clone())?;
    Ok(ExitCode::SUCCESS)
}

fn migrate_at_start(config: &Config, log: &Logger) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let started = Instant::now();
        loop {
            match app::open_catalog_migrated(config).await {
                Ok(_) => {
                    info!(log, "catalog schema is current");
                    return Ok(());
                }
                Err(error) if started.elapsed() < CATALOG_WAIT => {
                    warn!(log, "waiting for the catalog"; "error" => format!("{error:#}"));
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Err(error) => return Err(error),
            }
        }
    })
}

//! `filemetasync run [--role all|index|upload]`: the daemon. Brings the catalog schema up to
//! date (under the migration lock), then hands over to the supervised actors until SIGTERM
//! or SIGINT.

use crate::app;
use crate::config::Config;
use crate::logging::LogControl;
use crate::reload::{Reloader, Trigger};
use fms_actors::daemon::watcher::{WatchMode, WatchSettings};
use fms_actors::daemon::{DaemonSettings, Observed, Role};
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

pub fn run(
    path: &std::path::Path,
    config: &Config,
    log: &Logger,
    logs: &LogControl,
    args: &RunArgs,
) -> anyhow::Result<ExitCode> {
    migrate_at_start(config, log)?;
    let role = match args.role {
        RoleArg::All => Role::All,
        RoleArg::Index => Role::Index,
        RoleArg::Upload => Role::Upload,
    };
    let settings = daemon_settings(config, role);
    let (handle_sender, handle_receiver) = crossbeam_channel::bounded(1);
    let reloader = Reloader::new(
        path,
        role,
        config.clone(),
        logs.clone(),
        log.new(slog::o!("actor" => "reload")),
    );
    let triggers = reloader.start(handle_receiver)?;
    let hangup: std::sync::Arc<dyn Fn() + Send + Sync> = std::sync::Arc::new(move || {
        let _ = triggers.try_send(Trigger::Hangup);
    });
    let observed = Observed::new(&settings);
    let signal_log = log.clone();
    fms_actors::daemon::run(settings, observed, log.clone(), move |handle| {
        tokio::spawn(crate::signals::handle(handle.clone(), Some(hangup), 0, signal_log));
        let _ = handle_sender.send(handle);
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The daemon's settings from a configuration (typed and checked when it was loaded).
pub fn daemon_settings(config: &Config, role: Role) -> DaemonSettings {
    DaemonSettings {
        agent: config.agent.clone(),
        role,
        database: config.database.target(),
        store: app::object_store(config),
        roots: app::roots(config),
        ignore: config.ignore.matcher.clone(),
        scan: ScanOptions {
            batch_size: config.scan.batch_size as usize,
            accept_root_change: false,
        },
        schedule: config.scan.schedule.clone(),
        scan_on_start: config.scan.on_start,
        export_schedule: config.catalog.export_schedule.clone(),
        export_keep: config.catalog.export_keep as usize,
        gc_schedule: config.retention.schedule.clone(),
        retention: config.retention.policy(),
        stall_timeout: config.daemon.stall_timeout,
        once: None,
        hash_workers: config.hash.workers as usize,
        hash_metadata: config.hash.metadata,
        upload: app::upload_settings(config),
        bandwidth_limit: config.upload.bandwidth_limit,
        upload_window: config.upload.window.clone(),
        http_listen: Some(config.http.listen),
        page: config
            .http
            .login
            .as_ref()
            .map(|login| fms_actors::daemon::page::PageAccess {
                login: match login {
                    crate::config::PageLogin::Password(password) => {
                        fms_actors::daemon::page::Login::Password(password.clone())
                    }
                    crate::config::PageLogin::PasswordHash(hash) => fms_actors::daemon::page::Login::Hash(hash.clone()),
                },
                session_idle: config.http.session_idle,
                restore_folder: config.http.restore_folder.clone(),
            }),
        watch: WatchSettings {
            mode: match config.watch.mode {
                crate::config::WatchMode::Poll => WatchMode::Poll,
                crate::config::WatchMode::Native => WatchMode::Native,
                crate::config::WatchMode::Auto => WatchMode::Auto,
            },
            poll_interval: config.watch.poll_interval,
            debounce: config.watch.debounce,
        },
    }
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

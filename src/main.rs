//! FileMetadataSync: keeps a PostgreSQL catalog of every file under a NAS's shared folders
//! and stores each distinct content once in object storage.
//!
//! # Layout
//!
//! * `main.rs` — the command line and exit codes (0 success, 1 runtime failure, 2 bad usage
//!   or invalid configuration).
//! * `config/` — loading and validating the configuration.
//! * `logging.rs` — the slog log stream.
//! * `app.rs` — building the engine's parts from the configuration.
//! * `commands/` — one module per command.
//!
//! The engine itself (walk, hash, catalog, store, upload) is the `fms-actors` crate.

mod app;
mod commands;
mod config;
mod logging;
mod reload;
mod signals;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "filemetasync",
    version,
    about = "Catalog NAS files in PostgreSQL and store each content once"
)]
struct Cli {
    /// The configuration file.
    #[arg(
        long,
        short,
        global = true,
        env = "FMS_CONFIG",
        default_value = "/config/filemetasync.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The daemon: scans on the schedule, uploads continuously, /healthz and /metrics.
    Run(commands::run::RunArgs),
    /// One full reconciliation of all roots, then exit.
    Scan(commands::scan::ScanArgs),
    /// Apply the catalog's migrations.
    Migrate,
    /// Check that the store holds every uploaded content (missing, wrong size; --deep also
    /// re-reads each object and checks its SHA-256; --repair queues them again).
    Verify(commands::verify::VerifyArgs),
    /// Bring files of a root back as they were at a moment (default now) into a folder,
    /// every byte checked against its SHA-256.
    Restore(commands::restore::RestoreArgs),
    /// Every version of a path: time, event, size, hash, and whether its content is stored.
    History(commands::restore::HistoryArgs),
    /// Search the catalog: by root, file name, hash, project, deleted, changed since.
    Find(commands::find::FindArgs),
    /// Retention: delete from the store the contents that no live file holds and that the
    /// `[retention]` policy lets go, after a grace period (--dry-run: show what would go).
    Gc(commands::gc::GcArgs),
    /// Files, contents, bytes, queue depth, failed uploads, last scans.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Print the SHA-256 of files as the catalog records them (like sha256sum), with the
    /// same streaming code the scan uses. Needs no configuration.
    Hash {
        files: Vec<PathBuf>,
        /// Also print the throughput on stderr.
        #[arg(long)]
        stats: bool,
    },
    /// Read a password from standard input (one line) and print its Argon2 hash, for
    /// `http.password_hash`. Needs no configuration.
    HashPassword,
    /// Ask the running daemon's /healthz; exit 0 when it is healthy (the container's
    /// HEALTHCHECK).
    Health,
    /// The catalog kept in the bucket: export, list, and import into a new database.
    Catalog {
        #[command(subcommand)]
        action: commands::catalog::CatalogAction,
    },
    /// Content metadata: `backfill` reads it for contents registered before it was read.
    Metadata {
        #[command(subcommand)]
        action: commands::metadata::MetadataAction,
    },
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigAction {
    /// Validate, and print the effective configuration with secrets redacted.
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Hash { files, stats } = &cli.command {
        return report(commands::hash(files, *stats));
    }
    if let Command::HashPassword = &cli.command {
        return report(commands::hash_password());
    }
    let config = match config::load(&cli.config) {
        Ok(config) => config,
        Err(errors) => {
            eprint!("filemetasync: {errors}");
            return ExitCode::from(2);
        }
    };
    if let Command::Config {
        action: ConfigAction::Check,
    } = cli.command
    {
        return report(commands::config_check(&config));
    }
    if let Command::Health = cli.command {
        return report(commands::health::run(&config));
    }
    let (log, _guard, log_control) = logging::build(&config.log);
    // The daemon and the scan run their own actix system (and its threads); no runtime
    // around them.
    match &cli.command {
        Command::Run(args) => return report(commands::run::run(&cli.config, &config, &log, &log_control, args)),
        Command::Scan(args) => return report(commands::scan::run(&config, &log, args)),
        _ => {}
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("filemetasync: cannot start the runtime: {error}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Migrate => commands::migrate(&config, &log).await,
            Command::Status { json } => commands::status::run(&config, *json).await,
            Command::Verify(args) => commands::verify::run(&config, args).await,
            Command::Restore(args) => commands::restore::run(&config, args).await,
            Command::History(args) => commands::restore::history(&config, args).await,
            Command::Find(args) => commands::find::run(&config, args).await,
            Command::Gc(args) => commands::gc::run(&config, args).await,
            Command::Catalog { action } => commands::catalog::run(&config, action).await,
            Command::Metadata { action } => commands::metadata::run(&config, action).await,
            Command::Config { .. }
            | Command::Hash { .. }
            | Command::HashPassword
            | Command::Run(_)
            | Command::Scan(_)
            | Command::Health => {
                unreachable!("handled above")
            }
        }
    });
    report(result)
}

fn report(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("filemetasync: {error:#}");
            ExitCode::from(1)
        }
    }
}

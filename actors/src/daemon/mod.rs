//! The daemon (`filemetasync run`): supervised actix actors.
//!
//! ```text
//!  Supervisor ─┬─ ScannerActor ──HashFile──► HasherActor × N ──(thread each)
//!              │        └──────WriteBatch──► RegistrarActor ──► PostgreSQL
//!              └─ UploaderActor ◄── dequeue_upload_batch() ──┘      └──► object store
//! ```
//!
//! Wired last-first: the Supervisor starts the consumers before the producers, and every
//! child finds the current instance of the actors it sends to through a [`Slot`], so that a
//! restart of one never needs a restart of another. Work in flight is bounded everywhere:
//! mailboxes are small and senders `send().await` (no `do_send` on the data path), each
//! hasher takes one file at a time, a scan keeps `hashers × 3` files in flight.
//!
//! Each child runs on its own arbiter (thread), so a slow or failing one never holds up
//! another; blocking work (walks, hashing) runs on plain threads, never on an arbiter.

mod hasher;
pub mod http;
mod registrar;
pub mod scanner;
pub mod schedule;
mod slot;
pub mod supervisor;
mod uploader;

pub use slot::Slot;

use crate::fs::IgnoreMatcher;
use crate::hashing::HashCounters;
use crate::scan::{RootSpec, ScanContext, ScanOptions, ScanProgress};
use crate::store::ObjectStore;
use crate::upload::{UploadCounters, UploadSettings};
use actix::prelude::*;
use hasher::{HasherActor, Hashers};
use registrar::RegistrarActor;
use scanner::{ActorSink, ScanStats, ScannerActor, ScannerSettings};
use schedule::Schedule;
use slog::{info, warn, Logger};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use supervisor::{ChildSpec, HealthBoard, Shutdown, Supervisor};
use uploader::{UploaderActor, UploaderSettings};

/// Which actors this process runs: `index` (scan, hash, register), `upload`, or `all`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    All,
    Index,
    Upload,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Index => "index",
            Role::Upload => "upload",
        }
    }

    fn indexes(self) -> bool {
        matches!(self, Role::All | Role::Index)
    }

    fn uploads(self) -> bool {
        matches!(self, Role::All | Role::Upload)
    }
}

pub struct DaemonSettings {
    pub agent: String,
    pub role: Role,
    pub database_url: String,
    pub store: ObjectStore,
    pub roots: Vec<RootSpec>,
    pub ignore: IgnoreMatcher,
    pub scan: ScanOptions,
    pub schedule: Schedule,
    pub scan_on_start: bool,
    pub hash_workers: usize,
    pub upload: UploadSettings,
    pub http_listen: Option<SocketAddr>,
}

/// Everything the daemon counts, shared with `/metrics` and `/healthz`.
#[derive(Clone)]
pub struct Observed {
    pub board: HealthBoard,
    pub hashing: Arc<HashCounters>,
    pub uploads: Arc<UploadCounters>,
    pub scans: Arc<ScanStats>,
    pub progress: Arc<ScanProgress>,
    pub hashers: usize,
}

/// After SIGTERM the process exits at the latest this long after, whatever is still running
/// (docker stop sends SIGKILL at 10 s).
const SHUTDOWN_DEADLINE: Duration = Duration::from_millis(9_000);

/// Run the daemon until SIGTERM or SIGINT. Returns once every actor has stopped.
pub fn run(settings: DaemonSettings, log: Logger) -> std::io::Result<()> {
    supervisor::install_panic_hook(log.clone());
    let observed = Observed {
        board: HealthBoard::default(),
        hashing: Arc::default(),
        uploads: Arc::default(),
        scans: Arc::default(),
        progress: Arc::default(),
        hashers: if settings.role.indexes() {
            settings.hash_workers.max(1)
        } else {
            0
        },
    };
    let http_stop = Arc::new(AtomicBool::new(false));
    let http = match settings.http_listen {
        Some(listen) => Some(http::spawn(
            http::HttpSettings {
                listen,
                url: settings.database_url.clone(),
                agent: settings.agent.clone(),
                role: settings.role.as_str(),
            },
            observed.clone(),
            http_stop.clone(),
            log.clone(),
        )?),
        None => None,
    };
    info!(log, "daemon started"; "agent" => &settings.agent, "role" => settings.role.as_str(),
        "roots" => settings.roots.len(), "store" => settings.store.describe(),
        "hash_workers" => observed.hashers, "upload_concurrency" => settings.upload.concurrency,
        "http" => settings.http_listen.map(|a| a.to_string()).unwrap_or_else(|| "off".into()));
    let system = System::new();
    system.block_on(async {
        let children = children(settings, &observed, &log);
        let supervisor = Supervisor::new(children, observed.board.clone(), log.clone()).start();
        actix::spawn(wait_for_signals(supervisor, log.clone()));
    });
    let outcome = system.run();
    http_stop.store(true, Ordering::SeqCst);
    if let Some(http) = http {
        let _ = http.join();
    }
    info!(log, "daemon stopped");
    outcome
}

async fn wait_for_signals(supervisor: Addr<Supervisor>, log: Logger) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        warn!(log, "cannot listen for SIGTERM/SIGINT; stop the daemon with SIGKILL");
        return;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    supervisor.do_send(Shutdown {
        reason: name.to_owned(),
    });
    let deadline_log = log.clone();
    std::thread::spawn(move || {
        std::thread::sleep(SHUTDOWN_DEADLINE);
        warn!(
            deadline_log,
            "shutdown took too long; exiting now (work in flight is found again at the next start)"
        );
        std::process::exit(0);
    });
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    warn!(log, "second signal: exiting now");
    std::process::exit(130);
}

/// The children of this role, consumers first.
fn children(settings: DaemonSettings, observed: &Observed, log: &Logger) -> Vec<ChildSpec> {
    let mut children = Vec::new();
    let url = settings.database_url.clone();
    let agent = settings.agent.clone();
    if settings.role.uploads() {
        let arbiter = Arbiter::new();
        let uploader = Arc::new(UploaderSettings {
            url: url.clone(),
            agent: agent.clone(),
            store: settings.store.clone(),
            roots: settings
                .roots
                .iter()
                .map(|r| (r.label.clone(), r.path.clone()))
                .collect(),
            upload: UploadSettings {
                stop_when_store_down: true,
                ..settings.upload.clone()
            },
        });
        let counters = observed.uploads.clone();
        let log = log.new(slog::o!("actor" => "uploader"));
        children.push(ChildSpec {
            name: "uploader".into(),
            stop_order: 2,
            factory: Box::new(move |guard| {
                let (uploader, counters, log) = (uploader.clone(), counters.clone(), log.clone());
                UploaderActor::start_in_arbiter(&arbiter.handle(), move |_| {
                    UploaderActor::new(guard, uploader, counters, log)
                })
                .recipient()
            }),
        });
    }
    if !settings.role.indexes() {
        return children;
    }
    let registrar = Slot::<RegistrarActor>::default();
    {
        let arbiter = Arbiter::new();
        let slot = registrar.clone();
        let (url, agent) = (url.clone(), agent.clone());
        children.push(ChildSpec {
            name: "registrar".into(),
            stop_order: 1,
            factory: Box::new(move |guard| {
                let (url, agent) = (url.clone(), agent.clone());
                let address = RegistrarActor::start_in_arbiter(&arbiter.handle(), move |_| {
                    RegistrarActor::new(guard, url, agent)
                });
                slot.set(address.clone());
                address.recipient()
            }),
        });
    }
    let hasher_arbiter = Arbiter::new().handle();
    let mut hasher_slots = Vec::new();
    for index in 0..settings.hash_workers.max(1) {
        let slot = Slot::<HasherActor>::default();
        hasher_slots.push(slot.clone());
        let counters = observed.hashing.clone();
        let arbiter = hasher_arbiter.clone();
        children.push(ChildSpec {
            name: format!("hasher-{index}"),
            stop_order: 1,
            factory: Box::new(move |guard| {
                let counters = counters.clone();
                let address = HasherActor::start_in_arbiter(&arbiter, move |_| HasherActor::new(guard, counters));
                slot.set(address.clone());
                address.recipient()
            }),
        });
    }
    let sink = Arc::new(ActorSink {
        hashers: Hashers::new(hasher_slots),
        registrar,
    });
    let scanner = Arc::new(ScannerSettings {
        url,
        agent,
        roots: settings.roots,
        schedule: settings.schedule,
        on_start: settings.scan_on_start,
        context: ScanContext {
            ignore: settings.ignore,
            options: settings.scan,
            progress: observed.progress.clone(),
            log: log.new(slog::o!("actor" => "scanner")),
        },
    });
    let stats = observed.scans.clone();
    let scanner_log = log.new(slog::o!("actor" => "scanner"));
    let arbiter = Arbiter::new();
    children.push(ChildSpec {
        name: "scanner".into(),
        stop_order: 0,
        factory: Box::new(move |guard| {
            let (scanner, sink, stats, log) = (scanner.clone(), sink.clone(), stats.clone(), scanner_log.clone());
            ScannerActor::start_in_arbiter(&arbiter.handle(), move |_| {
                ScannerActor::new(guard, scanner, sink, stats, log)
            })
            .recipient()
        }),
    });
    children
}

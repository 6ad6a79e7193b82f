//! The daemon (`filemetasync run`) and the one-shot `filemetasync scan`: the same supervised
//! actix actors, wired once. A one-shot run ([`OnceRun`]) starts the uploader, the registrar,
//! the hashers and the scanner only; the scanner scans every root once, the uploader stops
//! (or drains the queue) when the scan has ended, and the run then shuts itself down.
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

mod coordinator;
mod debouncer;
mod hasher;
pub mod http;
mod idle;
mod once;
pub mod page;
mod registrar;
pub mod scanner;
pub mod schedule;
pub mod scheduled;
mod setting;
mod slot;
pub mod supervisor;
mod uploader;
pub mod watcher;

pub use slot::Slot;

/// An actix system on a paused tokio clock, for the actors' in-process tests: timers fire as
/// time is advanced, at once.
#[cfg(test)]
pub(crate) fn paused_system() -> actix::SystemRunner {
    actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a paused runtime")
    })
}

pub use coordinator::{DaemonHandle, Reconfigure, ReloadOutcome};
pub use once::OnceRun;
pub use setting::{changes as changed_settings, ActorChange, ChangeAction, Setting};

use crate::catalog::Target;
use crate::fs::IgnoreMatcher;
use crate::hashing::HashCounters;
use crate::scan::{RootSpec, ScanContext, ScanOptions, ScanProgress};
use crate::store::ObjectStore;
use crate::upload::{UploadControl, UploadCounters, UploadSettings};
use crate::upload_controls::{UploadKnobs, UploadWindow};
use crate::upload_handoff::Handoff;
use actix::prelude::*;
use coordinator::Coordinator;
use debouncer::DebounceActor;
use hasher::{HasherActor, Hashers};
use registrar::RegistrarActor;
use scanner::{ActorSink, ScanStats, ScannerActor, ScannerSettings};
use schedule::Schedule;
use scheduled::{ExportStats, GcStats, JobTarget, ScheduledActor};
use slog::{info, Logger};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use supervisor::{ChildSpec, HealthBoard, Supervisor};
use uploader::{UploaderActor, UploaderSettings};
use watcher::{UnavailableRoots, WatchSettings, WatcherActor};

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

    pub fn indexes(self) -> bool {
        matches!(self, Role::All | Role::Index)
    }

    pub fn uploads(self) -> bool {
        matches!(self, Role::All | Role::Upload)
    }
}

#[derive(Clone)]
pub struct DaemonSettings {
    pub agent: String,
    pub role: Role,
    pub database: Target,
    pub store: ObjectStore,
    pub roots: Vec<RootSpec>,
    pub ignore: IgnoreMatcher,
    pub scan: ScanOptions,
    pub schedule: Schedule,
    pub scan_on_start: bool,
    pub hash_workers: usize,
    /// `hash.metadata`: hashers read content metadata as they hash.
    pub hash_metadata: bool,
    pub upload: UploadSettings,
    pub bandwidth_limit: u64,
    pub upload_window: Option<UploadWindow>,
    pub http_listen: Option<SocketAddr>,
    /// The operator's page on `http_listen`; None: off.
    pub page: Option<page::PageAccess>,
    pub watch: WatchSettings,
    /// `catalog.export_schedule` (None: "off") and `catalog.export_keep`.
    pub export_schedule: Option<Schedule>,
    pub export_keep: usize,
    /// `retention.schedule` (None: "off") and the policy.
    pub gc_schedule: Option<Schedule>,
    pub retention: crate::catalog::retention::RetentionPolicy,
    /// `daemon.stall_timeout`: an actor holding work without progress this long restarts.
    pub stall_timeout: Duration,
    /// A one-shot run (`scan`): no watcher, no scheduled jobs, no HTTP; ends by itself.
    pub once: Option<Arc<OnceRun>>,
}

/// Settings for the actors' in-process tests: nothing reachable, nothing scheduled.
#[cfg(test)]
pub(crate) fn test_settings(concurrency: usize, bucket: &str) -> DaemonSettings {
    use watcher::WatchMode;
    DaemonSettings {
        agent: "test".into(),
        role: Role::All,
        database: crate::catalog::Target::new("postgres://nobody@127.0.0.1:1/none"),
        store: crate::store::ObjectStore::Local(crate::store::LocalStore::new(format!("/nonexistent/{bucket}"))),
        roots: Vec::new(),
        ignore: crate::fs::IgnoreMatcher::new::<&str>(&[]).unwrap(),
        scan: crate::scan::ScanOptions {
            batch_size: 100,
            accept_root_change: false,
        },
        schedule: crate::daemon::schedule::Schedule::parse("0 3 * * *", "UTC").unwrap(),
        scan_on_start: false,
        hash_workers: 2,
        hash_metadata: true,
        upload: crate::upload::UploadSettings {
            concurrency,
            ..Default::default()
        },
        bandwidth_limit: 0,
        upload_window: None,
        http_listen: None,
        page: None,
        watch: WatchSettings {
            mode: WatchMode::Poll,
            poll_interval: std::time::Duration::from_secs(5),
            debounce: std::time::Duration::from_secs(3),
        },
        export_schedule: None,
        export_keep: 1,
        gc_schedule: None,
        retention: crate::catalog::retention::RetentionPolicy {
            deleted_for: None,
            replaced_for: None,
            keep_versions: 1,
            grace: std::time::Duration::from_secs(86_400),
        },
        stall_timeout: std::time::Duration::from_secs(600),
        once: None,
    }
}

/// The settings in force; every actor's factory reads them when it starts an instance, so a
/// restart after a reload uses the new ones.
pub type LiveSettings = Arc<RwLock<Arc<DaemonSettings>>>;

fn current(live: &LiveSettings) -> Arc<DaemonSettings> {
    live.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Everything the daemon counts, shared with `/metrics` and `/healthz`.
#[derive(Clone)]
pub struct Observed {
    pub board: HealthBoard,
    pub hashing: Arc<HashCounters>,
    pub uploads: Arc<UploadCounters>,
    pub scans: Arc<ScanStats>,
    pub progress: Arc<ScanProgress>,
    pub hashers: Arc<AtomicUsize>,
    pub knobs: Arc<UploadKnobs>,
    pub unavailable_roots: UnavailableRoots,
    pub exports: Arc<ExportStats>,
    pub gc: Arc<GcStats>,
}

impl Observed {
    /// Fresh counters for a daemon (or a one-shot run) with these settings.
    pub fn new(settings: &DaemonSettings) -> Observed {
        let hashing = HashCounters {
            metadata: AtomicBool::new(settings.hash_metadata),
            ..HashCounters::default()
        };
        hashing.set_part_layout(settings.store.part_layout());
        Observed {
            board: HealthBoard::default(),
            hashing: Arc::new(hashing),
            uploads: Arc::default(),
            scans: Arc::default(),
            progress: Arc::default(),
            hashers: Arc::default(),
            knobs: Arc::new(UploadKnobs::new(
                settings.upload.concurrency,
                settings.bandwidth_limit,
                settings.upload_window.clone(),
            )),
            unavailable_roots: UnavailableRoots::default(),
            exports: Arc::default(),
            gc: Arc::default(),
        }
    }
}

/// Run the actors until they are shut down (through the [`DaemonHandle`] handed to `started`
/// once they are starting, on which the application also listens for its signals), or, for a
/// one-shot run, until the run has ended. Returns once every actor has stopped.
pub fn run(
    settings: DaemonSettings,
    observed: Observed,
    log: Logger,
    started: impl FnOnce(DaemonHandle) + 'static,
) -> std::io::Result<()> {
    supervisor::install_panic_hook(log.clone());
    let http_stop = Arc::new(AtomicBool::new(false));
    let http = match settings.http_listen {
        Some(listen) => Some(http::spawn(
            http::HttpSettings {
                listen,
                database: settings.database.clone(),
                agent: settings.agent.clone(),
                role: settings.role.as_str(),
                page: settings.page.clone().map(|access| page::PageSettings {
                    restore_folder: access.restore_folder.clone(),
                    access,
                    store: settings.store.clone(),
                    roots: settings.roots.clone(),
                }),
            },
            observed.clone(),
            http_stop.clone(),
            log.clone(),
        )?),
        None => None,
    };
    let once = settings.once.clone();
    let stall_timeout = settings.stall_timeout;
    if once.is_none() {
        info!(log, "daemon started"; "agent" => &settings.agent, "role" => settings.role.as_str(),
            "roots" => settings.roots.len(), "store" => settings.store.describe(),
            "hash_workers" => settings.hash_workers, "upload_concurrency" => settings.upload.concurrency,
            "http" => settings.http_listen.map(|a| a.to_string()).unwrap_or_else(|| "off".into()));
    }
    let system = System::new();
    system.block_on(async {
        let live: LiveSettings = Arc::new(RwLock::new(Arc::new(settings)));
        let wiring = Wiring::new(live, observed.clone(), log.clone());
        let children = wiring.children();
        let supervisor = Supervisor::new(children, observed.board.clone(), stall_timeout, log.clone()).start();
        if let Some(once) = &once {
            once.attach(supervisor.clone());
        }
        let coordinator = Coordinator::new(wiring, supervisor.clone()).start();
        started(DaemonHandle::new(coordinator, supervisor));
    });
    let outcome = system.run();
    http_stop.store(true, Ordering::SeqCst);
    if let Some(http) = http {
        let _ = http.join();
    }
    if once.is_none() {
        info!(log, "daemon stopped");
    }
    outcome
}

/// How the children are built: each factory reads the live settings at every start.
pub(crate) struct Wiring {
    live: LiveSettings,
    observed: Observed,
    hashers: Hashers,
    hasher_arbiter: ArbiterHandle,
    scanner: Slot<ScannerActor>,
    debouncer: Slot<DebounceActor>,
    /// New contents from the registrar to the uploader (see `upload_handoff`).
    handoff: Arc<Handoff>,
    log: Logger,
}

impl Wiring {
    fn new(live: LiveSettings, observed: Observed, log: Logger) -> Wiring {
        Wiring {
            live,
            observed,
            hashers: Hashers::default(),
            hasher_arbiter: Arbiter::new().handle(),
            scanner: Slot::default(),
            debouncer: Slot::default(),
            handoff: Arc::default(),
            log,
        }
    }

    fn settings(&self) -> Arc<DaemonSettings> {
        current(&self.live)
    }

    /// The children of this role, consumers first.
    fn children(&self) -> Vec<ChildSpec> {
        let settings = self.settings();
        let (role, daemon) = (settings.role, settings.once.is_none());
        let mut children = Vec::new();
        if role.uploads() {
            children.push(self.uploader());
            if daemon {
                children.push(self.exporter());
                children.push(self.retention());
            }
        }
        if !role.indexes() {
            return children;
        }
        let registrar = Slot::<RegistrarActor>::default();
        children.push(self.registrar(registrar.clone()));
        for index in 0..settings.hash_workers.max(1) {
            children.push(self.hasher(index));
        }
        children.push(self.scanner(registrar));
        if daemon {
            children.push(self.debouncer());
            children.push(self.watcher());
        }
        children
    }

    fn debouncer(&self) -> ChildSpec {
        let live = self.live.clone();
        let (scanner, slot) = (self.scanner.clone(), self.debouncer.clone());
        let target = move || -> debouncer::SyncTarget {
            let scanner = scanner.clone();
            Box::new(move || scanner.get().map(Addr::recipient))
        };
        let arbiter = Arbiter::new();
        ChildSpec {
            name: "debouncer".into(),
            stop_order: 0,
            factory: Box::new(move |guard| {
                let settings = current(&live);
                let roots = settings
                    .roots
                    .iter()
                    .map(|r| (r.label.clone(), r.path.clone()))
                    .collect();
                let (window, scanner) = (settings.watch.debounce, target());
                let address = DebounceActor::start_in_arbiter(&arbiter.handle(), move |_| {
                    DebounceActor::new(guard, roots, window, scanner)
                });
                slot.set(address.clone());
                address.recipient()
            }),
        }
    }

    fn watcher(&self) -> ChildSpec {
        let live = self.live.clone();
        let debouncer = self.debouncer.clone();
        let unavailable = self.observed.unavailable_roots.clone();
        let log = self.log.new(slog::o!("actor" => "watcher"));
        let arbiter = Arbiter::new();
        ChildSpec {
            name: "watcher".into(),
            stop_order: 0,
            factory: Box::new(move |guard| {
                let settings = current(&live);
                let (roots, ignore, watch) = (settings.roots.clone(), settings.ignore.clone(), settings.watch.clone());
                let (debouncer, unavailable, log) = (debouncer.clone(), unavailable.clone(), log.clone());
                WatcherActor::start_in_arbiter(&arbiter.handle(), move |_| {
                    WatcherActor::new(guard, roots, ignore, watch, debouncer, unavailable, log)
                })
                .recipient()
            }),
        }
    }

    fn uploader(&self) -> ChildSpec {
        let arbiter = Arbiter::new();
        let live = self.live.clone();
        let counters = self.observed.uploads.clone();
        let knobs = self.observed.knobs.clone();
        let handoff = self.handoff.clone();
        let log = self.log.new(slog::o!("actor" => "uploader"));
        ChildSpec {
            name: "uploader".into(),
            stop_order: 2,
            factory: Box::new(move |guard| {
                let settings = current(&live);
                let uploader = Arc::new(UploaderSettings {
                    database: settings.database.clone(),
                    agent: settings.agent.clone(),
                    store: settings.store.clone(),
                    roots: settings
                        .roots
                        .iter()
                        .map(|r| (r.label.clone(), r.path.clone()))
                        .collect(),
                    // The daemon's uploader fails over to the Supervisor's backoff when the
                    // store is down; a one-shot run's tries each content as configured.
                    upload: UploadSettings {
                        stop_when_store_down: settings.once.is_none(),
                        ..settings.upload.clone()
                    },
                    handoff: handoff.clone(),
                });
                let (counters, log) = (counters.clone(), log.clone());
                let once = settings.once.clone();
                let control = match &once {
                    Some(once) => once.control.clone(),
                    None => Arc::new(UploadControl {
                        producing: true.into(),
                        knobs: knobs.clone(),
                        ..Default::default()
                    }),
                };
                UploaderActor::start_in_arbiter(&arbiter.handle(), move |_| {
                    UploaderActor::new(guard, uploader, counters, control, once, log)
                })
                .recipient()
            }),
        }
    }

    fn exporter(&self) -> ChildSpec {
        let stats = self.observed.exports.clone();
        self.scheduled("exporter", move |settings, log| {
            let job = scheduled::export_job(job_target(settings), settings.export_keep, stats.clone(), log);
            (settings.export_schedule.clone(), job)
        })
    }

    fn retention(&self) -> ChildSpec {
        let stats = self.observed.gc.clone();
        self.scheduled("retention", move |settings, log| {
            let job = scheduled::gc_job(job_target(settings), settings.retention.clone(), stats.clone(), log);
            (settings.gc_schedule.clone(), job)
        })
    }

    /// A child that runs the job `make` builds from the settings in force, on its schedule.
    fn scheduled(
        &self,
        name: &'static str,
        make: impl Fn(&DaemonSettings, Logger) -> (Option<Schedule>, scheduled::Job) + Send + 'static,
    ) -> ChildSpec {
        let arbiter = Arbiter::new();
        let live = self.live.clone();
        let log = self.log.new(slog::o!("actor" => name));
        ChildSpec {
            name: name.into(),
            stop_order: 2,
            factory: Box::new(move |guard| {
                let (schedule, job) = make(&current(&live), log.clone());
                ScheduledActor::start_in_arbiter(&arbiter.handle(), move |_| ScheduledActor::new(guard, schedule, job))
                    .recipient()
            }),
        }
    }

    fn registrar(&self, slot: Slot<RegistrarActor>) -> ChildSpec {
        let arbiter = Arbiter::new();
        let live = self.live.clone();
        let handoff = self.handoff.clone();
        ChildSpec {
            name: "registrar".into(),
            stop_order: 1,
            factory: Box::new(move |guard| {
                let settings = current(&live);
                let (database, agent) = (settings.database.clone(), settings.agent.clone());
                let handoff = handoff.clone();
                let address = RegistrarActor::start_in_arbiter(&arbiter.handle(), move |_| {
                    RegistrarActor::new(guard, database, agent, handoff)
                });
                slot.set(address.clone());
                address.recipient()
            }),
        }
    }

    /// Hasher `index`, with a new slot in the pool.
    fn hasher(&self, index: usize) -> ChildSpec {
        let slot = Slot::<HasherActor>::default();
        self.hashers.push(slot.clone());
        self.observed.hashers.store(self.hashers.len(), Ordering::Relaxed);
        let counters = self.observed.hashing.clone();
        let arbiter = self.hasher_arbiter.clone();
        ChildSpec {
            name: format!("hasher-{index}"),
            stop_order: 1,
            factory: Box::new(move |guard| {
                let counters = counters.clone();
                let address = HasherActor::start_in_arbiter(&arbiter, move |_| HasherActor::new(guard, counters));
                slot.set(address.clone());
                address.recipient()
            }),
        }
    }

    /// The hasher pool shrinks to `len`; the caller stops the removed hashers.
    fn shrink_hashers(&self, len: usize) {
        self.hashers.truncate(len);
        self.observed.hashers.store(self.hashers.len(), Ordering::Relaxed);
    }

    fn scanner_settings(&self) -> Arc<ScannerSettings> {
        scanner_settings(&self.settings(), &self.observed, &self.log)
    }

    fn scanner(&self, registrar: Slot<RegistrarActor>) -> ChildSpec {
        let sink = Arc::new(ActorSink {
            hashers: self.hashers.clone(),
            registrar,
            progress: Default::default(),
        });
        let live = self.live.clone();
        let observed = self.observed.clone();
        let stats = self.observed.scans.clone();
        let slot = self.scanner.clone();
        let log = self.log.clone();
        let arbiter = self.hasher_arbiter.clone();
        ChildSpec {
            name: "scanner".into(),
            stop_order: 0,
            factory: Box::new(move |guard| {
                let settings = scanner_settings(&current(&live), &observed, &log);
                let (sink, stats, log) = (sink.clone(), stats.clone(), log.new(slog::o!("actor" => "scanner")));
                let address = ScannerActor::start_in_arbiter(&arbiter, move |_| {
                    ScannerActor::new(guard, settings, sink, stats, log)
                });
                slot.set(address.clone());
                address.recipient()
            }),
        }
    }
}

fn scanner_settings(settings: &DaemonSettings, observed: &Observed, log: &Logger) -> Arc<ScannerSettings> {
    Arc::new(ScannerSettings {
        database: settings.database.clone(),
        agent: settings.agent.clone(),
        roots: settings.roots.clone(),
        schedule: settings.schedule.clone(),
        on_start: settings.scan_on_start,
        once: settings.once.clone(),
        context: ScanContext {
            ignore: settings.ignore.clone(),
            options: settings.scan.clone(),
            progress: observed.progress.clone(),
            log: log.new(slog::o!("actor" => "scanner")),
        },
    })
}

fn job_target(settings: &DaemonSettings) -> JobTarget {
    JobTarget {
        database: settings.database.clone(),
        agent: settings.agent.clone(),
        store: settings.store.clone(),
    }
}

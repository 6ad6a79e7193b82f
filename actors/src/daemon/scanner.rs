//! ScannerActor: the full reconciliation, on the cron schedule, at start (`scan.on_start`)
//! and after its own restart (a scan cut short by a lost catalog is done again at once).
//! A run never overlaps the previous one: a tick during a scan is skipped and logged.
//! The walk and the plan are the `scan` module's; hashing goes to the hasher actors and
//! every write to the registrar, through [`ActorSink`].

use super::hasher::Hashers;
use super::registrar::{RegistrarActor, WriteBatch};
use super::schedule::Schedule;
use super::supervisor::{ChildGuard, StopChild};
use super::Slot;
use crate::catalog::{BatchOutcome, Catalog, CatalogError, Target};
use crate::fs::{HashError, Hashed};
use crate::scan::{scan_root, Batch, RootOutcome, RootReport, RootSpec, ScanContext, ScanSink};
use actix::prelude::*;
use chrono::{DateTime, Utc};
use slog::{info, warn, Logger};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Run a scan now (unless one is running).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ScanNow {
    pub trigger: String,
}

/// New settings (roots, ignore patterns, schedule, time zone, batch size) from a configuration
/// reload. `scan_now`: the set of roots changed, so scan at once (after the running scan).
#[derive(Message)]
#[rtype(result = "()")]
pub struct UpdateScanner {
    pub settings: Arc<ScannerSettings>,
    pub scan_now: bool,
}

/// Paths the debouncer found settled: reconcile just these (after a running scan).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SyncPaths {
    pub root: String,
    pub paths: Vec<std::ffi::OsString>,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct ScanStats {
    pub started: AtomicU64,
    pub completed: AtomicU64,
    pub failed: AtomicU64,
    pub skipped_overlap: AtomicU64,
    pub running: AtomicU64,
    pub last_duration_ms: AtomicU64,
    pub last_finished_unix: AtomicU64,
    pub roots_unavailable: AtomicU64,
    /// Paths reconciled one by one for the watcher.
    pub paths_synced: AtomicU64,
}

/// How long a batch waits for a registrar to be up again before the scan gives up on it.
const REGISTRAR_WAIT: Duration = Duration::from_secs(60);
/// Timers are re-armed at least this often, so that a wall-clock jump does not make a run late.
const MAX_TIMER: Duration = Duration::from_secs(30);

/// The daemon's scan sink: hashing on the hasher actors, writes through the registrar.
pub struct ActorSink {
    pub hashers: Hashers,
    pub registrar: Slot<RegistrarActor>,
    /// Files hashed and batches written so far: the scan's progress, for the watchdog.
    pub progress: AtomicU64,
}

impl ScanSink for ActorSink {
    fn hash_slots(&self) -> usize {
        self.hashers.slots()
    }

    async fn hash(&self, path: PathBuf, size: u64) -> Result<Hashed, HashError> {
        let result = self.hashers.hash(path, size).await;
        self.progress.fetch_add(1, Ordering::Relaxed);
        result
    }

    async fn write(&self, _catalog: &mut Catalog, root: &str, batch: Batch) -> Result<BatchOutcome, CatalogError> {
        let batch = Arc::new(batch);
        let deadline = Instant::now() + REGISTRAR_WAIT;
        loop {
            if let Some(registrar) = self.registrar.get() {
                let message = WriteBatch {
                    root: root.to_owned(),
                    batch: batch.clone(),
                };
                match registrar.send(message).await {
                    Ok(Ok(outcome)) => {
                        self.progress.fetch_add(1, Ordering::Relaxed);
                        return Ok(outcome);
                    }
                    Ok(Err(reason)) => return Err(CatalogError::Unavailable(reason)),
                    // The registrar died with the batch (not committed, or committed and
                    // written again harmlessly: every statement of a batch is idempotent).
                    Err(_) => {}
                }
            }
            if Instant::now() >= deadline {
                return Err(CatalogError::Unavailable("no registrar is running".into()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Scan every root at once: the first on the scanner's own connection, each other on one of
/// its own for this scan (a root whose connection cannot be opened fails alone).
async fn scan_roots(catalog: &mut Catalog, sink: &Arc<ActorSink>, settings: &ScannerSettings) -> Vec<RootReport> {
    let Some((first, others)) = settings.roots.split_first() else {
        return Vec::new();
    };
    let context = &settings.context;
    let others = others.iter().map(|root| async move {
        match Catalog::open(&settings.database, &settings.agent).await {
            Ok(mut own) => scan_root(&mut own, &**sink, context, root).await,
            Err(error) => RootReport::failed(root, format!("catalog: {}", error.detail())),
        }
    });
    let (first, mut others) = futures::join!(
        scan_root(catalog, &**sink, context, first),
        futures::future::join_all(others)
    );
    others.insert(0, first);
    others
}

pub struct ScannerSettings {
    pub database: Target,
    pub agent: String,
    pub roots: Vec<RootSpec>,
    pub schedule: Schedule,
    pub on_start: bool,
    pub context: ScanContext,
    /// A one-shot run: scan once at start, no schedule, and hand the reports over.
    pub once: Option<Arc<super::OnceRun>>,
}

pub struct ScannerActor {
    guard: ChildGuard,
    settings: Arc<ScannerSettings>,
    sink: Arc<ActorSink>,
    stats: Arc<ScanStats>,
    catalog: Option<Catalog>,
    scan: Option<SpawnHandle>,
    next_run: Option<DateTime<Utc>>,
    timer: Option<SpawnHandle>,
    /// A scan was asked for while one ran: run it when that one ends.
    rescan: Option<String>,
    /// Whether what runs is a full scan (else a path sync).
    full: bool,
    /// Paths waiting for a sync, per root.
    touched: std::collections::BTreeMap<String, std::collections::BTreeSet<std::ffi::OsString>>,
    log: Logger,
}

impl ScannerActor {
    pub fn new(
        guard: ChildGuard,
        settings: Arc<ScannerSettings>,
        sink: Arc<ActorSink>,
        stats: Arc<ScanStats>,
        log: Logger,
    ) -> ScannerActor {
        ScannerActor {
            guard,
            settings,
            sink,
            stats,
            catalog: None,
            scan: None,
            next_run: None,
            timer: None,
            rescan: None,
            full: false,
            touched: Default::default(),
            log,
        }
    }

    /// Reconcile the touched paths, all roots in one go.
    fn start_sync(&mut self, ctx: &mut Context<Self>) {
        if self.scan.is_some() || self.touched.is_empty() {
            return;
        }
        let Some(mut catalog) = self.catalog.take() else { return };
        let touched = std::mem::take(&mut self.touched);
        let settings = self.settings.clone();
        let sink = self.sink.clone();
        let stats = self.stats.clone();
        let work = async move {
            let mut failed = Vec::new();
            for (label, paths) in touched {
                let Some(root) = settings.roots.iter().find(|r| r.label == label) else {
                    continue;
                };
                let count = paths.len() as u64;
                let report = crate::scan::sync_paths(
                    &mut catalog,
                    &*sink,
                    &settings.context,
                    root,
                    paths.into_iter().collect(),
                )
                .await;
                stats.paths_synced.fetch_add(count, Ordering::Relaxed);
                if let RootOutcome::Failed(reason) = report.outcome {
                    failed.push(format!("{label}: {reason}"));
                }
            }
            (catalog, failed)
        };
        self.full = false;
        self.scan = Some(ctx.spawn(work.into_actor(self).map(|(catalog, failed), actor, ctx| {
            actor.catalog = Some(catalog);
            actor.scan = None;
            if !failed.is_empty() {
                actor.guard.fail(format!("path sync failed: {}", failed.join("; ")));
                ctx.stop();
                return;
            }
            actor.after_work(ctx);
        })));
    }

    /// What waited for the running work: a full scan first, else the touched paths.
    fn after_work(&mut self, ctx: &mut Context<Self>) {
        if let Some(trigger) = self.rescan.take() {
            self.start_scan(&trigger, ctx);
        } else {
            self.start_sync(ctx);
        }
    }

    fn arm_timer(&mut self, ctx: &mut Context<Self>) {
        let now = Utc::now();
        let next = match self.next_run {
            Some(next) => next,
            None => match self.settings.schedule.next_after(now) {
                Some(next) => {
                    self.next_run = Some(next);
                    slog::debug!(self.log, "next scan scheduled"; "at" => next.to_rfc3339());
                    next
                }
                None => return,
            },
        };
        let wait = (next - now).to_std().unwrap_or_default().min(MAX_TIMER);
        self.timer = Some(ctx.run_later(wait, |actor, ctx| {
            if let Some(due) = actor.next_run.filter(|due| Utc::now() >= *due) {
                actor.next_run = None;
                let late_ms = (Utc::now() - due).num_milliseconds();
                info!(actor.log, "scheduled scan due"; "scheduled_for" => due.to_rfc3339(), "late_ms" => late_ms);
                actor.start_scan("schedule", ctx);
            }
            actor.arm_timer(ctx);
        }));
    }

    fn start_scan(&mut self, trigger: &str, ctx: &mut Context<Self>) {
        if self.scan.is_some() && !self.full {
            // A short path sync runs: the scan follows it.
            self.rescan = Some(trigger.to_owned());
            return;
        }
        if self.scan.is_some() {
            self.stats.skipped_overlap.fetch_add(1, Ordering::Relaxed);
            warn!(self.log, "scan skipped"; "reason" => "the previous scan is still running", "trigger" => trigger);
            return;
        }
        let Some(mut catalog) = self.catalog.take() else {
            return;
        };
        let settings = self.settings.clone();
        let sink = self.sink.clone();
        self.stats.started.fetch_add(1, Ordering::Relaxed);
        self.stats.running.store(1, Ordering::Relaxed);
        info!(self.log, "scan started"; "trigger" => trigger, "roots" => settings.roots.len());
        let started = Instant::now();
        let work = async move {
            let reports = scan_roots(&mut catalog, &sink, &settings).await;
            (catalog, reports)
        };
        self.full = true;
        let handle = ctx.spawn(work.into_actor(self).map(move |(catalog, reports), actor, ctx| {
            actor.catalog = Some(catalog);
            actor.scan = None;
            let stats = &actor.stats;
            stats.running.store(0, Ordering::Relaxed);
            stats
                .last_duration_ms
                .store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
            stats
                .last_finished_unix
                .store(Utc::now().timestamp().max(0) as u64, Ordering::Relaxed);
            let unavailable = reports
                .iter()
                .filter(|r| matches!(r.outcome, RootOutcome::Unavailable(_)))
                .count();
            stats.roots_unavailable.store(unavailable as u64, Ordering::Relaxed);
            let failed: Vec<String> = reports
                .iter()
                .filter_map(|report| match &report.outcome {
                    RootOutcome::Failed(reason) => Some(format!("{}: {reason}", report.root)),
                    _ => None,
                })
                .collect();
            let total = |f: fn(&crate::scan::RootCounts) -> u64| reports.iter().map(|r| f(&r.counts)).sum::<u64>();
            info!(actor.log, "scan finished"; "duration_ms" => started.elapsed().as_millis() as u64,
                "seen" => total(|c| c.seen), "new" => total(|c| c.new), "changed" => total(|c| c.changed),
                "moved" => total(|c| c.moved), "deleted" => total(|c| c.deleted),
                "failed" => total(|c| c.failed), "roots_unavailable" => unavailable);
            if let Some(once) = &actor.settings.once {
                // A one-shot run reports a failed root instead of scanning it again.
                once.scan_finished(reports);
            } else if failed.is_empty() {
                stats.completed.fetch_add(1, Ordering::Relaxed);
                actor.after_work(ctx);
            } else {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                // The catalog went away mid-scan: restart, reconnect, and scan again.
                actor.guard.fail(format!("scan failed: {}", failed.join("; ")));
                ctx.stop();
            }
        }));
        self.scan = Some(handle);
    }
}

impl Actor for ScannerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(4);
        let (database, agent) = (self.settings.database.clone(), self.settings.agent.clone());
        ctx.wait(
            async move { Catalog::open(&database, &agent).await }
                .into_actor(self)
                .map(|result, actor, ctx| match result {
                    Ok(catalog) => {
                        actor.catalog = Some(catalog);
                        actor.guard.ready();
                        if actor.settings.once.is_some() {
                            actor.start_scan("scan command", ctx);
                            return;
                        }
                        actor.arm_timer(ctx);
                        if actor.guard.generation() > 1 {
                            actor.start_scan("catch-up after restart", ctx);
                        } else if actor.settings.on_start {
                            actor.start_scan("start", ctx);
                        }
                    }
                    Err(error) => {
                        actor.guard.fail(format!("catalog: {}", error.detail()));
                        ctx.stop();
                    }
                }),
        );
        super::idle::ping_while_idle(ctx);
        // A running scan or path sync is work; files walked, hashed and batches written are
        // its progress.
        let mut seen = 0;
        ctx.run_interval(Duration::from_secs(1), move |actor, _ctx| {
            let liveness = actor.guard.liveness();
            liveness.set_work(u64::from(actor.scan.is_some()));
            let now = actor.sink.progress.load(Ordering::Relaxed)
                + actor.settings.context.progress.walked.load(Ordering::Relaxed);
            if now != seen {
                seen = now;
                liveness.step();
            }
        });
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.stats.running.store(0, Ordering::Relaxed);
    }
}

impl Handler<ScanNow> for ScannerActor {
    type Result = ();

    fn handle(&mut self, message: ScanNow, ctx: &mut Context<Self>) {
        self.start_scan(&message.trigger, ctx);
    }
}

impl Handler<UpdateScanner> for ScannerActor {
    type Result = ();

    fn handle(&mut self, message: UpdateScanner, ctx: &mut Context<Self>) {
        self.settings = message.settings;
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        self.next_run = None;
        self.arm_timer(ctx);
        if let Some(next) = self.next_run {
            info!(self.log, "scan schedule applied"; "next_scan" => next.to_rfc3339());
        }
        if message.scan_now {
            if self.scan.is_some() {
                self.rescan = Some("configuration changed".into());
            } else {
                self.start_scan("configuration changed", ctx);
            }
        }
    }
}

impl Handler<SyncPaths> for ScannerActor {
    type Result = ();

    fn handle(&mut self, message: SyncPaths, ctx: &mut Context<Self>) {
        self.touched.entry(message.root).or_default().extend(message.paths);
        self.start_sync(ctx);
    }
}

impl Handler<StopChild> for ScannerActor {
    type Result = ();

    fn handle(&mut self, _: StopChild, ctx: &mut Context<Self>) {
        // A scan cut short loses nothing: what it committed stays, the rest is found again
        // by the next scan.
        if let Some(handle) = self.scan.take() {
            ctx.cancel_future(handle);
            info!(self.log, "scan interrupted by shutdown");
        }
        self.guard.stop_cleanly();
        ctx.stop();
    }
}

impl super::idle::HoldsCatalog for ScannerActor {
    fn catalog_slot(&mut self) -> &mut Option<Catalog> {
        &mut self.catalog
    }

    fn guard(&mut self) -> &mut ChildGuard {
        &mut self.guard
    }
}

//! ScheduledActor: a job the daemon runs on a cron schedule of its own, in the daemons that
//! upload (they hold the store). Two jobs use it:
//!
//! * the catalog export (`catalog.export_schedule`, see [`crate::backup`]), so that a lost
//!   database can be rebuilt with `catalog import`;
//! * retention (`retention.schedule`, see [`crate::retention`]): mark, then delete from the
//!   store what the policy lets go after the grace period.
//!
//! A failed run is logged and tried again at the next scheduled time; it never stops the
//! daemon's other work. A stop request is answered at once: the run in progress is dropped
//! (every step of both jobs is safe to cut short).

use super::schedule::Schedule;
use super::supervisor::{ChildGuard, StopChild};
use crate::catalog::retention::RetentionPolicy;
use crate::catalog::{Catalog, Target};
use crate::store::ObjectStore;
use actix::prelude::*;
use chrono::Utc;
use futures::future::BoxFuture;
use slog::{info, warn, Logger};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// One run of a job; it logs its own outcome and counts it.
pub type Job = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

pub struct ScheduledActor {
    guard: ChildGuard,
    /// None: never ("off").
    schedule: Option<Schedule>,
    job: Job,
}

impl ScheduledActor {
    pub fn new(guard: ChildGuard, schedule: Option<Schedule>, job: Job) -> Self {
        ScheduledActor { guard, schedule, job }
    }

    fn arm(&mut self, ctx: &mut Context<Self>) {
        let Some(schedule) = &self.schedule else {
            return;
        };
        let now = Utc::now();
        let Some(next) = schedule.next_after(now) else { return };
        let wait = (next - now).to_std().unwrap_or_default();
        ctx.run_later(wait, |actor, ctx| {
            let run = (actor.job)();
            ctx.spawn(run.into_actor(actor).map(|(), actor, ctx| actor.arm(ctx)));
        });
    }
}

impl Actor for ScheduledActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.guard.ready();
        self.arm(ctx);
    }
}

impl Handler<StopChild> for ScheduledActor {
    type Result = ();

    fn handle(&mut self, _: StopChild, ctx: &mut Context<Self>) {
        self.guard.stop_cleanly();
        ctx.stop();
    }
}

/// Where both jobs work.
#[derive(Clone)]
pub struct JobTarget {
    pub database: Target,
    pub agent: String,
    pub store: ObjectStore,
}

/// For `/metrics`.
#[derive(Debug, Default)]
pub struct ExportStats {
    pub exported: AtomicU64,
    pub failed: AtomicU64,
    pub last_bytes: AtomicU64,
    pub last_unix: AtomicU64,
}

/// The catalog export, keeping the newest `keep` exports.
pub fn export_job(target: JobTarget, keep: usize, stats: Arc<ExportStats>, log: Logger) -> Job {
    Arc::new(move || {
        let (target, stats, log) = (target.clone(), stats.clone(), log.clone());
        Box::pin(async move {
            let result = async {
                let mut catalog = Catalog::open(&target.database, &target.agent)
                    .await
                    .map_err(|error| error.detail())?;
                crate::backup::export(&mut catalog, &target.store, &target.agent, keep).await
            }
            .await;
            match result {
                Ok(report) => {
                    let rows: u64 = report.tables.0.iter().map(|(_, rows)| rows).sum();
                    stats.exported.fetch_add(1, Ordering::Relaxed);
                    stats.last_bytes.store(report.bytes, Ordering::Relaxed);
                    stats
                        .last_unix
                        .store(Utc::now().timestamp().max(0) as u64, Ordering::Relaxed);
                    info!(log, "catalog exported"; "key" => &report.key, "bytes" => report.bytes,
                        "rows" => rows, "pruned" => report.pruned.len());
                }
                Err(error) => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    warn!(log, "catalog export failed"; "error" => error,
                        "detail" => "tried again at the next scheduled time");
                }
            }
        })
    })
}

/// For `/metrics`: retention's totals since the daemon started.
#[derive(Debug, Default)]
pub struct GcStats {
    pub runs: AtomicU64,
    pub failed: AtomicU64,
    pub progress: crate::retention::GcProgress,
}

/// Retention with `policy`. With a policy that keeps everything, the run only says so.
pub fn gc_job(target: JobTarget, policy: RetentionPolicy, stats: Arc<GcStats>, log: Logger) -> Job {
    Arc::new(move || {
        let (target, policy, stats, log) = (target.clone(), policy.clone(), stats.clone(), log.clone());
        Box::pin(async move {
            if policy.keeps_everything() {
                info!(log, "retention: the policy keeps everything; nothing to collect");
                return;
            }
            let result = async {
                let mut catalog = Catalog::open(&target.database, &target.agent)
                    .await
                    .map_err(|error| error.detail())?;
                crate::retention::run(&mut catalog, &target.store, &policy, false, &stats.progress).await
            }
            .await;
            stats.runs.fetch_add(1, Ordering::Relaxed);
            match result {
                Ok(report) => {
                    info!(log, "retention run finished"; "collectable" => report.collectable_objects,
                        "marked" => report.marked, "unmarked" => report.unmarked,
                        "deleted" => report.purged_objects, "reclaimed_bytes" => report.purged_bytes,
                        "kept" => report.kept_registered_again, "not_deleted" => report.failed.len());
                    if let Some(failure) = report.failed.first() {
                        warn!(log, "retention could not delete objects"; "count" => report.failed.len(),
                            "first" => &failure.key, "error" => &failure.reason,
                            "detail" => "tried again at the next scheduled time");
                    }
                }
                Err(error) => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    warn!(log, "retention run failed"; "error" => error,
                        "detail" => "tried again at the next scheduled time");
                }
            }
        })
    })
}

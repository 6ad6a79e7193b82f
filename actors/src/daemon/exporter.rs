//! ExporterActor: the catalog exported into the bucket on `catalog.export_schedule` (see
//! [`crate::backup`]), so that a lost database can be rebuilt with `catalog import`. Runs in
//! the daemons that upload (they hold the store). A failed export is logged and tried again
//! at the next scheduled time; it never stops the daemon's other work.

use super::schedule::Schedule;
use super::supervisor::{ChildGuard, StopChild};
use crate::catalog::{Catalog, Target};
use crate::store::ObjectStore;
use actix::prelude::*;
use chrono::Utc;
use slog::{info, warn, Logger};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub struct ExporterSettings {
    pub database: Target,
    pub agent: String,
    pub store: ObjectStore,
    /// None: no exports ("off").
    pub schedule: Option<Schedule>,
    pub keep: usize,
}

/// For `/metrics`.
#[derive(Debug, Default)]
pub struct ExportStats {
    pub exported: AtomicU64,
    pub failed: AtomicU64,
    pub last_bytes: AtomicU64,
    pub last_unix: AtomicU64,
}

pub struct ExporterActor {
    guard: ChildGuard,
    settings: Arc<ExporterSettings>,
    stats: Arc<ExportStats>,
    log: Logger,
}

impl ExporterActor {
    pub fn new(guard: ChildGuard, settings: Arc<ExporterSettings>, stats: Arc<ExportStats>, log: Logger) -> Self {
        ExporterActor {
            guard,
            settings,
            stats,
            log,
        }
    }

    fn arm(&mut self, ctx: &mut Context<Self>) {
        let Some(schedule) = &self.settings.schedule else {
            return;
        };
        let now = Utc::now();
        let Some(next) = schedule.next_after(now) else { return };
        let wait = (next - now).to_std().unwrap_or_default();
        ctx.run_later(wait, |actor, ctx| actor.export(ctx));
    }

    fn export(&mut self, ctx: &mut Context<Self>) {
        let settings = self.settings.clone();
        let work = async move {
            let mut catalog = Catalog::open(&settings.database, &settings.agent)
                .await
                .map_err(|error| error.detail())?;
            crate::backup::export(&mut catalog, &settings.store, &settings.agent, settings.keep).await
        };
        // Spawned, not waited on: a stop request is answered at once, the export dropped.
        ctx.spawn(work.into_actor(self).map(|result, actor, ctx| {
            match result {
                Ok(report) => {
                    let rows: u64 = report.tables.0.iter().map(|(_, rows)| rows).sum();
                    actor.stats.exported.fetch_add(1, Ordering::Relaxed);
                    actor.stats.last_bytes.store(report.bytes, Ordering::Relaxed);
                    actor
                        .stats
                        .last_unix
                        .store(Utc::now().timestamp().max(0) as u64, Ordering::Relaxed);
                    info!(actor.log, "catalog exported"; "key" => &report.key, "bytes" => report.bytes,
                        "rows" => rows, "pruned" => report.pruned.len());
                }
                Err(error) => {
                    actor.stats.failed.fetch_add(1, Ordering::Relaxed);
                    warn!(actor.log, "catalog export failed"; "error" => error,
                        "detail" => "tried again at the next scheduled time");
                }
            }
            actor.arm(ctx);
        }));
    }
}

impl Actor for ExporterActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.guard.ready();
        self.arm(ctx);
    }
}

impl Handler<StopChild> for ExporterActor {
    type Result = ();

    fn handle(&mut self, _: StopChild, ctx: &mut Context<Self>) {
        self.guard.stop_cleanly();
        ctx.stop();
    }
}

//! UploaderActor: runs the upload pipeline ([`crate::upload::Uploader`]) continuously. New
//! queue rows are picked up within the uploader's idle poll (200 ms) of their commit, with
//! `upload.concurrency` transfers at once. A lost catalog or an unreachable store fails the
//! actor (its leases are given back first), and the Supervisor restarts it with backoff;
//! a restarted uploader first checks that both answer. In a one-shot run (`scan`) the loop
//! ends after the scan, and its end (or its failure) ends the run.

use super::supervisor::{ChildGuard, StopChild};
use super::OnceRun;
use crate::catalog::{Catalog, Target};
use crate::store::ObjectStore;
use crate::upload::{UploadControl, UploadCounters, UploadError, UploadSettings, Uploader};
use crate::upload_handoff::Handoff;
use actix::prelude::*;
use slog::{info, Logger};
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// At shutdown, transfers in flight get this long to finish before they are cut off (their
/// leases are given back either way); docker stop waits 10 s in all.
const STOP_GRACE: Duration = Duration::from_secs(5);

pub struct UploaderSettings {
    pub database: Target,
    pub agent: String,
    pub store: ObjectStore,
    pub roots: HashMap<String, PathBuf>,
    pub upload: UploadSettings,
    pub handoff: Arc<Handoff>,
}

pub struct UploaderActor {
    guard: ChildGuard,
    settings: Arc<UploaderSettings>,
    counters: Arc<UploadCounters>,
    uploader: Option<Rc<Uploader>>,
    control: Arc<UploadControl>,
    /// Set in a one-shot run: the loop's end is the run's end, and a failure ends it too.
    once: Option<Arc<OnceRun>>,
    run: Option<SpawnHandle>,
    stopping: bool,
    log: Logger,
}

impl UploaderActor {
    pub fn new(
        guard: ChildGuard,
        settings: Arc<UploaderSettings>,
        counters: Arc<UploadCounters>,
        control: Arc<UploadControl>,
        once: Option<Arc<OnceRun>>,
        log: Logger,
    ) -> UploaderActor {
        UploaderActor {
            guard,
            settings,
            counters,
            uploader: None,
            control,
            once,
            run: None,
            stopping: false,
            log,
        }
    }

    fn start_run(&mut self, uploader: Rc<Uploader>, ctx: &mut Context<Self>) {
        let control = self.control.clone();
        let liveness = self.guard.liveness();
        let work = async move { uploader.run(&control, &liveness).await };
        let handle = ctx.spawn(work.into_actor(self).map(|result, actor, ctx| {
            actor.run = None;
            if let Some(once) = &actor.once {
                // A one-shot run ends with its uploads, however they ended.
                match result {
                    Ok(()) => once.uploads_finished(),
                    Err(error) => once.uploads_failed(match error {
                        UploadError::Catalog(error) => format!("catalog: {}", error.detail()),
                        other => other.to_string(),
                    }),
                }
                actor.guard.stop_cleanly();
                ctx.stop();
                return;
            }
            match result {
                Ok(()) if actor.stopping => actor.guard.stop_cleanly(),
                Ok(()) => actor.guard.fail("the upload loop ended on its own"),
                Err(UploadError::Catalog(error)) => actor.guard.fail(format!("catalog: {}", error.detail())),
                Err(error @ (UploadError::StoreUnavailable(_) | UploadError::Store(_))) => {
                    actor.guard.fail(error.to_string())
                }
            }
            ctx.stop();
        }));
        self.run = Some(handle);
    }
}

impl Actor for UploaderActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(4);
        let settings = self.settings.clone();
        let counters = self.counters.clone();
        let log = self.log.clone();
        ctx.wait(
            async move {
                let catalog = Catalog::open(&settings.database, &settings.agent)
                    .await
                    .map_err(|error| format!("catalog: {}", error.detail()))?;
                let uploader = Uploader::new(
                    catalog,
                    settings.store.clone(),
                    settings.roots.clone(),
                    settings.upload.clone(),
                    counters,
                    settings.handoff.clone(),
                    log,
                );
                // Reaches the store and decides how its uploads are verified.
                uploader.prepare().await.map_err(|error| error.to_string())?;
                Ok::<_, String>(uploader)
            }
            .into_actor(self)
            .map(|result, actor, ctx| match result {
                Ok(uploader) => {
                    let uploader = Rc::new(uploader);
                    actor.uploader = Some(uploader.clone());
                    actor.guard.ready();
                    actor.start_run(uploader, ctx);
                }
                Err(reason) => {
                    match &actor.once {
                        Some(once) => {
                            once.uploads_failed(reason);
                            actor.guard.stop_cleanly();
                        }
                        None => actor.guard.fail(reason),
                    }
                    ctx.stop();
                }
            }),
        );
    }
}

impl Handler<StopChild> for UploaderActor {
    type Result = ();

    fn handle(&mut self, _: StopChild, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        if self.run.is_none() {
            self.guard.stop_cleanly();
            ctx.stop();
            return;
        }
        // Finish what is in flight and record it; what is not started goes back to the queue.
        self.control.request_stop();
        ctx.run_later(STOP_GRACE, |actor, ctx| {
            let Some(handle) = actor.run.take() else { return };
            ctx.cancel_future(handle);
            info!(
                actor.log,
                "uploads in flight cut off by shutdown; their leases are given back"
            );
            let uploader = actor.uploader.clone();
            ctx.wait(
                async move {
                    if let Some(uploader) = uploader {
                        let _ = uploader.release_leases().await;
                    }
                }
                .into_actor(actor)
                .map(|(), actor, ctx| {
                    actor.guard.stop_cleanly();
                    ctx.stop();
                }),
            );
        });
    }
}

//! RegistrarActor: the catalog writer. Each `WriteBatch` is one transaction (registrations,
//! moves and soft deletions of one root, and the upload queue rows of new contents). A lost
//! connection fails the actor; the Supervisor restarts it, and the new instance reconnects.

use super::supervisor::{ChildGuard, StopChild};
use crate::catalog::{BatchOutcome, Catalog, Target};
use crate::scan::Batch;
use crate::upload_handoff::Handoff;
use actix::prelude::*;
use std::sync::Arc;

#[derive(Message)]
#[rtype(result = "Result<BatchOutcome, String>")]
pub struct WriteBatch {
    pub root: String,
    /// Shared, so that a sender can send it again if this registrar dies with it.
    pub batch: Arc<Batch>,
}

/// Batches a registrar holds besides the one it writes.
const MAILBOX: usize = 4;

pub struct RegistrarActor {
    guard: ChildGuard,
    database: Target,
    agent: String,
    catalog: Option<Catalog>,
    /// Where the new contents leased to this process's uploader go (see `upload_handoff`).
    handoff: Arc<Handoff>,
}

impl RegistrarActor {
    pub fn new(guard: ChildGuard, database: Target, agent: String, handoff: Arc<Handoff>) -> RegistrarActor {
        RegistrarActor {
            guard,
            database,
            agent,
            catalog: None,
            handoff,
        }
    }

    fn lost(&mut self, reason: String, ctx: &mut Context<Self>) {
        self.guard.fail(format!("catalog: {reason}"));
        ctx.stop();
    }
}

impl Actor for RegistrarActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX);
        let (database, agent) = (self.database.clone(), self.agent.clone());
        // No batch is taken before the connection is up.
        ctx.wait(
            async move { Catalog::open(&database, &agent).await }
                .into_actor(self)
                .map(|result, actor, ctx| match result {
                    Ok(catalog) => {
                        actor.catalog = Some(catalog);
                        actor.guard.ready();
                    }
                    Err(error) => actor.lost(error.detail(), ctx),
                }),
        );
        super::idle::ping_while_idle(ctx);
    }
}

impl Handler<WriteBatch> for RegistrarActor {
    type Result = AtomicResponse<Self, Result<BatchOutcome, String>>;

    fn handle(&mut self, message: WriteBatch, _ctx: &mut Context<Self>) -> Self::Result {
        crate::hooks::maybe_panic_in("registrar");
        let catalog = self.catalog.take();
        let liveness = self.guard.liveness();
        let handoff = self.handoff.clone();
        liveness.begin();
        AtomicResponse::new(Box::pin(
            async move {
                let Some(mut catalog) = catalog else {
                    return (None, Err("the registrar has no catalog connection".to_owned()));
                };
                let batch = &message.batch;
                let lease = handoff.request();
                let result = catalog
                    .write_batch_leasing(
                        &message.root,
                        &batch.registrations,
                        &batch.moves,
                        &batch.deletions,
                        lease.as_ref(),
                    )
                    .await
                    .map(|written| {
                        if let Some(lease) = &lease {
                            handoff.hand_over(&lease.taker, written.leased);
                        }
                        written.outcome
                    })
                    .map_err(|error| error.detail());
                (Some(catalog), result)
            }
            .into_actor(self)
            .map(move |(catalog, result), actor, ctx| {
                liveness.end();
                actor.catalog = catalog;
                if let Err(reason) = &result {
                    actor.lost(reason.clone(), ctx);
                }
                result
            }),
        ))
    }
}

impl Handler<StopChild> for RegistrarActor {
    type Result = ();

    fn handle(&mut self, _: StopChild, ctx: &mut Context<Self>) {
        // Messages already in the mailbox are handled first: a batch in flight is committed.
        self.guard.stop_cleanly();
        ctx.stop();
    }
}

impl super::idle::HoldsCatalog for RegistrarActor {
    fn catalog_slot(&mut self) -> &mut Option<Catalog> {
        &mut self.catalog
    }

    fn guard(&mut self) -> &mut ChildGuard {
        &mut self.guard
    }
}

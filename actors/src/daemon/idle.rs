//! What the actors that hold a catalog connection share: while idle, the connection is
//! checked every few seconds, so that a lost database shows at once as a failed actor (whose
//! restart reconnects, with backoff) instead of at the next piece of work.

use super::supervisor::ChildGuard;
use crate::catalog::Catalog;
use actix::prelude::*;
use std::time::Duration;

const PING_INTERVAL: Duration = Duration::from_secs(5);

pub(super) trait HoldsCatalog: Actor<Context = Context<Self>> {
    /// The connection, None while a piece of work has it.
    fn catalog_slot(&mut self) -> &mut Option<Catalog>;
    fn guard(&mut self) -> &mut ChildGuard;
}

pub(super) fn ping_while_idle<A: HoldsCatalog>(ctx: &mut Context<A>) {
    ctx.run_interval(PING_INTERVAL, |actor, ctx| {
        let Some(catalog) = actor.catalog_slot().take() else {
            return;
        };
        ctx.wait(
            async move {
                let result = catalog.ping().await;
                (catalog, result)
            }
            .into_actor(actor)
            .map(|(catalog, result), actor, ctx| {
                *actor.catalog_slot() = Some(catalog);
                if let Err(error) = result {
                    actor.guard().fail(format!("catalog: {}", error.detail()));
                    ctx.stop();
                }
            }),
        );
    });
}

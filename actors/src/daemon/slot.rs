//! Where the current instance of a restartable actor can be found. A restart puts a new
//! address in the slot; senders read it at each send, so they follow restarts.

use actix::{Actor, Addr};
use std::sync::{Arc, RwLock};

pub struct Slot<A: Actor>(Arc<RwLock<Option<Addr<A>>>>);

impl<A: Actor> Clone for Slot<A> {
    fn clone(&self) -> Self {
        Slot(self.0.clone())
    }
}

impl<A: Actor> Default for Slot<A> {
    fn default() -> Self {
        Slot(Arc::new(RwLock::new(None)))
    }
}

impl<A: Actor> Slot<A> {
    pub fn set(&self, address: Addr<A>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(address);
    }

    /// The current instance, if one is running.
    pub fn get(&self) -> Option<Addr<A>> {
        let address = self.0.read().unwrap_or_else(|e| e.into_inner()).clone();
        address.filter(|address| address.connected())
    }
}

//! New contents passed from registration straight to this process's uploader.
//!
//! While an uploader of this process runs and the uploads are open, the registrar writes the
//! queue rows of contents the catalog sees for the first time already leased to that uploader
//! (its worker name and the advisory lock its connection holds), and after the commit hands
//! them over here with the file they were registered from. The uploader takes them from
//! memory instead of leasing them again: a lease costs the catalog a locked scan of the queue,
//! a lookup of the copies and a rewrite of the row with four index entries, per content.
//!
//! Nothing depends on the hand-over for safety: a handed-over row is an ordinary leased row.
//! If the uploader is gone (its connection, and so its lock, with it), any uploader reclaims
//! the row at once; if it is alive but no longer takes hand-overs (stopping, or held by the
//! upload window), it gives its leases back as it does for rows it leased itself.
//! The hand-over holds at most [`HANDOFF_CAPACITY`] contents; beyond that, rows are queued
//! unleased as before, so memory stays bounded however large the scan.

use crate::catalog::QueueItem;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

/// Contents waiting in the hand-over at most (a few hundred bytes each).
pub const HANDOFF_CAPACITY: usize = 4096;

/// Whose name the registrar leases new rows in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taker {
    pub worker: String,
    pub lock_key: i64,
    pub lease: Duration,
}

/// What the registrar may lease in one batch: to whom, and how many rows at most.
#[derive(Clone, Debug)]
pub struct LeaseRequest {
    pub taker: Taker,
    pub room: usize,
}

#[derive(Default)]
struct State {
    taker: Option<Taker>,
    items: VecDeque<QueueItem>,
}

#[derive(Default)]
pub struct Handoff {
    state: Mutex<State>,
    /// Wakes an idle uploader when contents arrive.
    pub arrived: tokio::sync::Notify,
}

impl Handoff {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The uploader takes hand-overs under `taker` (None: it takes none now). A change of
    /// taker drops what was handed to the previous one: those rows are its leases, given
    /// back by it or reclaimed once its connection is gone.
    pub fn set_taker(&self, taker: Option<Taker>) -> bool {
        let mut state = self.state();
        if state.taker == taker {
            return false;
        }
        state.taker = taker;
        state.items.clear();
        true
    }

    /// For the registrar, before a batch: lease new rows to this taker, at most `room` of them.
    pub fn request(&self) -> Option<LeaseRequest> {
        let state = self.state();
        let room = HANDOFF_CAPACITY.saturating_sub(state.items.len());
        let taker = state.taker.clone()?;
        (room > 0).then_some(LeaseRequest { taker, room })
    }

    /// For the registrar, after the commit: the rows it leased to `taker`. Dropped if the
    /// uploader no longer takes them under that name (see [`Handoff::set_taker`]).
    pub fn hand_over(&self, taker: &Taker, items: Vec<QueueItem>) {
        if items.is_empty() {
            return;
        }
        {
            let mut state = self.state();
            if state.taker.as_ref() != Some(taker) {
                return;
            }
            state.items.extend(items);
        }
        self.arrived.notify_one();
    }

    /// For the uploader: up to `count` handed-over contents.
    pub fn take(&self, count: usize) -> Vec<QueueItem> {
        let mut state = self.state();
        let count = count.min(state.items.len());
        state.items.drain(..count).collect()
    }

    pub fn len(&self) -> usize {
        self.state().items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taker(worker: &str) -> Taker {
        Taker {
            worker: worker.into(),
            lock_key: 7,
            lease: Duration::from_secs(60),
        }
    }

    fn item(sha: &str) -> QueueItem {
        QueueItem {
            sha256: sha.into(),
            size: 1,
            storage_key: format!("files/{sha}"),
            attempts: 1,
            already_uploaded: false,
            maybe_stored: false,
            sources: Vec::new(),
            parts: None,
        }
    }

    #[test]
    fn nothing_is_leased_while_no_uploader_takes_hand_overs() {
        let handoff = Handoff::default();
        assert!(handoff.request().is_none());
        handoff.hand_over(&taker("a"), vec![item("1")]);
        assert!(handoff.is_empty());
    }

    #[test]
    fn room_shrinks_as_contents_wait_and_is_gone_at_capacity() {
        let handoff = Handoff::default();
        handoff.set_taker(Some(taker("a")));
        assert_eq!(handoff.request().map(|r| r.room), Some(HANDOFF_CAPACITY));
        handoff.hand_over(&taker("a"), (0..10).map(|i| item(&i.to_string())).collect());
        assert_eq!(handoff.request().map(|r| r.room), Some(HANDOFF_CAPACITY - 10));
        handoff.hand_over(
            &taker("a"),
            (10..HANDOFF_CAPACITY).map(|i| item(&i.to_string())).collect(),
        );
        assert!(handoff.request().is_none());
        assert_eq!(handoff.take(3).len(), 3);
        assert_eq!(handoff.request().map(|r| r.room), Some(3));
    }

    #[test]
    fn a_new_taker_does_not_get_what_was_leased_to_the_previous_one() {
        let handoff = Handoff::default();
        handoff.set_taker(Some(taker("a")));
        handoff.hand_over(&taker("a"), vec![item("1")]);
        assert!(handoff.set_taker(Some(taker("b"))));
        assert!(handoff.is_empty());
        // A batch leased to the old taker and committed after the change is not handed over.
        handoff.hand_over(&taker("a"), vec![item("2")]);
        assert!(handoff.is_empty());
        handoff.hand_over(&taker("b"), vec![item("3")]);
        assert_eq!(handoff.take(10)[0].sha256, "3");
    }
}

//! How many uploads are in flight at once: as many small ones as the link's latency calls for,
//! within a memory bound.
//!
//! Over a link 40–80 ms away a small object's transfer is nearly all waiting, so more of them
//! at once means more done per second, until the store or our own CPU is the bottleneck; on a
//! store next door the same number would only queue. The number of small transfers (bodies of
//! at most [`SMALL_OBJECT`]) is therefore adapted with TCP Vegas's rule ([`tower_acc::Vegas`]):
//! it keeps the lowest time a transfer has taken as the link's own, and raises the limit while
//! transfers take about that long, lowers it when they take longer (they queue somewhere) or
//! fail. It moves between `upload.concurrency` and 32 times that.
//!
//! Whatever the limit, the bodies held in memory stay within `upload.concurrency` ×
//! [`LARGE_BODY`] (the bound of the fixed scheme before: that many large transfers), large
//! transfers count four small ones each and are at most `upload.concurrency`, and one transfer
//! always goes when nothing is in flight.

use std::time::Duration;
use tower_acc::{Algorithm, Vegas};

/// Objects up to this size are small: one request, the body read whole.
pub const SMALL_OBJECT: u64 = 1 << 20;
/// What a large transfer holds in memory at most: a whole body below the multipart threshold,
/// or one part of a multipart upload (16 MiB by default).
pub const LARGE_BODY: u64 = 16 << 20;
/// A large transfer takes as many slots as four small ones.
const SLOTS_PER_LARGE: usize = 4;
/// The adaptive limit of slots starts at `concurrency` × this ...
const START_PER_TRANSFER: usize = 4;
/// ... and stays within `concurrency` × 1 and × this.
const MAX_PER_TRANSFER: usize = 32;
/// The baseline is taken afresh after about this many times the limit in transfers.
const PROBE_MULTIPLIER: usize = 1000;

pub struct InFlight {
    concurrency: usize,
    vegas: Vegas,
    small: usize,
    large: usize,
    bytes: u64,
    peak: usize,
}

/// The memory a transfer of `size` bytes holds while in flight.
fn body_bytes(size: u64) -> u64 {
    size.min(LARGE_BODY)
}

fn slots(small: usize, large: usize) -> usize {
    small + SLOTS_PER_LARGE * large
}

impl InFlight {
    pub fn new(concurrency: usize) -> InFlight {
        let concurrency = concurrency.max(1);
        InFlight {
            concurrency,
            vegas: Vegas::builder()
                .initial_limit(concurrency * START_PER_TRANSFER)
                .max_limit(concurrency * MAX_PER_TRANSFER)
                // The baseline (the shortest time seen) is taken afresh rarely: under a
                // lasting load a fresh one is a loaded time, and the limit would creep up.
                .probe_multiplier(PROBE_MULTIPLIER)
                .build(),
            small: 0,
            large: 0,
            bytes: 0,
            peak: 0,
        }
    }

    /// `upload.concurrency` changed while running: start adapting again from its bounds.
    pub fn set_concurrency(&mut self, concurrency: usize) {
        let concurrency = concurrency.max(1);
        if concurrency != self.concurrency {
            let (small, large, bytes, peak) = (self.small, self.large, self.bytes, self.peak);
            *self = InFlight::new(concurrency);
            (self.small, self.large, self.bytes, self.peak) = (small, large, bytes, peak);
        }
    }

    /// Slots the transfers in flight may take now (a small transfer takes one).
    pub fn limit(&self) -> usize {
        self.vegas
            .max_concurrency()
            .clamp(self.concurrency, self.concurrency * MAX_PER_TRANSFER)
    }

    pub fn in_flight(&self) -> usize {
        self.small + self.large
    }

    /// The most transfers that were in flight at once.
    pub fn peak(&self) -> usize {
        self.peak
    }

    /// Whether a transfer of `size` bytes may start now.
    pub fn admits(&self, size: u64) -> bool {
        if self.in_flight() == 0 {
            return true;
        }
        let (small, large) = if size <= SMALL_OBJECT {
            (self.small + 1, self.large)
        } else {
            (self.small, self.large + 1)
        };
        large <= self.concurrency
            && slots(small, large) <= self.limit()
            && self.bytes + body_bytes(size) <= self.concurrency as u64 * LARGE_BODY
    }

    pub fn start(&mut self, size: u64) {
        if size <= SMALL_OBJECT {
            self.small += 1;
        } else {
            self.large += 1;
        }
        self.bytes += body_bytes(size);
        self.peak = self.peak.max(self.in_flight());
    }

    /// A transfer of `size` bytes ended after `elapsed`, having sent `requests` requests (a
    /// HEAD before a PUT makes two); `failed` if the store refused or did not answer. Only
    /// small transfers teach the limit: a large one's time is its bytes', not the link's.
    pub fn finish(&mut self, size: u64, elapsed: Duration, requests: u32, failed: bool) {
        let in_flight = self.in_flight();
        if size <= SMALL_OBJECT {
            self.small = self.small.saturating_sub(1);
            if requests > 0 {
                self.vegas.update(elapsed / requests, in_flight, failed, false);
            }
        } else {
            self.large = self.large.saturating_sub(1);
        }
        self.bytes = self.bytes.saturating_sub(body_bytes(size));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pipeline kept full: `steps` times, one transfer of `size` bytes ends, having taken
    /// `time(transfers in flight)` (and `failed`, or not), and as many start as are admitted.
    fn run(flight: &mut InFlight, size: u64, time: impl Fn(usize) -> Duration, failed: bool, steps: usize) {
        for _ in 0..steps {
            while flight.admits(size) {
                flight.start(size);
            }
            let took = time(flight.in_flight());
            flight.finish(size, took, 1, failed);
        }
        while flight.in_flight() > 0 {
            flight.finish(size, Duration::ZERO, 0, false);
        }
    }

    fn settle(concurrency: usize, size: u64, time: impl Fn(usize) -> Duration, steps: usize) -> InFlight {
        let mut flight = InFlight::new(concurrency);
        run(&mut flight, size, time, false, steps);
        flight
    }

    #[test]
    fn a_long_link_that_does_not_slow_down_with_more_in_flight_raises_the_limit_to_its_top() {
        let flight = settle(8, 20_000, |_| Duration::from_millis(80), 20_000);
        assert_eq!(flight.limit(), 8 * MAX_PER_TRANSFER);
        assert_eq!(flight.peak(), 8 * MAX_PER_TRANSFER);
    }

    #[test]
    fn a_store_whose_time_grows_with_the_transfers_in_flight_keeps_the_limit_low() {
        // A saturated store next door: each transfer in flight adds 2 ms of queueing.
        let flight = settle(8, 20_000, |n| Duration::from_millis(2 * n as u64), 20_000);
        assert!(flight.limit() <= 2 * 8 * START_PER_TRANSFER, "limit {}", flight.limit());
    }

    #[test]
    fn failures_lower_the_limit_but_never_below_the_configured_concurrency() {
        let mut flight = settle(8, 20_000, |_| Duration::from_millis(80), 20_000);
        run(&mut flight, 20_000, |_| Duration::from_millis(80), true, 20_000);
        assert_eq!(flight.limit(), 8);
    }

    #[test]
    fn memory_stays_within_concurrency_large_bodies_whatever_the_limit() {
        let mut flight = settle(8, 20_000, |_| Duration::from_millis(80), 20_000);
        assert!(flight.limit() > 64);
        // Small bodies of 1 MiB: 128 MiB at most, though the limit allows 256 transfers.
        while flight.admits(SMALL_OBJECT) {
            flight.start(SMALL_OBJECT);
        }
        assert_eq!(flight.in_flight(), 128);
        // Large ones: at most `concurrency`, and four slots each.
        let mut flight = InFlight::new(8);
        while flight.admits(64 << 20) {
            flight.start(64 << 20);
        }
        assert_eq!(flight.in_flight(), 8);
        assert!(!flight.admits(1));
    }

    #[test]
    fn one_transfer_always_goes_when_nothing_is_in_flight() {
        let flight = InFlight::new(1);
        assert!(flight.admits(u64::MAX));
    }
}

//! What an operator can change about uploads while they run: how many at once, how many bytes
//! per second over all transfers (`upload.bandwidth_limit`), and a daily window outside which
//! no upload starts (`upload.window`, e.g. 22:00-06:00 in the scan time zone).

use chrono::{DateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

/// Bytes per second over all transfers; 0 means no limit. A transfer takes its bytes from the
/// budget before it starts and waits while the budget is in debt, so over any stretch longer
/// than a few transfers the rate stays at the limit (a large object waits its share first).
#[derive(Debug)]
pub struct RateLimiter {
    bytes_per_second: AtomicU64,
    granted: AtomicU64,
    /// (budget in bytes, when it was last refilled); negative while in debt.
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    pub fn new(bytes_per_second: u64) -> RateLimiter {
        RateLimiter {
            bytes_per_second: AtomicU64::new(bytes_per_second),
            granted: AtomicU64::new(0),
            state: Mutex::new((0.0, Instant::now())),
        }
    }

    pub fn limit(&self) -> u64 {
        self.bytes_per_second.load(Ordering::Relaxed)
    }

    pub fn set_limit(&self, bytes_per_second: u64) {
        self.bytes_per_second.store(bytes_per_second, Ordering::Relaxed);
    }

    /// Take `bytes` from the budget; how long the caller must wait before sending them.
    pub fn reserve(&self, bytes: u64) -> Duration {
        let rate = self.limit();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if rate == 0 {
            *state = (0.0, now);
            return Duration::ZERO;
        }
        let (budget, since) = *state;
        // Unused budget is kept for at most a tenth of a second: no burst after a pause.
        let refilled = (budget + since.elapsed().as_secs_f64() * rate as f64).min(rate as f64 / 10.0);
        let left = refilled - bytes as f64;
        *state = (left, now);
        if left >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-left / rate as f64)
        }
    }

    /// How many sends (files or parts) have been let through so far: progress, as the stall
    /// watchdog sees it.
    pub fn granted(&self) -> u64 {
        self.granted.load(Ordering::Relaxed)
    }

    pub async fn acquire(&self, bytes: u64) {
        self.granted.fetch_add(1, Ordering::Relaxed);
        let wait = self.reserve(bytes);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// A daily time range in a time zone; it may wrap midnight (22:00-06:00).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadWindow {
    pub start: NaiveTime,
    pub end: NaiveTime,
    pub zone: Tz,
}

impl UploadWindow {
    /// "HH:MM-HH:MM" in `zone`.
    pub fn parse(text: &str, zone: &str) -> Result<UploadWindow, String> {
        let zone: Tz = zone.parse().map_err(|_| format!("unknown time zone {zone:?}"))?;
        UploadWindow::new(text, zone)
    }

    /// "HH:MM-HH:MM" in `zone`; the error names the text.
    pub fn new(text: &str, zone: Tz) -> Result<UploadWindow, String> {
        let invalid = || format!("{text:?} is not a window such as \"22:00-06:00\"");
        let (start, end) = text.split_once('-').ok_or_else(invalid)?;
        let time = |part: &str| NaiveTime::parse_from_str(part.trim(), "%H:%M").map_err(|_| invalid());
        let (start, end) = (time(start)?, time(end)?);
        if start == end {
            return Err(format!("{text:?} is empty: start and end are the same"));
        }
        Ok(UploadWindow { start, end, zone })
    }

    /// As configured: "22:00-06:00".
    pub fn range(&self) -> String {
        format!("{}-{}", self.start.format("%H:%M"), self.end.format("%H:%M"))
    }

    pub fn contains(&self, now: DateTime<Utc>) -> bool {
        let local = now.with_timezone(&self.zone).time();
        if self.start < self.end {
            self.start <= local && local < self.end
        } else {
            local >= self.start || local < self.end
        }
    }

    /// When the window opens next (now, if it is open).
    pub fn next_open(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        if self.contains(now) {
            return now;
        }
        let local = now.with_timezone(&self.zone);
        let mut day = local.date_naive();
        for _ in 0..3 {
            let candidate = day.and_time(self.start);
            if let Some(at) = self.zone.from_local_datetime(&candidate).earliest() {
                let at = at.with_timezone(&Utc);
                if at > now {
                    return at;
                }
            }
            day = day.succ_opt().unwrap_or(day);
        }
        now
    }

    pub fn describe(&self) -> String {
        format!(
            "{}-{} {}",
            self.start.format("%H:%M"),
            self.end.format("%H:%M"),
            self.zone
        )
    }
}

/// The live knobs of the uploads, shared by the uploader (which reads them before every
/// lease and transfer) and whoever applies a new configuration.
#[derive(Debug)]
pub struct UploadKnobs {
    concurrency: AtomicUsize,
    pub limiter: RateLimiter,
    window: RwLock<Option<UploadWindow>>,
}

impl UploadKnobs {
    pub fn new(concurrency: usize, bandwidth_limit: u64, window: Option<UploadWindow>) -> UploadKnobs {
        UploadKnobs {
            concurrency: AtomicUsize::new(concurrency.max(1)),
            limiter: RateLimiter::new(bandwidth_limit),
            window: RwLock::new(window),
        }
    }

    pub fn concurrency(&self) -> usize {
        self.concurrency.load(Ordering::Relaxed)
    }

    pub fn set_concurrency(&self, concurrency: usize) {
        self.concurrency.store(concurrency.max(1), Ordering::Relaxed);
    }

    pub fn set_window(&self, window: Option<UploadWindow>) {
        *self.window.write().unwrap_or_else(|e| e.into_inner()) = window;
    }

    pub fn window(&self) -> Option<UploadWindow> {
        self.window.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether a new upload may start now.
    pub fn open(&self, now: DateTime<Utc>) -> bool {
        self.window().is_none_or(|window| window.contains(now))
    }
}

impl Default for UploadKnobs {
    fn default() -> Self {
        UploadKnobs::new(8, 0, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(hour: u32, minute: u32) -> DateTime<Utc> {
        // 2026-01-15: Berlin is UTC+1.
        Utc.with_ymd_and_hms(2026, 1, 15, hour, minute, 0).unwrap()
    }

    #[test]
    fn a_window_across_midnight_is_open_at_night_only() {
        let window = UploadWindow::parse("22:00-06:00", "Europe/Berlin").unwrap();
        // Berlin local = UTC + 1.
        let table = [
            ((20, 59), false),
            ((21, 0), true),
            ((23, 30), true),
            ((4, 59), true),
            ((5, 0), false),
            ((12, 0), false),
        ];
        for ((hour, minute), open) in table {
            assert_eq!(window.contains(at(hour, minute)), open, "{hour}:{minute} UTC");
        }
        assert_eq!(window.next_open(at(12, 0)), at(21, 0));
        assert_eq!(window.next_open(at(23, 0)), at(23, 0));
    }

    #[test]
    fn a_daytime_window_and_bad_input() {
        let window = UploadWindow::parse("09:30-17:00", "UTC").unwrap();
        assert!(window.contains(at(9, 30)) && window.contains(at(16, 59)));
        assert!(!window.contains(at(17, 0)) && !window.contains(at(9, 29)));
        assert_eq!(window.next_open(at(18, 0)), at(9, 30) + chrono::Duration::days(1));
        for bad in ["22:00", "25:00-06:00", "10:00-10:00", "ten-six"] {
            assert!(UploadWindow::parse(bad, "UTC").is_err(), "{bad}");
        }
        assert!(UploadWindow::parse("22:00-06:00", "Nowhere/City").is_err());
    }

    #[test]
    fn the_limiter_paces_to_its_rate_and_can_be_changed() {
        let limiter = RateLimiter::new(1_000_000);
        // 3 MB at 1 MB/s: the reservations add up to about 3 s of waiting in all.
        let waits: Vec<Duration> = (0..3).map(|_| limiter.reserve(1_000_000)).collect();
        let last = waits.last().unwrap().as_secs_f64();
        assert!((2.8..=3.01).contains(&last), "{waits:?}");
        limiter.set_limit(0);
        assert_eq!(limiter.reserve(u64::MAX / 2), Duration::ZERO, "no limit, no wait");
    }
}

//! Fault injection for the end-to-end tests: `FILEMETASYNC_TEST_PANIC` holds a comma-separated
//! list of places where the process panics once, for example
//! `hasher:report.pdf,registrar`; the other `FILEMETASYNC_TEST_*` variables are below. Only
//! with the `fault-hooks` feature (on by default, so that the tests' binary has them); the
//! release image is built without it, where every hook is an empty inline function. Unset,
//! every hook is a single relaxed load of a flag and does nothing.

#[cfg(feature = "fault-hooks")]
pub use armed::*;
#[cfg(not(feature = "fault-hooks"))]
pub use disarmed::*;

#[cfg(not(feature = "fault-hooks"))]
mod disarmed {
    #[inline(always)]
    pub fn maybe_panic_hashing(_path: &std::path::Path) {}

    #[inline(always)]
    pub fn maybe_panic_in(_actor: &str) {}

    #[inline(always)]
    pub fn watch_delivery_disabled() -> bool {
        false
    }

    #[inline(always)]
    pub fn inject_deadlock(_root: &str) -> bool {
        false
    }

    #[inline(always)]
    pub fn slow_batch() -> Option<u32> {
        None
    }
}

#[cfg(feature = "fault-hooks")]
mod armed {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::OnceLock;

    struct Hook {
        place: String,
        argument: String,
        fired: AtomicBool,
    }

    fn hooks() -> &'static [Hook] {
        static HOOKS: OnceLock<Vec<Hook>> = OnceLock::new();
        HOOKS.get_or_init(|| {
            let Ok(spec) = std::env::var("FILEMETASYNC_TEST_PANIC") else {
                return Vec::new();
            };
            spec.split(',')
                .filter(|item| !item.trim().is_empty())
                .map(|item| {
                    let (place, argument) = item.trim().split_once(':').unwrap_or((item.trim(), ""));
                    Hook {
                        place: place.to_owned(),
                        argument: argument.to_owned(),
                        fired: AtomicBool::new(false),
                    }
                })
                .collect()
        })
    }

    /// Panic once at `place` when `subject` contains the hook's argument.
    fn fire(place: &str, subject: &str) {
        for hook in hooks() {
            if hook.place == place && subject.contains(&hook.argument) && !hook.fired.swap(true, Ordering::SeqCst) {
                panic!("test hook: injected panic in {place} ({subject})");
            }
        }
    }

    /// In a hashing thread, before it reads `path`.
    pub fn maybe_panic_hashing(path: &std::path::Path) {
        if !hooks().is_empty() {
            fire("hasher", &path.to_string_lossy());
        }
    }

    /// In an actor's message handler.
    pub fn maybe_panic_in(actor: &str) {
        if !hooks().is_empty() {
            fire(actor, actor);
        }
    }

    /// `FILEMETASYNC_TEST_NO_WATCH_DELIVERY=1`: the watcher finds changes but delivers none, so
    /// that a test can show the scheduled reconciliation catching everything on its own.
    pub fn watch_delivery_disabled() -> bool {
        static DISABLED: OnceLock<bool> = OnceLock::new();
        *DISABLED.get_or_init(|| std::env::var("FILEMETASYNC_TEST_NO_WATCH_DELIVERY").is_ok_and(|v| v == "1"))
    }

    /// `FILEMETASYNC_TEST_DEADLOCK=N`: the first N registration batches of this process meet a
    /// deadlock error raised by PostgreSQL itself, to show that it is retried.
    pub fn inject_deadlock(_root: &str) -> bool {
        static LEFT: OnceLock<std::sync::atomic::AtomicU32> = OnceLock::new();
        let left = LEFT.get_or_init(|| {
            let count = std::env::var("FILEMETASYNC_TEST_DEADLOCK")
                .ok()
                .and_then(|value| value.parse().ok())
                .unwrap_or(0);
            std::sync::atomic::AtomicU32::new(count)
        });
        left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    /// `FILEMETASYNC_TEST_SLOW_BATCH=SECONDS`: the first registration batch of this process runs
    /// `pg_sleep(SECONDS)` in its transaction first, so that a test can see a statement given up
    /// at the statement timeout cancelled on the server.
    pub fn slow_batch() -> Option<u32> {
        static LEFT: OnceLock<(u32, AtomicBool)> = OnceLock::new();
        let (seconds, used) = LEFT.get_or_init(|| {
            let seconds = std::env::var("FILEMETASYNC_TEST_SLOW_BATCH")
                .ok()
                .and_then(|value| value.parse().ok())
                .unwrap_or(0);
            (seconds, AtomicBool::new(false))
        });
        (*seconds > 0 && !used.swap(true, Ordering::SeqCst)).then_some(*seconds)
    }
}

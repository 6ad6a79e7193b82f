//! Fault injection for the daemon's tests: `FILEMETASYNC_TEST_PANIC` holds a comma-separated
//! list of places where the process panics once, for example
//! `hasher:report.pdf,registrar`. Unset (as in production), every hook is a single relaxed
//! load of a flag and does nothing.

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

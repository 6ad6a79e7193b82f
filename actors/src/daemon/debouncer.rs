//! DebounceActor: holds each touched path until it has been still for `watch.debounce` (3 s by
//! default), re-armed by every new event and by a stat that still moves, so that a file is
//! hashed only once its size and mtime have been stable for the window, and a temporary file
//! that comes and goes inside the window is never hashed or registered. Settled paths go to
//! the scanner's path sync, the same registration path as a full scan.
//!
//! The window counts from the file's last change (its ctime, which every write, rename and
//! `touch` moves), not from when the poll noticed it: a file found two seconds after its
//! last write has already been still for two of its three seconds.

use super::scanner::SyncPaths;
use super::supervisor::{ChildGuard, StopChild};
use crate::fs::poll::Change;
use actix::prelude::*;
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;
// tokio's clock, so that the tests can run the debouncer on paused time.
use tokio::time::Instant;

/// Where settled paths go: the scanner's current instance, if one is up.
pub type SyncTarget = Box<dyn Fn() -> Option<Recipient<SyncPaths>> + Send>;

/// Paths a watcher found touched under `root`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Touched {
    pub root: String,
    pub changes: Vec<Change>,
}

/// (size, mtime ns, ctime ns, inode) of a path, or None when it is not there.
type Seen = Option<(u64, i128, i128, u64)>;

struct Held {
    deadline: Instant,
    seen: Seen,
}

/// Paths held at most; beyond it the oldest settle early (the catalog is the only memory).
const MAX_HELD: usize = 200_000;

pub struct DebounceActor {
    guard: ChildGuard,
    roots: HashMap<String, PathBuf>,
    window: Duration,
    scanner: SyncTarget,
    held: HashMap<(String, OsString), Held>,
    busy: bool,
}

/// When an existing path seen as `seen` now has been still for `window`: the rest of the
/// window since its ctime (never longer, whatever the clocks of a network filesystem say).
/// A path that is gone needs no stability: it settles now, or with the existing paths of the
/// same event batch (the other half of a rename must be registered in the same batch, so
/// that the rename is a move).
fn deadline(seen: Seen, window: Duration) -> Instant {
    let now = Instant::now();
    let Some((_, _, ctime_ns, _)) = seen else {
        return now;
    };
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0);
    let still = Duration::from_nanos((now_ns - ctime_ns).clamp(0, window.as_nanos() as i128) as u64);
    now + window.saturating_sub(still)
}

impl DebounceActor {
    pub fn new(guard: ChildGuard, roots: HashMap<String, PathBuf>, window: Duration, scanner: SyncTarget) -> Self {
        DebounceActor {
            guard,
            roots,
            window,
            scanner,
            held: HashMap::new(),
            busy: false,
        }
    }

    /// Look at the held paths whose window has passed: settled ones go to the scanner,
    /// the others wait another window.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        let now = Instant::now();
        let overflow = self.held.len() > MAX_HELD;
        let due: Vec<((String, OsString), Seen)> = self
            .held
            .iter()
            .filter(|(_, held)| overflow || held.deadline <= now)
            .map(|(key, held)| (key.clone(), held.seen))
            .collect();
        if due.is_empty() {
            return;
        }
        self.busy = true;
        let roots = self.roots.clone();
        let stat_paths: Vec<((String, OsString), Seen)> = due;
        let stats = async move {
            tokio::task::spawn_blocking(move || {
                stat_paths
                    .into_iter()
                    .map(|(key, before)| {
                        let now = roots.get(&key.0).map(|base| seen(&base.join(&key.1))).unwrap_or(None);
                        (key, before, now)
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default()
        };
        ctx.wait(stats.into_actor(self).map(|results, actor, ctx| {
            let mut settled: BTreeMap<String, Vec<OsString>> = BTreeMap::new();
            for (key, before, now) in results {
                if before == now {
                    actor.held.remove(&key);
                    settled.entry(key.0).or_default().push(key.1);
                } else if let Some(held) = actor.held.get_mut(&key) {
                    held.seen = now;
                    held.deadline = deadline(now, actor.window);
                }
            }
            let Some(scanner) = (actor.scanner)() else {
                // The scanner is restarting: its catch-up scan finds these paths anyway.
                actor.busy = false;
                return;
            };
            ctx.wait(
                async move {
                    for (root, paths) in settled {
                        let _ = scanner.send(SyncPaths { root, paths }).await;
                    }
                }
                .into_actor(actor)
                .map(|(), actor, _| actor.busy = false),
            );
        }));
    }
}

fn seen(path: &std::path::Path) -> Seen {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).ok().map(|m| {
        (
            m.size(),
            m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
            m.ino(),
        )
    })
}

impl Actor for DebounceActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(8);
        self.guard.ready();
        ctx.run_interval(Duration::from_millis(100), |actor, ctx| actor.tick(ctx));
    }
}

impl Handler<Touched> for DebounceActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, message: Touched, _ctx: &mut Context<Self>) -> Self::Result {
        let base = self.roots.get(&message.root).cloned();
        let root = message.root;
        let paths: Vec<OsString> = message
            .changes
            .iter()
            .flat_map(|change| change.paths().into_iter().cloned())
            .collect();
        // The stat at the event: the window is re-armed if it still moves at the deadline.
        let stats = async move {
            let Some(base) = base else { return Vec::new() };
            tokio::task::spawn_blocking(move || paths.into_iter().map(|p| (seen(&base.join(&p)), p)).collect())
                .await
                .unwrap_or_default()
        };
        Box::pin(
            stats
                .into_actor(self)
                .map(move |stats: Vec<(Seen, OsString)>, actor, _| {
                    let latest = stats
                        .iter()
                        .filter(|(seen, _)| seen.is_some())
                        .map(|(seen, _)| deadline(*seen, actor.window))
                        .max();
                    for (seen, path) in stats {
                        let deadline = match (seen, latest) {
                            (None, Some(latest)) => latest,
                            _ => deadline(seen, actor.window),
                        };
                        let held = actor
                            .held
                            .entry((root.clone(), path))
                            .or_insert(Held { deadline, seen });
                        held.deadline = deadline;
                        held.seen = seen;
                    }
                }),
        )
    }
}

impl Handler<StopChild> for DebounceActor {
    type Result = ();

    fn handle(&mut self, _: StopChild, ctx: &mut Context<Self>) {
        // Held paths are not lost: the next scan (or the catch-up at start) finds them.
        self.guard.stop_cleanly();
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::supervisor::{HealthBoard, Supervisor};
    use std::sync::{Arc, Mutex};

    /// Stands in for the scanner: records what settles, and when.
    struct Recorder(Arc<Mutex<Vec<(Duration, String)>>>, Instant);

    impl Actor for Recorder {
        type Context = Context<Self>;
    }

    impl Handler<SyncPaths> for Recorder {
        type Result = ();
        fn handle(&mut self, message: SyncPaths, _: &mut Context<Self>) {
            let at = self.1.elapsed();
            let mut seen = self.0.lock().unwrap();
            for path in message.paths {
                seen.push((at, path.to_string_lossy().into_owned()));
            }
        }
    }

    #[test]
    fn paths_settle_a_window_after_their_last_event_and_vanished_ones_with_their_batch() {
        let system = crate::daemon::paused_system();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), b"a").unwrap();
        std::fs::write(dir.path().join("b.txt"), b"b").unwrap();
        let settled: Arc<Mutex<Vec<(Duration, String)>>> = Arc::default();
        let window = Duration::from_secs(3);
        let base = dir.path().to_path_buf();
        let record = settled.clone();
        system.block_on(async move {
            let origin = Instant::now();
            let recorder = Recorder(record, origin).start();
            let roots: HashMap<String, PathBuf> = [("docs".to_owned(), base)].into();
            let log = slog::Logger::root(slog::Discard, slog::o!());
            let debouncer = Arc::new(Mutex::new(None));
            let slot = debouncer.clone();
            let spec = crate::daemon::supervisor::ChildSpec {
                name: "debouncer".into(),
                stop_order: 0,
                factory: Box::new(move |guard| {
                    let recipient = recorder.clone().recipient();
                    let target: SyncTarget = Box::new(move || Some(recipient.clone()));
                    let address = DebounceActor::new(guard, roots.clone(), window, target).start();
                    *slot.lock().unwrap() = Some(address.clone());
                    address.recipient()
                }),
            };
            Supervisor::new(vec![spec], HealthBoard::default(), Duration::from_secs(600), log).start();
            tokio::time::sleep(Duration::from_millis(50)).await;
            let debouncer = debouncer.lock().unwrap().clone().unwrap();
            let touch = |changes: Vec<Change>| Touched {
                root: "docs".into(),
                changes,
            };
            // a.txt at 0 s, again at 2 s (re-armed); b.txt at 1 s; c.txt, gone, with b.
            debouncer
                .send(touch(vec![Change::Created("a.txt".into())]))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
            debouncer
                .send(touch(vec![
                    Change::Modified("b.txt".into()),
                    Change::Removed("c.txt".into()),
                ]))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
            debouncer
                .send(touch(vec![Change::Modified("a.txt".into())]))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_secs(10)).await;
        });
        let settled = settled.lock().unwrap().clone();
        let paths: Vec<&str> = settled.iter().map(|(_, path)| path.as_str()).collect();
        assert_eq!(paths.len(), 3, "each path settles once: {settled:?}");
        let at = |name: &str| settled.iter().find(|(_, path)| path == name).unwrap().0;
        // The window counts from each path's last event (the files' ctimes are older than
        // the paused clock can tell, so the full window applies).
        let (a, b, c) = (at("a.txt"), at("b.txt"), at("c.txt"));
        // (Less the few real milliseconds since the files were written.)
        assert!(
            b >= Duration::from_millis(3800) && b < Duration::from_secs(5),
            "b: {b:?}"
        );
        assert!(
            a >= Duration::from_millis(4800) && a < Duration::from_secs(6),
            "a: {a:?}"
        );
        assert_eq!(c, b, "a vanished path settles with the existing paths of its batch");
    }
}

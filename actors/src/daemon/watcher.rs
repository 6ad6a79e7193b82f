//! WatcherActor: finds changed paths under every root, by polling (our own poller, for SMB
//! and NFS mounts and Synology Docker volumes, where inotify sees nothing) or by native events
//! (notify-debouncer-full over inotify), per root; `auto` picks native on local filesystems
//! and polling on network ones. The blocking work runs on threads of its own; what they find
//! crosses into the actor over a bounded crossbeam channel (a flood slows the producer) and
//! goes on to the DebounceActor. A root that looks unmounted produces no changes: the
//! watcher reports it unavailable (log, `/healthz`, `status`) and resumes when it is back.

use super::debouncer::{DebounceActor, Touched};
use super::supervisor::{ChildGuard, StopChild};
use super::Slot;
use crate::fs::poll::{Change, PollOutcome, Poller};
use crate::fs::IgnoreMatcher;
use crate::scan::RootSpec;
use actix::prelude::*;
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use notify_debouncer_full::notify::event::{EventKind, ModifyKind, RenameMode};
use notify_debouncer_full::notify::RecursiveMode;
use slog::{info, warn, Logger};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchMode {
    Poll,
    Native,
    Auto,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchSettings {
    pub mode: WatchMode,
    pub poll_interval: Duration,
    pub debounce: Duration,
}

/// A recursive inotify watch of one root.
type NativeWatch = notify_debouncer_full::Debouncer<
    notify_debouncer_full::notify::RecommendedWatcher,
    notify_debouncer_full::RecommendedCache,
>;

/// Roots that look unmounted, with the reason; shown by `/healthz` and `status`.
pub type UnavailableRoots = Arc<Mutex<BTreeMap<String, String>>>;

enum Found {
    Changes(String, Vec<Change>),
    Unavailable(String, String),
    Available(String),
}

/// Messages from the watch threads waiting for the actor.
const CHANNEL: usize = 256;
/// Changes forwarded per batch.
const BATCH: usize = 2_000;

pub struct WatcherActor {
    guard: ChildGuard,
    roots: Vec<RootSpec>,
    ignore: IgnoreMatcher,
    settings: WatchSettings,
    debouncer: Slot<DebounceActor>,
    unavailable: UnavailableRoots,
    found: Option<Receiver<Found>>,
    stop: Arc<AtomicBool>,
    native: Vec<NativeWatch>,
    forwarding: bool,
    log: Logger,
}

impl WatcherActor {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        guard: ChildGuard,
        roots: Vec<RootSpec>,
        ignore: IgnoreMatcher,
        settings: WatchSettings,
        debouncer: Slot<DebounceActor>,
        unavailable: UnavailableRoots,
        log: Logger,
    ) -> WatcherActor {
        WatcherActor {
            guard,
            roots,
            ignore,
            settings,
            debouncer,
            unavailable,
            found: None,
            stop: Arc::new(AtomicBool::new(false)),
            native: Vec::new(),
            forwarding: false,
            log,
        }
    }

    fn start_root(&mut self, root: &RootSpec, sender: Sender<Found>) -> Result<&'static str, String> {
        let native = match self.settings.mode {
            WatchMode::Poll => false,
            WatchMode::Native => true,
            WatchMode::Auto => !is_network_filesystem(&root.path),
        };
        if native {
            match watch_native(root, self.ignore.clone(), sender.clone()) {
                Ok(watcher) => {
                    self.native.push(watcher);
                    return Ok("native");
                }
                Err(error) if self.settings.mode == WatchMode::Native => return Err(error),
                Err(error) => {
                    warn!(self.log, "native events unavailable; polling instead"; "root" => &root.label, "error" => error);
                }
            }
        }
        let mut poller = Poller::new(&root.path, self.ignore.clone(), self.settings.poll_interval);
        let (label, interval, stop) = (root.label.clone(), self.settings.poll_interval, self.stop.clone());
        std::thread::Builder::new()
            .name(format!("poll-{label}"))
            .spawn(move || {
                let mut available = true;
                while !stop.load(Ordering::Relaxed) {
                    let found = match poller.poll() {
                        PollOutcome::Changes(changes) if !available => {
                            available = true;
                            let _ = sender.send(Found::Available(label.clone()));
                            Some(Found::Changes(label.clone(), changes))
                        }
                        PollOutcome::Changes(changes) if changes.is_empty() => None,
                        PollOutcome::Changes(changes) => Some(Found::Changes(label.clone(), changes)),
                        PollOutcome::Unavailable(reason) => {
                            let first = available;
                            available = false;
                            first.then(|| Found::Unavailable(label.clone(), reason))
                        }
                    };
                    // Blocks while the actor is behind: the poll waits, memory does not grow.
                    if let Some(found) = found {
                        if sender.send(found).is_err() {
                            return;
                        }
                    }
                    std::thread::sleep(interval);
                }
            })
            .map_err(|error| error.to_string())?;
        Ok("poll")
    }

    /// Forward what the threads found to the debouncer, one batch at a time.
    fn forward(&mut self, ctx: &mut Context<Self>) {
        if self.forwarding {
            return;
        }
        let Some(found) = &self.found else { return };
        let mut batches: BTreeMap<String, Vec<Change>> = BTreeMap::new();
        let mut count = 0;
        while count < BATCH {
            match found.try_recv() {
                Ok(Found::Changes(root, changes)) => {
                    count += changes.len();
                    batches.entry(root).or_default().extend(changes);
                }
                Ok(Found::Unavailable(root, reason)) => {
                    warn!(self.log, "root unavailable"; "root" => &root, "reason" => &reason,
                        "detail" => "no change is reported while it looks unmounted; nothing is deleted");
                    self.unavailable
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(root, reason);
                }
                Ok(Found::Available(root)) => {
                    info!(self.log, "root available again"; "root" => &root);
                    self.unavailable.lock().unwrap_or_else(|e| e.into_inner()).remove(&root);
                }
                Err(_) => break,
            }
        }
        if batches.is_empty() || crate::hooks::watch_delivery_disabled() {
            return;
        }
        let Some(debouncer) = self.debouncer.get() else {
            // Restarting: the changes are lost here, and found by the next scan.
            return;
        };
        self.forwarding = true;
        ctx.wait(
            async move {
                for (root, changes) in batches {
                    let _ = debouncer.send(Touched { root, changes }).await;
                }
            }
            .into_actor(self)
            .map(|(), actor, _| actor.forwarding = false),
        );
    }
}

impl Actor for WatcherActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let (sender, receiver) = bounded::<Found>(CHANNEL);
        self.found = Some(receiver);
        for root in self.roots.clone() {
            match self.start_root(&root, sender.clone()) {
                Ok(how) => info!(self.log, "watching"; "root" => &root.label, "mode" => how,
                    "poll_interval_ms" => self.settings.poll_interval.as_millis() as u64,
                    "debounce_ms" => self.settings.debounce.as_millis() as u64),
                Err(error) => {
                    self.guard.fail(format!("cannot watch {}: {error}", root.label));
                    ctx.stop();
                    return;
                }
            }
        }
        self.guard.ready();
        ctx.run_interval(Duration::from_millis(100), |actor, ctx| actor.forward(ctx));
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.stop.store(true, Ordering::SeqCst);
        self.native.clear();
    }
}

impl Handler<StopChild> for WatcherActor {
    type Result = ();

    fn handle(&mut self, _: StopChild, ctx: &mut Context<Self>) {
        self.guard.stop_cleanly();
        ctx.stop();
    }
}

/// NFS, SMB/CIFS, FUSE (sshfs and the like): inotify sees no change made elsewhere.
fn is_network_filesystem(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return true;
    };
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c_path.as_ptr(), &mut stat) } != 0 {
        return true;
    }
    const NETWORK: [i64; 6] = [0x6969, 0xFF53_4D42, 0xFE53_4D42, 0x517B, 0x6573_5546, 0x0102_1997];
    NETWORK.contains(&(stat.f_type as i64))
}

fn watch_native(root: &RootSpec, ignore: IgnoreMatcher, sender: Sender<Found>) -> Result<NativeWatch, String> {
    let base = root.path.clone();
    let label = root.label.clone();
    let mut debouncer = notify_debouncer_full::new_debouncer(
        Duration::from_millis(100),
        None,
        move |result: notify_debouncer_full::DebounceEventResult| {
            let Ok(events) = result else { return };
            let mut changes = Vec::new();
            for event in events {
                let relative: Vec<PathBuf> = event
                    .paths
                    .iter()
                    .filter_map(|p| p.strip_prefix(&base).ok().map(Path::to_path_buf))
                    .filter(|p| !p.as_os_str().is_empty() && !ignore.is_ignored_path(p))
                    .collect();
                match event.kind {
                    EventKind::Modify(ModifyKind::Name(RenameMode::Both)) if relative.len() == 2 => {
                        expand_move(&base, &relative[0], &relative[1], &mut changes);
                    }
                    EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(RenameMode::To)) => {
                        for path in relative {
                            expand_created(&base, &path, &ignore, &mut changes);
                        }
                    }
                    EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_)) => {
                        changes.extend(relative.into_iter().map(|p| Change::Removed(p.into_os_string())));
                    }
                    EventKind::Modify(_) => {
                        changes.extend(relative.into_iter().map(|p| Change::Modified(p.into_os_string())));
                    }
                    _ => {}
                }
            }
            if !changes.is_empty() {
                // Full: the actor is far behind; block this callback thread (backpressure).
                if let Err(TrySendError::Full(found)) = sender.try_send(Found::Changes(label.clone(), changes)) {
                    let _ = sender.send(found);
                }
            }
        },
    )
    .map_err(|error| error.to_string())?;
    debouncer
        .watch(&root.path, RecursiveMode::Recursive)
        .map_err(|error| error.to_string())?;
    Ok(debouncer)
}

/// A created path: a file, or a folder whose files are all new.
fn expand_created(base: &Path, relative: &Path, ignore: &IgnoreMatcher, changes: &mut Vec<Change>) {
    let absolute = base.join(relative);
    match std::fs::symlink_metadata(&absolute) {
        Ok(metadata) if metadata.is_dir() => {
            let outcome = crate::fs::walk_root(&absolute, ignore, &|_| {});
            for file in outcome.files {
                changes.push(Change::Created(relative.join(&file.relative).into_os_string()));
            }
        }
        _ => changes.push(Change::Created(relative.as_os_str().to_owned())),
    }
}

/// A rename: of a file, or of a folder (every file under it moves).
fn expand_move(base: &Path, from: &Path, to: &Path, changes: &mut Vec<Change>) {
    let absolute = base.join(to);
    match std::fs::symlink_metadata(&absolute) {
        Ok(metadata) if metadata.is_dir() => {
            let matcher = IgnoreMatcher::new::<&str>(&[]).expect("no patterns");
            let outcome = crate::fs::walk_root(&absolute, &matcher, &|_| {});
            for file in outcome.files {
                changes.push(Change::Moved {
                    from: from.join(&file.relative).into_os_string(),
                    to: to.join(&file.relative).into_os_string(),
                });
            }
            // Rows under the old folder that are not on disk any more go too.
            changes.push(Change::Removed(OsString::from(from)));
        }
        _ => changes.push(Change::Moved {
            from: from.as_os_str().to_owned(),
            to: to.as_os_str().to_owned(),
        }),
    }
}

//! The Supervisor: starts every other actor from its factory, restarts any that fails —
//! an error, a lost connection, a panic in a handler or in its hashing thread — with capped
//! exponential backoff, and keeps a restart count per actor. The others keep running.
//!
//! actix's own `Supervisor` restarts only actors that stop, not those that panic: a panic
//! in a handler unwinds out of the actor's task and actix drops the actor. So every child
//! carries a [`ChildGuard`]; whatever ends the actor (a clean stop, a failure it reports, a
//! panic) drops the guard, and the guard tells the Supervisor how the child ended. A panic
//! hook records the message so that the restart event says what happened.

use actix::prelude::*;
use serde::Serialize;
use slog::{error, info, warn, Logger};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
// tokio's clock, so that tests can run the supervisor on paused time.
use tokio::time::Instant;

/// First restart delay; doubled on each failure in a row, capped at `BACKOFF_MAX`.
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(500);
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A child that ran this long before failing starts again from `BACKOFF_INITIAL`.
pub const QUIET_PERIOD: Duration = Duration::from_secs(60);

/// The delay before the next start of a child that just failed.
pub fn next_backoff(previous: Option<Duration>, ran_for: Duration) -> Duration {
    match previous {
        Some(previous) if ran_for < QUIET_PERIOD => (previous * 2).min(BACKOFF_MAX),
        _ => BACKOFF_INITIAL,
    }
}

// ---- panics -------------------------------------------------------------------------------

fn panics() -> &'static Mutex<HashMap<String, String>> {
    static PANICS: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    PANICS.get_or_init(Default::default)
}

fn thread_key() -> String {
    let thread = std::thread::current();
    match thread.name() {
        Some(name) => name.to_owned(),
        None => format!("{:?}", thread.id()),
    }
}

/// Log every panic as one event and remember its message per thread, for the restart event.
pub fn install_panic_hook(log: Logger) {
    std::panic::set_hook(Box::new(move |info| {
        let message = match (
            info.payload().downcast_ref::<&str>(),
            info.payload().downcast_ref::<String>(),
        ) {
            (Some(text), _) => (*text).to_owned(),
            (_, Some(text)) => text.clone(),
            _ => "panic".to_owned(),
        };
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = thread_key();
        error!(log, "panic"; "thread" => &thread, "message" => &message, "location" => location);
        panics()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(thread, message);
    }));
}

/// The message of the last panic on `thread` (this thread if None), consumed.
pub fn take_panic(thread: Option<&str>) -> Option<String> {
    let key = thread.map(str::to_owned).unwrap_or_else(thread_key);
    panics().lock().unwrap_or_else(|e| e.into_inner()).remove(&key)
}

// ---- liveness -----------------------------------------------------------------------------

/// What a child tells the Supervisor of its work, cheaply and from any thread: how many
/// pieces of work it holds, and a counter that moves whenever it gets on with them (a batch
/// written, a buffer hashed, a part sent). One per child, kept across its restarts.
#[derive(Debug, Default)]
pub struct Liveness {
    work: AtomicU64,
    progress: AtomicU64,
}

impl Liveness {
    /// A piece of work taken on.
    pub fn begin(&self) {
        self.work.fetch_add(1, Ordering::Relaxed);
    }

    /// A piece of work done (which is progress).
    pub fn end(&self) {
        let _ = self.work.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |work| {
            Some(work.saturating_sub(1))
        });
        self.step();
    }

    /// How much work is held now (for a child that counts it as a whole).
    pub fn set_work(&self, work: u64) {
        self.work.store(work, Ordering::Relaxed);
    }

    /// Some progress on the work held.
    pub fn step(&self) {
        self.progress.fetch_add(1, Ordering::Relaxed);
    }

    /// (work held, progress so far).
    pub fn read(&self) -> (u64, u64) {
        (self.work.load(Ordering::Relaxed), self.progress.load(Ordering::Relaxed))
    }
}

/// The watchdog's view of one child: when its progress counter last moved or its work was
/// none. A child stalls when it holds work and the counter has not moved for the bound.
#[derive(Clone, Copy, Debug)]
pub struct Watch {
    progress: u64,
    since: Instant,
}

impl Watch {
    pub fn new(now: Instant) -> Watch {
        Watch {
            progress: 0,
            since: now,
        }
    }

    /// Look at the child's (work, progress) at `now`; Some(how long without progress) once
    /// that reaches `bound` with work held.
    pub fn check(&mut self, (work, progress): (u64, u64), now: Instant, bound: Duration) -> Option<Duration> {
        if work == 0 || progress != self.progress {
            self.progress = progress;
            self.since = now;
            return None;
        }
        let idle = now.saturating_duration_since(self.since);
        (idle >= bound).then_some(idle)
    }
}

// ---- messages -----------------------------------------------------------------------------

/// Sent by a child's guard when the child has ended. `failure` is None for a stop the
/// Supervisor asked for.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ChildExited {
    pub name: String,
    pub generation: u64,
    pub failure: Option<String>,
}

/// A child finished starting (connected, thread up) and is doing its work.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ChildReady {
    pub name: String,
    pub generation: u64,
}

/// Asks a child to stop cleanly: finish or give back what it holds.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopChild;

/// Start a new child (a hasher added by a larger `hash.workers`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct AddChild(pub ChildSpec);

/// Stop a child cleanly and forget it (a hasher removed by a smaller `hash.workers`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RemoveChild(pub String);

/// Stop a child cleanly and start a fresh instance at once (its settings changed: a new
/// database URL, new store credentials). Not counted as a failure.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RestartChild {
    pub name: String,
    pub reason: String,
}

/// A new `daemon.stall_timeout` (a configuration reload).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetStallTimeout(pub Duration);

/// Stop every child in order, then the actix system.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown {
    pub reason: String,
}

// ---- the guard ----------------------------------------------------------------------------

/// Carried by every child actor; dropping it reports how the child ended.
pub struct ChildGuard {
    name: String,
    generation: u64,
    supervisor: Addr<Supervisor>,
    liveness: Arc<Liveness>,
    failure: Option<String>,
    clean: bool,
}

impl ChildGuard {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Where this child reports its work and progress to the stall watchdog.
    pub fn liveness(&self) -> Arc<Liveness> {
        self.liveness.clone()
    }

    /// The child is up and working.
    pub fn ready(&self) {
        self.supervisor.do_send(ChildReady {
            name: self.name.clone(),
            generation: self.generation,
        });
    }

    /// The child is about to stop because of `reason`; it will be restarted.
    pub fn fail(&mut self, reason: impl Into<String>) {
        self.failure.get_or_insert_with(|| reason.into());
    }

    /// The child is stopping because it was asked to.
    pub fn stop_cleanly(&mut self) {
        self.clean = true;
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let failure = match (self.failure.take(), take_panic(None)) {
            (Some(reason), _) => Some(reason),
            (None, Some(panic)) => Some(format!("panic: {panic}")),
            (None, None) if self.clean => None,
            (None, None) => Some("stopped unexpectedly".to_owned()),
        };
        // The supervisor lives as long as the system; a send can only fail at its very end.
        self.supervisor.do_send(ChildExited {
            name: self.name.clone(),
            generation: self.generation,
            failure,
        });
    }
}

// ---- children and their state -------------------------------------------------------------

/// Starts one instance of a child (in whatever arbiter it belongs to) and returns where to
/// send its stop request.
pub type Factory = Box<dyn FnMut(ChildGuard) -> Recipient<StopChild> + Send>;

pub struct ChildSpec {
    pub name: String,
    /// Children stop in ascending order at shutdown (producers before consumers).
    pub stop_order: u8,
    pub factory: Factory,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorState {
    Starting,
    Running,
    /// Failed; waiting out its backoff before the next start.
    Restarting,
    Stopped,
}

/// What `/healthz`, `/metrics` and `status` show of one actor.
#[derive(Clone, Debug, Serialize)]
pub struct ActorHealth {
    pub actor: String,
    pub state: ActorState,
    pub restarts: u64,
    /// Why it last failed.
    pub reason: Option<String>,
}

/// Shared with the HTTP endpoint and the heartbeat.
pub type HealthBoard = Arc<Mutex<BTreeMap<String, ActorHealth>>>;

struct Child {
    spec: ChildSpec,
    generation: u64,
    state: ActorState,
    restarts: u64,
    backoff: Option<Duration>,
    started_at: Instant,
    reason: Option<String>,
    stop: Option<Recipient<StopChild>>,
    /// Set by `RestartChild` / `RemoveChild`: what to do once the child has stopped.
    after_stop: AfterStop,
    liveness: Arc<Liveness>,
    watch: Watch,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum AfterStop {
    Restart(String),
    Remove,
    Nothing,
}

// ---- the supervisor -----------------------------------------------------------------------

pub struct Supervisor {
    children: BTreeMap<String, Child>,
    pending: Vec<ChildSpec>,
    board: HealthBoard,
    shutting_down: bool,
    /// A child holding work whose progress has not moved for this long is restarted.
    stall_after: Duration,
    log: Logger,
}

fn seconds(duration: Duration) -> String {
    format!("{}s", duration.as_secs_f64())
}

/// The stall watchdog looks this often at most (and at a quarter of the bound if shorter).
const WATCHDOG_TICK: Duration = Duration::from_secs(5);

impl Supervisor {
    pub fn new(children: Vec<ChildSpec>, board: HealthBoard, stall_after: Duration, log: Logger) -> Supervisor {
        Supervisor {
            children: BTreeMap::new(),
            pending: children,
            board,
            shutting_down: false,
            stall_after,
            log,
        }
    }

    /// Restart every running child that holds work and has made no progress within the
    /// bound. Its instance is asked to stop (giving back what it holds) and a new one starts.
    fn watchdog(&mut self, now: Instant, ctx: &mut Context<Self>) {
        if self.shutting_down {
            return;
        }
        let bound = self.stall_after;
        let mut stalled = Vec::new();
        let mut wedged = Vec::new();
        for (name, child) in &mut self.children {
            if child.state != ActorState::Running {
                continue;
            }
            if child.after_stop != AfterStop::Nothing {
                // Asked to stop and still not gone after another bound: start a new instance
                // anyway (the old one's exit, should it come, is ignored by its generation).
                if matches!(child.after_stop, AfterStop::Restart(_))
                    && now.saturating_duration_since(child.watch.since) >= bound
                {
                    wedged.push(name.clone());
                }
                continue;
            }
            if let Some(idle) = child.watch.check(child.liveness.read(), now, bound) {
                stalled.push((name.clone(), idle, child.liveness.read().0));
            }
        }
        for (name, idle, work) in stalled {
            let reason = format!(
                "stalled: {work} piece(s) of work held and no progress for {}s (daemon.stall_timeout {})",
                idle.as_secs(),
                seconds(bound)
            );
            if let Some(child) = self.children.get_mut(&name) {
                child.restarts += 1;
                child.reason = Some(reason.clone());
                child.watch = Watch::new(now);
            }
            warn!(self.log, "actor stalled"; "actor" => &name, "reason" => &reason);
            self.publish(&name);
            self.request_stop(&name, AfterStop::Restart(reason));
        }
        for name in wedged {
            error!(self.log, "actor did not stop; a new instance takes over"; "actor" => &name,
                "waited" => seconds(bound));
            if let Some(child) = self.children.get_mut(&name) {
                child.after_stop = AfterStop::Nothing;
            }
            self.start_child(&name, ctx);
        }
    }

    fn insert_child(&mut self, spec: ChildSpec, reason: &str, ctx: &mut Context<Self>) {
        let name = spec.name.clone();
        self.children.insert(
            name.clone(),
            Child {
                spec,
                generation: 0,
                state: ActorState::Starting,
                restarts: 0,
                backoff: None,
                started_at: Instant::now(),
                reason: None,
                stop: None,
                after_stop: AfterStop::Nothing,
                liveness: Arc::default(),
                watch: Watch::new(Instant::now()),
            },
        );
        info!(self.log, "actor started"; "actor" => &name, "reason" => reason,
            "restart_count" => 0u64, "backoff_ms" => 0u64);
        self.start_child(&name, ctx);
    }

    /// Ask a running child to stop, remembering what to do next.
    fn request_stop(&mut self, name: &str, then: AfterStop) {
        let Some(child) = self.children.get_mut(name) else {
            return;
        };
        match (&child.stop, child.state) {
            (Some(stop), ActorState::Starting | ActorState::Running) => {
                child.after_stop = then;
                stop.do_send(StopChild);
            }
            // Waiting out a backoff: its next start reads the new settings anyway.
            _ if then == AfterStop::Remove => {
                self.children.remove(name);
                self.board.lock().unwrap_or_else(|e| e.into_inner()).remove(name);
            }
            _ => {}
        }
    }

    fn start_child(&mut self, name: &str, ctx: &mut Context<Self>) {
        let supervisor = ctx.address();
        let Some(child) = self.children.get_mut(name) else {
            return;
        };
        child.generation += 1;
        child.state = ActorState::Starting;
        child.started_at = Instant::now();
        // A new instance holds no work yet; the watch starts again.
        child.liveness.set_work(0);
        child.watch = Watch::new(child.started_at);
        let guard = ChildGuard {
            name: name.to_owned(),
            generation: child.generation,
            supervisor,
            liveness: child.liveness.clone(),
            failure: None,
            clean: false,
        };
        child.stop = Some((child.spec.factory)(guard));
        self.publish(name);
    }

    fn publish(&self, name: &str) {
        let Some(child) = self.children.get(name) else { return };
        let mut board = self.board.lock().unwrap_or_else(|e| e.into_inner());
        board.insert(
            name.to_owned(),
            ActorHealth {
                actor: name.to_owned(),
                state: child.state,
                restarts: child.restarts,
                reason: child.reason.clone(),
            },
        );
    }

    fn all_stopped(&self) -> bool {
        self.children.values().all(|child| child.state == ActorState::Stopped)
    }

    /// Ask the children of the lowest stop order still running to stop; the next group
    /// follows when these have exited.
    fn stop_next_group(&mut self) {
        let running = |child: &&Child| child.state != ActorState::Stopped;
        let Some(order) = self.children.values().filter(running).map(|c| c.spec.stop_order).min() else {
            System::current().stop();
            return;
        };
        for child in self.children.values_mut().filter(|c| c.state != ActorState::Stopped) {
            if child.spec.stop_order != order {
                continue;
            }
            match (&child.stop, child.state) {
                (Some(stop), ActorState::Starting | ActorState::Running) => stop.do_send(StopChild),
                // Waiting out a backoff: nothing runs, so it is stopped already.
                _ => child.state = ActorState::Stopped,
            }
        }
        if self
            .children
            .values()
            .filter(|c| c.spec.stop_order == order)
            .all(|c| c.state == ActorState::Stopped)
        {
            self.stop_next_group();
        }
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        for spec in std::mem::take(&mut self.pending) {
            self.insert_child(spec, "daemon start", ctx);
        }
        let tick = (self.stall_after / 4).clamp(Duration::from_millis(100), WATCHDOG_TICK);
        ctx.run_interval(tick, |supervisor, ctx| supervisor.watchdog(Instant::now(), ctx));
    }
}

impl Handler<ChildReady> for Supervisor {
    type Result = ();

    fn handle(&mut self, message: ChildReady, _ctx: &mut Context<Self>) {
        let Some(child) = self.children.get_mut(&message.name) else {
            return;
        };
        if child.generation == message.generation && child.state == ActorState::Starting {
            child.state = ActorState::Running;
            self.publish(&message.name);
        }
    }
}

impl Handler<ChildExited> for Supervisor {
    type Result = ();

    fn handle(&mut self, message: ChildExited, ctx: &mut Context<Self>) {
        let shutting_down = self.shutting_down;
        let Some(child) = self.children.get_mut(&message.name) else {
            return;
        };
        if child.generation != message.generation {
            return;
        }
        child.stop = None;
        let after_stop = std::mem::replace(&mut child.after_stop, AfterStop::Nothing);
        if !shutting_down && message.failure.is_none() {
            match after_stop {
                AfterStop::Restart(reason) => {
                    let restarts = child.restarts;
                    info!(self.log, "actor restarted"; "actor" => &message.name, "reason" => &reason,
                        "restart_count" => restarts, "backoff_ms" => 0u64);
                    self.start_child(&message.name, ctx);
                    return;
                }
                AfterStop::Remove => {
                    info!(self.log, "actor stopped"; "actor" => &message.name, "reason" => "removed by a configuration change",
                        "restart_count" => child.restarts, "backoff_ms" => 0u64);
                    self.children.remove(&message.name);
                    self.board
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&message.name);
                    return;
                }
                AfterStop::Nothing => {}
            }
        }
        if shutting_down {
            child.state = ActorState::Stopped;
            info!(self.log, "actor stopped"; "actor" => &message.name,
                "reason" => message.failure.as_deref().unwrap_or("shutdown"),
                "restart_count" => child.restarts, "backoff_ms" => 0u64);
            self.publish(&message.name);
            if self.all_stopped() {
                System::current().stop();
            } else {
                self.stop_next_group();
            }
            return;
        }
        let reason = message
            .failure
            .unwrap_or_else(|| "stopped without being asked to".to_owned());
        let backoff = next_backoff(child.backoff, child.started_at.elapsed());
        child.backoff = Some(backoff);
        child.restarts += 1;
        child.state = ActorState::Restarting;
        child.reason = Some(reason.clone());
        let restarts = child.restarts;
        warn!(self.log, "actor stopped"; "actor" => &message.name, "reason" => &reason,
            "restart_count" => restarts, "backoff_ms" => backoff.as_millis() as u64);
        self.publish(&message.name);
        let name = message.name;
        ctx.run_later(backoff, move |supervisor, ctx| {
            if supervisor.shutting_down {
                return;
            }
            warn!(supervisor.log, "actor restarted"; "actor" => &name, "reason" => &reason,
                "restart_count" => restarts, "backoff_ms" => backoff.as_millis() as u64);
            supervisor.start_child(&name, ctx);
        });
    }
}

impl Handler<AddChild> for Supervisor {
    type Result = ();

    fn handle(&mut self, message: AddChild, ctx: &mut Context<Self>) {
        if !self.shutting_down && !self.children.contains_key(&message.0.name) {
            self.insert_child(message.0, "configuration changed: hash.workers", ctx);
        }
    }
}

impl Handler<RemoveChild> for Supervisor {
    type Result = ();

    fn handle(&mut self, message: RemoveChild, _ctx: &mut Context<Self>) {
        if !self.shutting_down {
            self.request_stop(&message.0, AfterStop::Remove);
        }
    }
}

impl Handler<RestartChild> for Supervisor {
    type Result = ();

    fn handle(&mut self, message: RestartChild, _ctx: &mut Context<Self>) {
        if !self.shutting_down {
            self.request_stop(&message.name, AfterStop::Restart(message.reason));
        }
    }
}

impl Handler<SetStallTimeout> for Supervisor {
    type Result = ();

    fn handle(&mut self, message: SetStallTimeout, _ctx: &mut Context<Self>) {
        self.stall_after = message.0;
    }
}

impl Handler<Shutdown> for Supervisor {
    type Result = ();

    fn handle(&mut self, message: Shutdown, _ctx: &mut Context<Self>) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        info!(self.log, "shutting down"; "reason" => message.reason);
        self.stop_next_group();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// What a test child does when it starts.
    #[derive(Clone, Copy, PartialEq)]
    enum Behaviour {
        /// Ready, then fails at once.
        Fail,
        /// Ready, holds one piece of work and never gets on with it; stops when asked.
        Hang,
        /// Like `Hang`, but ignores the request to stop too.
        Wedged,
        /// Ready, holds work and makes progress every second.
        Busy,
    }

    struct TestChild {
        guard: ChildGuard,
        behaviour: Behaviour,
    }

    impl Actor for TestChild {
        type Context = Context<Self>;

        fn started(&mut self, ctx: &mut Context<Self>) {
            self.guard.ready();
            match self.behaviour {
                Behaviour::Fail => {
                    self.guard.fail("test failure");
                    ctx.stop();
                }
                Behaviour::Hang | Behaviour::Wedged => self.guard.liveness().begin(),
                Behaviour::Busy => {
                    self.guard.liveness().begin();
                    ctx.run_interval(Duration::from_secs(1), |child, _| child.guard.liveness().step());
                }
            }
        }
    }

    impl Handler<StopChild> for TestChild {
        type Result = ();

        fn handle(&mut self, _: StopChild, ctx: &mut Context<Self>) {
            if self.behaviour != Behaviour::Wedged {
                self.guard.stop_cleanly();
                ctx.stop();
            }
        }
    }

    fn child(name: &str, behaviour: Behaviour, starts: Arc<Mutex<Vec<Instant>>>) -> ChildSpec {
        ChildSpec {
            name: name.into(),
            stop_order: 0,
            factory: Box::new(move |guard| {
                starts.lock().unwrap().push(Instant::now());
                TestChild { guard, behaviour }.start().recipient()
            }),
        }
    }

    fn board_entry(board: &HealthBoard, name: &str) -> ActorHealth {
        board
            .lock()
            .unwrap()
            .get(name)
            .cloned()
            .expect("the child is on the board")
    }

    /// Start a supervisor with one child of `behaviour`, let `run_for` of paused time pass,
    /// and return the child's start times (from the supervisor's start) and its board entry.
    fn supervise(behaviour: Behaviour, stall_after: Duration, run_for: Duration) -> (Vec<Duration>, ActorHealth) {
        let system = crate::daemon::paused_system();
        let starts = Arc::new(Mutex::new(Vec::new()));
        let board = HealthBoard::default();
        let log = Logger::root(slog::Discard, slog::o!());
        let origin = system.block_on(async {
            let origin = Instant::now();
            let spec = child("probe", behaviour, starts.clone());
            Supervisor::new(vec![spec], board.clone(), stall_after, log).start();
            tokio::time::sleep(run_for).await;
            origin
        });
        let starts = starts.lock().unwrap().iter().map(|start| *start - origin).collect();
        (starts, board_entry(&board, "probe"))
    }

    #[test]
    fn a_failing_child_is_restarted_with_doubling_backoff() {
        let (starts, health) = supervise(Behaviour::Fail, Duration::from_secs(600), Duration::from_secs(20));
        let seconds: Vec<f64> = starts.iter().map(|start| start.as_secs_f64()).collect();
        // Started at 0, then after 0.5, 1, 2, 4, 8 s of backoff: 0, 0.5, 1.5, 3.5, 7.5, 15.5.
        assert_eq!(seconds, [0.0, 0.5, 1.5, 3.5, 7.5, 15.5], "{seconds:?}");
        assert_eq!(health.restarts, 6, "each start failed, the last one too");
        assert_eq!(health.reason.as_deref(), Some("test failure"));
    }

    #[test]
    fn a_child_that_holds_work_without_progress_is_restarted_as_stalled_within_the_bound() {
        let bound = Duration::from_secs(60);
        let (starts, health) = supervise(Behaviour::Hang, bound, Duration::from_secs(100));
        // The watchdog looks every 5 s: the stall is seen between 60 and 65 s.
        assert_eq!(starts.len(), 2, "{starts:?}");
        assert!(starts[1] >= bound && starts[1] <= bound + WATCHDOG_TICK, "{starts:?}");
        assert_eq!(health.restarts, 1);
        let reason = health.reason.unwrap();
        assert!(
            reason.starts_with("stalled: 1 piece(s) of work held and no progress for 6"),
            "{reason}"
        );
        assert!(reason.contains("daemon.stall_timeout 60s"), "{reason}");
        assert_eq!(health.state, ActorState::Running);
    }

    #[test]
    fn a_child_that_makes_progress_or_holds_no_work_is_left_alone() {
        let (starts, health) = supervise(Behaviour::Busy, Duration::from_secs(10), Duration::from_secs(120));
        assert_eq!((starts.len(), health.restarts), (1, 0));
        let system = crate::daemon::paused_system();
        let starts = Arc::new(Mutex::new(Vec::new()));
        let board = HealthBoard::default();
        system.block_on(async {
            // Idle: no work, so no progress is expected of it.
            let idle = ChildSpec {
                name: "idle".into(),
                stop_order: 0,
                factory: Box::new({
                    let starts = starts.clone();
                    move |guard| {
                        starts.lock().unwrap().push(Instant::now());
                        TestChild {
                            guard,
                            behaviour: Behaviour::Busy,
                        }
                        .start()
                        .recipient()
                    }
                }),
            };
            let log = Logger::root(slog::Discard, slog::o!());
            Supervisor::new(vec![idle], board.clone(), Duration::from_secs(10), log).start();
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        assert_eq!(board_entry(&board, "idle").restarts, 0);
        let work = Liveness::default();
        let mut watch = Watch::new(Instant::now());
        let later = Instant::now() + Duration::from_secs(3600);
        assert_eq!(
            watch.check(work.read(), later, Duration::from_secs(10)),
            None,
            "no work held"
        );
    }

    #[test]
    fn a_stalled_child_that_does_not_stop_is_replaced_after_another_bound() {
        let bound = Duration::from_secs(30);
        let (starts, health) = supervise(Behaviour::Wedged, bound, Duration::from_secs(80));
        // Stalled at 30-35 s, asked to stop; still there a bound later (60-70 s): replaced.
        assert_eq!(starts.len(), 2, "{starts:?}");
        assert!(
            starts[1] >= 2 * bound && starts[1] <= 2 * bound + 2 * WATCHDOG_TICK,
            "{starts:?}"
        );
        assert_eq!(health.restarts, 1);
    }

    #[test]
    fn shutdown_stops_children_in_their_order_and_ends_the_system() {
        let system = crate::daemon::paused_system();
        let order = Arc::new(Mutex::new(Vec::new()));
        let stopped = Arc::new(AtomicBool::new(false));
        struct Ordered {
            guard: ChildGuard,
            order: Arc<Mutex<Vec<String>>>,
        }
        impl Actor for Ordered {
            type Context = Context<Self>;
            fn started(&mut self, _: &mut Context<Self>) {
                self.guard.ready();
            }
        }
        impl Handler<StopChild> for Ordered {
            type Result = ();
            fn handle(&mut self, _: StopChild, ctx: &mut Context<Self>) {
                self.order.lock().unwrap().push(self.guard.name().to_owned());
                self.guard.stop_cleanly();
                ctx.stop();
            }
        }
        let spec = |name: &str, stop_order: u8| {
            let order = order.clone();
            ChildSpec {
                name: name.into(),
                stop_order,
                factory: Box::new(move |guard| {
                    Ordered {
                        guard,
                        order: order.clone(),
                    }
                    .start()
                    .recipient()
                }),
            }
        };
        let children = vec![spec("uploader", 2), spec("registrar", 1), spec("scanner", 0)];
        let log = Logger::root(slog::Discard, slog::o!());
        let flag = stopped.clone();
        system.block_on(async move {
            let supervisor = Supervisor::new(children, HealthBoard::default(), Duration::from_secs(600), log).start();
            tokio::time::sleep(Duration::from_secs(1)).await;
            supervisor.do_send(Shutdown { reason: "test".into() });
            flag.store(true, Ordering::SeqCst);
        });
        system.run().expect("the system ends once every child has stopped");
        assert!(stopped.load(Ordering::SeqCst));
        assert_eq!(*order.lock().unwrap(), ["scanner", "registrar", "uploader"]);
    }

    #[test]
    fn backoff_doubles_caps_and_resets_after_a_quiet_period() {
        let quick = Duration::from_secs(1);
        let mut backoff = None;
        let mut seen = Vec::new();
        for _ in 0..10 {
            let next = next_backoff(backoff, quick);
            seen.push(next.as_millis() as u64);
            backoff = Some(next);
        }
        assert_eq!(seen, [500, 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000]);
        assert_eq!(next_backoff(backoff, QUIET_PERIOD), BACKOFF_INITIAL);
    }
}

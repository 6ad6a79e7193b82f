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
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

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
    log: Logger,
}

impl Supervisor {
    pub fn new(children: Vec<ChildSpec>, board: HealthBoard, log: Logger) -> Supervisor {
        Supervisor {
            children: BTreeMap::new(),
            pending: children,
            board,
            shutting_down: false,
            log,
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
        let guard = ChildGuard {
            name: name.to_owned(),
            generation: child.generation,
            supervisor,
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

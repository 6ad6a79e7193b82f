//! Applying new settings to the running actors. The application reads and validates the
//! file into typed settings; the coordinator compares them with the running ones
//! ([`setting::changes`]), decides per actor ([`setting::plan`]) and turns that into
//! messages: knobs set in place (upload concurrency, bandwidth, window), new settings for the
//! scanner (roots, ignore patterns, schedule, time zone), hashers added or removed, a clean
//! restart of exactly the actors whose settings changed, and settings only a new process
//! takes (agent, http.listen) kept at their running values.

use super::scanner::UpdateScanner;
use super::setting::{self, ActorChange, ChangeAction, Setting};
use super::supervisor::{AddChild, RemoveChild, RestartChild, SetStallTimeout, Shutdown, Supervisor};
use super::{DaemonSettings, Wiring};
use actix::prelude::*;
use slog::info;
use std::sync::Arc;

/// Validated new settings. Answered with what was done, once it has been done.
#[derive(Message)]
#[rtype(result = "ReloadOutcome")]
pub struct Reconfigure {
    pub settings: DaemonSettings,
}

/// What a reload changed and what each actor did about it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadOutcome {
    /// Every setting that differs from the running one, in configuration order.
    pub changed: Vec<Setting>,
    pub actions: Vec<ActorChange>,
}

impl ReloadOutcome {
    /// The settings kept at their running values until the process restarts.
    pub fn needs_process_restart(&self) -> Vec<String> {
        self.actions
            .iter()
            .filter(|change| change.action == ChangeAction::NeedsProcessRestart)
            .flat_map(|change| change.keys.clone())
            .collect()
    }
}

/// Handed to the application once the daemon runs.
#[derive(Clone)]
pub struct DaemonHandle {
    coordinator: Addr<Coordinator>,
    supervisor: Addr<Supervisor>,
}

impl DaemonHandle {
    pub(super) fn new(coordinator: Addr<Coordinator>, supervisor: Addr<Supervisor>) -> DaemonHandle {
        DaemonHandle {
            coordinator,
            supervisor,
        }
    }

    /// Stop every actor in order (producers first), then the run ends.
    pub fn shutdown(&self, reason: &str) {
        self.supervisor.do_send(Shutdown {
            reason: reason.to_owned(),
        });
    }

    /// Apply `settings` and return what was done, once it is done. Called from a thread
    /// outside the actor system.
    pub fn reconfigure(&self, settings: DaemonSettings) -> Result<ReloadOutcome, String> {
        futures::executor::block_on(self.coordinator.send(Reconfigure { settings }))
            .map_err(|error| format!("the daemon did not take the new settings: {error}"))
    }
}

pub struct Coordinator {
    wiring: Wiring,
    supervisor: Addr<Supervisor>,
}

impl Coordinator {
    pub(super) fn new(wiring: Wiring, supervisor: Addr<Supervisor>) -> Coordinator {
        Coordinator { wiring, supervisor }
    }

    fn restart(&self, name: &str, keys: &[String]) {
        self.supervisor.do_send(RestartChild {
            name: name.to_owned(),
            reason: format!("configuration changed: {}", keys.join(", ")),
        });
    }
}

impl Actor for Coordinator {
    type Context = Context<Self>;
}

impl Handler<Reconfigure> for Coordinator {
    type Result = MessageResult<Reconfigure>;

    fn handle(&mut self, message: Reconfigure, _ctx: &mut Context<Self>) -> Self::Result {
        let old = self.wiring.settings();
        let mut new = message.settings;
        let changed = setting::changes(&old, &new);
        // Only a new process takes these: the running values stay in force.
        new.agent = old.agent.clone();
        new.http_listen = old.http_listen;
        let new = Arc::new(new);
        *self.wiring.live.write().unwrap_or_else(|e| e.into_inner()) = new.clone();
        // The knobs are cheap to set and read as the uploads go: always the new values.
        let knobs = &self.wiring.observed.knobs;
        knobs.set_concurrency(new.upload.concurrency);
        knobs.limiter.set_limit(new.bandwidth_limit);
        knobs.set_window(new.upload_window.clone());
        let hashing = &self.wiring.observed.hashing;
        hashing
            .metadata
            .store(new.hash_metadata, std::sync::atomic::Ordering::Relaxed);
        hashing.set_part_layout(new.store.part_layout());
        let actions = setting::plan(&changed, new.role, (old.hash_workers, new.hash_workers));
        for change in &actions {
            match (&change.action, change.actor.as_str()) {
                (ChangeAction::Restart, actor) => self.restart(actor, &change.keys),
                (ChangeAction::Update, "scanner") => {
                    if let Some(scanner) = self.wiring.scanner.get() {
                        let scan_now = changed.contains(&Setting::Roots) || changed.contains(&Setting::IgnorePatterns);
                        scanner.do_send(UpdateScanner {
                            settings: self.wiring.scanner_settings(),
                            scan_now,
                        });
                    }
                }
                (ChangeAction::Update, "supervisor") => self.supervisor.do_send(SetStallTimeout(new.stall_timeout)),
                (ChangeAction::Update, _) | (ChangeAction::NeedsProcessRestart, _) => {}
                (ChangeAction::Resize { from, to }, _) => self.resize_hashers(*from, *to),
            }
        }
        MessageResult(ReloadOutcome { changed, actions })
    }
}

impl Coordinator {
    fn resize_hashers(&self, from: usize, to: usize) {
        if to > from {
            for index in from..to {
                self.supervisor.do_send(AddChild(self.wiring.hasher(index)));
            }
        } else {
            self.wiring.shrink_hashers(to);
            for index in to..from {
                self.supervisor.do_send(RemoveChild(format!("hasher-{index}")));
            }
        }
        info!(self.wiring.log, "hasher pool resized"; "from" => from, "to" => to);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::supervisor::{ChildGuard, ChildSpec, HealthBoard, StopChild};
    use crate::daemon::{test_settings, LiveSettings, Observed};
    use std::collections::BTreeMap;
    use std::sync::{Mutex, RwLock};
    use std::time::Duration;

    /// A child that only counts its starts.
    struct Counted(ChildGuard);

    impl Actor for Counted {
        type Context = Context<Self>;
        fn started(&mut self, _: &mut Context<Self>) {
            self.0.ready();
        }
    }

    impl Handler<StopChild> for Counted {
        type Result = ();
        fn handle(&mut self, _: StopChild, ctx: &mut Context<Self>) {
            self.0.stop_cleanly();
            ctx.stop();
        }
    }

    #[test]
    fn a_reload_restarts_exactly_the_named_actors_and_sets_the_knobs_in_place() {
        let system = crate::daemon::paused_system();
        let starts: Arc<Mutex<BTreeMap<String, u32>>> = Arc::default();
        let names = [
            "uploader",
            "exporter",
            "retention",
            "registrar",
            "scanner",
            "watcher",
            "debouncer",
        ];
        let old = test_settings(4, "old");
        let observed = Observed::new(&old);
        let knobs = observed.knobs.clone();
        let live: LiveSettings = Arc::new(RwLock::new(Arc::new(old)));
        let outcome = system.block_on(async {
            let children = names
                .iter()
                .map(|name| {
                    let starts = starts.clone();
                    ChildSpec {
                        name: name.to_string(),
                        stop_order: 0,
                        factory: Box::new(move |guard| {
                            *starts.lock().unwrap().entry(guard.name().to_owned()).or_default() += 1;
                            Counted(guard).start().recipient()
                        }),
                    }
                })
                .collect();
            let log = slog::Logger::root(slog::Discard, slog::o!());
            let supervisor =
                Supervisor::new(children, HealthBoard::default(), Duration::from_secs(600), log.clone()).start();
            let coordinator = Coordinator::new(Wiring::new(live.clone(), observed, log), supervisor).start();
            tokio::time::sleep(Duration::from_secs(1)).await;
            // A new store, a new concurrency, a new stall timeout and a new agent name at once.
            let mut new = test_settings(9, "new");
            new.stall_timeout = Duration::from_secs(300);
            new.agent = "renamed".into();
            let outcome = coordinator.send(Reconfigure { settings: new }).await.unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert_eq!(
                live.read().unwrap().agent,
                "test",
                "the agent's name needs a new process"
            );
            outcome
        });
        use ChangeAction::*;
        assert_eq!(
            outcome.changed,
            vec![
                Setting::Agent,
                Setting::Storage,
                Setting::UploadConcurrency,
                Setting::StallTimeout
            ]
        );
        assert_eq!(
            outcome.actions,
            vec![
                change("supervisor", Update, &["daemon.stall_timeout"]),
                change("uploader", Restart, &["storage"]),
                change("exporter", Restart, &["storage"]),
                change("retention", Restart, &["storage"]),
                change("process", NeedsProcessRestart, &["agent"]),
            ]
        );
        assert_eq!(outcome.needs_process_restart(), vec!["agent"]);
        let starts = starts.lock().unwrap().clone();
        for name in names {
            let expected = if ["uploader", "exporter", "retention"].contains(&name) {
                2
            } else {
                1
            };
            assert_eq!(starts[name], expected, "{name}: {starts:?}");
        }
        assert_eq!(knobs.concurrency(), 9, "the concurrency is a knob, set in place");
    }

    fn keys(list: &[&str]) -> Vec<String> {
        list.iter().map(|key| key.to_string()).collect()
    }

    fn change(actor: &str, action: ChangeAction, list: &[&str]) -> ActorChange {
        ActorChange {
            actor: actor.into(),
            action,
            keys: keys(list),
        }
    }
}

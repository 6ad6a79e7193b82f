//! Applying a new configuration to the running actors. The application reads and validates
//! the file and says which keys changed; the coordinator turns that into messages: knobs set
//! in place (upload concurrency, bandwidth, window), new settings for the scanner (roots,
//! ignore patterns, schedule, time zone), hashers added or removed, and a clean restart of
//! exactly the actors whose connection changed (database URL: scanner, registrar, uploader;
//! store: uploader).

use super::scanner::UpdateScanner;
use super::supervisor::{AddChild, RemoveChild, RestartChild, SetStallTimeout, Shutdown, Supervisor};
use super::{DaemonSettings, Role, Wiring};
use actix::prelude::*;
use slog::info;
use std::sync::Arc;

/// A validated new configuration and the keys that differ from the running one. Answered
/// with what was done, once it has been done.
#[derive(Message)]
#[rtype(result = "ReloadOutcome")]
pub struct Reconfigure {
    pub settings: DaemonSettings,
    pub changed: Vec<String>,
}

/// What a reconfiguration does to one actor.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeAction {
    /// Stopped cleanly and started again with the new settings (a new connection).
    Restart,
    /// New settings taken while it runs.
    Update,
    /// Hashers added or removed.
    Resize { from: usize, to: usize },
}

/// One actor's part in a reload: what happened to it and the keys that caused it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ActorChange {
    pub actor: String,
    pub action: ChangeAction,
    pub keys: Vec<String>,
}

/// Every actor's change, as applied.
pub type ReloadOutcome = Vec<ActorChange>;

/// The actors a change of `changed` touches, and how: a pure function of the keys, the role
/// and the hasher counts, so it is tested without a daemon. Each actor's keys are exactly the
/// changed keys that concern it.
pub fn plan(changed: &[String], role: Role, hashers: (usize, usize)) -> ReloadOutcome {
    let matching = |prefixes: &[&str]| -> Vec<String> {
        changed
            .iter()
            .filter(|key| {
                prefixes
                    .iter()
                    .any(|prefix| key.as_str() == *prefix || key.starts_with(&format!("{prefix}.")))
            })
            .cloned()
            .collect()
    };
    let mut outcome = Vec::new();
    let mut add = |actor: &str, action: ChangeAction, keys: Vec<String>| {
        if !keys.is_empty() {
            outcome.push(ActorChange {
                actor: actor.to_owned(),
                action,
                keys,
            });
        }
    };
    let database = matching(&["database"]);
    add("supervisor", ChangeAction::Update, matching(&["daemon.stall_timeout"]));
    if role.indexes() {
        add("registrar", ChangeAction::Restart, database.clone());
        if database.is_empty() {
            add("scanner", ChangeAction::Update, matching(&["roots", "ignore", "scan"]));
        } else {
            add("scanner", ChangeAction::Restart, database.clone());
        }
        add(
            "watcher",
            ChangeAction::Restart,
            matching(&["watch", "roots", "ignore"]),
        );
        add(
            "debouncer",
            ChangeAction::Restart,
            matching(&["watch.debounce", "roots"]),
        );
        let (from, to) = (hashers.0.max(1), hashers.1.max(1));
        if from != to {
            add(
                "hashers",
                ChangeAction::Resize { from, to },
                matching(&["hash.workers"]),
            );
        }
    }
    if role.uploads() {
        // The uploader reads its connection, store, roots and retry settings when it starts;
        // concurrency, bandwidth and window are knobs it reads as it goes.
        let restart = matching(&["database", "storage", "roots", "upload.max_attempts", "upload.lease"]);
        if restart.is_empty() {
            add(
                "uploader",
                ChangeAction::Update,
                matching(&["upload.concurrency", "upload.bandwidth_limit", "upload.window"]),
            );
        } else {
            add("uploader", ChangeAction::Restart, restart);
        }
        add(
            "exporter",
            ChangeAction::Restart,
            matching(&["database", "storage", "agent", "catalog.export"]),
        );
        add(
            "retention",
            ChangeAction::Restart,
            matching(&["database", "storage", "agent", "retention"]),
        );
    }
    outcome
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

    /// Apply `settings` (`changed` lists the configuration keys that differ) and return
    /// what was done, once it is done. Called from a thread outside the actor system.
    pub fn reconfigure(&self, settings: DaemonSettings, changed: Vec<String>) -> Result<ReloadOutcome, String> {
        futures::executor::block_on(self.coordinator.send(Reconfigure { settings, changed }))
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
        let new = Arc::new(message.settings);
        *self.wiring.live.write().unwrap_or_else(|e| e.into_inner()) = new.clone();
        // The knobs are cheap to set and read as the uploads go: always the new values.
        let knobs = &self.wiring.observed.knobs;
        knobs.set_concurrency(new.upload.concurrency);
        knobs.limiter.set_limit(new.bandwidth_limit);
        knobs.set_window(new.upload_window.clone());
        let outcome = plan(&message.changed, new.role, (old.hash_workers, new.hash_workers));
        for change in &outcome {
            match (&change.action, change.actor.as_str()) {
                (ChangeAction::Restart, actor) => self.restart(actor, &change.keys),
                (ChangeAction::Update, "scanner") => {
                    if let Some(scanner) = self.wiring.scanner.get() {
                        let scan_now = change
                            .keys
                            .iter()
                            .any(|key| key.starts_with("roots") || key.starts_with("ignore"));
                        scanner.do_send(UpdateScanner {
                            settings: self.wiring.scanner_settings(),
                            scan_now,
                        });
                    }
                }
                (ChangeAction::Update, "supervisor") => self.supervisor.do_send(SetStallTimeout(new.stall_timeout)),
                (ChangeAction::Update, _) => {}
                (ChangeAction::Resize { from, to }, _) => self.resize_hashers(*from, *to),
            }
        }
        MessageResult(outcome)
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
    use crate::daemon::{LiveSettings, Observed};
    use std::collections::BTreeMap;
    use std::sync::{Mutex, RwLock};
    use std::time::Duration;

    fn settings(concurrency: usize, bucket: &str) -> DaemonSettings {
        use crate::daemon::watcher::{WatchMode, WatchSettings};
        DaemonSettings {
            agent: "test".into(),
            role: Role::All,
            database: crate::catalog::Target::new("postgres://nobody@127.0.0.1:1/none"),
            store: crate::store::ObjectStore::Local(crate::store::LocalStore::new(format!("/nonexistent/{bucket}"))),
            roots: Vec::new(),
            ignore: crate::fs::IgnoreMatcher::new::<&str>(&[]).unwrap(),
            scan: crate::scan::ScanOptions {
                batch_size: 100,
                accept_root_change: false,
            },
            schedule: crate::daemon::schedule::Schedule::parse("0 3 * * *", "UTC").unwrap(),
            scan_on_start: false,
            hash_workers: 2,
            upload: crate::upload::UploadSettings {
                concurrency,
                ..Default::default()
            },
            bandwidth_limit: 0,
            upload_window: None,
            http_listen: None,
            watch: WatchSettings {
                mode: WatchMode::Poll,
                poll_interval: Duration::from_secs(5),
                debounce: Duration::from_secs(3),
            },
            export_schedule: None,
            export_keep: 1,
            gc_schedule: None,
            retention: crate::catalog::retention::RetentionPolicy {
                deleted_for: None,
                replaced_for: None,
                keep_versions: 1,
                grace: Duration::from_secs(86_400),
            },
            stall_timeout: Duration::from_secs(600),
            once: None,
        }
    }

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
        let old = settings(4, "old");
        let observed = Observed::new(&old);
        let knobs = observed.knobs.clone();
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
            let live: LiveSettings = Arc::new(RwLock::new(Arc::new(old)));
            let coordinator = Coordinator::new(Wiring::new(live, observed, log), supervisor).start();
            tokio::time::sleep(Duration::from_secs(1)).await;
            // New store credentials and a new concurrency at once.
            let changed = keys(&["storage", "upload.concurrency", "daemon.stall_timeout"]);
            let outcome = coordinator
                .send(Reconfigure {
                    settings: settings(9, "new"),
                    changed,
                })
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
            outcome
        });
        use ChangeAction::*;
        assert_eq!(
            outcome,
            vec![
                change("supervisor", Update, &["daemon.stall_timeout"]),
                change("uploader", Restart, &["storage"]),
                change("exporter", Restart, &["storage"]),
                change("retention", Restart, &["storage"]),
            ]
        );
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

    #[test]
    fn two_keys_that_need_different_actions_each_name_their_own() {
        use ChangeAction::*;
        // The store's credentials and the upload window: the uploader restarts for the
        // store (the window is a knob, it is not the reason); nothing else is touched.
        let outcome = plan(&keys(&["storage", "upload.window"]), Role::All, (2, 2));
        assert_eq!(
            outcome,
            vec![
                change("uploader", Restart, &["storage"]),
                change("exporter", Restart, &["storage"]),
                change("retention", Restart, &["storage"]),
            ]
        );
        // A debounce and a schedule: watcher and debouncer restart for the debounce, the
        // scanner takes the schedule in place.
        let outcome = plan(&keys(&["watch.debounce", "scan.schedule"]), Role::All, (2, 2));
        assert_eq!(
            outcome,
            vec![
                change("scanner", Update, &["scan.schedule"]),
                change("watcher", Restart, &["watch.debounce"]),
                change("debouncer", Restart, &["watch.debounce"]),
            ]
        );
        // The database and the bandwidth: every connection holder restarts naming the
        // database only.
        let outcome = plan(&keys(&["database.url", "upload.bandwidth_limit"]), Role::All, (2, 2));
        assert_eq!(
            outcome,
            vec![
                change("registrar", Restart, &["database.url"]),
                change("scanner", Restart, &["database.url"]),
                change("uploader", Restart, &["database.url"]),
                change("exporter", Restart, &["database.url"]),
                change("retention", Restart, &["database.url"]),
            ]
        );
        // The export schedule: the exporter alone.
        let outcome = plan(&keys(&["catalog.export"]), Role::All, (2, 2));
        assert_eq!(outcome, vec![change("exporter", Restart, &["catalog.export"])]);
        // The retention policy or its schedule: the retention job alone.
        let outcome = plan(&keys(&["retention"]), Role::All, (2, 2));
        assert_eq!(outcome, vec![change("retention", Restart, &["retention"])]);
        // Concurrency alone: updated in place.
        let outcome = plan(&keys(&["upload.concurrency"]), Role::All, (2, 2));
        assert_eq!(outcome, vec![change("uploader", Update, &["upload.concurrency"])]);
    }

    #[test]
    fn the_role_limits_the_actors_and_hashers_resize() {
        use ChangeAction::*;
        let outcome = plan(&keys(&["roots", "hash.workers"]), Role::Upload, (2, 4));
        assert_eq!(outcome, vec![change("uploader", Restart, &["roots"])]);
        let outcome = plan(&keys(&["roots", "hash.workers"]), Role::Index, (2, 4));
        assert_eq!(
            outcome,
            vec![
                change("scanner", Update, &["roots"]),
                change("watcher", Restart, &["roots"]),
                change("debouncer", Restart, &["roots"]),
                change("hashers", Resize { from: 2, to: 4 }, &["hash.workers"]),
            ]
        );
    }
}

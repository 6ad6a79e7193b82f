//! Applying a new configuration to the running actors. The application reads and validates
//! the file and says which keys changed; the coordinator turns that into messages: knobs set
//! in place (upload concurrency, bandwidth, window), new settings for the scanner (roots,
//! ignore patterns, schedule, time zone), hashers added or removed, and a clean restart of
//! exactly the actors whose connection changed (database URL: scanner, registrar, uploader;
//! store: uploader).

use super::scanner::UpdateScanner;
use super::supervisor::{AddChild, RemoveChild, RestartChild, Supervisor};
use super::{DaemonSettings, Wiring};
use actix::prelude::*;
use slog::info;
use std::sync::Arc;

/// A validated new configuration and the keys that differ from the running one.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reconfigure {
    pub settings: DaemonSettings,
    pub changed: Vec<String>,
}

/// Handed to the application once the daemon runs.
#[derive(Clone)]
pub struct DaemonHandle {
    coordinator: Addr<Coordinator>,
}

impl DaemonHandle {
    pub(super) fn new(coordinator: Addr<Coordinator>) -> DaemonHandle {
        DaemonHandle { coordinator }
    }

    /// Apply `settings`; `changed` lists the configuration keys that differ.
    pub fn reconfigure(&self, settings: DaemonSettings, changed: Vec<String>) {
        // A control message, rare and small: no backpressure needed.
        self.coordinator.do_send(Reconfigure { settings, changed });
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

    fn restart(&self, name: &str, key: &str) {
        self.supervisor.do_send(RestartChild {
            name: name.to_owned(),
            reason: format!("configuration changed: {key}"),
        });
    }
}

impl Actor for Coordinator {
    type Context = Context<Self>;
}

impl Handler<Reconfigure> for Coordinator {
    type Result = ();

    fn handle(&mut self, message: Reconfigure, _ctx: &mut Context<Self>) {
        let old = self.wiring.settings();
        let new = Arc::new(message.settings);
        *self.wiring.live.write().unwrap_or_else(|e| e.into_inner()) = new.clone();
        let changed = |key: &str| {
            message
                .changed
                .iter()
                .any(|k| k == key || k.starts_with(&format!("{key}.")))
        };
        let knobs = &self.wiring.observed.knobs;
        knobs.set_concurrency(new.upload.concurrency);
        knobs.limiter.set_limit(new.bandwidth_limit);
        knobs.set_window(new.upload_window.clone());
        let indexes = new.role.indexes();
        let uploads = new.role.uploads();
        if changed("database") {
            let key = message
                .changed
                .iter()
                .find(|key| key.starts_with("database"))
                .cloned()
                .unwrap_or_else(|| "database".to_owned());
            for actor in ["scanner", "registrar"].into_iter().filter(|_| indexes) {
                self.restart(actor, &key);
            }
            if uploads {
                self.restart("uploader", &key);
            }
        } else if uploads
            && (changed("storage") || changed("roots") || changed("upload.max_attempts") || changed("upload.lease"))
        {
            // The uploader reads the store, its roots and its retry settings when it starts.
            let key = message
                .changed
                .iter()
                .find(|k| !k.starts_with("upload.concurrency"))
                .cloned()
                .unwrap_or_default();
            self.restart("uploader", &key);
        }
        if indexes && old.hash_workers != new.hash_workers {
            let (from, to) = (old.hash_workers.max(1), new.hash_workers.max(1));
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
        if indexes && (changed("watch") || changed("roots") || changed("ignore")) {
            let key = if changed("watch") {
                "watch"
            } else if changed("roots") {
                "roots"
            } else {
                "ignore.patterns"
            };
            self.restart("watcher", key);
            if changed("watch.debounce") || changed("roots") {
                self.restart("debouncer", key);
            }
        }
        let scanner_keys = ["roots", "ignore", "scan"];
        if indexes && !changed("database") && scanner_keys.iter().any(|key| changed(key)) {
            if let Some(scanner) = self.wiring.scanner.get() {
                scanner.do_send(UpdateScanner {
                    settings: self.wiring.scanner_settings(),
                    scan_now: changed("roots") || changed("ignore"),
                });
            }
        }
    }
}

//! Live reconfiguration of the daemon: the configuration file is watched through its folder
//! (so that an editor's save by rename, and a bind-mounted folder, both work), and SIGHUP asks
//! for a reload too. A valid new file becomes typed settings, which the daemon's coordinator
//! compares with the running ones and applies (`fms_actors::daemon::Reconfigure`), answering
//! with each actor's action once it is done; an invalid one is logged with every problem and
//! its key, and the old settings stay in force. One log event per reload, after the change.

use crate::config::{self, Config};
use crate::logging::LogControl;
use crossbeam_channel::{bounded, Receiver, Sender};
use fms_actors::daemon::{ActorChange, ChangeAction, DaemonHandle, Role};
use notify_debouncer_full::notify::RecursiveMode;
use slog::{error, info, warn, Logger};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Events on the configuration file are gathered this long before it is read.
const SETTLE: Duration = Duration::from_millis(300);

/// Why a reload was asked for.
#[derive(Debug)]
pub enum Trigger {
    FileChanged,
    Hangup,
}

pub struct Reloader {
    path: PathBuf,
    role: Role,
    current: Config,
    logs: LogControl,
    log: Logger,
}

impl Reloader {
    pub fn new(path: &Path, role: Role, current: Config, logs: LogControl, log: Logger) -> Reloader {
        Reloader {
            path: path.to_path_buf(),
            role,
            current,
            logs,
            log,
        }
    }

    /// Start watching; returns the sender for SIGHUP. The reloads run on a thread of their
    /// own once `handle` arrives (when the actors are up).
    pub fn start(self, handle: Receiver<DaemonHandle>) -> std::io::Result<Sender<Trigger>> {
        let (triggers, receiver) = bounded::<Trigger>(16);
        let watcher = watch_folder(&self.path, triggers.clone(), &self.log);
        std::thread::Builder::new().name("reload".into()).spawn(move || {
            // The watcher lives as long as this thread.
            let _watcher = watcher;
            let Ok(handle) = handle.recv() else { return };
            let mut reloader = self;
            while let Ok(trigger) = receiver.recv() {
                // Let a burst of events (write, rename, chmod) settle into one reload.
                std::thread::sleep(SETTLE);
                while receiver.try_recv().is_ok() {}
                reloader.reload(&trigger, &handle);
            }
        })?;
        Ok(triggers)
    }

    fn reload(&mut self, trigger: &Trigger, handle: &DaemonHandle) {
        let source = match trigger {
            Trigger::FileChanged => "file changed",
            Trigger::Hangup => "SIGHUP",
        };
        let new = match config::load(&self.path) {
            Ok(new) => new,
            Err(errors) => {
                let problems: Vec<String> = errors.0.iter().map(|p| format!("{}: {}", p.key, p.message)).collect();
                error!(self.log, "configuration reload failed; the running settings stay in force";
                    "trigger" => source, "path" => self.path.display().to_string(),
                    "errors" => problems.join("; "), "error_count" => problems.len());
                return;
            }
        };
        let settings = crate::commands::run::daemon_settings(&new, self.role);
        let outcome = match handle.reconfigure(settings) {
            Ok(outcome) => outcome,
            Err(problem) => {
                error!(self.log, "configuration reload failed; the running settings stay in force";
                    "trigger" => source, "errors" => problem, "error_count" => 1);
                return;
            }
        };
        // Logging is the application's own: set in place.
        let mut changed: Vec<String> = outcome.changed.iter().map(|setting| setting.key().to_owned()).collect();
        let mut actions = outcome.actions.clone();
        let log_keys: Vec<String> = [
            ("log.format", self.current.log.format != new.log.format),
            ("log.level", self.current.log.level != new.log.level),
        ]
        .into_iter()
        .filter(|(_, differs)| *differs)
        .map(|(key, _)| key.to_owned())
        .collect();
        if !log_keys.is_empty() {
            self.logs.apply(&new.log);
            changed.extend(log_keys.iter().cloned());
            actions.push(ActorChange {
                actor: "log".into(),
                action: ChangeAction::Update,
                keys: log_keys,
            });
        }
        // What a new process would take stays at its running value here too.
        let kept = outcome.needs_process_restart();
        let mut effective = new;
        effective.agent = self.current.agent.clone();
        effective.http = self.current.http.clone();
        self.current = effective;
        if changed.is_empty() {
            if matches!(trigger, Trigger::Hangup) {
                info!(self.log, "configuration reloaded"; "trigger" => source, "changed" => "", "outcome" => "unchanged");
            }
            return;
        }
        // One event, after the actors were told: each actor's action and the keys behind it.
        let actions_text = actions
            .iter()
            .map(|change| {
                format!(
                    "{} {} ({})",
                    change.actor,
                    action_word(&change.action),
                    change.keys.join(", ")
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        let actions_json = serde_json::to_string(&actions).unwrap_or_default();
        let applied: Vec<&String> = changed.iter().filter(|key| !kept.contains(key)).collect();
        let applied = applied.iter().map(|key| key.as_str()).collect::<Vec<_>>().join(", ");
        if kept.is_empty() {
            info!(self.log, "configuration reloaded"; "trigger" => source, "changed" => applied,
                "outcome" => "applied", "actions" => actions_text, "actions_json" => actions_json);
        } else {
            warn!(self.log, "configuration reloaded"; "trigger" => source, "changed" => applied,
                "outcome" => format!("partly applied; needs a process restart to take effect: {}", kept.join(", ")),
                "actions" => actions_text, "actions_json" => actions_json);
        }
    }
}

fn action_word(action: &ChangeAction) -> String {
    match action {
        ChangeAction::Restart => "restarted".into(),
        ChangeAction::Update => "updated in place".into(),
        ChangeAction::Resize { from, to } => format!("resized from {from} to {to}"),
        ChangeAction::NeedsProcessRestart => "kept until the process restarts".into(),
    }
}

/// Watch the file's folder (non-recursively) and send a trigger for events on the file. If
/// watching is impossible (no inotify), reloads still come with SIGHUP.
fn watch_folder(
    path: &Path,
    triggers: Sender<Trigger>,
    log: &Logger,
) -> Option<
    notify_debouncer_full::Debouncer<
        notify_debouncer_full::notify::RecommendedWatcher,
        notify_debouncer_full::RecommendedCache,
    >,
> {
    let folder = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name()?.to_owned();
    let mut debouncer = match notify_debouncer_full::new_debouncer(
        Duration::from_millis(200),
        None,
        move |result: notify_debouncer_full::DebounceEventResult| {
            let Ok(events) = result else { return };
            // Reading the file (our own reloads included) is no change.
            let touches_file = events.iter().any(|event| {
                (event.kind.is_create() || event.kind.is_modify() || event.kind.is_remove())
                    && event.paths.iter().any(|p| p.file_name() == Some(name.as_os_str()))
            });
            if touches_file {
                // Full: a reload is already pending, which reads the newest file anyway.
                let _ = triggers.try_send(Trigger::FileChanged);
            }
        },
    ) {
        Ok(debouncer) => debouncer,
        Err(error) => {
            warn!(log, "cannot watch the configuration file; reload with SIGHUP"; "error" => error.to_string());
            return None;
        }
    };
    if let Err(error) = debouncer.watch(folder, RecursiveMode::NonRecursive) {
        warn!(log, "cannot watch the configuration folder; reload with SIGHUP";
            "folder" => folder.display().to_string(), "error" => error.to_string());
        return None;
    }
    Some(debouncer)
}

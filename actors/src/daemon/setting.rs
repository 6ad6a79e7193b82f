//! A reload as a diff of typed settings: [`changes`] compares two [`DaemonSettings`] field by
//! field and names each difference as a [`Setting`] (a configuration key); [`plan`] says what
//! each setting asks of each actor, in one exhaustive `match`, so that a new setting does not
//! compile until its effect is decided.

use super::{DaemonSettings, Role};
use std::collections::BTreeMap;

/// A configuration key the daemon takes, in the order of the example configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Setting {
    Agent,
    DatabaseUrl,
    DatabaseCaFile,
    DatabaseSchema,
    DatabaseConnectTimeout,
    DatabaseStatementTimeout,
    /// Any `[storage]` key: a new store.
    Storage,
    Roots,
    IgnorePatterns,
    WatchMode,
    WatchPollInterval,
    WatchDebounce,
    ScanSchedule,
    ScanTimezone,
    ScanOnStart,
    ScanBatchSize,
    CatalogExportSchedule,
    CatalogExportKeep,
    RetentionDeletedFor,
    RetentionReplacedFor,
    RetentionKeepVersions,
    RetentionGrace,
    RetentionSchedule,
    HashWorkers,
    HashMetadata,
    UploadConcurrency,
    UploadMaxAttempts,
    UploadLease,
    UploadBandwidthLimit,
    UploadWindow,
    HttpListen,
    HttpPage,
    StallTimeout,
}

impl Setting {
    /// Its key path in the configuration file.
    pub fn key(self) -> &'static str {
        match self {
            Setting::Agent => "agent",
            Setting::DatabaseUrl => "database.url",
            Setting::DatabaseCaFile => "database.ca_file",
            Setting::DatabaseSchema => "database.schema",
            Setting::DatabaseConnectTimeout => "database.connect_timeout",
            Setting::DatabaseStatementTimeout => "database.statement_timeout",
            Setting::Storage => "storage",
            Setting::Roots => "roots",
            Setting::IgnorePatterns => "ignore.patterns",
            Setting::WatchMode => "watch.mode",
            Setting::WatchPollInterval => "watch.poll_interval",
            Setting::WatchDebounce => "watch.debounce",
            Setting::ScanSchedule => "scan.schedule",
            Setting::ScanTimezone => "scan.timezone",
            Setting::ScanOnStart => "scan.on_start",
            Setting::ScanBatchSize => "scan.batch_size",
            Setting::CatalogExportSchedule => "catalog.export_schedule",
            Setting::CatalogExportKeep => "catalog.export_keep",
            Setting::RetentionDeletedFor => "retention.deleted_for",
            Setting::RetentionReplacedFor => "retention.replaced_for",
            Setting::RetentionKeepVersions => "retention.keep_versions",
            Setting::RetentionGrace => "retention.grace",
            Setting::RetentionSchedule => "retention.schedule",
            Setting::HashWorkers => "hash.workers",
            Setting::HashMetadata => "hash.metadata",
            Setting::UploadConcurrency => "upload.concurrency",
            Setting::UploadMaxAttempts => "upload.max_attempts",
            Setting::UploadLease => "upload.lease",
            Setting::UploadBandwidthLimit => "upload.bandwidth_limit",
            Setting::UploadWindow => "upload.window",
            Setting::HttpListen => "http.listen",
            Setting::HttpPage => "http.password",
            Setting::StallTimeout => "daemon.stall_timeout",
        }
    }

    /// What a change of this setting asks of each actor it concerns.
    fn effects(self) -> &'static [(Actor, Effect)] {
        use Actor::*;
        use Effect::*;
        match self {
            // The agent's name is in every lease and event, the address is bound once.
            // The page's sessions and its password are set up with the address.
            Setting::Agent | Setting::HttpListen | Setting::HttpPage => &[(Process, NeedsProcessRestart)],
            // A new connection for every actor that holds one.
            Setting::DatabaseUrl
            | Setting::DatabaseCaFile
            | Setting::DatabaseSchema
            | Setting::DatabaseConnectTimeout
            | Setting::DatabaseStatementTimeout => &[
                (Registrar, Restart),
                (Scanner, Restart),
                (Uploader, Restart),
                (Exporter, Restart),
                (Retention, Restart),
            ],
            Setting::Storage => &[(Uploader, Restart), (Exporter, Restart), (Retention, Restart)],
            Setting::Roots => &[
                (Scanner, Update),
                (Watcher, Restart),
                (Debouncer, Restart),
                (Uploader, Restart),
            ],
            Setting::IgnorePatterns => &[(Scanner, Update), (Watcher, Restart)],
            Setting::WatchMode | Setting::WatchPollInterval => &[(Watcher, Restart)],
            Setting::WatchDebounce => &[(Watcher, Restart), (Debouncer, Restart)],
            Setting::ScanSchedule | Setting::ScanOnStart | Setting::ScanBatchSize => &[(Scanner, Update)],
            // Every schedule and the upload window are in the scan's time zone.
            Setting::ScanTimezone => &[
                (Scanner, Update),
                (Uploader, Update),
                (Exporter, Restart),
                (Retention, Restart),
            ],
            Setting::CatalogExportSchedule | Setting::CatalogExportKeep => &[(Exporter, Restart)],
            Setting::RetentionDeletedFor
            | Setting::RetentionReplacedFor
            | Setting::RetentionKeepVersions
            | Setting::RetentionGrace
            | Setting::RetentionSchedule => &[(Retention, Restart)],
            Setting::HashWorkers => &[(Hashers, Resize)],
            // Read by each hashing thread at its next file.
            Setting::HashMetadata => &[(Hashers, Update)],
            // Knobs the uploader reads as it goes.
            Setting::UploadConcurrency | Setting::UploadBandwidthLimit | Setting::UploadWindow => &[(Uploader, Update)],
            // Read when the uploader starts.
            Setting::UploadMaxAttempts | Setting::UploadLease => &[(Uploader, Restart)],
            Setting::StallTimeout => &[(Supervisor, Update)],
        }
    }
}

/// The settings that differ between `old` and `new`, in [`Setting`] order.
pub fn changes(old: &DaemonSettings, new: &DaemonSettings) -> Vec<Setting> {
    let mut changed = Vec::new();
    let mut check = |setting: Setting, differs: bool| {
        if differs {
            changed.push(setting);
        }
    };
    let (db_old, db_new) = (&old.database, &new.database);
    check(Setting::Agent, old.agent != new.agent);
    check(Setting::DatabaseUrl, db_old.url != db_new.url);
    check(Setting::DatabaseCaFile, db_old.ca_file != db_new.ca_file);
    check(Setting::DatabaseSchema, db_old.schema != db_new.schema);
    check(
        Setting::DatabaseConnectTimeout,
        db_old.connect_timeout != db_new.connect_timeout,
    );
    check(
        Setting::DatabaseStatementTimeout,
        db_old.statement_timeout != db_new.statement_timeout,
    );
    check(Setting::Storage, old.store != new.store);
    check(Setting::Roots, old.roots != new.roots);
    check(Setting::IgnorePatterns, old.ignore != new.ignore);
    check(Setting::WatchMode, old.watch.mode != new.watch.mode);
    check(
        Setting::WatchPollInterval,
        old.watch.poll_interval != new.watch.poll_interval,
    );
    check(Setting::WatchDebounce, old.watch.debounce != new.watch.debounce);
    check(
        Setting::ScanSchedule,
        old.schedule.expression() != new.schedule.expression(),
    );
    check(Setting::ScanTimezone, old.schedule.zone() != new.schedule.zone());
    check(Setting::ScanOnStart, old.scan_on_start != new.scan_on_start);
    check(Setting::ScanBatchSize, old.scan.batch_size != new.scan.batch_size);
    let expression =
        |schedule: &Option<super::schedule::Schedule>| schedule.as_ref().map(|s| s.expression().to_owned());
    check(
        Setting::CatalogExportSchedule,
        expression(&old.export_schedule) != expression(&new.export_schedule),
    );
    check(Setting::CatalogExportKeep, old.export_keep != new.export_keep);
    let (kept_old, kept_new) = (&old.retention, &new.retention);
    check(
        Setting::RetentionDeletedFor,
        kept_old.deleted_for != kept_new.deleted_for,
    );
    check(
        Setting::RetentionReplacedFor,
        kept_old.replaced_for != kept_new.replaced_for,
    );
    check(
        Setting::RetentionKeepVersions,
        kept_old.keep_versions != kept_new.keep_versions,
    );
    check(Setting::RetentionGrace, kept_old.grace != kept_new.grace);
    check(
        Setting::RetentionSchedule,
        expression(&old.gc_schedule) != expression(&new.gc_schedule),
    );
    check(Setting::HashWorkers, old.hash_workers != new.hash_workers);
    check(Setting::HashMetadata, old.hash_metadata != new.hash_metadata);
    check(
        Setting::UploadConcurrency,
        old.upload.concurrency != new.upload.concurrency,
    );
    check(
        Setting::UploadMaxAttempts,
        old.upload.max_attempts != new.upload.max_attempts,
    );
    check(Setting::UploadLease, old.upload.lease != new.upload.lease);
    check(
        Setting::UploadBandwidthLimit,
        old.bandwidth_limit != new.bandwidth_limit,
    );
    let range = |settings: &DaemonSettings| settings.upload_window.as_ref().map(|window| window.range());
    check(Setting::UploadWindow, range(old) != range(new));
    check(Setting::HttpListen, old.http_listen != new.http_listen);
    check(Setting::HttpPage, old.page != new.page);
    check(Setting::StallTimeout, old.stall_timeout != new.stall_timeout);
    changed
}

/// The actors a reload can touch, in the order their changes are reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Actor {
    Supervisor,
    Registrar,
    Scanner,
    Watcher,
    Debouncer,
    Hashers,
    Uploader,
    Exporter,
    Retention,
    /// Settings only a new process takes.
    Process,
}

impl Actor {
    pub fn name(self) -> &'static str {
        match self {
            Actor::Supervisor => "supervisor",
            Actor::Registrar => "registrar",
            Actor::Scanner => "scanner",
            Actor::Watcher => "watcher",
            Actor::Debouncer => "debouncer",
            Actor::Hashers => "hashers",
            Actor::Uploader => "uploader",
            Actor::Exporter => "exporter",
            Actor::Retention => "retention",
            Actor::Process => "process",
        }
    }

    fn runs_in(self, role: Role) -> bool {
        match self {
            Actor::Supervisor | Actor::Process => true,
            Actor::Registrar | Actor::Scanner | Actor::Watcher | Actor::Debouncer | Actor::Hashers => role.indexes(),
            Actor::Uploader | Actor::Exporter | Actor::Retention => role.uploads(),
        }
    }
}

/// What one setting asks of one actor; the strongest asked of an actor is what it gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Effect {
    Update,
    Resize,
    Restart,
    NeedsProcessRestart,
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
    /// Kept at its running value until the process is restarted.
    NeedsProcessRestart,
}

/// One actor's part in a reload: what happens to it and the keys that cause it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ActorChange {
    pub actor: String,
    pub action: ChangeAction,
    pub keys: Vec<String>,
}

/// Each running actor's change for `changed`: an actor asked to restart by one setting and
/// to update by another restarts, naming only the settings that ask for the restart. A pure
/// function of the settings, the role and the hasher counts, tested without a daemon.
pub fn plan(changed: &[Setting], role: Role, hashers: (usize, usize)) -> Vec<ActorChange> {
    let mut asked: BTreeMap<Actor, (Effect, Vec<Setting>)> = BTreeMap::new();
    for &setting in changed {
        for &(actor, effect) in setting.effects() {
            if !actor.runs_in(role) {
                continue;
            }
            let entry = asked.entry(actor).or_insert((effect, Vec::new()));
            if effect > entry.0 {
                *entry = (effect, Vec::new());
            }
            if effect == entry.0 {
                entry.1.push(setting);
            }
        }
    }
    asked
        .into_iter()
        .filter_map(|(actor, (effect, settings))| {
            let action = match effect {
                Effect::Update => ChangeAction::Update,
                Effect::Restart => ChangeAction::Restart,
                Effect::NeedsProcessRestart => ChangeAction::NeedsProcessRestart,
                Effect::Resize => {
                    let (from, to) = (hashers.0.max(1), hashers.1.max(1));
                    if from == to {
                        return None;
                    }
                    ChangeAction::Resize { from, to }
                }
            };
            Some(ActorChange {
                actor: actor.name().to_owned(),
                action,
                keys: settings.iter().map(|setting| setting.key().to_owned()).collect(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::schedule::Schedule;
    use crate::daemon::test_settings;
    use std::time::Duration;

    fn change(actor: &str, action: ChangeAction, list: &[&str]) -> ActorChange {
        ActorChange {
            actor: actor.into(),
            action,
            keys: list.iter().map(|key| key.to_string()).collect(),
        }
    }

    #[test]
    fn the_diff_names_each_changed_setting_and_only_those() {
        let old = test_settings(4, "one");
        assert_eq!(changes(&old, &old.clone()), vec![]);
        let mut new = old.clone();
        new.schedule = Schedule::parse("0 3 * * *", "Asia/Tokyo").unwrap();
        new.export_schedule = Some(Schedule::parse("30 4 * * *", "Asia/Tokyo").unwrap());
        new.database.statement_timeout = Duration::from_secs(7);
        new.ignore = crate::fs::IgnoreMatcher::new(&["*.tmp"]).unwrap();
        new.upload.lease = Duration::from_secs(60);
        // The time zone alone changed the scan's schedule: it is named as the time zone.
        assert_eq!(
            changes(&old, &new),
            vec![
                Setting::DatabaseStatementTimeout,
                Setting::IgnorePatterns,
                Setting::ScanTimezone,
                Setting::CatalogExportSchedule,
                Setting::UploadLease,
            ]
        );
        let mut moved = old.clone();
        moved.store = crate::store::ObjectStore::Local(crate::store::LocalStore::new("/elsewhere"));
        moved.http_listen = Some("127.0.0.1:1".parse().unwrap());
        assert_eq!(changes(&old, &moved), vec![Setting::Storage, Setting::HttpListen]);
    }

    #[test]
    fn two_settings_that_need_different_actions_each_name_their_own() {
        use ChangeAction::*;
        use Setting::*;
        // The store and the upload window: the uploader restarts for the store (the window
        // is a knob, it is not the reason); nothing else is touched.
        assert_eq!(
            plan(&[Storage, UploadWindow], Role::All, (2, 2)),
            vec![
                change("uploader", Restart, &["storage"]),
                change("exporter", Restart, &["storage"]),
                change("retention", Restart, &["storage"]),
            ]
        );
        // A debounce and a schedule: watcher and debouncer restart for the debounce, the
        // scanner takes the schedule in place.
        assert_eq!(
            plan(&[WatchDebounce, ScanSchedule], Role::All, (2, 2)),
            vec![
                change("scanner", Update, &["scan.schedule"]),
                change("watcher", Restart, &["watch.debounce"]),
                change("debouncer", Restart, &["watch.debounce"]),
            ]
        );
        // The database and the bandwidth: every connection holder restarts naming the
        // database only.
        assert_eq!(
            plan(&[DatabaseUrl, UploadBandwidthLimit], Role::All, (2, 2)),
            vec![
                change("registrar", Restart, &["database.url"]),
                change("scanner", Restart, &["database.url"]),
                change("uploader", Restart, &["database.url"]),
                change("exporter", Restart, &["database.url"]),
                change("retention", Restart, &["database.url"]),
            ]
        );
        assert_eq!(
            plan(&[CatalogExportKeep], Role::All, (2, 2)),
            vec![change("exporter", Restart, &["catalog.export_keep"])]
        );
        assert_eq!(
            plan(&[RetentionGrace, RetentionSchedule], Role::All, (2, 2)),
            vec![change("retention", Restart, &["retention.grace", "retention.schedule"])]
        );
        assert_eq!(
            plan(&[UploadConcurrency], Role::All, (2, 2)),
            vec![change("uploader", Update, &["upload.concurrency"])]
        );
        // Only a new process takes the agent's name and the listen address.
        assert_eq!(
            plan(&[Agent, HttpListen, StallTimeout], Role::All, (2, 2)),
            vec![
                change("supervisor", Update, &["daemon.stall_timeout"]),
                change("process", NeedsProcessRestart, &["agent", "http.listen"]),
            ]
        );
    }

    #[test]
    fn the_role_limits_the_actors_and_hashers_resize() {
        use ChangeAction::*;
        use Setting::*;
        assert_eq!(
            plan(&[Roots, HashWorkers], Role::Upload, (2, 4)),
            vec![change("uploader", Restart, &["roots"])]
        );
        assert_eq!(
            plan(&[Roots, HashWorkers], Role::Index, (2, 4)),
            vec![
                change("scanner", Update, &["roots"]),
                change("watcher", Restart, &["roots"]),
                change("debouncer", Restart, &["roots"]),
                change("hashers", Resize { from: 2, to: 4 }, &["hash.workers"]),
            ]
        );
        // The same count (0 and 1 both mean one hasher): nothing to resize.
        assert_eq!(plan(&[HashWorkers], Role::All, (0, 1)), vec![]);
    }
}

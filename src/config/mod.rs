//! The configuration: one TOML file, overridden by `FMS_<SECTION>__<KEY>` environment
//! variables, secrets also from `*_file` keys. `load` reports every problem at once, each
//! with its key path. `config/filemetasync.example.toml` documents every key.

mod reader;

pub use reader::Problem;

use fms_actors::daemon::schedule::{parse_zone, Schedule};
use fms_actors::fs::IgnoreMatcher;
use fms_actors::upload_controls::UploadWindow;
use fms_actors::Tz;
use reader::Section;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Config {
    /// Name of this agent in the catalog (`files.agent`, events, leases). Default: host name.
    pub agent: String,
    pub database: DatabaseConfig,
    pub storage: StorageConfig,
    pub roots: Vec<RootConfig>,
    pub ignore: IgnoreConfig,
    pub watch: WatchConfig,
    pub scan: ScanConfig,
    pub catalog: CatalogConfig,
    pub retention: RetentionConfig,
    pub hash: HashConfig,
    pub upload: UploadConfig,
    pub log: LogConfig,
    pub http: HttpConfig,
    pub daemon: DaemonConfig,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DatabaseConfig {
    /// `postgres://user:password@host:port/db`; secret (shown redacted).
    #[serde(serialize_with = "redact_url")]
    pub url: String,
    /// PEM file of the CA(s) that sign the server's certificate: TLS, verified against it.
    pub ca_file: Option<PathBuf>,
    /// PostgreSQL schema of the catalog's tables (created by `migrate`); default: the
    /// connection's own search path, normally `public`.
    pub schema: Option<String>,
    /// How long a connection may take to be ready.
    #[serde(with = "humantime_serde_compat")]
    pub connect_timeout: Duration,
    /// How long one statement may go unanswered before the connection is given up.
    #[serde(with = "humantime_serde_compat")]
    pub statement_timeout: Duration,
}

impl DatabaseConfig {
    /// What the engine connects to.
    pub fn target(&self) -> fms_actors::catalog::Target {
        fms_actors::catalog::Target::new(self.url.clone())
            .with_ca_file(self.ca_file.clone())
            .with_schema(self.schema.clone())
            .with_timeouts(self.connect_timeout, self.statement_timeout)
    }
}

#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StorageConfig {
    S3 {
        bucket: String,
        endpoint: Option<String>,
        region: String,
        path_style: bool,
        #[serde(serialize_with = "redact")]
        access_key_id: String,
        #[serde(serialize_with = "redact")]
        secret_access_key: String,
        /// Files at least this large are uploaded in parts.
        multipart_threshold: u64,
        part_size: u64,
        /// PEM CA file trusted for an HTTPS endpoint instead of the system's roots.
        ca_file: Option<PathBuf>,
        /// Its certificates, read (and checked) when the configuration is loaded.
        #[serde(skip)]
        ca_pem: Option<Vec<u8>>,
        /// How each upload is verified: `auto` (probe the store), `server`, `checksum`,
        /// `read-back`.
        integrity: fms_actors::store::IntegrityMode,
        /// How long a request may go unanswered (plus a second per 64 KiB it sends).
        #[serde(with = "humantime_serde_compat")]
        timeout: Duration,
    },
    Local {
        path: PathBuf,
    },
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RootConfig {
    /// The root's name in the catalog; unique across all agents sharing it.
    pub label: String,
    pub path: PathBuf,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct IgnoreConfig {
    /// The built-in NAS defaults plus `ignore.patterns` (shown as the configured patterns).
    #[serde(rename = "patterns", serialize_with = "show_patterns")]
    pub matcher: IgnoreMatcher,
}

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WatchMode {
    Poll,
    Native,
    Auto,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct WatchConfig {
    pub mode: WatchMode,
    #[serde(with = "humantime_serde_compat")]
    pub poll_interval: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub debounce: Duration,
}

/// The catalog's copy in the bucket (`catalog export`), made by the daemon on a schedule.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CatalogConfig {
    /// Cron expression in `scan.timezone`; "off" (None) for none.
    #[serde(serialize_with = "show_schedule_or_off")]
    pub export_schedule: Option<Schedule>,
    /// Exports kept in the bucket; older ones are deleted after each export.
    pub export_keep: u64,
}

/// What the store keeps of what is no longer live (`gc`, and the daemon's scheduled run).
/// The default keeps everything.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RetentionConfig {
    /// How long the content of a deleted file is kept; "forever" by default.
    #[serde(with = "forever_compat")]
    pub deleted_for: Option<Duration>,
    /// How long a version replaced by a newer one is kept; "forever" by default.
    #[serde(with = "forever_compat")]
    pub replaced_for: Option<Duration>,
    /// The newest versions of each existing file kept whatever their age (the current one
    /// counts).
    pub keep_versions: u64,
    /// Between the mark and the deletion of an object; longer than `upload.lease`.
    #[serde(with = "humantime_serde_compat")]
    pub grace: Duration,
    /// Cron expression in `scan.timezone`, or "off" (None).
    #[serde(serialize_with = "show_schedule_or_off")]
    pub schedule: Option<Schedule>,
}

impl RetentionConfig {
    pub fn policy(&self) -> fms_actors::catalog::retention::RetentionPolicy {
        fms_actors::catalog::retention::RetentionPolicy {
            deleted_for: self.deleted_for,
            replaced_for: self.replaced_for,
            keep_versions: self.keep_versions as u32,
            grace: self.grace,
        }
    }
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ScanConfig {
    /// Cron expression (minute hour day-of-month month day-of-week, optionally preceded by
    /// seconds), in `timezone`.
    #[serde(serialize_with = "show_schedule")]
    pub schedule: Schedule,
    /// Every schedule and the upload window are in this zone.
    #[serde(serialize_with = "show_zone")]
    pub timezone: Tz,
    pub on_start: bool,
    /// Registrations per catalog transaction.
    pub batch_size: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct HashConfig {
    pub workers: u64,
    /// Read each new file's content metadata (MIME type, EXIF, PDF, Office, IFC, DWG, e-mail)
    /// during the hashing read.
    pub metadata: bool,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct UploadConfig {
    pub concurrency: u64,
    pub max_attempts: u64,
    #[serde(with = "humantime_serde_compat")]
    pub lease: Duration,
    /// Bytes per second over all transfers; 0: no limit.
    pub bandwidth_limit: u64,
    /// "HH:MM-HH:MM" in scan.timezone; no upload starts outside it.
    #[serde(serialize_with = "show_window")]
    pub window: Option<UploadWindow>,
}

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LogConfig {
    /// None: text on a terminal, JSON otherwise.
    pub format: Option<LogFormat>,
    pub level: String,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Who may open the operator's page; None: the page is off (`/healthz` and `/metrics`
    /// are served either way).
    pub login: Option<PageLogin>,
    /// A page session ends after this long without a request.
    #[serde(with = "humantime_serde_compat")]
    pub session_idle: Duration,
    /// Where the page may restore versions (ROOT/PATH below it); None: it may not.
    pub restore_folder: Option<PathBuf>,
}

/// The operator's page password: given as is, or as an Argon2 hash from
/// `filemetasync hash-password` (so that the configuration never holds it in clear).
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum PageLogin {
    Password(#[serde(serialize_with = "redact")] String),
    PasswordHash(#[serde(serialize_with = "redact")] String),
}

/// The daemon's supervision.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DaemonConfig {
    /// An actor that holds work (a transfer, a batch, a file to hash, a scan) and makes no
    /// progress for this long is restarted with the reason "stalled". Longer than every
    /// single call's timeout, so that those fire first and name themselves.
    #[serde(with = "humantime_serde_compat")]
    pub stall_timeout: Duration,
}

/// `daemon.stall_timeout` by default: far beyond a slow part over a slow uplink.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(600);

pub const LOG_LEVELS: &[&str] = &["critical", "error", "warning", "info", "debug", "trace"];

/// The configuration could not be used; every problem found is listed.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<Problem>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = self.0.len();
        let noun = if count == 1 { "problem" } else { "problems" };
        writeln!(formatter, "invalid configuration ({count} {noun}):")?;
        for problem in &self.0 {
            writeln!(formatter, "  {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Read `path`, apply `FMS_*` environment overrides, and validate.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let problem = |message: String| {
        ConfigErrors(vec![Problem {
            key: "(file)".into(),
            message,
        }])
    };
    let text =
        std::fs::read_to_string(path).map_err(|error| problem(format!("cannot read {}: {error}", path.display())))?;
    load_from_str(&text, std::env::vars())
}

/// Parse TOML `text` with environment overrides from `vars` (for tests and reloads).
pub fn load_from_str(text: &str, vars: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigErrors> {
    let environment: config::Map<String, String> =
        vars.into_iter().filter(|(key, _)| key.starts_with("FMS_")).collect();
    let merged = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix("FMS")
                .prefix_separator("_")
                .separator("__")
                .source(Some(environment)),
        )
        .build()
        .and_then(|merged| merged.try_deserialize::<serde_json::Value>())
        .map_err(|error| {
            ConfigErrors(vec![Problem {
                key: "(file)".into(),
                message: error.to_string(),
            }])
        })?;
    from_value(merged)
}

fn from_value(value: serde_json::Value) -> Result<Config, ConfigErrors> {
    let mut problems = Vec::new();
    let mut top = Section::root(value, &mut problems);
    // FMS_CONFIG names the file itself; it is not a setting.
    top.string("config");
    let agent = top.string("agent").unwrap_or_else(default_agent);
    let database = top.section("database", read_database);
    let storage = top.section("storage", read_storage);
    let roots = top.tables("roots", read_root);
    let ignore = top.section("ignore", read_ignore);
    let watch = top.section("watch", read_watch);
    let scan = top.section("scan", read_scan);
    // Every schedule and the window are in the scan's time zone.
    let zone = scan.timezone;
    let catalog = top.section("catalog", |s| CatalogConfig {
        export_schedule: schedule_or_off(s, "export_schedule", defaults::EXPORT_SCHEDULE, zone),
        export_keep: s.integer("export_keep", 1, 10_000).unwrap_or(defaults::EXPORT_KEEP),
    });
    let retention = top.section("retention", |s| RetentionConfig {
        deleted_for: s.duration_or_forever("deleted_for").unwrap_or(None),
        replaced_for: s.duration_or_forever("replaced_for").unwrap_or(None),
        keep_versions: s.integer("keep_versions", 1, 1_000_000).unwrap_or(1),
        grace: s.duration("grace").unwrap_or(defaults::RETENTION_GRACE),
        schedule: schedule_or_off(s, "schedule", defaults::RETENTION_SCHEDULE, zone),
    });
    let hash = top.section("hash", |s| HashConfig {
        workers: s.integer("workers", 1, 256).unwrap_or_else(default_workers),
        metadata: s.bool("metadata").unwrap_or(true),
    });
    let upload = top.section("upload", |s| read_upload(s, zone));
    let log = top.section("log", read_log);
    let http = top.section("http", read_http);
    let daemon = top.section("daemon", |s| DaemonConfig {
        stall_timeout: s.duration("stall_timeout").unwrap_or(DEFAULT_STALL_TIMEOUT),
    });
    top.finish();
    drop(top);
    let config = Config {
        agent,
        database,
        storage,
        roots,
        ignore,
        watch,
        scan,
        catalog,
        retention,
        hash,
        upload,
        log,
        http,
        daemon,
    };
    validate(&config, &mut problems);
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(problems))
    }
}

fn read_database(section: &mut Section) -> DatabaseConfig {
    let url = section.secret("url");
    if url.is_none() {
        section.problem("url", "is required (or url_file)");
    }
    let schema = section.string("schema");
    if let Some(schema) = &schema {
        let valid = schema.len() <= 63
            && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            section.problem(
                "schema",
                format!("{schema:?} is not a plain schema name: use lowercase letters, digits and _ (at most 63)"),
            );
        }
    }
    DatabaseConfig {
        url: url.unwrap_or_default(),
        ca_file: section.string("ca_file").map(PathBuf::from),
        schema,
        connect_timeout: section
            .duration("connect_timeout")
            .unwrap_or(fms_actors::catalog::tls::DEFAULT_CONNECT_TIMEOUT),
        statement_timeout: section
            .duration("statement_timeout")
            .unwrap_or(fms_actors::catalog::tls::DEFAULT_STATEMENT_TIMEOUT),
    }
}

fn read_storage(section: &mut Section) -> StorageConfig {
    let kind = section.string("kind").unwrap_or_else(|| "local".into());
    let multipart_threshold = section.bytes("multipart_threshold").unwrap_or(64 << 20);
    let part_size = section.bytes("part_size").unwrap_or(16 << 20);
    match kind.as_str() {
        "s3" => {
            let bucket = section.string("bucket");
            let bucket = required_value(section, "bucket", bucket);
            let access_key_id = section.required_secret("access_key_id");
            let secret_access_key = section.required_secret("secret_access_key");
            if part_size < 5 << 20 {
                section.problem("part_size", "must be at least 5MiB (the S3 minimum)");
            }
            // path is a local-store key; tolerate it so one file can switch kinds.
            section.string("path");
            let ca_file = section.string("ca_file").map(PathBuf::from);
            let integrity = section.string("integrity").unwrap_or_else(|| "auto".into());
            let integrity = fms_actors::store::IntegrityMode::parse(&integrity).unwrap_or_else(|| {
                section.problem(
                    "integrity",
                    format!("must be \"auto\", \"server\", \"checksum\" or \"read-back\", not {integrity:?}"),
                );
                Default::default()
            });
            StorageConfig::S3 {
                bucket,
                endpoint: section.string("endpoint"),
                region: section.string("region").unwrap_or_else(|| "us-east-1".into()),
                path_style: section.bool("path_style").unwrap_or(true),
                access_key_id,
                secret_access_key,
                multipart_threshold,
                part_size,
                ca_pem: ca_file.as_ref().and_then(|file| {
                    read_ca_pem(file)
                        .map_err(|problem| section.problem("ca_file", problem))
                        .ok()
                }),
                ca_file,
                integrity,
                timeout: section
                    .duration("timeout")
                    .unwrap_or(fms_actors::store::DEFAULT_REQUEST_TIMEOUT),
            }
        }
        "local" => {
            for key in [
                "ca_file",
                "integrity",
                "timeout",
                "bucket",
                "endpoint",
                "region",
                "path_style",
                "access_key_id",
                "secret_access_key",
            ] {
                section.string(key);
            }
            let path = section.string("path");
            let path = required_value(section, "path", path);
            StorageConfig::Local {
                path: PathBuf::from(path),
            }
        }
        other => {
            section.problem("kind", format!("must be \"s3\" or \"local\", not {other:?}"));
            section.finish();
            StorageConfig::Local { path: PathBuf::new() }
        }
    }
}

fn required_value(section: &mut Section, key: &str, value: Option<String>) -> String {
    match value {
        Some(value) if !value.is_empty() => value,
        _ => {
            section.problem(key, "is required");
            String::new()
        }
    }
}

fn read_root(section: &mut Section) -> RootConfig {
    let label = section.string("label");
    let label = required_value(section, "label", label);
    let path = section.string("path");
    let path = required_value(section, "path", path);
    RootConfig {
        label,
        path: PathBuf::from(path),
    }
}

fn read_watch(section: &mut Section) -> WatchConfig {
    let mode = match section.string("mode").as_deref() {
        None | Some("poll") => WatchMode::Poll,
        Some("native") => WatchMode::Native,
        Some("auto") => WatchMode::Auto,
        Some(other) => {
            section.problem(
                "mode",
                format!("must be \"poll\", \"native\" or \"auto\", not {other:?}"),
            );
            WatchMode::Poll
        }
    };
    WatchConfig {
        mode,
        poll_interval: section.duration("poll_interval").unwrap_or(Duration::from_secs(2)),
        debounce: section.duration("debounce").unwrap_or(Duration::from_secs(3)),
    }
}

fn read_ignore(section: &mut Section) -> IgnoreConfig {
    let patterns = section.strings("patterns").unwrap_or_default();
    // Name every pattern that is not a glob, then leave them out.
    let mut valid = Vec::new();
    for (index, pattern) in patterns.into_iter().enumerate() {
        match IgnoreMatcher::check_pattern(&pattern) {
            Ok(()) => valid.push(pattern),
            Err(error) => section.problem(
                &format!("patterns[{index}]"),
                format!("{pattern:?} is not a valid glob: {error}"),
            ),
        }
    }
    IgnoreConfig {
        matcher: IgnoreMatcher::new(&valid)
            .unwrap_or_else(|_| IgnoreMatcher::new::<&str>(&[]).expect("the built-in patterns")),
    }
}

fn read_scan(section: &mut Section) -> ScanConfig {
    let timezone = section
        .string("timezone")
        .unwrap_or_else(|| std::env::var("TZ").unwrap_or_else(|_| "UTC".into()));
    let timezone = parse_zone(&timezone).unwrap_or_else(|problem| {
        section.problem("timezone", problem);
        Tz::UTC
    });
    let expression = section
        .string("schedule")
        .unwrap_or_else(|| defaults::SCAN_SCHEDULE.into());
    let schedule = Schedule::new(&expression, timezone).unwrap_or_else(|problem| {
        section.problem("schedule", problem);
        default_schedule(defaults::SCAN_SCHEDULE, timezone)
    });
    ScanConfig {
        schedule,
        timezone,
        on_start: section.bool("on_start").unwrap_or(true),
        batch_size: section
            .integer("batch_size", 1, 100_000)
            .unwrap_or(defaults::SCAN_BATCH_SIZE),
    }
}

/// A cron expression in `zone`, or "off" (None).
fn schedule_or_off(section: &mut Section, key: &str, default: &str, zone: Tz) -> Option<Schedule> {
    let expression = section.string(key).unwrap_or_else(|| default.into());
    if expression == "off" {
        return None;
    }
    Some(Schedule::new(&expression, zone).unwrap_or_else(|problem| {
        section.problem(key, format!("{problem} (or \"off\")"));
        default_schedule(default, zone)
    }))
}

/// A default schedule (stands in for one that did not parse; the configuration is refused).
fn default_schedule(expression: &str, zone: Tz) -> Schedule {
    Schedule::new(expression, zone).expect("the default schedules are valid cron expressions")
}

fn read_upload(section: &mut Section, zone: Tz) -> UploadConfig {
    let defaults = fms_actors::upload::UploadSettings::default();
    let window = section.string("window").and_then(|text| {
        UploadWindow::new(&text, zone)
            .map_err(|problem| section.problem("window", problem))
            .ok()
    });
    UploadConfig {
        concurrency: section
            .integer("concurrency", 1, 256)
            .unwrap_or(defaults.concurrency as u64),
        max_attempts: section
            .integer("max_attempts", 1, 1000)
            .unwrap_or(defaults.max_attempts as u64),
        lease: section.duration("lease").unwrap_or(defaults.lease),
        bandwidth_limit: section.bytes("bandwidth_limit").unwrap_or(0),
        window,
    }
}

fn read_http(section: &mut Section) -> HttpConfig {
    let listen = section.string("listen").unwrap_or_else(|| defaults::HTTP_LISTEN.into());
    let listen = listen.parse().unwrap_or_else(|_| {
        section.problem(
            "listen",
            format!("{listen:?} is not an address such as \"0.0.0.0:9187\""),
        );
        defaults::HTTP_LISTEN.parse().expect("the default address")
    });
    let login = match (section.secret("password"), section.secret("password_hash")) {
        (Some(_), Some(_)) => {
            section.problem(
                "password",
                "give either password or password_hash (or their _file forms), not both",
            );
            None
        }
        (Some(password), None) if password.chars().count() < MIN_PAGE_PASSWORD => {
            section.problem(
                "password",
                format!("is shorter than {MIN_PAGE_PASSWORD} characters; choose a longer one"),
            );
            None
        }
        (Some(password), None) => Some(PageLogin::Password(password)),
        (None, Some(hash)) => match fms_actors::daemon::page::check_password_hash(&hash) {
            Ok(()) => Some(PageLogin::PasswordHash(hash)),
            Err(problem) => {
                section.problem("password_hash", problem);
                None
            }
        },
        (None, None) => None,
    };
    let session_idle = section.duration("session_idle").unwrap_or(defaults::SESSION_IDLE);
    let restore_folder = section.string("restore_folder").map(PathBuf::from);
    if restore_folder.as_ref().is_some_and(|folder| !folder.is_absolute()) {
        section.problem("restore_folder", "must be an absolute path such as \"/restore\"");
    }
    HttpConfig {
        listen,
        login,
        session_idle,
        restore_folder,
    }
}

/// The operator's page refuses shorter passwords.
const MIN_PAGE_PASSWORD: usize = 8;

fn read_log(section: &mut Section) -> LogConfig {
    let format = match section.string("format").as_deref() {
        None => None,
        Some("json") => Some(LogFormat::Json),
        Some("text") => Some(LogFormat::Text),
        Some(other) => {
            section.problem("format", format!("must be \"json\" or \"text\", not {other:?}"));
            None
        }
    };
    let level = section
        .string("level")
        .unwrap_or_else(|| "info".into())
        .to_ascii_lowercase();
    if !LOG_LEVELS.contains(&level.as_str()) {
        section.problem(
            "level",
            format!("must be one of {}, not {level:?}", LOG_LEVELS.join(", ")),
        );
    }
    LogConfig { format, level }
}

/// Rules across sections.
fn validate(config: &Config, problems: &mut Vec<Problem>) {
    let mut add = |key: String, message: String| problems.push(Problem { key, message });
    if !config.database.url.is_empty() {
        match fms_actors::catalog::tls::plan(&config.database.target()) {
            Err(problem) => add("database.url".into(), problem),
            Ok(plan) => {
                if let Some(problem) = fms_actors::catalog::tls::transaction_pooler(&plan.config) {
                    add("database.url".into(), problem);
                }
                // A CA file that cannot be used is a configuration error, not a connection error.
                if let Some(roots @ fms_actors::catalog::tls::Roots::File(_)) = &plan.tls {
                    if let Err(problem) = fms_actors::catalog::tls::connector(roots) {
                        add("database.ca_file".into(), problem);
                    }
                }
            }
        }
    }
    if config.roots.is_empty() {
        add("roots".into(), "at least one [[roots]] entry is required".into());
    }
    for (index, root) in config.roots.iter().enumerate() {
        if config.roots[..index].iter().any(|other| other.label == root.label) {
            add(
                format!("roots[{index}].label"),
                format!("{:?} is used twice", root.label),
            );
        }
        if !root.path.as_os_str().is_empty() && !root.path.is_absolute() {
            add(format!("roots[{index}].path"), "must be an absolute path".into());
        }
    }
    if config.retention.grace <= config.upload.lease {
        add(
            "retention.grace".into(),
            format!(
                "{} is not longer than upload.lease ({}): an upload in progress could lose its object; make it longer",
                humantime::format_duration(config.retention.grace),
                humantime::format_duration(config.upload.lease)
            ),
        );
    }
    let storage_timeout = match &config.storage {
        StorageConfig::S3 { timeout, .. } => Some(("storage.timeout", *timeout)),
        StorageConfig::Local { .. } => None,
    };
    let longest_call = [
        Some(("database.statement_timeout", config.database.statement_timeout)),
        Some(("database.connect_timeout", config.database.connect_timeout)),
        storage_timeout,
    ]
    .into_iter()
    .flatten()
    .max_by_key(|(_, timeout)| *timeout);
    if let Some((key, timeout)) = longest_call.filter(|(_, timeout)| config.daemon.stall_timeout <= *timeout) {
        add(
            "daemon.stall_timeout".into(),
            format!(
                "{} is not longer than {key} ({}): the call's own timeout should fire first and name itself; make it longer",
                humantime::format_duration(config.daemon.stall_timeout),
                humantime::format_duration(timeout)
            ),
        );
    }
}

fn default_agent() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "filemetasync".into())
}

fn default_workers() -> u64 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(2)
        .min(4)
}

fn redact<S: serde::Serializer>(value: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(if value.is_empty() { "" } else { "***" })
}

fn redact_url<S: serde::Serializer>(value: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&redacted_url(value))
}

/// The URL with its password replaced by `***`: in the user part of a URL, in its
/// `?password=` parameter, and in a keyword string's `password=`.
pub fn redacted_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let mut shown = match rest.rsplit_once('@') {
            Some((credentials, host)) => match credentials.split_once(':') {
                Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
                None => format!("{scheme}://{rest}"),
            },
            None => format!("{scheme}://{rest}"),
        };
        if let Some(query) = query {
            let params: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some(("password", _)) => "password=***".to_owned(),
                    _ => pair.to_owned(),
                })
                .collect();
            shown = format!("{shown}?{}", params.join("&"));
        }
        return shown;
    }
    redact_keyword_password(url)
}

/// `password=value`, `password = 'quoted value'` in a libpq keyword string.
fn redact_keyword_password(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("password") {
        let before_ok = at == 0 || rest[..at].ends_with(char::is_whitespace);
        let after = rest[at + "password".len()..].trim_start();
        let Some(value) = after.strip_prefix('=').filter(|_| before_ok) else {
            out.push_str(&rest[..at + "password".len()]);
            rest = &rest[at + "password".len()..];
            continue;
        };
        let value = value.trim_start();
        let end = if let Some(quoted) = value.strip_prefix('\'') {
            let mut escaped = false;
            let close = quoted.char_indices().find(|&(_, c)| {
                let close = c == '\'' && !escaped;
                escaped = c == '\\' && !escaped;
                close
            });
            close.map_or(value.len(), |(index, _)| index + 2)
        } else {
            value.find(char::is_whitespace).unwrap_or(value.len())
        };
        out.push_str(&rest[..at]);
        out.push_str("password=***");
        rest = &value[end..];
    }
    out.push_str(rest);
    out
}

/// The storage CA file's PEM text, once it holds at least one certificate.
fn read_ca_pem(file: &Path) -> Result<Vec<u8>, String> {
    let pem = std::fs::read(file).map_err(|error| format!("cannot read the CA file {}: {error}", file.display()))?;
    fms_actors::catalog::tls::parse_ca_pem(&pem, file)?;
    Ok(pem)
}

fn show_patterns<S: serde::Serializer>(matcher: &IgnoreMatcher, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(matcher.extra_patterns())
}

fn show_schedule<S: serde::Serializer>(schedule: &Schedule, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(schedule.expression())
}

fn show_schedule_or_off<S: serde::Serializer>(schedule: &Option<Schedule>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(schedule.as_ref().map_or("off", |schedule| schedule.expression()))
}

fn show_zone<S: serde::Serializer>(zone: &Tz, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(zone.name())
}

fn show_window<S: serde::Serializer>(window: &Option<UploadWindow>, serializer: S) -> Result<S::Ok, S::Error> {
    match window {
        Some(window) => serializer.serialize_str(&window.range()),
        None => serializer.serialize_none(),
    }
}

/// Defaults that are not already the engine's own (its timeouts, its upload settings).
pub mod defaults {
    use std::time::Duration;

    pub const SCAN_SCHEDULE: &str = "0 3 * * *";
    pub const SCAN_BATCH_SIZE: u64 = 1000;
    pub const EXPORT_SCHEDULE: &str = "30 4 * * *";
    pub const EXPORT_KEEP: u64 = 14;
    pub const RETENTION_SCHEDULE: &str = "15 5 * * *";
    pub const RETENTION_GRACE: Duration = Duration::from_secs(24 * 3600);
    pub const HTTP_LISTEN: &str = "0.0.0.0:9187";
    /// A page session ends after this long without a request.
    pub const SESSION_IDLE: Duration = Duration::from_secs(8 * 3600);
}

/// Durations shown as "2s", "15m".
mod forever_compat {
    pub fn serialize<S: serde::Serializer>(
        value: &Option<std::time::Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            None => serializer.serialize_str("forever"),
            Some(duration) => serializer.serialize_str(&humantime::format_duration(*duration).to_string()),
        }
    }
}

mod humantime_serde_compat {
    pub fn serialize<S: serde::Serializer>(value: &std::time::Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&humantime::format_duration(*value).to_string())
    }
}

#[cfg(test)]
mod tests;

//! The configuration: one TOML file, overridden by `FMS_<SECTION>__<KEY>` environment
//! variables, secrets also from `*_file` keys. `load` reports every problem at once, each
//! with its key path. `config/filemetasync.example.toml` documents every key.

mod reader;

pub use reader::Problem;

use reader::Section;
use serde::Serialize;
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
    /// Added to the built-in NAS defaults.
    pub patterns: Vec<String>,
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
    /// Cron expression in `scan.timezone`; "off" for none.
    pub export_schedule: String,
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
    /// Cron expression in `scan.timezone`, or "off".
    pub schedule: String,
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
    pub schedule: String,
    pub timezone: String,
    pub on_start: bool,
    /// Registrations per catalog transaction.
    pub batch_size: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct HashConfig {
    pub workers: u64,
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
    pub window: Option<String>,
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
    pub listen: String,
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
    let ignore = top.section("ignore", |s| IgnoreConfig {
        patterns: s.strings("patterns").unwrap_or_default(),
    });
    let watch = top.section("watch", read_watch);
    let scan = top.section("scan", read_scan);
    let catalog = top.section("catalog", |s| CatalogConfig {
        export_schedule: s.string("export_schedule").unwrap_or_else(|| "30 4 * * *".into()),
        export_keep: s.integer("export_keep", 1, 10_000).unwrap_or(14),
    });
    let retention = top.section("retention", |s| RetentionConfig {
        deleted_for: s.duration_or_forever("deleted_for").unwrap_or(None),
        replaced_for: s.duration_or_forever("replaced_for").unwrap_or(None),
        keep_versions: s.integer("keep_versions", 1, 1_000_000).unwrap_or(1),
        grace: s.duration("grace").unwrap_or(Duration::from_secs(24 * 3600)),
        schedule: s.string("schedule").unwrap_or_else(|| "15 5 * * *".into()),
    });
    let hash = top.section("hash", |s| HashConfig {
        workers: s.integer("workers", 1, 256).unwrap_or_else(default_workers),
    });
    let upload = top.section("upload", read_upload);
    let log = top.section("log", read_log);
    let http = top.section("http", |s| HttpConfig {
        listen: s.string("listen").unwrap_or_else(|| "0.0.0.0:9187".into()),
    });
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
                ca_file: section.string("ca_file").map(PathBuf::from),
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

fn read_scan(section: &mut Section) -> ScanConfig {
    ScanConfig {
        schedule: section.string("schedule").unwrap_or_else(|| "0 3 * * *".into()),
        timezone: section
            .string("timezone")
            .unwrap_or_else(|| std::env::var("TZ").unwrap_or_else(|_| "UTC".into())),
        on_start: section.bool("on_start").unwrap_or(true),
        batch_size: section.integer("batch_size", 1, 100_000).unwrap_or(1000),
    }
}

fn read_upload(section: &mut Section) -> UploadConfig {
    UploadConfig {
        concurrency: section.integer("concurrency", 1, 256).unwrap_or(8),
        max_attempts: section.integer("max_attempts", 1, 1000).unwrap_or(10),
        lease: section.duration("lease").unwrap_or(Duration::from_secs(15 * 60)),
        bandwidth_limit: section.bytes("bandwidth_limit").unwrap_or(0),
        window: section.string("window"),
    }
}

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
    if let StorageConfig::S3 {
        ca_file: Some(file), ..
    } = &config.storage
    {
        if let Err(problem) = fms_actors::catalog::tls::read_ca_file(file) {
            add("storage.ca_file".into(), problem);
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
    for (index, pattern) in config.ignore.patterns.iter().enumerate() {
        if let Err(error) = fms_actors::fs::IgnoreMatcher::check_pattern(pattern) {
            add(
                format!("ignore.patterns[{index}]"),
                format!("{pattern:?} is not a valid glob: {error}"),
            );
        }
    }
    use fms_actors::daemon::schedule::Schedule;
    if let Err(error) = Schedule::parse(&config.scan.schedule, "UTC") {
        add("scan.schedule".into(), error);
    }
    if config.catalog.export_schedule != "off" {
        if let Err(error) = Schedule::parse(&config.catalog.export_schedule, "UTC") {
            add("catalog.export_schedule".into(), format!("{error} (or \"off\")"));
        }
    }
    if config.retention.schedule != "off" {
        if let Err(error) = Schedule::parse(&config.retention.schedule, "UTC") {
            add("retention.schedule".into(), format!("{error} (or \"off\")"));
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
    if let Err(error) = Schedule::parse("0 3 * * *", &config.scan.timezone) {
        add("scan.timezone".into(), error);
    }
    if let Some(window) = &config.upload.window {
        if let Err(error) = fms_actors::upload_controls::UploadWindow::parse(window, &config.scan.timezone) {
            add("upload.window".into(), error);
        }
    }
    if config.http.listen.parse::<std::net::SocketAddr>().is_err() {
        add(
            "http.listen".into(),
            format!("{:?} is not an address such as \"0.0.0.0:9187\"", config.http.listen),
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

/// The keys whose values differ between two configurations, as `section.key` paths (a whole
/// section where its keys change together: `storage`, `roots`).
pub fn changed_keys(old: &Config, new: &Config) -> Vec<String> {
    let mut keys = Vec::new();
    let mut check = |key: &str, differs: bool| {
        if differs {
            keys.push(key.to_owned());
        }
    };
    check("agent", old.agent != new.agent);
    check("database.url", old.database.url != new.database.url);
    check("database.ca_file", old.database.ca_file != new.database.ca_file);
    check("database.schema", old.database.schema != new.database.schema);
    check(
        "database.timeouts",
        (old.database.connect_timeout, old.database.statement_timeout)
            != (new.database.connect_timeout, new.database.statement_timeout),
    );
    check("storage", old.storage != new.storage);
    check("roots", old.roots != new.roots);
    check("ignore.patterns", old.ignore != new.ignore);
    check("watch.mode", old.watch.mode != new.watch.mode);
    check(
        "watch.poll_interval",
        old.watch.poll_interval != new.watch.poll_interval,
    );
    check("watch.debounce", old.watch.debounce != new.watch.debounce);
    check("scan.schedule", old.scan.schedule != new.scan.schedule);
    check("scan.timezone", old.scan.timezone != new.scan.timezone);
    check("scan.on_start", old.scan.on_start != new.scan.on_start);
    check("scan.batch_size", old.scan.batch_size != new.scan.batch_size);
    check(
        "catalog.export",
        old.catalog != new.catalog || (old.scan.timezone != new.scan.timezone && old.catalog.export_schedule != "off"),
    );
    check(
        "retention",
        old.retention != new.retention || (old.scan.timezone != new.scan.timezone && old.retention.schedule != "off"),
    );
    check("hash.workers", old.hash.workers != new.hash.workers);
    check("upload.concurrency", old.upload.concurrency != new.upload.concurrency);
    check(
        "upload.max_attempts",
        old.upload.max_attempts != new.upload.max_attempts,
    );
    check("upload.lease", old.upload.lease != new.upload.lease);
    check(
        "upload.bandwidth_limit",
        old.upload.bandwidth_limit != new.upload.bandwidth_limit,
    );
    check("upload.window", old.upload.window != new.upload.window);
    check("log.format", old.log.format != new.log.format);
    check("log.level", old.log.level != new.log.level);
    check("http.listen", old.http.listen != new.http.listen);
    check("daemon.stall_timeout", old.daemon != new.daemon);
    keys
}

/// Keys a running daemon cannot take over without a restart of the process.
pub const RESTART_ONLY_KEYS: &[&str] = &["agent", "http.listen"];

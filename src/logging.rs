//! The log stream: slog, JSON lines on stdout when not on a terminal (a container's log),
//! readable text on a terminal. Messages are short lowercase phrases with structured fields
//! (`"upload failed"; "sha256" => .., "error" => ..`), so a log monitor can match on them.
//! Level and format can be switched while the daemon runs (a configuration reload).

use crate::config::{LogConfig, LogFormat};
use slog::{o, Drain, Level, Logger, OwnedKVList, Record};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// Keeps the async drain alive; dropping it flushes what is queued.
pub struct LogGuard {
    _scope: slog_scope::GlobalLoggerGuard,
    _guard: slog_async::AsyncGuard,
}

/// Stdout, given whole lines: the JSON drain writes a record in many small pieces, each of
/// which took stdout's lock on its own, so a command's summary printed meanwhile (`scan
/// --json`) could land inside a log line. A record now reaches stdout in one locked write.
#[derive(Default)]
struct WholeLines {
    pending: Vec<u8>,
}

impl std::io::Write for WholeLines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(bytes);
        if let Some(end) = self.pending.iter().rposition(|&byte| byte == b'\n') {
            let result = std::io::stdout().lock().write_all(&self.pending[..=end]);
            self.pending.drain(..=end);
            result?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout().lock().flush()
    }
}

/// Switches the running log stream's level and format.
#[derive(Clone)]
pub struct LogControl {
    level: Arc<AtomicUsize>,
    json: Arc<AtomicBool>,
}

impl LogControl {
    pub fn apply(&self, config: &LogConfig) {
        let level = level_of(&config.level);
        self.level.store(level.as_usize(), Ordering::Relaxed);
        self.json.store(is_json(config), Ordering::Relaxed);
        log::set_max_level(dependency_level(level));
    }
}

pub fn level_of(name: &str) -> Level {
    match name {
        "critical" => Level::Critical,
        "error" => Level::Error,
        "warning" => Level::Warning,
        "debug" => Level::Debug,
        "trace" => Level::Trace,
        _ => Level::Info,
    }
}

fn is_json(config: &LogConfig) -> bool {
    config.format.unwrap_or(if std::io::stdout().is_terminal() {
        LogFormat::Text
    } else {
        LogFormat::Json
    }) == LogFormat::Json
}

/// Dependencies log at warning and above, unless we debug.
fn dependency_level(level: Level) -> log::LevelFilter {
    match level {
        Level::Debug | Level::Trace => log::LevelFilter::Debug,
        _ => log::LevelFilter::Warn,
    }
}

/// Drops records below the current level before they are queued.
struct LevelSwitch<D> {
    level: Arc<AtomicUsize>,
    inner: D,
}

impl<D: Drain<Ok = (), Err = slog::Never>> Drain for LevelSwitch<D> {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record, values: &OwnedKVList) -> Result<(), slog::Never> {
        if record.level().as_usize() <= self.level.load(Ordering::Relaxed) {
            self.inner.log(record, values)?;
        }
        Ok(())
    }
}

/// Writes each record as JSON or as text, whichever is current.
struct FormatSwitch<J, T> {
    json: Arc<AtomicBool>,
    as_json: J,
    as_text: T,
}

impl<J, T> Drain for FormatSwitch<J, T>
where
    J: Drain<Ok = (), Err = slog::Never>,
    T: Drain<Ok = (), Err = slog::Never>,
{
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record, values: &OwnedKVList) -> Result<(), slog::Never> {
        if self.json.load(Ordering::Relaxed) {
            self.as_json.log(record, values)
        } else {
            self.as_text.log(record, values)
        }
    }
}

pub fn build(config: &LogConfig) -> (Logger, LogGuard, LogControl) {
    let control = LogControl {
        level: Arc::new(AtomicUsize::new(level_of(&config.level).as_usize())),
        json: Arc::new(AtomicBool::new(is_json(config))),
    };
    let as_json = slog_json::Json::new(WholeLines::default())
        .add_key_value(o!(
            "ts" => slog::PushFnValue(|_, serializer| serializer.emit(humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string())),
            "level" => slog::FnValue(|record| record.level().as_str()),
            "msg" => slog::PushFnValue(|record, serializer| serializer.emit(record.msg())),
        ))
        .build()
        .fuse();
    let as_text = slog_term::FullFormat::new(slog_term::TermDecorator::new().stdout().build())
        .build()
        .fuse();
    let formats = FormatSwitch {
        json: control.json.clone(),
        as_json,
        as_text,
    };
    let (drain, guard) = slog_async::Async::new(formats).chan_size(4096).build_with_guard();
    let drain = LevelSwitch {
        level: control.level.clone(),
        inner: drain.fuse(),
    };
    let logger = Logger::root(drain.fuse(), o!());
    // Dependencies log through `log` (and `tracing`, whose events become `log` records when
    // no tracing subscriber is installed): into the same stream, tagged.
    let scope = slog_scope::set_global_logger(logger.new(o!("source" => "dependency")));
    let _ = slog_stdlog::init().map(|()| log::set_max_level(dependency_level(level_of(&config.level))));
    (
        logger,
        LogGuard {
            _scope: scope,
            _guard: guard,
        },
        control,
    )
}

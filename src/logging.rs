//! The log stream: slog, JSON lines on stdout when not on a terminal (a container's log),
//! readable text on a terminal. Messages are short lowercase phrases with structured fields
//! (`"upload failed"; "sha256" => .., "error" => ..`), so a log monitor can match on them.

use crate::config::{LogConfig, LogFormat};
use slog::{o, Drain, Level, Logger};
use std::io::IsTerminal;

/// Keeps the async drain alive; dropping it flushes what is queued.
pub struct LogGuard {
    _scope: slog_scope::GlobalLoggerGuard,
    _guard: slog_async::AsyncGuard,
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

pub fn build(config: &LogConfig) -> (Logger, LogGuard) {
    let format = config.format.unwrap_or(if std::io::stdout().is_terminal() {
        LogFormat::Text
    } else {
        LogFormat::Json
    });
    let drain: Box<dyn Drain<Ok = (), Err = slog::Never> + Send> = match format {
        LogFormat::Json => Box::new(
            slog_json::Json::new(std::io::stdout())
                .add_key_value(o!(
                    "ts" => slog::PushFnValue(|_, serializer| serializer.emit(humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string())),
                    "level" => slog::FnValue(|record| record.level().as_str()),
                    "msg" => slog::PushFnValue(|record, serializer| serializer.emit(record.msg())),
                ))
                .build()
                .fuse(),
        ),
        LogFormat::Text => {
            let decorator = slog_term::TermDecorator::new().stdout().build();
            Box::new(slog_term::FullFormat::new(decorator).build().fuse())
        }
    };
    let drain = drain.filter_level(level_of(&config.level)).fuse();
    let (drain, guard) = slog_async::Async::new(drain).chan_size(4096).build_with_guard();
    let logger = Logger::root(drain.fuse(), o!());
    // Dependencies log through `log` (and `tracing`, whose events become `log` records when
    // no tracing subscriber is installed): into the same stream, tagged, at warning and above
    // unless debugging.
    let scope = slog_scope::set_global_logger(logger.new(o!("source" => "dependency")));
    let dependency_level = match level_of(&config.level) {
        Level::Debug | Level::Trace => log::LevelFilter::Debug,
        _ => log::LevelFilter::Warn,
    };
    let _ = slog_stdlog::init().map(|()| log::set_max_level(dependency_level));
    (
        logger,
        LogGuard {
            _scope: scope,
            _guard: guard,
        },
    )
}

//! The process's signals, outside the engine: SIGTERM and SIGINT shut the actors down in
//! order, SIGHUP asks for a configuration reload; a second SIGTERM/SIGINT, or a shutdown that
//! outlives its deadline, ends the process at once.

use fms_actors::daemon::DaemonHandle;
use slog::{info, warn, Logger};
use std::sync::Arc;
use std::time::Duration;

/// After SIGTERM the process exits at the latest this long after, whatever is still running
/// (docker stop sends SIGKILL at 10 s).
const SHUTDOWN_DEADLINE: Duration = Duration::from_millis(9_000);

/// Exit code after a second signal (128 + SIGINT, as shells report an interrupted command).
pub const INTERRUPTED: i32 = 130;

/// Listen for the signals while the actors run; spawn this on the actors' runtime.
/// `deadline_exit`: the exit code when the shutdown outlives its deadline (0 for the daemon,
/// which was asked to stop; [`INTERRUPTED`] for a one-shot command cut short).
pub async fn handle(
    daemon: DaemonHandle,
    hangup: Option<Arc<dyn Fn() + Send + Sync>>,
    deadline_exit: i32,
    log: Logger,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        warn!(
            log,
            "cannot listen for SIGTERM/SIGINT/SIGHUP; stop the process with SIGKILL"
        );
        return;
    };
    let name = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = hup.recv() => match &hangup {
                Some(hangup) => {
                    info!(log, "SIGHUP: reloading the configuration");
                    hangup();
                }
                None => info!(log, "SIGHUP ignored: this command does not reload its configuration"),
            }
        }
    };
    daemon.shutdown(name);
    let deadline_log = log.clone();
    std::thread::spawn(move || {
        std::thread::sleep(SHUTDOWN_DEADLINE);
        warn!(
            deadline_log,
            "shutdown took too long; exiting now (work in flight is found again at the next start)"
        );
        std::process::exit(deadline_exit);
    });
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    warn!(log, "second signal: exiting now");
    std::process::exit(INTERRUPTED);
}

//! What polling a tree costs: our poller (`fs::poll::Poller`) or notify's PollWatcher,
//! polling every 2 s for a while over an existing tree, on one thread. Prints one JSON line:
//! CPU used per second of wall time (percent of one core) after the first (priming) poll,
//! the time the priming took, and the process's peak RSS.
//!
//!   cargo run --release -p fms-actors --example poll_cost -- TREE SECONDS ours|notify

use fms_actors::fs::poll::Poller;
use fms_actors::fs::IgnoreMatcher;
use notify_debouncer_full::notify::{Config, PollWatcher, RecursiveMode, Watcher};
use std::time::{Duration, Instant};

fn cpu_seconds() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

fn peak_rss_mb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb / 1024)
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (tree, seconds, which) = (&args[1], args[2].parse::<u64>().unwrap(), args[3].as_str());
    let interval = Duration::from_secs(2);
    let started = Instant::now();
    let (prime, measured_cpu, measured_wall, events) = match which {
        "ours" => {
            let mut poller = Poller::new(tree.as_ref(), IgnoreMatcher::new::<&str>(&[]).unwrap(), interval);
            poller.poll();
            let prime = started.elapsed().as_secs_f64();
            let (cpu0, wall0) = (cpu_seconds(), Instant::now());
            let mut events = 0;
            while wall0.elapsed() < Duration::from_secs(seconds) {
                std::thread::sleep(interval);
                if let fms_actors::fs::poll::PollOutcome::Changes(changes) = poller.poll() {
                    events += changes.len();
                }
            }
            (prime, cpu_seconds() - cpu0, wall0.elapsed().as_secs_f64(), events)
        }
        "notify" => {
            let (sender, receiver) = std::sync::mpsc::channel();
            let config = Config::default()
                .with_poll_interval(interval)
                .with_compare_contents(false);
            let mut watcher = PollWatcher::new(sender, config).unwrap();
            // PollWatcher walks the whole tree once when asked to watch it.
            watcher.watch(tree.as_ref(), RecursiveMode::Recursive).unwrap();
            let prime = started.elapsed().as_secs_f64();
            let (cpu0, wall0) = (cpu_seconds(), Instant::now());
            let mut events = 0;
            while wall0.elapsed() < Duration::from_secs(seconds) {
                if receiver.recv_timeout(Duration::from_millis(200)).is_ok() {
                    events += 1;
                }
            }
            (prime, cpu_seconds() - cpu0, wall0.elapsed().as_secs_f64(), events)
        }
        other => panic!("ours or notify, not {other}"),
    };
    println!(
        "{{\"watcher\": \"{which}\", \"prime_seconds\": {prime:.1}, \"cpu_percent_of_a_core\": {:.2}, \"peak_rss_mb\": {}, \"events\": {events}}}",
        100.0 * measured_cpu / measured_wall,
        peak_rss_mb()
    );
}

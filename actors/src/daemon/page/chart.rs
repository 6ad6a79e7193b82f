//! The last hours of uploads and queue depth, sampled once a minute by the heartbeat thread,
//! and drawn by the server as a small SVG.

use maud::{html, Markup};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One sample every minute, six hours kept.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(60);
const KEPT: usize = 360;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub unix: u64,
    /// The process's stored-bytes counter at that moment.
    pub uploaded_bytes: u64,
    /// Contents waiting for upload (the catalog's count), when the catalog answered.
    pub pending: Option<i64>,
}

#[derive(Default)]
pub struct RateHistory {
    samples: Mutex<VecDeque<Sample>>,
}

impl RateHistory {
    pub fn record(&self, uploaded_bytes: u64, pending: Option<i64>) {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        samples.push_back(Sample {
            unix,
            uploaded_bytes,
            pending,
        });
        while samples.len() > KEPT {
            samples.pop_front();
        }
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect()
    }
}

/// Bytes per second between consecutive samples: (end of the interval, rate).
pub fn rates(samples: &[Sample]) -> Vec<(u64, f64)> {
    samples
        .windows(2)
        .map(|pair| {
            let seconds = pair[1].unix.saturating_sub(pair[0].unix).max(1) as f64;
            let bytes = pair[1].uploaded_bytes.saturating_sub(pair[0].uploaded_bytes) as f64;
            (pair[1].unix, bytes / seconds)
        })
        .collect()
}

/// The upload rate over the last `over` (from the samples), if there are two samples in it.
pub fn recent_rate(samples: &[Sample], over: Duration) -> Option<f64> {
    let last = samples.last()?;
    let first = samples
        .iter()
        .find(|sample| last.unix.saturating_sub(sample.unix) <= over.as_secs())?;
    let seconds = last.unix.saturating_sub(first.unix);
    (seconds > 0).then(|| last.uploaded_bytes.saturating_sub(first.uploaded_bytes) as f64 / seconds as f64)
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 140.0;
const TOP: f64 = 16.0;

/// Bars of the upload rate and a line of the queue depth, over the time the samples span.
pub fn svg(samples: &[Sample]) -> Markup {
    let rates = rates(samples);
    if rates.is_empty() {
        return html! {
            p.muted { "The chart starts after the daemon's first two minutes (a sample a minute)." }
        };
    }
    let (start, end) = (
        samples[0].unix,
        samples[samples.len() - 1].unix.max(samples[0].unix + 1),
    );
    let x = |unix: u64| (unix.saturating_sub(start)) as f64 / (end - start) as f64 * WIDTH;
    let max_rate = rates.iter().map(|(_, rate)| *rate).fold(0.0, f64::max).max(1.0);
    let max_pending = samples.iter().filter_map(|s| s.pending).max().unwrap_or(0).max(1) as f64;
    let plot = HEIGHT - TOP;
    let bar_width = (WIDTH / rates.len() as f64 - 1.0).max(1.0);
    let line: Vec<String> = samples
        .iter()
        .filter_map(|s| {
            s.pending
                .map(|p| format!("{:.1},{:.1}", x(s.unix), HEIGHT - p as f64 / max_pending * plot))
        })
        .collect();
    let hours = (end - start) as f64 / 3600.0;
    html! {
        svg.chart role="img" viewBox=(format!("0 0 {WIDTH} {}", HEIGHT + 14.0)) width="100%"
            aria-label="Upload rate and queue depth over the last hours" {
            @for (at, rate) in &rates {
                @let h = rate / max_rate * plot;
                rect.rate x=(format!("{:.1}", (x(*at) - bar_width).max(0.0))) y=(format!("{:.1}", HEIGHT - h))
                    width=(format!("{bar_width:.1}")) height=(format!("{h:.1}")) {}
            }
            @if line.len() > 1 {
                polyline.pending points=(line.join(" ")) {}
            }
            text x="2" y="11" { "max " (super::views::bytes(max_rate as i64)) "/s (bars)" }
            text x=(WIDTH - 2.0) y="11" text-anchor="end" { "queue max " (max_pending as i64) " (line)" }
            text x="2" y=(HEIGHT + 12.0) { (format!("{hours:.1} h ago")) }
            text x=(WIDTH - 2.0) y=(HEIGHT + 12.0) text-anchor="end" { "now" }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(unix: u64, uploaded_bytes: u64, pending: i64) -> Sample {
        Sample {
            unix,
            uploaded_bytes,
            pending: Some(pending),
        }
    }

    #[test]
    fn rates_come_from_the_difference_of_the_counter() {
        let samples = [sample(0, 0, 10), sample(60, 6_000, 5), sample(120, 6_000, 0)];
        assert_eq!(rates(&samples), vec![(60, 100.0), (120, 0.0)]);
        assert_eq!(recent_rate(&samples, Duration::from_secs(600)), Some(50.0));
        assert_eq!(recent_rate(&samples, Duration::from_secs(60)), Some(0.0));
        assert_eq!(recent_rate(&samples[..1], Duration::from_secs(600)), None);
        let drawn = svg(&samples).into_string();
        assert_eq!(drawn.matches("<rect").count(), 2, "{drawn}");
        assert!(drawn.contains("<polyline"), "{drawn}");
        assert!(svg(&samples[..1]).into_string().contains("chart starts"));
    }

    #[test]
    fn the_history_keeps_six_hours() {
        let history = RateHistory::default();
        for n in 0..(KEPT as u64 + 5) {
            history.record(n, Some(1));
        }
        let samples = history.samples();
        assert_eq!(samples.len(), KEPT);
        assert_eq!(samples[0].uploaded_bytes, 5);
    }
}

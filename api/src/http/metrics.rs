//! Prometheus metrics: requests by operation and status with latency histograms, command
//! (append) latency, and projection lag read at scrape time.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram of atomics.
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {count}");
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let trimmed = labels.trim_end_matches(',');
        let _ = writeln!(out, "{name}_sum{{{trimmed}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{trimmed}}} {count}");
    }
}

/// Records into the histogram of `key`: a shared lock for the common case, the exclusive one
/// only to add a key.
fn observe<K: std::hash::Hash + Eq>(map: &RwLock<HashMap<K, Histogram>>, key: K, elapsed: Duration) {
    if let Some(h) = map.read().unwrap_or_else(PoisonError::into_inner).get(&key) {
        h.observe(elapsed);
        return;
    }
    let mut map = map.write().unwrap_or_else(PoisonError::into_inner);
    map.entry(key).or_default().observe(elapsed);
}

/// The process's metrics.
#[derive(Default)]
pub struct Metrics {
    requests: RwLock<HashMap<(&'static str, &'static str, u16), Histogram>>,
    commands: RwLock<HashMap<&'static str, Histogram>>,
}

impl Metrics {
    /// Records a finished request.
    pub fn request(&self, method: &'static str, operation: &'static str, status: u16, elapsed: Duration) {
        observe(&self.requests, (method, operation, status), elapsed);
    }

    /// Records a command's time from load to durable append.
    pub fn command(&self, command: &'static str, elapsed: Duration) {
        observe(&self.commands, command, elapsed);
    }

    /// The Prometheus text exposition, with the projection gauges given.
    pub fn render(&self, projections: &[(String, u64, u64)], head: u64) -> String {
        let mut out = String::new();
        out.push_str("# HELP vodsource_http_request_duration_seconds HTTP requests by operation and status.\n");
        out.push_str("# TYPE vodsource_http_request_duration_seconds histogram\n");
        {
            let map = self.requests.read().unwrap_or_else(PoisonError::into_inner);
            let mut keys: Vec<_> = map.keys().collect();
            keys.sort();
            for key @ (method, operation, status) in keys {
                let labels = format!("method=\"{method}\",operation=\"{operation}\",status=\"{status}\",");
                if let Some(h) = map.get(key) {
                    h.render(&mut out, "vodsource_http_request_duration_seconds", &labels);
                }
            }
        }
        out.push_str("# HELP vodsource_command_duration_seconds Commands from load to durable append.\n");
        out.push_str("# TYPE vodsource_command_duration_seconds histogram\n");
        {
            let map = self.commands.read().unwrap_or_else(PoisonError::into_inner);
            let mut keys: Vec<_> = map.keys().collect();
            keys.sort();
            for key in keys {
                if let Some(h) = map.get(key) {
                    h.render(
                        &mut out,
                        "vodsource_command_duration_seconds",
                        &format!("command=\"{key}\","),
                    );
                }
            }
        }
        out.push_str("# HELP vodsource_event_log_head Position of the last committed event.\n");
        out.push_str("# TYPE vodsource_event_log_head gauge\n");
        let _ = writeln!(out, "vodsource_event_log_head {head}");
        out.push_str("# HELP vodsource_projection_position Position each projection has applied.\n");
        out.push_str("# TYPE vodsource_projection_position gauge\n");
        for (name, position, _) in projections {
            let _ = writeln!(out, "vodsource_projection_position{{projection=\"{name}\"}} {position}");
        }
        out.push_str("# HELP vodsource_projection_lag_events Events a projection is behind the log head.\n");
        out.push_str("# TYPE vodsource_projection_lag_events gauge\n");
        for (name, _, lag) in projections {
            let _ = writeln!(out, "vodsource_projection_lag_events{{projection=\"{name}\"}} {lag}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_counted() {
        let metrics = Metrics::default();
        metrics.request("GET", "getVideo", 200, Duration::from_micros(300));
        metrics.request("GET", "getVideo", 200, Duration::from_millis(3));
        metrics.request("GET", "getVideo", 404, Duration::from_millis(30));
        let text = metrics.render(&[("catalog".into(), 7, 3)], 10);
        assert!(text.contains(
            "vodsource_http_request_duration_seconds_bucket{method=\"GET\",operation=\"getVideo\",status=\"200\",le=\"0.0005\"} 1"
        ));
        assert!(text.contains(
            "vodsource_http_request_duration_seconds_bucket{method=\"GET\",operation=\"getVideo\",status=\"200\",le=\"0.005\"} 2"
        ));
        assert!(text.contains(
            "vodsource_http_request_duration_seconds_count{method=\"GET\",operation=\"getVideo\",status=\"404\"} 1"
        ));
        assert!(text.contains("vodsource_projection_lag_events{projection=\"catalog\"} 3"));
    }
}

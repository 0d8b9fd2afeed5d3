//! `/metrics` in the Prometheus text exposition format, written by hand.
//!
//! Why by hand: the format is a few lines of text, the set of series is small
//! and fixed, and the `prometheus`/`metrics` crates would bring a global
//! registry (and for `metrics`, an exporter with its own HTTP stack) to print
//! what a `BTreeMap` and a few atomics hold already.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use super::pool::BackendStats;

/// Upper bounds of the latency histogram's buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Default)]
struct Histogram {
    /// Counts per bucket (not cumulative); the last slot is +Inf.
    counts: [u64; BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

/// Everything `/metrics` counts.
#[derive(Default)]
pub(crate) struct Metrics {
    /// (route, status) → requests.
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// route → latency histogram.
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    /// (backend, outcome) → calls of `GET /`'s backends.
    backend_calls: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// Requests shed with 503 because the pool queue or in-flight limit was full.
    pub(crate) shed: AtomicU64,
    /// Requests being served now.
    pub(crate) in_flight: AtomicU64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Count one answered request.
    pub(crate) fn record(&self, route: &'static str, status: u16, elapsed: Duration) {
        *self.requests.lock().entry((route, status)).or_default() += 1;
        let secs = elapsed.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(BUCKETS.len());
        let mut latency = self.latency.lock();
        let h = latency.entry(route).or_default();
        h.counts[bucket] += 1;
        h.sum += secs;
        h.count += 1;
    }

    /// Count one backend call of `GET /` and how it ended.
    pub(crate) fn backend(&self, backend: &'static str, outcome: &'static str) {
        *self
            .backend_calls
            .lock()
            .entry((backend, outcome))
            .or_default() += 1;
    }

    /// The exposition text.
    pub(crate) fn render(&self, pool: BackendStats, pool_kind: &str) -> String {
        let mut out = String::with_capacity(4096);
        // Writing to a String cannot fail.
        let _ = self.write(&mut out, pool, pool_kind);
        out
    }

    fn write(&self, out: &mut String, pool: BackendStats, pool_kind: &str) -> std::fmt::Result {
        writeln!(
            out,
            "# HELP troika_serve_requests_total HTTP requests answered, by route and status."
        )?;
        writeln!(out, "# TYPE troika_serve_requests_total counter")?;
        for ((route, status), n) in self.requests.lock().iter() {
            writeln!(
                out,
                "troika_serve_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            )?;
        }
        writeln!(
            out,
            "# HELP troika_serve_request_duration_seconds Time to answer a request, by route."
        )?;
        writeln!(
            out,
            "# TYPE troika_serve_request_duration_seconds histogram"
        )?;
        for (route, h) in self.latency.lock().iter() {
            let mut cumulative = 0;
            for (i, le) in BUCKETS.iter().enumerate() {
                cumulative += h.counts[i];
                writeln!(
                    out,
                    "troika_serve_request_duration_seconds_bucket{{route=\"{route}\",le=\"{le}\"}} {cumulative}"
                )?;
            }
            writeln!(
                out,
                "troika_serve_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            )?;
            writeln!(
                out,
                "troika_serve_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                h.sum
            )?;
            writeln!(
                out,
                "troika_serve_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.count
            )?;
        }
        writeln!(
            out,
            "# HELP troika_serve_backend_calls_total Calls of GET /'s backends, by outcome."
        )?;
        writeln!(out, "# TYPE troika_serve_backend_calls_total counter")?;
        for ((backend, outcome), n) in self.backend_calls.lock().iter() {
            writeln!(
                out,
                "troika_serve_backend_calls_total{{backend=\"{backend}\",outcome=\"{outcome}\"}} {n}"
            )?;
        }
        let gauges: [(&str, &str, &str, u64); 6] = [
            (
                "troika_serve_in_flight_requests",
                "gauge",
                "Requests being served now.",
                self.in_flight.load(Ordering::Relaxed),
            ),
            (
                "troika_serve_shed_requests_total",
                "counter",
                "Requests refused with 503 because a queue or limit was full.",
                self.shed.load(Ordering::Relaxed),
            ),
            (
                "troika_serve_pool_workers",
                "gauge",
                "Workers of the pool.",
                pool.workers as u64,
            ),
            (
                "troika_serve_pool_queue_depth",
                "gauge",
                "Pool tasks waiting for a worker.",
                pool.queued as u64,
            ),
            (
                "troika_serve_pool_busy_workers",
                "gauge",
                "Pool workers running a task now.",
                pool.busy as u64,
            ),
            (
                "troika_serve_pool_worker_restarts_total",
                "counter",
                "Pool workers replaced (timed out or died).",
                pool.restarts as u64,
            ),
        ];
        for (name, kind, help, value) in gauges {
            writeln!(out, "# HELP {name} {help}")?;
            writeln!(out, "# TYPE {name} {kind}")?;
            if name.starts_with("troika_serve_pool_") {
                writeln!(out, "{name}{{pool=\"{pool_kind}\"}} {value}")?;
            } else {
                writeln!(out, "{name} {value}")?;
            }
        }
        Ok(())
    }
}

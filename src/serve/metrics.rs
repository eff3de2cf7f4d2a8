//! The service's Prometheus metrics, rendered in the text exposition format at `/metrics`.
//!
//! A handful of counters and one histogram, kept in a mutex-guarded map keyed by their
//! labels: a dependency-free registry is enough at this size, and the labels are bounded (the
//! route template, never the concrete path; the method; the status code), so the map cannot
//! grow with traffic.
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `envbuild_http_requests_total` | counter | `route`, `method`, `status` |
//! | `envbuild_http_request_duration_seconds` | histogram (to the response head) | `route`, `method` |
//! | `envbuild_http_response_bytes_total` | counter (body bytes actually sent) | `route` |
//! | `envbuild_http_request_bytes_total` | counter (body bytes received) | `route` |
//! | `envbuild_http_not_modified_total` | counter (conditional GETs answered 304) | `route` |
//! | `envbuild_manifest_cache_total` | counter (the in-memory manifest cache) | `result`: `hit`, `miss` |
//! | `envbuild_http_in_flight` | gauge | |

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency histogram's buckets, in seconds.
const BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<(String, String), Histogram>>,
    response_bytes: Mutex<BTreeMap<String, u64>>,
    request_bytes: Mutex<BTreeMap<String, u64>>,
    not_modified: Mutex<BTreeMap<String, u64>>,
    manifest_hits: AtomicU64,
    manifest_misses: AtomicU64,
    in_flight: AtomicI64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Metrics {
    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub fn request_finished(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        *lock(&self.requests).entry((route.to_owned(), method.to_owned(), status)).or_default() += 1;
        if status == 304 {
            *lock(&self.not_modified).entry(route.to_owned()).or_default() += 1;
        }
        let seconds = elapsed.as_secs_f64();
        let mut latency = lock(&self.latency);
        let histogram = latency.entry((route.to_owned(), method.to_owned())).or_default();
        for (count, bound) in histogram.counts.iter_mut().zip(BUCKETS) {
            if seconds <= bound {
                *count += 1;
            }
        }
        histogram.count += 1;
        histogram.sum += seconds;
    }

    pub fn response_bytes(&self, route: &str, n: u64) {
        *lock(&self.response_bytes).entry(route.to_owned()).or_default() += n;
    }

    pub fn request_bytes(&self, route: &str, n: u64) {
        *lock(&self.request_bytes).entry(route.to_owned()).or_default() += n;
    }

    pub fn manifest_cache(&self, hit: bool) {
        let counter = if hit { &self.manifest_hits } else { &self.manifest_misses };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
        out.push_str("# HELP envbuild_http_requests_total HTTP requests answered.\n");
        out.push_str("# TYPE envbuild_http_requests_total counter\n");
        for ((route, method, status), n) in lock(&self.requests).iter() {
            let _ = writeln!(
                out,
                "envbuild_http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {n}",
                esc(route)
            );
        }
        out.push_str("# HELP envbuild_http_request_duration_seconds Time from request to response head.\n");
        out.push_str("# TYPE envbuild_http_request_duration_seconds histogram\n");
        for ((route, method), h) in lock(&self.latency).iter() {
            let labels = format!("route=\"{}\",method=\"{method}\"", esc(route));
            for (count, bound) in h.counts.iter().zip(BUCKETS) {
                let _ = writeln!(
                    out,
                    "envbuild_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "envbuild_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(out, "envbuild_http_request_duration_seconds_sum{{{labels}}} {}", h.sum);
            let _ = writeln!(out, "envbuild_http_request_duration_seconds_count{{{labels}}} {}", h.count);
        }
        for (name, help, map) in [
            ("envbuild_http_response_bytes_total", "Response body bytes sent.", &self.response_bytes),
            ("envbuild_http_request_bytes_total", "Request body bytes received.", &self.request_bytes),
            (
                "envbuild_http_not_modified_total",
                "Conditional GETs answered 304 Not Modified.",
                &self.not_modified,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (route, n) in lock(map).iter() {
                let _ = writeln!(out, "{name}{{route=\"{}\"}} {n}", esc(route));
            }
        }
        out.push_str("# HELP envbuild_manifest_cache_total Lookups in the in-memory manifest cache.\n");
        out.push_str("# TYPE envbuild_manifest_cache_total counter\n");
        let _ = writeln!(
            out,
            "envbuild_manifest_cache_total{{result=\"hit\"}} {}",
            self.manifest_hits.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "envbuild_manifest_cache_total{{result=\"miss\"}} {}",
            self.manifest_misses.load(Ordering::Relaxed)
        );
        out.push_str(
            "# HELP envbuild_http_in_flight Requests being answered.\n# TYPE envbuild_http_in_flight gauge\n",
        );
        let _ = writeln!(out, "envbuild_http_in_flight {}", self.in_flight.load(Ordering::Relaxed));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = Metrics::default();
        m.request_started();
        m.request_finished("/v1/chunks/{digest}", "GET", 200, Duration::from_millis(3));
        m.request_started();
        m.request_finished("/v1/chunks/{digest}", "GET", 304, Duration::from_millis(30));
        m.response_bytes("/v1/chunks/{digest}", 1000);
        m.manifest_cache(true);
        let text = m.render();
        assert!(text.contains(
            "envbuild_http_requests_total{route=\"/v1/chunks/{digest}\",method=\"GET\",status=\"200\"} 1"
        ));
        assert!(text.contains("le=\"0.005\"} 1\n"), "{text}");
        assert!(text.contains("le=\"0.05\"} 2\n"), "{text}");
        assert!(text.contains("le=\"+Inf\"} 2\n"));
        assert!(text.contains("envbuild_http_not_modified_total{route=\"/v1/chunks/{digest}\"} 1"));
        assert!(text.contains("envbuild_http_response_bytes_total{route=\"/v1/chunks/{digest}\"} 1000"));
        assert!(text.contains("envbuild_manifest_cache_total{result=\"hit\"} 1"));
        assert!(text.contains("envbuild_http_in_flight 0"));
    }
}

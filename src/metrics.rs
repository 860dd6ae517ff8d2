//! Process-wide counters for `GET /metrics`, rendered in the Prometheus text exposition
//! format 0.0.4 by hand (no client library: the format is a few lines of text).
//!
//! Everything here is bounded: requests are keyed by the route *pattern* (never the raw
//! path) or `unmatched`, a method from a fixed list, and a status in 100..=599, so the
//! number of series cannot grow with what clients send. Counters are atomics; the
//! per-route table sits behind one mutex held for a few instructions per request.
//!
//! Recording happens in three places only: the router (`api::Api::handle`: every request
//! with its route, status and handler time), the join endpoints (commands issued,
//! tickets consumed, and the bundle stream through [`CountingReader`]), and
//! `ApiError::from_kube` (Kubernetes failures by kind).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::kube;

/// Upper bounds (seconds) of the request-duration histogram buckets; `+Inf` is implied.
pub const DURATION_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The `route` label of a request that matched no route (404, 405).
pub const UNMATCHED: &str = "unmatched";

/// Methods kept as they are in the `method` label; anything else is `other`.
const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// The `kind` label of `joinery_kubernetes_errors_total`, one per [`kube::Error`] variant.
pub const KUBE_ERROR_KINDS: [&str; 11] = [
    "unavailable",
    "too_many_requests",
    "unauthorized",
    "forbidden",
    "not_found",
    "already_exists",
    "conflict",
    "gone",
    "invalid",
    "protocol",
    "config",
];

/// Connection counters of the HTTP listeners, read when the page is rendered.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Connections {
    pub open: u64,
    pub accepted: u64,
    pub rejected_busy: u64,
}

#[derive(Default)]
struct RouteStats {
    by_status: BTreeMap<u16, u64>,
    /// Non-cumulative counts per bucket; the last slot is `+Inf`.
    buckets: [u64; DURATION_BUCKETS.len() + 1],
    sum_secs: f64,
    count: u64,
}

/// All of joinery's metrics. Use [`global`]; tests may make their own with [`Metrics::new`].
pub struct Metrics {
    /// Keyed by (route pattern, method).
    routes: Mutex<BTreeMap<(&'static str, &'static str), RouteStats>>,
    join_commands_issued: AtomicU64,
    join_tickets_consumed: AtomicU64,
    bundles_streamed: AtomicU64,
    bundle_bytes: AtomicU64,
    kube_errors: [AtomicU64; KUBE_ERROR_KINDS.len()],
}

static GLOBAL: Metrics = Metrics::new();

/// The process's metrics.
pub fn global() -> &'static Metrics {
    &GLOBAL
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub const fn new() -> Metrics {
        Metrics {
            routes: Mutex::new(BTreeMap::new()),
            join_commands_issued: AtomicU64::new(0),
            join_tickets_consumed: AtomicU64::new(0),
            bundles_streamed: AtomicU64::new(0),
            bundle_bytes: AtomicU64::new(0),
            kube_errors: [const { AtomicU64::new(0) }; KUBE_ERROR_KINDS.len()],
        }
    }

    fn routes(&self) -> MutexGuard<'_, BTreeMap<(&'static str, &'static str), RouteStats>> {
        // Nothing panics while holding the lock; a poisoned one still holds good counts.
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records one answered request. `route` is the matched pattern (`None`: no route).
    pub fn record_request(
        &self,
        method: &str,
        route: Option<&'static str>,
        status: u16,
        elapsed: Duration,
    ) {
        let method = METHODS
            .iter()
            .find(|m| **m == method)
            .copied()
            .unwrap_or("other");
        let route = route.unwrap_or(UNMATCHED);
        let status = status.clamp(100, 599);
        let secs = elapsed.as_secs_f64();
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(DURATION_BUCKETS.len());
        let mut routes = self.routes();
        let s = routes.entry((route, method)).or_default();
        *s.by_status.entry(status).or_default() += 1;
        s.buckets[bucket] += 1;
        s.sum_secs += secs;
        s.count += 1;
    }

    pub fn join_command_issued(&self) {
        self.join_commands_issued.fetch_add(1, Ordering::Relaxed);
    }

    pub fn join_ticket_consumed(&self) {
        self.join_tickets_consumed.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a Kubernetes failure that reached a client, by kind.
    pub fn kube_error(&self, err: &kube::Error) {
        use kube::Error as K;
        let kind = match err {
            K::Unavailable(_) => "unavailable",
            K::TooManyRequests { .. } => "too_many_requests",
            K::Unauthorized => "unauthorized",
            K::Forbidden { .. } => "forbidden",
            K::NotFound => "not_found",
            K::AlreadyExists => "already_exists",
            K::Conflict => "conflict",
            K::Gone => "gone",
            K::Invalid(_) => "invalid",
            K::Protocol(_) => "protocol",
            K::Config(_) => "config",
        };
        if let Some(i) = KUBE_ERROR_KINDS.iter().position(|k| *k == kind) {
            self.kube_errors[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The whole page in the text exposition format 0.0.4.
    pub fn render(&self, conns: Connections) -> String {
        let mut out = String::with_capacity(4096);
        family(
            &mut out,
            "joinery_build_info",
            "gauge",
            "Always 1; the labels say which joinery build is running.",
        );
        let _ = writeln!(
            out,
            "joinery_build_info{{version=\"{}\",commit=\"{}\"}} 1",
            escape(crate::version::VERSION),
            escape(crate::version::COMMIT)
        );

        {
            let routes = self.routes();
            family(
                &mut out,
                "joinery_http_requests_total",
                "counter",
                "Requests answered, by route pattern (\"unmatched\" when none), method and status.",
            );
            for ((route, method), s) in routes.iter() {
                for (status, n) in &s.by_status {
                    let _ = writeln!(
                        out,
                        "joinery_http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {n}",
                        escape(route)
                    );
                }
            }
            family(
                &mut out,
                "joinery_http_request_duration_seconds",
                "histogram",
                "Time from the parsed request to the handler's answer (a streamed body's \
                 transfer is not included), by route pattern and method.",
            );
            for ((route, method), s) in routes.iter() {
                let labels = format!("route=\"{}\",method=\"{method}\"", escape(route));
                let mut cumulative = 0;
                for (i, bound) in DURATION_BUCKETS.iter().enumerate() {
                    cumulative += s.buckets[i];
                    let _ = writeln!(
                        out,
                        "joinery_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
                    );
                }
                cumulative += s.buckets[DURATION_BUCKETS.len()];
                let _ = writeln!(
                    out,
                    "joinery_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {cumulative}"
                );
                let _ = writeln!(
                    out,
                    "joinery_http_request_duration_seconds_sum{{{labels}}} {}",
                    s.sum_secs
                );
                let _ = writeln!(
                    out,
                    "joinery_http_request_duration_seconds_count{{{labels}}} {}",
                    s.count
                );
            }
        }

        for (name, kind, help, value) in [
            (
                "joinery_http_open_connections",
                "gauge",
                "Connections being served now (queued for or held by a worker).",
                conns.open,
            ),
            (
                "joinery_http_connections_accepted_total",
                "counter",
                "Connections admitted since start.",
                conns.accepted,
            ),
            (
                "joinery_http_connections_rejected_total",
                "counter",
                "Connections turned away with 503 because every slot was taken.",
                conns.rejected_busy,
            ),
            (
                "joinery_join_commands_issued_total",
                "counter",
                "Join commands handed out (each with a single-use ticket).",
                self.join_commands_issued.load(Ordering::Relaxed),
            ),
            (
                "joinery_join_tickets_consumed_total",
                "counter",
                "Join tokens spent on a bundle download.",
                self.join_tickets_consumed.load(Ordering::Relaxed),
            ),
            (
                "joinery_join_bundles_streamed_total",
                "counter",
                "Join bundles streamed to their end.",
                self.bundles_streamed.load(Ordering::Relaxed),
            ),
            (
                "joinery_join_bundle_bytes_total",
                "counter",
                "Bytes of join bundles handed to the HTTP server.",
                self.bundle_bytes.load(Ordering::Relaxed),
            ),
        ] {
            family(&mut out, name, kind, help);
            let _ = writeln!(out, "{name} {value}");
        }

        family(
            &mut out,
            "joinery_kubernetes_errors_total",
            "counter",
            "Kubernetes API failures that failed a request, by kind.",
        );
        for (i, kind) in KUBE_ERROR_KINDS.iter().enumerate() {
            let _ = writeln!(
                out,
                "joinery_kubernetes_errors_total{{kind=\"{kind}\"}} {}",
                self.kube_errors[i].load(Ordering::Relaxed)
            );
        }
        out
    }
}

/// The watch-fed view's families, appended to the page by `/metrics`.
pub fn render_cache(stats: &crate::cache::Stats) -> String {
    let mut out = String::with_capacity(1024);
    let gauges: [(&str, &str, &str, String); 6] = [
        (
            "joinery_cache_in_sync",
            "gauge",
            "1 when the watch-fed view of nodes, leases and etcd members is in sync (reads are served from it), else 0.",
            u8::from(stats.in_sync).to_string(),
        ),
        (
            "joinery_cache_age_seconds",
            "gauge",
            "Seconds since the node view was last confirmed current by a list, an event or a bookmark (-1: never).",
            stats.age_seconds.map_or("-1".to_string(), |a| format!("{a:.3}")),
        ),
        (
            "joinery_cache_nodes",
            "gauge",
            "Nodes in the view.",
            stats.nodes.to_string(),
        ),
        (
            "joinery_cache_events_total",
            "counter",
            "Watch events applied to the view (all resources).",
            stats.events.to_string(),
        ),
        (
            "joinery_cache_relists_total",
            "counter",
            "Full lists made to (re)fill the view: one per resource at start, then after a 410 Gone or an outage.",
            stats.relists.to_string(),
        ),
        (
            "joinery_cache_waiters",
            "gauge",
            "Open waits (?waitFor=) and node streams (?watch=true).",
            stats.waiting.to_string(),
        ),
    ];
    for (name, kind, help, value) in gauges {
        family(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {}", help.replace('\\', r"\\"));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value: backslash, double quote and newline.
fn escape(s: &str) -> String {
    s.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// A join bundle's reader that counts the bytes it hands out, and the bundle once it
/// reaches its end.
pub struct CountingReader<R> {
    inner: R,
    metrics: &'static Metrics,
    finished: bool,
    /// Bytes still to hand out when the reader was given a range of the bundle; the
    /// server stops reading at a sized body's end and never sees EOF, so a range that
    /// ends the bundle counts it here.
    left: Option<u64>,
    range_ends_bundle: bool,
}

impl<R: Read> CountingReader<R> {
    /// Counts into the process's metrics.
    pub fn bundle(inner: R) -> CountingReader<R> {
        CountingReader::new(inner, global())
    }

    /// Hands out `len` bytes of `inner` at most; the bundle counts as streamed when they
    /// are all out and `ends_bundle` (the range reaches the bundle's last byte).
    pub fn range(self, len: u64, ends_bundle: bool) -> CountingReader<R> {
        CountingReader {
            left: Some(len),
            range_ends_bundle: ends_bundle,
            ..self
        }
    }

    pub fn new(inner: R, metrics: &'static Metrics) -> CountingReader<R> {
        CountingReader {
            inner,
            metrics,
            finished: false,
            left: None,
            range_ends_bundle: false,
        }
    }

    fn finish(&mut self) {
        if !self.finished {
            self.finished = true;
            self.metrics
                .bundles_streamed
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let buf = match self.left {
            Some(0) => return Ok(0),
            Some(left) => {
                let max = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                &mut buf[..max]
            }
            None => buf,
        };
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.metrics
                .bundle_bytes
                .fetch_add(n as u64, Ordering::Relaxed);
            if let Some(left) = &mut self.left {
                *left -= n as u64;
                if *left == 0 && self.range_ends_bundle {
                    self.finish();
                }
            }
        } else if !buf.is_empty() && self.left.is_none() {
            self.finish();
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Samples of a page as (name with labels, value), skipping comments.
    fn samples(page: &str) -> BTreeMap<String, String> {
        page.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (k, v) = l.rsplit_once(' ').expect("sample line has a value");
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    #[test]
    fn every_line_is_a_comment_or_a_well_formed_sample() {
        let m = Metrics::new();
        m.record_request(
            "GET",
            Some("/v1/nodes/{name}"),
            200,
            Duration::from_millis(3),
        );
        m.record_request("BREW", None, 404, Duration::from_millis(1));
        let page = m.render(Connections::default());
        let mut typed = Vec::new();
        for line in page.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                assert!(!typed.contains(&name.to_string()), "{name} typed twice");
                typed.push(name.to_string());
            } else if line.starts_with("# HELP ") {
            } else {
                let (series, value) = line.rsplit_once(' ').unwrap();
                assert!(value.parse::<f64>().is_ok(), "{line}");
                let name = series.split('{').next().unwrap();
                assert!(
                    typed
                        .iter()
                        .any(|t| name == t || name.starts_with(&format!("{t}_"))),
                    "{line} precedes its TYPE"
                );
                assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
            }
        }
        assert!(page.ends_with('\n'));
    }

    #[test]
    fn requests_are_keyed_by_pattern_and_bounded() {
        let m = Metrics::new();
        for _ in 0..3 {
            m.record_request("GET", Some("/v1/nodes"), 200, Duration::from_millis(2));
        }
        m.record_request("GET", Some("/v1/nodes"), 401, Duration::from_millis(2));
        // Whatever a client sends as method or path, unmatched requests share one series.
        for i in 0..100 {
            m.record_request(&format!("X{i}"), None, 404, Duration::ZERO);
        }
        let s = samples(&m.render(Connections::default()));
        let at = |k: &str| s.get(k).map(String::as_str);
        assert_eq!(
            at(r#"joinery_http_requests_total{route="/v1/nodes",method="GET",status="200"}"#),
            Some("3")
        );
        assert_eq!(
            at(r#"joinery_http_requests_total{route="/v1/nodes",method="GET",status="401"}"#),
            Some("1")
        );
        assert_eq!(
            at(r#"joinery_http_requests_total{route="unmatched",method="other",status="404"}"#),
            Some("100")
        );
        assert_eq!(
            s.keys()
                .filter(|k| k.starts_with("joinery_http_requests_total"))
                .count(),
            3
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::new();
        for ms in [1, 20, 20, 700, 60_000] {
            m.record_request("POST", Some("/x"), 200, Duration::from_millis(ms));
        }
        let s = samples(&m.render(Connections::default()));
        let bucket = |le: &str| {
            s[&format!(
                r#"joinery_http_request_duration_seconds_bucket{{route="/x",method="POST",le="{le}"}}"#
            )]
            .clone()
        };
        assert_eq!(bucket("0.005"), "1");
        assert_eq!(bucket("0.025"), "3");
        assert_eq!(bucket("0.5"), "3");
        assert_eq!(bucket("1"), "4");
        assert_eq!(bucket("30"), "4");
        assert_eq!(bucket("+Inf"), "5");
        assert_eq!(
            s[r#"joinery_http_request_duration_seconds_count{route="/x",method="POST"}"#],
            "5"
        );
        let sum: f64 = s[r#"joinery_http_request_duration_seconds_sum{route="/x",method="POST"}"#]
            .parse()
            .unwrap();
        assert!((sum - 60.741).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn counters_and_connections() {
        let m = Metrics::new();
        m.join_command_issued();
        m.join_command_issued();
        m.join_ticket_consumed();
        m.kube_error(&kube::Error::Unavailable("x".into()));
        m.kube_error(&kube::Error::Forbidden {
            message: "m".into(),
        });
        let page = m.render(Connections {
            open: 2,
            accepted: 9,
            rejected_busy: 1,
        });
        let s = samples(&page);
        assert_eq!(s["joinery_join_commands_issued_total"], "2");
        assert_eq!(s["joinery_join_tickets_consumed_total"], "1");
        assert_eq!(
            s[r#"joinery_kubernetes_errors_total{kind="unavailable"}"#],
            "1"
        );
        assert_eq!(
            s[r#"joinery_kubernetes_errors_total{kind="forbidden"}"#],
            "1"
        );
        assert_eq!(s[r#"joinery_kubernetes_errors_total{kind="gone"}"#], "0");
        assert_eq!(s["joinery_http_open_connections"], "2");
        assert_eq!(s["joinery_http_connections_accepted_total"], "9");
        assert_eq!(s["joinery_http_connections_rejected_total"], "1");
    }

    #[test]
    fn bundle_reader_counts_bytes_and_one_finished_bundle() {
        let m: &'static Metrics = Box::leak(Box::new(Metrics::new()));
        let mut r = CountingReader::new(&[7u8; 10_000][..], m);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), 10_000);
        // Reading again at the end does not count a second bundle.
        assert_eq!(r.read(&mut [0; 8]).unwrap(), 0);
        let s = samples(&m.render(Connections::default()));
        assert_eq!(s["joinery_join_bundle_bytes_total"], "10000");
        assert_eq!(s["joinery_join_bundles_streamed_total"], "1");
    }

    #[test]
    fn a_range_counts_the_bundle_only_when_it_reaches_the_end() {
        // The server reads a sized body only up to its length, never to EOF.
        let m: &'static Metrics = Box::leak(Box::new(Metrics::new()));
        let mut first = CountingReader::new(&[7u8; 10_000][..], m).range(4_000, false);
        let mut out = Vec::new();
        first.read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), 4_000);
        let s = samples(&m.render(Connections::default()));
        assert_eq!(s["joinery_join_bundles_streamed_total"], "0");
        let mut rest = CountingReader::new(&[7u8; 6_000][..], m).range(6_000, true);
        let mut buf = [0u8; 6_000];
        rest.read_exact(&mut buf).unwrap();
        let s = samples(&m.render(Connections::default()));
        assert_eq!(s["joinery_join_bundle_bytes_total"], "10000");
        assert_eq!(s["joinery_join_bundles_streamed_total"], "1");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), r#"a\"b\\c\nd"#);
    }
}

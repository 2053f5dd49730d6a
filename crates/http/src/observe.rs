//! Metrics and request logs.
//!
//! - Every routed request is counted and timed by method, route template
//!   (`/v1/leads/{id}`, never the concrete id, so label cardinality stays
//!   bounded) and status: `http_requests_total`,
//!   `http_request_duration_seconds`.
//! - `GET /metrics` renders Prometheus text. Pool occupancy and the cache's
//!   counters are sampled at scrape time rather than pushed on every
//!   request: a scrape every few seconds costs less than an atomic per hit.
//! - Histogram samples wait in the recorder until they are folded into
//!   their buckets. The exporter's own upkeep task is not started by
//!   `install_recorder`, so [`Upkeep`] does it while the server runs:
//!   without it, an instance nobody scrapes grows by about 8 bytes per
//!   sample, for ever.
//! - Every request gets an id: the caller's `X-Request-Id` when sent, a
//!   fresh UUID otherwise, echoed in the response and recorded on the
//!   request's log span with the method, path and, once authenticated, the
//!   tenant. Headers (and so API keys) are never logged.

use std::{
    cell::RefCell,
    collections::HashMap,
    sync::OnceLock,
    time::{Duration, Instant},
};

use axum::{
    extract::{MatchedPath, Request, State},
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::AppState;

/// Latency buckets in seconds: sub-millisecond cache hits to multi-second stalls.
const LATENCY_BUCKETS: &[f64] = &[
    0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus recorder, installed on first use. One per
/// process: the `metrics` facade has a single global recorder.
pub fn metrics_handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                // Every histogram here is a latency in seconds: HTTP
                // requests, database operations, pool acquires.
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            // Fails only if another recorder was installed first (a test
            // harness, say); then keep a private one so /metrics still works.
            builder
                .install_recorder()
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder().handle())
        })
        .clone()
}

/// How often [`Upkeep`] folds pending histogram samples into their
/// buckets: the period of the exporter's own upkeep task.
pub(crate) const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Runs the recorder's upkeep every [`UPKEEP_EVERY`] until dropped.
pub(crate) struct Upkeep(tokio::task::JoinHandle<()>);

impl Upkeep {
    /// Starts the upkeep of this process's recorder.
    pub(crate) fn start() -> Self {
        let handle = metrics_handle();
        Self::every(UPKEEP_EVERY, move || handle.run_upkeep())
    }

    /// Calls `upkeep` every `period`, first after one period. Each call
    /// runs on the blocking pool: it touches every sample recorded since
    /// the last one, which under load is a few milliseconds of CPU that
    /// should not hold up a worker's requests.
    pub(crate) fn every(period: Duration, upkeep: impl Fn() + Clone + Send + 'static) -> Self {
        Self(tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let upkeep = upkeep.clone();
                // A panic inside the exporter would end this task only.
                let _ = tokio::task::spawn_blocking(upkeep).await;
            }
        }))
    }
}

impl Drop for Upkeep {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Counts and times a routed request (the outermost of the route layers,
/// so the matched route template is known), `next` being the rest of its
/// handling.
pub(crate) async fn track<F, Fut>(request: Request, next: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let started = Instant::now();
    // The methods HTTP defines, and one label for anything else: a client
    // inventing methods must not invent metric series.
    let method = match request.method().as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        "TRACE" => "TRACE",
        "CONNECT" => "CONNECT",
        _ => "OTHER",
    };
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next(request).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    record(method, route, response.status().as_u16(), started.elapsed());
    response
}

/// One request series' handles: its counter and its latency histogram.
struct RequestSeries {
    method: &'static str,
    status: u16,
    count: metrics::Counter,
    latency: metrics::Histogram,
}

thread_local! {
    /// The handles of every series this worker thread has recorded, by
    /// route template. Building a series' handles allocates its three label
    /// strings and looks the label set up in the recorder; a request does
    /// that once per thread and series, not every time. Bounded: route
    /// templates, methods and statuses are few.
    static SERIES: RefCell<HashMap<String, Vec<RequestSeries>>> = RefCell::new(HashMap::new());
}

/// Counts and times one request in its (method, route, status) series.
fn record(method: &'static str, route: &str, status: u16, elapsed: Duration) {
    SERIES.with(|series| {
        let mut series = series.borrow_mut();
        if !series.contains_key(route) {
            series.insert(route.to_owned(), Vec::new());
        }
        let Some(of_route) = series.get_mut(route) else {
            return;
        };
        if let Some(known) = of_route
            .iter()
            .find(|s| s.method == method && s.status == status)
        {
            known.count.increment(1);
            known.latency.record(elapsed.as_secs_f64());
            return;
        }
        let labels = [
            ("method", method.to_owned()),
            ("route", route.to_owned()),
            ("status", status.to_string()),
        ];
        let new = RequestSeries {
            method,
            status,
            count: metrics::counter!("http_requests_total", &labels),
            latency: metrics::histogram!("http_request_duration_seconds", &labels),
        };
        new.count.increment(1);
        new.latency.record(elapsed.as_secs_f64());
        of_route.push(new);
    });
}

/// Prometheus metrics: requests by route template and status, pool
/// occupancy, cache counters.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses((status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain")),
)]
pub(crate) async fn render(State(state): State<AppState>) -> Response {
    let services = state.services();
    let pools = [
        ("primary", Some(services.health.pool_stats())),
        ("replica", services.health.read_pool_stats()),
        ("point_reads", services.health.point_read_stats()),
    ];
    for (name, stats) in pools {
        let Some(pool) = stats else { continue };
        metrics::gauge!("db_pool_connections", "pool" => name, "state" => "idle")
            .set(f64::from(pool.idle));
        metrics::gauge!("db_pool_connections", "pool" => name, "state" => "in_use")
            .set(f64::from(pool.in_use));
        metrics::gauge!("db_pool_max_connections", "pool" => name).set(f64::from(pool.max));
    }
    let cache = services.context.cache_stats();
    for (tier, t) in [("l1", cache.l1), ("l2", cache.l2)] {
        metrics::counter!("cache_hits_total", "tier" => tier).absolute(t.hits);
        metrics::counter!("cache_misses_total", "tier" => tier).absolute(t.misses);
        metrics::counter!("cache_evictions_total", "tier" => tier).absolute(t.evictions);
        metrics::counter!("cache_errors_total", "tier" => tier).absolute(t.errors);
    }
    metrics::counter!("cache_loads_total").absolute(cache.loads);
    metrics::counter!("cache_load_errors_total").absolute(cache.load_errors);
    metrics::counter!("cache_load_seconds_total").absolute(cache.load_time.as_secs());
    metrics::counter!("cache_stale_served_total").absolute(cache.stale_served);
    metrics::counter!("cache_invalidations_sent_total").absolute(cache.invalidations_sent);
    metrics::counter!("cache_invalidations_received_total").absolute(cache.invalidations_received);
    let handle = metrics_handle();
    handle.run_upkeep();
    let mut response = handle.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// The longest `X-Request-Id` kept from a caller.
const REQUEST_ID_MAX: usize = 128;

/// Whether a caller's `X-Request-Id` is kept: at most [`REQUEST_ID_MAX`]
/// characters of letters, digits and `-_.:/+=@`. Anything else (quotes,
/// spaces, control characters, a megabyte of text) could forge log lines or
/// fields, so it is replaced by a fresh id rather than logged.
fn acceptable_request_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= REQUEST_ID_MAX
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=@".contains(b))
        // An API key pasted into the wrong header would be logged and kept
        // in the audit trail as the request's id.
        && !bytes
            .get(..3)
            .is_some_and(|p| p.eq_ignore_ascii_case(leadline_domain::ApiKeyToken::PREFIX.as_bytes()))
}

/// Drops a caller's `X-Request-Id` that [`acceptable_request_id`] refuses,
/// so the request-id layer behind it makes a new one.
pub(crate) async fn screen_request_id(mut request: Request) -> Request {
    let refused = request
        .headers()
        .get_all("x-request-id")
        .iter()
        .enumerate()
        .any(|(i, v)| i > 0 || !acceptable_request_id(v));
    if refused {
        request.headers_mut().remove("x-request-id");
    }
    request
}

/// The span every request is logged in. Values a caller chose are logged
/// quoted and escaped (`?`), never raw.
pub(crate) fn request_span(request: &Request) -> tracing::Span {
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!(
        "request",
        request_id = ?request_id,
        method = %request.method(),
        path = %loggable_path(request.uri().path()),
        tenant_id = tracing::field::Empty,
    )
}

/// A request path as the log may show it: a console login link's token is
/// a secret in the path, and stays out.
fn loggable_path(path: &str) -> &str {
    if path.starts_with("/login/link/") {
        "/login/link/<token>"
    } else {
        path
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    /// A series' handles are built once per thread and reused: every
    /// request still counts, from any thread, in the one series its labels
    /// name, and another status is another series.
    #[test]
    fn each_request_counts_once_in_its_series_from_any_thread() {
        let handle = metrics_handle();
        let route = "/observe-test/{id}";
        let ms = Duration::from_millis(1);
        for _ in 0..3 {
            record("GET", route, 200, ms);
        }
        std::thread::spawn(move || {
            record("GET", route, 200, ms);
            record("GET", route, 200, ms);
            record("GET", route, 404, ms);
        })
        .join()
        .expect("the other thread records");
        handle.run_upkeep();
        let text = handle.render();
        for line in [
            r#"http_requests_total{method="GET",route="/observe-test/{id}",status="200"} 5"#,
            r#"http_requests_total{method="GET",route="/observe-test/{id}",status="404"} 1"#,
            r#"http_request_duration_seconds_count{method="GET",route="/observe-test/{id}",status="200"} 5"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line} in:\n{text}"
            );
        }
    }

    #[test]
    fn login_links_stay_out_of_the_log() {
        assert_eq!(
            loggable_path("/login/link/lll_0123_abcd"),
            "/login/link/<token>"
        );
        assert_eq!(loggable_path("/v1/leads"), "/v1/leads");
    }

    #[test]
    fn request_ids_that_could_forge_a_log_line_are_refused() {
        for ok in [
            "abc-123",
            "0b6f4c1e-8d2a-4f3e-9c1b-7a6d5e4f3a2b",
            "trace:1/2+x=y@z",
        ] {
            assert!(acceptable_request_id(&HeaderValue::from_static(ok)), "{ok}");
        }
        let long = "a".repeat(REQUEST_ID_MAX + 1);
        for bad in [
            "",
            "x\" level=error msg=\"forged",
            "a b",
            "a\tb",
            long.as_str(),
            // A key pasted into the wrong header.
            "ll_0192f3a4b5c6d7e8f9a0b1c2d3e4f5a6_0123456789abcdef",
            "LL_0192f3a4",
        ] {
            let value = HeaderValue::from_str(bad).expect("a header value");
            assert!(!acceptable_request_id(&value), "{bad:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn upkeep_runs_every_period_until_it_is_dropped() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let upkeep = Upkeep::every(Duration::from_secs(5), move || {
            counted.fetch_add(1, Ordering::SeqCst);
        });

        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 0, "ran before one period");
        tokio::time::sleep(Duration::from_secs(12)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 3, "at 5, 10 and 15 s");

        drop(upkeep);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 3, "ran after it was dropped");
    }
}

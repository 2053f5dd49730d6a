//! Metrics and request logs.
//!
//! - Every routed request is counted and timed by method, route template
//!   (`/v1/leads/{id}`, never the concrete id, so label cardinality stays
//!   bounded) and status: `http_requests_total`,
//!   `http_request_duration_seconds`.
//! - `GET /metrics` renders Prometheus text. Pool occupancy and the cache's
//!   counters are sampled at scrape time rather than pushed on every
//!   request: a scrape every few seconds costs less than an atomic per hit.
//! - Every request gets an id: the caller's `X-Request-Id` when sent, a
//!   fresh UUID otherwise, echoed in the response and recorded on the
//!   request's log span with the method, path and, once authenticated, the
//!   tenant. Headers (and so API keys) are never logged.

use std::{sync::OnceLock, time::Instant};

use axum::{
    extract::{MatchedPath, Request, State},
    http::{HeaderValue, header},
    middleware::Next,
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

/// Counts and times a routed request (a route layer, so the matched route
/// template is known).
pub(crate) async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let labels = [
        ("method", method),
        ("route", route),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
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

/// The span every request is logged in.
pub(crate) fn request_span(request: &Request) -> tracing::Span {
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %request.method(),
        path = %request.uri().path(),
        tenant_id = tracing::field::Empty,
    )
}

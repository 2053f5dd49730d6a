//! leadline's HTTP adapter: an axum router over the app's services.
//!
//! - Routes live under `/v1`; `/healthz` says the process is up, `/readyz`
//!   that the database answers.
//! - Every request under `/v1` authenticates with a tenant API key
//!   (`Authorization: Bearer ll_…`); the tenant it resolves to scopes every
//!   call, so another tenant's ids are simply not found (404). Each
//!   operation needs one scope, which the key's role or scopes must grant
//!   (403 otherwise): see [`auth`].
//! - Errors are `application/problem+json` (RFC 9457) built in one place,
//!   [`error::ApiError`], naming the field that failed. A 500 is a bug: it
//!   is logged with its cause and answered with a generic body.
//! - [`serve`] takes a bound listener and a shutdown future, so tests bind
//!   `127.0.0.1:0` and stop the server cleanly.
//! - The OpenAPI 3.1 document is built with the routes, from the handlers'
//!   annotations ([`openapi_document`]); it is served at `/openapi.json`, and
//!   `/docs` renders it with Swagger UI from files inside the binary.

mod analytics;
mod approvals;
mod audit;
mod auth;
mod batch;
mod changes;
mod console;
mod context;
mod cursor;
mod deliveries;
mod dto;
mod duplicates;
pub mod error;
pub use imports::sweep_spool;
pub use observe::metrics_handle;
mod export;
mod extract;
mod idempotency;
mod imports;
mod keys;
mod observe;
mod openapi;
mod privacy;
mod retention;
mod routes;
mod search;
mod server;
mod timeline;
mod users;
mod webhooks;

use std::{future::Future, sync::Arc, time::Duration};

use axum::{Router, extract::State};
use leadline_app::Services;
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;

use crate::error::ApiError;

/// What handlers share.
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<StateInner>,
}

#[derive(Debug)]
struct StateInner {
    services: Services,
    readiness_timeout: Duration,
    /// False while the start-up preload runs; `/readyz` says "warming up".
    warm: std::sync::atomic::AtomicBool,
}

/// Marks the end of the start-up preload; see [`AppState::warming`].
#[derive(Debug)]
pub struct Warmup(AppState);

impl Warmup {
    /// The caches are warm (or the preload's deadline passed): ready.
    pub fn done(self) {
        self.0
            .inner
            .warm
            .store(true, std::sync::atomic::Ordering::Release);
    }
}

impl AppState {
    /// Wraps the services.
    #[must_use]
    pub fn new(services: Services) -> Self {
        Self::with_warmth(services, true)
    }

    /// A state that reports "warming up" on `/readyz` until the returned
    /// [`Warmup`] is done.
    #[must_use]
    pub fn warming(services: Services) -> (Self, Warmup) {
        let state = Self::with_warmth(services, false);
        (state.clone(), Warmup(state))
    }

    fn with_warmth(services: Services, warm: bool) -> Self {
        Self {
            inner: Arc::new(StateInner {
                services,
                readiness_timeout: Duration::from_secs(2),
                warm: std::sync::atomic::AtomicBool::new(warm),
            }),
        }
    }

    pub(crate) fn is_warm(&self) -> bool {
        self.inner.warm.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn services(&self) -> &Services {
        &self.inner.services
    }
}

/// The API's routes, its OpenAPI document and the scope each operation
/// needs, built from one list: each route is registered from its handler's
/// `#[utoipa::path]`, which also gives its document entry and its scope.
fn api() -> (
    Router<AppState>,
    utoipa::openapi::OpenApi,
    auth::Permissions,
) {
    let (routes, mut document) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(routes::routes())
        .merge(search::routes())
        .merge(export::routes())
        .merge(duplicates::routes())
        .merge(batch::routes())
        .merge(imports::routes())
        .merge(approvals::routes())
        .merge(deliveries::routes())
        .merge(changes::routes())
        .merge(analytics::routes())
        .merge(audit::routes())
        .merge(privacy::routes())
        .merge(retention::routes())
        .merge(webhooks::routes())
        .merge(keys::routes())
        .merge(users::routes())
        .merge(timeline::routes())
        .merge(context::routes())
        .routes(utoipa_axum::routes!(observe::render))
        .split_for_parts();
    let permissions = auth::Permissions::from_document(&document);
    openapi::conventions(&mut document);
    (routes, document, permissions)
}

/// The OpenAPI 3.1 document served at `/openapi.json`.
#[must_use]
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    api().1
}

/// The whole API as a router.
pub fn router(state: AppState) -> Router {
    use tower_http::{
        request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
        trace::DefaultOnResponse,
    };
    // Touch the recorder before the first request so metrics are recorded
    // from the start.
    let _ = observe::metrics_handle();
    let (routes, document, permissions) = api();
    let api = routes
        .merge(openapi::docs(document))
        .merge(console::routes(state.clone()))
        .fallback(|| async { ApiError::not_found("route") })
        // After every route is in: it applies to the routes present.
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .route_layer(axum::middleware::from_fn_with_state(
            (state.clone(), Arc::new(permissions)),
            route_layer,
        ))
        .with_state(state);
    // The layers every request passes, wrapped once around the whole router
    // (`Router::layer` would wrap each route in them, and a request would
    // clone that stack at every level of it).
    let outer = tower::ServiceBuilder::new()
        // Limits on the request head apply to every route, the fallback too.
        .layer(axum::middleware::from_fn(server::head_limits))
        // A caller's id that could forge a log line goes first.
        .layer(axum::middleware::map_request(observe::screen_request_id))
        // Then the id is set, then the span sees it, then it is copied onto
        // the response.
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(observe::request_span)
                .on_response(
                    DefaultOnResponse::new()
                        .level(tracing::Level::INFO)
                        .latency_unit(tower_http::LatencyUnit::Micros),
                ),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .service(api);
    Router::new().fallback_service(outer)
}

/// What runs around every routed request, outermost first: its metrics,
/// the API-key check (and rate limit), then its `Idempotency-Key`.
///
/// One middleware rather than three stacked `route_layer`s: each layer
/// wraps every route in its own boxed service, which a request clones and
/// boxes again at each level (with the outer layers wrapped once, the two
/// changes took the cache-hot context's server CPU per request down by a
/// sixth).
async fn route_layer(
    State((state, permissions)): State<(AppState, Arc<auth::Permissions>)>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    observe::track(request, |request| {
        auth::layer(&state, &permissions, request, |request| {
            idempotency::layer(&state, request, |request| next.run(request))
        })
    })
    .await
}

/// Serves `router` on `listener` until `shutdown` completes, then stops
/// accepting and lets in-flight requests finish. Meanwhile the metrics
/// recorder's upkeep runs every few seconds, scraped or not.
///
/// # Errors
/// The accept loop's I/O error.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let _upkeep = observe::Upkeep::start();
    server::run(listener, router, shutdown).await
}

#[cfg(test)]
mod tests;

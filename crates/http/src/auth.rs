//! Who is calling and whether they may: every `/v1` request authenticates
//! with an API key, then must hold the scope its operation declares.
//!
//! Each handler declares its scope once, in its `#[utoipa::path]`
//! annotation (`security(("api_key" = ["leads:write"]))`). The router
//! reads the table of scopes back from the OpenAPI document it was built
//! with, so what the document says an operation needs is exactly what is
//! enforced: the two cannot drift. An operation under `/v1` without a
//! scope stops the router from being built at all.
//!
//! The check runs as a route layer, before the idempotency layer and the
//! handler: a refused request has no effect, stores no idempotent answer
//! and costs no body read.
//!
//! The same layer applies the rate limits ([`leadline_app::RateLimitService`]):
//! once the caller is known, the request counts against its key's and its
//! tenant's limit for its class (reads, writes, imports). Past either it is
//! a 429 with `Retry-After`; every answer carries the IETF `RateLimit-Policy`
//! and `RateLimit` headers (draft-ietf-httpapi-ratelimit-headers).

use std::collections::HashMap;

use axum::{
    extract::{MatchedPath, Request},
    http::{HeaderValue, Method, header},
    response::{IntoResponse, Response},
};
use leadline_domain::{Actor, AuditContext, Caller, RouteClass, Scope};
use leadline_ports::{RateLimits, RateVerdict};
use utoipa::openapi::{HttpMethod, OpenApi};

use crate::{AppState, error::ApiError};

/// The security scheme's name in the document.
pub(crate) const API_KEY: &str = "api_key";

/// The scope each `/v1` operation needs, by method and route template.
#[derive(Debug, Default)]
pub(crate) struct Permissions(HashMap<(Method, String), Scope>);

impl Permissions {
    /// Reads the table from the document's security requirements.
    ///
    /// # Panics
    /// When an operation under `/v1` declares no scope, more than one, or
    /// one that is not a [`Scope`]: a programming error, caught by every
    /// test that builds the router.
    pub(crate) fn from_document(doc: &OpenApi) -> Self {
        let mut table = HashMap::new();
        for (path, item) in &doc.paths.paths {
            if !path.starts_with("/v1/") {
                continue;
            }
            let mut item = item.clone();
            for (method, operation) in crate::openapi::operations_mut(&mut item) {
                let scope = declared_scope(operation).unwrap_or_else(|why| {
                    panic!("{} {path}: {why}; add security((\"api_key\" = [\"<scope>\"])) to its #[utoipa::path]", http_method(&method))
                });
                table.insert((http_method(&method), path.clone()), scope);
            }
        }
        Self(table)
    }

    /// The scope `method` on route template `path` needs, if it is an
    /// operation of ours.
    pub(crate) fn needed(&self, method: &Method, path: &str) -> Option<Scope> {
        // axum answers HEAD with the GET handler.
        let method = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        self.0.get(&(method.clone(), path.to_owned())).copied()
    }
}

/// The one scope an operation declares.
pub(crate) fn declared_scope(
    operation: &utoipa::openapi::path::Operation,
) -> Result<Scope, &'static str> {
    let requirements = operation
        .security
        .as_ref()
        .ok_or("declares no security requirement")?;
    let [requirement] = requirements.as_slice() else {
        return Err("must declare exactly one security requirement");
    };
    let value = serde_json::to_value(requirement).map_err(|_| "unreadable requirement")?;
    let scopes = value
        .get(API_KEY)
        .and_then(|v| v.as_array())
        .ok_or("must use the api_key scheme")?;
    let [scope] = scopes.as_slice() else {
        return Err("must name exactly one scope");
    };
    scope
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or("names an unknown scope")
}

fn http_method(method: &HttpMethod) -> Method {
    match method {
        HttpMethod::Get => Method::GET,
        HttpMethod::Put => Method::PUT,
        HttpMethod::Post => Method::POST,
        HttpMethod::Delete => Method::DELETE,
        HttpMethod::Options => Method::OPTIONS,
        HttpMethod::Head => Method::HEAD,
        HttpMethod::Patch => Method::PATCH,
        HttpMethod::Trace => Method::TRACE,
    }
}

/// The authenticated caller, once the layer let the request through.
#[derive(Debug, Clone)]
pub(crate) struct CurrentCaller(pub Caller);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for CurrentCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Self>()
            .cloned()
            .ok_or_else(ApiError::unauthorized)
    }
}

/// The route layer's check: authenticates `/v1` requests and checks their
/// scope before `next`, the rest of their handling.
pub(crate) async fn layer<F, Fut>(
    state: &AppState,
    permissions: &Permissions,
    mut request: Request,
    next: F,
) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    // (A `MatchedPath` clone shares its string.)
    let Some(matched) = request.extensions().get::<MatchedPath>().cloned() else {
        return next(request).await;
    };
    let path = matched.as_str();
    if !path.starts_with("/v1/") {
        return next(request).await;
    }
    // Every routed operation is in the table; a method that is not is
    // refused here rather than trusted to be unrouted.
    let Some(scope) = permissions.needed(request.method(), path) else {
        return ApiError::method_not_allowed().into_response();
    };
    let token = bearer(request.headers()).map(str::to_owned);
    let caller = match authenticate(state, token).await {
        Ok(caller) => caller,
        Err(e) => return e.into_response(),
    };
    tracing::Span::current().record("tenant_id", tracing::field::display(caller.tenant.id));
    if let Err(refused) = caller.require(scope) {
        return ApiError::forbidden(&refused).into_response();
    }
    let class = route_class(request.method(), path);
    let rate_limits = &state.services().rate_limits;
    let verdict = rate_limits.check(&caller, class).await;
    let limits = rate_limits.limits(class);
    if let (Some(verdict), Some(limits)) = (verdict, limits) {
        if !verdict.allowed() {
            let (limit, rate, decision) = if verdict.key.allowed {
                ("tenant", limits.tenant, verdict.tenant)
            } else {
                ("key", limits.key, verdict.key)
            };
            let mut response =
                ApiError::rate_limited(limit, class, &rate, decision.retry_after_secs())
                    .into_response();
            rate_limit_headers(response.headers_mut(), class, &limits, &verdict);
            return response;
        }
        let context = audit_context(&caller, &request);
        request.extensions_mut().insert(CurrentCaller(caller));
        let mut response = leadline_ports::audited(context, next(request)).await;
        rate_limit_headers(response.headers_mut(), class, &limits, &verdict);
        return response;
    }
    let context = audit_context(&caller, &request);
    request.extensions_mut().insert(CurrentCaller(caller));
    leadline_ports::audited(context, next(request)).await
}

/// On whose behalf the request's writes are made: its API key, and its
/// request id (screened, or generated, by the layers outside).
fn audit_context(caller: &Caller, request: &Request) -> AuditContext {
    AuditContext {
        actor: Actor {
            key_id: Some(caller.key_id),
            ..Actor::default()
        },
        request_id: request_id(request.headers()),
    }
}

/// The request's `X-Request-Id`.
pub(crate) fn request_id(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The class a request is limited in.
fn route_class(method: &Method, path: &str) -> RouteClass {
    if method == Method::GET || method == Method::HEAD {
        RouteClass::Read
    } else if path == "/v1/imports" {
        RouteClass::Import
    } else {
        RouteClass::Write
    }
}

/// `RateLimit-Policy` lists both limits of the class; `RateLimit` gives the
/// one closest to refusing (the one that refused, when one did).
fn rate_limit_headers(
    headers: &mut axum::http::HeaderMap,
    class: RouteClass,
    limits: &RateLimits,
    verdict: &RateVerdict,
) {
    let policy = format!(
        "\"key-{class}\";q={};w={}, \"tenant-{class}\";q={};w={}",
        limits.key.burst(),
        limits.key.window_secs(),
        limits.tenant.burst(),
        limits.tenant.window_secs(),
    );
    let key_binds = !verdict.key.allowed
        || (verdict.tenant.allowed && verdict.key.remaining <= verdict.tenant.remaining);
    let (name, decision) = if key_binds {
        ("key", verdict.key)
    } else {
        ("tenant", verdict.tenant)
    };
    let current = format!(
        "\"{name}-{class}\";r={};t={}",
        decision.remaining,
        decision.reset_secs()
    );
    for (header, value) in [("ratelimit-policy", policy), ("ratelimit", current)] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(header, value);
        }
    }
}

/// The token of an `Authorization: Bearer` header.
fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
}

async fn authenticate(state: &AppState, token: Option<String>) -> Result<Caller, ApiError> {
    let token = token.ok_or_else(ApiError::unauthorized)?;
    Ok(state.services().keys.authenticate(&token).await?)
}

/// A key may only hand out access it has itself (issuing or rotating a
/// key, making or promoting a user): the `admin` scope alone manages keys
/// and people, but cannot mint access to leads. A 403 naming `field`.
/// When the calling key stops working, if ever.
///
/// # Errors
/// The store's failures reading the key.
pub(crate) async fn caller_expires_at(
    state: &AppState,
    caller: &leadline_domain::Caller,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
    let own = state
        .services()
        .keys
        .get(caller.tenant.id, caller.key_id)
        .await?;
    Ok(own.expires_at)
}

/// Refuses (403 naming `field`) what a calling key with an expiry would
/// hand out for longer than it has: `outlives` says whether the grant would
/// work after `expires_at`.
pub(crate) async fn within_time(
    state: &AppState,
    caller: &leadline_domain::Caller,
    field: &str,
    outlives: impl FnOnce(Option<chrono::DateTime<chrono::Utc>>) -> bool,
) -> Result<(), ApiError> {
    let expires_at = caller_expires_at(state, caller).await?;
    if !outlives(expires_at) {
        return Ok(());
    }
    let until = expires_at
        .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    let mut err = ApiError::invalid_field(
        field,
        format!(
            "this API key expires at {until}: it cannot hand out access that lasts longer \
             (a key must expire no later; people do not expire, so only a key without an expiry \
             may invite, empower or re-link them)"
        ),
    );
    err.set_status(axum::http::StatusCode::FORBIDDEN, "forbidden", "Forbidden");
    Err(err)
}

pub(crate) fn within_reach(
    mine: leadline_domain::Access,
    theirs: leadline_domain::Access,
    field: &str,
) -> Result<(), ApiError> {
    if mine.covers(theirs) {
        return Ok(());
    }
    let mut err = ApiError::invalid_field(
        field,
        format!(
            "this API key ({mine}) cannot hand out {theirs}: a key only grants what its own access covers"
        ),
    );
    err.set_status(axum::http::StatusCode::FORBIDDEN, "forbidden", "Forbidden");
    Err(err)
}

//! The lead context ("memory recall") and the cache around it: stats and
//! on-demand preloading.

use axum::{Json, extract::State};
use leadline_domain::LeadId;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    AppState,
    error::ApiError,
    extract::{ApiQuery, CurrentTenant, PathId},
    openapi::{self as oa, schema as s},
};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(context))
        .routes(routes!(cache_stats))
        .routes(routes!(preload))
}

/// Everything about a lead in one read: the lead, its agent, its open and
/// recent approvals and its latest events. Served from the cache.
#[utoipa::path(
    get,
    path = "/v1/leads/{id}/context",
    tag = "timeline",
    security(("api_key" = ["read"])),
    params(("id" = uuid::Uuid, Path, description = "The lead's id")),
    responses(
        (status = 200, description = "The lead's context", body = s::LeadContext),
        (status = 404, response = oa::NotFound),
    ),
)]
async fn context(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    PathId(lead): PathId<LeadId>,
) -> Result<axum::response::Response, ApiError> {
    use axum::{
        body::Body,
        http::{HeaderValue, header},
        response::IntoResponse,
    };
    let json = state.services().context.context(tenant.id, lead).await?;
    // Sent as the cache keeps it: a hit serializes nothing.
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        Body::from(json.bytes().clone()),
    )
        .into_response())
}

/// Cache counters since start, for tenant admins (every API key is a
/// tenant admin's today). The counters are the instance's, not per tenant:
/// they reveal volumes, never keys or data.
#[utoipa::path(
    get,
    path = "/v1/cache/stats",
    tag = "cache",
    security(("api_key" = ["admin"])),
    responses((status = 200, description = "The counters", body = s::CacheStats)),
)]
async fn cache_stats(
    State(state): State<AppState>,
    CurrentTenant(_): CurrentTenant,
) -> Json<leadline_ports::CacheStats> {
    Json(state.services().context.cache_stats())
}

/// Query of `POST /v1/cache/preload`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct PreloadParams {
    /// How many of the most recently active leads to load; 100 when absent.
    #[param(minimum = 1, maximum = 65535)]
    limit: Option<u16>,
}

/// Warms the caches with this tenant's most recently active leads.
#[utoipa::path(
    post,
    path = "/v1/cache/preload",
    tag = "cache",
    security(("api_key" = ["admin"])),
    params(PreloadParams),
    responses(
        (status = 200, description = "What the preload did", body = s::PreloadReport),
        (status = 422, response = oa::Unprocessable),
    ),
)]
async fn preload(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    ApiQuery(params): ApiQuery<PreloadParams>,
) -> Result<Json<leadline_app::PreloadReport>, ApiError> {
    let limit = params.limit.unwrap_or(100);
    if limit == 0 {
        return Err(ApiError::invalid_field("limit", "must be at least 1"));
    }
    Ok(Json(
        state
            .services()
            .context
            .preload_tenant(tenant.id, limit)
            .await?,
    ))
}

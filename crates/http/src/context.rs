//! The lead context ("memory recall") and the cache around it: stats and
//! on-demand preloading.

use axum::{Json, extract::State};
use leadline_domain::LeadId;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    AppState,
    auth::CurrentCaller,
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

/// Query of `GET /v1/leads/{id}/context`. Unknown parameters are refused,
/// as on every route: a misspelt `audit` must not silently drop it.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ContextParams {
    /// Also the lead's newest audit records, this many (1 to 100), as
    /// `audit` (the `admin` scope only: they hold the lead's earlier
    /// values).
    #[param(minimum = 1, maximum = 100)]
    audit: Option<u16>,
}

/// Everything about a lead in one read: the lead, its agent, its open and
/// recent approvals and its latest events. Served from the cache; with
/// `audit=N`, also the lead's newest audit records (read apart, never
/// cached).
#[utoipa::path(
    get,
    path = "/v1/leads/{id}/context",
    tag = "timeline",
    security(("api_key" = ["read"])),
    params(("id" = uuid::Uuid, Path, description = "The lead's id"), ContextParams),
    responses(
        (status = 200, description = "The lead's context", body = s::LeadContext),
        (status = 403, response = oa::Forbidden),
        (status = 404, response = oa::NotFound),
        (status = 422, response = oa::Unprocessable),
    ),
)]
async fn context(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    CurrentCaller(caller): CurrentCaller,
    PathId(lead): PathId<LeadId>,
    ApiQuery(params): ApiQuery<ContextParams>,
) -> Result<axum::response::Response, ApiError> {
    use axum::{
        body::Body,
        http::{HeaderValue, header},
        response::IntoResponse,
    };
    let audit = match params.audit {
        Some(n) => {
            let limit = leadline_domain::PageLimit::new(u32::from(n))
                .ok()
                .filter(|_| n <= 100)
                .ok_or_else(|| ApiError::invalid_field("audit", "must be between 1 and 100"))?;
            caller
                .require(leadline_domain::Scope::Admin)
                .map_err(|refused| ApiError::forbidden(&refused))?;
            Some(limit)
        }
        None => None,
    };
    let json = state.services().context.context(tenant.id, lead).await?;
    let body = match audit {
        // Sent as the cache keeps it: a hit serializes nothing.
        None => Body::from(json.bytes().clone()),
        Some(limit) => {
            let query = leadline_domain::AuditQuery::about("lead", Some(lead.as_uuid()), limit);
            let page = state.services().audit.list(tenant.id, &query).await?;
            Body::from(with_member(json.bytes(), "audit", &page.items)?)
        }
    };
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}

/// `object` (a serialized JSON object) with `name: value` added last,
/// without parsing what is there.
fn with_member(
    object: &[u8],
    name: &str,
    value: &impl serde::Serialize,
) -> Result<Vec<u8>, ApiError> {
    let end = object
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .filter(|&i| object[i] == b'}')
        .ok_or_else(|| ApiError::internal(&"a lead context is not a JSON object"))?;
    let empty = object[..end]
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .is_some_and(|i| object[i] == b'{');
    let mut out = Vec::with_capacity(object.len() + 256);
    out.extend_from_slice(&object[..end]);
    if !empty {
        out.push(b',');
    }
    serde_json::to_writer(&mut out, name).map_err(|e| ApiError::internal(&e))?;
    out.push(b':');
    serde_json::to_writer(&mut out, value).map_err(|e| ApiError::internal(&e))?;
    out.push(b'}');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::with_member;

    #[test]
    fn a_member_is_added_to_any_object() {
        for (object, expected) in [
            (r#"{"a":1}"#, r#"{"a":1,"audit":[1]}"#),
            ("{}", r#"{"audit":[1]}"#),
            ("{ }\n", r#"{ "audit":[1]}"#),
            (r#"{"a":{"b":2}} "#, r#"{"a":{"b":2},"audit":[1]}"#),
        ] {
            let out = with_member(object.as_bytes(), "audit", &[1]).expect("an object");
            assert_eq!(String::from_utf8(out).expect("UTF-8"), expected, "{object}");
            let parsed: serde_json::Value = serde_json::from_str(expected).expect("valid JSON");
            assert_eq!(parsed["audit"], serde_json::json!([1]));
        }
        assert!(with_member(b"[1]", "audit", &[1]).is_err());
    }
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

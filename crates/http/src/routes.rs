//! Route table and handlers.

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use leadline_domain::{AgentId, LeadId, ListLeadsQuery};
use serde_json::json;

use crate::{
    AppState,
    dto::{
        CreateAgentBody, CreateLeadBody, ListAgentsParams, ListLeadsParams, ListResponse,
        UpdateAgentBody, UpdateLeadBody, decode_cursor, encode_cursor, page_limit,
    },
    error::{ApiError, update_agent_error, update_lead_error},
    extract::{ApiJson, ApiQuery, CurrentTenant, etag, if_match},
};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/tenant", get(current_tenant))
        .route("/v1/agents", get(list_agents).post(create_agent))
        .route("/v1/agents/{id}", get(get_agent).patch(update_agent))
        .route("/v1/leads", get(list_leads).post(create_lead))
        .route("/v1/leads/{id}", get(get_lead).patch(update_lead))
        .fallback(|| async { ApiError::not_found("route") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
}

/// A malformed id cannot name anything: 404, like another tenant's id.
fn parse_id<T: std::str::FromStr>(raw: &str, what: &'static str) -> Result<T, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found(what))
}

/// A JSON response with an ETag carrying the version.
fn versioned<T: serde::Serialize>(
    status: StatusCode,
    body: &T,
    version: i64,
    location: Option<String>,
) -> Response {
    let mut response = (status, Json(body)).into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag(version)) {
        headers.insert(header::ETAG, v);
    }
    if let Some(v) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        headers.insert(header::LOCATION, v);
    }
    response
}

/// The version an update must match: `If-Match` or the body's `version`;
/// both must agree when both are sent.
fn expected_version(
    headers: &HeaderMap,
    body_version: Option<i64>,
) -> Result<(i64, bool), ApiError> {
    match (if_match(headers)?, body_version) {
        (Some(h), Some(b)) if h != b => Err(ApiError::invalid_field(
            "version",
            "disagrees with the If-Match header",
        )),
        (Some(h), _) => Ok((h, true)),
        (None, Some(b)) => Ok((b, false)),
        (None, None) => Err(ApiError::precondition_required()),
    }
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Response {
    if !state.is_warm() {
        return ApiError::warming_up().into_response();
    }
    let health = &state.services().health;
    match health.ping(state.inner.readiness_timeout).await {
        Ok(latency) => {
            let pool = health.pool_stats();
            Json(json!({
                "status": "ready",
                "database": {
                    "backend": health.backend(),
                    "latency_ms": latency.as_secs_f64() * 1000.0,
                    "pool": { "size": pool.size, "idle": pool.idle, "in_use": pool.in_use, "max": pool.max },
                },
            }))
            .into_response()
        }
        Err(e) => ApiError::unavailable(&e).into_response(),
    }
}

async fn current_tenant(CurrentTenant(tenant): CurrentTenant) -> Json<leadline_domain::Tenant> {
    Json(tenant)
}

async fn create_agent(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    ApiJson(body): ApiJson<CreateAgentBody>,
) -> Result<Response, ApiError> {
    let agent = state
        .services()
        .agents
        .create(tenant.id, &body.into_domain())
        .await?;
    let location = format!("/v1/agents/{}", agent.id);
    Ok(versioned(
        StatusCode::CREATED,
        &agent,
        agent.version,
        Some(location),
    ))
}

async fn get_agent(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: AgentId = parse_id(&id, "agent")?;
    let agent = state.services().agents.get(tenant.id, id).await?;
    Ok(versioned(StatusCode::OK, &agent, agent.version, None))
}

async fn list_agents(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    ApiQuery(params): ApiQuery<ListAgentsParams>,
) -> Result<Json<ListResponse<leadline_domain::Agent>>, ApiError> {
    let limit = page_limit(params.limit)?;
    let after = decode_cursor(params.cursor.as_deref())?.map(AgentId::from_uuid);
    let page = state
        .services()
        .agents
        .list(tenant.id, limit, after)
        .await?;
    let next_cursor = page
        .has_more
        .then(|| page.items.last().map(|a| encode_cursor(a.id.as_uuid())))
        .flatten();
    Ok(Json(ListResponse {
        items: page.items,
        next_cursor,
    }))
}

async fn update_agent(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<UpdateAgentBody>,
) -> Result<Response, ApiError> {
    let id: AgentId = parse_id(&id, "agent")?;
    let (version, from_if_match) = expected_version(&headers, body.version())?;
    let agent = state
        .services()
        .agents
        .update(tenant.id, id, &body.into_domain(version))
        .await
        .map_err(|e| update_agent_error(e, from_if_match))?;
    Ok(versioned(StatusCode::OK, &agent, agent.version, None))
}

async fn create_lead(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    ApiJson(body): ApiJson<CreateLeadBody>,
) -> Result<Response, ApiError> {
    let lead = state
        .services()
        .leads
        .create(tenant.id, &body.into_domain())
        .await?;
    let location = format!("/v1/leads/{}", lead.id);
    Ok(versioned(
        StatusCode::CREATED,
        &lead,
        lead.version,
        Some(location),
    ))
}

async fn get_lead(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: LeadId = parse_id(&id, "lead")?;
    let lead = state.services().leads.get(tenant.id, id).await?;
    Ok(versioned(StatusCode::OK, &lead, lead.version, None))
}

async fn list_leads(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    ApiQuery(params): ApiQuery<ListLeadsParams>,
) -> Result<Json<ListResponse<leadline_domain::Lead>>, ApiError> {
    let query = ListLeadsQuery {
        status: params.status,
        assigned_agent_id: params.assigned_agent_id,
        tag: params.tag,
        limit: page_limit(params.limit)?,
        after: decode_cursor(params.cursor.as_deref())?.map(LeadId::from_uuid),
    };
    let page = state.services().leads.list(tenant.id, &query).await?;
    let next_cursor = page
        .has_more
        .then(|| page.items.last().map(|l| encode_cursor(l.id.as_uuid())))
        .flatten();
    Ok(Json(ListResponse {
        items: page.items,
        next_cursor,
    }))
}

async fn update_lead(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<UpdateLeadBody>,
) -> Result<Response, ApiError> {
    let id: LeadId = parse_id(&id, "lead")?;
    let (version, from_if_match) = expected_version(&headers, body.version())?;
    let lead = state
        .services()
        .leads
        .update(tenant.id, id, &body.into_domain(version))
        .await
        .map_err(|e| update_lead_error(e, from_if_match))?;
    Ok(versioned(StatusCode::OK, &lead, lead.version, None))
}

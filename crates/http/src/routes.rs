//! Route table and handlers. Each handler's `#[utoipa::path]` is both its
//! route (through `routes!`) and its entry in the OpenAPI document; what all
//! `/v1` operations share (auth, 401/500/503, JSON body errors,
//! `Idempotency-Key`) is added by [`crate::openapi::conventions`].

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use leadline_domain::{AgentId, LeadId, ListLeadsQuery};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    AppState, cursor,
    dto::{
        CreateAgentBody, CreateLeadBody, ListLeadsParams, ListResponse, PageParams,
        UpdateAgentBody, UpdateLeadBody, page_limit,
    },
    error::{ApiError, update_agent_error, update_lead_error},
    extract::{ApiJson, ApiQuery, CurrentTenant, PathId, etag, if_match},
    openapi::{self as oa, schema as s},
};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(current_tenant))
        .routes(routes!(approval_settings, set_approval_settings))
        .routes(routes!(list_agents, create_agent))
        .routes(routes!(get_agent, update_agent))
        .routes(routes!(list_leads, create_lead))
        .routes(routes!(get_lead, update_lead, delete_lead))
        .routes(routes!(restore_lead))
}

/// A malformed id cannot name anything: 404, like another tenant's id.
/// A JSON response with an ETag carrying the version.
pub(crate) fn versioned<T: serde::Serialize>(
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
pub(crate) fn expected_version(
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

/// Liveness: the process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses((status = 200, description = "Up", body = s::Health)),
)]
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: the caches are warm and the database answers.
///
/// Answers 503 while the start-up preload runs (`type` ends in
/// `warming-up`) and while the database does not answer within the
/// readiness timeout (`type` ends in `unavailable`).
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "Ready, or degraded (an optional dependency is down)", body = Readiness),
        (status = 503, response = oa::Unavailable),
    ),
)]
async fn readyz(State(state): State<AppState>) -> Response {
    if !state.is_warm() {
        return ApiError::warming_up().into_response();
    }
    let services = state.services();
    let timeout = state.inner.readiness_timeout;
    let health = &services.health;
    // The three probes run at once: readiness costs the slowest, not the sum.
    let (database, read_pool, redis) = tokio::join!(
        health.ping(timeout),
        health.ping_read_pool(timeout),
        services.context.ping_shared_cache(),
    );
    let latency = match database {
        Ok(latency) => latency,
        Err(e) => return ApiError::unavailable(&e).into_response(),
    };
    let read_pool = read_pool.map(|probe| Check::of(probe, health.read_pool_stats()));
    let redis = redis.map(|probe| Check::of(probe, None));
    let degraded = [&read_pool, &redis]
        .into_iter()
        .flatten()
        .any(|c| c.status == CheckStatus::Down);
    Json(Readiness {
        status: if degraded { "degraded" } else { "ready" },
        database: Check {
            backend: Some(health.backend()),
            ..Check::of(Ok(latency), Some(health.pool_stats()))
        },
        read_pool,
        redis,
    })
    .into_response()
}

/// `GET /readyz`: ready (200) while the primary database answers; `degraded`
/// (still 200, so a load balancer keeps the instance) when the read pool or
/// Redis does not, since both have fallbacks; 503 when the database is down.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Readiness {
    /// `ready`, or `degraded` when an optional dependency is down.
    #[schema(example = "ready")]
    status: &'static str,
    /// The primary database.
    database: Check,
    /// The read pool (`database.read_url`); absent when not configured.
    /// While it is down, replica reads go to the primary.
    #[serde(skip_serializing_if = "Option::is_none")]
    read_pool: Option<Check>,
    /// Redis, the cache's shared tier; absent when not configured. While it
    /// is down, the in-process tier and the store serve.
    #[serde(skip_serializing_if = "Option::is_none")]
    redis: Option<Check>,
}

/// One dependency's probe.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Check {
    /// Whether it answered.
    status: CheckStatus,
    /// The database backend, `postgres` or `sqlite`; for the database only.
    #[serde(skip_serializing_if = "Option::is_none")]
    backend: Option<&'static str>,
    /// How long it took to answer, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ms: Option<f64>,
    /// Why it did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Its connection pool, for the database pools.
    #[serde(skip_serializing_if = "Option::is_none")]
    pool: Option<Pool>,
}

/// Whether a dependency answered its probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum CheckStatus {
    /// Answered in time.
    Up,
    /// Failed or timed out.
    Down,
}

/// A connection pool's occupancy.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Pool {
    /// Open connections.
    size: u32,
    /// Open and idle.
    idle: u32,
    /// Open and in use.
    in_use: u32,
    /// The most the pool opens.
    max: u32,
}

impl Check {
    fn of(
        probe: Result<std::time::Duration, leadline_ports::HealthError>,
        pool: Option<leadline_ports::PoolStats>,
    ) -> Self {
        let pool = pool.map(|p| Pool {
            size: p.size,
            idle: p.idle,
            in_use: p.in_use,
            max: p.max,
        });
        match probe {
            Ok(latency) => Self {
                status: CheckStatus::Up,
                backend: None,
                latency_ms: Some(latency.as_secs_f64() * 1000.0),
                error: None,
                pool,
            },
            Err(e) => Self {
                status: CheckStatus::Down,
                backend: None,
                latency_ms: None,
                error: Some(e.to_string()),
                pool,
            },
        }
    }
}

/// The tenant the API key belongs to.
#[utoipa::path(
    get,
    path = "/v1/tenant",
    tag = "tenant",
    security(("api_key" = ["read"])),
    responses((status = 200, description = "The tenant", body = s::Tenant)),
)]
async fn current_tenant(CurrentTenant(tenant): CurrentTenant) -> Json<leadline_domain::Tenant> {
    Json(tenant)
}

/// The tenant's approval settings (`/v1/settings/approvals`).
#[derive(Debug, serde::Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApprovalSettings {
    /// Keep the agent who drafted an approval from approving or rejecting
    /// it. On for every tenant unless turned off here.
    separation_of_duties: bool,
}

/// The tenant's approval settings.
#[utoipa::path(
    get,
    path = "/v1/settings/approvals",
    tag = "approvals",
    security(("api_key" = ["admin"])),
    responses((status = 200, description = "The settings", body = ApprovalSettings)),
)]
async fn approval_settings(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
) -> Result<Json<ApprovalSettings>, ApiError> {
    // From the store: the caller's tenant may be a second old (the
    // verified-key cache), and a setting just changed must read back.
    let tenant = state.services().tenants.get(tenant.id).await?;
    Ok(Json(ApprovalSettings {
        separation_of_duties: tenant.separation_of_duties,
    }))
}

/// Change the tenant's approval settings.
///
/// With `separation_of_duties` on (the default), an approve or reject by the
/// agent who drafted the approval is a 409 naming `decided_by`.
#[utoipa::path(
    put,
    path = "/v1/settings/approvals",
    tag = "approvals",
    security(("api_key" = ["admin"])),
    request_body = ApprovalSettings,
    responses((status = 200, description = "The settings as they now are", body = ApprovalSettings)),
)]
async fn set_approval_settings(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    ApiJson(body): ApiJson<ApprovalSettings>,
) -> Result<Json<ApprovalSettings>, ApiError> {
    let tenant = state
        .services()
        .tenants
        .set_separation_of_duties(tenant.id, body.separation_of_duties)
        .await?;
    Ok(Json(ApprovalSettings {
        separation_of_duties: tenant.separation_of_duties,
    }))
}

/// Create an agent.
#[utoipa::path(
    post,
    path = "/v1/agents",
    tag = "agents",
    security(("api_key" = ["admin"])),
    request_body = CreateAgentBody,
    responses(
        (status = 201, description = "Created", body = s::Agent, headers(
            ("ETag" = String, description = "The version, quoted: send it back as `If-Match`"),
            ("Location" = String, description = "The agent's URL"),
        )),
        (status = 409, response = oa::Conflict),
    ),
)]
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

/// Read an agent.
#[utoipa::path(
    get,
    path = "/v1/agents/{id}",
    tag = "agents",
    security(("api_key" = ["read"])),
    params(("id" = uuid::Uuid, Path, description = "The agent's id")),
    responses(
        (status = 200, description = "The agent", body = s::Agent, headers(
            ("ETag" = String, description = "The version, quoted: send it back as `If-Match`"),
        )),
        (status = 404, response = oa::NotFound),
    ),
)]
async fn get_agent(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    PathId(id): PathId<AgentId>,
) -> Result<Response, ApiError> {
    let agent = state.services().agents.get(tenant.id, id).await?;
    Ok(versioned(StatusCode::OK, &agent, agent.version, None))
}

/// List agents, oldest first.
#[utoipa::path(
    get,
    path = "/v1/agents",
    tag = "agents",
    security(("api_key" = ["read"])),
    params(PageParams),
    responses(
        (status = 200, description = "A page of agents", body = s::AgentPage),
        (status = 422, response = oa::Unprocessable),
    ),
)]
async fn list_agents(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<Json<ListResponse<leadline_domain::Agent>>, ApiError> {
    let limit = page_limit(params.limit)?;
    let after = cursor::decode::<uuid::Uuid>(params.cursor.as_deref())?.map(AgentId::from_uuid);
    let page = state
        .services()
        .agents
        .list(tenant.id, limit, after)
        .await?;
    Ok(Json(ListResponse::from_page(page, |a| a.id.as_uuid())))
}

/// Update an agent: absent fields stay as they are.
///
/// The version read must be sent, as `If-Match` or the body's `version`.
#[utoipa::path(
    patch,
    path = "/v1/agents/{id}",
    tag = "agents",
    security(("api_key" = ["admin"])),
    params(
        ("id" = uuid::Uuid, Path, description = "The agent's id"),
        ("If-Match" = Option<String>, Header, nullable = false, description = "The `ETag` read (`\"3\"` or `W/\"3\"`); a stale one is a 412"),
    ),
    request_body = UpdateAgentBody,
    responses(
        (status = 200, description = "Updated", body = s::Agent, headers(
            ("ETag" = String, description = "The new version, quoted"),
        )),
        (status = 404, response = oa::NotFound),
        (status = 409, response = oa::Conflict),
        (status = 412, response = oa::PreconditionFailed),
        (status = 428, response = oa::PreconditionRequired),
    ),
)]
async fn update_agent(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    PathId(id): PathId<AgentId>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<UpdateAgentBody>,
) -> Result<Response, ApiError> {
    let (version, from_if_match) = expected_version(&headers, body.version())?;
    let agent = state
        .services()
        .agents
        .update(tenant.id, id, &body.into_domain(version))
        .await
        .map_err(|e| update_agent_error(e, from_if_match))?;
    Ok(versioned(StatusCode::OK, &agent, agent.version, None))
}

/// Create a lead.
#[utoipa::path(
    post,
    path = "/v1/leads",
    tag = "leads",
    security(("api_key" = ["leads:write"])),
    request_body = CreateLeadBody,
    responses(
        (status = 201, description = "Created", body = s::Lead, headers(
            ("ETag" = String, description = "The version, quoted: send it back as `If-Match`"),
            ("Location" = String, description = "The lead's URL"),
        )),
    ),
)]
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

/// Read a lead.
#[utoipa::path(
    get,
    path = "/v1/leads/{id}",
    tag = "leads",
    security(("api_key" = ["read"])),
    params(("id" = uuid::Uuid, Path, description = "The lead's id")),
    responses(
        (status = 200, description = "The lead", body = s::Lead, headers(
            ("ETag" = String, description = "The version, quoted: send it back as `If-Match`"),
        )),
        (status = 404, response = oa::NotFound),
    ),
)]
async fn get_lead(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    PathId(id): PathId<LeadId>,
) -> Result<Response, ApiError> {
    let lead = state.services().leads.get(tenant.id, id).await?;
    Ok(versioned(StatusCode::OK, &lead, lead.version, None))
}

/// List leads, newest first, optionally filtered.
#[utoipa::path(
    get,
    path = "/v1/leads",
    tag = "leads",
    security(("api_key" = ["read"])),
    params(ListLeadsParams),
    responses(
        (status = 200, description = "A page of leads", body = s::LeadPage),
        (status = 422, response = oa::Unprocessable),
    ),
)]
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
        after: cursor::decode::<uuid::Uuid>(params.cursor.as_deref())?.map(LeadId::from_uuid),
    };
    let page = state.services().leads.list(tenant.id, &query).await?;
    Ok(Json(ListResponse::from_page(page, |l| l.id.as_uuid())))
}

/// Update a lead: absent fields stay, `null` clears optional ones.
///
/// The version read must be sent, as `If-Match` or the body's `version`.
/// A status change must be a move the lifecycle allows (409 otherwise).
#[utoipa::path(
    patch,
    path = "/v1/leads/{id}",
    tag = "leads",
    security(("api_key" = ["leads:write"])),
    params(
        ("id" = uuid::Uuid, Path, description = "The lead's id"),
        ("If-Match" = Option<String>, Header, nullable = false, description = "The `ETag` read (`\"3\"` or `W/\"3\"`); a stale one is a 412"),
    ),
    request_body = UpdateLeadBody,
    responses(
        (status = 200, description = "Updated", body = s::Lead, headers(
            ("ETag" = String, description = "The new version, quoted"),
        )),
        (status = 404, response = oa::NotFound),
        (status = 409, response = oa::Conflict),
        (status = 412, response = oa::PreconditionFailed),
        (status = 428, response = oa::PreconditionRequired),
    ),
)]
async fn update_lead(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    PathId(id): PathId<LeadId>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<UpdateLeadBody>,
) -> Result<Response, ApiError> {
    let (version, from_if_match) = expected_version(&headers, body.version())?;
    let lead = state
        .services()
        .leads
        .update(tenant.id, id, &body.into_domain(version))
        .await
        .map_err(|e| update_lead_error(e, from_if_match))?;
    Ok(versioned(StatusCode::OK, &lead, lead.version, None))
}

/// Delete a lead, restorably.
///
/// The lead keeps its row, timeline and approvals and is hidden from every
/// read (by id, lists, context, timeline) and from new events and drafts
/// until it is restored. A lead with open approvals (pending or approved)
/// cannot be deleted: cancel or send them first (409). Hard deletion is
/// privacy erasure's job.
#[utoipa::path(
    delete,
    path = "/v1/leads/{id}",
    tag = "leads",
    security(("api_key" = ["leads:write"])),
    params(("id" = uuid::Uuid, Path, description = "The lead's id")),
    responses(
        (status = 204, description = "Deleted; `POST /v1/leads/{id}/restore` brings it back"),
        (status = 404, response = oa::NotFound),
        (status = 409, response = oa::Conflict),
    ),
)]
async fn delete_lead(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    PathId(id): PathId<LeadId>,
) -> Result<StatusCode, ApiError> {
    state.services().leads.delete(tenant.id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Restore a deleted lead, as it was, at the next version.
#[utoipa::path(
    post,
    path = "/v1/leads/{id}/restore",
    tag = "leads",
    security(("api_key" = ["leads:write"])),
    params(("id" = uuid::Uuid, Path, description = "The deleted lead's id")),
    responses(
        (status = 200, description = "Restored", body = s::Lead, headers(
            ("ETag" = String, description = "The new version, quoted"),
        )),
        (status = 404, response = oa::NotFound),
    ),
)]
async fn restore_lead(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    PathId(id): PathId<LeadId>,
) -> Result<Response, ApiError> {
    let lead = state.services().leads.restore(tenant.id, id).await?;
    Ok(versioned(StatusCode::OK, &lead, lead.version, None))
}

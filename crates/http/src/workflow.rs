//! Workflow routes: approvals, the timeline, the lead context, the cache.

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use leadline_domain::{
    AgentId, AppendEventRequest, Approval, ApprovalAction, ApprovalId, ApprovalQueueQuery,
    ApprovalStatus, Channel, Direction, DraftApprovalRequest, Event, EventContent, EventId,
    EventKind, LeadId, MessageBody, Metadata, RejectionReason, Subject, TimelineCursor,
    TimelineQuery,
};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    AppState,
    dto::{ListResponse, decode_cursor, encode_cursor, page_limit},
    error::{ApiError, transition_error},
    extract::{ApiJson, ApiQuery, CurrentTenant, PathId},
    openapi::{self as oa, schema as s},
};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(draft))
        .routes(routes!(timeline, append_event))
        .routes(routes!(context))
        .routes(routes!(cache_stats))
        .routes(routes!(preload))
        .routes(routes!(queue))
        .routes(routes!(get_approval))
        .routes(routes!(approve))
        .routes(routes!(reject))
        .routes(routes!(send))
        .routes(routes!(cancel))
}

/// `POST /v1/leads/{id}/approvals`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct DraftBody {
    /// How the message will reach the lead.
    #[schema(value_type = s::Channel)]
    channel: Channel,
    /// Subject, for channels that have one.
    #[schema(value_type = Option<s::Subject>)]
    subject: Option<Subject>,
    /// The message.
    #[schema(value_type = s::MessageBody)]
    body: MessageBody,
    /// The agent drafting it.
    #[schema(value_type = uuid::Uuid)]
    requested_by: AgentId,
}

/// Draft an outbound message to a lead; it waits for a person's decision.
#[utoipa::path(
    post,
    path = "/v1/leads/{id}/approvals",
    tag = "approvals",
    params(("id" = uuid::Uuid, Path, description = "The lead's id")),
    request_body = DraftBody,
    responses(
        (status = 201, description = "Drafted, pending", body = s::Approval, headers(
            ("Location" = String, description = "The approval's URL"),
        )),
        (status = 404, response = oa::NotFound),
    ),
)]
async fn draft(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    PathId(lead): PathId<LeadId>,
    ApiJson(body): ApiJson<DraftBody>,
) -> Result<Response, ApiError> {
    let req = DraftApprovalRequest {
        channel: body.channel,
        subject: body.subject,
        body: body.body,
        requested_by: body.requested_by,
    };
    let approval = state
        .services()
        .approvals
        .draft(tenant.id, lead, &req)
        .await?;
    let location = format!("/v1/approvals/{}", approval.id);
    Ok((
        StatusCode::CREATED,
        [(axum::http::header::LOCATION, location)],
        Json(approval),
    )
        .into_response())
}

/// Read an approval.
#[utoipa::path(
    get,
    path = "/v1/approvals/{id}",
    tag = "approvals",
    params(("id" = uuid::Uuid, Path, description = "The approval's id")),
    responses(
        (status = 200, description = "The approval", body = s::Approval),
        (status = 404, response = oa::NotFound),
    ),
)]
async fn get_approval(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    PathId(id): PathId<ApprovalId>,
) -> Result<Json<Approval>, ApiError> {
    Ok(Json(state.services().approvals.get(tenant.id, id).await?))
}

/// `POST /v1/approvals/{id}/approve`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct DecidedBy {
    /// The agent approving it.
    #[schema(value_type = uuid::Uuid)]
    decided_by: AgentId,
}

/// `POST /v1/approvals/{id}/reject`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RejectBody {
    /// The agent rejecting it.
    #[schema(value_type = uuid::Uuid)]
    decided_by: AgentId,
    /// Why.
    #[schema(value_type = s::RejectionReason)]
    reason: RejectionReason,
}

/// `POST /v1/approvals/{id}/send`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SentBy {
    /// The agent who sent it.
    #[schema(value_type = uuid::Uuid)]
    sent_by: AgentId,
}

/// `POST /v1/approvals/{id}/cancel`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CancelledBy {
    /// The agent withdrawing it.
    #[schema(value_type = uuid::Uuid)]
    cancelled_by: AgentId,
}

async fn act(
    state: &AppState,
    tenant: leadline_domain::TenantId,
    id: ApprovalId,
    action: ApprovalAction,
    actor_field: &str,
) -> Result<Json<Approval>, ApiError> {
    state
        .services()
        .approvals
        .act(tenant, id, &action)
        .await
        .map(Json)
        .map_err(|e| transition_error(e, actor_field))
}

/// Approve a pending approval.
///
/// A move the lifecycle does not allow is a 409 whose `current_status`
/// says where the approval stands.
#[utoipa::path(
    post,
    path = "/v1/approvals/{id}/approve",
    tag = "approvals",
    params(("id" = uuid::Uuid, Path, description = "The approval's id")),
    request_body = DecidedBy,
    responses(
        (status = 200, description = "The approval, moved", body = s::Approval),
        (status = 404, response = oa::NotFound),
        (status = 409, response = oa::Conflict),
    ),
)]
async fn approve(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    PathId(id): PathId<ApprovalId>,
    ApiJson(body): ApiJson<DecidedBy>,
) -> Result<Json<Approval>, ApiError> {
    act(
        &state,
        tenant.id,
        id,
        ApprovalAction::Approve {
            by: body.decided_by,
        },
        "decided_by",
    )
    .await
}

/// Reject a pending approval, with a reason.
///
/// A move the lifecycle does not allow is a 409 whose `current_status`
/// says where the approval stands.
#[utoipa::path(
    post,
    path = "/v1/approvals/{id}/reject",
    tag = "approvals",
    params(("id" = uuid::Uuid, Path, description = "The approval's id")),
    request_body = RejectBody,
    responses(
        (status = 200, description = "The approval, moved", body = s::Approval),
        (status = 404, response = oa::NotFound),
        (status = 409, response = oa::Conflict),
    ),
)]
async fn reject(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    PathId(id): PathId<ApprovalId>,
    ApiJson(body): ApiJson<RejectBody>,
) -> Result<Json<Approval>, ApiError> {
    act(
        &state,
        tenant.id,
        id,
        ApprovalAction::Reject {
            by: body.decided_by,
            reason: body.reason,
        },
        "decided_by",
    )
    .await
}

/// Mark an approved approval sent (exactly once); the send lands on the
/// lead's timeline.
///
/// A move the lifecycle does not allow is a 409 whose `current_status`
/// says where the approval stands.
#[utoipa::path(
    post,
    path = "/v1/approvals/{id}/send",
    tag = "approvals",
    params(("id" = uuid::Uuid, Path, description = "The approval's id")),
    request_body = SentBy,
    responses(
        (status = 200, description = "The approval, moved", body = s::Approval),
        (status = 404, response = oa::NotFound),
        (status = 409, response = oa::Conflict),
    ),
)]
async fn send(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    PathId(id): PathId<ApprovalId>,
    ApiJson(body): ApiJson<SentBy>,
) -> Result<Json<Approval>, ApiError> {
    act(
        &state,
        tenant.id,
        id,
        ApprovalAction::MarkSent { by: body.sent_by },
        "sent_by",
    )
    .await
}

/// Withdraw a pending approval.
///
/// A move the lifecycle does not allow is a 409 whose `current_status`
/// says where the approval stands.
#[utoipa::path(
    post,
    path = "/v1/approvals/{id}/cancel",
    tag = "approvals",
    params(("id" = uuid::Uuid, Path, description = "The approval's id")),
    request_body = CancelledBy,
    responses(
        (status = 200, description = "The approval, moved", body = s::Approval),
        (status = 404, response = oa::NotFound),
        (status = 409, response = oa::Conflict),
    ),
)]
async fn cancel(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    PathId(id): PathId<ApprovalId>,
    ApiJson(body): ApiJson<CancelledBy>,
) -> Result<Json<Approval>, ApiError> {
    act(
        &state,
        tenant.id,
        id,
        ApprovalAction::Cancel {
            by: body.cancelled_by,
        },
        "cancelled_by",
    )
    .await
}

/// Query of `GET /v1/approvals`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct QueueParams {
    /// Only approvals in this status; `pending` when absent.
    #[param(value_type = Option<s::ApprovalStatus>)]
    status: Option<ApprovalStatus>,
    /// Only approvals drafted by this agent.
    #[param(value_type = Option<uuid::Uuid>)]
    requested_by: Option<AgentId>,
    /// Page size.
    #[param(value_type = Option<s::PageLimit>)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The approval queue: pending approvals by default, oldest first.
#[utoipa::path(
    get,
    path = "/v1/approvals",
    tag = "approvals",
    params(QueueParams),
    responses(
        (status = 200, description = "A page of approvals", body = s::ApprovalPage),
        (status = 422, response = oa::Unprocessable),
    ),
)]
async fn queue(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    ApiQuery(params): ApiQuery<QueueParams>,
) -> Result<Json<ListResponse<Approval>>, ApiError> {
    let query = ApprovalQueueQuery {
        status: params.status.unwrap_or(ApprovalStatus::Pending),
        requested_by: params.requested_by,
        limit: page_limit(params.limit)?,
        after: decode_cursor(params.cursor.as_deref())?.map(ApprovalId::from_uuid),
    };
    let page = state.services().approvals.queue(tenant.id, &query).await?;
    let next_cursor = page
        .has_more
        .then(|| page.items.last().map(|a| encode_cursor(a.id.as_uuid())))
        .flatten();
    Ok(Json(ListResponse {
        items: page.items,
        next_cursor,
    }))
}

/// `POST /v1/leads/{id}/events`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AppendBody {
    /// What happened.
    #[schema(value_type = s::EventKind)]
    kind: EventKind,
    /// Which way.
    #[schema(value_type = s::Direction)]
    direction: Direction,
    /// What was said or noted.
    #[schema(value_type = Option<s::EventContent>)]
    content: Option<EventContent>,
    /// When it happened; now when absent, never in the future.
    occurred_at: Option<DateTime<Utc>>,
    /// The agent involved, if any.
    #[schema(value_type = Option<uuid::Uuid>)]
    actor: Option<AgentId>,
    /// Free-form data.
    #[serde(default)]
    #[schema(value_type = s::Metadata)]
    metadata: Metadata,
}

/// Append an event to a lead's timeline.
#[utoipa::path(
    post,
    path = "/v1/leads/{id}/events",
    tag = "timeline",
    params(("id" = uuid::Uuid, Path, description = "The lead's id")),
    request_body = AppendBody,
    responses(
        (status = 201, description = "Appended", body = s::Event),
        (status = 404, response = oa::NotFound),
    ),
)]
async fn append_event(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    PathId(lead): PathId<LeadId>,
    ApiJson(body): ApiJson<AppendBody>,
) -> Result<Response, ApiError> {
    let req = AppendEventRequest {
        kind: body.kind,
        direction: body.direction,
        content: body.content,
        occurred_at: body.occurred_at,
        actor: body.actor,
        metadata: body.metadata,
    };
    let event = state
        .services()
        .timeline
        .append(tenant.id, lead, &req)
        .await?;
    Ok((StatusCode::CREATED, Json(event)).into_response())
}

const TIMELINE_CURSOR_VERSION: u8 = 1;

/// A timeline cursor: version byte, `occurred_at` in microseconds, event id.
fn encode_timeline_cursor(event: &Event) -> String {
    let mut bytes = Vec::with_capacity(25);
    bytes.push(TIMELINE_CURSOR_VERSION);
    bytes.extend_from_slice(&event.occurred_at.timestamp_micros().to_be_bytes());
    bytes.extend_from_slice(event.id.as_uuid().as_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

fn decode_timeline_cursor(raw: Option<&str>) -> Result<Option<TimelineCursor>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    let bad = || ApiError::invalid_field("cursor", "is not a cursor returned by this API");
    let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| bad())?;
    if bytes.len() != 25 || bytes[0] != TIMELINE_CURSOR_VERSION {
        return Err(bad());
    }
    let micros = i64::from_be_bytes(bytes[1..9].try_into().map_err(|_| bad())?);
    let occurred_at = DateTime::from_timestamp_micros(micros).ok_or_else(bad)?;
    let id = uuid::Uuid::from_slice(&bytes[9..]).map_err(|_| bad())?;
    TimelineCursor::new(occurred_at, EventId::from_uuid(id))
        .map(Some)
        .map_err(|_| bad())
}

/// Query of `GET /v1/leads/{id}/events`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct TimelineParams {
    /// Page size.
    #[param(value_type = Option<s::PageLimit>)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// A lead's timeline, newest first.
#[utoipa::path(
    get,
    path = "/v1/leads/{id}/events",
    tag = "timeline",
    params(("id" = uuid::Uuid, Path, description = "The lead's id"), TimelineParams),
    responses(
        (status = 200, description = "A page of events", body = s::EventPage),
        (status = 404, response = oa::NotFound),
        (status = 422, response = oa::Unprocessable),
    ),
)]
async fn timeline(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    PathId(lead): PathId<LeadId>,
    ApiQuery(params): ApiQuery<TimelineParams>,
) -> Result<Json<ListResponse<Event>>, ApiError> {
    let query = TimelineQuery {
        limit: page_limit(params.limit)?,
        after: decode_timeline_cursor(params.cursor.as_deref())?,
    };
    let page = state
        .services()
        .timeline
        .timeline(tenant.id, lead, &query)
        .await?;
    let next_cursor = page
        .has_more
        .then(|| page.items.last().map(encode_timeline_cursor))
        .flatten();
    Ok(Json(ListResponse {
        items: page.items,
        next_cursor,
    }))
}

/// Everything about a lead in one read: the lead, its agent, its open and
/// recent approvals and its latest events. Served from the cache.
#[utoipa::path(
    get,
    path = "/v1/leads/{id}/context",
    tag = "timeline",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_cursor_round_trips() {
        let event = Event {
            id: EventId::new(),
            tenant_id: leadline_domain::TenantId::new(),
            lead_id: LeadId::new(),
            kind: EventKind::Note,
            direction: Direction::Internal,
            content: None,
            occurred_at: DateTime::from_timestamp_micros(1_790_000_000_123_456).expect("valid"),
            actor: None,
            metadata: Metadata::default(),
            created_at: Utc::now(),
        };
        let cursor = decode_timeline_cursor(Some(&encode_timeline_cursor(&event)))
            .expect("decodes")
            .expect("present");
        assert_eq!(
            (cursor.occurred_at, cursor.id),
            (event.occurred_at, event.id)
        );
        assert!(
            decode_timeline_cursor(Some(&encode_cursor(uuid::Uuid::now_v7()))).is_err(),
            "a list cursor is not a timeline cursor"
        );
    }
}

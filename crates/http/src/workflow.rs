//! Workflow routes: approvals, the timeline, the lead context.

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use leadline_domain::{
    AgentId, AppendEventRequest, Approval, ApprovalAction, ApprovalId, ApprovalQueueQuery,
    ApprovalStatus, Channel, Direction, DraftApprovalRequest, Event, EventContent, EventId,
    EventKind, LeadContext, LeadId, MessageBody, Metadata, RejectionReason, Subject,
    TimelineCursor, TimelineQuery,
};
use serde::Deserialize;

use crate::{
    AppState,
    dto::{ListResponse, decode_cursor, encode_cursor, page_limit},
    error::{ApiError, transition_error},
    extract::{ApiJson, ApiQuery, CurrentTenant},
};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/leads/{id}/approvals", post(draft))
        .route("/v1/leads/{id}/events", get(timeline).post(append_event))
        .route("/v1/leads/{id}/context", get(context))
        .route("/v1/cache/stats", get(cache_stats))
        .route("/v1/cache/preload", post(preload))
        .route("/v1/approvals", get(queue))
        .route("/v1/approvals/{id}", get(get_approval))
        .route("/v1/approvals/{id}/approve", post(approve))
        .route("/v1/approvals/{id}/reject", post(reject))
        .route("/v1/approvals/{id}/send", post(send))
        .route("/v1/approvals/{id}/cancel", post(cancel))
}

fn parse_id<T: std::str::FromStr>(raw: &str, what: &'static str) -> Result<T, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found(what))
}

/// `POST /v1/leads/{id}/approvals`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DraftBody {
    channel: Channel,
    subject: Option<Subject>,
    body: MessageBody,
    requested_by: AgentId,
}

async fn draft(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    Path(lead): Path<String>,
    ApiJson(body): ApiJson<DraftBody>,
) -> Result<Response, ApiError> {
    let lead: LeadId = parse_id(&lead, "lead")?;
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

async fn get_approval(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    Path(id): Path<String>,
) -> Result<Json<Approval>, ApiError> {
    let id: ApprovalId = parse_id(&id, "approval")?;
    Ok(Json(state.services().approvals.get(tenant.id, id).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecidedBy {
    decided_by: AgentId,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RejectBody {
    decided_by: AgentId,
    reason: RejectionReason,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SentBy {
    sent_by: AgentId,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelledBy {
    cancelled_by: AgentId,
}

async fn act(
    state: &AppState,
    tenant: leadline_domain::TenantId,
    id: &str,
    action: ApprovalAction,
    actor_field: &str,
) -> Result<Json<Approval>, ApiError> {
    let id: ApprovalId = parse_id(id, "approval")?;
    state
        .services()
        .approvals
        .act(tenant, id, &action)
        .await
        .map(Json)
        .map_err(|e| transition_error(e, actor_field))
}

async fn approve(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<DecidedBy>,
) -> Result<Json<Approval>, ApiError> {
    act(
        &state,
        tenant.id,
        &id,
        ApprovalAction::Approve {
            by: body.decided_by,
        },
        "decided_by",
    )
    .await
}

async fn reject(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RejectBody>,
) -> Result<Json<Approval>, ApiError> {
    act(
        &state,
        tenant.id,
        &id,
        ApprovalAction::Reject {
            by: body.decided_by,
            reason: body.reason,
        },
        "decided_by",
    )
    .await
}

async fn send(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<SentBy>,
) -> Result<Json<Approval>, ApiError> {
    act(
        &state,
        tenant.id,
        &id,
        ApprovalAction::MarkSent { by: body.sent_by },
        "sent_by",
    )
    .await
}

async fn cancel(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<CancelledBy>,
) -> Result<Json<Approval>, ApiError> {
    act(
        &state,
        tenant.id,
        &id,
        ApprovalAction::Cancel {
            by: body.cancelled_by,
        },
        "cancelled_by",
    )
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueParams {
    status: Option<ApprovalStatus>,
    requested_by: Option<AgentId>,
    limit: Option<u32>,
    cursor: Option<String>,
}

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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppendBody {
    kind: EventKind,
    direction: Direction,
    content: Option<EventContent>,
    occurred_at: Option<DateTime<Utc>>,
    actor: Option<AgentId>,
    #[serde(default)]
    metadata: Metadata,
}

async fn append_event(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    Path(lead): Path<String>,
    ApiJson(body): ApiJson<AppendBody>,
) -> Result<Response, ApiError> {
    let lead: LeadId = parse_id(&lead, "lead")?;
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
    Ok(Some(TimelineCursor {
        occurred_at,
        id: EventId::from_uuid(id),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TimelineParams {
    limit: Option<u32>,
    cursor: Option<String>,
}

async fn timeline(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    Path(lead): Path<String>,
    ApiQuery(params): ApiQuery<TimelineParams>,
) -> Result<Json<ListResponse<Event>>, ApiError> {
    let lead: LeadId = parse_id(&lead, "lead")?;
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

async fn context(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    Path(lead): Path<String>,
) -> Result<Json<std::sync::Arc<LeadContext>>, ApiError> {
    let lead: LeadId = parse_id(&lead, "lead")?;
    Ok(Json(
        state.services().context.context(tenant.id, lead).await?,
    ))
}

/// Cache counters since start, for tenant admins (every API key is a
/// tenant admin's today). The counters are the instance's, not per tenant:
/// they reveal volumes, never keys or data.
async fn cache_stats(
    State(state): State<AppState>,
    CurrentTenant(_): CurrentTenant,
) -> Json<leadline_ports::CacheStats> {
    Json(state.services().context.cache_stats())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PreloadParams {
    limit: Option<u16>,
}

/// Warms the caches with this tenant's most recently active leads.
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

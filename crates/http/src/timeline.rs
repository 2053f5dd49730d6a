//! Timeline routes: a lead's events, appended and paged by occurrence.

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use leadline_domain::{
    AgentId, AppendEventRequest, Direction, Event, EventContent, EventId, EventKind, LeadId,
    Metadata, TimelineCursor, TimelineQuery,
};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    AppState,
    dto::{ListResponse, page_limit},
    error::ApiError,
    extract::{ApiJson, ApiQuery, CurrentTenant, PathId},
    openapi::{self as oa, schema as s},
};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(timeline, append_event))
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
            decode_timeline_cursor(Some(&crate::dto::encode_cursor(uuid::Uuid::now_v7()))).is_err(),
            "a list cursor is not a timeline cursor"
        );
    }
}

//! Timeline routes: a lead's events, appended and paged by occurrence.

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use leadline_domain::{
    AgentId, AppendEventRequest, Direction, Event, EventContent, EventKind, LeadId, Metadata,
    TimelineCursor, TimelineQuery,
};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    AppState, cursor,
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
    security(("api_key" = ["events:write"])),
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
    security(("api_key" = ["read"])),
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
        after: cursor::decode::<TimelineCursor>(params.cursor.as_deref())?,
    };
    let page = state
        .services()
        .timeline
        .timeline(tenant.id, lead, &query)
        .await?;
    Ok(Json(ListResponse::from_page(page, |e| TimelineCursor {
        occurred_at: e.occurred_at,
        id: e.id,
    })))
}

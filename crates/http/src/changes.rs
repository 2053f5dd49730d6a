//! `GET /v1/changes`: the tenant's change feed. With `Accept:
//! text/event-stream` it is a stream of Server-Sent Events that resumes
//! after `Last-Event-ID`; otherwise a JSON page for pollers.

use std::convert::Infallible;

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, header},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures::StreamExt;
use leadline_domain::{ChangeFilter, ChangePosition, LoggedChange};
use leadline_ports::ChangeLogError;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    AppState,
    error::ApiError,
    extract::{ApiQuery, CurrentTenant},
    openapi::{self as oa, schema as s},
};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(changes))
}

impl From<ChangeLogError> for ApiError {
    fn from(err: ChangeLogError) -> Self {
        match err {
            e @ (ChangeLogError::Expired { .. } | ChangeLogError::Ahead { .. }) => {
                Self::gone(e.to_string())
            }
            ChangeLogError::Unavailable(u) => Self::unavailable(&u),
            ChangeLogError::Unknown(e) => Self::internal(&e),
        }
    }
}

/// Query of `GET /v1/changes`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ChangeParams {
    /// Only these types, comma-separated: `lead.created`, … or a whole
    /// entity (`lead`, `agent`, `approval`, `event`). All when absent.
    types: Option<String>,
    /// Continue after this change id (the `id` of an earlier change, or
    /// `next_after` of a page). A stream also takes it from `Last-Event-ID`.
    /// Absent: a page starts at the oldest change kept, a stream at the
    /// present.
    after: Option<String>,
    /// Page size for JSON (1 to 1000, default 100): how many changes are
    /// read, before `types` filters them, so a filtered page may hold fewer
    /// (even none) with `has_more` true.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// A page of changes.
#[derive(Debug, Serialize, ToSchema)]
struct ChangePage {
    /// The changes, oldest first.
    #[schema(value_type = Vec<s::Change>)]
    items: Vec<LoggedChange>,
    /// Pass as `after` to continue (always present: the log may grow).
    next_after: String,
    /// Whether the page was cut at `limit` (more may follow at once);
    /// `false` means the log ended here for now.
    has_more: bool,
}

fn position(raw: &str, field: &str) -> Result<ChangePosition, ApiError> {
    raw.parse()
        .map_err(|e: leadline_domain::ValueError| ApiError::invalid_field(field, e.to_string()))
}

/// The tenant's changes: every create, update and transition of its leads,
/// agents, approvals and events, in the order they can be read without
/// gaps.
///
/// With `Accept: text/event-stream`, a stream of Server-Sent Events (`id`:
/// the change id, `event`: its type, `data`: the change), a comment line
/// every `changes.heartbeat_secs` while idle; reconnecting with
/// `Last-Event-ID` continues after that change. Otherwise a JSON page.
/// A position older than what retention keeps, or past the end of the log
/// (the database was restored since), is a 410: start again from the
/// present. A stream that falls behind retention ends with an `event:
/// gone`; every stream ends when the server shuts down (reconnect with
/// `Last-Event-ID`).
#[utoipa::path(
    get,
    path = "/v1/changes",
    tag = "changes",
    security(("api_key" = ["read"])),
    params(
        ChangeParams,
        ("Last-Event-ID" = Option<String>, Header, description = "Continue a stream after this change id"),
    ),
    responses(
        (status = 200, description = "A page of changes (JSON), or the stream (text/event-stream)", content(
            (ChangePage = "application/json"),
            (String = "text/event-stream"),
        )),
        (status = 410, response = oa::Gone),
        (status = 422, response = oa::Unprocessable),
    ),
)]
async fn changes(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<ChangeParams>,
) -> Result<Response, ApiError> {
    let filter = ChangeFilter::parse(params.types.as_deref().unwrap_or_default())
        .map_err(|e| ApiError::invalid_field("types", e.to_string()))?;
    let last_event = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::invalid_field("Last-Event-ID", "must be a change id"))
                .and_then(|v| position(v, "Last-Event-ID"))
        })
        .transpose()?;
    let after = match last_event {
        Some(p) => Some(p),
        None => params
            .after
            .as_deref()
            .map(|a| position(a, "after"))
            .transpose()?,
    };
    let limit = params.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid_field(
            "limit",
            "must be between 1 and 1000",
        ));
    }
    let feed = &state.services().changes;
    let streaming = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"));
    if !streaming {
        let span = feed.page(tenant.id, after, &filter, limit).await?;
        return Ok(Json(ChangePage {
            next_after: span.last.to_string(),
            has_more: span.has_more,
            items: span.items,
        })
        .into_response());
    }
    let start = match after {
        Some(after) => {
            feed.check(tenant.id, after).await?;
            after
        }
        None => feed.head(tenant.id).await?,
    };
    let heartbeat = std::time::Duration::from_secs(feed.settings().heartbeat_secs);
    let events = feed
        .follow(tenant.id, start, filter)
        .map(|next| -> Result<Event, Infallible> {
            Ok(match next {
                Ok(change) => Event::default()
                    .id(change.position.to_string())
                    .event(change.change.kind.as_str())
                    .json_data(&change)
                    .unwrap_or_else(|_| Event::default().comment("unserialisable change")),
                Err(e) => Event::default().event("gone").data(
                    serde_json::json!({
                        "type": "urn:leadline:problem:gone",
                        "title": "Gone",
                        "status": 410,
                        "detail": e.to_string(),
                    })
                    .to_string(),
                ),
            })
        });
    Ok((
        [
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Sse::new(events).keep_alive(KeepAlive::new().interval(heartbeat)),
    )
        .into_response())
}

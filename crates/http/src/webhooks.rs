//! Webhook routes: `/v1/webhooks` (create, list), `/v1/webhooks/{id}`
//! (read, change, delete) and `/v1/webhooks/{id}/rotate`. A secret appears
//! in the answer that made it and nowhere else, ever.

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use leadline_app::WebhookWithSecret;
use leadline_domain::{
    ChangeFilter, Channel, CreateWebhookRequest, MessageChannels, UpdateWebhookRequest, Webhook,
    WebhookId, WebhookUrl,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    AppState, cursor,
    dto::{ListResponse, PageParams, page_limit},
    error::{ApiError, stale},
    extract::{ApiJson, ApiQuery, CurrentTenant, PathId},
    openapi::{self as oa, schema as s},
    routes::{expected_version, versioned},
};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get_webhook, update, delete))
        .routes(routes!(rotate))
        .routes(routes!(dead_letters))
}

impl From<leadline_ports::WebhookError> for ApiError {
    fn from(err: leadline_ports::WebhookError) -> Self {
        use leadline_ports::WebhookError as E;
        match err {
            E::NotFound => Self::not_found("webhook"),
            E::Conflict { current } => stale(current, false),
            E::TooMany { max } => Self::conflict(
                "webhooks",
                format!("a tenant may have at most {max} webhooks: delete one first"),
            ),
            E::ChannelTaken { channel, by } => Self::conflict(
                "channels",
                format!(
                    "webhook {by} already carries {channel} messages: each channel goes to one webhook (remove it there first)"
                ),
            ),
            E::ReceivesNothing => Self::invalid_field(
                "channels",
                "a webhook without the change feed (\"changes\": false) must carry at least one channel",
            ),
            E::NotConfigured => Self::conflict(
                "webhooks",
                "webhooks are not configured on this server: its operator must set webhooks.secret_key (see docs/operations.md)",
            ),
            E::Unavailable(u) => Self::unavailable(&u),
            E::Unknown(e) => Self::internal(&e),
        }
    }
}

/// A webhook endpoint, as the API shows it: never its secret.
#[derive(Debug, Serialize, ToSchema)]
struct WebhookView {
    /// Its id.
    id: uuid::Uuid,
    /// Where deliveries are POSTed.
    url: String,
    /// The change types it receives; empty for all.
    #[schema(value_type = Vec<String>, example = json!(["lead.created", "approval.sent"]))]
    types: Vec<&'static str>,
    /// Whether it receives the change feed (of `types`).
    changes: bool,
    /// The approval channels whose sent messages it carries (`sms`, `call`,
    /// `linkedin`), as `message.send` deliveries.
    #[schema(value_type = Vec<String>, example = json!(["sms"]))]
    channels: Vec<&'static str>,
    /// Whether deliveries go out.
    active: bool,
    /// When its secret was last rotated.
    secret_rotated_at: Option<DateTime<Utc>>,
    /// Until when the previous secret still signs beside the new one.
    previous_secret_expires_at: Option<DateTime<Utc>>,
    /// Failed attempts at the change its stream is stuck on (0: not stuck;
    /// a refused or exhausted change becomes a dead letter). The change
    /// stream's only: the messages of its `channels` are deliveries, with
    /// their own state in `GET /v1/deliveries`.
    failing_attempts: u32,
    /// The change stream's last delivery failure, until a delivery succeeds.
    last_error: Option<String>,
    /// When it last accepted a change.
    last_delivered_at: Option<DateTime<Utc>>,
    /// Creation time.
    created_at: DateTime<Utc>,
    /// Last change.
    updated_at: DateTime<Utc>,
    /// Optimistic-concurrency version; also the `ETag`.
    version: i64,
}

impl From<&Webhook> for WebhookView {
    fn from(w: &Webhook) -> Self {
        Self {
            id: w.id.as_uuid(),
            url: w.url.to_string(),
            types: w.types.types().iter().map(|t| t.as_str()).collect(),
            changes: w.changes,
            channels: w.channels.as_slice().iter().map(|c| c.as_str()).collect(),
            active: w.active,
            secret_rotated_at: w.secret_rotated_at,
            previous_secret_expires_at: w.previous_secret_expires_at,
            failing_attempts: w.delivery.failing_attempts,
            last_error: w.delivery.last_error.clone(),
            last_delivered_at: w.delivery.last_delivered_at,
            created_at: w.created_at,
            updated_at: w.updated_at,
            version: w.version,
        }
    }
}

/// A webhook with its new secret: the only time the secret is shown.
#[derive(Debug, Serialize, ToSchema)]
struct WebhookWithSecretView {
    /// The endpoint.
    webhook: WebhookView,
    /// The signing secret (`whsec_…`), for verifying `webhook-signature`
    /// as the Standard Webhooks libraries do. Shown only now: keep it.
    secret: String,
}

impl From<&WebhookWithSecret> for WebhookWithSecretView {
    fn from(w: &WebhookWithSecret) -> Self {
        Self {
            webhook: WebhookView::from(&w.webhook),
            secret: w.secret.expose(),
        }
    }
}

/// An answer carrying a secret: no cache may keep it.
fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    response
}

fn url_of(raw: &str) -> Result<WebhookUrl, ApiError> {
    WebhookUrl::parse(raw).map_err(|e| ApiError::invalid_field("url", e.to_string()))
}

fn types_of(raw: &[String]) -> Result<ChangeFilter, ApiError> {
    if let Some(bad) = raw.iter().find(|t| t.contains(',') || t.trim().is_empty()) {
        return Err(ApiError::invalid_field(
            "types",
            format!("{bad:?} is not a change type: give one type or entity per item"),
        ));
    }
    ChangeFilter::parse(&raw.join(",")).map_err(|e| ApiError::invalid_field("types", e.to_string()))
}

fn channels_of(raw: &[String]) -> Result<MessageChannels, ApiError> {
    let channels = raw
        .iter()
        .map(|c| {
            c.parse::<Channel>().map_err(|_| {
                ApiError::invalid_field(
                    "channels",
                    format!("{c:?} is not a channel: give sms, call or linkedin"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    MessageChannels::new(channels).map_err(|e| ApiError::invalid_field("channels", e.to_string()))
}

/// `POST /v1/webhooks`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateWebhookBody {
    /// Where deliveries are POSTed: an `http://` or `https://` URL without
    /// credentials.
    url: String,
    /// Change types (`lead.created`) or whole entities (`approval`); absent
    /// or empty for every change.
    #[serde(default)]
    types: Vec<String>,
    /// Whether it receives the change feed (default `true`); `false` for an
    /// endpoint that only carries messages.
    changes: Option<bool>,
    /// Approval channels (`sms`, `call`, `linkedin`) whose approved and
    /// sent messages it carries, one endpoint per channel; email goes out
    /// over SMTP.
    #[serde(default)]
    channels: Vec<String>,
    /// Whether deliveries go out at once (default `true`).
    active: Option<bool>,
}

/// Create a webhook endpoint. The answer carries its signing secret, once.
///
/// The endpoint receives the tenant's changes committed after it was made
/// (unless `changes` is `false`), and, for each of its `channels`, every
/// approved message sent on that channel as a `message.send` delivery
/// (`webhook-id` = `msg_dlv_` and the delivery's id), for the system that
/// actually sends texts, places calls or writes LinkedIn messages.
/// `Idempotency-Key` is refused here: a replayable answer would have to
/// keep the secret.
#[utoipa::path(
    post,
    path = "/v1/webhooks",
    tag = "webhooks",
    security(("api_key" = ["admin"])),
    request_body = CreateWebhookBody,
    responses(
        (status = 201, description = "Created, with its secret", body = WebhookWithSecretView, headers(
            ("ETag" = String, description = "The version, quoted"),
            ("Location" = String, description = "The webhook's URL"),
        )),
        (status = 409, response = oa::Conflict),
        (status = 422, response = oa::Unprocessable),
    ),
)]
async fn create(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    ApiJson(body): ApiJson<CreateWebhookBody>,
) -> Result<Response, ApiError> {
    let req = CreateWebhookRequest {
        url: url_of(&body.url)?,
        types: types_of(&body.types)?,
        changes: body.changes.unwrap_or(true),
        channels: channels_of(&body.channels)?,
        active: body.active.unwrap_or(true),
    };
    let created = state.services().webhooks.create(tenant.id, &req).await?;
    let location = format!("/v1/webhooks/{}", created.webhook.id);
    Ok(no_store(versioned(
        StatusCode::CREATED,
        &WebhookWithSecretView::from(&created),
        created.webhook.version,
        Some(location),
    )))
}

/// A page of webhooks.
#[derive(Debug, Serialize, ToSchema)]
struct WebhookPage {
    /// The webhooks.
    items: Vec<WebhookView>,
    /// Where the next page starts; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// The tenant's webhook endpoints, oldest first.
#[utoipa::path(
    get,
    path = "/v1/webhooks",
    tag = "webhooks",
    security(("api_key" = ["admin"])),
    params(PageParams),
    responses(
        (status = 200, description = "A page of webhooks", body = WebhookPage),
        (status = 422, response = oa::Unprocessable),
    ),
)]
async fn list(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<Json<WebhookPage>, ApiError> {
    let after = cursor::decode::<uuid::Uuid>(params.cursor.as_deref())?.map(WebhookId::from_uuid);
    let page = state
        .services()
        .webhooks
        .list(tenant.id, after, page_limit(params.limit)?)
        .await?;
    let page = ListResponse::from_page(page, |w| w.id.as_uuid());
    Ok(Json(WebhookPage {
        items: page.items.iter().map(WebhookView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Read a webhook endpoint (never its secret).
#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}",
    tag = "webhooks",
    security(("api_key" = ["admin"])),
    params(("id" = uuid::Uuid, Path, description = "The webhook's id")),
    responses(
        (status = 200, description = "The webhook", body = WebhookView, headers(
            ("ETag" = String, description = "The version, quoted"),
        )),
        (status = 404, response = oa::NotFound),
    ),
)]
async fn get_webhook(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    PathId(id): PathId<WebhookId>,
) -> Result<Response, ApiError> {
    let webhook = state.services().webhooks.get(tenant.id, id).await?;
    Ok(versioned(
        StatusCode::OK,
        &WebhookView::from(&webhook),
        webhook.version,
        None,
    ))
}

/// `PATCH /v1/webhooks/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateWebhookBody {
    /// The version read; required unless `If-Match` is sent.
    version: Option<i64>,
    /// A new URL.
    url: Option<String>,
    /// New change types; empty for every change.
    types: Option<Vec<String>>,
    /// Turn the change feed on (it starts from now) or off.
    changes: Option<bool>,
    /// New channels; empty for none.
    channels: Option<Vec<String>>,
    /// Pause (`false`) or resume (`true`) deliveries.
    active: Option<bool>,
}

/// Change a webhook's URL, types, feed, channels or state; absent fields stay.
#[utoipa::path(
    patch,
    path = "/v1/webhooks/{id}",
    tag = "webhooks",
    security(("api_key" = ["admin"])),
    params(
        ("id" = uuid::Uuid, Path, description = "The webhook's id"),
        ("If-Match" = Option<String>, Header, nullable = false, description = "The `ETag` read; a stale one is a 412"),
    ),
    request_body = UpdateWebhookBody,
    responses(
        (status = 200, description = "Updated", body = WebhookView),
        (status = 404, response = oa::NotFound),
        (status = 409, response = oa::Conflict),
        (status = 412, response = oa::PreconditionFailed),
        (status = 422, response = oa::Unprocessable),
        (status = 428, response = oa::PreconditionRequired),
    ),
)]
async fn update(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    PathId(id): PathId<WebhookId>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<UpdateWebhookBody>,
) -> Result<Response, ApiError> {
    let (version, from_if_match) = expected_version(&headers, body.version)?;
    let req = UpdateWebhookRequest {
        expected_version: version,
        url: body.url.as_deref().map(url_of).transpose()?,
        types: body.types.as_deref().map(types_of).transpose()?,
        changes: body.changes,
        channels: body.channels.as_deref().map(channels_of).transpose()?,
        active: body.active,
    };
    let webhook = match state.services().webhooks.update(tenant.id, id, &req).await {
        Err(leadline_ports::WebhookError::Conflict { current }) => {
            return Err(stale(current, from_if_match));
        }
        other => other?,
    };
    Ok(versioned(
        StatusCode::OK,
        &WebhookView::from(&webhook),
        webhook.version,
        None,
    ))
}

/// Delete a webhook endpoint: nothing more is delivered to it.
#[utoipa::path(
    delete,
    path = "/v1/webhooks/{id}",
    tag = "webhooks",
    security(("api_key" = ["admin"])),
    params(("id" = uuid::Uuid, Path, description = "The webhook's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, response = oa::NotFound),
    ),
)]
async fn delete(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    PathId(id): PathId<WebhookId>,
) -> Result<Response, ApiError> {
    state.services().webhooks.delete(tenant.id, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Give a webhook a new secret. The answer carries it, once; the previous
/// secret keeps signing beside it for a day (`previous_secret_expires_at`),
/// so receivers can switch without refusing a delivery.
#[utoipa::path(
    post,
    path = "/v1/webhooks/{id}/rotate",
    tag = "webhooks",
    security(("api_key" = ["admin"])),
    params(("id" = uuid::Uuid, Path, description = "The webhook's id")),
    responses(
        (status = 200, description = "Rotated, with the new secret", body = WebhookWithSecretView),
        (status = 404, response = oa::NotFound),
        (status = 409, response = oa::Conflict),
    ),
)]
async fn rotate(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    PathId(id): PathId<WebhookId>,
) -> Result<Response, ApiError> {
    let rotated = state.services().webhooks.rotate(tenant.id, id).await?;
    Ok(no_store(versioned(
        StatusCode::OK,
        &WebhookWithSecretView::from(&rotated),
        rotated.webhook.version,
        None,
    )))
}

/// Query of `GET /v1/webhooks/{id}/dead-letters`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct DeadLetterParams {
    /// How many, newest first.
    #[param(value_type = Option<s::PageLimit>)]
    limit: Option<u32>,
}

/// A change the endpoint never accepted.
#[derive(Debug, Serialize, ToSchema)]
struct DeadLetterView {
    /// The change's id in the feed (`GET /v1/changes?after=` just before it
    /// reads it again).
    change_id: String,
    /// Its type.
    #[serde(rename = "type")]
    kind: &'static str,
    /// The entity it was about.
    entity_id: uuid::Uuid,
    /// Attempts made.
    attempts: u32,
    /// Why it was given up on: the receiver's status, or the failure.
    reason: String,
    /// When.
    at: DateTime<Utc>,
}

/// Dead letters, newest first.
#[derive(Debug, Serialize, ToSchema)]
struct DeadLetterList {
    /// The dead letters.
    items: Vec<DeadLetterView>,
}

/// The changes a webhook endpoint never accepted (a 4xx refusal, or every
/// attempt failed), newest first: its stream moved past them.
#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}/dead-letters",
    tag = "webhooks",
    security(("api_key" = ["admin"])),
    params(("id" = uuid::Uuid, Path, description = "The webhook's id"), DeadLetterParams),
    responses(
        (status = 200, description = "Dead letters", body = DeadLetterList),
        (status = 404, response = oa::NotFound),
        (status = 422, response = oa::Unprocessable),
    ),
)]
async fn dead_letters(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    PathId(id): PathId<WebhookId>,
    ApiQuery(params): ApiQuery<DeadLetterParams>,
) -> Result<Json<DeadLetterList>, ApiError> {
    let letters = state
        .services()
        .webhooks
        .dead_letters(tenant.id, id, page_limit(params.limit)?)
        .await?;
    Ok(Json(DeadLetterList {
        items: letters
            .into_iter()
            .map(|d| DeadLetterView {
                change_id: d.change_id.to_string(),
                kind: d.kind.as_str(),
                entity_id: d.entity_id,
                attempts: d.attempts,
                reason: d.reason,
                at: d.at,
            })
            .collect(),
    }))
}

//! Delivery routes: the messages on their way out (`GET /v1/deliveries`,
//! `GET /v1/deliveries/{id}`), a retry of a failed one, and the tenant's
//! sender identity (`GET`/`PUT /v1/settings/email`).

use axum::{Json, extract::State};
use leadline_domain::{
    Delivery, DeliveryId, DeliveryStatus, DisplayName, Email, SenderIdentity, Unsubscribe,
};
use serde::{Deserialize, Serialize};
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
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(get_delivery))
        .routes(routes!(retry))
        .routes(routes!(get_sender, put_sender))
}

impl From<leadline_ports::DeliveryError> for ApiError {
    fn from(err: leadline_ports::DeliveryError) -> Self {
        use leadline_ports::DeliveryError as E;
        match err {
            E::NotFound => Self::not_found("delivery"),
            E::Conflict { current } => {
                let mut e = Self::conflict(
                    "status",
                    format!(
                        "the delivery is {current}: only failed or dead deliveries are retried"
                    ),
                );
                e.extension(
                    "current_status",
                    serde_json::Value::String(current.as_str().to_owned()),
                );
                e
            }
            E::Unavailable(u) => Self::unavailable(&u),
            E::Unknown(e) => Self::internal(&e),
        }
    }
}

/// Query of `GET /v1/deliveries`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListParams {
    /// Only deliveries in this status (`failed` and `dead` are the ones to
    /// look at).
    #[param(value_type = Option<s::DeliveryStatus>)]
    status: Option<DeliveryStatus>,
    /// Page size.
    #[param(value_type = Option<s::PageLimit>)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The tenant's deliveries, oldest first: every sent message, where it
/// stands, how many attempts it took and why the last one failed.
#[utoipa::path(
    get,
    path = "/v1/deliveries",
    tag = "deliveries",
    security(("api_key" = ["read"])),
    params(ListParams),
    responses(
        (status = 200, description = "A page of deliveries", body = s::DeliveryPage),
        (status = 422, response = oa::Unprocessable),
    ),
)]
async fn list(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<ListResponse<Delivery>>, ApiError> {
    let after = cursor::decode::<uuid::Uuid>(params.cursor.as_deref())?.map(DeliveryId::from_uuid);
    let page = state
        .services()
        .deliveries
        .list(tenant.id, params.status, after, page_limit(params.limit)?)
        .await?;
    Ok(Json(ListResponse::from_page(page, |d| d.id.as_uuid())))
}

/// Read a delivery.
#[utoipa::path(
    get,
    path = "/v1/deliveries/{id}",
    tag = "deliveries",
    security(("api_key" = ["read"])),
    params(("id" = uuid::Uuid, Path, description = "The delivery's id")),
    responses(
        (status = 200, description = "The delivery", body = s::Delivery),
        (status = 404, response = oa::NotFound),
    ),
)]
async fn get_delivery(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    PathId(id): PathId<DeliveryId>,
) -> Result<Json<Delivery>, ApiError> {
    Ok(Json(state.services().deliveries.get(tenant.id, id).await?))
}

/// Queue a failed or dead delivery again, due now, with a fresh budget of
/// attempts. Any other status is a 409 whose `current_status` says where
/// the delivery stands.
#[utoipa::path(
    post,
    path = "/v1/deliveries/{id}/retry",
    tag = "deliveries",
    security(("api_key" = ["approvals:decide"])),
    params(("id" = uuid::Uuid, Path, description = "The delivery's id")),
    responses(
        (status = 200, description = "The delivery, pending again", body = s::Delivery),
        (status = 404, response = oa::NotFound),
        (status = 409, response = oa::Conflict),
    ),
)]
async fn retry(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    PathId(id): PathId<DeliveryId>,
) -> Result<Json<Delivery>, ApiError> {
    Ok(Json(
        state.services().deliveries.retry(tenant.id, id).await?,
    ))
}

/// `GET /v1/settings/email`: the sender in use.
#[derive(Debug, Serialize, ToSchema)]
struct SenderView {
    /// The tenant's own sender; `null` while it uses the server's default
    /// (`smtp.from`).
    #[schema(value_type = Option<s::SenderIdentity>, required = true)]
    sender: Option<SenderIdentity>,
}

/// The tenant's sender identity: From, Reply-To and the unsubscribe
/// target of its email.
#[utoipa::path(
    get,
    path = "/v1/settings/email",
    tag = "deliveries",
    security(("api_key" = ["admin"])),
    responses(
        (status = 200, description = "The sender", body = SenderView),
    ),
)]
async fn get_sender(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
) -> Result<Json<SenderView>, ApiError> {
    Ok(Json(SenderView {
        sender: state.services().deliveries.sender(tenant.id).await?,
    }))
}

/// `PUT /v1/settings/email`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SenderBody {
    /// The From address.
    #[schema(value_type = s::Email)]
    from_email: Email,
    /// The From display name.
    #[schema(value_type = Option<s::DisplayName>)]
    from_name: Option<DisplayName>,
    /// Where replies go.
    #[schema(value_type = Option<s::Email>)]
    reply_to: Option<Email>,
    /// Where recipients unsubscribe: `mailto:` or `https://` (an https
    /// target also gets the one-click header of RFC 8058).
    #[schema(value_type = Option<s::Unsubscribe>)]
    unsubscribe: Option<Unsubscribe>,
}

/// Set the tenant's sender identity (replacing the whole of it).
#[utoipa::path(
    put,
    path = "/v1/settings/email",
    tag = "deliveries",
    security(("api_key" = ["admin"])),
    request_body = SenderBody,
    responses(
        (status = 200, description = "The sender, as stored", body = SenderView),
        (status = 422, response = oa::Unprocessable),
    ),
)]
async fn put_sender(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    ApiJson(body): ApiJson<SenderBody>,
) -> Result<Json<SenderView>, ApiError> {
    let sender = SenderIdentity::new(
        body.from_email,
        body.from_name,
        body.reply_to,
        body.unsubscribe,
    )
    .map_err(|e| ApiError::invalid_field(e.field, e.reason))?;
    state
        .services()
        .deliveries
        .set_sender(tenant.id, &sender)
        .await?;
    Ok(Json(SenderView {
        sender: Some(sender),
    }))
}

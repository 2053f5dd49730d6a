//! Approval routes: drafting a message for a lead, the queue, and the
//! lifecycle moves (approve, reject, send, cancel).

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use leadline_domain::{
    AgentId, Approval, ApprovalAction, ApprovalId, ApprovalQueueQuery, ApprovalStatus, Channel,
    DraftApprovalRequest, EditDraftRequest, LeadId, MessageBody, RejectionReason, Subject,
};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    AppState, cursor,
    dto::{ListResponse, page_limit},
    error::{ApiError, transition_error},
    extract::{ApiJson, ApiQuery, CurrentTenant, PathId},
    openapi::{self as oa, schema as s},
};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(draft))
        .routes(routes!(queue))
        .routes(routes!(get_approval))
        .routes(routes!(edit))
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
    security(("api_key" = ["approvals:draft"])),
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
    security(("api_key" = ["read"])),
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

/// `POST /v1/approvals/{id}/edit`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct EditBody {
    /// The new subject; absent or null for none.
    #[serde(default)]
    #[schema(value_type = Option<s::Subject>)]
    subject: Option<Subject>,
    /// The new message.
    #[schema(value_type = s::MessageBody)]
    body: MessageBody,
    /// The agent editing it.
    #[schema(value_type = uuid::Uuid)]
    edited_by: AgentId,
    /// The revision this edit was written against (the approval's
    /// `revision` as read).
    #[schema(minimum = 1)]
    revision: i32,
}

/// Replace a pending draft's text before it is decided.
///
/// Only a pending draft at `revision` changes: a decided approval is a 409
/// with `current_status`, one edited meanwhile a 409 with
/// `current_revision`. The revision goes up by one and `edited_by` is
/// recorded; while separation of duties is on, the editor may not approve
/// or reject it (they wrote it too). Logged as `approval.edited` in the
/// change feed; not a timeline event.
#[utoipa::path(
    post,
    path = "/v1/approvals/{id}/edit",
    tag = "approvals",
    security(("api_key" = ["approvals:draft"])),
    params(("id" = uuid::Uuid, Path, description = "The approval's id")),
    request_body = EditBody,
    responses(
        (status = 200, description = "The approval, edited", body = s::Approval),
        (status = 404, response = oa::NotFound),
        (status = 409, response = oa::Conflict),
    ),
)]
async fn edit(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    PathId(id): PathId<ApprovalId>,
    ApiJson(body): ApiJson<EditBody>,
) -> Result<Json<Approval>, ApiError> {
    let req = EditDraftRequest {
        subject: body.subject,
        body: body.body,
        edited_by: body.edited_by,
        revision: revision(Some(body.revision))?.unwrap_or(1),
    };
    Ok(Json(
        state.services().approvals.edit(tenant.id, id, &req).await?,
    ))
}

/// A revision as sent: at least 1 (422 naming `revision` otherwise).
fn revision(sent: Option<i32>) -> Result<Option<i32>, ApiError> {
    match sent {
        Some(r) if r < 1 => Err(ApiError::invalid_field(
            "revision",
            "must be at least 1 (the approval's revision as read)",
        )),
        other => Ok(other),
    }
}

/// `POST /v1/approvals/{id}/approve`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct DecidedBy {
    /// The agent approving it.
    #[schema(value_type = uuid::Uuid)]
    decided_by: AgentId,
    /// Approve only the draft at this revision (the text you read); a
    /// draft edited since is a 409 with `current_revision`.
    #[serde(default)]
    #[schema(minimum = 1)]
    revision: Option<i32>,
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
    /// Reject only the draft at this revision.
    #[serde(default)]
    #[schema(minimum = 1)]
    revision: Option<i32>,
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
    revision: Option<i32>,
) -> Result<Json<Approval>, ApiError> {
    state
        .services()
        .approvals
        .act_at(tenant, id, &action, revision)
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
    security(("api_key" = ["approvals:decide"])),
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
        revision(body.revision)?,
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
    security(("api_key" = ["approvals:decide"])),
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
        revision(body.revision)?,
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
    security(("api_key" = ["approvals:decide"])),
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
        None,
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
    security(("api_key" = ["approvals:draft"])),
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
        None,
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
    security(("api_key" = ["read"])),
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
        after: cursor::decode::<uuid::Uuid>(params.cursor.as_deref())?.map(ApprovalId::from_uuid),
    };
    let page = state.services().approvals.queue(tenant.id, &query).await?;
    Ok(Json(ListResponse::from_page(page, |a| a.id.as_uuid())))
}

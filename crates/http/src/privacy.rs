//! `POST /v1/privacy/export`: everything the tenant holds about one person,
//! found by their email, as one JSON document; `POST /v1/privacy/erase`:
//! all of it anonymised (`leadline_domain::erasure`).

use axum::{Json, extract::State};
use leadline_domain::{Email, ErasureReport, PersonData};
use leadline_ports::PrivacyError;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    AppState,
    error::ApiError,
    extract::{ApiJson, CurrentTenant},
    openapi::{self as oa, schema as s},
};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(export))
        .routes(routes!(erase))
}

impl From<PrivacyError> for ApiError {
    fn from(err: PrivacyError) -> Self {
        match err {
            PrivacyError::Unavailable(u) => Self::unavailable(&u),
            PrivacyError::Unknown(e) => Self::internal(&e),
        }
    }
}

/// Body of `POST /v1/privacy/export`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PersonBody {
    /// The person's email (compared case-insensitively).
    #[schema(value_type = s::Email)]
    email: String,
}

/// What the tenant holds about a person (the schema of
/// `leadline_domain::PersonData`'s JSON).
#[derive(ToSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct PersonExport {
    /// Whom it is about.
    email: String,
    /// When it was read.
    exported_at: chrono::DateTime<chrono::Utc>,
    /// Their leads, deleted ones too.
    leads: Vec<s::Lead>,
    /// The leads' events, oldest first.
    events: Vec<s::Event>,
    /// The leads' events a retention policy archived (off the timeline),
    /// oldest first.
    archived_events: Vec<s::Event>,
    /// The leads' approvals, oldest first.
    approvals: Vec<s::Approval>,
    /// The leads' deliveries, oldest first.
    deliveries: Vec<s::Delivery>,
    /// The audit records about the leads, events and approvals.
    audit: Vec<crate::audit::AuditEntryView>,
}

/// Everything the tenant holds about the person with this email: their
/// leads (deleted ones too), those leads' events, approvals and
/// deliveries, and the audit records about any of them. The export is
/// itself recorded in the audit trail (which leads, how much; never the
/// email). Nothing held is an answer too: empty lists.
#[utoipa::path(
    post,
    path = "/v1/privacy/export",
    tag = "privacy",
    security(("api_key" = ["admin"])),
    request_body = PersonBody,
    responses(
        (status = 200, description = "What the tenant holds about the person", body = PersonExport),
        (status = 422, response = oa::Unprocessable),
    ),
)]
async fn export(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    ApiJson(body): ApiJson<PersonBody>,
) -> Result<Json<PersonData>, ApiError> {
    let email =
        Email::parse(&body.email).map_err(|e| ApiError::invalid_field("email", e.to_string()))?;
    Ok(Json(
        state.services().privacy.export(tenant.id, &email).await?,
    ))
}

/// What an erasure did (the schema of
/// `leadline_domain::ErasureReport`'s JSON).
#[derive(ToSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct ErasureView {
    /// The erasure's id: the `person.erased` audit record's entity id.
    erasure_id: uuid::Uuid,
    /// When it ran.
    erased_at: chrono::DateTime<chrono::Utc>,
    /// The leads anonymised, by id (they stay, with their status, owner
    /// and history, so every count stays what it was).
    leads: Vec<uuid::Uuid>,
    /// Events whose text and personal metadata went.
    events: usize,
    /// Archived events likewise.
    archived_events: usize,
    /// Approvals whose texts went.
    approvals: usize,
    /// Pending approvals cancelled.
    cancelled_approvals: usize,
    /// Deliveries whose texts went (one still waiting is given up).
    deliveries: usize,
    /// Audit records whose changed fields were replaced by the erasure's
    /// marker (the chain still verifies).
    audit_records: u64,
    /// Other rows scrubbed: change-log entries, delivery attempts'
    /// details, rejected import lines, stored idempotent responses,
    /// search words.
    other_rows: u64,
}

/// Erases the person with this email from everything the tenant holds:
/// their leads are anonymised (names `[erased]`; email, phone, company and
/// metadata gone; status, owner and dates kept, so analytics stay
/// consistent), their events, approvals and deliveries lose their texts,
/// a pending draft is cancelled and an undelivered message given up, the
/// audit trail's records about them keep everything but their changed
/// fields, and every instance drops their cached contexts. The erasure is
/// recorded as `person.erased`, naming the leads by id, never the person.
/// Irreversible. A person the tenant holds nothing about is an erasure of
/// nothing.
#[utoipa::path(
    post,
    path = "/v1/privacy/erase",
    tag = "privacy",
    security(("api_key" = ["admin"])),
    request_body = PersonBody,
    responses(
        (status = 200, description = "What was erased", body = ErasureView),
        (status = 422, response = oa::Unprocessable),
    ),
)]
async fn erase(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    ApiJson(body): ApiJson<PersonBody>,
) -> Result<Json<ErasureReport>, ApiError> {
    let email =
        Email::parse(&body.email).map_err(|e| ApiError::invalid_field("email", e.to_string()))?;
    Ok(Json(
        state.services().privacy.erase(tenant.id, &email).await?,
    ))
}

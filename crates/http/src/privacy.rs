//! `POST /v1/privacy/export`: everything the tenant holds about one person,
//! found by their email, as one JSON document.

use axum::{Json, extract::State};
use leadline_domain::{Email, PersonData};
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
    OpenApiRouter::new().routes(routes!(export))
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

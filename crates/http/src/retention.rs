//! `GET`/`PUT /v1/settings/retention`: how long the tenant keeps its
//! timeline, and whether older events are deleted or archived.

use axum::{Json, extract::State};
use leadline_domain::{RetentionAction, RetentionPolicy};
use leadline_ports::RetentionError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    AppState,
    error::ApiError,
    extract::{ApiJson, CurrentTenant},
    openapi as oa,
};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(retention, set_retention))
}

impl From<RetentionError> for ApiError {
    fn from(err: RetentionError) -> Self {
        match err {
            RetentionError::Unavailable(u) => Self::unavailable(&u),
            RetentionError::Unknown(e) => Self::internal(&e),
        }
    }
}

/// The tenant's retention policy. Both fields null: every event is kept.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RetentionSettings {
    /// Events that occurred more than this many days ago (1 to 36500) are
    /// deleted or archived by a background job; null keeps them all.
    #[schema(minimum = 1, maximum = 36500)]
    events_older_than_days: Option<i64>,
    /// `archive` (moved to an archive the privacy export still reads; no
    /// longer on the timeline) or `delete`; required with a number of days.
    #[schema(pattern = "^(archive|delete)$")]
    action: Option<String>,
}

impl RetentionSettings {
    fn of(policy: Option<RetentionPolicy>) -> Self {
        Self {
            events_older_than_days: policy.map(|p| i64::from(p.events_older_than_days())),
            action: policy.map(|p| p.action().as_str().to_owned()),
        }
    }

    fn into_domain(self) -> Result<Option<RetentionPolicy>, ApiError> {
        match (self.events_older_than_days, self.action) {
            (None, None) => Ok(None),
            (None, Some(_)) => Err(ApiError::invalid_field(
                "events_older_than_days",
                "is required with an action (both null keeps every event)",
            )),
            (Some(_), None) => Err(ApiError::invalid_field(
                "action",
                "is required: archive or delete",
            )),
            (Some(days), Some(action)) => {
                let action: RetentionAction = action
                    .parse()
                    .map_err(|_| ApiError::invalid_field("action", "must be archive or delete"))?;
                RetentionPolicy::new(days, action)
                    .map(Some)
                    .map_err(|e| ApiError::invalid_field("events_older_than_days", e.to_string()))
            }
        }
    }
}

/// The tenant's retention policy.
#[utoipa::path(
    get,
    path = "/v1/settings/retention",
    tag = "timeline",
    security(("api_key" = ["admin"])),
    responses((status = 200, description = "The policy", body = RetentionSettings)),
)]
async fn retention(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
) -> Result<Json<RetentionSettings>, ApiError> {
    let policy = state.services().retention.policy(tenant.id).await?;
    Ok(Json(RetentionSettings::of(policy)))
}

/// Set or clear the tenant's retention policy. A background job applies
/// it in bounded batches (`retention.interval_secs`, `retention.batch`),
/// each leaving an audit record of how many events it removed.
#[utoipa::path(
    put,
    path = "/v1/settings/retention",
    tag = "timeline",
    security(("api_key" = ["admin"])),
    request_body = RetentionSettings,
    responses(
        (status = 200, description = "The policy as it now is", body = RetentionSettings),
        (status = 422, response = oa::Unprocessable),
    ),
)]
async fn set_retention(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    ApiJson(body): ApiJson<RetentionSettings>,
) -> Result<Json<RetentionSettings>, ApiError> {
    let policy = body.into_domain()?;
    let policy = state
        .services()
        .retention
        .set_policy(tenant.id, policy)
        .await?;
    Ok(Json(RetentionSettings::of(policy)))
}

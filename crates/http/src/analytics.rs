//! `GET /v1/analytics/{funnel,agents,activity}`: the dashboards' figures,
//! each with the time it is true of (`as_of`).

use axum::{Json, extract::State};
use chrono::{Datelike, NaiveDate};
use leadline_domain::{Activity, AgentsReport, DateRange, Funnel, Interval};
use leadline_ports::AnalyticsError;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    AppState,
    error::ApiError,
    extract::{ApiQuery, CurrentTenant},
    openapi::{self as oa, schema as s},
};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(funnel))
        .routes(routes!(agents))
        .routes(routes!(activity))
}

impl From<AnalyticsError> for ApiError {
    fn from(err: AnalyticsError) -> Self {
        match err {
            AnalyticsError::Unavailable(u) => Self::unavailable(&u),
            AnalyticsError::Unknown(e) => Self::internal(&e),
        }
    }
}

/// The range when none is asked for: the last 30 days, today included.
const DEFAULT_DAYS: u64 = 30;

/// Query of the funnel and activity reports.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct RangeParams {
    /// The first day counted (`YYYY-MM-DD`, UTC); default 29 days before `to`.
    #[param(value_type = Option<String>, format = Date)]
    from: Option<String>,
    /// The last day counted, included (`YYYY-MM-DD`, UTC); default today.
    #[param(value_type = Option<String>, format = Date)]
    to: Option<String>,
    /// Bucket size: `day` (default) or `week` (ISO weeks, from Monday).
    #[param(value_type = Option<String>, pattern = "^(day|week)$")]
    interval: Option<String>,
}

/// Exactly `YYYY-MM-DD` (chrono would also take a sign and more digits),
/// from year 1.
fn date(raw: &str) -> Result<NaiveDate, String> {
    let well_formed = raw.len() == 10
        && raw.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    well_formed
        .then(|| raw.parse::<NaiveDate>().ok())
        .flatten()
        .filter(|d| d.year() >= 1)
        .ok_or_else(|| "must be a date, YYYY-MM-DD, from year 1".to_owned())
}

impl RangeParams {
    /// The range and interval, or every field at fault with its reason.
    fn into_domain(self) -> Result<(DateRange, Interval), ApiError> {
        let mut problems: Vec<(String, String)> = Vec::new();
        let mut fault = |field: &str, why: String| problems.push((field.to_owned(), why));
        let interval = match self.interval.as_deref().map(str::parse::<Interval>) {
            None => Some(Interval::default()),
            Some(Ok(interval)) => Some(interval),
            Some(Err(e)) => {
                fault("interval", e.to_string());
                None
            }
        };
        let mut parsed = |raw: Option<&str>, field: &str| match raw.map(date) {
            Some(Err(why)) => {
                fault(field, why);
                Err(())
            }
            Some(Ok(d)) => Ok(Some(d)),
            None => Ok(None),
        };
        let to = parsed(self.to.as_deref(), "to");
        let from = parsed(self.from.as_deref(), "from");
        let range = match (from, to) {
            (Ok(from), Ok(to)) => {
                let to = to.unwrap_or_else(|| chrono::Utc::now().date_naive());
                let range = match from {
                    Some(from) => DateRange::new(from, to),
                    None => Ok(DateRange::ending(to, DEFAULT_DAYS)),
                };
                // Both dates are well formed: what is left is their order
                // or span, named by the one the caller sent last.
                range
                    .map_err(|e| {
                        if self.to.is_some() {
                            fault("to", e.to_string());
                        } else {
                            fault("from", "must not be after to (default: today)".to_owned());
                        }
                    })
                    .ok()
            }
            _ => None,
        };
        match (range, interval) {
            (Some(range), Some(interval)) if problems.is_empty() => Ok((range, interval)),
            _ => Err(ApiError::invalid_fields(problems)),
        }
    }
}

/// The agents report takes no parameters (and refuses any, as every
/// route does).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

/// Entries of one status.
#[derive(ToSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct StageCountView {
    status: s::LeadStatus,
    /// Entries in the range (or bucket).
    entered: u64,
}

/// Conversion between consecutive stages of the main path.
#[derive(ToSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct ConversionView {
    from: s::LeadStatus,
    to: s::LeadStatus,
    /// Leads that first entered `from` within the range.
    leads: u64,
    /// Of them, those that entered `to` at or after that (by `as_of`).
    converted: u64,
    /// `converted / leads`, to four places (never above 1); null when no
    /// lead entered `from`.
    rate: Option<f64>,
}

/// One bucket of the funnel.
#[derive(ToSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct FunnelBucketView {
    /// Its first day.
    start: NaiveDate,
    /// Entries per status, every status listed.
    stages: Vec<StageCountView>,
}

/// The funnel (the schema of `leadline_domain::Funnel`'s JSON).
#[derive(ToSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct FunnelView {
    /// Every write committed before this time is counted.
    as_of: chrono::DateTime<chrono::Utc>,
    from: NaiveDate,
    to: NaiveDate,
    #[schema(value_type = String, pattern = "^(day|week)$")]
    interval: String,
    /// Entries per status over the whole range.
    stages: Vec<StageCountView>,
    /// new → contacted → qualified → won.
    conversion: Vec<ConversionView>,
    /// Entries per bucket.
    intervals: Vec<FunnelBucketView>,
}

/// One agent's figures, all time.
#[derive(ToSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct AgentFiguresView {
    agent_id: uuid::Uuid,
    /// Leads assigned to them now, not deleted.
    leads_owned: u64,
    /// Approvals they drafted.
    approvals_drafted: u64,
    /// Approvals they approved (since sent or not).
    approvals_approved: u64,
    /// Approvals they rejected.
    approvals_rejected: u64,
    /// Messages they marked sent.
    messages_sent: u64,
    /// Median seconds from a lead's creation to its first outbound touch
    /// (at or after creation), over their leads that had one.
    median_first_touch_seconds: Option<f64>,
}

/// Per-agent figures (the schema of `leadline_domain::AgentsReport`'s JSON).
#[derive(ToSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct AgentsView {
    /// Every write committed before this time is counted.
    as_of: chrono::DateTime<chrono::Utc>,
    /// Every agent, by id.
    agents: Vec<AgentFiguresView>,
}

/// Events of one channel and direction.
#[derive(ToSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct ActivityCountView {
    /// The channel the event's metadata names, else its kind's (`email`,
    /// `sms`, `call`, `linkedin`, `meeting`, `other`).
    #[schema(pattern = "^(email|sms|call|linkedin|meeting|other)$")]
    channel: String,
    direction: s::Direction,
    events: u64,
}

/// One bucket of activity.
#[derive(ToSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct ActivityBucketView {
    /// Its first day.
    start: NaiveDate,
    /// Counts above zero, by channel then direction.
    counts: Vec<ActivityCountView>,
}

/// Activity (the schema of `leadline_domain::Activity`'s JSON).
#[derive(ToSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct ActivityView {
    /// Every write committed before this time is counted.
    as_of: chrono::DateTime<chrono::Utc>,
    from: NaiveDate,
    to: NaiveDate,
    #[schema(value_type = String, pattern = "^(day|week)$")]
    interval: String,
    /// Counts over the whole range.
    totals: Vec<ActivityCountView>,
    /// Counts per bucket.
    intervals: Vec<ActivityBucketView>,
}

/// The lead funnel: how many leads entered each status per day or week
/// (at creation, and at each status move), and conversion between
/// consecutive stages of new → contacted → qualified → won: of the leads
/// that first entered a stage within the range, the share that went on to
/// the next. On PostgreSQL
/// the figures are as of the last refresh (`as_of`; `analytics.refresh_secs`).
#[utoipa::path(
    get,
    path = "/v1/analytics/funnel",
    tag = "analytics",
    security(("api_key" = ["read"])),
    params(RangeParams),
    responses(
        (status = 200, description = "The funnel", body = FunnelView),
        (status = 422, response = oa::Unprocessable),
    ),
)]
async fn funnel(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    ApiQuery(params): ApiQuery<RangeParams>,
) -> Result<Json<Funnel>, ApiError> {
    let (range, interval) = params.into_domain()?;
    Ok(Json(
        state
            .services()
            .analytics
            .funnel(tenant.id, range, interval)
            .await?,
    ))
}

/// Per agent, all time: leads owned, approvals drafted, approved and
/// rejected, messages sent, and the median time from a lead's creation to
/// its first outbound touch.
#[utoipa::path(
    get,
    path = "/v1/analytics/agents",
    tag = "analytics",
    security(("api_key" = ["read"])),
    responses((status = 200, description = "Every agent's figures", body = AgentsView)),
)]
async fn agents(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    ApiQuery(NoParams {}): ApiQuery<NoParams>,
) -> Result<Json<AgentsReport>, ApiError> {
    Ok(Json(state.services().analytics.agents(tenant.id).await?))
}

/// Events per channel and direction, per day or week.
#[utoipa::path(
    get,
    path = "/v1/analytics/activity",
    tag = "analytics",
    security(("api_key" = ["read"])),
    params(RangeParams),
    responses(
        (status = 200, description = "Activity", body = ActivityView),
        (status = 422, response = oa::Unprocessable),
    ),
)]
async fn activity(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    ApiQuery(params): ApiQuery<RangeParams>,
) -> Result<Json<Activity>, ApiError> {
    let (range, interval) = params.into_domain()?;
    Ok(Json(
        state
            .services()
            .analytics
            .activity(tenant.id, range, interval)
            .await?,
    ))
}

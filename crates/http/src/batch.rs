//! Many leads in one call: `POST /v1/leads/batch` (up to 1,000 creates and
//! updates, each with its own result) and `POST /v1/leads/bulk` (one change
//! to every lead a filter lets through).

use axum::{Json, extract::State};
use leadline_app::BulkFailure;
use leadline_domain::{AgentId, BulkChange, LeadId, LeadStatus, ListLeadsQuery, Tag};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    AppState,
    dto::{CreateLeadBody, UpdateLeadBody},
    error::{ApiError, update_lead_error},
    extract::{ApiJson, CurrentTenant, from_value},
    openapi::{self as oa, schema as s},
};

/// Most items in one batch.
const MAX_ITEMS: usize = 1000;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(batch_leads))
        .routes(routes!(bulk_leads))
}

/// `POST /v1/leads/batch`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    /// 1 to 1,000 items, each `{"op": "create", "lead": {…}}` with the body
    /// of `POST /v1/leads`, or `{"op": "update", "id": "…", "lead": {…}}`
    /// with the body of `PATCH /v1/leads/{id}` (`version` required). Items
    /// are read one by one, so an item of any shape (even one that is no
    /// object) is accepted here and a bad one fails alone, with its problem
    /// in its result.
    #[schema(value_type = Vec<serde_json::Value>)]
    items: Vec<serde_json::Value>,
}

/// One item's outcome.
#[derive(Debug, Serialize, ToSchema)]
struct ItemResult {
    /// The item's position in `items`, from 0.
    index: usize,
    /// What the single call would have answered: 201, 200, or the
    /// problem's status.
    status: u16,
    /// The lead, when the item succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<s::Lead>)]
    lead: Option<leadline_domain::Lead>,
    /// The problem, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    problem: Option<serde_json::Value>,
}

/// The batch's outcomes, one per item, in order.
#[derive(Debug, Serialize, ToSchema)]
struct BatchResult {
    /// Per item.
    results: Vec<ItemResult>,
    /// How many succeeded.
    succeeded: usize,
    /// How many failed.
    failed: usize,
}

/// An item's member that is neither `op`, `id` nor `lead` (named in quotes
/// when its name is empty or odd).
fn unknown(name: &str) -> ApiError {
    let field = if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        name.to_owned()
    } else {
        format!("{name:?}")
    };
    ApiError::invalid_field(field, "is not a known field")
}

/// Runs one item.
async fn item(
    state: &AppState,
    tenant: leadline_domain::TenantId,
    value: serde_json::Value,
) -> Result<(u16, leadline_domain::Lead), ApiError> {
    let serde_json::Value::Object(mut object) = value else {
        return Err(ApiError::invalid_field("item", "must be a JSON object"));
    };
    let op = object.remove("op");
    let op = match op.as_ref().and_then(serde_json::Value::as_str) {
        Some(op @ ("create" | "update")) => op,
        _ => {
            return Err(ApiError::invalid_field(
                "op",
                "must be \"create\" or \"update\"",
            ));
        }
    };
    let lead = object
        .remove("lead")
        .ok_or_else(|| ApiError::invalid_field("lead", "is required"))?;
    let leads = &state.services().leads;
    match op {
        "create" => {
            if let Some(extra) = object.keys().next() {
                return Err(unknown(extra));
            }
            let body: CreateLeadBody = from_value(lead).map_err(|e| e.within("lead"))?;
            let created = leads.create(tenant, &body.into_domain()).await?;
            Ok((201, created))
        }
        _ => {
            let id = object
                .remove("id")
                .and_then(|v| v.as_str().and_then(|s| s.parse::<LeadId>().ok()))
                .ok_or_else(|| ApiError::invalid_field("id", "must be a lead's id"))?;
            if let Some(extra) = object.keys().next() {
                return Err(unknown(extra));
            }
            let body: UpdateLeadBody = from_value(lead).map_err(|e| e.within("lead"))?;
            let version = body
                .version()
                .ok_or_else(|| ApiError::invalid_field("lead.version", "is required"))?;
            let updated = leads
                .update(tenant, id, &body.into_domain(version))
                .await
                .map_err(|e| update_lead_error(e, false))?;
            Ok((200, updated))
        }
    }
}

/// Create and update up to 1,000 leads in one call.
///
/// Each item runs on its own, as its single call would (`POST /v1/leads`,
/// `PATCH /v1/leads/{id}` with `version`), and has its own result: one bad
/// item fails alone. The answer is 200 with a result per item, in order.
#[utoipa::path(
    post,
    path = "/v1/leads/batch",
    tag = "leads",
    security(("api_key" = ["leads:write"])),
    request_body = BatchBody,
    responses(
        (status = 200, description = "A result per item", body = BatchResult),
        (status = 400, response = oa::BadRequest),
        (status = 415, response = oa::UnsupportedMediaType),
        (status = 422, response = oa::Unprocessable),
    ),
)]
async fn batch_leads(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    ApiJson(body): ApiJson<BatchBody>,
) -> Result<Json<BatchResult>, ApiError> {
    if body.items.is_empty() || body.items.len() > MAX_ITEMS {
        return Err(ApiError::invalid_field(
            "items",
            "must hold 1 to 1000 items",
        ));
    }
    let mut results = Vec::with_capacity(body.items.len());
    for (index, value) in body.items.into_iter().enumerate() {
        let result = match item(&state, tenant.id, value).await {
            Ok((status, lead)) => ItemResult {
                index,
                status,
                lead: Some(lead),
                problem: None,
            },
            Err(e) => ItemResult {
                index,
                status: e.status().as_u16(),
                lead: None,
                problem: Some(e.to_json()),
            },
        };
        results.push(result);
    }
    let failed = results.iter().filter(|r| r.problem.is_some()).count();
    Ok(Json(BatchResult {
        succeeded: results.len() - failed,
        failed,
        results,
    }))
}

/// Which leads a bulk change touches.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct BulkFilter {
    /// Only leads in this status.
    #[schema(value_type = Option<s::LeadStatus>)]
    status: Option<LeadStatus>,
    /// Only leads assigned to this agent.
    #[schema(value_type = Option<uuid::Uuid>)]
    assigned_agent_id: Option<AgentId>,
    /// Only leads with this tag.
    #[schema(value_type = Option<s::Tag>)]
    tag: Option<Tag>,
}

/// The change.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct BulkSet {
    /// Move each lead to this status (where its lifecycle allows).
    #[schema(value_type = Option<s::LeadStatus>)]
    status: Option<LeadStatus>,
    /// Assign to this agent; `null` unassigns.
    #[serde(default, deserialize_with = "crate::dto::double_option")]
    #[schema(value_type = Option<uuid::Uuid>)]
    assigned_agent_id: Option<Option<AgentId>>,
    /// Tags to add.
    #[serde(default)]
    #[schema(value_type = Vec<s::Tag>)]
    add_tags: Vec<Tag>,
    /// Tags to remove.
    #[serde(default)]
    #[schema(value_type = Vec<s::Tag>)]
    remove_tags: Vec<Tag>,
}

/// `POST /v1/leads/bulk`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct BulkBody {
    /// Which leads (all of the tenant's when empty).
    #[serde(default)]
    filter: BulkFilter,
    /// What to change.
    set: BulkSet,
}

/// A lead the change could not apply to.
#[derive(Debug, Serialize, ToSchema)]
struct BulkFailureView {
    /// The lead.
    #[schema(value_type = uuid::Uuid)]
    id: LeadId,
    /// Why, as a problem.
    #[schema(value_type = Object)]
    problem: serde_json::Value,
}

/// What a bulk change did.
#[derive(Debug, Serialize, ToSchema)]
struct BulkResult {
    /// Leads the filter let through.
    matched: u64,
    /// Leads changed.
    changed: u64,
    /// Leads already as asked.
    unchanged: u64,
    /// Leads it could not change (a status move their lifecycle forbids,
    /// too many tags, …), each with its problem.
    failed: Vec<BulkFailureView>,
    /// More than 10,000 leads matched: only the first 10,000 were touched;
    /// call again.
    truncated: bool,
}

/// Apply one change to every lead a filter lets through.
///
/// Each lead is updated under its own rules (a status move its lifecycle
/// forbids fails for that lead alone) and at its current version, and its
/// cached context is invalidated on every instance. At most 10,000 leads
/// per call (`truncated` says when more matched).
#[utoipa::path(
    post,
    path = "/v1/leads/bulk",
    tag = "leads",
    security(("api_key" = ["leads:write"])),
    request_body = BulkBody,
    responses(
        (status = 200, description = "What changed", body = BulkResult),
        (status = 400, response = oa::BadRequest),
        (status = 415, response = oa::UnsupportedMediaType),
        (status = 422, response = oa::Unprocessable),
    ),
)]
async fn bulk_leads(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    ApiJson(body): ApiJson<BulkBody>,
) -> Result<Json<BulkResult>, ApiError> {
    let change = BulkChange {
        status: body.set.status,
        assigned_agent_id: body.set.assigned_agent_id,
        add_tags: body.set.add_tags,
        remove_tags: body.set.remove_tags,
    };
    if change.is_empty() {
        return Err(ApiError::invalid_field("set", "must change something"));
    }
    let filter = ListLeadsQuery {
        status: body.filter.status,
        assigned_agent_id: body.filter.assigned_agent_id,
        tag: body.filter.tag,
        ..ListLeadsQuery::default()
    };
    let outcome = state
        .services()
        .leads
        .bulk(tenant.id, &filter, &change)
        .await?;
    Ok(Json(BulkResult {
        matched: outcome.matched,
        changed: outcome.changed,
        unchanged: outcome.unchanged,
        failed: outcome
            .failed
            .into_iter()
            .map(|(id, why)| BulkFailureView {
                id,
                problem: match why {
                    BulkFailure::Invalid(e) => ApiError::invalid_field("tags", e.to_string()),
                    BulkFailure::Update(e) => update_lead_error(e, false),
                }
                .to_json(),
            })
            .collect(),
        truncated: outcome.truncated,
    }))
}

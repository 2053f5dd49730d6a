//! Lead search: `GET /v1/leads/search`, free text combined with the list's
//! filters, best hits first (ranking: `leadline_domain::search`).

use axum::{Json, extract::State};
use chrono::{DateTime, Utc};
use leadline_app::ExportQuery;
use leadline_domain::{
    AgentId, LeadStatus, ListLeadsQuery, MetadataFilter, SearchCursor, SearchField, SearchHit,
    SearchLeadsQuery, SearchText, Tag, time::check_storable,
};
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    AppState, cursor,
    dto::{ListResponse, page_limit},
    error::ApiError,
    extract::{ApiQuery, CurrentTenant},
    openapi::{self as oa, schema as s},
};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(search_leads))
}

/// Query of `GET /v1/leads/search` and `GET /v1/leads/export`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct SearchParams {
    /// What to look for (required to search; optional for an export, which
    /// then lists every lead the filters let through): words of names,
    /// email, company, phone or tags (accents and case ignored). Whole words
    /// rank first, then prefixes (`gra` finds Grace), then near misses
    /// (`hoper` finds Hopper: a word no lead of the tenant starts with is
    /// taken as a typo). Every word must match. At most 8 words of at most
    /// 40 characters, and 256 characters in all.
    q: Option<String>,
    /// Only leads in this status.
    #[param(value_type = Option<s::LeadStatus>)]
    status: Option<LeadStatus>,
    /// Only leads assigned to this agent.
    #[param(value_type = Option<uuid::Uuid>)]
    assigned_agent_id: Option<AgentId>,
    /// Only leads with this tag.
    #[param(value_type = Option<s::Tag>)]
    tag: Option<Tag>,
    /// Only leads created at or after this time (RFC 3339).
    created_after: Option<DateTime<Utc>>,
    /// Only leads created before this time (RFC 3339).
    created_before: Option<DateTime<Utc>>,
    /// Only leads updated at or after this time (RFC 3339).
    updated_after: Option<DateTime<Utc>>,
    /// Only leads updated before this time (RFC 3339).
    updated_before: Option<DateTime<Utc>>,
    /// Custom fields: a JSON object of strings, numbers, booleans or nulls
    /// that the lead's metadata must hold, e.g. `{"region":"emea"}`.
    metadata: Option<String>,
    /// Page size.
    #[param(value_type = Option<s::PageLimit>)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// One hit as the API answers it.
#[derive(Debug, Serialize)]
struct HitView {
    lead: leadline_domain::Lead,
    score: u32,
    matched: Vec<SearchField>,
    highlights: Vec<leadline_domain::search::Highlight>,
}

impl From<SearchHit> for HitView {
    fn from(hit: SearchHit) -> Self {
        Self {
            lead: hit.lead,
            score: hit.score,
            matched: hit.matched,
            highlights: hit.highlights,
        }
    }
}

fn storable(field: &str, at: Option<DateTime<Utc>>) -> Result<Option<DateTime<Utc>>, ApiError> {
    at.map(|t| check_storable(t).map_err(|e| ApiError::invalid_field(field, e.to_string())))
        .transpose()
}

impl SearchParams {
    /// What to export: the search's hits when `q` is given, else the list
    /// with its filters (the other filters need `q`).
    pub(crate) fn try_into_export(self) -> Result<ExportQuery, ApiError> {
        for (field, given) in [
            ("cursor", self.cursor.is_some()),
            ("limit", self.limit.is_some()),
        ] {
            if given {
                return Err(ApiError::invalid_field(
                    field,
                    "an export holds every match: it has no pages",
                ));
            }
        }
        if self.q.is_some() {
            return Ok(ExportQuery::Search(Box::new(self.try_into_domain()?)));
        }
        for (field, given) in [
            ("created_after", self.created_after.is_some()),
            ("created_before", self.created_before.is_some()),
            ("updated_after", self.updated_after.is_some()),
            ("updated_before", self.updated_before.is_some()),
            ("metadata", self.metadata.is_some()),
        ] {
            if given {
                return Err(ApiError::invalid_field(
                    field,
                    "applies to a search: give q too, or leave it out",
                ));
            }
        }
        Ok(ExportQuery::List(ListLeadsQuery {
            status: self.status,
            assigned_agent_id: self.assigned_agent_id,
            tag: self.tag,
            ..ListLeadsQuery::default()
        }))
    }

    fn try_into_domain(self) -> Result<SearchLeadsQuery, ApiError> {
        let q = self
            .q
            .ok_or_else(|| ApiError::invalid_field("q", "is required"))?;
        let metadata = self
            .metadata
            .map(|raw| {
                let value: serde_json::Value = serde_json::from_str(&raw)
                    .map_err(|_| ApiError::invalid_field("metadata", "must be a JSON object"))?;
                MetadataFilter::new(value)
                    .map_err(|e| ApiError::invalid_field("metadata", e.to_string()))
            })
            .transpose()?;
        let query = SearchLeadsQuery {
            text: SearchText::parse(&q).map_err(|e| ApiError::invalid_field("q", e.to_string()))?,
            status: self.status,
            assigned_agent_id: self.assigned_agent_id,
            tag: self.tag,
            created_after: storable("created_after", self.created_after)?,
            created_before: storable("created_before", self.created_before)?,
            updated_after: storable("updated_after", self.updated_after)?,
            updated_before: storable("updated_before", self.updated_before)?,
            metadata,
            limit: page_limit(self.limit)?,
            after: cursor::decode::<SearchCursor>(self.cursor.as_deref())?,
        };
        if let Some(after) = &query.after
            && !query.continues(after)
        {
            return Err(ApiError::invalid_field(
                "cursor",
                "continues another search (other words or filters): search again without it",
            ));
        }
        Ok(query)
    }
}

/// Search leads by free text, with the list's filters, best hits first.
///
/// Each hit carries its `score` (3 per word that matched whole, 2 per
/// prefix, 1 per near miss), the fields a word `matched` in and, for each
/// of them, its text with the matched words' `[start, end)` code-point
/// ranges (`highlights`). Ties are newest first. Deleted leads are never
/// found. A query word that no word of the tenant starts with is taken as
/// a typo and matches the words it is closest to. A `cursor` continues
/// only the search that gave it: with other words or filters it is a 422
/// naming `cursor`.
#[utoipa::path(
    get,
    path = "/v1/leads/search",
    tag = "leads",
    security(("api_key" = ["read"])),
    params(SearchParams),
    responses(
        (status = 200, description = "A page of hits", body = s::LeadHitPage),
        (status = 422, response = oa::Unprocessable),
    ),
)]
async fn search_leads(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    ApiQuery(params): ApiQuery<SearchParams>,
) -> Result<Json<ListResponse<HitView>>, ApiError> {
    let query = params.try_into_domain()?;
    let page = state.services().leads.search(tenant.id, &query).await?;
    let page = ListResponse::from_page(page, |hit: &SearchHit| query.cursor_after(hit));
    Ok(Json(ListResponse {
        items: page.items.into_iter().map(HitView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

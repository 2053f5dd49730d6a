//! `GET /v1/leads/duplicates`: groups of leads that are likely one person,
//! for cleaning up after an import.

use axum::{Json, extract::State};
use leadline_domain::{DuplicateGroup, DuplicateReason, DuplicatesCursor, DuplicatesQuery, Lead};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    AppState,
    cursor::{self, Keyset},
    dto::{ListResponse, page_limit},
    error::ApiError,
    extract::{ApiQuery, CurrentTenant},
    openapi::{self as oa, schema as s},
};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_duplicates))
}

impl Keyset for DuplicatesCursor {
    fn write(&self, out: &mut Vec<u8>) {
        out.push(self.reason.ordinal());
        out.extend_from_slice(self.key.as_bytes());
    }

    fn read(bytes: &[u8]) -> Option<Self> {
        let (&ordinal, key) = bytes.split_first()?;
        Some(Self {
            reason: DuplicateReason::from_ordinal(ordinal)?,
            key: String::from_utf8(key.to_vec()).ok()?,
        })
    }
}

/// Query of `GET /v1/leads/duplicates`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct DuplicatesParams {
    /// Groups per page.
    #[param(value_type = Option<s::PageLimit>)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// A group of likely duplicates.
#[derive(Debug, Serialize, ToSchema)]
struct GroupView {
    /// Why they are grouped: `email`, `phone` or `name_company`.
    #[schema(value_type = String)]
    reason: DuplicateReason,
    /// What they share: the email, the phone, or the folded name and
    /// company (`gracehopper|usnavy`).
    key: String,
    /// How many live leads share it.
    count: u64,
    /// The leads, oldest first (at most 50).
    #[schema(value_type = Vec<s::Lead>)]
    leads: Vec<Lead>,
}

/// A page of groups.
#[derive(Debug, Serialize, ToSchema)]
struct GroupPage {
    /// This page's groups.
    items: Vec<GroupView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    next_cursor: Option<String>,
}

/// Groups of leads that are likely the same person: the same email, the
/// same phone, or the same name at the same company (accents, case and
/// punctuation aside). Groups come by reason, then key; deleted leads are
/// left out.
#[utoipa::path(
    get,
    path = "/v1/leads/duplicates",
    tag = "leads",
    security(("api_key" = ["read"])),
    params(DuplicatesParams),
    responses(
        (status = 200, description = "A page of groups", body = GroupPage),
        (status = 422, response = oa::Unprocessable),
    ),
)]
async fn list_duplicates(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    ApiQuery(params): ApiQuery<DuplicatesParams>,
) -> Result<Json<GroupPage>, ApiError> {
    let query = DuplicatesQuery {
        limit: page_limit(params.limit)?,
        after: cursor::decode::<DuplicatesCursor>(params.cursor.as_deref())?,
    };
    let page = state.services().leads.duplicates(tenant.id, &query).await?;
    let page = ListResponse::from_page(page, |g: &DuplicateGroup| DuplicatesCursor {
        reason: g.reason,
        key: g.key.clone(),
    });
    Ok(Json(GroupPage {
        items: page
            .items
            .into_iter()
            .map(|g| GroupView {
                reason: g.reason,
                key: g.key,
                count: g.count,
                leads: g.leads,
            })
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

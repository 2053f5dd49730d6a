//! `GET /v1/leads/export`: the tenant's leads as CSV, streamed page by page
//! (columns: `leadline_app::EXPORT_COLUMNS`, the ones an import maps back).

use axum::{
    body::Body,
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse as _, Response},
};
use futures::StreamExt as _;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    AppState,
    error::ApiError,
    extract::{ApiQuery, CurrentTenant},
    openapi as oa,
    search::SearchParams,
};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(export_leads))
}

/// Export leads as CSV: every lead the list filters let through, newest
/// first, or with `q` a search's hits, best first.
///
/// Columns: `first_name, last_name, email, phone, company, source, status,
/// owner` (the agent's email), `tags` (comma-separated), `metadata` (a JSON
/// object), then `leadline_id, leadline_created_at, leadline_updated_at`.
/// Importing the file recreates the leads. The body is streamed: a failure
/// midway ends it early (the missing last line shows it).
#[utoipa::path(
    get,
    path = "/v1/leads/export",
    tag = "leads",
    security(("api_key" = ["read"])),
    params(SearchParams),
    responses(
        (status = 200, description = "The leads as CSV", content_type = "text/csv", body = String),
        (status = 422, response = oa::Unprocessable),
    ),
)]
async fn export_leads(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    ApiQuery(params): ApiQuery<SearchParams>,
) -> Result<Response, ApiError> {
    let query = params.try_into_export()?;
    let chunks = state
        .services()
        .exports
        .csv(tenant.id, query)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let body = Body::from_stream(chunks.map(|chunk| {
        chunk.map_err(|e| {
            tracing::error!(error = %e, "export failed midway; the response is cut short");
            std::io::Error::other(e.to_string())
        })
    }));
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"leads.csv\""),
    );
    Ok(response)
}

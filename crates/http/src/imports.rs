//! Import routes: `POST /v1/imports` takes a CSV body, streamed to a spool
//! file (never held in memory), answers 202 with the run at once and imports
//! in the background, so the job survives the client going away;
//! `GET /v1/imports/{id}` reports it; `GET /v1/imports/{id}/rejected.csv`
//! hands the rejected rows back for fixing.
//!
//! A run is identified by the file's content and the duplicate policy:
//! posting the same file again answers the same run (and resumes it if it
//! stopped), which makes the POST idempotent without an `Idempotency-Key`.

use std::io::Write as _;

use axum::{
    Json,
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse as _, Response},
};
use futures::StreamExt as _;
use leadline_app::{CsvSource, ImportOptions};
use leadline_domain::{
    ImportId,
    import::{ColumnMap, ImportRun, ImportStatus, OnDuplicate, Target},
};
use leadline_ports::ImportError;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    AppState,
    error::ApiError,
    extract::{ApiQuery, CurrentTenant, PathId},
    openapi as oa,
};

/// The largest CSV body accepted.
pub(crate) const MAX_IMPORT_BYTES: u64 = 512 * 1024 * 1024;

/// Rejected rows listed in a run's report; the rest are in `rejected.csv`.
pub(crate) const LISTED_REJECTS: u32 = 100;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_import))
        .routes(routes!(get_import))
        .routes(routes!(rejected_csv))
}

impl From<ImportError> for ApiError {
    fn from(err: ImportError) -> Self {
        match err {
            ImportError::NotFound => Self::not_found("import"),
            ImportError::Moved { committed_line } => Self::conflict(
                "import",
                format!("another process is importing this file (at line {committed_line})"),
            ),
            ImportError::AgentUnavailable => {
                Self::conflict("owner", "an assigned agent is missing or inactive")
            }
            ImportError::Unavailable(u) => Self::unavailable(&u),
            ImportError::Unknown(e) => Self::internal(&e),
        }
    }
}

/// Query of `POST /v1/imports`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ImportParams {
    /// A row whose email is already a lead's: `skip` (default), `update`
    /// or `create`.
    on_duplicate: Option<String>,
    /// Column mapping over the guessed one, as a JSON object of header to
    /// field (`{"E-mail Address":"email"}`); fields: first_name, last_name,
    /// name, email, phone, company, source, status, owner, tags, metadata,
    /// metadata_json, ignore.
    map: Option<String>,
    /// The file's name, for the report (default `upload.csv`).
    name: Option<String>,
}

impl ImportParams {
    fn options(&self) -> Result<ImportOptions, ApiError> {
        let on_duplicate = self
            .on_duplicate
            .as_deref()
            .map(str::parse::<OnDuplicate>)
            .transpose()
            .map_err(|e| ApiError::invalid_field("on_duplicate", e.to_string()))?
            .unwrap_or_default();
        let mapping = match &self.map {
            None => Vec::new(),
            Some(raw) => {
                let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(raw)
                    .map_err(|_| {
                        ApiError::invalid_field("map", "must be a JSON object of header to field")
                    })?;
                object
                    .into_iter()
                    .map(|(header, field)| {
                        let field = field.as_str().unwrap_or_default();
                        Target::parse(field)
                            .map(|t| (header.clone(), t))
                            .map_err(|e| ApiError::invalid_field("map", format!("{header}: {e}")))
                    })
                    .collect::<Result<_, _>>()?
            }
        };
        Ok(ImportOptions {
            on_duplicate,
            mapping,
        })
    }
}

/// An import run as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
struct ImportView {
    /// Its id.
    #[schema(value_type = uuid::Uuid)]
    id: ImportId,
    /// `running`, `done` or `failed`.
    status: &'static str,
    /// Running, but without progress for two minutes: the process reading
    /// it most likely stopped (a restart, a crash). POST the same file again
    /// (or re-run the CLI) to resume after `committed_line`.
    stalled: bool,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<String>,
    /// The file's name.
    source_name: String,
    /// SHA-256 of the file: the same file posted again is the same run.
    file_sha256: String,
    /// The duplicate policy.
    on_duplicate: &'static str,
    /// Data rows read and committed.
    rows: u64,
    /// Leads created.
    created: u64,
    /// Leads updated.
    updated: u64,
    /// Rows skipped as duplicates.
    skipped: u64,
    /// Rows rejected.
    rejected: u64,
    /// The last line of the file committed.
    committed_line: u64,
    /// The first rejected rows (at most 100), each with its line and its
    /// bad columns; all of them are at `rejected_csv`.
    errors: Vec<RejectView>,
    /// Where the rejected rows are, as CSV.
    rejected_csv: String,
    /// When it started.
    created_at: chrono::DateTime<chrono::Utc>,
    /// Its last progress.
    updated_at: chrono::DateTime<chrono::Utc>,
}

/// A rejected row.
#[derive(Debug, Serialize, ToSchema)]
struct RejectView {
    /// Its line in the file.
    line: u64,
    /// Its bad columns.
    errors: Vec<ColumnErrorView>,
}

/// One bad value.
#[derive(Debug, Serialize, ToSchema)]
struct ColumnErrorView {
    /// The column's header (empty for the row as a whole).
    column: String,
    /// Why.
    reason: String,
}

impl ImportView {
    fn of(run: ImportRun, rejects: Vec<leadline_domain::import::RejectedRow>) -> Self {
        Self {
            rejected_csv: format!("/v1/imports/{}/rejected.csv", run.id),
            id: run.id,
            status: run.status.as_str(),
            stalled: run.stalled(chrono::Utc::now()),
            failure: run.failure,
            source_name: run.source_name,
            file_sha256: run.file_sha256,
            on_duplicate: run.on_duplicate.as_str(),
            rows: run.counts.rows,
            created: run.counts.created,
            updated: run.counts.updated,
            skipped: run.counts.skipped,
            rejected: run.counts.rejected,
            committed_line: run.committed_line,
            errors: rejects
                .into_iter()
                .map(|r| RejectView {
                    line: r.line,
                    errors: r
                        .errors
                        .into_iter()
                        .map(|e| ColumnErrorView {
                            column: e.column,
                            reason: e.reason,
                        })
                        .collect(),
                })
                .collect(),
            created_at: run.created_at,
            updated_at: run.updated_at,
        }
    }
}

/// The name every spool file starts with, so that those a killed process
/// left behind can be found ([`sweep_spool`]).
const SPOOL_PREFIX: &str = "leadline-import-";

/// Removes spool files older than `older_than` from the temporary
/// directory: the uploads of processes killed mid-import (a running one
/// keeps its file open, and on Unix an open file stays readable when its
/// name is removed). Returns how many went.
#[must_use]
pub fn sweep_spool(older_than: std::time::Duration) -> usize {
    sweep_spool_in(&std::env::temp_dir(), older_than)
}

fn sweep_spool_in(dir: &std::path::Path, older_than: std::time::Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(SPOOL_PREFIX))
        .filter(|e| {
            e.metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|at| at.elapsed().ok())
                .is_some_and(|age| age >= older_than)
        })
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

/// The body, written to a spool file as it arrives, with its hash.
async fn spool<E>(
    mut stream: impl futures::Stream<Item = Result<axum::body::Bytes, E>> + Unpin,
) -> Result<(tempfile::NamedTempFile, String), ApiError> {
    let file = tempfile::Builder::new()
        .prefix(SPOOL_PREFIX)
        .tempfile()
        .map_err(|e| ApiError::internal(&format!("spool file: {e}")))?;
    let mut writer = std::io::BufWriter::new(
        file.reopen()
            .map_err(|e| ApiError::internal(&format!("spool file: {e}")))?,
    );
    let mut hash = sha2::Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|_| ApiError::malformed_body("the body could not be read to its end"))?;
        size += chunk.len() as u64;
        if size > MAX_IMPORT_BYTES {
            return Err(ApiError::payload_too_large()
                .with_detail("an import body may be at most 512 MiB: split the file"));
        }
        hash.update(&chunk);
        // Small writes to a buffered local file: not worth a thread hop.
        writer
            .write_all(&chunk)
            .map_err(|e| ApiError::internal(&format!("spool file: {e}")))?;
    }
    writer
        .flush()
        .map_err(|e| ApiError::internal(&format!("spool file: {e}")))?;
    let hex = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((file, hex))
}

/// Import leads from a CSV body (`text/csv`).
///
/// Headers of plain spreadsheets and of HubSpot, Salesforce and Pipedrive
/// exports are recognised case- and punctuation-insensitively; `map`
/// overrides; other columns land in metadata. Rows are validated like the
/// API's bodies; a bad row is rejected with its line and columns and never
/// stops the file. Answers 202 with the run once the body is received; the
/// import continues if the client goes away. Posting the same file again
/// answers the same run (202 while it runs, resuming it if it stopped; 200
/// once done).
#[utoipa::path(
    post,
    path = "/v1/imports",
    tag = "imports",
    security(("api_key" = ["leads:write"])),
    params(ImportParams),
    request_body(content = String, content_type = "text/csv", description = "The CSV file: UTF-8 with or without BOM; `,`, `;` or tab"),
    responses(
        (status = 202, description = "The run, started", body = ImportView, headers(
            ("Location" = String, description = "The run's URL"),
        )),
        (status = 200, description = "The same file was imported before: its run", body = ImportView),
        (status = 400, response = oa::BadRequest),
        (status = 413, description = "The body is over 512 MiB", body = crate::openapi::schema::Problem, content_type = "application/problem+json"),
        (status = 415, response = oa::UnsupportedMediaType),
        (status = 422, response = oa::Unprocessable),
    ),
)]
async fn create_import(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    ApiQuery(params): ApiQuery<ImportParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let mime = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if !matches!(mime.as_str(), "text/csv" | "application/csv" | "text/plain") {
        return Err(ApiError::unsupported_media_type().with_detail("send the file as text/csv"));
    }
    let options = params.options()?;
    let name = params
        .name
        .clone()
        .unwrap_or_else(|| "upload.csv".to_owned());
    let started = begin(&state, tenant.id, body.into_data_stream(), name, options).await?;
    let location = format!("/v1/imports/{}", started.run.id);
    let mut response = (
        started.status,
        Json(ImportView::of(started.run, started.rejects)),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

/// An import begun by [`begin`].
pub(crate) struct Started {
    /// 202 for a run now going on in the background, 200 for the same file
    /// imported before.
    pub status: StatusCode,
    /// The run.
    pub run: ImportRun,
    /// Its first rejected rows, when it is done.
    pub rejects: Vec<leadline_domain::import::RejectedRow>,
}

/// Spools an uploaded file, checks its header, and starts (or finds, or
/// resumes) its run, importing in the background: what `POST /v1/imports`
/// and the console's import page both do.
pub(crate) async fn begin<E>(
    state: &AppState,
    tenant: leadline_domain::TenantId,
    file: impl futures::Stream<Item = Result<axum::body::Bytes, E>> + Unpin,
    name: String,
    options: ImportOptions,
) -> Result<Started, ApiError> {
    if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid_field(
            "name",
            "must be 1 to 255 bytes without control characters",
        ));
    }
    let (spooled, sha) = spool(file).await?;
    let reopened = spooled
        .reopen()
        .map_err(|e| ApiError::internal(&format!("spool file: {e}")))?;
    let source = CsvSource::open(reopened)
        .await
        .map_err(|e| ApiError::invalid_field("body", e.to_string()))?;
    ColumnMap::new(&source.headers, &options.mapping)
        .map_err(|e| ApiError::invalid_field("map", e.to_string()))?;
    let imports = state.services().imports.clone();
    let run = imports
        .start(tenant, &sha, &name, &source.headers, options.on_duplicate)
        .await?;
    if run.status == ImportStatus::Done {
        // The same file again: the finished run, as GET shows it.
        let rejects = imports
            .first_rejects(tenant, run.id, LISTED_REJECTS)
            .await?;
        return Ok(Started {
            status: StatusCode::OK,
            run,
            rejects,
        });
    }
    // The import's writes are the caller's, though they outlive its request.
    let context = leadline_ports::audit_context();
    tokio::spawn(leadline_ports::audited(context, async move {
        // Holds the spool file until the import is over.
        let _spooled = spooled;
        match imports
            .run(tenant, &sha, &name, source, &options, |_| {})
            .await
        {
            Ok(run) => {
                tracing::info!(import = %run.id, rows = run.counts.rows, created = run.counts.created, rejected = run.counts.rejected, "import finished")
            }
            Err(e) => {
                tracing::warn!(error = %e, "import stopped; posting the file again resumes it")
            }
        }
    }));
    Ok(Started {
        status: StatusCode::ACCEPTED,
        run,
        rejects: Vec::new(),
    })
}

/// An import run: its status, counts and first rejected rows.
#[utoipa::path(
    get,
    path = "/v1/imports/{id}",
    tag = "imports",
    security(("api_key" = ["read"])),
    params(("id" = uuid::Uuid, Path, description = "The run's id")),
    responses(
        (status = 200, description = "The run", body = ImportView),
        (status = 404, response = oa::NotFound),
    ),
)]
async fn get_import(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    PathId(id): PathId<ImportId>,
) -> Result<Json<ImportView>, ApiError> {
    let imports = &state.services().imports;
    let run = imports.get(tenant.id, id).await?;
    let rejects = imports.first_rejects(tenant.id, id, LISTED_REJECTS).await?;
    Ok(Json(ImportView::of(run, rejects)))
}

/// The run's rejected rows as CSV: the file's own columns plus
/// `leadline_errors` (line and reasons), which an import ignores, so the
/// fixed file can be posted as it is.
#[utoipa::path(
    get,
    path = "/v1/imports/{id}/rejected.csv",
    tag = "imports",
    security(("api_key" = ["read"])),
    params(("id" = uuid::Uuid, Path, description = "The run's id")),
    responses(
        (status = 200, description = "The rejected rows", content_type = "text/csv", body = String),
        (status = 404, response = oa::NotFound),
    ),
)]
async fn rejected_csv(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    PathId(id): PathId<ImportId>,
) -> Result<Response, ApiError> {
    let csv = state.services().imports.rejected_csv(tenant.id, id).await?;
    let mut response = Body::from(csv).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    Ok(response)
}

#[cfg(test)]
mod spool_tests {
    use super::*;

    #[test]
    fn the_sweep_removes_old_spool_files_only() {
        // A directory of its own: other tests' uploads are not touched.
        let dir = tempfile::tempdir().expect("a directory");
        let ours = tempfile::Builder::new()
            .prefix(SPOOL_PREFIX)
            .tempfile_in(dir.path())
            .expect("a spool file")
            .into_temp_path();
        let theirs = tempfile::NamedTempFile::new_in(dir.path()).expect("another file");
        assert_eq!(
            sweep_spool_in(dir.path(), std::time::Duration::from_secs(3600)),
            0,
            "young files stay"
        );
        assert!(ours.exists());
        assert_eq!(sweep_spool_in(dir.path(), std::time::Duration::ZERO), 1);
        assert!(!ours.exists(), "an old spool file goes");
        assert!(theirs.path().exists(), "other files stay");
    }
}

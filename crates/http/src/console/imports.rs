//! The console's import page: upload a CSV (agents and up), then watch its
//! run and read the rejected rows, each with its line and bad columns, and
//! download them as CSV to fix and upload again. The same import as
//! `POST /v1/imports` ([`crate::imports::begin`]): the file is spooled to
//! disk, never held in memory, and imported in the background, so closing
//! the page does not stop it; uploading the same file again finds (or
//! resumes) the same run.

use axum::{
    Router,
    extract::{DefaultBodyLimit, Multipart, Path, State, multipart::MultipartRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
    routing::get,
};
use leadline_app::ImportOptions;
use leadline_domain::{
    ImportId, Scope, User,
    import::{ImportRun, ImportStatus, OnDuplicate, RejectedRow},
};
use maud::{Markup, html};

use super::{ConsoleError, Signed, pages::page, signed};
use crate::{AppState, imports::LISTED_REJECTS};

pub(super) fn routes() -> Router<AppState> {
    // Room for the form's other parts and the multipart framing: an
    // oversized file meets the spool's own limit first, which says 413.
    let limit = usize::try_from(crate::imports::MAX_IMPORT_BYTES + (1 << 20)).unwrap_or(usize::MAX);
    Router::new()
        .route(
            "/imports",
            get(form).post(upload).layer(DefaultBodyLimit::max(limit)),
        )
        .route("/imports/{id}", get(run_page))
        .route("/imports/{id}/rejected.csv", get(rejected_csv))
}

/// The signed-in person, if they may import.
async fn importer(state: &AppState, headers: &HeaderMap) -> Result<Signed, Response> {
    let signed = signed(state, headers).await?;
    if !signed.may(Scope::LeadsWrite) {
        return Err(ConsoleError::new(
            headers,
            StatusCode::FORBIDDEN,
            format!(
                "Importing leads needs the agent role; you are {}.",
                signed.user.role
            ),
        )
        .into_response());
    }
    Ok(signed)
}

async fn form(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match importer(&state, &headers).await {
        Ok(signed) => form_page(&signed.user, &signed.session.csrf_token, None).into_response(),
        Err(r) => r,
    }
}

/// `POST /imports`: a multipart form whose parts come in page order:
/// `csrf`, `on_duplicate`, then `file`. The token is checked before a byte
/// of the file is read.
async fn upload(
    State(state): State<AppState>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    let signed = match importer(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (user, csrf) = (&signed.user, signed.session.csrf_token.as_str());
    let refuse = |status: StatusCode, problem: &str| {
        (status, form_page(user, csrf, Some(problem))).into_response()
    };
    let Ok(mut multipart) = multipart else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "The upload came back incomplete. Choose the file and try again.",
        );
    };
    let mut token_ok = false;
    let mut on_duplicate = OnDuplicate::default();
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return refuse(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "The file is over 512 MiB: split it and upload the parts.",
                );
            }
            Err(_) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "The upload came back incomplete. Choose the file and try again.",
                );
            }
        };
        match field.name() {
            Some("csrf") => {
                let text = small_text(field).await.unwrap_or_default();
                token_ok = signed.session.csrf_matches(&text);
            }
            Some("on_duplicate") => {
                let text = small_text(field).await.unwrap_or_default();
                match text.parse() {
                    Ok(policy) => on_duplicate = policy,
                    Err(_) => {
                        return refuse(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            "Choose what to do with duplicates.",
                        );
                    }
                }
            }
            Some("file") => {
                if !token_ok {
                    return super::csrf_refused(&headers);
                }
                let name = field
                    .file_name()
                    .map(str::to_owned)
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| "upload.csv".to_owned());
                let options = ImportOptions {
                    on_duplicate,
                    mapping: Vec::new(),
                };
                return match crate::imports::begin(&state, user.tenant_id, field, name, options)
                    .await
                {
                    Ok(started) => {
                        Redirect::to(&format!("/imports/{}", started.run.id)).into_response()
                    }
                    Err(e) if e.status().is_client_error() => {
                        refuse(e.status(), &upload_problem(&e))
                    }
                    Err(e) => ConsoleError::api(&headers, e).into_response(),
                };
            }
            // Unknown parts are skipped, as a form's extra fields are.
            _ => {}
        }
    }
    if token_ok {
        refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Choose a CSV file to import.",
        )
    } else {
        super::csrf_refused(&headers)
    }
}

/// The longest text part of the form read (the token is 64 characters).
const SMALL_PART: usize = 1024;

/// A short text part, read no further than [`SMALL_PART`] bytes: `None`
/// when it is longer, or not text. A multi-megabyte "token" is never held
/// in memory.
async fn small_text(mut field: axum::extract::multipart::Field<'_>) -> Option<String> {
    let mut bytes = Vec::new();
    while let Ok(Some(chunk)) = field.chunk().await {
        if bytes.len() + chunk.len() > SMALL_PART {
            return None;
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes).ok()
}

/// What the person is told about a refused upload.
fn upload_problem(e: &crate::error::ApiError) -> String {
    let detail = e.detail();
    let detail = detail.strip_prefix("body: ").unwrap_or(detail);
    format!("This file cannot be imported: {detail}")
}

/// The signed-in person and the import the path names (any signed-in
/// person may read a run); otherwise the answer.
async fn import_of(
    state: &AppState,
    headers: &HeaderMap,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<(Signed, ImportId), Response> {
    let signed = signed(state, headers).await?;
    let id = super::path_id::<ImportId>(path).ok_or_else(|| {
        ConsoleError::new(headers, StatusCode::NOT_FOUND, "There is no such import.")
            .into_response()
    })?;
    Ok((signed, id))
}

async fn run_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Response {
    let (signed, id) = match import_of(&state, &headers, path).await {
        Ok(found) => found,
        Err(r) => return r,
    };
    let imports = &state.services().imports;
    let tenant = signed.user.tenant_id;
    let run = match imports.get(tenant, id).await {
        Ok(run) => run,
        Err(e) => return ConsoleError::api(&headers, e.into()).into_response(),
    };
    let rejects = match imports.first_rejects(tenant, id, LISTED_REJECTS).await {
        Ok(rejects) => rejects,
        Err(e) => return ConsoleError::api(&headers, e.into()).into_response(),
    };
    let mut response =
        run_markup(&signed.user, &signed.session.csrf_token, &run, &rejects).into_response();
    if run.status == ImportStatus::Running && !run.stalled(chrono::Utc::now()) {
        // The page follows the run until it ends (a header, not markup: the
        // policy allows no inline script, and this needs none).
        response
            .headers_mut()
            .insert(header::REFRESH, HeaderValue::from_static("2"));
    }
    response
}

async fn rejected_csv(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Response {
    let (signed, id) = match import_of(&state, &headers, path).await {
        Ok(found) => found,
        Err(r) => return r,
    };
    match state
        .services()
        .imports
        .rejected_csv(signed.user.tenant_id, id)
        .await
    {
        Ok(csv) => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"rejected-{id}.csv\""),
                ),
            ],
            csv,
        )
            .into_response(),
        Err(e) => ConsoleError::api(&headers, e.into()).into_response(),
    }
}

fn form_page(user: &User, csrf: &str, problem: Option<&str>) -> Markup {
    page(
        "Import",
        Some((user, csrf)),
        html! {
            h1 { "Import leads" }
            @if let Some(problem) = problem {
                p.flash.bad role="alert" { (problem) }
            }
            p {
                "A CSV file (UTF-8, comma, semicolon or tab separated) with a header row. Columns of plain "
                "spreadsheets and of HubSpot, Salesforce and Pipedrive exports are recognised; others "
                "land in each lead's metadata. A bad row is rejected with its line and columns and never "
                "stops the file."
            }
            form method="post" action="/imports" enctype="multipart/form-data" {
                input type="hidden" name="csrf" value=(csrf);
                div.field {
                    label for="on-duplicate" { "A row whose email is already a lead's" }
                    select #on-duplicate name="on_duplicate" {
                        option value="skip" selected { "skip it" }
                        option value="update" { "update the lead" }
                        option value="create" { "create another lead" }
                    }
                }
                div.field {
                    label for="file" { "CSV file" }
                    input #file type="file" name="file" accept=".csv,text/csv,text/plain" required;
                }
                button type="submit" data-action="import" { "Import" }
            }
        },
    )
}

fn run_markup(user: &User, csrf: &str, run: &ImportRun, rejects: &[RejectedRow]) -> Markup {
    let now = chrono::Utc::now();
    let state = match run.status {
        ImportStatus::Running if run.stalled(now) => {
            "stalled: upload the same file again to resume it"
        }
        ImportStatus::Running => "running",
        ImportStatus::Done => "done",
        ImportStatus::Failed => "failed",
    };
    page(
        "Import",
        Some((user, csrf)),
        html! {
            h1 { "Import of " (run.source_name) }
            p role="status" data-import-status=(run.status.as_str()) { "Status: " strong { (state) } }
            @if let Some(failure) = &run.failure {
                p.flash.bad role="alert" { (failure) }
            }
            dl.facts {
                dt { "Rows read" } dd data-count="rows" { (run.counts.rows) }
                dt { "Leads created" } dd data-count="created" { (run.counts.created) }
                dt { "Leads updated" } dd data-count="updated" { (run.counts.updated) }
                dt { "Skipped as duplicates" } dd data-count="skipped" { (run.counts.skipped) }
                dt { "Rejected" } dd data-count="rejected" { (run.counts.rejected) }
            }
            @if run.counts.rejected > 0 {
                h2 { "Rejected rows" }
                p {
                    a href={ "/imports/" (run.id) "/rejected.csv" } { "Download the rejected rows" }
                    " as CSV: the file's own columns plus " code { "leadline_errors" }
                    ", which an import ignores, so the fixed file can be uploaded as it is."
                }
                @if run.counts.rejected > rejects.len() as u64 {
                    p { "The first " (rejects.len()) " are listed here." }
                }
                table {
                    caption.skip { "Rejected rows" }
                    thead { tr { th scope="col" { "Line" } th scope="col" { "Column" } th scope="col" { "Why" } } }
                    tbody {
                        @for row in rejects {
                            @for error in &row.errors {
                                tr {
                                    td { (row.line) }
                                    td { (error.column) }
                                    td { (error.reason) }
                                }
                            }
                        }
                    }
                }
            }
            p { a href="/imports" { "Import another file" } " · " a href="/leads" { "The leads" } }
        },
    )
}

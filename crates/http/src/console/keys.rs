//! The console's API-key page, for admins: the tenant's keys, issuing one
//! (its secret shown once, on the answer that made it), and revoking one.
//! The same operations as `/v1/keys`, through the same service.

use axum::{
    Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use chrono::Utc;
use leadline_domain::{Access, ApiKey, ApiKeyId, DisplayName, NewApiKey, PageLimit, Role, User};
use maud::{Markup, html};
use serde::Deserialize;

use super::{ConsoleError, ConsoleForm, admin, csrf_refused, pages::page};
use crate::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/keys", get(list).post(issue))
        .route("/admin/keys/{id}/revoke", post(revoke))
}

/// Query of the keys page: where the page starts, and what was just done
/// (a code, never text).
#[derive(Debug, Deserialize, Default)]
struct KeysQuery {
    after: Option<ApiKeyId>,
    done: Option<Done>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Done {
    Revoked,
}

async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let query: KeysQuery = super::query_or_default(query);
    let signed = match admin(&state, &headers, "API keys").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let done = query.done.map(|Done::Revoked| "Key revoked.");
    render(
        &state,
        &headers,
        &signed.user,
        &signed.session.csrf_token,
        query.after,
        done,
        None,
    )
    .await
}

/// The keys page, with a message (`done`) or a problem with the form.
async fn render(
    state: &AppState,
    headers: &HeaderMap,
    user: &User,
    csrf: &str,
    after: Option<ApiKeyId>,
    done: Option<&str>,
    problem: Option<&str>,
) -> Response {
    let page_of_keys = match state
        .services()
        .keys
        .list(
            user.tenant_id,
            PageLimit::new(100).unwrap_or(PageLimit::DEFAULT),
            after,
        )
        .await
    {
        Ok(page) => page,
        Err(e) => return ConsoleError::api(headers, e.into()).into_response(),
    };
    let next = page_of_keys
        .has_more
        .then(|| page_of_keys.items.last().map(|k| k.id))
        .flatten();
    let status = if problem.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    (
        status,
        keys_page(user, csrf, &page_of_keys.items, next, done, problem),
    )
        .into_response()
}

/// The form that issues a key.
#[derive(Debug, Deserialize)]
struct IssueForm {
    csrf: String,
    name: String,
    role: String,
    /// Days until it expires; empty for never.
    expires_in_days: Option<String>,
}

async fn issue(
    State(state): State<AppState>,
    headers: HeaderMap,
    ConsoleForm(form): ConsoleForm<IssueForm>,
) -> Response {
    let signed = match admin(&state, &headers, "API keys").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if !signed.session.csrf_matches(&form.csrf) {
        return csrf_refused(&headers);
    }
    let (user, csrf) = (&signed.user, signed.session.csrf_token.as_str());
    let refuse =
        |problem: &'static str| render(&state, &headers, user, csrf, None, None, Some(problem));
    let Ok(name) = DisplayName::new(&form.name) else {
        return refuse("A key needs a name: one line, up to 200 characters.").await;
    };
    let Ok(role) = form.role.parse::<Role>() else {
        return refuse("Choose the key's role.").await;
    };
    let now = Utc::now();
    let expires_at = match form.expires_in_days.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(days) => match days.parse::<u32>() {
            Ok(days @ 1..=3650) => Some(now + chrono::Duration::days(i64::from(days))),
            _ => {
                return refuse("Expiry: a number of days from 1 to 3650, or empty for never.")
                    .await;
            }
        },
    };
    let Ok(new) = NewApiKey::new(name, Access::Role(role), expires_at, now) else {
        return refuse("Expiry: a number of days from 1 to 3650, or empty for never.").await;
    };
    match state.services().keys.issue(user.tenant_id, &new).await {
        Ok(issued) => issued_page(user, csrf, &issued.key, issued.token.expose()).into_response(),
        Err(e) => ConsoleError::api(&headers, e.into()).into_response(),
    }
}

async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    ConsoleForm(form): ConsoleForm<super::CsrfOnly>,
) -> Response {
    let signed = match admin(&state, &headers, "API keys").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if !signed.session.csrf_matches(&form.csrf) {
        return csrf_refused(&headers);
    }
    let Some(id) = super::path_id::<ApiKeyId>(path) else {
        return ConsoleError::new(&headers, StatusCode::NOT_FOUND, "There is no such key.")
            .into_response();
    };
    match state
        .services()
        .keys
        .revoke(signed.user.tenant_id, id)
        .await
    {
        Ok(_) => Redirect::to("/admin/keys?done=revoked").into_response(),
        Err(e) => ConsoleError::api(&headers, e.into()).into_response(),
    }
}

fn keys_page(
    user: &User,
    csrf: &str,
    keys: &[ApiKey],
    next: Option<ApiKeyId>,
    done: Option<&str>,
    problem: Option<&str>,
) -> Markup {
    let now = Utc::now();
    page(
        "API keys",
        Some((user, csrf)),
        html! {
            h1 { "API keys" }
            @if let Some(done) = done {
                p.flash.ok role="status" { (done) }
            }
            @if let Some(problem) = problem {
                p.flash.bad role="alert" { (problem) }
            }
            p { "Each key acts with one role. Rotate keys with " code { "leadline keys rotate" } " or " code { "POST /v1/keys/{id}/rotate" } "." }
            table {
                caption.skip { "The tenant's API keys" }
                thead {
                    tr {
                        th scope="col" { "Name" } th scope="col" { "Access" } th scope="col" { "Starts" }
                        th scope="col" { "State" } th scope="col" { "Last used" } th scope="col" { span.skip { "Actions" } }
                    }
                }
                tbody {
                    @for key in keys {
                        tr data-key=(key.id) {
                            td { (key.name) }
                            td { (key.access) }
                            td { code { (key.prefix.as_ref().map_or("-", |p| p.as_str())) } }
                            td {
                                @if key.revoked_at.is_some() { "revoked" }
                                @else if key.is_live(now) { "active" }
                                @else { "expired" }
                            }
                            td { (key.last_used_at.map_or_else(|| "never".to_owned(), |t| t.format("%Y-%m-%d %H:%M").to_string())) }
                            td {
                                @if key.revoked_at.is_none() {
                                    form method="post" action={ "/admin/keys/" (key.id) "/revoke" } {
                                        input type="hidden" name="csrf" value=(csrf);
                                        button.danger type="submit" aria-label={ "Revoke " (key.name) } { "Revoke" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if let Some(next) = next {
                p { a href={ "/admin/keys?after=" (next) } { "Newer keys" } }
            }
            h2 { "Issue a key" }
            form.filters method="post" action="/admin/keys" {
                input type="hidden" name="csrf" value=(csrf);
                div.field {
                    label for="key-name" { "Name" }
                    input #key-name type="text" name="name" required maxlength="200" placeholder="CRM sync";
                }
                div.field {
                    label for="key-role" { "Role" }
                    select #key-role name="role" {
                        @for role in Role::ALL {
                            option value=(role) selected[role == Role::Agent] { (role) }
                        }
                    }
                }
                div.field {
                    label for="key-expiry" { "Expires in (days)" }
                    input #key-expiry type="text" inputmode="numeric" name="expires_in_days" placeholder="never";
                }
                button type="submit" data-action="issue-key" { "Issue the key" }
            }
        },
    )
}

fn issued_page(user: &User, csrf: &str, key: &ApiKey, secret: &str) -> Markup {
    page(
        "Key issued",
        Some((user, csrf)),
        html! {
            h1 { "Key issued" }
            p.flash.ok role="status" {
                "Copy the key now: it is shown once, and leadline keeps only its hash."
            }
            div.field {
                label for="secret" { "The key “" (key.name) "” (" (key.access) ")" }
                input #secret type="text" readonly value=(secret) data-secret;
            }
            p { a href="/admin/keys" { "Back to the keys" } }
        },
    )
}

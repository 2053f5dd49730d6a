//! The console's users page, for admins: the tenant's users; inviting one
//! (the one-time login link shown once, on the answer that made it);
//! changing a role; disabling (which ends every session) and enabling; and
//! a new login link. The same operations as `/v1/users`, through the same
//! service. An admin does not change their own user here, so nobody locks
//! themselves out by a click.

use axum::{
    Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use leadline_app::InviteError;
use leadline_domain::{DisplayName, Email, PageLimit, Role, UpdateUserRequest, User, UserId};
use leadline_ports::PeopleError;
use maud::{Markup, html};
use serde::Deserialize;

use super::{ConsoleError, ConsoleForm, Signed, admin, csrf_refused, pages::page};
use crate::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/users", get(list).post(invite))
        .route("/admin/users/{id}", post(change))
        .route("/admin/users/{id}/link", post(new_link))
}

/// Query of the users page: where it starts, and what was just done (a
/// code, never text).
#[derive(Debug, Deserialize, Default)]
struct UsersQuery {
    after: Option<UserId>,
    done: Option<Done>,
}

#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
enum Done {
    Updated,
    Stale,
}

async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let query: UsersQuery = super::query_or_default(query);
    let signed = match admin(&state, &headers, "Users").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (done, problem) = match query.done {
        Some(Done::Updated) => (Some("User changed."), None),
        Some(Done::Stale) => (
            None,
            Some("Not changed: someone changed this user meanwhile. Here is what they did."),
        ),
        None => (None, None),
    };
    render(&state, &headers, &signed, query.after, done, problem).await
}

async fn render(
    state: &AppState,
    headers: &HeaderMap,
    signed: &Signed,
    after: Option<UserId>,
    done: Option<&str>,
    problem: Option<&str>,
) -> Response {
    let users = match state
        .services()
        .people
        .list(
            signed.user.tenant_id,
            PageLimit::new(100).unwrap_or(PageLimit::DEFAULT),
            after,
        )
        .await
    {
        Ok(page) => page,
        Err(e) => return ConsoleError::api(headers, e.into()).into_response(),
    };
    let next = users
        .has_more
        .then(|| users.items.last().map(|u| u.id))
        .flatten();
    let status = if problem.is_some() && done.is_none() && after.is_none() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    (
        status,
        users_page(signed, &users.items, next, done, problem),
    )
        .into_response()
}

/// The invitation form.
#[derive(Debug, Deserialize)]
struct InviteForm {
    csrf: String,
    email: String,
    name: Option<String>,
    role: String,
}

async fn invite(
    State(state): State<AppState>,
    headers: HeaderMap,
    ConsoleForm(form): ConsoleForm<InviteForm>,
) -> Response {
    let signed = match admin(&state, &headers, "Users").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if !signed.session.csrf_matches(&form.csrf) {
        return csrf_refused(&headers);
    }
    let refuse =
        |problem: &'static str| render(&state, &headers, &signed, None, None, Some(problem));
    let Ok(email) = Email::parse(form.email.trim()) else {
        return refuse("Email: that is not an email address.").await;
    };
    let name = match form.name.as_deref().map(str::trim) {
        None | Some("") => DisplayName::new(email.as_str()),
        Some(name) => DisplayName::new(name),
    };
    let Ok(name) = name else {
        return refuse("Name: one line, up to 200 characters.").await;
    };
    let Ok(role) = form.role.parse::<Role>() else {
        return refuse("Choose the user's role.").await;
    };
    match state
        .services()
        .people
        .invite(signed.user.tenant_id, email, name, role)
        .await
    {
        Ok(invited) => {
            link_page(&signed, &invited.user, invited.link.expose(), true).into_response()
        }
        Err(InviteError::DuplicateEmail) => {
            refuse("A user with this email exists already: issue them a new login link instead.")
                .await
        }
        Err(InviteError::Agent(_)) => {
            refuse("The user's agent could not be made: an agent with this email may be inactive.")
                .await
        }
        Err(InviteError::Store(e)) => ConsoleError::api(&headers, e.into()).into_response(),
    }
}

/// A change to one user: a role, or disabling / enabling, at the version
/// the page showed.
#[derive(Debug, Deserialize)]
struct ChangeForm {
    csrf: String,
    version: i64,
    role: Option<String>,
    disabled: Option<String>,
}

/// The signed-in admin (their form's token checked) and the user the path
/// names, never the admin themselves; otherwise the answer.
async fn target(
    state: &AppState,
    headers: &HeaderMap,
    csrf: &str,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<(Signed, UserId), Response> {
    let signed = admin(state, headers, "Users").await?;
    if !signed.session.csrf_matches(csrf) {
        return Err(csrf_refused(headers));
    }
    let refuse = |status, why| ConsoleError::new(headers, status, why).into_response();
    let Some(id) = super::path_id::<UserId>(path) else {
        return Err(refuse(StatusCode::NOT_FOUND, "There is no such user."));
    };
    if id == signed.user.id {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "You cannot change your own user here; ask another admin.",
        ));
    }
    Ok((signed, id))
}

async fn change(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    ConsoleForm(form): ConsoleForm<ChangeForm>,
) -> Response {
    let (signed, id) = match target(&state, &headers, &form.csrf, path).await {
        Ok(found) => found,
        Err(r) => return r,
    };
    let role = match form.role.as_deref() {
        None => None,
        Some(role) => match role.parse::<Role>() {
            Ok(role) => Some(role),
            Err(_) => {
                return ConsoleError::new(
                    &headers,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Choose a role.",
                )
                .into_response();
            }
        },
    };
    let disabled = match form.disabled.as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => {
            return ConsoleError::new(
                &headers,
                StatusCode::BAD_REQUEST,
                "This form came back incomplete. Reload the page and try again.",
            )
            .into_response();
        }
    };
    if role.is_none() && disabled.is_none() {
        return ConsoleError::new(
            &headers,
            StatusCode::UNPROCESSABLE_ENTITY,
            "Nothing to change: choose a role, or disable or enable the user.",
        )
        .into_response();
    }
    let req = UpdateUserRequest {
        expected_version: form.version,
        role,
        disabled,
    };
    match state
        .services()
        .people
        .update(signed.user.tenant_id, id, &req)
        .await
    {
        Ok(_) => Redirect::to("/admin/users?done=updated").into_response(),
        Err(PeopleError::Conflict { .. }) => {
            Redirect::to("/admin/users?done=stale").into_response()
        }
        Err(e) => ConsoleError::api(&headers, e.into()).into_response(),
    }
}

async fn new_link(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    ConsoleForm(form): ConsoleForm<super::CsrfOnly>,
) -> Response {
    let (signed, id) = match target(&state, &headers, &form.csrf, path).await {
        Ok(found) => found,
        Err(r) => return r,
    };
    let people = &state.services().people;
    let user = match people.get(signed.user.tenant_id, id).await {
        Ok(user) => user,
        Err(e) => return ConsoleError::api(&headers, e.into()).into_response(),
    };
    match people.issue_link(signed.user.tenant_id, id).await {
        Ok(link) => link_page(&signed, &user, link.expose(), false).into_response(),
        Err(e) => ConsoleError::api(&headers, e.into()).into_response(),
    }
}

fn state_of(user: &User) -> &'static str {
    if user.disabled_at.is_some() {
        "disabled"
    } else if user.has_password {
        "active"
    } else {
        "invited"
    }
}

fn users_page(
    signed: &Signed,
    users: &[User],
    next: Option<UserId>,
    done: Option<&str>,
    problem: Option<&str>,
) -> Markup {
    let csrf = signed.session.csrf_token.as_str();
    page(
        "Users",
        Some((&signed.user, csrf)),
        html! {
            h1 { "Users" }
            @if let Some(done) = done {
                p.flash.ok role="status" { (done) }
            }
            @if let Some(problem) = problem {
                p.flash.bad role="alert" { (problem) }
            }
            table {
                caption.skip { "The tenant's users" }
                thead {
                    tr {
                        th scope="col" { "Name" } th scope="col" { "Email" } th scope="col" { "Role" }
                        th scope="col" { "State" } th scope="col" { span.skip { "Actions" } }
                    }
                }
                tbody {
                    @for user in users {
                        @let id = user.id.to_string();
                        tr data-user=(id) {
                            td { (user.name) }
                            td { (user.email.as_str()) }
                            td {
                                @if user.id == signed.user.id {
                                    (user.role) " (you)"
                                } @else {
                                    form.inline method="post" action={ "/admin/users/" (id) } {
                                        input type="hidden" name="csrf" value=(csrf);
                                        input type="hidden" name="version" value=(user.version);
                                        label.skip for={ "role-" (id) } { "Role of " (user.name) }
                                        select id={ "role-" (id) } name="role" {
                                            @for role in Role::ALL {
                                                option value=(role) selected[role == user.role] { (role) }
                                            }
                                        }
                                        button.secondary type="submit" data-action="set-role" { "Set role" }
                                    }
                                }
                            }
                            td { (state_of(user)) }
                            td {
                                @if user.id != signed.user.id {
                                    div.actions {
                                        form method="post" action={ "/admin/users/" (id) } {
                                            input type="hidden" name="csrf" value=(csrf);
                                            input type="hidden" name="version" value=(user.version);
                                            @if user.disabled_at.is_some() {
                                                input type="hidden" name="disabled" value="false";
                                                button.secondary type="submit" data-action="enable" { "Enable" }
                                            } @else {
                                                input type="hidden" name="disabled" value="true";
                                                button.danger type="submit" data-action="disable" { "Disable" }
                                            }
                                        }
                                        form method="post" action={ "/admin/users/" (id) "/link" } {
                                            input type="hidden" name="csrf" value=(csrf);
                                            button.secondary type="submit" data-action="link" { "New login link" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if let Some(next) = next {
                p { a href={ "/admin/users?after=" (next) } { "More users" } }
            }
            h2 { "Invite a user" }
            form.filters method="post" action="/admin/users" {
                input type="hidden" name="csrf" value=(csrf);
                div.field {
                    label for="invite-email" { "Email" }
                    input #invite-email type="email" name="email" required maxlength="254";
                }
                div.field {
                    label for="invite-name" { "Name" }
                    input #invite-name type="text" name="name" maxlength="200" placeholder="as the email";
                }
                div.field {
                    label for="invite-role" { "Role" }
                    select #invite-role name="role" {
                        @for role in Role::ALL {
                            option value=(role) selected[role == Role::Agent] { (role) }
                        }
                    }
                }
                button type="submit" data-action="invite" { "Invite" }
            }
        },
    )
}

/// The answer carrying a login link, once.
fn link_page(signed: &Signed, user: &User, link: &str, invited: bool) -> Markup {
    let path = format!("/login/link/{link}");
    page(
        "Login link",
        Some((&signed.user, signed.session.csrf_token.as_str())),
        html! {
            h1 { @if invited { "User invited" } @else { "New login link" } }
            p.flash.ok role="status" {
                "Send this link to " (user.email.as_str()) " yourself: it is shown once, works once, and for 72 hours. "
                @if !invited { "Their earlier links no longer work." }
            }
            div.field {
                label for="link" { "Login link (this console's address followed by)" }
                input #link type="text" readonly value=(path) data-link;
            }
            p { a href="/admin/users" { "Back to the users" } }
        },
    )
}

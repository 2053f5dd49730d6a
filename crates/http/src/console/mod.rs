//! The console: server-rendered HTML (maud) for the people in the loop,
//! served by `leadline serve` at `/`.
//!
//! - **Sign-in**: `/login` (workspace, email, password) and `/login/link/…`
//!   (a one-time link from `leadline users invite`: choose a password).
//!   Sessions are server-side ([`leadline_app::PeopleService`]); the cookie
//!   `ll_session` is `HttpOnly; Secure; SameSite=Lax` and carries only a
//!   random token.
//! - **CSRF**: every form of a signed-in page carries the session's token,
//!   checked in constant time; the sign-in forms (before any session) use a
//!   double-submit cookie. `SameSite=Lax` is the second wall.
//! - **Pages**: the approvals inbox (`/`), with the lead's context beside
//!   each draft; edit a draft, approve, reject with a reason, send.
//!   `/leads` and a lead's page. For admins, `/admin/keys` (issue, revoke)
//!   and `/admin/users` (invite, role, disable, login links). The inbox asks `/inbox/state` every two seconds, so a card
//!   someone else decided is marked and disabled.
//! - **Headers**: a strict Content-Security-Policy (`script-src 'self'`,
//!   no inline script or style), `X-Frame-Options: DENY`, `nosniff`, no
//!   referrer (a login link is a secret in a URL). The stylesheet and the
//!   script are compiled into the binary: the console works offline.
//! - **Errors**: an HTML page for a browser; problem+json for a client
//!   that does not ask for HTML.

mod imports;
mod keys;
mod pages;
mod users;

use axum::{
    Form, Router,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use leadline_app::SignInError;
use leadline_domain::{
    ApprovalAction, ApprovalId, ApprovalQueueQuery, ApprovalStatus, EditDraftRequest, MessageBody,
    PageLimit, RejectionReason, Role, Scope, Session, Subject, User,
};
use rand::RngCore as _;
use serde::Deserialize;

use crate::{AppState, error::ApiError};

/// The session cookie.
const SESSION_COOKIE: &str = "ll_session";
/// The pre-session CSRF cookie of the sign-in forms.
const LOGIN_CSRF_COOKIE: &str = "ll_login_csrf";

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// The console's routes.
pub(crate) fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/", get(inbox))
        .route("/login", get(login_page).post(login))
        .route("/login/link/{token}", get(link_page))
        .route("/login/link", post(redeem_link))
        .route("/logout", post(logout))
        .route("/logout/everywhere", post(logout_everywhere))
        .route("/inbox/state", get(inbox_state))
        .route("/approvals/{id}/{action}", post(decide))
        .route("/leads", get(leads))
        .route("/leads/{id}", get(lead_page))
        .route(
            "/static/console.css",
            get(|| async { asset("text/css", CSS) }),
        )
        .route(
            "/static/console.js",
            get(|| async { asset("text/javascript", JS) }),
        )
        .merge(imports::routes())
        .merge(keys::routes())
        .merge(users::routes())
        .layer(axum::middleware::from_fn_with_state(state, audited))
        .layer(axum::middleware::map_response(secure_headers))
}

/// Runs a signed-in person's writes on their behalf (the user, and the
/// agent they act as) for the audit trail. Reads change nothing, so only
/// other methods pay for the session lookup.
async fn audited(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if request.method() == axum::http::Method::GET || request.method() == axum::http::Method::HEAD {
        return next.run(request).await;
    }
    let user = match cookie(request.headers(), SESSION_COOKIE) {
        Some(value) => state.services().people.session(value).await.ok().flatten(),
        None => None,
    };
    let context = leadline_domain::AuditContext {
        actor: leadline_domain::Actor {
            user_id: user.as_ref().map(|(_, u)| u.id),
            agent_id: user.as_ref().and_then(|(_, u)| u.agent_id),
            key_id: None,
        },
        request_id: crate::auth::request_id(request.headers()),
    };
    leadline_ports::audited(context, next.run(request)).await
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// The headers every console answer carries.
async fn secure_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (
            "content-security-policy",
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// A console failure: an HTML page for a browser, problem+json otherwise.
pub(crate) struct ConsoleError {
    status: StatusCode,
    message: String,
    wants_html: bool,
    api: Option<ApiError>,
}

impl ConsoleError {
    fn new(headers: &HeaderMap, status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            wants_html: wants_html(headers),
            api: None,
        }
    }

    fn api(headers: &HeaderMap, err: ApiError) -> Self {
        Self {
            status: err.status(),
            message: match err.status() {
                StatusCode::SERVICE_UNAVAILABLE => {
                    "leadline's storage (its database, or the Redis that keeps sessions) is not \
                     answering just now; try again in a moment."
                        .to_owned()
                }
                StatusCode::NOT_FOUND => "There is nothing here.".to_owned(),
                _ => "Something went wrong on our side; it has been logged.".to_owned(),
            },
            wants_html: wants_html(headers),
            api: Some(err),
        }
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        if !self.wants_html {
            return match self.api {
                Some(api) => api.into_response(),
                None => console_problem(self.status, &self.message),
            };
        }
        (self.status, pages::error(self.status, &self.message)).into_response()
    }
}

fn console_problem(status: StatusCode, message: &str) -> Response {
    let kind = match status {
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not-found",
        StatusCode::TOO_MANY_REQUESTS => "locked-out",
        _ => "bad-request",
    };
    let body = serde_json::json!({
        "type": format!("urn:leadline:problem:{kind}"),
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": message,
    });
    (
        status,
        [(header::CONTENT_TYPE, crate::error::PROBLEM_JSON)],
        body.to_string(),
    )
        .into_response()
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

/// A cookie's value from the request.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn set_cookie(name: &str, value: &str, max_age_secs: i64) -> HeaderValue {
    // The token's characters are [a-z0-9_]: nothing to escape.
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age={max_age_secs}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("ll_invalid=1; Max-Age=0"))
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Constant-time comparison of two tokens.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The signed-in person of a request.
pub(crate) struct Signed {
    pub session: Session,
    pub user: User,
}

impl Signed {
    fn may(&self, scope: Scope) -> bool {
        self.user.role.allows(scope)
    }
}

/// The path's one parameter as an id (`None` for anything that is not
/// one: the page then says there is no such thing, never 400 text).
fn path_id<T: std::str::FromStr>(
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Option<T> {
    path.ok().and_then(|Path(id)| id.parse().ok())
}

/// A page's query string as `T`; a query that is not ours reads as the
/// defaults (pages take codes and filters, never text to show as is).
fn query_or_default<T: serde::de::DeserializeOwned + Default>(raw: Option<String>) -> T {
    raw.and_then(|q| serde_urlencoded::from_str(&q).ok())
        .unwrap_or_default()
}

/// The request's session, if its user is an admin; otherwise the answer
/// (sign in, or a 403 page naming `what` the page manages).
async fn admin(state: &AppState, headers: &HeaderMap, what: &str) -> Result<Signed, Response> {
    let signed = signed(state, headers).await?;
    if signed.user.role != Role::Admin {
        return Err(ConsoleError::new(
            headers,
            StatusCode::FORBIDDEN,
            format!(
                "{what} are for admins; you are {}. Ask an admin if you need something changed.",
                signed.user.role
            ),
        )
        .into_response());
    }
    Ok(signed)
}

/// The request's session, or a redirect to the sign-in page (an HTML
/// client) / 401 (anything else).
async fn signed(state: &AppState, headers: &HeaderMap) -> Result<Signed, Response> {
    let found = match cookie(headers, SESSION_COOKIE) {
        Some(value) => state
            .services()
            .people
            .session(value)
            .await
            .map_err(|e| ConsoleError::api(headers, people_error(e)).into_response())?,
        None => None,
    };
    match found {
        Some((session, user)) => Ok(Signed { session, user }),
        None if wants_html(headers) => Err(Redirect::to("/login").into_response()),
        None => Err(console_problem(
            StatusCode::UNAUTHORIZED,
            "sign in at /login first",
        )),
    }
}

fn people_error(e: leadline_ports::PeopleError) -> ApiError {
    match e {
        leadline_ports::PeopleError::Unavailable(u) => ApiError::unavailable(&u),
        other => ApiError::internal(&other),
    }
}

/// A form body; one that cannot be read is a 400 in the console's terms
/// (an HTML page or problem+json), never the framework's plain text.
struct ConsoleForm<T>(T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequest<S>
    for ConsoleForm<T>
{
    type Rejection = Response;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, Response> {
        let html = wants_html(request.headers());
        match Form::<T>::from_request(request, state).await {
            Ok(Form(value)) => Ok(Self(value)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ConsoleError {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    message: "This form is far larger than any of the console's: nothing was done."
                        .to_owned(),
                    wants_html: html,
                    api: None,
                }
                .into_response())
            }
            Err(_) => Err(ConsoleError {
                status: StatusCode::BAD_REQUEST,
                message: "This form came back incomplete. Reload the page and try again."
                    .to_owned(),
                wants_html: html,
                api: None,
            }
            .into_response()),
        }
    }
}

/// A form's CSRF field.
#[derive(Debug, Deserialize)]
struct CsrfOnly {
    csrf: String,
}

/// The answer to a form whose CSRF token is not its session's.
fn csrf_refused(headers: &HeaderMap) -> Response {
    ConsoleError::new(
        headers,
        StatusCode::FORBIDDEN,
        "This form has expired (its security token does not match your session). Go back, reload the page and try again.",
    )
    .into_response()
}

async fn login_page() -> Response {
    let csrf = random_hex();
    let mut response = pages::login(&csrf, None).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(LOGIN_CSRF_COOKIE, &csrf, 3600),
    );
    response
}

/// `POST /login`.
#[derive(Debug, Deserialize)]
struct LoginForm {
    workspace: String,
    email: String,
    password: String,
    csrf: String,
}

/// The client's address as the console sees it (the TCP peer; behind a
/// proxy, that proxy).
fn address(
    connect: Option<&axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
) -> String {
    connect.map_or_else(|| "unknown".to_owned(), |c| c.0.0.ip().to_string())
}

async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    connect: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    ConsoleForm(form): ConsoleForm<LoginForm>,
) -> Response {
    let expected = cookie(&headers, LOGIN_CSRF_COOKIE).unwrap_or_default();
    if expected.is_empty() || !same(expected, &form.csrf) {
        return ConsoleError::new(
            &headers,
            StatusCode::FORBIDDEN,
            "This sign-in form has expired. Reload the page and try again.",
        )
        .into_response();
    }
    let address = address(connect.as_ref());
    match state
        .services()
        .people
        .sign_in(&form.workspace, &form.email, &form.password, &address)
        .await
    {
        Ok(signed) => signed_in(&signed, state.services().people.session_policy()),
        Err(e) => sign_in_failed(&headers, &form.csrf, e),
    }
}

fn signed_in(signed: &leadline_app::SignedIn, policy: leadline_domain::SessionPolicy) -> Response {
    let mut response = Redirect::to("/").into_response();
    let headers = response.headers_mut();
    headers.append(
        header::SET_COOKIE,
        set_cookie(
            SESSION_COOKIE,
            signed.token.expose(),
            policy.absolute.num_seconds(),
        ),
    );
    headers.append(header::SET_COOKIE, set_cookie(LOGIN_CSRF_COOKIE, "", 0));
    response
}

fn sign_in_failed(headers: &HeaderMap, csrf: &str, e: SignInError) -> Response {
    let (status, message) = match e {
        SignInError::Invalid => (
            StatusCode::UNAUTHORIZED,
            "Wrong workspace, email or password.".to_owned(),
        ),
        SignInError::LockedOut(lockout) => {
            let until = leadline_app::lockout_ends(lockout);
            let minutes = (until - chrono::Utc::now()).num_minutes().max(1);
            (
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "Too many failed sign-ins. Sign-in is locked for about {minutes} more minute{}; an admin can send you a new login link meanwhile.",
                    if minutes == 1 { "" } else { "s" }
                ),
            )
        }
        SignInError::Throttled { retry_after_secs } => {
            let message = format!(
                "Too many sign-in attempts from your address. Wait {retry_after_secs} second{} and try again.",
                if retry_after_secs == 1 { "" } else { "s" }
            );
            let mut response = if wants_html(headers) {
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    pages::login(csrf, Some(&message)),
                )
                    .into_response()
            } else {
                console_problem(StatusCode::TOO_MANY_REQUESTS, &message)
            };
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs.max(1)),
            );
            return response;
        }
        SignInError::Password(p) => (StatusCode::UNPROCESSABLE_ENTITY, format!("Password: {p}.")),
        SignInError::Store(store) => {
            return ConsoleError::api(headers, people_error(store)).into_response();
        }
    };
    if !wants_html(headers) {
        return console_problem(status, &message);
    }
    (status, pages::login(csrf, Some(&message))).into_response()
}

async fn link_page(
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Response {
    let csrf = random_hex();
    let token = path.map(|Path(t)| t).unwrap_or_default();
    let valid = leadline_app::PeopleService::link_looks_valid(&token);
    let mut response = pages::set_password(
        &token,
        &csrf,
        if valid {
            None
        } else {
            Some("This login link is not valid. Ask an admin for a new one.")
        },
    )
    .into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(LOGIN_CSRF_COOKIE, &csrf, 3600),
    );
    response
}

/// `POST /login/link`.
#[derive(Debug, Deserialize)]
struct LinkForm {
    token: String,
    password: String,
    csrf: String,
}

async fn redeem_link(
    State(state): State<AppState>,
    headers: HeaderMap,
    ConsoleForm(form): ConsoleForm<LinkForm>,
) -> Response {
    let expected = cookie(&headers, LOGIN_CSRF_COOKIE).unwrap_or_default();
    if expected.is_empty() || !same(expected, &form.csrf) {
        return ConsoleError::new(
            &headers,
            StatusCode::FORBIDDEN,
            "This form has expired. Open the login link again.",
        )
        .into_response();
    }
    match state
        .services()
        .people
        .redeem_link(&form.token, &form.password)
        .await
    {
        Ok(signed) => signed_in(&signed, state.services().people.session_policy()),
        Err(SignInError::Password(p)) if wants_html(&headers) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            pages::set_password(&form.token, &form.csrf, Some(&format!("Password: {p}."))),
        )
            .into_response(),
        Err(SignInError::Invalid) if wants_html(&headers) => (
            StatusCode::UNAUTHORIZED,
            pages::set_password(
                &form.token,
                &form.csrf,
                Some(
                    "This login link was used already or has expired. Ask an admin for a new one.",
                ),
            ),
        )
            .into_response(),
        Err(e) => sign_in_failed(&headers, &form.csrf, e),
    }
}

async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    ConsoleForm(form): ConsoleForm<CsrfOnly>,
) -> Response {
    let signed = match signed(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if !signed.session.csrf_matches(&form.csrf) {
        return csrf_refused(&headers);
    }
    if let Some(value) = cookie(&headers, SESSION_COOKIE)
        && let Err(e) = state.services().people.sign_out(value).await
    {
        return ConsoleError::api(&headers, people_error(e)).into_response();
    }
    signed_out()
}

fn signed_out() -> Response {
    let mut response = Redirect::to("/login").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, set_cookie(SESSION_COOKIE, "", 0));
    response
}

async fn logout_everywhere(
    State(state): State<AppState>,
    headers: HeaderMap,
    ConsoleForm(form): ConsoleForm<CsrfOnly>,
) -> Response {
    let signed = match signed(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if !signed.session.csrf_matches(&form.csrf) {
        return csrf_refused(&headers);
    }
    if let Err(e) = state
        .services()
        .people
        .sign_out_everywhere(signed.user.tenant_id, signed.user.id)
        .await
    {
        return ConsoleError::api(&headers, people_error(e)).into_response();
    }
    signed_out()
}

/// Query of the inbox: what the last action did, as a code.
#[derive(Debug, Deserialize, Default)]
struct InboxQuery {
    flash: Option<Flash>,
    approval: Option<ApprovalId>,
}

/// How many cards the inbox shows.
const INBOX_CARDS: u32 = 25;

async fn inbox(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let signed = match signed(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let tenant = signed.user.tenant_id;
    let services = state.services();
    let mut approvals = Vec::new();
    for status in [ApprovalStatus::Pending, ApprovalStatus::Approved] {
        let query = ApprovalQueueQuery {
            status,
            requested_by: None,
            limit: PageLimit::new(INBOX_CARDS).unwrap_or(PageLimit::DEFAULT),
            after: None,
        };
        match services.approvals.queue(tenant, &query).await {
            Ok(page) => approvals.extend(page.items),
            Err(e) => return ConsoleError::api(&headers, e.into()).into_response(),
        }
    }
    // Each card's lead context, read at once (each one cached).
    let contexts = futures::future::join_all(
        approvals
            .iter()
            .map(|a| services.context.context(tenant, a.lead_id)),
    )
    .await;
    let cards: Vec<pages::Card> = approvals
        .into_iter()
        .zip(contexts)
        .map(|(approval, context)| pages::Card {
            context: context
                .ok()
                .and_then(|c| serde_json::from_slice(c.bytes()).ok()),
            approval,
        })
        .collect();
    // A query that is not ours is ignored: it only carries a message code.
    let query: InboxQuery = query_or_default(query);
    let (done, error) = match query.flash {
        Some(flash) => {
            let text = flash_text(&state, tenant, flash, query.approval).await;
            if flash.is_error() {
                (None, Some(text))
            } else {
                (Some(text), None)
            }
        }
        None => (None, None),
    };
    pages::inbox(
        &signed.user,
        &signed.session.csrf_token,
        &cards,
        pages::Powers {
            decide: signed.may(Scope::ApprovalsDecide),
            edit: signed.may(Scope::ApprovalsDraft),
        },
        done.as_deref(),
        error.as_deref(),
    )
    .into_response()
}

/// `GET /inbox/state`: the approvals still waiting, for the live inbox.
async fn inbox_state(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let signed = match signed(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let tenant = signed.user.tenant_id;
    let mut items = Vec::new();
    for status in [ApprovalStatus::Pending, ApprovalStatus::Approved] {
        let query = ApprovalQueueQuery {
            status,
            requested_by: None,
            limit: PageLimit::new(INBOX_CARDS).unwrap_or(PageLimit::DEFAULT),
            after: None,
        };
        match state.services().approvals.queue(tenant, &query).await {
            Ok(page) => items.extend(page.items.into_iter().map(|a| {
                serde_json::json!({
                    "id": a.id.to_string(),
                    "status": a.status.as_str(),
                    "revision": a.revision,
                })
            })),
            Err(e) => return ConsoleError::api(&headers, e.into()).into_response(),
        }
    }
    axum::Json(serde_json::json!({ "items": items })).into_response()
}

/// An action's form: a decision (with the revision its card showed), or
/// an edit (with the new text).
#[derive(Debug, Deserialize)]
struct DecideForm {
    csrf: String,
    reason: Option<String>,
    revision: Option<String>,
    subject: Option<String>,
    body: Option<String>,
}

async fn decide(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
    ConsoleForm(form): ConsoleForm<DecideForm>,
) -> Response {
    let Ok(Path((id, action))) = path else {
        return ConsoleError::new(&headers, StatusCode::NOT_FOUND, "There is nothing here.")
            .into_response();
    };
    let signed = match signed(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if !signed.session.csrf_matches(&form.csrf) {
        return csrf_refused(&headers);
    }
    let editing = action == "edit";
    if editing && !signed.may(Scope::ApprovalsDraft) {
        return ConsoleError::new(
            &headers,
            StatusCode::FORBIDDEN,
            format!(
                "Editing drafts needs the agent role; you are {}.",
                signed.user.role
            ),
        )
        .into_response();
    }
    if !editing && !signed.may(Scope::ApprovalsDecide) {
        return ConsoleError::new(
            &headers,
            StatusCode::FORBIDDEN,
            format!(
                "Deciding and sending messages needs the approver role; you are {}.",
                signed.user.role
            ),
        )
        .into_response();
    }
    let Ok(id) = id.parse::<ApprovalId>() else {
        return ConsoleError::new(
            &headers,
            StatusCode::NOT_FOUND,
            "There is no such approval.",
        )
        .into_response();
    };
    let Some(by) = signed.user.agent_id else {
        return back(Flash::NoAgent, id);
    };
    // The revision the card showed; a form without one (or with a number
    // that is not one) decides whatever is current, as the API does.
    let revision = form.revision.as_deref().and_then(|r| r.trim().parse().ok());
    if editing {
        return edit_draft(&state, &headers, &signed, id, by, revision, &form).await;
    }
    let act = match action.as_str() {
        "approve" => ApprovalAction::Approve { by },
        "send" => ApprovalAction::MarkSent { by },
        "reject" => match RejectionReason::new(form.reason.as_deref().unwrap_or_default()) {
            Ok(reason) => ApprovalAction::Reject { by, reason },
            Err(_) => return back(Flash::NeedsReason, id),
        },
        _ => {
            return ConsoleError::new(&headers, StatusCode::NOT_FOUND, "There is no such action.")
                .into_response();
        }
    };
    let approvals = &state.services().approvals;
    match approvals
        .act_at(signed.user.tenant_id, id, &act, revision)
        .await
    {
        Ok(done) => back(
            match done.status {
                ApprovalStatus::Approved => Flash::Approved,
                ApprovalStatus::Rejected => Flash::Rejected,
                _ => Flash::Sent,
            },
            id,
        ),
        Err(leadline_ports::TransitionApprovalError::Conflict { .. }) => back(Flash::Conflict, id),
        Err(leadline_ports::TransitionApprovalError::SelfDecision) => back(Flash::SelfDecision, id),
        Err(leadline_ports::TransitionApprovalError::Edited { .. }) => back(Flash::Edited, id),
        Err(leadline_ports::TransitionApprovalError::NotFound) => ConsoleError::new(
            &headers,
            StatusCode::NOT_FOUND,
            "There is no such approval.",
        )
        .into_response(),
        Err(e) => {
            ConsoleError::api(&headers, crate::error::transition_error(e, "by")).into_response()
        }
    }
}

/// Replaces a pending draft's text from the inbox's edit form.
async fn edit_draft(
    state: &AppState,
    headers: &HeaderMap,
    signed: &Signed,
    id: ApprovalId,
    by: leadline_domain::AgentId,
    revision: Option<i32>,
    form: &DecideForm,
) -> Response {
    let subject = match form.subject.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => match Subject::new(text) {
            Ok(subject) => Some(subject),
            Err(_) => return back(Flash::BadText, id),
        },
    };
    let (Ok(body), Some(revision)) = (
        MessageBody::new(form.body.as_deref().unwrap_or_default()),
        revision,
    ) else {
        return back(Flash::BadText, id);
    };
    let req = EditDraftRequest {
        subject,
        body,
        edited_by: by,
        revision,
    };
    match state
        .services()
        .approvals
        .edit(signed.user.tenant_id, id, &req)
        .await
    {
        Ok(_) => back(Flash::DraftEdited, id),
        Err(leadline_ports::EditApprovalError::Stale { .. }) => back(Flash::Edited, id),
        Err(leadline_ports::EditApprovalError::NotPending { .. }) => back(Flash::Conflict, id),
        Err(e) => ConsoleError::api(headers, e.into()).into_response(),
    }
}

/// What the inbox says after an action: a code in the query, never text
/// (a link could otherwise make the console say anything).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
enum Flash {
    Approved,
    Rejected,
    Sent,
    Conflict,
    SelfDecision,
    NoAgent,
    NeedsReason,
    DraftEdited,
    Edited,
    BadText,
}

impl Flash {
    fn is_error(self) -> bool {
        !matches!(
            self,
            Self::Approved | Self::Rejected | Self::Sent | Self::DraftEdited
        )
    }
}

/// Back to the inbox, saying what happened to approval `id`.
fn back(flash: Flash, id: ApprovalId) -> Response {
    let query = serde_urlencoded::to_string([
        (
            "flash",
            serde_json::to_value(flash)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
        ),
        ("approval", id.to_string()),
    ])
    .unwrap_or_default();
    Redirect::to(&format!("/?{query}")).into_response()
}

/// The sentence a flash code stands for; for a conflict, who got there
/// first, read now.
async fn flash_text(
    state: &AppState,
    tenant: leadline_domain::TenantId,
    flash: Flash,
    id: Option<ApprovalId>,
) -> String {
    match flash {
        Flash::Approved => "Message approved.".to_owned(),
        Flash::Rejected => "Message rejected.".to_owned(),
        Flash::Sent => "Message sent.".to_owned(),
        Flash::SelfDecision => "Not done: you drafted or edited this message, so another person must approve or reject it (separation of duties).".to_owned(),
        Flash::NoAgent => "Your user acts as no agent, so its decisions could not be recorded. Ask an admin to link you to an agent.".to_owned(),
        Flash::NeedsReason => "A rejection needs a reason (up to 500 characters).".to_owned(),
        Flash::DraftEdited => "Draft edited. While separation of duties is on, another person approves your words.".to_owned(),
        Flash::Edited => "Not done: the draft was edited since you read it. Read the new text and decide again.".to_owned(),
        Flash::BadText => "Not saved: a message needs a body (up to 20,000 characters) and a subject is one line of up to 300.".to_owned(),
        Flash::Conflict => {
            let services = state.services();
            let approval = match id {
                Some(id) => services.approvals.get(tenant, id).await.ok(),
                None => None,
            };
            let Some(approval) = approval else {
                return "Not done: someone else acted on this message first.".to_owned();
            };
            // The one who moved it to where it is now.
            let agent = if approval.status == ApprovalStatus::Sent {
                approval.sent_by
            } else {
                approval.decided_by
            };
            let who = match agent {
                Some(agent) => services
                    .agents
                    .get(tenant, agent)
                    .await
                    .map(|a| a.name.to_string())
                    .unwrap_or_else(|_| "someone else".to_owned()),
                None => "someone else".to_owned(),
            };
            format!("Not done: this message was {} already, by {who}.", approval.status)
        }
    }
}

/// Query of the leads page: a search and filters.
#[derive(Debug, Deserialize, Default)]
struct LeadsQuery {
    q: Option<String>,
    status: Option<String>,
    tag: Option<String>,
    after: Option<leadline_domain::LeadId>,
}

/// How many leads a page of the list shows.
const LEADS_PAGE: u32 = 50;

async fn leads(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Response {
    let signed = match signed(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let tenant = signed.user.tenant_id;
    let query: LeadsQuery = query_or_default(raw);
    let nonempty = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let filters = pages::LeadFilters {
        q: nonempty(&query.q),
        status: nonempty(&query.status),
        tag: nonempty(&query.tag),
    };
    // A filter that is not valid is said so on the page, not an error.
    let mut problem = None;
    let status = match filters
        .status
        .as_deref()
        .map(str::parse::<leadline_domain::LeadStatus>)
    {
        Some(Ok(status)) => Some(status),
        Some(Err(_)) => {
            problem = Some(
                "That status is not one of new, contacted, qualified, won or lost.".to_owned(),
            );
            None
        }
        None => None,
    };
    let tag = match filters.tag.as_deref().map(leadline_domain::Tag::parse) {
        Some(Ok(tag)) => Some(tag),
        Some(Err(e)) => {
            problem = Some(format!("Tag: {e}."));
            None
        }
        None => None,
    };
    let limit = PageLimit::new(LEADS_PAGE).unwrap_or(PageLimit::DEFAULT);
    let services = state.services();
    let (rows, next) = match filters.q.as_deref().map(leadline_domain::SearchText::parse) {
        Some(Err(e)) => {
            problem = Some(format!("Search: {e}."));
            (Vec::new(), None)
        }
        Some(Ok(text)) => {
            let search = leadline_domain::SearchLeadsQuery {
                text,
                status,
                assigned_agent_id: None,
                tag,
                created_after: None,
                created_before: None,
                updated_after: None,
                updated_before: None,
                metadata: None,
                limit,
                after: None,
            };
            match services.leads.search(tenant, &search).await {
                Ok(page) => (page.items.into_iter().map(|h| h.lead).collect(), None),
                Err(e) => return ConsoleError::api(&headers, e.into()).into_response(),
            }
        }
        None => {
            let list = leadline_domain::ListLeadsQuery {
                status,
                assigned_agent_id: None,
                tag,
                limit,
                after: query.after,
            };
            match services.leads.list(tenant, &list).await {
                Ok(page) => {
                    let next = page
                        .has_more
                        .then(|| page.items.last().map(|l| l.id))
                        .flatten();
                    (page.items, next)
                }
                Err(e) => return ConsoleError::api(&headers, e.into()).into_response(),
            }
        }
    };
    pages::leads(
        &signed.user,
        &signed.session.csrf_token,
        &filters,
        &rows,
        next,
        problem.as_deref(),
    )
    .into_response()
}

/// How many events the lead page shows.
const TIMELINE_PAGE: u32 = 50;

async fn lead_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Response {
    let signed = match signed(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let not_found = || {
        ConsoleError::new(&headers, StatusCode::NOT_FOUND, "There is no such lead.").into_response()
    };
    let Some(id) = path_id::<leadline_domain::LeadId>(path) else {
        return not_found();
    };
    let tenant = signed.user.tenant_id;
    let services = state.services();
    let lead = match services.leads.get(tenant, id).await {
        Ok(lead) => lead,
        Err(leadline_ports::GetLeadError::NotFound) => return not_found(),
        Err(e) => return ConsoleError::api(&headers, e.into()).into_response(),
    };
    let query = leadline_domain::TimelineQuery {
        limit: PageLimit::new(TIMELINE_PAGE).unwrap_or(PageLimit::DEFAULT),
        after: None,
    };
    let events = match services.timeline.timeline(tenant, id, &query).await {
        Ok(page) => page.items,
        Err(e) => return ConsoleError::api(&headers, e.into()).into_response(),
    };
    pages::lead(&signed.user, &signed.session.csrf_token, &lead, &events).into_response()
}

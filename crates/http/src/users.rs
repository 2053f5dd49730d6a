//! User routes (admins only): `/v1/users` (invite, list), `/v1/users/{id}`
//! (read, change the role, disable) and `/v1/users/{id}/link` (a new
//! one-time login link). A login link appears in the answer that made it
//! and nowhere else.

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::Response,
};
use chrono::{DateTime, Utc};
use leadline_app::InviteError;
use leadline_domain::{
    Access, DisplayName, Email, Role, SecretToken, UpdateUserRequest, User, UserId,
};
use leadline_ports::PeopleError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    AppState,
    auth::{CurrentCaller, within_reach, within_time},
    cursor,
    dto::{ListResponse, PageParams, page_limit},
    error::{ApiError, stale},
    extract::{ApiJson, ApiQuery, CurrentTenant, PathId},
    openapi as oa,
    routes::{expected_version, versioned},
};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(invite, list))
        .routes(routes!(get_user, update))
        .routes(routes!(new_link))
}

impl From<PeopleError> for ApiError {
    fn from(e: PeopleError) -> Self {
        match e {
            PeopleError::NotFound => Self::not_found("user"),
            PeopleError::DuplicateEmail => {
                Self::conflict("email", "a user of this tenant has this email already")
            }
            PeopleError::AgentNotFound => Self::invalid_field("agent_id", "no such agent"),
            PeopleError::Conflict { current } => stale(current, false),
            PeopleError::Unavailable(u) => Self::unavailable(&u),
            PeopleError::Unknown(e) => Self::internal(&e),
        }
    }
}

/// A user, as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
struct UserView {
    /// Its id.
    id: uuid::Uuid,
    /// Sign-in name, unique in the tenant.
    email: String,
    /// Display name.
    name: String,
    /// `viewer`, `agent`, `approver` or `admin`.
    #[schema(example = "approver")]
    role: &'static str,
    /// The agent the user acts as in the console.
    agent_id: Option<uuid::Uuid>,
    /// Whether a password is set (until then only a login link signs in).
    has_password: bool,
    /// When the user was disabled (no sign-in, no session), if they are.
    disabled_at: Option<DateTime<Utc>>,
    /// Creation time.
    created_at: DateTime<Utc>,
    /// Optimistic-concurrency version; also the `ETag`.
    version: i64,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        Self {
            id: u.id.as_uuid(),
            email: u.email.to_string(),
            name: u.name.to_string(),
            role: u.role.as_str(),
            agent_id: u.agent_id.map(|a| a.as_uuid()),
            has_password: u.has_password,
            disabled_at: u.disabled_at,
            created_at: u.created_at,
            version: u.version,
        }
    }
}

/// A user and a one-time login link: the only time the link is shown.
#[derive(Debug, Serialize, ToSchema)]
struct UserWithLink {
    /// The user.
    user: UserView,
    /// The console path that signs the user in once, for 72 hours, and
    /// asks for a password: prefix it with the console's address.
    #[schema(example = "/login/link/lll_…")]
    login_link: String,
}

fn with_link(status: StatusCode, user: &User, link: &SecretToken) -> Response {
    let body = UserWithLink {
        user: UserView::from(user),
        login_link: format!("/login/link/{}", link.expose()),
    };
    let mut response = versioned(
        status,
        &body,
        user.version,
        Some(format!("/v1/users/{}", user.id)),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn role_of(raw: &str) -> Result<Role, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::invalid_field(
            "role",
            format!("{raw:?} is not a role: give viewer, agent, approver or admin"),
        )
    })
}

/// `POST /v1/users`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct InviteBody {
    /// Their email: their sign-in name, and the agent they act as.
    #[schema(example = "ada@acme.example")]
    email: String,
    /// Their name (defaults to the email).
    name: Option<String>,
    /// `viewer`, `agent`, `approver` or `admin`.
    #[schema(example = "approver")]
    role: String,
}

/// Invite a user. The answer carries a one-time login link, once.
///
/// The user acts as the agent with the same email (made if the tenant has
/// none). `Idempotency-Key` is refused here: a replayable answer would
/// have to keep the link.
#[utoipa::path(
    post,
    path = "/v1/users",
    tag = "users",
    security(("api_key" = ["admin"])),
    request_body = InviteBody,
    responses(
        (status = 201, description = "Invited, with a login link", body = UserWithLink, headers(
            ("ETag" = String, description = "The version, quoted"),
            ("Location" = String, description = "The user's URL"),
        )),
        (status = 403, response = oa::Forbidden),
        (status = 409, response = oa::Conflict),
        (status = 422, response = oa::Unprocessable),
    ),
)]
async fn invite(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    CurrentCaller(caller): CurrentCaller,
    ApiJson(body): ApiJson<InviteBody>,
) -> Result<Response, ApiError> {
    let email =
        Email::parse(&body.email).map_err(|e| ApiError::invalid_field("email", e.to_string()))?;
    let name = DisplayName::new(body.name.as_deref().unwrap_or(email.as_str()))
        .map_err(|e| ApiError::invalid_field("name", e.to_string()))?;
    let role = role_of(&body.role)?;
    within_reach(caller.access, Access::Role(role), "role")?;
    within_time(&state, &caller, "role", |until| until.is_some()).await?;
    let invited = state
        .services()
        .people
        .invite(tenant.id, email, name, role)
        .await
        .map_err(|e| match e {
            InviteError::DuplicateEmail => PeopleError::DuplicateEmail.into(),
            InviteError::Store(e) => e.into(),
            InviteError::Agent(why) => {
                ApiError::conflict("email", format!("the user's agent: {why}"))
            }
        })?;
    Ok(with_link(StatusCode::CREATED, &invited.user, &invited.link))
}

/// A page of users.
#[derive(Debug, Serialize, ToSchema)]
struct UserPage {
    /// The users.
    items: Vec<UserView>,
    /// Where the next page starts; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// The tenant's users, oldest first.
#[utoipa::path(
    get,
    path = "/v1/users",
    tag = "users",
    security(("api_key" = ["admin"])),
    params(PageParams),
    responses(
        (status = 200, description = "A page of users", body = UserPage),
        (status = 422, response = oa::Unprocessable),
    ),
)]
async fn list(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<Json<UserPage>, ApiError> {
    let after = cursor::decode::<uuid::Uuid>(params.cursor.as_deref())?.map(UserId::from_uuid);
    let page = state
        .services()
        .people
        .list(tenant.id, page_limit(params.limit)?, after)
        .await?;
    let page = ListResponse::from_page(page, |u| u.id.as_uuid());
    Ok(Json(UserPage {
        items: page.items.iter().map(UserView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Read a user.
#[utoipa::path(
    get,
    path = "/v1/users/{id}",
    tag = "users",
    security(("api_key" = ["admin"])),
    params(("id" = uuid::Uuid, Path, description = "The user's id")),
    responses(
        (status = 200, description = "The user", body = UserView, headers(
            ("ETag" = String, description = "The version, quoted"),
        )),
        (status = 404, response = oa::NotFound),
    ),
)]
async fn get_user(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    PathId(id): PathId<UserId>,
) -> Result<Response, ApiError> {
    let user = state.services().people.get(tenant.id, id).await?;
    Ok(versioned(
        StatusCode::OK,
        &UserView::from(&user),
        user.version,
        None,
    ))
}

/// `PATCH /v1/users/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateUserBody {
    /// The version read (or send `If-Match`).
    version: Option<i64>,
    /// A new role.
    role: Option<String>,
    /// `true` disables the user (no sign-in; every session ends), `false`
    /// enables them again.
    disabled: Option<bool>,
}

/// Change a user's role, or disable them.
///
/// The version read must be sent, as `If-Match` or the body's `version`.
#[utoipa::path(
    patch,
    path = "/v1/users/{id}",
    tag = "users",
    security(("api_key" = ["admin"])),
    params(
        ("id" = uuid::Uuid, Path, description = "The user's id"),
        ("If-Match" = Option<String>, Header, nullable = false, description = "The `ETag` read; a stale one is a 412"),
    ),
    request_body = UpdateUserBody,
    responses(
        (status = 200, description = "Updated", body = UserView, headers(
            ("ETag" = String, description = "The new version, quoted"),
        )),
        (status = 403, response = oa::Forbidden),
        (status = 404, response = oa::NotFound),
        (status = 409, response = oa::Conflict),
        (status = 412, response = oa::PreconditionFailed),
        (status = 428, response = oa::PreconditionRequired),
    ),
)]
async fn update(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    CurrentCaller(caller): CurrentCaller,
    PathId(id): PathId<UserId>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<UpdateUserBody>,
) -> Result<Response, ApiError> {
    let (version, from_if_match) = expected_version(&headers, body.version)?;
    let role = body.role.as_deref().map(role_of).transpose()?;
    if let Some(role) = role {
        within_reach(caller.access, Access::Role(role), "role")?;
        within_time(&state, &caller, "role", |until| until.is_some()).await?;
    }
    if body.disabled == Some(false) {
        within_time(&state, &caller, "disabled", |until| until.is_some()).await?;
    }
    let req = UpdateUserRequest {
        expected_version: version,
        role,
        disabled: body.disabled,
    };
    let user = state
        .services()
        .people
        .update(tenant.id, id, &req)
        .await
        .map_err(|e| match e {
            PeopleError::Conflict { current } => stale(current, from_if_match),
            other => other.into(),
        })?;
    Ok(versioned(
        StatusCode::OK,
        &UserView::from(&user),
        user.version,
        None,
    ))
}

/// Issue a new one-time login link for a user (a forgotten password); the
/// user's earlier links stop working. The answer carries it, once.
#[utoipa::path(
    post,
    path = "/v1/users/{id}/link",
    tag = "users",
    security(("api_key" = ["admin"])),
    params(("id" = uuid::Uuid, Path, description = "The user's id")),
    responses(
        (status = 201, description = "A new login link", body = UserWithLink, headers(
            ("ETag" = String, description = "The user's version, quoted"),
            ("Location" = String, description = "The user's URL"),
        )),
        (status = 403, response = oa::Forbidden),
        (status = 404, response = oa::NotFound),
    ),
)]
async fn new_link(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    CurrentCaller(caller): CurrentCaller,
    PathId(id): PathId<UserId>,
) -> Result<Response, ApiError> {
    let people = &state.services().people;
    let user = people.get(tenant.id, id).await?;
    // A link signs in as the user: it hands out the user's role.
    within_reach(caller.access, Access::Role(user.role), "id")?;
    within_time(&state, &caller, "id", |until| until.is_some()).await?;
    let link = people.issue_link(tenant.id, id).await?;
    Ok(with_link(StatusCode::CREATED, &user, &link))
}

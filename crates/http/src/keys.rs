//! API key routes (admins only): `/v1/keys` (issue, list), `/v1/keys/{id}`
//! (read, revoke) and `/v1/keys/{id}/rotate`. A key's secret appears in the
//! answer that issued it and nowhere else, ever.

use axum::{
    Json,
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, SubsecRound, Utc};
use leadline_app::IssuedKey;
use leadline_domain::{
    Access, ApiKey, ApiKeyId, ApiKeyToken, DisplayName, NewApiKey, Role, ScopeSet,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    AppState,
    auth::{CurrentCaller, within_reach, within_time},
    cursor,
    dto::{ListResponse, PageParams, page_limit},
    error::ApiError,
    extract::{ApiJson, ApiQuery, CurrentTenant, PathId},
    openapi as oa,
};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(issue, list))
        .routes(routes!(get_key, revoke))
        .routes(routes!(rotate))
}

/// Where a key stands.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum KeyStatus {
    /// It authenticates.
    Active,
    /// Its `expires_at` passed.
    Expired,
    /// It was revoked.
    Revoked,
}

/// An API key as listed: never its secret.
#[derive(Debug, Serialize, ToSchema)]
struct KeyView {
    /// Its id.
    id: uuid::Uuid,
    /// What people call it.
    #[schema(example = "CRM sync")]
    name: String,
    /// Its role (`viewer`, `agent`, `approver`, `admin`), or `null` for a
    /// key with explicit `scopes`.
    #[schema(value_type = Option<String>, example = "agent")]
    role: Option<&'static str>,
    /// Its explicit scopes, or `null` for a key with a `role`.
    #[schema(value_type = Option<Vec<String>>, example = json!(null))]
    scopes: Option<Vec<&'static str>>,
    /// The first eight characters of the secret part (after the key's last
    /// `_`), to tell keys apart; `null` for keys issued before prefixes
    /// were kept.
    #[schema(example = "3f9c0a1b")]
    prefix: Option<String>,
    /// Whether it works now.
    status: KeyStatus,
    /// When it was issued.
    created_at: DateTime<Utc>,
    /// When it stops working by itself, if ever.
    expires_at: Option<DateTime<Utc>>,
    /// When it last authenticated a request (kept to the minute).
    last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    revoked_at: Option<DateTime<Utc>>,
    /// The key a rotation issued to follow it (a key is rotated once).
    replaced_by: Option<uuid::Uuid>,
}

impl KeyView {
    fn of(k: &ApiKey, now: DateTime<Utc>) -> Self {
        Self {
            id: k.id.as_uuid(),
            name: k.name.to_string(),
            role: k.access.role().map(Role::as_str),
            scopes: k
                .access
                .scopes()
                .map(|set| set.iter().map(|s| s.as_str()).collect()),
            prefix: k.prefix.as_ref().map(|p| p.as_str().to_owned()),
            status: if k.revoked_at.is_some() {
                KeyStatus::Revoked
            } else if k.is_live(now) {
                KeyStatus::Active
            } else {
                KeyStatus::Expired
            },
            created_at: k.created_at,
            expires_at: k.expires_at,
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
            replaced_by: k.replaced_by.map(|id| id.as_uuid()),
        }
    }
}

/// A key with its secret: the only time the secret is shown.
#[derive(Debug, Serialize, ToSchema)]
struct KeyWithSecret {
    /// The key.
    key: KeyView,
    /// The bearer token (`ll_…`), for `Authorization: Bearer`. Shown only
    /// now: keep it.
    secret: String,
}

impl KeyWithSecret {
    fn of(key: &ApiKey, token: &ApiKeyToken) -> Self {
        Self {
            key: KeyView::of(key, Utc::now()),
            secret: token.expose().to_owned(),
        }
    }
}

/// An answer carrying a secret: no cache may keep it.
fn no_store(status: StatusCode, body: &impl Serialize, location: Option<String>) -> Response {
    let mut response = (status, Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(v) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        headers.insert(header::LOCATION, v);
    }
    response
}

/// `POST /v1/keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct IssueKeyBody {
    /// What people will call it (1 to 200 characters).
    #[schema(example = "CRM sync")]
    name: String,
    /// A role: `viewer` (reads), `agent` (works leads, logs events, drafts
    /// approvals), `approver` (also decides and sends approvals) or `admin`
    /// (everything, and keys, webhooks, settings). Give this or `scopes`.
    #[schema(example = "agent")]
    role: Option<String>,
    /// Explicit scopes instead of a role: `read`, `leads:write`,
    /// `events:write`, `approvals:draft`, `approvals:decide`, `admin`.
    #[schema(example = json!(null))]
    scopes: Option<Vec<String>>,
    /// When it stops working by itself (RFC 3339, in the future); absent
    /// for never.
    expires_at: Option<DateTime<Utc>>,
}

impl IssueKeyBody {
    fn into_domain(self, now: DateTime<Utc>) -> Result<NewApiKey, ApiError> {
        let name = DisplayName::new(&self.name)
            .map_err(|e| ApiError::invalid_field("name", e.to_string()))?;
        let access = match (self.role, self.scopes) {
            (Some(role), None) => Access::Role(role.parse().map_err(|_| {
                ApiError::invalid_field(
                    "role",
                    format!("{role:?} is not a role: give viewer, agent, approver or admin"),
                )
            })?),
            (None, Some(scopes)) => Access::Scopes(
                ScopeSet::parse(scopes.iter().map(String::as_str))
                    .map_err(|e| ApiError::invalid_field("scopes", e.to_string()))?,
            ),
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid_field(
                    "scopes",
                    "give a role or scopes, not both",
                ));
            }
            (None, None) => {
                return Err(ApiError::invalid_field(
                    "role",
                    "give a role (viewer, agent, approver, admin) or scopes",
                ));
            }
        };
        // Storage keeps microseconds: what is answered is what reads back.
        let expires_at = self.expires_at.map(|at| at.trunc_subsecs(6));
        NewApiKey::new(name, access, expires_at, now)
            .map_err(|e| ApiError::invalid_field("expires_at", e.to_string()))
    }
}

/// Issue an API key. The answer carries its secret, once.
///
/// `Idempotency-Key` is refused here: a replayable answer would have to
/// keep the secret.
#[utoipa::path(
    post,
    path = "/v1/keys",
    tag = "keys",
    security(("api_key" = ["admin"])),
    request_body = IssueKeyBody,
    responses(
        (status = 201, description = "Issued, with its secret", body = KeyWithSecret, headers(
            ("Location" = String, description = "The key's URL"),
        )),
        (status = 403, response = oa::Forbidden),
        (status = 422, response = oa::Unprocessable),
    ),
)]
async fn issue(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    CurrentCaller(caller): CurrentCaller,
    ApiJson(body): ApiJson<IssueKeyBody>,
) -> Result<Response, ApiError> {
    let req = body.into_domain(Utc::now())?;
    within_reach(caller.access, req.access, "scopes")?;
    within_time(&state, &caller, "expires_at", |until| req.outlives(until)).await?;
    let IssuedKey { key, token } = state.services().keys.issue(tenant.id, &req).await?;
    Ok(no_store(
        StatusCode::CREATED,
        &KeyWithSecret::of(&key, &token),
        Some(format!("/v1/keys/{}", key.id)),
    ))
}

/// A page of API keys.
#[derive(Debug, Serialize, ToSchema)]
struct KeyPage {
    /// The keys.
    items: Vec<KeyView>,
    /// Where the next page starts; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// The tenant's API keys, oldest first, revoked and expired ones included.
#[utoipa::path(
    get,
    path = "/v1/keys",
    tag = "keys",
    security(("api_key" = ["admin"])),
    params(PageParams),
    responses(
        (status = 200, description = "A page of keys", body = KeyPage),
        (status = 422, response = oa::Unprocessable),
    ),
)]
async fn list(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<Json<KeyPage>, ApiError> {
    let after = cursor::decode::<uuid::Uuid>(params.cursor.as_deref())?.map(ApiKeyId::from_uuid);
    let page = state
        .services()
        .keys
        .list(tenant.id, page_limit(params.limit)?, after)
        .await?;
    let now = Utc::now();
    let page = ListResponse::from_page(page, |k| k.id.as_uuid());
    Ok(Json(KeyPage {
        items: page.items.iter().map(|k| KeyView::of(k, now)).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Read an API key (never its secret).
#[utoipa::path(
    get,
    path = "/v1/keys/{id}",
    tag = "keys",
    security(("api_key" = ["admin"])),
    params(("id" = uuid::Uuid, Path, description = "The key's id")),
    responses(
        (status = 200, description = "The key", body = KeyView),
        (status = 404, response = oa::NotFound),
    ),
)]
async fn get_key(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    PathId(id): PathId<ApiKeyId>,
) -> Result<Json<KeyView>, ApiError> {
    let key = state.services().keys.get(tenant.id, id).await?;
    Ok(Json(KeyView::of(&key, Utc::now())))
}

/// Revoke an API key. It stops working on this instance at once and on
/// every other within a second. Revoking a revoked key changes nothing.
#[utoipa::path(
    delete,
    path = "/v1/keys/{id}",
    tag = "keys",
    security(("api_key" = ["admin"])),
    params(("id" = uuid::Uuid, Path, description = "The key's id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, response = oa::NotFound),
    ),
)]
async fn revoke(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    PathId(id): PathId<ApiKeyId>,
) -> Result<StatusCode, ApiError> {
    state.services().keys.revoke(tenant.id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Query of `POST /v1/keys/{id}/rotate`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct RotateParams {
    /// How long the old key keeps working beside the new one, in seconds
    /// (0 to 604800; default 86400, a day). Never longer than it had.
    #[param(minimum = 0, maximum = 604_800, example = 86400)]
    overlap_seconds: Option<u32>,
}

/// The successor a rotation issued, and the old key's new expiry.
#[derive(Debug, Serialize, ToSchema)]
struct RotatedKey {
    /// The new key: the same name, role or scopes and expiry.
    key: KeyView,
    /// The new key's bearer token. Shown only now: keep it.
    secret: String,
    /// The old key, now expiring at the end of the overlap.
    previous: KeyView,
}

/// Rotate an API key: issue its successor and let the old one work for
/// the overlap, so that clients move over without a moment in which
/// neither works. The answer carries the new secret, once.
#[utoipa::path(
    post,
    path = "/v1/keys/{id}/rotate",
    tag = "keys",
    security(("api_key" = ["admin"])),
    params(("id" = uuid::Uuid, Path, description = "The key's id"), RotateParams),
    responses(
        (status = 201, description = "Rotated", body = RotatedKey, headers(
            ("Location" = String, description = "The new key's URL"),
        )),
        (status = 404, response = oa::NotFound),
        (status = 409, response = oa::Conflict),
        (status = 422, response = oa::Unprocessable),
    ),
)]
async fn rotate(
    State(state): State<AppState>,
    CurrentTenant(tenant): CurrentTenant,
    PathId(id): PathId<ApiKeyId>,
    CurrentCaller(caller): CurrentCaller,
    ApiQuery(params): ApiQuery<RotateParams>,
) -> Result<Response, ApiError> {
    let overlap = chrono::Duration::seconds(i64::from(params.overlap_seconds.unwrap_or(86_400)));
    let key = state.services().keys.get(tenant.id, id).await?;
    within_reach(caller.access, key.access, "id")?;
    within_time(&state, &caller, "id", |until| {
        key.successor().outlives(until)
    })
    .await?;
    let (rotated, token) = state.services().keys.rotate(tenant.id, id, overlap).await?;
    let now = Utc::now();
    Ok(no_store(
        StatusCode::CREATED,
        &RotatedKey {
            key: KeyView::of(&rotated.new, now),
            secret: token.expose().to_owned(),
            previous: KeyView::of(&rotated.old, now),
        },
        Some(format!("/v1/keys/{}", rotated.new.id)),
    ))
}

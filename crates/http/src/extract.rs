//! Extractors that turn raw requests into domain values or a problem that
//! names the failing field.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Request},
    http::{header, request::Parts},
};
use leadline_domain::Tenant;
use serde::de::DeserializeOwned;

use crate::{AppState, error::ApiError};

/// Turns a serde error (with its path) into a problem naming the field.
fn field_error<E: std::fmt::Display>(err: &serde_path_to_error::Error<E>) -> ApiError {
    let path = err.path().to_string();
    let message = err.inner().to_string();
    // serde reports a missing or unknown field at the parent's path, with the
    // field's name in the message: pull it out so the problem names it.
    for prefix in ["missing field `", "unknown field `"] {
        if let Some((name, _)) = message
            .strip_prefix(prefix)
            .and_then(|rest| rest.split_once('`'))
        {
            // Unknown fields arrive with the path already ending in the
            // name; missing ones at the parent.
            let field = if path == "." {
                name.to_owned()
            } else if path == name || path.ends_with(&format!(".{name}")) {
                path.clone()
            } else {
                format!("{path}.{name}")
            };
            let reason = if prefix.starts_with("missing") {
                "is required"
            } else {
                "is not a known field"
            };
            return ApiError::invalid_field(field, reason);
        }
    }
    // Drop serde's " at line 1 column 20" tail: the field already says where.
    let message = message
        .split(" at line ")
        .next()
        .unwrap_or(&message)
        .to_owned();
    let field = if path == "." { "body".to_owned() } else { path };
    ApiError::invalid_field(field, message)
}

/// A JSON body deserialised into `T`, whose domain types validate as they
/// parse. Bad JSON is a 400; a bad value is a 422 naming its field.
#[derive(Debug)]
pub(crate) struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| {
                let mime = mime.trim();
                mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")
            });
        if !is_json {
            return Err(ApiError::unsupported_media_type());
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::malformed_body(e.body_text()))?;
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        match serde_path_to_error::deserialize(&mut de) {
            Ok(value) => de
                .end()
                .map(|()| Self(value))
                .map_err(|e| ApiError::malformed_body(e.to_string())),
            Err(err) => {
                if err.inner().is_syntax() || err.inner().is_eof() {
                    Err(ApiError::malformed_body(err.inner().to_string()))
                } else {
                    Err(field_error(&err))
                }
            }
        }
    }
}

/// Query parameters deserialised into `T`; a bad one is a 422 naming it.
#[derive(Debug)]
pub(crate) struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(Self)
            .map_err(|e| field_error(&e))
    }
}

/// The tenant the request's API key belongs to. Rejects with 401 when the
/// key is missing, malformed or unknown.
#[derive(Debug, Clone)]
pub(crate) struct CurrentTenant(pub Tenant);

impl FromRequestParts<AppState> for CurrentTenant {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // Already authenticated by the idempotency layer.
        if let Some(tenant) = parts.extensions.get::<Self>() {
            return Ok(tenant.clone());
        }
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .ok_or_else(ApiError::unauthorized)?;
        let tenant = state.services().tenants.authenticate(token).await?;
        tracing::Span::current().record("tenant_id", tracing::field::display(tenant.id));
        Ok(Self(tenant))
    }
}

/// The version named by an `If-Match` header (`"3"` or `W/"3"`), if any.
///
/// # Errors
/// A 422 naming `If-Match` when the header is not one of our ETags.
pub(crate) fn if_match(parts: &axum::http::HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = parts.get(header::IF_MATCH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .map(|v| v.trim().trim_start_matches("W/").trim_matches('"'))
        .and_then(|v| v.parse::<i64>().ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::invalid_field(
                "If-Match",
                "must be an ETag returned by this API, like \"3\"",
            )
        })
}

/// The ETag for a version.
pub(crate) fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

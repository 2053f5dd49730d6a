//! Extractors that turn raw requests into domain values or a problem that
//! names the failing field.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Request},
    http::{header, request::Parts},
};
use leadline_domain::Tenant;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Turns a serde error (with its path) into a problem naming the field.
fn field_error<E: std::fmt::Display>(err: &serde_path_to_error::Error<E>) -> ApiError {
    let path = err.path().to_string();
    let message = err.inner().to_string();
    // serde reports a missing or unknown field at the parent's path, with the
    // field's name in the message: pull it out so the problem names it.
    for prefix in ["missing field `", "unknown field `", "duplicate field `"] {
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
            } else if prefix.starts_with("duplicate") {
                "is given more than once"
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
    ApiError::invalid_field(field, in_json_terms(&message))
}

/// Rewrites what serde expected in JSON's terms instead of Rust's
/// ("expected u32" → "expected an integer", "expected struct CreateLeadBody"
/// → "expected a JSON object"): a client knows fields and JSON types, not
/// our type names.
fn in_json_terms(message: &str) -> String {
    const MARK: &str = "expected ";
    let Some(at) = message.find(MARK) else {
        return message.to_owned();
    };
    let (head, rest) = message.split_at(at + MARK.len());
    let word_end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    let (word, tail) = rest.split_at(word_end);
    let json = match word {
        "i8" | "i16" | "i32" | "i64" | "i128" | "u8" | "u16" | "u32" | "u64" | "u128" | "usize"
        | "isize" => "an integer",
        "f32" | "f64" => "a number",
        "struct" | "map" => {
            // Drop the type name (and any "with N elements") that follows.
            return format!("{head}a JSON object");
        }
        "sequence" | "tuple" => "an array",
        "enum" => return format!("{head}one of the documented values"),
        _ => return message.to_owned(),
    };
    format!("{head}{json}{tail}")
}

/// A JSON body deserialised into `T`, whose domain types validate as they
/// parse. Bad JSON is a 400; a bad value is a 422 naming its field.
#[derive(Debug)]
pub(crate) struct ApiJson<T>(pub T);

#[cfg(test)]
mod tests {
    use super::in_json_terms;

    #[test]
    fn messages_speak_json_not_rust() {
        assert_eq!(
            in_json_terms("invalid type: string \"1\", expected i64"),
            "invalid type: string \"1\", expected an integer"
        );
        assert_eq!(
            in_json_terms(
                "invalid type: sequence, expected struct CreateLeadBody with 10 elements"
            ),
            "invalid type: sequence, expected a JSON object"
        );
        assert_eq!(
            in_json_terms("invalid type: map, expected a sequence"),
            "invalid type: map, expected a sequence"
        );
        assert_eq!(in_json_terms("expected f64"), "expected a number");
        assert_eq!(in_json_terms("must not be empty"), "must not be empty");
    }
}

/// A JSON value read into `T` as a body would be: a 422 naming the field,
/// in JSON terms, when it does not fit.
///
/// # Errors
/// That 422.
pub(crate) fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    if !value.is_object() {
        return Err(ApiError::invalid_field("body", "must be a JSON object"));
    }
    serde_path_to_error::deserialize(value).map_err(|err| field_error(&err))
}

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
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::payload_too_large()
            } else {
                ApiError::malformed_body("the body could not be read")
            }
        })?;
        // Every body is an object of named fields. serde would also take a
        // struct from an array, field by position: refuse that up front.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(
                match serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
                    Ok(_) => ApiError::invalid_field("body", "must be a JSON object"),
                    Err(e) => ApiError::malformed_body(e.to_string()),
                },
            );
        }
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

/// An id type that names its resource, for [`PathId`]'s "not found".
pub(crate) trait ResourceId: std::str::FromStr {
    /// The resource, as a 404 names it ("lead not found").
    const WHAT: &'static str;
}

impl ResourceId for leadline_domain::LeadId {
    const WHAT: &'static str = "lead";
}
impl ResourceId for leadline_domain::AgentId {
    const WHAT: &'static str = "agent";
}
impl ResourceId for leadline_domain::ApprovalId {
    const WHAT: &'static str = "approval";
}
impl ResourceId for leadline_domain::ImportId {
    const WHAT: &'static str = "import";
}
impl ResourceId for leadline_domain::DeliveryId {
    const WHAT: &'static str = "delivery";
}
impl ResourceId for leadline_domain::WebhookId {
    const WHAT: &'static str = "webhook";
}
impl ResourceId for leadline_domain::UserId {
    const WHAT: &'static str = "user";
}
impl ResourceId for leadline_domain::ApiKeyId {
    const WHAT: &'static str = "API key";
}

/// The route's one `{id}` path segment as a typed id. Anything that is not
/// such an id (malformed, or not even UTF-8 once percent-decoded) names no
/// resource of ours: a 404 problem, never the framework's plain-text 400.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PathId<T>(pub T);

impl<T: ResourceId + Send, S: Send + Sync> FromRequestParts<S> for PathId<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::not_found(T::WHAT))?;
        raw.parse()
            .map(Self)
            .map_err(|_| ApiError::not_found(T::WHAT))
    }
}

/// The tenant the request's API key belongs to, as the auth layer
/// ([`crate::auth`]) found it. Rejects with 401 when the layer did not run,
/// which no `/v1` route allows.
#[derive(Debug, Clone)]
pub(crate) struct CurrentTenant(pub Tenant);

impl<S: Send + Sync> FromRequestParts<S> for CurrentTenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<crate::auth::CurrentCaller>()
            .map(|c| Self(c.0.tenant.clone()))
            .ok_or_else(ApiError::unauthorized)
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

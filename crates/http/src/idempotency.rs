//! `Idempotency-Key` on POST: the first request with a key runs and its
//! response is stored; a retry with the same key and the same request gets
//! that response replayed (with `Idempotent-Replayed: true`); the same key
//! with a different request is a 422; a retry while the first is still
//! running is a 409 with `Retry-After`. Server errors (5xx) are not stored,
//! so a retry after one runs again, unless the run's effect committed: the
//! store records it on the key in the effect's own transaction, so after a
//! COMMIT whose reply was lost (a 503 "outcome unknown") the retry recovers
//! that effect and answers with it, instead of writing it a second time.
//!
//! Done once here, as a route layer, rather than in every handler.

use axum::{
    body::{Body, to_bytes},
    extract::{FromRequestParts, Request},
    http::{HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use leadline_domain::IdempotencyKey;
use leadline_ports::{IdempotencyBegin, IdempotentRequest, StoredResponse};
use sha2::{Digest, Sha256};

use crate::{
    AppState,
    error::{ApiError, PROBLEM_JSON},
    extract::CurrentTenant,
};

/// The header.
pub(crate) const HEADER: &str = "idempotency-key";
/// The largest body that is buffered for hashing and replay.
const BODY_LIMIT: usize = 2 * 1024 * 1024;

/// The request's identity: method, path, query string and body. A JSON body
/// is hashed in canonical form (keys sorted, no whitespace), so a client
/// re-serialising the same object is not a "different request"; the query
/// is hashed as sent, since it can change what the request does.
fn request_hash(method: &Method, uri: &axum::http::Uri, body: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(method.as_str().as_bytes());
    hasher.update([0]);
    hasher.update(uri.path().as_bytes());
    hasher.update([0]);
    hasher.update(uri.query().unwrap_or("").as_bytes());
    hasher.update([0]);
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(value) => hasher.update(value.to_string().as_bytes()),
        Err(_) => hasher.update(body),
    }
    hasher.finalize().into()
}

fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut response = (status, stored.body).into_response();
    let headers = response.headers_mut();
    let content_type = if status.is_success() {
        "application/json"
    } else {
        PROBLEM_JSON
    };
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(location) = stored.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        headers.insert(header::LOCATION, location);
    }
    headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

/// What a `POST` route does with an `Idempotency-Key`: the one list both
/// this layer and the OpenAPI document read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyHandling {
    /// The first answer is stored and replayed to a retry.
    Stored,
    /// An import: its body may be far larger than an answer worth storing,
    /// and the route is idempotent by content (the same file answers the
    /// same run), so the key is accepted and the body streams through.
    ByContent,
    /// A privacy request. An export writes nothing a retry could repeat
    /// but its own audit record, and its answer is one person's data:
    /// storing it would keep that data, and replay it to any key of the
    /// tenant unrecorded. An erasure run twice erases nothing the second
    /// time (and records that it ran); storing its request would keep a
    /// digest of the email it was asked to forget. A well-formed key is
    /// accepted, and every call runs and is recorded.
    EveryCallRuns,
    /// A webhook's or API key's create and rotate, and a user's invitation
    /// and login link, answer with a secret: a stored answer would keep the
    /// secret in clear, so the key is refused rather than silently ignored.
    /// Holds the list to look at instead.
    Refused(&'static str),
}

/// How `path` handles an `Idempotency-Key`.
pub(crate) fn handling(path: &str) -> KeyHandling {
    if path == "/v1/imports" {
        KeyHandling::ByContent
    } else if matches!(path, "/v1/privacy/export" | "/v1/privacy/erase") {
        KeyHandling::EveryCallRuns
    } else if let Some(list) = ["/v1/webhooks", "/v1/keys", "/v1/users"]
        .into_iter()
        .find(|list| path.starts_with(list))
    {
        KeyHandling::Refused(list)
    } else {
        KeyHandling::Stored
    }
}

/// The route layer's idempotency, innermost (inside the auth check: a
/// refused request stores nothing): a `POST` with an `Idempotency-Key`
/// runs `next`, the handler, once per key, and its answer is replayed.
pub(crate) async fn layer<F, Fut>(state: &AppState, request: Request, next: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    if request.method() != Method::POST || !request.headers().contains_key(HEADER) {
        return next(request).await;
    }
    // (Who asks was checked by the auth layer, outside this one.)
    match handling(request.uri().path()) {
        KeyHandling::ByContent => next(request).await,
        KeyHandling::EveryCallRuns => {
            let valid = request
                .headers()
                .get(HEADER)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| IdempotencyKey::new(v).is_ok());
            if valid {
                next(request).await
            } else {
                ApiError::invalid_field(
                    "Idempotency-Key",
                    "must be 1 to 255 visible ASCII characters",
                )
                .into_response()
            }
        }
        KeyHandling::Refused(list) => ApiError::invalid_field(
            "Idempotency-Key",
            format!("is not accepted where the answer carries a secret (it would have to be stored to replay); list {list} to see whether a create went through"),
        )
        .into_response(),
        KeyHandling::Stored => match run(state, request, next).await {
            Ok(response) | Err(response) => response,
        },
    }
}

async fn run<F, Fut>(state: &AppState, request: Request, next: F) -> Result<Response, Response>
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let key = request
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| IdempotencyKey::new(v).ok())
        .ok_or_else(|| {
            ApiError::invalid_field(
                "Idempotency-Key",
                "must be 1 to 255 visible ASCII characters",
            )
            .into_response()
        })?;
    let (mut parts, body) = request.into_parts();
    // Keys are per tenant: the auth layer, outside this one, found it.
    let tenant = CurrentTenant::from_request_parts(&mut parts, state)
        .await
        .map_err(IntoResponse::into_response)?
        .0
        .id;
    let bytes = to_bytes(body, BODY_LIMIT).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            ApiError::payload_too_large().into_response()
        } else {
            ApiError::malformed_body("the body could not be read").into_response()
        }
    })?;
    let hash = request_hash(&parts.method, &parts.uri, &bytes);
    let idempotency = &state.services().idempotency;
    let recover = match idempotency
        .begin(tenant, &key, hash)
        .await
        .map_err(|e| ApiError::from(e).into_response())?
    {
        IdempotencyBegin::Replay(stored) => return Ok(replay(stored)),
        IdempotencyBegin::Mismatch => {
            return Err(ApiError::invalid_field(
                "Idempotency-Key",
                "was already used with a different request",
            )
            .into_response());
        }
        IdempotencyBegin::InProgress => {
            return Err(ApiError::idempotency_in_progress().into_response());
        }
        IdempotencyBegin::Started => None,
        IdempotencyBegin::Recover(effect) => Some(effect),
    };
    // The store records the request's effect on the key in the effect's own
    // transaction, or, recovering, answers with that effect unwritten again.
    let scope = IdempotentRequest {
        tenant,
        key: key.clone(),
        recover,
    };
    let mut response = scope
        .scope(next(Request::from_parts(parts, Body::from(bytes))))
        .await;
    if recover.is_some() {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    if response.status().is_server_error() {
        if let Err(e) = idempotency.abandon(tenant, &key).await {
            tracing::warn!(error = %e, "could not release an idempotency key; it expires with its lease");
        }
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let body = match to_bytes(body, BODY_LIMIT).await {
        Ok(b) => b,
        Err(e) => {
            let _ = idempotency.abandon(tenant, &key).await;
            return Err(ApiError::internal(&e).into_response());
        }
    };
    let stored = StoredResponse {
        status: parts.status.as_u16(),
        location: parts
            .headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: body.to_vec(),
    };
    if let Err(e) = idempotency.complete(tenant, &key, &stored).await {
        // The work is done and committed; only the replay record is missing.
        // Answer normally; a retry will find the key's lease and wait it out.
        tracing::warn!(error = %e, "could not store an idempotent response");
    }
    Ok(Response::from_parts(parts, Body::from(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &'static str) -> axum::http::Uri {
        axum::http::Uri::from_static(s)
    }

    #[test]
    fn hash_ignores_json_formatting_but_not_content_or_target() {
        let a = request_hash(&Method::POST, &uri("/v1/x"), br#"{"a":1,"b":2}"#);
        assert_eq!(
            a,
            request_hash(&Method::POST, &uri("/v1/x"), b"{ \"b\": 2, \"a\": 1 }")
        );
        assert_ne!(
            a,
            request_hash(&Method::POST, &uri("/v1/x"), br#"{"a":1,"b":3}"#)
        );
        assert_ne!(
            a,
            request_hash(&Method::POST, &uri("/v1/y"), br#"{"a":1,"b":2}"#)
        );
    }

    #[test]
    fn hash_covers_the_query_string() {
        let body = br#"{"a":1}"#;
        let plain = request_hash(&Method::POST, &uri("/v1/x"), body);
        let with_query = request_hash(&Method::POST, &uri("/v1/x?dry_run=true"), body);
        let other_query = request_hash(&Method::POST, &uri("/v1/x?dry_run=false"), body);
        assert_ne!(plain, with_query);
        assert_ne!(with_query, other_query);
        assert_eq!(
            with_query,
            request_hash(&Method::POST, &uri("/v1/x?dry_run=true"), body)
        );
    }
}

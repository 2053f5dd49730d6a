//! The OpenAPI 3.1 document, generated from the code, and the API docs page.
//!
//! - Every handler carries `#[utoipa::path]` and is routed with
//!   utoipa-axum's `routes!`, which takes the method and the path from that
//!   one annotation for both the router and the document: a documented
//!   operation cannot be routed elsewhere, and a `routes!` route cannot go
//!   undocumented. What `routes!` cannot see (a route registered with
//!   axum's own `route`, or a method added to a documented path) is caught
//!   by `src/tests/openapi.rs`, which scans the source and probes the router.
//! - What every operation shares is added once, by [`conventions`], not
//!   repeated on each handler: bearer auth and 401/500/503 under `/v1`; 400,
//!   415 and 422 where there is a JSON body; the `Idempotency-Key` header
//!   (and its 409/422) on every `POST`.
//! - Errors are one schema, [`schema::Problem`], sent as
//!   `application/problem+json`, referenced through the reusable responses
//!   below.
//! - `GET /openapi.json` serves the document; `/docs` is Swagger UI, whose
//!   files are compiled into the binary (utoipa-swagger-ui's `vendored`
//!   feature): the page loads nothing from another origin and works offline.

pub(crate) mod schema;

use axum::Router;
use utoipa::{
    OpenApi, ToResponse,
    openapi::{
        self, HttpMethod, Ref, RefOr, Required,
        header::HeaderBuilder,
        path::{Operation, ParameterBuilder, ParameterIn},
        schema::{ObjectBuilder, Type},
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::AppState;

/// Where the document is served.
pub(crate) const SPEC_PATH: &str = "/openapi.json";
/// Where the docs page is served (`/docs` redirects to `/docs/`).
pub(crate) const DOCS_PATH: &str = "/docs";
use crate::auth::API_KEY;

/// The parts of the document that are not operations.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "leadline",
        description = "Multi-tenant lead and outreach API.\n\n\
            Every call under `/v1` authenticates with a tenant API key \
            (`Authorization: Bearer ll_…`); the tenant it resolves to scopes the call, so another \
            tenant's ids are simply not found (404).\n\n\
            Each operation needs one scope, listed as its security requirement and as \
            `x-required-role` (the least role that has it). Roles nest: `viewer` reads; `agent` \
            also writes leads, logs events and drafts approvals; `approver` also decides and sends \
            them; `admin` also manages keys, agents, webhooks and settings. A key without the \
            scope gets 403, whose `required_scope` and `required_role` say what would do.\n\n\
            Each key, and each tenant as a whole, is held to a rate per class of request (reads, \
            writes, imports): past it, 429 with `Retry-After`. `RateLimit-Policy` and `RateLimit` \
            (IETF draft headers) on every `/v1` answer say where the caller stands.\n\n\
            Errors are `application/problem+json` (RFC 9457): match on `type` \
            (`urn:leadline:problem:<kind>`); `errors` names the fields that failed.\n\n\
            Updates are optimistic: send the `version` you read, as the body's `version` or an \
            `If-Match` header carrying the `ETag`. `POST`s accept an `Idempotency-Key`: a retry \
            with the same key and request replays the first response.\n\n\
            Every response carries `X-Request-Id` (the caller's, or a fresh UUID).",
    ),
    tags(
        (name = "health", description = "Liveness, readiness and metrics, without authentication."),
        (name = "tenant", description = "The tenant the API key belongs to."),
        (name = "agents", description = "The people (or bots) who work leads."),
        (name = "leads", description = "The people an outreach team works."),
        (name = "approvals", description = "Every outbound message is drafted, then approved or rejected by a person, then sent exactly once."),
        (name = "deliveries", description = "Sent messages on their way out: each is claimed by the relay, attempted, retried with backoff, and ends delivered, failed or dead."),
        (name = "webhooks", description = "Where a tenant's changes are POSTed, signed per Standard Webhooks; each endpoint's secret is shown once, kept sealed, and rotated with a day's overlap."),
        (name = "changes", description = "Every change to a tenant's leads, agents, approvals and events, as a JSON page or a Server-Sent Events stream that resumes without gaps."),
        (name = "audit", description = "The tamper-evident audit trail: who changed what (fields, old and new), when, on which request."),
        (name = "analytics", description = "Dashboards: the lead funnel, per-agent figures and activity, each saying how fresh it is (`as_of`)."),
        (name = "privacy", description = "Privacy requests: everything held about one person, by email, exported or erased."),
        (name = "timeline", description = "Every touch on a lead, and everything about a lead in one read."),
        (name = "cache", description = "The lead-context cache, for tenant admins."),
        (name = "users", description = "The people who sign in to the console, for tenant admins: invited with a one-time login link, given a role, disabled."),
        (name = "keys", description = "API keys, for tenant admins: each has a name, a role or explicit scopes, an optional expiry, and a visible prefix; its secret is shown once. Rotation gives the old key an overlap."),
    ),
    components(
        schemas(schema::Problem, schema::PageLimit),
        responses(
            BadRequest,
            Unauthorized,
            Forbidden,
            TooManyRequests,
            NotFound,
            Conflict,
            PreconditionFailed,
            UnsupportedMediaType,
            Unprocessable,
            Gone,
            PreconditionRequired,
            InternalError,
            Unavailable,
        ),
    ),
)]
pub(crate) struct ApiDoc;

/// The body is not parseable JSON, or could not be read.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub(crate) struct BadRequest(schema::Problem);

/// No API key, or one that is malformed or unknown.
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    headers(("WWW-Authenticate" = String, description = "`Bearer`"))
)]
pub(crate) struct Unauthorized(schema::Problem);

/// The API key is valid but its role or scopes do not allow this
/// operation; `required_scope` and `required_role` say what would.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub(crate) struct Forbidden(schema::Problem);

/// A rate limit is used up: the API key's own, or its tenant's, for this
/// class of request (reads, writes, imports). `limit` says which; retry
/// after `Retry-After` seconds. Every `/v1` answer carries the limits in
/// `RateLimit-Policy` and where the caller stands in `RateLimit`.
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    headers(
        ("Retry-After" = u32, description = "Seconds until a request would be allowed"),
        ("RateLimit-Policy" = String, description = "The key's and the tenant's limit for this class: `\"key-read\";q=200;w=2, \"tenant-read\";q=1000;w=2` (q: burst, w: seconds to refill it)"),
        ("RateLimit" = String, description = "The limit closest to refusing: `\"key-read\";r=0;t=2` (r: requests left now, t: seconds until the burst is back)"),
    )
)]
pub(crate) struct TooManyRequests(schema::Problem);

/// No such resource for this tenant (a malformed id names nothing either).
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub(crate) struct NotFound(schema::Problem);

/// The request conflicts with the resource's state: a stale body
/// `version`, a uniqueness rule, a move the lifecycle does not allow, or a
/// request with the same `Idempotency-Key` still running (`type` ends in
/// `idempotency-in-progress`, with `Retry-After`). `errors` names the field.
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    headers(("Retry-After" = u32, description = "Seconds; only when a request with the same Idempotency-Key is still running"))
)]
pub(crate) struct Conflict(schema::Problem);

/// `If-Match` named a version that is no longer current: read again, retry.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub(crate) struct PreconditionFailed(schema::Problem);

/// The body is not JSON (`Content-Type` must be `application/json` or `…+json`).
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub(crate) struct UnsupportedMediaType(schema::Problem);

/// A value is invalid, missing or unknown; `errors` names it: a body field's
/// path (`email`, `tags[1]`), a query parameter, or a header
/// (`If-Match`, `Idempotency-Key`, which is also refused when reused with a
/// different request).
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub(crate) struct Unprocessable(schema::Problem);

/// The position asked for is older than what retention keeps: start again
/// from the present.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub(crate) struct Gone(schema::Problem);

/// An update came without a version: send the body's `version` or `If-Match`.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub(crate) struct PreconditionRequired(schema::Problem);

/// A bug. The cause is logged with the request id; the body is generic.
#[derive(ToResponse)]
#[response(content_type = "application/problem+json")]
pub(crate) struct InternalError(schema::Problem);

/// The database is unreachable or saturated (or, on `/readyz`, the caches
/// are still warming up): retry after `Retry-After` seconds.
#[derive(ToResponse)]
#[response(
    content_type = "application/problem+json",
    headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))
)]
pub(crate) struct Unavailable(schema::Problem);

/// Adds what every operation shares (see the module docs) and the security
/// scheme. Runs on the document the router was built with, after every
/// route is in it; it adds a response only where the handler's annotation
/// did not give that status one of its own.
pub(crate) fn conventions(doc: &mut openapi::OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    components.security_schemes.insert(
        API_KEY.to_owned(),
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("ll_…")
                .description(Some("A tenant API key: `Authorization: Bearer ll_…`. The requirement of each operation names the scope it needs."))
                .build(),
        )
        .into(),
    );
    for (path, item) in &mut doc.paths.paths {
        let authenticated = path.starts_with("/v1/");
        for (method, operation) in operations_mut(item) {
            if authenticated {
                // The scope was declared on the handler (and checked when
                // the permission table was read from this document).
                if let Ok(scope) = crate::auth::declared_scope(operation) {
                    let role = scope.least_role();
                    operation
                        .extensions
                        .get_or_insert_with(Default::default)
                        .insert("x-required-role".to_owned(), role.as_str().into());
                    let note = format!("\n\nRequires the `{scope}` scope: role `{role}` or above.");
                    operation.description = Some(match operation.description.take() {
                        Some(d) => d + &note,
                        None => note.trim_start().to_owned(),
                    });
                }
                respond(operation, 401, "Unauthorized");
                respond(operation, 403, "Forbidden");
                respond(operation, 429, "TooManyRequests");
                respond(operation, 500, "InternalError");
                respond(operation, 503, "Unavailable");
            }
            if operation.request_body.is_some() {
                respond(operation, 400, "BadRequest");
                respond(operation, 415, "UnsupportedMediaType");
                respond(operation, 422, "Unprocessable");
            }
            if authenticated && method == HttpMethod::Post {
                idempotency_key(operation, crate::idempotency::handling(path));
            }
        }
    }
}

/// `POST`s take an optional `Idempotency-Key`, as `handling` says; replays
/// say so in a header.
fn idempotency_key(operation: &mut Operation, handling: crate::idempotency::KeyHandling) {
    use crate::idempotency::KeyHandling;
    let description = match handling {
        KeyHandling::Stored => {
            "Makes a retry safe: the first request with a key runs and its response is kept \
             (server errors excepted); a retry with the same key and request gets it again, with \
             `Idempotent-Replayed: true`. The same key with a different request is a 422; a retry \
             while the first still runs is a 409 with `Retry-After`. 1 to 255 visible ASCII \
             characters, scoped to the tenant."
        }
        KeyHandling::ByContent => {
            "Accepted (1 to 255 visible ASCII characters) and not stored: this route is \
             idempotent by content, the same file answering the same run."
        }
        KeyHandling::EveryCallRuns => {
            "Accepted (1 to 255 visible ASCII characters; else a 422) and never stored: the \
             answer holds one person's data, or the request an email to forget, so every call \
             runs, is recorded, and nothing is replayed."
        }
        KeyHandling::Refused(_) => {
            "Refused with a 422: the answer carries a secret, which a stored answer would keep \
             in clear. List the resource to see whether a create went through."
        }
    };
    let key = ParameterBuilder::new()
        .name("Idempotency-Key")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(255)),
        ))
        .build();
    operation
        .parameters
        .get_or_insert_with(Vec::new)
        .push(RefOr::T(key));
    respond(operation, 422, "Unprocessable");
    if handling != KeyHandling::Stored {
        return;
    }
    respond(operation, 409, "Conflict");
    for (status, response) in &mut operation.responses.responses {
        if let (true, RefOr::T(response)) = (status.starts_with('2'), response) {
            response.headers.insert(
                "Idempotent-Replayed".to_owned(),
                HeaderBuilder::new()
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                    .description(Some(
                        "`true` when this is the stored response to an earlier request with the \
                         same Idempotency-Key.",
                    ))
                    .build()
                    .into(),
            );
        }
    }
}

/// Adds `status` as a reference to the reusable response `name`, unless the
/// operation documents that status itself.
fn respond(operation: &mut Operation, status: u16, name: &str) {
    operation
        .responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
}

/// The operations of a path item, with their methods.
pub(crate) fn operations_mut(
    item: &mut openapi::PathItem,
) -> impl Iterator<Item = (HttpMethod, &mut Operation)> {
    [
        (HttpMethod::Get, &mut item.get),
        (HttpMethod::Put, &mut item.put),
        (HttpMethod::Post, &mut item.post),
        (HttpMethod::Delete, &mut item.delete),
        (HttpMethod::Options, &mut item.options),
        (HttpMethod::Head, &mut item.head),
        (HttpMethod::Patch, &mut item.patch),
        (HttpMethod::Trace, &mut item.trace),
    ]
    .into_iter()
    .filter_map(|(method, op)| op.as_mut().map(|op| (method, op)))
}

/// `GET /openapi.json` and the Swagger UI at `/docs`, over `doc`.
pub(crate) fn docs(doc: openapi::OpenApi) -> Router<AppState> {
    // "none": never send the document to an online validator.
    let config = Config::new([SPEC_PATH])
        .validator_url("none")
        .persist_authorization(false);
    SwaggerUi::new(DOCS_PATH)
        .url(SPEC_PATH, doc)
        .config(config)
        .into()
}

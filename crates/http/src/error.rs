//! Every error the API returns, as `application/problem+json` (RFC 9457),
//! mapped from the ports' error enums in one place.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use leadline_ports::{
    AuthenticateError, CreateAgentError, CreateLeadError, GetAgentError, GetLeadError,
    GetTenantError, ListAgentsError, ListLeadsError, UpdateAgentError, UpdateLeadError,
};
use serde::Serialize;

/// The media type of every error response.
pub(crate) const PROBLEM_JSON: &str = "application/problem+json";

/// One field that failed, with why.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct FieldError {
    /// The field's path in the request, e.g. `email` or `tags[2]`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// An API error. Construct with the helpers; the response is built in
/// [`IntoResponse`].
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    title: &'static str,
    detail: String,
    errors: Vec<FieldError>,
    retry_after: Option<u32>,
    www_authenticate: bool,
    extensions: serde_json::Map<String, serde_json::Value>,
}

#[derive(Serialize)]
struct ProblemBody<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    #[serde(skip_serializing_if = "<[FieldError]>::is_empty")]
    errors: &'a [FieldError],
    #[serde(flatten)]
    extensions: &'a serde_json::Map<String, serde_json::Value>,
}

impl ApiError {
    fn new(
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            title,
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
            www_authenticate: false,
            extensions: serde_json::Map::new(),
        }
    }

    /// 422: a field's value is invalid.
    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = message.into();
        let mut err = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            "Invalid request",
            format!("{field}: {message}"),
        );
        err.errors.push(FieldError { field, message });
        err
    }

    /// 422: several fields' values are invalid, each named with its
    /// reason (`problems` must not be empty).
    pub fn invalid_fields(problems: Vec<(String, String)>) -> Self {
        let detail = problems
            .iter()
            .map(|(field, message)| format!("{field}: {message}"))
            .collect::<Vec<_>>()
            .join("; ");
        let mut err = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            "Invalid request",
            detail,
        );
        err.errors = problems
            .into_iter()
            .map(|(field, message)| FieldError { field, message })
            .collect();
        err
    }

    /// 400: the body is not parseable JSON.
    pub fn malformed_body(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "malformed-body",
            "Malformed request body",
            detail,
        )
    }

    /// 413: the body is larger than any request needs.
    pub fn payload_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "Payload too large",
            "the request body is larger than this API accepts (2 MiB)",
        )
    }

    /// The same problem about fields inside `parent` (`email` becomes
    /// `lead.email`).
    #[must_use]
    pub fn within(mut self, parent: &str) -> Self {
        if let Some(first) = self.errors.first() {
            let prefix = format!("{}: ", first.field);
            if let Some(rest) = self.detail.strip_prefix(&prefix) {
                self.detail = format!("{parent}.{}: {rest}", first.field);
            }
        }
        for e in &mut self.errors {
            e.field = format!("{parent}.{}", e.field);
        }
        self
    }

    /// The same problem with another human-readable detail.
    #[must_use]
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    /// 414: the request target is longer than the API reads.
    pub fn uri_too_long(max: usize) -> Self {
        Self::new(
            StatusCode::URI_TOO_LONG,
            "uri-too-long",
            "URI too long",
            format!("the request target is longer than {max} bytes"),
        )
    }

    /// 431: more or larger headers than the API reads.
    pub fn headers_too_large(max_count: usize, max_bytes: usize) -> Self {
        Self::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers-too-large",
            "Request header fields too large",
            format!("send at most {max_count} headers of at most {max_bytes} bytes in all"),
        )
    }

    /// 415: the body is not JSON.
    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            "send the body as application/json",
        )
    }

    /// 401: no or bad credentials.
    pub fn unauthorized() -> Self {
        let mut err = Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            "send a valid API key as 'Authorization: Bearer <key>'",
        );
        err.www_authenticate = true;
        err
    }

    /// Changes the status and kind of an error built with a helper (for a
    /// refusal that names a field but is not a validation failure).
    pub(crate) fn set_status(
        &mut self,
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
    ) {
        self.status = status;
        self.kind = kind;
        self.title = title;
    }

    /// 403: the caller is known but its role or scopes do not allow this.
    /// `required_scope` and `required_role` say what would.
    pub fn forbidden(refused: &leadline_domain::Forbidden) -> Self {
        let mut err = Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Forbidden",
            refused.to_string(),
        );
        err.extension("required_scope", refused.needed.as_str().into());
        err.extension("required_role", refused.needed.least_role().as_str().into());
        err
    }

    /// 429: a rate limit is used up; `limit` names which (`key` or
    /// `tenant`), and `Retry-After` when to come back.
    pub fn rate_limited(
        limit: &'static str,
        class: leadline_domain::RouteClass,
        rate: &leadline_domain::RateLimit,
        retry_after_secs: u64,
    ) -> Self {
        let whose = if limit == "key" {
            "this API key's"
        } else {
            "this tenant's"
        };
        let mut err = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too many requests",
            format!(
                "{whose} limit for {class} requests ({} a second, {} at once) is used up; retry after {retry_after_secs} s",
                rate.per_second(),
                rate.burst()
            ),
        );
        err.retry_after = Some(u32::try_from(retry_after_secs).unwrap_or(u32::MAX));
        err.extension("limit", limit.into());
        err.extension("class", class.as_str().into());
        err
    }

    /// 410: what was asked for is no longer kept.
    pub fn gone(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::GONE, "gone", "Gone", detail)
    }

    /// 404: no such resource (for this tenant).
    pub fn not_found(what: &'static str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            format!("{what} not found"),
        )
    }

    /// 405.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            "this route does not accept that method",
        )
    }

    /// 409 with the field it concerns.
    pub fn conflict(field: &str, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        let mut err = Self::new(StatusCode::CONFLICT, "conflict", "Conflict", detail.clone());
        err.errors.push(FieldError {
            field: field.to_owned(),
            message: detail,
        });
        err
    }

    /// 412: `If-Match` named a version that is no longer current.
    pub fn precondition_failed(current: i64) -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition-failed",
            "Precondition failed",
            format!("the resource is at version {current}; read it again and retry"),
        )
    }

    /// 428: an update came without a version.
    pub fn precondition_required() -> Self {
        let mut err = Self::new(
            StatusCode::PRECONDITION_REQUIRED,
            "precondition-required",
            "Precondition required",
            "send the version you read, as the body's `version` field or an If-Match header",
        );
        err.errors.push(FieldError {
            field: "version".into(),
            message: "is required".into(),
        });
        err
    }

    /// 503: the store is unreachable or saturated; retry shortly.
    pub fn unavailable(cause: &dyn std::fmt::Display) -> Self {
        tracing::warn!(%cause, "store unavailable");
        let mut err = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
            "the database is unavailable; retry shortly",
        );
        err.retry_after = Some(1);
        err
    }

    /// 500: a bug. The cause is logged with its whole chain (`{:#}`: an
    /// `anyhow::Error` prints every context, down to the root), never sent.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(cause = %format_args!("{cause:#}"), "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal server error",
            "an unexpected error occurred",
        )
    }

    /// Adds an RFC 9457 extension member to the body.
    pub fn extension(&mut self, name: &str, value: serde_json::Value) {
        self.extensions.insert(name.to_owned(), value);
    }

    /// 503 from `/readyz` while the start-up preload runs (bounded by
    /// `recall.preload_timeout_ms`).
    pub fn warming_up() -> Self {
        let mut err = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "warming-up",
            "Warming up",
            "preloading the caches; ready within recall.preload_timeout_ms",
        );
        err.retry_after = Some(1);
        err
    }

    /// 409: a request with the same idempotency key is still running.
    pub fn idempotency_in_progress() -> Self {
        let mut err = Self::new(
            StatusCode::CONFLICT,
            "idempotency-in-progress",
            "Request in progress",
            "a request with this Idempotency-Key is still running; retry shortly",
        );
        err.retry_after = Some(1);
        err
    }

    /// The status, for tests.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The problem's `detail`: what a person is told.
    pub(crate) fn detail(&self) -> &str {
        &self.detail
    }
}

impl ApiError {
    fn body(&self) -> ProblemBody<'_> {
        ProblemBody {
            kind: format!("urn:leadline:problem:{}", self.kind),
            title: self.title,
            status: self.status.as_u16(),
            detail: &self.detail,
            errors: &self.errors,
            extensions: &self.extensions,
        }
    }

    /// The problem document as JSON, for answers that carry several (one
    /// per item of a batch).
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self.body()).unwrap_or_default()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let bytes = serde_json::to_vec(&self.body()).unwrap_or_default();
        let mut response = (self.status, bytes).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.www_authenticate {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<AuthenticateError> for ApiError {
    fn from(err: AuthenticateError) -> Self {
        match err {
            AuthenticateError::InvalidKey => Self::unauthorized(),
            AuthenticateError::Unavailable(u) => Self::unavailable(&u),
            AuthenticateError::Unknown(e) => Self::internal(&e),
        }
    }
}

impl From<GetTenantError> for ApiError {
    fn from(err: GetTenantError) -> Self {
        match err {
            GetTenantError::NotFound(_) => Self::not_found("tenant"),
            GetTenantError::Unavailable(u) => Self::unavailable(&u),
            GetTenantError::Unknown(e) => Self::internal(&e),
        }
    }
}

impl From<CreateAgentError> for ApiError {
    fn from(err: CreateAgentError) -> Self {
        match err {
            CreateAgentError::DuplicateEmail => {
                Self::conflict("email", "an agent with this email already exists")
            }
            CreateAgentError::Unavailable(u) => Self::unavailable(&u),
            CreateAgentError::Unknown(e) => Self::internal(&e),
        }
    }
}

impl From<GetAgentError> for ApiError {
    fn from(err: GetAgentError) -> Self {
        match err {
            GetAgentError::NotFound => Self::not_found("agent"),
            GetAgentError::Unavailable(u) => Self::unavailable(&u),
            GetAgentError::Unknown(e) => Self::internal(&e),
        }
    }
}

impl From<ListAgentsError> for ApiError {
    fn from(err: ListAgentsError) -> Self {
        match err {
            ListAgentsError::Unavailable(u) => Self::unavailable(&u),
            ListAgentsError::Unknown(e) => Self::internal(&e),
        }
    }
}

/// Update errors need to know whether the version came from If-Match
/// (a stale one is 412) or from the body (409).
pub(crate) fn stale(current: i64, from_if_match: bool) -> ApiError {
    if from_if_match {
        ApiError::precondition_failed(current)
    } else {
        ApiError::conflict(
            "version",
            format!("the resource is at version {current}; read it again and retry"),
        )
    }
}

pub(crate) fn update_agent_error(err: UpdateAgentError, from_if_match: bool) -> ApiError {
    match err {
        UpdateAgentError::NotFound => ApiError::not_found("agent"),
        UpdateAgentError::Conflict { current } => stale(current, from_if_match),
        UpdateAgentError::DuplicateEmail => {
            ApiError::conflict("email", "an agent with this email already exists")
        }
        UpdateAgentError::Unavailable(u) => ApiError::unavailable(&u),
        UpdateAgentError::Unknown(e) => ApiError::internal(&e),
    }
}

impl From<CreateLeadError> for ApiError {
    fn from(err: CreateLeadError) -> Self {
        match err {
            CreateLeadError::AgentNotFound => {
                Self::invalid_field("assigned_agent_id", "no such agent")
            }
            CreateLeadError::AgentInactive => Self::invalid_field(
                "assigned_agent_id",
                "the agent is inactive and gets no new leads",
            ),
            CreateLeadError::Unavailable(u) => Self::unavailable(&u),
            CreateLeadError::Unknown(e) => Self::internal(&e),
        }
    }
}

impl From<GetLeadError> for ApiError {
    fn from(err: GetLeadError) -> Self {
        match err {
            GetLeadError::NotFound => Self::not_found("lead"),
            GetLeadError::Unavailable(u) => Self::unavailable(&u),
            GetLeadError::Unknown(e) => Self::internal(&e),
        }
    }
}

impl From<leadline_ports::DeleteLeadError> for ApiError {
    fn from(err: leadline_ports::DeleteLeadError) -> Self {
        use leadline_ports::DeleteLeadError as E;
        match err {
            E::NotFound => Self::not_found("lead"),
            E::OpenApprovals { open } => {
                let mut e = Self::conflict(
                    "approvals",
                    format!(
                        "the lead has {open} open approvals; cancel or send them before deleting it"
                    ),
                );
                e.extension("open_approvals", serde_json::Value::from(open));
                e
            }
            E::Unavailable(u) => Self::unavailable(&u),
            E::Unknown(e) => Self::internal(&e),
        }
    }
}

impl From<leadline_ports::RestoreLeadError> for ApiError {
    fn from(err: leadline_ports::RestoreLeadError) -> Self {
        use leadline_ports::RestoreLeadError as E;
        match err {
            E::NotFound => Self::not_found("deleted lead"),
            E::Unavailable(u) => Self::unavailable(&u),
            E::Unknown(e) => Self::internal(&e),
        }
    }
}

impl From<ListLeadsError> for ApiError {
    fn from(err: ListLeadsError) -> Self {
        match err {
            ListLeadsError::Unavailable(u) => Self::unavailable(&u),
            ListLeadsError::Unknown(e) => Self::internal(&e),
        }
    }
}

pub(crate) fn update_lead_error(err: UpdateLeadError, from_if_match: bool) -> ApiError {
    match err {
        UpdateLeadError::NotFound => ApiError::not_found("lead"),
        UpdateLeadError::Conflict { current } => stale(current, from_if_match),
        UpdateLeadError::InvalidTransition { from, to } => {
            ApiError::conflict("status", format!("a lead cannot move from {from} to {to}"))
        }
        UpdateLeadError::AgentNotFound => {
            ApiError::invalid_field("assigned_agent_id", "no such agent")
        }
        UpdateLeadError::AgentInactive => ApiError::invalid_field(
            "assigned_agent_id",
            "the agent is inactive and gets no new leads",
        ),
        UpdateLeadError::Unavailable(u) => ApiError::unavailable(&u),
        UpdateLeadError::Unknown(e) => ApiError::internal(&e),
    }
}

impl From<leadline_ports::DraftApprovalError> for ApiError {
    fn from(err: leadline_ports::DraftApprovalError) -> Self {
        use leadline_ports::DraftApprovalError as E;
        match err {
            E::LeadNotFound => Self::not_found("lead"),
            E::AgentNotFound => Self::invalid_field("requested_by", "no such agent"),
            E::AgentInactive => {
                Self::invalid_field("requested_by", "the agent is inactive and cannot draft")
            }
            E::Unavailable(u) => Self::unavailable(&u),
            E::Unknown(e) => Self::internal(&e),
        }
    }
}

impl From<leadline_ports::GetApprovalError> for ApiError {
    fn from(err: leadline_ports::GetApprovalError) -> Self {
        use leadline_ports::GetApprovalError as E;
        match err {
            E::NotFound => Self::not_found("approval"),
            E::Unavailable(u) => Self::unavailable(&u),
            E::Unknown(e) => Self::internal(&e),
        }
    }
}

/// A transition error; `actor_field` names the body field holding the agent.
pub(crate) fn transition_error(
    err: leadline_ports::TransitionApprovalError,
    actor_field: &str,
) -> ApiError {
    use leadline_ports::TransitionApprovalError as E;
    match err {
        E::NotFound => ApiError::not_found("approval"),
        E::Conflict { current } => {
            let mut e = ApiError::conflict("status", format!("the approval is {current}"));
            e.extension(
                "current_status",
                serde_json::Value::String(current.as_str().to_owned()),
            );
            e
        }
        E::AgentNotFound => ApiError::invalid_field(actor_field, "no such agent"),
        E::SelfDecision => ApiError::conflict(
            actor_field,
            "separation of duties: the agent who drafted an approval, or edited it last, cannot \
             approve or reject it; another person must (a tenant admin can turn the rule off: \
             PUT /v1/settings/approvals)",
        ),
        E::Edited { current_revision } => revision_conflict(current_revision),
        E::Unavailable(u) => ApiError::unavailable(&u),
        E::Unknown(e) => ApiError::internal(&e),
    }
}

/// 409 for a draft edited past the revision the caller read.
fn revision_conflict(current_revision: i32) -> ApiError {
    let mut e = ApiError::conflict(
        "revision",
        format!("the draft was edited since: it is at revision {current_revision}; read it again"),
    );
    e.extension(
        "current_revision",
        serde_json::Value::from(current_revision),
    );
    e
}

impl From<leadline_ports::EditApprovalError> for ApiError {
    fn from(err: leadline_ports::EditApprovalError) -> Self {
        use leadline_ports::EditApprovalError as E;
        match err {
            E::NotFound => Self::not_found("approval"),
            E::NotPending { current } => {
                let mut e = Self::conflict(
                    "status",
                    format!("the approval is {current}: only a pending draft can be edited"),
                );
                e.extension(
                    "current_status",
                    serde_json::Value::String(current.as_str().to_owned()),
                );
                e
            }
            E::Stale { current_revision } => revision_conflict(current_revision),
            E::AgentNotFound => Self::invalid_field("edited_by", "no such agent"),
            E::AgentInactive => Self::invalid_field("edited_by", "the agent is inactive"),
            E::Unavailable(u) => Self::unavailable(&u),
            E::Unknown(e) => Self::internal(&e),
        }
    }
}

impl From<leadline_ports::ListApprovalsError> for ApiError {
    fn from(err: leadline_ports::ListApprovalsError) -> Self {
        use leadline_ports::ListApprovalsError as E;
        match err {
            E::Unavailable(u) => Self::unavailable(&u),
            E::Unknown(e) => Self::internal(&e),
        }
    }
}

impl From<leadline_app::AppendError> for ApiError {
    fn from(err: leadline_app::AppendError) -> Self {
        use leadline_ports::AppendEventError as E;
        match err {
            leadline_app::AppendError::Rejected(rejected) => {
                let field = rejected.field();
                let message = match rejected {
                    leadline_domain::AppendEventRejected::SystemKind(kind) => format!(
                        "{kind} events are recorded by leadline itself and cannot be appended"
                    ),
                    leadline_domain::AppendEventRejected::Time(e) => e.to_string(),
                };
                Self::invalid_field(field, message)
            }
            leadline_app::AppendError::Store(E::LeadNotFound) => Self::not_found("lead"),
            leadline_app::AppendError::Store(E::PredatesLead { lead_created_at }) => {
                Self::invalid_field(
                    "occurred_at",
                    format!(
                        "must not be before the lead was created ({})",
                        lead_created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                    ),
                )
            }
            leadline_app::AppendError::Store(E::AgentNotFound) => {
                Self::invalid_field("actor", "no such agent")
            }
            leadline_app::AppendError::Store(E::Unavailable(u)) => Self::unavailable(&u),
            leadline_app::AppendError::Store(E::Unknown(e)) => Self::internal(&e),
        }
    }
}

impl From<leadline_ports::TimelineError> for ApiError {
    fn from(err: leadline_ports::TimelineError) -> Self {
        use leadline_ports::TimelineError as E;
        match err {
            E::LeadNotFound => Self::not_found("lead"),
            E::Unavailable(u) => Self::unavailable(&u),
            E::Unknown(e) => Self::internal(&e),
        }
    }
}

impl From<leadline_ports::IdempotencyError> for ApiError {
    fn from(err: leadline_ports::IdempotencyError) -> Self {
        use leadline_ports::IdempotencyError as E;
        match err {
            E::Unavailable(u) => Self::unavailable(&u),
            E::Unknown(e) => Self::internal(&e),
        }
    }
}

impl From<leadline_ports::KeyError> for ApiError {
    fn from(e: leadline_ports::KeyError) -> Self {
        use leadline_domain::KeyRefused;
        use leadline_ports::KeyError;
        match e {
            KeyError::NotFound => Self::not_found("API key"),
            KeyError::Refused(r @ (KeyRefused::Revoked | KeyRefused::AlreadyRotated(_))) => {
                Self::conflict("id", r.to_string())
            }
            KeyError::Refused(r @ KeyRefused::Overlap) => {
                Self::invalid_field("overlap_seconds", r.to_string())
            }
            KeyError::Refused(r @ KeyRefused::ExpiryPassed) => {
                Self::invalid_field("expires_at", r.to_string())
            }
            KeyError::Unavailable(u) => Self::unavailable(&u),
            KeyError::Unknown(e) => Self::internal(&e),
        }
    }
}

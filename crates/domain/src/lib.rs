//! leadline's domain: the types and rules every other crate speaks in.
//!
//! This crate is the centre of the hexagon. It does no I/O and depends on no
//! runtime, database, cache or web framework: values are validated once, at the
//! edge, into the newtypes defined here, and every rule that does not need
//! storage (lead status transitions, version checks) lives beside its type.

pub mod access;
pub mod agent;
pub mod analytics;
pub mod api_key;
pub mod approval;
pub mod audit;
pub mod backup;
pub mod change;
pub mod delivery;
pub mod duplicates;
pub mod erasure;
pub mod event;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod ids;
pub mod import;
pub mod lead;
pub mod page;
pub mod privacy;
pub mod rate;
pub mod retention;
pub mod search;
pub mod tenant;
pub mod time;
pub mod user;
pub mod value;
pub mod webhook;

pub use access::{Access, Caller, Forbidden, Role, Scope, ScopeSet, ScopeSetError, UnknownAccess};
pub use agent::{Agent, AgentRole, CreateAgentRequest, UpdateAgentRequest};
pub use analytics::{
    Activity, AgentFigures, AgentsReport, Cohort, DateRange, EventCount, Funnel, FunnelCounts,
    Interval, Snapshot, StatusEntries,
};
pub use api_key::{
    ApiKey, ApiKeyHash, ApiKeyToken, KeyMaterial, KeyPrefix, KeyRefused, LAST_USED_GRANULARITY,
    MAX_ROTATION_OVERLAP, NewApiKey, ParseApiKeyError,
};
pub use approval::{
    Approval, ApprovalAction, ApprovalQueueQuery, ApprovalStatus, Channel, DraftApprovalRequest,
    EditDraftRequest, IdempotencyKey, MessageBody, RejectionReason, Subject, approval_can_move,
};
pub use audit::{
    Actor, Anchor, AuditContext, AuditEntry, AuditQuery, AuditRecord, BreakKind, ChainBreak,
    ChainState,
};
pub use change::{Change, ChangeFilter, ChangePosition, ChangeType, LoggedChange, StaleContexts};
pub use delivery::{
    AttemptOutcome, CircuitBreaker, Decision, Delivery, DeliveryStatus, OutboundEmail,
    OutboxMessage, Recipient, RetryPolicy, SenderIdentity, SenderRejected, Unsubscribe,
};
pub use duplicates::{DuplicateGroup, DuplicateReason, DuplicatesCursor, DuplicatesQuery};
pub use erasure::{Erasure, ErasureReport};
pub use event::{
    AppendEventRejected, AppendEventRequest, Direction, Event, EventContent, EventKind,
    LeadContext, TimelineCursor, TimelineQuery,
};
pub use ids::{
    AgentId, ApiKeyId, ApprovalId, DeliveryId, EventId, ImportId, LeadId, ParseIdError, TenantId,
    UserId, WebhookId,
};
pub use lead::{
    BulkChange, CreateLeadRequest, Lead, LeadStatus, ListLeadsQuery, Metadata, UpdateLeadRejected,
    UpdateLeadRequest,
};
pub use page::{Page, PageLimit};
pub use privacy::PersonData;
pub use rate::{RateDecision, RateLimit, RateLimitError, RouteClass};
pub use retention::{RetentionAction, RetentionPolicy};
pub use search::{
    MetadataFilter, SearchCursor, SearchField, SearchHit, SearchLeadsQuery, SearchText,
};
pub use tenant::{CreateTenantRequest, Tenant};
pub use user::{
    LOGIN_LINK_LIFETIME, Lockout, LockoutPolicy, MalformedToken, NewUser, Password, PasswordHash,
    PasswordRefused, SESSION_TOUCH, SecretToken, Session, SessionPolicy, StaleUser,
    UpdateUserRequest, User,
};
pub use value::{
    CompanyName, DisplayName, Email, PersonName, Phone, Slug, Source, Tag, Tags, ValueError,
};
pub use webhook::{
    CreateWebhookRequest, DeadLetter, DeliveryHealth, MAX_WEBHOOKS_PER_TENANT, MessageChannels,
    ROTATION_GRACE, UpdateWebhookRequest, Webhook, WebhookMessage, WebhookRefused, WebhookSecret,
    WebhookUrl,
};

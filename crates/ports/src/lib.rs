//! leadline's ports: what the application needs from the outside world,
//! expressed in domain types only.
//!
//! Adapters (the SeaORM store today, caches and the HTTP edge later)
//! implement or drive these traits; the app crate holds them as
//! `Arc<dyn Port>`. No adapter type (`DbErr`, `RedisError`, ORM models)
//! appears in a signature here.
//!
//! Every tenant-scoped method takes the [`TenantId`] as a required argument:
//! a query that forgets its tenant does not compile. The store adds
//! PostgreSQL row-level security behind that as a second wall.
//!
//! Errors: one enum per operation. Business outcomes have named variants;
//! `Unavailable` means the backing service could not be reached (callers
//! answer 503 and may retry); `Unknown` is anything else and is a bug to be
//! logged.
//!
//! [`TenantId`]: leadline_domain::TenantId

mod analytics;
mod audit;
mod cache;
mod changes;
mod context_json;
mod delivery;
mod effects;
mod errors;
mod health;
mod imports;
mod keys;
mod people;
mod privacy;
mod rate;
mod repositories;
mod retention;
mod webhooks;
mod workflow;

#[cfg(feature = "mock")]
pub use analytics::MockAnalyticsRepository;
pub use analytics::{AnalyticsError, AnalyticsRepository};
#[cfg(feature = "mock")]
pub use audit::MockAuditTrail;
pub use audit::{AuditError, AuditTrail, audit_context, audited};
#[cfg(feature = "mock")]
pub use cache::MockContextCache;
pub use cache::{CacheStats, ContextCache, ContextLoader, TierStats};
#[cfg(feature = "mock")]
pub use changes::MockChangeLog;
pub use changes::{ChangeLog, ChangeLogError, ChangeSpan};
pub use context_json::{ContextJson, ContextJsonError};
pub use delivery::{
    AttemptRecord, ClaimedDelivery, DeliveryError, DeliveryRepository, EmailChannel, MessageRoute,
    QueueDepth,
};
#[cfg(feature = "mock")]
pub use delivery::{MockDeliveryRepository, MockEmailChannel};
pub use effects::IdempotentRequest;
pub use errors::*;
#[cfg(feature = "mock")]
pub use health::MockHealthCheck;
pub use health::{HealthCheck, HealthError, PoolStats};
#[cfg(feature = "mock")]
pub use imports::MockImportRepository;
pub use imports::{ImportError, ImportRepository};
#[cfg(feature = "mock")]
pub use keys::MockApiKeyRepository;
pub use keys::{ApiKeyRepository, KeyError, Rotated};
#[cfg(feature = "mock")]
pub use people::{MockSessionStore, MockUserRepository};
pub use people::{PeopleError, RecentFailures, SessionStore, UserRepository};
#[cfg(feature = "mock")]
pub use privacy::MockPrivacyRepository;
pub use privacy::{PrivacyError, PrivacyRepository};
#[cfg(feature = "mock")]
pub use rate::MockRateLimiter;
pub use rate::{RateLimiter, RateLimits, RateSource, RateVerdict};
pub use repositories::{AgentRepository, LeadRepository, TenantRepository};
#[cfg(feature = "mock")]
pub use repositories::{MockAgentRepository, MockLeadRepository, MockTenantRepository};
#[cfg(feature = "mock")]
pub use retention::MockRetentionRepository;
pub use retention::{RetentionBatch, RetentionError, RetentionRepository};
pub use webhooks::{
    ClaimedWebhook, OpenError, SealedSecret, SecretBox, WebhookChannel, WebhookError,
    WebhookProgress, WebhookQueue, WebhookRepository, WebhookTarget,
};
#[cfg(feature = "mock")]
pub use webhooks::{MockSecretBox, MockWebhookChannel, MockWebhookQueue, MockWebhookRepository};
pub use workflow::{
    ApprovalRepository, EventRepository, IdempotencyBegin, IdempotencyStore, LeadContextRepository,
    StoredResponse,
};
#[cfg(feature = "mock")]
pub use workflow::{
    MockApprovalRepository, MockEventRepository, MockIdempotencyStore, MockLeadContextRepository,
};

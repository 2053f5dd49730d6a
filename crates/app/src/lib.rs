//! leadline's application layer: use cases over the ports.
//!
//! Services hold their ports as `Arc<dyn Port>`, so any adapter (or a
//! mockall mock in tests) plugs in without generics spreading through the
//! HTTP state. This crate depends on `domain` and `ports` only: the binary's
//! crate (`crates/cli`, `leadline::compose`) is the composition root that
//! names concrete adapters and calls [`Services::over`].

mod analytics;
mod audit;
mod changes;
mod coherence;
mod deliveries;
mod exports;
mod imports;
mod keys;
mod people;
mod privacy;
mod rate_limits;
mod retention;
mod services;
mod stopping;
mod webhook_relay;
mod webhooks;
mod workflow;

pub use analytics::{AnalyticsService, AnalyticsSettings};
pub use audit::{AuditService, Verdict};
pub use changes::{ChangeFeed, ChangeSettings};
pub use coherence::Coherence;
pub use deliveries::{DeliveryService, MessageWebhooks, Relay, RelaySettings, RoundReport};
pub use exports::{COLUMNS as EXPORT_COLUMNS, ExportError, ExportQuery, ExportService};
pub use imports::{BATCH_ROWS, CsvSource, ImportFailure, ImportOptions, ImportService, Record};
pub use keys::{IssuedKey, KEY_FRESH, KeyService};
pub use people::{InviteError, Invited, PeopleService, SignInError, SignedIn, lockout_ends};
pub use privacy::PrivacyService;
pub use rate_limits::{ClassLimits, LimitSetting, RateLimitService, RateLimitSettings};
pub use retention::{RetentionReport, RetentionService, RetentionSettings};
pub use services::{
    AgentService, BULK_MAX, BulkFailure, BulkOutcome, CreatedTenant, LeadService, Services,
    StorePorts, TenantService,
};
pub use webhook_relay::{IDLE_RECHECK, WebhookRelay, WebhookRoundReport};
pub use webhooks::{WebhookService, WebhookWithSecret};
pub use workflow::{
    AppendError, ApprovalService, ContextService, PreloadReport, RecallSettings, TimelineService,
};

#[cfg(test)]
mod tests;

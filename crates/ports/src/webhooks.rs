//! The webhook ports: the tenant's endpoints (kept with their secrets
//! sealed) and the sealing itself, so that the store never holds a secret
//! in clear and the key that opens them stays with the process.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leadline_domain::{
    AttemptOutcome, ChangePosition, Channel, DeadLetter, Page, PageLimit, TenantId,
    UpdateWebhookRequest, Webhook, WebhookId, WebhookMessage, WebhookRefused, WebhookSecret,
    WebhookUrl,
};

use crate::errors::Unavailable;

/// Failure of a webhook operation; see the crate docs for when each variant
/// is returned.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// No such endpoint in this tenant.
    #[error("webhook not found")]
    NotFound,
    /// The endpoint changed since the caller read it.
    #[error("the webhook is at version {current}")]
    Conflict {
        /// The version now stored.
        current: i64,
    },
    /// The tenant already has the most endpoints it may have.
    #[error("a tenant may have at most {max} webhooks")]
    TooMany {
        /// The limit.
        max: u64,
    },
    /// Another of the tenant's endpoints already carries a channel asked
    /// for (each channel goes to one endpoint).
    #[error("webhook {by} already carries {channel} messages")]
    ChannelTaken {
        /// The channel.
        channel: Channel,
        /// The endpoint that carries it.
        by: WebhookId,
    },
    /// The endpoint would receive nothing: no change feed and no channel.
    #[error("a webhook without the change feed must carry at least one channel")]
    ReceivesNothing,
    /// No sealing key is configured, so no secret can be kept (returned by
    /// the use cases, never by a repository).
    #[error("webhooks are not configured: set webhooks.secret_key")]
    NotConfigured,
    /// The backend could not be reached in time.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    /// Anything else: a bug or an unexpected backend failure.
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

impl From<WebhookRefused> for WebhookError {
    fn from(refused: WebhookRefused) -> Self {
        match refused {
            WebhookRefused::Stale { current } => Self::Conflict { current },
            WebhookRefused::ReceivesNothing => Self::ReceivesNothing,
        }
    }
}

/// A secret as the store keeps it: sealed by a [`SecretBox`].
#[derive(Clone, PartialEq, Eq)]
pub struct SealedSecret(pub Vec<u8>);

impl std::fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedSecret({} bytes)", self.0.len())
    }
}

/// The secret could not be opened: another key sealed it, or it was
/// altered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the sealed secret does not open with the configured key")]
pub struct OpenError;

/// Seals secrets for storage and opens them again (authenticated
/// encryption under a key from the configuration).
#[cfg_attr(feature = "mock", mockall::automock)]
pub trait SecretBox: Send + Sync {
    /// Seals `plaintext`; each call uses a fresh nonce.
    fn seal(&self, plaintext: &[u8]) -> SealedSecret;

    /// Opens what [`SecretBox::seal`] sealed.
    ///
    /// # Errors
    /// [`OpenError`] when the key is not the one it was sealed with, or the
    /// bytes were altered.
    fn open(&self, sealed: &SealedSecret) -> Result<Vec<u8>, OpenError>;
}

/// A tenant's webhook endpoints.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait WebhookRepository: Send + Sync {
    /// Stores a new endpoint with its sealed secret. It receives the
    /// changes committed after it was created.
    ///
    /// # Errors
    /// `TooMany` when the tenant has the most endpoints it may have;
    /// `ChannelTaken` when another endpoint carries one of its channels.
    async fn create(
        &self,
        tenant: TenantId,
        webhook: &Webhook,
        secret: &SealedSecret,
    ) -> Result<Webhook, WebhookError>;

    /// One endpoint.
    ///
    /// # Errors
    /// `NotFound`.
    async fn get(&self, tenant: TenantId, id: WebhookId) -> Result<Webhook, WebhookError>;

    /// The tenant's endpoints, oldest first after `after`.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn list(
        &self,
        tenant: TenantId,
        after: Option<WebhookId>,
        limit: PageLimit,
    ) -> Result<Page<Webhook>, WebhookError>;

    /// Applies `req` ([`Webhook::apply`]). An endpoint whose change feed is
    /// turned on receives the changes committed from then on.
    ///
    /// # Errors
    /// `NotFound`; `Conflict` for a stale version; `ReceivesNothing`;
    /// `ChannelTaken`.
    async fn update(
        &self,
        tenant: TenantId,
        id: WebhookId,
        req: &UpdateWebhookRequest,
    ) -> Result<Webhook, WebhookError>;

    /// Makes `secret` the signing secret; the one it replaces keeps
    /// signing beside it for the grace period ([`Webhook::rotated`]).
    ///
    /// # Errors
    /// `NotFound`.
    async fn rotate(
        &self,
        tenant: TenantId,
        id: WebhookId,
        secret: &SealedSecret,
    ) -> Result<Webhook, WebhookError>;

    /// Removes an endpoint: nothing more is delivered to it.
    ///
    /// # Errors
    /// `NotFound`.
    async fn delete(&self, tenant: TenantId, id: WebhookId) -> Result<(), WebhookError>;
}

/// An endpoint a relay holds for one round of deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedWebhook {
    /// The endpoint.
    pub webhook: Webhook,
    /// The claim: progress is recorded only while it still holds.
    pub lease: uuid::Uuid,
    /// Where its stream stands: every change up to here is done.
    pub after: ChangePosition,
    /// Failed attempts at the change after `after`.
    pub attempts: u32,
    /// The sealed secret it signs with.
    pub secret: SealedSecret,
    /// The sealed previous secret, while it still signs.
    pub previous_secret: Option<SealedSecret>,
}

/// What a round did to an endpoint's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookProgress {
    /// Where the stream now stands.
    pub after: ChangePosition,
    /// Failed attempts at the change after `after` (0 when none failed).
    pub attempts: u32,
    /// When the endpoint is due again.
    pub next_attempt_at: DateTime<Utc>,
    /// The last failure, if the round ended on one.
    pub last_error: Option<String>,
    /// When the round last delivered, if it delivered anything.
    pub delivered_at: Option<DateTime<Utc>>,
    /// Changes given up on in the round.
    pub dead_letters: Vec<DeadLetter>,
    /// Whether the round caught up with the log (a wake-up may take the
    /// endpoint again before `next_attempt_at`); `false` while it backs
    /// off after a failure.
    pub idle: bool,
}

/// Endpoints as a work queue: the relay's side of [`WebhookRepository`].
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait WebhookQueue: Send + Sync {
    /// Up to `limit` tenants with an active endpoint due now, most overdue
    /// first: the one read across tenants (ids only).
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn due_tenants(&self, limit: u32) -> Result<Vec<TenantId>, WebhookError>;

    /// Claims `tenant`'s active endpoints that are due and held by no other
    /// relay (several may claim at once: none gets an endpoint another
    /// holds). Each stays with this claim for `lease`. `woken` (the
    /// tenant's log grew) also claims the idle endpoints waiting for their
    /// next check, but never one backing off after a failure.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn claim(
        &self,
        tenant: TenantId,
        lease: Duration,
        woken: bool,
    ) -> Result<Vec<ClaimedWebhook>, WebhookError>;

    /// Records a round's progress and releases the claim, in one
    /// transaction; `false` (and nothing written) when the claim no longer
    /// holds.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn progress(
        &self,
        claimed: &ClaimedWebhook,
        progress: &WebhookProgress,
    ) -> Result<bool, WebhookError>;

    /// The endpoint's most recent dead letters, newest first.
    ///
    /// # Errors
    /// `NotFound` for an endpoint not of `tenant`.
    async fn dead_letters(
        &self,
        tenant: TenantId,
        webhook: WebhookId,
        limit: PageLimit,
    ) -> Result<Vec<DeadLetter>, WebhookError>;
}

/// Where a message goes and the secrets it is signed with (the current
/// one, and the previous one while it still signs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookTarget {
    /// The URL.
    pub url: WebhookUrl,
    /// The signing secrets.
    pub secrets: Vec<WebhookSecret>,
}

/// The webhook channel: POSTs one signed message and says how that went.
/// It never fails as such: every failure is an [`AttemptOutcome`].
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait WebhookChannel: Send + Sync {
    /// The destination key the circuit breaker counts failures under.
    fn destination(&self, url: &WebhookUrl) -> String;

    /// POSTs `message` to `target`, signed.
    async fn post(&self, target: &WebhookTarget, message: &WebhookMessage) -> AttemptOutcome;
}

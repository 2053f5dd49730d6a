//! The delivery ports: the queue of sent messages a relay drains (claimed
//! across tenants, recorded in each tenant's own context) and the channels
//! that carry a message to its destination (SMTP today).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leadline_domain::{
    AttemptOutcome, Channel, Decision, Delivery, DeliveryId, DeliveryStatus, OutboundEmail,
    OutboxMessage, Page, PageLimit, Recipient, SenderIdentity, TenantId, WebhookId, WebhookUrl,
};

use crate::{errors::Unavailable, webhooks::SealedSecret};

/// Failure of a delivery operation; see the crate docs for when each variant
/// is returned.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// No such delivery in this tenant.
    #[error("delivery not found")]
    NotFound,
    /// The delivery is not in a state the operation applies to (a retry of
    /// a message still pending or already delivered).
    #[error("the delivery is {current}")]
    Conflict {
        /// Where it stands.
        current: DeliveryStatus,
    },
    /// The backend could not be reached in time.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    /// Anything else: a bug or an unexpected backend failure.
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

/// A delivery a relay holds for one attempt, with what it needs to make it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedDelivery {
    /// The delivery, as claimed (`attempts` counts the earlier attempts).
    pub delivery: Delivery,
    /// The claim: recording an outcome succeeds only while it still holds.
    pub lease: uuid::Uuid,
    /// The attempt count when a person last retried the delivery: the retry
    /// policy counts the attempts since.
    pub round_start: u32,
    /// The message.
    pub message: OutboxMessage,
    /// Who it goes to: the lead's name and addresses (none when the lead
    /// was deleted).
    pub recipient: Option<Recipient>,
    /// The tenant's sender identity, when it set one (email).
    pub sender: Option<SenderIdentity>,
    /// The tenant's endpoint for the delivery's channel, when it has one
    /// (every channel but email).
    pub route: Option<MessageRoute>,
}

/// The webhook endpoint that carries a tenant's messages on one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRoute {
    /// The endpoint.
    pub webhook: WebhookId,
    /// Where it is.
    pub url: WebhookUrl,
    /// Whether it is active (a paused endpoint holds its messages back).
    pub active: bool,
    /// Its sealed signing secret.
    pub secret: SealedSecret,
    /// The sealed previous secret, while it still signs.
    pub previous_secret: Option<SealedSecret>,
}

/// What a relay records after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    /// The attempt's number (1-based).
    pub attempt: u32,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// What follows.
    pub decision: Decision,
}

/// Work waiting, across tenants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Pending deliveries (due or waiting for a retry).
    pub pending: u64,
    /// Of those, the ones due now.
    pub due: u64,
    /// How long the longest-waiting due delivery has been due.
    pub oldest_due: Option<Duration>,
}

/// The queue of deliveries.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait DeliveryRepository: Send + Sync {
    /// Claims up to `limit` due deliveries of `channels`, across tenants
    /// (several relays may claim at once: none gets a row another holds).
    /// Each claimed row stays invisible to other claims for `lease`; a relay
    /// that dies holding it leaves it to come due again then.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn claim_due(
        &self,
        channels: &[Channel],
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<ClaimedDelivery>, DeliveryError>;

    /// Records an attempt of a claimed delivery in one transaction: the
    /// attempt row, the delivery's new state, and, for a final decision, the
    /// outcome's timeline event. Returns whether it was recorded: `false`
    /// when the claim no longer holds (its lease ran out and another relay
    /// took the row), in which case nothing is written.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn record(
        &self,
        claimed: &ClaimedDelivery,
        record: &AttemptRecord,
    ) -> Result<bool, DeliveryError>;

    /// Puts a claimed delivery back, due at `at`, without counting an
    /// attempt (its destination's circuit breaker is open). `false` when the
    /// claim no longer holds.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn defer(
        &self,
        claimed: &ClaimedDelivery,
        at: DateTime<Utc>,
    ) -> Result<bool, DeliveryError>;

    /// The queue's depth across tenants, for metrics.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn depth(&self, channels: &[Channel]) -> Result<QueueDepth, DeliveryError>;

    /// One delivery.
    ///
    /// # Errors
    /// `NotFound`.
    async fn get(&self, tenant: TenantId, id: DeliveryId) -> Result<Delivery, DeliveryError>;

    /// A tenant's deliveries, optionally in one status, oldest first after
    /// the `after` cursor.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn list(
        &self,
        tenant: TenantId,
        status: Option<DeliveryStatus>,
        after: Option<DeliveryId>,
        limit: PageLimit,
    ) -> Result<Page<Delivery>, DeliveryError>;

    /// Makes a failed or dead delivery pending again, due now, with its
    /// attempts counted afresh.
    ///
    /// # Errors
    /// `NotFound`; `Conflict` unless it is failed or dead.
    async fn retry(&self, tenant: TenantId, id: DeliveryId) -> Result<Delivery, DeliveryError>;

    /// The tenant's sender identity, if it set one.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn sender(&self, tenant: TenantId) -> Result<Option<SenderIdentity>, DeliveryError>;

    /// Sets the tenant's sender identity.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn set_sender(
        &self,
        tenant: TenantId,
        sender: &SenderIdentity,
    ) -> Result<(), DeliveryError>;
}

/// A channel adapter: carries one message to its destination and says how
/// that went. It never fails as such: every failure is an
/// [`AttemptOutcome`] (transient or permanent) the relay decides on.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait EmailChannel: Send + Sync {
    /// The destination key the circuit breaker counts failures under (the
    /// mail server the adapter relays through).
    fn destination(&self) -> String;

    /// Sends `email`.
    async fn send(&self, email: &OutboundEmail) -> AttemptOutcome;
}

//! The webhook ports: the tenant's endpoints (kept with their secrets
//! sealed) and the sealing itself, so that the store never holds a secret
//! in clear and the key that opens them stays with the process.

use async_trait::async_trait;
use leadline_domain::{Page, PageLimit, TenantId, UpdateWebhookRequest, Webhook, WebhookId};

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
    /// `TooMany` when the tenant has the most endpoints it may have.
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

    /// Applies `req` ([`Webhook::apply`]).
    ///
    /// # Errors
    /// `NotFound`; `Conflict` for a stale version.
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

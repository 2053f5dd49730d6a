//! API keys: looked up on every request (behind the app's verified-key
//! cache) and issued, listed, revoked and rotated by a tenant's admins.

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use leadline_domain::{
    ApiKey, ApiKeyHash, ApiKeyId, KeyMaterial, KeyRefused, NewApiKey, Page, PageLimit, Tenant,
    TenantId,
};

use crate::errors::{AuthenticateError, Unavailable};

/// Failure of an API-key operation; see the crate docs for when each
/// variant is returned.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// No such key in this tenant (or, when issuing, no such tenant).
    #[error("API key not found")]
    NotFound,
    /// A domain rule refused the operation (rotating a revoked key, an
    /// overlap out of bounds).
    #[error(transparent)]
    Refused(#[from] KeyRefused),
    /// The backend could not be reached in time.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    /// Anything else: a bug or an unexpected backend failure.
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

/// A key and the successor that rotation issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    /// The old key, now expiring at the end of the overlap.
    pub old: ApiKey,
    /// The new key.
    pub new: ApiKey,
}

/// The tenant's API keys.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait ApiKeyRepository: Send + Sync {
    /// The tenant and the unrevoked key with this hash. The lookup runs
    /// inside `tenant`'s own context, so a key can only ever resolve to the
    /// tenant it names. Expiry is the caller's to check ([`ApiKey::is_live`]).
    ///
    /// # Errors
    /// [`AuthenticateError::InvalidKey`] when no unrevoked key of `tenant`
    /// has this hash.
    async fn authenticate(
        &self,
        tenant: TenantId,
        hash: ApiKeyHash,
    ) -> Result<(Tenant, ApiKey), AuthenticateError>;

    /// Stores a new key.
    ///
    /// # Errors
    /// [`KeyError::NotFound`] when the tenant does not exist.
    async fn issue(
        &self,
        tenant: TenantId,
        key: &NewApiKey,
        material: &KeyMaterial,
    ) -> Result<ApiKey, KeyError>;

    /// Reads a key.
    ///
    /// # Errors
    /// [`KeyError::NotFound`].
    async fn get(&self, tenant: TenantId, id: ApiKeyId) -> Result<ApiKey, KeyError>;

    /// The tenant's keys, revoked ones included, oldest first.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn list(
        &self,
        tenant: TenantId,
        limit: PageLimit,
        after: Option<ApiKeyId>,
    ) -> Result<Page<ApiKey>, KeyError>;

    /// Revokes a key (a revoked key stays revoked, at its first time).
    ///
    /// # Errors
    /// [`KeyError::NotFound`].
    async fn revoke(&self, tenant: TenantId, id: ApiKeyId) -> Result<ApiKey, KeyError>;

    /// In one transaction: issues `material` as the successor of key `id`
    /// (same name, access and expiry) and lets `id` expire after `overlap`,
    /// as [`ApiKey::rotation_deadline`] decides.
    ///
    /// # Errors
    /// [`KeyError::NotFound`], or [`KeyError::Refused`] for a key that is
    /// no longer live or an overlap out of bounds.
    async fn rotate(
        &self,
        tenant: TenantId,
        id: ApiKeyId,
        overlap: Duration,
        material: &KeyMaterial,
    ) -> Result<Rotated, KeyError>;

    /// Records that the key authenticated a request at `at`.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown` (a missing key is not an error).
    async fn record_use(
        &self,
        tenant: TenantId,
        id: ApiKeyId,
        at: DateTime<Utc>,
    ) -> Result<(), KeyError>;
}

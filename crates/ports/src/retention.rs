//! Retention: per-tenant policies and their application in bounded batches.

use async_trait::async_trait;
use leadline_domain::{LeadId, RetentionPolicy, TenantId};

use crate::Unavailable;

/// Failure of a retention read, change or batch.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    /// The backend could not be reached in time.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    /// Anything else: a bug or an unexpected backend failure.
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

/// What one batch removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionBatch {
    /// Events deleted or archived.
    pub removed: u64,
    /// The leads they were on (whose cached contexts may hold them).
    pub leads: Vec<LeadId>,
}

/// Retention policies and their application.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait RetentionRepository: Send + Sync {
    /// The tenant's policy; `None` keeps every event.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn policy(&self, tenant: TenantId) -> Result<Option<RetentionPolicy>, RetentionError>;

    /// Sets (or, with `None`, removes) the tenant's policy, with an audit
    /// record of the change; returns it as it now is.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn set_policy(
        &self,
        tenant: TenantId,
        policy: Option<RetentionPolicy>,
    ) -> Result<Option<RetentionPolicy>, RetentionError>;

    /// The tenants that have a policy.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn tenants_with_policy(&self) -> Result<Vec<TenantId>, RetentionError>;

    /// Deletes or archives, as the tenant's policy says, at most
    /// `max_rows` of its events past the policy's age, oldest first, in
    /// one transaction that also writes the batch's audit record. Nothing
    /// when the tenant has no policy or nothing is due.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn apply(
        &self,
        tenant: TenantId,
        max_rows: u32,
    ) -> Result<RetentionBatch, RetentionError>;
}

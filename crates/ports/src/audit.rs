//! The audit trail: the store writes a record for every write in the
//! write's own transaction ([`AuditContext`] tells it on whose behalf),
//! seals each tenant's records into a hash chain, and reads them back.
//!
//! [`AuditContext`] is a task-local for the reason
//! [`crate::IdempotentRequest`] is: every write port would otherwise take an
//! argument only this one concern reads.

use async_trait::async_trait;
use leadline_domain::{AuditContext, AuditEntry, AuditQuery, ChangePosition, Page, TenantId};

use crate::Unavailable;

tokio::task_local! {
    static CURRENT: AuditContext;
}

/// Runs `work` on behalf of `context`: the store records it as the actor
/// of every write within.
pub async fn audited<F: Future>(context: AuditContext, work: F) -> F::Output {
    CURRENT.scope(context, work).await
}

/// The context the calling task writes in (leadline itself when none was
/// set).
#[must_use]
pub fn audit_context() -> AuditContext {
    CURRENT.try_with(Clone::clone).unwrap_or_default()
}

/// Failure of an audit-trail operation.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The backend could not be reached in time.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    /// Anything else: a bug or an unexpected backend failure.
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

/// Reading and sealing the trail.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait AuditTrail: Send + Sync {
    /// A page of `tenant`'s records, newest first, filtered as `query`
    /// says.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn list(
        &self,
        tenant: TenantId,
        query: &AuditQuery,
    ) -> Result<Page<AuditEntry>, AuditError>;

    /// Up to `limit` of `tenant`'s records after `after`, in log (chain)
    /// order, sealed or not: what verification walks.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn chain(
        &self,
        tenant: TenantId,
        after: ChangePosition,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, AuditError>;

    /// Seals up to `max_rows` records across tenants, each tenant's in log
    /// order after its last sealed one; returns how many. Records are
    /// sealed once no transaction that could still precede them runs.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn seal(&self, max_rows: u32) -> Result<u64, AuditError>;

    /// Every tenant of the deployment, whether or not its trail has
    /// records: what verifying every trail walks.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn tenants(&self) -> Result<Vec<TenantId>, AuditError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_context_is_seen_inside_and_only_there() {
        assert_eq!(audit_context(), AuditContext::default());
        let context = AuditContext {
            request_id: Some("r-1".into()),
            ..AuditContext::default()
        };
        let seen = audited(context.clone(), async { audit_context() }).await;
        assert_eq!(seen, context);
        assert_eq!(audit_context(), AuditContext::default());
    }
}

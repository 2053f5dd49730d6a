//! Privacy requests: what the store holds about one person.

use async_trait::async_trait;
use leadline_domain::{Email, ErasureReport, PersonData, TenantId};

use crate::Unavailable;

/// Failure of a privacy request.
#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    /// The backend could not be reached in time.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    /// Anything else: a bug or an unexpected backend failure.
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

/// Finding and erasing a person's data.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait PrivacyRepository: Send + Sync {
    /// Everything `tenant` holds about the person with `email`, read in one
    /// transaction, which also writes the export's audit record (so an
    /// export that is not recorded did not happen).
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn export(&self, tenant: TenantId, email: &Email) -> Result<PersonData, PrivacyError>;

    /// Erases the person with `email` from everything `tenant` holds, as
    /// `leadline_domain::erasure` says, in one transaction that also
    /// writes the erasure's tombstone. The caller then drops the leads'
    /// cached contexts. A person the tenant holds nothing about is an
    /// erasure of nothing (still recorded).
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn erase(&self, tenant: TenantId, email: &Email) -> Result<ErasureReport, PrivacyError>;
}

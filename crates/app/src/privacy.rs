//! Privacy requests' use cases: exporting what a tenant holds about a
//! person, and erasing it.

use std::sync::Arc;

use leadline_domain::{Email, ErasureReport, LeadId, PersonData, TenantId};
use leadline_ports::{ContextCache, PrivacyError, PrivacyRepository};

/// Privacy requests.
#[derive(Clone)]
pub struct PrivacyService {
    repo: Arc<dyn PrivacyRepository>,
    cache: Arc<dyn ContextCache>,
}

impl PrivacyService {
    /// The service over `repo`; erased leads leave `cache`'s contexts.
    #[must_use]
    pub fn new(repo: Arc<dyn PrivacyRepository>, cache: Arc<dyn ContextCache>) -> Self {
        Self { repo, cache }
    }

    /// Everything `tenant` holds about the person with `email`, as one
    /// document; the export is itself audited.
    ///
    /// # Errors
    /// The store's failures.
    pub async fn export(
        &self,
        tenant: TenantId,
        email: &Email,
    ) -> Result<PersonData, PrivacyError> {
        self.repo.export(tenant, email).await
    }

    /// Erases the person with `email` from everything `tenant` holds, then
    /// from every instance's cached contexts (in-process and Redis).
    ///
    /// # Errors
    /// The store's failures; nothing was erased then.
    pub async fn erase(
        &self,
        tenant: TenantId,
        email: &Email,
    ) -> Result<ErasureReport, PrivacyError> {
        let report = self.repo.erase(tenant, email).await?;
        for lead in &report.leads {
            self.cache
                .invalidate(tenant, LeadId::from_uuid(*lead))
                .await;
        }
        Ok(report)
    }
}

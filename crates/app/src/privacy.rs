//! Privacy requests' use cases: exporting what a tenant holds about a
//! person.

use std::sync::Arc;

use leadline_domain::{Email, PersonData, TenantId};
use leadline_ports::{PrivacyError, PrivacyRepository};

/// Privacy requests.
#[derive(Clone)]
pub struct PrivacyService {
    repo: Arc<dyn PrivacyRepository>,
}

impl PrivacyService {
    /// The service over `repo`.
    #[must_use]
    pub fn new(repo: Arc<dyn PrivacyRepository>) -> Self {
        Self { repo }
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
}

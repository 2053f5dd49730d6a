//! Repository ports. Each call is one unit of work: an adapter runs it in a
//! single transaction, so a request pays for its tenant context once.

use async_trait::async_trait;
use leadline_domain::{
    Agent, AgentId, CreateAgentRequest, CreateLeadRequest, CreateTenantRequest, DuplicateGroup,
    DuplicatesQuery, Email, KeyMaterial, Lead, LeadId, ListLeadsQuery, NewApiKey, Page, PageLimit,
    SearchHit, SearchLeadsQuery, Slug, Tenant, TenantId, UpdateAgentRequest, UpdateLeadRequest,
};

use crate::errors::{
    CreateAgentError, CreateLeadError, CreateTenantError, DeleteLeadError, GetAgentError,
    GetLeadError, GetTenantError, ListAgentsError, ListLeadsError, RestoreLeadError,
    UpdateAgentError, UpdateLeadError,
};

/// Tenants.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait TenantRepository: Send + Sync {
    /// Creates a tenant with id `id` together with its first API key, in one
    /// transaction: a tenant never exists without a way to reach it.
    ///
    /// # Errors
    /// [`CreateTenantError::DuplicateSlug`] when the slug is taken.
    async fn create(
        &self,
        id: TenantId,
        req: &CreateTenantRequest,
        first_key: &NewApiKey,
        material: &KeyMaterial,
    ) -> Result<Tenant, CreateTenantError>;

    /// Reads a tenant.
    ///
    /// # Errors
    /// [`GetTenantError::NotFound`].
    async fn get(&self, tenant: TenantId) -> Result<Tenant, GetTenantError>;

    /// The tenant with this slug, if there is one (for commands that name a
    /// tenant by its slug).
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn find_by_slug(&self, slug: &Slug) -> Result<Option<Tenant>, GetTenantError>;

    /// Turns separation of duties on or off; returns the tenant as it now is.
    ///
    /// # Errors
    /// [`GetTenantError::NotFound`].
    async fn set_separation_of_duties(
        &self,
        tenant: TenantId,
        on: bool,
    ) -> Result<Tenant, GetTenantError>;
}

/// Agents of a tenant.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait AgentRepository: Send + Sync {
    /// Creates an agent.
    ///
    /// # Errors
    /// [`CreateAgentError::DuplicateEmail`] when the email is taken in this tenant.
    async fn create(
        &self,
        tenant: TenantId,
        req: &CreateAgentRequest,
    ) -> Result<Agent, CreateAgentError>;

    /// Reads an agent.
    ///
    /// # Errors
    /// [`GetAgentError::NotFound`], also for another tenant's agent.
    async fn get(&self, tenant: TenantId, id: AgentId) -> Result<Agent, GetAgentError>;

    /// The agent with this email, if the tenant has one.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn find_by_email(
        &self,
        tenant: TenantId,
        email: &Email,
    ) -> Result<Option<Agent>, GetAgentError>;

    /// Lists agents by id (creation order), keyset-paginated after `after`.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn list(
        &self,
        tenant: TenantId,
        limit: PageLimit,
        after: Option<AgentId>,
    ) -> Result<Page<Agent>, ListAgentsError>;

    /// Applies a partial update if `req.expected_version` is current.
    ///
    /// # Errors
    /// [`UpdateAgentError::NotFound`], [`UpdateAgentError::Conflict`],
    /// [`UpdateAgentError::DuplicateEmail`].
    async fn update(
        &self,
        tenant: TenantId,
        id: AgentId,
        req: &UpdateAgentRequest,
    ) -> Result<Agent, UpdateAgentError>;
}

/// Leads of a tenant.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait LeadRepository: Send + Sync {
    /// Creates a lead.
    ///
    /// # Errors
    /// [`CreateLeadError::AgentNotFound`] when the assigned agent is not in this tenant.
    async fn create(
        &self,
        tenant: TenantId,
        req: &CreateLeadRequest,
    ) -> Result<Lead, CreateLeadError>;

    /// Creates many leads in one transaction: all or none. Returns how many
    /// were written.
    ///
    /// # Errors
    /// [`CreateLeadError::AgentNotFound`] when any assigned agent is not in
    /// this tenant; nothing is written then.
    async fn create_many(
        &self,
        tenant: TenantId,
        reqs: &[CreateLeadRequest],
    ) -> Result<u64, CreateLeadError>;

    /// Reads a lead.
    ///
    /// # Errors
    /// [`GetLeadError::NotFound`], also for another tenant's lead.
    async fn get(&self, tenant: TenantId, id: LeadId) -> Result<Lead, GetLeadError>;

    /// The ids of the leads assigned to `agent`: whose cached contexts show
    /// that agent and must be invalidated when it changes.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn ids_assigned_to(
        &self,
        tenant: TenantId,
        agent: AgentId,
    ) -> Result<Vec<LeadId>, ListLeadsError>;

    /// The live leads whose email is one of `emails` (oldest first).
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn find_by_emails(
        &self,
        tenant: TenantId,
        emails: &[Email],
    ) -> Result<Vec<Lead>, ListLeadsError>;

    /// Groups of live leads that are likely the same person (by email, by
    /// phone, by name at the same company), by reason then key.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn duplicates(
        &self,
        tenant: TenantId,
        query: &DuplicatesQuery,
    ) -> Result<Page<DuplicateGroup>, ListLeadsError>;

    /// How many leads the tenant has.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn count(&self, tenant: TenantId) -> Result<u64, ListLeadsError>;

    /// Lists leads newest first with filters, keyset-paginated.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn list(
        &self,
        tenant: TenantId,
        query: &ListLeadsQuery,
    ) -> Result<Page<Lead>, ListLeadsError>;

    /// Finds leads by free text and filters, best hits first
    /// ([`leadline_domain::search`] defines matching and rank; every
    /// adapter must give the same hits in the same order), keyset-paginated.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn search(
        &self,
        tenant: TenantId,
        query: &SearchLeadsQuery,
    ) -> Result<Page<SearchHit>, ListLeadsError>;

    /// Applies a partial update under the domain's rules
    /// ([`Lead::apply`](leadline_domain::Lead::apply)) if the version is current.
    ///
    /// # Errors
    /// [`UpdateLeadError::NotFound`], [`UpdateLeadError::Conflict`],
    /// [`UpdateLeadError::InvalidTransition`], [`UpdateLeadError::AgentNotFound`].
    async fn update(
        &self,
        tenant: TenantId,
        id: LeadId,
        req: &UpdateLeadRequest,
    ) -> Result<Lead, UpdateLeadError>;

    /// Deletes a lead, restorably: it keeps its row, timeline and approvals
    /// and is hidden from every read (by id, lists, context, timeline) and
    /// refuses new events and drafts until [`Self::restore`].
    ///
    /// # Errors
    /// [`DeleteLeadError::NotFound`] (also when already deleted),
    /// [`DeleteLeadError::OpenApprovals`] while approvals wait on it.
    async fn delete(&self, tenant: TenantId, id: LeadId) -> Result<(), DeleteLeadError>;

    /// Brings a deleted lead back, as it was, at the next version.
    ///
    /// # Errors
    /// [`RestoreLeadError::NotFound`] when no deleted lead has this id.
    async fn restore(&self, tenant: TenantId, id: LeadId) -> Result<Lead, RestoreLeadError>;
}

//! Use cases. Validation already happened at the edge (the domain's value
//! types); what remains here is orchestration: key generation, auth, and
//! later caching and events around the repositories.

use std::sync::Arc;

use leadline_domain::{
    Agent, AgentId, ApiKeyToken, CreateAgentRequest, CreateLeadRequest, CreateTenantRequest, Lead,
    LeadId, ListLeadsQuery, NewApiKey, Page, PageLimit, SearchHit, SearchLeadsQuery, Tenant,
    TenantId, UpdateAgentRequest, UpdateLeadRequest,
};
use leadline_ports::{
    AgentRepository, CreateAgentError, CreateLeadError, CreateTenantError, DeleteLeadError,
    GetAgentError, GetLeadError, GetTenantError, HealthCheck, LeadRepository, ListAgentsError,
    ListLeadsError, RestoreLeadError, TenantRepository, UpdateAgentError, UpdateLeadError,
};

/// Every service, as the driving adapters (HTTP, CLI) use them. Cheap to clone.
#[derive(Clone)]
pub struct Services {
    /// Tenants.
    pub tenants: TenantService,
    /// API keys: authentication and their management.
    pub keys: crate::KeyService,
    /// Rate limits per key and tenant (none until the composition root
    /// plugs them in).
    pub rate_limits: crate::RateLimitService,
    /// Users and their console sessions.
    pub people: crate::PeopleService,
    /// Agents.
    pub agents: AgentService,
    /// Leads.
    pub leads: LeadService,
    /// Approvals.
    pub approvals: crate::ApprovalService,
    /// The timeline.
    pub timeline: crate::TimelineService,
    /// The lead-context read model.
    pub context: crate::ContextService,
    /// CSV imports.
    pub imports: crate::ImportService,
    /// CSV exports.
    pub exports: crate::ExportService,
    /// Deliveries of sent messages, and the tenant's sender.
    pub deliveries: crate::DeliveryService,
    /// The change feed.
    pub changes: crate::ChangeFeed,
    /// The audit trail.
    pub audit: crate::AuditService,
    /// Analytics.
    pub analytics: crate::AnalyticsService,
    /// Privacy requests.
    pub privacy: crate::PrivacyService,
    /// Retention policies and their job.
    pub retention: crate::RetentionService,
    /// Webhook endpoints.
    pub webhooks: crate::WebhookService,
    /// Idempotency keys, for the HTTP adapter's retry safety.
    pub idempotency: Arc<dyn leadline_ports::IdempotencyStore>,
    /// The store's health, for readiness probes.
    pub health: Arc<dyn HealthCheck>,
}

/// Everything a store adapter implements: the ports [`Services::over`] wires.
pub trait StorePorts:
    TenantRepository
    + leadline_ports::ApiKeyRepository
    + leadline_ports::UserRepository
    + leadline_ports::SessionStore
    + AgentRepository
    + LeadRepository
    + leadline_ports::ApprovalRepository
    + leadline_ports::EventRepository
    + leadline_ports::LeadContextRepository
    + leadline_ports::IdempotencyStore
    + leadline_ports::ImportRepository
    + leadline_ports::DeliveryRepository
    + leadline_ports::ChangeLog
    + leadline_ports::AuditTrail
    + leadline_ports::AnalyticsRepository
    + leadline_ports::RetentionRepository
    + leadline_ports::PrivacyRepository
    + leadline_ports::WebhookRepository
    + leadline_ports::WebhookQueue
    + HealthCheck
    + 'static
{
}

impl<S> StorePorts for S where
    S: TenantRepository
        + leadline_ports::ApiKeyRepository
        + leadline_ports::UserRepository
        + leadline_ports::SessionStore
        + AgentRepository
        + LeadRepository
        + leadline_ports::ApprovalRepository
        + leadline_ports::EventRepository
        + leadline_ports::LeadContextRepository
        + leadline_ports::IdempotencyStore
        + leadline_ports::ImportRepository
        + leadline_ports::DeliveryRepository
        + leadline_ports::ChangeLog
        + leadline_ports::AuditTrail
        + leadline_ports::AnalyticsRepository
        + leadline_ports::RetentionRepository
        + leadline_ports::PrivacyRepository
        + leadline_ports::WebhookRepository
        + leadline_ports::WebhookQueue
        + HealthCheck
        + 'static
{
}

impl Services {
    /// Wires every use case over one store adapter (each service sees it
    /// only as the ports it needs) and a context cache. The composition
    /// root, in the binary crate, calls this with the concrete adapters;
    /// tests call it with an in-memory store and a null cache.
    #[must_use]
    pub fn over<S: StorePorts>(
        store: Arc<S>,
        cache: Arc<dyn leadline_ports::ContextCache>,
        recall: crate::RecallSettings,
    ) -> Self {
        Self {
            tenants: TenantService::new(store.clone()),
            keys: crate::KeyService::new(store.clone()),
            rate_limits: crate::RateLimitService::disabled(),
            people: crate::PeopleService::new(
                store.clone(),
                store.clone(),
                store.clone(),
                store.clone(),
            ),
            agents: AgentService::new(store.clone(), store.clone(), cache.clone()),
            leads: LeadService::new(store.clone(), cache.clone()),
            imports: crate::ImportService::new(
                store.clone(),
                store.clone(),
                store.clone(),
                LeadService::new(store.clone(), cache.clone()),
            ),
            exports: crate::ExportService::new(
                LeadService::new(store.clone(), cache.clone()),
                AgentService::new(store.clone(), store.clone(), cache.clone()),
            ),
            deliveries: crate::DeliveryService::new(store.clone()),
            changes: crate::ChangeFeed::new(store.clone(), crate::ChangeSettings::default()),
            audit: crate::AuditService::new(store.clone()),
            analytics: crate::AnalyticsService::new(store.clone()),
            privacy: crate::PrivacyService::new(store.clone(), cache.clone()),
            retention: crate::RetentionService::new(store.clone(), cache.clone()),
            webhooks: crate::WebhookService::new(store.clone(), store.clone()),
            approvals: crate::ApprovalService::new(store.clone(), cache.clone()),
            timeline: crate::TimelineService::new(store.clone(), cache.clone()),
            context: {
                let context = crate::ContextService::new(store.clone(), cache.clone(), recall);
                match cache.needs_change_log() {
                    Some(lifetime) => context.with_coherence(Arc::new(crate::Coherence::new(
                        store.clone(),
                        store.clone(),
                        cache,
                        lifetime,
                    ))),
                    None => context,
                }
            },
            idempotency: store.clone(),
            health: store,
        }
    }
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("backend", &self.health.backend())
            .finish_non_exhaustive()
    }
}

/// Most leads one bulk change touches; the outcome says when more matched.
pub const BULK_MAX: u64 = 10_000;

/// What a bulk change did.
#[derive(Debug, Default)]
pub struct BulkOutcome {
    /// Leads the filter let through (at most [`BULK_MAX`]).
    pub matched: u64,
    /// Leads changed.
    pub changed: u64,
    /// Leads already as asked.
    pub unchanged: u64,
    /// Leads the change could not apply to, with why.
    pub failed: Vec<(LeadId, BulkFailure)>,
    /// More leads matched than one call touches: call again.
    pub truncated: bool,
}

/// Why a bulk change skipped a lead.
#[derive(Debug, thiserror::Error)]
pub enum BulkFailure {
    /// The lead would break a rule (too many tags).
    #[error("tags: {0}")]
    Invalid(leadline_domain::ValueError),
    /// The update was refused (a status move the lifecycle forbids, an
    /// inactive agent, …).
    #[error(transparent)]
    Update(UpdateLeadError),
}

/// A new tenant and its first API key. The key's text is shown to the user
/// once and never stored.
#[derive(Debug)]
pub struct CreatedTenant {
    /// The tenant.
    pub tenant: Tenant,
    /// Its first API key.
    pub api_key: ApiKeyToken,
}

/// Tenants.
#[derive(Clone)]
pub struct TenantService {
    repo: Arc<dyn TenantRepository>,
}

impl TenantService {
    /// Wraps a repository.
    #[must_use]
    pub fn new(repo: Arc<dyn TenantRepository>) -> Self {
        Self { repo }
    }

    /// The tenant with this slug, if any.
    ///
    /// # Errors
    /// See [`TenantRepository::find_by_slug`].
    pub async fn find_by_slug(
        &self,
        slug: &leadline_domain::Slug,
    ) -> Result<Option<Tenant>, leadline_ports::GetTenantError> {
        self.repo.find_by_slug(slug).await
    }

    /// Creates a tenant with a fresh API key.
    ///
    /// # Errors
    /// [`CreateTenantError::DuplicateSlug`] and the store's failures.
    pub async fn create(
        &self,
        req: &CreateTenantRequest,
    ) -> Result<CreatedTenant, CreateTenantError> {
        self.create_with_id(TenantId::new(), req).await
    }

    /// Creates a tenant with a caller-chosen id (seeding derives ids from
    /// slugs so that re-runs find their tenants: under row-level security a
    /// tenant cannot be looked up by slug without its id).
    ///
    /// # Errors
    /// [`CreateTenantError::DuplicateSlug`] (also when the id exists) and
    /// the store's failures.
    pub async fn create_with_id(
        &self,
        id: TenantId,
        req: &CreateTenantRequest,
    ) -> Result<CreatedTenant, CreateTenantError> {
        let api_key = crate::keys::new_token(id);
        let tenant = self
            .repo
            .create(id, req, &NewApiKey::first(), &api_key.material())
            .await?;
        Ok(CreatedTenant { tenant, api_key })
    }

    /// Reads a tenant.
    ///
    /// # Errors
    /// [`GetTenantError::NotFound`] and the store's failures.
    pub async fn get(&self, tenant: TenantId) -> Result<Tenant, GetTenantError> {
        self.repo.get(tenant).await
    }

    /// Turns separation of duties on or off for a tenant.
    ///
    /// # Errors
    /// [`GetTenantError::NotFound`] and the store's failures.
    pub async fn set_separation_of_duties(
        &self,
        tenant: TenantId,
        on: bool,
    ) -> Result<Tenant, GetTenantError> {
        self.repo.set_separation_of_duties(tenant, on).await
    }
}

/// Agents of a tenant.
#[derive(Clone)]
pub struct AgentService {
    repo: Arc<dyn AgentRepository>,
    leads: Arc<dyn LeadRepository>,
    cache: Arc<dyn leadline_ports::ContextCache>,
}

impl AgentService {
    /// Wraps a repository.
    #[must_use]
    pub fn new(
        repo: Arc<dyn AgentRepository>,
        leads: Arc<dyn LeadRepository>,
        cache: Arc<dyn leadline_ports::ContextCache>,
    ) -> Self {
        Self { repo, leads, cache }
    }

    /// Creates an agent.
    ///
    /// # Errors
    /// See [`AgentRepository::create`].
    pub async fn create(
        &self,
        tenant: TenantId,
        req: &CreateAgentRequest,
    ) -> Result<Agent, CreateAgentError> {
        self.repo.create(tenant, req).await
    }

    /// Reads an agent.
    ///
    /// # Errors
    /// See [`AgentRepository::get`].
    pub async fn get(&self, tenant: TenantId, id: AgentId) -> Result<Agent, GetAgentError> {
        self.repo.get(tenant, id).await
    }

    /// Lists agents.
    ///
    /// # Errors
    /// See [`AgentRepository::list`].
    pub async fn list(
        &self,
        tenant: TenantId,
        limit: PageLimit,
        after: Option<AgentId>,
    ) -> Result<Page<Agent>, ListAgentsError> {
        self.repo.list(tenant, limit, after).await
    }

    /// Updates an agent.
    ///
    /// # Errors
    /// See [`AgentRepository::update`].
    pub async fn update(
        &self,
        tenant: TenantId,
        id: AgentId,
        req: &UpdateAgentRequest,
    ) -> Result<Agent, UpdateAgentError> {
        let agent = self.repo.update(tenant, id, req).await?;
        // Every context of a lead assigned to this agent shows the agent.
        // Agent edits are rare; listing the ids is one indexed query.
        match self.leads.ids_assigned_to(tenant, id).await {
            Ok(leads) => {
                for lead in leads {
                    self.cache.invalidate(tenant, lead).await;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "agent updated but its leads' contexts could not be listed; they expire with their TTL")
            }
        }
        Ok(agent)
    }
}

/// Leads of a tenant.
#[derive(Clone)]
pub struct LeadService {
    repo: Arc<dyn LeadRepository>,
    cache: Arc<dyn leadline_ports::ContextCache>,
}

impl LeadService {
    /// Wraps a repository.
    #[must_use]
    pub fn new(
        repo: Arc<dyn LeadRepository>,
        cache: Arc<dyn leadline_ports::ContextCache>,
    ) -> Self {
        Self { repo, cache }
    }

    /// Creates a lead.
    ///
    /// # Errors
    /// See [`LeadRepository::create`].
    pub async fn create(
        &self,
        tenant: TenantId,
        req: &CreateLeadRequest,
    ) -> Result<Lead, CreateLeadError> {
        self.repo.create(tenant, req).await
    }

    /// Creates many leads atomically.
    ///
    /// # Errors
    /// See [`LeadRepository::create_many`].
    pub async fn create_many(
        &self,
        tenant: TenantId,
        reqs: &[CreateLeadRequest],
    ) -> Result<u64, CreateLeadError> {
        self.repo.create_many(tenant, reqs).await
    }

    /// Reads a lead.
    ///
    /// # Errors
    /// See [`LeadRepository::get`].
    pub async fn get(&self, tenant: TenantId, id: LeadId) -> Result<Lead, GetLeadError> {
        self.repo.get(tenant, id).await
    }

    /// How many leads the tenant has.
    ///
    /// # Errors
    /// See [`LeadRepository::count`].
    pub async fn count(&self, tenant: TenantId) -> Result<u64, ListLeadsError> {
        self.repo.count(tenant).await
    }

    /// Lists leads.
    ///
    /// # Errors
    /// See [`LeadRepository::list`].
    pub async fn list(
        &self,
        tenant: TenantId,
        query: &ListLeadsQuery,
    ) -> Result<Page<Lead>, ListLeadsError> {
        self.repo.list(tenant, query).await
    }

    /// Applies `change` to every lead `filter` lets through (its `limit` and
    /// `after` are ignored), at most [`BULK_MAX`] of them, each under the
    /// lead's own rules and version (a lead that changed meanwhile is read
    /// again once), invalidating each changed lead's cached context.
    ///
    /// # Errors
    /// Reading the leads failed; per-lead failures are in the outcome.
    pub async fn bulk(
        &self,
        tenant: TenantId,
        filter: &ListLeadsQuery,
        change: &leadline_domain::BulkChange,
    ) -> Result<BulkOutcome, ListLeadsError> {
        let mut outcome = BulkOutcome::default();
        let mut query = filter.clone();
        query.limit = PageLimit::new(200).unwrap_or(PageLimit::DEFAULT);
        query.after = None;
        loop {
            let page = self.repo.list(tenant, &query).await?;
            for lead in &page.items {
                if outcome.matched >= BULK_MAX {
                    outcome.truncated = true;
                    return Ok(outcome);
                }
                outcome.matched += 1;
                match self.apply(tenant, lead, change).await {
                    Ok(true) => outcome.changed += 1,
                    Ok(false) => outcome.unchanged += 1,
                    Err(e) => outcome.failed.push((lead.id, e)),
                }
            }
            match page.items.last() {
                Some(last) if page.has_more => query.after = Some(last.id),
                _ => return Ok(outcome),
            }
        }
    }

    /// One lead of a bulk change: whether it changed.
    async fn apply(
        &self,
        tenant: TenantId,
        lead: &Lead,
        change: &leadline_domain::BulkChange,
    ) -> Result<bool, BulkFailure> {
        let mut current = lead.clone();
        for attempt in 0..2 {
            let Some(req) = change.update_for(&current).map_err(BulkFailure::Invalid)? else {
                return Ok(false);
            };
            match self.update(tenant, current.id, &req).await {
                Ok(_) => return Ok(true),
                Err(UpdateLeadError::Conflict { .. }) if attempt == 0 => {
                    current = match self.repo.get(tenant, current.id).await {
                        Ok(lead) => lead,
                        Err(_) => return Err(BulkFailure::Update(UpdateLeadError::NotFound)),
                    };
                }
                Err(e) => return Err(BulkFailure::Update(e)),
            }
        }
        Err(BulkFailure::Update(UpdateLeadError::Conflict {
            current: current.version,
        }))
    }

    /// Groups of likely duplicate leads.
    ///
    /// # Errors
    /// See [`LeadRepository::duplicates`].
    pub async fn duplicates(
        &self,
        tenant: TenantId,
        query: &leadline_domain::DuplicatesQuery,
    ) -> Result<Page<leadline_domain::DuplicateGroup>, ListLeadsError> {
        self.repo.duplicates(tenant, query).await
    }

    /// Searches leads.
    ///
    /// # Errors
    /// See [`LeadRepository::search`].
    pub async fn search(
        &self,
        tenant: TenantId,
        query: &SearchLeadsQuery,
    ) -> Result<Page<SearchHit>, ListLeadsError> {
        self.repo.search(tenant, query).await
    }

    /// Updates a lead.
    ///
    /// # Errors
    /// See [`LeadRepository::update`].
    pub async fn update(
        &self,
        tenant: TenantId,
        id: LeadId,
        req: &UpdateLeadRequest,
    ) -> Result<Lead, UpdateLeadError> {
        let lead = self.repo.update(tenant, id, req).await?;
        self.cache.invalidate(tenant, id).await;
        Ok(lead)
    }

    /// Drops the cached context of a lead written outside this service (an
    /// import's timeline event), on every instance.
    pub async fn invalidate(&self, tenant: TenantId, id: LeadId) {
        self.cache.invalidate(tenant, id).await;
    }

    /// Deletes a lead, restorably, and drops its cached context everywhere.
    ///
    /// # Errors
    /// See [`LeadRepository::delete`].
    pub async fn delete(&self, tenant: TenantId, id: LeadId) -> Result<(), DeleteLeadError> {
        self.repo.delete(tenant, id).await?;
        self.cache.invalidate(tenant, id).await;
        Ok(())
    }

    /// Restores a deleted lead.
    ///
    /// # Errors
    /// See [`LeadRepository::restore`].
    pub async fn restore(&self, tenant: TenantId, id: LeadId) -> Result<Lead, RestoreLeadError> {
        let lead = self.repo.restore(tenant, id).await?;
        self.cache.invalidate(tenant, id).await;
        Ok(lead)
    }
}

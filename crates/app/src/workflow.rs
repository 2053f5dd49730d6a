//! Outreach use cases: approvals, the timeline, and the lead context.

use std::sync::Arc;

use leadline_domain::{
    AppendEventRejected, AppendEventRequest, Approval, ApprovalAction, ApprovalId,
    ApprovalQueueQuery, DraftApprovalRequest, Event, LeadId, Page, TenantId, TimelineQuery,
};
use leadline_ports::{
    AppendEventError, ApprovalRepository, CacheStats, ContextCache, ContextJson, ContextLoader,
    DraftApprovalError, EventRepository, GetApprovalError, GetLeadError, HealthError,
    LeadContextRepository, ListApprovalsError, ListLeadsError, TimelineError,
    TransitionApprovalError,
};
use serde::Deserialize;

/// Settings of the lead-context read model.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecallSettings {
    /// How many of the latest events a context carries.
    pub events: u16,
    /// Warm the caches at start with the contexts the fleet used most recently.
    pub preload_on_start: bool,
    /// The most contexts one preload loads.
    pub preload_max: u16,
    /// How long a preload may take; at start, readiness waits at most this long.
    pub preload_timeout_ms: u64,
    /// Contexts loaded at once while preloading (each holds a connection).
    pub preload_concurrency: u16,
}

impl Default for RecallSettings {
    fn default() -> Self {
        Self {
            events: 20,
            preload_on_start: true,
            preload_max: 1000,
            preload_timeout_ms: 5_000,
            preload_concurrency: 4,
        }
    }
}

impl RecallSettings {
    /// Lists every invalid value by its key.
    #[must_use]
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if !(1..=200).contains(&self.events) {
            problems.push(("recall.events", "must be between 1 and 200".to_owned()));
        }
        if self.preload_concurrency == 0 {
            problems.push((
                "recall.preload_concurrency",
                "must be at least 1".to_owned(),
            ));
        }
        if self.preload_timeout_ms == 0 {
            problems.push(("recall.preload_timeout_ms", "must be at least 1".to_owned()));
        }
        problems
    }
}

/// What a preload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct PreloadReport {
    /// Contexts asked for.
    pub requested: usize,
    /// Contexts now cached.
    pub loaded: usize,
    /// Contexts that could not be loaded (gone, or the store failed).
    pub failed: usize,
    /// Whether the deadline cut the preload short.
    pub timed_out: bool,
    /// How long it took, in milliseconds.
    pub elapsed_ms: u64,
}

/// Approvals: draft, decide, send exactly once.
#[derive(Clone)]
pub struct ApprovalService {
    repo: Arc<dyn ApprovalRepository>,
    cache: Arc<dyn ContextCache>,
}

impl ApprovalService {
    /// Wraps a repository.
    #[must_use]
    pub fn new(repo: Arc<dyn ApprovalRepository>, cache: Arc<dyn ContextCache>) -> Self {
        Self { repo, cache }
    }

    /// Drafts an approval for a lead.
    ///
    /// # Errors
    /// See [`ApprovalRepository::draft`].
    pub async fn draft(
        &self,
        tenant: TenantId,
        lead: LeadId,
        req: &DraftApprovalRequest,
    ) -> Result<Approval, DraftApprovalError> {
        let approval = self.repo.draft(tenant, lead, req).await?;
        // The lead's open approvals changed: its cached context is stale.
        self.cache.invalidate(tenant, lead).await;
        Ok(approval)
    }

    /// Reads an approval.
    ///
    /// # Errors
    /// See [`ApprovalRepository::get`].
    pub async fn get(
        &self,
        tenant: TenantId,
        id: ApprovalId,
    ) -> Result<Approval, GetApprovalError> {
        self.repo.get(tenant, id).await
    }

    /// Approves, rejects, sends or cancels, exactly once.
    ///
    /// # Errors
    /// See [`ApprovalRepository::transition`].
    pub async fn act(
        &self,
        tenant: TenantId,
        id: ApprovalId,
        action: &ApprovalAction,
    ) -> Result<Approval, TransitionApprovalError> {
        self.act_at(tenant, id, action, None).await
    }

    /// The same, on the draft at `revision` only (when given): what a
    /// person decides is the text they read.
    ///
    /// # Errors
    /// See [`ApprovalRepository::transition`].
    pub async fn act_at(
        &self,
        tenant: TenantId,
        id: ApprovalId,
        action: &ApprovalAction,
        revision: Option<i32>,
    ) -> Result<Approval, TransitionApprovalError> {
        let approval = self.repo.transition(tenant, id, action, revision).await?;
        self.cache.invalidate(tenant, approval.lead_id).await;
        Ok(approval)
    }

    /// Replaces a pending draft's text.
    ///
    /// # Errors
    /// See [`ApprovalRepository::edit`].
    pub async fn edit(
        &self,
        tenant: TenantId,
        id: ApprovalId,
        req: &leadline_domain::EditDraftRequest,
    ) -> Result<Approval, leadline_ports::EditApprovalError> {
        let approval = self.repo.edit(tenant, id, req).await?;
        // The lead's context shows its open approvals' texts.
        self.cache.invalidate(tenant, approval.lead_id).await;
        Ok(approval)
    }

    /// The queue.
    ///
    /// # Errors
    /// See [`ApprovalRepository::list`].
    pub async fn queue(
        &self,
        tenant: TenantId,
        query: &ApprovalQueueQuery,
    ) -> Result<Page<Approval>, ListApprovalsError> {
        self.repo.list(tenant, query).await
    }
}

/// Why an event could not be appended.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The event breaks a rule for client-logged events (a system kind, a
    /// time in the future or out of range).
    #[error(transparent)]
    Rejected(#[from] AppendEventRejected),
    /// The store refused.
    #[error(transparent)]
    Store(#[from] AppendEventError),
}

/// The timeline.
#[derive(Clone)]
pub struct TimelineService {
    repo: Arc<dyn EventRepository>,
    cache: Arc<dyn ContextCache>,
}

impl TimelineService {
    /// Wraps a repository.
    #[must_use]
    pub fn new(repo: Arc<dyn EventRepository>, cache: Arc<dyn ContextCache>) -> Self {
        Self { repo, cache }
    }

    /// Appends an event a client logged, by the rules of
    /// [`AppendEventRequest::check_from_client`].
    ///
    /// # Errors
    /// [`AppendError`].
    pub async fn append(
        &self,
        tenant: TenantId,
        lead: LeadId,
        req: &AppendEventRequest,
    ) -> Result<Event, AppendError> {
        req.check_from_client(chrono::Utc::now())?;
        let event = self.repo.append(tenant, lead, req).await?;
        self.cache.invalidate(tenant, lead).await;
        Ok(event)
    }

    /// A page of a lead's timeline.
    ///
    /// # Errors
    /// See [`EventRepository::timeline`].
    pub async fn timeline(
        &self,
        tenant: TenantId,
        lead: LeadId,
        query: &TimelineQuery,
    ) -> Result<Page<Event>, TimelineError> {
        self.repo.timeline(tenant, lead, query).await
    }
}

/// The memory-recall read: everything about a lead in one call.
#[derive(Clone)]
pub struct ContextService {
    repo: Arc<dyn LeadContextRepository>,
    cache: Arc<dyn ContextCache>,
    settings: RecallSettings,
    /// Present when the cache needs the change log to stay coherent.
    coherence: Option<Arc<crate::Coherence>>,
}

impl ContextService {
    /// Wraps a repository.
    #[must_use]
    pub fn new(
        repo: Arc<dyn LeadContextRepository>,
        cache: Arc<dyn ContextCache>,
        settings: RecallSettings,
    ) -> Self {
        Self {
            repo,
            cache,
            settings,
            coherence: None,
        }
    }

    /// The same service, its loads tracked by `coherence` (whose follower
    /// then keeps the cache coherent with other processes' writes).
    #[must_use]
    pub fn with_coherence(self, coherence: Arc<crate::Coherence>) -> Self {
        Self {
            coherence: Some(coherence),
            ..self
        }
    }

    /// The follower keeping this service's cache coherent, when it needs
    /// one: the composition root runs it.
    #[must_use]
    pub fn coherence(&self) -> Option<Arc<crate::Coherence>> {
        self.coherence.clone()
    }

    /// A lead's context, through the cache, as the JSON document the cache
    /// keeps ([`ContextJson::parse`] gives the values).
    ///
    /// # Errors
    /// See [`LeadContextRepository::context`]; with the store unavailable a
    /// recent enough cached copy is served instead of `Unavailable`.
    pub async fn context(
        &self,
        tenant: TenantId,
        lead: LeadId,
    ) -> Result<ContextJson, GetLeadError> {
        let repo = self.repo.clone();
        let events = self.settings.events;
        let coherence = self.coherence.clone();
        let load: ContextLoader = Box::new(move || {
            Box::pin(async move {
                if let Some(coherence) = coherence {
                    coherence.before_load(tenant).await?;
                }
                repo.context(tenant, lead, events).await
            })
        });
        self.cache.get_or_load(tenant, lead, load).await
    }

    /// Warms the cache with `keys`, `recall.preload_concurrency` at a
    /// time, stopping at `recall.preload_timeout_ms`. Each context is loaded
    /// in its own tenant's transaction.
    pub async fn preload(&self, keys: Vec<(TenantId, LeadId)>) -> PreloadReport {
        use futures::StreamExt;
        let started = std::time::Instant::now();
        let requested = keys.len();
        let (mut loaded, mut failed) = (0, 0);
        let mut loads = futures::stream::iter(keys)
            .map(|(tenant, lead)| async move { self.context(tenant, lead).await.is_ok() })
            .buffer_unordered(usize::from(self.settings.preload_concurrency.max(1)));
        let deadline = tokio::time::sleep(std::time::Duration::from_millis(
            self.settings.preload_timeout_ms,
        ));
        tokio::pin!(deadline);
        let timed_out = loop {
            tokio::select! {
                next = loads.next() => match next {
                    Some(true) => loaded += 1,
                    Some(false) => failed += 1,
                    None => break false,
                },
                () = &mut deadline => break true,
            }
        };
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        PreloadReport {
            requested,
            loaded,
            failed,
            timed_out,
            elapsed_ms,
        }
    }

    /// Warms the contexts the whole fleet loaded most recently (from the
    /// shared tier); what a starting instance does.
    pub async fn preload_fleet(&self) -> PreloadReport {
        let keys = self
            .cache
            .hot_keys(usize::from(self.settings.preload_max))
            .await;
        self.preload(keys).await
    }

    /// Warms up to `limit` of `tenant`'s most recently active leads (capped
    /// at `recall.preload_max`).
    ///
    /// # Errors
    /// When the store cannot list the tenant's active leads.
    pub async fn preload_tenant(
        &self,
        tenant: TenantId,
        limit: u16,
    ) -> Result<PreloadReport, ListLeadsError> {
        let leads = self
            .repo
            .recently_active(tenant, limit.min(self.settings.preload_max))
            .await?;
        Ok(self
            .preload(leads.into_iter().map(|lead| (tenant, lead)).collect())
            .await)
    }

    /// The cache's counters.
    #[must_use]
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Round-trips the cache's shared tier; `None` when it has none.
    pub async fn ping_shared_cache(&self) -> Option<Result<std::time::Duration, HealthError>> {
        self.cache.ping_shared().await
    }
}

//! Outreach use cases: approvals, the timeline, and the lead context.

use std::sync::Arc;

use leadline_domain::{
    AppendEventRequest, Approval, ApprovalAction, ApprovalId, ApprovalQueueQuery,
    DraftApprovalRequest, Event, LeadContext, LeadId, Page, TenantId, TimelineQuery, ValueError,
};
use leadline_ports::{
    AppendEventError, ApprovalRepository, DraftApprovalError, EventRepository, GetApprovalError,
    GetLeadError, LeadContextRepository, ListApprovalsError, TimelineError,
    TransitionApprovalError,
};
use serde::Deserialize;

/// Settings of the lead-context read model.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecallSettings {
    /// How many of the latest events a context carries.
    pub events: u16,
}

impl Default for RecallSettings {
    fn default() -> Self {
        Self { events: 20 }
    }
}

impl RecallSettings {
    /// Lists every invalid value by its key.
    #[must_use]
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        if (1..=200).contains(&self.events) {
            Vec::new()
        } else {
            vec![("recall.events", "must be between 1 and 200".to_owned())]
        }
    }
}

/// Approvals: draft, decide, send exactly once.
#[derive(Clone)]
pub struct ApprovalService {
    repo: Arc<dyn ApprovalRepository>,
}

impl ApprovalService {
    /// Wraps a repository.
    #[must_use]
    pub fn new(repo: Arc<dyn ApprovalRepository>) -> Self {
        Self { repo }
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
        self.repo.draft(tenant, lead, req).await
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
        self.repo.transition(tenant, id, action).await
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
    /// `occurred_at` is in the future.
    #[error("occurred_at: {0}")]
    InvalidTime(ValueError),
    /// The store refused.
    #[error(transparent)]
    Store(#[from] AppendEventError),
}

/// The timeline.
#[derive(Clone)]
pub struct TimelineService {
    repo: Arc<dyn EventRepository>,
}

impl TimelineService {
    /// Wraps a repository.
    #[must_use]
    pub fn new(repo: Arc<dyn EventRepository>) -> Self {
        Self { repo }
    }

    /// Appends an event, refusing ones dated in the future.
    ///
    /// # Errors
    /// [`AppendError`].
    pub async fn append(
        &self,
        tenant: TenantId,
        lead: LeadId,
        req: &AppendEventRequest,
    ) -> Result<Event, AppendError> {
        req.check_time(chrono::Utc::now())
            .map_err(AppendError::InvalidTime)?;
        Ok(self.repo.append(tenant, lead, req).await?)
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
    settings: RecallSettings,
}

impl ContextService {
    /// Wraps a repository.
    #[must_use]
    pub fn new(repo: Arc<dyn LeadContextRepository>, settings: RecallSettings) -> Self {
        Self { repo, settings }
    }

    /// A lead's context.
    ///
    /// # Errors
    /// See [`LeadContextRepository::context`].
    pub async fn context(
        &self,
        tenant: TenantId,
        lead: LeadId,
    ) -> Result<LeadContext, GetLeadError> {
        self.repo.context(tenant, lead, self.settings.events).await
    }
}

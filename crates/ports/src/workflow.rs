//! Outreach workflow ports: approvals, the timeline, the lead context, and
//! idempotent retries.

use async_trait::async_trait;
use leadline_domain::{
    AppendEventRequest, Approval, ApprovalAction, ApprovalId, ApprovalQueueQuery,
    DraftApprovalRequest, EditDraftRequest, Event, IdempotencyKey, LeadContext, LeadId, Page,
    TenantId, TimelineQuery,
};

use crate::errors::{
    AppendEventError, DraftApprovalError, EditApprovalError, GetApprovalError, GetLeadError,
    IdempotencyError, ListApprovalsError, TimelineError, TransitionApprovalError,
};

/// Approvals of a tenant.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait ApprovalRepository: Send + Sync {
    /// Drafts an approval (status `pending`) for a lead.
    ///
    /// # Errors
    /// [`DraftApprovalError::LeadNotFound`], [`DraftApprovalError::AgentNotFound`].
    async fn draft(
        &self,
        tenant: TenantId,
        lead: LeadId,
        req: &DraftApprovalRequest,
    ) -> Result<Approval, DraftApprovalError>;

    /// Reads an approval.
    ///
    /// # Errors
    /// [`GetApprovalError::NotFound`], also for another tenant's approval.
    async fn get(&self, tenant: TenantId, id: ApprovalId) -> Result<Approval, GetApprovalError>;

    /// Applies `action` exactly once: a conditional update from the action's
    /// starting status, never read-then-write, so of any number of
    /// concurrent callers exactly one succeeds. In the same transaction it
    /// appends the timeline event (approve, reject, cancel: an
    /// `approval_decided` event; send: the channel's outbound event) and, on
    /// send, writes the outbox row a delivery relay picks up.
    ///
    /// With `at_revision`, the action applies only to the draft at that
    /// revision (the text the actor read), in the same conditional update.
    ///
    /// # Errors
    /// [`TransitionApprovalError::Conflict`] carrying the current status for
    /// every loser and every move the lifecycle does not have;
    /// [`TransitionApprovalError::Edited`] when the status allows the move
    /// but the draft is past `at_revision`;
    /// [`TransitionApprovalError::SelfDecision`];
    /// [`TransitionApprovalError::NotFound`];
    /// [`TransitionApprovalError::AgentNotFound`].
    async fn transition(
        &self,
        tenant: TenantId,
        id: ApprovalId,
        action: &ApprovalAction,
        at_revision: Option<i32>,
    ) -> Result<Approval, TransitionApprovalError>;

    /// Replaces a pending draft's text, if it is still pending and at
    /// `req.revision`: a conditional update, so of concurrent edits and
    /// decisions exactly one wins. The revision goes up by one and the
    /// editor is recorded; a change `approval.edited` is logged in the same
    /// transaction. Editing is not a touch of the lead: no timeline event.
    ///
    /// # Errors
    /// [`EditApprovalError::NotPending`] once decided (with the status);
    /// [`EditApprovalError::Stale`] when it was edited since `req.revision`
    /// (with the current revision); [`EditApprovalError::NotFound`];
    /// [`EditApprovalError::AgentNotFound`] for an editor not in the tenant.
    async fn edit(
        &self,
        tenant: TenantId,
        id: ApprovalId,
        req: &EditDraftRequest,
    ) -> Result<Approval, EditApprovalError>;

    /// Lists approvals by status, oldest first, keyset-paginated.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn list(
        &self,
        tenant: TenantId,
        query: &ApprovalQueueQuery,
    ) -> Result<Page<Approval>, ListApprovalsError>;
}

/// The append-only timeline of a tenant's leads.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait EventRepository: Send + Sync {
    /// Appends an event.
    ///
    /// # Errors
    /// [`AppendEventError::LeadNotFound`], [`AppendEventError::AgentNotFound`].
    async fn append(
        &self,
        tenant: TenantId,
        lead: LeadId,
        req: &AppendEventRequest,
    ) -> Result<Event, AppendEventError>;

    /// A lead's events, newest first by `(occurred_at, id)`.
    ///
    /// # Errors
    /// [`TimelineError::LeadNotFound`].
    async fn timeline(
        &self,
        tenant: TenantId,
        lead: LeadId,
        query: &TimelineQuery,
    ) -> Result<Page<Event>, TimelineError>;
}

/// The lead-context read model.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait LeadContextRepository: Send + Sync {
    /// The lead, its agent, its open and recent approvals and its latest
    /// `events` events, read in one transaction with a fixed number of
    /// queries whatever the lead holds.
    ///
    /// # Errors
    /// [`GetLeadError::NotFound`].
    async fn context(
        &self,
        tenant: TenantId,
        lead: LeadId,
        events: u16,
    ) -> Result<LeadContext, GetLeadError>;

    /// Up to `limit` leads of `tenant` with the newest events, most recent
    /// first: what to warm when a tenant asks for its caches to be preloaded.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn recently_active(
        &self,
        tenant: TenantId,
        limit: u16,
    ) -> Result<Vec<LeadId>, crate::errors::ListLeadsError>;
}

/// A response kept for replay under its idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// HTTP status.
    pub status: u16,
    /// `Location` header, if any.
    pub location: Option<String>,
    /// Body bytes (JSON).
    pub body: Vec<u8>,
}

/// What [`IdempotencyStore::begin`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyBegin {
    /// First use of the key: the caller runs the request, then completes or abandons.
    Started,
    /// The key finished before with the same request: replay this.
    Replay(StoredResponse),
    /// The key was used with a different request.
    Mismatch,
    /// The same key is running right now.
    InProgress,
    /// An earlier run with this key committed its effect (the id of the
    /// entity it wrote) but its response was never stored: the reply to its
    /// COMMIT was lost. Run the request again inside an
    /// [`crate::IdempotentRequest`] whose `recover` names the effect; the
    /// store answers with the effect as it stands and writes nothing.
    Recover(uuid::Uuid),
}

/// Idempotency keys per tenant.
///
/// The protocol is reserve → run → complete (or abandon on failure). The
/// run records its effect on the key in the same transaction as the effect
/// ([`crate::IdempotentRequest`]), so a key whose effect committed is never
/// released or taken over, whatever happened to the response: a retry
/// recovers it ([`IdempotencyBegin::Recover`]). A reservation with no effect
/// left behind by a crashed process expires after a short lease and the key
/// can then be taken again: nothing was written, so nothing runs twice.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Reserves `key` for a request whose canonical form hashes to `request_hash`.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn begin(
        &self,
        tenant: TenantId,
        key: &IdempotencyKey,
        request_hash: [u8; 32],
    ) -> Result<IdempotencyBegin, IdempotencyError>;

    /// Stores the response for replay.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn complete(
        &self,
        tenant: TenantId,
        key: &IdempotencyKey,
        response: &StoredResponse,
    ) -> Result<(), IdempotencyError>;

    /// Releases the reservation so a retry runs the request afresh, unless
    /// the run recorded a committed effect (then the key is kept, and a
    /// retry recovers the effect).
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn abandon(&self, tenant: TenantId, key: &IdempotencyKey)
    -> Result<(), IdempotencyError>;
}

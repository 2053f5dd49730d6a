//! One error enum per port operation.
//!
//! Adapters must return:
//! - the named business variant when the outcome is a business fact
//!   (a missing row, a unique-key clash, a stale version);
//! - `Unavailable` when the backend could not be reached or a connection
//!   could not be had in time (the caller may retry later);
//! - `Unknown` for everything else, with the cause attached.

use leadline_domain::{LeadStatus, TenantId};

/// The backend was unreachable or saturated. Carries a short reason for logs.
#[derive(Debug, thiserror::Error)]
#[error("storage unavailable: {0}")]
pub struct Unavailable(pub String);

macro_rules! common_variants {
    ($name:ident { $($body:tt)* }) => {
        #[doc = concat!("Failure of the `", stringify!($name), "` operation; see the module docs for when each variant is returned.")]
        #[derive(Debug, thiserror::Error)]
        pub enum $name {
            $($body)*
            /// The backend could not be reached in time.
            #[error(transparent)]
            Unavailable(#[from] Unavailable),
            /// Anything else: a bug or an unexpected backend failure.
            #[error(transparent)]
            Unknown(#[from] anyhow::Error),
        }
    };
}

common_variants!(CreateTenantError {
    /// Another tenant has this slug.
    #[error("a tenant with this slug already exists")]
    DuplicateSlug,
});

common_variants!(GetTenantError {
    /// No such tenant.
    #[error("tenant {0} not found")]
    NotFound(TenantId),
});

common_variants!(AuthenticateError {
    /// The key is unknown, revoked, or names another tenant.
    #[error("invalid API key")]
    InvalidKey,
});

common_variants!(CreateAgentError {
    /// Another agent of the tenant has this email.
    #[error("an agent with this email already exists")]
    DuplicateEmail,
});

common_variants!(GetAgentError {
    /// No such agent in this tenant.
    #[error("agent not found")]
    NotFound,
});

common_variants!(ListAgentsError {});

common_variants!(UpdateAgentError {
    /// No such agent in this tenant.
    #[error("agent not found")]
    NotFound,
    /// The agent changed since the caller read it.
    #[error("the agent is at version {current}")]
    Conflict {
        /// The version now stored.
        current: i64,
    },
    /// Another agent of the tenant has this email.
    #[error("an agent with this email already exists")]
    DuplicateEmail,
});

common_variants!(CreateLeadError {
    /// The assigned agent does not exist in this tenant.
    #[error("assigned agent not found")]
    AgentNotFound,
    /// The assigned agent is inactive: inactive agents get no new leads.
    #[error("assigned agent is inactive")]
    AgentInactive,
});

common_variants!(GetLeadError {
    /// No such lead in this tenant.
    #[error("lead not found")]
    NotFound,
});

common_variants!(ListLeadsError {});

common_variants!(DeleteLeadError {
    /// No such lead (missing, in another tenant, or already deleted).
    #[error("lead not found")]
    NotFound,
    /// The lead has approvals still waiting (pending or approved): deleting
    /// it would leave a message that could still be sent to a hidden lead.
    #[error("the lead has {open} open approvals")]
    OpenApprovals {
        /// How many.
        open: u64,
    },
});

common_variants!(RestoreLeadError {
    /// No deleted lead with this id in this tenant.
    #[error("no deleted lead with this id")]
    NotFound,
});

common_variants!(UpdateLeadError {
    /// No such lead in this tenant.
    #[error("lead not found")]
    NotFound,
    /// The lead changed since the caller read it.
    #[error("the lead is at version {current}")]
    Conflict {
        /// The version now stored.
        current: i64,
    },
    /// The status move is not allowed.
    #[error("a lead cannot move from {from} to {to}")]
    InvalidTransition {
        /// Current status.
        from: LeadStatus,
        /// Requested status.
        to: LeadStatus,
    },
    /// The assigned agent does not exist in this tenant.
    #[error("assigned agent not found")]
    AgentNotFound,
    /// The newly assigned agent is inactive: inactive agents get no new leads.
    #[error("assigned agent is inactive")]
    AgentInactive,
});

common_variants!(DraftApprovalError {
    /// No such lead in this tenant.
    #[error("lead not found")]
    LeadNotFound,
    /// The requesting agent is not in this tenant.
    #[error("agent not found")]
    AgentNotFound,
    /// The requesting agent is inactive: inactive agents cannot draft.
    #[error("agent is inactive")]
    AgentInactive,
});

common_variants!(GetApprovalError {
    /// No such approval in this tenant.
    #[error("approval not found")]
    NotFound,
});

common_variants!(TransitionApprovalError {
    /// No such approval in this tenant.
    #[error("approval not found")]
    NotFound,
    /// The approval is not in the status the action starts from (another
    /// request got there first, or the move does not exist).
    #[error("the approval is {current}")]
    Conflict {
        /// Its status now.
        current: leadline_domain::ApprovalStatus,
    },
    /// The acting agent is not in this tenant.
    #[error("agent not found")]
    AgentNotFound,
    /// Separation of duties: the agent who drafted the approval, or edited
    /// it last, may not decide it (returned for approve and reject only,
    /// while the tenant keeps the rule on).
    #[error("the agent who drafted or last edited an approval cannot decide it")]
    SelfDecision,
    /// The draft was edited past the revision the decision was made on.
    #[error("the draft changed: it is at revision {current_revision}")]
    Edited {
        /// Its revision now.
        current_revision: i32,
    },
});

common_variants!(EditApprovalError {
    /// No such approval in this tenant.
    #[error("approval not found")]
    NotFound,
    /// It was decided already: only a pending draft can be edited.
    #[error("the approval is {current}")]
    NotPending {
        /// Its status now.
        current: leadline_domain::ApprovalStatus,
    },
    /// Someone edited it since the revision the edit was written against.
    #[error("the draft changed: it is at revision {current_revision}")]
    Stale {
        /// Its revision now.
        current_revision: i32,
    },
    /// The editing agent is not in this tenant.
    #[error("agent not found")]
    AgentNotFound,
    /// The editing agent is inactive (it could not draft either).
    #[error("the agent is inactive")]
    AgentInactive,
});

common_variants!(ListApprovalsError {});

common_variants!(AppendEventError {
    /// No such lead in this tenant (or it is deleted).
    #[error("lead not found")]
    LeadNotFound,
    /// `occurred_at` is earlier than the lead's creation.
    #[error("the event predates its lead, created at {lead_created_at}")]
    PredatesLead {
        /// When the lead was created.
        lead_created_at: chrono::DateTime<chrono::Utc>,
    },
    /// The actor is not an agent of this tenant.
    #[error("agent not found")]
    AgentNotFound,
});

common_variants!(TimelineError {
    /// No such lead in this tenant.
    #[error("lead not found")]
    LeadNotFound,
});

common_variants!(IdempotencyError {});

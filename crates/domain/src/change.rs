//! The change feed: every create, update and transition of a lead, agent,
//! approval or event, as a [`Change`] written in the same transaction as
//! the write, at a [`ChangePosition`] in the tenant's log.
//!
//! Which change a write records, and what it carries, is decided here: the
//! entity as the API shows it, so a subscriber reads the same JSON a `GET`
//! returns (a snapshot at the change, not the entity's later state).

use std::{fmt, str::FromStr};

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};

use crate::{Agent, AgentId, Approval, ApprovalStatus, Event, Lead, LeadId, TenantId, ValueError};

/// What happened, named `{entity}.{what}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChangeType {
    /// A lead was created (by the API, a batch or an import).
    LeadCreated,
    /// A lead's fields or status changed.
    LeadUpdated,
    /// A lead was deleted (hidden, restorable).
    LeadDeleted,
    /// A deleted lead was restored.
    LeadRestored,
    /// An agent was created.
    AgentCreated,
    /// An agent changed (fields, role, active).
    AgentUpdated,
    /// An approval was drafted.
    ApprovalDrafted,
    /// A pending approval's text was edited.
    ApprovalEdited,
    /// An approval was approved.
    ApprovalApproved,
    /// An approval was rejected.
    ApprovalRejected,
    /// An approval was cancelled.
    ApprovalCancelled,
    /// An approval was sent.
    ApprovalSent,
    /// An event was recorded on a lead's timeline (by a client or by
    /// leadline: a status move, a decision, a send, a delivery outcome).
    EventRecorded,
}

impl ChangeType {
    /// Every type.
    pub const ALL: &'static [Self] = &[
        Self::LeadCreated,
        Self::LeadUpdated,
        Self::LeadDeleted,
        Self::LeadRestored,
        Self::AgentCreated,
        Self::AgentUpdated,
        Self::ApprovalDrafted,
        Self::ApprovalEdited,
        Self::ApprovalApproved,
        Self::ApprovalRejected,
        Self::ApprovalCancelled,
        Self::ApprovalSent,
        Self::EventRecorded,
    ];

    /// The wire and stored name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::LeadCreated => "lead.created",
            Self::LeadUpdated => "lead.updated",
            Self::LeadDeleted => "lead.deleted",
            Self::LeadRestored => "lead.restored",
            Self::AgentCreated => "agent.created",
            Self::AgentUpdated => "agent.updated",
            Self::ApprovalDrafted => "approval.drafted",
            Self::ApprovalEdited => "approval.edited",
            Self::ApprovalApproved => "approval.approved",
            Self::ApprovalRejected => "approval.rejected",
            Self::ApprovalCancelled => "approval.cancelled",
            Self::ApprovalSent => "approval.sent",
            Self::EventRecorded => "event.recorded",
        }
    }

    /// The entity it is about: the part before the dot.
    #[must_use]
    pub fn entity(self) -> &'static str {
        self.as_str().split('.').next().unwrap_or_default()
    }

    /// The change an approval's arrival at `status` is.
    #[must_use]
    pub const fn of_approval(status: ApprovalStatus) -> Self {
        match status {
            ApprovalStatus::Pending => Self::ApprovalDrafted,
            ApprovalStatus::Approved => Self::ApprovalApproved,
            ApprovalStatus::Rejected => Self::ApprovalRejected,
            ApprovalStatus::Cancelled => Self::ApprovalCancelled,
            ApprovalStatus::Sent => Self::ApprovalSent,
        }
    }
}

impl fmt::Display for ChangeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ChangeType {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|t| t.as_str() == s)
            .ok_or(ValueError::Invalid(
                "must be a change type such as lead.created or an entity: lead, agent, approval, event",
            ))
    }
}

impl Serialize for ChangeType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One change, as a write records it.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Its tenant.
    pub tenant_id: TenantId,
    /// What happened.
    pub kind: ChangeType,
    /// The id of the entity it happened to.
    pub entity_id: uuid::Uuid,
    /// When.
    pub at: DateTime<Utc>,
    /// The entity as the API shows it, right after the change.
    pub data: serde_json::Value,
    /// The entity as it was just before, where the write knew it: the
    /// audit trail's old values. Not part of the feed.
    pub before: Option<serde_json::Value>,
}

impl Change {
    fn of<T: Serialize>(
        tenant_id: TenantId,
        kind: ChangeType,
        entity_id: uuid::Uuid,
        at: DateTime<Utc>,
        entity: &T,
    ) -> Self {
        Self {
            tenant_id,
            kind,
            entity_id,
            at,
            // The domain's own types always serialise.
            data: serde_json::to_value(entity).unwrap_or(serde_json::Value::Null),
            before: None,
        }
    }

    /// The same change, knowing the entity as it was before (`before`, of
    /// the same type as the entity).
    #[must_use]
    pub fn was<T: Serialize>(mut self, before: &T) -> Self {
        self.before = serde_json::to_value(before).ok();
        self
    }

    /// `kind` (a lead type) happened to `lead`, as it now is.
    #[must_use]
    pub fn lead(kind: ChangeType, lead: &Lead) -> Self {
        Self::of(
            lead.tenant_id,
            kind,
            lead.id.as_uuid(),
            lead.updated_at,
            lead,
        )
    }

    /// `kind` (an agent type) happened to `agent`, as it now is.
    #[must_use]
    pub fn agent(kind: ChangeType, agent: &Agent) -> Self {
        Self::of(
            agent.tenant_id,
            kind,
            agent.id.as_uuid(),
            agent.updated_at,
            agent,
        )
    }

    /// `approval` arrived at its status.
    #[must_use]
    pub fn approval(approval: &Approval) -> Self {
        Self::of(
            approval.tenant_id,
            ChangeType::of_approval(approval.status),
            approval.id.as_uuid(),
            approval.updated_at,
            approval,
        )
    }

    /// A pending `approval`'s text was edited.
    #[must_use]
    pub fn approval_edited(approval: &Approval) -> Self {
        Self::of(
            approval.tenant_id,
            ChangeType::ApprovalEdited,
            approval.id.as_uuid(),
            approval.updated_at,
            approval,
        )
    }

    /// `event` was recorded.
    #[must_use]
    pub fn event(event: &Event) -> Self {
        Self::of(
            event.tenant_id,
            ChangeType::EventRecorded,
            event.id.as_uuid(),
            event.created_at,
            event,
        )
    }
}

/// Which cached lead contexts a change makes stale: what a process that
/// keeps contexts must drop when it learns of a change another process
/// made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleContexts {
    /// None: nothing a context shows changed.
    None,
    /// The context of this lead (its fields, an approval or an event on it).
    Lead(LeadId),
    /// The contexts of every lead assigned to this agent (they show it).
    AssignedTo(AgentId),
}

impl Change {
    /// The contexts this change makes stale. A change whose data lacks the
    /// lead it belongs to (it cannot, as the domain writes them) stales
    /// nothing rather than failing the reader.
    #[must_use]
    pub fn stale_contexts(&self) -> StaleContexts {
        let lead_in_data = || {
            self.data
                .get("lead_id")
                .and_then(serde_json::Value::as_str)
                .and_then(|s| s.parse::<uuid::Uuid>().ok())
                .map_or(StaleContexts::None, |id| {
                    StaleContexts::Lead(LeadId::from_uuid(id))
                })
        };
        match self.kind {
            ChangeType::LeadCreated
            | ChangeType::LeadUpdated
            | ChangeType::LeadDeleted
            | ChangeType::LeadRestored => StaleContexts::Lead(LeadId::from_uuid(self.entity_id)),
            ChangeType::AgentCreated => StaleContexts::None,
            ChangeType::AgentUpdated => {
                StaleContexts::AssignedTo(AgentId::from_uuid(self.entity_id))
            }
            ChangeType::ApprovalDrafted
            | ChangeType::ApprovalEdited
            | ChangeType::ApprovalApproved
            | ChangeType::ApprovalRejected
            | ChangeType::ApprovalCancelled
            | ChangeType::ApprovalSent
            | ChangeType::EventRecorded => lead_in_data(),
        }
    }
}

/// A change's place in its tenant's log: the writing transaction, then the
/// order within the log. Positions only grow in the order a reader is
/// shown them, so "everything after this one" is a complete answer
/// (PostgreSQL: ordered by transaction id and read only below the oldest
/// transaction still running; SQLite: one writer, `tx` is 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ChangePosition {
    /// The writing transaction (PostgreSQL's `xid8`; 0 on SQLite).
    pub tx: u64,
    /// The row's sequence number.
    pub seq: u64,
}

impl fmt::Display for ChangePosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.tx, self.seq)
    }
}

impl FromStr for ChangePosition {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const BAD: ValueError =
            ValueError::Invalid("must be a change id as sent in the feed (digits-digits)");
        let (tx, seq) = s.split_once('-').ok_or(BAD)?;
        let digits = |p: &str| {
            if p.is_empty() || p.len() > 19 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(BAD);
            }
            p.parse::<u64>().map_err(|_| BAD)
        };
        let position = Self {
            tx: digits(tx)?,
            seq: digits(seq)?,
        };
        // Both are stored as signed 64-bit numbers.
        if position.tx > i64::MAX as u64 || position.seq > i64::MAX as u64 {
            return Err(BAD);
        }
        Ok(position)
    }
}

impl Serialize for ChangePosition {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ChangePosition {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A change as the log holds it: `{id, type, entity, entity_id, at, data}`.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedChange {
    /// Its position.
    pub position: ChangePosition,
    /// The change.
    pub change: Change,
}

impl Serialize for LoggedChange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Change", 6)?;
        st.serialize_field("id", &self.position)?;
        st.serialize_field("type", &self.change.kind)?;
        st.serialize_field("entity", self.change.kind.entity())?;
        st.serialize_field("entity_id", &self.change.entity_id)?;
        st.serialize_field("at", &self.change.at)?;
        st.serialize_field("data", &self.change.data)?;
        st.end()
    }
}

/// Which changes a subscriber wants: some types, or (empty) all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeFilter {
    types: Vec<ChangeType>,
}

impl ChangeFilter {
    /// Parses a comma-separated list of types (`lead.created`) and
    /// entities (`approval`, meaning all of its types).
    ///
    /// # Errors
    /// [`ValueError`] for an unknown name.
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        let mut types = Vec::new();
        for name in raw.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let of_entity: Vec<ChangeType> = ChangeType::ALL
                .iter()
                .copied()
                .filter(|t| t.entity() == name)
                .collect();
            if of_entity.is_empty() {
                types.push(name.parse()?);
            } else {
                types.extend(of_entity);
            }
        }
        types.sort_unstable();
        types.dedup();
        Ok(Self { types })
    }

    /// The types asked for, as [`ChangeFilter::parse`] reads them back:
    /// comma-separated, empty for all.
    #[must_use]
    pub fn to_list(&self) -> String {
        self.types
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The types asked for; empty means all.
    #[must_use]
    pub fn types(&self) -> &[ChangeType] {
        &self.types
    }

    /// Whether `kind` passes.
    #[must_use]
    pub fn admits(&self, kind: ChangeType) -> bool {
        self.types.is_empty() || self.types.contains(&kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_change_names_the_contexts_it_makes_stale() {
        let (tenant, lead) = (TenantId::new(), LeadId::new());
        let context = crate::fixtures::lead_context(tenant, lead);
        let on_lead = Change::lead(ChangeType::LeadUpdated, &context.lead);
        assert_eq!(on_lead.stale_contexts(), StaleContexts::Lead(lead));
        let event = Change::event(&crate::fixtures::note(tenant, lead, "called"));
        assert_eq!(event.stale_contexts(), StaleContexts::Lead(lead));
        let agent = AgentId::new();
        let updated = Change {
            kind: ChangeType::AgentUpdated,
            entity_id: agent.as_uuid(),
            ..on_lead.clone()
        };
        assert_eq!(updated.stale_contexts(), StaleContexts::AssignedTo(agent));
        let created = Change {
            kind: ChangeType::AgentCreated,
            ..updated
        };
        assert_eq!(created.stale_contexts(), StaleContexts::None);
        let mangled = Change {
            kind: ChangeType::ApprovalDrafted,
            data: serde_json::json!({"lead_id": 7}),
            ..on_lead
        };
        assert_eq!(mangled.stale_contexts(), StaleContexts::None);
    }

    #[test]
    fn types_round_trip_and_name_their_entity() {
        for &t in ChangeType::ALL {
            assert_eq!(t.as_str().parse::<ChangeType>(), Ok(t));
            assert!(["lead", "agent", "approval", "event"].contains(&t.entity()));
        }
        assert!("lead.exploded".parse::<ChangeType>().is_err());
    }

    #[test]
    fn positions_order_by_transaction_then_sequence_and_round_trip() {
        let a = ChangePosition { tx: 7, seq: 90 };
        let b = ChangePosition { tx: 8, seq: 3 };
        assert!(
            a < b,
            "a later transaction sorts later whatever its sequence"
        );
        assert_eq!("7-90".parse::<ChangePosition>(), Ok(a));
        assert_eq!(a.to_string(), "7-90");
        for bad in [
            "",
            "7",
            "-",
            "7-",
            "-9",
            "7-9-1",
            "a-1",
            "1-+2",
            " 1-2",
            "99999999999999999999-1",
            "9223372036854775808-1",
        ] {
            assert!(bad.parse::<ChangePosition>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_filter_takes_types_and_whole_entities() {
        let f = ChangeFilter::parse("approval, lead.created").expect("valid");
        assert!(f.admits(ChangeType::ApprovalSent));
        assert!(f.admits(ChangeType::LeadCreated));
        assert!(!f.admits(ChangeType::LeadUpdated));
        assert_eq!(f.types().len(), 7, "six approval types and one lead type");
        assert!(
            ChangeFilter::parse("")
                .expect("empty")
                .admits(ChangeType::EventRecorded)
        );
        assert!(ChangeFilter::parse("lead,bogus").is_err());
    }
}

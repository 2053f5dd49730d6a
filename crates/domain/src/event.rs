//! Events: every touch on a lead's timeline. Append-only.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    AgentId, Approval, Channel, EventId, ImportId, Lead, LeadId, Metadata, PageLimit, TenantId,
    ValueError,
    approval::{text, wire_enum},
};

wire_enum!(
    /// What happened.
    EventKind {
        /// An email went out.
        EmailSent => "email_sent",
        /// An email came in.
        EmailReceived => "email_received",
        /// A text went out.
        SmsSent => "sms_sent",
        /// A text came in.
        SmsReceived => "sms_received",
        /// A call took place.
        Call => "call",
        /// A meeting took place.
        Meeting => "meeting",
        /// A note was taken.
        Note => "note",
        /// The lead's status changed.
        StatusChanged => "status_changed",
        /// An approval was approved, rejected or cancelled.
        ApprovalDecided => "approval_decided",
        /// A sent email was accepted by the mail server.
        EmailDelivered => "email_delivered",
        /// The mail server refused a sent email for good.
        EmailBounced => "email_bounced",
        /// A sent message could not be delivered (retries exhausted, or no
        /// address to deliver to).
        DeliveryFailed => "delivery_failed",
        /// An import created or updated the lead.
        Imported => "imported",
        /// A sent message other than an email (a text, a call, a LinkedIn
        /// message) was accepted by the tenant's endpoint for its channel.
        MessageDelivered => "message_delivered",
    }
);

wire_enum!(
    /// Which way it went.
    Direction {
        /// From the lead to us.
        Inbound => "inbound",
        /// From us to the lead.
        Outbound => "outbound",
        /// Within the team.
        Internal => "internal",
    }
);

impl EventKind {
    /// The event a sent message of `channel` leaves on the timeline.
    #[must_use]
    pub const fn sent_on(channel: Channel) -> Self {
        match channel {
            Channel::Email => Self::EmailSent,
            Channel::Sms => Self::SmsSent,
            Channel::Call => Self::Call,
            // No dedicated kind: a note whose metadata names the channel.
            Channel::Linkedin => Self::Note,
        }
    }
}

text!(
    /// What an event says (a message, a summary, a note).
    EventContent,
    20_000
);

/// One touch on a lead's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Its id.
    pub id: EventId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// The lead.
    pub lead_id: LeadId,
    /// What happened.
    pub kind: EventKind,
    /// Which way.
    pub direction: Direction,
    /// What was said or noted.
    pub content: Option<EventContent>,
    /// When it happened (may be earlier than when it was recorded).
    pub occurred_at: DateTime<Utc>,
    /// The agent involved, if any.
    pub actor: Option<AgentId>,
    /// Free-form data.
    pub metadata: Metadata,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
}

impl Event {
    /// The event a client logs on `lead`, recorded at `now`: it happened at
    /// `occurred_at` (kept to the microsecond, as both stores keep it) or,
    /// without one, now.
    #[must_use]
    pub fn logged(
        tenant: TenantId,
        lead: LeadId,
        req: &AppendEventRequest,
        now: DateTime<Utc>,
    ) -> Self {
        use chrono::SubsecRound;
        Self {
            id: EventId::new(),
            tenant_id: tenant,
            lead_id: lead,
            kind: req.kind,
            direction: req.direction,
            content: req.content.clone(),
            occurred_at: req.occurred_at.map_or(now, |t| t.trunc_subsecs(6)),
            actor: req.actor,
            metadata: req.metadata.clone(),
            created_at: now,
        }
    }

    /// The event a lead written by import `run` gets on its timeline: the
    /// file's `line`, and whether the row `created` the lead or updated it.
    #[must_use]
    pub fn imported(
        tenant: TenantId,
        lead: LeadId,
        run: ImportId,
        line: u64,
        created: bool,
        now: DateTime<Utc>,
    ) -> Self {
        let action = if created { "created" } else { "updated" };
        Self {
            id: EventId::new(),
            tenant_id: tenant,
            lead_id: lead,
            kind: EventKind::Imported,
            direction: Direction::Internal,
            content: EventContent::new(&format!("{action} by an import (line {line})")).ok(),
            occurred_at: now,
            actor: None,
            // Three scalars: always valid metadata.
            metadata: Metadata::new(serde_json::json!({
                "import_id": run,
                "line": line,
                "action": action,
            }))
            .unwrap_or_default(),
            created_at: now,
        }
    }

    /// Whether the event claims to have happened before its lead existed. A
    /// timeline starts with its lead: such an event is refused.
    #[must_use]
    pub fn predates(&self, lead_created_at: DateTime<Utc>) -> bool {
        self.occurred_at < lead_created_at
    }
}

/// What it takes to append an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendEventRequest {
    /// What happened.
    pub kind: EventKind,
    /// Which way.
    pub direction: Direction,
    /// Content.
    pub content: Option<EventContent>,
    /// When; `None` means now.
    pub occurred_at: Option<DateTime<Utc>>,
    /// The agent involved.
    pub actor: Option<AgentId>,
    /// Metadata.
    pub metadata: Metadata,
}

impl EventKind {
    /// Kinds only the service records, as the trace of its own actions (a
    /// status move, an approval's decision, a sent message). A client logs
    /// what happened elsewhere and may not forge these.
    #[must_use]
    pub const fn is_system(self) -> bool {
        matches!(
            self,
            Self::StatusChanged
                | Self::ApprovalDecided
                | Self::EmailSent
                | Self::SmsSent
                | Self::EmailDelivered
                | Self::EmailBounced
                | Self::DeliveryFailed
                | Self::Imported
                | Self::MessageDelivered
        )
    }
}

/// Why a client's event was refused before it reached the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendEventRejected {
    /// `kind` is one the service records itself.
    #[error("kind: {0} events are recorded by leadline itself and cannot be appended")]
    SystemKind(EventKind),
    /// `occurred_at` is out of range.
    #[error("occurred_at: {0}")]
    Time(ValueError),
}

impl AppendEventRejected {
    /// The request field at fault.
    #[must_use]
    pub const fn field(&self) -> &'static str {
        match self {
            Self::SystemKind(_) => "kind",
            Self::Time(_) => "occurred_at",
        }
    }
}

impl AppendEventRequest {
    /// The rules for an event a client logs: not a system kind
    /// ([`EventKind::is_system`]), not dated in the future (beyond a minute
    /// of clock skew: a timeline is a record of what happened) and within
    /// the storable range ([`crate::time::check_storable`]).
    ///
    /// # Errors
    /// [`AppendEventRejected`].
    pub fn check_from_client(&self, now: DateTime<Utc>) -> Result<(), AppendEventRejected> {
        if self.kind.is_system() {
            return Err(AppendEventRejected::SystemKind(self.kind));
        }
        self.check_time(now).map_err(AppendEventRejected::Time)
    }

    /// The time rules of [`Self::check_from_client`] alone.
    ///
    /// # Errors
    /// [`ValueError::Invalid`].
    pub fn check_time(&self, now: DateTime<Utc>) -> Result<(), ValueError> {
        match self.occurred_at {
            Some(t) if t > now + chrono::Duration::minutes(1) => {
                Err(ValueError::Invalid("must not be in the future"))
            }
            Some(t) => crate::time::check_storable(t).map(|_| ()),
            None => Ok(()),
        }
    }
}

/// A position in a timeline: events are ordered by `(occurred_at, id)`, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimelineCursor {
    /// The last event's time.
    pub occurred_at: DateTime<Utc>,
    /// The last event's id.
    pub id: EventId,
}

impl TimelineCursor {
    /// A cursor from its parts, as a client sent them back: the time must
    /// be one a store can compare with ([`crate::time::check_storable`]).
    ///
    /// # Errors
    /// [`ValueError::Invalid`] for a time out of range.
    pub fn new(occurred_at: DateTime<Utc>, id: EventId) -> Result<Self, ValueError> {
        crate::time::check_storable(occurred_at)?;
        Ok(Self { occurred_at, id })
    }
}

/// A page request on a lead's timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TimelineQuery {
    /// Page size.
    pub limit: PageLimit,
    /// Start after this event.
    pub after: Option<TimelineCursor>,
}

/// Everything about a lead, in one read: the "memory recall" read model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeadContext {
    /// The lead.
    pub lead: Lead,
    /// Its assigned agent, if any.
    pub assigned_agent: Option<crate::Agent>,
    /// Approvals still waiting on someone (pending or approved), newest first.
    pub open_approvals: Vec<Approval>,
    /// The most recent closed approvals (sent, rejected, cancelled), newest first.
    pub recent_approvals: Vec<Approval>,
    /// The latest events, newest first.
    pub events: Vec<Event>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn future_events_are_refused_with_skew_allowed() {
        let now = Utc::now();
        let mut req = AppendEventRequest {
            kind: EventKind::Call,
            direction: Direction::Outbound,
            content: None,
            occurred_at: Some(now + chrono::Duration::seconds(30)),
            actor: None,
            metadata: Metadata::default(),
        };
        assert!(req.check_time(now).is_ok(), "small skew is fine");
        req.occurred_at = Some(now + chrono::Duration::hours(1));
        assert!(req.check_time(now).is_err());
        req.occurred_at = Some(now - chrono::Duration::days(3));
        assert!(
            req.check_time(now).is_ok(),
            "back-dating is what logging a past call is"
        );
    }

    #[test]
    fn clients_may_not_forge_system_kinds_or_out_of_range_times() {
        let now = Utc::now();
        let mut req = AppendEventRequest {
            kind: EventKind::Note,
            direction: Direction::Internal,
            content: None,
            occurred_at: None,
            actor: None,
            metadata: Metadata::default(),
        };
        assert_eq!(req.check_from_client(now), Ok(()));
        for &kind in EventKind::ALL {
            req.kind = kind;
            let expected = if matches!(
                kind,
                EventKind::StatusChanged
                    | EventKind::ApprovalDecided
                    | EventKind::EmailSent
                    | EventKind::SmsSent
                    | EventKind::EmailDelivered
                    | EventKind::EmailBounced
                    | EventKind::DeliveryFailed
                    | EventKind::Imported
                    | EventKind::MessageDelivered
            ) {
                Err(AppendEventRejected::SystemKind(kind))
            } else {
                Ok(())
            };
            assert_eq!(req.check_from_client(now), expected, "{kind}");
        }
        req.kind = EventKind::Call;
        req.occurred_at = chrono::NaiveDate::from_ymd_opt(-4800, 1, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc());
        assert_eq!(
            req.check_from_client(now).map_err(|e| e.field()),
            Err("occurred_at")
        );
    }

    #[test]
    fn every_channel_leaves_an_event_kind() {
        assert_eq!(EventKind::sent_on(Channel::Email), EventKind::EmailSent);
        assert_eq!(EventKind::sent_on(Channel::Sms), EventKind::SmsSent);
        assert_eq!(EventKind::sent_on(Channel::Call), EventKind::Call);
        assert_eq!(EventKind::sent_on(Channel::Linkedin), EventKind::Note);
    }
}

//! Approvals: every outbound message is drafted, then approved or rejected
//! by a person, then sent exactly once.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[cfg(test)]
use crate::ValueError;
use crate::{AgentId, ApprovalId, LeadId, TenantId};

macro_rules! wire_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ::serde::Serialize, ::serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Every value.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The stored and wire name.
            #[must_use]
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::ValueError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or($crate::ValueError::Invalid(concat!("must be one of: ", $($text, " "),+)))
            }
        }
    };
}
pub(crate) use wire_enum;

wire_enum!(
    /// How a message reaches the lead.
    Channel {
        /// Email.
        Email => "email",
        /// Text message.
        Sms => "sms",
        /// Phone call (the "message" is the call script).
        Call => "call",
        /// LinkedIn message.
        Linkedin => "linkedin",
    }
);

wire_enum!(
    /// Where an approval stands.
    ///
    /// ```text
    /// pending ──► approved ──► sent
    ///    │  └───► rejected (reason required)
    ///    └──────► cancelled
    /// ```
    /// No other move exists; `sent`, `rejected` and `cancelled` are final.
    ApprovalStatus {
        /// Drafted, waiting for a person.
        Pending => "pending",
        /// Approved, waiting to be sent.
        Approved => "approved",
        /// Refused, with a reason.
        Rejected => "rejected",
        /// Sent (exactly once).
        Sent => "sent",
        /// Withdrawn before a decision.
        Cancelled => "cancelled",
    }
);

impl ApprovalStatus {
    /// Open approvals still need someone to act.
    #[must_use]
    pub const fn is_open(self) -> bool {
        matches!(self, Self::Pending | Self::Approved)
    }
}

/// What a person does to an approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApprovalAction {
    /// pending → approved.
    Approve {
        /// Who decided.
        by: AgentId,
    },
    /// pending → rejected.
    Reject {
        /// Who decided.
        by: AgentId,
        /// Why; required.
        reason: RejectionReason,
    },
    /// approved → sent.
    MarkSent {
        /// Who sent it.
        by: AgentId,
    },
    /// pending → cancelled.
    Cancel {
        /// Who withdrew it.
        by: AgentId,
    },
}

impl ApprovalAction {
    /// The only status this action may start from.
    #[must_use]
    pub const fn from_status(&self) -> ApprovalStatus {
        match self {
            Self::Approve { .. } | Self::Reject { .. } | Self::Cancel { .. } => {
                ApprovalStatus::Pending
            }
            Self::MarkSent { .. } => ApprovalStatus::Approved,
        }
    }

    /// The status it leads to.
    #[must_use]
    pub const fn to_status(&self) -> ApprovalStatus {
        match self {
            Self::Approve { .. } => ApprovalStatus::Approved,
            Self::Reject { .. } => ApprovalStatus::Rejected,
            Self::MarkSent { .. } => ApprovalStatus::Sent,
            Self::Cancel { .. } => ApprovalStatus::Cancelled,
        }
    }

    /// Whether it decides the approval (approve, reject): what separation
    /// of duties keeps the drafter from doing. Sending and withdrawing are
    /// not decisions.
    #[must_use]
    pub const fn is_decision(&self) -> bool {
        matches!(self, Self::Approve { .. } | Self::Reject { .. })
    }

    /// Whether separation of duties (when `separated`) refuses this action
    /// on an approval drafted by `requested_by` and last edited by
    /// `edited_by`: nobody decides on words they wrote.
    #[must_use]
    pub fn breaks_separation(
        &self,
        requested_by: AgentId,
        edited_by: Option<AgentId>,
        separated: bool,
    ) -> bool {
        separated
            && self.is_decision()
            && (self.actor() == requested_by || Some(self.actor()) == edited_by)
    }

    /// The acting agent.
    #[must_use]
    pub const fn actor(&self) -> AgentId {
        match self {
            Self::Approve { by }
            | Self::Reject { by, .. }
            | Self::MarkSent { by }
            | Self::Cancel { by } => *by,
        }
    }
}

/// Whether `from → to` is a move of the approval lifecycle.
#[must_use]
pub const fn approval_can_move(from: ApprovalStatus, to: ApprovalStatus) -> bool {
    use ApprovalStatus::{Approved, Cancelled, Pending, Rejected, Sent};
    matches!(
        (from, to),
        (Pending, Approved | Rejected | Cancelled) | (Approved, Sent)
    )
}

macro_rules! text {
    ($(#[$doc:meta])* $name:ident, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, ::serde::Serialize, ::serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The longest accepted value, in characters.
            pub const MAX: usize = $max;

            /// Checks that `raw` is non-blank and at most `MAX` characters.
            /// Inner newlines are kept: these are message texts.
            ///
            /// # Errors
            /// [`$crate::ValueError::Empty`] or [`$crate::ValueError::TooLong`].
            pub fn new(raw: &str) -> Result<Self, $crate::ValueError> {
                if raw.trim().is_empty() {
                    return Err($crate::ValueError::Empty);
                }
                if raw.chars().count() > Self::MAX {
                    return Err($crate::ValueError::TooLong { max: Self::MAX });
                }
                if raw.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
                    return Err($crate::ValueError::Invalid("must not contain control characters"));
                }
                Ok(Self(raw.to_owned()))
            }

            /// The text.
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = $crate::ValueError;
            fn try_from(raw: String) -> Result<Self, Self::Error> {
                Self::new(&raw)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> Self {
                v.0
            }
        }
    };
}
pub(crate) use text;

crate::value::bounded_text!(
    /// A message subject line: one line, trimmed. It becomes a mail header,
    /// so CR, LF and every other control character are refused (header
    /// injection).
    Subject,
    300
);
text!(
    /// A message body.
    MessageBody,
    20_000
);
text!(
    /// Why an approval was rejected.
    RejectionReason,
    1_000
);

/// An outbound message awaiting, or past, a person's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// Its id.
    pub id: ApprovalId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// The lead it is addressed to.
    pub lead_id: LeadId,
    /// The channel.
    pub channel: Channel,
    /// Subject, for channels that have one.
    pub subject: Option<Subject>,
    /// The message.
    pub body: MessageBody,
    /// The agent who drafted it.
    pub requested_by: AgentId,
    /// Where it stands.
    pub status: ApprovalStatus,
    /// Who approved, rejected or cancelled it.
    pub decided_by: Option<AgentId>,
    /// When.
    pub decided_at: Option<DateTime<Utc>>,
    /// Why it was rejected.
    pub rejection_reason: Option<RejectionReason>,
    /// Who marked it sent.
    pub sent_by: Option<AgentId>,
    /// When it was sent.
    pub sent_at: Option<DateTime<Utc>>,
    /// Drafted at.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// The draft's text revision: 1 as drafted, one more for each edit. A
    /// decision may name the revision it was made on, so that nobody
    /// approves words they did not read.
    pub revision: i32,
    /// Who last edited the draft, if anyone did.
    pub edited_by: Option<AgentId>,
    /// When.
    pub edited_at: Option<DateTime<Utc>>,
}

impl Approval {
    /// A new draft: pending, drafted at `now`.
    #[must_use]
    pub fn draft(
        tenant: TenantId,
        lead: LeadId,
        req: &DraftApprovalRequest,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id: ApprovalId::new(),
            tenant_id: tenant,
            lead_id: lead,
            channel: req.channel,
            subject: req.subject.clone(),
            body: req.body.clone(),
            requested_by: req.requested_by,
            status: ApprovalStatus::Pending,
            decided_by: None,
            decided_at: None,
            rejection_reason: None,
            sent_by: None,
            sent_at: None,
            created_at: now,
            updated_at: now,
            revision: 1,
            edited_by: None,
            edited_at: None,
        }
    }

    /// The event `action` leaves on the lead's timeline; `self` is the
    /// approval as the move left it. A send is the channel's outbound event
    /// carrying the message; a decision is `approval_decided` (with the
    /// reason, for a rejection).
    #[must_use]
    pub fn event_of(&self, action: &ApprovalAction) -> crate::Event {
        use crate::{Direction, EventKind};
        let now = self.updated_at;
        let (kind, direction, content, metadata) = match action {
            ApprovalAction::MarkSent { .. } => (
                EventKind::sent_on(self.channel),
                Direction::Outbound,
                Some(self.body.as_str()),
                serde_json::json!({ "approval_id": self.id, "channel": self.channel, "subject": self.subject }),
            ),
            ApprovalAction::Reject { reason, .. } => (
                EventKind::ApprovalDecided,
                Direction::Internal,
                Some(reason.as_str()),
                serde_json::json!({ "approval_id": self.id, "channel": self.channel, "decision": self.status }),
            ),
            ApprovalAction::Approve { .. } | ApprovalAction::Cancel { .. } => (
                EventKind::ApprovalDecided,
                Direction::Internal,
                None,
                serde_json::json!({ "approval_id": self.id, "channel": self.channel, "decision": self.status }),
            ),
        };
        crate::Event {
            id: crate::EventId::new(),
            tenant_id: self.tenant_id,
            lead_id: self.lead_id,
            kind,
            direction,
            // Message texts fit event content by construction (same bound).
            content: content.and_then(|c| crate::EventContent::new(c).ok()),
            occurred_at: now,
            actor: Some(action.actor()),
            metadata: crate::Metadata::new(metadata).unwrap_or_default(),
            created_at: now,
        }
    }

    /// What the outbox row of a sent approval carries: everything a delivery
    /// relay needs to send the message.
    #[must_use]
    pub fn outbox_payload(&self) -> serde_json::Value {
        serde_json::json!({
            "approval_id": self.id,
            "lead_id": self.lead_id,
            "channel": self.channel,
            "subject": self.subject,
            "body": self.body,
        })
    }
}

/// What it takes to draft an approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DraftApprovalRequest {
    /// The channel.
    pub channel: Channel,
    /// Subject.
    pub subject: Option<Subject>,
    /// Body.
    pub body: MessageBody,
    /// The drafting agent.
    pub requested_by: AgentId,
}

/// A new text for a pending draft: both parts replace what was there (an
/// absent subject removes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditDraftRequest {
    /// Subject.
    pub subject: Option<Subject>,
    /// Body.
    pub body: MessageBody,
    /// The agent editing it.
    pub edited_by: AgentId,
    /// The revision the edit was written against; another edit or a
    /// decision since then refuses it.
    pub revision: i32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use ApprovalStatus::*;

    #[test]
    fn lifecycle_allows_exactly_the_documented_moves() {
        let allowed = [
            (Pending, Approved),
            (Pending, Rejected),
            (Pending, Cancelled),
            (Approved, Sent),
        ];
        for &from in ApprovalStatus::ALL {
            for &to in ApprovalStatus::ALL {
                assert_eq!(
                    approval_can_move(from, to),
                    allowed.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
    }

    #[test]
    fn the_drafter_may_not_decide_while_duties_are_separated() {
        let drafter = AgentId::new();
        let other = AgentId::new();
        let reason = RejectionReason::new("tone").expect("valid");
        let approve = ApprovalAction::Approve { by: drafter };
        let reject = ApprovalAction::Reject {
            by: drafter,
            reason,
        };
        assert!(approve.breaks_separation(drafter, None, true));
        assert!(reject.breaks_separation(drafter, None, true));
        assert!(
            !approve.breaks_separation(drafter, None, false),
            "turned off"
        );
        assert!(!ApprovalAction::Approve { by: other }.breaks_separation(drafter, None, true));
        // Whoever edited the draft last wrote it too.
        assert!(ApprovalAction::Approve { by: other }.breaks_separation(
            drafter,
            Some(other),
            true
        ));
        assert!(
            !approve.breaks_separation(other, Some(AgentId::new()), true),
            "the drafter's approval of a draft someone else wrote and edited"
        );
        for not_a_decision in [
            ApprovalAction::MarkSent { by: drafter },
            ApprovalAction::Cancel { by: drafter },
        ] {
            assert!(
                !not_a_decision.breaks_separation(drafter, Some(drafter), true),
                "{not_a_decision:?}"
            );
        }
    }

    #[test]
    fn actions_agree_with_the_lifecycle() {
        let by = AgentId::new();
        let reason = RejectionReason::new("tone").expect("valid");
        for action in [
            ApprovalAction::Approve { by },
            ApprovalAction::Reject { by, reason },
            ApprovalAction::MarkSent { by },
            ApprovalAction::Cancel { by },
        ] {
            assert!(
                approval_can_move(action.from_status(), action.to_status()),
                "{action:?}"
            );
            assert_eq!(action.actor(), by);
        }
    }

    #[test]
    fn texts_are_bounded_and_keep_newlines() {
        assert!(MessageBody::new("Hi Grace,\n\nShall we talk?").is_ok());
        assert_eq!(MessageBody::new("  \n "), Err(ValueError::Empty));
        assert!(Subject::new(&"s".repeat(301)).is_err());
        assert!(RejectionReason::new("bad\u{7}bell").is_err());
        for injected in [
            "Hi\r\nBcc: all@example.com",
            "Hi\nX: y",
            "Hi\rthere",
            "tab\there",
        ] {
            assert!(Subject::new(injected).is_err(), "{injected:?}");
        }
    }

    #[test]
    fn a_move_leaves_its_event_and_a_send_its_outbox_payload() {
        let by = AgentId::new();
        let now = Utc::now();
        let draft = DraftApprovalRequest {
            channel: Channel::Email,
            subject: Some(Subject::new("Hi").expect("valid")),
            body: MessageBody::new("Hello Grace").expect("valid"),
            requested_by: by,
        };
        let mut approval = Approval::draft(TenantId::new(), LeadId::new(), &draft, now);
        assert_eq!((approval.status, approval.created_at), (Pending, now));
        approval.status = Sent;
        let sent = approval.event_of(&ApprovalAction::MarkSent { by });
        assert_eq!(sent.kind, crate::EventKind::EmailSent);
        assert_eq!(sent.direction, crate::Direction::Outbound);
        assert_eq!(
            sent.content.as_ref().map(|c| c.as_str()),
            Some("Hello Grace")
        );
        assert_eq!((sent.lead_id, sent.actor), (approval.lead_id, Some(by)));
        approval.status = Rejected;
        let reason = RejectionReason::new("tone").expect("valid");
        let rejected = approval.event_of(&ApprovalAction::Reject { by, reason });
        assert_eq!(rejected.kind, crate::EventKind::ApprovalDecided);
        assert_eq!(rejected.metadata.as_map()["decision"], "rejected");
        let payload = approval.outbox_payload();
        assert_eq!(payload["body"], "Hello Grace");
        assert_eq!(payload["subject"], "Hi");
        assert_eq!(payload["channel"], "email");
    }

    #[test]
    fn wire_names_parse() {
        assert_eq!("linkedin".parse::<Channel>(), Ok(Channel::Linkedin));
        assert!("fax".parse::<Channel>().is_err());
        assert_eq!("sent".parse::<ApprovalStatus>(), Ok(Sent));
        assert!(Pending.is_open() && Approved.is_open() && !Sent.is_open());
    }
}

/// A page request on the approval queue: oldest first, so the queue drains
/// in the order it filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApprovalQueueQuery {
    /// Which status to list; the queue proper is `pending`.
    pub status: ApprovalStatus,
    /// Only approvals drafted by this agent.
    pub requested_by: Option<AgentId>,
    /// Page size.
    pub limit: crate::PageLimit,
    /// Start after this approval.
    pub after: Option<ApprovalId>,
}

impl Default for ApprovalQueueQuery {
    fn default() -> Self {
        Self {
            status: ApprovalStatus::Pending,
            requested_by: None,
            limit: crate::PageLimit::DEFAULT,
            after: None,
        }
    }
}

/// A client-chosen key that makes a POST safe to retry: 1 to 255 visible
/// ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Checks a key.
    ///
    /// # Errors
    /// [`crate::ValueError`] when empty, too long or not visible ASCII.
    pub fn new(raw: &str) -> Result<Self, crate::ValueError> {
        if raw.is_empty() {
            return Err(crate::ValueError::Empty);
        }
        if raw.len() > 255 {
            return Err(crate::ValueError::TooLong { max: 255 });
        }
        if !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(crate::ValueError::Invalid(
                "must be visible ASCII characters",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The key.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

//! Delivery of sent messages: the states of a delivery (an outbox row), what
//! one attempt can end in, the retry policy (exponential backoff with
//! jitter, then a dead letter), a per-destination circuit breaker, the email
//! a sent approval becomes, and the timeline event each final outcome
//! leaves. Pure rules: the relay (`leadline-app`) drives them, the store
//! persists what they decide, a channel adapter carries the message.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    ApprovalId, Channel, DeliveryId, Direction, DisplayName, Email, Event, EventContent, EventId,
    EventKind, LeadId, MessageBody, Metadata, Phone, Subject, TenantId, ValueError,
    approval::wire_enum,
};

wire_enum!(
    /// Where a delivery stands.
    DeliveryStatus {
        /// Waiting for its next attempt (the first, or a retry).
        Pending => "pending",
        /// The destination accepted the message.
        Delivered => "delivered",
        /// Refused for good (a permanent rejection, or nowhere to deliver).
        Failed => "failed",
        /// Every attempt failed: a dead letter, retried only by hand.
        Dead => "dead",
    }
);

/// One message to deliver: the outbox row a send wrote, with its progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Its id (the outbox row's).
    pub id: DeliveryId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// The approval whose send it delivers.
    pub approval_id: ApprovalId,
    /// The lead it goes to.
    pub lead_id: LeadId,
    /// The channel.
    pub channel: Channel,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due (pending deliveries only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<String>,
    /// When the message was sent (the outbox row written).
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When it was delivered or given up on.
    pub finished_at: Option<DateTime<Utc>>,
}

/// What the outbox row of a sent approval says to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    /// The subject line.
    pub subject: Option<Subject>,
    /// The text.
    pub body: MessageBody,
}

/// Who a message goes to: the lead, as it stands when the message is
/// claimed for an attempt.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recipient {
    /// First and last name, when either is set.
    pub name: Option<String>,
    /// The email address.
    pub email: Option<Email>,
    /// The phone number.
    pub phone: Option<Phone>,
}

impl Recipient {
    /// Why a message on `channel` cannot reach this person, if it cannot:
    /// an email needs an address, a text or a call a phone number (a
    /// LinkedIn message is addressed by the receiving system from the lead).
    #[must_use]
    pub const fn unreachable_on(&self, channel: Channel) -> Option<&'static str> {
        match channel {
            Channel::Email if self.email.is_none() => Some("the lead has no email address"),
            Channel::Sms | Channel::Call if self.phone.is_none() => {
                Some("the lead has no phone number")
            }
            _ => None,
        }
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The destination accepted the message; its reply.
    Delivered {
        /// What the destination answered (e.g. `250 2.0.0 Ok: queued`).
        reply: String,
    },
    /// It may work later: a connection failure, a timeout, a temporary
    /// refusal (SMTP 4xx, HTTP 429/5xx).
    Transient {
        /// Why.
        reason: String,
        /// How long the destination asked us to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// The destination refused this message for good (SMTP 5xx, HTTP 4xx).
    Permanent {
        /// Why.
        reason: String,
    },
    /// No attempt was possible: the message has nowhere to go (the lead has
    /// no address, or was deleted).
    Undeliverable {
        /// Why.
        reason: String,
    },
}

impl AttemptOutcome {
    /// The stored and metric label.
    #[must_use]
    pub const fn label(&self) -> &'static str {
        match self {
            Self::Delivered { .. } => "delivered",
            Self::Transient { .. } => "transient",
            Self::Permanent { .. } | Self::Undeliverable { .. } => "permanent",
        }
    }

    /// The reply or the reason.
    #[must_use]
    pub fn detail(&self) -> &str {
        match self {
            Self::Delivered { reply } => reply,
            Self::Transient { reason, .. }
            | Self::Permanent { reason }
            | Self::Undeliverable { reason } => reason,
        }
    }
}

/// What follows an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Done: delivered.
    Delivered,
    /// Try again at this time.
    RetryAt(DateTime<Utc>),
    /// Done: refused for good.
    Failed,
    /// Done: out of attempts.
    Dead,
}

impl Decision {
    /// The status the delivery takes.
    #[must_use]
    pub const fn status(self) -> DeliveryStatus {
        match self {
            Self::Delivered => DeliveryStatus::Delivered,
            Self::RetryAt(_) => DeliveryStatus::Pending,
            Self::Failed => DeliveryStatus::Failed,
            Self::Dead => DeliveryStatus::Dead,
        }
    }
}

/// When to try again: exponential backoff from `base`, capped at `cap`,
/// with "equal jitter" (a delay drawn from the upper half of each step, so
/// a crowd of failed messages spreads out yet never retries early), for at
/// most `max_attempts` attempts, then a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts before a message is dead-lettered.
    pub max_attempts: u32,
    /// The first retry's delay (before jitter).
    pub base: Duration,
    /// The longest delay.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    /// Eight attempts, 30 s doubling to at most an hour: about two hours of
    /// trying before a message is dead-lettered.
    fn default() -> Self {
        Self {
            max_attempts: 8,
            base: Duration::from_secs(30),
            cap: Duration::from_secs(3600),
        }
    }
}

/// The longest `Retry-After` honoured: a destination asking for more is
/// retried after this (and its breaker keeps it quiet meanwhile).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

impl RetryPolicy {
    /// The delay after failed attempt number `attempt` (1-based), with
    /// `jitter` in `[0, 1)` choosing within the upper half of the step.
    #[must_use]
    pub fn backoff(&self, attempt: u32, jitter: f64) -> Duration {
        let exp = attempt.saturating_sub(1).min(32);
        let step = self
            .base
            .checked_mul(1u32 << exp.min(31))
            .unwrap_or(self.cap)
            .min(self.cap);
        let half = step / 2;
        half + half.mul_f64(jitter.clamp(0.0, 1.0))
    }

    /// What follows attempt number `attempt` (1-based) ending in `outcome`
    /// at `now`. A transient failure is retried after the backoff or the
    /// destination's `Retry-After`, whichever is later, until the attempts
    /// run out.
    #[must_use]
    pub fn decide(
        &self,
        attempt: u32,
        outcome: &AttemptOutcome,
        now: DateTime<Utc>,
        jitter: f64,
    ) -> Decision {
        match outcome {
            AttemptOutcome::Delivered { .. } => Decision::Delivered,
            AttemptOutcome::Permanent { .. } | AttemptOutcome::Undeliverable { .. } => {
                Decision::Failed
            }
            AttemptOutcome::Transient { retry_after, .. } => {
                if attempt >= self.max_attempts {
                    return Decision::Dead;
                }
                let wait = self
                    .backoff(attempt, jitter)
                    .max(retry_after.unwrap_or_default().min(MAX_RETRY_AFTER));
                Decision::RetryAt(now + chrono::Duration::from_std(wait).unwrap_or_default())
            }
        }
    }
}

/// While a breaker's one probe is out, how soon the others ask again.
pub const PROBE_RECHECK: Duration = Duration::from_secs(5);

/// A per-destination circuit breaker: after `threshold` consecutive
/// transient failures the destination is left alone for a cool-down
/// (doubling on each failed probe, up to `max_cool_down`); then one probe
/// is let through, and a success closes it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitBreaker {
    threshold: u32,
    cool_down: Duration,
    max_cool_down: Duration,
    state: BreakerState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BreakerState {
    Closed {
        failures: u32,
    },
    Open {
        until: DateTime<Utc>,
        cool_down: Duration,
    },
    Probing {
        cool_down: Duration,
    },
}

impl CircuitBreaker {
    /// A closed breaker.
    #[must_use]
    pub const fn new(threshold: u32, cool_down: Duration, max_cool_down: Duration) -> Self {
        Self {
            threshold,
            cool_down,
            max_cool_down,
            state: BreakerState::Closed { failures: 0 },
        }
    }

    /// Whether an attempt may go to the destination at `now`: `Err(until)`
    /// while it is open (and while its one probe is out).
    ///
    /// # Errors
    /// The time the destination may next be tried.
    pub fn admit(&mut self, now: DateTime<Utc>) -> Result<(), DateTime<Utc>> {
        match self.state {
            BreakerState::Closed { .. } => Ok(()),
            BreakerState::Open { until, cool_down } if now >= until => {
                self.state = BreakerState::Probing { cool_down };
                Ok(())
            }
            BreakerState::Open { until, .. } => Err(until),
            // Asked again soon: the probe's answer decides, and a closed
            // breaker should not leave the others waiting a whole cool-down.
            BreakerState::Probing { cool_down } => {
                Err(now
                    + chrono::Duration::from_std(cool_down.min(PROBE_RECHECK)).unwrap_or_default())
            }
        }
    }

    /// Records how an admitted attempt went: `healthy` for a delivery or a
    /// permanent refusal (the destination answered), not for a transient
    /// failure.
    pub fn record(&mut self, healthy: bool, now: DateTime<Utc>) {
        self.state = match (self.state, healthy) {
            (_, true) => BreakerState::Closed { failures: 0 },
            (BreakerState::Closed { failures }, false) if failures + 1 < self.threshold => {
                BreakerState::Closed {
                    failures: failures + 1,
                }
            }
            (BreakerState::Closed { .. }, false) => self.open(self.cool_down, now),
            (BreakerState::Probing { cool_down } | BreakerState::Open { cool_down, .. }, false) => {
                self.open((cool_down * 2).min(self.max_cool_down), now)
            }
        };
    }

    fn open(&self, cool_down: Duration, now: DateTime<Utc>) -> BreakerState {
        BreakerState::Open {
            until: now + chrono::Duration::from_std(cool_down).unwrap_or_default(),
            cool_down,
        }
    }

    /// Whether the breaker is open (or probing) at the moment.
    #[must_use]
    pub const fn is_open(&self) -> bool {
        !matches!(self.state, BreakerState::Closed { .. })
    }
}

/// A `List-Unsubscribe` target: a `mailto:` address or an `https:` URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Unsubscribe(String);

impl Unsubscribe {
    /// The longest accepted target: it is one header line, which a mail
    /// server may refuse past 998 octets and which cannot be folded (it has
    /// no spaces).
    pub const MAX: usize = 900;

    /// Parses `mailto:someone@example.com` or `https://…`.
    ///
    /// # Errors
    /// [`ValueError`] when it is neither, too long, or holds characters a
    /// header cannot carry.
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        // Not trimmed: a target is a header value, taken exactly or refused.
        if raw.is_empty() {
            return Err(ValueError::Empty);
        }
        if raw.len() > Self::MAX {
            return Err(ValueError::TooLong { max: Self::MAX });
        }
        if raw
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | '"'))
            || !raw.is_ascii()
        {
            return Err(ValueError::Invalid(
                "must be printable ASCII without spaces, commas, quotes or angle brackets",
            ));
        }
        let lower = raw.to_ascii_lowercase();
        if let Some(address) = lower.strip_prefix("mailto:") {
            let address = address.split('?').next().unwrap_or_default();
            Email::parse(address)?;
        } else if !(lower.starts_with("https://") && lower.len() > "https://".len()) {
            return Err(ValueError::Invalid(
                "must be a mailto: address or an https:// URL",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The target.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether it is a URL that takes RFC 8058 one-click POSTs.
    #[must_use]
    pub fn is_one_click(&self) -> bool {
        self.0.to_ascii_lowercase().starts_with("https://")
    }
}

impl TryFrom<String> for Unsubscribe {
    type Error = ValueError;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<Unsubscribe> for String {
    fn from(value: Unsubscribe) -> Self {
        value.0
    }
}

/// Whether `email` can be put on an envelope and in a From or Reply-To
/// header as it is: ASCII, a dot-atom local part (RFC 5322 `atext` and
/// single inner dots) and a domain of letters, digits and hyphens. A lead's
/// address may be looser (it is only ever a recipient, and a server may
/// refuse it); a sender's must not be, or every message would fail.
#[must_use]
pub fn is_plain_address(email: &Email) -> bool {
    let Some((local, domain)) = email.as_str().rsplit_once('@') else {
        return false;
    };
    let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~-".contains(c);
    let dot_atom = |s: &str, allowed: &dyn Fn(char) -> bool| {
        !s.is_empty()
            && s.split('.')
                .all(|part| !part.is_empty() && part.chars().all(allowed))
    };
    dot_atom(local, &atext)
        && dot_atom(domain, &|c: char| c.is_ascii_alphanumeric() || c == '-')
        && domain.contains('.')
}

/// Why a sender identity was refused: the field and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SenderRejected {
    /// The field.
    pub field: &'static str,
    /// Why.
    pub reason: &'static str,
}

/// Who a tenant's email comes from. Built by [`SenderIdentity::new`], which
/// refuses addresses a message cannot carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SenderIdentity {
    /// The From address.
    pub from_email: Email,
    /// The From display name.
    pub from_name: Option<DisplayName>,
    /// Where replies go, when not the From address.
    pub reply_to: Option<Email>,
    /// Where recipients unsubscribe (default: the From address, subject
    /// "unsubscribe").
    pub unsubscribe: Option<Unsubscribe>,
}

impl SenderIdentity {
    /// A sender whose addresses can go on the wire as they are.
    ///
    /// # Errors
    /// [`SenderRejected`] naming `from_email` or `reply_to`.
    pub fn new(
        from_email: Email,
        from_name: Option<DisplayName>,
        reply_to: Option<Email>,
        unsubscribe: Option<Unsubscribe>,
    ) -> Result<Self, SenderRejected> {
        const PLAIN: &str = "must be a plain ASCII address (letters, digits, dots and \
                             !#$%&'*+/=?^_`{|}~- before the @; a dotted domain after it)";
        if !is_plain_address(&from_email) {
            return Err(SenderRejected {
                field: "from_email",
                reason: PLAIN,
            });
        }
        if reply_to.as_ref().is_some_and(|r| !is_plain_address(r)) {
            return Err(SenderRejected {
                field: "reply_to",
                reason: PLAIN,
            });
        }
        Ok(Self {
            from_email,
            from_name,
            reply_to,
            unsubscribe,
        })
    }
}

/// The email a sent approval becomes: everything the SMTP adapter puts on
/// the wire, decided here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundEmail {
    /// The delivery it carries.
    pub delivery: DeliveryId,
    /// `Message-ID` (without angle brackets): derived from the approval, so
    /// every attempt of one message carries the same id and a receiver can
    /// recognise a redelivery.
    pub message_id: String,
    /// From: name and address.
    pub from: (Option<String>, Email),
    /// To: name and address.
    pub to: (Option<String>, Email),
    /// Reply-To.
    pub reply_to: Option<Email>,
    /// Subject (may be empty).
    pub subject: String,
    /// The plain-text part.
    pub text: String,
    /// The HTML part: the text, escaped, in paragraphs.
    pub html: String,
    /// `List-Unsubscribe` value (with angle brackets).
    pub list_unsubscribe: String,
    /// Whether to add `List-Unsubscribe-Post: List-Unsubscribe=One-Click`.
    pub one_click: bool,
}

impl OutboundEmail {
    /// Composes the email of `delivery` carrying `message` to `recipient`
    /// (named `recipient_name`) from `sender`.
    #[must_use]
    pub fn compose(
        delivery: &Delivery,
        message: &OutboxMessage,
        recipient: (Option<String>, Email),
        sender: &SenderIdentity,
    ) -> Self {
        let from = sender.from_email.as_str();
        let domain = from.rsplit_once('@').map_or("leadline.invalid", |(_, d)| d);
        let unsubscribe = sender.unsubscribe.as_ref().map_or_else(
            || format!("mailto:{from}?subject=unsubscribe"),
            |u| u.as_str().to_owned(),
        );
        let text = message.body.as_str().to_owned();
        Self {
            delivery: delivery.id,
            message_id: format!("approval-{}@{domain}", delivery.approval_id),
            from: (
                sender.from_name.as_ref().map(|n| n.as_str().to_owned()),
                sender.from_email.clone(),
            ),
            to: recipient,
            reply_to: sender.reply_to.clone(),
            subject: message
                .subject
                .as_ref()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
            html: html_of(&text),
            text,
            list_unsubscribe: format!("<{unsubscribe}>"),
            one_click: sender
                .unsubscribe
                .as_ref()
                .is_some_and(Unsubscribe::is_one_click),
        }
    }
}

/// Plain text as a small HTML document: escaped, blank lines between
/// paragraphs, single line breaks kept.
#[must_use]
pub fn html_of(text: &str) -> String {
    let mut html = String::from("<!DOCTYPE html><html><body>");
    for paragraph in text.replace("\r\n", "\n").split("\n\n") {
        if paragraph.trim().is_empty() {
            continue;
        }
        html.push_str("<p>");
        for (i, line) in paragraph.split('\n').enumerate() {
            if i > 0 {
                html.push_str("<br>");
            }
            for c in line.chars() {
                match c {
                    '&' => html.push_str("&amp;"),
                    '<' => html.push_str("&lt;"),
                    '>' => html.push_str("&gt;"),
                    '"' => html.push_str("&quot;"),
                    '\'' => html.push_str("&#39;"),
                    c => html.push(c),
                }
            }
        }
        html.push_str("</p>");
    }
    html.push_str("</body></html>");
    html
}

impl Delivery {
    /// The timeline event a final `decision` leaves (none for a retry): the
    /// message delivered, bounced (refused for good by the destination), or
    /// failed (out of attempts, or nowhere to deliver), with the reason.
    #[must_use]
    pub fn event_of(
        &self,
        decision: Decision,
        outcome: &AttemptOutcome,
        now: DateTime<Utc>,
    ) -> Option<Event> {
        let kind = match (decision, outcome) {
            (Decision::RetryAt(_), _) => return None,
            (Decision::Delivered, _) if self.channel == Channel::Email => EventKind::EmailDelivered,
            (Decision::Delivered, _) => EventKind::MessageDelivered,
            (Decision::Failed, AttemptOutcome::Permanent { .. }) => EventKind::EmailBounced,
            (Decision::Failed | Decision::Dead, _) => EventKind::DeliveryFailed,
        };
        let kind = match (kind, self.channel) {
            // Only email has a bounce; other channels fail.
            (EventKind::EmailBounced, c) if c != Channel::Email => EventKind::DeliveryFailed,
            (k, _) => k,
        };
        let (content, reason) = match decision {
            Decision::Delivered => (None, None),
            _ => (
                EventContent::new(&truncate(outcome.detail(), 2000)).ok(),
                Some(outcome.detail()),
            ),
        };
        let metadata = serde_json::json!({
            "delivery_id": self.id,
            "approval_id": self.approval_id,
            "channel": self.channel,
            "attempts": self.attempts,
            "reason": reason.map(|r| truncate(r, 2000)),
        });
        Some(Event {
            id: EventId::new(),
            tenant_id: self.tenant_id,
            lead_id: self.lead_id,
            kind,
            direction: Direction::Outbound,
            content,
            occurred_at: now,
            actor: None,
            metadata: Metadata::new(metadata).unwrap_or_default(),
            created_at: now,
        })
    }
}

/// At most `max` characters of `s`.
#[must_use]
pub fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test fixtures of known-good values")]
mod tests {
    use super::*;

    fn delivery() -> Delivery {
        let now = Utc::now();
        Delivery {
            id: DeliveryId::new(),
            tenant_id: TenantId::new(),
            approval_id: ApprovalId::new(),
            lead_id: LeadId::new(),
            channel: Channel::Email,
            status: DeliveryStatus::Pending,
            attempts: 1,
            next_attempt_at: Some(now),
            last_error: None,
            created_at: now,
            updated_at: now,
            finished_at: None,
        }
    }

    fn transient(retry_after: Option<Duration>) -> AttemptOutcome {
        AttemptOutcome::Transient {
            reason: "451 try later".into(),
            retry_after,
        }
    }

    #[test]
    fn backoff_doubles_within_the_upper_half_and_stops_at_the_cap() {
        let policy = RetryPolicy {
            max_attempts: 20,
            base: Duration::from_secs(10),
            cap: Duration::from_secs(60),
        };
        assert_eq!(policy.backoff(1, 0.0), Duration::from_secs(5));
        assert_eq!(policy.backoff(1, 1.0), Duration::from_secs(10));
        assert_eq!(policy.backoff(2, 0.0), Duration::from_secs(10));
        assert_eq!(policy.backoff(3, 0.5), Duration::from_secs(30));
        assert_eq!(policy.backoff(4, 1.0), Duration::from_secs(60), "capped");
        assert_eq!(
            policy.backoff(40, 1.0),
            Duration::from_secs(60),
            "no overflow"
        );
        assert_eq!(policy.backoff(u32::MAX, 0.0), Duration::from_secs(30));
    }

    #[test]
    fn outcomes_decide_retry_fail_or_dead_letter() {
        let policy = RetryPolicy {
            max_attempts: 3,
            base: Duration::from_secs(10),
            cap: Duration::from_secs(60),
        };
        let now = Utc::now();
        let ok = AttemptOutcome::Delivered {
            reply: "250".into(),
        };
        assert_eq!(policy.decide(1, &ok, now, 0.0), Decision::Delivered);
        let refused = AttemptOutcome::Permanent {
            reason: "550".into(),
        };
        assert_eq!(policy.decide(1, &refused, now, 0.0), Decision::Failed);
        assert_eq!(
            policy.decide(1, &transient(None), now, 0.0),
            Decision::RetryAt(now + chrono::Duration::seconds(5))
        );
        assert_eq!(
            policy.decide(2, &transient(Some(Duration::from_secs(600))), now, 0.0),
            Decision::RetryAt(now + chrono::Duration::seconds(600)),
            "Retry-After wins when later"
        );
        assert_eq!(
            policy.decide(
                1,
                &transient(Some(Duration::from_secs(u64::MAX / 4))),
                now,
                0.0
            ),
            Decision::RetryAt(now + chrono::Duration::from_std(MAX_RETRY_AFTER).unwrap()),
            "an absurd Retry-After is bounded"
        );
        assert_eq!(policy.decide(3, &transient(None), now, 0.0), Decision::Dead);
    }

    #[test]
    fn breaker_opens_after_the_threshold_probes_once_and_closes_on_success() {
        let t0 = Utc::now();
        let s = |n| chrono::Duration::seconds(n);
        let mut b = CircuitBreaker::new(3, Duration::from_secs(10), Duration::from_secs(40));
        for _ in 0..2 {
            assert_eq!(b.admit(t0), Ok(()));
            b.record(false, t0);
        }
        assert!(!b.is_open(), "two failures are below the threshold");
        b.record(false, t0);
        assert_eq!(b.admit(t0 + s(1)), Err(t0 + s(10)), "open");
        assert_eq!(b.admit(t0 + s(10)), Ok(()), "one probe after the cool-down");
        assert_eq!(
            b.admit(t0 + s(10)),
            Err(t0 + s(15)),
            "only one probe at a time; the others ask again soon, not a whole cool-down later"
        );
        b.record(false, t0 + s(11));
        assert_eq!(
            b.admit(t0 + s(12)),
            Err(t0 + s(31)),
            "a failed probe doubles it"
        );
        assert_eq!(b.admit(t0 + s(31)), Ok(()));
        b.record(false, t0 + s(31));
        b.record(false, t0 + s(31));
        assert_eq!(b.admit(t0 + s(32)), Err(t0 + s(71)), "capped at 40 s");
        assert_eq!(b.admit(t0 + s(71)), Ok(()));
        b.record(true, t0 + s(71));
        assert!(!b.is_open());
        assert_eq!(b.admit(t0 + s(72)), Ok(()));
    }

    #[test]
    fn a_sender_needs_plain_addresses() {
        let e = |s: &str| Email::parse(s).unwrap();
        assert!(SenderIdentity::new(e("team.one+x@acme.example"), None, None, None).is_ok());
        for bad in [
            "a\"b@acme.example",
            "a..b@acme.example",
            "ä@acme.example",
            "a(b)@acme.example",
        ] {
            let addr = Email::parse(bad).expect("a lead may have this address");
            assert_eq!(
                SenderIdentity::new(addr.clone(), None, None, None).map_err(|r| r.field),
                Err("from_email"),
                "{bad}"
            );
            assert_eq!(
                SenderIdentity::new(e("ok@acme.example"), None, Some(addr), None)
                    .map_err(|r| r.field),
                Err("reply_to"),
                "{bad}"
            );
        }
    }

    #[test]
    fn unsubscribe_accepts_mailto_and_https_only() {
        assert!(Unsubscribe::parse("mailto:stop@example.com?subject=unsubscribe").is_ok());
        let url = Unsubscribe::parse("https://example.com/u/abc").expect("url");
        assert!(url.is_one_click());
        for bad in [
            "",
            "http://example.com/u",
            "https://",
            "mailto:nobody",
            "https://example.com/a b",
            "https://example.com/<x>",
            "https://example.com/\r\nBcc: x@y.z",
            "https://exämple.com",
            " https://example.com/u",
        ] {
            assert!(Unsubscribe::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_email_keeps_its_message_id_across_attempts_and_escapes_its_html() {
        let d = delivery();
        let message = OutboxMessage {
            subject: Some(Subject::new("Hello").unwrap()),
            body: MessageBody::new("Hi <Ada> & co,\nline two\n\nBye").unwrap(),
        };
        let sender = SenderIdentity {
            from_email: Email::parse("team@acme.example").unwrap(),
            from_name: Some(DisplayName::new("Acme").unwrap()),
            reply_to: None,
            unsubscribe: None,
        };
        let to = (
            Some("Ada".to_owned()),
            Email::parse("ada@example.com").unwrap(),
        );
        let first = OutboundEmail::compose(&d, &message, to.clone(), &sender);
        let mut later = d.clone();
        later.attempts = 5;
        assert_eq!(
            first.message_id,
            OutboundEmail::compose(&later, &message, to, &sender).message_id
        );
        assert_eq!(
            first.message_id,
            format!("approval-{}@acme.example", d.approval_id)
        );
        assert_eq!(
            first.html,
            "<!DOCTYPE html><html><body><p>Hi &lt;Ada&gt; &amp; co,<br>line two</p><p>Bye</p></body></html>"
        );
        assert_eq!(
            first.list_unsubscribe,
            "<mailto:team@acme.example?subject=unsubscribe>"
        );
        assert!(!first.one_click);
    }

    #[test]
    fn final_outcomes_leave_one_event_of_the_right_kind() {
        let d = delivery();
        let now = Utc::now();
        let ok = AttemptOutcome::Delivered {
            reply: "250".into(),
        };
        let bounce = AttemptOutcome::Permanent {
            reason: "550 no such user".into(),
        };
        let nowhere = AttemptOutcome::Undeliverable {
            reason: "no email".into(),
        };
        let kind = |dec, out: &AttemptOutcome| d.event_of(dec, out, now).map(|e| e.kind);
        assert_eq!(
            kind(Decision::Delivered, &ok),
            Some(EventKind::EmailDelivered)
        );
        assert_eq!(
            kind(Decision::Failed, &bounce),
            Some(EventKind::EmailBounced)
        );
        assert_eq!(
            kind(Decision::Failed, &nowhere),
            Some(EventKind::DeliveryFailed)
        );
        assert_eq!(
            kind(Decision::Dead, &transient(None)),
            Some(EventKind::DeliveryFailed)
        );
        assert_eq!(kind(Decision::RetryAt(now), &transient(None)), None);
        let event = d.event_of(Decision::Failed, &bounce, now).expect("event");
        assert_eq!(
            event.content.as_ref().map(EventContent::as_str),
            Some("550 no such user")
        );
        assert!(EventKind::EmailDelivered.is_system());
        let text = Delivery {
            channel: Channel::Sms,
            ..d.clone()
        };
        let kind = |dec, out: &AttemptOutcome| text.event_of(dec, out, now).map(|e| e.kind);
        assert_eq!(
            kind(Decision::Delivered, &ok),
            Some(EventKind::MessageDelivered)
        );
        assert_eq!(
            kind(Decision::Failed, &bounce),
            Some(EventKind::DeliveryFailed),
            "only email bounces"
        );
        assert!(EventKind::MessageDelivered.is_system());
    }

    #[test]
    fn a_text_or_call_needs_a_phone_and_an_email_an_address() {
        let nobody = Recipient::default();
        assert!(nobody.unreachable_on(Channel::Email).is_some());
        assert!(nobody.unreachable_on(Channel::Sms).is_some());
        assert!(nobody.unreachable_on(Channel::Call).is_some());
        assert_eq!(nobody.unreachable_on(Channel::Linkedin), None);
        let phone = Recipient {
            phone: Some(crate::Phone::parse("+1 555 0100").unwrap()),
            ..Recipient::default()
        };
        assert_eq!(phone.unreachable_on(Channel::Sms), None);
        assert!(phone.unreachable_on(Channel::Email).is_some());
    }
}

//! Privacy erasure: what removing one person's personal data changes.
//!
//! An erasure anonymises rather than deletes, so that every count stays
//! what it was (the funnel still holds the lead, the agent still drafted
//! the approval): the person's leads keep their status, owner, tags,
//! source and dates, and lose their names, email, phone, company and
//! free-form metadata; their events lose their text and every metadata
//! value that is not one of the system's own (a status, a channel, an id);
//! their approvals and deliveries lose their texts, and a draft still
//! waiting for a decision is cancelled (there is nobody left to send it
//! to). Audit records about any of them keep everything but their changed
//! fields, which an [`erasure marker`](Erasure::marker) replaces; the
//! record's content hash covers those fields only through their digest
//! ([`crate::audit::changes_digest`]), which the store keeps beside the
//! marker, so the chain still verifies. The erasure's own record, the
//! tombstone, names the leads by id and how much was erased, never the
//! person.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::{
    Approval, ApprovalStatus, AuditContext, AuditRecord, Change, ChangeType, Channel, Event,
    EventKind, Lead, LeadStatus, MessageBody, Metadata, PersonData, PersonName, RejectionReason,
    TenantId,
};

/// What replaces an erased text.
pub const ERASED: &str = "[erased]";

/// What an erasure's own audit record shows for a value it erased.
pub const WITHHELD: &str = "[withheld]";

/// One erasure: the person's data as read, and what each row becomes.
#[derive(Debug, Clone, PartialEq)]
pub struct Erasure {
    /// Its id: the tombstone's entity id, and the marker's.
    pub id: uuid::Uuid,
    /// When it ran.
    pub at: DateTime<Utc>,
    /// The leads, anonymised (a version on).
    pub leads: Vec<Lead>,
    /// Each event's id and the metadata it keeps; its content goes.
    pub events: Vec<(uuid::Uuid, Metadata)>,
    /// The same for archived events.
    pub archived_events: Vec<(uuid::Uuid, Metadata)>,
    /// The approvals, their texts erased, pending ones cancelled.
    pub approvals: Vec<Approval>,
    /// The approvals this erasure cancelled.
    pub cancelled: Vec<uuid::Uuid>,
    /// The deliveries' ids.
    pub deliveries: Vec<uuid::Uuid>,
    /// Every id an audit record or a change about the person can name.
    pub entities: Vec<uuid::Uuid>,
    /// What identifies the person in text the store cannot take apart (a
    /// rejected import line, a replayable response): their email and phone
    /// numbers.
    pub needles: Vec<String>,
    /// The last digits of their phone numbers (at most ten, at least
    /// seven), to find a number however it was written.
    pub digits: Vec<String>,
    /// The search words the leads held, which the tenant's vocabulary may
    /// drop when no other lead holds them.
    pub words: Vec<String>,
    /// Each lead as its erasure's change shows it was: every field that
    /// changed and was personal reads [`ERASED`].
    pub before: Vec<Value>,
}

/// What an erasure did, as the API answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErasureReport {
    /// The erasure's id, the tombstone's entity id in the audit trail.
    pub erasure_id: uuid::Uuid,
    /// When it ran.
    pub erased_at: DateTime<Utc>,
    /// The leads anonymised, by id.
    pub leads: Vec<uuid::Uuid>,
    /// Events whose text and personal metadata went.
    pub events: usize,
    /// Archived events likewise.
    pub archived_events: usize,
    /// Approvals whose texts went.
    pub approvals: usize,
    /// Pending approvals cancelled.
    pub cancelled_approvals: usize,
    /// Deliveries whose texts went.
    pub deliveries: usize,
    /// Audit records whose changed fields were replaced by the marker.
    pub audit_records: u64,
    /// Other rows scrubbed: change-log entries, delivery attempts' details,
    /// rejected import lines, stored idempotent responses.
    pub other_rows: u64,
}

impl Erasure {
    /// The erasure of everything `data` holds, as of `at`.
    #[must_use]
    pub fn of(data: &PersonData, id: uuid::Uuid, at: DateTime<Utc>) -> Self {
        let at = chrono::SubsecRound::trunc_subsecs(at, 6);
        let mut needles: Vec<String> = vec![data.email.as_str().to_owned()];
        let mut digits: Vec<String> = Vec::new();
        let mut words: Vec<String> = Vec::new();
        for lead in &data.leads {
            if let Some(phone) = &lead.phone {
                needles.push(phone.as_str().to_owned());
                let all: Vec<char> = phone
                    .as_str()
                    .chars()
                    .filter(char::is_ascii_digit)
                    .collect();
                if all.len() >= 7 {
                    digits.push(all[all.len().saturating_sub(10)..].iter().collect());
                }
            }
            words.extend(
                crate::search::search_text(lead)
                    .split(' ')
                    .filter(|w| !w.is_empty())
                    .map(str::to_owned),
            );
        }
        needles.sort();
        needles.dedup();
        digits.sort();
        digits.dedup();
        words.sort();
        words.dedup();
        let approvals: Vec<Approval> = data.approvals.iter().map(|a| erased(a, at)).collect();
        let cancelled = data
            .approvals
            .iter()
            .filter(|a| a.status == ApprovalStatus::Pending)
            .map(|a| a.id.as_uuid())
            .collect();
        let kept = |e: &Event| (e.id.as_uuid(), kept_metadata(e));
        let leads: Vec<Lead> = data.leads.iter().map(|l| anonymised(l, at)).collect();
        let before = data
            .leads
            .iter()
            .zip(&leads)
            .map(|(was, now)| masked(was, now))
            .collect();
        Self {
            id,
            at,
            leads,
            events: data.events.iter().map(kept).collect(),
            archived_events: data.archived_events.iter().map(kept).collect(),
            approvals,
            cancelled,
            deliveries: data.deliveries.iter().map(|d| d.id.as_uuid()).collect(),
            entities: data
                .entity_ids()
                .into_iter()
                .chain(data.deliveries.iter().map(|d| d.id.as_uuid()))
                .collect(),
            needles,
            digits,
            words,
            before,
        }
    }

    /// The text that replaces the changed fields of an audit record and
    /// the data of a change-log entry about the person.
    #[must_use]
    pub fn marker(&self) -> String {
        serde_json::json!({ "erased": self.id }).to_string()
    }

    /// The changes the erasure publishes: each lead as it now is (so other
    /// instances and subscribers drop what they hold), with what it was
    /// masked (its audit record names the fields that changed, never their
    /// old values), and each cancelled approval.
    #[must_use]
    pub fn changes(&self) -> Vec<Change> {
        self.leads
            .iter()
            .zip(&self.before)
            .map(|(l, was)| Change::lead(ChangeType::LeadUpdated, l).was(was))
            .chain(
                self.approvals
                    .iter()
                    .filter(|a| self.cancelled.contains(&a.id.as_uuid()))
                    .map(Change::approval),
            )
            .collect()
    }

    /// The report of this erasure, given what the store counted.
    #[must_use]
    pub fn report(&self, audit_records: u64, other_rows: u64) -> ErasureReport {
        ErasureReport {
            erasure_id: self.id,
            erased_at: self.at,
            leads: self.leads.iter().map(|l| l.id.as_uuid()).collect(),
            events: self.events.len(),
            archived_events: self.archived_events.len(),
            approvals: self.approvals.len(),
            cancelled_approvals: self.cancelled.len(),
            deliveries: self.deliveries.len(),
            audit_records,
            other_rows,
        }
    }

    /// The tombstone: who asked, which leads by id and how much, never the
    /// person.
    #[must_use]
    pub fn record(&self, tenant: TenantId, context: &AuditContext) -> AuditRecord {
        let summary = serde_json::json!({
            "leads": self.leads.iter().map(|l| l.id.as_uuid()).collect::<Vec<_>>(),
            "events": self.events.len(),
            "archived_events": self.archived_events.len(),
            "approvals": self.approvals.len(),
            "cancelled_approvals": self.cancelled.len(),
            "deliveries": self.deliveries.len(),
        });
        AuditRecord::new(
            tenant,
            self.at,
            context,
            ("person", self.id, "person.erased"),
            None,
            Some(&summary),
        )
    }
}

/// Whether `changes` (an audit record's changed fields) is an erasure
/// marker: an object holding only the erasure's id. A record whose fields
/// were replaced verifies through the digest kept beside it only when its
/// fields are such a marker, so an erasure can hide what a record said but
/// never make it say something else.
#[must_use]
pub fn is_marker(changes: &str) -> bool {
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(changes) else {
        return false;
    };
    map.len() == 1
        && map
            .get("erased")
            .and_then(Value::as_str)
            .is_some_and(|id| id.parse::<uuid::Uuid>().is_ok())
}

/// `lead` without personal data: names [`ERASED`]; email, phone, company
/// and metadata gone; everything that is counted kept.
#[must_use]
pub fn anonymised(lead: &Lead, at: DateTime<Utc>) -> Lead {
    let name = PersonName::new(ERASED).unwrap_or_else(|_| unreachable!("a valid constant"));
    Lead {
        first_name: name.clone(),
        last_name: name,
        email: None,
        phone: None,
        company: None,
        metadata: Metadata::default(),
        updated_at: at.max(lead.updated_at),
        version: lead.version + 1,
        ..lead.clone()
    }
}

/// `was` as an erasure's audit record may show it: `now`'s fields, except
/// that each field that changed reads what it was when that says nothing
/// about the person (the version, the time) and [`WITHHELD`] otherwise
/// (`null` stays `null`: nothing was held).
fn masked(was: &Lead, now: &Lead) -> Value {
    let (Ok(Value::Object(was)), Ok(Value::Object(mut out))) =
        (serde_json::to_value(was), serde_json::to_value(now))
    else {
        return Value::Null;
    };
    for (field, value) in &mut out {
        let old = was.get(field).cloned().unwrap_or(Value::Null);
        if old != *value {
            *value = match field.as_str() {
                "version" | "updated_at" => old,
                _ if old.is_null() => Value::Null,
                _ => Value::String(WITHHELD.to_owned()),
            };
        }
    }
    Value::Object(out)
}

/// `approval` with its texts erased; a pending one is cancelled.
#[must_use]
pub fn erased(approval: &Approval, at: DateTime<Utc>) -> Approval {
    let body = MessageBody::new(ERASED).unwrap_or_else(|_| unreachable!("a valid constant"));
    let reason = approval
        .rejection_reason
        .as_ref()
        .map(|_| RejectionReason::new(ERASED).unwrap_or_else(|_| unreachable!("a valid constant")));
    let mut out = Approval {
        subject: None,
        body,
        rejection_reason: reason,
        updated_at: at.max(approval.updated_at),
        ..approval.clone()
    };
    if approval.status == ApprovalStatus::Pending {
        out.status = ApprovalStatus::Cancelled;
        out.decided_at = Some(out.updated_at);
    }
    out
}

/// The part of `event`'s metadata that cannot be personal: the values the
/// system itself writes, each kept only when it is what the system would
/// write there (a channel name, a status, an id, a count). Anything else,
/// a subject, a failure's text, a caller's own key, goes.
#[must_use]
pub fn kept_metadata(event: &Event) -> Metadata {
    let is_id = |v: &Value| v.as_str().is_some_and(|s| s.parse::<uuid::Uuid>().is_ok());
    let parses = |v: &Value, ok: fn(&str) -> bool| v.as_str().is_some_and(ok);
    let mut kept = Map::new();
    for (key, value) in event.metadata.as_map() {
        let keep = match key.as_str() {
            "channel" => parses(value, |s| s.parse::<Channel>().is_ok()),
            "from" | "to" => {
                event.kind == EventKind::StatusChanged
                    && parses(value, |s| s.parse::<LeadStatus>().is_ok())
            }
            "decision" => parses(value, |s| s.parse::<ApprovalStatus>().is_ok()),
            "action" => parses(value, |s| matches!(s, "created" | "updated")),
            "approval_id" | "delivery_id" | "import_id" => is_id(value),
            "attempts" | "line" => value.is_u64(),
            _ => false,
        };
        if keep {
            kept.insert(key.clone(), value.clone());
        }
    }
    Metadata::new(Value::Object(kept)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Direction, Email, EventId, EventKind, LeadId, fixtures};

    fn event(kind: EventKind, metadata: Value) -> Event {
        Event {
            id: EventId::new(),
            tenant_id: TenantId::new(),
            lead_id: LeadId::new(),
            kind,
            direction: Direction::Internal,
            content: None,
            occurred_at: Utc::now(),
            actor: None,
            metadata: Metadata::new(metadata).expect("valid"),
            created_at: Utc::now(),
        }
    }

    #[test]
    fn kept_metadata_holds_only_what_the_system_writes() {
        let approval = uuid::Uuid::now_v7().to_string();
        let moved = event(
            EventKind::StatusChanged,
            serde_json::json!({"from": "new", "to": "won", "note": "ada@example.com"}),
        );
        assert_eq!(
            Value::Object(kept_metadata(&moved).as_map().clone()),
            serde_json::json!({"from": "new", "to": "won"})
        );
        // An inbound mail's `from` is an address, not a status.
        let mail = event(
            EventKind::EmailReceived,
            serde_json::json!({"from": "ada@example.com", "channel": "email"}),
        );
        assert_eq!(
            Value::Object(kept_metadata(&mail).as_map().clone()),
            serde_json::json!({"channel": "email"})
        );
        let sent = event(
            EventKind::EmailSent,
            serde_json::json!({"approval_id": approval, "channel": "email",
                               "subject": "Hello Ada", "attempts": 2,
                               "reason": "550 ada@example.com unknown",
                               "delivery_id": "ada@example.com"}),
        );
        assert_eq!(
            Value::Object(kept_metadata(&sent).as_map().clone()),
            serde_json::json!({"approval_id": approval, "channel": "email", "attempts": 2})
        );
    }

    #[test]
    fn an_anonymised_lead_keeps_what_is_counted_and_nothing_personal() {
        let mut lead = fixtures::lead_context(TenantId::new(), LeadId::new()).lead;
        lead.email = Some(Email::parse("grace@example.com").expect("valid"));
        lead.metadata = Metadata::new(serde_json::json!({"city": "Arlington"})).expect("valid");
        let at = Utc::now();
        let out = anonymised(&lead, at);
        assert_eq!(out.first_name.as_str(), ERASED);
        assert_eq!(out.last_name.as_str(), ERASED);
        assert_eq!(
            (&out.email, &out.phone, &out.company),
            (&None, &None, &None)
        );
        assert!(out.metadata.as_map().is_empty());
        assert_eq!(
            (out.id, out.status, out.assigned_agent_id, out.created_at),
            (
                lead.id,
                lead.status,
                lead.assigned_agent_id,
                lead.created_at
            )
        );
        assert_eq!(out.version, lead.version + 1);
        let text = crate::search::search_text(&out);
        for personal in [lead.first_name.as_str(), lead.last_name.as_str()] {
            assert!(
                !text.contains(&personal.to_lowercase()),
                "{text} holds {personal}"
            );
        }
    }

    #[test]
    fn the_erasure_audits_which_fields_changed_never_their_old_values() {
        let mut lead = fixtures::lead_context(TenantId::new(), LeadId::new()).lead;
        lead.email = Some(Email::parse("grace@example.com").expect("valid"));
        lead.phone = Some(crate::Phone::parse("+1 (555) 019-2222").expect("valid"));
        lead.metadata = Metadata::new(serde_json::json!({"city": "Arlington"})).expect("valid");
        lead.updated_at = Utc::now() - chrono::Duration::days(1);
        let data = PersonData {
            email: Email::parse("grace@example.com").expect("valid"),
            exported_at: Utc::now(),
            leads: vec![lead.clone()],
            events: Vec::new(),
            archived_events: Vec::new(),
            approvals: Vec::new(),
            deliveries: Vec::new(),
            audit: Vec::new(),
        };
        let erasure = Erasure::of(&data, uuid::Uuid::now_v7(), Utc::now());
        assert_eq!(erasure.digits, vec!["5550192222".to_owned()]);
        let changes = erasure.changes();
        let record = AuditRecord::of_change(&changes[0], &AuditContext::default());
        let fields: Value = serde_json::from_str(&record.changes).expect("json");
        let mut names: Vec<&str> = fields
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "email",
                "first_name",
                "last_name",
                "metadata",
                "phone",
                "version"
            ]
        );
        for personal in ["grace@", "Grace", "Hopper", "Arlington", "555"] {
            assert!(!record.changes.contains(personal), "{}", record.changes);
        }
        assert_eq!(fields["version"]["old"], lead.version);
    }

    #[test]
    fn only_a_marker_of_an_id_is_a_marker() {
        let erasure = Erasure::of(
            &PersonData {
                email: Email::parse("ada@example.com").expect("valid"),
                exported_at: Utc::now(),
                leads: Vec::new(),
                events: Vec::new(),
                archived_events: Vec::new(),
                approvals: Vec::new(),
                deliveries: Vec::new(),
                audit: Vec::new(),
            },
            uuid::Uuid::now_v7(),
            Utc::now(),
        );
        assert!(is_marker(&erasure.marker()));
        assert_eq!(erasure.needles, vec!["ada@example.com".to_owned()]);
        for not in [
            r#"{"erased":"not an id"}"#,
            r#"{"erased":"0190b6a4-0000-7000-8000-000000000000","email":{"old":"x"}}"#,
            r#"{"email":{"old":"ada@example.com","new":null}}"#,
            "[]",
            "nonsense",
        ] {
            assert!(!is_marker(not), "{not}");
        }
        let record = erasure.record(TenantId::new(), &AuditContext::default());
        assert_eq!(record.action, "person.erased");
        assert!(!record.changes.contains("ada@"), "{}", record.changes);
    }
}

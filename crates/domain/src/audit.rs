//! The audit trail: who changed what, when, on which request, as one
//! [`AuditRecord`] per write, written in the write's own transaction; and
//! the hash chain that makes each tenant's trail tamper-evident.
//!
//! What a record holds is decided here: the action (`lead.updated`,
//! `key.revoked` …), the entity and its id, and the fields that changed
//! with their old and new values ([`diff`]), computed from the entity as
//! the API shows it before and after the write.
//!
//! The chain: each record has a content hash over a canonical encoding of
//! everything it says ([`AuditRecord::content_hash`]); sealing gives every
//! record, in its tenant's log order, the hash of its predecessor and its
//! own link hash `sha256(prev || content_hash)` ([`link`]). [`verify`]
//! walks a tenant's sealed records and names the first one that was
//! edited, deleted under, or moved. The chain proves the trail was not
//! rewritten after sealing *unless* the whole chain from the edit onwards
//! was recomputed: the head hash [`verify`] returns is what an operator
//! records elsewhere to rule that out too.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::{
    AgentId, ApiKeyId, Approval, ApprovalAction, Change, ChangePosition, TenantId, UserId,
};

/// A link hash, content hash or chain head: SHA-256.
pub type Hash = [u8; 32];

/// The predecessor of a tenant's first record.
pub const GENESIS: Hash = [0; 32];

/// Who made a write: the API key it came with, or the console user, and
/// the agent acting where one is known. All `None` is leadline itself (a
/// delivery outcome, a retention job, the command line).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Actor {
    /// The API key the request authenticated with.
    pub key_id: Option<ApiKeyId>,
    /// The console user who signed in.
    pub user_id: Option<UserId>,
    /// The agent acting.
    pub agent_id: Option<AgentId>,
}

/// Fields left out of a [`diff`]: bookkeeping every write moves, which the
/// record carries anyway (its `at`).
const NOT_DIFFED: &[&str] = &["updated_at"];

/// The fields whose values differ between `before` and `after` (JSON
/// objects, the entity as the API shows it), as `{field: {old, new}}`;
/// a field missing on one side is `null` there. No `before` is a creation:
/// every field of `after` is new. No `after` is a removal.
#[must_use]
pub fn diff(before: Option<&Value>, after: Option<&Value>) -> Map<String, Value> {
    let empty = Map::new();
    let fields = |v: Option<&Value>| v.and_then(Value::as_object).unwrap_or(&empty).clone();
    let (old, new) = (fields(before), fields(after));
    let mut out = Map::new();
    for key in old.keys().chain(new.keys()) {
        if NOT_DIFFED.contains(&key.as_str()) || out.contains_key(key) {
            continue;
        }
        let (o, n) = (
            old.get(key).cloned().unwrap_or(Value::Null),
            new.get(key).cloned().unwrap_or(Value::Null),
        );
        if o != n {
            let mut pair = Map::new();
            pair.insert("old".into(), o);
            pair.insert("new".into(), n);
            out.insert(key.clone(), Value::Object(pair));
        }
    }
    out
}

/// One audited write, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Its tenant.
    pub tenant_id: TenantId,
    /// When (to the microsecond, as both stores keep it).
    pub at: DateTime<Utc>,
    /// Who.
    pub actor: Actor,
    /// The request it was made on (`X-Request-Id`), if any.
    pub request_id: Option<String>,
    /// What kind of thing: `lead`, `agent`, `approval`, `event`, `key`,
    /// `user`, `tenant`, `person`.
    pub entity: String,
    /// Which one.
    pub entity_id: uuid::Uuid,
    /// What happened: `{entity}.{what}`.
    pub action: String,
    /// The changed fields, `{field: {old, new}}`, as JSON text: the text
    /// is what the content hash covers, kept byte for byte.
    pub changes: String,
}

/// The encoding version of [`AuditRecord::content_hash`].
const CONTENT_VERSION: u8 = 1;

impl AuditRecord {
    /// A record of `action` on `entity`/`entity_id` at `at`, with the fields
    /// that differ between `before` and `after`.
    #[must_use]
    pub fn new(
        tenant_id: TenantId,
        at: DateTime<Utc>,
        context: &AuditContext,
        (entity, entity_id, action): (&str, uuid::Uuid, &str),
        before: Option<&Value>,
        after: Option<&Value>,
    ) -> Self {
        Self {
            tenant_id,
            at: chrono::SubsecRound::trunc_subsecs(at, 6),
            actor: context.actor,
            request_id: context.request_id.clone(),
            entity: entity.to_owned(),
            entity_id,
            action: action.to_owned(),
            changes: Value::Object(diff(before, after)).to_string(),
        }
    }

    /// The record of `change` (the change feed's entry for the same write).
    /// Where the write acted as an agent (an event's actor, an approval's
    /// drafter or decider) and the caller named none, that agent is the
    /// record's.
    #[must_use]
    pub fn of_change(change: &Change, context: &AuditContext) -> Self {
        let mut record = Self::new(
            change.tenant_id,
            change.at,
            context,
            (change.kind.entity(), change.entity_id, change.kind.as_str()),
            change.before.as_ref(),
            Some(&change.data),
        );
        if record.actor.agent_id.is_none() {
            record.actor.agent_id = acting_agent(change);
        }
        record
    }

    /// The hash of everything the record says, over a canonical encoding (a
    /// JSON array of its fields in a fixed order, the time as microseconds,
    /// the changed fields as their own digest: a privacy erasure may replace
    /// personal values in them, keeping the digest, without breaking the
    /// chain).
    #[must_use]
    pub fn content_hash(&self) -> Hash {
        self.content_hash_over(&changes_digest(&self.changes))
    }

    /// The content hash with `digest` standing for the changed fields: a
    /// record whose fields an erasure replaced is checked with the digest
    /// kept from before.
    #[must_use]
    pub fn content_hash_over(&self, digest: &[u8]) -> Hash {
        let id = |v: Option<uuid::Uuid>| v.map(|u| u.to_string());
        let canonical = serde_json::json!([
            CONTENT_VERSION,
            self.tenant_id.as_uuid().to_string(),
            self.at.timestamp_micros(),
            id(self.actor.key_id.map(|k| k.as_uuid())),
            id(self.actor.user_id.map(|u| u.as_uuid())),
            id(self.actor.agent_id.map(|a| a.as_uuid())),
            self.request_id,
            self.entity,
            self.entity_id.to_string(),
            self.action,
            hex(digest),
        ]);
        Sha256::digest(canonical.to_string().as_bytes()).into()
    }
}

/// The digest of a record's changed fields (their text), as its content
/// hash covers them.
#[must_use]
pub fn changes_digest(changes: &str) -> Hash {
    Sha256::digest(changes.as_bytes()).into()
}

/// The agent a change shows acting, for records whose caller named none.
fn acting_agent(change: &Change) -> Option<AgentId> {
    let field = match change.kind {
        crate::ChangeType::EventRecorded => "actor",
        crate::ChangeType::ApprovalDrafted => "requested_by",
        crate::ChangeType::ApprovalEdited => "edited_by",
        crate::ChangeType::ApprovalApproved
        | crate::ChangeType::ApprovalRejected
        | crate::ChangeType::ApprovalCancelled => "decided_by",
        crate::ChangeType::ApprovalSent => "sent_by",
        _ => return None,
    };
    change
        .data
        .get(field)
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
}

/// The approval as it was before `action` moved it to where it is: the
/// action's starting status, and the fields it sets still empty. (A
/// transition is one conditional UPDATE; reading the row first would cost
/// every decision a round trip.)
#[must_use]
pub fn approval_before(approval: &Approval, action: &ApprovalAction) -> Value {
    let mut before = serde_json::to_value(approval).unwrap_or(Value::Null);
    if let Some(fields) = before.as_object_mut() {
        fields.insert(
            "status".into(),
            serde_json::to_value(action.from_status()).unwrap_or(Value::Null),
        );
        let set: &[&str] = match action {
            ApprovalAction::MarkSent { .. } => &["sent_by", "sent_at"],
            ApprovalAction::Reject { .. } => &["decided_by", "decided_at", "rejection_reason"],
            ApprovalAction::Approve { .. } | ApprovalAction::Cancel { .. } => {
                &["decided_by", "decided_at"]
            }
        };
        for field in set {
            fields.insert((*field).into(), Value::Null);
        }
    }
    before
}

/// An API key as its audit records show it: everything but its secret
/// (which the key never holds) and its last use (bookkeeping, not a change).
#[must_use]
pub fn key_view(key: &crate::ApiKey) -> Value {
    serde_json::json!({
        "id": key.id.as_uuid(),
        "name": key.name.to_string(),
        "role": match key.access {
            crate::Access::Role(role) => Some(role.as_str()),
            crate::Access::Scopes(_) => None,
        },
        "scopes": key.access.scopes().map(|set| set.iter().map(crate::Scope::as_str).collect::<Vec<_>>()),
        "prefix": key.prefix.as_ref().map(|p| p.as_str().to_owned()),
        "created_at": key.created_at,
        "expires_at": key.expires_at,
        "revoked_at": key.revoked_at,
        "replaced_by": key.replaced_by.map(|k| k.as_uuid()),
    })
}

/// A tenant as its audit records show it.
#[must_use]
pub fn tenant_view(tenant: &crate::Tenant) -> Value {
    serde_json::json!({
        "id": tenant.id.as_uuid(),
        "slug": tenant.slug.to_string(),
        "name": tenant.name.to_string(),
        "separation_of_duties": tenant.separation_of_duties,
    })
}

/// A console user as their audit records show them: no password hash,
/// only whether there is one.
#[must_use]
pub fn user_view(user: &crate::User) -> Value {
    serde_json::json!({
        "id": user.id.as_uuid(),
        "email": user.email.to_string(),
        "name": user.name.to_string(),
        "role": user.role.as_str(),
        "agent_id": user.agent_id.map(|a| a.as_uuid()),
        "has_password": user.has_password,
        "disabled_at": user.disabled_at,
        "version": user.version,
    })
}

/// What the write a task runs is done on behalf of: set by the HTTP adapter
/// (the API key or console user, the request id) and the command line, read
/// by the store for every record it writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditContext {
    /// Who.
    pub actor: Actor,
    /// The request id.
    pub request_id: Option<String>,
}

/// The link hash of a record with content hash `content` after a record
/// whose link hash is `prev`.
#[must_use]
pub fn link(prev: &Hash, content: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(content);
    h.finalize().into()
}

/// A record as the trail holds it: its place in the tenant's log and, once
/// sealed, its chain hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Its place in the tenant's log (the same order as the change feed's).
    pub position: ChangePosition,
    /// What it says.
    pub record: AuditRecord,
    /// The content hash written with it.
    pub content_hash: Vec<u8>,
    /// The predecessor's link hash, once sealed.
    pub prev_hash: Option<Vec<u8>>,
    /// Its own link hash, once sealed.
    pub hash: Option<Vec<u8>>,
    /// The digest of its changed fields as written, kept when a privacy
    /// erasure replaced them with its marker.
    pub erased_digest: Option<Vec<u8>>,
}

/// As the API shows it: `{id, at, actor, request_id, entity, entity_id,
/// action, changes, hash, prev_hash}`, the changes as JSON and the hashes
/// as hex (absent until sealed).
impl Serialize for AuditEntry {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let r = &self.record;
        // Written by the store from a JSON object; shown as stored.
        let changes: Value = serde_json::from_str(&r.changes).unwrap_or(Value::Null);
        let mut out = s.serialize_struct("AuditEntry", 10)?;
        out.serialize_field("id", &self.position)?;
        out.serialize_field("at", &r.at)?;
        out.serialize_field("actor", &r.actor)?;
        out.serialize_field("request_id", &r.request_id)?;
        out.serialize_field("entity", &r.entity)?;
        out.serialize_field("entity_id", &r.entity_id)?;
        out.serialize_field("action", &r.action)?;
        out.serialize_field("changes", &changes)?;
        out.serialize_field("hash", &self.hash.as_deref().map(hex))?;
        out.serialize_field("prev_hash", &self.prev_hash.as_deref().map(hex))?;
        out.end()
    }
}

/// Where a chain broke, and how.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit entry {position} ({action} on {entity} {entity_id}): {problem}")]
pub struct ChainBreak {
    /// The first entry that does not verify.
    pub position: ChangePosition,
    /// Its action, entity and id, to find it by.
    pub action: String,
    /// Its entity.
    pub entity: String,
    /// Its entity id.
    pub entity_id: uuid::Uuid,
    /// What is wrong with it.
    pub problem: BreakKind,
}

/// What is wrong with the first entry that does not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakKind {
    /// What it says is not what was written (its content hash differs).
    Edited,
    /// Its predecessor is not the entry it was chained to: one was deleted,
    /// inserted or moved before it.
    Unlinked,
    /// Its link hash is not the hash of its predecessor's and its content.
    BadLink,
    /// A sealed entry after an unsealed one: the chain has a hole.
    SealedAfterGap,
}

impl fmt::Display for BreakKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Edited => "its content was changed after it was written",
            Self::Unlinked => {
                "it is not chained to the entry before it (an entry was deleted, inserted or reordered)"
            }
            Self::BadLink => "its link hash does not match its content and predecessor",
            Self::SealedAfterGap => "it is sealed but an entry before it is not",
        })
    }
}

/// How a chain stands after [`verify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChainState {
    /// The last sealed link hash ([`GENESIS`] for none).
    pub head: Hash,
    /// Where the last sealed record is (the start of the log for none).
    pub head_position: ChangePosition,
    /// Sealed entries checked.
    pub sealed: u64,
    /// Entries written but not sealed yet (at the end of the log).
    pub unsealed: u64,
}

impl ChainState {
    /// A chain with nothing checked yet.
    #[must_use]
    pub const fn start() -> Self {
        Self {
            head: GENESIS,
            head_position: ChangePosition { tx: 0, seq: 0 },
            sealed: 0,
            unsealed: 0,
        }
    }

    /// Checks the next `entry` (in log order) against the chain so far.
    ///
    /// # Errors
    /// The [`ChainBreak`] the entry is.
    pub fn check(&mut self, entry: &AuditEntry) -> Result<(), ChainBreak> {
        let fail = |problem| ChainBreak {
            position: entry.position,
            action: entry.record.action.clone(),
            entity: entry.record.entity.clone(),
            entity_id: entry.record.entity_id,
            problem,
        };
        let content = match &entry.erased_digest {
            // Only a marker may stand in for the fields: an erasure hides
            // what a record said, it never says something else.
            Some(digest) if crate::erasure::is_marker(&entry.record.changes) => {
                entry.record.content_hash_over(digest)
            }
            Some(_) => return Err(fail(BreakKind::Edited)),
            None => entry.record.content_hash(),
        };
        if entry.content_hash.as_slice() != content {
            return Err(fail(BreakKind::Edited));
        }
        match (&entry.prev_hash, &entry.hash) {
            (Some(prev), Some(hash)) => {
                if self.unsealed > 0 {
                    return Err(fail(BreakKind::SealedAfterGap));
                }
                if prev.as_slice() != self.head {
                    return Err(fail(BreakKind::Unlinked));
                }
                let expected = link(&self.head, &content);
                if hash.as_slice() != expected {
                    return Err(fail(BreakKind::BadLink));
                }
                self.head = expected;
                self.head_position = entry.position;
                self.sealed += 1;
            }
            _ => self.unsealed += 1,
        }
        Ok(())
    }
}

/// Where a verification ended, kept outside the database (`leadline audit
/// verify --anchors FILE`): the next verification must find this record,
/// unchanged, in the chain. A chain alone cannot show that its newest
/// records were deleted, or that it was rewritten whole from some record
/// on; a record known from before can.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Anchor {
    /// The record's place.
    pub position: ChangePosition,
    /// Its link hash, hex.
    pub hash: String,
    /// How many records were chained up to it.
    pub sealed: u64,
}

impl Anchor {
    /// The anchor a verification that ended in `state` leaves, if any
    /// record was chained.
    #[must_use]
    pub fn of(state: &ChainState) -> Option<Self> {
        (state.sealed > 0).then(|| Self {
            position: state.head_position,
            hash: hex(&state.head),
            sealed: state.sealed,
        })
    }

    /// Whether `entry` is this anchor's record, unchanged.
    #[must_use]
    pub fn holds(&self, entry: &AuditEntry) -> bool {
        entry.position == self.position
            && entry.hash.as_deref().map(hex).as_deref() == Some(&self.hash)
    }
}

/// Verifies a tenant's whole trail, given in log order.
///
/// # Errors
/// The first [`ChainBreak`].
pub fn verify<'a>(
    entries: impl IntoIterator<Item = &'a AuditEntry>,
) -> Result<ChainState, ChainBreak> {
    let mut state = ChainState::start();
    for entry in entries {
        state.check(entry)?;
    }
    Ok(state)
}

/// A page of a tenant's trail, newest first: `GET /v1/audit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only records about this kind of entity.
    pub entity: Option<String>,
    /// Only records about this entity.
    pub entity_id: Option<uuid::Uuid>,
    /// Only records by this actor: an API key, user or agent id.
    pub actor: Option<uuid::Uuid>,
    /// Only records at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only records before this position (the cursor of the page before).
    pub before: Option<ChangePosition>,
    /// Page size.
    pub limit: crate::PageLimit,
}

impl AuditQuery {
    /// The newest `limit` records about `entity` (and, when given, the one
    /// with `entity_id`), with no other filter.
    #[must_use]
    pub fn about(entity: &str, entity_id: Option<uuid::Uuid>, limit: crate::PageLimit) -> Self {
        Self {
            entity: Some(entity.to_owned()),
            entity_id,
            actor: None,
            since: None,
            before: None,
            limit,
        }
    }
}

/// The entities a record can be about.
pub const ENTITIES: &[&str] = &[
    "lead", "agent", "approval", "event", "key", "user", "tenant", "person",
];

/// `bytes` as lower-case hex.
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn context() -> AuditContext {
        AuditContext {
            actor: Actor {
                key_id: Some(ApiKeyId::new()),
                user_id: None,
                agent_id: None,
            },
            request_id: Some("req-1".into()),
        }
    }

    fn record(tenant: TenantId, n: u64) -> AuditRecord {
        AuditRecord::new(
            tenant,
            DateTime::from_timestamp_micros(1_700_000_000_000_000 + i64::try_from(n).unwrap_or(0))
                .unwrap_or_default(),
            &context(),
            ("lead", uuid::Uuid::now_v7(), "lead.updated"),
            Some(&json!({"status": "new", "n": n})),
            Some(&json!({"status": "contacted", "n": n})),
        )
    }

    /// Entries sealed as the store seals them.
    fn sealed(records: Vec<AuditRecord>) -> Vec<AuditEntry> {
        let mut prev = GENESIS;
        records
            .into_iter()
            .enumerate()
            .map(|(i, record)| {
                let content = record.content_hash();
                let hash = link(&prev, &content);
                let entry = AuditEntry {
                    position: ChangePosition {
                        tx: 0,
                        seq: i as u64 + 1,
                    },
                    record,
                    content_hash: content.to_vec(),
                    erased_digest: None,
                    prev_hash: Some(prev.to_vec()),
                    hash: Some(hash.to_vec()),
                };
                prev = hash;
                entry
            })
            .collect()
    }

    #[test]
    fn a_diff_names_each_changed_field_with_old_and_new() {
        let before = json!({"status": "new", "email": "a@x.io", "tags": ["a"], "updated_at": "t1", "version": 1});
        let after = json!({"status": "won", "email": "a@x.io", "tags": ["a", "b"], "updated_at": "t2", "version": 2, "phone": "+1"});
        let changes = diff(Some(&before), Some(&after));
        assert_eq!(
            Value::Object(changes),
            json!({
                "status": {"old": "new", "new": "won"},
                "tags": {"old": ["a"], "new": ["a", "b"]},
                "version": {"old": 1, "new": 2},
                "phone": {"old": null, "new": "+1"},
            })
        );
        let created = diff(None, Some(&json!({"a": 1})));
        assert_eq!(
            Value::Object(created),
            json!({"a": {"old": null, "new": 1}})
        );
        assert!(diff(Some(&before), Some(&before)).is_empty());
    }

    #[test]
    fn a_sealed_chain_verifies_and_reports_its_head() {
        let tenant = TenantId::new();
        let entries = sealed((0..5).map(|n| record(tenant, n)).collect());
        let state = verify(&entries).expect("an untouched chain verifies");
        assert_eq!(state.sealed, 5);
        assert_eq!(state.unsealed, 0);
        assert_eq!(
            entries.last().and_then(|e| e.hash.clone()),
            Some(state.head.to_vec())
        );
    }

    #[test]
    fn tampering_is_found_at_the_first_bad_entry() {
        let tenant = TenantId::new();
        let good = sealed((0..6).map(|n| record(tenant, n)).collect());
        let at = |entries: &[AuditEntry]| verify(entries).map_err(|b| (b.position.seq, b.problem));

        // Each tamper, and the (seq, problem) verification must report.
        let mut edited = good.clone();
        edited[2].record.changes = r#"{"status":{"old":"new","new":"lost"}}"#.into();
        let mut reattributed = good.clone();
        reattributed[3].record.actor.key_id = None;
        let mut deleted = good.clone();
        deleted.remove(2);
        let mut reordered = good.clone();
        reordered.swap(1, 4);
        let mut rehashed = good.clone();
        rehashed[2].record.request_id = Some("forged".into());
        rehashed[2].content_hash = rehashed[2].record.content_hash().to_vec();
        let mut unsealed_hole = good.clone();
        unsealed_hole[1].prev_hash = None;
        unsealed_hole[1].hash = None;
        // An erasure's marker with the digest of the fields it replaced is
        // no tamper; any other text with that digest is, and so is a
        // marker with a digest of something else.
        let marker = format!(r#"{{"erased":"{}"}}"#, uuid::Uuid::now_v7());
        let mut erased = good.clone();
        erased[2].erased_digest = Some(changes_digest(&erased[2].record.changes).to_vec());
        erased[2].record.changes.clone_from(&marker);
        assert!(verify(&erased).is_ok(), "an erasure is no tamper");
        let mut forged = erased.clone();
        forged[2].record.changes = r#"{"status":{"old":"new","new":"lost"}}"#.into();
        let mut misdigested = erased.clone();
        misdigested[2].erased_digest = Some(changes_digest("{}").to_vec());

        let cases: [(&str, Vec<AuditEntry>, (u64, BreakKind)); 8] = [
            (
                "fields forged under an erasure",
                forged,
                (3, BreakKind::Edited),
            ),
            (
                "an erasure's digest changed",
                misdigested,
                (3, BreakKind::Edited),
            ),
            ("edited changes", edited, (3, BreakKind::Edited)),
            ("changed actor", reattributed, (4, BreakKind::Edited)),
            ("deleted entry", deleted, (4, BreakKind::Unlinked)),
            ("reordered entries", reordered, (5, BreakKind::Unlinked)),
            (
                "content and its hash edited",
                rehashed,
                (3, BreakKind::BadLink),
            ),
            (
                "a hole in the seals",
                unsealed_hole,
                (3, BreakKind::SealedAfterGap),
            ),
        ];
        for (name, entries, expected) in cases {
            assert_eq!(at(&entries), Err(expected), "{name}");
        }
    }

    #[test]
    fn unsealed_entries_at_the_end_are_counted_not_failed() {
        let tenant = TenantId::new();
        let mut entries = sealed((0..3).map(|n| record(tenant, n)).collect());
        let mut tail = record(tenant, 9);
        tail.action = "lead.created".into();
        entries.push(AuditEntry {
            position: ChangePosition { tx: 0, seq: 4 },
            content_hash: tail.content_hash().to_vec(),
            erased_digest: None,
            record: tail,
            prev_hash: None,
            hash: None,
        });
        let state = verify(&entries).expect("verifies");
        assert_eq!((state.sealed, state.unsealed), (3, 1));
    }

    #[test]
    fn the_content_hash_covers_every_field() {
        let base = record(TenantId::new(), 1);
        let mut variants = vec![base.clone(); 9];
        variants[0].tenant_id = TenantId::new();
        variants[1].at += chrono::Duration::microseconds(1);
        variants[2].actor.key_id = None;
        variants[3].actor.agent_id = Some(AgentId::new());
        variants[4].request_id = None;
        variants[5].entity = "agent".into();
        variants[6].entity_id = uuid::Uuid::now_v7();
        variants[7].action = "lead.deleted".into();
        variants[8].changes = "{}".into();
        for (i, v) in variants.iter().enumerate() {
            assert_ne!(v.content_hash(), base.content_hash(), "field {i}");
        }
    }

    #[test]
    fn hex_is_lower_case_and_two_digits_a_byte() {
        assert_eq!(hex(&[0, 15, 255]), "000fff");
    }
}

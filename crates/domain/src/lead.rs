//! Leads: the people an outreach team works, and the rules of their lifecycle.

use std::{fmt, str::FromStr};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    AgentId, CompanyName, Email, LeadId, PageLimit, PersonName, Phone, Source, Tag, Tags, TenantId,
    ValueError,
};

/// Where a lead stands.
///
/// The allowed moves ([`LeadStatus::can_move_to`]):
///
/// ```text
/// new ──► contacted ──► qualified ──► won
///  │  └──────────────►  ▲   │
///  │                    │   ▼
///  └────► nurturing ◄───┴── (contacted, qualified)
/// any open status ──► lost ──► nurturing (re-open)
/// ```
///
/// `won` is final. Staying in the same status is always allowed (a no-op).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeadStatus {
    /// Not yet contacted.
    New,
    /// Reached out to.
    Contacted,
    /// Confirmed as a fit.
    Qualified,
    /// Not ready; kept warm.
    Nurturing,
    /// Converted. Final.
    Won,
    /// Gave up; may be re-opened into nurturing.
    Lost,
}

impl LeadStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [Self; 6] = [
        Self::New,
        Self::Contacted,
        Self::Qualified,
        Self::Nurturing,
        Self::Won,
        Self::Lost,
    ];

    /// The stored and wire name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Contacted => "contacted",
            Self::Qualified => "qualified",
            Self::Nurturing => "nurturing",
            Self::Won => "won",
            Self::Lost => "lost",
        }
    }

    /// Whether a lead in `self` may move to `to`.
    #[must_use]
    pub const fn can_move_to(self, to: Self) -> bool {
        use LeadStatus::{Contacted, Lost, New, Nurturing, Qualified, Won};
        if self as u8 == to as u8 {
            return true;
        }
        matches!(
            (self, to),
            (New, Contacted | Qualified | Nurturing | Lost)
                | (Contacted, Qualified | Nurturing | Lost)
                | (Qualified, Nurturing | Won | Lost)
                | (Nurturing, Contacted | Qualified | Lost)
                | (Lost, Nurturing)
        )
    }
}

impl fmt::Display for LeadStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LeadStatus {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or(ValueError::Invalid(
                "must be one of: new, contacted, qualified, nurturing, won, lost",
            ))
    }
}

/// Free-form JSON attached to a lead or an event: an object of at most
/// [`Metadata::MAX_BYTES`] serialised bytes, nested at most
/// [`Metadata::MAX_DEPTH`] deep, with no NUL character in any key or string.
///
/// The limits are what every store and every read can hold, so that what
/// is accepted once reads back for ever: PostgreSQL's `jsonb` refuses
/// `\u0000`, and a document nested near the JSON parser's recursion limit
/// would fail to parse once embedded in a larger one (a lead's context).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "serde_json::Value", into = "serde_json::Value")]
pub struct Metadata(serde_json::Map<String, serde_json::Value>);

impl Metadata {
    /// The largest accepted object, serialised.
    pub const MAX_BYTES: usize = 16 * 1024;
    /// The deepest accepted nesting: the object itself is depth 1.
    pub const MAX_DEPTH: usize = 32;

    /// Checks that `value` is an object within the limits.
    ///
    /// # Errors
    /// [`ValueError::Invalid`] for a non-object, a NUL character or too deep
    /// a nesting; [`ValueError::TooLong`] when too large.
    pub fn new(value: serde_json::Value) -> Result<Self, ValueError> {
        let serde_json::Value::Object(mut map) = value else {
            return Err(ValueError::Invalid("must be a JSON object"));
        };
        map.values_mut().for_each(canonical_numbers);
        let size = serde_json::to_vec(&map)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > Self::MAX_BYTES {
            return Err(ValueError::TooLong {
                max: Self::MAX_BYTES,
            });
        }
        check_json(&map, 1)?;
        Ok(Self(map))
    }

    /// The object.
    #[must_use]
    pub fn as_map(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.0
    }
}

/// Rewrites every float with an integral value in the 64-bit integer range
/// as that integer (`1e19` → `10000000000000000000`, `2.0` → `2`, `-0.0` →
/// `0`). PostgreSQL's `jsonb` prints numbers in full, without an exponent,
/// so such a float reads back from it as an integer: storing the integer in
/// the first place makes the answer to a create the same as every later
/// read, on both backends.
fn canonical_numbers(value: &mut serde_json::Value) {
    // 2^63 and 2^64, exactly representable as f64.
    const I64_END: f64 = 9_223_372_036_854_775_808.0;
    const U64_END: f64 = 18_446_744_073_709_551_616.0;
    match value {
        serde_json::Value::Number(n) if n.is_f64() => {
            let Some(f) = n.as_f64() else { return };
            if f.fract() != 0.0 {
                return;
            }
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            if (-I64_END..I64_END).contains(&f) {
                *value = serde_json::Value::from(f as i64);
            } else if (0.0..U64_END).contains(&f) {
                *value = serde_json::Value::from(f as u64);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(canonical_numbers),
        serde_json::Value::Object(map) => map.values_mut().for_each(canonical_numbers),
        _ => {}
    }
}

/// Walks an object: no NUL in keys or strings, no nesting past
/// [`Metadata::MAX_DEPTH`]. Iterative depth is bounded by the check itself.
fn check_json(
    map: &serde_json::Map<String, serde_json::Value>,
    depth: usize,
) -> Result<(), ValueError> {
    if depth > Metadata::MAX_DEPTH {
        return Err(ValueError::Invalid("must be nested at most 32 levels deep"));
    }
    for (key, value) in map {
        if key.contains('\0') {
            return Err(ValueError::Invalid(
                "must not contain the NUL character (\\u0000)",
            ));
        }
        check_value(value, depth)?;
    }
    Ok(())
}

fn check_value(value: &serde_json::Value, depth: usize) -> Result<(), ValueError> {
    match value {
        serde_json::Value::String(s) if s.contains('\0') => Err(ValueError::Invalid(
            "must not contain the NUL character (\\u0000)",
        )),
        serde_json::Value::Array(items) => {
            if depth + 1 > Metadata::MAX_DEPTH {
                return Err(ValueError::Invalid("must be nested at most 32 levels deep"));
            }
            items.iter().try_for_each(|v| check_value(v, depth + 1))
        }
        serde_json::Value::Object(map) => check_json(map, depth + 1),
        _ => Ok(()),
    }
}

impl TryFrom<serde_json::Value> for Metadata {
    type Error = ValueError;
    fn try_from(value: serde_json::Value) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Metadata> for serde_json::Value {
    fn from(m: Metadata) -> Self {
        Self::Object(m.0)
    }
}

/// A lead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lead {
    /// Its id.
    pub id: LeadId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// First name.
    pub first_name: PersonName,
    /// Last name.
    pub last_name: PersonName,
    /// Email, if known.
    pub email: Option<Email>,
    /// Phone, if known.
    pub phone: Option<Phone>,
    /// Company, if known.
    pub company: Option<CompanyName>,
    /// Where it came from.
    pub source: Option<Source>,
    /// Lifecycle status.
    pub status: LeadStatus,
    /// The agent working it.
    pub assigned_agent_id: Option<AgentId>,
    /// Labels.
    pub tags: Tags,
    /// Free-form data.
    pub metadata: Metadata,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Optimistic-concurrency version, starting at 1.
    pub version: i64,
}

impl Lead {
    /// A new lead from a request: version 1, created and updated at `now`.
    #[must_use]
    pub fn new(tenant: TenantId, req: &CreateLeadRequest, now: DateTime<Utc>) -> Self {
        Self {
            id: LeadId::new(),
            tenant_id: tenant,
            first_name: req.first_name.clone(),
            last_name: req.last_name.clone(),
            email: req.email.clone(),
            phone: req.phone.clone(),
            company: req.company.clone(),
            source: req.source.clone(),
            status: req.status,
            assigned_agent_id: req.assigned_agent_id,
            tags: req.tags.clone(),
            metadata: req.metadata.clone(),
            created_at: now,
            updated_at: now,
            version: 1,
        }
    }

    /// The event an update from `self` to `next` records on the timeline: a
    /// `status_changed` note of the move when the status moved, else none.
    #[must_use]
    pub fn status_event(&self, next: &Self) -> Option<crate::Event> {
        (next.status != self.status).then(|| crate::Event {
            id: crate::EventId::new(),
            tenant_id: next.tenant_id,
            lead_id: next.id,
            kind: crate::EventKind::StatusChanged,
            direction: crate::Direction::Internal,
            content: None,
            occurred_at: next.updated_at,
            actor: None,
            metadata: Metadata::new(serde_json::json!({ "from": self.status, "to": next.status }))
                .unwrap_or_default(),
            created_at: next.updated_at,
        })
    }
}

/// What it takes to create a lead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateLeadRequest {
    /// First name.
    pub first_name: PersonName,
    /// Last name.
    pub last_name: PersonName,
    /// Email.
    pub email: Option<Email>,
    /// Phone.
    pub phone: Option<Phone>,
    /// Company.
    pub company: Option<CompanyName>,
    /// Source.
    pub source: Option<Source>,
    /// Initial status; usually `new`.
    pub status: LeadStatus,
    /// Assigned agent; must exist in the same tenant.
    pub assigned_agent_id: Option<AgentId>,
    /// Tags.
    pub tags: Tags,
    /// Metadata.
    pub metadata: Metadata,
}

/// A partial update. `None` leaves a field as it is; for optional fields,
/// `Some(None)` clears it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpdateLeadRequest {
    /// The version the caller read.
    pub expected_version: i64,
    /// New first name.
    pub first_name: Option<PersonName>,
    /// New last name.
    pub last_name: Option<PersonName>,
    /// New or cleared email.
    pub email: Option<Option<Email>>,
    /// New or cleared phone.
    pub phone: Option<Option<Phone>>,
    /// New or cleared company.
    pub company: Option<Option<CompanyName>>,
    /// New or cleared source.
    pub source: Option<Option<Source>>,
    /// New status; must be an allowed move.
    pub status: Option<LeadStatus>,
    /// New or cleared assignment.
    pub assigned_agent_id: Option<Option<AgentId>>,
    /// Replacement tags.
    pub tags: Option<Tags>,
    /// Replacement metadata.
    pub metadata: Option<Metadata>,
}

/// Why [`Lead::apply`] refused an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UpdateLeadRejected {
    /// The lead changed since the caller read it.
    #[error("stale version: the lead is at version {current}")]
    StaleVersion {
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
}

impl Lead {
    /// Applies `req` to this lead, enforcing the version check and the status
    /// rule, bumping the version and `updated_at`.
    ///
    /// # Errors
    /// [`UpdateLeadRejected`].
    pub fn apply(
        &self,
        req: &UpdateLeadRequest,
        now: DateTime<Utc>,
    ) -> Result<Self, UpdateLeadRejected> {
        if req.expected_version != self.version {
            return Err(UpdateLeadRejected::StaleVersion {
                current: self.version,
            });
        }
        let mut next = self.clone();
        if let Some(to) = req.status {
            if !self.status.can_move_to(to) {
                return Err(UpdateLeadRejected::InvalidTransition {
                    from: self.status,
                    to,
                });
            }
            next.status = to;
        }
        if let Some(v) = &req.first_name {
            next.first_name = v.clone();
        }
        if let Some(v) = &req.last_name {
            next.last_name = v.clone();
        }
        if let Some(v) = &req.email {
            next.email = v.clone();
        }
        if let Some(v) = &req.phone {
            next.phone = v.clone();
        }
        if let Some(v) = &req.company {
            next.company = v.clone();
        }
        if let Some(v) = &req.source {
            next.source = v.clone();
        }
        if let Some(v) = req.assigned_agent_id {
            next.assigned_agent_id = v;
        }
        if let Some(v) = &req.tags {
            next.tags = v.clone();
        }
        if let Some(v) = &req.metadata {
            next.metadata = v.clone();
        }
        next.version += 1;
        next.updated_at = now;
        Ok(next)
    }
}

/// Filters and position for listing leads. Results are ordered newest first
/// (by id, which is time-ordered), so the order is total and stable.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListLeadsQuery {
    /// Only this status.
    pub status: Option<LeadStatus>,
    /// Only leads assigned to this agent.
    pub assigned_agent_id: Option<AgentId>,
    /// Only leads carrying this tag.
    pub tag: Option<Tag>,
    /// Page size.
    pub limit: PageLimit,
    /// Start after this lead (the last one of the previous page).
    pub after: Option<LeadId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_status_move_leaves_a_status_event() {
        let req = CreateLeadRequest {
            first_name: PersonName::new("Grace").expect("valid"),
            last_name: PersonName::new("Hopper").expect("valid"),
            email: None,
            phone: None,
            company: None,
            source: None,
            status: LeadStatus::New,
            assigned_agent_id: None,
            tags: Tags::default(),
            metadata: Metadata::default(),
        };
        let lead = Lead::new(TenantId::new(), &req, Utc::now());
        assert_eq!((lead.version, lead.created_at), (1, lead.updated_at));
        let mut renamed = lead.clone();
        renamed.company = Some(CompanyName::new("Navy").expect("valid"));
        assert_eq!(lead.status_event(&renamed), None);
        let mut moved = lead.clone();
        moved.status = LeadStatus::Contacted;
        let event = lead.status_event(&moved).expect("a move is recorded");
        assert_eq!(event.kind, crate::EventKind::StatusChanged);
        assert_eq!(event.metadata.as_map()["from"], "new");
        assert_eq!(event.metadata.as_map()["to"], "contacted");
    }
    use LeadStatus::*;

    fn lead(status: LeadStatus) -> Lead {
        let now = Utc::now();
        Lead {
            id: LeadId::new(),
            tenant_id: TenantId::new(),
            first_name: PersonName::new("Grace").expect("valid"),
            last_name: PersonName::new("Hopper").expect("valid"),
            email: None,
            phone: None,
            company: None,
            source: None,
            status,
            assigned_agent_id: None,
            tags: Tags::default(),
            metadata: Metadata::default(),
            created_at: now,
            updated_at: now,
            version: 1,
        }
    }

    #[test]
    fn transition_table() {
        let allowed = [
            (New, Contacted),
            (New, Qualified),
            (New, Nurturing),
            (New, Lost),
            (Contacted, Qualified),
            (Contacted, Nurturing),
            (Contacted, Lost),
            (Qualified, Nurturing),
            (Qualified, Won),
            (Qualified, Lost),
            (Nurturing, Contacted),
            (Nurturing, Qualified),
            (Nurturing, Lost),
            (Lost, Nurturing),
        ];
        for from in LeadStatus::ALL {
            for to in LeadStatus::ALL {
                let expected = from == to || allowed.contains(&(from, to));
                assert_eq!(from.can_move_to(to), expected, "{from} -> {to}");
            }
        }
        assert!(!Won.can_move_to(Lost), "won is final");
        assert!(!New.can_move_to(Won), "cannot skip qualification");
    }

    #[test]
    fn apply_checks_version_then_transition() {
        let l = lead(New);
        let stale = UpdateLeadRequest {
            expected_version: 2,
            ..Default::default()
        };
        assert_eq!(
            l.apply(&stale, Utc::now()),
            Err(UpdateLeadRejected::StaleVersion { current: 1 })
        );
        let bad = UpdateLeadRequest {
            expected_version: 1,
            status: Some(Won),
            ..Default::default()
        };
        assert_eq!(
            l.apply(&bad, Utc::now()),
            Err(UpdateLeadRejected::InvalidTransition { from: New, to: Won })
        );
    }

    #[test]
    fn apply_sets_clears_and_bumps() {
        let mut l = lead(New);
        l.company = Some(CompanyName::new("Navy").expect("valid"));
        let req = UpdateLeadRequest {
            expected_version: 1,
            status: Some(Contacted),
            company: Some(None),
            email: Some(Some(Email::parse("g@navy.mil").expect("valid"))),
            ..Default::default()
        };
        let next = l.apply(&req, Utc::now()).expect("allowed");
        assert_eq!(next.status, Contacted);
        assert_eq!(next.company, None);
        assert_eq!(next.email.as_ref().map(Email::as_str), Some("g@navy.mil"));
        assert_eq!(next.first_name, l.first_name, "untouched field kept");
        assert_eq!(next.version, 2);
    }

    #[test]
    fn metadata_must_be_a_small_object() {
        assert!(Metadata::new(serde_json::json!({"a": 1})).is_ok());
        assert!(Metadata::new(serde_json::json!([1, 2])).is_err());
        let big = serde_json::json!({ "x": "y".repeat(Metadata::MAX_BYTES) });
        assert_eq!(
            Metadata::new(big),
            Err(ValueError::TooLong {
                max: Metadata::MAX_BYTES
            })
        );
    }

    #[test]
    fn status_parses() {
        for s in LeadStatus::ALL {
            assert_eq!(s.as_str().parse::<LeadStatus>(), Ok(s));
        }
        assert!("open".parse::<LeadStatus>().is_err());
    }
}

/// One change applied to many leads (`POST /v1/leads/bulk`): a status move,
/// an assignment, tags added and removed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BulkChange {
    /// Move to this status (each lead's lifecycle decides if it may).
    pub status: Option<LeadStatus>,
    /// Assign to this agent (`Some(None)` unassigns).
    pub assigned_agent_id: Option<Option<AgentId>>,
    /// Tags to add.
    pub add_tags: Vec<Tag>,
    /// Tags to remove.
    pub remove_tags: Vec<Tag>,
}

impl BulkChange {
    /// Whether it changes anything at all.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.status.is_none()
            && self.assigned_agent_id.is_none()
            && self.add_tags.is_empty()
            && self.remove_tags.is_empty()
    }

    /// The update that applies this change to `lead` at its version, or
    /// `None` when the lead already is as asked.
    ///
    /// # Errors
    /// [`ValueError`] when the tags would exceed [`Tags::MAX`].
    pub fn update_for(&self, lead: &Lead) -> Result<Option<UpdateLeadRequest>, ValueError> {
        let status = self.status.filter(|s| *s != lead.status);
        let assigned_agent_id = self
            .assigned_agent_id
            .filter(|a| *a != lead.assigned_agent_id);
        let mut tags: Vec<Tag> = lead
            .tags
            .as_slice()
            .iter()
            .filter(|t| !self.remove_tags.contains(t))
            .cloned()
            .collect();
        tags.extend(self.add_tags.iter().cloned());
        let tags = Tags::new(tags)?;
        let tags = (tags != lead.tags).then_some(tags);
        if status.is_none() && assigned_agent_id.is_none() && tags.is_none() {
            return Ok(None);
        }
        Ok(Some(UpdateLeadRequest {
            expected_version: lead.version,
            status,
            assigned_agent_id,
            tags,
            ..UpdateLeadRequest::default()
        }))
    }
}

#[cfg(test)]
mod bulk_tests {
    use super::*;

    #[test]
    fn a_bulk_change_updates_only_what_differs() {
        let lead = crate::fixtures::lead_context(TenantId::new(), LeadId::new()).lead;
        let vip = Tag::parse("vip").expect("valid");
        let none = BulkChange {
            status: Some(lead.status),
            ..BulkChange::default()
        };
        assert_eq!(none.update_for(&lead), Ok(None));
        let change = BulkChange {
            status: Some(LeadStatus::Lost),
            add_tags: vec![vip.clone()],
            ..BulkChange::default()
        };
        let update = change.update_for(&lead).expect("fits").expect("changes");
        assert_eq!(update.status, Some(LeadStatus::Lost));
        assert!(update.tags.expect("tags").contains(&vip));
        assert_eq!(update.expected_version, lead.version);
        assert!(BulkChange::default().is_empty());
    }
}

//! [`ContextJson`]: a lead's context in its wire form.
//!
//! The context is read far more often than it changes, and every read used
//! to serialize the same value again (tens of microseconds for a context
//! with its events). So the cache keeps the JSON rather than the struct: it
//! renders once when a context is loaded (Redis needs those bytes anyway),
//! and the HTTP adapter sends the bytes as they are. The JSON is the serde
//! form of [`LeadContext`], the same document `GET /v1/leads/{id}/context`
//! has always returned.
//!
//! In the shared tier a copy is framed ([`ContextJson::to_shared`]): a
//! header line naming the render format, the tenant and the lead, then the
//! JSON. Checking a copy read back is then a comparison of that line, not a
//! decode and re-render (about 80 µs per copy), and a copy written by a
//! release that renders differently, or filed under the wrong key, is a
//! miss. The format is a fingerprint of how this build renders a sample
//! context with every field present, so no one has to remember to bump it.

use std::sync::LazyLock;

use bytes::{BufMut, Bytes, BytesMut};
use leadline_domain::{LeadContext, LeadId, TenantId};

/// The JSON of one [`LeadContext`]. Only built by rendering a context, or by
/// reading back a shared copy whose header says this build rendered it for
/// that key, so it always holds a valid context. Cheap to clone (the bytes
/// are shared).
#[derive(Clone, PartialEq, Eq)]
pub struct ContextJson(Bytes);

/// Why a shared copy was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ContextJsonError {
    /// A copy filed for another lead or tenant than asked for.
    #[error("a context of another lead or tenant")]
    WrongKey,
    /// A copy without this build's header: written by a release that
    /// renders contexts differently (or before copies were framed).
    #[error("a context in another release's format")]
    OtherFormat,
}

/// How this build renders contexts: FNV-1a over the rendering of
/// [`sample`], a context with every optional field present and every list
/// non-empty, so that any added, removed or renamed field, and any change of
/// a value's form, changes it.
static FORMAT: LazyLock<u64> = LazyLock::new(|| {
    let rendered = serde_json::to_vec(&sample()).unwrap_or_default();
    rendered
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
        })
});

/// A context with every optional field present and every list non-empty,
/// from constants: what [`FORMAT`] fingerprints. `None` only if a constant
/// stopped passing validation (a unit test guards that).
fn sample() -> Option<LeadContext> {
    use chrono::{DateTime, Utc};
    use leadline_domain::{
        Agent, AgentId, AgentRole, Approval, ApprovalId, ApprovalStatus, Channel, CompanyName,
        Direction, DisplayName, Email, Event, EventContent, EventId, EventKind, Lead, LeadStatus,
        MessageBody, Metadata, PersonName, Phone, RejectionReason, Source, Subject, Tags,
    };
    let at = DateTime::<Utc>::from_timestamp(1_700_000_000, 123_456_000)?;
    let (tenant, lead) = (TenantId::from_uuid(uuid(1)), LeadId::from_uuid(uuid(2)));
    let agent = AgentId::from_uuid(uuid(3));
    let metadata = Metadata::new(serde_json::json!({ "k": "v" })).ok()?;
    let approval = Approval {
        id: ApprovalId::from_uuid(uuid(4)),
        tenant_id: tenant,
        lead_id: lead,
        channel: Channel::ALL[0],
        subject: Some(Subject::new("s").ok()?),
        body: MessageBody::new("b").ok()?,
        requested_by: agent,
        status: ApprovalStatus::ALL[0],
        decided_by: Some(agent),
        decided_at: Some(at),
        rejection_reason: Some(RejectionReason::new("r").ok()?),
        sent_by: Some(agent),
        sent_at: Some(at),
        created_at: at,
        updated_at: at,
        revision: 2,
        edited_by: Some(agent),
        edited_at: Some(at),
    };
    Some(LeadContext {
        lead: Lead {
            id: lead,
            tenant_id: tenant,
            first_name: PersonName::new("f").ok()?,
            last_name: PersonName::new("l").ok()?,
            email: Some(Email::parse("a@example.com").ok()?),
            phone: Some(Phone::parse("+4930123456").ok()?),
            company: Some(CompanyName::new("c").ok()?),
            source: Some(Source::new("s").ok()?),
            status: LeadStatus::ALL[0],
            assigned_agent_id: Some(agent),
            tags: Tags::parse(&["t"]).ok()?,
            metadata: metadata.clone(),
            created_at: at,
            updated_at: at,
            version: 1,
        },
        assigned_agent: Some(Agent {
            id: agent,
            tenant_id: tenant,
            name: DisplayName::new("n").ok()?,
            email: Email::parse("b@example.com").ok()?,
            role: AgentRole::Admin,
            active: true,
            created_at: at,
            updated_at: at,
            version: 1,
        }),
        open_approvals: vec![approval.clone()],
        recent_approvals: vec![approval],
        events: vec![Event {
            id: EventId::from_uuid(uuid(5)),
            tenant_id: tenant,
            lead_id: lead,
            kind: EventKind::ALL[0],
            direction: Direction::ALL[0],
            content: Some(EventContent::new("e").ok()?),
            occurred_at: at,
            actor: Some(agent),
            metadata,
            created_at: at,
        }],
    })
}

fn uuid(n: u128) -> uuid::Uuid {
    uuid::Uuid::from_u128(n)
}

/// `{format:016x} {tenant} {lead}\n`.
fn header(tenant: TenantId, lead: LeadId) -> String {
    format!("{:016x} {tenant} {lead}\n", *FORMAT)
}

impl ContextJson {
    /// Renders `context`.
    ///
    /// # Errors
    /// Only if a value refuses to serialize, which the domain types never do.
    pub fn render(context: &LeadContext) -> Result<Self, serde_json::Error> {
        serde_json::to_vec(context).map(|json| Self(Bytes::from(json)))
    }

    /// The copy to keep in the shared tier for `lead` of `tenant`: a header
    /// line, then the JSON.
    #[must_use]
    pub fn to_shared(&self, tenant: TenantId, lead: LeadId) -> Bytes {
        let header = header(tenant, lead);
        let mut framed = BytesMut::with_capacity(header.len() + self.0.len());
        framed.put_slice(header.as_bytes());
        framed.put_slice(&self.0);
        framed.freeze()
    }

    /// The JSON of a copy read back from the shared tier, sliced out without
    /// copying, if its header names this build's format and `lead` of
    /// `tenant`.
    ///
    /// # Errors
    /// [`ContextJsonError::WrongKey`] for another tenant or lead,
    /// [`ContextJsonError::OtherFormat`] for another format or no header.
    pub fn from_shared(
        framed: Bytes,
        tenant: TenantId,
        lead: LeadId,
    ) -> Result<Self, ContextJsonError> {
        let expected = header(tenant, lead);
        if framed.starts_with(expected.as_bytes()) {
            return Ok(Self(framed.slice(expected.len()..)));
        }
        let format = &expected.as_bytes()[..17];
        if framed.starts_with(format) {
            Err(ContextJsonError::WrongKey)
        } else {
            Err(ContextJsonError::OtherFormat)
        }
    }

    /// The JSON.
    #[must_use]
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    /// The JSON's length in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true: a context renders to at least `{}`.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Decodes the context, for callers that need the values rather than
    /// the document.
    ///
    /// # Errors
    /// Never for a value rendered by this build; the `Result` is serde's.
    pub fn parse(&self) -> Result<LeadContext, serde_json::Error> {
        serde_json::from_slice(&self.0)
    }
}

impl std::fmt::Debug for ContextJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Contexts hold personal data: debug output gives the size only.
        f.debug_struct("ContextJson")
            .field("bytes", &self.0.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(tenant: TenantId, lead: LeadId) -> LeadContext {
        leadline_domain::fixtures::lead_context(tenant, lead)
    }

    #[test]
    fn renders_the_serde_form_and_parses_back() {
        let (tenant, lead) = (TenantId::new(), LeadId::new());
        let value = context(tenant, lead);
        let json = ContextJson::render(&value).expect("renders");
        assert_eq!(
            json.bytes().as_ref(),
            serde_json::to_vec(&value).expect("serializes").as_slice()
        );
        assert_eq!(json.parse().expect("parses"), value);
    }

    #[test]
    fn the_sample_passes_validation() {
        assert!(
            sample().is_some(),
            "a constant in sample() no longer validates"
        );
    }

    #[test]
    fn a_shared_copy_comes_back_as_the_same_json_for_its_key_only() {
        let (tenant, lead) = (TenantId::new(), LeadId::new());
        let json = ContextJson::render(&context(tenant, lead)).expect("renders");
        let framed = json.to_shared(tenant, lead);
        assert!(framed.len() > json.len());
        let back = ContextJson::from_shared(framed.clone(), tenant, lead).expect("accepted");
        assert_eq!(back, json, "the JSON, byte for byte");
        assert!(matches!(
            ContextJson::from_shared(framed.clone(), TenantId::new(), lead),
            Err(ContextJsonError::WrongKey)
        ));
        assert!(matches!(
            ContextJson::from_shared(framed, tenant, LeadId::new()),
            Err(ContextJsonError::WrongKey)
        ));
    }

    #[test]
    fn a_shared_copy_of_another_format_is_refused() {
        let (tenant, lead) = (TenantId::new(), LeadId::new());
        let json = ContextJson::render(&context(tenant, lead)).expect("renders");
        // What the previous release kept: the JSON alone.
        assert!(matches!(
            ContextJson::from_shared(json.bytes().clone(), tenant, lead),
            Err(ContextJsonError::OtherFormat)
        ));
        // A release that renders differently: another fingerprint.
        let other = format!("{:016x} {tenant} {lead}\n", FORMAT.wrapping_add(1));
        let mut framed = other.into_bytes();
        framed.extend_from_slice(json.bytes());
        assert!(matches!(
            ContextJson::from_shared(Bytes::from(framed), tenant, lead),
            Err(ContextJsonError::OtherFormat)
        ));
        assert!(matches!(
            ContextJson::from_shared(Bytes::new(), tenant, lead),
            Err(ContextJsonError::OtherFormat)
        ));
    }

    #[test]
    fn debug_shows_no_content() {
        let json = ContextJson::render(&context(TenantId::new(), LeadId::new())).expect("renders");
        let shown = format!("{json:?}");
        assert!(!shown.contains("Grace"), "{shown}");
        assert!(shown.contains(&json.len().to_string()), "{shown}");
    }
}

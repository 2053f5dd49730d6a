//! Sample values for tests and benchmarks, behind the `fixtures` feature:
//! one definition per shape instead of a copy in each crate that needs one.

use chrono::Utc;

use crate::{
    Direction, DisplayName, Event, EventContent, EventId, EventKind, Lead, LeadContext, LeadId,
    LeadStatus, Metadata, PersonName, Slug, Tags, Tenant, TenantId,
};

/// The smallest context: a new lead (Grace Hopper, version 1, created now)
/// with no agent, no approvals and no events.
///
/// # Panics
/// Never: its constant values are valid (a unit test checks).
#[must_use]
#[allow(clippy::expect_used)]
pub fn lead_context(tenant: TenantId, lead: LeadId) -> LeadContext {
    let now = Utc::now();
    LeadContext {
        lead: Lead {
            id: lead,
            tenant_id: tenant,
            first_name: PersonName::new("Grace").expect("a valid name"),
            last_name: PersonName::new("Hopper").expect("a valid name"),
            email: None,
            phone: None,
            company: None,
            source: None,
            status: LeadStatus::New,
            assigned_agent_id: None,
            tags: Tags::default(),
            metadata: Metadata::default(),
            created_at: now,
            updated_at: now,
            version: 1,
        },
        assigned_agent: None,
        open_approvals: Vec::new(),
        recent_approvals: Vec::new(),
        events: Vec::new(),
    }
}

/// An internal note on `lead`, happening and recorded now.
///
/// # Panics
/// When `text` is not valid event content (blank or too long).
#[must_use]
#[allow(clippy::expect_used)]
pub fn note(tenant: TenantId, lead: LeadId, text: &str) -> Event {
    let now = Utc::now();
    Event {
        id: EventId::new(),
        tenant_id: tenant,
        lead_id: lead,
        kind: EventKind::Note,
        direction: Direction::Internal,
        content: Some(EventContent::new(text).expect("valid event content")),
        occurred_at: now,
        actor: None,
        metadata: Metadata::default(),
        created_at: now,
    }
}

/// A tenant, `acme`, created now.
///
/// # Panics
/// Never: its constant values are valid.
#[must_use]
#[allow(clippy::expect_used)]
pub fn tenant() -> Tenant {
    Tenant {
        id: TenantId::new(),
        slug: Slug::parse("acme").expect("valid slug"),
        name: DisplayName::new("Acme").expect("valid name"),
        created_at: Utc::now(),
        separation_of_duties: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixtures_build() {
        let (tenant, lead) = (TenantId::new(), LeadId::new());
        let context = lead_context(tenant, lead);
        assert_eq!((context.lead.id, context.lead.version), (lead, 1));
        assert_eq!(note(tenant, lead, "hi").lead_id, lead);
    }
}

//! Privacy requests: everything a tenant holds about one person, found by
//! their email, for an export (and, later, an erasure).

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{
    Approval, AuditContext, AuditEntry, AuditRecord, Delivery, Email, Event, Lead, TenantId,
};

/// What a tenant holds about the person with `email`: their leads (deleted
/// ones too), those leads' events, approvals and deliveries, and the audit
/// records about any of them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PersonData {
    /// Whom it is about.
    pub email: Email,
    /// When it was read.
    pub exported_at: DateTime<Utc>,
    /// Their leads.
    pub leads: Vec<Lead>,
    /// The leads' events, oldest first.
    pub events: Vec<Event>,
    /// The leads' events that a retention policy moved to the archive,
    /// oldest first.
    pub archived_events: Vec<Event>,
    /// The leads' approvals, oldest first.
    pub approvals: Vec<Approval>,
    /// The leads' deliveries, oldest first.
    pub deliveries: Vec<Delivery>,
    /// The audit records about the leads, events and approvals, in log
    /// order.
    pub audit: Vec<AuditEntry>,
}

impl PersonData {
    /// The ids the audit trail may hold records about.
    #[must_use]
    pub fn entity_ids(&self) -> Vec<uuid::Uuid> {
        self.leads
            .iter()
            .map(|l| l.id.as_uuid())
            .chain(self.events.iter().map(|e| e.id.as_uuid()))
            .chain(self.archived_events.iter().map(|e| e.id.as_uuid()))
            .chain(self.approvals.iter().map(|a| a.id.as_uuid()))
            .collect()
    }

    /// The audit record of this export: who asked, and which leads it
    /// covered by id and how much it held, never the email (the record
    /// outlives an erasure). `person` is a fresh id for the request.
    #[must_use]
    pub fn export_record(
        &self,
        tenant: TenantId,
        person: uuid::Uuid,
        context: &AuditContext,
    ) -> AuditRecord {
        let summary = serde_json::json!({
            "leads": self.leads.iter().map(|l| l.id.as_uuid()).collect::<Vec<_>>(),
            "events": self.events.len(),
            "archived_events": self.archived_events.len(),
            "approvals": self.approvals.len(),
            "deliveries": self.deliveries.len(),
            "audit": self.audit.len(),
        });
        AuditRecord::new(
            tenant,
            self.exported_at,
            context,
            ("person", person, "person.exported"),
            None,
            Some(&summary),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_export_record_names_the_leads_and_counts_but_not_the_email() {
        let email = Email::parse("private.person@example.com").expect("valid");
        let data = PersonData {
            email,
            exported_at: Utc::now(),
            leads: Vec::new(),
            events: Vec::new(),
            archived_events: Vec::new(),
            approvals: Vec::new(),
            deliveries: Vec::new(),
            audit: Vec::new(),
        };
        let record = data.export_record(
            TenantId::new(),
            uuid::Uuid::now_v7(),
            &AuditContext::default(),
        );
        assert_eq!(record.action, "person.exported");
        assert_eq!(record.entity, "person");
        assert!(
            !record.changes.contains("private.person"),
            "{}",
            record.changes
        );
        assert!(
            record.changes.contains("\"deliveries\""),
            "{}",
            record.changes
        );
    }
}

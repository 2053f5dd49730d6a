//! [`PrivacyRepository`] on the store: a person's data, found by email, read
//! in one transaction with the request's audit record.

use async_trait::async_trait;
use leadline_domain::{Approval, Delivery, Email, Event, Lead, PersonData, TenantId};
use leadline_ports::{PrivacyError, PrivacyRepository, audit_context};
use sea_orm::{ColumnTrait, EntityTrait, FromQueryResult, QueryFilter, QueryOrder};

use crate::{
    Store,
    entity::{approvals, events, leads, outbox},
    errors::{Failure, common},
    tx::transaction,
};

/// Ids per `IN (…)` list.
const CHUNK: usize = 500;

#[async_trait]
impl PrivacyRepository for Store {
    async fn export(&self, tenant: TenantId, email: &Email) -> Result<PersonData, PrivacyError> {
        let backend = self.backend();
        let person = uuid::Uuid::now_v7();
        let result: Result<PersonData, Failure> =
            transaction!(self, "privacy.export", tenant, Write, |txn| {
                // Deleted leads too: they are still held.
                let leads: Vec<Lead> = leads::Entity::find()
                    .filter(leads::Column::TenantId.eq(tenant.as_uuid()))
                    .filter(leads::Column::Email.eq(email.as_str()))
                    .order_by_asc(leads::Column::CreatedAt)
                    .order_by_asc(leads::Column::Id)
                    .all(txn)
                    .await?
                    .into_iter()
                    .map(Lead::try_from)
                    .collect::<Result<_, _>>()?;
                let ids: Vec<uuid::Uuid> = leads.iter().map(|l| l.id.as_uuid()).collect();
                let mut events: Vec<Event> = Vec::new();
                let mut archived_events: Vec<Event> = Vec::new();
                let mut approvals: Vec<Approval> = Vec::new();
                let mut deliveries: Vec<Delivery> = Vec::new();
                for chunk in ids.chunks(CHUNK) {
                    for m in events::Entity::find()
                        .filter(events::Column::TenantId.eq(tenant.as_uuid()))
                        .filter(events::Column::LeadId.is_in(chunk.iter().copied()))
                        .all(txn)
                        .await?
                    {
                        events.push(Event::try_from(m)?);
                    }
                    for m in archived(txn, backend, tenant, chunk).await? {
                        archived_events.push(Event::try_from(m)?);
                    }
                    for m in approvals::Entity::find()
                        .filter(approvals::Column::TenantId.eq(tenant.as_uuid()))
                        .filter(approvals::Column::LeadId.is_in(chunk.iter().copied()))
                        .all(txn)
                        .await?
                    {
                        approvals.push(Approval::try_from(m)?);
                    }
                    for m in outbox::Entity::find()
                        .filter(outbox::Column::TenantId.eq(tenant.as_uuid()))
                        .filter(outbox::Column::LeadId.is_in(chunk.iter().copied()))
                        .all(txn)
                        .await?
                    {
                        deliveries.push(Delivery::try_from(&m)?);
                    }
                }
                events.sort_by_key(|e| (e.occurred_at, e.id));
                archived_events.sort_by_key(|e| (e.occurred_at, e.id));
                approvals.sort_by_key(|a| (a.created_at, a.id));
                deliveries.sort_by_key(|d| (d.created_at, d.id));
                let mut data = PersonData {
                    email: email.clone(),
                    exported_at: crate::now(),
                    leads,
                    events,
                    archived_events,
                    approvals,
                    deliveries,
                    audit: Vec::new(),
                };
                data.audit = crate::audit::about(txn, backend, tenant, &data.entity_ids()).await?;
                let record = data.export_record(tenant, person, &audit_context());
                crate::audit::record(txn, &[record]).await?;
                Ok(data)
            });
        result.map_err(|f| common!(f, PrivacyError))
    }
}

/// The archived events (retention, migration 24) of `leads`: rows of
/// `events_archive`, which has the columns of `events` and when each was
/// archived.
async fn archived(
    txn: &sea_orm::DatabaseTransaction,
    backend: crate::Backend,
    tenant: TenantId,
    leads: &[uuid::Uuid],
) -> Result<Vec<events::Model>, Failure> {
    if leads.is_empty() {
        return Ok(Vec::new());
    }
    // `$1` (or `?`) is the tenant, then one per lead.
    let marks: Vec<String> = (1..=leads.len() + 1)
        .map(|i| match backend {
            crate::Backend::Postgres => format!("${i}"),
            crate::Backend::Sqlite => "?".to_owned(),
        })
        .collect();
    let sql = format!(
        "SELECT tenant_id, id, lead_id, kind, direction, content, occurred_at, actor, metadata, \
         created_at FROM events_archive WHERE tenant_id = {} AND lead_id IN ({})",
        marks[0],
        marks[1..].join(", ")
    );
    let mut values: Vec<sea_orm::Value> = vec![tenant.as_uuid().into()];
    values.extend(leads.iter().map(|id| sea_orm::Value::from(*id)));
    Ok(
        events::Model::find_by_statement(sea_orm::Statement::from_sql_and_values(
            backend.db(),
            sql,
            values,
        ))
        .all(txn)
        .await?,
    )
}

//! [`EventRepository`] on the store: the append-only timeline.

use async_trait::async_trait;
use leadline_domain::{AppendEventRequest, Event, EventId, LeadId, Page, TenantId, TimelineQuery};
use leadline_ports::{AppendEventError, EventRepository, IdempotentRequest, TimelineError};
use sea_orm::{
    ColumnTrait, Condition, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};

use crate::{
    Store, effects,
    entity::{events, leads},
    errors::{Failure, common},
    repo_leads::lead_exists,
    tx::{ScopedSql, scoped_sql, transaction},
};

/// The event, written only onto a live lead of the tenant that it does
/// not predate, as the CTE `appended`.
macro_rules! append_event {
    () => {
        ", appended AS (INSERT INTO events (tenant_id, id, lead_id, kind, direction, content, \
         occurred_at, actor, metadata, created_at) SELECT scope.tenant_id, $2::uuid, $3::uuid, \
         $4::text, $5::text, $6::text, $7::timestamptz, $8::uuid, $9::jsonb, $10::timestamptz \
         FROM scope CROSS JOIN LATERAL (SELECT 1 FROM leads l WHERE l.tenant_id = $1::uuid \
         AND l.tenant_id = scope.tenant_id \
         AND l.id = $3::uuid AND l.deleted_at IS NULL AND l.created_at <= $7::timestamptz \
         OFFSET 0) live \
         ON CONFLICT (tenant_id, id) DO NOTHING RETURNING tenant_id, id) "
    };
}

/// Its change, from `appended`.
macro_rules! log_change {
    () => {
        "INSERT INTO changes (tenant_id, type, entity_id, at, data) \
         SELECT appended.tenant_id, 'event.recorded', appended.id, $10::timestamptz, $11::jsonb \
         FROM appended"
    };
}

/// An event's append as one statement ([`scoped_sql!`]): the implicit
/// transaction commits with it, in the one round trip. The row's id is
/// chosen before the first attempt, so a rerun after a connection broke
/// mid-statement finds the first attempt's row, if it committed, and writes
/// nothing (`ON CONFLICT DO NOTHING`); if that attempt is still running, the
/// rerun waits on the primary key until it ends. Exactly one row either way.
/// The lead is read in a lateral subquery correlated with `scope`, so it is
/// scanned after the tenant is set (an anti-join the planner hashed could
/// scan `leads` first, see nothing through RLS, and let every row pass);
/// only a live lead created no later than the event gives a row to insert.
/// No row back means the id was taken or the lead refused the event:
/// [`EventRepository::append`] then reads which, and accepts a row under
/// the id only if it is this event.
///
/// Its change-log row and its audit record are written by the same
/// statement, from what the insert returned: all or none.
const APPEND_SQL: ScopedSql = scoped_sql!(
    append_event!(),
    ", changed AS (",
    log_change!(),
    ") INSERT INTO audit_log (tenant_id, at, key_id, user_id, agent_id, request_id, entity, \
     entity_id, action, changes, content_hash) \
     SELECT appended.tenant_id, $10::timestamptz, $12::uuid, $13::uuid, $14::uuid, $15::text, \
     'event', appended.id, 'event.recorded', $16::json, decode($17::text, 'hex') \
     FROM appended RETURNING entity_id"
);

/// [`APPEND_SQL`] without its audit record, for `database.audit = false`:
/// the first [`UNAUDITED_VALUES`] values after the tenant.
const APPEND_UNAUDITED_SQL: ScopedSql =
    scoped_sql!(append_event!(), log_change!(), " RETURNING entity_id");

/// How many of [`append_values`] [`APPEND_UNAUDITED_SQL`] takes.
const UNAUDITED_VALUES: usize = 10;

impl Store {
    /// One event by id, for recovering an idempotent append.
    async fn event_by_id(&self, tenant: TenantId, id: EventId) -> Result<Event, Failure> {
        let stored: Option<events::Model> =
            transaction!(self, "events.by_id", tenant, Read, |txn| {
                Ok(events::Entity::find_by_id((tenant.as_uuid(), id.as_uuid()))
                    .one(txn)
                    .await?)
            })?;
        let model = stored
            .ok_or_else(|| Failure::from(anyhow::anyhow!("the recorded event {id} is gone")))?;
        Ok(Event::try_from(model)?)
    }

    /// After [`APPEND_SQL`] wrote nothing: the id was taken, by an earlier
    /// attempt of this same append whose answer was lost (accepted), or, in
    /// theory only (ids are v7 UUIDs drawn here), by another event (refused
    /// rather than reported as written).
    async fn confirm_appended(
        &self,
        event: &Event,
    ) -> Result<Result<(), AppendEventError>, Failure> {
        let tenant = event.tenant_id;
        let (stored, refused) = transaction!(self, "events.append_confirm", tenant, Read, |txn| {
            let stored = events::Entity::find_by_id((tenant.as_uuid(), event.id.as_uuid()))
                .one(txn)
                .await?;
            let refused = match stored {
                Some(_) => None,
                None => refusal(txn, tenant, event).await?,
            };
            Ok((stored, refused))
        })?;
        let Some(stored) = stored else {
            // The statement wrote nothing: the lead refused the row.
            return match refused {
                Some(refused) => Ok(Err(refused)),
                None => Err(Failure::from(anyhow::anyhow!(
                    "the append of event {} wrote nothing, for no reason found",
                    event.id
                ))),
            };
        };
        let ours = stored.lead_id == event.lead_id.as_uuid()
            && stored.created_at == event.created_at
            && stored.kind == event.kind.as_str()
            && stored.content.as_deref() == event.content.as_ref().map(|c| c.as_str());
        if ours {
            Ok(Ok(()))
        } else {
            Err(Failure::from(anyhow::anyhow!(
                "event id {} is already taken by another event",
                event.id
            )))
        }
    }
}

/// Why `event` may not be appended to its lead, read in `txn`: the lead is
/// missing or deleted, or the event predates it ([`Event::predates`]).
async fn refusal(
    txn: &DatabaseTransaction,
    tenant: TenantId,
    event: &Event,
) -> Result<Option<AppendEventError>, Failure> {
    let created = crate::repo_leads::live()
        .select_only()
        .column(leads::Column::CreatedAt)
        .filter(leads::Column::TenantId.eq(tenant.as_uuid()))
        .filter(leads::Column::Id.eq(event.lead_id.as_uuid()))
        .into_tuple::<chrono::DateTime<chrono::Utc>>()
        .one(txn)
        .await?;
    Ok(match created {
        None => Some(AppendEventError::LeadNotFound),
        Some(lead_created_at) if event.predates(lead_created_at) => {
            Some(AppendEventError::PredatesLead { lead_created_at })
        }
        Some(_) => None,
    })
}

/// How many values [`append_values`] gives.
const APPEND_VALUES: usize = 16;

/// [`APPEND_SQL`]'s values after the tenant, as [`events::ActiveModel`]
/// converts them.
fn append_values(event: &Event) -> [sea_orm::Value; APPEND_VALUES] {
    let change = leadline_domain::Change::event(event);
    let audit = leadline_domain::AuditRecord::of_change(&change, &leadline_ports::audit_context());
    [
        event.id.as_uuid().into(),
        event.lead_id.as_uuid().into(),
        event.kind.as_str().into(),
        event.direction.as_str().into(),
        event.content.as_ref().map(|c| c.as_str().to_owned()).into(),
        event.occurred_at.into(),
        event.actor.map(|a| a.as_uuid()).into(),
        serde_json::Value::Object(event.metadata.as_map().clone()).into(),
        event.created_at.into(),
        change.data.into(),
        audit.actor.key_id.map(|k| k.as_uuid()).into(),
        audit.actor.user_id.map(|u| u.as_uuid()).into(),
        audit.actor.agent_id.map(|a| a.as_uuid()).into(),
        audit.request_id.clone().into(),
        audit.changes.clone().into(),
        leadline_domain::audit::hex(&audit.content_hash()).into(),
    ]
}

#[async_trait]
impl EventRepository for Store {
    async fn append(
        &self,
        tenant: TenantId,
        lead: LeadId,
        req: &AppendEventRequest,
    ) -> Result<Event, AppendEventError> {
        let event = Event::logged(tenant, lead, req, crate::now());
        if let Some(effect) = IdempotentRequest::recovering(tenant) {
            return self
                .event_by_id(tenant, EventId::from_uuid(effect))
                .await
                .map_err(|f| common!(f, AppendEventError));
        }
        // Under an idempotency key the append records itself on the key in
        // its own transaction, so the one-statement path (PostgreSQL) and
        // the combined one (SQLite, `appends.rs`) are for plain calls.
        let plain = IdempotentRequest::current().is_none();
        let one_statement = plain && self.backend() == crate::Backend::Postgres;
        let combined = plain && self.backend() == crate::Backend::Sqlite;
        // The one statement asks nothing first: its lateral read of the lead
        // refuses a missing, foreign or deleted lead and an event that
        // predates its lead, at no extra round trip; only a refused append
        // reads why.
        let result: Result<Result<(), AppendEventError>, Failure> = if one_statement {
            let values = append_values(&event);
            let appended = if self.audits() {
                self.scoped_statement("events.append", tenant, APPEND_SQL, values)
                    .await
            } else {
                self.scoped_statement(
                    "events.append",
                    tenant,
                    APPEND_UNAUDITED_SQL,
                    values.into_iter().take(UNAUDITED_VALUES),
                )
                .await
            };
            match appended {
                Ok(rows) if rows.is_empty() => self.confirm_appended(&event).await,
                Ok(_) => {
                    self.ping_changes(tenant);
                    Ok(Ok(()))
                }
                Err(f) => Err(f),
            }
        } else if combined {
            let change = leadline_domain::Change::event(&event);
            let audit =
                leadline_domain::AuditRecord::of_change(&change, &leadline_ports::audit_context());
            self.append_combined(crate::appends::Append {
                event: event.clone(),
                change,
                audit,
            })
            .await
        } else {
            transaction!(self, "events.append", tenant, Write, |txn| {
                if let Some(refused) = refusal(txn, tenant, &event).await? {
                    return Ok(Err(refused));
                }
                crate::changes::record_with_events(
                    txn,
                    std::slice::from_ref(&event),
                    &[leadline_domain::Change::event(&event)],
                )
                .await?;
                effects::record(txn, tenant, event.id.as_uuid()).await?;
                Ok(Ok(()))
            })
        };
        match result {
            Ok(Ok(())) => Ok(event),
            Ok(Err(refused)) => Err(refused),
            // Without an actor the lead is the only reference. With one,
            // PostgreSQL names the key (its default name for the column
            // list); SQLite names none, so ask, on this rare path only.
            Err(Failure::ForeignKey(_)) if event.actor.is_none() => {
                Err(AppendEventError::LeadNotFound)
            }
            Err(Failure::ForeignKey(key)) if key.contains("events_tenant_id_lead_id_fkey") => {
                Err(AppendEventError::LeadNotFound)
            }
            Err(Failure::ForeignKey(key)) if key.contains("events_tenant_id_actor_fkey") => {
                Err(AppendEventError::AgentNotFound)
            }
            Err(Failure::ForeignKey(_)) => {
                let exists: Result<bool, Failure> =
                    transaction!(self, "events.append_refused", tenant, Read, |txn| {
                        lead_exists(txn, tenant, lead).await
                    });
                match exists {
                    Ok(true) => Err(AppendEventError::AgentNotFound),
                    Ok(false) => Err(AppendEventError::LeadNotFound),
                    Err(f) => Err(common!(f, AppendEventError)),
                }
            }
            Err(f) => Err(common!(f, AppendEventError)),
        }
    }

    async fn timeline(
        &self,
        tenant: TenantId,
        lead: LeadId,
        q: &TimelineQuery,
    ) -> Result<Page<Event>, TimelineError> {
        let result: Result<Option<Vec<events::Model>>, Failure> =
            transaction!(self, "events.timeline", tenant, ReplicaRead, |txn| {
                // A missing or deleted lead has no timeline to show: one
                // primary-key probe, in the same transaction as the page.
                if !lead_exists(txn, tenant, lead).await? {
                    return Ok(None);
                }
                let mut query = events::Entity::find()
                    .filter(events::Column::TenantId.eq(tenant.as_uuid()))
                    .filter(events::Column::LeadId.eq(lead.as_uuid()));
                if let Some(after) = q.after {
                    query = query.filter(
                        Condition::any()
                            .add(events::Column::OccurredAt.lt(after.occurred_at))
                            .add(
                                Condition::all()
                                    .add(events::Column::OccurredAt.eq(after.occurred_at))
                                    .add(events::Column::Id.lt(after.id.as_uuid())),
                            ),
                    );
                }
                let rows = query
                    .order_by_desc(events::Column::OccurredAt)
                    .order_by_desc(events::Column::Id)
                    .limit(u64::from(q.limit.get()) + 1)
                    .all(txn)
                    .await?;
                Ok(Some(rows))
            });
        match result {
            Ok(Some(rows)) => {
                let items = rows
                    .into_iter()
                    .map(Event::try_from)
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Page::from_overfetch(items, q.limit))
            }
            Ok(None) => Err(TimelineError::LeadNotFound),
            Err(f) => Err(common!(f, TimelineError)),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_one_statement_append_logs_the_domains_change_type() {
        let sql = super::APPEND_SQL.as_str();
        let logged = format!("'{}'", leadline_domain::ChangeType::EventRecorded.as_str());
        // In the change log and in the audit trail.
        assert_eq!(sql.matches(&logged).count(), 2, "{sql}");
        // The tenant, then one placeholder for each of `append_values`.
        let last = format!("${}", super::APPEND_VALUES + 1);
        let beyond = format!("${}", super::APPEND_VALUES + 2);
        assert!(sql.contains(&last) && !sql.contains(&beyond), "{sql}");
        // Without the trail: the same event and change, nothing more.
        let bare = super::APPEND_UNAUDITED_SQL.as_str();
        let last = format!("${}", super::UNAUDITED_VALUES + 1);
        let beyond = format!("${}", super::UNAUDITED_VALUES + 2);
        assert!(!bare.contains("audit_log"), "{bare}");
        assert!(bare.contains(&last) && !bare.contains(&beyond), "{bare}");
    }
}

//! [`EventRepository`] on the store: the append-only timeline.

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::SecondsFormat;
use leadline_domain::{AppendEventRequest, Event, EventId, LeadId, Page, TenantId, TimelineQuery};
use leadline_ports::{AppendEventError, EventRepository, IdempotentRequest, TimelineError};
use sea_orm::{
    ColumnTrait, Condition, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use uuid::Uuid;

use crate::{
    Store,
    appends::{Append, Outcome},
    effects,
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

/// Several events of one tenant as the rows of `input`, from the JSON
/// array of [`batch_values`] (`$2`).
macro_rules! batch_input {
    () => {
        ", input AS MATERIALIZED (SELECT * FROM jsonb_to_recordset($2::jsonb) AS i(n int, \
         id uuid, lead_id uuid, kind text, direction text, content text, \
         occurred_at timestamptz, actor uuid, metadata jsonb, created_at timestamptz, \
         data jsonb, key_id uuid, user_id uuid, agent_id uuid, request_id text, changes text, \
         content_hash text)) "
    };
}

/// Each of `input`'s events, written as [`append_event!`] writes one: only
/// onto a live lead of the tenant that it does not predate.
macro_rules! batch_appended {
    () => {
        ", appended AS (INSERT INTO events (tenant_id, id, lead_id, kind, direction, content, \
         occurred_at, actor, metadata, created_at) SELECT scope.tenant_id, i.id, i.lead_id, \
         i.kind, i.direction, i.content, i.occurred_at, i.actor, i.metadata, i.created_at \
         FROM scope CROSS JOIN input i CROSS JOIN LATERAL (SELECT 1 FROM leads l \
         WHERE l.tenant_id = $1::uuid AND l.tenant_id = scope.tenant_id \
         AND l.id = i.lead_id AND l.deleted_at IS NULL AND l.created_at <= i.occurred_at \
         OFFSET 0) live ORDER BY i.n \
         ON CONFLICT (tenant_id, id) DO NOTHING RETURNING tenant_id, id) "
    };
}

/// The changes of the events `appended` wrote, in `input`'s order.
macro_rules! batch_change {
    () => {
        "INSERT INTO changes (tenant_id, type, entity_id, at, data) \
         SELECT appended.tenant_id, 'event.recorded', appended.id, i.created_at, i.data \
         FROM appended JOIN input i ON i.id = appended.id ORDER BY i.n"
    };
}

/// [`APPEND_SQL`] for several events of one tenant at once: one statement,
/// one round trip and one commit for all of them, from [`batch_values`]. It
/// returns the id of each event it wrote; the others were refused or
/// already there, as with [`APPEND_SQL`].
const APPEND_BATCH_SQL: ScopedSql = scoped_sql!(
    batch_input!(),
    batch_appended!(),
    ", changed AS (",
    batch_change!(),
    ") INSERT INTO audit_log (tenant_id, at, key_id, user_id, agent_id, request_id, entity, \
     entity_id, action, changes, content_hash) \
     SELECT appended.tenant_id, i.created_at, i.key_id, i.user_id, i.agent_id, i.request_id, \
     'event', appended.id, 'event.recorded', i.changes::json, decode(i.content_hash, 'hex') \
     FROM appended JOIN input i ON i.id = appended.id ORDER BY i.n RETURNING entity_id"
);

/// [`APPEND_BATCH_SQL`] without the audit records, for
/// `database.audit = false`.
const APPEND_BATCH_UNAUDITED_SQL: ScopedSql = scoped_sql!(
    batch_input!(),
    batch_appended!(),
    batch_change!(),
    " RETURNING entity_id"
);

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
/// converts them, with the change and audit record the request made.
fn append_values(append: &Append) -> [sea_orm::Value; APPEND_VALUES] {
    let Append {
        event,
        change,
        audit,
    } = append;
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
        change.data.clone().into(),
        audit.actor.key_id.map(|k| k.as_uuid()).into(),
        audit.actor.user_id.map(|u| u.as_uuid()).into(),
        audit.actor.agent_id.map(|a| a.as_uuid()).into(),
        audit.request_id.clone().into(),
        audit.changes.clone().into(),
        leadline_domain::audit::hex(&audit.content_hash()).into(),
    ]
}

/// [`APPEND_BATCH_SQL`]'s one value after the tenant: the events as a JSON
/// array of rows, in the columns [`append_values`] binds one by one, each
/// numbered (`n`) so that rows go in in the order they were queued.
/// Timestamps are written to the microsecond, as PostgreSQL keeps them and
/// as a bound value is truncated.
fn batch_values(appends: &[Append]) -> serde_json::Value {
    let at = |t: &chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(SecondsFormat::Micros, true);
    let rows = appends.iter().enumerate().map(|(n, append)| {
        let Append {
            event,
            change,
            audit,
        } = append;
        serde_json::json!({
            "n": n,
            "id": event.id.as_uuid(),
            "lead_id": event.lead_id.as_uuid(),
            "kind": event.kind.as_str(),
            "direction": event.direction.as_str(),
            "content": event.content.as_ref().map(|c| c.as_str()),
            "occurred_at": at(&event.occurred_at),
            "actor": event.actor.map(|a| a.as_uuid()),
            "metadata": serde_json::Value::Object(event.metadata.as_map().clone()),
            "created_at": at(&event.created_at),
            "data": change.data,
            "key_id": audit.actor.key_id.map(|k| k.as_uuid()),
            "user_id": audit.actor.user_id.map(|u| u.as_uuid()),
            "agent_id": audit.actor.agent_id.map(|a| a.as_uuid()),
            "request_id": audit.request_id,
            // Text, kept byte for byte: the content hash covers it.
            "changes": audit.changes,
            "content_hash": leadline_domain::audit::hex(&audit.content_hash()),
        })
    });
    serde_json::Value::Array(rows.collect())
}

impl Store {
    /// Writes `appends`, all of `tenant` and none under an idempotency key,
    /// as one statement on PostgreSQL ([`APPEND_SQL`] for one event,
    /// [`APPEND_BATCH_SQL`] for more), and says of each whether it was
    /// written or why not. An event the statement did not write is asked
    /// about ([`Store::confirm_appended`]): its id was taken by an earlier
    /// attempt of the same statement whose answer was lost, or its lead
    /// refused it. That question is the event's own: if it fails, only
    /// that event's answer is the failure, never the written events'. An
    /// actor that is no agent of the tenant fails the whole statement (a
    /// foreign key), which [`crate::appends`] then splits.
    ///
    /// # Errors
    /// The statement's [`Failure`]: then nothing is known of any event.
    pub(crate) async fn append_statement(
        &self,
        tenant: TenantId,
        appends: &[Append],
    ) -> Result<Vec<Outcome>, Failure> {
        const OP: &str = "events.append_batch";
        let rows = match (appends, self.audits()) {
            ([one], true) => {
                self.scoped_statement(OP, tenant, APPEND_SQL, append_values(one))
                    .await?
            }
            ([one], false) => {
                let values = append_values(one).into_iter().take(UNAUDITED_VALUES);
                self.scoped_statement(OP, tenant, APPEND_UNAUDITED_SQL, values)
                    .await?
            }
            (_, audits) => {
                let sql = if audits {
                    APPEND_BATCH_SQL
                } else {
                    APPEND_BATCH_UNAUDITED_SQL
                };
                let values = [batch_values(appends).into()];
                self.scoped_statement(OP, tenant, sql, values).await?
            }
        };
        let written = rows
            .iter()
            .map(|row| row.try_get_by_index::<Uuid>(0))
            .collect::<Result<HashSet<Uuid>, _>>()?;
        if !written.is_empty() {
            self.ping_changes(tenant);
        }
        let mut outcomes = Vec::with_capacity(appends.len());
        for append in appends {
            outcomes.push(if written.contains(&append.event.id.as_uuid()) {
                Ok(Ok(()))
            } else {
                self.confirm_appended(&append.event).await
            });
        }
        Ok(outcomes)
    }
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
        // its own transaction; plain calls are combined (`appends.rs`): on
        // PostgreSQL one statement per tenant, on SQLite one transaction.
        // The statement asks nothing first: its lateral read of the lead
        // refuses a missing, foreign or deleted lead and an event that
        // predates its lead, at no extra round trip; only a refused append
        // reads why.
        let result: Result<Result<(), AppendEventError>, Failure> = if IdempotentRequest::current()
            .is_none()
        {
            let change = leadline_domain::Change::event(&event);
            let audit =
                leadline_domain::AuditRecord::of_change(&change, &leadline_ports::audit_context());
            self.append_combined(Append {
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

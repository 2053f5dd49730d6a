//! Bulk inserts on PostgreSQL as one JSON parameter.
//!
//! A multi-row `INSERT … VALUES` of a 2,000-row import batch binds tens of
//! thousands of parameters, each built as a query value, encoded and
//! decoded one by one; the change log's rows carry whole leads as JSON
//! values, copied again on the way. Here the rows are serialized once,
//! straight from the domain's types, into one JSON array, and the server
//! unpacks it (`jsonb_array_elements`) in the same statement and
//! transaction. SQLite keeps the multi-row `INSERT`: it has no network to
//! save and stores ids as blobs the JSON would have to spell.
//!
//! The change log goes this way for any number of rows, with the changes'
//! audit records in the same statement (a data-modifying CTE): every write
//! pays one round trip for both, not one each. A write that also puts
//! events on a timeline (an approval's decision, a status move, an import
//! batch) inserts them in that same statement.

use chrono::{DateTime, Utc};
use leadline_domain::{Change, Event, Lead};
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, Statement};
use serde::Serialize;
use uuid::Uuid;

use crate::errors::Failure;

/// Batches smaller than this go through the ordinary `INSERT`: the JSON
/// detour only pays off for many rows.
pub(crate) const MIN_ROWS: usize = 64;

/// How a column is read from a row's JSON object.
#[derive(Clone, Copy)]
enum Kind {
    /// `->>`: text as is.
    Text,
    /// `->`: a JSON value, stored as `jsonb`.
    Json,
    /// `->>` then a cast to this type.
    Cast(&'static str),
}

/// The `INSERT` of rows given as the JSON array `$1` into `table`, in the
/// array's order (identity columns number them so).
fn insert_sql(table: &str, columns: &[(&str, Kind)]) -> String {
    insert_sql_at(table, columns, 1)
}

/// [`insert_sql`] with the array in parameter `$param`.
fn insert_sql_at(table: &str, columns: &[(&str, Kind)], param: usize) -> String {
    let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
    let values: Vec<String> = columns
        .iter()
        .map(|(name, kind)| match kind {
            Kind::Text => format!("e.v->>'{name}'"),
            Kind::Json => format!("e.v->'{name}'"),
            Kind::Cast(ty) => format!("CAST(e.v->>'{name}' AS {ty})"),
        })
        .collect();
    format!(
        "INSERT INTO {table} ({}) SELECT {} \
         FROM jsonb_array_elements(CAST(${param} AS jsonb)) WITH ORDINALITY AS e(v, n) ORDER BY e.n",
        names.join(", "),
        values.join(", ")
    )
}

/// Inserts `rows` (serialized objects whose keys are the column names) into
/// `table` in one statement, in order.
async fn insert_json<R: Serialize>(
    txn: &DatabaseTransaction,
    table: &str,
    columns: &[(&str, Kind)],
    rows: &[R],
) -> Result<(), Failure> {
    let json = serde_json::to_string(rows).map_err(|e| Failure::Other(e.into()))?;
    txn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        insert_sql(table, columns),
        [json.into()],
    ))
    .await?;
    Ok(())
}

#[derive(Serialize)]
struct LeadRow<'a> {
    tenant_id: Uuid,
    id: Uuid,
    first_name: &'a str,
    last_name: &'a str,
    email: Option<&'a str>,
    phone: Option<&'a str>,
    company: Option<&'a str>,
    source: Option<&'a str>,
    status: &'a str,
    assigned_agent_id: Option<Uuid>,
    tags: Vec<&'a str>,
    metadata: &'a serde_json::Map<String, serde_json::Value>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    version: i64,
    search_text: String,
    name_key: String,
}

/// Inserts new `leads` (what `leads::ActiveModel::from` writes, as JSON).
pub(crate) async fn leads(txn: &DatabaseTransaction, leads: &[Lead]) -> Result<(), Failure> {
    let rows: Vec<LeadRow<'_>> = leads
        .iter()
        .map(|l| LeadRow {
            tenant_id: l.tenant_id.as_uuid(),
            id: l.id.as_uuid(),
            first_name: l.first_name.as_str(),
            last_name: l.last_name.as_str(),
            email: l.email.as_ref().map(|e| e.as_str()),
            phone: l.phone.as_ref().map(|p| p.as_str()),
            company: l.company.as_ref().map(|c| c.as_str()),
            source: l.source.as_ref().map(|s| s.as_str()),
            status: l.status.as_str(),
            assigned_agent_id: l.assigned_agent_id.map(|a| a.as_uuid()),
            tags: l.tags.as_slice().iter().map(|t| t.as_str()).collect(),
            metadata: l.metadata.as_map(),
            created_at: l.created_at,
            updated_at: l.updated_at,
            version: l.version,
            search_text: leadline_domain::search::search_text(l),
            name_key: leadline_domain::search::lead_name_key(l),
        })
        .collect();
    insert_json(
        txn,
        "leads",
        &[
            ("tenant_id", Kind::Cast("uuid")),
            ("id", Kind::Cast("uuid")),
            ("first_name", Kind::Text),
            ("last_name", Kind::Text),
            ("email", Kind::Text),
            ("phone", Kind::Text),
            ("company", Kind::Text),
            ("source", Kind::Text),
            ("status", Kind::Text),
            ("assigned_agent_id", Kind::Cast("uuid")),
            ("tags", Kind::Json),
            ("metadata", Kind::Json),
            ("created_at", Kind::Cast("timestamptz")),
            ("updated_at", Kind::Cast("timestamptz")),
            ("version", Kind::Cast("bigint")),
            ("search_text", Kind::Text),
            ("name_key", Kind::Text),
        ],
        &rows,
    )
    .await
}

#[derive(Serialize)]
struct ChangeRow<'a> {
    tenant_id: Uuid,
    #[serde(rename = "type")]
    kind: &'a str,
    entity_id: Uuid,
    at: DateTime<Utc>,
    data: &'a serde_json::Value,
}

const CHANGE_COLUMNS: &[(&str, Kind)] = &[
    ("tenant_id", Kind::Cast("uuid")),
    ("type", Kind::Text),
    ("entity_id", Kind::Cast("uuid")),
    ("at", Kind::Cast("timestamptz")),
    ("data", Kind::Json),
];

fn change_rows(changes: &[Change]) -> Result<String, Failure> {
    let rows: Vec<ChangeRow<'_>> = changes
        .iter()
        .map(|c| ChangeRow {
            tenant_id: c.tenant_id.as_uuid(),
            kind: c.kind.as_str(),
            entity_id: c.entity_id,
            at: c.at,
            data: &c.data,
        })
        .collect();
    serde_json::to_string(&rows).map_err(|e| Failure::Other(e.into()))
}

/// Appends `events` (or none), then `changes` to the change log and
/// `audited` (the changes' audit records, or none) to the audit trail, all
/// in one statement: a write that puts an event on a lead's timeline pays
/// one round trip for the event and its bookkeeping, not two.
pub(crate) async fn events_and_changes(
    txn: &DatabaseTransaction,
    events: &[Event],
    changes: &[Change],
    audited: &[leadline_domain::AuditRecord],
) -> Result<(), Failure> {
    let mut values: Vec<sea_orm::Value> = Vec::with_capacity(3);
    if !events.is_empty() {
        values.push(event_rows(events)?.into());
    }
    values.push(change_rows(changes)?.into());
    if !audited.is_empty() {
        values.push(crate::audit::postgres_rows(audited)?.into());
    }
    let sql = events_and_changes_sql(!events.is_empty(), !audited.is_empty());
    txn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        sql,
        values,
    ))
    .await?;
    Ok(())
}

/// The statement [`events_and_changes`] sends: each insert reads its rows
/// from the next parameter (events, changes, audit records, those present),
/// and all but the last run as data-modifying CTEs of the last.
fn events_and_changes_sql(events: bool, audited: bool) -> String {
    let mut inserts: Vec<String> = Vec::with_capacity(3);
    if events {
        inserts.push(insert_sql_at("events", EVENT_COLUMNS, inserts.len() + 1));
    }
    inserts.push(insert_sql_at("changes", CHANGE_COLUMNS, inserts.len() + 1));
    if audited {
        inserts.push(crate::audit::postgres_insert(inserts.len() + 1));
    }
    let last = inserts.pop().unwrap_or_default();
    if inserts.is_empty() {
        return last;
    }
    let ctes: Vec<String> = inserts
        .iter()
        .enumerate()
        .map(|(i, insert)| format!("written_{i} AS ({insert})"))
        .collect();
    format!("WITH {} {last}", ctes.join(", "))
}

#[derive(Serialize)]
struct EventRow<'a> {
    tenant_id: Uuid,
    id: Uuid,
    lead_id: Uuid,
    kind: &'a str,
    direction: &'a str,
    content: Option<&'a str>,
    occurred_at: DateTime<Utc>,
    actor: Option<Uuid>,
    metadata: &'a serde_json::Map<String, serde_json::Value>,
    created_at: DateTime<Utc>,
}

const EVENT_COLUMNS: &[(&str, Kind)] = &[
    ("tenant_id", Kind::Cast("uuid")),
    ("id", Kind::Cast("uuid")),
    ("lead_id", Kind::Cast("uuid")),
    ("kind", Kind::Text),
    ("direction", Kind::Text),
    ("content", Kind::Text),
    ("occurred_at", Kind::Cast("timestamptz")),
    ("actor", Kind::Cast("uuid")),
    ("metadata", Kind::Json),
    ("created_at", Kind::Cast("timestamptz")),
];

/// `events` as the JSON array the events' `INSERT` reads (what
/// `events::ActiveModel::from` writes).
fn event_rows(events: &[Event]) -> Result<String, Failure> {
    let rows: Vec<EventRow<'_>> = events
        .iter()
        .map(|e| EventRow {
            tenant_id: e.tenant_id.as_uuid(),
            id: e.id.as_uuid(),
            lead_id: e.lead_id.as_uuid(),
            kind: e.kind.as_str(),
            direction: e.direction.as_str(),
            content: e.content.as_ref().map(|c| c.as_str()),
            occurred_at: e.occurred_at,
            actor: e.actor.map(|a| a.as_uuid()),
            metadata: e.metadata.as_map(),
            created_at: e.created_at,
        })
        .collect();
    serde_json::to_string(&rows).map_err(|e| Failure::Other(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each table reads its own parameter, numbered in the order the values
    /// are bound (events, changes, audit records, those present), and
    /// every insert but the last is a CTE of it.
    #[test]
    fn each_insert_reads_its_own_parameter() {
        let cases = [
            (false, false, vec![("changes", 1)]),
            (false, true, vec![("changes", 1), ("audit_log", 2)]),
            (true, false, vec![("events", 1), ("changes", 2)]),
            (
                true,
                true,
                vec![("events", 1), ("changes", 2), ("audit_log", 3)],
            ),
        ];
        for (events, audited, expected) in cases {
            let sql = events_and_changes_sql(events, audited);
            let tables: Vec<(&str, usize)> = ["events", "changes", "audit_log"]
                .into_iter()
                .filter_map(|table| {
                    let at = sql.find(&format!("INSERT INTO {table} "))?;
                    let param = sql[at..]
                        .split("CAST($")
                        .nth(1)
                        .and_then(|rest| rest.split(' ').next())
                        .and_then(|n| n.parse().ok())?;
                    Some((table, param))
                })
                .collect();
            assert_eq!(tables, expected, "{sql}");
            assert_eq!(sql.matches("jsonb_array_elements").count(), expected.len());
            assert_eq!(sql.starts_with("WITH "), expected.len() > 1, "{sql}");
        }
    }
}

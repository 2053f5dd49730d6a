//! The lead context (the "memory recall" read model) on the store: one
//! statement on either backend, each part a JSON document; five queries in
//! a transaction when a part does not decode.

use std::sync::LazyLock;

use async_trait::async_trait;
use leadline_domain::{
    Agent, Approval, ApprovalStatus, Event, Lead, LeadContext, LeadId, TenantId,
};
use leadline_ports::{GetLeadError, LeadContextRepository, ListLeadsError};
use sea_orm::{
    ColumnTrait, DatabaseTransaction, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    Statement,
};

use crate::{
    Backend, Store,
    entity::{agents, approvals, events, leads},
    errors::{Failure, common},
    sqlite_json,
    tx::{ScopedSql, scoped_sql, transaction},
};

/// How many open approvals a context shows (pending and approved; more is a
/// backlog problem, not a context).
const CONTEXT_OPEN_APPROVALS: u64 = 50;
/// How many closed approvals a context shows.
const CONTEXT_RECENT_APPROVALS: u64 = 10;

/// The rows a lead context is made of.
struct ContextRows {
    lead: leads::Model,
    agent: Option<agents::Model>,
    open: Vec<approvals::Model>,
    recent: Vec<approvals::Model>,
    events: Vec<events::Model>,
}

const OPEN_STATUSES: [ApprovalStatus; 2] = [ApprovalStatus::Pending, ApprovalStatus::Approved];
const CLOSED_STATUSES: [ApprovalStatus; 3] = [
    ApprovalStatus::Sent,
    ApprovalStatus::Rejected,
    ApprovalStatus::Cancelled,
];

/// The context's five reads as five queries: the portable form (SQLite).
async fn context_rows(
    txn: &DatabaseTransaction,
    tenant: TenantId,
    lead: LeadId,
    events_limit: u16,
) -> Result<Option<ContextRows>, Failure> {
    let Some(lead_row) = crate::repo_leads::live()
        .filter(leads::Column::TenantId.eq(tenant.as_uuid()))
        .filter(leads::Column::Id.eq(lead.as_uuid()))
        .one(txn)
        .await?
    else {
        return Ok(None);
    };
    let agent = match lead_row.assigned_agent_id {
        Some(agent) => {
            agents::Entity::find()
                .filter(agents::Column::TenantId.eq(tenant.as_uuid()))
                .filter(agents::Column::Id.eq(agent))
                .one(txn)
                .await?
        }
        None => None,
    };
    let of_lead = |statuses: &[ApprovalStatus], limit: u64| {
        approvals::Entity::find()
            .filter(approvals::Column::TenantId.eq(tenant.as_uuid()))
            .filter(approvals::Column::LeadId.eq(lead.as_uuid()))
            .filter(approvals::Column::Status.is_in(statuses.iter().map(|s| s.as_str())))
            .order_by_desc(approvals::Column::Id)
            .limit(limit)
    };
    let open = of_lead(&OPEN_STATUSES, CONTEXT_OPEN_APPROVALS)
        .all(txn)
        .await?;
    let recent = of_lead(&CLOSED_STATUSES, CONTEXT_RECENT_APPROVALS)
        .all(txn)
        .await?;
    let events = events::Entity::find()
        .filter(events::Column::TenantId.eq(tenant.as_uuid()))
        .filter(events::Column::LeadId.eq(lead.as_uuid()))
        .order_by_desc(events::Column::OccurredAt)
        .order_by_desc(events::Column::Id)
        .limit(u64::from(events_limit))
        .all(txn)
        .await?;
    Ok(Some(ContextRows {
        lead: lead_row,
        agent,
        open,
        recent,
        events,
    }))
}

/// The same five reads as one statement ([`scoped_sql!`]), each part a JSON
/// document: one round trip in all, where the five queries in a transaction
/// cost eight (`BEGIN`, `set_config`, five queries, `COMMIT`). Every subquery
/// is the portable form's query, with its index and its RLS policy, and is
/// correlated with `scope`, so it runs after the tenant is set;
/// `row_to_json` names fields by column, as the entities do.
const CONTEXT_SQL: ScopedSql = scoped_sql!(
    r#"
SELECT
  (SELECT row_to_json(l)::text FROM leads l
    WHERE l.tenant_id = $1::uuid AND l.tenant_id = scope.tenant_id
      AND l.id = $2 AND l.deleted_at IS NULL) AS lead,
  (SELECT row_to_json(a)::text FROM leads l
    JOIN agents a ON a.tenant_id = l.tenant_id AND a.id = l.assigned_agent_id
    WHERE l.tenant_id = $1::uuid AND l.tenant_id = scope.tenant_id
      AND l.id = $2 AND l.deleted_at IS NULL) AS agent,
  (SELECT coalesce(json_agg(o ORDER BY o.id DESC), '[]')::text FROM (
    SELECT * FROM approvals
    WHERE tenant_id = $1::uuid AND tenant_id = scope.tenant_id
      AND lead_id = $2 AND status IN ($3, $4)
    ORDER BY id DESC LIMIT $5) o) AS open,
  (SELECT coalesce(json_agg(r ORDER BY r.id DESC), '[]')::text FROM (
    SELECT * FROM approvals
    WHERE tenant_id = $1::uuid AND tenant_id = scope.tenant_id
      AND lead_id = $2 AND status IN ($6, $7, $8)
    ORDER BY id DESC LIMIT $9) r) AS recent,
  (SELECT coalesce(json_agg(e ORDER BY e.occurred_at DESC, e.id DESC), '[]')::text FROM (
    SELECT * FROM events
    WHERE tenant_id = $1::uuid AND tenant_id = scope.tenant_id AND lead_id = $2
    ORDER BY occurred_at DESC, id DESC LIMIT $10) e) AS events
FROM scope
"#
);

/// [`CONTEXT_SQL`]'s values after the tenant and the lead (`$3`…`$10`).
fn context_values(events_limit: u16) -> [sea_orm::Value; 8] {
    let [pending, approved] = OPEN_STATUSES.map(|s| s.as_str());
    let [sent, rejected, cancelled] = CLOSED_STATUSES.map(|s| s.as_str());
    let to_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    [
        pending.into(),
        approved.into(),
        to_i64(CONTEXT_OPEN_APPROVALS).into(),
        sent.into(),
        rejected.into(),
        cancelled.into(),
        to_i64(CONTEXT_RECENT_APPROVALS).into(),
        i64::from(events_limit).into(),
    ]
}

/// The cache-cold context statement exactly as the store sends it on
/// PostgreSQL, with the values of `$3`…`$10` as SQL literals (`$1` is the
/// tenant, `$2` the lead). For the benchmark harness, which runs the same
/// statement under pgbench to show what the statement alone costs; nothing
/// else should need it.
#[doc(hidden)]
#[must_use]
pub fn context_statement_for_pgbench(events_limit: u16) -> (&'static str, Vec<String>) {
    let literals = context_values(events_limit)
        .into_iter()
        .map(|value| match value {
            sea_orm::Value::String(Some(s)) => format!("'{s}'"),
            other => other.to_string(),
        })
        .collect();
    (CONTEXT_SQL.as_str(), literals)
}

/// The same statement for SQLite, built from the entities' columns
/// ([`sqlite_json::row_object`]), with `?1` the tenant and `?2` the lead and
/// the rest as [`CONTEXT_SQL`]'s. It runs on a reader without `BEGIN`: one
/// statement reads one snapshot by itself. `None` when an entity has a
/// column with no JSON form (the context is then read the portable way).
static CONTEXT_SQLITE_SQL: LazyLock<Option<String>> = LazyLock::new(|| {
    let lead = sqlite_json::row_object::<leads::Entity>("l")?;
    let agent = sqlite_json::row_object::<agents::Entity>("a")?;
    let open = sqlite_json::row_object::<approvals::Entity>("o")?;
    let recent = sqlite_json::row_object::<approvals::Entity>("r")?;
    let event = sqlite_json::row_object::<events::Entity>("e")?;
    Some(format!(
        r#"
SELECT
  (SELECT {lead} FROM leads l
    WHERE l.tenant_id = ?1 AND l.id = ?2 AND l.deleted_at IS NULL) AS lead,
  (SELECT {agent} FROM leads l
    JOIN agents a ON a.tenant_id = l.tenant_id AND a.id = l.assigned_agent_id
    WHERE l.tenant_id = ?1 AND l.id = ?2 AND l.deleted_at IS NULL) AS agent,
  (SELECT json_group_array({open} ORDER BY o.id DESC) FROM (
    SELECT * FROM approvals
    WHERE tenant_id = ?1 AND lead_id = ?2 AND status IN (?3, ?4)
    ORDER BY id DESC LIMIT ?5) o) AS open,
  (SELECT json_group_array({recent} ORDER BY r.id DESC) FROM (
    SELECT * FROM approvals
    WHERE tenant_id = ?1 AND lead_id = ?2 AND status IN (?6, ?7, ?8)
    ORDER BY id DESC LIMIT ?9) r) AS recent,
  (SELECT json_group_array({event} ORDER BY e.occurred_at DESC, e.id DESC) FROM (
    SELECT * FROM events
    WHERE tenant_id = ?1 AND lead_id = ?2
    ORDER BY occurred_at DESC, id DESC LIMIT ?10) e) AS events
"#
    ))
});

/// The context's rows in one statement ([`CONTEXT_SQL`] on PostgreSQL,
/// [`CONTEXT_SQLITE_SQL`] on SQLite); `Ok(Err(part))` when a part's JSON
/// does not decode into its entity, or SQLite has no such statement, for
/// the caller to read it the portable way.
async fn context_rows_in_one_query(
    store: &Store,
    tenant: TenantId,
    lead: LeadId,
    events_limit: u16,
) -> Result<Result<Option<ContextRows>, &'static str>, Failure> {
    let row = match store.backend() {
        Backend::Postgres => store
            .scoped_statement(
                "context.load",
                tenant,
                CONTEXT_SQL,
                std::iter::once(lead.as_uuid().into()).chain(context_values(events_limit)),
            )
            .await?
            .into_iter()
            .next(),
        Backend::Sqlite => {
            let Some(sql) = CONTEXT_SQLITE_SQL.as_deref() else {
                return Ok(Err("no SQLite statement"));
            };
            let values = [tenant.as_uuid().into(), lead.as_uuid().into()]
                .into_iter()
                .chain(context_values(events_limit));
            store
                .sqlite_read_one(
                    "context.load",
                    Statement::from_sql_and_values(DbBackend::Sqlite, sql, values),
                )
                .await?
        }
    };
    let Some(row) = row else {
        return Ok(Ok(None));
    };
    let Some(lead_json) = row.try_get::<Option<String>>("", "lead")? else {
        return Ok(Ok(None));
    };
    let agent_json = row.try_get::<Option<String>>("", "agent")?;
    let [open_json, recent_json, events_json] =
        ["open", "recent", "events"].map(|name| row.try_get::<String>("", name));
    let (open_json, recent_json, events_json) = (open_json?, recent_json?, events_json?);
    // serde's message may quote a value (personal data): only the part's
    // name leaves this function.
    fn decode<T: serde::de::DeserializeOwned>(
        json: &str,
        part: &'static str,
    ) -> Result<T, &'static str> {
        serde_json::from_str(json).map_err(|_| part)
    }
    let rows = (|| {
        Ok(ContextRows {
            lead: decode(&lead_json, "lead")?,
            agent: agent_json
                .as_deref()
                .map(|json| decode(json, "agent"))
                .transpose()?,
            open: decode(&open_json, "open approvals")?,
            recent: decode(&recent_json, "recent approvals")?,
            events: decode(&events_json, "events")?,
        })
    })();
    Ok(rows.map(Some))
}

impl Store {
    /// Whether `lead`'s context reads in one statement, decoded from JSON,
    /// rather than by the five queries it falls back to; `Ok(false)` also
    /// when there is no such lead. For the tests that hold the one-statement
    /// form to its promise on both backends; nothing else should need it.
    ///
    /// # Errors
    /// The statement itself failed.
    #[doc(hidden)]
    pub async fn context_reads_in_one_statement(
        &self,
        tenant: TenantId,
        lead: LeadId,
        events_limit: u16,
    ) -> anyhow::Result<bool> {
        let rows = context_rows_in_one_query(self, tenant, lead, events_limit)
            .await
            .map_err(|f| anyhow::anyhow!("{f:?}"))?;
        Ok(matches!(rows, Ok(Some(_))))
    }
}

#[async_trait]
impl LeadContextRepository for Store {
    async fn recently_active(
        &self,
        tenant: TenantId,
        limit: u16,
    ) -> Result<Vec<LeadId>, leadline_ports::ListLeadsError> {
        let result: Result<Vec<uuid::Uuid>, Failure> = transaction!(
            self,
            "context.recently_active",
            tenant,
            ReplicaRead,
            |txn| {
                // A backward scan of events_recent_idx. Several events may
                // belong to one lead, so read a few times the limit and keep
                // the first occurrence of each lead.
                let rows = events::Entity::find()
                    .select_only()
                    .column(events::Column::LeadId)
                    .filter(events::Column::TenantId.eq(tenant.as_uuid()))
                    .order_by_desc(events::Column::CreatedAt)
                    .limit(u64::from(limit) * 4)
                    .into_tuple::<uuid::Uuid>()
                    .all(txn)
                    .await?;
                Ok(rows)
            }
        );
        let rows = result.map_err(|f| common!(f, ListLeadsError))?;
        let mut seen = std::collections::HashSet::with_capacity(usize::from(limit));
        Ok(rows
            .into_iter()
            .filter(|id| seen.insert(*id))
            .take(usize::from(limit))
            .map(LeadId::from_uuid)
            .collect())
    }

    async fn context(
        &self,
        tenant: TenantId,
        lead: LeadId,
        events_limit: u16,
    ) -> Result<LeadContext, GetLeadError> {
        let one_query = context_rows_in_one_query(self, tenant, lead, events_limit).await;
        let rows: Result<Option<ContextRows>, Failure> = match one_query {
            Ok(Ok(rows)) => Ok(rows),
            // A value the JSON form cannot carry (a BC date renders as
            // "… BC" on PostgreSQL, which no ISO parser reads; a value not
            // stored as the store writes it on SQLite): the five queries
            // decode the columns themselves, and name what is wrong.
            Ok(Err(part)) => {
                tracing::debug!(part, "lead context: JSON undecodable, five queries");
                transaction!(self, "context.load_rows", tenant, Read, |txn| {
                    context_rows(txn, tenant, lead, events_limit).await
                })
            }
            Err(f) => Err(f),
        };
        let result: Result<Option<LeadContext>, Failure> = rows.and_then(|rows| {
            let Some(rows) = rows else {
                return Ok(None);
            };
            let convert = |rows: Vec<approvals::Model>| {
                rows.into_iter()
                    .map(Approval::try_from)
                    .collect::<Result<Vec<_>, _>>()
            };
            Ok(Some(LeadContext {
                lead: Lead::try_from(rows.lead)?,
                assigned_agent: rows.agent.map(Agent::try_from).transpose()?,
                open_approvals: convert(rows.open)?,
                recent_approvals: convert(rows.recent)?,
                events: rows
                    .events
                    .into_iter()
                    .map(Event::try_from)
                    .collect::<Result<Vec<_>, _>>()?,
            }))
        });
        match result {
            Ok(Some(ctx)) => Ok(ctx),
            Ok(None) => Err(GetLeadError::NotFound),
            Err(f) => Err(common!(f, GetLeadError)),
        }
    }
}

#[cfg(test)]
mod tests {
    /// pgbench gets the values the store binds, as literals it can parse.
    #[test]
    fn the_pgbench_form_of_the_context_statement_has_the_bound_values() {
        let (sql, literals) = super::context_statement_for_pgbench(20);
        assert!(sql.contains("$10") && sql.starts_with("WITH scope AS MATERIALIZED"));
        assert_eq!(
            literals,
            [
                "'pending'",
                "'approved'",
                "50",
                "'sent'",
                "'rejected'",
                "'cancelled'",
                "10",
                "20"
            ]
        );
    }
}

//! [`AnalyticsRepository`] on the store.
//!
//! PostgreSQL reads the materialized views of migration 22 through their
//! tenant-filtering views, on the analytics pool, each answer with the
//! `as_of` of the last refresh in the same statement; [`refresh`] runs
//! `analytics_refresh()` on the primary. SQLite counts the same things from
//! the base tables when asked (its `as_of` is the time of asking): the
//! queries below and the views' definitions say the same thing in two
//! dialects, and the integration suite checks both against a ground truth.
//!
//! [`refresh`]: AnalyticsRepository::refresh

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use leadline_domain::{
    AgentFigures, AgentId, Channel, Cohort, DateRange, Direction, EventCount, EventKind,
    FunnelCounts, LeadStatus, Snapshot, StatusEntries, TenantId, analytics::median_micros,
};
use leadline_ports::{AnalyticsError, AnalyticsRepository};
use sea_orm::{ConnectionTrait, DbBackend, QueryResult, Statement, Value};

use crate::{
    Backend, Store,
    errors::{Failure, common},
    tx::transaction,
};

/// The timeline and its archive: archived events happened, and archiving
/// must not change past figures (migration 24 builds PostgreSQL's views
/// over the same union).
macro_rules! events_ever {
    () => {
        "(SELECT tenant_id, id, lead_id, kind, direction, occurred_at, metadata FROM events \
          UNION ALL \
          SELECT tenant_id, id, lead_id, kind, direction, occurred_at, metadata FROM events_archive)"
    };
}

const PG_STATUS_ENTRIES: &str = "\
SELECT r.as_of, s.day, s.status, s.entered \
  FROM analytics_refreshed r \
  LEFT JOIN analytics_status_entries s \
    ON s.tenant_id = $1 AND s.day BETWEEN $2 AND $3";

const SQLITE_STATUS_ENTRIES: &str = concat!(
    "SELECT day, status, COUNT(*) AS entered FROM ( \
    SELECT date(l.created_at) AS day, \
           COALESCE((SELECT json_extract(e.metadata, '$.from') FROM ",
    events_ever!(),
    " e WHERE e.tenant_id = l.tenant_id AND e.lead_id = l.id \
                        AND e.kind = 'status_changed' \
                      ORDER BY e.occurred_at, e.id LIMIT 1), l.status) AS status \
      FROM leads l \
     WHERE l.tenant_id = ? AND date(l.created_at) BETWEEN ? AND ? \
    UNION ALL \
    SELECT date(e.occurred_at), json_extract(e.metadata, '$.to') \
      FROM ",
    events_ever!(),
    " e WHERE e.tenant_id = ? AND e.kind = 'status_changed' \
       AND date(e.occurred_at) BETWEEN ? AND ? \
) WHERE status IN ('new', 'contacted', 'qualified', 'nurturing', 'won', 'lost') \
GROUP BY day, status"
);

const PG_COHORTS: &str = "\
SELECT c.day, c.from_status, c.entered, c.converted \
  FROM analytics_cohorts c \
 WHERE c.tenant_id = $1 AND c.day BETWEEN $2 AND $3";

/// Per lead and stage its first and last entry; per day and main-path
/// stage, the leads that first entered it and those of them that entered
/// the next stage at or after that (migration 22's `analytics_cohorts_mv`).
const SQLITE_COHORTS: &str = concat!(
    "WITH entries AS ( \
    SELECT l.id AS lead_id, l.created_at AS at, \
           COALESCE((SELECT json_extract(e.metadata, '$.from') FROM ",
    events_ever!(),
    " e WHERE e.tenant_id = l.tenant_id AND e.lead_id = l.id \
                        AND e.kind = 'status_changed' \
                      ORDER BY e.occurred_at, e.id LIMIT 1), l.status) AS status \
      FROM leads l WHERE l.tenant_id = ? \
    UNION ALL \
    SELECT e.lead_id, e.occurred_at, json_extract(e.metadata, '$.to') FROM ",
    events_ever!(),
    " e WHERE e.tenant_id = ? AND e.kind = 'status_changed' \
), spans AS ( \
    SELECT lead_id, status, MIN(at) AS first_at, MAX(at) AS last_at \
      FROM entries GROUP BY lead_id, status \
) \
SELECT date(a.first_at) AS day, a.status AS from_status, \
       COUNT(*) AS entered, COUNT(b.lead_id) AS converted \
  FROM spans a \
  LEFT JOIN spans b ON b.lead_id = a.lead_id \
   AND b.status = CASE a.status WHEN 'new' THEN 'contacted' \
                                WHEN 'contacted' THEN 'qualified' \
                                WHEN 'qualified' THEN 'won' END \
   AND b.last_at >= a.first_at \
 WHERE a.status IN ('new', 'contacted', 'qualified') \
   AND date(a.first_at) BETWEEN ? AND ? \
 GROUP BY 1, 2"
);

const PG_AGENTS: &str = "\
SELECT r.as_of, a.agent_id, a.leads_owned, a.approvals_drafted, a.approvals_approved, \
       a.approvals_rejected, a.messages_sent, a.median_micros \
  FROM analytics_refreshed r \
  LEFT JOIN analytics_agents a ON a.tenant_id = $1";

const SQLITE_AGENTS: &str = "\
SELECT a.id AS agent_id, \
  (SELECT COUNT(*) FROM leads l WHERE l.tenant_id = a.tenant_id \
      AND l.assigned_agent_id = a.id AND l.deleted_at IS NULL) AS leads_owned, \
  (SELECT COUNT(*) FROM approvals p WHERE p.tenant_id = a.tenant_id \
      AND p.requested_by = a.id) AS approvals_drafted, \
  (SELECT COUNT(*) FROM approvals p WHERE p.tenant_id = a.tenant_id \
      AND p.decided_by = a.id AND p.status IN ('approved', 'sent')) AS approvals_approved, \
  (SELECT COUNT(*) FROM approvals p WHERE p.tenant_id = a.tenant_id \
      AND p.decided_by = a.id AND p.status = 'rejected') AS approvals_rejected, \
  (SELECT COUNT(*) FROM approvals p WHERE p.tenant_id = a.tenant_id \
      AND p.sent_by = a.id AND p.status = 'sent') AS messages_sent \
FROM agents a WHERE a.tenant_id = ?";

/// Each owned lead's creation and first outbound touch at or after it.
const SQLITE_FIRST_TOUCHES: &str = concat!(
    "SELECT l.assigned_agent_id AS agent_id, l.created_at AS created_at, \
       MIN(e.occurred_at) AS first_at \
  FROM leads l \
  JOIN ",
    events_ever!(),
    " e ON e.tenant_id = l.tenant_id AND e.lead_id = l.id \
 WHERE l.tenant_id = ? AND l.assigned_agent_id IS NOT NULL AND l.deleted_at IS NULL \
   AND e.direction = 'outbound' AND e.occurred_at >= l.created_at \
 GROUP BY l.id"
);

const PG_EVENT_COUNTS: &str = "\
SELECT r.as_of, c.day, c.kind, c.direction, c.channel, c.events \
  FROM analytics_refreshed r \
  LEFT JOIN analytics_event_counts c \
    ON c.tenant_id = $1 AND c.day BETWEEN $2 AND $3";

const SQLITE_EVENT_COUNTS: &str = concat!(
    "SELECT date(occurred_at) AS day, kind, direction, \
       CASE WHEN json_extract(metadata, '$.channel') IN ('email', 'sms', 'call', 'linkedin') \
            THEN json_extract(metadata, '$.channel') ELSE '' END AS channel, \
       COUNT(*) AS events \
  FROM ",
    events_ever!(),
    " e WHERE tenant_id = ? AND date(occurred_at) BETWEEN ? AND ? \
 GROUP BY 1, 2, 3, 4"
);

fn count(row: &QueryResult, column: &str) -> Result<u64, Failure> {
    let n: i64 = row.try_get("", column)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

fn parse<T: std::str::FromStr>(raw: &str, what: &str) -> Result<T, Failure> {
    raw.parse()
        .map_err(|_| Failure::Other(anyhow::anyhow!("unreadable {what} {raw:?} in analytics")))
}

/// A day as either backend returns it: a `date` on PostgreSQL, text on
/// SQLite.
fn day(row: &QueryResult, backend: Backend) -> Result<Option<NaiveDate>, Failure> {
    match backend {
        Backend::Postgres => Ok(row.try_get("", "day")?),
        Backend::Sqlite => row
            .try_get::<Option<String>>("", "day")?
            .map(|d| parse(&d, "day"))
            .transpose(),
    }
}

fn timestamp(raw: &str) -> Result<DateTime<Utc>, Failure> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| Failure::Other(anyhow::anyhow!("unreadable time {raw:?} in analytics")))
}

/// The statement's `as_of` (PostgreSQL: the last refresh, on every row).
fn as_of(rows: &[QueryResult]) -> Result<DateTime<Utc>, Failure> {
    match rows.first() {
        Some(row) => Ok(row.try_get("", "as_of")?),
        None => Err(Failure::Other(anyhow::anyhow!(
            "analytics_refreshed has no row"
        ))),
    }
}

fn range_values(tenant: TenantId, range: DateRange, backend: Backend) -> Vec<Value> {
    let tenant: Value = tenant.as_uuid().into();
    match backend {
        Backend::Postgres => vec![tenant, range.from().into(), range.to().into()],
        Backend::Sqlite => {
            let (from, to) = (range.from().to_string(), range.to().to_string());
            vec![tenant, from.into(), to.into()]
        }
    }
}

fn statement(backend: Backend, sql: &str, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(backend.db(), sql, values)
}

#[async_trait]
impl AnalyticsRepository for Store {
    async fn funnel_counts(
        &self,
        tenant: TenantId,
        range: DateRange,
    ) -> Result<Snapshot<FunnelCounts>, AnalyticsError> {
        let backend = self.backend();
        let result: Result<_, Failure> =
            transaction!(self, "analytics.funnel", tenant, Analytics, |txn| {
                let values = range_values(tenant, range, backend);
                let (entries_sql, entries_values, cohorts_sql, cohorts_values) = match backend {
                    Backend::Postgres => (PG_STATUS_ENTRIES, values.clone(), PG_COHORTS, values),
                    Backend::Sqlite => {
                        let twice = [values.clone(), values.clone()].concat();
                        // Tenant twice (the entries' two halves), then the range.
                        let cohorts = vec![
                            values[0].clone(),
                            values[0].clone(),
                            values[1].clone(),
                            values[2].clone(),
                        ];
                        (SQLITE_STATUS_ENTRIES, twice, SQLITE_COHORTS, cohorts)
                    }
                };
                let rows = txn
                    .query_all_raw(statement(backend, entries_sql, entries_values))
                    .await?;
                let as_of = match backend {
                    Backend::Postgres => as_of(&rows)?,
                    Backend::Sqlite => crate::now(),
                };
                let mut counts = FunnelCounts::default();
                for row in &rows {
                    let Some(day) = day(row, backend)? else {
                        continue;
                    };
                    let status: String = row.try_get("", "status")?;
                    counts.entries.push(StatusEntries {
                        day,
                        status: parse::<LeadStatus>(&status, "status")?,
                        entered: count(row, "entered")?,
                    });
                }
                for row in &txn
                    .query_all_raw(statement(backend, cohorts_sql, cohorts_values))
                    .await?
                {
                    let Some(day) = day(row, backend)? else {
                        continue;
                    };
                    let from: String = row.try_get("", "from_status")?;
                    counts.cohorts.push(Cohort {
                        day,
                        from: parse::<LeadStatus>(&from, "status")?,
                        entered: count(row, "entered")?,
                        converted: count(row, "converted")?,
                    });
                }
                Ok(Snapshot {
                    as_of,
                    rows: counts,
                })
            });
        result.map_err(|f| common!(f, AnalyticsError))
    }

    async fn agent_figures(
        &self,
        tenant: TenantId,
    ) -> Result<Snapshot<Vec<AgentFigures>>, AnalyticsError> {
        let backend = self.backend();
        let result: Result<_, Failure> =
            transaction!(self, "analytics.agents", tenant, Analytics, |txn| {
                let id: Value = tenant.as_uuid().into();
                let figures = |row: &QueryResult, median: Option<f64>| -> Result<_, Failure> {
                    Ok(AgentFigures {
                        agent_id: AgentId::from_uuid(row.try_get("", "agent_id")?),
                        leads_owned: count(row, "leads_owned")?,
                        approvals_drafted: count(row, "approvals_drafted")?,
                        approvals_approved: count(row, "approvals_approved")?,
                        approvals_rejected: count(row, "approvals_rejected")?,
                        messages_sent: count(row, "messages_sent")?,
                        median_first_touch_seconds: median
                            .map(leadline_domain::analytics::micros_to_seconds),
                    })
                };
                if backend == Backend::Postgres {
                    let rows = txn
                        .query_all_raw(statement(backend, PG_AGENTS, vec![id]))
                        .await?;
                    let as_of = as_of(&rows)?;
                    let mut out = Vec::new();
                    for row in &rows {
                        if row.try_get::<Option<uuid::Uuid>>("", "agent_id")?.is_none() {
                            continue;
                        }
                        let median: Option<f64> = row.try_get("", "median_micros")?;
                        out.push(figures(row, median)?);
                    }
                    return Ok(Snapshot { as_of, rows: out });
                }
                let as_of = crate::now();
                let mut touches: std::collections::HashMap<uuid::Uuid, Vec<i64>> =
                    std::collections::HashMap::new();
                for row in txn
                    .query_all_raw(statement(backend, SQLITE_FIRST_TOUCHES, vec![id.clone()]))
                    .await?
                {
                    let agent: uuid::Uuid = row.try_get("", "agent_id")?;
                    let created = timestamp(&row.try_get::<String>("", "created_at")?)?;
                    let first = timestamp(&row.try_get::<String>("", "first_at")?)?;
                    if let Some(micros) = (first - created).num_microseconds() {
                        touches.entry(agent).or_default().push(micros);
                    }
                }
                let mut out = Vec::new();
                for row in &txn
                    .query_all_raw(statement(backend, SQLITE_AGENTS, vec![id]))
                    .await?
                {
                    let agent: uuid::Uuid = row.try_get("", "agent_id")?;
                    let median = touches.get_mut(&agent).and_then(|t| median_micros(t));
                    out.push(figures(row, median)?);
                }
                Ok(Snapshot { as_of, rows: out })
            });
        result.map_err(|f| common!(f, AnalyticsError))
    }

    async fn event_counts(
        &self,
        tenant: TenantId,
        range: DateRange,
    ) -> Result<Snapshot<Vec<EventCount>>, AnalyticsError> {
        let backend = self.backend();
        let result: Result<_, Failure> =
            transaction!(self, "analytics.activity", tenant, Analytics, |txn| {
                let values = range_values(tenant, range, backend);
                let sql = match backend {
                    Backend::Postgres => PG_EVENT_COUNTS,
                    Backend::Sqlite => SQLITE_EVENT_COUNTS,
                };
                let rows = txn.query_all_raw(statement(backend, sql, values)).await?;
                let as_of = match backend {
                    Backend::Postgres => as_of(&rows)?,
                    Backend::Sqlite => crate::now(),
                };
                let mut out = Vec::new();
                for row in &rows {
                    let Some(day) = day(row, backend)? else {
                        continue;
                    };
                    let (kind, direction, channel): (String, String, String) = (
                        row.try_get("", "kind")?,
                        row.try_get("", "direction")?,
                        row.try_get("", "channel")?,
                    );
                    out.push(EventCount {
                        day,
                        kind: parse::<EventKind>(&kind, "kind")?,
                        direction: parse::<Direction>(&direction, "direction")?,
                        channel: if channel.is_empty() {
                            None
                        } else {
                            Some(parse::<Channel>(&channel, "channel")?)
                        },
                        events: count(row, "events")?,
                    });
                }
                Ok(Snapshot { as_of, rows: out })
            });
        result.map_err(|f| common!(f, AnalyticsError))
    }

    async fn refresh(&self) -> Result<Option<DateTime<Utc>>, AnalyticsError> {
        if self.backend() != Backend::Postgres {
            return Ok(None);
        }
        let nobody = TenantId::from_uuid(uuid::Uuid::nil());
        let result: Result<Option<DateTime<Utc>>, Failure> =
            transaction!(self, "analytics.refresh", nobody, Refresh, |txn| {
                let row = txn
                    .query_one_raw(Statement::from_string(
                        DbBackend::Postgres,
                        "SELECT analytics_refresh() AS as_of",
                    ))
                    .await?;
                Ok(row
                    .map(|r| r.try_get::<Option<DateTime<Utc>>>("", "as_of"))
                    .transpose()?
                    .flatten())
            });
        result.map_err(|f| common!(f, AnalyticsError))
    }

    async fn figures_age(&self) -> Result<Option<std::time::Duration>, AnalyticsError> {
        if self.backend() != Backend::Postgres {
            return Ok(None);
        }
        let nobody = TenantId::from_uuid(uuid::Uuid::nil());
        let result: Result<Option<f64>, Failure> =
            transaction!(self, "analytics.age", nobody, Refresh, |txn| {
                let row = txn
                    .query_one_raw(Statement::from_string(
                        DbBackend::Postgres,
                        "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp() - as_of) AS float8) \
                           AS age FROM analytics_refreshed",
                    ))
                    .await?;
                Ok(row.map(|r| r.try_get::<f64>("", "age")).transpose()?)
            });
        let age = result.map_err(|f| common!(f, AnalyticsError))?;
        // A missing row, or an `as_of` ahead of the clock (a restored
        // database, a server clock set back), is no fresh refresh.
        Ok(Some(
            age.and_then(|secs| std::time::Duration::try_from_secs_f64(secs).ok())
                .unwrap_or(std::time::Duration::MAX),
        ))
    }
}

//! Analytics on PostgreSQL: four materialized views of per-day (or
//! per-agent) counts, refreshed `CONCURRENTLY` by `analytics_refresh`, and
//! read through views that answer only the transaction's tenant.
//!
//! A materialized view has no row-level security, so the service role is
//! given none of them: it reads `analytics_status_entries`,
//! `analytics_agents` and `analytics_event_counts`, `security_barrier`
//! views of the owner's that filter by the same tenant predicate as the
//! tables' policies (`app.tenant_id`). Refreshing needs the owner (and
//! reads every tenant's rows, through `analytics_reading` policies for the
//! owner only), so `analytics_refresh()` is a `SECURITY DEFINER` function;
//! one instance refreshes at a time (an advisory lock, tried, not waited
//! for), and `analytics_refreshed.as_of` says when it last did.
//!
//! What the counts mean is `leadline_domain::analytics`'s to say; these
//! views group rows as it describes. SQLite has nothing here: it counts
//! from the base tables when asked.

use sea_orm_migration::prelude::*;

use crate::sql::run;

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261211_000022_analytics"
    }
}

/// The materialized views, their indexes and tenant views, over
/// `events` (the timeline, and since migration 24 also the archive:
/// archived events happened, and the figures must not change when a
/// retention policy moves them).
pub(crate) fn pg_objects(events: &str) -> String {
    format!(
        r"
-- A lead enters its first status when created (the `from` of its first
-- status move, else its status), then each status a move names.
CREATE MATERIALIZED VIEW analytics_status_entries_mv AS
WITH first_move AS (
    SELECT DISTINCT ON (e.tenant_id, e.lead_id) e.tenant_id, e.lead_id,
           e.metadata->>'from' AS status
      FROM {events} e
     WHERE e.kind = 'status_changed'
     ORDER BY e.tenant_id, e.lead_id, e.occurred_at, e.id
), entries AS (
    SELECT l.tenant_id, (l.created_at AT TIME ZONE 'UTC')::date AS day,
           coalesce(f.status, l.status) AS status
      FROM leads l
      LEFT JOIN first_move f ON f.tenant_id = l.tenant_id AND f.lead_id = l.id
    UNION ALL
    SELECT e.tenant_id, (e.occurred_at AT TIME ZONE 'UTC')::date, e.metadata->>'to'
      FROM {events} e
     WHERE e.kind = 'status_changed'
)
SELECT tenant_id, day, status, count(*)::bigint AS entered
  FROM entries
 WHERE status IN ('new', 'contacted', 'qualified', 'nurturing', 'won', 'lost')
 GROUP BY tenant_id, day, status;
CREATE UNIQUE INDEX analytics_status_entries_key
    ON analytics_status_entries_mv (tenant_id, day, status);

CREATE MATERIALIZED VIEW analytics_agents_mv AS
WITH owned AS (
    SELECT tenant_id, assigned_agent_id AS agent_id, count(*) AS n
      FROM leads
     WHERE assigned_agent_id IS NOT NULL AND deleted_at IS NULL
     GROUP BY 1, 2
), drafted AS (
    SELECT tenant_id, requested_by AS agent_id, count(*) AS n
      FROM approvals GROUP BY 1, 2
), decided AS (
    SELECT tenant_id, decided_by AS agent_id,
           count(*) FILTER (WHERE status IN ('approved', 'sent')) AS approved,
           count(*) FILTER (WHERE status = 'rejected') AS rejected
      FROM approvals WHERE decided_by IS NOT NULL GROUP BY 1, 2
), sent AS (
    SELECT tenant_id, sent_by AS agent_id, count(*) AS n
      FROM approvals WHERE status = 'sent' AND sent_by IS NOT NULL GROUP BY 1, 2
), first_touch AS (
    SELECT l.tenant_id, l.assigned_agent_id AS agent_id,
           (extract(epoch FROM min(e.occurred_at) - l.created_at) * 1000000)::bigint AS micros
      FROM leads l
      JOIN {events} e ON e.tenant_id = l.tenant_id AND e.lead_id = l.id
     WHERE l.assigned_agent_id IS NOT NULL AND l.deleted_at IS NULL
       AND e.direction = 'outbound' AND e.occurred_at >= l.created_at
     GROUP BY l.tenant_id, l.id
), touch AS (
    SELECT tenant_id, agent_id,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY micros) AS median_micros
      FROM first_touch GROUP BY 1, 2
)
SELECT a.tenant_id, a.id AS agent_id,
       coalesce(o.n, 0)::bigint AS leads_owned,
       coalesce(d.n, 0)::bigint AS approvals_drafted,
       coalesce(x.approved, 0)::bigint AS approvals_approved,
       coalesce(x.rejected, 0)::bigint AS approvals_rejected,
       coalesce(s.n, 0)::bigint AS messages_sent,
       t.median_micros
  FROM agents a
  LEFT JOIN owned o ON o.tenant_id = a.tenant_id AND o.agent_id = a.id
  LEFT JOIN drafted d ON d.tenant_id = a.tenant_id AND d.agent_id = a.id
  LEFT JOIN decided x ON x.tenant_id = a.tenant_id AND x.agent_id = a.id
  LEFT JOIN sent s ON s.tenant_id = a.tenant_id AND s.agent_id = a.id
  LEFT JOIN touch t ON t.tenant_id = a.tenant_id AND t.agent_id = a.id;
CREATE UNIQUE INDEX analytics_agents_key ON analytics_agents_mv (tenant_id, agent_id);

-- The channel an event's metadata names, when it is a known one ('' when
-- not: a unique index for CONCURRENTLY needs no NULLs to compare).
CREATE MATERIALIZED VIEW analytics_event_counts_mv AS
SELECT tenant_id, (occurred_at AT TIME ZONE 'UTC')::date AS day, kind, direction,
       CASE WHEN metadata->>'channel' IN ('email', 'sms', 'call', 'linkedin')
            THEN metadata->>'channel' ELSE '' END AS channel,
       count(*)::bigint AS events
  FROM {events} e
 GROUP BY 1, 2, 3, 4, 5;
CREATE UNIQUE INDEX analytics_event_counts_key
    ON analytics_event_counts_mv (tenant_id, day, kind, direction, channel);

-- Per lead and stage, its first and last entry; a cohort is the leads that
-- first entered a main-path stage on one day, and `converted` those of them
-- that entered the next stage at or after that.
CREATE MATERIALIZED VIEW analytics_cohorts_mv AS
WITH first_move AS (
    SELECT DISTINCT ON (e.tenant_id, e.lead_id) e.tenant_id, e.lead_id,
           e.metadata->>'from' AS status
      FROM {events} e
     WHERE e.kind = 'status_changed'
     ORDER BY e.tenant_id, e.lead_id, e.occurred_at, e.id
), entries AS (
    SELECT l.tenant_id, l.id AS lead_id, l.created_at AS at,
           coalesce(f.status, l.status) AS status
      FROM leads l
      LEFT JOIN first_move f ON f.tenant_id = l.tenant_id AND f.lead_id = l.id
    UNION ALL
    SELECT e.tenant_id, e.lead_id, e.occurred_at, e.metadata->>'to'
      FROM {events} e
     WHERE e.kind = 'status_changed'
), spans AS (
    SELECT tenant_id, lead_id, status, min(at) AS first_at, max(at) AS last_at
      FROM entries
     GROUP BY tenant_id, lead_id, status
)
SELECT a.tenant_id, (a.first_at AT TIME ZONE 'UTC')::date AS day, a.status AS from_status,
       count(*)::bigint AS entered, count(b.lead_id)::bigint AS converted
  FROM spans a
  LEFT JOIN spans b
    ON b.tenant_id = a.tenant_id AND b.lead_id = a.lead_id
   AND b.status = CASE a.status WHEN 'new' THEN 'contacted'
                                WHEN 'contacted' THEN 'qualified'
                                WHEN 'qualified' THEN 'won' END
   AND b.last_at >= a.first_at
 WHERE a.status IN ('new', 'contacted', 'qualified')
 GROUP BY 1, 2, 3;
CREATE UNIQUE INDEX analytics_cohorts_key ON analytics_cohorts_mv (tenant_id, day, from_status);

CREATE VIEW analytics_cohorts WITH (security_barrier) AS
SELECT tenant_id, day, from_status, entered, converted FROM analytics_cohorts_mv
 WHERE tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid;
GRANT SELECT ON analytics_cohorts TO leadline_service;

CREATE VIEW analytics_status_entries WITH (security_barrier) AS
SELECT tenant_id, day, status, entered FROM analytics_status_entries_mv
 WHERE tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid;
CREATE VIEW analytics_agents WITH (security_barrier) AS
SELECT tenant_id, agent_id, leads_owned, approvals_drafted, approvals_approved,
       approvals_rejected, messages_sent, median_micros
  FROM analytics_agents_mv
 WHERE tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid;
CREATE VIEW analytics_event_counts WITH (security_barrier) AS
SELECT tenant_id, day, kind, direction, channel, events FROM analytics_event_counts_mv
 WHERE tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid;
GRANT SELECT ON analytics_status_entries, analytics_agents, analytics_event_counts
    TO leadline_service;

"
    )
}

/// Drops what [`pg_objects`] creates.
pub(crate) const PG_DROP_OBJECTS: &str = r"
DROP VIEW analytics_cohorts;
DROP MATERIALIZED VIEW analytics_cohorts_mv;
DROP VIEW analytics_event_counts;
DROP VIEW analytics_agents;
DROP VIEW analytics_status_entries;
DROP MATERIALIZED VIEW analytics_event_counts_mv;
DROP MATERIALIZED VIEW analytics_agents_mv;
DROP MATERIALIZED VIEW analytics_status_entries_mv;
";

const PG_POLICIES: &str = r"
CREATE POLICY analytics_reading ON leads FOR SELECT TO CURRENT_USER USING (true);
CREATE POLICY analytics_reading ON events FOR SELECT TO CURRENT_USER USING (true);
CREATE POLICY analytics_reading ON approvals FOR SELECT TO CURRENT_USER USING (true);
CREATE POLICY analytics_reading ON agents FOR SELECT TO CURRENT_USER USING (true);

";

const PG_REST: &str = r"
-- One row: when the views were last refreshed. Every write committed
-- before `as_of` is in them.
CREATE TABLE analytics_refreshed (
    one    boolean     PRIMARY KEY DEFAULT true CHECK (one),
    as_of  timestamptz NOT NULL
);
INSERT INTO analytics_refreshed (as_of) VALUES (now());
GRANT SELECT ON analytics_refreshed TO leadline_service;

CREATE FUNCTION analytics_refresh() RETURNS timestamptz
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp
AS $$
BEGIN
    -- Another instance is refreshing: its result will do.
    IF NOT pg_try_advisory_xact_lock(hashtextextended('leadline.analytics_refresh', 0)) THEN
        RETURN NULL;
    END IF;
    REFRESH MATERIALIZED VIEW CONCURRENTLY analytics_status_entries_mv;
    REFRESH MATERIALIZED VIEW CONCURRENTLY analytics_agents_mv;
    REFRESH MATERIALIZED VIEW CONCURRENTLY analytics_event_counts_mv;
    REFRESH MATERIALIZED VIEW CONCURRENTLY analytics_cohorts_mv;
    UPDATE analytics_refreshed SET as_of = now();
    RETURN now();
END
$$;
REVOKE ALL ON FUNCTION analytics_refresh() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION analytics_refresh() TO leadline_service;
";

const PG_DOWN: &str = r"
DROP FUNCTION analytics_refresh();
DROP TABLE analytics_refreshed;
";

const PG_DOWN_POLICIES: &str = r"
DROP POLICY analytics_reading ON agents;
DROP POLICY analytics_reading ON approvals;
DROP POLICY analytics_reading ON events;
DROP POLICY analytics_reading ON leads;
";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let pg = format!("{PG_POLICIES}\n{}\n{PG_REST}", pg_objects("events"));
        run(manager, &pg, "").await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let pg = format!("{PG_DOWN}\n{PG_DROP_OBJECTS}\n{PG_DOWN_POLICIES}");
        run(manager, &pg, "").await
    }
}

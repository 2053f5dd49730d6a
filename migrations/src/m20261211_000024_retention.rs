//! Retention: a policy per tenant ("events older than N days: delete or
//! archive") and the archive the archived events go to.
//!
//! Events stay append-only for the service role: it may not `DELETE` them.
//! On PostgreSQL it calls `retention_apply`, a `SECURITY DEFINER` function
//! that removes, for the transaction's own tenant only (named again as its
//! first argument, which a distributed deployment routes by), at most `max_rows`
//! events older than both the caller's cutoff and the tenant's policy, and
//! moves them to `events_archive` when the policy says archive. A BRIN
//! index on `occurred_at` finds them without adding a btree to the hottest
//! insert path. On SQLite, which has no roles, retention marks its own
//! transaction in `retention_gate`, which the append-only trigger lets pass.

use sea_orm_migration::prelude::*;

use crate::{
    m20261211_000022_analytics::{PG_DROP_OBJECTS, pg_objects},
    sql::{disable_tenant_isolation, enable_tenant_isolation, run},
};

/// The timeline and its archive, as analytics counts them: an archived
/// event happened, and archiving must not change past figures.
const EVENTS_EVER: &str = "(SELECT tenant_id, id, lead_id, kind, direction, occurred_at, metadata \
     FROM events UNION ALL \
     SELECT tenant_id, id, lead_id, kind, direction, occurred_at, metadata FROM events_archive)";

/// Analytics' views, rebuilt over the timeline and the archive (migration
/// 22 built them over the timeline alone), and the owner's reading policy
/// on the archive that refreshing them needs.
fn pg_analytics_over_archive() -> String {
    format!(
        "CREATE POLICY analytics_reading ON events_archive FOR SELECT TO CURRENT_USER USING (true);\n\
         {PG_DROP_OBJECTS}\n{}",
        pg_objects(EVENTS_EVER)
    )
}

fn pg_analytics_without_archive() -> String {
    format!(
        "{PG_DROP_OBJECTS}\n{}\nDROP POLICY analytics_reading ON events_archive;\n",
        pg_objects("events")
    )
}

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261211_000024_retention"
    }
}

const TABLES: &[(&str, &str)] = &[
    ("retention_policies", "tenant_id"),
    ("events_archive", "tenant_id"),
];

const PG_UP: &str = r"
CREATE TABLE retention_policies (
    tenant_id    uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    events_days  integer     NOT NULL CHECK (events_days BETWEEN 1 AND 36500),
    action       text        NOT NULL CHECK (action IN ('delete', 'archive')),
    updated_at   timestamptz NOT NULL,
    PRIMARY KEY (tenant_id)
);
GRANT SELECT, INSERT, UPDATE, DELETE ON retention_policies TO leadline_service;

CREATE TABLE events_archive (
    tenant_id    uuid        NOT NULL,
    id           uuid        NOT NULL,
    lead_id      uuid        NOT NULL,
    kind         text        NOT NULL,
    direction    text        NOT NULL,
    content      text,
    occurred_at  timestamptz NOT NULL,
    actor        uuid,
    metadata     jsonb       NOT NULL,
    created_at   timestamptz NOT NULL,
    archived_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, lead_id) REFERENCES leads (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX events_archive_lead_idx ON events_archive (tenant_id, lead_id, occurred_at, id);
CREATE INDEX events_archive_age_idx ON events_archive (tenant_id, occurred_at, id);
GRANT SELECT ON events_archive TO leadline_service;

CREATE INDEX events_occurred_brin ON events USING brin (occurred_at);

-- The tenants with a policy, for the background job.
CREATE POLICY retention_listing ON retention_policies FOR SELECT TO CURRENT_USER USING (true);
CREATE FUNCTION retention_tenants() RETURNS SETOF uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
AS $$ SELECT tenant_id FROM retention_policies ORDER BY tenant_id $$;
REVOKE ALL ON FUNCTION retention_tenants() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION retention_tenants() TO leadline_service;

CREATE FUNCTION retention_apply(tenant uuid, before timestamptz, max_rows integer)
    RETURNS TABLE (out_lead uuid, out_count bigint)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp
AS $$
DECLARE
    t uuid := nullif(current_setting('app.tenant_id', true), '')::uuid;
    keep_days integer;
    what text;
    cutoff timestamptz;
BEGIN
    -- The tenant is an argument so that a distributed deployment can route
    -- the call by it; it must be the transaction's own.
    IF t IS NULL OR tenant IS DISTINCT FROM t THEN
        RETURN;
    END IF;
    SELECT p.events_days, p.action INTO keep_days, what
      FROM retention_policies p WHERE p.tenant_id = t;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- Never younger than the policy allows, whatever the caller asked.
    cutoff := least(before, now() - make_interval(days => keep_days));
    RETURN QUERY
    WITH due AS (
        SELECT e.tenant_id, e.id FROM events e
         WHERE e.tenant_id = t AND e.occurred_at < cutoff
         ORDER BY e.occurred_at, e.id
         LIMIT max_rows
           FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM events e USING due
         WHERE e.tenant_id = due.tenant_id AND e.id = due.id
        RETURNING e.*
    ), kept AS (
        INSERT INTO events_archive (tenant_id, id, lead_id, kind, direction, content,
                                    occurred_at, actor, metadata, created_at, archived_at)
        SELECT g.tenant_id, g.id, g.lead_id, g.kind, g.direction, g.content,
               g.occurred_at, g.actor, g.metadata, g.created_at, now()
          FROM gone g WHERE what = 'archive'
        RETURNING 1
    ), purged AS (
        -- A delete policy also empties the archive of what is past it (a
        -- tenant that archived before).
        DELETE FROM events_archive a
         WHERE what = 'delete' AND a.tenant_id = t
           AND a.id IN (SELECT o.id FROM events_archive o
                         WHERE o.tenant_id = t AND o.occurred_at < cutoff
                         ORDER BY o.occurred_at, o.id LIMIT max_rows)
        RETURNING a.lead_id
    )
    SELECT x.lead_id, count(*)::bigint
      FROM (SELECT g.lead_id FROM gone g UNION ALL SELECT p.lead_id FROM purged p) x
     GROUP BY x.lead_id;
END
$$;
REVOKE ALL ON FUNCTION retention_apply(uuid, timestamptz, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION retention_apply(uuid, timestamptz, integer) TO leadline_service;
";

const PG_DOWN: &str = r"
DROP FUNCTION retention_apply(uuid, timestamptz, integer);
DROP FUNCTION retention_tenants();
DROP POLICY retention_listing ON retention_policies;
DROP INDEX events_occurred_brin;
DROP TABLE events_archive;
DROP TABLE retention_policies;
";

const SQLITE_UP: &str = r"
CREATE TABLE retention_policies (
    tenant_id    BLOB    NOT NULL PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    events_days  INTEGER NOT NULL CHECK (events_days BETWEEN 1 AND 36500),
    action       TEXT    NOT NULL CHECK (action IN ('delete', 'archive')),
    updated_at   TEXT    NOT NULL
);

CREATE TABLE events_archive (
    tenant_id    BLOB    NOT NULL,
    id           BLOB    NOT NULL,
    lead_id      BLOB    NOT NULL,
    kind         TEXT    NOT NULL,
    direction    TEXT    NOT NULL,
    content      TEXT,
    occurred_at  TEXT    NOT NULL,
    actor        BLOB,
    metadata     TEXT    NOT NULL,
    created_at   TEXT    NOT NULL,
    archived_at  TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, lead_id) REFERENCES leads (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX events_archive_lead_idx ON events_archive (tenant_id, lead_id, occurred_at, id);
CREATE INDEX events_archive_age_idx ON events_archive (tenant_id, occurred_at, id);

-- Retention's own transaction holds a row here while it deletes; the
-- append-only trigger lets exactly those deletes pass.
CREATE TABLE retention_gate (one INTEGER NOT NULL PRIMARY KEY CHECK (one = 1));
DROP TRIGGER events_no_delete;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
    WHEN (SELECT count(*) FROM leads WHERE leads.tenant_id = OLD.tenant_id AND leads.id = OLD.lead_id) > 0
     AND NOT EXISTS (SELECT 1 FROM retention_gate)
    BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
";

const SQLITE_DOWN: &str = r"
DROP TRIGGER events_no_delete;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
    WHEN (SELECT count(*) FROM leads WHERE leads.tenant_id = OLD.tenant_id AND leads.id = OLD.lead_id) > 0
    BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
DROP TABLE retention_gate;
DROP INDEX events_archive_age_idx;
DROP INDEX events_archive_lead_idx;
DROP TABLE events_archive;
DROP TABLE retention_policies;
";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let pg = format!(
            "{PG_UP}\n{}\n{}",
            enable_tenant_isolation(TABLES),
            pg_analytics_over_archive()
        );
        run(manager, &pg, SQLITE_UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let pg = format!(
            "{}\n{}\n{PG_DOWN}",
            pg_analytics_without_archive(),
            disable_tenant_isolation(TABLES)
        );
        run(manager, &pg, SQLITE_DOWN).await
    }
}

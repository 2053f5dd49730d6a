//! The change log behind `GET /v1/changes`: one row per create, update or
//! transition of a lead, agent, approval or event, written by the store in
//! the same transaction as the write.
//!
//! Gap-free reading despite concurrent writers: on PostgreSQL each row
//! carries the id of the transaction that wrote it (`tx`, `xid8`, by
//! default) and a sequence number; readers take rows in `(tx, seq)` order
//! and only those whose `tx` is below the oldest transaction still running
//! (`pg_snapshot_xmin(pg_current_snapshot())`). Every row below that
//! horizon is committed or gone for good, and every row still to commit
//! lands above it, so "after my position" never skips a transaction that
//! committed late. On SQLite one writer commits in sequence order: `tx` is
//! absent (read as 0).
//!
//! Retention deletes old rows in bounded batches and remembers, per tenant,
//! the newest position it removed (`change_horizons`): a reader asking for
//! changes after an older position learns that it missed some (HTTP 410)
//! instead of silently getting a gap. On PostgreSQL the service role cannot
//! delete across tenants; `changes_prune`, a `SECURITY DEFINER` function of
//! the owner, does that one job, through policies granted to the owner
//! only. Each row also wakes listeners on other instances
//! (`pg_notify('leadline_changes', tenant)`, sent at commit).

use sea_orm_migration::prelude::*;

use crate::sql::{disable_tenant_isolation, enable_tenant_isolation, run};

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261205_000010_changes"
    }
}

const TABLES: &[(&str, &str)] = &[("changes", "tenant_id"), ("change_horizons", "tenant_id")];

const PG_UP: &str = r"
CREATE TABLE changes (
    tenant_id  uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    tx         xid8        NOT NULL DEFAULT pg_current_xact_id(),
    seq        bigint      NOT NULL GENERATED ALWAYS AS IDENTITY,
    type       text        NOT NULL,
    entity_id  uuid        NOT NULL,
    at         timestamptz NOT NULL,
    data       jsonb       NOT NULL,
    PRIMARY KEY (tenant_id, tx, seq)
);
-- Retention: the oldest rows first.
CREATE INDEX changes_at_idx ON changes (at);

CREATE TABLE change_horizons (
    tenant_id  uuid   NOT NULL PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    tx         xid8   NOT NULL,
    seq        bigint NOT NULL
);

GRANT SELECT, INSERT ON changes TO leadline_service;
GRANT SELECT ON change_horizons TO leadline_service;

CREATE FUNCTION changes_notify() RETURNS trigger
    LANGUAGE plpgsql SET search_path = public, pg_temp
AS $$
BEGIN
    PERFORM pg_notify('leadline_changes', NEW.tenant_id::text);
    RETURN NULL;
END
$$;
CREATE TRIGGER changes_notify AFTER INSERT ON changes
    FOR EACH ROW EXECUTE FUNCTION changes_notify();

CREATE POLICY retention ON changes TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY retention ON change_horizons TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE FUNCTION changes_prune(older_than timestamptz, max_rows integer) RETURNS bigint
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp
AS $$
    WITH doomed AS (
        SELECT tenant_id, tx, seq FROM changes
         WHERE at < older_than ORDER BY at LIMIT max_rows FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM changes c USING doomed d
         WHERE c.tenant_id = d.tenant_id AND c.tx = d.tx AND c.seq = d.seq
        RETURNING c.tenant_id, c.tx, c.seq
    ), newest AS (
        SELECT DISTINCT ON (tenant_id) tenant_id, tx, seq FROM gone
         ORDER BY tenant_id, tx DESC, seq DESC
    ), moved AS (
        INSERT INTO change_horizons AS h (tenant_id, tx, seq) SELECT tenant_id, tx, seq FROM newest
        ON CONFLICT (tenant_id) DO UPDATE SET tx = EXCLUDED.tx, seq = EXCLUDED.seq
         WHERE (h.tx, h.seq) < (EXCLUDED.tx, EXCLUDED.seq)
        RETURNING 1
    )
    SELECT count(*) FROM gone
$$;
REVOKE ALL ON FUNCTION changes_prune(timestamptz, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION changes_prune(timestamptz, integer) TO leadline_service;
";

const PG_DOWN: &str = r"
DROP FUNCTION changes_prune(timestamptz, integer);
DROP TRIGGER changes_notify ON changes;
DROP FUNCTION changes_notify();
DROP TABLE change_horizons;
DROP TABLE changes;
";

const SQLITE_UP: &str = r"
CREATE TABLE changes (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id  BLOB    NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    type       TEXT    NOT NULL,
    entity_id  BLOB    NOT NULL,
    at         TEXT    NOT NULL,
    data       TEXT    NOT NULL CHECK (json_valid(data))
);
CREATE INDEX changes_tenant_idx ON changes (tenant_id, seq);
CREATE INDEX changes_at_idx ON changes (at);

CREATE TABLE change_horizons (
    tenant_id  BLOB    NOT NULL PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    tx         INTEGER NOT NULL,
    seq        INTEGER NOT NULL
);
";

const SQLITE_DOWN: &str = r"
DROP TABLE change_horizons;
DROP TABLE changes;
";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let pg = format!("{PG_UP}\n{}", enable_tenant_isolation(TABLES));
        run(manager, &pg, SQLITE_UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let pg = format!("{}\n{PG_DOWN}", disable_tenant_isolation(TABLES));
        run(manager, &pg, SQLITE_DOWN).await
    }
}

//! The audit trail: one row per audited write, written by the store in the
//! write's own transaction (`leadline_domain::audit` says what a row holds).
//!
//! Order and sealing: as in the change log (migration 10), a PostgreSQL row
//! carries its writing transaction (`tx`) and a sequence number, and the
//! tenant's log order is `(tx, seq)`. Rows are written unsealed;
//! `audit_seal`, a `SECURITY DEFINER` function of the owner, later gives
//! each tenant's rows, in log order and only below the oldest transaction
//! still running, the link hash of their predecessor (`prev_hash`) and
//! their own (`hash = sha256(prev_hash || content_hash)`). Chaining at
//! insert time instead would make every write of a tenant wait for the
//! previous one's commit. SQLite has one writer: the store seals each row
//! as it writes it, and `tx` is absent (read as 0).
//!
//! Append-only: the service role may SELECT and INSERT and nothing else;
//! only `audit_seal` updates, and only the two hash columns of unsealed
//! rows. On SQLite a trigger refuses any UPDATE.

use sea_orm_migration::prelude::*;

use crate::sql::{disable_tenant_isolation, enable_tenant_isolation, run};

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261210_000021_audit_log"
    }
}

const TABLES: &[(&str, &str)] = &[("audit_log", "tenant_id")];

const PG_UP: &str = r"
CREATE TABLE audit_log (
    tenant_id     uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    tx            xid8        NOT NULL DEFAULT pg_current_xact_id(),
    seq           bigint      NOT NULL GENERATED ALWAYS AS IDENTITY,
    at            timestamptz NOT NULL,
    key_id        uuid,
    user_id       uuid,
    agent_id      uuid,
    request_id    text,
    entity        text        NOT NULL,
    entity_id     uuid        NOT NULL,
    action        text        NOT NULL,
    -- json, not jsonb: the text is kept byte for byte, as hashed.
    changes       json        NOT NULL,
    content_hash  bytea       NOT NULL CHECK (length(content_hash) = 32),
    prev_hash     bytea,
    hash          bytea,
    PRIMARY KEY (tenant_id, tx, seq),
    CONSTRAINT audit_log_sealed_whole CHECK ((prev_hash IS NULL) = (hash IS NULL))
);
CREATE INDEX audit_log_entity_idx ON audit_log (tenant_id, entity_id, tx, seq);
CREATE INDEX audit_log_unsealed_idx ON audit_log (tenant_id, tx, seq) WHERE hash IS NULL;

GRANT SELECT, INSERT ON audit_log TO leadline_service;

CREATE POLICY sealing ON audit_log TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE FUNCTION audit_seal(max_rows integer) RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp
AS $$
DECLARE
    horizon xid8 := pg_snapshot_xmin(pg_current_snapshot());
    t uuid;
    prev bytea;
    r record;
    n bigint := 0;
BEGIN
    FOR t IN SELECT DISTINCT a.tenant_id FROM audit_log a
              WHERE a.hash IS NULL AND a.tx < horizon LOOP
        EXIT WHEN n >= max_rows;
        -- One sealer per tenant at a time: another instance's skips it.
        CONTINUE WHEN NOT pg_try_advisory_xact_lock(
            hashtextextended('leadline.audit_seal.' || t::text, 0));
        SELECT a.hash INTO prev FROM audit_log a
         WHERE a.tenant_id = t AND a.hash IS NOT NULL
         ORDER BY a.tx DESC, a.seq DESC LIMIT 1;
        prev := coalesce(prev, decode(repeat('00', 32), 'hex'));
        FOR r IN SELECT a.tx, a.seq, a.content_hash FROM audit_log a
                  WHERE a.tenant_id = t AND a.hash IS NULL AND a.tx < horizon
                  ORDER BY a.tx, a.seq LIMIT max_rows - n LOOP
            UPDATE audit_log
               SET prev_hash = prev, hash = sha256(prev || r.content_hash)
             WHERE tenant_id = t AND tx = r.tx AND seq = r.seq;
            prev := sha256(prev || r.content_hash);
            n := n + 1;
        END LOOP;
    END LOOP;
    RETURN n;
END
$$;
REVOKE ALL ON FUNCTION audit_seal(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit_seal(integer) TO leadline_service;

-- Every tenant, for verifying all their trails at once (a trail deleted
-- whole must still be asked about).
CREATE POLICY audit_listing ON tenants FOR SELECT TO CURRENT_USER USING (true);
CREATE FUNCTION audit_tenants() RETURNS SETOF uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
AS $$ SELECT id FROM tenants ORDER BY id $$;
REVOKE ALL ON FUNCTION audit_tenants() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit_tenants() TO leadline_service;
";

const PG_DOWN: &str = r"
DROP FUNCTION audit_tenants();
DROP POLICY audit_listing ON tenants;
DROP FUNCTION audit_seal(integer);
DROP POLICY sealing ON audit_log;
DROP TABLE audit_log;
";

const SQLITE_UP: &str = r"
CREATE TABLE audit_log (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id     BLOB    NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    at            TEXT    NOT NULL,
    key_id        BLOB,
    user_id       BLOB,
    agent_id      BLOB,
    request_id    TEXT,
    entity        TEXT    NOT NULL,
    entity_id     BLOB    NOT NULL,
    action        TEXT    NOT NULL,
    changes       TEXT    NOT NULL CHECK (json_valid(changes)),
    content_hash  BLOB    NOT NULL CHECK (length(content_hash) = 32),
    prev_hash     BLOB,
    hash          BLOB,
    CHECK ((prev_hash IS NULL) = (hash IS NULL))
);
CREATE INDEX audit_log_tenant_idx ON audit_log (tenant_id, seq);
CREATE INDEX audit_log_entity_idx ON audit_log (tenant_id, entity_id, seq);
CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
";

const SQLITE_DOWN: &str = r"
DROP TRIGGER audit_log_append_only;
DROP TABLE audit_log;
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

//! The audit sealer without an index on unsealed rows, so that sealing is a
//! HOT update and appending maintains one index fewer.
//!
//! Migration 21 found unsealed rows through a partial index `WHERE hash IS
//! NULL`. Every audit insert then maintained it, and since its predicate
//! names `hash`, the sealer's `UPDATE` of the hash columns could never be a
//! heap-only tuple update: each seal wrote new entries into every index of
//! the table. What the index answered is also answered by the primary key:
//! rows are sealed in `(tx, seq)` order and only below the oldest running
//! transaction, so a tenant's unsealed rows are exactly those after its last
//! sealed one, found by a backward scan of the key, and read by a forward
//! one. `fillfactor = 60` leaves room on each page for the sealed versions
//! of its rows, so the update stays on its page.

use sea_orm_migration::prelude::*;

use crate::sql::run;

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261211_000023_audit_seal_hot"
    }
}

const PG_UP: &str = r"
DROP INDEX audit_log_unsealed_idx;
ALTER TABLE audit_log SET (fillfactor = 60);
";

/// This migration's sealer: it finds a tenant's unsealed rows from its
/// chain's head, and updates them one statement per row (migration 29 sets
/// them in one).
pub(crate) const AUDIT_SEAL_V2: &str = r"
CREATE OR REPLACE FUNCTION audit_seal(max_rows integer) RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp
AS $$
DECLARE
    horizon xid8 := pg_snapshot_xmin(pg_current_snapshot());
    t uuid;
    -- The tenant's last sealed record ('0', 0 before the first: no record
    -- has transaction 0); every record after it is unsealed.
    head_tx xid8;
    head_seq bigint;
    prev bytea;
    r record;
    n bigint := 0;
BEGIN
    FOR t IN SELECT id FROM tenants LOOP
        EXIT WHEN n >= max_rows;
        head_tx := '0'; head_seq := 0; prev := NULL;
        SELECT a.tx, a.seq, a.hash INTO head_tx, head_seq, prev FROM audit_log a
         WHERE a.tenant_id = t AND a.hash IS NOT NULL
         ORDER BY a.tx DESC, a.seq DESC LIMIT 1;
        CONTINUE WHEN NOT EXISTS (
            SELECT 1 FROM audit_log a
             WHERE a.tenant_id = t AND (a.tx, a.seq) > (coalesce(head_tx, '0'), coalesce(head_seq, 0))
               AND a.tx < horizon);
        -- One sealer per tenant at a time: another instance's skips it.
        CONTINUE WHEN NOT pg_try_advisory_xact_lock(
            hashtextextended('leadline.audit_seal.' || t::text, 0));
        -- Read again under the lock: another sealer may have moved it.
        head_tx := '0'; head_seq := 0; prev := NULL;
        SELECT a.tx, a.seq, a.hash INTO head_tx, head_seq, prev FROM audit_log a
         WHERE a.tenant_id = t AND a.hash IS NOT NULL
         ORDER BY a.tx DESC, a.seq DESC LIMIT 1;
        prev := coalesce(prev, decode(repeat('00', 32), 'hex'));
        FOR r IN SELECT a.tx, a.seq, a.content_hash FROM audit_log a
                  WHERE a.tenant_id = t
                    AND (a.tx, a.seq) > (coalesce(head_tx, '0'), coalesce(head_seq, 0))
                    AND a.tx < horizon
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
";

const PG_DOWN: &str = r"
CREATE OR REPLACE FUNCTION audit_seal(max_rows integer) RETURNS bigint
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
ALTER TABLE audit_log RESET (fillfactor);
CREATE INDEX audit_log_unsealed_idx ON audit_log (tenant_id, tx, seq) WHERE hash IS NULL;
";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, PG_UP, "").await?;
        run(manager, AUDIT_SEAL_V2, "").await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, PG_DOWN, "").await
    }
}

//! The audit sealer writes a tenant's batch in one `UPDATE`.
//!
//! Migration 23's sealer updated each record with its own statement from
//! inside its loop: about 42 µs a record on the benchmark's machine, paid
//! for every audited write, beside the write path's own work on the same
//! cores. This one reads a tenant's unsealed records into arrays, links
//! them in the loop (the chain is sequential: each hash covers the one
//! before), and writes every link with one `UPDATE … FROM unnest(…)`: about
//! 10 µs a record, the same hashes (the chain's rule is unchanged; the
//! audit tests verify what it writes).

use sea_orm_migration::prelude::*;

use crate::sql::run;

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261213_000029_audit_seal_set"
    }
}

pub(crate) const AUDIT_SEAL_V3: &str = r"
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
    -- The batch, in chain order: its keys, then each record's content
    -- hash, overwritten by its link hash as the chain is walked.
    txs xid8[];
    seqs bigint[];
    links bytea[];
    prevs bytea[];
    sealed bigint;
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
        SELECT array_agg(b.tx ORDER BY b.tx, b.seq), array_agg(b.seq ORDER BY b.tx, b.seq),
               array_agg(b.content_hash ORDER BY b.tx, b.seq)
          INTO txs, seqs, links
          FROM (SELECT a.tx, a.seq, a.content_hash FROM audit_log a
                 WHERE a.tenant_id = t
                   AND (a.tx, a.seq) > (coalesce(head_tx, '0'), coalesce(head_seq, 0))
                   AND a.tx < horizon
                 ORDER BY a.tx, a.seq LIMIT max_rows - n) b;
        CONTINUE WHEN txs IS NULL;
        prevs := array_fill(NULL::bytea, ARRAY[cardinality(txs)]);
        FOR i IN 1 .. cardinality(txs) LOOP
            prevs[i] := prev;
            prev := sha256(prev || links[i]);
            links[i] := prev;
        END LOOP;
        UPDATE audit_log a SET prev_hash = u.prev_hash, hash = u.hash
          FROM unnest(txs, seqs, prevs, links) AS u(tx, seq, prev_hash, hash)
         WHERE a.tenant_id = t AND a.tx = u.tx AND a.seq = u.seq;
        GET DIAGNOSTICS sealed = ROW_COUNT;
        n := n + sealed;
    END LOOP;
    RETURN n;
END
$$;
";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, AUDIT_SEAL_V3, "").await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(
            manager,
            crate::m20261211_000023_audit_seal_hot::AUDIT_SEAL_V2,
            "",
        )
        .await
    }
}

//! The audit sealer starts from the chain head it was given, instead of
//! finding it by a scan through every unsealed record.
//!
//! Migration 23 finds a tenant's chain head (its last sealed record) by
//! scanning the primary key backwards from the newest record: every
//! unsealed record is passed, and its heap row read for `hash`, before the
//! head is reached, twice per batch (before and under the tenant's lock). A
//! backlog of `B` records therefore costs `B` row reads per batch of 5,000,
//! `B² / 5,000` to drain: after `leadline import` wrote 600,000 records on
//! the benchmark's machine, the next `serve` kept PostgreSQL busy for a
//! minute sealing them, beside whatever else ran.
//!
//! `audit_seal_from(max_rows, heads)` takes, per tenant, the head the
//! caller was last told (`{"<tenant>": ["<tx>", seq, "<hash hex>"]}`) and
//! returns the new head of every tenant it sealed. A given head is trusted
//! only when it still holds: its record is there, sealed, with that hash,
//! and the record after it is not sealed. Sealed records are a prefix of
//! the `(tx, seq)` order (records are sealed in it, and only below the
//! oldest running transaction, below which no record can still appear), so
//! that is two primary-key probes. A head that does not hold (another
//! instance sealed further, the tenant was moved or restored) falls back to
//! the scan.
//!
//! `audit_seal(max_rows)` stays, now `audit_seal_from` with no heads, for a
//! binary older than this migration still running during an upgrade.

use sea_orm_migration::prelude::*;

use crate::sql::run;

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261214_000030_audit_seal_from_head"
    }
}

/// This migration's `audit_chain_head`, which migration 31 replaces and
/// its `down` restores.
pub(crate) const AUDIT_CHAIN_HEAD_V1: &str = r"
-- A tenant's chain head: the given one if it still holds, else found by the
-- backward scan; ('0', 0, NULL) before its first sealed record.
CREATE FUNCTION audit_chain_head(t uuid, given jsonb, OUT tx xid8, OUT seq bigint, OUT hash bytea)
    LANGUAGE plpgsql STABLE SET search_path = public, pg_temp
AS $$
BEGIN
    IF given IS NOT NULL THEN
        SELECT a.tx, a.seq, a.hash INTO tx, seq, hash FROM audit_log a
         WHERE a.tenant_id = t AND a.tx = (given->>0)::xid8 AND a.seq = (given->>1)::bigint
           AND a.hash = decode(given->>2, 'hex');
        IF FOUND AND NOT EXISTS (
            SELECT 1 FROM (SELECT a.hash FROM audit_log a
                            WHERE a.tenant_id = t
                              AND (a.tx, a.seq) > (audit_chain_head.tx, audit_chain_head.seq)
                            ORDER BY a.tx, a.seq LIMIT 1) next
             WHERE next.hash IS NOT NULL) THEN
            RETURN;
        END IF;
    END IF;
    SELECT a.tx, a.seq, a.hash INTO tx, seq, hash FROM audit_log a
     WHERE a.tenant_id = t AND a.hash IS NOT NULL
     ORDER BY a.tx DESC, a.seq DESC LIMIT 1;
    IF NOT FOUND THEN
        tx := '0'; seq := 0; hash := NULL;
    END IF;
END
$$;
REVOKE ALL ON FUNCTION audit_chain_head(uuid, jsonb) FROM PUBLIC;
";

const PG_UP: &str = r"

CREATE FUNCTION audit_seal_from(max_rows integer, heads jsonb)
    RETURNS TABLE (tenant_id uuid, head_tx text, head_seq bigint, head_hash text, sealed bigint)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp
AS $$
DECLARE
    horizon xid8 := pg_snapshot_xmin(pg_current_snapshot());
    t uuid;
    head record;
    prev bytea;
    txs xid8[];
    seqs bigint[];
    links bytea[];
    prevs bytea[];
    k bigint;
    n bigint := 0;
BEGIN
    FOR t IN SELECT id FROM tenants LOOP
        EXIT WHEN n >= max_rows;
        SELECT * INTO head FROM audit_chain_head(t, heads -> t::text);
        CONTINUE WHEN NOT EXISTS (
            SELECT 1 FROM audit_log a
             WHERE a.tenant_id = t AND (a.tx, a.seq) > (head.tx, head.seq)
               AND a.tx < horizon);
        -- One sealer per tenant at a time: another instance's skips it.
        CONTINUE WHEN NOT pg_try_advisory_xact_lock(
            hashtextextended('leadline.audit_seal.' || t::text, 0));
        -- Again under the lock (another sealer may have moved it on): the
        -- head just found, checked in two probes.
        SELECT * INTO head FROM audit_chain_head(t, CASE WHEN head.hash IS NULL THEN NULL
            ELSE jsonb_build_array(head.tx::text, head.seq, encode(head.hash, 'hex')) END);
        prev := coalesce(head.hash, decode(repeat('00', 32), 'hex'));
        SELECT array_agg(b.tx ORDER BY b.tx, b.seq), array_agg(b.seq ORDER BY b.tx, b.seq),
               array_agg(b.content_hash ORDER BY b.tx, b.seq)
          INTO txs, seqs, links
          FROM (SELECT a.tx, a.seq, a.content_hash FROM audit_log a
                 WHERE a.tenant_id = t
                   AND (a.tx, a.seq) > (head.tx, head.seq)
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
        GET DIAGNOSTICS k = ROW_COUNT;
        n := n + k;
        tenant_id := t;
        head_tx := txs[cardinality(txs)]::text;
        head_seq := seqs[cardinality(seqs)];
        head_hash := encode(prev, 'hex');
        sealed := k;
        RETURN NEXT;
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION audit_seal_from(integer, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit_seal_from(integer, jsonb) TO leadline_service;

CREATE OR REPLACE FUNCTION audit_seal(max_rows integer) RETURNS bigint
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp
AS $$ SELECT coalesce(sum(s.sealed), 0)::bigint FROM audit_seal_from(max_rows, '{}') s $$;
";

const PG_DOWN: &str = r"
DROP FUNCTION audit_seal_from(integer, jsonb);
DROP FUNCTION audit_chain_head(uuid, jsonb);
";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, &format!("{AUDIT_CHAIN_HEAD_V1}{PG_UP}"), "").await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Migration 29's sealer (it keeps its grants), then the new ones go.
        let pg = format!(
            "{}\n{PG_DOWN}",
            crate::m20261213_000029_audit_seal_set::AUDIT_SEAL_V3
        );
        run(manager, &pg, "").await
    }
}

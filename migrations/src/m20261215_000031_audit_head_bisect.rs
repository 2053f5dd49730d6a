//! A tenant's chain head is found in a few index probes, not by a scan of
//! its unsealed records.
//!
//! Migration 30 gives the sealer the head it left last, but a process that
//! has not sealed yet (every `leadline serve` as it starts) has none to
//! give, and `audit_chain_head` then scans the primary key backwards from
//! the newest record, reading each unsealed record's heap row for `hash`
//! until it reaches a sealed one: after a `leadline import` of a million
//! rows, two million rows read before the first batch, twice (before and
//! under the tenant's lock), while a stop waits for that batch.
//!
//! Sealed records are a prefix of the tenant's `(tx, seq)` order (migration
//! 30's module docs say why), so "is the first record at or after this
//! point sealed?" changes its answer once along that order, and the head is
//! found by bisection: first over transaction ids (each probe one descent
//! of the primary key to the first record at or after an id), then over
//! `seq` within the transaction the boundary falls in (a batch can end
//! inside a transaction). That is at most 64 probes for each, in practice
//! the logarithm of the span of ids in the tenant's trail: 40 or so for a
//! trail that saw millions of transactions.
//!
//! The given head, when it holds, is still taken in two probes, as before.

use sea_orm_migration::prelude::*;

use crate::sql::run;

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261215_000031_audit_head_bisect"
    }
}

const PG_UP: &str = r"
-- A tenant's chain head: the given one if it still holds, else found by
-- bisection; ('0', 0, NULL) before its first sealed record.
CREATE OR REPLACE FUNCTION audit_chain_head(t uuid, given jsonb, OUT tx xid8, OUT seq bigint, OUT hash bytea)
    LANGUAGE plpgsql STABLE SET search_path = public, pg_temp
AS $$
DECLARE
    r record;
    -- Transaction ids as numbers (xid8 has no arithmetic): the first record
    -- at or after id `lo` is sealed, the first at or after `hi` is not (or
    -- there is none).
    lo bigint;
    hi bigint;
    mid bigint;
    -- Within transaction `lo`: the record at `slo` is sealed, the first at
    -- or after `shi` is not.
    slo bigint;
    shi bigint;
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
    tx := '0'; seq := 0; hash := NULL;
    -- The newest record: the head itself when there is no backlog.
    SELECT a.tx, a.seq, a.hash INTO r FROM audit_log a
     WHERE a.tenant_id = t ORDER BY a.tx DESC, a.seq DESC LIMIT 1;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF r.hash IS NOT NULL THEN
        tx := r.tx; seq := r.seq; hash := r.hash;
        RETURN;
    END IF;
    hi := r.tx::text::bigint + 1;
    -- The oldest: nothing is sealed when it is not.
    SELECT a.tx, a.seq, a.hash INTO r FROM audit_log a
     WHERE a.tenant_id = t ORDER BY a.tx, a.seq LIMIT 1;
    IF r.hash IS NULL THEN
        RETURN;
    END IF;
    lo := r.tx::text::bigint;
    slo := r.seq;
    WHILE hi - lo > 1 LOOP
        mid := lo + (hi - lo) / 2;
        SELECT a.tx, a.seq, a.hash INTO r FROM audit_log a
         WHERE a.tenant_id = t AND a.tx >= mid::text::xid8
         ORDER BY a.tx, a.seq LIMIT 1;
        IF r.hash IS NOT NULL THEN
            -- Sealed, so below `hi`'s first record: move up to its id.
            lo := r.tx::text::bigint;
            slo := r.seq;
        ELSE
            hi := mid;
        END IF;
    END LOOP;
    -- Every record after transaction `lo` is unsealed; its first is sealed.
    SELECT a.seq, a.hash INTO r FROM audit_log a
     WHERE a.tenant_id = t AND a.tx = lo::text::xid8 ORDER BY a.seq DESC LIMIT 1;
    IF r.hash IS NOT NULL THEN
        slo := r.seq;
    ELSE
        shi := r.seq;
        WHILE shi - slo > 1 LOOP
            mid := slo + (shi - slo) / 2;
            SELECT a.seq, a.hash INTO r FROM audit_log a
             WHERE a.tenant_id = t AND a.tx = lo::text::xid8 AND a.seq >= mid
             ORDER BY a.seq LIMIT 1;
            IF r.hash IS NOT NULL THEN
                slo := r.seq;
            ELSE
                shi := mid;
            END IF;
        END LOOP;
    END IF;
    SELECT a.tx, a.seq, a.hash INTO tx, seq, hash FROM audit_log a
     WHERE a.tenant_id = t AND a.tx = lo::text::xid8 AND a.seq = slo;
END
$$;
";

const PG_DOWN: &str = r"
DROP FUNCTION audit_chain_head(uuid, jsonb);
";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, PG_UP, "").await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Migration 30's function, with its backward scan.
        let pg = format!(
            "{PG_DOWN}\n{}",
            crate::m20261214_000030_audit_seal_from_head::AUDIT_CHAIN_HEAD_V1
        );
        run(manager, &pg, "").await
    }
}

//! `privacy_erase` takes nothing on trust it need not (a review of
//! migration 27's function).
//!
//! - The plan's metadata for an event may only drop keys: what stays is
//!   the event's own pairs that the plan keeps, value for value. Before,
//!   a caller could write any object into an append-only event.
//! - An erasure is on the audit trail before it touches anything: the
//!   function requires the transaction's own `person.erased` record naming
//!   its marker. Before, a caller could anonymise a lead itself, scrub its
//!   history and leave no tombstone.

use sea_orm_migration::prelude::*;

use crate::sql::run;

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261212_000028_erasure_trusts_less"
    }
}

pub(crate) const PRIVACY_ERASE_V3: &str = r"
CREATE OR REPLACE FUNCTION privacy_erase(tenant uuid, plan jsonb)
    RETURNS TABLE (audit_records bigint, other_rows bigint)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp
AS $$
DECLARE
    t uuid := nullif(current_setting('app.tenant_id', true), '')::uuid;
    marker json := (plan->>'marker')::json;
    erased uuid[];
    deliveries uuid[];
    entities uuid[];
    n bigint;
BEGIN
    IF t IS NULL OR tenant IS DISTINCT FROM t THEN
        RAISE EXCEPTION 'privacy_erase acts for the transaction''s own tenant only'
            USING ERRCODE = '42501';
    END IF;
    IF NOT public.privacy_is_marker(marker) THEN
        RAISE EXCEPTION 'privacy_erase: the marker must name the erasure and nothing else'
            USING ERRCODE = '22023';
    END IF;
    -- An erasure is on the trail before it touches anything: its
    -- tombstone, written in this transaction, names this marker.
    IF NOT EXISTS (SELECT 1 FROM audit_log a
                    WHERE a.tenant_id = t AND a.tx = pg_current_xact_id()
                      AND a.entity = 'person' AND a.action = 'person.erased'
                      AND a.entity_id = (marker->>'erased')::uuid) THEN
        RAISE EXCEPTION 'privacy_erase: write the erasure''s person.erased record first'
            USING ERRCODE = '42501';
    END IF;
    audit_records := 0;
    other_rows := 0;
    -- Only leads this transaction has anonymised already.
    SELECT coalesce(array_agg(l.id), '{}') INTO erased
      FROM leads l
     WHERE l.tenant_id = t
       AND l.id IN (SELECT x::uuid FROM jsonb_array_elements_text(plan->'leads') AS x)
       AND l.email IS NULL AND l.phone IS NULL AND l.company IS NULL
       AND l.first_name = '[erased]' AND l.last_name = '[erased]';
    SELECT coalesce(array_agg(o.id), '{}') INTO deliveries
      FROM outbox o WHERE o.tenant_id = t AND o.lead_id = ANY (erased);
    entities := erased
        || ARRAY(SELECT e.id FROM events e WHERE e.tenant_id = t AND e.lead_id = ANY (erased))
        || ARRAY(SELECT e.id FROM events_archive e
                  WHERE e.tenant_id = t AND e.lead_id = ANY (erased))
        || ARRAY(SELECT a.id FROM approvals a WHERE a.tenant_id = t AND a.lead_id = ANY (erased))
        || deliveries;

    -- Joined, not looked up per row: a person with thousands of events
    -- would otherwise read the plan thousands of times.
    -- The plan may only drop keys: what stays is the event's own pairs
    -- that the plan keeps, value for value.
    UPDATE events e
       SET content = NULL,
           metadata = coalesce((SELECT jsonb_object_agg(kv.key, kv.value)
                                  FROM jsonb_each(k.metadata) AS kv
                                 WHERE m.metadata -> kv.key = kv.value), '{}')
      FROM events k
      LEFT JOIN (SELECT r.id, r.metadata
                   FROM jsonb_to_recordset(plan->'events') AS r (id uuid, metadata jsonb)
                  WHERE jsonb_typeof(r.metadata) = 'object') m ON m.id = k.id
     WHERE k.tenant_id = t AND k.lead_id = ANY (erased)
       AND e.tenant_id = k.tenant_id AND e.id = k.id;
    GET DIAGNOSTICS n = ROW_COUNT;
    other_rows := other_rows + n;
    UPDATE events_archive e
       SET content = NULL,
           metadata = coalesce((SELECT jsonb_object_agg(kv.key, kv.value)
                                  FROM jsonb_each(k.metadata) AS kv
                                 WHERE m.metadata -> kv.key = kv.value), '{}')
      FROM events_archive k
      LEFT JOIN (SELECT r.id, r.metadata
                   FROM jsonb_to_recordset(plan->'archived_events') AS r (id uuid, metadata jsonb)
                  WHERE jsonb_typeof(r.metadata) = 'object') m ON m.id = k.id
     WHERE k.tenant_id = t AND k.lead_id = ANY (erased)
       AND e.tenant_id = k.tenant_id AND e.id = k.id;
    GET DIAGNOSTICS n = ROW_COUNT;
    other_rows := other_rows + n;

    UPDATE audit_log a
       SET erased_digest = sha256(convert_to(a.changes::text, 'UTF8')), changes = marker
     WHERE a.tenant_id = t AND a.entity_id = ANY (entities) AND a.erased_digest IS NULL;
    GET DIAGNOSTICS audit_records = ROW_COUNT;

    UPDATE changes c SET data = marker::jsonb
     WHERE c.tenant_id = t AND c.entity_id = ANY (entities);
    GET DIAGNOSTICS n = ROW_COUNT;
    other_rows := other_rows + n;

    UPDATE delivery_attempts d SET detail = '[erased]'
     WHERE d.tenant_id = t AND d.delivery_id = ANY (deliveries) AND d.detail IS NOT NULL;
    GET DIAGNOSTICS n = ROW_COUNT;
    other_rows := other_rows + n;

    -- A rejected line holds the person's data as read: found by what
    -- identifies them (email, phone), its fields and reasons go.
    UPDATE import_rejects r SET fields = '[]', errors = '[]'
     WHERE r.tenant_id = t AND EXISTS (
           SELECT 1 FROM jsonb_array_elements_text(plan->'needles') AS x (needle)
            WHERE length(x.needle) > 0
              AND (strpos(lower(r.fields::text), lower(x.needle)) > 0
                   OR strpos(lower(r.errors::text), lower(x.needle)) > 0))
        -- A phone number however it was written: its last digits among
        -- the line's digits.
        OR r.tenant_id = t AND EXISTS (
           SELECT 1 FROM jsonb_array_elements_text(coalesce(plan->'digits', '[]')) AS d (digits)
            WHERE length(d.digits) >= 7
              AND (strpos(regexp_replace(r.fields::text, '[^0-9]', '', 'g'), d.digits) > 0
                   OR strpos(regexp_replace(r.errors::text, '[^0-9]', '', 'g'), d.digits) > 0));
    GET DIAGNOSTICS n = ROW_COUNT;
    other_rows := other_rows + n;

    -- Their words leave the vocabulary unless another lead holds them
    -- (words are letters and digits only, so quoting them is safe).
    DELETE FROM search_words w
     WHERE w.tenant_id = t
       AND w.word IN (SELECT jsonb_array_elements_text(plan->'words'))
       AND NOT EXISTS (SELECT 1 FROM leads l
                        WHERE l.tenant_id = t
                          AND l.search_tsv @@ ('''' || w.word || '''')::tsquery);
    GET DIAGNOSTICS n = ROW_COUNT;
    other_rows := other_rows + n;
    RETURN NEXT;
END
$$;
";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, PRIVACY_ERASE_V3, "").await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(
            manager,
            crate::m20261212_000027_erasure_at_scale::PRIVACY_ERASE_V2,
            "",
        )
        .await
    }
}

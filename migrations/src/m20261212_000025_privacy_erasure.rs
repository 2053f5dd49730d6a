//! Privacy erasure (`leadline_domain::erasure` says what an erasure
//! changes): the places the service role may not write itself.
//!
//! An audit record whose changed fields an erasure replaces keeps their
//! digest in `erased_digest`, so its content hash, and the chain, still
//! verify. Events and their archive, the audit trail, the change log,
//! delivery attempts and rejected import lines are append-only for the
//! service role; on PostgreSQL it scrubs them through `privacy_erase`, a
//! `SECURITY DEFINER` function that acts for the transaction's own tenant
//! only (named again as its argument, as for `retention_apply`), and only
//! on leads the calling transaction has already anonymised: the function
//! finds the rows about them itself, so a caller cannot aim it at the
//! history of a lead it did not erase. On SQLite, which has no roles, the
//! erasure marks its own transaction in `privacy_gate`, which the
//! append-only triggers let pass.

use sea_orm_migration::prelude::*;

use crate::sql::run;

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261212_000025_privacy_erasure"
    }
}

const PG_UP_HEAD: &str = r"
ALTER TABLE audit_log ADD COLUMN erased_digest bytea
    CHECK (erased_digest IS NULL OR length(erased_digest) = 32);

-- Which rows the changes log holds about an entity: an erasure asks.
CREATE INDEX changes_entity_idx ON changes (tenant_id, entity_id);

";

/// The first `privacy_erase` (migration 27 replaces it; its `down` puts
/// this one back).
pub(crate) const PRIVACY_ERASE_V1: &str = r"
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

    UPDATE events e
       SET content = NULL,
           metadata = coalesce((SELECT m.metadata
                                  FROM jsonb_to_recordset(plan->'events') AS m (id uuid, metadata jsonb)
                                 WHERE m.id = e.id AND jsonb_typeof(m.metadata) = 'object'), '{}')
     WHERE e.tenant_id = t AND e.lead_id = ANY (erased);
    GET DIAGNOSTICS n = ROW_COUNT;
    other_rows := other_rows + n;
    UPDATE events_archive e
       SET content = NULL,
           metadata = coalesce((SELECT m.metadata
                                  FROM jsonb_to_recordset(plan->'archived_events') AS m (id uuid, metadata jsonb)
                                 WHERE m.id = e.id AND jsonb_typeof(m.metadata) = 'object'), '{}')
     WHERE e.tenant_id = t AND e.lead_id = ANY (erased);
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
                   OR strpos(lower(r.errors::text), lower(x.needle)) > 0));
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

const PG_UP_TAIL: &str = r"
REVOKE ALL ON FUNCTION privacy_erase(uuid, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION privacy_erase(uuid, jsonb) TO leadline_service;

CREATE FUNCTION privacy_is_marker(marker json) RETURNS boolean
    LANGUAGE sql IMMUTABLE SET search_path = public, pg_temp
AS $$
    -- Never NULL: a missing key is no marker.
    SELECT coalesce(json_typeof(marker) = 'object'
       AND (SELECT count(*) FROM json_object_keys(marker)) = 1
       AND marker->>'erased' ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$', false)
$$;
";

const PG_DOWN: &str = r"
DROP FUNCTION privacy_erase(uuid, jsonb);
DROP FUNCTION privacy_is_marker(json);
DROP INDEX changes_entity_idx;
ALTER TABLE audit_log DROP COLUMN erased_digest;
";

const SQLITE_UP: &str = r"
ALTER TABLE audit_log ADD COLUMN erased_digest BLOB
    CHECK (erased_digest IS NULL OR length(erased_digest) = 32);
CREATE INDEX changes_entity_idx ON changes (tenant_id, entity_id);

-- An erasure's own transaction holds a row here while it scrubs; the
-- append-only triggers let exactly those updates pass.
CREATE TABLE privacy_gate (one INTEGER NOT NULL PRIMARY KEY CHECK (one = 1));
DROP TRIGGER events_no_update;
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    WHEN NOT EXISTS (SELECT 1 FROM privacy_gate)
    BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
DROP TRIGGER audit_log_append_only;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log
    WHEN NOT EXISTS (SELECT 1 FROM privacy_gate)
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
";

const SQLITE_DOWN: &str = r"
DROP TRIGGER audit_log_append_only;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
DROP TRIGGER events_no_update;
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
DROP TABLE privacy_gate;
DROP INDEX changes_entity_idx;
ALTER TABLE audit_log DROP COLUMN erased_digest;
";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(
            manager,
            &format!("{PG_UP_HEAD}\n{PRIVACY_ERASE_V1}\n{PG_UP_TAIL}"),
            SQLITE_UP,
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, PG_DOWN, SQLITE_DOWN).await
    }
}

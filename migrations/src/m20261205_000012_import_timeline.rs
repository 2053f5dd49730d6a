//! Imports on the timeline, and bulk writes without a trigger call per row.
//!
//! - `imported`: the event every lead written by an import gets on its
//!   timeline (the import, the line, created or updated), recorded by the
//!   service like the other system kinds. PostgreSQL: the kinds' CHECK is
//!   swapped. SQLite: `events` is rebuilt with the new CHECK (SQLite cannot
//!   alter one), with its indexes and append-only triggers.
//! - PostgreSQL: the change log's wake-up (`pg_notify` per tenant) becomes a
//!   statement trigger over the inserted rows: an import batch that logs
//!   thousands of changes sends one notification per tenant instead of
//!   calling the trigger thousands of times (the same notifications reach
//!   listeners: PostgreSQL folds duplicates within a transaction anyway).

use sea_orm_migration::prelude::*;

use crate::sql::run;

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261205_000012_import_timeline"
    }
}

const OLD_KINDS: &str = "'email_sent', 'email_received', 'sms_sent', 'sms_received', \
     'call', 'meeting', 'note', 'status_changed', 'approval_decided', \
     'email_delivered', 'email_bounced', 'delivery_failed'";
pub(crate) const NEW_KINDS: &str = "'email_sent', 'email_received', 'sms_sent', 'sms_received', \
     'call', 'meeting', 'note', 'status_changed', 'approval_decided', \
     'email_delivered', 'email_bounced', 'delivery_failed', 'imported'";

/// PostgreSQL: the kinds' CHECK swapped for one naming `kinds`; `NOT VALID`
/// on the way down, binding new rows only (the migrating role cannot see
/// other tenants' `imported` rows through row-level security to remove
/// them).
pub(crate) fn pg_kinds(kinds: &str, validate: bool) -> String {
    let not_valid = if validate { "" } else { " NOT VALID" };
    format!(
        "ALTER TABLE events DROP CONSTRAINT events_kind_check;\n\
         ALTER TABLE events ADD CONSTRAINT events_kind_check CHECK (kind IN ({kinds})){not_valid};\n"
    )
}

/// SQLite: `events` rebuilt with `kinds` in its CHECK, keeping the rows
/// whose kind is among them, with its indexes and append-only triggers.
pub(crate) fn sqlite_events(kinds: &str) -> String {
    format!(
        r"
CREATE TABLE events_next (
    tenant_id    BLOB    NOT NULL,
    id           BLOB    NOT NULL,
    lead_id      BLOB    NOT NULL,
    kind         TEXT    NOT NULL CHECK (kind IN ({kinds})),
    direction    TEXT    NOT NULL CHECK (direction IN ('inbound', 'outbound', 'internal')),
    content      TEXT,
    occurred_at  TEXT    NOT NULL,
    actor        BLOB,
    metadata     TEXT    NOT NULL DEFAULT '{{}}' CHECK (json_type(metadata) = 'object'),
    created_at   TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, lead_id) REFERENCES leads (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, actor) REFERENCES agents (tenant_id, id)
);
INSERT INTO events_next
    SELECT tenant_id, id, lead_id, kind, direction, content, occurred_at, actor, metadata, created_at
    FROM events WHERE kind IN ({kinds});
DROP TABLE events;
ALTER TABLE events_next RENAME TO events;
CREATE INDEX events_timeline_idx ON events (tenant_id, lead_id, occurred_at, id);
CREATE INDEX events_recent_idx ON events (tenant_id, created_at);
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
    WHEN (SELECT count(*) FROM leads WHERE leads.tenant_id = OLD.tenant_id AND leads.id = OLD.lead_id) > 0
    BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
"
    )
}

const PG_NOTIFY_PER_STATEMENT: &str = r"
DROP TRIGGER changes_notify ON changes;
DROP FUNCTION changes_notify();
CREATE FUNCTION changes_notify() RETURNS trigger
    LANGUAGE plpgsql SET search_path = public, pg_temp
AS $$
BEGIN
    PERFORM pg_notify('leadline_changes', t.tenant_id::text)
    FROM (SELECT DISTINCT tenant_id FROM new_rows) AS t;
    RETURN NULL;
END
$$;
CREATE TRIGGER changes_notify AFTER INSERT ON changes
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION changes_notify();
";

const PG_NOTIFY_PER_ROW: &str = r"
DROP TRIGGER changes_notify ON changes;
DROP FUNCTION changes_notify();
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
";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let pg = format!("{}\n{PG_NOTIFY_PER_STATEMENT}", pg_kinds(NEW_KINDS, true));
        run(manager, &pg, &sqlite_events(NEW_KINDS)).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let pg = format!("{PG_NOTIFY_PER_ROW}\n{}", pg_kinds(OLD_KINDS, false));
        run(manager, &pg, &sqlite_events(OLD_KINDS)).await
    }
}

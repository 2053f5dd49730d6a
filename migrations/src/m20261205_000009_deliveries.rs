//! Delivery: the outbox becomes a work queue a relay drains, every attempt
//! is recorded, each tenant may name its sender, and the timeline learns the
//! outcomes of a delivery.
//!
//! - `outbox` gains the queue's state: `status` (`pending` until the message
//!   is `delivered`, `failed` for good, or `dead` after its last attempt),
//!   `attempts` (over the row's life; `round_start` is the count when a
//!   person last retried it, so each retry gets the full budget while
//!   attempt numbers stay unique), `next_attempt_at` (when a relay may take it next; a claim
//!   pushes it one lease ahead, so a relay killed mid-delivery leaves a row
//!   that comes due again by itself) and `lease_token` (which claim holds
//!   it: an outcome is recorded only by the claim that still holds the row).
//!   Rows sent before this migration were only *recorded* as sent (no
//!   relay existed, so the message went out some other way): they become
//!   `failed` with a note saying so, never delivered by surprise; a person
//!   can retry any that should really go out. PostgreSQL's migrating owner
//!   lifts FORCE ROW LEVEL SECURITY for that one UPDATE, in the migration's
//!   transaction.
//! - `delivery_attempts`: one row per attempt, with its outcome.
//! - `email_senders`: a tenant's From, Reply-To and unsubscribe address.
//! - `events.kind` admits `email_delivered`, `email_bounced` and
//!   `delivery_failed`. PostgreSQL swaps the CHECK (the table is locked
//!   while the old rows are checked, within the migration's transaction);
//!   SQLite cannot alter a CHECK and rebuilds the table.
//! - The relay finds due work across tenants through two `SECURITY DEFINER`
//!   functions owned by the migrating role, `relay_due_tenants` and
//!   `relay_queue_depth`, which return tenant ids, due times and counts and
//!   nothing else; the service role may execute them and still reads no
//!   other tenant's row. They see the rows through a policy granted to the
//!   owner only (`relay_scan`, pending rows, SELECT). Claiming and recording
//!   run in each tenant's own context, as every other write does.

use sea_orm_migration::prelude::*;

use crate::sql::{disable_tenant_isolation, enable_tenant_isolation, run};

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261205_000009_deliveries"
    }
}

const TABLES: &[(&str, &str)] = &[
    ("delivery_attempts", "tenant_id"),
    ("email_senders", "tenant_id"),
];

const OLD_KINDS: &str = "'email_sent', 'email_received', 'sms_sent', 'sms_received', \
     'call', 'meeting', 'note', 'status_changed', 'approval_decided'";
const NEW_KINDS: &str = "'email_sent', 'email_received', 'sms_sent', 'sms_received', \
     'call', 'meeting', 'note', 'status_changed', 'approval_decided', \
     'email_delivered', 'email_bounced', 'delivery_failed'";

const PG_UP: &str = r"
ALTER TABLE outbox
    ADD COLUMN status          text        NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'delivered', 'failed', 'dead')),
    ADD COLUMN attempts        integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    ADD COLUMN round_start     integer     NOT NULL DEFAULT 0 CHECK (round_start <= attempts),
    ADD COLUMN next_attempt_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN lease_token     uuid,
    ADD COLUMN last_error      text,
    ADD COLUMN updated_at      timestamptz NOT NULL DEFAULT now();
-- Rows recorded as sent before a relay existed went out some other way.
ALTER TABLE outbox NO FORCE ROW LEVEL SECURITY;
UPDATE outbox
   SET status = 'failed', dispatched_at = coalesce(dispatched_at, now()), updated_at = now(),
       last_error = 'recorded as sent before delivery existed (migration 9); retry to deliver it'
 WHERE dispatched_at IS NULL OR status = 'pending';
ALTER TABLE outbox FORCE ROW LEVEL SECURITY;
ALTER TABLE outbox ADD CONSTRAINT outbox_finished_when_done
    CHECK ((status = 'pending') = (dispatched_at IS NULL));
DROP INDEX outbox_pending_idx;
-- The relay's scan: due rows of every tenant, soonest first.
CREATE INDEX outbox_due_idx ON outbox (next_attempt_at) WHERE status = 'pending';
-- A tenant's deliveries by status (GET /v1/deliveries?status=failed).
CREATE INDEX outbox_status_idx ON outbox (tenant_id, status, id);

CREATE POLICY relay_scan ON outbox FOR SELECT TO CURRENT_USER USING (status = 'pending');
CREATE FUNCTION relay_due_tenants(channels text[], due_before timestamptz, max_tenants integer)
    RETURNS TABLE (tenant_id uuid, due timestamptz)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
AS $$
    SELECT o.tenant_id, min(o.next_attempt_at)
      FROM outbox o
     WHERE o.status = 'pending' AND o.channel = ANY (channels) AND o.next_attempt_at <= due_before
     GROUP BY o.tenant_id
     ORDER BY 2
     LIMIT max_tenants
$$;
CREATE FUNCTION relay_queue_depth(channels text[], due_before timestamptz)
    RETURNS TABLE (pending bigint, due bigint, oldest_due timestamptz)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
AS $$
    SELECT count(*),
           count(*) FILTER (WHERE o.next_attempt_at <= due_before),
           min(o.next_attempt_at) FILTER (WHERE o.next_attempt_at <= due_before)
      FROM outbox o
     WHERE o.status = 'pending' AND o.channel = ANY (channels)
$$;
REVOKE ALL ON FUNCTION relay_due_tenants(text[], timestamptz, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION relay_queue_depth(text[], timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION relay_due_tenants(text[], timestamptz, integer) TO leadline_service;
GRANT EXECUTE ON FUNCTION relay_queue_depth(text[], timestamptz) TO leadline_service;

CREATE TABLE delivery_attempts (
    tenant_id    uuid        NOT NULL,
    delivery_id  uuid        NOT NULL,
    attempt      integer     NOT NULL CHECK (attempt >= 1),
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL,
    outcome      text        NOT NULL CHECK (outcome IN ('delivered', 'transient', 'permanent')),
    detail       text,
    PRIMARY KEY (tenant_id, delivery_id, attempt),
    FOREIGN KEY (tenant_id, delivery_id) REFERENCES outbox (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE email_senders (
    tenant_id    uuid        NOT NULL PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    from_email   text        NOT NULL,
    from_name    text,
    reply_to     text,
    unsubscribe  text,
    updated_at   timestamptz NOT NULL
);

GRANT SELECT, INSERT ON delivery_attempts TO leadline_service;
GRANT SELECT, INSERT, UPDATE, DELETE ON email_senders TO leadline_service;
";

const PG_DOWN: &str = r"
DROP TABLE email_senders;
DROP TABLE delivery_attempts;
DROP FUNCTION relay_queue_depth(text[], timestamptz);
DROP FUNCTION relay_due_tenants(text[], timestamptz, integer);
DROP POLICY relay_scan ON outbox;
DROP INDEX outbox_status_idx;
DROP INDEX outbox_due_idx;
CREATE INDEX outbox_pending_idx ON outbox (tenant_id, id) WHERE dispatched_at IS NULL;
ALTER TABLE outbox DROP CONSTRAINT outbox_finished_when_done;
ALTER TABLE outbox
    DROP COLUMN updated_at,
    DROP COLUMN last_error,
    DROP COLUMN lease_token,
    DROP COLUMN next_attempt_at,
    DROP COLUMN round_start,
    DROP COLUMN attempts,
    DROP COLUMN status;
";

fn pg_kinds(kinds: &str, validate: bool) -> String {
    let not_valid = if validate { "" } else { " NOT VALID" };
    format!(
        "ALTER TABLE events DROP CONSTRAINT events_kind_check;\n\
         ALTER TABLE events ADD CONSTRAINT events_kind_check CHECK (kind IN ({kinds})){not_valid};\n"
    )
}

const SQLITE_OUTBOX_UP: &str = r"
CREATE TABLE outbox_new (
    tenant_id        BLOB    NOT NULL,
    id               BLOB    NOT NULL,
    approval_id      BLOB    NOT NULL,
    lead_id          BLOB    NOT NULL,
    channel          TEXT    NOT NULL,
    payload          TEXT    NOT NULL,
    created_at       TEXT    NOT NULL,
    dispatched_at    TEXT,
    status           TEXT    NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'delivered', 'failed', 'dead')),
    attempts         INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    round_start      INTEGER NOT NULL DEFAULT 0 CHECK (round_start <= attempts),
    next_attempt_at  TEXT    NOT NULL,
    lease_token      BLOB,
    last_error       TEXT,
    updated_at       TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT outbox_once_per_approval UNIQUE (tenant_id, approval_id),
    CONSTRAINT outbox_finished_when_done CHECK ((status = 'pending') = (dispatched_at IS NULL)),
    FOREIGN KEY (tenant_id, approval_id) REFERENCES approvals (tenant_id, id) ON DELETE CASCADE
);
INSERT INTO outbox_new (tenant_id, id, approval_id, lead_id, channel, payload, created_at,
                        dispatched_at, status, next_attempt_at, updated_at)
    SELECT tenant_id, id, approval_id, lead_id, channel, payload, created_at,
           coalesce(dispatched_at, created_at), 'failed', created_at, coalesce(dispatched_at, created_at)
    FROM outbox;
-- Rows recorded as sent before a relay existed went out some other way.
UPDATE outbox_new
   SET last_error = 'recorded as sent before delivery existed (migration 9); retry to deliver it';
DROP TABLE outbox;
ALTER TABLE outbox_new RENAME TO outbox;
CREATE INDEX outbox_due_idx ON outbox (next_attempt_at) WHERE status = 'pending';
CREATE INDEX outbox_status_idx ON outbox (tenant_id, status, id);

CREATE TABLE delivery_attempts (
    tenant_id    BLOB    NOT NULL,
    delivery_id  BLOB    NOT NULL,
    attempt      INTEGER NOT NULL CHECK (attempt >= 1),
    started_at   TEXT    NOT NULL,
    finished_at  TEXT    NOT NULL,
    outcome      TEXT    NOT NULL CHECK (outcome IN ('delivered', 'transient', 'permanent')),
    detail       TEXT,
    PRIMARY KEY (tenant_id, delivery_id, attempt),
    FOREIGN KEY (tenant_id, delivery_id) REFERENCES outbox (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE email_senders (
    tenant_id    BLOB    NOT NULL PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    from_email   TEXT    NOT NULL,
    from_name    TEXT,
    reply_to     TEXT,
    unsubscribe  TEXT,
    updated_at   TEXT    NOT NULL
);
";

const SQLITE_OUTBOX_DOWN: &str = r"
DROP TABLE email_senders;
DROP TABLE delivery_attempts;
CREATE TABLE outbox_old (
    tenant_id      BLOB    NOT NULL,
    id             BLOB    NOT NULL,
    approval_id    BLOB    NOT NULL,
    lead_id        BLOB    NOT NULL,
    channel        TEXT    NOT NULL,
    payload        TEXT    NOT NULL,
    created_at     TEXT    NOT NULL,
    dispatched_at  TEXT,
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT outbox_once_per_approval UNIQUE (tenant_id, approval_id),
    FOREIGN KEY (tenant_id, approval_id) REFERENCES approvals (tenant_id, id) ON DELETE CASCADE
);
INSERT INTO outbox_old
    SELECT tenant_id, id, approval_id, lead_id, channel, payload, created_at, dispatched_at
    FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_old RENAME TO outbox;
CREATE INDEX outbox_pending_idx ON outbox (tenant_id, id) WHERE dispatched_at IS NULL;
";

/// SQLite: `events` rebuilt with `kinds` in its CHECK, keeping the rows
/// whose kind is among them, with its indexes and append-only triggers.
fn sqlite_events(kinds: &str) -> String {
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

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let pg = format!(
            "{PG_UP}\n{}\n{}",
            enable_tenant_isolation(TABLES),
            pg_kinds(NEW_KINDS, true)
        );
        let sqlite = format!("{SQLITE_OUTBOX_UP}\n{}", sqlite_events(NEW_KINDS));
        run(manager, &pg, &sqlite).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // PostgreSQL keeps rows of the new kinds (the migrating role cannot
        // see them through row-level security to remove them): the old CHECK
        // returns NOT VALID, binding new rows only.
        let pg = format!(
            "{}\n{PG_DOWN}\n{}",
            disable_tenant_isolation(TABLES),
            pg_kinds(OLD_KINDS, false)
        );
        let sqlite = format!("{SQLITE_OUTBOX_DOWN}\n{}", sqlite_events(OLD_KINDS));
        run(manager, &pg, &sqlite).await
    }
}

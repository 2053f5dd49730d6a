//! Approvals, the event timeline, the outbox and idempotency keys.
//!
//! Exactly-once is enforced by the database as well as by the conditional
//! updates in the store: `outbox` has one row per approval at most
//! (`UNIQUE (tenant_id, approval_id)`), and on PostgreSQL the service role may
//! only SELECT and INSERT `events`, so the timeline is append-only for it.

use sea_orm_migration::prelude::*;

use crate::sql::{enable_tenant_isolation, run};

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261122_000003_workflow"
    }
}

const PG_UP: &str = r#"
CREATE TABLE approvals (
    tenant_id         uuid        NOT NULL,
    id                uuid        NOT NULL,
    lead_id           uuid        NOT NULL,
    channel           text        NOT NULL CHECK (channel IN ('email', 'sms', 'call', 'linkedin')),
    subject           text,
    body              text        NOT NULL,
    requested_by      uuid        NOT NULL,
    status            text        NOT NULL CHECK (status IN ('pending', 'approved', 'rejected', 'sent', 'cancelled')),
    decided_by        uuid,
    decided_at        timestamptz,
    rejection_reason  text,
    sent_by           uuid,
    sent_at           timestamptz,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, lead_id) REFERENCES leads (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, requested_by) REFERENCES agents (tenant_id, id),
    FOREIGN KEY (tenant_id, decided_by) REFERENCES agents (tenant_id, id),
    FOREIGN KEY (tenant_id, sent_by) REFERENCES agents (tenant_id, id),
    CONSTRAINT approvals_rejection_has_reason CHECK ((status = 'rejected') = (rejection_reason IS NOT NULL)),
    CONSTRAINT approvals_sent_has_time CHECK ((status = 'sent') = (sent_at IS NOT NULL))
);
-- The queue: by status, oldest first, optionally by drafting agent.
CREATE INDEX approvals_queue_idx ON approvals (tenant_id, status, id);
CREATE INDEX approvals_requester_idx ON approvals (tenant_id, requested_by, status, id);
-- A lead's approvals, for its context.
CREATE INDEX approvals_lead_idx ON approvals (tenant_id, lead_id, id);

CREATE TABLE events (
    tenant_id    uuid        NOT NULL,
    id           uuid        NOT NULL,
    lead_id      uuid        NOT NULL,
    kind         text        NOT NULL CHECK (kind IN ('email_sent', 'email_received', 'sms_sent', 'sms_received',
                                                       'call', 'meeting', 'note', 'status_changed', 'approval_decided')),
    direction    text        NOT NULL CHECK (direction IN ('inbound', 'outbound', 'internal')),
    content      text,
    occurred_at  timestamptz NOT NULL,
    actor        uuid,
    metadata     jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    created_at   timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, lead_id) REFERENCES leads (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, actor) REFERENCES agents (tenant_id, id)
);
-- The timeline, newest first, as a backward index scan.
CREATE INDEX events_timeline_idx ON events (tenant_id, lead_id, occurred_at, id);

CREATE TABLE outbox (
    tenant_id      uuid        NOT NULL,
    id             uuid        NOT NULL,
    approval_id    uuid        NOT NULL,
    lead_id        uuid        NOT NULL,
    channel        text        NOT NULL,
    payload        jsonb       NOT NULL,
    created_at     timestamptz NOT NULL,
    dispatched_at  timestamptz,
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT outbox_once_per_approval UNIQUE (tenant_id, approval_id),
    FOREIGN KEY (tenant_id, approval_id) REFERENCES approvals (tenant_id, id) ON DELETE CASCADE
);
-- What a relay polls: undispatched rows in order.
CREATE INDEX outbox_pending_idx ON outbox (tenant_id, id) WHERE dispatched_at IS NULL;

CREATE TABLE idempotency_keys (
    tenant_id      uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    idem_key       text        NOT NULL,
    request_hash   bytea       NOT NULL CHECK (length(request_hash) = 32),
    status         smallint,
    location       text,
    response_body  bytea,
    created_at     timestamptz NOT NULL,
    completed_at   timestamptz,
    PRIMARY KEY (tenant_id, idem_key)
);

GRANT SELECT, INSERT, UPDATE ON approvals TO leadline_service;
GRANT SELECT, INSERT ON events TO leadline_service;
GRANT SELECT, INSERT, UPDATE ON outbox TO leadline_service;
GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency_keys TO leadline_service;
"#;

const PG_DOWN: &str = r#"
DROP TABLE idempotency_keys;
DROP TABLE outbox;
DROP TABLE events;
DROP TABLE approvals;
"#;

const SQLITE_UP: &str = r#"
CREATE TABLE approvals (
    tenant_id         BLOB    NOT NULL,
    id                BLOB    NOT NULL,
    lead_id           BLOB    NOT NULL,
    channel           TEXT    NOT NULL CHECK (channel IN ('email', 'sms', 'call', 'linkedin')),
    subject           TEXT,
    body              TEXT    NOT NULL,
    requested_by      BLOB    NOT NULL,
    status            TEXT    NOT NULL CHECK (status IN ('pending', 'approved', 'rejected', 'sent', 'cancelled')),
    decided_by        BLOB,
    decided_at        TEXT,
    rejection_reason  TEXT,
    sent_by           BLOB,
    sent_at           TEXT,
    created_at        TEXT    NOT NULL,
    updated_at        TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, lead_id) REFERENCES leads (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, requested_by) REFERENCES agents (tenant_id, id),
    FOREIGN KEY (tenant_id, decided_by) REFERENCES agents (tenant_id, id),
    FOREIGN KEY (tenant_id, sent_by) REFERENCES agents (tenant_id, id),
    CONSTRAINT approvals_rejection_has_reason CHECK ((status = 'rejected') = (rejection_reason IS NOT NULL)),
    CONSTRAINT approvals_sent_has_time CHECK ((status = 'sent') = (sent_at IS NOT NULL))
);
CREATE INDEX approvals_queue_idx ON approvals (tenant_id, status, id);
CREATE INDEX approvals_requester_idx ON approvals (tenant_id, requested_by, status, id);
CREATE INDEX approvals_lead_idx ON approvals (tenant_id, lead_id, id);

CREATE TABLE events (
    tenant_id    BLOB    NOT NULL,
    id           BLOB    NOT NULL,
    lead_id      BLOB    NOT NULL,
    kind         TEXT    NOT NULL CHECK (kind IN ('email_sent', 'email_received', 'sms_sent', 'sms_received',
                                                   'call', 'meeting', 'note', 'status_changed', 'approval_decided')),
    direction    TEXT    NOT NULL CHECK (direction IN ('inbound', 'outbound', 'internal')),
    content      TEXT,
    occurred_at  TEXT    NOT NULL,
    actor        BLOB,
    metadata     TEXT    NOT NULL DEFAULT '{}' CHECK (json_type(metadata) = 'object'),
    created_at   TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, lead_id) REFERENCES leads (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, actor) REFERENCES agents (tenant_id, id)
);
CREATE INDEX events_timeline_idx ON events (tenant_id, lead_id, occurred_at, id);
-- SQLite has no GRANT: keep the timeline append-only with triggers.
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
    WHEN (SELECT count(*) FROM leads WHERE leads.tenant_id = OLD.tenant_id AND leads.id = OLD.lead_id) > 0
    BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;

CREATE TABLE outbox (
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
CREATE INDEX outbox_pending_idx ON outbox (tenant_id, id) WHERE dispatched_at IS NULL;

CREATE TABLE idempotency_keys (
    tenant_id      BLOB    NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    idem_key       TEXT    NOT NULL,
    request_hash   BLOB    NOT NULL CHECK (length(request_hash) = 32),
    status         INTEGER,
    location       TEXT,
    response_body  BLOB,
    created_at     TEXT    NOT NULL,
    completed_at   TEXT,
    PRIMARY KEY (tenant_id, idem_key)
);
"#;

const SQLITE_DOWN: &str = PG_DOWN;

/// The new tables and the column holding their tenant.
const TABLES: &[(&str, &str)] = &[
    ("approvals", "tenant_id"),
    ("events", "tenant_id"),
    ("outbox", "tenant_id"),
    ("idempotency_keys", "tenant_id"),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let pg = format!("{PG_UP}\n{}", enable_tenant_isolation(TABLES));
        run(manager, &pg, SQLITE_UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, PG_DOWN, SQLITE_DOWN).await
    }
}

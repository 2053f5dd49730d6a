//! Webhook delivery: each endpoint is an ordered stream over its tenant's
//! change log, which a relay drains.
//!
//! - `webhooks` gains the stream's state: `attempts` (failed attempts at
//!   the change after `after_tx`/`after_seq`), `next_attempt_at` (when a
//!   relay may take the endpoint next; a claim pushes it one lease ahead,
//!   so a relay killed mid-delivery leaves an endpoint that comes due again
//!   by itself), `lease_token` (the claim that holds it: progress is
//!   recorded only by that claim), `last_error`, `last_delivered_at`, and
//!   `idle` (its last round caught up with the log: a wake-up may take it
//!   before `next_attempt_at`; one backing off after a failure is not
//!   idle and waits for its time).
//! - `webhook_dead_letters`: a change an endpoint refused for good (HTTP
//!   4xx) or that failed every attempt; the stream moves past it, and the
//!   dead letter says which change, why, after how many attempts.
//! - PostgreSQL: the relay finds tenants with due endpoints across tenants
//!   through `webhook_due_tenants`, a `SECURITY DEFINER` function owned by
//!   the migrating role that returns tenant ids and nothing else, over an
//!   owner-only policy (`webhook_scan`); claiming and recording run in each
//!   tenant's own context.

use sea_orm_migration::prelude::*;

use crate::sql::{disable_tenant_isolation, enable_tenant_isolation, run};

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261206_000014_webhook_delivery"
    }
}

const TABLES: &[(&str, &str)] = &[("webhook_dead_letters", "tenant_id")];

const PG_UP: &str = r"
ALTER TABLE webhooks
    ADD COLUMN attempts           integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    ADD COLUMN next_attempt_at    timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN lease_token        uuid,
    ADD COLUMN last_error         text,
    ADD COLUMN last_delivered_at  timestamptz,
    ADD COLUMN idle               boolean     NOT NULL DEFAULT true;
CREATE INDEX webhooks_due_idx ON webhooks (next_attempt_at) WHERE active;

CREATE TABLE webhook_dead_letters (
    tenant_id    uuid        NOT NULL,
    webhook_id   uuid        NOT NULL,
    tx           bigint      NOT NULL CHECK (tx >= 0),
    seq          bigint      NOT NULL CHECK (seq >= 0),
    type         text        NOT NULL,
    entity_id    uuid        NOT NULL,
    attempts     integer     NOT NULL CHECK (attempts >= 1),
    reason       text        NOT NULL,
    at           timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, webhook_id, tx, seq),
    FOREIGN KEY (tenant_id, webhook_id) REFERENCES webhooks (tenant_id, id) ON DELETE CASCADE
);
GRANT SELECT, INSERT, DELETE ON webhook_dead_letters TO leadline_service;

CREATE POLICY webhook_scan ON webhooks FOR SELECT TO CURRENT_USER USING (active);
CREATE FUNCTION webhook_due_tenants(due_before timestamptz, max_tenants integer)
    RETURNS TABLE (tenant_id uuid)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
AS $$
    SELECT w.tenant_id
      FROM webhooks w
     WHERE w.active AND w.next_attempt_at <= due_before
     GROUP BY w.tenant_id
     ORDER BY min(w.next_attempt_at)
     LIMIT max_tenants
$$;
REVOKE ALL ON FUNCTION webhook_due_tenants(timestamptz, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION webhook_due_tenants(timestamptz, integer) TO leadline_service;
";

const PG_DOWN: &str = r"
DROP FUNCTION webhook_due_tenants(timestamptz, integer);
DROP POLICY webhook_scan ON webhooks;
DROP TABLE webhook_dead_letters;
DROP INDEX webhooks_due_idx;
ALTER TABLE webhooks
    DROP COLUMN idle,
    DROP COLUMN last_delivered_at,
    DROP COLUMN last_error,
    DROP COLUMN lease_token,
    DROP COLUMN next_attempt_at,
    DROP COLUMN attempts;
";

const SQLITE_UP: &str = r"
ALTER TABLE webhooks ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0);
ALTER TABLE webhooks ADD COLUMN next_attempt_at TEXT NOT NULL DEFAULT '1970-01-01T00:00:00+00:00';
ALTER TABLE webhooks ADD COLUMN lease_token BLOB;
ALTER TABLE webhooks ADD COLUMN last_error TEXT;
ALTER TABLE webhooks ADD COLUMN last_delivered_at TEXT;
ALTER TABLE webhooks ADD COLUMN idle INTEGER NOT NULL DEFAULT 1;
CREATE INDEX webhooks_due_idx ON webhooks (next_attempt_at) WHERE active;

CREATE TABLE webhook_dead_letters (
    tenant_id    BLOB    NOT NULL,
    webhook_id   BLOB    NOT NULL,
    tx           INTEGER NOT NULL CHECK (tx >= 0),
    seq          INTEGER NOT NULL CHECK (seq >= 0),
    type         TEXT    NOT NULL,
    entity_id    BLOB    NOT NULL,
    attempts     INTEGER NOT NULL CHECK (attempts >= 1),
    reason       TEXT    NOT NULL,
    at           TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, webhook_id, tx, seq),
    FOREIGN KEY (tenant_id, webhook_id) REFERENCES webhooks (tenant_id, id) ON DELETE CASCADE
);
";

const SQLITE_DOWN: &str = r"
DROP TABLE webhook_dead_letters;
DROP INDEX webhooks_due_idx;
ALTER TABLE webhooks DROP COLUMN idle;
ALTER TABLE webhooks DROP COLUMN last_delivered_at;
ALTER TABLE webhooks DROP COLUMN last_error;
ALTER TABLE webhooks DROP COLUMN lease_token;
ALTER TABLE webhooks DROP COLUMN next_attempt_at;
ALTER TABLE webhooks DROP COLUMN attempts;
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

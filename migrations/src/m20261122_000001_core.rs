//! Tenants, API keys, agents and leads.
//!
//! Every tenant-scoped table has `tenant_id` first in a composite primary key
//! and in its foreign keys: a row can only ever point at rows of its own
//! tenant, indexes serve `WHERE tenant_id = $1 …` directly, and the schema is
//! ready to be distributed by tenant.

use sea_orm_migration::prelude::*;

use crate::sql::run;

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261122_000001_core"
    }
}

const PG_UP: &str = r#"
CREATE TABLE tenants (
    id          uuid        PRIMARY KEY,
    slug        text        NOT NULL,
    name        text        NOT NULL,
    created_at  timestamptz NOT NULL,
    CONSTRAINT tenants_slug_key UNIQUE (slug)
);

CREATE TABLE api_keys (
    tenant_id   uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id          uuid        NOT NULL,
    key_hash    bytea       NOT NULL CHECK (length(key_hash) = 32),
    created_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT api_keys_hash_key UNIQUE (tenant_id, key_hash)
);

CREATE TABLE agents (
    tenant_id   uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id          uuid        NOT NULL,
    name        text        NOT NULL,
    email       text        NOT NULL,
    role        text        NOT NULL CHECK (role IN ('admin', 'agent')),
    active      boolean     NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    version     bigint      NOT NULL CHECK (version > 0),
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT agents_email_key UNIQUE (tenant_id, email)
);

CREATE TABLE leads (
    tenant_id          uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id                 uuid        NOT NULL,
    first_name         text        NOT NULL,
    last_name          text        NOT NULL,
    email              text,
    phone              text,
    company            text,
    source             text,
    status             text        NOT NULL
        CHECK (status IN ('new', 'contacted', 'qualified', 'nurturing', 'won', 'lost')),
    assigned_agent_id  uuid,
    tags               jsonb       NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(tags) = 'array'),
    metadata           jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL,
    version            bigint      NOT NULL CHECK (version > 0),
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT leads_assigned_agent_fkey FOREIGN KEY (tenant_id, assigned_agent_id)
        REFERENCES agents (tenant_id, id)
);

-- Listing is newest first within a tenant, optionally by status or agent;
-- each index ends with id so keyset pagination is an index range scan.
CREATE INDEX leads_status_idx ON leads (tenant_id, status, id);
CREATE INDEX leads_agent_idx  ON leads (tenant_id, assigned_agent_id, id)
    WHERE assigned_agent_id IS NOT NULL;
-- Tag filter: tags @> '["vip"]'.
CREATE INDEX leads_tags_idx   ON leads USING gin (tags jsonb_path_ops);
"#;

const PG_DOWN: &str = r#"
DROP TABLE leads;
DROP TABLE agents;
DROP TABLE api_keys;
DROP TABLE tenants;
"#;

// SQLite stores UUIDs as 16-byte BLOBs (how sqlx binds them), timestamps as
// RFC 3339 text and JSON as text. Foreign keys are enforced because the store
// turns `PRAGMA foreign_keys` on for every connection.
const SQLITE_UP: &str = r#"
CREATE TABLE tenants (
    id          BLOB    NOT NULL PRIMARY KEY,
    slug        TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    created_at  TEXT    NOT NULL,
    CONSTRAINT tenants_slug_key UNIQUE (slug)
);

CREATE TABLE api_keys (
    tenant_id   BLOB    NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id          BLOB    NOT NULL,
    key_hash    BLOB    NOT NULL CHECK (length(key_hash) = 32),
    created_at  TEXT    NOT NULL,
    revoked_at  TEXT,
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT api_keys_hash_key UNIQUE (tenant_id, key_hash)
);

CREATE TABLE agents (
    tenant_id   BLOB    NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id          BLOB    NOT NULL,
    name        TEXT    NOT NULL,
    email       TEXT    NOT NULL,
    role        TEXT    NOT NULL CHECK (role IN ('admin', 'agent')),
    active      INTEGER NOT NULL,
    created_at  TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL,
    version     INTEGER NOT NULL CHECK (version > 0),
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT agents_email_key UNIQUE (tenant_id, email)
);

CREATE TABLE leads (
    tenant_id          BLOB    NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id                 BLOB    NOT NULL,
    first_name         TEXT    NOT NULL,
    last_name          TEXT    NOT NULL,
    email              TEXT,
    phone              TEXT,
    company            TEXT,
    source             TEXT,
    status             TEXT    NOT NULL
        CHECK (status IN ('new', 'contacted', 'qualified', 'nurturing', 'won', 'lost')),
    assigned_agent_id  BLOB,
    tags               TEXT    NOT NULL DEFAULT '[]' CHECK (json_type(tags) = 'array'),
    metadata           TEXT    NOT NULL DEFAULT '{}' CHECK (json_type(metadata) = 'object'),
    created_at         TEXT    NOT NULL,
    updated_at         TEXT    NOT NULL,
    version            INTEGER NOT NULL CHECK (version > 0),
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT leads_assigned_agent_fkey FOREIGN KEY (tenant_id, assigned_agent_id)
        REFERENCES agents (tenant_id, id)
);

CREATE INDEX leads_status_idx ON leads (tenant_id, status, id);
CREATE INDEX leads_agent_idx  ON leads (tenant_id, assigned_agent_id, id)
    WHERE assigned_agent_id IS NOT NULL;
"#;

const SQLITE_DOWN: &str = PG_DOWN;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, PG_UP, SQLITE_UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, PG_DOWN, SQLITE_DOWN).await
    }
}

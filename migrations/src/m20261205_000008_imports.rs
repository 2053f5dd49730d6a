//! Import runs (`leadline import leads`, later `POST /v1/imports`): one row
//! per file imported into a tenant, keyed by the file's content hash and the
//! duplicate policy, and the rows each run refused. A run's progress
//! (`committed_line`) moves in the same transaction as the leads of each
//! batch, so a killed import resumes exactly after its last batch.
//!
//! Also an index on lead emails (imports look up, batch by batch, which
//! emails are already a lead's), and a policy that lets a transaction read
//! the one tenant whose slug it names, for commands given a slug.

use sea_orm_migration::prelude::*;

use crate::sql::{disable_tenant_isolation, enable_tenant_isolation, run};

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261205_000008_imports"
    }
}

const TABLES: &[(&str, &str)] = &[("imports", "tenant_id"), ("import_rejects", "tenant_id")];

const PG_UP: &str = r"
CREATE TABLE imports (
    tenant_id       uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id              uuid        NOT NULL,
    file_sha256     text        NOT NULL CHECK (file_sha256 ~ '^[0-9a-f]{64}$'),
    source_name     text        NOT NULL,
    headers         jsonb       NOT NULL CHECK (jsonb_typeof(headers) = 'array'),
    on_duplicate    text        NOT NULL CHECK (on_duplicate IN ('skip', 'update', 'create')),
    status          text        NOT NULL CHECK (status IN ('running', 'done', 'failed')),
    failure         text,
    rows_read       bigint      NOT NULL DEFAULT 0,
    created         bigint      NOT NULL DEFAULT 0,
    updated         bigint      NOT NULL DEFAULT 0,
    skipped         bigint      NOT NULL DEFAULT 0,
    rejected        bigint      NOT NULL DEFAULT 0,
    committed_line  bigint      NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT imports_file_key UNIQUE (tenant_id, file_sha256, on_duplicate)
);
CREATE TABLE import_rejects (
    tenant_id  uuid   NOT NULL,
    import_id  uuid   NOT NULL,
    line       bigint NOT NULL,
    errors     jsonb  NOT NULL CHECK (jsonb_typeof(errors) = 'array'),
    fields     jsonb  NOT NULL CHECK (jsonb_typeof(fields) = 'array'),
    PRIMARY KEY (tenant_id, import_id, line),
    FOREIGN KEY (tenant_id, import_id) REFERENCES imports (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX leads_email_idx ON leads (tenant_id, email) WHERE email IS NOT NULL;
-- Commands name a tenant by its slug (`leadline import leads --tenant acme`):
-- a transaction that sets app.tenant_slug may read that one tenant's row,
-- and nothing else of it. Permissive policies add up, so the id policy
-- still governs every other read.
CREATE POLICY tenant_by_slug ON tenants FOR SELECT
    USING (slug = nullif(current_setting('app.tenant_slug', true), ''));
GRANT SELECT, INSERT, UPDATE ON imports TO leadline_service;
GRANT SELECT, INSERT ON import_rejects TO leadline_service;
";

const PG_DOWN_TABLES: &str = r"
DROP POLICY tenant_by_slug ON tenants;
DROP INDEX leads_email_idx;
DROP TABLE import_rejects;
DROP TABLE imports;
";

const SQLITE_UP: &str = r"
CREATE TABLE imports (
    tenant_id       BLOB    NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id              BLOB    NOT NULL,
    file_sha256     TEXT    NOT NULL,
    source_name     TEXT    NOT NULL,
    headers         TEXT    NOT NULL CHECK (json_type(headers) = 'array'),
    on_duplicate    TEXT    NOT NULL CHECK (on_duplicate IN ('skip', 'update', 'create')),
    status          TEXT    NOT NULL CHECK (status IN ('running', 'done', 'failed')),
    failure         TEXT,
    rows_read       INTEGER NOT NULL DEFAULT 0,
    created         INTEGER NOT NULL DEFAULT 0,
    updated         INTEGER NOT NULL DEFAULT 0,
    skipped         INTEGER NOT NULL DEFAULT 0,
    rejected        INTEGER NOT NULL DEFAULT 0,
    committed_line  INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT    NOT NULL,
    updated_at      TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT imports_file_key UNIQUE (tenant_id, file_sha256, on_duplicate)
);
CREATE TABLE import_rejects (
    tenant_id  BLOB    NOT NULL,
    import_id  BLOB    NOT NULL,
    line       INTEGER NOT NULL,
    errors     TEXT    NOT NULL CHECK (json_type(errors) = 'array'),
    fields     TEXT    NOT NULL CHECK (json_type(fields) = 'array'),
    PRIMARY KEY (tenant_id, import_id, line),
    FOREIGN KEY (tenant_id, import_id) REFERENCES imports (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX leads_email_idx ON leads (tenant_id, email) WHERE email IS NOT NULL;
";

const SQLITE_DOWN: &str = r"
DROP INDEX leads_email_idx;
DROP TABLE import_rejects;
DROP TABLE imports;
";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let pg = format!("{PG_UP}\n{}", enable_tenant_isolation(TABLES));
        run(manager, &pg, SQLITE_UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let pg = format!("{}\n{PG_DOWN_TABLES}", disable_tenant_isolation(TABLES));
        run(manager, &pg, SQLITE_DOWN).await
    }
}

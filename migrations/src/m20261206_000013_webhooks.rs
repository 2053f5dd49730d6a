//! Webhook endpoints: where a tenant's changes are POSTed.
//!
//! - `webhooks`: the URL, the change types wanted (comma-separated, empty
//!   for all), whether it is active, and the signing secret sealed by the
//!   service (`secret`; after a rotation `previous_secret` signs beside it
//!   until `previous_secret_expires_at`). The database never holds a secret
//!   in clear: the key that opens them is in the service's configuration.
//!   `after_tx`/`after_seq` is the endpoint's place in the tenant's change
//!   log: it receives what commits after it was created.
//! - Tenant isolation as on every tenant table (row-level security, the
//!   service role's grants).

use sea_orm_migration::prelude::*;

use crate::sql::{disable_tenant_isolation, enable_tenant_isolation, run};

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261206_000013_webhooks"
    }
}

const TABLES: &[(&str, &str)] = &[("webhooks", "tenant_id")];

const PG_UP: &str = r"
CREATE TABLE webhooks (
    tenant_id                   uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id                          uuid        NOT NULL,
    url                         text        NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    types                       text        NOT NULL DEFAULT '',
    active                      boolean     NOT NULL,
    secret                      bytea       NOT NULL,
    previous_secret             bytea,
    secret_rotated_at           timestamptz,
    previous_secret_expires_at  timestamptz,
    after_tx                    bigint      NOT NULL CHECK (after_tx >= 0),
    after_seq                   bigint      NOT NULL CHECK (after_seq >= 0),
    created_at                  timestamptz NOT NULL,
    updated_at                  timestamptz NOT NULL,
    version                     bigint      NOT NULL CHECK (version >= 1),
    PRIMARY KEY (tenant_id, id)
);
GRANT SELECT, INSERT, UPDATE, DELETE ON webhooks TO leadline_service;
";

const PG_DOWN: &str = "DROP TABLE webhooks;";

const SQLITE_UP: &str = r"
CREATE TABLE webhooks (
    tenant_id                   BLOB    NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id                          BLOB    NOT NULL,
    url                         TEXT    NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    types                       TEXT    NOT NULL DEFAULT '',
    active                      INTEGER NOT NULL,
    secret                      BLOB    NOT NULL,
    previous_secret             BLOB,
    secret_rotated_at           TEXT,
    previous_secret_expires_at  TEXT,
    after_tx                    INTEGER NOT NULL CHECK (after_tx >= 0),
    after_seq                   INTEGER NOT NULL CHECK (after_seq >= 0),
    created_at                  TEXT    NOT NULL,
    updated_at                  TEXT    NOT NULL,
    version                     INTEGER NOT NULL CHECK (version >= 1),
    PRIMARY KEY (tenant_id, id)
);
";

const SQLITE_DOWN: &str = "DROP TABLE webhooks;";

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

//! PostgreSQL only: row-level security on every tenant table, the service
//! group role and its grants, and a GIN index on lead metadata.
//!
//! The policy compares each row's tenant with the transaction-local setting
//! `app.tenant_id`. `current_setting(…, true)` returns NULL (or '' once the
//! setting has been used in the session) when no tenant context is set, and
//! `nullif(…, '')::uuid` turns both into NULL, so a connection without a
//! context matches no rows and raises no error. FORCE makes the policy apply
//! to the table owner too.
//!
//! The service logs in as a role that is a member of `leadline_service`,
//! which holds only SELECT/INSERT/UPDATE/DELETE: no TRUNCATE (which ignores
//! RLS), no ownership, no BYPASSRLS. On SQLite this migration does nothing:
//! an embedded database has a single user and no roles (docs/backends.md).

use sea_orm_migration::prelude::*;

use crate::sql::{disable_tenant_isolation, enable_tenant_isolation, run};

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261122_000002_row_level_security"
    }
}

/// The tables of the first migration and the column holding their tenant.
const TABLES: &[(&str, &str)] = &[
    ("tenants", "id"),
    ("api_keys", "tenant_id"),
    ("agents", "tenant_id"),
    ("leads", "tenant_id"),
];

const PG_ROLE_AND_GRANTS: &str = r#"
-- Roles belong to the cluster, not the database, and the migration lock is
-- per database: two databases on one server migrating at the same moment can
-- both see the role missing. The loser's CREATE ROLE fails with
-- unique_violation (or duplicate_object once the winner has committed); the
-- role it wanted exists either way.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'leadline_service') THEN
        BEGIN
            CREATE ROLE leadline_service NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
        EXCEPTION WHEN unique_violation OR duplicate_object THEN
            NULL;
        END;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA public TO leadline_service;
GRANT SELECT, INSERT, UPDATE, DELETE ON tenants, api_keys, agents, leads TO leadline_service;
GRANT SELECT ON seaql_migrations TO leadline_service;

CREATE INDEX leads_metadata_idx ON leads USING gin (metadata jsonb_path_ops);
"#;

const PG_UNGRANT: &str = r#"
DROP INDEX leads_metadata_idx;

REVOKE ALL ON tenants, api_keys, agents, leads, seaql_migrations FROM leadline_service;
REVOKE USAGE ON SCHEMA public FROM leadline_service;

"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let up = format!("{PG_ROLE_AND_GRANTS}\n{}", enable_tenant_isolation(TABLES));
        run(manager, &up, "").await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let down = format!("{PG_UNGRANT}\n{}", disable_tenant_isolation(TABLES));
        run(manager, &down, "").await
    }
}

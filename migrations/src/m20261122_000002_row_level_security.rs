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

use crate::sql::run;

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261122_000002_row_level_security"
    }
}

const PG_UP: &str = r#"
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'leadline_service') THEN
        CREATE ROLE leadline_service NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
    END IF;
END
$$;

ALTER TABLE tenants  ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants  FORCE  ROW LEVEL SECURITY;
ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys FORCE  ROW LEVEL SECURITY;
ALTER TABLE agents   ENABLE ROW LEVEL SECURITY;
ALTER TABLE agents   FORCE  ROW LEVEL SECURITY;
ALTER TABLE leads    ENABLE ROW LEVEL SECURITY;
ALTER TABLE leads    FORCE  ROW LEVEL SECURITY;

CREATE POLICY tenant_isolation ON tenants
    USING      (id = nullif(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (id = nullif(current_setting('app.tenant_id', true), '')::uuid);
CREATE POLICY tenant_isolation ON api_keys
    USING      (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
CREATE POLICY tenant_isolation ON agents
    USING      (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
CREATE POLICY tenant_isolation ON leads
    USING      (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);

GRANT USAGE ON SCHEMA public TO leadline_service;
GRANT SELECT, INSERT, UPDATE, DELETE ON tenants, api_keys, agents, leads TO leadline_service;
GRANT SELECT ON seaql_migrations TO leadline_service;

CREATE INDEX leads_metadata_idx ON leads USING gin (metadata jsonb_path_ops);
"#;

const PG_DOWN: &str = r#"
DROP INDEX leads_metadata_idx;

REVOKE ALL ON tenants, api_keys, agents, leads, seaql_migrations FROM leadline_service;
REVOKE USAGE ON SCHEMA public FROM leadline_service;

DROP POLICY tenant_isolation ON leads;
DROP POLICY tenant_isolation ON agents;
DROP POLICY tenant_isolation ON api_keys;
DROP POLICY tenant_isolation ON tenants;

ALTER TABLE leads    NO FORCE ROW LEVEL SECURITY;
ALTER TABLE leads    DISABLE  ROW LEVEL SECURITY;
ALTER TABLE agents   NO FORCE ROW LEVEL SECURITY;
ALTER TABLE agents   DISABLE  ROW LEVEL SECURITY;
ALTER TABLE api_keys NO FORCE ROW LEVEL SECURITY;
ALTER TABLE api_keys DISABLE  ROW LEVEL SECURITY;
ALTER TABLE tenants  NO FORCE ROW LEVEL SECURITY;
ALTER TABLE tenants  DISABLE  ROW LEVEL SECURITY;
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, PG_UP, "").await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, PG_DOWN, "").await
    }
}

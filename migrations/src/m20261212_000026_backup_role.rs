//! The role backups read as (PostgreSQL).
//!
//! Every tenant table has FORCE ROW LEVEL SECURITY, so a dump by the owner
//! or by a role without `BYPASSRLS` would read every table as empty, and
//! succeed. `leadline_backup` reads through its own policy instead:
//! `backup_reading`, `FOR SELECT TO leadline_backup USING (true)`, on every
//! table with row-level security, and `SELECT` on every table and
//! sequence. It can read everything and write nothing. The owner is made a
//! member, so `leadline backup` (as the owner, `pg_dump --role
//! leadline_backup --enable-row-security`) reads as it; `leadline backup`
//! refuses to run while any table lacks the policy or the grant, so a table
//! a later migration forgets cannot silently leave a backup.
//!
//! SQLite has no roles: nothing to do.

use sea_orm_migration::prelude::*;

use crate::sql::run;

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261212_000026_backup_role"
    }
}

const PG_UP: &str = r"
-- As for leadline_service (migration 2): the role is the cluster's, and two
-- databases migrating at once may both find it missing.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'leadline_backup') THEN
        BEGIN
            CREATE ROLE leadline_backup NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
        EXCEPTION WHEN unique_violation OR duplicate_object THEN
            NULL;
        END;
    END IF;
END
$$;
GRANT USAGE ON SCHEMA public TO leadline_backup;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO leadline_backup;
GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO leadline_backup;
-- Tables later migrations make are readable too (their policy is theirs to
-- add: a backup refuses to run without it).
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO leadline_backup;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON SEQUENCES TO leadline_backup;
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT c.relname FROM pg_class c
              WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
                AND c.relrowsecurity
              ORDER BY c.relname LOOP
        EXECUTE format('CREATE POLICY backup_reading ON %I FOR SELECT TO leadline_backup USING (true)',
                       r.relname);
    END LOOP;
END
$$;
SELECT leadline_grant_backup_membership();
";

/// Makes the current user a member of `leadline_backup`, for migrations
/// and restores. Memberships are the cluster's catalog rows: two databases
/// granting the same one at once collide ("tuple concurrently updated"),
/// and the loser's grant is the winner's.
pub(crate) const PG_MEMBERSHIP_FUNCTION: &str = r"
CREATE OR REPLACE FUNCTION leadline_grant_backup_membership() RETURNS void
    LANGUAGE plpgsql SET search_path = public, pg_temp
AS $$
BEGIN
    IF NOT pg_has_role(current_user, 'leadline_backup', 'MEMBER') THEN
        BEGIN
            EXECUTE format('GRANT leadline_backup TO %I', current_user);
        EXCEPTION WHEN internal_error OR unique_violation THEN
            NULL;
        END;
    END IF;
END
$$;
REVOKE ALL ON FUNCTION leadline_grant_backup_membership() FROM PUBLIC;
";

const PG_DOWN: &str = r"
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT p.tablename FROM pg_policies p
              WHERE p.schemaname = 'public' AND p.policyname = 'backup_reading' LOOP
        EXECUTE format('DROP POLICY backup_reading ON %I', r.tablename);
    END LOOP;
END
$$;
ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE SELECT ON SEQUENCES FROM leadline_backup;
ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE SELECT ON TABLES FROM leadline_backup;
REVOKE SELECT ON ALL SEQUENCES IN SCHEMA public FROM leadline_backup;
REVOKE SELECT ON ALL TABLES IN SCHEMA public FROM leadline_backup;
REVOKE USAGE ON SCHEMA public FROM leadline_backup;
DROP FUNCTION leadline_grant_backup_membership();
";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, &format!("{PG_MEMBERSHIP_FUNCTION}\n{PG_UP}"), "").await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, PG_DOWN, "").await
    }
}

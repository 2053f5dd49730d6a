//! PostgreSQL roles for the service: create a login that can do its job and
//! nothing more, and verify that an existing one is safe.
//!
//! The schema's owner runs migrations. The service logs in as a separate
//! role that is a member of the NOLOGIN group `leadline_service` (which the
//! migrations grant SELECT/INSERT/UPDATE/DELETE on the tenant tables), owns
//! nothing, is not a superuser and has NOBYPASSRLS, so row-level security
//! always applies to it.

use leadline_migrations::SERVICE_GROUP_ROLE;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use secrecy::{ExposeSecret, SecretString};

use crate::{Backend, Store};

/// A role operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RolesError {
    /// Roles exist only on PostgreSQL.
    #[error("roles are a PostgreSQL feature; this database is SQLite")]
    NotPostgres,
    /// The login name is not a plain lowercase identifier.
    #[error(
        "the role name must be 1 to 63 characters of a-z, 0-9 and _, starting with a letter or _"
    )]
    InvalidName,
    /// The database refused; the message is the database's.
    #[error("{0}")]
    Database(String),
}

impl From<sea_orm::DbErr> for RolesError {
    fn from(err: sea_orm::DbErr) -> Self {
        Self::Database(err.to_string())
    }
}

fn check_name(name: &str) -> Result<(), RolesError> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if first_ok && rest_ok && name.len() <= 63 {
        Ok(())
    } else {
        Err(RolesError::InvalidName)
    }
}

impl Store {
    /// Creates (or repairs) the service login `login` with `password`: member
    /// of `leadline_service`, NOSUPERUSER, NOCREATEDB, NOCREATEROLE,
    /// NOBYPASSRLS. Run it connected as a role with CREATEROLE (usually the
    /// schema owner or an administrator), after migrating.
    ///
    /// Role names and passwords cannot be bound as parameters in DDL, so the
    /// values travel as a transaction-local setting and are quoted by
    /// PostgreSQL's own `format('%I', '%L')`; the password never appears in
    /// the statement text (or in a server log of it).
    ///
    /// # Errors
    /// [`RolesError`].
    pub async fn ensure_service_login(
        &self,
        login: &str,
        password: &SecretString,
    ) -> Result<(), RolesError> {
        if self.backend() != Backend::Postgres {
            return Err(RolesError::NotPostgres);
        }
        check_name(login)?;
        let txn = sea_orm::TransactionTrait::begin(self.db()).await?;
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT set_config('leadline.role_name', $1, true), set_config('leadline.role_password', $2, true)",
            [login.into(), password.expose_secret().into()],
        ))
        .await?;
        txn.execute_unprepared(&format!(
            r#"
DO $$
DECLARE
    name text := current_setting('leadline.role_name');
    pw   text := current_setting('leadline.role_password');
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{group}') THEN
        -- Roles are cluster-wide: a setup or migration of another database
        -- on this server may create the group between the check and here.
        BEGIN
            CREATE ROLE {group} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
        EXCEPTION WHEN unique_violation OR duplicate_object THEN
            NULL;
        END;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = name) THEN
        -- Only what a CREATEROLE (non-superuser) owner may change: naming
        -- SUPERUSER, BYPASSRLS or REPLICATION at all, even to keep them off,
        -- needs a superuser. `roles verify` reports those attributes.
        EXECUTE format('ALTER ROLE %I WITH LOGIN INHERIT NOCREATEDB NOCREATEROLE PASSWORD %L', name, pw);
    ELSE
        EXECUTE format('CREATE ROLE %I WITH LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOREPLICATION PASSWORD %L', name, pw);
    END IF;
    EXECUTE format('GRANT {group} TO %I', name);
    PERFORM set_config('leadline.role_password', '', true);
END
$$;"#,
            group = SERVICE_GROUP_ROLE
        ))
        .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Checks that `login` is safe to run the service as, listing every
    /// problem found (an empty list means safe): it exists and can log in,
    /// is no superuser, has no BYPASSRLS, owns no table, schema, function,
    /// type or database, holds TRUNCATE on nothing, and every tenant table
    /// has row-level security enabled, forced and a policy.
    ///
    /// # Errors
    /// [`RolesError`] when the check itself cannot run.
    pub async fn verify_service_login(&self, login: &str) -> Result<Vec<String>, RolesError> {
        if self.backend() != Backend::Postgres {
            return Err(RolesError::NotPostgres);
        }
        check_name(login)?;
        let db = self.db();
        let row = db
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                r"SELECT r.rolcanlogin, r.rolsuper, r.rolbypassrls, r.rolcreaterole, r.rolcreatedb,
                         pg_has_role(r.oid, $2, 'MEMBER') AS in_group,
                         EXISTS (SELECT 1 FROM pg_roles b WHERE b.rolname = 'leadline_backup'
                                    AND pg_has_role(r.oid, b.oid, 'MEMBER')) AS reads_all,
                         (SELECT count(*) FROM pg_class c WHERE c.relowner = r.oid)
                       + (SELECT count(*) FROM pg_namespace n WHERE n.nspowner = r.oid)
                       + (SELECT count(*) FROM pg_proc p WHERE p.proowner = r.oid)
                       + (SELECT count(*) FROM pg_type t WHERE t.typowner = r.oid)
                       + (SELECT count(*) FROM pg_database d WHERE d.datdba = r.oid) AS owned
                  FROM pg_roles r WHERE r.rolname = $1",
                [login.into(), SERVICE_GROUP_ROLE.into()],
            ))
            .await?;
        let Some(row) = row else {
            return Ok(vec![format!("role {login} does not exist")]);
        };
        let mut problems = Vec::new();
        let flag = |col: &str| row.try_get::<bool>("", col).map_err(RolesError::from);
        if !flag("rolcanlogin")? {
            problems.push(format!("{login} cannot log in"));
        }
        if flag("rolsuper")? {
            problems.push(format!(
                "{login} is a superuser, which bypasses row-level security"
            ));
        }
        if flag("rolbypassrls")? {
            problems.push(format!("{login} has BYPASSRLS"));
        }
        if flag("rolcreaterole")? || flag("rolcreatedb")? {
            problems.push(format!("{login} can create roles or databases"));
        }
        if !flag("in_group")? {
            problems.push(format!("{login} is not a member of {SERVICE_GROUP_ROLE}"));
        }
        if flag("reads_all")? {
            problems.push(format!(
                "{login} is a member of leadline_backup, whose policies show every tenant's rows"
            ));
        }
        let owned: i64 = row.try_get("", "owned")?;
        if owned > 0 {
            problems.push(format!(
                "{login} owns {owned} database objects; owners can disable row-level security"
            ));
        }
        let truncatable = db
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                r"SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE c.relkind = 'r' AND n.nspname = current_schema()
                     AND has_table_privilege($1, c.oid, 'TRUNCATE')",
                [login.into()],
            ))
            .await?;
        for row in truncatable {
            let table: String = row.try_get("", "relname")?;
            problems.push(format!(
                "{login} may TRUNCATE {table}, which ignores row-level security"
            ));
        }
        for table in leadline_migrations::TENANT_TABLES {
            let rls = db
                .query_one_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    r"SELECT c.relrowsecurity, c.relforcerowsecurity,
                             (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid) AS policies
                        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                       WHERE c.relname = $1 AND n.nspname = current_schema()",
                    [(*table).into()],
                ))
                .await?;
            match rls {
                None => problems.push(format!(
                    "table {table} is missing: run the migrations first"
                )),
                Some(r) => {
                    let enabled: bool = r.try_get("", "relrowsecurity")?;
                    let forced: bool = r.try_get("", "relforcerowsecurity")?;
                    let policies: i64 = r.try_get("", "policies")?;
                    if !(enabled && forced && policies > 0) {
                        problems.push(format!("table {table} lacks enabled and forced row-level security with a policy"));
                    }
                }
            }
        }
        Ok(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_are_plain_identifiers() {
        assert!(check_name("leadline_app").is_ok());
        assert!(check_name("_x1").is_ok());
        for bad in ["", "App", "1app", "a-b", "a;drop", "x\"", &"a".repeat(64)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}

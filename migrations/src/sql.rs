//! Helpers shared by migrations.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

/// The NOLOGIN group role that holds the service's table grants. Login roles
/// for the running service are made members of it (`leadline db roles`).
pub const SERVICE_GROUP_ROLE: &str = "leadline_service";

/// The NOLOGIN role that reads every tenant's rows for `pg_dump`
/// (migration 26).
pub const BACKUP_ROLE: &str = "leadline_backup";

/// The roles leadline's migrations create. Roles belong to the cluster, so
/// two databases of one server migrating at once can race to create them.
pub const CLUSTER_ROLES: &[&str] = &[SERVICE_GROUP_ROLE, BACKUP_ROLE];

/// Runs one of two scripts depending on the backend. Each script may hold
/// several statements; they run in the migration's transaction.
pub(crate) async fn run(
    manager: &SchemaManager<'_>,
    postgres: &str,
    sqlite: &str,
) -> Result<(), DbErr> {
    let sql = match manager.get_database_backend() {
        DbBackend::Postgres => postgres,
        DbBackend::Sqlite => sqlite,
        other => {
            return Err(DbErr::Migration(format!(
                "leadline does not support the {other:?} backend"
            )));
        }
    };
    if sql.trim().is_empty() {
        return Ok(());
    }
    manager
        .get_connection()
        .execute_unprepared(sql)
        .await
        .map(|_| ())
}

/// The one tenant-isolation rule, as a SQL predicate on `column`: the row's
/// tenant equals the transaction's `app.tenant_id`. `current_setting(…, true)`
/// is NULL (or '' once set in the session) without a context, and
/// `nullif(…, '')::uuid` makes both NULL, so no context matches no rows and
/// raises no error.
fn tenant_predicate(column: &str) -> String {
    format!("{column} = nullif(current_setting('app.tenant_id', true), '')::uuid")
}

/// PostgreSQL: enables and forces row-level security on each `(table,
/// tenant column)` and creates its `tenant_isolation` policy, with the same
/// predicate for USING and WITH CHECK. Every tenant table gets exactly this,
/// written once here so no table can drift.
pub(crate) fn enable_tenant_isolation(tables: &[(&str, &str)]) -> String {
    let mut sql = String::new();
    for (table, column) in tables {
        let predicate = tenant_predicate(column);
        sql.push_str(&format!(
            "ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;\n\
             ALTER TABLE {table} FORCE ROW LEVEL SECURITY;\n\
             CREATE POLICY tenant_isolation ON {table}\n    USING ({predicate})\n    WITH CHECK ({predicate});\n"
        ));
    }
    sql
}

/// PostgreSQL: the reverse of [`enable_tenant_isolation`], in reverse order.
pub(crate) fn disable_tenant_isolation(tables: &[(&str, &str)]) -> String {
    let mut sql = String::new();
    for (table, _) in tables.iter().rev() {
        sql.push_str(&format!(
            "DROP POLICY tenant_isolation ON {table};\n\
             ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY;\n\
             ALTER TABLE {table} DISABLE ROW LEVEL SECURITY;\n"
        ));
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolation_uses_one_predicate_for_using_and_with_check() {
        let sql = enable_tenant_isolation(&[("tenants", "id"), ("leads", "tenant_id")]);
        let id = tenant_predicate("id");
        let tenant_id = tenant_predicate("tenant_id");
        assert!(
            sql.contains(&format!(
                "ON tenants\n    USING ({id})\n    WITH CHECK ({id});"
            )),
            "{sql}"
        );
        assert!(
            sql.contains(&format!(
                "ON leads\n    USING ({tenant_id})\n    WITH CHECK ({tenant_id});"
            )),
            "{sql}"
        );
        assert_eq!(sql.matches("FORCE ROW LEVEL SECURITY").count(), 2);
    }

    #[test]
    fn disabling_undoes_in_reverse_order() {
        let sql = disable_tenant_isolation(&[("tenants", "id"), ("leads", "tenant_id")]);
        let leads = sql.find("ON leads").expect("leads");
        let tenants = sql.find("ON tenants").expect("tenants");
        assert!(leads < tenants, "{sql}");
    }
}

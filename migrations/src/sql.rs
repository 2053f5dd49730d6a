//! Helpers shared by migrations.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

/// The NOLOGIN group role that holds the service's table grants. Login roles
/// for the running service are made members of it (`leadline db roles`).
pub const SERVICE_GROUP_ROLE: &str = "leadline_service";

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

//! Running leadline's migrations against a [`Store`]: up, down, status, reset.

use leadline_migrations::{
    Migrator,
    migration::{MigrationStatus, MigratorTrait},
};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement};

use crate::{Backend, ConnectError, Store, StoreSettings};

/// A migration failed; the message is the database's.
#[derive(Debug, thiserror::Error)]
#[error("migration failed: {0}")]
pub struct MigrateError(pub String);

impl From<sea_orm::DbErr> for MigrateError {
    fn from(err: sea_orm::DbErr) -> Self {
        Self(err.to_string())
    }
}

/// One migration and whether it is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationState {
    /// Its name, e.g. `m20261122_000001_core`.
    pub name: String,
    /// Applied to this database.
    pub applied: bool,
}

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrateOp {
    /// Apply every pending migration.
    Up,
    /// Revert the last `steps` applied migrations.
    Down {
        /// How many.
        steps: u32,
    },
    /// Revert everything, then apply everything.
    Reset,
}

/// How often [`Store::migrate`] reruns `up` after losing a role race.
const ROLE_RACE_RETRIES: u32 = 3;

/// A migration that failed because one of leadline's roles
/// ([`leadline_migrations::CLUSTER_ROLES`]) was created by a concurrent
/// migration of another database: a unique violation on the role's name, or
/// the role still invisible to this transaction.
fn is_role_race(e: &DbErr) -> bool {
    let message = e.to_string();
    message.contains("pg_authid_rolname_index")
        || (message.contains("does not exist")
            && leadline_migrations::CLUSTER_ROLES
                .iter()
                .any(|role| message.contains(&format!("role \"{role}\""))))
}

/// An arbitrary constant naming leadline's migration lock.
const LOCK_KEY: i64 = 0x6c65_6164_6c69_6e65; // "leadline"

impl Store {
    /// Opens a one-connection store for migrations. On PostgreSQL the
    /// migration lock is a session-level advisory lock, so it must be taken
    /// and released on the very connection that migrates: a pool of one
    /// guarantees that, and concurrent `serve` start-ups then migrate one
    /// after the other instead of racing.
    ///
    /// # Errors
    /// [`ConnectError`].
    pub async fn connect_for_migrations(
        url: &str,
        settings: &StoreSettings,
    ) -> Result<Self, ConnectError> {
        let settings = StoreSettings {
            max_connections: 1,
            min_connections: 1,
            ..settings.clone()
        };
        Self::connect_url(url, &settings).await
    }

    /// Applies `op` and returns the resulting status.
    ///
    /// # Errors
    /// [`MigrateError`] with the database's message; on PostgreSQL each
    /// migration runs in its own transaction, so a failure leaves the
    /// previous ones applied and the failing one not at all.
    pub async fn migrate(&self, op: MigrateOp) -> Result<Vec<MigrationState>, MigrateError> {
        let lock = self.backend() == Backend::Postgres && self.pool_stats().max == 1;
        if lock {
            self.db()
                .execute_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT pg_advisory_lock($1)",
                    [LOCK_KEY.into()],
                ))
                .await?;
        }
        let result = match op {
            MigrateOp::Up => self.up_past_role_races().await,
            MigrateOp::Down { steps } => Migrator::down(self.db(), Some(steps)).await,
            MigrateOp::Reset => match Migrator::down(self.db(), None).await {
                Ok(()) => Migrator::up(self.db(), None).await,
                Err(e) => Err(e),
            },
        };
        if lock {
            self.db()
                .execute_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT pg_advisory_unlock($1)",
                    [LOCK_KEY.into()],
                ))
                .await?;
        }
        result?;
        self.migration_status().await
    }

    /// `Migrator::up`, run again (at most [`ROLE_RACE_RETRIES`] times) when
    /// a migration failed because another database of the same server was
    /// creating one of leadline's roles at that moment. Roles are cluster-wide but
    /// the migration lock is per database, and the loser of that race may
    /// still see the role as missing for the rest of its transaction (its
    /// catalog cache is only refreshed at the next transaction); the failed
    /// migration rolled back, so running `up` again in a fresh transaction
    /// finds the role and applies it.
    async fn up_past_role_races(&self) -> Result<(), DbErr> {
        let mut attempt = 0;
        loop {
            match Migrator::up(self.db(), None).await {
                Err(e) if attempt < ROLE_RACE_RETRIES && is_role_race(&e) => {
                    attempt += 1;
                    tracing::info!(
                        attempt,
                        "migrate: a role was being created by another database's migration; running again"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(50 * u64::from(attempt)))
                        .await;
                }
                other => return other,
            }
        }
    }

    /// Every migration and whether it is applied. Read-only: needs no DDL
    /// privilege, so the service role can call it.
    ///
    /// # Errors
    /// [`MigrateError`].
    pub async fn migration_status(&self) -> Result<Vec<MigrationState>, MigrateError> {
        Ok(Migrator::get_migration_with_status_read_only(self.db())
            .await?
            .into_iter()
            .map(|m| MigrationState {
                name: m.name().to_owned(),
                applied: m.status() == MigrationStatus::Applied,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_race_is_told_from_other_failures() {
        let race = |m: &str| is_role_race(&DbErr::Custom(m.to_owned()));
        assert!(race(r#"role "leadline_service" does not exist"#));
        assert!(race(
            r#"role "leadline_backup" does not exist at line 5201"#
        ));
        assert!(race(
            r#"duplicate key value violates unique constraint "pg_authid_rolname_index""#
        ));
        assert!(!race(r#"role "someone_else" does not exist"#));
        assert!(!race(r#"relation "leadline_backup_log" does not exist"#));
        assert!(!race("syntax error at or near \"leadline_backup\""));
    }
}

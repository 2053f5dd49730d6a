//! The one shared pool per process, its statistics, health and shutdown,
//! and the tenant-scoped transaction every repository call runs in.

use std::{
    str::FromStr,
    sync::Arc,
    time::{Duration, Instant},
};

use leadline_domain::TenantId;
use leadline_ports::{HealthError, PoolStats};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    SqlxPostgresConnector, SqlxSqliteConnector, Statement, TransactionTrait,
    sqlx::{
        postgres::{PgConnectOptions, PgPool, PgPoolOptions},
        sqlite::{
            SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
            SqliteSynchronous,
        },
    },
};
use secrecy::ExposeSecret;

use crate::StoreSettings;

/// Which database is behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL: the production store, with row-level security.
    Postgres,
    /// SQLite: the embedded default, single-user.
    Sqlite,
}

impl Backend {
    /// Chooses the backend from a URL's scheme.
    ///
    /// # Errors
    /// [`ConnectError::UnsupportedUrl`] for any other scheme.
    pub fn from_url(url: &str) -> Result<Self, ConnectError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else {
            Err(ConnectError::UnsupportedUrl)
        }
    }

    /// Its name in health reports and docs.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Sqlite => "sqlite",
        }
    }
}

/// The store could not be opened. Messages never contain the URL, which may
/// hold a password.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL names no supported backend.
    #[error("database.url must start with postgres://, postgresql:// or sqlite:")]
    UnsupportedUrl,
    /// The URL could not be parsed.
    #[error("database.url is malformed: {0}")]
    InvalidUrl(String),
    /// The database did not accept a connection.
    #[error("could not connect to the database: {0}")]
    Unreachable(String),
}

#[derive(Debug)]
enum PoolHandle {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

#[derive(Debug)]
struct Inner {
    db: DatabaseConnection,
    pool: PoolHandle,
    backend: Backend,
}

/// The database handle every repository shares. Cheap to clone.
///
/// Built once per process by the composition root; nothing else builds a
/// pool. Holds the sqlx pool beside SeaORM's connection so pool statistics
/// and shutdown are the real pool's, not an estimate.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl Store {
    /// Opens the pool described by `settings.url`.
    ///
    /// SQLite gets one connection, on purpose: SQLite allows a single writer,
    /// and with several pooled connections a transaction that reads and then
    /// writes fails with `SQLITE_BUSY` when another connection wrote first.
    /// One connection serialises statements instead, which is the honest
    /// capacity of an embedded database; PostgreSQL is the concurrent store.
    /// Every SQLite connection gets `journal_mode=WAL`, `foreign_keys=ON`,
    /// `synchronous=NORMAL` and a `busy_timeout`.
    ///
    /// # Errors
    /// [`ConnectError`] when the URL is bad or the database does not answer.
    pub async fn connect(settings: &StoreSettings) -> Result<Self, ConnectError> {
        Self::connect_url(settings.url.expose_secret(), settings).await
    }

    /// Like [`Store::connect`] but for an explicit URL (the migration URL, say).
    ///
    /// # Errors
    /// [`ConnectError`].
    pub async fn connect_url(url: &str, settings: &StoreSettings) -> Result<Self, ConnectError> {
        let backend = Backend::from_url(url)?;
        let idle = Some(Duration::from_secs(settings.idle_timeout_secs));
        let (db, pool) = match backend {
            Backend::Postgres => {
                let options = PgConnectOptions::from_str(url)
                    .map_err(|e| ConnectError::InvalidUrl(e.to_string()))?
                    .application_name("leadline");
                let pool = PgPoolOptions::new()
                    .max_connections(settings.max_connections)
                    .min_connections(settings.min_connections)
                    .acquire_timeout(settings.acquire_timeout())
                    .idle_timeout(idle)
                    .connect_with(options)
                    .await
                    .map_err(|e| ConnectError::Unreachable(e.to_string()))?;
                (
                    SqlxPostgresConnector::from_sqlx_postgres_pool(pool.clone()),
                    PoolHandle::Postgres(pool),
                )
            }
            Backend::Sqlite => {
                let options = SqliteConnectOptions::from_str(url)
                    .map_err(|e| ConnectError::InvalidUrl(e.to_string()))?
                    .foreign_keys(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_millis(settings.sqlite_busy_timeout_ms));
                // An in-memory database lives exactly as long as its
                // connection: keep the one connection forever.
                let pool = SqlitePoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    .acquire_timeout(settings.acquire_timeout())
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .connect_with(options)
                    .await
                    .map_err(|e| ConnectError::Unreachable(e.to_string()))?;
                (
                    SqlxSqliteConnector::from_sqlx_sqlite_pool(pool.clone()),
                    PoolHandle::Sqlite(pool),
                )
            }
        };
        Ok(Self {
            inner: Arc::new(Inner { db, pool, backend }),
        })
    }

    /// The backend in use.
    #[must_use]
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// The SeaORM connection, for this crate's repositories and migrations.
    pub(crate) fn db(&self) -> &DatabaseConnection {
        &self.inner.db
    }

    /// Pool occupancy right now.
    #[must_use]
    pub fn pool_stats(&self) -> PoolStats {
        let (size, idle, max) = match &self.inner.pool {
            PoolHandle::Postgres(p) => (p.size(), p.num_idle(), p.options().get_max_connections()),
            PoolHandle::Sqlite(p) => (p.size(), p.num_idle(), p.options().get_max_connections()),
        };
        let idle = u32::try_from(idle).unwrap_or(u32::MAX);
        PoolStats {
            size,
            idle,
            in_use: size.saturating_sub(idle),
            max,
        }
    }

    /// Round-trips `SELECT 1` within `timeout`.
    ///
    /// # Errors
    /// [`HealthError::Timeout`] or [`HealthError::Failed`].
    pub async fn ping(&self, timeout: Duration) -> Result<Duration, HealthError> {
        let start = Instant::now();
        match tokio::time::timeout(timeout, self.inner.db.execute_unprepared("SELECT 1")).await {
            Ok(Ok(_)) => Ok(start.elapsed()),
            Ok(Err(e)) => Err(HealthError::Failed(e.to_string())),
            Err(_) => Err(HealthError::Timeout(timeout)),
        }
    }

    /// Closes the pool: waits for lent connections to come back, then closes
    /// them all. Further calls fail as unavailable.
    pub async fn close(&self) {
        match &self.inner.pool {
            PoolHandle::Postgres(p) => p.close().await,
            PoolHandle::Sqlite(p) => p.close().await,
        }
    }

    /// Begins the transaction one repository call runs in. On PostgreSQL it
    /// first sets `app.tenant_id` for this transaction only
    /// (`set_config(…, true)`, the function form of `SET LOCAL`), which the
    /// row-level-security policies read. Never a session-level `SET`: a
    /// pooled connection must not carry one tenant's context into another
    /// tenant's request.
    pub(crate) async fn begin(&self, tenant: TenantId) -> Result<DatabaseTransaction, DbErr> {
        let txn = self.inner.db.begin().await?;
        if self.inner.backend == Backend::Postgres {
            txn.execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT set_config('app.tenant_id', $1, true)",
                [tenant.to_string().into()],
            ))
            .await?;
        }
        Ok(txn)
    }
}

/// `url` with any password replaced by `***`, for logs and `config check`.
#[must_use]
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = rest
        .split_once('/')
        .map_or((rest, None), |(a, t)| (a, Some(t)));
    let redacted = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    match tail {
        Some(t) => format!("{scheme}://{redacted}/{t}"),
        None => format!("{scheme}://{redacted}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_by_scheme() {
        assert_eq!(
            Backend::from_url("postgres://h/db").ok(),
            Some(Backend::Postgres)
        );
        assert_eq!(
            Backend::from_url("postgresql://h/db").ok(),
            Some(Backend::Postgres)
        );
        assert_eq!(
            Backend::from_url("sqlite::memory:").ok(),
            Some(Backend::Sqlite)
        );
        assert!(matches!(
            Backend::from_url("mysql://h/db"),
            Err(ConnectError::UnsupportedUrl)
        ));
    }

    #[test]
    fn redaction_hides_only_the_password() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/leadline?sslmode=require"),
            "postgres://app:***@db:5432/leadline?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://app@db/leadline"),
            "postgres://app@db/leadline"
        );
        assert_eq!(
            redact_url("sqlite://leadline.db?mode=rwc"),
            "sqlite://leadline.db?mode=rwc"
        );
        assert_eq!(
            redact_url("postgres://u:p@ss@h/db"),
            "postgres://u:***@h/db"
        );
    }
}

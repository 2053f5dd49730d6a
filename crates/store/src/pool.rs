//! The one shared pool per process, its statistics, health and shutdown,
//! and the tenant-scoped transaction every repository call runs in.

use std::{
    str::FromStr,
    sync::Arc,
    time::{Duration, Instant},
};

use leadline_ports::{HealthError, PoolStats};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, SqlxPostgresConnector, SqlxSqliteConnector,
    sqlx::{
        postgres::{PgConnectOptions, PgPool, PgPoolOptions},
        sqlite::{
            SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
            SqliteSynchronous,
        },
    },
};
use secrecy::ExposeSecret;

use crate::{StoreSettings, tx::RetryPolicy};

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

    /// SeaORM's name for it, for raw statements.
    pub(crate) const fn db(self) -> sea_orm::DbBackend {
        match self {
            Self::Postgres => sea_orm::DbBackend::Postgres,
            Self::Sqlite => sea_orm::DbBackend::Sqlite,
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
    retry: RetryPolicy,
    /// The read pool: PostgreSQL's `database.read_url` when configured, or
    /// SQLite's readers on a database file.
    replica: Option<Arc<Inner>>,
    /// PostgreSQL's analytics pool (`database.analytics_url`, else the read
    /// replica's or the primary's URL, with a ceiling of its own).
    analytics: Option<Arc<Inner>>,
    /// Whether that pool reaches the primary (neither `analytics_url` nor
    /// `read_url` set), so that refreshing the views may use it too.
    analytics_on_primary: bool,
    /// Whether the read pool sees every commit the moment it returns, so
    /// that reads which must see this instance's own writes may use it too:
    /// SQLite's readers on the same file do (a WAL reader's snapshot starts
    /// at its first read), a PostgreSQL replica lags.
    replica_current: bool,
    /// Until when replica reads go to the primary, after the read pool
    /// failed to give a working connection.
    replica_down_until: std::sync::Mutex<Option<Instant>>,
    /// When a write last failed because the storage is full, unless a write
    /// committed since; read by `/readyz` through [`Store::storage_full`].
    storage_full_at: std::sync::Mutex<Option<Instant>>,
    /// Pings of tenants whose change log may have grown (`changes.rs`).
    changes: tokio::sync::broadcast::Sender<leadline_domain::TenantId>,
    /// The PostgreSQL listener for other instances' changes, once started.
    listener: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// PostgreSQL behind a transaction-mode pooler
    /// (`database.transaction_pooling`).
    transaction_pooling: bool,
    /// Whether writes record audit records (`database.audit`).
    audit: bool,
    /// Where the change listener connects: `database.listen_url`, else the
    /// primary's URL; `None` when there is to be no listener.
    listen_options: Option<PgConnectOptions>,
    /// SQLite's group commit (`database.sqlite_synchronous = full` on a
    /// database file): writes are acknowledged once their log is flushed.
    wal_sync: Option<Arc<crate::wal_sync::WalSync>>,
    /// SQLite's held connections for single-statement reads, on a database
    /// file with readers (`point_reads.rs`).
    point_readers: Option<crate::point_reads::PointReaders>,
    /// Each tenant's audit chain head as this process last wrote it
    /// (SQLite: a hint that saves reading it, `audit.rs`).
    chain_heads: Arc<crate::audit::ChainHeads>,
    /// The appends waiting for a turn to be written (`appends.rs`).
    appends: crate::appends::Appends,
    /// Each tenant's chain head as this process's sealer last left it
    /// (PostgreSQL: a hint that saves scanning for it, `audit.rs`).
    seal_heads: crate::audit::SealHeads,
    /// PostgreSQL: how to reach this pool's server outside the pool, to
    /// cancel the stoppable statements its connections still run when it
    /// closes ([`cancel_stoppable`]); `None` behind a transaction pooler.
    own_options: Option<PgConnectOptions>,
    /// PostgreSQL: the `application_name` a transaction takes for its
    /// duration when it may be cancelled at shutdown (the analytics
    /// refresh), `leadline/<store id>/stop`; shared by the store's pools.
    stop_name: Option<String>,
}

impl Inner {
    fn new(db: DatabaseConnection, pool: PoolHandle, backend: Backend, retry: RetryPolicy) -> Self {
        let appends = crate::appends::Appends::new(backend == Backend::Postgres);
        Self {
            db,
            pool,
            backend,
            retry,
            replica: None,
            analytics: None,
            analytics_on_primary: false,
            replica_current: false,
            replica_down_until: std::sync::Mutex::new(None),
            storage_full_at: std::sync::Mutex::new(None),
            changes: tokio::sync::broadcast::channel(1024).0,
            listener: std::sync::Mutex::new(None),
            transaction_pooling: false,
            audit: true,
            listen_options: None,
            wal_sync: None,
            point_readers: None,
            chain_heads: Arc::default(),
            appends,
            seal_heads: crate::audit::SealHeads::default(),
            own_options: None,
            stop_name: None,
        }
    }

    /// Cancels the stoppable statements this pool's connections still run
    /// (the analytics refresh, whose task was aborted), then closes the
    /// pool.
    async fn close(&self) {
        if let (Some(options), Some(name)) = (&self.own_options, &self.stop_name)
            && let PoolHandle::Postgres(pool) = &self.pool
            && pool.size() > u32::try_from(pool.num_idle()).unwrap_or(u32::MAX)
        {
            cancel_stoppable(options, name).await;
        }
        close_pool(&self.pool).await;
    }
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
    /// SQLite gets one writer connection, on purpose: SQLite allows a single
    /// writer, and with several writing connections a transaction that reads
    /// and then writes fails with `SQLITE_BUSY` when another connection
    /// wrote first. Writes queue for that connection, in order, for at most
    /// `database.acquire_timeout_ms` (then 503 with `Retry-After`). Beside
    /// it, a database file gets a pool of `database.sqlite_readers` reader
    /// connections (`PRAGMA query_only`): in WAL mode a reader never waits
    /// for the writer, nor the writer for a reader, and a reader's snapshot
    /// starts at its first read, so it sees every write that has returned.
    /// Every read runs there. An in-memory database has no readers: it
    /// lives in its one connection.
    ///
    /// Every SQLite connection gets `journal_mode=WAL`, `foreign_keys=ON`,
    /// `synchronous=NORMAL` and a `busy_timeout`. With
    /// `database.sqlite_synchronous = full` (the default) a database file's
    /// writes are acknowledged only once a flush of the log covers them
    /// (group commit: [`crate::wal_sync`]), so an acknowledged write
    /// survives a power loss.
    ///
    /// # Errors
    /// [`ConnectError`] when the URL is bad or the database does not answer.
    pub async fn connect(settings: &StoreSettings) -> Result<Self, ConnectError> {
        let name = own_name();
        let mut store = Self::connect_named(settings.url.expose_secret(), settings, &name).await?;
        if let Some(read_url) = &settings.read_url {
            let replica = Self::connect_named(read_url.expose_secret(), settings, &name).await?;
            if replica.backend() != store.backend() {
                return Err(ConnectError::InvalidUrl(
                    "database.read_url must use the same backend as database.url".to_owned(),
                ));
            }
            let inner = Arc::get_mut(&mut store.inner)
                .ok_or_else(|| ConnectError::InvalidUrl("store already shared".to_owned()))?;
            inner.replica = Some(replica.inner);
        }
        if store.backend() == Backend::Postgres {
            let url = settings
                .analytics_url
                .as_ref()
                .or(settings.read_url.as_ref())
                .unwrap_or(&settings.url);
            let own = StoreSettings {
                max_connections: settings.analytics_max_connections,
                min_connections: 0,
                ..settings.clone()
            };
            let analytics = Self::connect_named(url.expose_secret(), &own, &name).await?;
            if analytics.backend() != Backend::Postgres {
                return Err(ConnectError::InvalidUrl(
                    "database.analytics_url must use the same backend as database.url".to_owned(),
                ));
            }
            let inner = Arc::get_mut(&mut store.inner)
                .ok_or_else(|| ConnectError::InvalidUrl("store already shared".to_owned()))?;
            inner.analytics = Some(analytics.inner);
            inner.analytics_on_primary =
                settings.analytics_url.is_none() && settings.read_url.is_none();
        }
        Ok(store)
    }

    /// Like [`Store::connect`] but for an explicit URL (the migration URL, say).
    ///
    /// # Errors
    /// [`ConnectError`].
    pub async fn connect_url(url: &str, settings: &StoreSettings) -> Result<Self, ConnectError> {
        Self::connect_named(url, settings, &own_name()).await
    }

    /// [`Store::connect_url`], its PostgreSQL connections named `name`.
    async fn connect_named(
        url: &str,
        settings: &StoreSettings,
        name: &str,
    ) -> Result<Self, ConnectError> {
        let backend = Backend::from_url(url)?;
        let idle = Some(Duration::from_secs(settings.idle_timeout_secs));
        let retry = RetryPolicy {
            max_retries: settings.retry_max,
            min_delay: Duration::from_millis(settings.retry_min_delay_ms),
            max_delay: Duration::from_millis(settings.retry_max_delay_ms),
            slow_threshold: Duration::from_millis(settings.slow_query_ms),
            busy_deadline: settings.acquire_timeout(),
        };
        let mut replica = None;
        let mut listen_options = None;
        let mut wal_sync = None;
        let mut point_readers = None;
        let mut own_options = None;
        let (db, pool) = match backend {
            Backend::Postgres => {
                let mut options = pg_connect_options(url, settings)?.application_name(name);
                listen_options = match &settings.listen_url {
                    Some(direct) => Some(pg_connect_options(direct.expose_secret(), settings)?),
                    None if settings.transaction_pooling => {
                        tracing::warn!(
                            "database.transaction_pooling is on and database.listen_url is \
                             unset: LISTEN cannot pass a transaction pooler, so other \
                             instances' changes reach change feeds on their re-read timer"
                        );
                        None
                    }
                    None => Some(options.clone()),
                };
                if settings.transaction_pooling {
                    // A pooled server connection is not this client's: a
                    // statement prepared and cached on one transaction's
                    // server is missing on the next one's.
                    options = options.statement_cache_capacity(0);
                } else {
                    // Behind a transaction pooler a session's pid is a
                    // server connection other clients are lent between
                    // two statements: nothing is cancelled by pid there.
                    own_options = Some(options.clone());
                }
                let pool = PgPoolOptions::new()
                    .max_connections(settings.max_connections)
                    .min_connections(settings.min_connections)
                    .acquire_timeout(settings.acquire_timeout())
                    .idle_timeout(idle)
                    // No ping before lending a connection: it costs a round
                    // trip on every request, and a connection that died idle
                    // fails its first statement with a connection error,
                    // which the transaction runner reruns on another one.
                    .test_before_acquire(false)
                    .connect_with(options)
                    .await
                    .map_err(pg_connect_failure)?;
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
                    .busy_timeout(Duration::from_millis(settings.sqlite_busy_timeout_ms))
                    // Content a write removes or replaces is overwritten
                    // with zeros, not left in the file's free space: a
                    // privacy erasure's old values must not stay readable
                    // in the file (`Store::truncate_sqlite_log` does the same
                    // for the write-ahead log).
                    .pragma("secure_delete", "ON")
                    // Pages read from the map, without a `pread` and a copy
                    // each (docs/backends.md, "What bounds SQLite").
                    .pragma("mmap_size", settings.sqlite_mmap_bytes.to_string());
                // An in-memory database lives exactly as long as its
                // connection: keep the one connection forever.
                let in_memory = url.contains(":memory:") || url.contains("mode=memory");
                // `full` on a file: the writer commits at NORMAL and each
                // write waits for a shared flush of the log (`wal_sync.rs`).
                // In memory there is no disk to wait for: FULL costs nothing.
                let group_commit =
                    !in_memory && settings.sqlite_synchronous == crate::SqliteSynchronous::Full;
                let options = options.synchronous(match settings.sqlite_synchronous {
                    crate::SqliteSynchronous::Full if in_memory => SqliteSynchronous::Full,
                    _ => SqliteSynchronous::Normal,
                });
                // No ping before lending a connection (sqlx's default): on
                // SQLite the ping is a round trip to the connection's worker
                // thread, as dear as the point read it would precede, and an
                // in-process connection has no far end that could have hung
                // up. A connection left broken is caught where it comes back
                // (`sqlite_release_check`).
                let pool = SqlitePoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    .acquire_timeout(settings.acquire_timeout())
                    .test_before_acquire(false)
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .after_release(move |conn, _| Box::pin(sqlite_release_check(conn, in_memory)))
                    .connect_with(options.clone())
                    .await
                    .map_err(|e| ConnectError::Unreachable(e.to_string()))?;
                if group_commit {
                    // After the writer opened (and so created) the file, so
                    // that a symbolic link resolves as SQLite resolved it.
                    wal_sync = Some(crate::wal_sync::WalSync::new(
                        Arc::new(crate::wal_sync::WalFile::of(options.get_filename())),
                        settings.acquire_timeout(),
                    ));
                }
                // Opened after the writer, which has put the file in WAL
                // mode by now.
                let readers = settings.sqlite_reader_count();
                if !in_memory && readers > 0 {
                    let reader_options = options.clone().pragma("query_only", "ON");
                    point_readers = Some(
                        crate::point_reads::PointReaders::open(
                            reader_options.clone(),
                            readers,
                            settings.acquire_timeout(),
                        )
                        .await
                        .map_err(|e| ConnectError::Unreachable(e.to_string()))?,
                    );
                    let reader_pool = SqlitePoolOptions::new()
                        .max_connections(readers)
                        .min_connections(0)
                        .acquire_timeout(settings.acquire_timeout())
                        .test_before_acquire(false)
                        .idle_timeout(idle)
                        .max_lifetime(None)
                        .after_release(|conn, _| Box::pin(sqlite_release_check(conn, false)))
                        .connect_lazy_with(reader_options);
                    replica = Some(Arc::new(Inner::new(
                        SqlxSqliteConnector::from_sqlx_sqlite_pool(reader_pool.clone()),
                        PoolHandle::Sqlite(reader_pool),
                        backend,
                        retry,
                    )));
                }
                (
                    SqlxSqliteConnector::from_sqlx_sqlite_pool(pool.clone()),
                    PoolHandle::Sqlite(pool),
                )
            }
        };
        let replica_current = replica.is_some();
        let mut inner = Inner::new(db, pool, backend, retry);
        inner.replica = replica;
        inner.replica_current = replica_current;
        inner.transaction_pooling = settings.transaction_pooling && backend == Backend::Postgres;
        inner.audit = settings.audit;
        inner.wal_sync = wal_sync;
        inner.point_readers = point_readers;
        if !settings.audit {
            tracing::warn!(
                "database.audit is off: writes leave no audit record (meant for measuring what the trail costs)"
            );
        }
        inner.listen_options = listen_options;
        inner.stop_name = own_options.is_some().then(|| format!("{name}/stop"));
        inner.own_options = own_options;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The backend in use.
    #[must_use]
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// The SeaORM connection to the primary, for this crate's repositories
    /// and migrations.
    /// SQLite: copies the write-ahead log into the database file and
    /// empties it, so that page images written before a privacy erasure
    /// leave the disk (the file's own pages lose them as rows change:
    /// `secure_delete`). Best effort, after the erasure has committed: a
    /// reader still on an older snapshot when the busy timeout ends leaves
    /// the log to SQLite's next checkpoint, which overwrites it in time.
    pub(crate) async fn truncate_sqlite_log(&self) {
        if self.backend() != Backend::Sqlite {
            return;
        }
        let checkpoint = self
            .db()
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Sqlite,
                "PRAGMA wal_checkpoint(TRUNCATE)",
            ))
            .await;
        match checkpoint.map(|row| row.map(|r| r.try_get_by_index::<i32>(0))) {
            Ok(Some(Ok(0))) | Ok(None) => {}
            Ok(Some(Ok(_))) => tracing::warn!(
                "SQLite: the write-ahead log could not be emptied after an erasure (a reader \
                 held an older snapshot); its old pages go with a later checkpoint"
            ),
            Ok(Some(Err(e))) => tracing::warn!(error = %e, "SQLite: checkpoint answered oddly"),
            Err(e) => tracing::warn!(error = %e, "SQLite: checkpoint after an erasure failed"),
        }
    }

    pub(crate) fn db(&self) -> &DatabaseConnection {
        &self.inner.db
    }

    /// The analytics pool's connection, if the store has one.
    pub(crate) fn analytics_db(&self) -> Option<&DatabaseConnection> {
        self.inner.analytics.as_ref().map(|a| &a.db)
    }

    /// The `application_name` a transaction takes to be cancelled if it is
    /// still running when the store closes (PostgreSQL, unless behind a
    /// transaction pooler).
    pub(crate) fn stop_name(&self) -> Option<&str> {
        self.inner.stop_name.as_deref()
    }

    /// The analytics pool's connection when it reaches the primary: where
    /// a refresh of the views runs without taking one of the service's
    /// connections for its seconds.
    pub(crate) fn analytics_primary_db(&self) -> Option<&DatabaseConnection> {
        self.analytics_db()
            .filter(|_| self.inner.analytics_on_primary)
    }

    /// The connection for a read: the read pool when there is one, it is
    /// not recently failing, and the read tolerates replica lag or the pool
    /// has none (SQLite's readers); `None` means the primary.
    pub(crate) fn reader(&self, tolerates_lag: bool) -> Option<&DatabaseConnection> {
        let replica = self.inner.replica.as_ref()?;
        if !tolerates_lag && !self.inner.replica_current {
            return None;
        }
        let down = self
            .inner
            .replica_down_until
            .lock()
            .map(|until| until.is_some_and(|t| Instant::now() < t))
            .unwrap_or(false);
        (!down).then_some(&replica.db)
    }

    /// SQLite's held connections for single-statement reads, when the
    /// database is a file with readers.
    pub(crate) fn point_readers(&self) -> Option<&crate::point_reads::PointReaders> {
        self.inner.point_readers.as_ref()
    }

    /// Sends replica reads to the primary for `pause`: the read pool just
    /// failed to give a working connection.
    pub(crate) fn mark_replica_down(&self, pause: Duration) {
        if let Ok(mut until) = self.inner.replica_down_until.lock() {
            *until = Some(Instant::now() + pause);
        }
    }

    /// Notes that an operation failed because the storage is full.
    pub(crate) fn note_storage_full(&self) {
        if let Ok(mut at) = self.inner.storage_full_at.lock() {
            *at = Some(Instant::now());
        }
    }

    /// Whether a flush of SQLite's log failed: every write is refused until
    /// the process restarts (`wal_sync.rs` says why), and `/readyz` says so.
    #[must_use]
    pub fn write_flush_failed(&self) -> bool {
        self.wal_sync().is_some_and(|s| s.failed())
    }

    /// SQLite's group commit, when writes wait for a flush of the log.
    pub(crate) fn wal_sync(&self) -> Option<&Arc<crate::wal_sync::WalSync>> {
        self.inner.wal_sync.as_ref()
    }

    /// Notes that a write committed: there is space again.
    pub(crate) fn note_write_committed(&self) {
        if let Ok(mut at) = self.inner.storage_full_at.lock()
            && at.is_some()
        {
            tracing::info!("a write committed again after the storage was full");
            *at = None;
        }
    }

    /// How long ago a write last failed because the storage is full, when
    /// that was within the last 30 s and no write has committed since. `/readyz` answers 503 meanwhile.
    ///
    /// The window ends the report even if no write comes to clear it: an
    /// instance that readiness takes out of rotation receives no writes, so
    /// without it the report could never end. After the window, the next
    /// write that finds the disk still full reports it again.
    #[must_use]
    pub fn storage_full(&self) -> Option<Duration> {
        let at = *self.inner.storage_full_at.lock().ok()?;
        storage_full_age(at, Instant::now())
    }

    /// Whether a separate read pool is configured: a PostgreSQL replica, or
    /// SQLite's readers.
    #[must_use]
    pub fn has_read_pool(&self) -> bool {
        self.inner.replica.is_some()
    }

    pub(crate) fn retry_policy(&self) -> RetryPolicy {
        self.inner.retry
    }

    /// Pool occupancy of the primary right now.
    #[must_use]
    pub fn pool_stats(&self) -> PoolStats {
        stats_of(&self.inner)
    }

    /// Pool occupancy of the read pool, when one is configured.
    #[must_use]
    pub fn read_pool_stats(&self) -> Option<PoolStats> {
        self.inner.replica.as_deref().map(stats_of)
    }

    /// Occupancy of SQLite's connections held for single-statement reads,
    /// when the database is a file with readers.
    #[must_use]
    pub fn point_read_stats(&self) -> Option<PoolStats> {
        self.point_readers()
            .map(crate::point_reads::PointReaders::stats)
    }

    /// Round-trips `SELECT 1` on the primary within `timeout`.
    ///
    /// # Errors
    /// [`HealthError::Timeout`] or [`HealthError::Failed`].
    pub async fn ping(&self, timeout: Duration) -> Result<Duration, HealthError> {
        ping_on(&self.inner.db, timeout).await
    }

    /// Like [`Store::ping`] on the read pool; `None` when there is none.
    pub async fn ping_read_pool(&self, timeout: Duration) -> Option<Result<Duration, HealthError>> {
        match &self.inner.replica {
            Some(r) => Some(ping_on(&r.db, timeout).await),
            None => None,
        }
    }

    /// Runs `sql` on the primary pool's connection. For tests that need a
    /// per-connection setting, such as SQLite's `PRAGMA max_page_count`,
    /// which makes the database file "full" on demand; nothing else should
    /// need it.
    ///
    /// # Errors
    /// The database's error, as text.
    #[doc(hidden)]
    pub async fn execute_for_tests(&self, sql: &str) -> Result<(), String> {
        self.inner
            .db
            .execute_unprepared(sql)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// The in-process channel of change pings.
    pub(crate) fn changes_sender(
        &self,
    ) -> &tokio::sync::broadcast::Sender<leadline_domain::TenantId> {
        &self.inner.changes
    }

    /// Where the change listener's task is kept.
    pub(crate) fn listener_slot(&self) -> &std::sync::Mutex<Option<tokio::task::JoinHandle<()>>> {
        &self.inner.listener
    }

    /// Whether writes record audit records.
    pub(crate) fn audits(&self) -> bool {
        self.inner.audit
    }

    /// The appends waiting for the writer's turn (SQLite; `appends.rs`).
    pub(crate) fn appends(&self) -> &crate::appends::Appends {
        &self.inner.appends
    }

    /// The chain heads this process last wrote (SQLite; `audit.rs`).
    pub(crate) fn chain_heads(&self) -> &Arc<crate::audit::ChainHeads> {
        &self.inner.chain_heads
    }

    /// The sealer's chain heads (PostgreSQL; `audit.rs`).
    pub(crate) fn seal_heads(&self) -> &crate::audit::SealHeads {
        &self.inner.seal_heads
    }

    /// Whether PostgreSQL is reached through a transaction-mode pooler.
    pub(crate) fn transaction_pooling(&self) -> bool {
        self.inner.transaction_pooling
    }

    /// Where the change listener connects, on PostgreSQL; `None` when it
    /// cannot listen (behind a transaction pooler without
    /// `database.listen_url`).
    pub(crate) fn listen_options(&self) -> Option<PgConnectOptions> {
        self.inner.listen_options.clone()
    }

    /// Closes the pools: waits for lent connections to come back, then
    /// closes them all. Further calls fail as unavailable.
    pub async fn close(&self) {
        // The change listener holds a pooled connection: stop it first, or
        // closing the pool would wait for it forever.
        if let Some(task) = self
            .inner
            .listener
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
        if let Some(r) = &self.inner.replica {
            r.close().await;
        }
        if let Some(a) = &self.inner.analytics {
            a.close().await;
        }
        if let Some(readers) = &self.inner.point_readers {
            readers.close().await;
        }
        self.inner.close().await;
    }
}

/// Decides whether a SQLite connection coming back to the pool may be lent
/// again: not when it still counts an open transaction.
///
/// Why this exists (issue 12, defect 7). SQLite rolls a transaction back
/// on its own after some errors (`sqlite3VdbeHalt` in sqlite3.c): a COMMIT
/// that fails with `SQLITE_FULL` or an I/O error (only `SQLITE_BUSY` leaves
/// it open), and a statement that fails that way without a statement
/// journal (a one-row `INSERT`). sqlx does not notice: it lowers its
/// transaction depth only when its own COMMIT or ROLLBACK succeeds, and the
/// ROLLBACK that SeaORM's `DatabaseTransaction` queues when it is dropped
/// after the failure now fails ("no transaction is active"). The connection
/// comes back counting depth 1 while SQLite is in autocommit. From then on
/// sqlx opens each transaction with `SAVEPOINT` and ends it with `RELEASE`
/// or `ROLLBACK TO`; the first `ROLLBACK TO` (any request that fails, a
/// duplicate email say) leaves a real transaction open that no later
/// `RELEASE` closes. Every later write is acknowledged, visible to this
/// connection only, and lost when the process stops, even after space was
/// freed.
///
/// The remedy is to close such a connection: closing a SQLite handle rolls
/// back whatever it still has open, and the pool opens a fresh one with the
/// same options. The alternatives are worse: sqlx's depth is private, so
/// explicit `ROLLBACK`s and `BEGIN`s could re-align it only by guessing how
/// far off it is, and asking SQLite itself (`sqlite3_get_autocommit`)
/// takes unsafe FFI, which the workspace forbids. The check costs nothing
/// on the common path: a committed transaction comes back at depth 0. Only
/// a connection still counting a transaction pays one worker round trip
/// (the ping), which runs after any ROLLBACK the dropped transaction
/// queued, so a failed request whose rollback went through keeps its
/// connection.
///
/// An in-memory database lives only as long as its connection, so closing
/// would lose it whole; it keeps its connection and the fault is logged.
/// PostgreSQL needs none of this: a failed COMMIT ends the transaction
/// there, and the ROLLBACK that follows succeeds (with a warning), so sqlx's
/// count comes back to 0.
async fn sqlite_release_check(
    conn: &mut sea_orm::sqlx::SqliteConnection,
    in_memory: bool,
) -> Result<bool, sea_orm::sqlx::Error> {
    use sea_orm::sqlx::Connection;
    if !conn.is_in_transaction() {
        return Ok(true);
    }
    conn.ping().await?;
    if !conn.is_in_transaction() {
        return Ok(true);
    }
    metrics::counter!("db_sqlite_connections_discarded_total").increment(1);
    if in_memory {
        tracing::error!(
            "an in-memory SQLite connection came back with a transaction its driver could not \
             end; keeping it, since closing it would drop the database"
        );
        return Ok(true);
    }
    tracing::warn!(
        "a SQLite connection came back with a transaction its driver could not end \
         (after SQLITE_FULL or an I/O error); closing it, which rolls that back"
    );
    Ok(false)
}

/// How long one storage-full failure keeps `/readyz` at 503 when no write
/// commits in the meantime.
const STORAGE_FULL_WINDOW: Duration = Duration::from_secs(30);

fn storage_full_age(at: Option<Instant>, now: Instant) -> Option<Duration> {
    let age = now.saturating_duration_since(at?);
    (age < STORAGE_FULL_WINDOW).then_some(age)
}

/// The `application_name` of a new store's PostgreSQL connections:
/// `leadline/<id>`, so that several instances' sessions can be told apart
/// in `pg_stat_activity`, and a store's stoppable ones found.
fn own_name() -> String {
    format!("leadline/{}", uuid::Uuid::now_v7().simple())
}

/// Cancels, on the server, every statement still running in a transaction
/// named `name` (`application_name`, set for the transaction by
/// [`Store::stop_name`]'s users), from a connection of its own, outside the
/// pool (whose connections may all be taken).
///
/// A pool closes once each of its connections is back, and a connection
/// whose task was aborted mid-statement (the analytics refresher, at
/// shutdown) comes back only once the server has finished that statement:
/// sqlx pings it first, and the answer waits behind the statement's. The
/// refresh's transaction never commits either way (the task that would
/// have committed it is gone), so cancelling it loses nothing, and a stop
/// no longer waits for a refresh of every tenant's figures to run to its
/// end. Work that may still commit (a request past the grace period, a
/// background import) is not named so and is waited for, as before. Best
/// effort: a failure is logged, and the pool then closes as it would have.
async fn cancel_stoppable(options: &PgConnectOptions, name: &str) {
    use sea_orm::sqlx::{Connection as _, PgConnection};
    let attempt = async {
        let mut conn = PgConnection::connect_with(options).await?;
        let cancelled: i64 = sea_orm::sqlx::query_scalar(
            "SELECT count(*) FILTER (WHERE pg_cancel_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = $1 AND state = 'active' AND pid <> pg_backend_pid()",
        )
        .bind(name)
        .fetch_one(&mut conn)
        .await?;
        conn.close().await?;
        Ok::<_, sea_orm::sqlx::Error>(cancelled)
    };
    match tokio::time::timeout(Duration::from_secs(5), attempt).await {
        Ok(Ok(0)) => {}
        Ok(Ok(cancelled)) => tracing::info!(
            cancelled,
            "closing the pool: cancelled the statements of stopped work"
        ),
        Ok(Err(e)) => tracing::warn!(
            error = %e,
            "closing the pool: could not cancel the statements of stopped work; waiting for them"
        ),
        Err(_) => tracing::warn!(
            "closing the pool: no answer within 5 s to cancel the statements of stopped work; waiting for them"
        ),
    }
}

async fn close_pool(pool: &PoolHandle) {
    match pool {
        PoolHandle::Postgres(p) => p.close().await,
        PoolHandle::Sqlite(p) => p.close().await,
    }
}

async fn ping_on(db: &DatabaseConnection, timeout: Duration) -> Result<Duration, HealthError> {
    let start = Instant::now();
    match tokio::time::timeout(timeout, db.execute_unprepared("SELECT 1")).await {
        Ok(Ok(_)) => Ok(start.elapsed()),
        Ok(Err(e)) => Err(HealthError::Failed(e.to_string())),
        Err(_) => Err(HealthError::Timeout(timeout)),
    }
}

fn stats_of(inner: &Inner) -> PoolStats {
    {
        let (size, idle, max) = match &inner.pool {
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
}

/// The PostgreSQL connect options for `url`, with the TLS settings applied:
/// `database.ssl_mode` and `database.ssl_root_cert`, when set, win over the
/// URL's `sslmode` and `sslrootcert`. Every PostgreSQL pool is built from
/// these, the migration pool included.
///
/// sqlx checks no certificate under `require`, even with a CA file; libpq
/// then checks the chain, as if `verify-ca`. Here `require` with a CA (from
/// the settings, the URL or `PGSSLROOTCERT`) becomes `verify-ca`, because an
/// operator who names a CA expects it to be used.
///
/// # Errors
/// [`ConnectError::InvalidUrl`] when the URL does not parse;
/// [`ConnectError::Unreachable`] when `database.ssl_root_cert` cannot be read.
fn pg_connect_options(
    url: &str,
    settings: &StoreSettings,
) -> Result<PgConnectOptions, ConnectError> {
    use sea_orm::sqlx::postgres::PgSslMode;

    use crate::SslMode;

    let mut options = PgConnectOptions::from_str(url)
        .map_err(|e| ConnectError::InvalidUrl(e.to_string()))?
        .application_name("leadline");
    if let Some(mode) = settings.ssl_mode {
        options = options.ssl_mode(match mode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require => PgSslMode::Require,
            SslMode::VerifyCa => PgSslMode::VerifyCa,
            SslMode::VerifyFull => PgSslMode::VerifyFull,
        });
    }
    if let Some(ca) = &settings.ssl_root_cert {
        // Checked now: the handshake would report a missing file as a bare
        // "No such file or directory", naming neither file nor setting.
        if let Err(e) = std::fs::File::open(ca) {
            return Err(ConnectError::Unreachable(format!(
                "database.ssl_root_cert {}: {e}",
                ca.display()
            )));
        }
        options = options.ssl_root_cert(ca);
    }
    let has_ca = settings.ssl_root_cert.is_some()
        || url_names_ca(url)
        || std::env::var_os("PGSSLROOTCERT").is_some();
    if has_ca && matches!(options.get_ssl_mode(), PgSslMode::Require) {
        options = options.ssl_mode(PgSslMode::VerifyCa);
    }
    Ok(options)
}

/// Whether the URL's query string names a CA file (sqlx's spellings).
fn url_names_ca(url: &str) -> bool {
    url.split_once('?').is_some_and(|(_, query)| {
        query.split('&').any(|pair| {
            let key = pair.split_once('=').map_or(pair, |(key, _)| key);
            matches!(key, "sslrootcert" | "ssl-root-cert" | "ssl-ca")
        })
    })
}

/// A failed PostgreSQL connection as [`ConnectError::Unreachable`]. A TLS
/// failure (untrusted certificate, wrong host name, a server without TLS)
/// says so and names the settings to look at; like every connect error it
/// never carries the URL.
fn pg_connect_failure(err: sea_orm::sqlx::Error) -> ConnectError {
    use sea_orm::sqlx::Error;
    // sqlx reports a refused upgrade as `Tls`, but a failed handshake (bad
    // certificate, wrong name, alert from the server) as the `Io` error
    // rustls wraps its own error in.
    let tls_cause = match &err {
        Error::Tls(cause) => Some(cause.to_string()),
        Error::Io(io) => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .map(ToString::to_string),
        _ => None,
    };
    match tls_cause {
        Some(cause) => ConnectError::Unreachable(format!(
            "TLS with the database failed: {cause} (check database.ssl_mode and \
             database.ssl_root_cert)"
        )),
        None => ConnectError::Unreachable(err.to_string()),
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
    use leadline_domain::TenantId;

    use super::*;
    use crate::errors::Failure;

    /// The one integer `sql` answers on the SQLite store `settings` open.
    async fn sqlite_scalar(settings: &StoreSettings, sql: &str) -> i64 {
        let store = Store::connect(settings).await.expect("sqlite opens");
        let row = store
            .inner
            .db
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Sqlite,
                sql,
            ))
            .await
            .expect("answers")
            .expect("a row");
        let value = row.try_get_by_index::<i64>(0).expect("a number");
        store.close().await;
        value
    }

    /// `PRAGMA synchronous` of the store's SQLite connection: 2 is FULL, 1
    /// NORMAL.
    async fn synchronous_of(settings: &StoreSettings) -> i64 {
        sqlite_scalar(settings, "PRAGMA synchronous").await
    }

    /// By default a file's writes wait for the group commit's flush, with
    /// the writer itself at NORMAL (the flush is the group commit's, not the
    /// writer's); `normal` drops the flush; an in-memory database has no
    /// file to flush.
    #[tokio::test]
    async fn sqlite_commits_reach_the_disk_unless_told_otherwise() {
        let dir = tempfile::tempdir().expect("a directory");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("s.db").display());
        let full = StoreSettings::for_url(&url);
        let store = Store::connect(&full).await.expect("opens");
        assert!(store.wal_sync().is_some(), "group commit by default");
        store.close().await;
        assert_eq!(synchronous_of(&full).await, 1, "the writer at NORMAL");
        let normal = StoreSettings {
            sqlite_synchronous: crate::SqliteSynchronous::Normal,
            ..StoreSettings::for_url(&url)
        };
        let store = Store::connect(&normal).await.expect("opens");
        assert!(store.wal_sync().is_none(), "no flush when told normal");
        store.close().await;
        assert_eq!(synchronous_of(&normal).await, 1, "NORMAL when asked");
        let memory = Store::connect(&StoreSettings::for_url("sqlite::memory:"))
            .await
            .expect("opens");
        assert!(memory.wal_sync().is_none(), "nothing to flush in memory");
        memory.close().await;
    }

    /// Neither SQLite pool pings a connection before lending it: the ping
    /// would be a second trip to the connection's worker thread on every
    /// request, for a far end that cannot hang up.
    #[tokio::test]
    async fn sqlite_pools_lend_connections_without_a_ping() {
        let dir = tempfile::tempdir().expect("a directory");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("p.db").display());
        let store = Store::connect(&StoreSettings::for_url(&url))
            .await
            .expect("opens");
        let replica = store.inner.replica.as_ref().expect("a file has readers");
        for (name, pool) in [("writer", &store.inner.pool), ("readers", &replica.pool)] {
            let PoolHandle::Sqlite(p) = pool else {
                panic!("the {name} pool is SQLite's");
            };
            assert!(
                !p.options().get_test_before_acquire(),
                "the {name} pool pings before lending"
            );
        }
        store.close().await;
    }

    /// A flush that always fails, as a disk that returns EIO.
    struct BrokenDisk;

    impl crate::wal_sync::Flush for BrokenDisk {
        fn flush(&self) -> std::io::Result<()> {
            Err(std::io::Error::other("EIO"))
        }
    }

    async fn insert(store: &Store, n: i64) -> Result<(), Failure> {
        let nobody = TenantId::from_uuid(uuid::Uuid::nil());
        crate::tx::transaction!(store, "test.flush", nobody, Write, |txn| {
            txn.execute_unprepared(&format!("INSERT INTO t VALUES ({n})"))
                .await?;
            Ok(())
        })
    }

    /// A write whose flush fails is committed but not acknowledged, and no
    /// later write is either (a later flush could not prove it durable);
    /// the readiness probe says why.
    #[tokio::test]
    async fn a_write_the_disk_does_not_confirm_is_refused_and_so_is_every_later_one() {
        let dir = tempfile::tempdir().expect("a directory");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("f.db").display());
        let mut store = Store::connect(&StoreSettings::for_url(&url))
            .await
            .expect("opens");
        store
            .db()
            .execute_unprepared("CREATE TABLE t (n INTEGER)")
            .await
            .expect("a table");
        insert(&store, 1).await.expect("flushed on a good disk");
        Arc::get_mut(&mut store.inner)
            .expect("not shared yet")
            .wal_sync = Some(crate::wal_sync::WalSync::new(
            Arc::new(BrokenDisk),
            Duration::from_secs(5),
        ));
        assert!(matches!(
            insert(&store, 2).await,
            Err(Failure::Unavailable(_))
        ));
        assert!(matches!(
            insert(&store, 3).await,
            Err(Failure::Unavailable(_))
        ));
        assert!(store.write_flush_failed());
        let probe = leadline_ports::HealthCheck::ping(&store, Duration::from_secs(2)).await;
        assert!(
            matches!(&probe, Err(leadline_ports::HealthError::Failed(m)) if m.contains("restart")),
            "{probe:?}"
        );
        // In the file all the same: only the disk's word is missing.
        let rows = store
            .db()
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Sqlite,
                "SELECT count(*) FROM t",
            ))
            .await
            .expect("answers")
            .expect("a row")
            .try_get_by_index::<i64>(0)
            .expect("a count");
        assert_eq!(rows, 3);
        store.close().await;
    }

    /// The bundled SQLite is built with the query planner stability
    /// guarantee (`LIBSQLITE3_FLAGS` in `.cargo/config.toml`). Without it, its
    /// STAT4 build expires a cached statement whenever a value its plan might
    /// depend on is rebound, so every execution was parsed and planned again;
    /// a build that lost the flag fails here rather than only in the bench.
    #[tokio::test]
    async fn sqlite_plans_do_not_depend_on_bound_values() {
        let qpsg = sqlite_scalar(
            &StoreSettings::for_url("sqlite::memory:"),
            "SELECT sqlite_compileoption_used('ENABLE_QPSG')",
        )
        .await;
        assert_eq!(qpsg, 1, "SQLite was built without SQLITE_ENABLE_QPSG");
    }

    /// The rest of `LIBSQLITE3_FLAGS`: no memory statistics (a global mutex
    /// on every allocation otherwise), and memory maps past the built-in
    /// 2 GiB cap, so that the default map covers a large file whole.
    #[tokio::test]
    async fn sqlite_is_built_without_memory_statistics_and_with_large_maps() {
        let memory = StoreSettings::for_url("sqlite::memory:");
        for (option, value) in [("DEFAULT_MEMSTATUS", 0), ("MAX_MMAP_SIZE", 1 << 40)] {
            let built = sqlite_scalar(
                &memory,
                &format!(
                    "SELECT CAST(substr(compile_options, {}) AS INTEGER) \
                     FROM pragma_compile_options WHERE compile_options LIKE '{option}=%'",
                    option.len() + 2
                ),
            )
            .await;
            assert_eq!(built, value, "SQLITE_{option}");
        }
    }

    /// Every connection to a file maps `database.sqlite_mmap_bytes` of it
    /// (64 GiB unless set), the readers too; 0 maps nothing.
    #[tokio::test]
    async fn sqlite_connections_map_the_file_as_configured() {
        let dir = tempfile::tempdir().expect("a directory");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("m.db").display());
        for (mmap, expected) in [(None, 64_i64 << 30), (Some(0), 0), (Some(1 << 20), 1 << 20)] {
            let mut settings = StoreSettings::for_url(&url);
            if let Some(bytes) = mmap {
                settings.sqlite_mmap_bytes = bytes;
            }
            let store = Store::connect(&settings).await.expect("sqlite opens");
            let pragma =
                sea_orm::Statement::from_string(sea_orm::DbBackend::Sqlite, "PRAGMA mmap_size");
            let mut rows = Vec::new();
            for connection in [store.db(), store.reader(false).expect("a file has readers")] {
                rows.push(connection.query_one_raw(pragma.clone()).await);
            }
            let point_readers = store.point_readers().expect("a file has point readers");
            rows.push(point_readers.query_one(&pragma).await);
            for row in rows {
                let row = row.expect("answers").expect("a row");
                assert_eq!(row.try_get_by_index::<i64>(0).expect("a size"), expected);
            }
            store.close().await;
        }
    }

    #[tokio::test]
    async fn sqlite_readers_read_and_never_write() {
        let dir = tempfile::tempdir().expect("a directory");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("r.db").display());
        let store = Store::connect(&StoreSettings {
            sqlite_readers: Some(3),
            ..StoreSettings::for_url(&url)
        })
        .await
        .expect("sqlite opens");
        store
            .inner
            .db
            .execute_unprepared("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (7)")
            .await
            .expect("the writer writes");
        let reader = store.reader(false).expect("a file has readers");
        let row = reader
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Sqlite,
                "SELECT x FROM t",
            ))
            .await
            .expect("the reader reads")
            .expect("a row");
        assert_eq!(row.try_get_by_index::<i64>(0).expect("a number"), 7);
        let refused = reader.execute_unprepared("INSERT INTO t VALUES (8)").await;
        assert!(
            refused.is_err_and(|e| e.to_string().contains("readonly")),
            "a reader refuses writes"
        );
        assert_eq!(store.read_pool_stats().map(|s| s.max), Some(3));

        let memory = Store::connect(&StoreSettings::for_url("sqlite::memory:"))
            .await
            .expect("sqlite opens");
        assert!(
            memory.reader(false).is_none(),
            "memory has its one connection"
        );
        let none = Store::connect(&StoreSettings {
            sqlite_readers: Some(0),
            ..StoreSettings::for_url(&url)
        })
        .await
        .expect("sqlite opens");
        assert!(!none.has_read_pool(), "0 readers means none");
    }

    #[test]
    fn a_storage_full_report_lasts_its_window() {
        let now = Instant::now();
        assert_eq!(storage_full_age(None, now), None);
        assert_eq!(storage_full_age(Some(now), now), Some(Duration::ZERO));
        let recent = now.checked_sub(Duration::from_secs(5));
        assert_eq!(
            storage_full_age(recent, now),
            recent.map(|_| Duration::from_secs(5))
        );
        let old = now.checked_sub(STORAGE_FULL_WINDOW);
        assert_eq!(storage_full_age(old, now), None);
    }

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

    fn ssl_mode_of(url: &str, settings: &StoreSettings) -> sea_orm::sqlx::postgres::PgSslMode {
        pg_connect_options(url, settings)
            .expect("valid options")
            .get_ssl_mode()
    }

    #[test]
    fn ssl_settings_win_over_the_url() {
        use sea_orm::sqlx::postgres::PgSslMode;
        let url = "postgres://u@h/db?sslmode=disable";
        assert!(matches!(
            ssl_mode_of(url, &StoreSettings::default()),
            PgSslMode::Disable
        ));
        let settings = StoreSettings {
            ssl_mode: Some(crate::SslMode::VerifyFull),
            ..StoreSettings::default()
        };
        assert!(matches!(ssl_mode_of(url, &settings), PgSslMode::VerifyFull));
    }

    #[test]
    fn require_with_a_ca_checks_the_chain_like_libpq() {
        use sea_orm::sqlx::postgres::PgSslMode;
        if std::env::var_os("PGSSLROOTCERT").is_some() {
            return; // the environment names a CA for every URL
        }
        let plain = "postgres://u@h/db?sslmode=require";
        assert!(matches!(
            ssl_mode_of(plain, &StoreSettings::default()),
            PgSslMode::Require
        ));
        let with_ca = "postgres://u@h/db?sslmode=require&sslrootcert=/etc/ca.pem";
        assert!(matches!(
            ssl_mode_of(with_ca, &StoreSettings::default()),
            PgSslMode::VerifyCa
        ));
    }

    #[test]
    fn an_unreadable_ca_file_names_the_setting() {
        let settings = StoreSettings {
            ssl_mode: Some(crate::SslMode::VerifyFull),
            ssl_root_cert: Some("/nonexistent/leadline-ca.pem".into()),
            ..StoreSettings::default()
        };
        let err =
            pg_connect_options("postgres://u:pw@h/db", &settings).expect_err("missing CA file");
        let msg = err.to_string();
        assert!(matches!(err, ConnectError::Unreachable(_)), "{msg}");
        assert!(msg.contains("database.ssl_root_cert"), "{msg}");
        assert!(!msg.contains("pw@"), "{msg}");
    }
}

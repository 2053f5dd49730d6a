//! SQLite's single-statement reads (a lead by id, a lead's context) on
//! reader connections the store holds itself, beside sqlx's read pool.
//!
//! Why not the pool: sqlx pings every connection it takes back
//! (`Floating::return_to_pool`, unconditionally in sqlx-core 0.9), and on
//! SQLite a ping is a command to the connection's worker thread and back.
//! A point read is itself one such command, so the pool doubled its
//! hand-offs between threads: in a profile of 64 connections reading leads
//! by id, 3.7 context switches per request, and scheduling and futex
//! wake-ups were a third of the service's CPU (docs/backends.md, "What
//! bounds SQLite"). Here a connection goes back to the pool as it is.
//!
//! What the ping was for, and why it is not needed here: it catches a
//! connection left inside a transaction or broken by a cancelled call.
//! These connections run single statements outside any transaction, and
//! `query_only`; a statement whose caller gave up is dropped by the worker
//! thread before it takes the next command, and its connection is pinged
//! (as sqlx would) before it is lent again ([`Lent`]). A connection whose
//! worker thread is gone is replaced ([`PointReaders::query_one`]).
//!
//! Everything else SQLite reads (several statements, or a transaction) still
//! goes through the read pool and SeaORM.

use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool::unmanaged::{Object, Pool, PoolConfig, PoolError};
use leadline_ports::PoolStats;
use metrics::histogram;
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sea_orm::sqlx::{self, ConnectOptions as _, Connection as _};
use sea_orm::{ConnAcquireErr, DbErr, QueryResult, RuntimeErr, Statement};
use sea_query_sqlx::SqlxValues;

use crate::errors::Failure;
use crate::pool::Store;
use crate::tx::count_acquire_timeout;

/// The `pool` label of these connections' metrics (docs/operations.md).
const POOL: &str = "point_reads";
/// First and longest wait between attempts to reopen a reader connection.
const REOPEN_FIRST_DELAY: Duration = Duration::from_millis(100);
const REOPEN_MAX_DELAY: Duration = Duration::from_secs(5);

/// A connection lent to one read, until the read has its answer.
///
/// Dropped before that (the caller gave up), it is not handed back at once:
/// its worker thread may still be running the abandoned statement, and the
/// pool lends the last connection back first, so the next read would wait
/// behind it while others idle. A task pings it first, and since a worker
/// runs its commands in order, the ping answers once the worker is free.
struct Lent(Option<Object<SqliteConnection>>);

impl Drop for Lent {
    fn drop(&mut self) {
        let Some(mut connection) = self.0.take() else {
            return;
        };
        // Without a runtime (the process is ending) it goes back as it is.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = connection.ping().await;
            });
        }
    }
}

/// A fixed set of open `query_only` connections to one SQLite file.
pub(crate) struct PointReaders {
    pool: Pool<SqliteConnection>,
    /// How to open a replacement for a connection whose worker died.
    options: SqliteConnectOptions,
}

impl std::fmt::Debug for PointReaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PointReaders")
            .field("status", &self.pool.status())
            .finish_non_exhaustive()
    }
}

impl PointReaders {
    /// Opens `count` connections with `options` (which should make them
    /// `query_only`); a read waits at most `wait` for one to be free.
    ///
    /// # Errors
    /// A connection could not be opened.
    pub(crate) async fn open(
        options: SqliteConnectOptions,
        count: u32,
        wait: Duration,
    ) -> Result<Self, sqlx::Error> {
        let count = usize::try_from(count).unwrap_or(usize::MAX).max(1);
        let pool = Pool::from_config(&PoolConfig {
            max_size: count,
            timeout: Some(wait),
            runtime: Some(deadpool::Runtime::Tokio1),
        });
        for _ in 0..count {
            let connection = options.connect().await?;
            // The pool was made for `count`: there is room for each.
            if let Err((connection, _)) = pool.add(connection).await {
                let _ = connection.close().await;
            }
        }
        Ok(Self { pool, options })
    }

    /// Runs `statement` and returns its first row, if any.
    ///
    /// # Errors
    /// [`DbErr::ConnectionAcquire`] when no connection came free in time or
    /// the readers are closed; the statement's own error otherwise.
    pub(crate) async fn query_one(
        &self,
        statement: &Statement,
    ) -> Result<Option<QueryResult>, DbErr> {
        let started = Instant::now();
        let connection = self.pool.get().await.map_err(|error| {
            let error = DbErr::ConnectionAcquire(match error {
                PoolError::Timeout => ConnAcquireErr::Timeout,
                PoolError::Closed | PoolError::NoRuntimeSpecified => {
                    ConnAcquireErr::ConnectionClosed
                }
            });
            count_acquire_timeout(&error, POOL);
            error
        })?;
        histogram!("db_pool_acquire_seconds", "pool" => POOL)
            .record(started.elapsed().as_secs_f64());
        let values = statement
            .values
            .clone()
            .unwrap_or_else(|| sea_orm::Values(Vec::new()));
        let query = sqlx::query_with(
            sqlx::AssertSqlSafe(statement.sql.as_str()),
            SqlxValues(values),
        );
        let mut lent = Lent(Some(connection));
        let fetched = match lent.0.as_mut() {
            Some(connection) => query.fetch_optional(&mut **connection).await,
            None => Err(sqlx::Error::WorkerCrashed),
        };
        let connection = lent.0.take();
        match fetched {
            Ok(row) => Ok(row.map(QueryResult::from)),
            Err(error) => {
                if let (sqlx::Error::WorkerCrashed, Some(connection)) = (&error, connection) {
                    self.replace(connection);
                }
                Err(DbErr::Query(RuntimeErr::SqlxError(Arc::new(error))))
            }
        }
    }

    /// Takes a connection whose worker thread is gone out of the pool and
    /// opens another in its place: in a task of its own, so that a caller
    /// giving up cannot leave the pool a connection short, and again until
    /// it opens or the readers close. Meanwhile reads share the others.
    fn replace(&self, broken: Object<SqliteConnection>) {
        drop(Object::take(broken));
        let (pool, options) = (self.pool.clone(), self.options.clone());
        tokio::spawn(async move {
            let mut delay = REOPEN_FIRST_DELAY;
            while !pool.is_closed() {
                match options.connect().await {
                    Ok(connection) => {
                        if let Err((connection, _)) = pool.add(connection).await {
                            let _ = connection.close().await;
                        }
                        return;
                    }
                    Err(error) => {
                        tracing::error!(
                            %error,
                            retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                            "could not reopen a SQLite reader connection"
                        );
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(REOPEN_MAX_DELAY);
                    }
                }
            }
        });
    }

    /// How many connections there are and how many are lent out now.
    pub(crate) fn stats(&self) -> PoolStats {
        let status = self.pool.status();
        let size = u32::try_from(status.size).unwrap_or(u32::MAX);
        let idle = u32::try_from(status.available)
            .unwrap_or(u32::MAX)
            .min(size);
        PoolStats {
            size,
            idle,
            in_use: size - idle,
            max: u32::try_from(status.max_size).unwrap_or(u32::MAX),
        }
    }

    /// Waits (at most the acquire timeout each) for lent connections to
    /// come back, then closes every connection; reads after this fail as
    /// closed.
    pub(crate) async fn close(&self) {
        let mut open = Vec::new();
        for _ in 0..self.pool.status().size {
            match self.pool.remove().await {
                Ok(connection) => open.push(connection),
                Err(_) => break,
            }
        }
        self.pool.close();
        for connection in open {
            let _ = connection.close().await;
        }
    }
}

impl Store {
    /// Runs one read-only `statement` on SQLite and returns its first row:
    /// on the point readers of a database file, else (in memory, or with
    /// `database.sqlite_readers = 0`) on the writer's connection. Transient
    /// faults rerun it, as `transaction!` reruns a block.
    ///
    /// Without `BEGIN` and `COMMIT`: on SQLite each statement is a round
    /// trip to the connection's worker thread, and they would cost as much
    /// as the read, while a single statement reads one snapshot by itself.
    /// Only for one statement: two without a transaction may read two
    /// snapshots.
    ///
    /// # Errors
    /// The statement's [`Failure`] once retries are spent or it is not
    /// transient.
    pub(crate) async fn sqlite_read_one(
        &self,
        op: &'static str,
        statement: Statement,
    ) -> Result<Option<QueryResult>, Failure> {
        use sea_orm::ConnectionTrait as _;
        let mut attempts = self.attempts(op);
        loop {
            let outcome = match self.point_readers() {
                Some(readers) => readers.query_one(&statement).await,
                // The point readers exist wherever SQLite has readers.
                None => self.db().query_one_raw(statement.clone()).await,
            };
            if let Some(result) = attempts.settle(outcome.map_err(Failure::from)).await {
                break result;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sea_orm::{ConnectionTrait as _, DbBackend, Statement};

    use crate::errors::Failure;
    use crate::{Store, StoreSettings};

    async fn file_store(dir: &tempfile::TempDir, readers: u32) -> Store {
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("p.db").display());
        Store::connect(&StoreSettings {
            sqlite_readers: Some(readers),
            // Reads queue behind deliberately slow ones here: on a loaded
            // machine that is not what a timeout should end.
            acquire_timeout_ms: 120_000,
            ..StoreSettings::for_url(&url)
        })
        .await
        .expect("sqlite opens")
    }

    fn select(sql: &str, value: i64) -> Statement {
        Statement::from_sql_and_values(DbBackend::Sqlite, sql, [value.into()])
    }

    async fn read(store: &Store, statement: Statement) -> Result<Option<i64>, Failure> {
        let row = store.sqlite_read_one("test.read", statement).await?;
        Ok(row.map(|row| row.try_get_by_index::<i64>(0).expect("a number")))
    }

    #[tokio::test]
    async fn point_reads_see_each_returned_write_and_refuse_to_write() {
        let dir = tempfile::tempdir().expect("a directory");
        let store = file_store(&dir, 2).await;
        assert!(store.point_readers().is_some(), "a file has point readers");
        store
            .db()
            .execute_unprepared("CREATE TABLE t (k INTEGER PRIMARY KEY, v INTEGER)")
            .await
            .expect("the writer writes");
        let by_key = "SELECT v FROM t WHERE k = ?1";
        assert_eq!(read(&store, select(by_key, 1)).await.expect("reads"), None);
        for v in [7, 8, 9] {
            store
                .db()
                .execute_unprepared(&format!("INSERT OR REPLACE INTO t VALUES (1, {v})"))
                .await
                .expect("the writer writes");
            // Each reader sees the write that just returned: the pool lends
            // the last connection back first, so the second read, with
            // that one held, runs on the other.
            assert_eq!(
                read(&store, select(by_key, 1)).await.expect("reads"),
                Some(v)
            );
            let readers = store.point_readers().expect("a file has point readers");
            let held = readers.pool.get().await.expect("a free reader");
            assert_eq!(
                read(&store, select(by_key, 1)).await.expect("reads"),
                Some(v)
            );
            drop(held);
        }
        let refused = read(
            &store,
            select("INSERT INTO t VALUES (?1, 0) RETURNING k", 2),
        )
        .await;
        assert!(
            matches!(&refused, Err(Failure::Other(e)) if e.to_string().contains("readonly")),
            "a point reader refuses writes: {refused:?}"
        );
        store.close().await;
        let closed = read(&store, select(by_key, 1)).await;
        assert!(
            matches!(closed, Err(Failure::Unavailable(_))),
            "closed readers answer unavailable: {closed:?}"
        );
    }

    #[tokio::test]
    async fn a_read_given_up_midway_leaves_its_connection_answering_the_next() {
        let dir = tempfile::tempdir().expect("a directory");
        // One reader, so that every read after a cancelled one runs on the
        // connection whose worker may still be running the cancelled one.
        let store = file_store(&dir, 1).await;
        // Answers its argument after counting for a while, so that a caller
        // can give up while the worker is still at it.
        let slow = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c \
                    WHERE x < 100000) SELECT ?1 + (SELECT count(*) FROM c) - 100000";
        for value in 1..=20 {
            let given_up =
                tokio::time::timeout(Duration::ZERO, read(&store, select(slow, -value))).await;
            assert!(given_up.is_err(), "the caller gives up before the answer");
            assert_eq!(
                read(&store, select(slow, value)).await.expect("reads"),
                Some(value),
                "the next read gets its own answer"
            );
        }
        store.close().await;
    }

    #[tokio::test]
    async fn a_connection_given_up_midway_is_lent_again_once_its_worker_is_free() {
        let dir = tempfile::tempdir().expect("a directory");
        let store = file_store(&dir, 2).await;
        let readers = store.point_readers().expect("a file has point readers");
        // Long enough that the check below comes while it runs.
        let slow = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c \
                    WHERE x < 3000000) SELECT ?1 + (SELECT count(*) FROM c) - 3000000";
        let given_up = tokio::time::timeout(Duration::ZERO, read(&store, select(slow, 1))).await;
        assert!(given_up.is_err(), "the caller gives up before the answer");
        let stats = readers.stats();
        assert_eq!(
            (stats.idle, stats.in_use),
            (1, 1),
            "the busy connection is not lent to the next read"
        );
        assert_eq!(
            read(&store, select("SELECT ?1", 2)).await.expect("reads"),
            Some(2),
            "the next read runs on the free one"
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while readers.stats().idle < 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the given-up connection comes back: {:?}",
                readers.stats()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        store.close().await;
    }

    #[tokio::test]
    async fn without_readers_point_reads_use_the_one_connection() {
        let dir = tempfile::tempdir().expect("a directory");
        let store = file_store(&dir, 0).await;
        assert!(store.point_readers().is_none(), "0 readers means none");
        assert_eq!(
            read(&store, select("SELECT ?1", 5)).await.expect("reads"),
            Some(5)
        );
        let memory = Store::connect(&StoreSettings::for_url("sqlite::memory:"))
            .await
            .expect("sqlite opens");
        assert!(
            memory.point_readers().is_none(),
            "memory has its one connection"
        );
        assert_eq!(
            read(&memory, select("SELECT ?1", 6)).await.expect("reads"),
            Some(6)
        );
    }
}

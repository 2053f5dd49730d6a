//! The transaction runner every repository call goes through.
//!
//! One function owns what each call used to repeat: take a connection, begin,
//! set the tenant context, run the body, commit. Because it is one place, it
//! is also where transient faults are retried, where a COMMIT whose outcome
//! was lost with the connection is resolved, and where each operation's
//! latency, retries and slow runs are recorded.
//!
//! Retry rules (docs/operations.md, "Transient faults"):
//! - SQLSTATE 40001 (serialization failure), 40P01 (deadlock) and a broken
//!   connection before COMMIT: the server rolled the transaction back, so the
//!   whole body runs again after a capped, jittered exponential backoff.
//! - A broken connection *during* COMMIT: the transaction may or may not have
//!   committed. It is never blindly rerun. A write transaction knows its
//!   transaction id (fetched in the same statement that sets the tenant), so
//!   a fresh connection asks `pg_xact_status`: committed → success,
//!   aborted → rerun, unknown → [`Failure::Unavailable`] (HTTP 503 with
//!   Retry-After; the client's `Idempotency-Key` makes its retry safe).
//! - A read-only transaction whose COMMIT broke has nothing to commit: its
//!   rows were read in full, so its result stands.
//! - An exhausted pool is not retried: it fails fast as unavailable.
//! - A full storage (SQLite `SQLITE_FULL`, PostgreSQL 53100) is not retried
//!   either: nothing was written, and space comes back only when someone
//!   frees it. It is reported as unavailable and noted for `/readyz` until
//!   a write commits again.
//! - After a failed statement or COMMIT the transaction is dropped, which
//!   queues its ROLLBACK on the connection. On SQLite that is not always
//!   enough: SQLite may already have rolled the transaction back itself (a
//!   COMMIT that failed with `SQLITE_FULL`), and the driver then keeps
//!   counting it open. The SQLite pool closes such a connection when it
//!   comes back (`sqlite_release_check` in `pool.rs`, which says why there
//!   and not here), so no later write lands in a leftover transaction. It
//!   sits at the pool because the runner only ever holds the transaction,
//!   which a failed COMMIT consumes, and because it then also covers every
//!   other user of the pool (migrations, health probes).
//!
//! The hottest operations on PostgreSQL (a lead by id, a lead's context, an
//! event's append) skip the transaction block: [`Store::scoped_statement`]
//! sends one statement that sets the tenant itself (see [`scoped_sql!`]) and
//! runs as its own implicit transaction. One round trip instead of four
//! (BEGIN, set_config, the statement, COMMIT). Such a statement must be safe
//! to send twice, because a broken connection reruns it whatever the server
//! did with the first copy: a read is, and the append inserts with
//! `ON CONFLICT DO NOTHING` on an id chosen before the first attempt.

use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use leadline_domain::TenantId;
use leadline_ports::Unavailable;
use metrics::{counter, histogram};
use sea_orm::{
    ConnAcquireErr, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    Statement, TransactionTrait,
};

use crate::{
    Backend, Store,
    errors::{Failure, Transient},
};

/// What a transaction does, which decides where it runs and how a broken
/// COMMIT is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Reads that must see this instance's own writes (a lead by id right
    /// after its creation, the context that is about to be cached): the
    /// primary, or SQLite's readers, which see every commit.
    Read,
    /// List, search and analytics reads that tolerate replica lag: the read
    /// pool when one is configured, else the primary.
    ReplicaRead,
    /// Analytics reads: the analytics pool (PostgreSQL), else as
    /// [`Access::ReplicaRead`].
    Analytics,
    /// Refreshing analytics: the analytics pool when it reaches the
    /// primary, else the primary's pool. Idempotent, so a lost COMMIT needs
    /// no resolving.
    Refresh,
    /// Writes: primary, with the transaction id fetched up front so a lost
    /// COMMIT can be resolved.
    Write,
}

/// How transient faults are retried. Built from [`crate::StoreSettings`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPolicy {
    /// Reruns after the first attempt; 0 disables retrying.
    pub(crate) max_retries: usize,
    /// First backoff delay, doubled per retry, with jitter.
    pub(crate) min_delay: Duration,
    /// Ceiling of one backoff delay.
    pub(crate) max_delay: Duration,
    /// Operations slower than this (retries included) are logged.
    pub(crate) slow_threshold: Duration,
    /// How long SQLite lock contention (`Transient::Busy`) is waited out,
    /// retries included, before the operation fails as unavailable:
    /// `database.acquire_timeout_ms`, the bound on any wait for the writer.
    pub(crate) busy_deadline: Duration,
}

impl RetryPolicy {
    fn backoff(self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_retries)
            .with_jitter()
    }
}

/// Prefixes a statement with the common table expression that sets the
/// tenant for the statement's own transaction and names it
/// `scope.tenant_id` (`$1`, a uuid) for [`Store::scoped_statement`].
///
/// The statement must read `scope` before it touches a tenant table, so that
/// `set_config` runs first: PostgreSQL evaluates the row-level-security
/// policy (and any `current_setting`) when it scans the table, and the
/// executor only scans the inner side of a join after the outer side gave a
/// row. So: `FROM scope CROSS JOIN LATERAL (… WHERE t.tenant_id =
/// scope.tenant_id … OFFSET 0)` (`OFFSET 0` keeps the planner from pulling
/// the subquery up and reordering the join), correlated scalar subqueries in
/// `SELECT … FROM scope`, or `INSERT … SELECT … FROM scope`. Order is what
/// makes the answer right, never what keeps tenants apart: a table scanned
/// too early sees no tenant at all, and the policy then lets no row through.
/// `is_local` (the third argument) ends the setting with the statement, so
/// the pooled connection carries no tenant into its next use.
///
/// The planner, unlike the executor, runs before `set_config`: where it
/// estimates the policy's condition it sees no tenant. So each statement also
/// states the tenant (and its lead) explicitly, which is what the indexes
/// serve and what the plans rest on (the benchmark's growth curve, flat from
/// 10k to 1M leads, is where a plan that scanned a whole tenant would show).
/// It states it twice, `t.tenant_id = $1::uuid AND t.tenant_id =
/// scope.tenant_id`: the comparison with `scope` keeps the subquery
/// correlated, so it runs after `set_config`; the one with the parameter is
/// a constant to plan and prune by, which a CTE's column is not (Citus
/// routes a statement to one shard only on a distribution-column filter by
/// value; tests/integration/distributable.rs checks every statement has one).
macro_rules! scoped_sql {
    ($($body:expr),+ $(,)?) => {
        $crate::tx::ScopedSql(concat!(
            "WITH scope AS MATERIALIZED (SELECT set_config('app.tenant_id', $1::uuid::text, true)::uuid AS tenant_id) ",
            $($body),+
        ))
    };
}
pub(crate) use scoped_sql;

/// A statement built by [`scoped_sql!`], the only thing
/// [`Store::scoped_statement`] runs. Write one only for a statement that is
/// safe to send twice: a read, or a write keyed on an id chosen before the
/// first attempt and inserted `ON CONFLICT DO NOTHING`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScopedSql(pub(crate) &'static str);

impl ScopedSql {
    /// The statement's text.
    pub(crate) const fn as_str(self) -> &'static str {
        self.0
    }
}

/// How often, and how far apart, a lost COMMIT's outcome is asked for.
const RESOLVE_ATTEMPTS: u32 = 5;
const RESOLVE_PAUSE: Duration = Duration::from_millis(100);

/// Runs a block in one tenant-scoped transaction named `op` (the `operation`
/// label of the metrics and the slow-operation log), retrying transient
/// faults as the module documentation describes:
///
/// ```text
/// let model: Result<Option<leads::Model>, Failure> =
///     transaction!(self, "leads.get", tenant, Read, |txn| {
///         Ok(by_key(tenant, id).one(txn).await?)
///     });
/// ```
///
/// The block evaluates to `Result<T, Failure>` and may `return` early; an
/// `Ok` is committed, an `Err` rolled back. It may run more than once, so it
/// must not have effects outside the transaction. A business outcome it
/// returns as `Ok` (a "not found" or "conflict" it found by reading) is
/// committed like any other: blocks decide such outcomes before they write.
///
/// A macro rather than a function taking an async closure: the block borrows
/// the caller's arguments and the transaction, and a higher-ranked closure
/// over both cannot be proven `Send` on stable Rust.
///
/// A write of many rows names how many (`rows = n` before the block): its
/// slow-operation threshold grows with them ([`Attempts::for_rows`]).
macro_rules! transaction {
    ($store:expr, $op:literal, $tenant:expr, $access:ident, |$txn:ident| $body:block) => {
        $crate::tx::transaction!($store, $op, $tenant, $access, rows = 1, |$txn| $body)
    };
    ($store:expr, $op:literal, $tenant:expr, $access:ident, rows = $rows:expr, |$txn:ident| $body:block) => {{
        let store: &$crate::Store = $store;
        let tenant: leadline_domain::TenantId = $tenant;
        let access = $crate::tx::Access::$access;
        let mut attempts = store.attempts($op).for_rows($rows);
        loop {
            let (outcome, recorded): (Result<_, $crate::errors::Failure>, bool) =
                $crate::audit::within(
                    store,
                    $crate::changes::tracking(async {
                        let (txn, xid) = store.begin_on(tenant, access).await?;
                        let value: Result<_, $crate::errors::Failure> = async {
                            let $txn = &txn;
                            $body
                        }
                        .await;
                        // On an error the transaction is dropped, which rolls it
                        // back (and, on SQLite, the pool checks that it did:
                        // module docs).
                        let value = value?;
                        store.finish(txn, xid.as_deref(), access, $op).await?;
                        Ok(value)
                    }),
                )
                .await;
            // Readers of the tenant's changes hear of a commit that grew
            // its log, and of no other.
            if recorded && outcome.is_ok() {
                store.ping_changes(tenant);
            }
            if let Some(result) = attempts.settle(outcome).await {
                break result;
            }
        }
    }};
}
pub(crate) use transaction;

/// One operation's attempts: the backoff still available, and the clock for
/// its latency metric and slow-operation log.
pub(crate) struct Attempts<'s> {
    store: &'s Store,
    op: &'static str,
    /// tokio's clock, so that tests can pause it.
    started: tokio::time::Instant,
    policy: RetryPolicy,
    delays: backon::ExponentialBackoff,
}

/// Rows a write may hold within `database.slow_query_ms` before it counts
/// as slow: a 2,000-row import batch is expected to take longer than one
/// lead's update, and warning about every batch would bury the warnings
/// that matter.
const ROWS_PER_SLOW_THRESHOLD: usize = 100;

impl Attempts<'_> {
    /// Scales the slow-operation threshold to a write of `rows` rows: one
    /// threshold per [`ROWS_PER_SLOW_THRESHOLD`] rows, at least one.
    #[must_use]
    pub(crate) fn for_rows(mut self, rows: usize) -> Self {
        let units = u32::try_from(rows.div_ceil(ROWS_PER_SLOW_THRESHOLD)).unwrap_or(u32::MAX);
        self.policy.slow_threshold = self.policy.slow_threshold.saturating_mul(units.max(1));
        self
    }
    /// Decides what follows an attempt: `Some(result)` to finish, `None`
    /// (after the backoff delay) to run the transaction again.
    pub(crate) async fn settle<T>(
        &mut self,
        outcome: Result<T, Failure>,
    ) -> Option<Result<T, Failure>> {
        if let Err(Failure::Transient(cause, message)) = &outcome
            && let Some(delay) = self.delays.next().or_else(|| self.busy_delay(*cause))
        {
            counter!("db_retries_total", "operation" => self.op, "cause" => cause.label())
                .increment(1);
            tracing::warn!(
                operation = self.op,
                cause = cause.label(),
                retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                error = %message,
                "transient database fault; rerunning the transaction"
            );
            tokio::time::sleep(delay).await;
            return None;
        }
        if let Err(Failure::StorageFull(message)) = &outcome {
            counter!("db_storage_full_total", "operation" => self.op).increment(1);
            tracing::error!(
                operation = self.op,
                error = %message,
                "the database's storage is full; the write was refused"
            );
            self.store.note_storage_full();
        }
        let elapsed = self.started.elapsed();
        histogram!("db_query_duration_seconds", "operation" => self.op)
            .record(elapsed.as_secs_f64());
        if elapsed >= self.policy.slow_threshold {
            // The operation's name and duration only: parameter values may
            // be personal data.
            tracing::warn!(
                operation = self.op,
                duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                "slow database operation"
            );
        }
        Some(outcome)
    }

    /// The next delay for SQLite lock contention once the counted retries
    /// are spent: another process on the same file holds its lock, which is
    /// a queue rather than a fault. It is waited out, in steps of at most
    /// `retry_max_delay_ms`, until `busy_deadline` after the first attempt,
    /// as a request waits for a free connection; then 503. A count alone
    /// gave up after about 150 ms, while a loaded machine's other process
    /// held the lock for longer (`retries::two_processes_on_one_sqlite_file_never_fail_a_write`
    /// failed 3 times in 12 runs under load). `retry_max = 0` still means no
    /// rerun at all.
    fn busy_delay(&self, cause: Transient) -> Option<Duration> {
        if cause != Transient::Busy || self.policy.max_retries == 0 {
            return None;
        }
        let left = self
            .policy
            .busy_deadline
            .checked_sub(self.started.elapsed())?;
        (!left.is_zero()).then(|| left.min(self.policy.max_delay))
    }
}

impl Store {
    /// Starts counting the attempts of operation `op`.
    pub(crate) fn attempts(&self, op: &'static str) -> Attempts<'_> {
        let policy = self.retry_policy();
        Attempts {
            store: self,
            op,
            started: tokio::time::Instant::now(),
            policy,
            delays: policy.backoff().build(),
        }
    }

    /// Runs one [`scoped_sql!`] statement for `tenant` (bound as `$1`, before
    /// `values`) on the primary, as its own implicit transaction, and returns
    /// its rows. PostgreSQL only: on SQLite, which has no row-level security
    /// to scope, callers use [`transaction!`].
    ///
    /// Transient faults rerun the statement like [`transaction!`] reruns a
    /// block, and a connection that broke while the statement ran is a
    /// transient fault too, even though the server may have committed it:
    /// the statement must be safe to send twice (module documentation).
    ///
    /// # Errors
    /// The statement's [`Failure`] once retries are spent or it is not
    /// transient.
    pub(crate) async fn scoped_statement(
        &self,
        op: &'static str,
        tenant: TenantId,
        sql: ScopedSql,
        values: impl IntoIterator<Item = sea_orm::Value>,
    ) -> Result<Vec<sea_orm::QueryResult>, Failure> {
        let statement = Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql.as_str(),
            std::iter::once(tenant.as_uuid().into()).chain(values),
        );
        let mut attempts = self.attempts(op);
        loop {
            let outcome = if self.transaction_pooling() {
                // Behind a transaction pooler the statement's Parse and its
                // Bind must reach one server connection: only a transaction
                // keeps it. Rerunning a statement whose COMMIT was lost is
                // safe by this function's contract.
                self.pooled_statement(statement.clone()).await
            } else {
                self.db()
                    .query_all_raw(statement.clone())
                    .await
                    .map_err(|err| {
                        count_acquire_timeout(&err, "primary");
                        Failure::from(err)
                    })
            };
            if let Some(result) = attempts.settle(outcome).await {
                break result;
            }
        }
    }

    /// Runs one statement in a transaction of its own on the primary, for
    /// the statements that otherwise run in autocommit, behind a
    /// transaction pooler.
    async fn pooled_statement(
        &self,
        statement: Statement,
    ) -> Result<Vec<sea_orm::QueryResult>, Failure> {
        let txn = timed_begin(self.db(), "primary").await?;
        txn.execute_unprepared(DEALLOCATE_ALL).await?;
        let rows = txn.query_all_raw(statement).await?;
        txn.commit().await?;
        Ok(rows)
    }

    /// Takes a connection (from the read pool for [`Access::ReplicaRead`],
    /// and for [`Access::Read`] when the read pool is SQLite's readers),
    /// begins, and sets the tenant for this transaction only
    /// (`set_config(…, true)`, the function form of `SET LOCAL`), which the
    /// row-level-security policies read. Never a session-level `SET`: a
    /// pooled connection must not carry one tenant's context into another
    /// tenant's request. A write also fetches its transaction id in the same
    /// round trip, to resolve a COMMIT that loses its connection.
    pub(crate) async fn begin_on(
        &self,
        tenant: TenantId,
        access: Access,
    ) -> Result<(DatabaseTransaction, Option<String>), Failure> {
        let replica = match access {
            Access::Analytics => self.analytics_db().or_else(|| self.reader(true)),
            Access::Refresh => self.analytics_primary_db(),
            Access::ReplicaRead => self.reader(true),
            Access::Read => self.reader(false),
            Access::Write => None,
        };
        let txn = match replica {
            Some(db) => match timed_begin(db, "replica").await {
                Ok(txn) => txn,
                Err(err) => {
                    // A replica that cannot give a connection degrades reads
                    // to the primary for a while instead of failing them.
                    tracing::warn!(
                        error = ?err,
                        pause_secs = REPLICA_PAUSE.as_secs(),
                        "read pool unavailable; reading from the primary meanwhile"
                    );
                    if !matches!(access, Access::Analytics | Access::Refresh) {
                        self.mark_replica_down(REPLICA_PAUSE);
                    }
                    timed_begin(self.db(), "primary").await?
                }
            },
            None => timed_begin(self.db(), "primary").await?,
        };
        if self.backend() != Backend::Postgres {
            return Ok((txn, None));
        }
        if self.transaction_pooling() {
            // The pooler lent this transaction a server connection that
            // other clients used before; their unnamed-cache statements
            // (`sqlx_s_<n>`, numbered per client connection) would collide
            // with ours. One simple-protocol round trip clears them.
            txn.execute_unprepared(DEALLOCATE_ALL).await?;
        }
        let tenant = tenant.to_string();
        if access == Access::Write {
            let row = txn
                .query_one_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT set_config('app.tenant_id', $1, true), pg_current_xact_id()::text",
                    [tenant.into()],
                ))
                .await?;
            let xid = row.map(|r| r.try_get_by_index::<String>(1)).transpose()?;
            Ok((txn, xid))
        } else if let (Access::Refresh, Some(stop_name)) = (access, self.stop_name()) {
            // A refresh runs for seconds and is aborted at shutdown: named
            // for its transaction so that closing the store cancels it on
            // the server instead of waiting for it (`pool.rs`).
            txn.execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT set_config('app.tenant_id', $1, true), \
                        set_config('application_name', $2, true)",
                [tenant.into(), stop_name.into()],
            ))
            .await?;
            Ok((txn, None))
        } else {
            txn.execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT set_config('app.tenant_id', $1, true)",
                [tenant.into()],
            ))
            .await?;
            Ok((txn, None))
        }
    }

    /// Commits, and decides what a COMMIT that broke with its connection did.
    ///
    /// Any other failed COMMIT wrote nothing: SQLite and PostgreSQL either
    /// rolled the transaction back themselves or leave it open for the
    /// ROLLBACK that dropping it queues (see the module docs for the SQLite
    /// connection that cannot tell which). A full storage is
    /// [`Failure::StorageFull`].
    pub(crate) async fn finish(
        &self,
        txn: DatabaseTransaction,
        xid: Option<&str>,
        access: Access,
        op: &'static str,
    ) -> Result<(), Failure> {
        let committed = match txn.commit().await {
            Ok(()) => Ok(()),
            Err(err) => match Failure::from(err) {
                Failure::Transient(Transient::Connection, message) => {
                    self.resolve_commit(op, access, xid, message).await
                }
                other => Err(other),
            },
        };
        if committed.is_ok() && access == Access::Write {
            self.note_write_committed();
            if let Some(sync) = self.wal_sync() {
                // Acknowledged once on the disk (group commit, wal_sync.rs).
                sync.durable().await.map_err(|e| unflushed(op, &e))?;
            }
        }
        committed
    }

    async fn resolve_commit(
        &self,
        op: &'static str,
        access: Access,
        xid: Option<&str>,
        message: String,
    ) -> Result<(), Failure> {
        if access != Access::Write {
            // Nothing to commit: the rows were read in full.
            counter!("db_commit_outcome_total", "outcome" => "read_only").increment(1);
            return Ok(());
        }
        let Some(xid) = xid else {
            // SQLite: the file either has the commit or not, but the driver
            // cannot tell us which. Say so rather than guess.
            counter!("db_commit_outcome_total", "outcome" => "unknown").increment(1);
            return Err(outcome_unknown(op, &message));
        };
        for _ in 0..RESOLVE_ATTEMPTS {
            let ask = Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_xact_status($1::xid8)::text",
                [xid.to_owned().into()],
            );
            let answer = if self.transaction_pooling() {
                self.pooled_statement(ask)
                    .await
                    .ok()
                    .and_then(|rows| rows.into_iter().next())
            } else {
                self.db().query_one_raw(ask).await.ok().flatten()
            };
            let status =
                answer.and_then(|row| row.try_get_by_index::<Option<String>>(0).ok().flatten());
            match status.as_deref() {
                Some("committed") => {
                    counter!("db_commit_outcome_total", "outcome" => "committed").increment(1);
                    tracing::warn!(
                        operation = op,
                        "COMMIT lost its connection but had committed"
                    );
                    return Ok(());
                }
                Some("aborted") => {
                    counter!("db_commit_outcome_total", "outcome" => "aborted").increment(1);
                    return Err(Failure::Transient(Transient::Connection, message));
                }
                // "in progress" (the server is still finishing it) or no
                // answer (the server is unreachable): ask again shortly.
                _ => tokio::time::sleep(RESOLVE_PAUSE).await,
            }
        }
        counter!("db_commit_outcome_total", "outcome" => "unknown").increment(1);
        Err(outcome_unknown(op, &message))
    }
}

/// Drops every prepared statement of the session: behind a transaction
/// pooler, those that other clients left on the server connection.
const DEALLOCATE_ALL: &str = "DEALLOCATE ALL";

/// How long replica reads go to the primary after the read pool failed.
const REPLICA_PAUSE: Duration = Duration::from_secs(5);

/// Begins on `db`, recording the wait for a connection (acquire + BEGIN) and
/// counting acquire timeouts, by pool.
async fn timed_begin(
    db: &DatabaseConnection,
    pool: &'static str,
) -> Result<DatabaseTransaction, Failure> {
    let started = Instant::now();
    match db.begin().await {
        Ok(txn) => {
            histogram!("db_pool_acquire_seconds", "pool" => pool)
                .record(started.elapsed().as_secs_f64());
            Ok(txn)
        }
        Err(err) => {
            count_acquire_timeout(&err, pool);
            Err(Failure::from(err))
        }
    }
}

pub(crate) fn count_acquire_timeout(err: &DbErr, pool: &'static str) {
    if matches!(err, DbErr::ConnectionAcquire(ConnAcquireErr::Timeout)) {
        counter!("db_pool_acquire_timeouts_total", "pool" => pool).increment(1);
    }
}

fn outcome_unknown(op: &str, message: &str) -> Failure {
    tracing::error!(
        operation = op,
        error = %message,
        "COMMIT lost its connection and its outcome could not be resolved"
    );
    Failure::Unavailable(Unavailable(
        "the database connection broke during COMMIT and the outcome is unknown; retry with the same Idempotency-Key".to_owned(),
    ))
}

/// A committed write that the disk has not confirmed: it is in the
/// database, but a power loss may take it back, so it is not acknowledged.
/// A retry under the same `Idempotency-Key` is safe either way: after a
/// failed flush every write fails until a restart, whose recovery keeps
/// the write or not, and the retry then finds it or makes it.
pub(crate) fn unflushed(op: &str, e: &crate::wal_sync::FlushFailed) -> Failure {
    tracing::error!(operation = op, error = %e, "a committed write was not confirmed on the disk");
    Failure::Unavailable(Unavailable(match e {
        crate::wal_sync::FlushFailed::Failed(_) => "the disk did not confirm the write, which may not survive a power loss; writes are refused until the service is restarted, then retry with the same Idempotency-Key".to_owned(),
        crate::wal_sync::FlushFailed::TimedOut(after) => format!(
            "the disk did not confirm the write within {} ms; retry with the same Idempotency-Key",
            after.as_millis()
        ),
    }))
}

#[cfg(test)]
mod tests {
    use sea_orm::ConnectionTrait;

    use super::*;
    use crate::StoreSettings;

    /// The one-statement runner's promise: the statement sees its tenant,
    /// and the pooled connection it ran on (the only one, here) carries no
    /// tenant into its next use. A session-level setting would leak it.
    #[tokio::test]
    #[allow(clippy::unwrap_used)]
    async fn a_scoped_statement_sees_its_tenant_and_leaves_none_behind() {
        let url = leadline_testsupport::postgres().admin_url("postgres");
        let store = Store::connect(&StoreSettings {
            max_connections: 1,
            ..StoreSettings::for_url(&url)
        })
        .await
        .unwrap();
        for _ in 0..2 {
            let tenant = TenantId::new();
            let rows = store
                .scoped_statement(
                    "test.scope",
                    tenant,
                    scoped_sql!(
                        "SELECT scope.tenant_id, current_setting('app.tenant_id') AS seen FROM scope"
                    ),
                    [],
                )
                .await
                .unwrap();
            let seen: String = rows[0].try_get("", "seen").unwrap();
            assert_eq!(seen, tenant.to_string());
            let after = store
                .db()
                .query_one_raw(Statement::from_string(
                    DbBackend::Postgres,
                    "SELECT current_setting('app.tenant_id', true) AS after",
                ))
                .await
                .unwrap()
                .unwrap();
            let after: Option<String> = after.try_get("", "after").unwrap();
            assert!(
                after.as_deref().unwrap_or_default().is_empty(),
                "the connection kept tenant {after:?}"
            );
        }
        store.close().await;
    }

    /// How many reruns `settle` grants a fault that never clears, and the
    /// (paused) time they took.
    async fn reruns(store: &Store, cause: Transient) -> (u32, Duration) {
        let started = tokio::time::Instant::now();
        let mut attempts = store.attempts("test.reruns");
        let mut reruns = 0;
        loop {
            let outcome: Result<(), Failure> = Err(Failure::Transient(
                cause,
                "held by another process".to_owned(),
            ));
            match attempts.settle(outcome).await {
                None => reruns += 1,
                Some(result) => {
                    assert!(result.is_err(), "a fault that never clears fails");
                    return (reruns, started.elapsed());
                }
            }
        }
    }

    #[tokio::test]
    async fn lock_contention_is_waited_out_to_the_deadline_other_faults_are_counted() {
        let settings = |retry_max| StoreSettings {
            retry_max,
            acquire_timeout_ms: 3_000,
            retry_max_delay_ms: 200,
            ..StoreSettings::for_url("sqlite::memory:")
        };
        let store = Store::connect(&settings(3)).await.expect("sqlite opens");
        let none = Store::connect(&settings(0)).await.expect("sqlite opens");
        // Opened first: the pool's own timers must not see a paused clock.
        tokio::time::pause();
        let (busy, waited) = reruns(&store, Transient::Busy).await;
        assert!(
            waited >= Duration::from_secs(3) && waited < Duration::from_millis(3_300),
            "lock contention is waited out until acquire_timeout: {waited:?}"
        );
        assert!(busy > 3, "more than the counted reruns: {busy}");
        let (connection, _) = reruns(&store, Transient::Connection).await;
        assert_eq!(connection, 3, "other faults get retry_max reruns");
        let (disabled, _) = reruns(&none, Transient::Busy).await;
        assert_eq!(disabled, 0, "retry_max = 0 reruns nothing");
        store.close().await;
        none.close().await;
    }

    #[tokio::test]
    async fn a_write_of_many_rows_is_slow_later() {
        let store = Store::connect(&StoreSettings {
            slow_query_ms: 250,
            ..StoreSettings::for_url("sqlite::memory:")
        })
        .await
        .expect("sqlite opens");
        let threshold = |rows| {
            store
                .attempts("test.slow")
                .for_rows(rows)
                .policy
                .slow_threshold
        };
        assert_eq!(threshold(0), Duration::from_millis(250));
        assert_eq!(threshold(1), Duration::from_millis(250));
        assert_eq!(threshold(100), Duration::from_millis(250));
        assert_eq!(threshold(101), Duration::from_millis(500));
        assert_eq!(threshold(2_000), Duration::from_secs(5));
        store.close().await;
    }
}

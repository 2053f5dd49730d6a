//! The change log on the store: [`record`] writes the changes a write made
//! in the write's own transaction; [`ChangeLog`] reads them back in log
//! order (migration 10 says why the order is gap-free), prunes, and wakes
//! readers.
//!
//! Wake-ups: every committed write pings the tenant in process; on
//! PostgreSQL a listener (one connection of its own, beside the pool, so it
//! never takes a connection requests need) also turns other instances'
//! `NOTIFY leadline_changes` into pings. Readers treat a ping as a hint to read the log, and read it on a
//! timer too, so a lost ping only delays.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leadline_domain::{Change, ChangePosition, ChangeType, Event, LoggedChange, TenantId};
use leadline_ports::{ChangeLog, ChangeLogError, ChangeSpan};
use sea_orm::{
    ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, QueryResult, QueryTrait as _,
    Statement,
};

use crate::{
    Backend, Store,
    entity::{changes, events},
    errors::{Failure, common},
    tx::transaction,
};

/// The PostgreSQL channel other instances' changes are announced on.
pub(crate) const CHANNEL: &str = "leadline_changes";

tokio::task_local! {
    /// Set by [`record`] inside a transaction attempt that [`tracking`]
    /// watches: whether its commit grew the log.
    static RECORDED: std::cell::Cell<bool>;
}

/// Runs one transaction attempt, saying whether it recorded changes: only
/// such a commit wakes the tenant's readers. (Waking on every write woke
/// the webhook relay with its own bookkeeping, which then woke it again.)
pub(crate) async fn tracking<T>(attempt: impl std::future::Future<Output = T>) -> (T, bool) {
    RECORDED
        .scope(std::cell::Cell::new(false), async {
            let out = attempt.await;
            (out, RECORDED.with(std::cell::Cell::get))
        })
        .await
}

/// Writes `list` in `txn`, in order, with their audit records.
pub(crate) async fn record(txn: &DatabaseTransaction, list: &[Change]) -> Result<(), Failure> {
    record_with_events(txn, &[], list).await
}

/// Appends `events` (or none) to their leads' timelines and writes `list`
/// (the events' changes among them), in order, with their audit records:
/// on PostgreSQL all in one statement, one round trip for any number of
/// rows.
pub(crate) async fn record_with_events(
    txn: &DatabaseTransaction,
    events: &[Event],
    list: &[Change],
) -> Result<(), Failure> {
    // Every change is an audited write too.
    let audited = crate::audit::of_changes(list);
    record_with_audit(txn, events, list, &audited).await
}

/// [`record_with_events`] with the audit records already made (by the
/// requests whose writes they are, for [`crate::appends`], which writes
/// several requests' events at once): `audited` is written as given, so it
/// is empty where auditing is off.
pub(crate) async fn record_with_audit(
    txn: &DatabaseTransaction,
    events: &[Event],
    list: &[Change],
    audited: &[leadline_domain::AuditRecord],
) -> Result<(), Failure> {
    mark_recorded(list);
    if txn.get_database_backend() == DbBackend::Postgres {
        return crate::bulk::events_and_changes(txn, events, list, audited).await;
    }
    let (event_rows, change_rows) = (crate::rows_per_insert(10), crate::rows_per_insert(6));
    if events.len() <= event_rows && list.len() <= change_rows && audited.len() <= 1 {
        // A write's few rows: one statement each, sent as one batch.
        let mut sql = String::new();
        let mut values = Vec::new();
        let statements = [
            (!events.is_empty()).then(|| {
                events::Entity::insert_many(events.iter().map(events::ActiveModel::from))
                    .build(DbBackend::Sqlite)
            }),
            (!list.is_empty()).then(|| {
                changes::Entity::insert_many(list.iter().map(changes::ActiveModel::from))
                    .build(DbBackend::Sqlite)
            }),
        ];
        for statement in statements.into_iter().flatten() {
            if !sql.is_empty() {
                sql.push_str(";\n");
            }
            sql.push_str(&statement.sql);
            values.extend(statement.values.map(|v| v.0).unwrap_or_default());
        }
        return crate::audit::sqlite_batch_with_record(txn, sql, values, audited.first()).await;
    }
    for chunk in events.chunks(event_rows) {
        events::Entity::insert_many(chunk.iter().map(events::ActiveModel::from))
            .exec_without_returning(txn)
            .await?;
    }
    for chunk in list.chunks(change_rows) {
        changes::Entity::insert_many(chunk.iter().map(changes::ActiveModel::from))
            .exec_without_returning(txn)
            .await?;
    }
    crate::audit::record(txn, audited).await
}

/// Tells the attempt [`tracking`] watches that it grew the log.
fn mark_recorded(list: &[Change]) {
    if !list.is_empty() {
        // Outside a tracked attempt there is nobody to tell.
        let _ = RECORDED.try_with(|recorded| recorded.set(true));
    }
}

fn position(tx: &str, seq: i64) -> Result<ChangePosition, Failure> {
    Ok(ChangePosition {
        tx: tx
            .parse()
            .map_err(|e| Failure::Other(anyhow::anyhow!("changes.tx {tx:?}: {e}")))?,
        seq: u64::try_from(seq)
            .map_err(|e| Failure::Other(anyhow::anyhow!("changes.seq {seq}: {e}")))?,
    })
}

fn logged(row: &QueryResult, tenant: TenantId) -> Result<LoggedChange, Failure> {
    let tx: String = row.try_get("", "tx_text")?;
    let seq: i64 = row.try_get("", "seq")?;
    let kind: String = row.try_get("", "type")?;
    let data: serde_json::Value = row.try_get("", "data")?;
    Ok(LoggedChange {
        position: position(&tx, seq)?,
        change: Change {
            tenant_id: tenant,
            kind: kind
                .parse::<ChangeType>()
                .map_err(|e| Failure::Other(crate::entity::corrupt("changes", "type", e)))?,
            entity_id: row.try_get("", "entity_id")?,
            at: row.try_get("", "at")?,
            data,
            before: None,
        },
    })
}

fn signed(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Store {
    /// Pings readers of `tenant`'s changes on this instance.
    pub(crate) fn ping_changes(&self, tenant: TenantId) {
        // No receiver is no reader: nothing to do.
        let _ = self.changes_sender().send(tenant);
    }

    /// The newest position retention removed for `tenant`, if any.
    async fn horizon(
        txn: &DatabaseTransaction,
        backend: Backend,
        tenant: TenantId,
    ) -> Result<Option<ChangePosition>, Failure> {
        let sql = match backend {
            Backend::Postgres => {
                "SELECT tx::text AS tx, seq FROM change_horizons WHERE tenant_id = $1"
            }
            Backend::Sqlite => {
                "SELECT CAST(tx AS TEXT) AS tx, seq FROM change_horizons WHERE tenant_id = ?"
            }
        };
        let row = txn
            .query_one_raw(Statement::from_sql_and_values(
                backend.db(),
                sql,
                [tenant.as_uuid().into()],
            ))
            .await?;
        row.map(|r| {
            let tx: String = r.try_get("", "tx")?;
            position(&tx, r.try_get("", "seq")?)
        })
        .transpose()
    }

    /// Starts the PostgreSQL listener that turns other instances' NOTIFYs
    /// into pings, once.
    fn ensure_listener(&self) {
        if self.backend() != Backend::Postgres {
            return;
        }
        let Some(options) = self.listen_options() else {
            return;
        };
        let mut slot = self
            .listener_slot()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.is_some() {
            return;
        }
        let sender = self.changes_sender().clone();
        // Its own one-connection pool, with the primary's options (TLS
        // included) or `database.listen_url`'s: a listener holds its
        // connection for good.
        let pool = sea_orm::sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with(options);
        *slot = Some(tokio::spawn(async move {
            use sea_orm::sqlx::postgres::PgListener;
            loop {
                let listener = async {
                    let mut l = PgListener::connect_with(&pool).await?;
                    l.listen(CHANNEL).await?;
                    Ok::<_, sea_orm::sqlx::Error>(l)
                }
                .await;
                let mut listener = match listener {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(error = %e, "change feed: cannot listen for other instances' changes; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                loop {
                    match listener.try_recv().await {
                        Ok(Some(n)) => {
                            if let Ok(tenant) = n.payload().parse::<TenantId>() {
                                let _ = sender.send(tenant);
                            }
                        }
                        // The connection was lost (and notifications with
                        // it): readers re-read the log on their timer.
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "change feed: the listener failed; reconnecting");
                            break;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }
}

#[async_trait]
impl ChangeLog for Store {
    async fn after(
        &self,
        tenant: TenantId,
        after: ChangePosition,
        limit: u32,
    ) -> Result<ChangeSpan, ChangeLogError> {
        let backend = self.backend();
        let limit = limit.clamp(1, 10_000);
        let result: Result<Result<ChangeSpan, ChangeLogError>, Failure> =
            transaction!(self, "changes.after", tenant, Read, |txn| {
                if let Some(horizon) = Store::horizon(txn, backend, tenant).await?
                    && after < horizon
                {
                    return Ok(Err(ChangeLogError::Expired { after, horizon }));
                }
                let statement = match backend {
                    // Only rows of transactions older than every one still
                    // running: those are final, and every later commit lands
                    // after them (migration 10).
                    // The text of `tx` is named apart: an ORDER BY `tx`
                    // would otherwise sort the text ("1000" < "958").
                    Backend::Postgres => Statement::from_sql_and_values(
                        DbBackend::Postgres,
                        "SELECT tx::text AS tx_text, seq, type, entity_id, at, data FROM changes \
                         WHERE tenant_id = $1 AND (tx, seq) > ($2::text::xid8, $3) \
                           AND tx < pg_snapshot_xmin(pg_current_snapshot()) \
                         ORDER BY changes.tx, changes.seq LIMIT $4",
                        [
                            tenant.as_uuid().into(),
                            after.tx.to_string().into(),
                            signed(after.seq).into(),
                            i64::from(limit).into(),
                        ],
                    ),
                    Backend::Sqlite => Statement::from_sql_and_values(
                        DbBackend::Sqlite,
                        "SELECT '0' AS tx_text, seq, type, entity_id, at, data FROM changes \
                         WHERE tenant_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                        [
                            tenant.as_uuid().into(),
                            signed(after.seq).into(),
                            i64::from(limit).into(),
                        ],
                    ),
                };
                let rows = txn.query_all_raw(statement).await?;
                let items = rows
                    .iter()
                    .map(|r| logged(r, tenant))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Ok(ChangeSpan {
                    last: items.last().map_or(after, |c| c.position),
                    has_more: items.len() == limit as usize,
                    items,
                }))
            });
        match result {
            // What the feed and webhooks deliver leaves as a promise: a
            // consumer's cursor must never pass a change a power loss could
            // take back (SQLite's group commit, `wal_sync.rs`).
            Ok(Ok(span)) if !span.items.is_empty() => match self.wal_sync() {
                Some(sync) => match sync.durable().await {
                    Ok(()) => Ok(span),
                    Err(e) => Err(common!(
                        crate::tx::unflushed("changes.after", &e),
                        ChangeLogError
                    )),
                },
                None => Ok(span),
            },
            Ok(span) => span,
            Err(f) => Err(common!(f, ChangeLogError)),
        }
    }

    async fn head(&self, tenant: TenantId) -> Result<ChangePosition, ChangeLogError> {
        let backend = self.backend();
        let result: Result<ChangePosition, Failure> =
            transaction!(self, "changes.head", tenant, Read, |txn| {
                let sql = match backend {
                    Backend::Postgres => {
                        "SELECT tx::text AS tx_text, seq FROM changes \
                         WHERE tenant_id = $1 AND tx < pg_snapshot_xmin(pg_current_snapshot()) \
                         ORDER BY changes.tx DESC, seq DESC LIMIT 1"
                    }
                    Backend::Sqlite => {
                        "SELECT '0' AS tx_text, seq FROM changes WHERE tenant_id = ? \
                         ORDER BY seq DESC LIMIT 1"
                    }
                };
                let last = txn
                    .query_one_raw(Statement::from_sql_and_values(
                        backend.db(),
                        sql,
                        [tenant.as_uuid().into()],
                    ))
                    .await?
                    .map(|r| {
                        let tx: String = r.try_get("", "tx_text")?;
                        position(&tx, r.try_get("", "seq")?)
                    })
                    .transpose()?;
                let horizon = Store::horizon(txn, backend, tenant).await?;
                Ok(last.max(horizon).unwrap_or_default())
            });
        result.map_err(|f| common!(f, ChangeLogError))
    }

    async fn prune(&self, older_than: DateTime<Utc>, max_rows: u32) -> Result<u64, ChangeLogError> {
        let backend = self.backend();
        let nobody = TenantId::from_uuid(uuid::Uuid::nil());
        let result: Result<u64, Failure> = transaction!(
            self,
            "changes.prune",
            nobody,
            Write,
            |txn| {
                if backend == Backend::Postgres {
                    let row = txn
                        .query_one_raw(Statement::from_sql_and_values(
                            DbBackend::Postgres,
                            "SELECT changes_prune($1, $2) AS n",
                            [
                                older_than.into(),
                                i32::try_from(max_rows).unwrap_or(i32::MAX).into(),
                            ],
                        ))
                        .await?;
                    let n: i64 = row.map(|r| r.try_get("", "n")).transpose()?.unwrap_or(0);
                    return Ok(u64::try_from(n).unwrap_or(0));
                }
                let gone = txn
                    .execute_raw(Statement::from_sql_and_values(
                        DbBackend::Sqlite,
                        "CREATE TEMP TABLE IF NOT EXISTS pruned_changes (tenant_id BLOB, seq INTEGER)",
                        [],
                    ))
                    .await
                    .map(|_| ());
                gone?;
                txn.execute_raw(Statement::from_string(
                    DbBackend::Sqlite,
                    "DELETE FROM pruned_changes",
                ))
                .await?;
                txn.execute_raw(Statement::from_sql_and_values(
                    DbBackend::Sqlite,
                    "INSERT INTO pruned_changes SELECT tenant_id, seq FROM changes \
                     WHERE at < ? ORDER BY at LIMIT ?",
                    [older_than.into(), i64::from(max_rows).into()],
                ))
                .await?;
                txn.execute_raw(Statement::from_string(
                    DbBackend::Sqlite,
                    "INSERT INTO change_horizons (tenant_id, tx, seq) \
                     SELECT tenant_id, 0, max(seq) FROM pruned_changes WHERE true GROUP BY tenant_id \
                     ON CONFLICT (tenant_id) DO UPDATE SET seq = max(seq, excluded.seq)",
                ))
                .await?;
                let deleted = txn
                    .execute_raw(Statement::from_string(
                        DbBackend::Sqlite,
                        "DELETE FROM changes WHERE seq IN (SELECT seq FROM pruned_changes)",
                    ))
                    .await?;
                Ok(deleted.rows_affected())
            }
        );
        result.map_err(|f| common!(f, ChangeLogError))
    }

    fn wakeups(&self) -> tokio::sync::broadcast::Receiver<TenantId> {
        self.ensure_listener();
        self.changes_sender().subscribe()
    }
}

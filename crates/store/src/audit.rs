//! The audit trail on the store (migration 21): [`record`] writes a write's
//! records in the write's own transaction, on whose behalf the calling task
//! says ([`leadline_ports::audit_context`]); [`AuditTrail`] pages them,
//! walks them in chain order and seals them.
//!
//! PostgreSQL writes rows unsealed, in one statement per write, and
//! `audit_seal_from` chains them later, so no write waits for another
//! tenant write's commit; it is given the heads it left last time
//! ([`SealHeads`], migration 30). SQLite's one writer seals as it writes: the chain's head
//! is one indexed read away.

use std::sync::Arc;

use async_trait::async_trait;
use leadline_domain::{
    Actor, AgentId, ApiKeyId, AuditEntry, AuditQuery, AuditRecord, Change, ChangePosition, Page,
    TenantId, UserId,
    audit::{GENESIS, Hash, hex, link},
};
use leadline_ports::{AuditError, AuditTrail, audit_context};
use sea_orm::{
    ConnectionTrait, DatabaseTransaction, DbBackend, QueryResult, Statement, Value as DbValue,
};
use serde::Serialize;

use crate::{
    Backend, Store,
    errors::{Failure, common},
    params::Params,
    tx::transaction,
};

tokio::task_local! {
    /// Set around a transaction attempt of a store with `database.audit`
    /// off: [`record`] then writes nothing.
    static UNAUDITED: ();
    /// The store's SQLite chain heads, around every transaction attempt of
    /// a SQLite store.
    static HEADS: Option<Arc<ChainHeads>>;
}

/// Runs `attempt` with auditing as `store` is configured.
pub(crate) async fn within<T>(store: &Store, attempt: impl std::future::Future<Output = T>) -> T {
    let heads = (store.backend() == Backend::Sqlite).then(|| Arc::clone(store.chain_heads()));
    let attempt = HEADS.scope(heads, attempt);
    if store.audits() {
        attempt.await
    } else {
        UNAUDITED.scope((), attempt).await
    }
}

/// Each tenant's newest link hash as this process last wrote it on SQLite,
/// so that a write's one record is chained in the `INSERT` itself instead
/// of after a read of the head: one statement fewer in the one writer's
/// turn. A hint, never trusted: the `INSERT` writes only if the head in the
/// file is still this one, else the head is read as before. A transaction
/// that rolled back, or another process writing the same file, therefore
/// costs one statement, never a broken chain.
#[derive(Debug, Default)]
pub(crate) struct ChainHeads(std::sync::Mutex<std::collections::HashMap<TenantId, Hash>>);

impl ChainHeads {
    fn get(&self, tenant: TenantId) -> Option<Hash> {
        self.0.lock().ok()?.get(&tenant).copied()
    }

    fn set(&self, tenant: TenantId, head: Hash) {
        if let Ok(mut heads) = self.0.lock() {
            heads.insert(tenant, head);
        }
    }
}

/// Each tenant's chain head as this process's sealer last left it on
/// PostgreSQL (`{"<tenant>": ["<tx>", seq, "<hash hex>"]}`), given to
/// `audit_seal_from` so that it need not search for it (migration 30). A
/// hint, never trusted: the function checks each head in two probes, and
/// when it no longer holds finds the head by bisection (migration 31).
#[derive(Debug, Default)]
pub(crate) struct SealHeads(std::sync::Mutex<serde_json::Map<String, serde_json::Value>>);

impl SealHeads {
    fn snapshot(&self) -> serde_json::Value {
        serde_json::Value::Object(self.0.lock().map(|h| h.clone()).unwrap_or_default())
    }

    fn update(&self, sealed: Vec<(String, serde_json::Value)>) {
        if let Ok(mut heads) = self.0.lock() {
            heads.extend(sealed);
        }
    }
}

/// The audit records of the changes `list` records, on behalf of the
/// calling task; none where auditing is off.
pub(crate) fn of_changes(list: &[Change]) -> Vec<AuditRecord> {
    if UNAUDITED.try_with(|()| ()).is_ok() {
        return Vec::new();
    }
    let context = audit_context();
    list.iter()
        .map(|c| AuditRecord::of_change(c, &context))
        .collect()
}

/// Writes `records` in `txn`, in order.
pub(crate) async fn record(
    txn: &DatabaseTransaction,
    records: &[AuditRecord],
) -> Result<(), Failure> {
    if UNAUDITED.try_with(|()| ()).is_ok() {
        return Ok(());
    }
    record_always(txn, records).await
}

/// Writes `records` in `txn` even where auditing is off: a privacy
/// erasure's tombstone, without which PostgreSQL's `privacy_erase` scrubs
/// nothing (migration 28).
pub(crate) async fn record_always(
    txn: &DatabaseTransaction,
    records: &[AuditRecord],
) -> Result<(), Failure> {
    if records.is_empty() {
        return Ok(());
    }
    match txn.get_database_backend() {
        DbBackend::Postgres => insert_postgres(txn, records).await,
        _ => insert_sqlite(txn, records).await,
    }
}

#[derive(Serialize)]
struct Row<'a> {
    tenant_id: uuid::Uuid,
    at: chrono::DateTime<chrono::Utc>,
    key_id: Option<uuid::Uuid>,
    user_id: Option<uuid::Uuid>,
    agent_id: Option<uuid::Uuid>,
    request_id: Option<&'a str>,
    entity: &'a str,
    entity_id: uuid::Uuid,
    action: &'a str,
    changes: &'a str,
    content_hash: String,
}

/// The PostgreSQL `INSERT` of audit rows given as the JSON array parameter
/// `${param}` (see [`postgres_rows`]), in the array's order.
pub(crate) fn postgres_insert(param: usize) -> String {
    format!(
        "INSERT INTO audit_log (tenant_id, at, key_id, user_id, agent_id, request_id, entity, \
           entity_id, action, changes, content_hash) \
         SELECT CAST(a.v->>'tenant_id' AS uuid), CAST(a.v->>'at' AS timestamptz), \
           CAST(a.v->>'key_id' AS uuid), CAST(a.v->>'user_id' AS uuid), \
           CAST(a.v->>'agent_id' AS uuid), a.v->>'request_id', a.v->>'entity', \
           CAST(a.v->>'entity_id' AS uuid), a.v->>'action', CAST(a.v->>'changes' AS json), \
           decode(a.v->>'content_hash', 'hex') \
         FROM jsonb_array_elements(CAST(${param} AS jsonb)) WITH ORDINALITY AS a(v, n) ORDER BY a.n"
    )
}

/// `records` as the JSON array [`postgres_insert`] reads.
pub(crate) fn postgres_rows(records: &[AuditRecord]) -> Result<String, Failure> {
    let rows: Vec<Row<'_>> = records
        .iter()
        .map(|r| Row {
            tenant_id: r.tenant_id.as_uuid(),
            at: r.at,
            key_id: r.actor.key_id.map(|k| k.as_uuid()),
            user_id: r.actor.user_id.map(|u| u.as_uuid()),
            agent_id: r.actor.agent_id.map(|a| a.as_uuid()),
            request_id: r.request_id.as_deref(),
            entity: &r.entity,
            entity_id: r.entity_id,
            action: &r.action,
            changes: &r.changes,
            content_hash: hex(&r.content_hash()),
        })
        .collect();
    serde_json::to_string(&rows).map_err(|e| Failure::Other(e.into()))
}

/// One statement for any number of rows: the rows as one JSON parameter.
async fn insert_postgres(
    txn: &DatabaseTransaction,
    records: &[AuditRecord],
) -> Result<(), Failure> {
    txn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        postgres_insert(1),
        [postgres_rows(records)?.into()],
    ))
    .await?;
    Ok(())
}

/// The 13 columns of a SQLite audit row, chained to `prev`; its link hash.
fn sqlite_row(r: &AuditRecord, prev: &Hash) -> ([DbValue; 13], Hash) {
    let content = r.content_hash();
    let hash = link(prev, &content);
    (
        [
            r.tenant_id.as_uuid().into(),
            r.at.into(),
            r.actor.key_id.map(|k| k.as_uuid()).into(),
            r.actor.user_id.map(|u| u.as_uuid()).into(),
            r.actor.agent_id.map(|a| a.as_uuid()).into(),
            r.request_id.clone().into(),
            r.entity.clone().into(),
            r.entity_id.into(),
            r.action.clone().into(),
            r.changes.clone().into(),
            content.to_vec().into(),
            prev.to_vec().into(),
            hash.to_vec().into(),
        ],
        hash,
    )
}

/// The columns of [`sqlite_row`], as SQL.
macro_rules! sqlite_columns {
    () => {
        "tenant_id, at, key_id, user_id, agent_id, request_id, entity, entity_id, action, \
         changes, content_hash, prev_hash, hash"
    };
}

/// [`sqlite_row`]'s values, then the tenant, [`GENESIS`] and the head the
/// row is chained to: written only if that is still the tenant's head.
const SQLITE_INSERT_ON_HEAD: &str = concat!(
    "INSERT INTO audit_log (",
    sqlite_columns!(),
    ") SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? \
     WHERE coalesce((SELECT hash FROM audit_log WHERE tenant_id = ? \
                     ORDER BY seq DESC LIMIT 1), ?) = ?"
);

/// [`SQLITE_INSERT_ON_HEAD`]'s values for `r` chained to `prev`; its link
/// hash.
fn on_head_values(r: &AuditRecord, prev: &Hash) -> (Vec<DbValue>, Hash) {
    let (row, hash) = sqlite_row(r, prev);
    let mut values = Vec::from(row);
    values.extend([
        r.tenant_id.as_uuid().into(),
        GENESIS.to_vec().into(),
        prev.to_vec().into(),
    ]);
    (values, hash)
}

/// One record chained to the head [`ChainHeads`] remembers, in one
/// statement that writes only if the file's head is still that one.
/// `false`: nothing remembered, or the head moved; nothing was written.
async fn insert_sqlite_on_known_head(
    txn: &DatabaseTransaction,
    r: &AuditRecord,
    heads: &ChainHeads,
) -> Result<bool, Failure> {
    let Some(prev) = heads.get(r.tenant_id) else {
        return Ok(false);
    };
    let (values, hash) = on_head_values(r, &prev);
    let written = txn
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            SQLITE_INSERT_ON_HEAD,
            values,
        ))
        .await?
        .rows_affected();
    if written == 1 {
        heads.set(r.tenant_id, hash);
    }
    Ok(written == 1)
}

/// SQLite: the statements `sql` (with their `values`: a write's events and
/// change-log rows) and `record`'s audit row chained to the head
/// [`ChainHeads`] remembers, sent as one batch.
///
/// Each statement sent to SQLite is a hand-off to its connection's thread
/// and back, and every one of them is taken inside the one writer's turn,
/// which the next write waits for: three statements as one batch take one
/// hand-off (sqlx binds a batch's values statement by statement, in
/// order). The batch ends by asking `changes()`, the rows its audit
/// `INSERT` wrote. When no head is remembered, or the file's head moved
/// (that `INSERT` then wrote nothing), the record is chained to the file's
/// head after the batch, as [`record`] does.
pub(crate) async fn sqlite_batch_with_record(
    txn: &DatabaseTransaction,
    mut sql: String,
    mut values: Vec<DbValue>,
    record: Option<&AuditRecord>,
) -> Result<(), Failure> {
    let known = HEADS.try_with(Clone::clone).ok().flatten();
    let chained = record.and_then(|r| {
        let heads = known.as_ref()?;
        Some((r, heads, heads.get(r.tenant_id)?))
    });
    let Some((r, heads, prev)) = chained else {
        if !sql.is_empty() {
            txn.execute_raw(Statement::from_sql_and_values(
                DbBackend::Sqlite,
                sql,
                values,
            ))
            .await?;
        }
        return match record {
            Some(r) => insert_sqlite(txn, std::slice::from_ref(r)).await,
            None => Ok(()),
        };
    };
    let (row, hash) = on_head_values(r, &prev);
    if !sql.is_empty() {
        sql.push_str(";\n");
    }
    sql.push_str(SQLITE_INSERT_ON_HEAD);
    sql.push_str(";\nSELECT changes()");
    values.extend(row);
    let written = txn
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            sql,
            values,
        ))
        .await?
        .map(|row| row.try_get_by_index::<i64>(0))
        .transpose()?;
    if written == Some(1) {
        heads.set(r.tenant_id, hash);
        Ok(())
    } else {
        insert_sqlite_on_file_heads(txn, std::slice::from_ref(r), known.as_deref()).await
    }
}

/// Sealed as written: one writer, so the head read here is the head.
async fn insert_sqlite(txn: &DatabaseTransaction, records: &[AuditRecord]) -> Result<(), Failure> {
    let known = HEADS.try_with(Clone::clone).ok().flatten();
    if let (Some(heads), [record]) = (&known, records)
        && insert_sqlite_on_known_head(txn, record, heads).await?
    {
        return Ok(());
    }
    insert_sqlite_on_file_heads(txn, records, known.as_deref()).await
}

/// `records` chained to their tenants' heads as read from the file; the
/// new heads are remembered in `known`.
async fn insert_sqlite_on_file_heads(
    txn: &DatabaseTransaction,
    records: &[AuditRecord],
    known: Option<&ChainHeads>,
) -> Result<(), Failure> {
    const COLUMNS: usize = 13;
    let mut heads: Vec<(TenantId, Hash)> = Vec::new();
    for chunk in records.chunks(crate::rows_per_insert(COLUMNS)) {
        let mut values: Vec<DbValue> = Vec::with_capacity(chunk.len() * COLUMNS);
        for r in chunk {
            let prev = match heads.iter().find(|(t, _)| *t == r.tenant_id) {
                Some((_, head)) => *head,
                None => head_sqlite(txn, r.tenant_id).await?,
            };
            let (row, hash) = sqlite_row(r, &prev);
            match heads.iter_mut().find(|(t, _)| *t == r.tenant_id) {
                Some(slot) => slot.1 = hash,
                None => heads.push((r.tenant_id, hash)),
            }
            values.extend(row);
        }
        let placeholders = vec![format!("({})", vec!["?"; COLUMNS].join(", ")); chunk.len()];
        let sql = format!(
            "INSERT INTO audit_log ({}) VALUES {}",
            sqlite_columns!(),
            placeholders.join(", ")
        );
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            sql,
            values,
        ))
        .await?;
    }
    if let Some(known) = known {
        for (tenant, head) in heads {
            known.set(tenant, head);
        }
    }
    Ok(())
}

/// The link hash of `tenant`'s newest record on SQLite.
async fn head_sqlite(txn: &DatabaseTransaction, tenant: TenantId) -> Result<Hash, Failure> {
    let row = txn
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "SELECT hash FROM audit_log WHERE tenant_id = ? ORDER BY seq DESC LIMIT 1",
            [tenant.as_uuid().into()],
        ))
        .await?;
    let Some(row) = row else {
        return Ok(GENESIS);
    };
    let hash: Option<Vec<u8>> = row.try_get("", "hash")?;
    hash.and_then(|h| Hash::try_from(h.as_slice()).ok())
        .ok_or_else(|| {
            Failure::Other(anyhow::anyhow!(
                "the newest audit record of tenant {tenant} has no valid link hash"
            ))
        })
}

/// The columns every read selects, `tx` as text under `tx_text` (`'0'` on
/// SQLite).
fn columns(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => {
            "tx::text AS tx_text, seq, at, key_id, user_id, agent_id, request_id, entity, \
             entity_id, action, changes::text AS changes, content_hash, prev_hash, hash, \
             erased_digest"
        }
        Backend::Sqlite => {
            "'0' AS tx_text, seq, at, key_id, user_id, agent_id, request_id, entity, entity_id, \
             action, changes, content_hash, prev_hash, hash, erased_digest"
        }
    }
}

fn entry(row: &QueryResult, tenant: TenantId) -> Result<AuditEntry, Failure> {
    let tx: String = row.try_get("", "tx_text")?;
    let seq: i64 = row.try_get("", "seq")?;
    let bad = |column: &str, e: &dyn std::fmt::Display| {
        Failure::Other(anyhow::anyhow!("audit_log.{column}: {e}"))
    };
    Ok(AuditEntry {
        position: ChangePosition {
            tx: tx.parse().map_err(|e| bad("tx", &e))?,
            seq: u64::try_from(seq).map_err(|e| bad("seq", &e))?,
        },
        record: AuditRecord {
            tenant_id: tenant,
            at: row.try_get("", "at")?,
            actor: Actor {
                key_id: row
                    .try_get::<Option<uuid::Uuid>>("", "key_id")?
                    .map(ApiKeyId::from_uuid),
                user_id: row
                    .try_get::<Option<uuid::Uuid>>("", "user_id")?
                    .map(UserId::from_uuid),
                agent_id: row
                    .try_get::<Option<uuid::Uuid>>("", "agent_id")?
                    .map(AgentId::from_uuid),
            },
            request_id: row.try_get("", "request_id")?,
            entity: row.try_get("", "entity")?,
            entity_id: row.try_get("", "entity_id")?,
            action: row.try_get("", "action")?,
            changes: row.try_get("", "changes")?,
        },
        content_hash: row.try_get("", "content_hash")?,
        prev_hash: row.try_get("", "prev_hash")?,
        hash: row.try_get("", "hash")?,
        erased_digest: row.try_get("", "erased_digest")?,
    })
}

/// `tenant`'s records about any of `ids`, in log order, read in `txn`.
pub(crate) async fn about(
    txn: &DatabaseTransaction,
    backend: Backend,
    tenant: TenantId,
    ids: &[uuid::Uuid],
) -> Result<Vec<AuditEntry>, Failure> {
    let mut out = Vec::new();
    for chunk in ids.chunks(500) {
        let mut p = Params::new(backend);
        let tenant_param = p.push(tenant.as_uuid());
        let list: Vec<String> = chunk.iter().map(|id| p.push(*id)).collect();
        let sql = format!(
            "SELECT {} FROM audit_log WHERE tenant_id = {tenant_param} AND entity_id IN ({})",
            columns(backend),
            list.join(", ")
        );
        let rows = txn
            .query_all_raw(Statement::from_sql_and_values(backend.db(), sql, p.values))
            .await?;
        for row in &rows {
            out.push(entry(row, tenant)?);
        }
    }
    out.sort_by_key(|e| e.position);
    Ok(out)
}

fn signed(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[async_trait]
impl AuditTrail for Store {
    async fn list(
        &self,
        tenant: TenantId,
        query: &AuditQuery,
    ) -> Result<Page<AuditEntry>, AuditError> {
        let backend = self.backend();
        let mut p = Params::new(backend);
        let mut filters = vec![format!("tenant_id = {}", p.push(tenant.as_uuid()))];
        if let Some(entity) = &query.entity {
            filters.push(format!("entity = {}", p.push(entity.clone())));
        }
        if let Some(id) = query.entity_id {
            filters.push(format!("entity_id = {}", p.push(id)));
        }
        if let Some(actor) = query.actor {
            let (a, b, c) = (p.push(actor), p.push(actor), p.push(actor));
            filters.push(format!("(key_id = {a} OR user_id = {b} OR agent_id = {c})"));
        }
        if let Some(since) = query.since {
            filters.push(format!("at >= {}", p.push(since)));
        }
        if let Some(before) = query.before {
            filters.push(match backend {
                Backend::Postgres => format!(
                    "(tx, seq) < ({}::text::xid8, {})",
                    p.push(before.tx.to_string()),
                    p.push(signed(before.seq))
                ),
                Backend::Sqlite => format!("seq < {}", p.push(signed(before.seq))),
            });
        }
        let order = match backend {
            Backend::Postgres => "audit_log.tx DESC, audit_log.seq DESC",
            Backend::Sqlite => "seq DESC",
        };
        let limit = p.push(i64::from(query.limit.get()) + 1);
        let sql = format!(
            "SELECT {} FROM audit_log WHERE {} ORDER BY {order} LIMIT {limit}",
            columns(backend),
            filters.join(" AND ")
        );
        let values = p.values;
        let result: Result<Vec<AuditEntry>, Failure> =
            transaction!(self, "audit.list", tenant, ReplicaRead, |txn| {
                let rows = txn
                    .query_all_raw(Statement::from_sql_and_values(
                        backend.db(),
                        sql.clone(),
                        values.clone(),
                    ))
                    .await?;
                rows.iter().map(|r| entry(r, tenant)).collect()
            });
        let rows = result.map_err(|f| common!(f, AuditError))?;
        Ok(Page::from_overfetch(rows, query.limit))
    }

    async fn chain(
        &self,
        tenant: TenantId,
        after: ChangePosition,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, AuditError> {
        let backend = self.backend();
        let limit = i64::from(limit.clamp(1, 10_000));
        let result: Result<Vec<AuditEntry>, Failure> =
            transaction!(self, "audit.chain", tenant, Read, |txn| {
                let statement = match backend {
                    Backend::Postgres => Statement::from_sql_and_values(
                        DbBackend::Postgres,
                        format!(
                            "SELECT {} FROM audit_log WHERE tenant_id = $1 \
                               AND (tx, seq) > ($2::text::xid8, $3) \
                             ORDER BY audit_log.tx, audit_log.seq LIMIT $4",
                            columns(backend)
                        ),
                        [
                            tenant.as_uuid().into(),
                            after.tx.to_string().into(),
                            signed(after.seq).into(),
                            limit.into(),
                        ],
                    ),
                    Backend::Sqlite => Statement::from_sql_and_values(
                        DbBackend::Sqlite,
                        format!(
                            "SELECT {} FROM audit_log WHERE tenant_id = ? AND seq > ? \
                             ORDER BY seq LIMIT ?",
                            columns(backend)
                        ),
                        [
                            tenant.as_uuid().into(),
                            signed(after.seq).into(),
                            limit.into(),
                        ],
                    ),
                };
                let rows = txn.query_all_raw(statement).await?;
                rows.iter().map(|r| entry(r, tenant)).collect()
            });
        result.map_err(|f| common!(f, AuditError))
    }

    async fn seal(&self, max_rows: u32) -> Result<u64, AuditError> {
        if self.backend() != Backend::Postgres {
            // Sealed as written.
            return Ok(0);
        }
        let nobody = TenantId::from_uuid(uuid::Uuid::nil());
        let given = self.seal_heads().snapshot();
        let result: Result<(u64, Vec<(String, serde_json::Value)>), Failure> =
            transaction!(self, "audit.seal", nobody, Write, |txn| {
                let rows = txn
                    .query_all_raw(Statement::from_sql_and_values(
                        DbBackend::Postgres,
                        "SELECT tenant_id, head_tx, head_seq, head_hash, sealed \
                         FROM audit_seal_from($1, $2::jsonb)",
                        [
                            i32::try_from(max_rows).unwrap_or(i32::MAX).into(),
                            given.clone().into(),
                        ],
                    ))
                    .await?;
                let mut total = 0_u64;
                let mut heads = Vec::with_capacity(rows.len());
                for row in &rows {
                    let tenant: uuid::Uuid = row.try_get("", "tenant_id")?;
                    let tx: String = row.try_get("", "head_tx")?;
                    let seq: i64 = row.try_get("", "head_seq")?;
                    let hash: String = row.try_get("", "head_hash")?;
                    let sealed: i64 = row.try_get("", "sealed")?;
                    total += u64::try_from(sealed).unwrap_or(0);
                    heads.push((tenant.to_string(), serde_json::json!([tx, seq, hash])));
                }
                Ok((total, heads))
            });
        // Kept once committed: the next call starts from these heads.
        let (total, heads) = result.map_err(|f| common!(f, AuditError))?;
        self.seal_heads().update(heads);
        Ok(total)
    }

    async fn tenants(&self) -> Result<Vec<TenantId>, AuditError> {
        let backend = self.backend();
        let nobody = TenantId::from_uuid(uuid::Uuid::nil());
        let result: Result<Vec<TenantId>, Failure> =
            transaction!(self, "audit.tenants", nobody, Read, |txn| {
                let sql = match backend {
                    Backend::Postgres => "SELECT audit_tenants() AS id",
                    Backend::Sqlite => "SELECT id FROM tenants ORDER BY id",
                };
                let rows = txn
                    .query_all_raw(Statement::from_string(backend.db(), sql))
                    .await?;
                rows.iter()
                    .map(|r| Ok(TenantId::from_uuid(r.try_get("", "id")?)))
                    .collect()
            });
        result.map_err(|f| common!(f, AuditError))
    }
}

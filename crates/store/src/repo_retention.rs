//! [`RetentionRepository`] on the store (migration 24).
//!
//! A batch is one write transaction of the tenant: read the policy, remove
//! (and, to archive, first copy to `events_archive`) at most `max_rows` of
//! the events that occurred before the policy's cutoff, oldest first, and
//! write the batch's audit record. PostgreSQL does the removal in
//! `retention_apply`, the one way the service role can delete an event;
//! SQLite opens the append-only trigger for its own transaction through
//! `retention_gate`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leadline_domain::{AuditRecord, LeadId, RetentionAction, RetentionPolicy, TenantId};
use leadline_ports::{RetentionBatch, RetentionError, RetentionRepository, audit_context};
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, Statement, Value};

use crate::{
    Backend, Store,
    errors::{Failure, common},
    params::Params,
    tx::transaction,
};

/// `$n` on PostgreSQL, `?` on SQLite.
fn mark(backend: Backend, n: usize) -> String {
    match backend {
        Backend::Postgres => format!("${n}"),
        Backend::Sqlite => "?".to_owned(),
    }
}

/// Times as SQLite stores them (RFC 3339, as the driver writes a
/// `DateTime<Utc>`), so that text comparison is time order.
fn sqlite_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
}

async fn read_policy(
    txn: &DatabaseTransaction,
    backend: Backend,
    tenant: TenantId,
) -> Result<Option<RetentionPolicy>, Failure> {
    let row = txn
        .query_one_raw(Statement::from_sql_and_values(
            backend.db(),
            format!(
                "SELECT events_days, action FROM retention_policies WHERE tenant_id = {}",
                mark(backend, 1)
            ),
            [tenant.as_uuid().into()],
        ))
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let days: i64 = match backend {
        Backend::Postgres => i64::from(row.try_get::<i32>("", "events_days")?),
        Backend::Sqlite => row.try_get("", "events_days")?,
    };
    let action: String = row.try_get("", "action")?;
    let action: RetentionAction = action
        .parse()
        .map_err(|_| Failure::Other(anyhow::anyhow!("retention_policies.action {action:?}")))?;
    Ok(Some(RetentionPolicy::new(days, action).map_err(|e| {
        Failure::Other(anyhow::anyhow!(
            "retention_policies.events_days {days}: {e}"
        ))
    })?))
}

fn view(policy: Option<RetentionPolicy>) -> serde_json::Value {
    policy.map_or(serde_json::Value::Null, |p| {
        serde_json::json!({
            "events_older_than_days": p.events_older_than_days(),
            "action": p.action(),
        })
    })
}

/// SQLite: the ids and leads of `tenant`'s oldest rows of `table`
/// (`events` or `events_archive`) that occurred before `cutoff`, at most
/// `max_rows`, oldest first.
async fn sqlite_oldest(
    txn: &DatabaseTransaction,
    table: &'static str,
    tenant: TenantId,
    cutoff: DateTime<Utc>,
    max_rows: u32,
) -> Result<(Vec<uuid::Uuid>, Vec<uuid::Uuid>), Failure> {
    let rows = txn
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            format!(
                "SELECT id, lead_id FROM {table} WHERE tenant_id = ? AND occurred_at < ? \
                 ORDER BY occurred_at, id LIMIT ?"
            ),
            [
                tenant.as_uuid().into(),
                sqlite_time(cutoff).into(),
                i64::from(max_rows).into(),
            ],
        ))
        .await?;
    let mut ids = Vec::with_capacity(rows.len());
    let mut leads = Vec::with_capacity(rows.len());
    for row in &rows {
        ids.push(row.try_get::<uuid::Uuid>("", "id")?);
        leads.push(row.try_get::<uuid::Uuid>("", "lead_id")?);
    }
    Ok((ids, leads))
}

/// SQLite: removes `ids` of `tenant` from `table`.
async fn sqlite_remove(
    txn: &DatabaseTransaction,
    table: &'static str,
    tenant: TenantId,
    ids: &[uuid::Uuid],
) -> Result<(), Failure> {
    let mut p = Params::new(Backend::Sqlite);
    let sql = format!(
        "DELETE FROM {table} WHERE tenant_id = {} AND id IN ({})",
        p.push(tenant.as_uuid()),
        p.list(ids)
    );
    txn.execute_raw(p.statement(sql)).await?;
    Ok(())
}

/// SQLite, one batch of `policy`: the leads of at most `max_rows` events
/// past `cutoff`, removed (and archived first when the policy says so).
async fn sqlite_apply(
    txn: &DatabaseTransaction,
    tenant: TenantId,
    policy: RetentionPolicy,
    cutoff: DateTime<Utc>,
    max_rows: u32,
) -> Result<Vec<uuid::Uuid>, Failure> {
    let (ids, leads) = sqlite_oldest(txn, "events", tenant, cutoff, max_rows).await?;
    if ids.is_empty() {
        return Ok(leads);
    }
    if policy.action() == RetentionAction::Archive {
        let mut p = Params::new(Backend::Sqlite);
        let sql = format!(
            "INSERT INTO events_archive (tenant_id, id, lead_id, kind, direction, content, \
             occurred_at, actor, metadata, created_at, archived_at) \
             SELECT tenant_id, id, lead_id, kind, direction, content, occurred_at, actor, \
             metadata, created_at, {} FROM events WHERE tenant_id = {} AND id IN ({})",
            p.push(sqlite_time(crate::now())),
            p.push(tenant.as_uuid()),
            p.list(&ids)
        );
        txn.execute_raw(p.statement(sql)).await?;
    }
    txn.execute_unprepared("INSERT INTO retention_gate (one) VALUES (1)")
        .await?;
    sqlite_remove(txn, "events", tenant, &ids).await?;
    txn.execute_unprepared("DELETE FROM retention_gate").await?;
    Ok(leads)
}

/// SQLite, a delete policy: the leads of at most `max_rows` archived
/// events past it, removed (a tenant that archived before).
async fn sqlite_purge_archive(
    txn: &DatabaseTransaction,
    tenant: TenantId,
    cutoff: DateTime<Utc>,
    max_rows: u32,
) -> Result<Vec<uuid::Uuid>, Failure> {
    let (ids, leads) = sqlite_oldest(txn, "events_archive", tenant, cutoff, max_rows).await?;
    if !ids.is_empty() {
        sqlite_remove(txn, "events_archive", tenant, &ids).await?;
    }
    Ok(leads)
}

#[async_trait]
impl RetentionRepository for Store {
    async fn policy(&self, tenant: TenantId) -> Result<Option<RetentionPolicy>, RetentionError> {
        let backend = self.backend();
        let result: Result<_, Failure> =
            transaction!(self, "retention.policy", tenant, Read, |txn| {
                read_policy(txn, backend, tenant).await
            });
        result.map_err(|f| common!(f, RetentionError))
    }

    async fn set_policy(
        &self,
        tenant: TenantId,
        policy: Option<RetentionPolicy>,
    ) -> Result<Option<RetentionPolicy>, RetentionError> {
        let backend = self.backend();
        let result: Result<_, Failure> = transaction!(
            self,
            "retention.set_policy",
            tenant,
            Write,
            |txn| {
                let before = read_policy(txn, backend, tenant).await?;
                let id: Value = tenant.as_uuid().into();
                match policy {
                    Some(p) => {
                        let sql = format!(
                            "INSERT INTO retention_policies (tenant_id, events_days, action, updated_at) \
                             VALUES ({}, {}, {}, {}) ON CONFLICT (tenant_id) DO UPDATE SET \
                             events_days = excluded.events_days, action = excluded.action, \
                             updated_at = excluded.updated_at",
                            mark(backend, 1),
                            mark(backend, 2),
                            mark(backend, 3),
                            mark(backend, 4)
                        );
                        let days = i32::try_from(p.events_older_than_days()).unwrap_or(i32::MAX);
                        txn.execute_raw(Statement::from_sql_and_values(
                            backend.db(),
                            sql,
                            [
                                id,
                                days.into(),
                                p.action().as_str().into(),
                                crate::now().into(),
                            ],
                        ))
                        .await?;
                    }
                    None => {
                        txn.execute_raw(Statement::from_sql_and_values(
                            backend.db(),
                            format!(
                                "DELETE FROM retention_policies WHERE tenant_id = {}",
                                mark(backend, 1)
                            ),
                            [id],
                        ))
                        .await?;
                    }
                }
                if before != policy {
                    let record = AuditRecord::new(
                        tenant,
                        crate::now(),
                        &audit_context(),
                        ("tenant", tenant.as_uuid(), "tenant.retention_set"),
                        Some(&serde_json::json!({ "retention": view(before) })),
                        Some(&serde_json::json!({ "retention": view(policy) })),
                    );
                    crate::audit::record(txn, &[record]).await?;
                }
                Ok(policy)
            }
        );
        result.map_err(|f| common!(f, RetentionError))
    }

    async fn tenants_with_policy(&self) -> Result<Vec<TenantId>, RetentionError> {
        let backend = self.backend();
        let nobody = TenantId::from_uuid(uuid::Uuid::nil());
        let result: Result<Vec<TenantId>, Failure> =
            transaction!(self, "retention.tenants", nobody, Read, |txn| {
                let sql = match backend {
                    Backend::Postgres => "SELECT retention_tenants() AS id",
                    Backend::Sqlite => {
                        "SELECT tenant_id AS id FROM retention_policies ORDER BY tenant_id"
                    }
                };
                let rows = txn
                    .query_all_raw(Statement::from_string(backend.db(), sql))
                    .await?;
                rows.iter()
                    .map(|r| Ok(TenantId::from_uuid(r.try_get("", "id")?)))
                    .collect()
            });
        result.map_err(|f| common!(f, RetentionError))
    }

    async fn apply(
        &self,
        tenant: TenantId,
        max_rows: u32,
    ) -> Result<RetentionBatch, RetentionError> {
        let backend = self.backend();
        let result: Result<RetentionBatch, Failure> =
            transaction!(self, "retention.apply", tenant, Write, |txn| {
                let Some(policy) = read_policy(txn, backend, tenant).await? else {
                    return Ok(RetentionBatch::default());
                };
                let now = crate::now();
                let cutoff = policy.cutoff(now);
                let mut per_lead: Vec<(uuid::Uuid, u64)> = Vec::new();
                match backend {
                    Backend::Postgres => {
                        let rows = txn
                            .query_all_raw(Statement::from_sql_and_values(
                                DbBackend::Postgres,
                                "SELECT out_lead, out_count FROM retention_apply($1, $2, $3)",
                                [
                                    tenant.as_uuid().into(),
                                    cutoff.into(),
                                    i32::try_from(max_rows).unwrap_or(i32::MAX).into(),
                                ],
                            ))
                            .await?;
                        for row in &rows {
                            let n: i64 = row.try_get("", "out_count")?;
                            per_lead.push((
                                row.try_get("", "out_lead")?,
                                u64::try_from(n).unwrap_or(0),
                            ));
                        }
                    }
                    Backend::Sqlite => {
                        let mut leads = sqlite_apply(txn, tenant, policy, cutoff, max_rows).await?;
                        if policy.action() == RetentionAction::Delete {
                            leads
                                .extend(sqlite_purge_archive(txn, tenant, cutoff, max_rows).await?);
                        }
                        for lead in leads {
                            match per_lead.iter_mut().find(|(l, _)| *l == lead) {
                                Some((_, n)) => *n += 1,
                                None => per_lead.push((lead, 1)),
                            }
                        }
                    }
                }
                let removed: u64 = per_lead.iter().map(|(_, n)| n).sum();
                if removed > 0 {
                    let record =
                        policy.batch_record(tenant, removed, cutoff, now, &audit_context());
                    crate::audit::record(txn, &[record]).await?;
                }
                Ok(RetentionBatch {
                    removed,
                    leads: per_lead
                        .into_iter()
                        .map(|(l, _)| LeadId::from_uuid(l))
                        .collect(),
                })
            });
        result.map_err(|f| common!(f, RetentionError))
    }
}

//! [`ImportRepository`] on the store.

use async_trait::async_trait;
use leadline_domain::{
    Change, CreateLeadRequest, Event, ImportId, TenantId,
    import::{ImportBatch, ImportRun, ImportStatus, OnDuplicate, RejectedRow},
};
use leadline_ports::{CreateLeadError, ImportError, ImportRepository};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait as _, DbBackend, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Statement,
    sea_query::{Expr, ExprTrait as _, OnConflict},
};

use crate::{
    Store,
    entity::{import_rejects, imports},
    errors::{Failure, common},
    repo_leads::insert_many,
    tx::transaction,
};

fn by_key(tenant: TenantId, run: ImportId) -> sea_orm::Select<imports::Entity> {
    imports::Entity::find()
        .filter(imports::Column::TenantId.eq(tenant.as_uuid()))
        .filter(imports::Column::Id.eq(run.as_uuid()))
}

/// Takes `lock` (a transaction-level advisory lock function) on the batch
/// of `run` that ends at `line`, on PostgreSQL; SQLite's one writer
/// already writes one batch at a time.
async fn batch_lock(
    txn: &sea_orm::DatabaseTransaction,
    backend: crate::Backend,
    lock: &'static str,
    run: ImportId,
    line: u64,
) -> Result<(), Failure> {
    if backend == crate::Backend::Postgres {
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!("SELECT {lock}(hashtextextended($1, 0))"),
            [format!("leadline import {run} line {line}").into()],
        ))
        .await?;
    }
    Ok(())
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn decode(model: Option<imports::Model>) -> Result<ImportRun, ImportError> {
    match model {
        Some(m) => ImportRun::try_from(m).map_err(ImportError::Unknown),
        None => Err(ImportError::NotFound),
    }
}

#[async_trait]
impl ImportRepository for Store {
    async fn start(
        &self,
        tenant: TenantId,
        file_sha256: &str,
        source_name: &str,
        headers: &[String],
        on_duplicate: OnDuplicate,
    ) -> Result<ImportRun, ImportError> {
        let result: Result<Option<imports::Model>, Failure> =
            transaction!(self, "imports.start", tenant, Write, |txn| {
                let now = crate::now();
                // A concurrent start of the same file inserts nothing here
                // and reads the other's run below.
                imports::Entity::insert(imports::ActiveModel {
                    tenant_id: Set(tenant.as_uuid()),
                    id: Set(ImportId::new().as_uuid()),
                    file_sha256: Set(file_sha256.to_owned()),
                    source_name: Set(source_name.to_owned()),
                    headers: Set(serde_json::Value::Array(
                        headers
                            .iter()
                            .cloned()
                            .map(serde_json::Value::String)
                            .collect(),
                    )),
                    on_duplicate: Set(on_duplicate.as_str().to_owned()),
                    status: Set(ImportStatus::Running.as_str().to_owned()),
                    failure: Set(None),
                    rows_read: Set(0),
                    created: Set(0),
                    updated: Set(0),
                    skipped: Set(0),
                    rejected: Set(0),
                    committed_line: Set(0),
                    created_at: Set(now),
                    updated_at: Set(now),
                    runner: Set(None),
                })
                .on_conflict(
                    OnConflict::columns([
                        imports::Column::TenantId,
                        imports::Column::FileSha256,
                        imports::Column::OnDuplicate,
                    ])
                    .do_nothing()
                    .to_owned(),
                )
                .exec_without_returning(txn)
                .await?;
                // A run that failed resumes: it is running again.
                imports::Entity::update_many()
                    .col_expr(
                        imports::Column::Status,
                        Expr::value(ImportStatus::Running.as_str()),
                    )
                    .col_expr(
                        imports::Column::Failure,
                        Expr::value(Option::<String>::None),
                    )
                    .filter(imports::Column::TenantId.eq(tenant.as_uuid()))
                    .filter(imports::Column::FileSha256.eq(file_sha256))
                    .filter(imports::Column::OnDuplicate.eq(on_duplicate.as_str()))
                    .filter(imports::Column::Status.eq(ImportStatus::Failed.as_str()))
                    .exec(txn)
                    .await?;
                let run = imports::Entity::find()
                    .filter(imports::Column::TenantId.eq(tenant.as_uuid()))
                    .filter(imports::Column::FileSha256.eq(file_sha256))
                    .filter(imports::Column::OnDuplicate.eq(on_duplicate.as_str()))
                    .one(txn)
                    .await?;
                Ok(run)
            });
        decode(result.map_err(|f| common!(f, ImportError))?)
    }

    async fn commit(
        &self,
        tenant: TenantId,
        run: ImportId,
        batch: &ImportBatch,
    ) -> Result<ImportRun, ImportError> {
        let backend = self.backend();
        let result: Result<Option<imports::Model>, Failure> = transaction!(
            self,
            "imports.commit",
            tenant,
            Write,
            rows = batch.rows as usize,
            |txn| {
                // "This batch is being written", for the batch after it to
                // wait on (below).
                batch_lock(txn, backend, "pg_advisory_xact_lock", run, batch.to_line).await?;
                let reqs: Vec<&CreateLeadRequest> = batch.creates.iter().map(|(_, r)| r).collect();
                let created = match insert_many(txn, backend, tenant, &reqs).await? {
                    Ok(leads) => leads,
                    Err(CreateLeadError::AgentNotFound | CreateLeadError::AgentInactive) => {
                        // Dropping the transaction rolls the batch back.
                        return Err(Failure::Other(anyhow::anyhow!(AgentGone)));
                    }
                    Err(e) => return Err(Failure::Other(anyhow::Error::new(e))),
                };
                // Every lead the batch wrote gets its `imported` event.
                let now = crate::now();
                let events: Vec<Event> =
                    created
                        .iter()
                        .zip(&batch.creates)
                        .map(|(lead, (line, _))| {
                            Event::imported(tenant, lead.id, run, *line, true, now)
                        })
                        .chain(batch.updated.iter().map(|(line, lead)| {
                            Event::imported(tenant, *lead, run, *line, false, now)
                        }))
                        .collect();
                let changes: Vec<Change> = events.iter().map(Change::event).collect();
                crate::changes::record_with_events(txn, &events, &changes).await?;
                for chunk in batch.rejects.chunks(500) {
                    import_rejects::Entity::insert_many(chunk.iter().map(|r| {
                        import_rejects::ActiveModel::of(tenant.as_uuid(), run.as_uuid(), r)
                    }))
                    .on_conflict(
                        OnConflict::columns([
                            import_rejects::Column::TenantId,
                            import_rejects::Column::ImportId,
                            import_rejects::Column::Line,
                        ])
                        .do_nothing()
                        .to_owned(),
                    )
                    .exec_without_returning(txn)
                    .await?;
                }
                // Move the run last, so that the batch after this one can be
                // written while this one is (`ImportRepository::commit`).
                // The row is locked first: an `UPDATE … WHERE committed_line
                // = from` would skip the row the batch before has moved but
                // not committed (its snapshot shows the old line) instead of
                // waiting; `FOR UPDATE` waits, then reads the line that
                // batch left. A batch whose run is not where it expects
                // (another process moved it, or the batch before it has not
                // committed or got here later) rolls back whole.
                // The batch before, if it is still being written, is waited
                // for here: a lock wait, which PostgreSQL's deadlock check
                // sees (it may wait in turn for a search word this one
                // inserted). Without it this batch, done first, would find
                // the run behind and be written again.
                batch_lock(
                    txn,
                    backend,
                    "pg_advisory_xact_lock_shared",
                    run,
                    batch.from_line,
                )
                .await?;
                let at = by_key(tenant, run).lock_exclusive().one(txn).await?;
                let continues = at.as_ref().is_some_and(|m| {
                    m.committed_line == signed(batch.from_line)
                        && (batch.claims || m.runner == Some(batch.runner))
                });
                if !continues {
                    let line = at.map(|m| u64::try_from(m.committed_line).unwrap_or(0));
                    return Err(Failure::Other(anyhow::Error::new(NotMoved(line))));
                }
                // The row is locked and was checked above: nothing else
                // can move it before this transaction ends.
                let moved = imports::Entity::update_many()
                    .col_expr(
                        imports::Column::CommittedLine,
                        Expr::value(signed(batch.to_line)),
                    )
                    .col_expr(
                        imports::Column::RowsRead,
                        Expr::col(imports::Column::RowsRead).add(signed(batch.rows)),
                    )
                    .col_expr(
                        imports::Column::Created,
                        Expr::col(imports::Column::Created).add(signed(batch.creates.len() as u64)),
                    )
                    .col_expr(
                        imports::Column::Updated,
                        Expr::col(imports::Column::Updated).add(signed(batch.updated.len() as u64)),
                    )
                    .col_expr(
                        imports::Column::Skipped,
                        Expr::col(imports::Column::Skipped).add(signed(batch.skipped)),
                    )
                    .col_expr(
                        imports::Column::Rejected,
                        Expr::col(imports::Column::Rejected)
                            .add(signed(batch.rejects.len() as u64)),
                    )
                    .col_expr(imports::Column::UpdatedAt, Expr::value(crate::now()))
                    .col_expr(imports::Column::Runner, Expr::value(batch.runner))
                    .filter(imports::Column::TenantId.eq(tenant.as_uuid()))
                    .filter(imports::Column::Id.eq(run.as_uuid()))
                    .exec_with_returning(txn)
                    .await?;
                Ok(moved.into_iter().next())
            }
        );
        match result {
            Ok(model) => decode(model),
            Err(Failure::Other(e)) if e.is::<NotMoved>() => Err(match e.downcast::<NotMoved>() {
                Ok(NotMoved(Some(committed_line))) => ImportError::Moved { committed_line },
                _ => ImportError::NotFound,
            }),
            Err(Failure::Other(e)) if e.is::<AgentGone>() => Err(ImportError::AgentUnavailable),
            Err(Failure::ForeignKey(_)) => Err(ImportError::AgentUnavailable),
            Err(f) => Err(common!(f, ImportError)),
        }
    }

    /// Two on PostgreSQL: one batch's statements run while the other's
    /// are sent or decided, and on two server cores at once. SQLite has one
    /// writer, so a second batch would only wait for it (or, getting it
    /// first, be written and rolled back).
    fn concurrent_batches(&self) -> usize {
        match self.backend() {
            crate::Backend::Postgres => 2,
            crate::Backend::Sqlite => 1,
        }
    }

    async fn finish(
        &self,
        tenant: TenantId,
        run: ImportId,
        status: ImportStatus,
        failure: Option<String>,
    ) -> Result<ImportRun, ImportError> {
        let result: Result<Option<imports::Model>, Failure> =
            transaction!(self, "imports.finish", tenant, Write, |txn| {
                imports::Entity::update_many()
                    .col_expr(imports::Column::Status, Expr::value(status.as_str()))
                    .col_expr(imports::Column::Failure, Expr::value(failure.clone()))
                    .col_expr(imports::Column::UpdatedAt, Expr::value(crate::now()))
                    .filter(imports::Column::TenantId.eq(tenant.as_uuid()))
                    .filter(imports::Column::Id.eq(run.as_uuid()))
                    .exec(txn)
                    .await?;
                Ok(by_key(tenant, run).one(txn).await?)
            });
        decode(result.map_err(|f| common!(f, ImportError))?)
    }

    async fn get(&self, tenant: TenantId, run: ImportId) -> Result<ImportRun, ImportError> {
        let result: Result<Option<imports::Model>, Failure> =
            transaction!(self, "imports.get", tenant, Read, |txn| {
                Ok(by_key(tenant, run).one(txn).await?)
            });
        decode(result.map_err(|f| common!(f, ImportError))?)
    }

    async fn rejects(
        &self,
        tenant: TenantId,
        run: ImportId,
        after_line: u64,
        limit: u32,
    ) -> Result<Vec<RejectedRow>, ImportError> {
        let result: Result<Vec<import_rejects::Model>, Failure> =
            transaction!(self, "imports.rejects", tenant, Read, |txn| {
                let rows = import_rejects::Entity::find()
                    .filter(import_rejects::Column::TenantId.eq(tenant.as_uuid()))
                    .filter(import_rejects::Column::ImportId.eq(run.as_uuid()))
                    .filter(import_rejects::Column::Line.gt(signed(after_line)))
                    .order_by_asc(import_rejects::Column::Line)
                    .limit(u64::from(limit))
                    .all(txn)
                    .await?;
                Ok(rows)
            });
        let rows = result.map_err(|f| common!(f, ImportError))?;
        rows.into_iter()
            .map(|m| RejectedRow::try_from(m).map_err(ImportError::Unknown))
            .collect()
    }
}

/// The run was not at the batch's `from_line`, or another runner moved it
/// there; the batch is rolled back. Holds the run's line (`None`: it is
/// gone).
#[derive(Debug, thiserror::Error)]
#[error("the import is not where the batch continues from")]
struct NotMoved(Option<u64>);

/// An assigned agent vanished or was deactivated between the import's
/// check and its batch: the batch is rolled back and reported.
#[derive(Debug, thiserror::Error)]
#[error("an assigned agent is missing or inactive")]
struct AgentGone;

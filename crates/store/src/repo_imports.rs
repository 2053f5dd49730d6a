//! [`ImportRepository`] on the store.

use async_trait::async_trait;
use leadline_domain::{
    Change, CreateLeadRequest, Event, ImportId, TenantId,
    import::{ImportBatch, ImportRun, ImportStatus, OnDuplicate, RejectedRow},
};
use leadline_ports::{CreateLeadError, ImportError, ImportRepository};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
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
        let result: Result<Result<Option<imports::Model>, ImportError>, Failure> =
            transaction!(self, "imports.commit", tenant, Write, |txn| {
                // Move the run first: a second process importing the same
                // file finds it moved and writes nothing.
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
                    .filter(imports::Column::TenantId.eq(tenant.as_uuid()))
                    .filter(imports::Column::Id.eq(run.as_uuid()))
                    .filter(imports::Column::CommittedLine.eq(signed(batch.from_line)))
                    .exec(txn)
                    .await?;
                if moved.rows_affected != 1 {
                    let now = by_key(tenant, run).one(txn).await?;
                    return Ok(match now {
                        None => Err(ImportError::NotFound),
                        Some(m) => Err(ImportError::Moved {
                            committed_line: u64::try_from(m.committed_line).unwrap_or(0),
                        }),
                    });
                }
                let reqs: Vec<&CreateLeadRequest> = batch.creates.iter().map(|(_, r)| r).collect();
                let created = match insert_many(txn, backend, tenant, &reqs).await? {
                    Ok(leads) => leads,
                    Err(CreateLeadError::AgentNotFound | CreateLeadError::AgentInactive) => {
                        // Dropping the transaction rolls the move back.
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
                Ok(Ok(by_key(tenant, run).one(txn).await?))
            });
        match result {
            Ok(Ok(model)) => decode(model),
            Ok(Err(e)) => Err(e),
            Err(Failure::Other(e)) if e.is::<AgentGone>() => Err(ImportError::AgentUnavailable),
            Err(Failure::ForeignKey(_)) => Err(ImportError::AgentUnavailable),
            Err(f) => Err(common!(f, ImportError)),
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

/// An assigned agent vanished or was deactivated between the import's
/// check and its batch: the batch is rolled back and reported.
#[derive(Debug, thiserror::Error)]
#[error("an assigned agent is missing or inactive")]
struct AgentGone;

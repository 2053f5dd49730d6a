//! [`IdempotencyStore`] on the store.

use async_trait::async_trait;
use leadline_domain::{IdempotencyKey, TenantId};
use leadline_ports::{IdempotencyBegin, IdempotencyError, IdempotencyStore, StoredResponse};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, EntityTrait, QueryFilter, QuerySelect,
    sea_query::{Expr, OnConflict},
};

use crate::{
    Backend, Store,
    entity::idempotency_keys as keys,
    errors::{Failure, common},
    tx::transaction,
};

/// A reservation older than this is presumed abandoned by a crashed process
/// and may be taken over by a retry.
const LEASE: chrono::Duration = chrono::Duration::seconds(60);

fn by_key(tenant: TenantId, key: &IdempotencyKey) -> sea_orm::Select<keys::Entity> {
    keys::Entity::find()
        .filter(keys::Column::TenantId.eq(tenant.as_uuid()))
        .filter(keys::Column::IdemKey.eq(key.as_str()))
}

#[async_trait]
impl IdempotencyStore for Store {
    async fn begin(
        &self,
        tenant: TenantId,
        key: &IdempotencyKey,
        request_hash: [u8; 32],
    ) -> Result<IdempotencyBegin, IdempotencyError> {
        let result: Result<IdempotencyBegin, Failure> =
            transaction!(self, "idempotency.begin", tenant, Write, |txn| {
                let now = crate::now();
                let row = keys::ActiveModel {
                    tenant_id: Set(tenant.as_uuid()),
                    idem_key: Set(key.as_str().to_owned()),
                    request_hash: Set(request_hash.to_vec()),
                    status: Set(None),
                    location: Set(None),
                    response_body: Set(None),
                    created_at: Set(now),
                    completed_at: Set(None),
                    effect_id: Set(None),
                };
                // ON CONFLICT DO NOTHING: a clash must not abort the transaction.
                let inserted = keys::Entity::insert(row)
                    .on_conflict(
                        OnConflict::columns([keys::Column::TenantId, keys::Column::IdemKey])
                            .do_nothing()
                            .to_owned(),
                    )
                    .exec_without_returning(txn)
                    .await?;
                if inserted == 1 {
                    return Ok(IdempotencyBegin::Started);
                }
                let mut select = by_key(tenant, key);
                if self.backend() == Backend::Postgres {
                    select = select.lock_exclusive();
                }
                let Some(existing) = select.one(txn).await? else {
                    // Abandoned by its holder between our two statements; the
                    // client's retry will find the key free.
                    return Ok(IdempotencyBegin::InProgress);
                };
                let outcome = if existing.request_hash != request_hash {
                    IdempotencyBegin::Mismatch
                } else if let (Some(status), Some(body)) = (existing.status, existing.response_body)
                {
                    IdempotencyBegin::Replay(StoredResponse {
                        status: u16::try_from(status).unwrap_or(500),
                        location: existing.location,
                        body,
                    })
                } else if let Some(effect) = existing.effect_id {
                    // The first run's effect committed (the column is written
                    // in the effect's own transaction; on PostgreSQL the
                    // row lock above waited for it to end) but its
                    // response was never stored. Recover it, lease or not.
                    IdempotencyBegin::Recover(effect)
                } else if existing.created_at < now - LEASE {
                    keys::Entity::update_many()
                        .col_expr(keys::Column::CreatedAt, Expr::value(now))
                        .filter(keys::Column::TenantId.eq(tenant.as_uuid()))
                        .filter(keys::Column::IdemKey.eq(key.as_str()))
                        .exec(txn)
                        .await?;
                    IdempotencyBegin::Started
                } else {
                    IdempotencyBegin::InProgress
                };
                Ok(outcome)
            });
        result.map_err(|f| common!(f, IdempotencyError))
    }

    async fn complete(
        &self,
        tenant: TenantId,
        key: &IdempotencyKey,
        response: &StoredResponse,
    ) -> Result<(), IdempotencyError> {
        let result: Result<(), Failure> =
            transaction!(self, "idempotency.complete", tenant, Write, |txn| {
                keys::Entity::update_many()
                    .col_expr(
                        keys::Column::Status,
                        Expr::value(i16::try_from(response.status).unwrap_or(i16::MAX)),
                    )
                    .col_expr(
                        keys::Column::Location,
                        Expr::value(response.location.clone()),
                    )
                    .col_expr(
                        keys::Column::ResponseBody,
                        Expr::value(response.body.clone()),
                    )
                    .col_expr(keys::Column::CompletedAt, Expr::value(crate::now()))
                    .filter(keys::Column::TenantId.eq(tenant.as_uuid()))
                    .filter(keys::Column::IdemKey.eq(key.as_str()))
                    .exec(txn)
                    .await?;
                Ok(())
            });
        result.map_err(|f| common!(f, IdempotencyError))
    }

    async fn abandon(
        &self,
        tenant: TenantId,
        key: &IdempotencyKey,
    ) -> Result<(), IdempotencyError> {
        let result: Result<(), Failure> =
            transaction!(self, "idempotency.abandon", tenant, Write, |txn| {
                keys::Entity::delete_many()
                    .filter(keys::Column::TenantId.eq(tenant.as_uuid()))
                    .filter(keys::Column::IdemKey.eq(key.as_str()))
                    .filter(keys::Column::Status.is_null())
                    // A committed effect keeps its key: a retry must find it
                    // and recover it, never run the request again.
                    .filter(keys::Column::EffectId.is_null())
                    .exec(txn)
                    .await?;
                Ok(())
            });
        result.map_err(|f| common!(f, IdempotencyError))
    }
}

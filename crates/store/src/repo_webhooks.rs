//! [`WebhookRepository`] on the store: a tenant's endpoints, their secrets
//! kept as the sealed bytes the app hands over.

use async_trait::async_trait;
use leadline_domain::{
    MAX_WEBHOOKS_PER_TENANT, Page, PageLimit, TenantId, UpdateWebhookRequest, Webhook, WebhookId,
};
use leadline_ports::{ChangeLog, ChangeLogError, SealedSecret, WebhookError, WebhookRepository};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, Statement,
};

use crate::{
    Backend, Store,
    entity::webhooks,
    errors::{Failure, common},
    tx::transaction,
};

fn by_key(tenant: TenantId, id: WebhookId) -> sea_orm::Select<webhooks::Entity> {
    webhooks::Entity::find()
        .filter(webhooks::Column::TenantId.eq(tenant.as_uuid()))
        .filter(webhooks::Column::Id.eq(id.as_uuid()))
}

fn signed(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// An update's outcome inside its transaction.
enum Step<T> {
    Done(T),
    NotFound,
    Conflict(i64),
}

impl<T> Step<T> {
    fn into_result(self) -> Result<T, WebhookError> {
        match self {
            Self::Done(value) => Ok(value),
            Self::NotFound => Err(WebhookError::NotFound),
            Self::Conflict(current) => Err(WebhookError::Conflict { current }),
        }
    }
}

impl Store {
    /// Reads the endpoint locked for the transaction's write (PostgreSQL;
    /// SQLite has one writer).
    async fn webhook_for_update(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        tenant: TenantId,
        id: WebhookId,
    ) -> Result<Option<webhooks::Model>, Failure> {
        let mut select = by_key(tenant, id);
        if self.backend() == Backend::Postgres {
            select = select.lock_exclusive();
        }
        Ok(select.one(txn).await?)
    }
}

#[async_trait]
impl WebhookRepository for Store {
    async fn create(
        &self,
        tenant: TenantId,
        webhook: &Webhook,
        secret: &SealedSecret,
    ) -> Result<Webhook, WebhookError> {
        // It receives what commits from here on.
        let head = ChangeLog::head(self, tenant).await.map_err(|e| match e {
            ChangeLogError::Unavailable(u) => WebhookError::Unavailable(u),
            other => WebhookError::Unknown(other.into()),
        })?;
        let backend = self.backend();
        let result: Result<bool, Failure> =
            transaction!(self, "webhooks.create", tenant, Write, |txn| {
                if backend == Backend::Postgres {
                    // Two creates at once must not both pass the count.
                    txn.execute_raw(Statement::from_sql_and_values(
                        sea_orm::DbBackend::Postgres,
                        "SELECT pg_advisory_xact_lock(hashtextextended($1::text, 13))",
                        [tenant.as_uuid().into()],
                    ))
                    .await?;
                }
                let existing = webhooks::Entity::find()
                    .filter(webhooks::Column::TenantId.eq(tenant.as_uuid()))
                    .count(txn)
                    .await?;
                if existing >= MAX_WEBHOOKS_PER_TENANT {
                    return Ok(false);
                }
                webhooks::Entity::insert(webhooks::ActiveModel {
                    tenant_id: Set(tenant.as_uuid()),
                    id: Set(webhook.id.as_uuid()),
                    url: Set(webhook.url.to_string()),
                    types: Set(webhook.types.to_list()),
                    active: Set(webhook.active),
                    secret: Set(secret.0.clone()),
                    previous_secret: Set(None),
                    secret_rotated_at: Set(None),
                    previous_secret_expires_at: Set(None),
                    after_tx: Set(signed(head.tx)),
                    after_seq: Set(signed(head.seq)),
                    created_at: Set(webhook.created_at),
                    updated_at: Set(webhook.updated_at),
                    version: Set(webhook.version),
                })
                .exec_without_returning(txn)
                .await?;
                Ok(true)
            });
        match result {
            Ok(true) => Ok(webhook.clone()),
            Ok(false) => Err(WebhookError::TooMany {
                max: MAX_WEBHOOKS_PER_TENANT,
            }),
            Err(f) => Err(common!(f, WebhookError)),
        }
    }

    async fn get(&self, tenant: TenantId, id: WebhookId) -> Result<Webhook, WebhookError> {
        let result: Result<Option<webhooks::Model>, Failure> =
            transaction!(self, "webhooks.get", tenant, Read, |txn| {
                Ok(by_key(tenant, id).one(txn).await?)
            });
        match result {
            Ok(Some(m)) => Webhook::try_from(m).map_err(WebhookError::Unknown),
            Ok(None) => Err(WebhookError::NotFound),
            Err(f) => Err(common!(f, WebhookError)),
        }
    }

    async fn list(
        &self,
        tenant: TenantId,
        after: Option<WebhookId>,
        limit: PageLimit,
    ) -> Result<Page<Webhook>, WebhookError> {
        let result: Result<Vec<webhooks::Model>, Failure> =
            transaction!(self, "webhooks.list", tenant, Read, |txn| {
                let mut query = webhooks::Entity::find()
                    .filter(webhooks::Column::TenantId.eq(tenant.as_uuid()));
                if let Some(after) = after {
                    query = query.filter(webhooks::Column::Id.gt(after.as_uuid()));
                }
                Ok(query
                    .order_by_asc(webhooks::Column::Id)
                    .limit(u64::from(limit.get()) + 1)
                    .all(txn)
                    .await?)
            });
        let rows = result.map_err(|f| common!(f, WebhookError))?;
        let hooks = rows
            .into_iter()
            .map(Webhook::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(hooks, limit))
    }

    async fn update(
        &self,
        tenant: TenantId,
        id: WebhookId,
        req: &UpdateWebhookRequest,
    ) -> Result<Webhook, WebhookError> {
        let result: Result<Step<Webhook>, Failure> =
            transaction!(self, "webhooks.update", tenant, Write, |txn| {
                let Some(current) = self.webhook_for_update(txn, tenant, id).await? else {
                    return Ok(Step::NotFound);
                };
                let current = Webhook::try_from(current)?;
                let next = match current.apply(req, crate::now()) {
                    Ok(next) => next,
                    Err(stale) => return Ok(Step::Conflict(stale)),
                };
                let updated = webhooks::Entity::update_many()
                    .set(webhooks::ActiveModel::fields_of(&next))
                    .filter(webhooks::Column::TenantId.eq(tenant.as_uuid()))
                    .filter(webhooks::Column::Id.eq(id.as_uuid()))
                    .filter(webhooks::Column::Version.eq(current.version))
                    .exec(txn)
                    .await?;
                if updated.rows_affected != 1 {
                    return Ok(Step::Conflict(current.version));
                }
                Ok(Step::Done(next))
            });
        result.map_err(|f| common!(f, WebhookError))?.into_result()
    }

    async fn rotate(
        &self,
        tenant: TenantId,
        id: WebhookId,
        secret: &SealedSecret,
    ) -> Result<Webhook, WebhookError> {
        let result: Result<Step<Webhook>, Failure> =
            transaction!(self, "webhooks.rotate", tenant, Write, |txn| {
                let Some(current) = self.webhook_for_update(txn, tenant, id).await? else {
                    return Ok(Step::NotFound);
                };
                let old_secret = current.secret.clone();
                let current = Webhook::try_from(current)?;
                let next = current.rotated(crate::now());
                let mut row = webhooks::ActiveModel::fields_of(&next);
                row.secret = Set(secret.0.clone());
                row.previous_secret = Set(Some(old_secret));
                let updated = webhooks::Entity::update_many()
                    .set(row)
                    .filter(webhooks::Column::TenantId.eq(tenant.as_uuid()))
                    .filter(webhooks::Column::Id.eq(id.as_uuid()))
                    .filter(webhooks::Column::Version.eq(current.version))
                    .exec(txn)
                    .await?;
                if updated.rows_affected != 1 {
                    return Ok(Step::Conflict(current.version));
                }
                Ok(Step::Done(next))
            });
        result.map_err(|f| common!(f, WebhookError))?.into_result()
    }

    async fn delete(&self, tenant: TenantId, id: WebhookId) -> Result<(), WebhookError> {
        let result: Result<u64, Failure> =
            transaction!(self, "webhooks.delete", tenant, Write, |txn| {
                let deleted = webhooks::Entity::delete_many()
                    .filter(webhooks::Column::TenantId.eq(tenant.as_uuid()))
                    .filter(webhooks::Column::Id.eq(id.as_uuid()))
                    .exec(txn)
                    .await?;
                Ok(deleted.rows_affected)
            });
        match result {
            Ok(0) => Err(WebhookError::NotFound),
            Ok(_) => Ok(()),
            Err(f) => Err(common!(f, WebhookError)),
        }
    }
}

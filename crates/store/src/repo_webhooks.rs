//! [`WebhookRepository`] on the store: a tenant's endpoints, their secrets
//! kept as the sealed bytes the app hands over.

use async_trait::async_trait;
use std::time::Duration;

use leadline_domain::{
    ChangePosition, Channel, DeadLetter, MAX_WEBHOOKS_PER_TENANT, MessageChannels, Page, PageLimit,
    TenantId, UpdateWebhookRequest, Webhook, WebhookId, WebhookRefused,
};
use leadline_ports::{
    ChangeLog, ChangeLogError, ClaimedWebhook, SealedSecret, WebhookError, WebhookProgress,
    WebhookQueue, WebhookRepository,
};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, Condition, ConnectionTrait, DbBackend, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, Statement,
    sea_query::{Expr, LockBehavior, LockType},
};

use crate::{
    Backend, Store,
    entity::{webhook_dead_letters, webhooks},
    errors::{Failure, common},
    tx::transaction,
};

/// Tenants served per scan.
const SCAN_TENANTS: u32 = 64;

fn unsigned(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

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
    Refused(WebhookRefused),
    ChannelTaken(Channel, WebhookId),
}

impl<T> Step<T> {
    fn into_result(self) -> Result<T, WebhookError> {
        match self {
            Self::Done(value) => Ok(value),
            Self::NotFound => Err(WebhookError::NotFound),
            Self::Conflict(current) => Err(WebhookError::Conflict { current }),
            Self::Refused(refused) => Err(refused.into()),
            Self::ChannelTaken(channel, by) => Err(WebhookError::ChannelTaken { channel, by }),
        }
    }
}

/// Serialises the writes that check something across the tenant's
/// endpoints (their count, who carries which channel): PostgreSQL takes a
/// transaction-scoped advisory lock per tenant; SQLite has one writer.
async fn lock_tenant_endpoints(
    txn: &sea_orm::DatabaseTransaction,
    backend: Backend,
    tenant: TenantId,
) -> Result<(), Failure> {
    if backend == Backend::Postgres {
        txn.execute_raw(Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "SELECT pg_advisory_xact_lock(hashtextextended($1::text, 13))",
            [tenant.as_uuid().into()],
        ))
        .await?;
    }
    Ok(())
}

/// The tenant's endpoints that carry any channel, as `(id, channels)`.
pub(crate) async fn channel_endpoints(
    txn: &sea_orm::DatabaseTransaction,
    tenant: TenantId,
) -> Result<Vec<webhooks::Model>, Failure> {
    Ok(webhooks::Entity::find()
        .filter(webhooks::Column::TenantId.eq(tenant.as_uuid()))
        .filter(webhooks::Column::Channels.ne(""))
        .order_by_asc(webhooks::Column::CreatedAt)
        .all(txn)
        .await?)
}

/// Another endpoint than `except` carrying one of `channels`, if any.
async fn channel_taken(
    txn: &sea_orm::DatabaseTransaction,
    tenant: TenantId,
    except: WebhookId,
    channels: &MessageChannels,
) -> Result<Option<(Channel, WebhookId)>, Failure> {
    if channels.is_empty() {
        return Ok(None);
    }
    for other in channel_endpoints(txn, tenant).await? {
        if other.id == except.as_uuid() {
            continue;
        }
        let theirs = MessageChannels::from_list(&other.channels).unwrap_or_default();
        if let Some(&channel) = channels.as_slice().iter().find(|&&c| theirs.contains(c)) {
            return Ok(Some((channel, WebhookId::from_uuid(other.id))));
        }
    }
    Ok(None)
}

impl Store {
    /// Where the tenant's change log ends: an endpoint's stream starts
    /// there.
    async fn log_head(&self, tenant: TenantId) -> Result<ChangePosition, WebhookError> {
        ChangeLog::head(self, tenant).await.map_err(|e| match e {
            ChangeLogError::Unavailable(u) => WebhookError::Unavailable(u),
            other => WebhookError::Unknown(other.into()),
        })
    }

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

fn claimed(m: webhooks::Model, lease: uuid::Uuid) -> Result<ClaimedWebhook, Failure> {
    let (secret, previous, after, attempts) = (
        SealedSecret(m.secret.clone()),
        m.previous_secret.clone().map(SealedSecret),
        ChangePosition {
            tx: unsigned(m.after_tx),
            seq: unsigned(m.after_seq),
        },
        u32::try_from(m.attempts).unwrap_or(0),
    );
    let webhook = Webhook::try_from(m)?;
    let previous_secret = previous.filter(|_| webhook.previous_secret_signs(crate::now()));
    Ok(ClaimedWebhook {
        webhook,
        lease,
        after,
        attempts,
        secret,
        previous_secret,
    })
}

/// Writes `row` (the endpoint's own fields) over `tenant`'s endpoint `id`
/// only if it is still at `version`: a conditional write, safe even where
/// no row lock is taken (SQLite serialises instead). `false`: it moved.
async fn write_at_version(
    txn: &sea_orm::DatabaseTransaction,
    tenant: TenantId,
    id: WebhookId,
    version: i64,
    row: webhooks::ActiveModel,
) -> Result<bool, Failure> {
    let updated = webhooks::Entity::update_many()
        .set(row)
        .filter(webhooks::Column::TenantId.eq(tenant.as_uuid()))
        .filter(webhooks::Column::Id.eq(id.as_uuid()))
        .filter(webhooks::Column::Version.eq(version))
        .exec(txn)
        .await?;
    Ok(updated.rows_affected == 1)
}

#[async_trait]
impl WebhookQueue for Store {
    async fn due_tenants(&self, limit: u32) -> Result<Vec<TenantId>, WebhookError> {
        let limit = limit.clamp(1, SCAN_TENANTS);
        let nobody = TenantId::from_uuid(uuid::Uuid::nil());
        let result: Result<Vec<uuid::Uuid>, Failure> =
            transaction!(self, "webhooks.scan", nobody, Read, |txn| {
                let now = crate::now();
                if self.backend() == Backend::Postgres {
                    let rows = txn
                        .query_all_raw(Statement::from_sql_and_values(
                            DbBackend::Postgres,
                            "SELECT tenant_id FROM webhook_due_tenants($1, $2)",
                            [now.into(), i32::try_from(limit).unwrap_or(64).into()],
                        ))
                        .await?;
                    return rows
                        .iter()
                        .map(|r| r.try_get_by_index::<uuid::Uuid>(0).map_err(Failure::from))
                        .collect();
                }
                let rows: Vec<uuid::Uuid> = webhooks::Entity::find()
                    .select_only()
                    .column(webhooks::Column::TenantId)
                    .filter(webhooks::Column::Active.eq(true))
                    .filter(webhooks::Column::Changes.eq(true))
                    .filter(webhooks::Column::NextAttemptAt.lte(now))
                    .group_by(webhooks::Column::TenantId)
                    .order_by_asc(webhooks::Column::NextAttemptAt.min())
                    .limit(u64::from(limit))
                    .into_tuple()
                    .all(txn)
                    .await?;
                Ok(rows)
            });
        result
            .map(|ids| ids.into_iter().map(TenantId::from_uuid).collect())
            .map_err(|f| common!(f, WebhookError))
    }

    async fn claim(
        &self,
        tenant: TenantId,
        lease: Duration,
        woken: bool,
    ) -> Result<Vec<ClaimedWebhook>, WebhookError> {
        let token = uuid::Uuid::now_v7();
        let lease = chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::minutes(5));
        let result: Result<Vec<ClaimedWebhook>, Failure> =
            transaction!(self, "webhooks.claim", tenant, Write, |txn| {
                let now = crate::now();
                // Due; or, when woken, caught up and held by nobody.
                let claimable = if woken {
                    Condition::any()
                        .add(webhooks::Column::NextAttemptAt.lte(now))
                        .add(
                            Condition::all()
                                .add(webhooks::Column::Idle.eq(true))
                                .add(webhooks::Column::LeaseToken.is_null()),
                        )
                } else {
                    Condition::all().add(webhooks::Column::NextAttemptAt.lte(now))
                };
                let mut due = webhooks::Entity::find()
                    .select_only()
                    .column(webhooks::Column::Id)
                    .filter(webhooks::Column::TenantId.eq(tenant.as_uuid()))
                    .filter(webhooks::Column::Active.eq(true))
                    .filter(webhooks::Column::Changes.eq(true))
                    .filter(claimable.clone())
                    .order_by_asc(webhooks::Column::NextAttemptAt);
                if self.backend() == Backend::Postgres {
                    due = due.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
                }
                let ids: Vec<uuid::Uuid> = due.into_tuple().all(txn).await?;
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let rows = webhooks::Entity::update_many()
                    .col_expr(webhooks::Column::LeaseToken, Expr::value(token))
                    .col_expr(webhooks::Column::NextAttemptAt, Expr::value(now + lease))
                    .col_expr(webhooks::Column::Idle, Expr::value(false))
                    .filter(webhooks::Column::TenantId.eq(tenant.as_uuid()))
                    .filter(webhooks::Column::Id.is_in(ids))
                    // Checked again: what the select saw may have moved on.
                    .filter(webhooks::Column::Active.eq(true))
                    .filter(claimable)
                    .exec_with_returning(txn)
                    .await?;
                rows.into_iter().map(|m| claimed(m, token)).collect()
            });
        result.map_err(|f| common!(f, WebhookError))
    }

    async fn progress(
        &self,
        claimed: &ClaimedWebhook,
        progress: &WebhookProgress,
    ) -> Result<bool, WebhookError> {
        let tenant = claimed.webhook.tenant_id;
        let result: Result<bool, Failure> =
            transaction!(self, "webhooks.progress", tenant, Write, |txn| {
                let mut update = webhooks::Entity::update_many()
                    .col_expr(
                        webhooks::Column::AfterTx,
                        Expr::value(signed(progress.after.tx)),
                    )
                    .col_expr(
                        webhooks::Column::AfterSeq,
                        Expr::value(signed(progress.after.seq)),
                    )
                    .col_expr(
                        webhooks::Column::Attempts,
                        Expr::value(i32::try_from(progress.attempts).unwrap_or(i32::MAX)),
                    )
                    .col_expr(
                        webhooks::Column::NextAttemptAt,
                        Expr::value(progress.next_attempt_at),
                    )
                    .col_expr(
                        webhooks::Column::LastError,
                        Expr::value(progress.last_error.clone()),
                    )
                    .col_expr(webhooks::Column::Idle, Expr::value(progress.idle))
                    .col_expr(
                        webhooks::Column::LeaseToken,
                        Expr::value(None::<uuid::Uuid>),
                    );
                if let Some(at) = progress.delivered_at {
                    update = update.col_expr(webhooks::Column::LastDeliveredAt, Expr::value(at));
                }
                let updated = update
                    .filter(webhooks::Column::TenantId.eq(tenant.as_uuid()))
                    .filter(webhooks::Column::Id.eq(claimed.webhook.id.as_uuid()))
                    .filter(webhooks::Column::LeaseToken.eq(claimed.lease))
                    .exec(txn)
                    .await?;
                if updated.rows_affected != 1 {
                    return Ok(false);
                }
                if !progress.dead_letters.is_empty() {
                    webhook_dead_letters::Entity::insert_many(
                        progress
                            .dead_letters
                            .iter()
                            .map(|d| webhook_dead_letters::ActiveModel::of(tenant.as_uuid(), d)),
                    )
                    .on_conflict_do_nothing()
                    .exec_without_returning(txn)
                    .await?;
                }
                Ok(true)
            });
        result.map_err(|f| common!(f, WebhookError))
    }

    async fn dead_letters(
        &self,
        tenant: TenantId,
        webhook: WebhookId,
        limit: PageLimit,
    ) -> Result<Vec<DeadLetter>, WebhookError> {
        let result: Result<Option<Vec<webhook_dead_letters::Model>>, Failure> =
            transaction!(self, "webhooks.dead_letters", tenant, Read, |txn| {
                if by_key(tenant, webhook).one(txn).await?.is_none() {
                    return Ok(None);
                }
                Ok(Some(
                    webhook_dead_letters::Entity::find()
                        .filter(webhook_dead_letters::Column::TenantId.eq(tenant.as_uuid()))
                        .filter(webhook_dead_letters::Column::WebhookId.eq(webhook.as_uuid()))
                        .order_by_desc(webhook_dead_letters::Column::Tx)
                        .order_by_desc(webhook_dead_letters::Column::Seq)
                        .limit(u64::from(limit.get()))
                        .all(txn)
                        .await?,
                ))
            });
        match result {
            Ok(Some(rows)) => rows
                .into_iter()
                .map(DeadLetter::try_from)
                .collect::<Result<_, _>>()
                .map_err(WebhookError::Unknown),
            Ok(None) => Err(WebhookError::NotFound),
            Err(f) => Err(common!(f, WebhookError)),
        }
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
        let head = self.log_head(tenant).await?;
        let backend = self.backend();
        let result: Result<Step<()>, Failure> =
            transaction!(self, "webhooks.create", tenant, Write, |txn| {
                // Two creates at once must not both pass the count, nor
                // both take a channel.
                lock_tenant_endpoints(txn, backend, tenant).await?;
                let existing = webhooks::Entity::find()
                    .filter(webhooks::Column::TenantId.eq(tenant.as_uuid()))
                    .count(txn)
                    .await?;
                if existing >= MAX_WEBHOOKS_PER_TENANT {
                    return Ok(Step::Conflict(0));
                }
                if let Some((channel, by)) =
                    channel_taken(txn, tenant, webhook.id, &webhook.channels).await?
                {
                    return Ok(Step::ChannelTaken(channel, by));
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
                    attempts: Set(0),
                    next_attempt_at: Set(webhook.created_at),
                    lease_token: Set(None),
                    last_error: Set(None),
                    last_delivered_at: Set(None),
                    idle: Set(true),
                    changes: Set(webhook.changes),
                    channels: Set(webhook.channels.to_list()),
                })
                .exec_without_returning(txn)
                .await?;
                Ok(Step::Done(()))
            });
        match result {
            Ok(Step::Conflict(_)) => Err(WebhookError::TooMany {
                max: MAX_WEBHOOKS_PER_TENANT,
            }),
            Ok(step) => step.into_result().map(|()| webhook.clone()),
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
        // An endpoint whose feed is turned on starts from here, not from
        // where it was made.
        let head = if req.changes == Some(true) {
            Some(self.log_head(tenant).await?)
        } else {
            None
        };
        let backend = self.backend();
        let result: Result<Step<Webhook>, Failure> =
            transaction!(self, "webhooks.update", tenant, Write, |txn| {
                if req.channels.is_some() {
                    lock_tenant_endpoints(txn, backend, tenant).await?;
                }
                let Some(current) = self.webhook_for_update(txn, tenant, id).await? else {
                    return Ok(Step::NotFound);
                };
                let current = Webhook::try_from(current)?;
                let next = match current.apply(req, crate::now()) {
                    Ok(next) => next,
                    Err(refused) => return Ok(Step::Refused(refused)),
                };
                if let Some(channels) = &req.channels
                    && let Some((channel, by)) = channel_taken(txn, tenant, id, channels).await?
                {
                    return Ok(Step::ChannelTaken(channel, by));
                }
                let mut row = webhooks::ActiveModel::fields_of(&next);
                if let Some(head) = head.filter(|_| !current.changes) {
                    row.after_tx = Set(signed(head.tx));
                    row.after_seq = Set(signed(head.seq));
                }
                write_at_version(txn, tenant, id, current.version, row)
                    .await
                    .map(|written| {
                        if written {
                            Step::Done(next)
                        } else {
                            Step::Conflict(current.version)
                        }
                    })
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
                write_at_version(txn, tenant, id, current.version, row)
                    .await
                    .map(|written| {
                        if written {
                            Step::Done(next)
                        } else {
                            Step::Conflict(current.version)
                        }
                    })
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

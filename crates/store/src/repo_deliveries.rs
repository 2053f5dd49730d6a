//! [`DeliveryRepository`] on the store: the outbox as a work queue.
//!
//! A claim has two steps. A *scan* finds which tenants have due work: the
//! one cross-tenant read leadline makes. On PostgreSQL it calls
//! `relay_due_tenants` (migration 9), a `SECURITY DEFINER` function that
//! returns tenant ids and due times and nothing else, so the service role
//! never reads another tenant's row; on SQLite it is the same query.
//! Then, per tenant and in that tenant's context like every other write,
//! the due rows are locked (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so
//! relays running side by side never wait for or take each other's rows;
//! SQLite has one writer) and leased: `next_attempt_at` moves one lease
//! ahead and a fresh `lease_token` marks the claim. An outcome is recorded
//! only while that token still holds, so a relay whose lease ran out cannot
//! overwrite the outcome of the relay that took the row over.
//!
//! One tenant's trouble stays its own: a row whose message no longer
//! decodes is failed (with the reason) instead of being claimed, and a
//! tenant whose claim fails is skipped for the round, so the rest of the
//! queue keeps moving.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leadline_domain::{
    Channel, Decision, Delivery, DeliveryId, DeliveryStatus, Email, MessageChannels, Page,
    PageLimit, Phone, Recipient, SenderIdentity, TenantId, Webhook, WebhookId, WebhookUrl,
};
use leadline_ports::{
    AttemptRecord, ClaimedDelivery, DeliveryError, DeliveryRepository, MessageRoute, QueueDepth,
    SealedSecret,
};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Statement,
    sea_query::{Expr, LockBehavior, LockType, OnConflict},
};

use crate::{
    Backend, Store,
    entity::{delivery_attempts, email_senders, leads, outbox},
    errors::{Failure, common},
    tx::transaction,
};

/// A lead as a delivery needs it: id, email, phone, first and last name,
/// and when it was deleted.
type Person = (
    uuid::Uuid,
    Option<String>,
    Option<String>,
    String,
    String,
    Option<DateTime<Utc>>,
);

/// The recipient a lead row makes (none when the lead was deleted). An
/// address that no longer parses counts as none: the attempt then fails
/// saying so, instead of the claim failing.
fn recipient_of(person: &Person) -> Option<Recipient> {
    let (_, email, phone, first, last, deleted_at) = person;
    if deleted_at.is_some() {
        return None;
    }
    let name = format!("{first} {last}").trim().to_owned();
    Some(Recipient {
        name: (!name.is_empty()).then_some(name),
        email: email.as_deref().and_then(|e| Email::parse(e).ok()),
        phone: phone.as_deref().and_then(|p| Phone::parse(p).ok()),
    })
}

/// The endpoint of `channel` among `endpoints` (the tenant's, oldest
/// first), as a route.
fn route_of(
    endpoints: &[crate::entity::webhooks::Model],
    channel: Channel,
) -> Option<MessageRoute> {
    let m = endpoints
        .iter()
        .find(|m| MessageChannels::from_list(&m.channels).is_ok_and(|set| set.contains(channel)))?;
    let url = WebhookUrl::parse(&m.url).ok()?;
    let previous_signs =
        Webhook::try_from(m.clone()).is_ok_and(|w| w.previous_secret_signs(crate::now()));
    Some(MessageRoute {
        webhook: WebhookId::from_uuid(m.id),
        url,
        active: m.active,
        secret: SealedSecret(m.secret.clone()),
        previous_secret: m
            .previous_secret
            .clone()
            .filter(|_| previous_signs)
            .map(SealedSecret),
    })
}

/// Tenants served per scan: the claim goes round them oldest-due first.
const SCAN_TENANTS: u64 = 64;

fn channel_names(channels: &[Channel]) -> Vec<&'static str> {
    channels.iter().map(|c| c.as_str()).collect()
}

fn pending_of(channels: &[Channel]) -> sea_orm::Select<outbox::Entity> {
    outbox::Entity::find()
        .filter(outbox::Column::Status.eq(DeliveryStatus::Pending.as_str()))
        .filter(outbox::Column::Channel.is_in(channel_names(channels)))
}

fn by_key(tenant: TenantId, id: DeliveryId) -> sea_orm::Select<outbox::Entity> {
    outbox::Entity::find()
        .filter(outbox::Column::TenantId.eq(tenant.as_uuid()))
        .filter(outbox::Column::Id.eq(id.as_uuid()))
}

fn delivery(m: &outbox::Model) -> Result<Delivery, Failure> {
    Delivery::try_from(m).map_err(Failure::Other)
}

/// Fails a claimed row whose stored message no longer decodes, saying why,
/// so it is neither delivered nor claimed again.
async fn fail_corrupt(
    txn: &DatabaseTransaction,
    row: &outbox::Model,
    why: &str,
) -> Result<(), Failure> {
    tracing::error!(delivery = %row.id, tenant = %row.tenant_id, error = why, "relay: a stored delivery no longer decodes; failing it");
    let now = crate::now();
    outbox::Entity::update_many()
        .col_expr(
            outbox::Column::Status,
            Expr::value(DeliveryStatus::Failed.as_str()),
        )
        .col_expr(outbox::Column::DispatchedAt, Expr::value(now))
        .col_expr(outbox::Column::UpdatedAt, Expr::value(now))
        .col_expr(outbox::Column::LeaseToken, Expr::value(None::<uuid::Uuid>))
        .col_expr(
            outbox::Column::LastError,
            Expr::value(leadline_domain::delivery::truncate(
                &format!("the stored message cannot be read: {why}"),
                2000,
            )),
        )
        .filter(outbox::Column::TenantId.eq(row.tenant_id))
        .filter(outbox::Column::Id.eq(row.id))
        .exec(txn)
        .await?;
    Ok(())
}

/// The tenant whose context no row matches: the scan's own (it sees rows
/// through `relay_scan` only).
fn no_tenant() -> TenantId {
    TenantId::from_uuid(uuid::Uuid::nil())
}

impl Store {
    /// Claims up to `limit` due rows of `tenant`.
    async fn claim_in(
        &self,
        tenant: TenantId,
        channels: &[Channel],
        limit: u64,
        lease: Duration,
    ) -> Result<Vec<ClaimedDelivery>, Failure> {
        let token = uuid::Uuid::now_v7();
        let lease = chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::minutes(5));
        transaction!(self, "deliveries.claim", tenant, Write, |txn| {
            let now = crate::now();
            let mut due = pending_of(channels)
                .select_only()
                .column(outbox::Column::Id)
                .filter(outbox::Column::TenantId.eq(tenant.as_uuid()))
                .filter(outbox::Column::NextAttemptAt.lte(now))
                .order_by_asc(outbox::Column::NextAttemptAt)
                .limit(limit);
            if self.backend() == Backend::Postgres {
                due = due.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
            }
            let ids: Vec<uuid::Uuid> = due.into_tuple().all(txn).await?;
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let rows = outbox::Entity::update_many()
                .col_expr(outbox::Column::LeaseToken, Expr::value(token))
                .col_expr(outbox::Column::NextAttemptAt, Expr::value(now + lease))
                .col_expr(outbox::Column::UpdatedAt, Expr::value(now))
                .filter(outbox::Column::TenantId.eq(tenant.as_uuid()))
                .filter(outbox::Column::Id.is_in(ids))
                // Checked again: what the select saw may have moved on.
                .filter(outbox::Column::Status.eq(DeliveryStatus::Pending.as_str()))
                .filter(outbox::Column::NextAttemptAt.lte(now))
                .exec_with_returning(txn)
                .await?;
            let lead_ids: Vec<uuid::Uuid> = rows.iter().map(|r| r.lead_id).collect();
            let people: Vec<Person> = leads::Entity::find()
                .select_only()
                .column(leads::Column::Id)
                .column(leads::Column::Email)
                .column(leads::Column::Phone)
                .column(leads::Column::FirstName)
                .column(leads::Column::LastName)
                .column(leads::Column::DeletedAt)
                .filter(leads::Column::TenantId.eq(tenant.as_uuid()))
                .filter(leads::Column::Id.is_in(lead_ids))
                .into_tuple()
                .all(txn)
                .await?;
            let sender = match email_senders::Entity::find_by_id(tenant.as_uuid())
                .one(txn)
                .await?
                .map(SenderIdentity::try_from)
                .transpose()
            {
                Ok(sender) => sender,
                Err(e) => {
                    tracing::error!(%tenant, error = %e, "relay: the tenant's sender no longer reads back; using smtp.from");
                    None
                }
            };
            let endpoints = if rows.iter().any(|r| r.channel != Channel::Email.as_str()) {
                crate::repo_webhooks::channel_endpoints(txn, tenant).await?
            } else {
                Vec::new()
            };
            let mut claimed = Vec::with_capacity(rows.len());
            for row in &rows {
                let decoded =
                    Delivery::try_from(row).and_then(|d| outbox::message_of(row).map(|m| (d, m)));
                let (delivery, message) = match decoded {
                    Ok(pair) => pair,
                    Err(e) => {
                        fail_corrupt(txn, row, &format!("{e:#}")).await?;
                        continue;
                    }
                };
                let recipient = people
                    .iter()
                    .find(|p| p.0 == row.lead_id)
                    .and_then(recipient_of);
                let route = (delivery.channel != Channel::Email)
                    .then(|| route_of(&endpoints, delivery.channel))
                    .flatten();
                claimed.push(ClaimedDelivery {
                    delivery,
                    lease: token,
                    round_start: u32::try_from(row.round_start).unwrap_or(0),
                    message,
                    recipient,
                    sender: sender.clone(),
                    route,
                });
            }
            Ok(claimed)
        })
    }
}

#[async_trait]
impl DeliveryRepository for Store {
    async fn claim_due(
        &self,
        channels: &[Channel],
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<ClaimedDelivery>, DeliveryError> {
        if channels.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let tenants: Result<Vec<uuid::Uuid>, Failure> = transaction!(
            self,
            "deliveries.scan",
            no_tenant(),
            Read,
            |txn| {
                let now = crate::now();
                if self.backend() == Backend::Postgres {
                    let rows = txn
                        .query_all_raw(Statement::from_sql_and_values(
                            DbBackend::Postgres,
                            "SELECT tenant_id FROM relay_due_tenants(string_to_array($1, ','), $2, $3)",
                            [
                                channel_names(channels).join(",").into(),
                                now.into(),
                                i32::try_from(SCAN_TENANTS).unwrap_or(64).into(),
                            ],
                        ))
                        .await?;
                    return rows
                        .iter()
                        .map(|r| r.try_get_by_index::<uuid::Uuid>(0).map_err(Failure::from))
                        .collect();
                }
                let rows: Vec<(uuid::Uuid, Option<DateTime<Utc>>)> = pending_of(channels)
                    .select_only()
                    .column(outbox::Column::TenantId)
                    .column_as(outbox::Column::NextAttemptAt.min(), "due")
                    .filter(outbox::Column::NextAttemptAt.lte(now))
                    .group_by(outbox::Column::TenantId)
                    .order_by_asc(Expr::col(sea_orm::sea_query::Alias::new("due")))
                    .limit(SCAN_TENANTS)
                    .into_tuple()
                    .all(txn)
                    .await?;
                Ok(rows.into_iter().map(|(t, _)| t).collect())
            }
        );
        let tenants = tenants.map_err(|f| common!(f, DeliveryError))?;
        let mut claimed = Vec::new();
        let share = u64::from(limit)
            .div_ceil(u64::try_from(tenants.len()).unwrap_or(1).max(1))
            .max(1);
        for tenant in tenants {
            let room = u64::from(limit).saturating_sub(claimed.len() as u64);
            if room == 0 {
                break;
            }
            match self
                .claim_in(
                    TenantId::from_uuid(tenant),
                    channels,
                    share.min(room),
                    lease,
                )
                .await
            {
                Ok(got) => claimed.extend(got),
                // An unreachable store fails the round; anything else is
                // this tenant's alone: the others go on.
                Err(f @ (Failure::Unavailable(_) | Failure::Transient(..)))
                    if claimed.is_empty() =>
                {
                    return Err(common!(f, DeliveryError));
                }
                Err(f) => {
                    tracing::error!(%tenant, error = ?f, "relay: cannot claim this tenant's deliveries; skipping it this round");
                }
            }
        }
        Ok(claimed)
    }

    async fn record(
        &self,
        claimed: &ClaimedDelivery,
        record: &AttemptRecord,
    ) -> Result<bool, DeliveryError> {
        let tenant = claimed.delivery.tenant_id;
        let result: Result<bool, Failure> =
            transaction!(self, "deliveries.record", tenant, Write, |txn| {
                let now = crate::now();
                let status = record.decision.status();
                let next = match record.decision {
                    Decision::RetryAt(at) => at,
                    _ => now,
                };
                let last_error = match record.decision {
                    Decision::Delivered => None,
                    _ => Some(leadline_domain::delivery::truncate(
                        record.outcome.detail(),
                        2000,
                    )),
                };
                let finished = (status != DeliveryStatus::Pending).then_some(now);
                let updated = outbox::Entity::update_many()
                    .col_expr(outbox::Column::Status, Expr::value(status.as_str()))
                    .col_expr(
                        outbox::Column::Attempts,
                        Expr::value(i32::try_from(record.attempt).unwrap_or(i32::MAX)),
                    )
                    .col_expr(outbox::Column::NextAttemptAt, Expr::value(next))
                    .col_expr(outbox::Column::LeaseToken, Expr::value(None::<uuid::Uuid>))
                    .col_expr(outbox::Column::LastError, Expr::value(last_error))
                    .col_expr(outbox::Column::DispatchedAt, Expr::value(finished))
                    .col_expr(outbox::Column::UpdatedAt, Expr::value(now))
                    .filter(outbox::Column::TenantId.eq(tenant.as_uuid()))
                    .filter(outbox::Column::Id.eq(claimed.delivery.id.as_uuid()))
                    .filter(outbox::Column::LeaseToken.eq(claimed.lease))
                    .exec_with_returning(txn)
                    .await?;
                let Some(row) = updated.into_iter().next() else {
                    return Ok(false);
                };
                delivery_attempts::Entity::insert(delivery_attempts::ActiveModel {
                    tenant_id: Set(tenant.as_uuid()),
                    delivery_id: Set(row.id),
                    attempt: Set(i32::try_from(record.attempt).unwrap_or(i32::MAX)),
                    started_at: Set(record.started_at),
                    finished_at: Set(record.finished_at),
                    outcome: Set(record.outcome.label().to_owned()),
                    detail: Set(Some(leadline_domain::delivery::truncate(
                        record.outcome.detail(),
                        2000,
                    ))),
                })
                .on_conflict(
                    // A relay that recorded this attempt and then lost the
                    // COMMIT's reply records it again: keep the first.
                    OnConflict::columns([
                        delivery_attempts::Column::TenantId,
                        delivery_attempts::Column::DeliveryId,
                        delivery_attempts::Column::Attempt,
                    ])
                    .do_nothing()
                    .to_owned(),
                )
                .exec_without_returning(txn)
                .await?;
                let after = delivery(&row)?;
                if let Some(event) = after.event_of(record.decision, &record.outcome, now) {
                    crate::changes::record_with_events(
                        txn,
                        std::slice::from_ref(&event),
                        &[leadline_domain::Change::event(&event)],
                    )
                    .await?;
                }
                Ok(true)
            });
        result.map_err(|f| common!(f, DeliveryError))
    }

    async fn defer(
        &self,
        claimed: &ClaimedDelivery,
        at: DateTime<Utc>,
    ) -> Result<bool, DeliveryError> {
        let tenant = claimed.delivery.tenant_id;
        let result: Result<bool, Failure> =
            transaction!(self, "deliveries.defer", tenant, Write, |txn| {
                let done = outbox::Entity::update_many()
                    .col_expr(outbox::Column::NextAttemptAt, Expr::value(at))
                    .col_expr(outbox::Column::LeaseToken, Expr::value(None::<uuid::Uuid>))
                    .col_expr(outbox::Column::UpdatedAt, Expr::value(crate::now()))
                    .filter(outbox::Column::TenantId.eq(tenant.as_uuid()))
                    .filter(outbox::Column::Id.eq(claimed.delivery.id.as_uuid()))
                    .filter(outbox::Column::LeaseToken.eq(claimed.lease))
                    .exec(txn)
                    .await?;
                Ok(done.rows_affected == 1)
            });
        result.map_err(|f| common!(f, DeliveryError))
    }

    async fn depth(&self, channels: &[Channel]) -> Result<QueueDepth, DeliveryError> {
        if channels.is_empty() {
            return Ok(QueueDepth::default());
        }
        let result: Result<QueueDepth, Failure> = transaction!(
            self,
            "deliveries.depth",
            no_tenant(),
            Read,
            |txn| {
                let now = crate::now();
                let (pending, due, oldest): (i64, i64, Option<DateTime<Utc>>) = if self.backend()
                    == Backend::Postgres
                {
                    let row = txn
                            .query_one_raw(Statement::from_sql_and_values(
                                DbBackend::Postgres,
                                "SELECT pending, due, oldest_due FROM relay_queue_depth(string_to_array($1, ','), $2)",
                                [channel_names(channels).join(",").into(), now.into()],
                            ))
                            .await?;
                    match row {
                        Some(r) => (
                            r.try_get_by_index(0)?,
                            r.try_get_by_index(1)?,
                            r.try_get_by_index(2)?,
                        ),
                        None => (0, 0, None),
                    }
                } else {
                    let pending: i64 = pending_of(channels)
                        .select_only()
                        .column_as(outbox::Column::Id.count(), "n")
                        .into_tuple()
                        .one(txn)
                        .await?
                        .unwrap_or(0);
                    let (due, oldest): (i64, Option<DateTime<Utc>>) = pending_of(channels)
                        .select_only()
                        .column_as(outbox::Column::Id.count(), "n")
                        .column_as(outbox::Column::NextAttemptAt.min(), "oldest")
                        .filter(outbox::Column::NextAttemptAt.lte(now))
                        .into_tuple()
                        .one(txn)
                        .await?
                        .unwrap_or((0, None));
                    (pending, due, oldest)
                };
                Ok(QueueDepth {
                    pending: u64::try_from(pending).unwrap_or(0),
                    due: u64::try_from(due).unwrap_or(0),
                    oldest_due: oldest.and_then(|t| (now - t).to_std().ok()),
                })
            }
        );
        result.map_err(|f| common!(f, DeliveryError))
    }

    async fn get(&self, tenant: TenantId, id: DeliveryId) -> Result<Delivery, DeliveryError> {
        let result: Result<Option<outbox::Model>, Failure> =
            transaction!(self, "deliveries.get", tenant, Read, |txn| {
                Ok(by_key(tenant, id).one(txn).await?)
            });
        match result {
            Ok(Some(m)) => Delivery::try_from(&m).map_err(DeliveryError::Unknown),
            Ok(None) => Err(DeliveryError::NotFound),
            Err(f) => Err(common!(f, DeliveryError)),
        }
    }

    async fn list(
        &self,
        tenant: TenantId,
        status: Option<DeliveryStatus>,
        after: Option<DeliveryId>,
        limit: PageLimit,
    ) -> Result<Page<Delivery>, DeliveryError> {
        let result: Result<Vec<outbox::Model>, Failure> =
            transaction!(self, "deliveries.list", tenant, ReplicaRead, |txn| {
                let mut query =
                    outbox::Entity::find().filter(outbox::Column::TenantId.eq(tenant.as_uuid()));
                if let Some(status) = status {
                    query = query.filter(outbox::Column::Status.eq(status.as_str()));
                }
                if let Some(after) = after {
                    query = query.filter(outbox::Column::Id.gt(after.as_uuid()));
                }
                Ok(query
                    .order_by_asc(outbox::Column::Id)
                    .limit(u64::from(limit.get()) + 1)
                    .all(txn)
                    .await?)
            });
        let rows = result.map_err(|f| common!(f, DeliveryError))?;
        let items = rows
            .iter()
            .map(Delivery::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(items, limit))
    }

    async fn retry(&self, tenant: TenantId, id: DeliveryId) -> Result<Delivery, DeliveryError> {
        let result: Result<Result<outbox::Model, DeliveryError>, Failure> =
            transaction!(self, "deliveries.retry", tenant, Write, |txn| {
                let now = crate::now();
                let updated = outbox::Entity::update_many()
                    .col_expr(
                        outbox::Column::Status,
                        Expr::value(DeliveryStatus::Pending.as_str()),
                    )
                    .col_expr(
                        outbox::Column::RoundStart,
                        Expr::col(outbox::Column::Attempts),
                    )
                    .col_expr(outbox::Column::NextAttemptAt, Expr::value(now))
                    .col_expr(outbox::Column::LeaseToken, Expr::value(None::<uuid::Uuid>))
                    .col_expr(
                        outbox::Column::DispatchedAt,
                        Expr::value(None::<DateTime<Utc>>),
                    )
                    .col_expr(outbox::Column::UpdatedAt, Expr::value(now))
                    .filter(outbox::Column::TenantId.eq(tenant.as_uuid()))
                    .filter(outbox::Column::Id.eq(id.as_uuid()))
                    .filter(outbox::Column::Status.is_in([
                        DeliveryStatus::Failed.as_str(),
                        DeliveryStatus::Dead.as_str(),
                    ]))
                    .exec_with_returning(txn)
                    .await?;
                if let Some(row) = updated.into_iter().next() {
                    return Ok(Ok(row));
                }
                Ok(match by_key(tenant, id).one(txn).await? {
                    None => Err(DeliveryError::NotFound),
                    Some(m) => Err(DeliveryError::Conflict {
                        current: m.status.parse().map_err(anyhow::Error::new)?,
                    }),
                })
            });
        match result {
            Ok(Ok(m)) => Delivery::try_from(&m).map_err(DeliveryError::Unknown),
            Ok(Err(e)) => Err(e),
            Err(f) => Err(common!(f, DeliveryError)),
        }
    }

    async fn sender(&self, tenant: TenantId) -> Result<Option<SenderIdentity>, DeliveryError> {
        let result: Result<Option<email_senders::Model>, Failure> =
            transaction!(self, "senders.get", tenant, Read, |txn| {
                Ok(email_senders::Entity::find_by_id(tenant.as_uuid())
                    .one(txn)
                    .await?)
            });
        let row = result.map_err(|f| common!(f, DeliveryError))?;
        Ok(row.map(SenderIdentity::try_from).transpose()?)
    }

    async fn set_sender(
        &self,
        tenant: TenantId,
        sender: &SenderIdentity,
    ) -> Result<(), DeliveryError> {
        let result: Result<(), Failure> = transaction!(self, "senders.set", tenant, Write, |txn| {
            let row = email_senders::ActiveModel {
                tenant_id: Set(tenant.as_uuid()),
                from_email: Set(sender.from_email.as_str().to_owned()),
                from_name: Set(sender.from_name.as_ref().map(|n| n.as_str().to_owned())),
                reply_to: Set(sender.reply_to.as_ref().map(|e| e.as_str().to_owned())),
                unsubscribe: Set(sender.unsubscribe.as_ref().map(|u| u.as_str().to_owned())),
                updated_at: Set(crate::now()),
            };
            email_senders::Entity::insert(row)
                .on_conflict(
                    OnConflict::column(email_senders::Column::TenantId)
                        .update_columns([
                            email_senders::Column::FromEmail,
                            email_senders::Column::FromName,
                            email_senders::Column::ReplyTo,
                            email_senders::Column::Unsubscribe,
                            email_senders::Column::UpdatedAt,
                        ])
                        .to_owned(),
                )
                .exec_without_returning(txn)
                .await?;
            Ok(())
        });
        result.map_err(|f| common!(f, DeliveryError))
    }
}

//! [`UserRepository`] on the store: users, login links, sign-in attempts.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leadline_domain::{
    Email, NewUser, Page, PageLimit, PasswordHash, TenantId, UpdateUserRequest, User, UserId,
};
use leadline_ports::{PeopleError, RecentFailures, UserRepository};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, ExprTrait as _},
};

use crate::{
    Store,
    entity::{login_attempts, login_links, users},
    errors::{Failure, common},
    tx::transaction,
};

/// Attempts read per account or address for the lockout: more than any
/// policy counts.
const FAILURES_READ: u64 = 100;

fn by_key(tenant: TenantId, id: UserId) -> sea_orm::Select<users::Entity> {
    users::Entity::find()
        .filter(users::Column::TenantId.eq(tenant.as_uuid()))
        .filter(users::Column::Id.eq(id.as_uuid()))
}

#[async_trait]
impl UserRepository for Store {
    async fn create(&self, tenant: TenantId, user: &NewUser) -> Result<User, PeopleError> {
        let id = UserId::new();
        let result: Result<users::Model, Failure> =
            transaction!(self, "users.create", tenant, Write, |txn| {
                let now = crate::now();
                let row = users::ActiveModel {
                    tenant_id: Set(tenant.as_uuid()),
                    id: Set(id.as_uuid()),
                    email: Set(user.email.to_string()),
                    name: Set(user.name.to_string()),
                    role: Set(user.role.as_str().to_owned()),
                    agent_id: Set(user.agent_id.map(|a| a.as_uuid())),
                    password_hash: Set(None),
                    created_at: Set(now),
                    updated_at: Set(now),
                    disabled_at: Set(None),
                    version: Set(1),
                };
                let model = users::Entity::insert(row).exec_with_returning(txn).await?;
                audit_user(
                    txn,
                    now,
                    "user.created",
                    None,
                    &User::try_from(model.clone())?,
                )
                .await?;
                Ok(model)
            });
        match result {
            Ok(model) => Ok(User::try_from(model)?),
            Err(Failure::Unique(_)) => Err(PeopleError::DuplicateEmail),
            Err(Failure::ForeignKey(_)) => Err(PeopleError::AgentNotFound),
            Err(f) => Err(common!(f, PeopleError)),
        }
    }

    async fn get(&self, tenant: TenantId, id: UserId) -> Result<User, PeopleError> {
        let result: Result<Option<users::Model>, Failure> =
            transaction!(self, "users.get", tenant, Read, |txn| {
                Ok(by_key(tenant, id).one(txn).await?)
            });
        match result.map_err(|f| common!(f, PeopleError))? {
            Some(model) => Ok(User::try_from(model)?),
            None => Err(PeopleError::NotFound),
        }
    }

    async fn credentials(
        &self,
        tenant: TenantId,
        email: &Email,
    ) -> Result<Option<(User, Option<PasswordHash>)>, PeopleError> {
        let result: Result<Option<users::Model>, Failure> =
            transaction!(self, "users.credentials", tenant, Read, |txn| {
                Ok(users::Entity::find()
                    .filter(users::Column::TenantId.eq(tenant.as_uuid()))
                    .filter(users::Column::Email.eq(email.as_str()))
                    .one(txn)
                    .await?)
            });
        let Some(model) = result.map_err(|f| common!(f, PeopleError))? else {
            return Ok(None);
        };
        let hash = users::password_of(&model)?;
        Ok(Some((User::try_from(model)?, hash)))
    }

    async fn list(
        &self,
        tenant: TenantId,
        limit: PageLimit,
        after: Option<UserId>,
    ) -> Result<Page<User>, PeopleError> {
        let result: Result<Vec<users::Model>, Failure> =
            transaction!(self, "users.list", tenant, ReplicaRead, |txn| {
                let mut query =
                    users::Entity::find().filter(users::Column::TenantId.eq(tenant.as_uuid()));
                if let Some(after) = after {
                    query = query.filter(users::Column::Id.gt(after.as_uuid()));
                }
                Ok(query
                    .order_by_asc(users::Column::Id)
                    .limit(u64::from(limit.get()) + 1)
                    .all(txn)
                    .await?)
            });
        let users = result
            .map_err(|f| common!(f, PeopleError))?
            .into_iter()
            .map(User::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(users, limit))
    }

    async fn update(
        &self,
        tenant: TenantId,
        id: UserId,
        req: &UpdateUserRequest,
    ) -> Result<User, PeopleError> {
        let result: Result<Result<User, PeopleError>, Failure> =
            transaction!(self, "users.update", tenant, Write, |txn| {
                let Some(current) = by_key(tenant, id).one(txn).await? else {
                    return Ok(Err(PeopleError::NotFound));
                };
                let current = User::try_from(current)?;
                let next = match current.apply(req, crate::now()) {
                    Ok(next) => next,
                    Err(stale) => {
                        return Ok(Err(PeopleError::Conflict {
                            current: stale.current,
                        }));
                    }
                };
                // Moves only from the version read: a concurrent change wins
                // or loses whole.
                let done = users::Entity::update_many()
                    .col_expr(users::Column::Role, Expr::value(next.role.as_str()))
                    .col_expr(users::Column::DisabledAt, Expr::value(next.disabled_at))
                    .col_expr(users::Column::Version, Expr::value(next.version))
                    .col_expr(users::Column::UpdatedAt, Expr::value(crate::now()))
                    .filter(users::Column::TenantId.eq(tenant.as_uuid()))
                    .filter(users::Column::Id.eq(id.as_uuid()))
                    .filter(users::Column::Version.eq(current.version))
                    .exec(txn)
                    .await?;
                if done.rows_affected == 0 {
                    return Ok(Err(PeopleError::Conflict {
                        current: current.version + 1,
                    }));
                }
                audit_user(txn, crate::now(), "user.updated", Some(&current), &next).await?;
                Ok(Ok(next))
            });
        result.map_err(|f| common!(f, PeopleError))?
    }

    async fn set_password(
        &self,
        tenant: TenantId,
        id: UserId,
        hash: &PasswordHash,
    ) -> Result<(), PeopleError> {
        let result: Result<u64, Failure> =
            transaction!(self, "users.set_password", tenant, Write, |txn| {
                let done = users::Entity::update_many()
                    .col_expr(users::Column::PasswordHash, Expr::value(hash.as_str()))
                    .col_expr(users::Column::UpdatedAt, Expr::value(crate::now()))
                    .col_expr(
                        users::Column::Version,
                        Expr::col(users::Column::Version).add(1),
                    )
                    .filter(users::Column::TenantId.eq(tenant.as_uuid()))
                    .filter(users::Column::Id.eq(id.as_uuid()))
                    .exec(txn)
                    .await?;
                if done.rows_affected > 0 {
                    // The hash itself is never recorded: only that it changed.
                    let record = leadline_domain::AuditRecord::new(
                        tenant,
                        crate::now(),
                        &leadline_ports::audit_context(),
                        ("user", id.as_uuid(), "user.password_set"),
                        None,
                        None,
                    );
                    crate::audit::record(txn, &[record]).await?;
                }
                Ok(done.rows_affected)
            });
        match result.map_err(|f| common!(f, PeopleError))? {
            0 => Err(PeopleError::NotFound),
            _ => Ok(()),
        }
    }

    async fn add_login_link(
        &self,
        tenant: TenantId,
        user: UserId,
        token_hash: [u8; 32],
        expires_at: DateTime<Utc>,
    ) -> Result<(), PeopleError> {
        let result: Result<(), Failure> =
            transaction!(self, "users.add_login_link", tenant, Write, |txn| {
                // A new link retires the user's earlier ones.
                login_links::Entity::update_many()
                    .col_expr(login_links::Column::UsedAt, Expr::value(crate::now()))
                    .filter(login_links::Column::TenantId.eq(tenant.as_uuid()))
                    .filter(login_links::Column::UserId.eq(user.as_uuid()))
                    .filter(login_links::Column::UsedAt.is_null())
                    .exec(txn)
                    .await?;
                let row = login_links::ActiveModel {
                    tenant_id: Set(tenant.as_uuid()),
                    token_hash: Set(token_hash.to_vec()),
                    user_id: Set(user.as_uuid()),
                    created_at: Set(crate::now()),
                    expires_at: Set(expires_at),
                    used_at: Set(None),
                };
                login_links::Entity::insert(row)
                    .exec_without_returning(txn)
                    .await?;
                Ok(())
            });
        match result {
            Ok(()) => Ok(()),
            Err(Failure::ForeignKey(_)) => Err(PeopleError::NotFound),
            Err(f) => Err(common!(f, PeopleError)),
        }
    }

    async fn use_login_link(
        &self,
        tenant: TenantId,
        token_hash: [u8; 32],
        now: DateTime<Utc>,
    ) -> Result<Option<User>, PeopleError> {
        let result: Result<Option<users::Model>, Failure> =
            transaction!(self, "users.use_login_link", tenant, Write, |txn| {
                // The conditional update is the once: of two uses racing, one
                // gets the row back.
                let used = login_links::Entity::update_many()
                    .col_expr(login_links::Column::UsedAt, Expr::value(now))
                    .filter(login_links::Column::TenantId.eq(tenant.as_uuid()))
                    .filter(login_links::Column::TokenHash.eq(token_hash.to_vec()))
                    .filter(login_links::Column::UsedAt.is_null())
                    .filter(login_links::Column::ExpiresAt.gt(now))
                    .exec_with_returning(txn)
                    .await?;
                let Some(link) = used.into_iter().next() else {
                    return Ok(None);
                };
                // Using one retires any other the user still had.
                login_links::Entity::update_many()
                    .col_expr(login_links::Column::UsedAt, Expr::value(now))
                    .filter(login_links::Column::TenantId.eq(tenant.as_uuid()))
                    .filter(login_links::Column::UserId.eq(link.user_id))
                    .filter(login_links::Column::UsedAt.is_null())
                    .exec(txn)
                    .await?;
                Ok(by_key(tenant, UserId::from_uuid(link.user_id))
                    .one(txn)
                    .await?)
            });
        result
            .map_err(|f| common!(f, PeopleError))?
            .map(User::try_from)
            .transpose()
            .map_err(PeopleError::Unknown)
    }

    async fn record_attempt(
        &self,
        tenant: TenantId,
        email: &str,
        address: &str,
        succeeded: bool,
    ) -> Result<(), PeopleError> {
        let id = uuid::Uuid::now_v7();
        let result: Result<(), Failure> =
            transaction!(self, "users.record_attempt", tenant, Write, |txn| {
                let row = login_attempts::ActiveModel {
                    tenant_id: Set(tenant.as_uuid()),
                    id: Set(id),
                    email: Set(email.to_owned()),
                    address: Set(address.to_owned()),
                    succeeded: Set(succeeded),
                    at: Set(crate::now()),
                };
                login_attempts::Entity::insert(row)
                    .exec_without_returning(txn)
                    .await?;
                Ok(())
            });
        result.map_err(|f| common!(f, PeopleError))
    }

    async fn recent_failures(
        &self,
        tenant: TenantId,
        email: &str,
        address: &str,
        since: DateTime<Utc>,
    ) -> Result<RecentFailures, PeopleError> {
        let result: Result<RecentFailures, Failure> =
            transaction!(self, "users.recent_failures", tenant, Read, |txn| {
                let of = |column: login_attempts::Column, value: &str| {
                    login_attempts::Entity::find()
                        .filter(login_attempts::Column::TenantId.eq(tenant.as_uuid()))
                        .filter(column.eq(value))
                        .filter(login_attempts::Column::At.gte(since))
                        .filter(login_attempts::Column::Succeeded.eq(false))
                        .order_by_desc(login_attempts::Column::At)
                        .limit(FAILURES_READ)
                };
                let mut account: Vec<DateTime<Utc>> = of(login_attempts::Column::Email, email)
                    .all(txn)
                    .await?
                    .into_iter()
                    .map(|a| a.at)
                    .collect();
                let mut address: Vec<DateTime<Utc>> = of(login_attempts::Column::Address, address)
                    .all(txn)
                    .await?
                    .into_iter()
                    .map(|a| a.at)
                    .collect();
                account.reverse();
                address.reverse();
                Ok(RecentFailures { account, address })
            });
        result.map_err(|f| common!(f, PeopleError))
    }
}

/// Records `action` on `user` (as they were `before`, if they were) in `txn`.
async fn audit_user(
    txn: &sea_orm::DatabaseTransaction,
    at: DateTime<Utc>,
    action: &str,
    before: Option<&User>,
    after: &User,
) -> Result<(), Failure> {
    let view = leadline_domain::audit::user_view;
    let record = leadline_domain::AuditRecord::new(
        after.tenant_id,
        at,
        &leadline_ports::audit_context(),
        ("user", after.id.as_uuid(), action),
        before.map(view).as_ref(),
        Some(&view(after)),
    );
    crate::audit::record(txn, &[record]).await
}

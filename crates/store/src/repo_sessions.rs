//! [`SessionStore`] on the store: console sessions in the database (the
//! default; a Redis store takes them when one is configured).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leadline_domain::{Session, TenantId, UserId};
use leadline_ports::{PeopleError, SessionStore};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};

use crate::{
    Store,
    entity::sessions,
    errors::{Failure, common},
    tx::transaction,
};

fn by_hash(tenant: TenantId, token_hash: [u8; 32]) -> sea_orm::Select<sessions::Entity> {
    sessions::Entity::find()
        .filter(sessions::Column::TenantId.eq(tenant.as_uuid()))
        .filter(sessions::Column::TokenHash.eq(token_hash.to_vec()))
}

#[async_trait]
impl SessionStore for Store {
    async fn create(
        &self,
        token_hash: [u8; 32],
        session: &Session,
        // Kept until refused: the service ends a session it finds dead.
        _keep_until: DateTime<Utc>,
    ) -> Result<(), PeopleError> {
        let tenant = session.tenant_id;
        let result: Result<(), Failure> =
            transaction!(self, "sessions.create", tenant, Write, |txn| {
                let row = sessions::ActiveModel {
                    tenant_id: Set(tenant.as_uuid()),
                    token_hash: Set(token_hash.to_vec()),
                    user_id: Set(session.user_id.as_uuid()),
                    csrf_token: Set(session.csrf_token.clone()),
                    created_at: Set(session.created_at),
                    last_seen_at: Set(session.last_seen_at),
                    expires_at: Set(session.expires_at),
                };
                sessions::Entity::insert(row)
                    .exec_without_returning(txn)
                    .await?;
                Ok(())
            });
        result.map_err(|f| common!(f, PeopleError))
    }

    async fn get(
        &self,
        tenant: TenantId,
        token_hash: [u8; 32],
    ) -> Result<Option<Session>, PeopleError> {
        let result: Result<Option<sessions::Model>, Failure> =
            transaction!(self, "sessions.get", tenant, Read, |txn| {
                Ok(by_hash(tenant, token_hash).one(txn).await?)
            });
        Ok(result.map_err(|f| common!(f, PeopleError))?.map(Into::into))
    }

    async fn touch(
        &self,
        tenant: TenantId,
        token_hash: [u8; 32],
        at: DateTime<Utc>,
        _keep_until: DateTime<Utc>,
    ) -> Result<(), PeopleError> {
        let result: Result<(), Failure> =
            transaction!(self, "sessions.touch", tenant, Write, |txn| {
                sessions::Entity::update_many()
                    .col_expr(sessions::Column::LastSeenAt, Expr::value(at))
                    .filter(sessions::Column::TenantId.eq(tenant.as_uuid()))
                    .filter(sessions::Column::TokenHash.eq(token_hash.to_vec()))
                    .exec(txn)
                    .await?;
                Ok(())
            });
        result.map_err(|f| common!(f, PeopleError))
    }

    async fn end(&self, tenant: TenantId, token_hash: [u8; 32]) -> Result<(), PeopleError> {
        let result: Result<(), Failure> =
            transaction!(self, "sessions.end", tenant, Write, |txn| {
                sessions::Entity::delete_many()
                    .filter(sessions::Column::TenantId.eq(tenant.as_uuid()))
                    .filter(sessions::Column::TokenHash.eq(token_hash.to_vec()))
                    .exec(txn)
                    .await?;
                Ok(())
            });
        result.map_err(|f| common!(f, PeopleError))
    }

    async fn end_all(&self, tenant: TenantId, user: UserId) -> Result<u64, PeopleError> {
        let result: Result<u64, Failure> =
            transaction!(self, "sessions.end_all", tenant, Write, |txn| {
                let done = sessions::Entity::delete_many()
                    .filter(sessions::Column::TenantId.eq(tenant.as_uuid()))
                    .filter(sessions::Column::UserId.eq(user.as_uuid()))
                    .exec(txn)
                    .await?;
                Ok(done.rows_affected)
            });
        result.map_err(|f| common!(f, PeopleError))
    }
}

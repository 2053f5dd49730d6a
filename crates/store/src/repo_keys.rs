//! [`ApiKeyRepository`] on the store.

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use leadline_domain::{
    ApiKey, ApiKeyHash, ApiKeyId, KeyMaterial, KeyRefused, NewApiKey, Page, PageLimit, Tenant,
    TenantId,
};
use leadline_ports::{ApiKeyRepository, AuthenticateError, KeyError, Rotated};
use sea_orm::{
    ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};

use crate::{
    Backend, Store,
    entity::{api_keys, tenants},
    errors::{Failure, common},
    tx::transaction,
};

/// One key of `tenant`; the explicit tenant filter is the first wall, RLS
/// the second.
fn by_key(tenant: TenantId, id: ApiKeyId) -> sea_orm::Select<api_keys::Entity> {
    api_keys::Entity::find()
        .filter(api_keys::Column::TenantId.eq(tenant.as_uuid()))
        .filter(api_keys::Column::Id.eq(id.as_uuid()))
}

/// A key read for a change, locked on PostgreSQL so that a revoke and a
/// rotation of the same key take turns.
async fn for_update(
    txn: &DatabaseTransaction,
    backend: Backend,
    tenant: TenantId,
    id: ApiKeyId,
) -> Result<Option<ApiKey>, Failure> {
    let mut select = by_key(tenant, id);
    if backend == Backend::Postgres {
        select = select.lock_exclusive();
    }
    Ok(select.one(txn).await?.map(ApiKey::try_from).transpose()?)
}

/// What a transaction decided.
enum Step<T> {
    Done(T),
    NotFound,
    Refused(KeyRefused),
}

impl<T> Step<T> {
    fn into_result(self) -> Result<T, KeyError> {
        match self {
            Self::Done(t) => Ok(t),
            Self::NotFound => Err(KeyError::NotFound),
            Self::Refused(r) => Err(KeyError::Refused(r)),
        }
    }
}

#[async_trait]
impl ApiKeyRepository for Store {
    async fn authenticate(
        &self,
        tenant: TenantId,
        hash: ApiKeyHash,
    ) -> Result<(Tenant, ApiKey), AuthenticateError> {
        let result: Result<Option<(api_keys::Model, Option<tenants::Model>)>, Failure> =
            transaction!(self, "keys.authenticate", tenant, Read, |txn| {
                // Once a second at most per key and instance (the app's
                // verified-key cache), so two short indexed reads.
                let Some(key) = api_keys::Entity::find()
                    .filter(api_keys::Column::TenantId.eq(tenant.as_uuid()))
                    .filter(api_keys::Column::KeyHash.eq(hash.as_bytes().to_vec()))
                    .filter(api_keys::Column::RevokedAt.is_null())
                    .one(txn)
                    .await?
                else {
                    return Ok(None);
                };
                let owner = tenants::Entity::find_by_id(tenant.as_uuid())
                    .one(txn)
                    .await?;
                Ok(Some((key, owner)))
            });
        match result {
            Ok(Some((key, Some(tenant)))) => Ok((
                Tenant::try_from(tenant).map_err(AuthenticateError::Unknown)?,
                ApiKey::try_from(key).map_err(AuthenticateError::Unknown)?,
            )),
            Ok(_) => Err(AuthenticateError::InvalidKey),
            Err(f) => Err(common!(f, AuthenticateError)),
        }
    }

    async fn issue(
        &self,
        tenant: TenantId,
        key: &NewApiKey,
        material: &KeyMaterial,
    ) -> Result<ApiKey, KeyError> {
        let id = ApiKeyId::new();
        let result: Result<api_keys::Model, Failure> =
            transaction!(self, "keys.issue", tenant, Write, |txn| {
                let now = crate::now();
                let row = api_keys::issued(tenant, id, key, material, now);
                let model = api_keys::Entity::insert(row)
                    .exec_with_returning(txn)
                    .await?;
                let issued = ApiKey::try_from(model.clone())?;
                audit_key(txn, now, "key.issued", None, &issued).await?;
                Ok(model)
            });
        match result {
            Ok(model) => Ok(ApiKey::try_from(model)?),
            Err(Failure::ForeignKey(_)) => Err(KeyError::NotFound),
            Err(f) => Err(common!(f, KeyError)),
        }
    }

    async fn get(&self, tenant: TenantId, id: ApiKeyId) -> Result<ApiKey, KeyError> {
        let result: Result<Option<api_keys::Model>, Failure> =
            transaction!(self, "keys.get", tenant, Read, |txn| {
                Ok(by_key(tenant, id).one(txn).await?)
            });
        match result.map_err(|f| common!(f, KeyError))? {
            Some(model) => Ok(ApiKey::try_from(model)?),
            None => Err(KeyError::NotFound),
        }
    }

    async fn list(
        &self,
        tenant: TenantId,
        limit: PageLimit,
        after: Option<ApiKeyId>,
    ) -> Result<Page<ApiKey>, KeyError> {
        let result: Result<Vec<api_keys::Model>, Failure> =
            transaction!(self, "keys.list", tenant, Read, |txn| {
                let mut query = api_keys::Entity::find()
                    .filter(api_keys::Column::TenantId.eq(tenant.as_uuid()));
                if let Some(after) = after {
                    query = query.filter(api_keys::Column::Id.gt(after.as_uuid()));
                }
                Ok(query
                    .order_by_asc(api_keys::Column::Id)
                    .limit(u64::from(limit.get()) + 1)
                    .all(txn)
                    .await?)
            });
        let keys = result
            .map_err(|f| common!(f, KeyError))?
            .into_iter()
            .map(ApiKey::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(keys, limit))
    }

    async fn revoke(&self, tenant: TenantId, id: ApiKeyId) -> Result<ApiKey, KeyError> {
        let backend = self.backend();
        let result: Result<Step<ApiKey>, Failure> =
            transaction!(self, "keys.revoke", tenant, Write, |txn| {
                let Some(key) = for_update(txn, backend, tenant, id).await? else {
                    return Ok(Step::NotFound);
                };
                if key.revoked_at.is_some() {
                    return Ok(Step::Done(key));
                }
                let now = crate::now();
                api_keys::Entity::update_many()
                    .col_expr(api_keys::Column::RevokedAt, now.into())
                    .filter(api_keys::Column::TenantId.eq(tenant.as_uuid()))
                    .filter(api_keys::Column::Id.eq(id.as_uuid()))
                    .exec(txn)
                    .await?;
                let revoked = ApiKey {
                    revoked_at: Some(now),
                    ..key.clone()
                };
                audit_key(txn, now, "key.revoked", Some(&key), &revoked).await?;
                Ok(Step::Done(revoked))
            });
        result.map_err(|f| common!(f, KeyError))?.into_result()
    }

    async fn rotate(
        &self,
        tenant: TenantId,
        id: ApiKeyId,
        overlap: Duration,
        material: &KeyMaterial,
    ) -> Result<Rotated, KeyError> {
        let backend = self.backend();
        let new_id = ApiKeyId::new();
        let result: Result<Step<Rotated>, Failure> =
            transaction!(self, "keys.rotate", tenant, Write, |txn| {
                let Some(old) = for_update(txn, backend, tenant, id).await? else {
                    return Ok(Step::NotFound);
                };
                let now = crate::now();
                let deadline = match old.rotation_deadline(now, overlap) {
                    Ok(deadline) => deadline,
                    Err(refused) => return Ok(Step::Refused(refused)),
                };
                let row = api_keys::issued(tenant, new_id, &old.successor(), material, now);
                let new = api_keys::Entity::insert(row)
                    .exec_with_returning(txn)
                    .await?;
                api_keys::Entity::update_many()
                    .col_expr(api_keys::Column::ExpiresAt, Some(deadline).into())
                    .col_expr(api_keys::Column::ReplacedBy, Some(new_id.as_uuid()).into())
                    .filter(api_keys::Column::TenantId.eq(tenant.as_uuid()))
                    .filter(api_keys::Column::Id.eq(id.as_uuid()))
                    .exec(txn)
                    .await?;
                let rotated = Rotated {
                    old: ApiKey {
                        expires_at: Some(deadline),
                        replaced_by: Some(new_id),
                        ..old.clone()
                    },
                    new: ApiKey::try_from(new)?,
                };
                audit_key(txn, now, "key.rotated", Some(&old), &rotated.old).await?;
                audit_key(txn, now, "key.issued", None, &rotated.new).await?;
                Ok(Step::Done(rotated))
            });
        result.map_err(|f| common!(f, KeyError))?.into_result()
    }

    async fn record_use(
        &self,
        tenant: TenantId,
        id: ApiKeyId,
        at: DateTime<Utc>,
    ) -> Result<(), KeyError> {
        let result: Result<(), Failure> =
            transaction!(self, "keys.record_use", tenant, Write, |txn| {
                api_keys::Entity::update_many()
                    .col_expr(api_keys::Column::LastUsedAt, Some(at).into())
                    .filter(api_keys::Column::TenantId.eq(tenant.as_uuid()))
                    .filter(api_keys::Column::Id.eq(id.as_uuid()))
                    .exec(txn)
                    .await?;
                Ok(())
            });
        result.map_err(|f| common!(f, KeyError))
    }
}

/// Records `action` on `key` (as it was `before`, if it was) in `txn`.
pub(crate) async fn audit_key(
    txn: &sea_orm::DatabaseTransaction,
    at: DateTime<Utc>,
    action: &str,
    before: Option<&ApiKey>,
    after: &ApiKey,
) -> Result<(), Failure> {
    let view = leadline_domain::audit::key_view;
    let record = leadline_domain::AuditRecord::new(
        after.tenant_id,
        at,
        &leadline_ports::audit_context(),
        ("key", after.id.as_uuid(), action),
        before.map(view).as_ref(),
        Some(&view(after)),
    );
    crate::audit::record(txn, &[record]).await
}

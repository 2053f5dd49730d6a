//! [`TenantRepository`] on the store.

use async_trait::async_trait;

use leadline_domain::{ApiKeyHash, ApiKeyId, CreateTenantRequest, Slug, Tenant, TenantId};
use leadline_ports::{AuthenticateError, CreateTenantError, GetTenantError, TenantRepository};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Statement,
    TransactionTrait, sea_query::Query,
};

use crate::{
    Backend, Store,
    entity::{api_keys, tenants},
    errors::{Failure, common},
    tx::transaction,
};

fn key_row(tenant: TenantId, key: ApiKeyHash) -> api_keys::ActiveModel {
    api_keys::ActiveModel {
        tenant_id: Set(tenant.as_uuid()),
        id: Set(ApiKeyId::new().as_uuid()),
        key_hash: Set(key.as_bytes().to_vec()),
        created_at: Set(crate::now()),
        revoked_at: Set(None),
    }
}

#[async_trait]
impl TenantRepository for Store {
    async fn create(
        &self,
        id: TenantId,
        req: &CreateTenantRequest,
        first_key: ApiKeyHash,
    ) -> Result<Tenant, CreateTenantError> {
        let result: Result<Tenant, Failure> =
            transaction!(self, "tenants.create", id, Write, |txn| {
                // The new tenant's own context: the RLS WITH CHECK on `tenants`
                // admits exactly this row.
                let row = tenants::ActiveModel {
                    id: Set(id.as_uuid()),
                    slug: Set(req.slug.to_string()),
                    name: Set(req.name.to_string()),
                    created_at: Set(crate::now()),
                };
                let model = tenants::Entity::insert(row)
                    .exec_with_returning(txn)
                    .await?;
                api_keys::Entity::insert(key_row(id, first_key))
                    .exec_without_returning(txn)
                    .await?;
                Ok(Tenant::try_from(model)?)
            });
        result.map_err(|f| match f {
            Failure::Unique(_) => CreateTenantError::DuplicateSlug,
            other => common!(other, CreateTenantError),
        })
    }

    async fn get(&self, tenant: TenantId) -> Result<Tenant, GetTenantError> {
        let result: Result<Option<tenants::Model>, Failure> =
            transaction!(self, "tenants.get", tenant, Read, |txn| {
                let model = tenants::Entity::find_by_id(tenant.as_uuid())
                    .one(txn)
                    .await?;
                Ok(model)
            });
        match result {
            Ok(Some(m)) => Tenant::try_from(m).map_err(GetTenantError::Unknown),
            Ok(None) => Err(GetTenantError::NotFound(tenant)),
            Err(f) => Err(common!(f, GetTenantError)),
        }
    }

    async fn find_by_slug(&self, slug: &Slug) -> Result<Option<Tenant>, GetTenantError> {
        let backend = self.backend();
        let result: Result<Option<tenants::Model>, Failure> = async {
            let txn = self.db().begin().await?;
            if backend == Backend::Postgres {
                // The tenant_by_slug policy shows this one row.
                txn.execute_raw(Statement::from_sql_and_values(
                    sea_orm::DbBackend::Postgres,
                    "SELECT set_config('app.tenant_slug', $1, true)",
                    [slug.as_str().into()],
                ))
                .await?;
            }
            let model = tenants::Entity::find()
                .filter(tenants::Column::Slug.eq(slug.as_str()))
                .one(&txn)
                .await?;
            txn.commit().await?;
            Ok(model)
        }
        .await;
        match result {
            Ok(model) => model
                .map(Tenant::try_from)
                .transpose()
                .map_err(GetTenantError::Unknown),
            Err(f) => Err(common!(f, GetTenantError)),
        }
    }

    async fn authenticate(
        &self,
        tenant: TenantId,
        key: ApiKeyHash,
    ) -> Result<Tenant, AuthenticateError> {
        let result: Result<Option<tenants::Model>, Failure> =
            transaction!(self, "tenants.authenticate", tenant, Read, |txn| {
                let live_key = Query::select()
                    .column(api_keys::Column::TenantId)
                    .from(api_keys::Entity)
                    .and_where(api_keys::Column::TenantId.eq(tenant.as_uuid()))
                    .and_where(api_keys::Column::KeyHash.eq(key.as_bytes().to_vec()))
                    .and_where(api_keys::Column::RevokedAt.is_null())
                    .to_owned();
                let model = tenants::Entity::find()
                    .filter(tenants::Column::Id.eq(tenant.as_uuid()))
                    .filter(tenants::Column::Id.in_subquery(live_key))
                    .one(txn)
                    .await?;
                Ok(model)
            });
        match result {
            Ok(Some(m)) => Tenant::try_from(m).map_err(AuthenticateError::Unknown),
            Ok(None) => Err(AuthenticateError::InvalidKey),
            Err(f) => Err(common!(f, AuthenticateError)),
        }
    }

    async fn add_api_key(&self, tenant: TenantId, key: ApiKeyHash) -> Result<(), GetTenantError> {
        let result: Result<(), Failure> =
            transaction!(self, "tenants.add_api_key", tenant, Write, |txn| {
                api_keys::Entity::insert(key_row(tenant, key))
                    .exec_without_returning(txn)
                    .await?;
                Ok(())
            });
        result.map_err(|f| match f {
            Failure::ForeignKey(_) => GetTenantError::NotFound(tenant),
            other => common!(other, GetTenantError),
        })
    }
}

//! [`TenantRepository`] on the store.

use async_trait::async_trait;

use leadline_domain::{
    ApiKeyId, CreateTenantRequest, KeyMaterial, NewApiKey, Slug, Tenant, TenantId,
};
use leadline_ports::{CreateTenantError, GetTenantError, TenantRepository};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Statement,
    TransactionTrait,
};

use crate::{
    Backend, Store,
    entity::{api_keys, tenants},
    errors::{Failure, common},
    tx::transaction,
};

#[async_trait]
impl TenantRepository for Store {
    async fn create(
        &self,
        id: TenantId,
        req: &CreateTenantRequest,
        first_key: &NewApiKey,
        material: &KeyMaterial,
    ) -> Result<Tenant, CreateTenantError> {
        let key_id = ApiKeyId::new();
        let result: Result<Tenant, Failure> =
            transaction!(self, "tenants.create", id, Write, |txn| {
                // The new tenant's own context: the RLS WITH CHECK on `tenants`
                // admits exactly this row.
                let row = tenants::ActiveModel {
                    id: Set(id.as_uuid()),
                    slug: Set(req.slug.to_string()),
                    name: Set(req.name.to_string()),
                    created_at: Set(crate::now()),
                    separation_of_duties: Set(true),
                };
                let model = tenants::Entity::insert(row)
                    .exec_with_returning(txn)
                    .await?;
                api_keys::Entity::insert(api_keys::issued(
                    id,
                    key_id,
                    first_key,
                    material,
                    crate::now(),
                ))
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

    async fn set_separation_of_duties(
        &self,
        tenant: TenantId,
        on: bool,
    ) -> Result<Tenant, GetTenantError> {
        let result: Result<Option<tenants::Model>, Failure> = transaction!(
            self,
            "tenants.set_separation_of_duties",
            tenant,
            Write,
            |txn| {
                let updated = tenants::Entity::update_many()
                    .col_expr(
                        tenants::Column::SeparationOfDuties,
                        sea_orm::sea_query::Expr::value(on),
                    )
                    .filter(tenants::Column::Id.eq(tenant.as_uuid()))
                    .exec_with_returning(txn)
                    .await?;
                Ok(updated.into_iter().next())
            }
        );
        match result {
            Ok(Some(m)) => Tenant::try_from(m).map_err(GetTenantError::Unknown),
            Ok(None) => Err(GetTenantError::NotFound(tenant)),
            Err(f) => Err(common!(f, GetTenantError)),
        }
    }
}

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
                let now = crate::now();
                let key = api_keys::Entity::insert(api_keys::issued(
                    id, key_id, first_key, material, now,
                ))
                .exec_with_returning(txn)
                .await?;
                let tenant = Tenant::try_from(model)?;
                audit_tenant(txn, now, "tenant.created", None, &tenant).await?;
                let key = leadline_domain::ApiKey::try_from(key)?;
                crate::repo_keys::audit_key(txn, now, "key.issued", None, &key).await?;
                Ok(tenant)
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
                let before = tenants::Entity::find_by_id(tenant.as_uuid())
                    .one(txn)
                    .await?
                    .map(Tenant::try_from)
                    .transpose()?;
                let updated = tenants::Entity::update_many()
                    .col_expr(
                        tenants::Column::SeparationOfDuties,
                        sea_orm::sea_query::Expr::value(on),
                    )
                    .filter(tenants::Column::Id.eq(tenant.as_uuid()))
                    .exec_with_returning(txn)
                    .await?
                    .into_iter()
                    .next();
                if let (Some(model), Some(before)) = (&updated, &before)
                    && before.separation_of_duties != on
                {
                    let after = Tenant::try_from(model.clone())?;
                    audit_tenant(txn, crate::now(), "tenant.updated", Some(before), &after).await?;
                }
                Ok(updated)
            }
        );
        match result {
            Ok(Some(m)) => Tenant::try_from(m).map_err(GetTenantError::Unknown),
            Ok(None) => Err(GetTenantError::NotFound(tenant)),
            Err(f) => Err(common!(f, GetTenantError)),
        }
    }
}

/// Records `action` on `tenant` (as it was `before`, if it was) in `txn`.
async fn audit_tenant(
    txn: &sea_orm::DatabaseTransaction,
    at: chrono::DateTime<chrono::Utc>,
    action: &str,
    before: Option<&Tenant>,
    after: &Tenant,
) -> Result<(), Failure> {
    let view = leadline_domain::audit::tenant_view;
    let record = leadline_domain::AuditRecord::new(
        after.id,
        at,
        &leadline_ports::audit_context(),
        ("tenant", after.id.as_uuid(), action),
        before.map(view).as_ref(),
        Some(&view(after)),
    );
    crate::audit::record(txn, &[record]).await
}

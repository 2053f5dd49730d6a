use chrono::{DateTime, Utc};
use leadline_domain::{DisplayName, Slug, Tenant, TenantId};
use sea_orm::entity::prelude::*;

use super::corrupt;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "tenants")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub separation_of_duties: bool,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl TryFrom<Model> for Tenant {
    type Error = anyhow::Error;
    fn try_from(m: Model) -> Result<Self, Self::Error> {
        Ok(Self {
            id: TenantId::from_uuid(m.id),
            slug: Slug::parse(&m.slug).map_err(|e| corrupt("tenants", "slug", e))?,
            name: DisplayName::new(&m.name).map_err(|e| corrupt("tenants", "name", e))?,
            created_at: m.created_at,
            separation_of_duties: m.separation_of_duties,
        })
    }
}

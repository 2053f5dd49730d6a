use chrono::{DateTime, Utc};
use sea_orm::entity::prelude::*;

/// A row of the change log (migration 10), as writes insert it. PostgreSQL
/// fills `tx` (the writing transaction) by default; it is read with raw SQL.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "changes")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub seq: i64,
    pub tenant_id: Uuid,
    #[sea_orm(column_name = "type")]
    pub kind: String,
    pub entity_id: Uuid,
    pub at: DateTime<Utc>,
    #[sea_orm(column_type = "JsonBinary")]
    pub data: Json,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl From<&leadline_domain::Change> for ActiveModel {
    fn from(c: &leadline_domain::Change) -> Self {
        use sea_orm::ActiveValue::{NotSet, Set};
        Self {
            seq: NotSet,
            tenant_id: Set(c.tenant_id.as_uuid()),
            kind: Set(c.kind.as_str().to_owned()),
            entity_id: Set(c.entity_id),
            at: Set(c.at),
            data: Set(c.data.clone()),
        }
    }
}

use chrono::{DateTime, Utc};
use leadline_domain::{
    ImportId, TenantId,
    import::{ImportCounts, ImportRun},
};
use sea_orm::entity::prelude::*;

use super::corrupt;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "imports")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub file_sha256: String,
    pub source_name: String,
    #[sea_orm(column_type = "JsonBinary")]
    pub headers: Json,
    pub on_duplicate: String,
    pub status: String,
    pub failure: Option<String>,
    pub rows_read: i64,
    pub created: i64,
    pub updated: i64,
    pub skipped: i64,
    pub rejected: i64,
    pub committed_line: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The runner that moved the run last (migration 33).
    pub runner: Option<Uuid>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

fn count(value: i64, column: &str) -> anyhow::Result<u64> {
    u64::try_from(value).map_err(|e| corrupt("imports", column, e))
}

impl TryFrom<Model> for ImportRun {
    type Error = anyhow::Error;
    fn try_from(m: Model) -> Result<Self, Self::Error> {
        Ok(Self {
            id: ImportId::from_uuid(m.id),
            tenant_id: TenantId::from_uuid(m.tenant_id),
            on_duplicate: m
                .on_duplicate
                .parse()
                .map_err(|e| corrupt("imports", "on_duplicate", e))?,
            status: m
                .status
                .parse()
                .map_err(|e| corrupt("imports", "status", e))?,
            failure: m.failure,
            counts: ImportCounts {
                rows: count(m.rows_read, "rows_read")?,
                created: count(m.created, "created")?,
                updated: count(m.updated, "updated")?,
                skipped: count(m.skipped, "skipped")?,
                rejected: count(m.rejected, "rejected")?,
            },
            committed_line: count(m.committed_line, "committed_line")?,
            headers: serde_json::from_value(m.headers)
                .map_err(|e| corrupt("imports", "headers", e))?,
            file_sha256: m.file_sha256,
            source_name: m.source_name,
            created_at: m.created_at,
            updated_at: m.updated_at,
        })
    }
}

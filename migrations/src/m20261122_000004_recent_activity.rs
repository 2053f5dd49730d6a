//! An index for "which leads of a tenant were active most recently", the
//! question hot-data preloading asks: the newest events of a tenant, read
//! backwards from the end of this index, bounded by a LIMIT.

use sea_orm_migration::prelude::*;

use crate::sql::run;

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261122_000004_recent_activity"
    }
}

const UP: &str = "CREATE INDEX events_recent_idx ON events (tenant_id, created_at);";
const DOWN: &str = "DROP INDEX events_recent_idx;";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, UP, UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, DOWN, DOWN).await
    }
}

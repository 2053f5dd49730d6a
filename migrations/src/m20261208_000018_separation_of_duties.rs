//! `tenants.separation_of_duties`: nobody decides (approves or rejects) an
//! approval they drafted. On for every tenant, those before this migration
//! included; a tenant's admin may turn it off (`PATCH /v1/tenant`).

use sea_orm_migration::prelude::*;

use crate::sql::run;

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261208_000018_separation_of_duties"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(
            manager,
            "ALTER TABLE tenants ADD COLUMN separation_of_duties boolean NOT NULL DEFAULT true;",
            "ALTER TABLE tenants ADD COLUMN separation_of_duties INTEGER NOT NULL DEFAULT 1 \
             CHECK (separation_of_duties IN (0, 1));",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(
            manager,
            "ALTER TABLE tenants DROP COLUMN separation_of_duties;",
            "ALTER TABLE tenants DROP COLUMN separation_of_duties;",
        )
        .await
    }
}

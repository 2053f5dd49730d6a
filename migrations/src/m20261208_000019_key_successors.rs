//! `api_keys.replaced_by`: the key a rotation issued to follow this one.
//! A key is rotated once: rotating it again would hand out a successor
//! whose expiry is the first rotation's deadline (a retried rotate would
//! mint a key that stops working with the old one).

use sea_orm_migration::prelude::*;

use crate::sql::run;

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261208_000019_key_successors"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(
            manager,
            "ALTER TABLE api_keys ADD COLUMN replaced_by uuid;",
            "ALTER TABLE api_keys ADD COLUMN replaced_by BLOB;",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(
            manager,
            "ALTER TABLE api_keys DROP COLUMN replaced_by;",
            "ALTER TABLE api_keys DROP COLUMN replaced_by;",
        )
        .await
    }
}

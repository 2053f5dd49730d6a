//! An idempotency key remembers the effect of its request, written in the
//! same transaction as the effect itself: after a COMMIT whose reply was
//! lost, a retry with the same key finds the effect (committed, so the
//! column is set) or does not (rolled back, so it is not), and never has
//! to guess. SQLite's `ALTER TABLE … DROP COLUMN` needs 3.35, which the
//! bundled SQLite is.

use sea_orm_migration::prelude::*;

use crate::sql::run;

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261203_000005_idempotent_effects"
    }
}

const PG_UP: &str = "ALTER TABLE idempotency_keys ADD COLUMN effect_id uuid;";
const SQLITE_UP: &str = "ALTER TABLE idempotency_keys ADD COLUMN effect_id BLOB;";
const DOWN: &str = "ALTER TABLE idempotency_keys DROP COLUMN effect_id;";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, PG_UP, SQLITE_UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, DOWN, DOWN).await
    }
}

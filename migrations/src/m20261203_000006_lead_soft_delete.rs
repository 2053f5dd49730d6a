//! Leads can be deleted and restored (`DELETE /v1/leads/{id}`, `POST
//! /v1/leads/{id}/restore`): a deleted lead keeps its row, its timeline and
//! its approvals, and is hidden from every read until it is restored. Hard
//! deletion belongs to privacy erasure.

use sea_orm_migration::prelude::*;

use crate::sql::run;

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261203_000006_lead_soft_delete"
    }
}

const PG_UP: &str = "ALTER TABLE leads ADD COLUMN deleted_at timestamptz;";
const SQLITE_UP: &str = "ALTER TABLE leads ADD COLUMN deleted_at TEXT;";
const DOWN: &str = "ALTER TABLE leads DROP COLUMN deleted_at;";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, PG_UP, SQLITE_UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, DOWN, DOWN).await
    }
}

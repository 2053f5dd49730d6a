//! Editing a pending draft before it is decided: `approvals.revision`
//! counts the draft's texts (1 as drafted), `edited_by` and `edited_at` say
//! who wrote the latest. A decision may name the revision it was made on;
//! separation of duties treats the last editor as an author.
//!
//! SQLite cannot add a composite foreign key to an existing table, so there
//! the store checks the editing agent in the edit's transaction (it does on
//! PostgreSQL too; the key is the second wall).

use sea_orm_migration::prelude::*;

use crate::sql::run;

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261209_000020_approval_edits"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(
            manager,
            "ALTER TABLE approvals \
               ADD COLUMN revision integer NOT NULL DEFAULT 1 CHECK (revision >= 1), \
               ADD COLUMN edited_by uuid, \
               ADD COLUMN edited_at timestamptz, \
               ADD CONSTRAINT approvals_edited_by_fkey \
                 FOREIGN KEY (tenant_id, edited_by) REFERENCES agents (tenant_id, id), \
               ADD CONSTRAINT approvals_edit_has_time CHECK ((edited_by IS NULL) = (edited_at IS NULL));",
            "ALTER TABLE approvals ADD COLUMN revision INTEGER NOT NULL DEFAULT 1 CHECK (revision >= 1);\
             ALTER TABLE approvals ADD COLUMN edited_by BLOB;\
             ALTER TABLE approvals ADD COLUMN edited_at TEXT \
               CHECK ((edited_by IS NULL) = (edited_at IS NULL));",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(
            manager,
            "ALTER TABLE approvals DROP CONSTRAINT approvals_edit_has_time, \
               DROP CONSTRAINT approvals_edited_by_fkey, \
               DROP COLUMN edited_at, DROP COLUMN edited_by, DROP COLUMN revision;",
            "ALTER TABLE approvals DROP COLUMN edited_at;\
             ALTER TABLE approvals DROP COLUMN edited_by;\
             ALTER TABLE approvals DROP COLUMN revision;",
        )
        .await
    }
}

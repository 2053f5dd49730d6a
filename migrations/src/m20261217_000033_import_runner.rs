//! Which runner of an import moved its run last.
//!
//! An import writes two batches at once on PostgreSQL, each moving the run
//! from the line the batch before left it at. Two runners of the same file
//! (the file posted to two instances) cut it into the same batches, so the
//! second batch of one could continue from the first batch of the other,
//! and each then found the run moved by the other and stopped, leaving it
//! half done. A batch now moves the run only if its own runner moved it
//! last, or if it is the runner's first: the first runner to commit a
//! batch owns the run, as when batches were written one at a time.

use sea_orm_migration::prelude::*;

use crate::sql::run;

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261217_000033_import_runner"
    }
}

const UP: &str = "ALTER TABLE imports ADD COLUMN runner uuid";
const SQLITE_UP: &str = "ALTER TABLE imports ADD COLUMN runner blob";
const DOWN: &str = "ALTER TABLE imports DROP COLUMN runner";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, UP, SQLITE_UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, DOWN, DOWN).await
    }
}

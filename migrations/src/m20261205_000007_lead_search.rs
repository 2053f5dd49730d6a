//! Free-text search over leads (`GET /v1/leads/search`).
//!
//! Each lead keeps `search_text`: the folded words of its names, email,
//! company, phone and tags, each written `"  word "`, computed by the domain
//! (`leadline_domain::search`) whenever the store writes the lead. The rank
//! is computed from that text with substring tests that mean the same on
//! both backends; the indexes here only find the candidates fast:
//!
//! - PostgreSQL: a generated `tsvector` (`simple` configuration: the words
//!   are already folded, so no language and no `unaccent`) with a GIN index
//!   for whole words and prefixes, and a `pg_trgm` GIN index on the text for
//!   typos and substrings.
//! - SQLite: `lead_search` (one row per lead, with a stable integer key that
//!   `VACUUM` never renumbers) kept by triggers on `leads`, and two
//!   external-content FTS5 tables over it: `lead_words` (the `ascii`
//!   tokenizer splits on spaces only, so its tokens are exactly the domain's
//!   words) and `lead_trigrams` (the `trigram` tokenizer).
//!
//! Also `name_key` (folded name and company, `leadline_domain::search::
//! name_key`) and indexes on it and on phone, for `GET /v1/leads/duplicates`.
//!
//! Existing leads are indexed by this migration, in batches.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend, Statement, Value};

use crate::sql::run;

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261205_000007_lead_search"
    }
}

const PG_UP: &str = r"
-- Trusted since PostgreSQL 13: a database owner may create it.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
ALTER TABLE leads ADD COLUMN search_text text NOT NULL DEFAULT '';
ALTER TABLE leads ADD COLUMN name_key text NOT NULL DEFAULT '';
";

/// After the backfill, so the generated column and the indexes are built
/// once rather than row by row.
const PG_INDEX: &str = r"
ALTER TABLE leads ADD COLUMN search_tsv tsvector
    GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, search_text)) STORED;
CREATE INDEX leads_search_tsv_idx ON leads USING gin (search_tsv);
CREATE INDEX leads_search_trgm_idx ON leads USING gin (search_text gin_trgm_ops);
CREATE INDEX leads_name_key_idx ON leads (tenant_id, name_key) WHERE name_key <> '';
CREATE INDEX leads_phone_idx ON leads (tenant_id, phone) WHERE phone IS NOT NULL;
";

const PG_DOWN: &str = r"
DROP INDEX leads_phone_idx;
DROP INDEX leads_name_key_idx;
DROP INDEX leads_search_trgm_idx;
DROP INDEX leads_search_tsv_idx;
ALTER TABLE leads DROP COLUMN search_tsv;
ALTER TABLE leads DROP COLUMN search_text;
ALTER TABLE leads DROP COLUMN name_key;
-- Nothing else of leadline's uses it; an extension still used by objects
-- of someone else's makes this fail rather than take them along.
DROP EXTENSION IF EXISTS pg_trgm;
";

const SQLITE_UP: &str = r"
ALTER TABLE leads ADD COLUMN search_text TEXT NOT NULL DEFAULT '';
ALTER TABLE leads ADD COLUMN name_key TEXT NOT NULL DEFAULT '';
CREATE INDEX leads_name_key_idx ON leads (tenant_id, name_key) WHERE name_key <> '';
CREATE INDEX leads_phone_idx ON leads (tenant_id, phone) WHERE phone IS NOT NULL;
CREATE TABLE lead_search (
    docid       INTEGER PRIMARY KEY,
    tenant_id   BLOB    NOT NULL,
    lead_id     BLOB    NOT NULL,
    search_text TEXT    NOT NULL,
    UNIQUE (tenant_id, lead_id)
);
CREATE VIRTUAL TABLE lead_words USING fts5(
    search_text, content = 'lead_search', content_rowid = 'docid', tokenize = 'ascii'
);
CREATE VIRTUAL TABLE lead_trigrams USING fts5(
    search_text, content = 'lead_search', content_rowid = 'docid', tokenize = 'trigram'
);
CREATE TRIGGER lead_search_ai AFTER INSERT ON lead_search BEGIN
    INSERT INTO lead_words (rowid, search_text) VALUES (new.docid, new.search_text);
    INSERT INTO lead_trigrams (rowid, search_text) VALUES (new.docid, new.search_text);
END;
CREATE TRIGGER lead_search_ad AFTER DELETE ON lead_search BEGIN
    INSERT INTO lead_words (lead_words, rowid, search_text) VALUES ('delete', old.docid, old.search_text);
    INSERT INTO lead_trigrams (lead_trigrams, rowid, search_text) VALUES ('delete', old.docid, old.search_text);
END;
CREATE TRIGGER lead_search_au AFTER UPDATE OF search_text ON lead_search BEGIN
    INSERT INTO lead_words (lead_words, rowid, search_text) VALUES ('delete', old.docid, old.search_text);
    INSERT INTO lead_trigrams (lead_trigrams, rowid, search_text) VALUES ('delete', old.docid, old.search_text);
    INSERT INTO lead_words (rowid, search_text) VALUES (new.docid, new.search_text);
    INSERT INTO lead_trigrams (rowid, search_text) VALUES (new.docid, new.search_text);
END;
INSERT INTO lead_search (tenant_id, lead_id, search_text) SELECT tenant_id, id, '' FROM leads;
CREATE TRIGGER leads_search_ai AFTER INSERT ON leads BEGIN
    INSERT INTO lead_search (tenant_id, lead_id, search_text)
    VALUES (new.tenant_id, new.id, new.search_text);
END;
CREATE TRIGGER leads_search_au AFTER UPDATE OF search_text ON leads
WHEN old.search_text IS NOT new.search_text BEGIN
    UPDATE lead_search SET search_text = new.search_text
    WHERE tenant_id = new.tenant_id AND lead_id = new.id;
END;
CREATE TRIGGER leads_search_ad AFTER DELETE ON leads BEGIN
    DELETE FROM lead_search WHERE tenant_id = old.tenant_id AND lead_id = old.id;
END;
";

const SQLITE_DOWN: &str = r"
DROP INDEX leads_phone_idx;
DROP INDEX leads_name_key_idx;
DROP TRIGGER leads_search_ad;
DROP TRIGGER leads_search_au;
DROP TRIGGER leads_search_ai;
DROP TABLE lead_trigrams;
DROP TABLE lead_words;
DROP TABLE lead_search;
ALTER TABLE leads DROP COLUMN search_text;
ALTER TABLE leads DROP COLUMN name_key;
";

/// Leads indexed per round trip by the backfill.
const BATCH: u64 = 500;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, PG_UP, SQLITE_UP).await?;
        backfill(manager).await?;
        run(manager, PG_INDEX, "").await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, PG_DOWN, SQLITE_DOWN).await
    }
}

/// Computes `search_text` for every existing lead, in key order, a batch at
/// a time. On PostgreSQL row-level security is lifted for the migration's
/// own transaction (the owner is subject to it: `FORCE`), and put back
/// before it commits.
async fn backfill(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    let db = manager.get_connection();
    let backend = manager.get_database_backend();
    let pg = backend == DbBackend::Postgres;
    if pg {
        db.execute_unprepared("ALTER TABLE leads NO FORCE ROW LEVEL SECURITY")
            .await?;
    }
    let tags = if pg { "tags::text" } else { "tags" };
    let mut after: Option<(Value, Value)> = None;
    loop {
        let (sql, values) = match &after {
            None => (
                format!(
                    "SELECT tenant_id, id, first_name, last_name, email, company, phone, {tags} \
                     AS tags FROM leads ORDER BY tenant_id, id LIMIT {BATCH}"
                ),
                vec![],
            ),
            Some((t, i)) => (
                format!(
                    "SELECT tenant_id, id, first_name, last_name, email, company, phone, {tags} \
                     AS tags FROM leads WHERE (tenant_id, id) > ({p1}, {p2}) \
                     ORDER BY tenant_id, id LIMIT {BATCH}",
                    p1 = if pg { "$1" } else { "?" },
                    p2 = if pg { "$2" } else { "?" },
                ),
                vec![t.clone(), i.clone()],
            ),
        };
        let rows = db
            .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?;
        let Some(last) = rows.last() else { break };
        after = Some(if pg {
            (
                last.try_get::<uuid::Uuid>("", "tenant_id")?.into(),
                last.try_get::<uuid::Uuid>("", "id")?.into(),
            )
        } else {
            (
                last.try_get::<Vec<u8>>("", "tenant_id")?.into(),
                last.try_get::<Vec<u8>>("", "id")?.into(),
            )
        });
        for row in &rows {
            let text = |col: &str| row.try_get::<Option<String>>("", col);
            let tags: Vec<String> =
                serde_json::from_str(&row.try_get::<String>("", "tags")?).unwrap_or_default();
            let search_text = leadline_domain::search::document(
                [
                    text("first_name")?,
                    text("last_name")?,
                    text("email")?,
                    text("company")?,
                    text("phone")?,
                    Some(tags.join(" ")),
                ]
                .into_iter()
                .flatten(),
            );
            let name_key = leadline_domain::search::name_key(
                &text("first_name")?.unwrap_or_default(),
                &text("last_name")?.unwrap_or_default(),
                text("company")?.as_deref(),
            );
            let (sql, key) = if pg {
                (
                    "UPDATE leads SET search_text = $1, name_key = $2 WHERE tenant_id = $3 AND id = $4",
                    (
                        Value::from(row.try_get::<uuid::Uuid>("", "tenant_id")?),
                        Value::from(row.try_get::<uuid::Uuid>("", "id")?),
                    ),
                )
            } else {
                (
                    "UPDATE leads SET search_text = ?, name_key = ? WHERE tenant_id = ? AND id = ?",
                    (
                        Value::from(row.try_get::<Vec<u8>>("", "tenant_id")?),
                        Value::from(row.try_get::<Vec<u8>>("", "id")?),
                    ),
                )
            };
            db.execute_raw(Statement::from_sql_and_values(
                backend,
                sql,
                [search_text.into(), name_key.into(), key.0, key.1],
            ))
            .await?;
        }
    }
    if pg {
        db.execute_unprepared("ALTER TABLE leads FORCE ROW LEVEL SECURITY")
            .await?;
    }
    Ok(())
}

//! Search by words: each tenant's vocabulary, and word indexes that need no
//! text parser.
//!
//! A typo is matched per word (`hoper` is a typo of the word `hopper`), so
//! the candidates for a misspelt term are found in two steps, as search
//! engines expand fuzzy terms against their term dictionary: the term is
//! looked up among the tenant's distinct words (`search_words`, with a
//! trigram index), and the few words it is a typo of are then looked up as
//! whole words among the leads. Both lookups read short posting lists; the
//! trigram index on every lead's whole text that this replaces read tens of
//! thousands of rows per common trigram at a million leads.
//!
//! - PostgreSQL: `search_words (tenant_id, word)` under the tenant policy,
//!   with a GIN index on (tenant, word trigrams), filled by statement triggers on
//!   `leads` (one set-based insert per statement, so a batch insert or a
//!   `COPY` pays once). `search_tsv` becomes the lead's words exactly as the
//!   domain split them (`array_to_tsvector`, no parser, so no locale can
//!   drop a word); `leads_search_trgm_idx` goes.
//! - SQLite: the same `search_words`, filled by triggers on `lead_search`,
//!   with an FTS5 trigram index over `"  word "`; `lead_trigrams` goes.
//!
//! Words are never removed from a vocabulary when a lead changes: a word no
//! lead holds any more only costs a lookup that finds nothing.

use sea_orm_migration::prelude::*;

use crate::sql::{disable_tenant_isolation, enable_tenant_isolation, run};

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261205_000011_search_vocabulary"
    }
}

const TABLES: &[(&str, &str)] = &[("search_words", "tenant_id")];

const PG_UP: &str = r#"
CREATE TABLE search_words (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    word      text COLLATE "C" NOT NULL CHECK (word <> '' AND strpos(word, ' ') = 0),
    PRIMARY KEY (tenant_id, word)
);
-- The owner fills it from every tenant's leads, past their policy.
ALTER TABLE leads NO FORCE ROW LEVEL SECURITY;
INSERT INTO search_words (tenant_id, word)
SELECT DISTINCT l.tenant_id, w.word
FROM leads l, unnest(string_to_array(l.search_text, ' ')) AS w (word)
WHERE w.word <> '';
ALTER TABLE leads FORCE ROW LEVEL SECURITY;
-- Trusted since PostgreSQL 13, like pg_trgm: lets one GIN index lead with
-- the tenant, so a lookup reads only that tenant's posting lists.
CREATE EXTENSION IF NOT EXISTS btree_gin;
CREATE INDEX search_words_trgm_idx ON search_words USING gin (tenant_id, word gin_trgm_ops);

-- Runs as the writer, under the writer's tenant policy.
CREATE FUNCTION search_words_of_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO search_words (tenant_id, word)
    SELECT DISTINCT n.tenant_id, w.word
    FROM new_rows n, unnest(string_to_array(n.search_text, ' ')) AS w (word)
    WHERE w.word <> ''
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
CREATE FUNCTION search_words_of_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO search_words (tenant_id, word)
    SELECT DISTINCT n.tenant_id, w.word
    FROM new_rows n
    JOIN old_rows o ON o.tenant_id = n.tenant_id AND o.id = n.id
    CROSS JOIN LATERAL unnest(string_to_array(n.search_text, ' ')) AS w (word)
    WHERE o.search_text IS DISTINCT FROM n.search_text AND w.word <> ''
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
CREATE TRIGGER leads_search_words_ai AFTER INSERT ON leads
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION search_words_of_inserted();
CREATE TRIGGER leads_search_words_au AFTER UPDATE ON leads
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION search_words_of_updated();
GRANT SELECT, INSERT ON search_words TO leadline_service;

DROP INDEX leads_search_trgm_idx;
DROP INDEX leads_search_tsv_idx;
ALTER TABLE leads DROP COLUMN search_tsv;
ALTER TABLE leads ADD COLUMN search_tsv tsvector GENERATED ALWAYS AS
    (array_to_tsvector(array_remove(string_to_array(search_text, ' '), ''))) STORED;
CREATE INDEX leads_search_tsv_idx ON leads USING gin (search_tsv);

-- Under row-level security PostgreSQL uses an index only through leakproof
-- operators before the tenant policy is applied; `@@` and `LIKE` are not, so
-- a search run by the service role would read the tenant's every lead. The
-- two lookups therefore run in functions of the owner's, to which these
-- policies show every row: each reads the tenant the transaction names
-- (`app.tenant_id`, the policies' own setting, never an argument) and
-- returns only ids or words, which the caller reads back under its policy.
CREATE POLICY search_scan ON leads FOR SELECT TO CURRENT_USER USING (true);
CREATE POLICY search_scan ON search_words FOR SELECT TO CURRENT_USER USING (true);
CREATE FUNCTION search_lead_ids(q tsquery) RETURNS SETOF uuid
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp
AS $$
BEGIN
    -- EXECUTE plans for the query at hand (a cached plan cannot see its words).
    RETURN QUERY EXECUTE
        'SELECT l.id FROM leads l
          WHERE l.tenant_id = nullif(current_setting(''app.tenant_id'', true), '''')::uuid
            AND l.search_tsv @@ $1'
    USING q;
END
$$;
CREATE FUNCTION search_words_like(patterns text) RETURNS SETOF text
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp
AS $$
BEGIN
    -- One LIKE pattern per line; the trigram index serves each.
    RETURN QUERY EXECUTE
        'SELECT DISTINCT w.word
           FROM unnest(string_to_array($1, E''\n'')) AS p (pattern)
           CROSS JOIN LATERAL (
               SELECT s.word FROM search_words s
                WHERE s.tenant_id = nullif(current_setting(''app.tenant_id'', true), '''')::uuid
                  AND s.word LIKE p.pattern) AS w'
    USING patterns;
END
$$;
REVOKE ALL ON FUNCTION search_lead_ids(tsquery) FROM PUBLIC;
REVOKE ALL ON FUNCTION search_words_like(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION search_lead_ids(tsquery) TO leadline_service;
GRANT EXECUTE ON FUNCTION search_words_like(text) TO leadline_service;
"#;

const PG_DOWN: &str = r"
DROP FUNCTION search_words_like(text);
DROP FUNCTION search_lead_ids(tsquery);
DROP POLICY search_scan ON search_words;
DROP POLICY search_scan ON leads;
DROP INDEX leads_search_tsv_idx;
ALTER TABLE leads DROP COLUMN search_tsv;
ALTER TABLE leads ADD COLUMN search_tsv tsvector
    GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, search_text)) STORED;
CREATE INDEX leads_search_tsv_idx ON leads USING gin (search_tsv);
CREATE INDEX leads_search_trgm_idx ON leads USING gin (search_text gin_trgm_ops);
DROP TRIGGER leads_search_words_au ON leads;
DROP TRIGGER leads_search_words_ai ON leads;
DROP FUNCTION search_words_of_updated();
DROP FUNCTION search_words_of_inserted();
DROP TABLE search_words;
-- Nothing else of leadline's uses it (see pg_trgm in the search migration).
DROP EXTENSION IF EXISTS btree_gin;
";

/// The words of a `search_text` (`"  a   b "`) as rows of `json_each`:
/// they are letters and digits only, so they need no JSON escaping.
macro_rules! words_of {
    ($text:literal) => {
        concat!(
            "json_each('[\"' || replace(",
            $text,
            ", ' ', '\",\"') || '\"]')"
        )
    };
}

const SQLITE_UP: &str = concat!(
    r"
CREATE TABLE search_words (
    id        INTEGER PRIMARY KEY,
    tenant_id BLOB NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    word      TEXT NOT NULL CHECK (word <> '' AND instr(word, ' ') = 0),
    padded    TEXT GENERATED ALWAYS AS ('  ' || word || ' ') VIRTUAL,
    UNIQUE (tenant_id, word)
);
CREATE VIRTUAL TABLE search_word_trigrams USING fts5(
    padded, content = 'search_words', content_rowid = 'id', tokenize = 'trigram'
);
CREATE TRIGGER search_words_ai AFTER INSERT ON search_words BEGIN
    INSERT INTO search_word_trigrams (rowid, padded) VALUES (new.id, new.padded);
END;
CREATE TRIGGER search_words_ad AFTER DELETE ON search_words BEGIN
    INSERT INTO search_word_trigrams (search_word_trigrams, rowid, padded)
    VALUES ('delete', old.id, old.padded);
END;
DROP TRIGGER lead_search_ai;
DROP TRIGGER lead_search_ad;
DROP TRIGGER lead_search_au;
DROP TABLE lead_trigrams;
CREATE TRIGGER lead_search_ai AFTER INSERT ON lead_search BEGIN
    INSERT INTO lead_words (rowid, search_text) VALUES (new.docid, new.search_text);
    INSERT OR IGNORE INTO search_words (tenant_id, word)
    SELECT new.tenant_id, value FROM ",
    words_of!("new.search_text"),
    r" WHERE value <> '';
END;
CREATE TRIGGER lead_search_ad AFTER DELETE ON lead_search BEGIN
    INSERT INTO lead_words (lead_words, rowid, search_text) VALUES ('delete', old.docid, old.search_text);
END;
CREATE TRIGGER lead_search_au AFTER UPDATE OF search_text ON lead_search BEGIN
    INSERT INTO lead_words (lead_words, rowid, search_text) VALUES ('delete', old.docid, old.search_text);
    INSERT INTO lead_words (rowid, search_text) VALUES (new.docid, new.search_text);
    INSERT OR IGNORE INTO search_words (tenant_id, word)
    SELECT new.tenant_id, value FROM ",
    words_of!("new.search_text"),
    r" WHERE value <> '';
END;
INSERT OR IGNORE INTO search_words (tenant_id, word)
SELECT s.tenant_id, w.value FROM lead_search s, ",
    words_of!("s.search_text"),
    r" AS w WHERE w.value <> '';
"
);

const SQLITE_DOWN: &str = r"
DROP TRIGGER search_words_ad;
DROP TRIGGER search_words_ai;
DROP TABLE search_word_trigrams;
DROP TABLE search_words;
DROP TRIGGER lead_search_ai;
DROP TRIGGER lead_search_ad;
DROP TRIGGER lead_search_au;
CREATE VIRTUAL TABLE lead_trigrams USING fts5(
    search_text, content = 'lead_search', content_rowid = 'docid', tokenize = 'trigram'
);
INSERT INTO lead_trigrams (lead_trigrams) VALUES ('rebuild');
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
";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let pg = format!("{PG_UP}\n{}", enable_tenant_isolation(TABLES));
        run(manager, &pg, SQLITE_UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let pg = format!("{}\n{PG_DOWN}", disable_tenant_isolation(TABLES));
        run(manager, &pg, SQLITE_DOWN).await
    }
}

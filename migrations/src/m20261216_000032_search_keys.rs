//! Search candidates are found by exact index keys, per tenant: a search
//! costs what its own hits cost, not what the table holds (PostgreSQL).
//!
//! Migration 11 indexed each lead's words (`search_tsv`, one GIN index for
//! every tenant) and found a term's leads by prefix (`'hopper':*`). GIN
//! answers a prefix by reading every entry that starts with it into a
//! bitmap before it intersects the terms, so a search paid for every
//! distinct word sharing a prefix, in every tenant: email addresses alone
//! (`grace.hopper1906@…`) give each lead a word of its own. At a million
//! leads `cleo cartwright` read some 600 such entries (2.2 ms of the
//! statement's 3), and `1555` (the start of a phone number) 384,000
//! (760 ms).
//!
//! Now each lead is indexed under *keys* (`search_keys`, an expression
//! index; nothing stored):
//!
//! - a word without an ASCII digit under its first four characters
//!   (`hopper` → `hopp`),
//! - a word with a digit under itself, and under its first four characters
//!   when those hold no digit (`hopper1906` → `hopper1906`, `hopp`;
//!   `15556435593` → itself),
//!
//! each prefixed by the tenant's tag (the last eight hex digits of its id).
//! A term of four or more characters without a digit then names one key
//! exactly (`hopper` → `hopp`), which GIN intersects with the other terms'
//! keys without reading any posting list whole; shorter terms and terms
//! with digits are still prefixes, but only over their own tenant's keys.
//! Keys only narrow: the search statement still tests every candidate's
//! `search_text` (the domain's rule), so the hits are exactly what they
//! were, and a tag two tenants share only adds candidates that the tenant
//! filter drops. `leadline_store`'s `repo_search` builds the query side.
//!
//! `search_tsv` goes (the table sheds a stored `tsvector` per lead), and
//! with it the erasure's "does another lead still hold this word?", which
//! now asks the keys and then the text.
//!
//! SQLite is unchanged: FTS5 `lead_words` answers prefixes from its own
//! term index, per database file.

use sea_orm_migration::prelude::*;

use crate::m20261212_000028_erasure_trusts_less::PRIVACY_ERASE_V3;
use crate::sql::run;

pub(crate) struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261216_000032_search_keys"
    }
}

const PG_UP: &str = r"
-- The key a lead holding `word` is always indexed under (see the module
-- docs); the repository computes the same in Rust for its queries.
CREATE FUNCTION search_key(tenant uuid, word text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN right(tenant::text, 8)
        || CASE WHEN translate(word, '0123456789', '') = word THEN left(word, 4) ELSE word END;

-- Every key of a lead's search text (words written '  word ').
CREATE FUNCTION search_keys(tenant uuid, search_text text) RETURNS tsvector
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    tag text := right(tenant::text, 8);
    keys text[] := '{}';
    word text;
    head text;
BEGIN
    FOREACH word IN ARRAY string_to_array(search_text, ' ') LOOP
        CONTINUE WHEN word = '';
        head := left(word, 4);
        IF translate(word, '0123456789', '') = word THEN
            keys := keys || (tag || head);
        ELSE
            keys := keys || (tag || word);
            IF length(word) > 4 AND translate(head, '0123456789', '') = head THEN
                keys := keys || (tag || head);
            END IF;
        END IF;
    END LOOP;
    RETURN array_to_tsvector(keys);
END
$$;

CREATE INDEX leads_search_keys_idx ON leads USING gin (search_keys(tenant_id, search_text));
-- The planner estimates a key's leads from the expression's statistics,
-- which only ANALYZE gathers (a table nobody writes is never analysed).
ANALYZE leads;

CREATE OR REPLACE FUNCTION search_lead_ids(q tsquery) RETURNS SETOF uuid
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp
AS $$
BEGIN
    -- EXECUTE plans for the query at hand (a cached plan cannot see its keys).
    RETURN QUERY EXECUTE
        'SELECT l.id FROM leads l
          WHERE l.tenant_id = nullif(current_setting(''app.tenant_id'', true), '''')::uuid
            AND search_keys(l.tenant_id, l.search_text) @@ $1'
    USING q;
END
$$;
";

/// After the erasure stops asking `search_tsv`.
const PG_DROP_WORDS: &str = r"
DROP INDEX leads_search_tsv_idx;
ALTER TABLE leads DROP COLUMN search_tsv;
";

const PG_DOWN: &str = r"
ALTER TABLE leads ADD COLUMN search_tsv tsvector GENERATED ALWAYS AS
    (array_to_tsvector(array_remove(string_to_array(search_text, ' '), ''))) STORED;
CREATE INDEX leads_search_tsv_idx ON leads USING gin (search_tsv);
CREATE OR REPLACE FUNCTION search_lead_ids(q tsquery) RETURNS SETOF uuid
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
";

const PG_DOWN_KEYS: &str = r"
DROP INDEX leads_search_keys_idx;
DROP FUNCTION search_keys(uuid, text);
DROP FUNCTION search_key(uuid, text);
";

/// The erasure's test for a word another lead still holds, as migration 28
/// wrote it and as it reads with keys.
const HOLDS_BY_WORD: &str = "AND l.search_tsv @@ ('''' || w.word || '''')::tsquery);";
const HOLDS_BY_KEY: &str = "AND search_keys(l.tenant_id, l.search_text) \
                            @@ ('''' || search_key(t, w.word) || '''')::tsquery\n\
                            AND strpos(l.search_text, '  ' || w.word || ' ') > 0);";

/// Migration 28's `privacy_erase` with the test by key.
fn privacy_erase_v4() -> Result<String, DbErr> {
    if PRIVACY_ERASE_V3.matches(HOLDS_BY_WORD).count() != 1 {
        return Err(DbErr::Migration(
            "privacy_erase (migration 28) no longer holds the test this migration rewrites".into(),
        ));
    }
    Ok(PRIVACY_ERASE_V3.replace(HOLDS_BY_WORD, HOLDS_BY_KEY))
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, PG_UP, "").await?;
        run(manager, &privacy_erase_v4()?, "").await?;
        run(manager, PG_DROP_WORDS, "").await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, PG_DOWN, "").await?;
        run(manager, PRIVACY_ERASE_V3, "").await?;
        run(manager, PG_DOWN_KEYS, "").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_erasure_is_rewritten_in_one_place() {
        let v4 = privacy_erase_v4().expect("migration 28 holds the test");
        assert!(!v4.contains("search_tsv"));
        assert_eq!(v4.matches("search_key(t, w.word)").count(), 1);
    }
}

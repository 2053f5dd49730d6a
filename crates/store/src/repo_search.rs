//! Lead search on the store: two statements per page at most, on both
//! backends.
//!
//! What matches and how it ranks is the domain's ([`leadline_domain::search`]).
//! Each term's score is computed here with the same substring tests
//! (`strpos` on PostgreSQL, `instr` on SQLite) over the stored
//! `search_text`, so both backends return the same hits in the same order.
//! A term that may be misspelt is first looked up in the tenant's vocabulary
//! (`search_words`, through its trigram index): the words it is a typo of,
//! closest first, become part of its test. On PostgreSQL both index lookups
//! go through functions of the owner's (`search_words_like`,
//! `search_lead_ids`, migration 11): under the tenant policy the service
//! role cannot use an index through `LIKE` or `@@`, which are not leakproof.
//! The leads' word index then finds, in one lookup for all terms, the leads
//! that can score: on SQLite (FTS5 `lead_words`) exactly those that hold for
//! every term a word it starts or a word it is a typo of; on PostgreSQL a
//! superset of them, through keys of at most four characters per word and
//! tenant (migration 32, [`keys_query`]), so that a term's cost does not
//! grow with the number of words that share its start.

use leadline_domain::{
    Page, SearchHit, SearchLeadsQuery, TenantId,
    search::{FUZZY, MAX_EXPANSIONS, PREFIX, SearchPlan, Term, WORD},
};
use sea_orm::{ConnectionTrait, FromQueryResult, Statement, Value};

use crate::{Backend, entity::leads, errors::Failure};

/// A statement under construction: its text and its values, bound in the
/// order their placeholders appear.
struct Sql {
    backend: Backend,
    text: String,
    values: Vec<Value>,
}

impl Sql {
    fn new(backend: Backend) -> Self {
        Self {
            backend,
            text: String::with_capacity(2048),
            values: Vec::new(),
        }
    }

    fn push(&mut self, sql: &str) -> &mut Self {
        self.text.push_str(sql);
        self
    }

    fn statement(self) -> Statement {
        let db = match self.backend {
            Backend::Postgres => sea_orm::DbBackend::Postgres,
            Backend::Sqlite => sea_orm::DbBackend::Sqlite,
        };
        Statement::from_sql_and_values(db, self.text, self.values)
    }

    /// Appends a placeholder for `value`.
    fn bind(&mut self, value: impl Into<Value>) -> &mut Self {
        self.values.push(value.into());
        match self.backend {
            Backend::Postgres => {
                let n = self.values.len();
                self.text.push_str(&format!("${n}"));
            }
            Backend::Sqlite => self.text.push('?'),
        }
        self
    }

    /// `1` when `text` (an SQL expression) contains `needle`, else `0`.
    fn contains_in(&mut self, text: &str, needle: &str) -> &mut Self {
        self.push(match self.backend {
            Backend::Postgres => "(CASE WHEN strpos(",
            Backend::Sqlite => "(CASE WHEN instr(",
        })
        .push(text)
        .push(", ")
        .bind(needle.to_owned())
        .push(") > 0 THEN 1 ELSE 0 END)")
    }

    /// `1` when the lead's search text contains `needle`, else `0`.
    fn contains(&mut self, needle: &str) -> &mut Self {
        self.contains_in("l.search_text", needle)
    }

    /// The term's score (see the domain's module docs), as an expression:
    /// a typo scores when the text holds one of the words it expanded to.
    fn score(&mut self, term: &Term, typos: &[String]) -> &mut Self {
        self.push("(CASE WHEN ").contains(&term.word_probe());
        self.push(&format!(" = 1 THEN {WORD} WHEN "))
            .contains(&term.prefix_probe());
        self.push(&format!(" = 1 THEN {PREFIX}"));
        if !typos.is_empty() {
            self.push(" WHEN (");
            for (i, word) in typos.iter().enumerate() {
                if i > 0 {
                    self.push(" + ");
                }
                self.contains(&format!("  {word} "));
            }
            self.push(&format!(") > 0 THEN {FUZZY}"));
        }
        self.push(" ELSE 0 END)")
    }

    /// A condition true exactly for the leads where every term has a word
    /// it starts or a word it is a typo of: one lookup in the word index.
    fn candidates(&mut self, tenant: TenantId, terms: &[(Term, Vec<String>)]) -> &mut Self {
        match self.backend {
            Backend::Postgres => {
                // Through the owner's function: under the tenant policy
                // the service role could not use the index (migration 11).
                self.push("l.id IN (SELECT search_lead_ids(CAST(")
                    .bind(keys_query(tenant, terms))
                    .push(" AS tsquery)))")
            }
            Backend::Sqlite => {
                let query = terms
                    .iter()
                    .map(|(term, words)| {
                        let mut any = vec![format!("\"{}\"*", term.word())];
                        any.extend(words.iter().map(|w| format!("\"{w}\"")));
                        format!("({})", any.join(" OR "))
                    })
                    .collect::<Vec<_>>()
                    .join(" AND ");
                self.push(
                    "(l.tenant_id, l.id) IN (SELECT s.tenant_id, s.lead_id FROM lead_search s \
                     WHERE s.docid IN (SELECT rowid FROM lead_words WHERE lead_words MATCH ",
                )
                .bind(query)
                .push("))")
            }
        }
    }
}

/// The words of `tenant`'s vocabulary that `term` is a typo of, closest
/// first, at most [`MAX_EXPANSIONS`]: found through the vocabulary's
/// trigram index by [`Term::typo_probes`], tested with the domain's rule
/// spelt in SQL, and checked again by the domain.
async fn typos(
    txn: &sea_orm::DatabaseTransaction,
    backend: Backend,
    tenant: TenantId,
    term: &Term,
) -> Result<Vec<String>, Failure> {
    let probes = term.typo_probes();
    if probes.is_empty() {
        return Ok(Vec::new());
    }
    let mut sql = Sql::new(backend);
    let padded = "x.padded";
    sql.push("SELECT y.word FROM (SELECT x.word, (");
    for (i, gram) in term.trigrams().iter().enumerate() {
        if i > 0 {
            sql.push(" + ");
        }
        sql.contains_in(padded, gram);
    }
    sql.push(") AS shared, (");
    for (i, gram) in term
        .trigrams()
        .iter()
        .filter(|g| Term::is_inner(g))
        .enumerate()
    {
        if i > 0 {
            sql.push(" + ");
        }
        sql.contains_in(padded, gram);
    }
    sql.push(") AS inner_grams, (");
    for (i, gram) in probes.iter().enumerate() {
        if i > 0 {
            sql.push(" + ");
        }
        sql.contains_in(padded, gram);
    }
    sql.push(") AS past_start FROM (SELECT w.word, ");
    match backend {
        Backend::Postgres => {
            let patterns: Vec<String> = probes.iter().map(|g| like_pattern(g)).collect();
            sql.push("'  ' || w.word || ' ' AS padded FROM search_words w WHERE w.tenant_id = ")
                .bind(tenant.as_uuid())
                // Through the owner's function (migration 11), one pattern
                // per line.
                .push(" AND w.word IN (SELECT search_words_like(")
                .bind(patterns.join("\n"))
                .push(")) AND left(w.word, ");
        }
        Backend::Sqlite => {
            let grams: Vec<String> = probes.iter().map(|g| format!("\"{g}\"")).collect();
            sql.push("w.padded FROM search_words w WHERE w.tenant_id = ")
                .bind(tenant.as_uuid())
                .push(
                    " AND w.id IN (SELECT rowid FROM search_word_trigrams \
                     WHERE search_word_trigrams MATCH ",
                )
                .bind(grams.join(" OR "))
                .push(") AND substr(w.word, 1, ");
        }
    }
    let chars = term.word().chars().count();
    sql.push(&format!("{chars}) <> "))
        .bind(term.word().to_owned())
        .push(") x) y WHERE y.inner_grams > 0 AND y.past_start > 0 AND 2 * y.shared >= ")
        .push(&term.trigrams().len().to_string())
        .push(&format!(
            " ORDER BY y.shared DESC, y.word LIMIT {MAX_EXPANSIONS}"
        ));
    let rows = txn.query_all_raw(sql.statement()).await?;
    let words = rows
        .iter()
        .map(|row| row.try_get::<String>("", "word"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(term
        .expansions(words.iter().map(String::as_str))
        .into_iter()
        .map(str::to_owned)
        .collect())
}

/// The `tsquery` that finds, through PostgreSQL's key index (migration 32),
/// a superset of the leads where every term has a word it starts or a word
/// it is a typo of (the statement's text test then keeps exactly those).
///
/// A term of four or more characters without an ASCII digit names one key,
/// which GIN intersects with the others without reading its leads whole.
/// Any other term is a prefix of keys, whose leads GIN reads whole into a
/// bitmap first: for a term of three letters that is at most a few dozen
/// keys (keys are four characters long), but a shorter term or one with
/// digits can start a great many (`1555` starts most phone numbers). Such
/// a term is left to the text test when a narrower one is there.
fn keys_query(tenant: TenantId, terms: &[(Term, Vec<String>)]) -> String {
    let tag = tenant_tag(tenant);
    let probes: Vec<(Reach, String)> = terms
        .iter()
        .map(|(term, words)| {
            let (reach, probe) = term_probe(&tag, term.word());
            let mut any = vec![probe];
            any.extend(words.iter().map(|w| format!("'{}'", word_key(&tag, w))));
            (reach, format!("({})", any.join(" | ")))
        })
        .collect();
    let narrowest = probes
        .iter()
        .map(|(reach, _)| *reach)
        .min()
        .unwrap_or(Reach::Open);
    probes
        .into_iter()
        .filter(|(reach, _)| *reach <= Reach::FewKeys.max(narrowest))
        .map(|(_, probe)| probe)
        .collect::<Vec<_>>()
        .join(" & ")
}

/// How much of the key index a term's probe reads, narrowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Reach {
    /// One key.
    OneKey,
    /// A prefix of at most a few dozen keys: three characters, no digit.
    FewKeys,
    /// A prefix of any number of keys.
    Open,
}

/// `right(tenant::text, 8)` in migration 32: the last eight hex digits.
fn tenant_tag(tenant: TenantId) -> String {
    let hex = tenant.as_uuid().simple().to_string();
    hex[hex.len() - 8..].to_owned()
}

/// At most the first four characters of `word`: `left(word, 4)` in
/// migration 32.
fn first_four(word: &str) -> String {
    word.chars().take(4).collect()
}

/// The first four characters of `word`, if it has that many.
fn head(word: &str) -> Option<String> {
    let head = first_four(word);
    (head.chars().count() == 4).then_some(head)
}

fn has_digit(text: &str) -> bool {
    text.bytes().any(|b| b.is_ascii_digit())
}

/// `search_key(tenant, word)` in migration 32: the key every lead holding
/// `word` is indexed under.
fn word_key(tag: &str, word: &str) -> String {
    if has_digit(word) {
        format!("{tag}{word}")
    } else {
        format!("{tag}{}", first_four(word))
    }
}

/// The probe for the leads holding a word that starts with `term`, and
/// its reach: a word starting with a digitless term of four or more
/// characters has the term's first four characters as a key (itself, or
/// the head of a word with digits after it).
fn term_probe(tag: &str, term: &str) -> (Reach, String) {
    if has_digit(term) {
        return (Reach::Open, format!("'{tag}{term}':*"));
    }
    match head(term) {
        Some(head) => (Reach::OneKey, format!("'{tag}{head}'")),
        None if term.chars().count() == 3 => (Reach::FewKeys, format!("'{tag}{term}':*")),
        None => (Reach::Open, format!("'{tag}{term}':*")),
    }
}

/// A `LIKE` pattern for words whose `"  word "` holds `gram`.
fn like_pattern(gram: &str) -> String {
    let core = gram.trim_matches(' ');
    match (gram.starts_with(' '), gram.ends_with(' ')) {
        (true, true) => core.to_owned(),
        (true, false) => format!("{core}%"),
        (false, true) => format!("%{core}"),
        (false, false) => format!("%{core}%"),
    }
}

/// A JSON value as the number SQLite's `json_each` gives for it.
fn number(value: &serde_json::Value) -> Value {
    value
        .as_i64()
        .map_or_else(|| value.as_f64().unwrap_or(0.0).into(), Into::into)
}

/// The filters every search shares with listing, appended as `AND …`.
fn filters(sql: &mut Sql, q: &SearchLeadsQuery) {
    if let Some(status) = q.status {
        sql.push(" AND l.status = ").bind(status.as_str());
    }
    if let Some(agent) = q.assigned_agent_id {
        sql.push(" AND l.assigned_agent_id = ")
            .bind(agent.as_uuid());
    }
    if let Some(tag) = &q.tag {
        match sql.backend {
            // Served by the GIN index leads_tags_idx.
            Backend::Postgres => sql
                .push(" AND l.tags @> ")
                .bind(serde_json::json!([tag.as_str()]).to_string())
                .push("::jsonb"),
            Backend::Sqlite => sql
                .push(" AND EXISTS (SELECT 1 FROM json_each(l.tags) t WHERE t.value = ")
                .bind(tag.as_str())
                .push(")"),
        };
    }
    for (column, op, at) in [
        ("created_at", ">=", q.created_after),
        ("created_at", "<", q.created_before),
        ("updated_at", ">=", q.updated_after),
        ("updated_at", "<", q.updated_before),
    ] {
        if let Some(at) = at {
            sql.push(&format!(" AND l.{column} {op} ")).bind(at);
        }
    }
    if let Some(metadata) = &q.metadata {
        match sql.backend {
            Backend::Postgres => {
                let object: serde_json::Map<String, serde_json::Value> =
                    metadata.pairs().iter().cloned().collect();
                sql.push(" AND l.metadata @> ")
                    .bind(serde_json::Value::Object(object).to_string())
                    .push("::jsonb");
            }
            Backend::Sqlite => {
                for (key, value) in metadata.pairs() {
                    sql.push(" AND EXISTS (SELECT 1 FROM json_each(l.metadata) m WHERE m.key = ")
                        .bind(key.clone());
                    match value {
                        serde_json::Value::String(s) => {
                            sql.push(" AND m.type = 'text' AND m.atom = ")
                                .bind(s.clone());
                        }
                        serde_json::Value::Number(_) => {
                            sql.push(" AND m.type IN ('integer', 'real') AND m.atom = ")
                                .bind(number(value));
                        }
                        serde_json::Value::Bool(true) => {
                            sql.push(" AND m.type = 'true'");
                        }
                        serde_json::Value::Bool(false) => {
                            sql.push(" AND m.type = 'false'");
                        }
                        _ => {
                            sql.push(" AND m.type = 'null'");
                        }
                    }
                    sql.push(")");
                }
            }
        }
    }
}

/// The statement for one page of `q`'s hits in `tenant`.
fn statement(
    backend: Backend,
    tenant: TenantId,
    q: &SearchLeadsQuery,
    plan: &SearchPlan,
) -> Statement {
    let terms = plan.terms();
    let mut sql = Sql::new(backend);
    sql.push("SELECT x.*, CAST(");
    for i in 0..terms.len() {
        if i > 0 {
            sql.push(" + ");
        }
        sql.push(&format!("x.term_{i}"));
    }
    let total = (0..terms.len())
        .map(|i| format!("x.term_{i}"))
        .collect::<Vec<_>>()
        .join(" + ");
    sql.push(" AS BIGINT) AS search_score FROM (SELECT l.*");
    for (i, (term, words)) in terms.iter().enumerate() {
        sql.push(", ")
            .score(term, words)
            .push(&format!(" AS term_{i}"));
    }
    sql.push(" FROM leads l WHERE l.tenant_id = ")
        .bind(tenant.as_uuid())
        .push(" AND l.deleted_at IS NULL");
    filters(&mut sql, q);
    sql.push(" AND ").candidates(tenant, terms);
    sql.push(") x WHERE ");
    for i in 0..terms.len() {
        if i > 0 {
            sql.push(" AND ");
        }
        sql.push(&format!("x.term_{i} > 0"));
    }
    if let Some(after) = q.after {
        let score = i64::from(after.score);
        sql.push(&format!(" AND (({total}) < "))
            .bind(score)
            .push(&format!(" OR (({total}) = "))
            .bind(score)
            .push(" AND x.id < ")
            .bind(after.id.as_uuid())
            .push("))");
    }
    sql.push(&format!(
        " ORDER BY ({total}) DESC, x.id DESC LIMIT {}",
        u64::from(q.limit.get()) + 1
    ));
    sql.statement()
}

/// One page of hits, read in `txn` (which has the tenant set).
pub(crate) async fn page(
    txn: &sea_orm::DatabaseTransaction,
    backend: Backend,
    tenant: TenantId,
    q: &SearchLeadsQuery,
) -> Result<(Vec<(leads::Model, u32)>, SearchPlan), Failure> {
    let terms = q.text.terms();
    let known = known_terms(txn, backend, tenant, terms).await?;
    let mut expanded = Vec::with_capacity(terms.len());
    for (term, known) in terms.iter().zip(&known) {
        expanded.push(if *known {
            Vec::new()
        } else {
            typos(txn, backend, tenant, term).await?
        });
    }
    let plan = q.text.plan(expanded);
    // A term the tenant has no word for and no typo of matches nothing.
    if plan
        .terms()
        .iter()
        .zip(&known)
        .any(|((_, typos), known)| !known && typos.is_empty())
    {
        return Ok((Vec::new(), plan));
    }
    let rows = txn
        .query_all_raw(statement(backend, tenant, q, &plan))
        .await?;
    let rows = rows
        .iter()
        .map(|row| {
            let model = leads::Model::from_query_result(row, "")?;
            let score: i64 = row.try_get("", "search_score")?;
            Ok((model, u32::try_from(score).unwrap_or(0)))
        })
        .collect::<Result<Vec<_>, sea_orm::DbErr>>()?;
    Ok((rows, plan))
}

/// For each term, whether some word of `tenant`'s vocabulary starts with
/// it: one range probe per term on the vocabulary's key, in one statement
/// (which also asks PostgreSQL for custom plans for the rest of the
/// transaction).
async fn known_terms(
    txn: &sea_orm::DatabaseTransaction,
    backend: Backend,
    tenant: TenantId,
    terms: &[Term],
) -> Result<Vec<bool>, Failure> {
    let mut sql = Sql::new(backend);
    sql.push("SELECT ");
    if backend == Backend::Postgres {
        // This transaction's statements are planned for their values every
        // time: a cached generic plan cannot see which words a tsquery or a
        // LIKE names, and picks the tenant's whole status index instead of
        // the word index (70 ms instead of 3 at a million leads).
        sql.push("set_config('plan_cache_mode', 'force_custom_plan', true) AS plan_mode, ");
    }
    for (i, term) in terms.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        // Words are letters and digits: none holds U+10FFFF, so every word
        // starting with the term sorts (bytewise) below this bound.
        sql.push("CASE WHEN EXISTS (SELECT 1 FROM search_words w WHERE w.tenant_id = ")
            .bind(tenant.as_uuid())
            .push(" AND w.word >= ")
            .bind(term.word().to_owned())
            .push(" AND w.word < ")
            .bind(format!("{}\u{10FFFF}", term.word()))
            .push(&format!(") THEN 1 ELSE 0 END AS known_{i}"));
    }
    let row = txn.query_one_raw(sql.statement()).await?;
    let Some(row) = row else {
        return Ok(vec![false; terms.len()]);
    };
    (0..terms.len())
        .map(|i| Ok(row.try_get::<i32>("", &format!("known_{i}"))? == 1))
        .collect()
}

/// Decoded hits as a page: each lead with its score and the fields a term
/// matched in (the domain decides those).
pub(crate) fn hits(
    rows: Vec<(leads::Model, u32)>,
    plan: &SearchPlan,
    q: &SearchLeadsQuery,
) -> anyhow::Result<Page<SearchHit>> {
    let hits = rows
        .into_iter()
        .map(|(model, score)| {
            let lead = leadline_domain::Lead::try_from(model)?;
            let matched = plan.matched_fields(&lead);
            let highlights = plan.highlights(&lead);
            Ok(SearchHit {
                lead,
                score,
                matched,
                highlights,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Page::from_overfetch(hits, q.limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> TenantId {
        TenantId::from_uuid(
            uuid::Uuid::parse_str("8c430523-0025-817f-901b-45ec308a9cd8").expect("a uuid"),
        )
    }

    fn terms(query: &str, typos: &[&[&str]]) -> Vec<(Term, Vec<String>)> {
        let text = leadline_domain::SearchText::parse(query).expect("a valid query");
        text.terms()
            .iter()
            .cloned()
            .zip(
                typos
                    .iter()
                    .map(|w| w.iter().map(|s| (*s).to_owned()).collect()),
            )
            .collect()
    }

    #[test]
    fn digitless_terms_of_four_or_more_name_one_key() {
        assert_eq!(
            keys_query(tenant(), &terms("Cleo Cartwright", &[&[], &[]])),
            "('308a9cd8cleo') & ('308a9cd8cart')"
        );
        // Four characters counted as characters, not bytes.
        assert_eq!(
            keys_query(tenant(), &terms("Ågren", &[&[]])),
            "('308a9cd8agre')"
        );
    }

    #[test]
    fn short_terms_and_terms_with_digits_are_prefixes() {
        assert_eq!(
            keys_query(tenant(), &terms("jo 1555", &[&[], &[]])),
            "('308a9cd8jo':*) & ('308a9cd81555':*)"
        );
        assert_eq!(
            keys_query(tenant(), &terms("hopp1906", &[&[]])),
            "('308a9cd8hopp1906':*)"
        );
    }

    #[test]
    fn wide_prefixes_are_left_to_the_text_test_beside_narrower_ones() {
        assert_eq!(
            keys_query(tenant(), &terms("o keefe", &[&[], &[]])),
            "('308a9cd8keef')"
        );
        assert_eq!(
            keys_query(tenant(), &terms("dax jacobi 1555", &[&[], &[], &[]])),
            "('308a9cd8dax':*) & ('308a9cd8jaco')"
        );
        assert_eq!(
            keys_query(tenant(), &terms("al 1555", &[&[], &[]])),
            "('308a9cd8al':*) & ('308a9cd81555':*)"
        );
        assert_eq!(
            keys_query(tenant(), &terms("al kay", &[&[], &[]])),
            "('308a9cd8kay':*)"
        );
    }

    #[test]
    fn typos_are_found_by_the_key_of_the_word_they_expand_to() {
        assert_eq!(
            keys_query(tenant(), &terms("hoper", &[&["hopper", "hoper7"]])),
            "('308a9cd8hope' | '308a9cd8hopp' | '308a9cd8hoper7')"
        );
    }
}

//! Lead search on the store: one statement per page, on both backends.
//!
//! What matches and how it ranks is the domain's ([`leadline_domain::search`]):
//! each term's score is computed here with the same substring tests
//! (`strpos` on PostgreSQL, `instr` on SQLite) over the stored
//! `search_text`, so both backends return the same hits in the same order.
//! The indexes only narrow the candidates, and each narrowing is a superset
//! of what can score: a word or prefix hit has a word starting with the term
//! (PostgreSQL: the `tsvector` prefix query, and a trigram `LIKE` for words
//! its parser does not see; SQLite: an FTS5 prefix query on `lead_words`),
//! and a fuzzy hit shares an inner trigram with a word (a trigram `LIKE` on
//! PostgreSQL; an FTS5 `OR` of trigrams on `lead_trigrams`).

use leadline_domain::{
    Page, SearchHit, SearchLeadsQuery, TenantId,
    search::{FUZZY, PREFIX, Term, WORD},
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

    /// `1` when the lead's search text contains `needle`, else `0`.
    fn contains(&mut self, needle: &str) -> &mut Self {
        self.push(match self.backend {
            Backend::Postgres => "(CASE WHEN strpos(l.search_text, ",
            Backend::Sqlite => "(CASE WHEN instr(l.search_text, ",
        })
        .bind(needle.to_owned())
        .push(") > 0 THEN 1 ELSE 0 END)")
    }

    /// The term's score (see the domain's module docs), as an expression.
    fn score(&mut self, term: &Term) -> &mut Self {
        self.push("(CASE WHEN ").contains(&term.word_probe());
        self.push(&format!(" = 1 THEN {WORD} WHEN "))
            .contains(&term.prefix_probe());
        self.push(&format!(" = 1 THEN {PREFIX}"));
        if term.is_fuzzy() {
            self.push(" WHEN (");
            for (i, gram) in term.trigrams().iter().enumerate() {
                if i > 0 {
                    self.push(" + ");
                }
                self.contains(gram);
            }
            self.push(&format!(") * 2 >= {} AND (", term.trigrams().len()));
            for (i, gram) in inner(term).enumerate() {
                if i > 0 {
                    self.push(" + ");
                }
                self.contains(gram);
            }
            self.push(") >= 1 AND (");
            for (i, gram) in term.past_start().iter().enumerate() {
                if i > 0 {
                    self.push(" + ");
                }
                self.contains(gram);
            }
            self.push(&format!(") >= 1 THEN {FUZZY}"));
        }
        self.push(" ELSE 0 END)")
    }

    /// A condition true for every lead the term can score on, served by an
    /// index.
    fn candidates(&mut self, term: &Term) -> &mut Self {
        match self.backend {
            Backend::Postgres => {
                self.push("(l.search_tsv @@ to_tsquery('simple', ")
                    .bind(format!("'{}':*", term.word()))
                    .push(") OR l.search_text LIKE ")
                    .bind(format!("%{}%", term.prefix_probe()));
                if term.is_fuzzy() {
                    for gram in inner(term) {
                        self.push(" OR l.search_text LIKE ")
                            .bind(format!("%{gram}%"));
                    }
                }
                self.push(")")
            }
            Backend::Sqlite => {
                self.push(
                    "(l.tenant_id, l.id) IN (SELECT s.tenant_id, s.lead_id FROM lead_search s \
                     WHERE s.docid IN (SELECT rowid FROM lead_words WHERE lead_words MATCH ",
                )
                .bind(format!("\"{}\"*", term.word()))
                .push(")");
                if term.is_fuzzy() {
                    let grams: Vec<String> = inner(term).map(|g| format!("\"{g}\"")).collect();
                    self.push(
                        " OR s.docid IN (SELECT rowid FROM lead_trigrams WHERE lead_trigrams MATCH ",
                    )
                    .bind(grams.join(" OR "))
                    .push(")");
                }
                self.push(")")
            }
        }
    }
}

/// The trigrams of `term` that lie inside a word.
fn inner(term: &Term) -> impl Iterator<Item = &String> {
    term.trigrams().iter().filter(|g| Term::is_inner(g))
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
fn statement(backend: Backend, tenant: TenantId, q: &SearchLeadsQuery) -> Statement {
    let terms = q.text.terms();
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
    for (i, term) in terms.iter().enumerate() {
        sql.push(", ").score(term).push(&format!(" AS term_{i}"));
    }
    sql.push(" FROM leads l WHERE l.tenant_id = ")
        .bind(tenant.as_uuid())
        .push(" AND l.deleted_at IS NULL");
    filters(&mut sql, q);
    for term in terms {
        sql.push(" AND ").candidates(term);
    }
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
    let db = match backend {
        Backend::Postgres => sea_orm::DbBackend::Postgres,
        Backend::Sqlite => sea_orm::DbBackend::Sqlite,
    };
    Statement::from_sql_and_values(db, sql.text, sql.values)
}

/// One page of hits, read in `txn` (which has the tenant set).
pub(crate) async fn page(
    txn: &sea_orm::DatabaseTransaction,
    backend: Backend,
    tenant: TenantId,
    q: &SearchLeadsQuery,
) -> Result<Vec<(leads::Model, u32)>, Failure> {
    let rows = txn.query_all_raw(statement(backend, tenant, q)).await?;
    rows.iter()
        .map(|row| {
            let model = leads::Model::from_query_result(row, "")?;
            let score: i64 = row.try_get("", "search_score")?;
            Ok((model, u32::try_from(score).unwrap_or(0)))
        })
        .collect::<Result<Vec<_>, sea_orm::DbErr>>()
        .map_err(Failure::from)
}

/// Decoded hits as a page: each lead with its score and the fields a term
/// matched in (the domain decides those).
pub(crate) fn hits(
    rows: Vec<(leads::Model, u32)>,
    q: &SearchLeadsQuery,
) -> anyhow::Result<Page<SearchHit>> {
    let hits = rows
        .into_iter()
        .map(|(model, score)| {
            let lead = leadline_domain::Lead::try_from(model)?;
            let matched = q.text.matched_fields(&lead);
            Ok(SearchHit {
                lead,
                score,
                matched,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Page::from_overfetch(hits, q.limit))
}

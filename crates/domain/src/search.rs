//! Free-text search over leads: what a query means, how a lead is indexed,
//! and how a hit ranks — defined here once, so both stores give the same
//! answers to the same input.
//!
//! A lead's searchable fields (names, email, company, phone, tags) are
//! *folded* (accents removed, lower-cased) and split into words: runs of
//! letters and digits. The store keeps them as one text, each word written
//! as `"  word "` ([`search_text`]), and its indexes (a `tsvector` and
//! trigrams on PostgreSQL, FTS5 on SQLite) only narrow the candidates; the
//! rank itself is computed by both stores with plain substring tests on that
//! text, which mean the same thing in every SQL dialect:
//!
//! - a term scores **3** when a word equals it (`"  grace "` is in the text),
//! - **2** when a word starts with it (type-ahead: `gra` finds Grace),
//! - **1** when it is a typo away from a word: a term of four or more
//!   characters whose padded trigrams (`"  h"`, `" ho"`, `"hop"`, … `"er "`,
//!   as PostgreSQL's pg_trgm pads words) are at least half present in one
//!   word, one of them inside the word and one past the term's first three
//!   letters (`hoper` finds Hopper, `exmaple` finds example; `grace` does
//!   not find Gray on a shared start alone, nor `gray lace` from trigrams
//!   spread over two words). Stores find those words in the tenant's
//!   vocabulary first ([`Term::expansions`], at most [`MAX_EXPANSIONS`] per
//!   term), then the leads that hold them,
//! - **0** otherwise.
//!
//! A lead matches when every term scores at least 1; its score is the sum.
//! Hits are ordered by score, then newest first, so the order is total and a
//! keyset cursor `(score, id)` pages through it stably.

use serde_json::Value;
use unicode_normalization::{UnicodeNormalization as _, char::is_combining_mark};

use crate::{AgentId, Lead, LeadId, LeadStatus, PageLimit, Tag, ValueError};

/// Longest accepted query, in characters (as the error says).
pub const MAX_QUERY_CHARS: usize = 256;
/// Most terms (words) a query may have.
pub const MAX_TERMS: usize = 8;
/// Longest term, in characters.
pub const MAX_TERM_CHARS: usize = 40;
/// Shortest term that may match fuzzily; shorter ones match as words or
/// prefixes only (a typo in three letters is another word).
pub const FUZZY_MIN_CHARS: usize = 4;

/// How many padded trigrams spell a term's start (`"  h"`, `" ho"`, `"hop"`).
const START: usize = 3;

/// Score of a term that equals a word.
pub const WORD: u32 = 3;
/// Score of a term that starts a word.
pub const PREFIX: u32 = 2;
/// Score of a term that is a typo away from a word.
pub const FUZZY: u32 = 1;

/// Removes accents (compatibility decomposition, combining marks dropped,
/// and the Latin letters that do not decompose, such as `ł`, `ø` and `ß`,
/// spelt plainly) and lower-cases: `Ågren` and `agren` are the same word,
/// as are `Skłodowska` and `sklodowska`.
#[must_use]
pub fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text
        .nfkd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
    {
        match c {
            // Latin letters that carry their mark inside (no decomposition).
            'ł' | 'ŀ' => out.push('l'),
            'ø' => out.push('o'),
            'đ' | 'ð' => out.push('d'),
            'ħ' => out.push('h'),
            'ŧ' => out.push('t'),
            'ı' => out.push('i'),
            'ß' => out.push_str("ss"),
            'æ' => out.push_str("ae"),
            'œ' => out.push_str("oe"),
            'þ' => out.push_str("th"),
            // Greek final sigma is a sigma: `ΣΊΣΥΦΟΣ` lower-cases to a
            // medial one, and a typed `σίσυφος` must find it.
            'ς' => out.push('σ'),
            c => out.push(c),
        }
    }
    out
}

/// The folded words of `text`: runs of letters and digits.
#[must_use]
pub fn words(text: &str) -> Vec<String> {
    fold(text)
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Appends each word of `text` as `"  word "`.
fn push_words(out: &mut String, text: &str) {
    for word in words(text) {
        out.push_str("  ");
        out.push_str(&word);
        out.push(' ');
    }
}

/// The fields a hit can match in, as the API names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchField {
    /// `first_name`.
    FirstName,
    /// `last_name`.
    LastName,
    /// `email`.
    Email,
    /// `company`.
    Company,
    /// `phone`.
    Phone,
    /// `tags`.
    Tags,
}

impl SearchField {
    /// Every field, in the order hits list them.
    pub const ALL: [Self; 6] = [
        Self::FirstName,
        Self::LastName,
        Self::Email,
        Self::Company,
        Self::Phone,
        Self::Tags,
    ];

    /// The field's searchable text in `lead`, if it has any.
    fn text(self, lead: &Lead) -> Option<String> {
        match self {
            Self::FirstName => Some(lead.first_name.to_string()),
            Self::LastName => Some(lead.last_name.to_string()),
            Self::Email => lead.email.as_ref().map(ToString::to_string),
            Self::Company => lead.company.as_ref().map(ToString::to_string),
            Self::Phone => lead.phone.as_ref().map(|p| p.as_str().to_owned()),
            Self::Tags => Some(
                lead.tags
                    .as_slice()
                    .iter()
                    .map(Tag::as_str)
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
        }
    }
}

/// What the store keeps for `lead` and searches: every word of its
/// searchable fields as `"  word "`.
#[must_use]
pub fn search_text(lead: &Lead) -> String {
    document(SearchField::ALL.iter().filter_map(|f| f.text(lead)))
}

/// The key two leads share when they are likely the same person at the same
/// company: their folded name and company with spaces and punctuation gone
/// (`gracehopper|usnavy`, so `U.S. Navy` and `US Navy` agree), or empty for
/// a lead without a company (a name alone is too common).
#[must_use]
pub fn name_key(first: &str, last: &str, company: Option<&str>) -> String {
    let Some(company) = company.map(words).filter(|w| !w.is_empty()) else {
        return String::new();
    };
    let mut name = words(first);
    name.extend(words(last));
    format!("{}|{}", name.concat(), company.concat())
}

/// [`name_key`] of a lead.
#[must_use]
pub fn lead_name_key(lead: &Lead) -> String {
    name_key(
        lead.first_name.as_str(),
        lead.last_name.as_str(),
        lead.company.as_ref().map(|c| c.as_str()),
    )
}

/// The search text of a lead's searchable fields given as raw text, in
/// [`SearchField::ALL`] order (tags joined by spaces); for code that holds
/// columns rather than a [`Lead`], such as a migration's backfill.
#[must_use]
pub fn document<S: AsRef<str>>(fields: impl IntoIterator<Item = S>) -> String {
    let mut out = String::new();
    for text in fields {
        push_words(&mut out, text.as_ref());
    }
    out
}

/// One word of a query, with the substrings the stores test for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    word: String,
    /// Distinct padded trigrams, in order of first appearance.
    trigrams: Vec<String>,
}

impl Term {
    fn new(word: String) -> Self {
        let padded: Vec<char> = format!("  {word} ").chars().collect();
        let mut trigrams: Vec<String> = Vec::new();
        for window in padded.windows(3) {
            let gram: String = window.iter().collect();
            if !trigrams.contains(&gram) {
                trigrams.push(gram);
            }
        }
        Self { word, trigrams }
    }

    /// The folded word.
    #[must_use]
    pub fn word(&self) -> &str {
        &self.word
    }

    /// Present in a search text exactly when a word equals this term.
    #[must_use]
    pub fn word_probe(&self) -> String {
        format!("  {} ", self.word)
    }

    /// Present in a search text exactly when a word starts with this term.
    #[must_use]
    pub fn prefix_probe(&self) -> String {
        format!("  {}", self.word)
    }

    /// Whether the term may match fuzzily (long enough).
    #[must_use]
    pub fn is_fuzzy(&self) -> bool {
        self.word.chars().count() >= FUZZY_MIN_CHARS
    }

    /// The distinct padded trigrams (`"  h"`, `" ho"`, … `"er "`).
    #[must_use]
    pub fn trigrams(&self) -> &[String] {
        &self.trigrams
    }

    /// The trigrams past the term's start (`"  h"`, `" ho"`, `"hop"`): a
    /// fuzzy match needs one of these, not a shared start alone.
    #[must_use]
    pub fn past_start(&self) -> &[String] {
        &self.trigrams[START.min(self.trigrams.len())..]
    }

    /// Whether `gram` lies inside a word (has no padding).
    #[must_use]
    pub fn is_inner(gram: &str) -> bool {
        !gram.contains(' ')
    }

    /// How many of this term's trigrams `word` holds (padded as a word).
    fn shared(&self, word: &str) -> usize {
        let padded = format!("  {word} ");
        self.trigrams
            .iter()
            .filter(|g| padded.contains(g.as_str()))
            .count()
    }

    /// Whether `word` is a typo away from this term (see the module docs):
    /// the term is long enough, and the word holds at least half of the
    /// term's padded trigrams, one of them inside a word and one past the
    /// term's first three letters.
    #[must_use]
    pub fn is_typo_of(&self, word: &str) -> bool {
        if !self.is_fuzzy() || word.is_empty() {
            return false;
        }
        let padded = format!("  {word} ");
        let has = |g: &String| padded.contains(g.as_str());
        self.trigrams.iter().any(|g| Self::is_inner(g) && has(g))
            && self.past_start().iter().any(has)
            && 2 * self.shared(word) >= self.trigrams.len()
    }

    /// Every word this term is a typo of holds one of these in `"  word "`
    /// (they are [`Term::past_start`]: inside a word, or ending it): what a
    /// store looks the term up by in a tenant's vocabulary before it checks
    /// each word found with [`Term::is_typo_of`].
    #[must_use]
    pub fn typo_probes(&self) -> &[String] {
        if self.is_fuzzy() {
            self.past_start()
        } else {
            &[]
        }
    }

    /// The words of `vocabulary` this term is a typo of, closest first (most
    /// trigrams shared, then alphabetical), at most [`MAX_EXPANSIONS`].
    /// Words the term starts are left out: they score as prefixes.
    #[must_use]
    pub fn expansions<'a>(&self, vocabulary: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
        let mut found: Vec<(usize, &'a str)> = vocabulary
            .into_iter()
            .filter(|w| !w.starts_with(self.word.as_str()) && self.is_typo_of(w))
            .map(|w| (self.shared(w), w))
            .collect();
        found.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
        found.dedup_by(|a, b| a.1 == b.1);
        found.truncate(MAX_EXPANSIONS);
        found.into_iter().map(|(_, w)| w).collect()
    }
}

/// Most words of a tenant's vocabulary one term expands to as typos
/// ([`Term::expansions`]).
pub const MAX_EXPANSIONS: usize = 64;

/// A parsed free-text query: one to [`MAX_TERMS`] distinct terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchText {
    terms: Vec<Term>,
}

impl SearchText {
    /// Folds `q` and splits it into terms.
    ///
    /// # Errors
    /// [`ValueError`] when `q` is longer than [`MAX_QUERY_CHARS`], has no
    /// letter or digit, more than [`MAX_TERMS`] terms or a term longer than
    /// [`MAX_TERM_CHARS`].
    pub fn parse(q: &str) -> Result<Self, ValueError> {
        if q.chars().count() > MAX_QUERY_CHARS {
            return Err(ValueError::TooLong {
                max: MAX_QUERY_CHARS,
            });
        }
        let mut seen: Vec<String> = Vec::new();
        for word in words(q) {
            if word.chars().count() > MAX_TERM_CHARS {
                return Err(ValueError::Invalid("has a word longer than 40 characters"));
            }
            if !seen.contains(&word) {
                seen.push(word);
            }
        }
        if seen.is_empty() {
            return Err(ValueError::Invalid("must contain a letter or a digit"));
        }
        if seen.len() > MAX_TERMS {
            return Err(ValueError::Invalid("must have at most 8 words"));
        }
        Ok(Self {
            terms: seen.into_iter().map(Term::new).collect(),
        })
    }

    /// The terms, in query order.
    #[must_use]
    pub fn terms(&self) -> &[Term] {
        &self.terms
    }

    /// The plan for a tenant whose vocabulary (every word its leads were
    /// ever indexed with) is `vocabulary`: the reference that stores
    /// compute with two index lookups per term instead.
    #[must_use]
    pub fn plan_over(&self, vocabulary: &[&str]) -> SearchPlan {
        let typos = self
            .terms
            .iter()
            .map(|term| {
                if vocabulary.iter().any(|w| w.starts_with(term.word())) {
                    Vec::new()
                } else {
                    term.expansions(vocabulary.iter().copied())
                        .into_iter()
                        .map(str::to_owned)
                        .collect()
                }
            })
            .collect();
        self.plan(typos)
    }

    /// The plan with `typos[i]` the words term `i` stands for as a typo
    /// (empty for a term some word of the tenant starts with: see
    /// [`SearchPlan`]). Missing entries count as empty.
    #[must_use]
    pub fn plan(&self, mut typos: Vec<Vec<String>>) -> SearchPlan {
        typos.resize(self.terms.len(), Vec::new());
        SearchPlan {
            terms: self.terms.iter().cloned().zip(typos).collect(),
        }
    }
}

/// A query as run in one tenant. A term some word of the tenant's
/// vocabulary starts with is taken as typed: it matches words equal to it
/// and words it starts. A term no word starts with is taken as a typo: it
/// matches the words of the vocabulary it is a typo of
/// ([`Term::expansions`]). Typed words are never widened to their
/// neighbours (`grace` does not find Gracy when Grace exists), so a query
/// of known words costs one index lookup, and a misspelt one is still found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchPlan {
    terms: Vec<(Term, Vec<String>)>,
}

impl SearchPlan {
    /// Each term with the words it stands for as a typo (empty when taken as
    /// typed).
    #[must_use]
    pub fn terms(&self) -> &[(Term, Vec<String>)] {
        &self.terms
    }

    /// How term `i` scores against a search text: [`WORD`], [`PREFIX`],
    /// [`FUZZY`] when the text holds one of its typo words, else 0.
    fn term_score(term: &Term, typos: &[String], text: &str) -> u32 {
        if text.contains(&term.word_probe()) {
            WORD
        } else if text.contains(&term.prefix_probe()) {
            PREFIX
        } else if typos.iter().any(|w| text.contains(&format!("  {w} "))) {
            FUZZY
        } else {
            0
        }
    }

    /// The score of a search text, or `None` when a term does not match.
    #[must_use]
    pub fn score(&self, text: &str) -> Option<u32> {
        let mut total = 0;
        for (term, typos) in &self.terms {
            match Self::term_score(term, typos, text) {
                0 => return None,
                s => total += s,
            }
        }
        Some(total)
    }

    /// The fields of `lead` that some term matches in, for a hit's
    /// `matched`.
    #[must_use]
    pub fn matched_fields(&self, lead: &Lead) -> Vec<SearchField> {
        SearchField::ALL
            .into_iter()
            .filter(|field| {
                field.text(lead).is_some_and(|text| {
                    let mut indexed = String::new();
                    push_words(&mut indexed, &text);
                    self.terms
                        .iter()
                        .any(|(t, typos)| Self::term_score(t, typos, &indexed) > 0)
                })
            })
            .collect()
    }

    /// Whether a folded word is one a term matches: equal to it, started by
    /// it, or one of its typo words.
    fn matches_word(&self, word: &str) -> bool {
        self.terms
            .iter()
            .any(|(term, typos)| word.starts_with(term.word()) || typos.iter().any(|t| t == word))
    }

    /// Where `lead` matched, field by field (in [`SearchField::ALL`]'s
    /// order): each field's text with the ranges of the words a term
    /// matched, as `[start, end)` offsets in Unicode code points. A client
    /// renders them as it sees fit (and escapes the text itself: it is the
    /// lead's data, not markup).
    #[must_use]
    pub fn highlights(&self, lead: &Lead) -> Vec<Highlight> {
        let mut out = Vec::new();
        for field in SearchField::ALL {
            let Some(text) = field.text(lead) else {
                continue;
            };
            let mut marks: Vec<[u32; 2]> = Vec::new();
            let mut run: Option<(usize, String)> = None;
            let chars: Vec<char> = text.chars().collect();
            for (i, c) in chars.iter().chain(std::iter::once(&' ')).enumerate() {
                // A combining mark belongs to its word (decomposed text,
                // `Jose\u{301}`), as folding drops it from the same word.
                if (c.is_alphanumeric() || is_combining_mark(*c)) && i < chars.len() {
                    run.get_or_insert_with(|| (i, String::new())).1.push(*c);
                } else if let Some((start, original)) = run.take()
                    && words(&original).iter().any(|w| self.matches_word(w))
                {
                    let to = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
                    marks.push([to(start), to(i)]);
                }
            }
            if !marks.is_empty() {
                out.push(Highlight { field, text, marks });
            }
        }
        out
    }
}

/// One field of a hit with the words a search matched in it (see
/// [`SearchPlan::highlights`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Highlight {
    /// The field.
    pub field: SearchField,
    /// Its text, as stored.
    pub text: String,
    /// `[start, end)` code-point offsets of the matched words, in order.
    pub marks: Vec<[u32; 2]>,
}

/// Custom-field containment: the lead's metadata holds each of these
/// top-level keys with exactly this scalar value (`{"region":"emea"}`).
/// Scalars only (strings, numbers, booleans, null), so that both stores
/// agree on what "contains" means; numbers compare by value (`1` = `1.0`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetadataFilter(Vec<(String, Value)>);

impl MetadataFilter {
    /// Most pairs a filter may have.
    pub const MAX_PAIRS: usize = 16;

    /// Checks that `value` is an object of at most [`Self::MAX_PAIRS`]
    /// scalar values with keys free of NUL.
    ///
    /// # Errors
    /// [`ValueError::Invalid`] otherwise.
    pub fn new(value: Value) -> Result<Self, ValueError> {
        let Value::Object(map) = value else {
            return Err(ValueError::Invalid("must be a JSON object"));
        };
        if map.len() > Self::MAX_PAIRS {
            return Err(ValueError::Invalid("must have at most 16 keys"));
        }
        let mut pairs = Vec::with_capacity(map.len());
        for (key, value) in map {
            if key.contains('\0') || value.as_str().is_some_and(|s| s.contains('\0')) {
                return Err(ValueError::Invalid("must not contain NUL characters"));
            }
            if value.is_object() || value.is_array() {
                return Err(ValueError::Invalid(
                    "values must be strings, numbers, booleans or null",
                ));
            }
            pairs.push((key, value));
        }
        Ok(Self(pairs))
    }

    /// The pairs.
    #[must_use]
    pub fn pairs(&self) -> &[(String, Value)] {
        &self.0
    }

    /// Whether `lead`'s metadata holds every pair: the reference for the
    /// stores.
    #[must_use]
    pub fn matches(&self, lead: &Lead) -> bool {
        self.0.iter().all(|(k, want)| {
            lead.metadata
                .as_map()
                .get(k)
                .is_some_and(|have| match (have.as_f64(), want.as_f64()) {
                    (Some(a), Some(b)) => {
                        have.is_number() && want.is_number() && (a - b).abs() == 0.0
                    }
                    _ => have == want,
                })
        })
    }
}

/// Where a page of hits starts: after the hit with this score and id, in
/// the search with this fingerprint ([`SearchLeadsQuery::fingerprint`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchCursor {
    /// The last hit's score.
    pub score: u32,
    /// The last hit's id.
    pub id: LeadId,
    /// The search it continues: a score means nothing in another one.
    pub search: u64,
}

/// A search: free text, the list filters, and a page.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchLeadsQuery {
    /// What to look for.
    pub text: SearchText,
    /// Only this status.
    pub status: Option<LeadStatus>,
    /// Only leads assigned to this agent.
    pub assigned_agent_id: Option<AgentId>,
    /// Only leads carrying this tag.
    pub tag: Option<Tag>,
    /// Created at or after.
    pub created_after: Option<chrono::DateTime<chrono::Utc>>,
    /// Created before.
    pub created_before: Option<chrono::DateTime<chrono::Utc>>,
    /// Updated at or after.
    pub updated_after: Option<chrono::DateTime<chrono::Utc>>,
    /// Updated before.
    pub updated_before: Option<chrono::DateTime<chrono::Utc>>,
    /// Custom-field containment.
    pub metadata: Option<MetadataFilter>,
    /// Page size.
    pub limit: PageLimit,
    /// Start after this hit.
    pub after: Option<SearchCursor>,
}

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    /// The lead.
    pub lead: Lead,
    /// Its score (see the module docs).
    pub score: u32,
    /// The fields a term matched in.
    pub matched: Vec<SearchField>,
    /// The matched words, field by field.
    pub highlights: Vec<Highlight>,
}

impl SearchLeadsQuery {
    /// What is searched (the text and every filter; not the page), as a
    /// number a cursor carries: the same search gives the same number in
    /// every instance of one build. A later build may number differently;
    /// its cursors are then refused and the client starts again.
    #[must_use]
    pub fn fingerprint(&self) -> u64 {
        use sha2::{Digest, Sha256};
        let what = format!(
            "{:?}",
            (
                &self.text,
                self.status,
                self.assigned_agent_id,
                &self.tag,
                (self.created_after, self.created_before),
                (self.updated_after, self.updated_before),
                &self.metadata,
            )
        );
        let digest = Sha256::digest(what.as_bytes());
        let mut first = [0_u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_be_bytes(first)
    }

    /// The cursor that continues this search after `hit`.
    #[must_use]
    pub fn cursor_after(&self, hit: &SearchHit) -> SearchCursor {
        SearchCursor {
            score: hit.score,
            id: hit.lead.id,
            search: self.fingerprint(),
        }
    }

    /// Whether `cursor` continues this search (and not another one, whose
    /// scores would place it anywhere).
    #[must_use]
    pub fn continues(&self, cursor: &SearchCursor) -> bool {
        cursor.search == self.fingerprint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn term(q: &str) -> Term {
        SearchText::parse(q).expect("valid").terms()[0].clone()
    }

    fn text(fields: &[&str]) -> String {
        let mut out = String::new();
        for f in fields {
            push_words(&mut out, f);
        }
        out
    }

    #[test]
    fn folding_removes_accents_and_case() {
        assert_eq!(fold("Ågren ÉCOLE Straße"), "agren ecole strasse");
        assert_eq!(fold("Skłodowska Øre Œuvre"), "sklodowska ore oeuvre");
        assert_eq!(fold("ΣΊΣΥΦΟΣ"), fold("σίσυφος"));
        assert_eq!(
            words("Grace.Hopper+1@Navy.MIL"),
            ["grace", "hopper", "1", "navy", "mil"]
        );
        assert_eq!(words("  --  "), Vec::<String>::new());
    }

    /// The score of `doc` for `q` in a tenant whose vocabulary is the
    /// words of `others` and of `doc`.
    fn score_among(q: &str, doc: &str, others: &[&str]) -> Option<u32> {
        let mut vocabulary: Vec<String> = doc.split(' ').map(str::to_owned).collect();
        for other in others {
            vocabulary.extend(words(other));
        }
        vocabulary.retain(|w| !w.is_empty());
        let vocabulary: Vec<&str> = vocabulary.iter().map(String::as_str).collect();
        SearchText::parse(q)
            .expect("valid")
            .plan_over(&vocabulary)
            .score(doc)
    }

    #[test]
    fn words_rank_above_prefixes_above_typos() {
        let doc = text(&["Grace", "Hopper", "grace.hopper@navy.example", "US Navy"]);
        let score = |q: &str| score_among(q, &doc, &[]);
        assert_eq!(score("grace"), Some(WORD));
        assert_eq!(score("gra"), Some(PREFIX));
        assert_eq!(score("hoper"), Some(FUZZY));
        assert_eq!(score("grace hoper"), Some(WORD + FUZZY));
        assert_eq!(score("hopper@navy.exmaple"), Some(WORD + WORD + FUZZY));
        assert_eq!(score("GRACE HOPPER"), Some(2 * WORD));
        assert_eq!(score("grace lovelace"), None, "every term must match");
        assert_eq!(score("race"), Some(FUZZY), "inside a word counts as close");
        assert_eq!(score("rac"), None, "too short to match fuzzily");
        assert_eq!(score("grape"), None, "a shared start alone is not close");
        assert_eq!(score("hoppr"), Some(FUZZY), "a typo at the end is");
    }

    #[test]
    fn a_word_the_tenant_knows_is_taken_as_typed() {
        let gracy = text(&["Gracy", "Adams"]);
        assert_eq!(score_among("grace", &gracy, &[]), Some(FUZZY));
        assert_eq!(
            score_among("grace", &gracy, &["Grace Hopper"]),
            None,
            "another lead has the word: no typo is assumed"
        );
        assert_eq!(
            score_among("gra", &gracy, &["Grace Hopper"]),
            Some(PREFIX),
            "prefixes still match every word they start"
        );
    }

    #[test]
    fn highlights_mark_the_matched_words_in_the_stored_text() {
        let mut lead = crate::fixtures::lead_context(crate::TenantId::new(), LeadId::new()).lead;
        lead.first_name = crate::PersonName::new("Åsa").expect("valid");
        lead.last_name = crate::PersonName::new("Gräns-Hopper").expect("valid");
        lead.email = Some(crate::Email::parse("ann.grans@navy.example").expect("valid"));
        let vocabulary = ["asa", "grans", "hopper", "ann", "navy", "example"];
        let plan = SearchText::parse("gran hoper")
            .expect("valid")
            .plan_over(&vocabulary);
        let marks: Vec<(SearchField, String, Vec<[u32; 2]>)> = plan
            .highlights(&lead)
            .into_iter()
            .map(|h| (h.field, h.text, h.marks))
            .collect();
        assert_eq!(
            marks,
            [
                (
                    SearchField::LastName,
                    "Gräns-Hopper".to_owned(),
                    vec![[0, 5], [6, 12]]
                ),
                (
                    SearchField::Email,
                    "ann.grans@navy.example".to_owned(),
                    vec![[4, 9]]
                ),
            ],
            "the prefix marks Gräns (in code points), the typo marks Hopper"
        );
    }

    #[test]
    fn highlights_cover_decomposed_words_whole() {
        let mut lead = crate::fixtures::lead_context(crate::TenantId::new(), LeadId::new()).lead;
        lead.first_name = crate::PersonName::new("Jose\u{301}").expect("valid");
        lead.last_name = crate::PersonName::new("Nun\u{303}ez").expect("valid");
        let plan = SearchText::parse("jose nunez")
            .expect("valid")
            .plan_over(&["jose", "nunez"]);
        let marks: Vec<(SearchField, Vec<[u32; 2]>)> = plan
            .highlights(&lead)
            .into_iter()
            .map(|h| (h.field, h.marks))
            .collect();
        assert_eq!(
            marks,
            [
                (SearchField::FirstName, vec![[0, 5]]),
                (SearchField::LastName, vec![[0, 6]]),
            ]
        );
    }

    #[test]
    fn a_query_is_bounded_in_characters_not_bytes() {
        let cjk: Vec<String> = (0..6)
            .map(|i| {
                char::from_u32(0x4e00 + i)
                    .expect("a letter")
                    .to_string()
                    .repeat(40)
            })
            .collect();
        assert!(SearchText::parse(&cjk.join(" ")).is_ok(), "245 characters");
        assert!(
            SearchText::parse(&"é ".repeat(129)).is_err(),
            "258 characters"
        );
    }

    #[test]
    fn probes_respect_word_boundaries() {
        let doc = text(&["Ada", "Adams"]);
        assert_eq!(score_among("ada", &doc, &[]), Some(WORD));
        assert_eq!(score_among("adam", &doc, &[]), Some(PREFIX));
        // "dams" sits inside "adams" but starts no word.
        assert_eq!(score_among("dams", &text(&["Adams"]), &[]), Some(FUZZY));
        assert_eq!(score_among("dams", &text(&["Ada", "Bob"]), &[]), None);
    }

    #[test]
    fn trigrams_are_padded_like_pg_trgm() {
        let hop = term("hop");
        assert_eq!(hop.trigrams(), ["  h", " ho", "hop", "op "]);
        assert!(!hop.is_fuzzy());
    }

    #[test]
    fn queries_are_bounded_and_need_a_word() {
        assert!(SearchText::parse("").is_err());
        assert!(SearchText::parse(" ,.- ").is_err());
        assert!(
            SearchText::parse(&"a ".repeat(100)).is_ok(),
            "one distinct term"
        );
        assert!(SearchText::parse("a b c d e f g h i").is_err());
        assert!(SearchText::parse(&"x".repeat(41)).is_err());
        assert!(SearchText::parse(&"x".repeat(257)).is_err());
        assert_eq!(
            SearchText::parse("Grace grace GRACE")
                .expect("valid")
                .terms()
                .len(),
            1
        );
    }

    #[test]
    fn typos_are_matched_per_word_and_expanded_closest_first() {
        let grace = term("grace");
        assert!(grace.is_typo_of("gracy"));
        assert!(!grace.is_typo_of("grase"), "a shared start only");
        assert!(!grace.is_typo_of("graham"));
        assert_eq!(grace.typo_probes(), ["rac", "ace", "ce "]);
        // Trigrams spread over two words are no typo of either.
        assert_eq!(score_among("grace", &text(&["Gray", "Lace"]), &[]), None);
        assert_eq!(
            score_among("grace", &text(&["Gracy", "Lace"]), &[]),
            Some(FUZZY)
        );
        assert_eq!(
            grace.expansions(["graceland", "gracy", "grice", "brace", "gracy", "zzz"]),
            ["gracy", "brace"],
            "grice shares no trigram inside a word"
        );
        assert!(term("gra").typo_probes().is_empty());
        let many: Vec<String> = (0..100).map(|i| format!("grace{i}x")).collect();
        let hoper = term("gracex");
        assert_eq!(
            hoper.expansions(many.iter().map(String::as_str)).len(),
            MAX_EXPANSIONS
        );
    }

    proptest::proptest! {
        /// A term expands to a word exactly when the word is a typo of it
        /// and does not start with it (short of the cap), every such word
        /// holds one of its probes, and a text holding one scores as a typo.
        #[test]
        fn expansions_find_every_typo(
            q in "[a-e]{1,12}",
            words in proptest::collection::vec("[a-e]{1,10}", 0..6),
        ) {
            let doc = text(&words.iter().map(String::as_str).collect::<Vec<_>>());
            let t = term(&q);
            let expanded = t.expansions(words.iter().map(String::as_str));
            let typo_in_doc = words.iter().any(|w| !w.starts_with(&q) && t.is_typo_of(w));
            proptest::prop_assert_eq!(typo_in_doc, !expanded.is_empty());
            for w in &expanded {
                let padded = format!("  {w} ");
                proptest::prop_assert!(t.typo_probes().iter().any(|p| padded.contains(p.as_str())));
                proptest::prop_assert!(doc.contains(&padded));
            }
            if !words.iter().any(|w| w.starts_with(&q)) && typo_in_doc {
                proptest::prop_assert_eq!(score_among(&q, &doc, &[]), Some(FUZZY));
            }
        }
    }

    #[test]
    fn name_keys_ignore_case_accents_and_punctuation_and_need_a_company() {
        assert_eq!(
            name_key("Grace", "Hopper", Some("U.S. Navy")),
            name_key("GRACE", "hopper", Some("u s navy"))
        );
        assert_eq!(name_key("Åsa", "Gräns", Some("AB")), "asagrans|ab");
        assert_eq!(
            name_key("Grace", "Hopper", Some("US Navy")),
            name_key("Grace", "Hopper", Some("U.S. Navy"))
        );
        assert_eq!(name_key("Grace", "Hopper", None), "");
        assert_eq!(name_key("Grace", "Hopper", Some("--")), "");
    }

    #[test]
    fn metadata_filters_hold_scalars_only() {
        assert!(MetadataFilter::new(serde_json::json!({"region": "emea", "n": 1})).is_ok());
        assert!(MetadataFilter::new(serde_json::json!({"a": {"b": 1}})).is_err());
        assert!(MetadataFilter::new(serde_json::json!({"a": [1]})).is_err());
        assert!(MetadataFilter::new(serde_json::json!([1])).is_err());
        assert!(MetadataFilter::new(serde_json::json!({"a\u{0}": 1})).is_err());
    }
}

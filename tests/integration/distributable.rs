//! The schema stays distributable by tenant (issue 17: Citus distributing
//! every tenant table by `tenant_id`), read from the migrated PostgreSQL
//! catalog rather than from the migrations' text:
//!
//! - every table with a `tenant_id` column is a tenant table
//!   (`TENANT_TABLES`), so none escapes row-level security or this check;
//! - every tenant table's primary key, unique constraints and unique
//!   indexes include `tenant_id`, so uniqueness is decidable within one
//!   shard. `tenants` itself is the one reference table (small, replicated
//!   to every node, its slug unique across all), so its keys are exempt;
//! - every foreign key between tenant tables carries `tenant_id` on both
//!   sides (to `tenants`: its `id`), so a reference never crosses shards;
//!
//! and, read from `pg_stat_statements` after a workload that drives every
//! feature through the real router and services as the service role,
//! every statement the store sends is routable to one tenant's shard:
//! Citus sends a statement to a single shard only when it filters each
//! distributed table by the distribution column, by value (`tenant_id =
//! $n`) or through a join on it with a table so filtered; anything else
//! fans out to every shard. So each mention of a tenant table (after
//! `FROM`, `JOIN`, `INTO` or `UPDATE`; `tenants`, the reference table,
//! aside) needs such a predicate, except an `INSERT` whose rows carry
//! `tenant_id` (each row routes by its value); a comparison with the
//! scoped statements' `scope.tenant_id` does not count, being a CTE's
//! column and no value. The schema's functions read tables out of the
//! text's sight: one called without a tenant filter must be one of the
//! few that scan every tenant on purpose ([`FLEET_WIDE`]). The workload
//! must reach every tenant table, so the check cannot pass on nothing.
//!
//! The test server must load `pg_stat_statements`
//! (`shared_preload_libraries`, as leadline-testsupport's local and Docker
//! servers do); without it the test fails saying so, never skips.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Body,
    http::{Method, Request, header},
};
use http_body_util::BodyExt as _;
use leadline_app::{Relay, RelaySettings, WebhookRelay};
use leadline_domain::{DisplayName, Email, Role, SenderIdentity};
use leadline_http::{AppState, router};
use leadline_migrations::TENANT_TABLES;
use leadline_outbound::{ChaChaBox, HttpSettings, HttpWebhookChannel, SmtpChannel, SmtpSettings};
use leadline_testsupport::{SmtpOptions, smtp_server};
use secrecy::SecretString;
use serde_json::{Value, json};
use sqlx::{Connection, Row};
use tower::ServiceExt as _;

/// The reference table: replicated, not distributed.
const REFERENCE: &str = "tenants";

/// The distribution column of `table` (for `tenants`, the column other
/// tables' `tenant_id` meets).
fn tenant_column(table: &str) -> &'static str {
    if table == "tenants" {
        "id"
    } else {
        "tenant_id"
    }
}

#[tokio::test]
async fn every_tenant_table_keys_and_references_by_tenant() {
    let pg = crate::support::pg().await;
    let mut db = sqlx::PgConnection::connect(&pg.owner_url).await.unwrap();
    let mut problems = Vec::new();

    let with_tenant: Vec<String> = sqlx::query(
        "SELECT c.table_name::text FROM information_schema.columns c \
         JOIN information_schema.tables t USING (table_schema, table_name) \
         WHERE c.table_schema = current_schema() AND c.column_name = 'tenant_id' \
           AND t.table_type = 'BASE TABLE' \
         ORDER BY 1",
    )
    .fetch_all(&mut db)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect();
    assert!(
        with_tenant.len() >= TENANT_TABLES.len() - 1,
        "{with_tenant:?}"
    );
    for table in &with_tenant {
        if !TENANT_TABLES.contains(&table.as_str()) {
            problems.push(format!("{table} has tenant_id but is not in TENANT_TABLES"));
        }
    }

    // Keys and references: constraints, with their columns on both sides.
    let constraints = sqlx::query(
        "SELECT c.conrelid::regclass::text AS tab, c.conname::text AS name, c.contype::text AS kind, \
           ARRAY(SELECT a.attname::text FROM unnest(c.conkey) k \
                 JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k) AS cols, \
           c.confrelid::regclass::text AS ftab, \
           ARRAY(SELECT a.attname::text FROM unnest(c.confkey) k \
                 JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k) AS fcols \
         FROM pg_constraint c JOIN pg_class r ON r.oid = c.conrelid \
         JOIN pg_namespace n ON n.oid = r.relnamespace \
         WHERE n.nspname = current_schema() AND c.contype IN ('p', 'u', 'f')",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    let mut keyed = std::collections::BTreeSet::new();
    for row in &constraints {
        let table: String = row.get("tab");
        if !TENANT_TABLES.contains(&table.as_str()) {
            continue;
        }
        let (name, kind): (String, String) = (row.get("name"), row.get("kind"));
        let cols: Vec<String> = row.get("cols");
        let column = tenant_column(&table);
        if table != REFERENCE && !cols.iter().any(|c| c == column) {
            problems.push(format!(
                "{table}.{name} ({kind}) on {cols:?} lacks {column}"
            ));
        }
        if kind == "p" {
            keyed.insert(table.clone());
        }
        if kind == "f" {
            let (target, fcols): (String, Vec<String>) = (row.get("ftab"), row.get("fcols"));
            let target_column = tenant_column(&target);
            // The tenant column must meet the target's, position for
            // position, or the reference may cross tenants.
            let paired = cols
                .iter()
                .zip(&fcols)
                .any(|(c, f)| c == column && f == target_column);
            if !TENANT_TABLES.contains(&target.as_str()) || !paired {
                problems.push(format!(
                    "{table}.{name} references {target}{fcols:?} from {cols:?} without pairing {column} with {target_column}"
                ));
            }
        }
    }
    for table in TENANT_TABLES {
        if !keyed.contains(*table) {
            problems.push(format!("{table} has no primary key"));
        }
    }

    // Unique indexes that no constraint stands for (partial or expression
    // ones included): their plain columns must include the tenant's.
    let indexes = sqlx::query(
        "SELECT t.relname::text AS tab, i.relname::text AS name, \
           ARRAY(SELECT a.attname::text FROM unnest(x.indkey) k \
                 JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k) AS cols \
         FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid \
         JOIN pg_class t ON t.oid = x.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace \
         WHERE x.indisunique AND n.nspname = current_schema()",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert!(!indexes.is_empty(), "the catalog query sees the indexes");
    for row in &indexes {
        let table: String = row.get("tab");
        if !TENANT_TABLES.contains(&table.as_str()) {
            continue;
        }
        let (name, cols): (String, Vec<String>) = (row.get("name"), row.get("cols"));
        let column = tenant_column(&table);
        if table != REFERENCE && !cols.iter().any(|c| c == column) {
            problems.push(format!(
                "unique index {table}.{name} on {cols:?} lacks {column}"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every statement the store sent as the service role, over a workload
/// through the real router and services that touches every tenant table:
/// each reference to a distributed table is matched by a tenant predicate.
#[tokio::test]
async fn every_statement_the_store_sends_filters_by_tenant() {
    let (_owner_url, service_url) = crate::support::isolated_pg("leadline_distributable").await;
    let stats = Stats::open(&service_url).await;

    workload(&service_url).await;

    let (statements, functions) = stats.statements().await;
    let mut problems = Vec::new();
    let mut touched = std::collections::BTreeSet::new();
    let mut checked = 0;
    for (query, _calls) in &statements {
        let tokens = tokens(query);
        let refs = table_refs(&tokens);
        touched.extend(refs.iter().map(|r| r.table));
        // The schema's functions read tables out of the text's sight: one
        // called without a tenant filter must be a known fleet-wide one.
        let called = tokens
            .windows(2)
            .filter(|w| w[1] == "(" && functions.contains(&w[0]))
            .map(|w| w[0].as_str());
        for function in called {
            if tenant_predicates(&tokens).filters == 0
                && !FLEET_WIDE.contains(&function)
                && !TENANT_ARGUMENT.contains(&function)
            {
                problems.push(format!(
                    "{function}() is called without a tenant filter and is not in FLEET_WIDE: {query}"
                ));
            }
        }
        if refs.iter().all(|r| r.table == REFERENCE) {
            continue;
        }
        checked += 1;
        if let Err(why) = routable(&tokens, &refs) {
            problems.push(format!(
                "{why}: {}",
                query.split_whitespace().collect::<Vec<_>>().join(" ")
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));

    // Not vacuous: the workload reached every tenant table.
    let missed: Vec<&str> = TENANT_TABLES
        .iter()
        .copied()
        .filter(|t| !touched.contains(t))
        .collect();
    assert!(
        missed.is_empty() && checked >= 50,
        "the workload sent {checked} statements on tenant tables and none on {missed:?}"
    );
    assert!(
        statements
            .iter()
            .any(|(query, _)| query.contains("jsonb_to_recordset")),
        "the workload's appends shared a statement, which was checked too"
    );
}

/// The schema's functions that read every tenant's rows on purpose, and
/// are called without a tenant: each finds which tenants have work (or
/// counts it for metrics, or ages it out), and everything done with what
/// it found is per tenant again. Under Citus each is one multi-shard query
/// per round, not per request.
const FLEET_WIDE: &[&str] = &[
    // The delivery relay: the tenants with due messages.
    "relay_due_tenants",
    // The delivery relay's queue-depth gauge.
    "relay_queue_depth",
    // The webhook relay: the tenants with due endpoints.
    "webhook_due_tenants",
    // Change-log retention: the oldest changes of every tenant.
    "changes_prune",
    // The audit sealer: every tenant's unsealed records, each tenant's
    // chained under a lock of its own (`audit_seal` is the same without the
    // heads it was last given, for binaries older than migration 30).
    "audit_seal_from",
    "audit_seal",
    // `audit verify` with no tenant: the tenants to verify.
    "audit_tenants",
    // The retention job: the tenants with a policy.
    "retention_tenants",
    // The analytics refresh: every tenant's figures, recomputed in the
    // materialized views (read back per tenant through their views).
    "analytics_refresh",
];

/// The schema's functions that take the tenant as their first argument
/// (and check it is the transaction's): Citus routes such a call by it
/// (`create_distributed_function(…, '$1')`), as it routes a statement by a
/// `tenant_id` filter.
const TENANT_ARGUMENT: &[&str] = &[
    // Retention: one batch of the tenant's events past its policy's age.
    "retention_apply",
];

/// `pg_stat_statements` for one database and the service role, read as the
/// superuser (only it sees every role's statement texts).
struct Stats {
    admin: sqlx::PgConnection,
    database: u32,
    service: u32,
}

impl Stats {
    /// Connects, makes sure the extension is loaded and installed in the
    /// service URL's database, and finds the oids its rows are filtered by.
    async fn open(service_url: &str) -> Self {
        let mut service = sqlx::PgConnection::connect(service_url).await.unwrap();
        let (database, role): (String, String) =
            sqlx::query_as("SELECT current_database()::text, current_user::text")
                .fetch_one(&mut service)
                .await
                .unwrap();
        let _ = service.close().await;
        let server = leadline_testsupport::postgres();
        let mut admin = sqlx::PgConnection::connect(&server.admin_url(&database))
            .await
            .unwrap();
        let preloaded: String = sqlx::query_scalar("SHOW shared_preload_libraries")
            .fetch_one(&mut admin)
            .await
            .unwrap();
        assert!(
            preloaded
                .split(',')
                .any(|l| l.trim() == "pg_stat_statements"),
            "the test server ({:?}) does not load pg_stat_statements \
             (shared_preload_libraries = {preloaded:?}): start it with \
             `-c shared_preload_libraries=pg_stat_statements`, as \
             leadline-testsupport does for its local and Docker servers",
            server.provider()
        );
        sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .execute(&mut admin)
            .await
            .unwrap();
        let (database, service): (sqlx::postgres::types::Oid, sqlx::postgres::types::Oid) =
            sqlx::query_as(
                "SELECT (SELECT oid FROM pg_database WHERE datname = $1), \
                        (SELECT oid FROM pg_roles WHERE rolname = $2)",
            )
            .bind(&database)
            .bind(&role)
            .fetch_one(&mut admin)
            .await
            .unwrap();
        Self {
            admin,
            database: database.0,
            service: service.0,
        }
    }

    /// The service role's statements in the database, with their calls;
    /// and the names of the functions the migrations made.
    async fn statements(mut self) -> (Vec<(String, i64)>, Vec<String>) {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT query, calls FROM pg_stat_statements \
             WHERE dbid = $1 AND userid = $2 ORDER BY query",
        )
        .bind(sqlx::postgres::types::Oid(self.database))
        .bind(sqlx::postgres::types::Oid(self.service))
        .fetch_all(&mut self.admin)
        .await
        .unwrap();
        let functions = sqlx::query_scalar(
            "SELECT p.proname::text FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner \
             WHERE r.rolname = $1",
        )
        .bind(crate::support::OWNER)
        .fetch_all(&mut self.admin)
        .await
        .unwrap();
        let _ = self.admin.close().await;
        (rows, functions)
    }
}

/// A statement's text as lower-case tokens: identifiers (quotes dropped),
/// parameters (`$1`) and single punctuation characters; whitespace gone.
fn tokens(query: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = query.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_alphanumeric() || c == '_' || c == '$' {
            let mut word = c.to_lowercase().to_string();
            while let Some(&n) = chars.peek() {
                if n.is_alphanumeric() || n == '_' || (c == '$' && n.is_ascii_digit()) {
                    word.extend(n.to_lowercase());
                    chars.next();
                } else {
                    break;
                }
            }
            out.push(word);
        } else if c == '\'' {
            // A literal pg_stat_statements kept (a constant in a
            // utility statement): skipped whole, so its words are no names.
            for n in chars.by_ref() {
                if n == '\'' {
                    break;
                }
            }
        } else if !c.is_whitespace() && c != '"' {
            out.push(c.to_string());
        }
    }
    out
}

/// One mention of a tenant table as a table (after `FROM`, `JOIN`,
/// `INTO` or `UPDATE`), not as a column or qualifier of the same name
/// (`webhooks.changes`).
#[derive(Debug)]
struct TableRef {
    table: &'static str,
    /// An `INSERT INTO` whose column list names `tenant_id`: each row is
    /// routed by the value it carries.
    insert_with_tenant: bool,
}

fn table_refs(tokens: &[String]) -> Vec<TableRef> {
    let mut refs = Vec::new();
    for (i, token) in tokens.iter().enumerate().skip(1) {
        let Some(table) = TENANT_TABLES.iter().copied().find(|t| t == token) else {
            continue;
        };
        let before = tokens[i - 1].as_str();
        if !matches!(before, "from" | "join" | "into" | "update") {
            continue;
        }
        let insert_with_tenant = before == "into"
            && tokens.get(i + 1).is_some_and(|t| t == "(")
            && tokens[i + 2..]
                .iter()
                .take_while(|t| *t != ")")
                .any(|t| t == "tenant_id");
        refs.push(TableRef {
            table,
            insert_with_tenant,
        });
    }
    refs
}

/// Whether a statement with these tokens and table references pins every
/// distributed table to one tenant: at least one filter by value, and a
/// filter or co-located join for each reference an insert's own rows do
/// not route. Counted, not matched alias by alias: the store's statements
/// are simple enough that a count shows a missing predicate.
fn routable(tokens: &[String], refs: &[TableRef]) -> Result<(), String> {
    let needed = refs
        .iter()
        .filter(|r| r.table != REFERENCE && !r.insert_with_tenant)
        .count();
    let found = tenant_predicates(tokens);
    if needed == 0 || (found.filters > 0 && found.filters + found.joins >= needed) {
        Ok(())
    } else {
        let names: Vec<&str> = refs.iter().map(|r| r.table).collect();
        Err(format!("{found:?} for {needed} reference(s) to {names:?}"))
    }
}

/// The predicates that pin tables to one tenant, outside `SET` lists (an
/// `UPDATE … SET tenant_id = $1` writes, it does not filter): filters
/// `[x.]tenant_id = $n` (either way round), the one form a Citus router
/// prunes shards by; and joins `x.tenant_id = y.tenant_id` within one
/// tenant (co-located), which carry a filter over to the other side. The
/// scoped statements' `scope.tenant_id` is neither: a CTE's column, which
/// Citus plans as an intermediate result and cannot prune by.
fn tenant_predicates(tokens: &[String]) -> Predicates {
    let tokens = without_set_lists(tokens);
    // A table's `tenant_id` column at `i` (not the scope's).
    let tenant_column = |i: usize| {
        tokens.get(i).is_some_and(|t| *t == "tenant_id")
            && !(i >= 2 && tokens[i - 1] == "." && tokens[i - 2] == "scope")
    };
    let param = |i: usize| tokens.get(i).is_some_and(|t| t.starts_with('$'));
    let mut found = Predicates::default();
    for (i, token) in tokens.iter().enumerate().skip(1) {
        if *token != "=" {
            continue;
        }
        // The right side is `$n`, `tenant_id` or `x.tenant_id`.
        let right_column = if tokens.get(i + 2).is_some_and(|t| *t == ".") {
            tenant_column(i + 3)
        } else {
            tenant_column(i + 1)
        };
        if tenant_column(i - 1) && right_column {
            found.joins += 1;
        } else if (tenant_column(i - 1) && param(i + 1)) || (param(i - 1) && right_column) {
            found.filters += 1;
        }
    }
    found
}

#[derive(Debug, Default)]
struct Predicates {
    filters: usize,
    joins: usize,
}

/// `tokens` without the assignments of `SET` lists: from `set` to the
/// `where`, `from` or `returning` that ends it at the same depth.
fn without_set_lists(tokens: &[String]) -> Vec<&str> {
    let mut out = Vec::new();
    let mut skipping: Option<i32> = None;
    let mut depth = 0_i32;
    for token in tokens {
        let token = token.as_str();
        match token {
            "(" => depth += 1,
            ")" => depth -= 1,
            _ => {}
        }
        if let Some(at) = skipping {
            let ends =
                depth < at || (depth == at && matches!(token, "where" | "from" | "returning"));
            if !ends {
                continue;
            }
            skipping = None;
        }
        if token == "set" {
            skipping = Some(depth);
            continue;
        }
        out.push(token);
    }
    out
}

/// Drives every feature through the router (and, where no route exists,
/// the services the binary runs: the relays, sign-in, retention) as one
/// tenant, on the database at `service_url`.
async fn workload(service_url: &str) {
    let store = crate::support::store_at(service_url).await;
    let mut s = crate::support::services(store.clone());
    s.webhooks = s
        .webhooks
        .clone()
        .with_sealer(Arc::new(ChaChaBox::new(&SEALING_KEY)));
    let (tenant, key) = crate::support::new_tenant(&s).await;
    let api = Api {
        app: router(AppState::new(s.clone())),
        key,
    };

    // Tenant, agents, settings.
    let slug = api.call(Method::GET, "/v1/tenant", None).await["slug"]
        .as_str()
        .unwrap()
        .to_owned();
    let agent = api
        .call(
            Method::POST,
            "/v1/agents",
            Some(json!({"name": "Ada", "email": "ada@acme.example"})),
        )
        .await["id"]
        .clone();
    let agent_uri = format!("/v1/agents/{}", agent.as_str().unwrap());
    api.call(Method::GET, &agent_uri, None).await;
    api.call(Method::GET, "/v1/agents?limit=1", None).await;
    api.call(
        Method::PATCH,
        &agent_uri,
        Some(json!({"version": 1, "name": "Ada L."})),
    )
    .await;
    for body in [
        json!({"separation_of_duties": true}),
        json!({"separation_of_duties": false}),
    ] {
        api.call(Method::PUT, "/v1/settings/approvals", Some(body))
            .await;
    }
    api.call(Method::GET, "/v1/settings/approvals", None).await;
    api.call(
        Method::PUT,
        "/v1/settings/email",
        Some(json!({"from_email": "team@acme.example", "from_name": "Acme"})),
    )
    .await;
    api.call(Method::GET, "/v1/settings/email", None).await;

    // Leads: create (twice under one idempotency key), read, list,
    // search, duplicates, export, transitions, batch, bulk, delete, restore.
    let grace = json!({"first_name": "Grace", "last_name": "Hopper",
        "email": "grace@navy.example", "company": "US Navy",
        "assigned_agent_id": agent, "tags": ["vip"]});
    let created = api
        .send(
            Method::POST,
            "/v1/leads",
            &[
                ("idempotency-key", "create-grace"),
                ("content-type", "application/json"),
            ],
            grace.to_string(),
        )
        .await;
    let replayed = api
        .send(
            Method::POST,
            "/v1/leads",
            &[
                ("idempotency-key", "create-grace"),
                ("content-type", "application/json"),
            ],
            grace.to_string(),
        )
        .await;
    assert_eq!(created["id"], replayed["id"], "the key replays");
    let lead = created["id"].as_str().unwrap().to_owned();
    let lead_uri = format!("/v1/leads/{lead}");
    api.call(Method::GET, &lead_uri, None).await;
    api.call(Method::GET, "/v1/leads?status=new&tag=vip", None)
        .await;
    api.call(Method::GET, "/v1/leads?limit=1", None).await;
    api.call(Method::GET, "/v1/leads/search?q=gra&tag=vip", None)
        .await;
    api.call(Method::GET, "/v1/leads/duplicates?limit=10", None)
        .await;
    api.call(Method::GET, "/v1/leads/export?tag=vip", None)
        .await;
    api.call(
        Method::PATCH,
        &lead_uri,
        Some(json!({"version": 1, "status": "contacted"})),
    )
    .await;
    api.call(
        Method::POST,
        "/v1/leads/batch",
        Some(json!({"items": [
            {"op": "create", "lead": {"first_name": "Alan", "last_name": "Turing", "email": "alan@example.com"}},
            {"op": "update", "id": lead, "lead": {"version": 2, "company": "Navy"}},
        ]})),
    )
    .await;
    api.call(
        Method::POST,
        "/v1/leads/bulk",
        Some(json!({"filter": {"tag": "vip"}, "set": {"add_tags": ["bulk"]}})),
    )
    .await;
    let spare = api
        .call(
            Method::POST,
            "/v1/leads",
            Some(json!({"first_name": "Spare", "last_name": "Lead"})),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    api.call(Method::DELETE, &format!("/v1/leads/{spare}"), None)
        .await;
    api.call(Method::POST, &format!("/v1/leads/{spare}/restore"), None)
        .await;

    // The timeline and the context.
    api.call(
        Method::POST,
        &format!("{lead_uri}/events"),
        Some(json!({"kind": "call", "direction": "inbound", "content": "Grace called", "actor": agent})),
    )
    .await;
    // Appends sent together share a statement (`appends.rs`).
    let note =
        |i: usize| json!({"kind": "note", "direction": "internal", "content": format!("note {i}")});
    let events_uri = format!("{lead_uri}/events");
    futures::future::join_all((0..6).map(|i| api.call(Method::POST, &events_uri, Some(note(i)))))
        .await;
    api.call(Method::GET, &format!("{lead_uri}/events?limit=2"), None)
        .await;
    api.call(Method::GET, &format!("{lead_uri}/context"), None)
        .await;
    api.call(Method::POST, "/v1/cache/preload?limit=5", None)
        .await;

    // Approvals: edited, approved and sent; rejected; cancelled.
    let draft = |body: &str| json!({"channel": "email", "subject": "Hi", "body": body, "requested_by": agent});
    let approval = |r: Value| format!("/v1/approvals/{}", r["id"].as_str().unwrap());
    let sent = approval(
        api.call(
            Method::POST,
            &format!("{lead_uri}/approvals"),
            Some(draft("Hello Grace")),
        )
        .await,
    );
    api.call(Method::GET, "/v1/approvals", None).await;
    api.call(Method::GET, &sent, None).await;
    api.call(
        Method::POST,
        &format!("{sent}/edit"),
        Some(json!({"subject": "Hello", "body": "Hello Grace, again", "edited_by": agent, "revision": 1})),
    )
    .await;
    api.call(
        Method::POST,
        &format!("{sent}/approve"),
        Some(json!({"decided_by": agent, "revision": 2})),
    )
    .await;
    api.call(
        Method::POST,
        &format!("{sent}/send"),
        Some(json!({"sent_by": agent})),
    )
    .await;
    let rejected = approval(
        api.call(
            Method::POST,
            &format!("{lead_uri}/approvals"),
            Some(draft("Buy now")),
        )
        .await,
    );
    api.call(
        Method::POST,
        &format!("{rejected}/reject"),
        Some(json!({"decided_by": agent, "reason": "too pushy"})),
    )
    .await;
    let cancelled = approval(
        api.call(
            Method::POST,
            &format!("{lead_uri}/approvals"),
            Some(draft("Never mind")),
        )
        .await,
    );
    api.call(
        Method::POST,
        &format!("{cancelled}/cancel"),
        Some(json!({"cancelled_by": agent})),
    )
    .await;
    // A message to a lead without an address: it fails, and is retried.
    let mute = api
        .call(
            Method::POST,
            "/v1/leads",
            Some(json!({"first_name": "Mute", "last_name": "Lead"})),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let unsendable = approval(
        api.call(
            Method::POST,
            &format!("/v1/leads/{mute}/approvals"),
            Some(draft("Hello?")),
        )
        .await,
    );
    for (action, body) in [
        ("approve", json!({"decided_by": agent})),
        ("send", json!({"sent_by": agent})),
    ] {
        api.call(Method::POST, &format!("{unsendable}/{action}"), Some(body))
            .await;
    }

    // Deliveries: the relay sends one email and fails the other, which is
    // then retried.
    let smtp = smtp_server(SmtpOptions::default());
    let relay = Relay::new(
        Arc::new(store.clone()),
        Some(Arc::new(
            SmtpChannel::from_settings(&SmtpSettings {
                url: Some(SecretString::from(smtp.url())),
                ca_file: smtp.ca_file().map(std::path::Path::to_path_buf),
                from: "relay@leadline.example".to_owned(),
                ..SmtpSettings::default()
            })
            .unwrap()
            .unwrap(),
        )),
        None,
        Arc::new(leadline_cache::NullCache::new()),
        RelaySettings::default(),
        SenderIdentity {
            from_email: Email::parse("relay@leadline.example").unwrap(),
            from_name: None,
            reply_to: None,
            unsubscribe: None,
        },
    );
    let report = relay.run_once().await.unwrap();
    assert_eq!((report.delivered, report.failed), (1, 1), "{report:?}");
    assert_eq!(smtp.wait_for(1, Duration::from_secs(10)).len(), 1);
    let deliveries = api.call(Method::GET, "/v1/deliveries", None).await;
    for item in deliveries["items"].as_array().unwrap() {
        let uri = format!("/v1/deliveries/{}", item["id"].as_str().unwrap());
        api.call(Method::GET, &uri, None).await;
        if item["status"] == "failed" {
            api.call(Method::POST, &format!("{uri}/retry"), None).await;
        }
    }
    api.call(Method::GET, "/v1/deliveries?status=pending", None)
        .await;

    // Webhooks: made, changed, rotated; the relay gives up on a private
    // address (a dead letter) without waiting for retries.
    let hook = api
        .call(
            Method::POST,
            "/v1/webhooks",
            Some(json!({"url": "http://127.0.0.1:9/in", "types": ["lead.created"]})),
        )
        .await["webhook"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let hook_uri = format!("/v1/webhooks/{hook}");
    api.call(Method::GET, "/v1/webhooks", None).await;
    api.call(
        Method::PATCH,
        &hook_uri,
        Some(json!({"version": 1, "types": ["lead.created", "approval"]})),
    )
    .await;
    api.call(Method::POST, &format!("{hook_uri}/rotate"), None)
        .await;
    api.call(
        Method::POST,
        "/v1/leads",
        Some(json!({"first_name": "Hook", "last_name": "Trigger"})),
    )
    .await;
    let webhooks = WebhookRelay::new(
        Arc::new(store.clone()),
        Arc::new(store.clone()),
        Arc::new(
            HttpWebhookChannel::new(HttpSettings {
                timeout: Duration::from_secs(5),
                allow_private_targets: false,
            })
            .unwrap(),
        ),
        Arc::new(ChaChaBox::new(&SEALING_KEY)),
        RelaySettings::default(),
    );
    crate::support::eventually(
        "the webhook relay gives up on the private address",
        Duration::from_secs(15),
        async || {
            let report = webhooks.run_tenant(tenant, true).await.unwrap();
            if report.dead >= 1 {
                Ok(())
            } else {
                Err(report)
            }
        },
    )
    .await;
    webhooks.run_due().await.unwrap();
    api.call(Method::GET, &format!("{hook_uri}/dead-letters"), None)
        .await;
    api.call(Method::DELETE, &hook_uri, None).await;

    // The change feed, and its retention.
    api.call(Method::GET, "/v1/changes?limit=10", None).await;
    api.call(Method::GET, "/v1/changes?types=approval&limit=10", None)
        .await;
    s.changes.prune().await.unwrap();

    // The audit trail: sealed, read, verified.
    s.audit.seal_all().await.unwrap();
    api.call(Method::GET, "/v1/audit?entity=lead&limit=5", None)
        .await;
    s.audit.tenants().await.unwrap();
    // Retention: a policy set and read, and a pass of the job.
    api.call(
        Method::PUT,
        "/v1/settings/retention",
        Some(json!({"events_older_than_days": 3650, "action": "archive"})),
    )
    .await;
    api.call(Method::GET, "/v1/settings/retention", None).await;
    s.retention.apply_all(100).await.unwrap();
    // Analytics: refreshed (every tenant), read through the views.
    assert!(s.analytics.refresh().await.unwrap().is_some());
    for uri in [
        "/v1/analytics/funnel",
        "/v1/analytics/agents",
        "/v1/analytics/activity?interval=week",
    ] {
        api.call(Method::GET, uri, None).await;
    }
    api.call(
        Method::POST,
        "/v1/privacy/export",
        Some(json!({"email": "grace@navy.example"})),
    )
    .await;
    assert!(matches!(
        s.audit.verify(tenant, None).await.unwrap(),
        leadline_app::Verdict::Intact(_)
    ));

    // Imports: a CSV in, its run read until done, its rejects out.
    let run = api
        .send(
            Method::POST,
            "/v1/imports?name=people.csv&on_duplicate=skip",
            &[("content-type", "text/csv")],
            "first_name,last_name,email\nKatherine,Johnson,kj@nasa.example\nBad,Row,nope\n"
                .to_owned(),
        )
        .await;
    let run_uri = format!("/v1/imports/{}", run["id"].as_str().unwrap());
    crate::support::eventually("the import is done", Duration::from_secs(30), async || {
        let run = api.call(Method::GET, &run_uri, None).await;
        if run["status"] == "done" {
            Ok(())
        } else {
            Err(run)
        }
    })
    .await;
    api.call(Method::GET, &format!("{run_uri}/rejected.csv"), None)
        .await;

    // Users and their sessions.
    let user = api
        .call(
            Method::POST,
            "/v1/users",
            Some(json!({"email": "bo@acme.example", "name": "Bo", "role": "approver"})),
        )
        .await;
    let user_uri = format!("/v1/users/{}", user["user"]["id"].as_str().unwrap());
    api.call(Method::GET, "/v1/users", None).await;
    api.call(Method::GET, &user_uri, None).await;
    api.call(
        Method::PATCH,
        &user_uri,
        Some(json!({"version": 1, "role": "viewer"})),
    )
    .await;
    api.call(Method::POST, &format!("{user_uri}/link"), None)
        .await;
    let invited = s
        .people
        .invite(
            tenant,
            Email::parse("cy@acme.example").unwrap(),
            DisplayName::new("Cy").unwrap(),
            Role::Approver,
        )
        .await
        .unwrap();
    let first = s
        .people
        .redeem_link(invited.link.expose(), PASSWORD)
        .await
        .unwrap();
    assert!(
        s.people
            .sign_in(&slug, "cy@acme.example", "not the password", "192.0.2.1")
            .await
            .is_err()
    );
    let second = s
        .people
        .sign_in(&slug, "cy@acme.example", PASSWORD, "192.0.2.1")
        .await
        .unwrap();
    assert!(
        s.people
            .session(first.token.expose())
            .await
            .unwrap()
            .is_some()
    );
    s.people.sign_out(first.token.expose()).await.unwrap();
    s.people
        .sign_out_everywhere(tenant, second.user.id)
        .await
        .unwrap();

    // API keys: issued, listed, rotated, used, revoked.
    let issued = api
        .call(
            Method::POST,
            "/v1/keys",
            Some(json!({"name": "CRM sync", "role": "viewer"})),
        )
        .await;
    let key_uri = format!("/v1/keys/{}", issued["key"]["id"].as_str().unwrap());
    api.call(Method::GET, "/v1/keys", None).await;
    api.call(Method::GET, &key_uri, None).await;
    let rotated = api
        .call(
            Method::POST,
            &format!("{key_uri}/rotate?overlap_seconds=3600"),
            None,
        )
        .await;
    let successor = Api {
        app: api.app.clone(),
        key: rotated["secret"].as_str().unwrap().to_owned(),
    };
    successor.call(Method::GET, "/v1/leads", None).await;
    api.call(Method::DELETE, &key_uri, None).await;
}

const SEALING_KEY: [u8; 32] = [17; 32];
const PASSWORD: &str = "correct horse battery staple";

/// The router with one tenant's key; every call must succeed.
struct Api {
    app: axum::Router,
    key: String,
}

impl Api {
    async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> Value {
        match body {
            Some(body) => {
                self.send(
                    method,
                    uri,
                    &[("content-type", "application/json")],
                    body.to_string(),
                )
                .await
            }
            None => self.send(method, uri, &[], String::new()).await,
        }
    }

    async fn send(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: String,
    ) -> Value {
        let mut req = Request::builder()
            .method(method.clone())
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.key));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let res = self
            .app
            .clone()
            .oneshot(req.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        assert!(status.is_success(), "{method} {uri}: {status} {json}");
        json
    }
}

/// The check's own rules, on statements written to pass and to fail.
#[test]
fn the_check_tells_filtered_statements_from_unfiltered_ones() {
    let verdict = |query: &str| {
        let tokens = tokens(query);
        let refs = table_refs(&tokens);
        (
            refs.iter().map(|r| r.table).collect::<Vec<_>>(),
            routable(&tokens, &refs).is_ok(),
        )
    };
    let cases: &[(&str, &[&str], bool)] = &[
        (
            r#"SELECT "leads"."id" FROM "leads" WHERE "leads"."tenant_id" = $1"#,
            &["leads"],
            true,
        ),
        ("SELECT id FROM leads WHERE id = $1", &["leads"], false),
        // Writing tenant_id is no filter.
        (
            "UPDATE leads SET tenant_id = $1, email = $2 WHERE id = $3",
            &["leads"],
            false,
        ),
        // The scope's column is no value to prune by.
        (
            "WITH scope AS MATERIALIZED (SELECT set_config($3, $1::uuid::text, $4)::uuid AS tenant_id) \
             SELECT l.* FROM scope CROSS JOIN LATERAL (SELECT * FROM leads \
             WHERE leads.tenant_id = scope.tenant_id AND leads.id = $2 OFFSET $5) l",
            &["leads"],
            false,
        ),
        // A join needs a filter on one side and a co-located join.
        (
            "SELECT a.* FROM leads l JOIN agents a ON a.id = l.assigned_agent_id \
             WHERE l.tenant_id = $1",
            &["leads", "agents"],
            false,
        ),
        (
            "SELECT a.* FROM leads l JOIN agents a ON a.tenant_id = l.tenant_id \
             AND a.id = l.assigned_agent_id WHERE $1 = l.tenant_id",
            &["leads", "agents"],
            true,
        ),
        // A row routed by its own value; a column named like a table.
        (
            r#"INSERT INTO "webhooks" ("tenant_id", "id", "changes") VALUES ($1, $2, $3)"#,
            &["webhooks"],
            true,
        ),
        (
            "INSERT INTO events (id, lead_id) VALUES ($1, $2)",
            &["events"],
            false,
        ),
        // The reference table needs no filter.
        ("SELECT * FROM tenants WHERE slug = $1", &["tenants"], true),
    ];
    for (query, tables, passes) in cases {
        assert_eq!(verdict(query), (tables.to_vec(), *passes), "{query}");
    }
}

//! Migrations up, down and up again on both backends, each on a database of
//! its own (a rollback must not pull tables from under other tests).
//!
//! The round trip compares the whole schema as the catalog describes it, not
//! a few table names: on PostgreSQL every schema, table, view and sequence
//! (with its row-level-security flags, owner and grants), column (type,
//! nullability, default, identity, collation), index, constraint, policy,
//! trigger, function, type, rule, comment and default privilege; on SQLite
//! every row of `sqlite_master`. Each step down must remove something, all
//! the way down must give back the database as it was before the first up,
//! and every way up must give back the same schema.

use std::collections::{BTreeMap, BTreeSet};

use leadline_store::{MigrateOp, Store, StoreSettings};

use crate::support::{OWNER, OWNER_PASSWORD};

/// A schema as its catalog describes it: per kind of object, one line per
/// object, naming it and everything about it that is not an OID.
type Catalog = BTreeMap<&'static str, BTreeSet<String>>;

/// Where PostgreSQL keeps what is not leadline's.
const SYSTEM_SCHEMAS: &str = "n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'";

/// PostgreSQL's catalog, one query per kind of object. Every line is built
/// with `format`, which prints NULL as nothing, so no line goes missing.
/// Privileges are compared as they apply: a NULL ACL means the default one
/// (`acldefault`), and a `GRANT` followed by its `REVOKE` leaves that default
/// written out, which is the same.
fn postgres_queries() -> Vec<(&'static str, String)> {
    let user = SYSTEM_SCHEMAS;
    vec![
        (
            "schema",
            format!(
                "SELECT format('%s owner=%s acl=%s', n.nspname, pg_get_userbyid(n.nspowner), \
                   coalesce(n.nspacl, acldefault('n', n.nspowner))) \
                 FROM pg_namespace n WHERE {user}"
            ),
        ),
        (
            "relation",
            format!(
                "SELECT format('%s.%s kind=%s rls=%s force_rls=%s persistence=%s owner=%s acl=%s options=%s', \
                   n.nspname, c.relname, c.relkind, c.relrowsecurity, c.relforcerowsecurity, \
                   c.relpersistence, pg_get_userbyid(c.relowner), \
                   coalesce(c.relacl, acldefault(CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END::\"char\", c.relowner)), \
                   c.reloptions) \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE {user} AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'c')"
            ),
        ),
        (
            "column",
            format!(
                "SELECT format('%s.%s.%s #%s %s not_null=%s default=%s identity=%s generated=%s collation=%s acl=%s', \
                   n.nspname, c.relname, a.attname, a.attnum, format_type(a.atttypid, a.atttypmod), \
                   a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated, \
                   co.collname, coalesce(a.attacl, '{{}}')) \
                 FROM pg_attribute a \
                 JOIN pg_class c ON c.oid = a.attrelid \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
                 LEFT JOIN pg_collation co ON co.oid = a.attcollation AND a.attcollation <> 0 \
                 WHERE {user} AND a.attnum > 0 AND NOT a.attisdropped \
                   AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c')"
            ),
        ),
        (
            "index",
            format!(
                "SELECT format('%s.%s: %s', n.nspname, c.relname, pg_get_indexdef(c.oid)) \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE {user} AND c.relkind IN ('i', 'I')"
            ),
        ),
        (
            "constraint",
            format!(
                "SELECT format('%s on %s: %s deferrable=%s deferred=%s validated=%s', \
                   con.conname, coalesce(con.conrelid::regclass::text, con.contypid::regtype::text), \
                   pg_get_constraintdef(con.oid), con.condeferrable, con.condeferred, con.convalidated) \
                 FROM pg_constraint con JOIN pg_namespace n ON n.oid = con.connamespace \
                 WHERE {user}"
            ),
        ),
        (
            "policy",
            "SELECT format('%s.%s.%s %s roles=%s cmd=%s using=%s check=%s', schemaname, tablename, \
               policyname, permissive, roles, cmd, qual, with_check) FROM pg_policies"
                .to_owned(),
        ),
        (
            "trigger",
            format!(
                "SELECT format('%s enabled=%s: %s', t.tgname, t.tgenabled, pg_get_triggerdef(t.oid)) \
                 FROM pg_trigger t \
                 JOIN pg_class c ON c.oid = t.tgrelid \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE {user} AND NOT t.tgisinternal"
            ),
        ),
        (
            "function",
            format!(
                "SELECT format('%s.%s(%s) kind=%s owner=%s acl=%s security_definer=%s config=%s: %s', \
                   n.nspname, p.proname, pg_get_function_identity_arguments(p.oid), p.prokind, \
                   pg_get_userbyid(p.proowner), coalesce(p.proacl, acldefault('f', p.proowner)), p.prosecdef, p.proconfig, \
                   CASE WHEN p.prokind IN ('f', 'p') THEN pg_get_functiondef(p.oid) END) \
                 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                 WHERE {user}"
            ),
        ),
        (
            "type",
            format!(
                "SELECT format('%s.%s type=%s base=%s not_null=%s default=%s labels=%s', \
                   n.nspname, t.typname, t.typtype, \
                   CASE WHEN t.typbasetype <> 0 THEN format_type(t.typbasetype, t.typtypmod) END, \
                   t.typnotnull, t.typdefault, \
                   (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder) \
                    FROM pg_enum e WHERE e.enumtypid = t.oid)) \
                 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace \
                 WHERE {user} AND t.typrelid = 0 \
                   AND NOT EXISTS (SELECT 1 FROM pg_type e WHERE e.typarray = t.oid)"
            ),
        ),
        (
            "view",
            format!(
                "SELECT format('%s.%s: %s', n.nspname, c.relname, pg_get_viewdef(c.oid)) \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE {user} AND c.relkind IN ('v', 'm')"
            ),
        ),
        (
            "rule",
            "SELECT format('%s.%s.%s: %s', schemaname, tablename, rulename, definition) \
             FROM pg_rules WHERE schemaname <> 'pg_catalog'"
                .to_owned(),
        ),
        (
            "sequence",
            "SELECT format('%s.%s %s start=%s min=%s max=%s increment=%s cycle=%s cache=%s', \
               schemaname, sequencename, data_type, start_value, min_value, max_value, \
               increment_by, cycle, cache_size) FROM pg_sequences"
                .to_owned(),
        ),
        (
            "comment",
            "SELECT format('%s: %s', pg_describe_object(classoid, objoid, objsubid), description) \
             FROM pg_description WHERE objoid >= 16384"
                .to_owned(),
        ),
        (
            "default privilege",
            "SELECT format('%s in %s for %s: %s', pg_get_userbyid(defaclrole), \
               defaclnamespace::regnamespace, defaclobjtype, defaclacl) FROM pg_default_acl"
                .to_owned(),
        ),
        (
            "extension",
            "SELECT format('%s %s', extname, extversion) FROM pg_extension".to_owned(),
        ),
        (
            "event trigger",
            "SELECT format('%s on %s enabled=%s tags=%s: %s', evtname, evtevent, evtenabled, \
               evttags, evtfoid::regproc) FROM pg_event_trigger"
                .to_owned(),
        ),
    ]
}

/// Where to read the schema from, over a connection of its own.
enum Probe {
    /// A superuser URL: it sees every object whoever owns it.
    Postgres(String),
    Sqlite(String),
}

impl Probe {
    /// Whether every migration changes this backend's schema. Not on
    /// SQLite: row-level security, for one, is PostgreSQL's only.
    fn every_step_changes(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }

    async fn catalog(&self) -> Catalog {
        use sqlx::Connection;
        let mut catalog = Catalog::new();
        match self {
            Self::Postgres(url) => {
                let mut c = sqlx::PgConnection::connect(url).await.unwrap();
                for (kind, sql) in postgres_queries() {
                    let lines: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                        .fetch_all(&mut c)
                        .await
                        .unwrap_or_else(|e| panic!("reading the {kind}s: {e}"));
                    catalog.insert(kind, lines.into_iter().collect());
                }
                c.close().await.unwrap();
            }
            Self::Sqlite(url) => {
                let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
                // `sqlite_sequence` appears with the first AUTOINCREMENT
                // table and is never dropped: it is SQLite's, not leadline's.
                let rows: Vec<(String, String, String, Option<String>)> = sqlx::query_as(
                    "SELECT type, name, tbl_name, sql FROM sqlite_master \
                     WHERE name <> 'sqlite_sequence'",
                )
                .fetch_all(&mut c)
                .await
                .unwrap();
                for (kind, name, table, sql) in rows {
                    let kind = match kind.as_str() {
                        "table" => "table",
                        "index" => "index",
                        "view" => "view",
                        "trigger" => "trigger",
                        other => panic!("sqlite_master holds a {other}"),
                    };
                    catalog.entry(kind).or_default().insert(format!(
                        "{name} on {table}: {}",
                        sql.as_deref().unwrap_or("(implicit)")
                    ));
                }
                c.close().await.unwrap();
            }
        }
        catalog
    }
}

/// What `expected` has and `actual` lacks (`-`) and the reverse (`+`).
fn difference(expected: &Catalog, actual: &Catalog) -> String {
    let empty = BTreeSet::new();
    let kinds: BTreeSet<_> = expected.keys().chain(actual.keys()).collect();
    let mut out = String::new();
    for kind in kinds {
        let (e, a) = (
            expected.get(kind).unwrap_or(&empty),
            actual.get(kind).unwrap_or(&empty),
        );
        for line in e.difference(a) {
            out.push_str(&format!("- {kind} {line}\n"));
        }
        for line in a.difference(e) {
            out.push_str(&format!("+ {kind} {line}\n"));
        }
    }
    out
}

#[track_caller]
fn assert_same(expected: &Catalog, actual: &Catalog, what: &str) {
    let difference = difference(expected, actual);
    assert!(difference.is_empty(), "{what}:\n{difference}");
}

fn count(catalog: &Catalog) -> usize {
    catalog.values().map(BTreeSet::len).sum()
}

async fn round_trip(store: &Store, probe: &Probe) {
    // The database before any migration, with only the migration table
    // (which a `down` with nothing to revert creates, as an `up` would).
    let status = store.migrate(MigrateOp::Down { steps: 1 }).await.unwrap();
    assert!(status.iter().all(|m| !m.applied), "{status:?}");
    let before = probe.catalog().await;

    let status = store.migrate(MigrateOp::Up).await.unwrap();
    assert!(status.iter().all(|m| m.applied), "{status:?}");
    let migrated = probe.catalog().await;
    for table in ["tenants", "api_keys", "agents", "leads"] {
        assert!(
            migrated.values().flatten().any(|line| line.contains(table)),
            "{table} is there: {migrated:#?}"
        );
    }

    // Down one step at a time (on PostgreSQL each removes something)…
    let mut above = migrated.clone();
    for step in 1..=status.len() {
        let status = store.migrate(MigrateOp::Down { steps: 1 }).await.unwrap();
        assert_eq!(status.iter().filter(|m| !m.applied).count(), step);
        let below = probe.catalog().await;
        assert!(
            !probe.every_step_changes() || !difference(&above, &below).is_empty(),
            "down step {step} ({}) changed nothing",
            status[status.len() - step].name
        );
        above = below;
    }
    // …and all of them together leave the database as it was.
    assert_same(&before, &above, "every down removes what its up made");

    let status = store.migrate(MigrateOp::Up).await.unwrap();
    assert!(status.iter().all(|m| m.applied), "{status:?}");
    assert_same(&migrated, &probe.catalog().await, "up after down");

    // More steps than there are: all of them.
    let status = store.migrate(MigrateOp::Down { steps: 100 }).await.unwrap();
    assert!(status.iter().all(|m| !m.applied), "{status:?}");
    assert_same(
        &before,
        &probe.catalog().await,
        "down by more steps than applied",
    );

    store.migrate(MigrateOp::Up).await.unwrap();
    let status = store.migrate(MigrateOp::Reset).await.unwrap();
    assert!(status.iter().all(|m| m.applied));
    assert_same(&migrated, &probe.catalog().await, "reset");
    assert!(
        store.migrate(MigrateOp::Up).await.is_ok(),
        "re-running up is a no-op"
    );
    assert_same(&migrated, &probe.catalog().await, "up once more");
    eprintln!(
        "migration round trip compared {} catalog entries ({} before any migration)",
        count(&migrated),
        count(&before)
    );
}

#[tokio::test]
async fn postgres_up_down_up() {
    crate::support::pg().await; // the owner role exists
    let server = leadline_testsupport::postgres();
    let db = server
        .create_database("leadline_mig", Some(OWNER))
        .await
        .unwrap();
    let store = Store::connect_for_migrations(
        &server.url(OWNER, OWNER_PASSWORD, &db),
        &StoreSettings::default(),
    )
    .await
    .unwrap();
    round_trip(&store, &Probe::Postgres(server.admin_url(&db))).await;
    store.close().await;
    server.drop_database(&db).await.unwrap();
}

#[tokio::test]
async fn sqlite_up_down_up() {
    let dir = tempfile_dir();
    let url = format!("sqlite://{}/m.db?mode=rwc", dir.display());
    let store = Store::connect(&StoreSettings::for_url(&url)).await.unwrap();
    round_trip(&store, &Probe::Sqlite(url.clone())).await;
    store.close().await;
    std::fs::remove_dir_all(dir).unwrap();
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("leadline-mig-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Roles are cluster-wide while the migration lock is per database: several
/// databases on one fresh server (as CI's parallel tests, or a team's
/// per-branch databases, do) migrating at once must all succeed, not race on
/// creating the service group role. Run on a cluster of its own, where the
/// role does not exist yet.
#[tokio::test]
async fn concurrent_migrations_of_databases_on_one_fresh_server() {
    const DATABASES: usize = 6;
    let server = leadline_testsupport::OwnedPgServer::start().expect("start a PostgreSQL");
    server
        .admin_execute(
            "postgres",
            &format!("CREATE ROLE {OWNER} LOGIN CREATEROLE PASSWORD '{OWNER_PASSWORD}'"),
        )
        .await
        .unwrap();
    let mut stores = Vec::new();
    for _ in 0..DATABASES {
        let db = server
            .create_database("leadline_conc", Some(OWNER))
            .await
            .unwrap();
        let store = Store::connect_for_migrations(
            &server.url(OWNER, OWNER_PASSWORD, &db),
            &StoreSettings::default(),
        )
        .await
        .unwrap();
        stores.push(store);
    }
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(DATABASES));
    let runs: Vec<_> = stores
        .iter()
        .cloned()
        .map(|store| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                store.migrate(MigrateOp::Up).await
            })
        })
        .collect();
    for (i, run) in runs.into_iter().enumerate() {
        let status = run
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("database {i}: {e}"));
        assert!(status.iter().all(|m| m.applied), "database {i}: {status:?}");
    }
    for store in stores {
        store.close().await;
    }
}

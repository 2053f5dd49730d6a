//! Shared fixtures: the migrated PostgreSQL database, service-role and
//! owner stores, SQLite stores, tenants; and [`eventually`], through which
//! every test waits for something to happen (tests ask, they do not sleep
//! and hope).

use std::fmt::Debug;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use leadline::Composition;
use leadline_app::Services;
use leadline_domain::Lead;
use leadline_domain::{
    AgentRole, CreateAgentRequest, CreateLeadRequest, CreateTenantRequest, DisplayName, Email,
    LeadStatus, Metadata, PersonName, Slug, Tags, TenantId,
};
use leadline_store::{MigrateOp, Store, StoreSettings};
use secrecy::SecretString;
use sqlx::Connection as _;
use tokio::sync::OnceCell;

pub const OWNER: &str = "leadline_owner";
pub const OWNER_PASSWORD: &str = "owner-password-for-tests";
pub const SERVICE: &str = "leadline_app";
pub const SERVICE_PASSWORD: &str = "service-password-for-tests";

/// The binary's PostgreSQL database, migrated by its owner, with the
/// service login set up by `ensure_service_login` (the code `leadline roles
/// setup` runs).
#[derive(Debug)]
pub struct Pg {
    pub owner_url: String,
    pub service_url: String,
    /// The database's name, for superuser work through
    /// `leadline_testsupport::postgres().admin_execute`.
    pub database: String,
}

static PG: OnceCell<Pg> = OnceCell::const_new();

pub async fn pg() -> &'static Pg {
    PG.get_or_init(|| async {
        let server = leadline_testsupport::postgres();
        server
            .admin_execute(
                "postgres",
                &format!(
                    "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{OWNER}') THEN \
                     CREATE ROLE {OWNER} LOGIN CREATEROLE PASSWORD '{OWNER_PASSWORD}'; END IF; END $$"
                ),
            )
            .await
            .expect("create owner role");
        let database = server.create_database("leadline_it", Some(OWNER)).await.expect("create database");
        let owner_url = server.url(OWNER, OWNER_PASSWORD, &database);
        let owner = Store::connect_for_migrations(&owner_url, &StoreSettings::default()).await.expect("owner connects");
        owner.migrate(MigrateOp::Up).await.expect("migrations apply as the owner");
        owner
            .ensure_service_login(SERVICE, &SecretString::from(SERVICE_PASSWORD))
            .await
            .expect("service login");
        owner.close().await;
        Pg { service_url: server.url(SERVICE, SERVICE_PASSWORD, &database), owner_url, database }
    })
    .await
}

/// Test pools wait long for a connection: CI runs every test at once on two
/// cores, and these tests check correctness, not saturation.
const TEST_ACQUIRE_TIMEOUT_MS: u64 = 30_000;

pub fn settings(url: &str) -> StoreSettings {
    StoreSettings {
        max_connections: 8,
        acquire_timeout_ms: TEST_ACQUIRE_TIMEOUT_MS,
        ..StoreSettings::for_url(url)
    }
}

/// A pool connected as the service role: RLS applies to everything it does.
pub async fn pg_store() -> Store {
    Store::connect(&settings(&pg().await.service_url))
        .await
        .expect("service role connects")
}

/// A service-role pool of `max` connections.
pub async fn pg_store_sized(max: u32) -> Store {
    let settings = StoreSettings {
        max_connections: max,
        ..settings(&pg().await.service_url)
    };
    Store::connect(&settings)
        .await
        .expect("service role connects")
}

/// The service-role URL of a database of its own, migrated by its owner:
/// for tests of what reads across tenants (the delivery relay claims due
/// work of every tenant), which other tests' tenants must not disturb.
pub async fn isolated_pg_url(name: &str) -> String {
    isolated_pg(name).await.1
}

/// As [`isolated_pg_url`], with the owner's URL first (for tests that
/// migrate the database themselves).
pub async fn isolated_pg(name: &str) -> (String, String) {
    // The service login is made once per server, with the shared database.
    pg().await;
    let server = leadline_testsupport::postgres();
    let database = server
        .create_database(name, Some(OWNER))
        .await
        .expect("create database");
    let owner_url = server.url(OWNER, OWNER_PASSWORD, &database);
    let owner = Store::connect_for_migrations(&owner_url, &StoreSettings::default())
        .await
        .expect("owner connects");
    owner
        .migrate(MigrateOp::Up)
        .await
        .expect("migrations apply");
    // Role grants are cluster-wide catalog rows: two at once collide
    // ("tuple concurrently updated"), so they take turns.
    static GRANTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let turn = GRANTS.lock().await;
    owner
        .ensure_service_login(SERVICE, &SecretString::from(SERVICE_PASSWORD))
        .await
        .expect("service login");
    drop(turn);
    owner.close().await;
    (owner_url, server.url(SERVICE, SERVICE_PASSWORD, &database))
}

/// A pool on `url`.
pub async fn store_at(url: &str) -> Store {
    Store::connect(&settings(url)).await.expect("connects")
}

/// A migrated SQLite store of its own, on a database file (so it has the
/// reader pool a user's file database has), copied from a template migrated
/// once per run.
pub async fn sqlite_store() -> Store {
    sqlite_store_with(|_| {}).await
}

/// Like [`sqlite_store`], with settings changed by `adjust` first.
pub async fn sqlite_store_with(adjust: impl FnOnce(&mut StoreSettings)) -> Store {
    sqlite_file_store_with(adjust).await.0
}

/// Like [`sqlite_store`], with the path of its file, for tests that open
/// it as its owner would.
pub async fn sqlite_file_store() -> (Store, std::path::PathBuf) {
    sqlite_file_store_with(|_| {}).await
}

async fn sqlite_file_store_with(
    adjust: impl FnOnce(&mut StoreSettings),
) -> (Store, std::path::PathBuf) {
    let dir = sqlite_dir();
    let template = SQLITE_TEMPLATE
        .get_or_init(|| async {
            let path = dir.path().join("template.db");
            let store = Store::connect(&StoreSettings::for_url(&sqlite_url(&path)))
                .await
                .expect("sqlite opens");
            store.migrate(MigrateOp::Up).await.expect("sqlite migrates");
            // Closing the last connection checkpoints the log into the file.
            store.close().await;
            path
        })
        .await;
    let path = dir
        .path()
        .join(format!("{}.db", uuid::Uuid::new_v4().simple()));
    std::fs::copy(template, &path).expect("the template copies");
    let mut settings = StoreSettings::for_url(&sqlite_url(&path));
    adjust(&mut settings);
    (Store::connect(&settings).await.expect("sqlite opens"), path)
}

/// `sqlite://` URL of a database file.
pub fn sqlite_url(path: &std::path::Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

static SQLITE_TEMPLATE: OnceCell<std::path::PathBuf> = OnceCell::const_new();

/// This run's directory of SQLite files. It outlives the run (statics are
/// not dropped), so each run first removes those of runs that ended.
fn sqlite_dir() -> &'static tempfile::TempDir {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        const PREFIX: &str = "leadline-it-sqlite-";
        let tmp = std::env::temp_dir();
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let stale = name
                    .to_str()
                    .and_then(|n| n.strip_prefix(PREFIX))
                    .and_then(|rest| rest.split('-').next())
                    .and_then(|pid| pid.parse::<u32>().ok())
                    .is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists());
                if stale {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        tempfile::Builder::new()
            .prefix(&format!("{PREFIX}{}-", std::process::id()))
            .tempdir_in(tmp)
            .expect("a temporary directory")
    })
}

pub fn services(store: Store) -> Services {
    Composition::from_store(store).services
}

/// A unique slug, so parallel tests never collide.
pub fn unique_slug(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A fresh tenant and its admin key, with separation of duties off: most
/// tests draft and decide with one agent; `separation.rs` tests the rule,
/// which is on for a tenant created any other way.
pub async fn new_tenant(s: &Services) -> (TenantId, String) {
    let created = s
        .tenants
        .create(&CreateTenantRequest {
            slug: Slug::parse(&unique_slug("t")).unwrap(),
            name: DisplayName::new("Test Tenant").unwrap(),
        })
        .await
        .expect("tenant");
    s.tenants
        .set_separation_of_duties(created.tenant.id, false)
        .await
        .expect("separation of duties off");
    (created.tenant.id, created.api_key.expose().to_owned())
}

pub fn agent_req(email: &str) -> CreateAgentRequest {
    CreateAgentRequest {
        name: DisplayName::new("Agent").unwrap(),
        email: Email::parse(email).unwrap(),
        role: AgentRole::Agent,
    }
}

pub fn lead_req(first: &str) -> CreateLeadRequest {
    CreateLeadRequest {
        first_name: PersonName::new(first).unwrap(),
        last_name: PersonName::new("Tester").unwrap(),
        email: Some(Email::parse(&format!("{}@example.com", first.to_lowercase())).unwrap()),
        phone: None,
        company: None,
        source: None,
        status: LeadStatus::New,
        assigned_agent_id: None,
        tags: Tags::default(),
        metadata: Metadata::default(),
    }
}

/// How many tries of [`eventually`] are a millisecond apart.
const QUICK_TRIES: u32 = 20;

/// Polls `probe` until it answers `Ok`, and returns that answer; panics if
/// `within` passes first, naming `what` was awaited and what the last try
/// saw instead (its `Err`).
///
/// Each try is bounded by what is left of `within`, so a probe that hangs
/// cannot outlast the deadline. The first tries are a millisecond apart (a
/// measured time stays close); after those the pause doubles up to 25 ms (a
/// long wait does not spin).
///
/// # Panics
///
/// When `within` passes without an `Ok`.
#[track_caller]
pub fn eventually<T, E: Debug>(
    what: &str,
    within: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, E>,
) -> impl Future<Output = T> {
    // `track_caller` does not reach into an `async fn`'s body: the caller's
    // location is taken here and named in the panic.
    let caller = std::panic::Location::caller();
    async move {
        let deadline = Instant::now() + within;
        let mut pause = Duration::from_millis(1);
        let mut tries = 0_u32;
        loop {
            tries += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            let seen = match tokio::time::timeout(left, probe()).await {
                Ok(Ok(answer)) => return answer,
                Ok(Err(seen)) => format!("{seen:?}"),
                Err(_) => "a try still unanswered at the deadline".to_owned(),
            };
            assert!(
                Instant::now() < deadline,
                "{caller}: {what}: not within {within:?}; last seen: {seen}"
            );
            tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
            if tries >= QUICK_TRIES {
                pause = (pause * 2).min(Duration::from_millis(25));
            }
        }
    }
}

/// The session id (`pg_backend_pid()`) of `conn`.
pub async fn backend_pid(conn: &mut sqlx::PgConnection) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(conn)
        .await
        .expect("pg_backend_pid()")
}

/// Waits until `count` sessions of the shared server wait on a lock behind
/// session `holder`: blocked by it directly, or queued behind one that is
/// (a second updater of a row waits for the first, not for the holder).
/// Asked of `pg_stat_activity` (`wait_event_type = 'Lock'`) and
/// `pg_blocking_pids`, as superuser, so other tests' lock waits on the same
/// server do not count.
pub async fn until_lock_waiters(holder: i32, count: i64) {
    use sqlx::Connection as _;
    let admin = leadline_testsupport::postgres().admin_url("postgres");
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("superuser connects");
    eventually(
        &format!("{count} sessions waiting on locks held by session {holder}"),
        Duration::from_secs(10),
        async || {
            let waiting: i64 = sqlx::query_scalar(
                "WITH RECURSIVE behind(pid) AS ( \
                     SELECT pid FROM pg_stat_activity \
                     WHERE wait_event_type = 'Lock' AND $1 = ANY(pg_blocking_pids(pid)) \
                   UNION \
                     SELECT a.pid FROM pg_stat_activity a JOIN behind b \
                       ON b.pid = ANY(pg_blocking_pids(a.pid)) \
                     WHERE a.wait_event_type = 'Lock' \
                 ) SELECT count(*) FROM behind",
            )
            .bind(holder)
            .fetch_one(&mut conn)
            .await
            .expect("pg_stat_activity");
            if waiting >= count {
                Ok(())
            } else {
                Err(format!("{waiting} waiting"))
            }
        },
    )
    .await;
    let _ = conn.close().await;
}

/// Turns each named `async fn(Store)` of the calling module into two tests,
/// `sqlite::NAME` and `postgres::NAME`: the same test on both backends.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $name() {
                super::$name(crate::support::sqlite_store().await).await;
            })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $name() {
                super::$name(crate::support::pg_store().await).await;
            })*
        }
    };
}
pub(crate) use both_backends;

/// Like [`both_backends!`], but each PostgreSQL test gets a database of its
/// own (named from `$db`): for code that reads or writes across tenants
/// (the delivery relay's claims, the change log's retention), which other
/// tests' tenants must not disturb.
macro_rules! isolated_backends {
    ($db:literal; $($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $name() {
                super::$name(crate::support::sqlite_store().await).await;
            })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $name() {
                let url = crate::support::isolated_pg_url($db).await;
                super::$name(crate::support::store_at(&url).await).await;
            })*
        }
    };
}
pub(crate) use isolated_backends;

/// How many migrations to revert to undo `name` and every later one.
pub fn migrations_since(name: &str) -> u32 {
    use leadline_migrations::migration::MigratorTrait as _;
    let steps = leadline_migrations::Migrator::migrations()
        .iter()
        .skip_while(|m| m.name() != name)
        .count();
    assert!(steps > 0, "no migration {name}");
    u32::try_from(steps).expect("few migrations")
}

/// The database as its owner, to move a lead's history back in time: the
/// service only ever writes "now", and a timeline cannot start before its
/// lead.
pub enum Owner {
    Postgres(String),
    Sqlite(String),
}

impl Owner {
    /// Moves `lead`'s creation and its events `days` back.
    pub async fn backdate(&self, tenant: TenantId, lead: &Lead, days: i64) {
        match self {
            Self::Postgres(url) => {
                let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
                let mut tx = conn.begin().await.unwrap();
                sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
                    .bind(tenant.to_string())
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                for sql in [
                    "UPDATE leads SET created_at = created_at - make_interval(days => $3) \
                     WHERE tenant_id = $1 AND id = $2",
                    "UPDATE events SET occurred_at = occurred_at - make_interval(days => $3), \
                     created_at = created_at - make_interval(days => $3) \
                     WHERE tenant_id = $1 AND lead_id = $2",
                ] {
                    sqlx::query(sql)
                        .bind(tenant.as_uuid())
                        .bind(lead.id.as_uuid())
                        .bind(i32::try_from(days).unwrap())
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                }
                tx.commit().await.unwrap();
            }
            Self::Sqlite(url) => {
                // Times are RFC 3339 text, shifted here as the store writes
                // them; the timeline's append-only trigger steps aside.
                let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
                let shift = |t: String| {
                    (DateTime::parse_from_rfc3339(&t)
                        .unwrap()
                        .with_timezone(&Utc)
                        - chrono::Duration::days(days))
                    .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
                };
                let trigger: String = sqlx::query_scalar(
                    "SELECT sql FROM sqlite_master WHERE name = 'events_no_update'",
                )
                .fetch_one(&mut conn)
                .await
                .unwrap();
                let mut tx = conn.begin().await.unwrap();
                let created: String = sqlx::query_scalar(
                    "SELECT created_at FROM leads WHERE tenant_id = ? AND id = ?",
                )
                .bind(tenant.as_uuid())
                .bind(lead.id.as_uuid())
                .fetch_one(&mut *tx)
                .await
                .unwrap();
                sqlx::query("UPDATE leads SET created_at = ? WHERE tenant_id = ? AND id = ?")
                    .bind(shift(created))
                    .bind(tenant.as_uuid())
                    .bind(lead.id.as_uuid())
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                let events: Vec<(uuid::Uuid, String, String)> = sqlx::query_as(
                    "SELECT id, occurred_at, created_at FROM events WHERE tenant_id = ? AND lead_id = ?",
                )
                .bind(tenant.as_uuid())
                .bind(lead.id.as_uuid())
                .fetch_all(&mut *tx)
                .await
                .unwrap();
                sqlx::raw_sql("DROP TRIGGER events_no_update")
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                for (id, occurred, created) in events {
                    sqlx::query(
                        "UPDATE events SET occurred_at = ?, created_at = ? WHERE tenant_id = ? AND id = ?",
                    )
                    .bind(shift(occurred))
                    .bind(shift(created))
                    .bind(tenant.as_uuid())
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                }
                sqlx::raw_sql(sqlx::AssertSqlSafe(trigger))
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            }
        }
    }
}

/// One answer of the API: its status, headers and JSON body (`null` when
/// it is not JSON).
pub struct Answer {
    pub status: axum::http::StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: serde_json::Value,
}

/// Calls the API through `app` as `key`: `method uri`, with `body` as JSON
/// when given, and `headers` besides.
pub async fn call(
    app: &axum::Router,
    key: &str,
    method: axum::http::Method,
    uri: &str,
    body: Option<&serde_json::Value>,
    headers: &[(&str, &str)],
) -> Answer {
    use axum::http::header;
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;
    let mut req = axum::http::Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {key}"));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = match body {
        Some(b) => req
            .header(header::CONTENT_TYPE, "application/json")
            .body(axum::body::Body::from(b.to_string())),
        None => req.body(axum::body::Body::empty()),
    }
    .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    }
}

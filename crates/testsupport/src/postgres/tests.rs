//! Tests against real servers. Expected here: no `TEST_DATABASE_URL`, no Docker daemon, local
//! binaries present — so the shared server is a local cluster. When run elsewhere the provider
//! check adapts to the environment instead of failing.

use std::path::Path;
use std::time::Duration;

use sqlx::{Connection as _, Row as _};

use super::*;

/// The provider the rules in the crate docs should pick on this machine.
fn expected_provider() -> Provider {
    if std::env::var("TEST_DATABASE_URL").is_ok_and(|u| !u.trim().is_empty()) {
        Provider::EnvUrl
    } else if crate::docker::daemon_address().is_ok() {
        Provider::Docker
    } else {
        Provider::LocalBinaries
    }
}

async fn scalar_i32(url: &str, sql: &'static str) -> anyhow::Result<i32> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let value: i32 = sqlx::query(sql).fetch_one(&mut conn).await?.try_get(0)?;
    conn.close().await?;
    Ok(value)
}

#[tokio::test]
async fn shared_server_answers_select_1() {
    let pg = postgres();
    assert_eq!(pg.provider(), expected_provider());
    // Second call: same instance, no second startup.
    assert!(std::ptr::eq(pg, postgres()));
    let one = scalar_i32(&pg.admin_url("postgres"), "SELECT 1")
        .await
        .expect("SELECT 1 as superuser");
    assert_eq!(one, 1);
}

#[test]
fn shared_server_works_without_a_runtime() {
    let pg = postgres();
    assert_ne!(pg.port(), 0);
    assert!(!pg.host().is_empty());
    assert!(pg.admin_url("x").contains(&format!(":{}/x", pg.port())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_use_and_drop_a_database() {
    let pg = postgres();
    let db = pg
        .create_database("tsupport", None)
        .await
        .expect("create database");
    let suffix = db.strip_prefix("tsupport_").expect("prefix kept");
    assert_eq!(suffix.len(), 12);
    assert!(
        suffix
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );

    pg.admin_execute(
        &db,
        "CREATE TABLE leads (id bigint PRIMARY KEY, email text NOT NULL);
         INSERT INTO leads VALUES (1, 'a@example.com'), (2, 'b@example.com');",
    )
    .await
    .expect("create table and insert in the new database");
    let count = scalar_i32(&pg.admin_url(&db), "SELECT count(*)::int FROM leads")
        .await
        .expect("count rows");
    assert_eq!(count, 2);

    // An open connection must not block the drop (WITH (FORCE)).
    let mut lingering = sqlx::PgConnection::connect(&pg.admin_url(&db))
        .await
        .expect("connect");
    pg.drop_database(&db).await.expect("drop database");
    assert!(
        sqlx::query("SELECT 1")
            .execute(&mut lingering)
            .await
            .is_err()
    );

    let err = pg
        .admin_execute(&db, "SELECT 1")
        .await
        .expect_err("the database is gone");
    assert!(format!("{err:#}").contains(&db), "{err:#}");
    // Dropping again is fine (IF EXISTS).
    pg.drop_database(&db).await.expect("drop again");
}

#[tokio::test]
async fn database_owned_by_a_role() {
    let pg = postgres();
    let role = format!("tsupport_owner_{}", util::random_hex(8));
    pg.admin_execute(
        "postgres",
        &format!("CREATE ROLE {role} LOGIN PASSWORD 'owner pw'"),
    )
    .await
    .expect("create role");
    let db = pg
        .create_database("tsupport_owned", Some(&role))
        .await
        .expect("create database with owner");
    // The owner may create tables without any extra grant.
    let mut conn = sqlx::PgConnection::connect(&pg.url(&role, "owner pw", &db))
        .await
        .expect("owner logs in");
    sqlx::query("CREATE TABLE mine (x int)")
        .execute(&mut conn)
        .await
        .expect("owner creates a table");
    conn.close().await.expect("close");
    pg.drop_database(&db).await.expect("drop database");
    pg.admin_execute("postgres", &format!("DROP ROLE {role}"))
        .await
        .expect("drop role");
}

#[tokio::test]
async fn role_with_password_logs_in_over_tcp() {
    let pg = postgres();
    let role = format!("tsupport_app_{}", util::random_hex(8));
    // Characters that must be percent-encoded in a URL.
    let password = "p@ss:w/rd #1%?";
    pg.admin_execute(
        "postgres",
        &format!("CREATE ROLE {role} LOGIN PASSWORD '{password}'"),
    )
    .await
    .expect("create role");

    let url = pg.url(&role, password, "postgres");
    assert!(
        !url.contains(password),
        "password must be percent-encoded: {url}"
    );
    let mut conn = sqlx::PgConnection::connect(&url)
        .await
        .expect("role logs in with its password");
    let who: String = sqlx::query("SELECT current_user::text")
        .fetch_one(&mut conn)
        .await
        .expect("query")
        .try_get(0)
        .expect("text");
    assert_eq!(who, role);
    conn.close().await.expect("close");

    // The password is really checked (scram-sha-256 on host connections, not trust).
    let wrong = sqlx::PgConnection::connect(&pg.url(&role, "wrong", "postgres")).await;
    assert!(wrong.is_err(), "a wrong password must be rejected");

    pg.admin_execute("postgres", &format!("DROP ROLE {role}"))
        .await
        .expect("drop role");
}

#[tokio::test]
async fn admin_execute_reports_sql_errors() {
    let pg = postgres();
    let err = pg
        .admin_execute("postgres", "SELECT * FROM no_such_table_here")
        .await
        .expect_err("bad SQL fails");
    let text = format!("{err:#}");
    assert!(text.contains("no_such_table_here"), "{text}");
}

#[tokio::test]
async fn create_database_rejects_overlong_names() {
    let pg = postgres();
    let err = pg
        .create_database(&"x".repeat(60), None)
        .await
        .expect_err("name too long");
    assert!(format!("{err}").contains("63-byte"), "{err}");
}

#[test]
fn urls_are_built_from_the_base() {
    let server = PgServer::from_url(
        Provider::EnvUrl,
        "postgresql://admin:s3cret@db.internal:6543/postgres?sslmode=disable",
    )
    .expect("valid URL");
    assert_eq!(server.host(), "db.internal");
    assert_eq!(server.port(), 6543);
    assert_eq!(
        server.admin_url("app"),
        "postgresql://admin:s3cret@db.internal:6543/app?sslmode=disable"
    );
    assert_eq!(
        server.url("u", "a b@c", "app"),
        "postgresql://u:a%20b%40c@db.internal:6543/app?sslmode=disable"
    );
    let default_port = PgServer::from_url(Provider::EnvUrl, "postgres://a:b@h/db").expect("URL");
    assert_eq!(default_port.port(), 5432);
    assert!(PgServer::from_url(Provider::EnvUrl, "mysql://a:b@h/db").is_err());
    assert!(PgServer::from_url(Provider::EnvUrl, "not a url").is_err());
}

#[tokio::test]
async fn owned_server_stops_restarts_and_cleans_up() {
    let mut owned = OwnedPgServer::start().expect("owned server starts");
    assert!(owned.is_running());
    assert_ne!(owned.port(), postgres().port(), "not the shared server");
    let port = owned.port();
    let dir = owned.directory().map(Path::to_path_buf);

    owned
        .admin_execute(
            "postgres",
            "CREATE TABLE survivor (v text); INSERT INTO survivor VALUES ('kept');",
        )
        .await
        .expect("write data");

    owned.stop().expect("stop");
    assert!(!owned.is_running());
    let down = tokio::time::timeout(
        Duration::from_secs(10),
        sqlx::PgConnection::connect(&owned.admin_url("postgres")),
    )
    .await
    .expect("a refused connection fails fast");
    assert!(down.is_err(), "connecting to a stopped server must fail");
    owned.stop().expect("stopping twice is a no-op");

    owned.restart().expect("restart");
    assert_eq!(owned.port(), port, "same port after restart");
    let mut conn = sqlx::PgConnection::connect(&owned.admin_url("postgres"))
        .await
        .expect("connect after restart");
    let v: String = sqlx::query("SELECT v FROM survivor")
        .fetch_one(&mut conn)
        .await
        .expect("data survived the restart")
        .try_get(0)
        .expect("text");
    assert_eq!(v, "kept");

    // Restarting a running server stops it first; the open connection is terminated.
    owned.restart().expect("restart while running");
    assert!(sqlx::query("SELECT 1").execute(&mut conn).await.is_err());

    drop(owned);
    if let Some(dir) = dir {
        assert!(!dir.exists(), "{} must be removed on drop", dir.display());
    }
    let refused = tokio::time::timeout(
        Duration::from_secs(10),
        sqlx::PgConnection::connect(&format!(
            "postgres://postgres:postgres@127.0.0.1:{port}/postgres"
        )),
    )
    .await
    .expect("fails fast");
    assert!(refused.is_err(), "the dropped server must be gone");
}

#[tokio::test]
async fn tls_server_presents_a_certificate_its_ca_signed() {
    use std::os::unix::fs::PermissionsExt as _;
    use std::str::FromStr as _;

    let tls = postgres_tls(ServerCert::Localhost);
    assert_eq!(tls.provider(), Provider::LocalBinaries);
    assert!(std::ptr::eq(tls, postgres_tls(ServerCert::Localhost)));
    let key_mode = std::fs::metadata(tls.directory().join("server.key"))
        .expect("server.key")
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);

    let options = sqlx::postgres::PgConnectOptions::from_str(&tls.admin_url("postgres"))
        .expect("URL")
        .ssl_mode(sqlx::postgres::PgSslMode::VerifyFull)
        .ssl_root_cert(tls.ca_file());
    let mut conn = sqlx::PgConnection::connect_with(&options)
        .await
        .expect("verify-full with the server's CA");
    let ssl: bool = sqlx::query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&mut conn)
        .await
        .expect("query")
        .try_get(0)
        .expect("bool");
    assert!(ssl, "the session is encrypted");
    conn.close().await.expect("close");

    let untrusted = options.ssl_root_cert(tls.untrusted_ca_file());
    assert!(
        sqlx::PgConnection::connect_with(&untrusted).await.is_err(),
        "a CA that signed nothing here is not trusted"
    );
}

/// Whether a database of that name exists on `pg`.
async fn database_exists(pg: &PgServer, name: &str) -> bool {
    let mut conn = sqlx::PgConnection::connect(&pg.admin_url("postgres"))
        .await
        .expect("connect");
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut conn)
            .await
            .expect("pg_database");
    conn.close().await.expect("close");
    exists
}

/// A database on `pg` marked as made by `creator`.
async fn database_of(pg: &PgServer, creator: &sweep::Creator) -> String {
    let db = pg.create_database("tsweep", None).await.expect("create");
    pg.admin_execute("postgres", &sweep::mark_sql(&db, creator))
        .await
        .expect("mark");
    db
}

/// The pid of a process that has exited and been reaped.
fn dead_pid() -> i32 {
    let mut child = std::process::Command::new("true")
        .spawn()
        .expect("spawn true");
    let pid = i32::try_from(child.id()).expect("pid");
    child.wait().expect("wait");
    pid
}

/// The sweep's rule: a database whose creator has exited here, or that is older than
/// `STALE_AFTER` wherever it was made, is dropped; a live creator's (this process's, or a recent
/// one elsewhere) and an unmarked one are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_drops_databases_whose_creator_is_gone() {
    let pg = postgres();
    let me = sweep::Creator::this_process();
    let elsewhere = sweep::Creator {
        space: "another-machine/1".to_owned(),
        pid: 1,
        ..me.clone()
    };
    let mine = pg.create_database("tsweep", None).await.expect("create");
    let exited = database_of(
        pg,
        &sweep::Creator {
            pid: dead_pid(),
            ..me.clone()
        },
    )
    .await;
    let recent_elsewhere = database_of(pg, &elsewhere).await;
    let old_elsewhere = database_of(
        pg,
        &sweep::Creator {
            created: me.created - sweep::STALE_AFTER.as_secs() - 60,
            ..elsewhere.clone()
        },
    )
    .await;
    let unmarked = format!("tsweep_unmarked_{}", util::random_hex(8));
    pg.admin_execute("postgres", &format!("CREATE DATABASE {unmarked}"))
        .await
        .expect("create unmarked");

    sweep::sweep(pg).await.expect("sweep");
    for gone in [&exited, &old_elsewhere] {
        assert!(!database_exists(pg, gone).await, "{gone} was swept");
    }
    for kept in [&mine, &recent_elsewhere, &unmarked] {
        assert!(database_exists(pg, kept).await, "{kept} was kept");
        pg.drop_database(kept).await.expect("drop");
    }
}

/// The sweep runs by itself: the first `create_database` of a process on a server drops what an
/// exited run left there. On a server of its own, which this process has not swept yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_database_on_a_server_sweeps_what_exited_runs_left() {
    let pg = tokio::task::block_in_place(OwnedPgServer::start).expect("own server");
    let left = "tsweep_left_behind";
    pg.admin_execute("postgres", &format!("CREATE DATABASE {left}"))
        .await
        .expect("create");
    let exited = sweep::Creator {
        pid: dead_pid(),
        ..sweep::Creator::this_process()
    };
    pg.admin_execute("postgres", &sweep::mark_sql(left, &exited))
        .await
        .expect("mark");

    let fresh = pg.create_database("tsweep", None).await.expect("create");
    assert!(
        !database_exists(&pg, left).await,
        "swept on the first create"
    );
    assert!(database_exists(&pg, &fresh).await);
}

//! Migrations up, down and up again on both backends, each on a database of
//! its own (a rollback must not pull tables from under other tests).

use leadline_store::{MigrateOp, Store, StoreSettings};

use crate::support::{OWNER, OWNER_PASSWORD};

fn trusted(sql: String) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(sql)
}

/// Where to count leadline's tables from, over a connection of its own.
enum Probe {
    Postgres(String),
    Sqlite(String),
}

impl Probe {
    async fn tables(&self) -> i64 {
        use sqlx::{Connection, Row};
        const NAMES: &str = "('tenants','api_keys','agents','leads')";
        match self {
            Self::Postgres(url) => {
                let mut c = sqlx::PgConnection::connect(url).await.unwrap();
                let sql = format!(
                    "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename IN {NAMES}"
                );
                sqlx::query(trusted(sql))
                    .fetch_one(&mut c)
                    .await
                    .unwrap()
                    .get(0)
            }
            Self::Sqlite(url) => {
                let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
                let sql = format!(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN {NAMES}"
                );
                sqlx::query(trusted(sql))
                    .fetch_one(&mut c)
                    .await
                    .unwrap()
                    .get(0)
            }
        }
    }
}

async fn round_trip(store: &Store, probe: &Probe) {
    let tables = |_: Store| probe.tables();
    let status = store.migrate(MigrateOp::Up).await.unwrap();
    assert!(status.iter().all(|m| m.applied), "{status:?}");
    assert_eq!(tables(store.clone()).await, 4);

    let status = store.migrate(MigrateOp::Down { steps: 1 }).await.unwrap();
    assert_eq!(status.iter().filter(|m| !m.applied).count(), 1);
    let status = store.migrate(MigrateOp::Down { steps: 10 }).await.unwrap();
    assert!(status.iter().all(|m| !m.applied), "{status:?}");
    assert_eq!(
        tables(store.clone()).await,
        0,
        "every down removes what its up made"
    );

    store.migrate(MigrateOp::Up).await.unwrap();
    let status = store.migrate(MigrateOp::Reset).await.unwrap();
    assert!(status.iter().all(|m| m.applied));
    assert_eq!(tables(store.clone()).await, 4);
    assert!(
        store.migrate(MigrateOp::Up).await.is_ok(),
        "re-running up is a no-op"
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
    round_trip(
        &store,
        &Probe::Postgres(server.url(OWNER, OWNER_PASSWORD, &db)),
    )
    .await;
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

//! The read pool against a real streaming replica, made with `pg_basebackup`
//! from a primary this test owns: list reads go to the replica, reads that
//! must see this instance's writes and the writes themselves stay on the
//! primary, and `/readyz` reports both pools.
//!
//! Routing is proven, not assumed: with WAL replay paused on the replica, a
//! new lead is visible by id (primary) at once but absent from the list
//! (replica) until replay resumes. "Paused" and "the replica has the write"
//! are asked of the servers (`pg_get_wal_replay_pause_state`, the WAL
//! positions), so the lead's absence means routing, not a slow stream.

use std::time::Duration;

use leadline_domain::{ListLeadsQuery, PageLimit};
use leadline_ports::LeadRepository;
use leadline_store::{MigrateOp, Store, StoreSettings};
use leadline_testsupport::OwnedPgServer;
use secrecy::SecretString;

use crate::support::{
    OWNER, OWNER_PASSWORD, SERVICE, SERVICE_PASSWORD, eventually, lead_req, new_tenant, services,
};

struct Pair {
    // Field order is drop order: the replica stops before its primary.
    replica: OwnedPgServer,
    primary: OwnedPgServer,
    database: String,
}

async fn primary_and_replica() -> Pair {
    let primary = OwnedPgServer::start().expect("start a primary");
    primary
        .admin_execute(
            "postgres",
            &format!("CREATE ROLE {OWNER} LOGIN CREATEROLE PASSWORD '{OWNER_PASSWORD}'"),
        )
        .await
        .unwrap();
    let database = primary
        .create_database("leadline_rep", Some(OWNER))
        .await
        .unwrap();
    let owner = Store::connect_for_migrations(
        &primary.url(OWNER, OWNER_PASSWORD, &database),
        &StoreSettings::default(),
    )
    .await
    .unwrap();
    owner.migrate(MigrateOp::Up).await.unwrap();
    owner
        .ensure_service_login(SERVICE, &SecretString::from(SERVICE_PASSWORD))
        .await
        .unwrap();
    owner.close().await;
    let replica = OwnedPgServer::start_replica_of(&primary).expect("start a streaming replica");
    Pair {
        replica,
        primary,
        database,
    }
}

impl Pair {
    fn settings(&self) -> StoreSettings {
        StoreSettings {
            read_url: Some(SecretString::from(self.replica.url(
                SERVICE,
                SERVICE_PASSWORD,
                &self.database,
            ))),
            acquire_timeout_ms: 10_000,
            ..StoreSettings::for_url(&self.primary.url(SERVICE, SERVICE_PASSWORD, &self.database))
        }
    }

    async fn replay(&self, on: bool) {
        let f = if on {
            "pg_wal_replay_resume"
        } else {
            "pg_wal_replay_pause"
        };
        self.replica
            .admin_execute("postgres", &format!("SELECT {f}()"))
            .await
            .unwrap();
    }

    /// Pauses replay and waits until it has stopped: a pause is only
    /// requested at first, and records are replayed until it takes effect.
    async fn pause_replay(&self) {
        self.replay(false).await;
        let mut replica = admin(&self.replica).await;
        eventually(
            "replay on the replica is paused",
            Duration::from_secs(10),
            async || {
                let state: String = sqlx::query_scalar("SELECT pg_get_wal_replay_pause_state()")
                    .fetch_one(&mut replica)
                    .await
                    .unwrap();
                if state == "paused" {
                    Ok(())
                } else {
                    Err(state)
                }
            },
        )
        .await;
    }

    /// Waits until the replica has received the primary's WAL up to its
    /// current end (`pg_current_wal_insert_lsn`: every commit so far, even one
    /// not yet written out under `synchronous_commit = off`), and returns
    /// that position.
    async fn until_received(&self) -> String {
        let mut primary = admin(&self.primary).await;
        let end: String = sqlx::query_scalar("SELECT pg_current_wal_insert_lsn()::text")
            .fetch_one(&mut primary)
            .await
            .unwrap();
        let mut replica = admin(&self.replica).await;
        eventually(
            "the replica receives the primary's WAL",
            Duration::from_secs(20),
            async || {
                let (received, caught_up): (Option<String>, Option<bool>) = sqlx::query_as(
                    "SELECT pg_last_wal_receive_lsn()::text, \
                            pg_last_wal_receive_lsn() >= $1::pg_lsn",
                )
                .bind(&end)
                .fetch_one(&mut replica)
                .await
                .unwrap();
                match caught_up {
                    Some(true) => Ok(()),
                    _ => Err(format!("received up to {received:?}, not {end}")),
                }
            },
        )
        .await;
        end
    }

    /// Whether the replica has replayed the WAL up to `position`.
    async fn replayed(&self, position: &str) -> bool {
        sqlx::query_scalar("SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn")
            .bind(position)
            .fetch_one(&mut admin(&self.replica).await)
            .await
            .unwrap()
    }
}

/// A superuser connection to `server`.
async fn admin(server: &OwnedPgServer) -> sqlx::PgConnection {
    use sqlx::Connection as _;
    sqlx::PgConnection::connect(&server.admin_url("postgres"))
        .await
        .unwrap()
}

fn first_page() -> ListLeadsQuery {
    ListLeadsQuery {
        limit: PageLimit::new(200).unwrap(),
        ..ListLeadsQuery::default()
    }
}

async fn listed(
    store: &Store,
    tenant: leadline_domain::TenantId,
    id: leadline_domain::LeadId,
) -> bool {
    LeadRepository::list(store, tenant, &first_page())
        .await
        .unwrap()
        .items
        .iter()
        .any(|l| l.id == id)
}

/// Waits until the list shows lead `id`.
async fn until_listed(
    store: &Store,
    tenant: leadline_domain::TenantId,
    id: leadline_domain::LeadId,
    what: &str,
) {
    eventually(what, Duration::from_secs(20), async || {
        if listed(store, tenant, id).await {
            Ok(())
        } else {
            Err("not listed")
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_read_the_replica_while_writes_and_own_reads_use_the_primary() {
    let pair = primary_and_replica().await;
    let store = Store::connect(&pair.settings()).await.unwrap();
    assert!(store.has_read_pool());
    let s = services(store.clone());
    let (tenant, _) = new_tenant(&s).await;

    // Streaming works: a first lead reaches the list once replayed.
    let first = LeadRepository::create(&store, tenant, &lead_req("First"))
        .await
        .unwrap();
    until_listed(&store, tenant, first.id, "the replica catches up").await;

    pair.pause_replay().await;
    // A write goes to the primary (the replica would refuse it: read-only).
    let second = LeadRepository::create(&store, tenant, &lead_req("Second"))
        .await
        .expect("writes use the primary");
    // Read-your-writes by id: primary.
    let got = LeadRepository::get(&store, tenant, second.id)
        .await
        .expect("a lead by id reads the primary");
    assert_eq!(got.id, second.id);
    // The list reads the paused replica, which has the write but has not
    // replayed it.
    let written = pair.until_received().await;
    assert!(
        !listed(&store, tenant, second.id).await,
        "the list comes from the replica, which is paused"
    );
    assert!(
        !pair.replayed(&written).await,
        "still paused when the list was read"
    );
    assert!(listed(&store, tenant, first.id).await);

    pair.replay(true).await;
    until_listed(
        &store,
        tenant,
        second.id,
        "the list catches up once replay resumes",
    )
    .await;

    let ping = store
        .ping_read_pool(Duration::from_secs(5))
        .await
        .expect("a read pool is configured");
    assert!(ping.is_ok(), "{ping:?}");
    assert!(store.read_pool_stats().is_some());
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_the_read_pool_and_a_lost_replica_is_degraded_not_down() {
    let mut pair = primary_and_replica().await;
    let config = leadline::config::Config {
        database: StoreSettings {
            acquire_timeout_ms: 1_000,
            ..pair.settings()
        },
        ..leadline::config::Config::default()
    };
    let key = leadline::run::create_tenant(&config, &crate::support::unique_slug("rep"), None)
        .await
        .unwrap()
        .api_key
        .expose()
        .to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        leadline::run::serve(&config, listener, async move {
            let _ = stopped.await;
        })
        .await
    });
    let http = reqwest::Client::new();
    let ready = wait_ready(&http, &base).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["read_pool"]["status"], "up", "{ready}");
    assert!(ready["read_pool"]["latency_ms"].is_number(), "{ready}");

    pair.replica.stop().unwrap();
    let res = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(
        res.status(),
        200,
        "a lost replica degrades, it does not take the service out"
    );
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["read_pool"]["status"], "down", "{body}");
    assert_eq!(body["database"]["status"], "up", "{body}");
    // Degraded, not down: list reads fall back to the primary.
    let list = http
        .get(format!("{base}/v1/leads"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), 200, "lists fall back to the primary");

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

async fn wait_ready(http: &reqwest::Client, base: &str) -> serde_json::Value {
    eventually("/readyz answers 200", Duration::from_secs(30), async || {
        let res = http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if res.status() != 200 {
            return Err(res.status().to_string());
        }
        res.json().await.map_err(|e| e.to_string())
    })
    .await
}

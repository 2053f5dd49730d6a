//! At-least-once webhook delivery, proven on the real `leadline relay`
//! process: killed with SIGKILL after the receiver answered 204 but before
//! the relay recorded the endpoint's new position, the relay's successor
//! delivers the change again with the same `webhook-id`, and records it
//! once. On SQLite (a file) and PostgreSQL.
//!
//! The window is held open from outside, as in `relay_kill.rs`: the
//! receiver keeps its answer back until released; meanwhile the test locks
//! what the relay's record must write (the `webhooks` row on PostgreSQL,
//! the whole database on SQLite), then releases the answer, and kills the
//! relay once it logs that the destination accepted the change.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use leadline::config::Config;
use leadline_domain::{
    AgentRole, ChangeFilter, CreateAgentRequest, CreateTenantRequest, CreateWebhookRequest,
    DisplayName, Email, Slug, TenantId, WebhookId, WebhookUrl,
};
use leadline_store::StoreSettings;
use sqlx::{Connection, Executor};
use tokio::sync::Notify;

mod common;

use common::{BIN, Running};
/// 32 bytes of 11, in base64: the key the test and the relay share.
const KEY_B64: &str = "CwsLCwsLCwsLCwsLCwsLCwsLCwsLCwsLCwsLCwsLCws=";

/// What the receiver saw: each POST's `webhook-id` and body.
#[derive(Clone, Default)]
struct Receiver {
    seen: Arc<Mutex<Vec<(String, Bytes)>>>,
    /// Released once: the first answer waits for it.
    release: Arc<Notify>,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let first = {
        let mut seen = r.seen.lock().unwrap();
        let id = headers["webhook-id"].to_str().unwrap().to_owned();
        seen.push((id, body));
        seen.len() == 1
    };
    if first {
        r.release.notified().await;
    }
    StatusCode::NO_CONTENT
}

impl Receiver {
    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    async fn wait_for(&self, n: usize, within: Duration) -> Vec<(String, Bytes)> {
        let deadline = Instant::now() + within;
        while self.count() < n {
            assert!(
                Instant::now() < deadline,
                "{n} deliveries not within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.seen.lock().unwrap().clone()
    }
}

fn relay(db: &str) -> Running {
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", db)
        .env("LEADLINE_WEBHOOKS__SECRET_KEY", KEY_B64)
        .env("LEADLINE_WEBHOOKS__ALLOW_PRIVATE_TARGETS", "true")
        .env("LEADLINE_RELAY__LEASE_SECS", "1")
        .env("LEADLINE_RELAY__POLL_INTERVAL_MS", "50")
        .env("LEADLINE_LOG__FILTER", "info,leadline_app=debug")
        .arg("relay");
    Running::start(command)
}

/// A tenant, a webhook to `url`, and one change after it (an agent).
async fn one_change(config: &Config, url: &str) -> (TenantId, WebhookId) {
    let mut composition = leadline::run::composition(config).await.unwrap();
    composition.services.webhooks = composition.services.webhooks.clone().with_sealer(Arc::new(
        leadline_outbound::ChaChaBox::from_base64(KEY_B64).unwrap(),
    ));
    let s = &composition.services;
    let tenant = s
        .tenants
        .create(&CreateTenantRequest {
            slug: Slug::parse(&format!("hook-{}", uuid::Uuid::new_v4().simple())).unwrap(),
            name: DisplayName::new("Hook").unwrap(),
        })
        .await
        .unwrap()
        .tenant
        .id;
    let hook = s
        .webhooks
        .create(
            tenant,
            &CreateWebhookRequest {
                url: WebhookUrl::parse(url).unwrap(),
                types: ChangeFilter::parse("agent").unwrap(),
                changes: true,
                channels: leadline_domain::MessageChannels::default(),
                active: true,
            },
        )
        .await
        .unwrap()
        .webhook
        .id;
    s.agents
        .create(
            tenant,
            &CreateAgentRequest {
                name: DisplayName::new("Ada").unwrap(),
                email: Email::parse("ada@example.com").unwrap(),
                role: AgentRole::Agent,
            },
        )
        .await
        .unwrap();
    composition.shutdown().await;
    (tenant, hook)
}

/// Whether the endpoint recorded a delivery.
async fn recorded(config: &Config, tenant: TenantId, hook: WebhookId) -> bool {
    let composition = leadline::run::composition(config).await.unwrap();
    let webhook = composition
        .services
        .webhooks
        .get(tenant, hook)
        .await
        .unwrap();
    composition.shutdown().await;
    webhook.delivery.last_delivered_at.is_some()
}

enum Lock {
    Pg(sqlx::PgConnection),
    Sqlite(sqlx::SqliteConnection),
}

async fn redelivered_after_kill(db: &str, lock_db: &str, postgres: bool) {
    let config = Config {
        database: StoreSettings::for_url(db),
        ..Config::default()
    };
    let receiver = Receiver::default();
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let (tenant, hook) = one_change(&config, &url).await;

    let first = relay(db);
    let got = receiver.wait_for(1, Duration::from_secs(30)).await;
    // The receiver holds its 204 now; lock what the relay's record writes.
    let mut lock = if postgres {
        let mut conn = sqlx::PgConnection::connect(lock_db).await.unwrap();
        conn.execute("BEGIN").await.unwrap();
        conn.execute("SELECT 1 FROM webhooks FOR UPDATE")
            .await
            .unwrap();
        Lock::Pg(conn)
    } else {
        let mut conn = sqlx::SqliteConnection::connect(lock_db).await.unwrap();
        conn.execute("BEGIN IMMEDIATE").await.unwrap();
        Lock::Sqlite(conn)
    };
    receiver.release.notify_one();
    first.wait_for_line("accepted by the destination", Duration::from_secs(30));
    drop(first); // SIGKILL, then reaped.
    match &mut lock {
        Lock::Pg(conn) => conn.execute("ROLLBACK").await.map(drop).unwrap(),
        Lock::Sqlite(conn) => conn.execute("ROLLBACK").await.map(drop).unwrap(),
    }
    drop(lock);
    assert!(
        !recorded(&config, tenant, hook).await,
        "killed before recording: nothing recorded"
    );

    let second = relay(db);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !recorded(&config, tenant, hook).await {
        assert!(Instant::now() < deadline, "not redelivered and recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(second);
    let all = receiver.wait_for(2, Duration::from_secs(5)).await;
    assert_eq!(
        all.len(),
        2,
        "the change went out twice, and was then recorded"
    );
    assert_eq!(all[1].0, got[0].0, "with the same webhook-id");
    assert_eq!(all[1].1, got[0].1, "and the same body");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_killed_relay_redelivers_a_change_with_the_same_webhook_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hook.db");
    let db = format!("sqlite://{}?mode=rwc", path.display());
    common::migrate_up(&db);
    redelivered_after_kill(&db, &format!("sqlite://{}", path.display()), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_killed_relay_redelivers_a_change_with_the_same_webhook_id() {
    let server = leadline_testsupport::postgres();
    let database = server
        .create_database("leadline_hook_kill", None)
        .await
        .expect("create a database");
    let url = server.admin_url(&database);
    common::migrate_up(&url);
    redelivered_after_kill(&url, &url, true).await;
}

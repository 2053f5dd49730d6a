//! Operating under pressure, against the real `serve` over TCP on
//! PostgreSQL: a saturated pool fails fast, and shutdown lets in-flight
//! requests finish. Requests are held in flight by a row lock taken from
//! outside, so "in flight" and "busy" are real, not simulated; that they are
//! held is read from `pg_stat_activity`, not assumed after a pause.

use std::time::{Duration, Instant};

use leadline::{config::Config, run};
use leadline_store::StoreSettings;
use secrecy::SecretString;
use sqlx::{Connection, Executor};

use crate::support::{backend_pid, eventually, pg, unique_slug, until_lock_waiters};

struct Running {
    base: String,
    key: String,
    lead: String,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    tenant: String,
}

async fn start(max_connections: u32, acquire_timeout_ms: u64) -> Running {
    let pg = pg().await;
    let config = Config {
        database: StoreSettings {
            url: SecretString::from(pg.service_url.clone()),
            migration_url: Some(SecretString::from(pg.owner_url.clone())),
            max_connections,
            acquire_timeout_ms,
            ..StoreSettings::default()
        },
        ..Config::default()
    };
    // The tenant is made with the default pool settings: the tight ones
    // are for the server under test, and a loaded machine can take longer
    // than they allow just to open the first connection.
    let setup = Config {
        database: StoreSettings {
            max_connections: 2,
            acquire_timeout_ms: 10_000,
            ..config.database.clone()
        },
        ..Config::default()
    };
    let created = run::create_tenant(&setup, &unique_slug("ops"), None)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        run::serve(&config, listener, async move {
            let _ = stopped.await;
        })
        .await
    });
    let key = created.api_key.expose().to_owned();
    let http = reqwest::Client::new();
    let lead: serde_json::Value = http
        .post(format!("{base}/v1/leads"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"first_name": "Busy", "last_name": "Lead"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    Running {
        base,
        key,
        lead: lead["id"].as_str().unwrap().to_owned(),
        stop,
        server,
        tenant: created.tenant.id.to_string(),
    }
}

/// Locks the lead's row from outside, so updates of it wait, holding their
/// pooled connection, until the returned connection rolls back. Also
/// returns that connection's session id, which the waiters wait for.
async fn lock_lead(r: &Running) -> (sqlx::PgConnection, i32) {
    let mut conn = sqlx::PgConnection::connect(&pg().await.service_url)
        .await
        .unwrap();
    conn.execute("BEGIN").await.unwrap();
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(&r.tenant)
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("SELECT 1 FROM leads WHERE id = $1::uuid FOR UPDATE")
        .bind(&r.lead)
        .execute(&mut conn)
        .await
        .unwrap();
    let pid = backend_pid(&mut conn).await;
    (conn, pid)
}

fn blocked_update(r: &Running) -> tokio::task::JoinHandle<reqwest::Result<reqwest::Response>> {
    let (url, key) = (format!("{}/v1/leads/{}", r.base, r.lead), r.key.clone());
    tokio::spawn(async move {
        reqwest::Client::new()
            .patch(url)
            .bearer_auth(key)
            .json(&serde_json::json!({"version": 1, "source": "held"}))
            .send()
            .await
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_saturated_pool_fails_fast_with_503_and_retry_after() {
    let r = start(2, 300).await;
    let (mut lock, holder) = lock_lead(&r).await;
    // Two updates wait on the row lock, each holding one of the two pooled
    // connections (their API keys are already verified and remembered).
    let held = [blocked_update(&r), blocked_update(&r)];
    until_lock_waiters(holder, 2).await;

    let started = Instant::now();
    let res = reqwest::Client::new()
        .get(format!("{}/v1/leads", r.base))
        .bearer_auth(&r.key)
        .send()
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["type"], "urn:leadline:problem:unavailable");
    assert!(
        waited < Duration::from_secs(2),
        "fails fast instead of hanging: {waited:?}"
    );
    let metrics = reqwest::Client::new()
        .get(format!("{}/metrics", r.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"db_pool_acquire_timeouts_total{pool="primary"}"#),
        "acquire timeouts are counted:\n{metrics}"
    );

    lock.execute("ROLLBACK").await.unwrap();
    let statuses: Vec<u16> = futures_join(held).await;
    assert!(
        statuses.contains(&200),
        "the held requests finish once the lock is gone: {statuses:?}"
    );
    r.stop.send(()).unwrap();
    r.server.await.unwrap().unwrap();
}

async fn futures_join(
    tasks: [tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>; 2],
) -> Vec<u16> {
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap().unwrap().status().as_u16());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_lets_in_flight_requests_finish() {
    let r = start(8, 5_000).await;
    let (mut lock, holder) = lock_lead(&r).await;
    let in_flight: Vec<_> = (0..4).map(|_| blocked_update(&r)).collect();
    until_lock_waiters(holder, 4).await;
    assert!(
        in_flight.iter().all(|t| !t.is_finished()),
        "held by the lock"
    );

    r.stop.send(()).unwrap();
    // Not accepting any more… (a new client per try: no kept-alive
    // connection may carry the request)
    eventually(
        "a new connection after shutdown began is refused",
        Duration::from_secs(5),
        async || match reqwest::Client::new()
            .get(format!("{}/healthz", r.base))
            .timeout(Duration::from_secs(2))
            .send()
            .await
        {
            Err(refused) => Ok(refused),
            Ok(res) => Err(res.status()),
        },
    )
    .await;
    assert!(
        in_flight.iter().all(|t| !t.is_finished()),
        "shutdown waits for the requests in flight"
    );
    // …but the accepted ones complete once the lock is released.
    lock.execute("ROLLBACK").await.unwrap();
    let mut ok = 0;
    let mut conflicts = 0;
    for t in in_flight {
        match t.await.unwrap().unwrap().status().as_u16() {
            200 => ok += 1,
            409 => conflicts += 1, // same version, one winner: a business answer
            other => panic!("an in-flight request failed with {other}"),
        }
    }
    assert_eq!(
        (ok, ok + conflicts),
        (1, 4),
        "every in-flight request got its answer"
    );
    r.server.await.unwrap().unwrap();
}

/// `/readyz` reports Redis with its latency; Redis gone makes the service
/// "degraded" (still 200: the cache falls back), never "down".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_redis_and_a_lost_redis_is_degraded_not_down() {
    let mut redis = leadline_testsupport::OwnedRedisServer::start().unwrap();
    let pg = pg().await;
    let config = Config {
        database: StoreSettings {
            url: SecretString::from(pg.service_url.clone()),
            ..StoreSettings::default()
        },
        cache: leadline_cache::CacheSettings {
            redis_url: Some(redis.url()),
            ..leadline_cache::CacheSettings::default()
        },
        ..Config::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        run::serve(&config, listener, async move {
            let _ = stopped.await;
        })
        .await
    });
    let http = reqwest::Client::new();
    let ready: serde_json::Value = eventually(
        "/readyz answers 200 with Redis up",
        Duration::from_secs(30),
        async || {
            let res = http
                .get(format!("{base}/readyz"))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if res.status() != 200 {
                return Err(res.status().to_string());
            }
            let body: serde_json::Value = res.json().await.map_err(|e| e.to_string())?;
            if body["redis"]["status"] == "up" {
                Ok(body)
            } else {
                Err(body.to_string())
            }
        },
    )
    .await;
    assert_eq!(ready["status"], "ready", "{ready}");
    assert!(ready["redis"]["latency_ms"].is_number(), "{ready}");
    assert!(ready["database"]["latency_ms"].is_number(), "{ready}");
    assert_eq!(ready["database"]["backend"], "postgres", "{ready}");
    assert!(ready.get("read_pool").is_none(), "no read pool configured");

    redis.stop().unwrap();
    let res = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(
        res.status(),
        200,
        "Redis gone is not a reason to leave the load balancer"
    );
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["redis"]["status"], "down", "{body}");
    assert_eq!(body["database"]["status"], "up", "{body}");

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

/// A connection of the owner's holding `leads` locked (`ACCESS EXCLUSIVE`,
/// in a transaction left open), and its session id.
async fn lock_leads(owner_url: &str) -> (sqlx::PgConnection, i32) {
    let mut holder = sqlx::PgConnection::connect(owner_url).await.unwrap();
    let pid = backend_pid(&mut holder).await;
    holder.execute("BEGIN").await.unwrap();
    holder
        .execute("LOCK TABLE leads IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    (holder, pid)
}

/// A superuser connection to `conn`'s database: only a superuser sees what
/// the service role's sessions run.
async fn superuser_beside(conn: &mut sqlx::PgConnection) -> sqlx::PgConnection {
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(conn)
        .await
        .unwrap();
    let admin = leadline_testsupport::postgres().admin_url(&database);
    sqlx::PgConnection::connect(&admin).await.unwrap()
}

/// Closing the store cancels, on the server, what the connections of
/// aborted work still run. `serve` stops its analytics refresher by
/// aborting it, and the pool's close waited for the connection to come
/// back, which it did only once the server had finished the refresh: after
/// a large import a stop waited that long (past the bench's 10 s). Here the
/// refresh is held by a lock on `leads` taken from outside, in a database
/// of its own (other tests read `leads`), and the close must end while the
/// lock is still held, with the refresh's statement gone from the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_store_cancels_statements_that_aborted_work_left_running() {
    use leadline_ports::AnalyticsRepository as _;
    let (owner_url, url) = crate::support::isolated_pg("leadline_close").await;
    let store = crate::support::store_at(&url).await;
    let (mut holder, holder_pid) = lock_leads(&owner_url).await;
    let refresh = tokio::spawn({
        let store = store.clone();
        async move { store.refresh().await }
    });
    until_lock_waiters(holder_pid, 1).await;
    refresh.abort();
    assert!(refresh.await.unwrap_err().is_cancelled());
    tokio::time::timeout(Duration::from_secs(30), store.close())
        .await
        .expect("the close ends while the refresh's lock is still held");
    // Asked in the test's own database: other tests refresh too.
    let mut admin = superuser_beside(&mut holder).await;
    eventually(
        "the refresh's statement is no longer running",
        Duration::from_secs(10),
        async || {
            let running: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() \
                   AND ($1 = ANY(pg_blocking_pids(pid)) \
                        OR (query LIKE '%analytics_refresh()%' AND state = 'active' \
                            AND pid <> pg_backend_pid()))",
            )
            .bind(holder_pid)
            .fetch_one(&mut admin)
            .await
            .map_err(|e| e.to_string())?;
            if running == 0 {
                Ok(())
            } else {
                Err(format!("{running} still running"))
            }
        },
    )
    .await;
    holder.execute("ROLLBACK").await.unwrap();
}

/// Only the stoppable is cancelled: a write still in flight when the store
/// closes (a request past the grace period, a background import) may yet
/// commit, and the close waits for it. The write and an aborted refresh
/// wait on one lock; once the close has cancelled the refresh, the write
/// is still waiting, and it commits when the lock goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_store_waits_for_writes_that_may_still_commit() {
    use leadline_ports::AnalyticsRepository as _;
    let (owner_url, url) = crate::support::isolated_pg("leadline_close_write").await;
    let store = crate::support::store_at(&url).await;
    let s = crate::support::services(store.clone());
    let (tenant, _) = crate::support::new_tenant(&s).await;
    let (mut holder, holder_pid) = lock_leads(&owner_url).await;
    let write = tokio::spawn(async move {
        s.leads
            .create(tenant, &crate::support::lead_req("Waited"))
            .await
    });
    let refresh = tokio::spawn({
        let store = store.clone();
        async move { store.refresh().await }
    });
    until_lock_waiters(holder_pid, 2).await;
    refresh.abort();
    assert!(refresh.await.unwrap_err().is_cancelled());
    let closing = tokio::spawn(async move { store.close().await });
    let mut admin = superuser_beside(&mut holder).await;
    let waiting = async |admin: &mut sqlx::PgConnection, what: &str| -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND $1 = ANY(pg_blocking_pids(pid)) \
               AND query LIKE $2",
        )
        .bind(holder_pid)
        .bind(what)
        .fetch_one(admin)
        .await
        .unwrap()
    };
    eventually(
        "the close cancels the refresh",
        Duration::from_secs(10),
        async || match waiting(&mut admin, "%analytics_refresh()%").await {
            0 => Ok(()),
            n => Err(format!("{n} refreshing")),
        },
    )
    .await;
    assert_eq!(
        waiting(&mut admin, "%").await,
        1,
        "the write still waits, not cancelled"
    );
    assert!(!closing.is_finished(), "the close waits for the write");
    holder.execute("ROLLBACK").await.unwrap();
    let lead = write.await.unwrap().expect("the write commits");
    assert_eq!(lead.first_name.as_str(), "Waited");
    tokio::time::timeout(Duration::from_secs(30), closing)
        .await
        .expect("the close ends once the write has")
        .unwrap();
}

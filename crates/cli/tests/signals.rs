//! SIGTERM and SIGINT on the real `leadline serve` process (the built binary,
//! not the library): the process stops accepting, lets the requests already
//! in flight finish, closes its pool and exits 0.
//!
//! Requests are held in flight by a row lock taken from outside: appending an
//! event checks its foreign key with `FOR KEY SHARE` on the lead's row, which
//! waits while the test holds `FOR UPDATE` on it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use sqlx::{Connection, Executor};

const BIN: &str = env!("CARGO_BIN_EXE_leadline");

struct Service {
    child: Child,
    base: String,
    key: String,
    url: String,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn leadline(url: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", url)
        .env("LEADLINE_HTTP__BIND", "127.0.0.1:0")
        .env("LEADLINE_HTTP__SHUTDOWN_GRACE_SECS", "20");
    cmd
}

async fn start() -> Service {
    let (url, key) = prepare().await;
    serve(url, key)
}

/// A migrated database of its own with one tenant: its URL and the tenant's
/// key.
async fn prepare() -> (String, String) {
    let server = leadline_testsupport::postgres();
    let database = server
        .create_database("leadline_sig", None)
        .await
        .expect("create a database");
    let url = server.admin_url(&database);
    let status = leadline(&url).args(["migrate", "up"]).status().unwrap();
    assert!(status.success(), "migrate up: {status}");
    let out = leadline(&url)
        .args(["tenant", "create", "signals", "--name", "Signals"])
        .output()
        .unwrap();
    assert!(out.status.success(), "tenant create: {out:?}");
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    (url, key)
}

/// `leadline serve` on `url`, once it listens.
fn serve(url: String, key: String) -> Service {
    let mut child = leadline(&url)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // "leadline listening on http://127.0.0.1:PORT" on stderr; the rest of
    // stderr is drained so the process never blocks on a full pipe.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.split("listening on ").nth(1) {
                let _ = tx.send(addr.trim().to_owned());
            }
        }
    });
    let base = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("serve announces its address");
    Service {
        child,
        base,
        key,
        url,
    }
}

async fn create_lead(s: &Service) -> String {
    let lead: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/v1/leads", s.base))
        .bearer_auth(&s.key)
        .json(&serde_json::json!({"first_name": "Held", "last_name": "Lead"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    lead["id"].as_str().unwrap().to_owned()
}

fn append(s: &Service, lead: &str) -> tokio::task::JoinHandle<reqwest::Result<reqwest::Response>> {
    let (url, key) = (format!("{}/v1/leads/{lead}/events", s.base), s.key.clone());
    tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .bearer_auth(key)
            .json(&serde_json::json!({"kind": "note", "direction": "internal", "content": "held"}))
            .send()
            .await
    })
}

async fn signal_with_requests_in_flight(signal: &str) {
    let s = start().await;
    let lead = create_lead(&s).await;

    let mut lock = sqlx::PgConnection::connect(&s.url).await.unwrap();
    lock.execute("BEGIN").await.unwrap();
    sqlx::query("SELECT 1 FROM leads WHERE id = $1::uuid FOR UPDATE")
        .bind(&lead)
        .execute(&mut lock)
        .await
        .unwrap();
    let in_flight: Vec<_> = (0..4).map(|_| append(&s, &lead)).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        in_flight.iter().all(|t| !t.is_finished()),
        "held by the lock"
    );

    let pid = s.child.id().to_string();
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .unwrap();
    assert!(status.success());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let late = reqwest::Client::new()
        .get(format!("{}/healthz", s.base))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(late.is_err(), "{signal}: new connections are refused");

    lock.execute("ROLLBACK").await.unwrap();
    for t in in_flight {
        let res = t
            .await
            .unwrap()
            .expect("an in-flight request got its answer");
        assert_eq!(res.status(), 201, "{signal}: in-flight append succeeded");
    }
    let mut s = s;
    let exit = exited(
        &mut s,
        Duration::from_secs(20),
        &format!("{signal}: the process exits after its in-flight requests"),
    )
    .await;
    assert!(exit.success(), "{signal}: exit status {exit}");
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE lead_id = $1::uuid AND content = 'held'",
    )
    .bind(&lead)
    .fetch_one(&mut lock)
    .await
    .unwrap();
    assert_eq!(events, 4, "{signal}: every in-flight write landed");
}

/// Waits for the process to exit, within `within`.
async fn exited(s: &mut Service, within: Duration, what: &str) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(exit) = s.child.try_wait().unwrap() {
            return exit;
        }
        assert!(started.elapsed() < within, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_then_exits_zero() {
    signal_with_requests_in_flight("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_finishes_in_flight_requests_then_exits_zero() {
    signal_with_requests_in_flight("INT").await;
}

/// Audit records `(sealed, unsealed)`.
async fn seals(db: &mut sqlx::PgConnection) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE hash IS NOT NULL), count(*) FILTER (WHERE hash IS NULL) \
         FROM audit_log",
    )
    .fetch_one(db)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_sealer_between_batches_not_after_the_backlog() {
    // A backlog of unsealed audit records, as `leadline import` leaves for
    // the next `serve` to seal (it wrote 2M at the bench's million rows,
    // and a SIGTERM then waited for the whole of it): twelve of the
    // sealer's batches, written straight into the table (content hashes
    // are arbitrary: sealing chains them without reading the rest).
    let (url, key) = prepare().await;
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    // Creating the tenant and its key wrote two.
    let (none, before) = seals(&mut db).await;
    assert_eq!(none, 0);
    let total = before + 60_000;
    db.execute(
        "INSERT INTO audit_log (tenant_id, at, entity, entity_id, action, changes, content_hash) \
         SELECT t.id, now(), 'lead', gen_random_uuid(), 'created', '{}', \
                sha256(convert_to(g::text, 'UTF8')) \
           FROM tenants t CROSS JOIN generate_series(1, 60000) g",
    )
    .await
    .unwrap();
    assert_eq!(seals(&mut db).await, (0, total));

    let mut s = serve(url.clone(), key.clone());
    // Stopped once the sealer has committed its first batch.
    let deadline = Instant::now() + Duration::from_secs(60);
    while seals(&mut db).await.0 == 0 {
        assert!(Instant::now() < deadline, "the sealer seals the backlog");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = Command::new("kill")
        .args(["-TERM", &s.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = exited(&mut s, Duration::from_secs(20), "serve exits on SIGTERM").await;
    assert!(exit.success(), "exit status {exit}");
    let (sealed, unsealed) = seals(&mut db).await;
    assert!(
        unsealed > 0,
        "the stop waited for the whole backlog ({sealed} sealed) instead of one batch"
    );
    assert_eq!(sealed % 5_000, 0, "whole batches only: {sealed}");

    // The next instance carries on where this one stopped.
    drop(s);
    let _next = serve(url, key);
    let deadline = Instant::now() + Duration::from_secs(120);
    while seals(&mut db).await != (total, 0) {
        assert!(
            Instant::now() < deadline,
            "the next instance seals the rest"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sessions running `analytics_refresh()`, and those of them waiting on a
/// lock.
async fn refreshing(db: &mut sqlx::PgConnection) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE wait_event_type = 'Lock') \
           FROM pg_stat_activity \
          WHERE query LIKE 'SELECT analytics_refresh()%' AND state = 'active' \
            AND datname = current_database()",
    )
    .fetch_one(db)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_the_analytics_refresh_does_not_wait_for_it() {
    // The refresh `serve` starts with (its figures are a day old) is held
    // by a lock on `leads` taken from outside, as a refresh over millions
    // of rows keeps going: the stop must not wait for it to end.
    let (url, key) = prepare().await;
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    db.execute("UPDATE analytics_refreshed SET as_of = now() - interval '1 day'")
        .await
        .unwrap();
    let mut holder = sqlx::PgConnection::connect(&url).await.unwrap();
    holder.execute("BEGIN").await.unwrap();
    holder
        .execute("LOCK TABLE leads IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();

    let mut s = serve(url, key);
    let deadline = Instant::now() + Duration::from_secs(60);
    while refreshing(&mut db).await.1 == 0 {
        assert!(Instant::now() < deadline, "serve starts a refresh");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = Command::new("kill")
        .args(["-TERM", &s.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = exited(
        &mut s,
        Duration::from_secs(20),
        "serve exits on SIGTERM while the refresh is still held",
    )
    .await;
    assert!(exit.success(), "exit status {exit}");
    // Cancelled on the server, not left to run on.
    let deadline = Instant::now() + Duration::from_secs(10);
    while refreshing(&mut db).await.0 > 0 {
        assert!(Instant::now() < deadline, "the refresh's statement ends");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    holder.execute("ROLLBACK").await.unwrap();
}

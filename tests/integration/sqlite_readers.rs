//! SQLite's reader pool (issue 17): on a database file, reads run on
//! reader connections beside the one writer, so a read never queues behind
//! a write, and a reader still sees every write that has returned.

use std::time::Duration;

use leadline_store::{MigrateOp, Store, StoreSettings};
use sqlx::Connection;

use crate::support::{eventually, lead_req, new_tenant, services, sqlite_url};

/// A write that waits for the file's lock holds the writer's one
/// connection; reads go on meanwhile. Without the readers the read below
/// would queue for that connection until the lock is released, which this
/// test does only after the read has answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_never_wait_for_a_write() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir.path().join("readers.db"));
    let settings = StoreSettings {
        // Long enough that only the release below ends the wait.
        sqlite_busy_timeout_ms: 120_000,
        acquire_timeout_ms: 120_000,
        sqlite_readers: Some(2),
        ..StoreSettings::for_url(&url)
    };
    let store = Store::connect(&settings).await.unwrap();
    store.migrate(MigrateOp::Up).await.unwrap();
    assert!(store.has_read_pool(), "a database file has readers");
    let s = services(store.clone());
    let (tenant, _) = new_tenant(&s).await;
    let known = s.leads.create(tenant, &lead_req("Known")).await.unwrap();

    // Another process takes the file's write lock and keeps it.
    let mut other = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    let write = {
        let s = s.clone();
        tokio::spawn(async move { s.leads.create(tenant, &lead_req("Blocked")).await })
    };
    eventually(
        "the write holds the writer",
        Duration::from_secs(30),
        async || {
            let stats = store.pool_stats();
            if stats.in_use == 1 {
                Ok(())
            } else {
                Err(stats)
            }
        },
    )
    .await;

    let read = tokio::time::timeout(Duration::from_secs(20), s.leads.get(tenant, known.id))
        .await
        .expect("the read answers while the write waits")
        .expect("the read succeeds");
    assert_eq!(read.id, known.id);
    let context =
        tokio::time::timeout(Duration::from_secs(20), s.context.context(tenant, known.id))
            .await
            .expect("the context answers while the write waits");
    assert!(context.is_ok(), "{context:?}");
    assert!(!write.is_finished(), "the write still waits for the lock");

    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    let written = write
        .await
        .unwrap()
        .expect("the write lands once the lock is free");
    assert_eq!(
        s.leads.get(tenant, written.id).await.unwrap().id,
        written.id
    );
}

/// Every write that has returned is visible to the next read, which runs on
/// another connection: a WAL reader's snapshot starts at its first read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_see_every_write_that_returned() {
    let store = crate::support::sqlite_store().await;
    assert!(store.has_read_pool());
    let s = services(store);
    let (tenant, _) = new_tenant(&s).await;
    let tasks = (0..8).map(|task| {
        let s = s.clone();
        tokio::spawn(async move {
            for i in 0..25 {
                let name = format!("Reader{task}x{i}");
                let lead = s.leads.create(tenant, &lead_req(&name)).await.unwrap();
                let read = s.leads.get(tenant, lead.id).await.unwrap();
                assert_eq!(read.version, lead.version);
                let patched = s
                    .leads
                    .update(
                        tenant,
                        lead.id,
                        &leadline_domain::UpdateLeadRequest {
                            expected_version: lead.version,
                            status: Some(leadline_domain::LeadStatus::Contacted),
                            ..leadline_domain::UpdateLeadRequest::default()
                        },
                    )
                    .await
                    .unwrap();
                let read = s.leads.get(tenant, lead.id).await.unwrap();
                assert_eq!(read.version, patched.version, "the patch is seen at once");
            }
        })
    });
    for task in futures::future::join_all(tasks).await {
        task.unwrap();
    }
}

/// Writes queue for the writer for at most `database.acquire_timeout_ms`;
/// past it the API answers 503 with `Retry-After` (problem+json), never a
/// `SQLITE_BUSY` error, and reads keep answering 200 meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_queued_past_its_bound_is_503_with_retry_after() {
    use axum::{
        body::Body,
        http::{Request, StatusCode},
    };
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir.path().join("queue.db"));
    let settings = StoreSettings {
        sqlite_busy_timeout_ms: 120_000,
        acquire_timeout_ms: 300,
        ..StoreSettings::for_url(&url)
    };
    let store = Store::connect(&settings).await.unwrap();
    store.migrate(MigrateOp::Up).await.unwrap();
    let s = services(store.clone());
    let (tenant, key) = new_tenant(&s).await;
    let known = s.leads.create(tenant, &lead_req("Known")).await.unwrap();
    let app = leadline_http::router(leadline_http::AppState::new(s.clone()));
    let call = |req: Request<Body>| {
        let app = app.clone();
        async move {
            let res = app.oneshot(req).await.unwrap();
            let status = res.status();
            let headers = res.headers().clone();
            let bytes = res.into_body().collect().await.unwrap().to_bytes();
            (
                status,
                headers,
                String::from_utf8_lossy(&bytes).into_owned(),
            )
        }
    };

    let mut other = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    let first = {
        let s = s.clone();
        tokio::spawn(async move { s.leads.create(tenant, &lead_req("First")).await })
    };
    eventually(
        "the first write holds the writer",
        Duration::from_secs(30),
        async || {
            let stats = store.pool_stats();
            if stats.in_use == 1 {
                Ok(())
            } else {
                Err(stats)
            }
        },
    )
    .await;

    let post = Request::post("/v1/leads")
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Body::from(r#"{"first_name":"Queued","last_name":"Late"}"#))
        .unwrap();
    let (status, headers, body) = call(post).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(headers.contains_key("retry-after"), "{headers:?}");
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    assert!(
        !body.to_lowercase().contains("sqlite"),
        "no driver error leaks: {body}"
    );

    let get = Request::get(format!("/v1/leads/{}", known.id))
        .header("authorization", format!("Bearer {key}"))
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = call(get).await;
    assert_eq!(status, StatusCode::OK, "reads go on: {body}");

    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    first.await.unwrap().expect("the queued write lands");
}

/// The readers held for one-statement reads show in the pool's gauges and
/// their waits in the acquire histogram, under `pool="point_reads"`; the
/// reads they served have handed them back.
#[tokio::test]
async fn point_readers_show_in_the_metrics() {
    use axum::{body::Body, http::Request};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir.path().join("metered.db"));
    let store = Store::connect(&StoreSettings {
        sqlite_readers: Some(2),
        ..StoreSettings::for_url(&url)
    })
    .await
    .unwrap();
    store.migrate(MigrateOp::Up).await.unwrap();
    let s = services(store.clone());
    // First: building the router installs the metrics recorder.
    let app = leadline_http::router(leadline_http::AppState::new(s.clone()));
    let (tenant, _) = new_tenant(&s).await;
    let lead = s.leads.create(tenant, &lead_req("Metered")).await.unwrap();
    for _ in 0..3 {
        assert_eq!(s.leads.get(tenant, lead.id).await.unwrap().id, lead.id);
    }
    let stats = store.point_read_stats().expect("a file has point readers");
    assert_eq!(
        (stats.size, stats.idle, stats.in_use, stats.max),
        (2, 2, 0, 2),
        "{stats:?}"
    );

    let res = app
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let text =
        String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    for needle in [
        r#"db_pool_max_connections{pool="point_reads"}"#,
        r#"db_pool_connections{pool="point_reads",state="idle"}"#,
        r#"db_pool_acquire_seconds_count{pool="point_reads"}"#,
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
    assert!(
        Store::connect(&StoreSettings::for_url("sqlite::memory:"))
            .await
            .unwrap()
            .point_read_stats()
            .is_none(),
        "memory has no point readers"
    );
}

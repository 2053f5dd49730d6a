//! SQLite on a full disk (issue 12, defect 7): a write the service
//! acknowledges is committed, one it refuses is not, and writes work again
//! once space is freed, without a restart.
//!
//! `PRAGMA max_page_count = 1` on the store's connection caps the database
//! at its current size, so the next write that needs a page fails with
//! `SQLITE_FULL` exactly as on a full disk; raising the cap frees the space.
//! The cap belongs to a connection, and the store may replace its
//! connection after such a failure, so it is set again before every write
//! of the full phase. The database is a file so that an independent
//! connection can check what was really committed, and a reopened store
//! what survived.

use std::path::{Path, PathBuf};

use axum::{
    Router,
    body::Body,
    http::{Method, Request, StatusCode, header},
};
use http_body_util::BodyExt;
use leadline_http::{AppState, router};
use leadline_store::{MigrateOp, Store, StoreSettings};
use serde_json::{Value, json};
use sqlx::{Connection, Row, SqliteConnection};
use tower::ServiceExt;

use crate::support::{new_tenant, services};

/// A database file in its own directory, removed on drop.
struct DbFile {
    dir: PathBuf,
}

impl DbFile {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "leadline-disk-full-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.join("leadline.db")
    }

    fn url(&self) -> String {
        format!("sqlite://{}?mode=rwc", self.path().display())
    }
}

impl Drop for DbFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn open(url: &str) -> Store {
    let store = Store::connect(&StoreSettings::for_url(url)).await.unwrap();
    store.migrate(MigrateOp::Up).await.unwrap();
    store
}

/// Caps the database at its current size: the next write that needs a new
/// page fails with `SQLITE_FULL`.
async fn fill(store: &Store) {
    store
        .execute_for_tests("PRAGMA max_page_count = 1")
        .await
        .unwrap();
}

/// Lifts the cap: the space is free again.
async fn free(store: &Store) {
    store
        .execute_for_tests("PRAGMA max_page_count = 1073741823")
        .await
        .unwrap();
}

/// An answer: status, the headers that matter here, and the JSON body.
struct Answer {
    status: StatusCode,
    content_type: Option<String>,
    retry_after: Option<String>,
    body: Value,
}

async fn call(app: &Router, method: Method, uri: &str, key: &str, body: Option<Value>) -> Answer {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {key}"));
    let req = match body {
        Some(b) => req
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let header = |name| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header(header::CONTENT_TYPE);
    let retry_after = header(header::RETRY_AFTER);
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        content_type,
        retry_after,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

/// A refused write is a 503 problem with `Retry-After`.
fn assert_storage_unavailable(answer: &Answer, what: &str) {
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{what}: {}",
        answer.body
    );
    assert_eq!(
        answer.content_type.as_deref(),
        Some("application/problem+json"),
        "{what}"
    );
    assert!(answer.retry_after.is_some(), "{what}: no Retry-After");
    assert_eq!(answer.body["status"], 503, "{what}: {}", answer.body);
}

/// What another connection on the same file sees: the leads' first names,
/// sorted, and the company of the lead named `tracked`.
async fn committed(path: &Path, tracked: &str) -> (Vec<String>, Option<String>) {
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let mut names: Vec<String> = sqlx::query("SELECT first_name FROM leads")
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|row| row.get::<String, _>(0))
        .collect();
    names.sort();
    let company = sqlx::query("SELECT company FROM leads WHERE first_name = ?")
        .bind(tracked)
        .fetch_optional(&mut conn)
        .await
        .unwrap()
        .and_then(|row| row.get::<Option<String>, _>(0));
    conn.close().await.unwrap();
    (names, company)
}

/// The writes the service acknowledged, to compare with what is stored.
#[derive(Default)]
struct Acknowledged {
    names: Vec<String>,
    company: Option<String>,
}

impl Acknowledged {
    fn sorted_names(&self) -> Vec<String> {
        let mut names = self.names.clone();
        names.sort();
        names
    }
}

/// Creates lead `name` over HTTP; records it when acknowledged. Returns the
/// answer for the caller to judge.
async fn create_lead(app: &Router, key: &str, name: &str, acked: &mut Acknowledged) -> Answer {
    let answer = call(
        app,
        Method::POST,
        "/v1/leads",
        key,
        Some(json!({"first_name": name, "last_name": "Full"})),
    )
    .await;
    if answer.status == StatusCode::CREATED {
        acked.names.push(name.to_owned());
    }
    answer
}

/// Every acknowledged write, and nothing else, is visible to an
/// independent connection.
async fn assert_committed(path: &Path, acked: &Acknowledged, when: &str) {
    let (names, company) = committed(path, "Tracked").await;
    assert_eq!(
        names,
        acked.sorted_names(),
        "{when}: another connection sees other leads than the acknowledged ones"
    );
    assert_eq!(
        company, acked.company,
        "{when}: another connection sees another company than the acknowledged one"
    );
}

#[tokio::test]
async fn every_acknowledged_write_on_a_full_sqlite_database_is_committed() {
    let db = DbFile::new();
    let store = open(&db.url()).await;
    let s = services(store.clone());
    let app = router(AppState::new(s.clone()));
    let (_tenant, key) = new_tenant(&s).await;
    let mut acked = Acknowledged::default();

    // A lead to update while the disk is full (an UPDATE in place needs no
    // new page, so it may succeed), and an agent to collide with.
    let tracked = create_lead(&app, &key, "Tracked", &mut acked).await;
    assert_eq!(tracked.status, StatusCode::CREATED, "{}", tracked.body);
    let tracked_uri = format!("/v1/leads/{}", tracked.body["id"].as_str().unwrap());
    let mut version = tracked.body["version"].as_i64().unwrap();
    let agent = json!({"name": "Agent", "email": "agent@example.com"});
    let first_agent = call(&app, Method::POST, "/v1/agents", &key, Some(agent.clone())).await;
    assert_eq!(
        first_agent.status,
        StatusCode::CREATED,
        "{}",
        first_agent.body
    );

    // Fill: writes succeed until one needs a page the file cannot have.
    let mut n = 0;
    let refused = loop {
        n += 1;
        assert!(n < 1000, "the capped database never filled");
        fill(&store).await;
        let answer = create_lead(&app, &key, &format!("Before{n}"), &mut acked).await;
        if answer.status != StatusCode::CREATED {
            break answer;
        }
    };
    assert_storage_unavailable(&refused, "the write that found the disk full");
    assert_committed(&db.path(), &acked, "after the first refusal").await;

    // Keep writing while full: new leads, a request that fails on its own
    // (a duplicate email, rolled back), and updates in place. Each must be
    // refused or really committed.
    for round in 0..6 {
        fill(&store).await;
        let answer = create_lead(&app, &key, &format!("Full{round}"), &mut acked).await;
        if answer.status != StatusCode::CREATED {
            assert_storage_unavailable(&answer, "a new lead on the full disk");
        }
        fill(&store).await;
        let dup = call(&app, Method::POST, "/v1/agents", &key, Some(agent.clone())).await;
        assert!(
            matches!(
                dup.status,
                StatusCode::CONFLICT | StatusCode::SERVICE_UNAVAILABLE
            ),
            "a duplicate agent on the full disk: {} {}",
            dup.status,
            dup.body
        );
        fill(&store).await;
        let company = format!("Company {round}");
        let update = call(
            &app,
            Method::PATCH,
            &tracked_uri,
            &key,
            Some(json!({"version": version, "company": company})),
        )
        .await;
        if update.status == StatusCode::OK {
            version = update.body["version"].as_i64().unwrap();
            acked.company = Some(company);
        } else {
            assert_storage_unavailable(&update, "an update on the full disk");
        }
        assert_committed(&db.path(), &acked, &format!("full, round {round}")).await;
    }

    // Free the space: writes succeed again, without a restart, also right
    // after a request that failed on its own.
    free(&store).await;
    for round in 0..3 {
        let answer = create_lead(&app, &key, &format!("After{round}"), &mut acked).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
        let dup = call(&app, Method::POST, "/v1/agents", &key, Some(agent.clone())).await;
        assert_eq!(dup.status, StatusCode::CONFLICT, "{}", dup.body);
        let company = format!("Company after {round}");
        let update = call(
            &app,
            Method::PATCH,
            &tracked_uri,
            &key,
            Some(json!({"version": version, "company": company})),
        )
        .await;
        assert_eq!(update.status, StatusCode::OK, "{}", update.body);
        version = update.body["version"].as_i64().unwrap();
        acked.company = Some(company);
        assert_committed(&db.path(), &acked, &format!("freed, round {round}")).await;
    }

    // Close and reopen: every acknowledged write is there, nothing else.
    drop(app);
    drop(s);
    store.close().await;
    drop(store);
    assert_committed(&db.path(), &acked, "after close").await;
    let reopened = open(&db.url()).await;
    let s = services(reopened.clone());
    let app = router(AppState::new(s));
    assert!(acked.names.len() < 200, "one page must list them all");
    let listed = call(&app, Method::GET, "/v1/leads?limit=200", &key, None).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    let mut names: Vec<String> = listed.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|lead| lead["first_name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(names, acked.sorted_names(), "the reopened store's leads");
    reopened.close().await;
}

#[tokio::test]
async fn readyz_reports_a_full_sqlite_database_until_a_write_commits() {
    let db = DbFile::new();
    let store = open(&db.url()).await;
    let s = services(store.clone());
    let app = router(AppState::new(s.clone()));
    let (_tenant, key) = new_tenant(&s).await;
    let mut acked = Acknowledged::default();

    let ready = call(&app, Method::GET, "/readyz", &key, None).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);

    let mut n = 0;
    loop {
        n += 1;
        assert!(n < 1000, "the capped database never filled");
        fill(&store).await;
        let answer = create_lead(&app, &key, &format!("Lead{n}"), &mut acked).await;
        if answer.status != StatusCode::CREATED {
            assert_storage_unavailable(&answer, "the write that found the disk full");
            break;
        }
    }
    // The database still answers `SELECT 1`; readiness reports the full
    // storage all the same.
    let full = call(&app, Method::GET, "/readyz", &key, None).await;
    assert_storage_unavailable(&full, "/readyz on a full disk");

    free(&store).await;
    let answer = create_lead(&app, &key, "Freed", &mut acked).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    let ready = call(&app, Method::GET, "/readyz", &key, None).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
    assert_committed(&db.path(), &acked, "after space was freed").await;
    store.close().await;
}

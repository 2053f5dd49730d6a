//! The audit trail against real databases: every write through the API
//! leaves a record (who, what fields old and new, when, which request) in
//! its own transaction; the service role can only add records; and an
//! owner who edits, deletes or reorders records is caught at the first bad
//! one by `leadline audit verify`.

use std::time::Duration;

use axum::{
    Router,
    body::Body,
    http::{Method, Request, StatusCode, header},
};
use http_body_util::BodyExt;
use leadline_app::{Services, Verdict};
use leadline_domain::{BreakKind, ChangePosition, TenantId};
use leadline_http::{AppState, router};
use serde_json::{Value, json};
use sqlx::{Connection, Executor};
use tower::ServiceExt;

use crate::support::{
    eventually, isolated_pg_url, lead_req, new_tenant, pg, pg_store, services, sqlite_file_store,
    store_at,
};

/// Where the database's owner can reach it, bypassing the service.
enum Owner {
    Postgres(String),
    Sqlite(std::path::PathBuf),
}

impl Owner {
    /// Runs `sql` as the owner (on SQLite, with the append-only trigger
    /// dropped first, as a file's owner can).
    async fn execute(&self, sql: &str) {
        match self {
            Self::Postgres(url) => {
                let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
                conn.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())))
                    .await
                    .unwrap();
            }
            Self::Sqlite(path) => {
                let url = format!("sqlite://{}", path.display());
                let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
                conn.execute("DROP TRIGGER IF EXISTS audit_log_append_only")
                    .await
                    .unwrap();
                conn.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())))
                    .await
                    .unwrap();
            }
        }
    }
}

struct Setup {
    services: Services,
    app: Router,
    owner: Owner,
}

async fn postgres() -> Setup {
    let s = services(pg_store().await);
    Setup {
        app: router(AppState::new(s.clone())),
        services: s,
        owner: Owner::Postgres(pg().await.owner_url.clone()),
    }
}

async fn sqlite() -> Setup {
    let (store, path) = sqlite_file_store().await;
    let s = services(store);
    Setup {
        app: router(AppState::new(s.clone())),
        services: s,
        owner: Owner::Sqlite(path),
    }
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::sqlite().await).await;
            })*
        }
        mod on_postgres {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::postgres().await).await;
            })*
        }
    };
}

on_both!(
    records_deleted_from_the_end_are_found_by_the_anchor,
    api_writes_are_audited_with_key_request_and_changed_fields,
    key_changes_are_audited_without_their_secret,
    imported_leads_are_the_importing_requests,
    tampering_is_found_at_the_first_bad_record,
    console_decisions_are_the_signed_in_users,
);

/// One call: `(status, body as JSON)`.
async fn call(
    app: &Router,
    key: &str,
    method: Method,
    uri: &str,
    request_id: Option<&str>,
    body: Option<(&str, String)>,
) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {key}"));
    if let Some(id) = request_id {
        req = req.header("x-request-id", id);
    }
    let req = match body {
        Some((content_type, body)) => req
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body)),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn json_body(v: &Value) -> Option<(&'static str, String)> {
    Some(("application/json", v.to_string()))
}

/// The id of the tenant's first key (the one `new_tenant` hands out).
async fn key_id(app: &Router, key: &str) -> String {
    let (status, keys) = call(app, key, Method::GET, "/v1/keys", None, None).await;
    assert_eq!(status, StatusCode::OK, "{keys}");
    keys["items"][0]["id"].as_str().unwrap().to_owned()
}

async fn api_writes_are_audited_with_key_request_and_changed_fields(setup: Setup) {
    let (s, app) = (&setup.services, &setup.app);
    let (tenant, key) = new_tenant(s).await;
    let key_id = key_id(app, &key).await;

    let (status, lead) = call(
        app,
        &key,
        Method::POST,
        "/v1/leads",
        Some("audit-create"),
        json_body(
            &json!({"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{lead}");
    let lead_uri = format!("/v1/leads/{}", lead["id"].as_str().unwrap());
    let (status, moved) = call(
        app,
        &key,
        Method::PATCH,
        &lead_uri,
        Some("audit-patch"),
        json_body(&json!({"status": "contacted", "version": 1})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    // A refused write leaves nothing: the record is in the write's
    // transaction.
    let (status, refused) = call(
        app,
        &key,
        Method::PATCH,
        &lead_uri,
        Some("audit-refused"),
        json_body(&json!({"status": "won", "version": 2})),
    )
    .await;
    assert!(status.is_client_error(), "{status} {refused}");

    let audit = format!("/v1/audit?entity_id={}", lead["id"].as_str().unwrap());
    let (status, page) = call(app, &key, Method::GET, &audit, None, None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "created and updated, newest first: {page}");
    let (updated, created) = (&items[0], &items[1]);
    assert_eq!(updated["action"], "lead.updated");
    assert_eq!(updated["entity"], "lead");
    assert_eq!(updated["actor"]["key_id"], key_id.as_str());
    assert_eq!(updated["request_id"], "audit-patch");
    assert_eq!(
        updated["changes"],
        json!({"status": {"old": "new", "new": "contacted"}, "version": {"old": 1, "new": 2}}),
        "only what changed, with old and new"
    );
    assert_eq!(created["action"], "lead.created");
    assert_eq!(created["request_id"], "audit-create");
    assert_eq!(
        created["changes"]["email"],
        json!({"old": null, "new": "ada@example.com"})
    );
    assert_eq!(created["changes"]["first_name"]["new"], "Ada");

    // The status move's timeline event is a write of its own, on the same
    // request.
    let (_, events) = call(app, &key, Method::GET, "/v1/audit?entity=event", None, None).await;
    let events = events["items"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["action"], "event.recorded");
    assert_eq!(events[0]["request_id"], "audit-patch");

    // The lead's context can carry its newest records (for admins).
    let (status, context) = call(
        app,
        &key,
        Method::GET,
        &format!("{lead_uri}/context?audit=5"),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{context}");
    assert_eq!(context["lead"]["status"], "contacted", "{context}");
    let actions: Vec<&str> = context["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["lead.updated", "lead.created"], "{context}");
    let (status, plain) = call(
        app,
        &key,
        Method::GET,
        &format!("{lead_uri}/context"),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(plain.get("audit").is_none(), "only when asked: {plain}");
    for query in ["audit=0", "adit=5"] {
        let (status, problem) = call(
            app,
            &key,
            Method::GET,
            &format!("{lead_uri}/context?{query}"),
            None,
            None,
        )
        .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{query}: {problem}"
        );
    }
    let (_, viewer) = call(
        app,
        &key,
        Method::POST,
        "/v1/keys",
        None,
        json_body(&json!({"name": "viewer", "role": "viewer"})),
    )
    .await;
    let viewer = viewer["secret"].as_str().unwrap();
    let (status, problem) = call(
        app,
        viewer,
        Method::GET,
        &format!("{lead_uri}/context?audit=5"),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");

    // Filters and keyset pages.
    let by_key = format!("/v1/audit?actor={key_id}&limit=1");
    let mut seen = Vec::new();
    let mut uri = by_key.clone();
    loop {
        let (status, page) = call(app, &key, Method::GET, &uri, None, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].clone()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => uri = format!("{by_key}&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(
        seen.len(),
        4,
        "lead created, lead updated, event, viewer key: {seen:?}"
    );
    let (_, none) = call(
        app,
        &key,
        Method::GET,
        &format!(
            "/v1/audit?since={}",
            (chrono::Utc::now() + chrono::Duration::hours(1))
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        None,
        None,
    )
    .await;
    assert_eq!(none["items"], json!([]), "nothing after the future");

    // Bad filters are 422s naming their field.
    for (query, field) in [
        ("entity=bogus", "entity"),
        ("entity_id=nope", "entity_id"),
        ("actor=1", "actor"),
        ("since=yesterday", "since"),
        ("cursor=AAAA", "cursor"),
        ("limit=0", "limit"),
    ] {
        let (status, problem) = call(
            app,
            &key,
            Method::GET,
            &format!("/v1/audit?{query}"),
            None,
            None,
        )
        .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{query}: {problem}"
        );
        assert!(problem.to_string().contains(field), "{query}: {problem}");
    }

    // The chain holds every record.
    match s.audit.verify(tenant, None).await.unwrap() {
        Verdict::Intact(state) => {
            // The tenant's creation (the tenant, its first key, separation
            // of duties turned off), then the four writes above.
            assert_eq!((state.sealed, state.unsealed), (7, 0), "{state:?}");
        }
        other => panic!("an untouched trail verifies: {other:?}"),
    }
}

async fn key_changes_are_audited_without_their_secret(setup: Setup) {
    let (s, app) = (&setup.services, &setup.app);
    let (_tenant, key) = new_tenant(s).await;
    let (status, issued) = call(
        app,
        &key,
        Method::POST,
        "/v1/keys",
        Some("audit-key"),
        json_body(&json!({"name": "reporting", "role": "viewer"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    let id = issued["key"]["id"].as_str().unwrap();
    let secret = issued["secret"].as_str().unwrap();
    let (status, revoked) = call(
        app,
        &key,
        Method::DELETE,
        &format!("/v1/keys/{id}"),
        None,
        None,
    )
    .await;
    assert!(status.is_success(), "{status} {revoked}");

    let (_, page) = call(
        app,
        &key,
        Method::GET,
        &format!("/v1/audit?entity=key&entity_id={id}"),
        None,
        None,
    )
    .await;
    let items = page["items"].as_array().unwrap();
    let actions: Vec<&str> = items
        .iter()
        .map(|i| i["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["key.revoked", "key.issued"], "{page}");
    assert_eq!(items[0]["changes"]["revoked_at"]["old"], Value::Null);
    assert!(
        items[0]["changes"]["revoked_at"]["new"].is_string(),
        "{page}"
    );
    assert_eq!(items[1]["changes"]["role"]["new"], "viewer", "{page}");
    assert_eq!(items[1]["request_id"], "audit-key");
    assert!(!page.to_string().contains(secret), "no secret in the trail");
}

async fn imported_leads_are_the_importing_requests(setup: Setup) {
    let (s, app) = (&setup.services, &setup.app);
    let (_tenant, key) = new_tenant(s).await;
    let key_id = key_id(app, &key).await;
    let (status, run) = call(
        app,
        &key,
        Method::POST,
        "/v1/imports?name=people.csv",
        Some("audit-import"),
        Some((
            "text/csv",
            "first_name,last_name,email\nGrace,Hopper,gh@navy.example\nAlan,Turing,at@npl.example\n"
                .to_owned(),
        )),
    )
    .await;
    assert!(status.is_success(), "{status} {run}");
    let run_uri = format!("/v1/imports/{}", run["id"].as_str().unwrap());
    eventually("the import is done", Duration::from_secs(30), async || {
        let (_, run) = call(app, &key, Method::GET, &run_uri, None, None).await;
        if run["status"] == "done" {
            Ok(())
        } else {
            Err(run)
        }
    })
    .await;
    let (_, page) = call(app, &key, Method::GET, "/v1/audit?entity=lead", None, None).await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{page}");
    for item in items {
        assert_eq!(item["action"], "lead.created");
        assert_eq!(item["request_id"], "audit-import", "{item}");
        assert_eq!(item["actor"]["key_id"], key_id.as_str(), "{item}");
    }
}

/// A way to tamper with one tenant's records, addressed by their place in
/// the chain (0 is the first).
#[derive(Debug, Clone, Copy)]
enum Tamper {
    /// Rewrite what a record says.
    Edit(usize),
    /// Say a different key made it.
    Reattribute(usize),
    /// Delete it.
    Delete(usize),
    /// Swap two records' places.
    Swap(usize, usize),
}

const SWAPPED: &str = "at, key_id, user_id, agent_id, request_id, entity, entity_id, action, \
                       changes, content_hash, prev_hash, hash";

impl Tamper {
    fn sql(self, seqs: &[u64]) -> String {
        match self {
            Self::Edit(i) => format!(
                "UPDATE audit_log SET changes = '{{\"status\":{{\"old\":\"new\",\"new\":\"won\"}}}}' WHERE seq = {}",
                seqs[i]
            ),
            Self::Reattribute(i) => {
                format!("UPDATE audit_log SET key_id = NULL WHERE seq = {}", seqs[i])
            }
            Self::Delete(i) => format!("DELETE FROM audit_log WHERE seq = {}", seqs[i]),
            Self::Swap(i, j) => {
                let (a, b) = (seqs[i], seqs[j]);
                format!(
                    "CREATE TEMP TABLE swapped AS SELECT seq, {SWAPPED} FROM audit_log WHERE seq IN ({a}, {b}); \
                     UPDATE audit_log SET ({SWAPPED}) = (SELECT {SWAPPED} FROM swapped \
                       WHERE swapped.seq = CASE audit_log.seq WHEN {a} THEN {b} ELSE {a} END) \
                     WHERE seq IN ({a}, {b})"
                )
            }
        }
    }
}

async fn tampering_is_found_at_the_first_bad_record(setup: Setup) {
    let s = &setup.services;
    // Each tamper, and the record (by chain place) and the break verification
    // must report.
    let cases = [
        (Tamper::Edit(2), 2, BreakKind::Edited),
        (Tamper::Reattribute(1), 1, BreakKind::Edited),
        (Tamper::Delete(1), 2, BreakKind::Unlinked),
        (Tamper::Swap(2, 3), 2, BreakKind::Unlinked),
        (Tamper::Delete(0), 1, BreakKind::Unlinked),
    ];
    for (tamper, at, kind) in cases {
        let (tenant, _) = new_tenant(s).await;
        let context = leadline_domain::AuditContext {
            actor: leadline_domain::Actor {
                key_id: Some(leadline_domain::ApiKeyId::new()),
                ..Default::default()
            },
            request_id: Some("seed".into()),
        };
        for name in ["A", "B", "C", "D", "E"] {
            leadline_ports::audited(context.clone(), s.leads.create(tenant, &lead_req(name)))
                .await
                .unwrap();
        }
        // The leads' records, after the tenant's own.
        let seqs: Vec<u64> = chain(s, tenant)
            .await
            .iter()
            .filter(|e| e.record.entity == "lead")
            .map(|e| e.position.seq)
            .collect();
        assert_eq!(seqs.len(), 5);
        setup.owner.execute(&tamper.sql(&seqs)).await;

        let verdict = s.audit.verify(tenant, None).await.unwrap();
        let Verdict::Broken(broken) = verdict else {
            panic!("{tamper:?} went unnoticed: {verdict:?}");
        };
        assert_eq!(
            (broken.position.seq, broken.problem),
            (seqs[at], kind),
            "{tamper:?}: {broken}"
        );
        // The command an operator runs says so, naming the record.
        let slug = s.tenants.get(tenant).await.unwrap().slug.to_string();
        let mut anchors = leadline::audit::Anchors::new();
        let checked = leadline::audit::verify(s, Some(&slug), &mut anchors)
            .await
            .unwrap();
        let line = checked[0].describe();
        assert!(
            line.contains("BROKEN") && line.contains(&broken.position.to_string()),
            "{line}"
        );
    }
}

/// `tenant`'s records in chain order, once all are sealed.
async fn chain(s: &Services, tenant: TenantId) -> Vec<leadline_domain::AuditEntry> {
    eventually(
        "every record is sealed",
        Duration::from_secs(30),
        async || {
            s.audit.seal_all().await.map_err(|e| e.to_string())?;
            let records = s
                .audit
                .chain(tenant, ChangePosition::default(), 1_000)
                .await
                .map_err(|e| e.to_string())?;
            if records.iter().all(|r| r.hash.is_some()) {
                Ok(records)
            } else {
                Err(format!(
                    "{} unsealed",
                    records.iter().filter(|r| r.hash.is_none()).count()
                ))
            }
        },
    )
    .await
}

#[tokio::test]
async fn the_service_role_may_only_add_audit_records() {
    let s = services(pg_store().await);
    let (tenant, _) = new_tenant(&s).await;
    s.leads.create(tenant, &lead_req("Kept")).await.unwrap();
    let mut conn = sqlx::PgConnection::connect(&pg().await.service_url)
        .await
        .unwrap();
    let count = async |conn: &mut sqlx::PgConnection| -> i64 {
        let mut tx = conn.begin().await.unwrap();
        sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
            .bind(tenant.to_string())
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query_scalar("SELECT count(*) FROM audit_log")
            .fetch_one(&mut *tx)
            .await
            .unwrap()
    };
    let before = count(&mut conn).await;
    assert!(before >= 1, "the lead's record is there");
    for statement in [
        "UPDATE audit_log SET changes = '{}'",
        "UPDATE audit_log SET request_id = 'forged'",
        "UPDATE audit_log SET hash = NULL, prev_hash = NULL",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
        "ALTER TABLE audit_log DISABLE ROW LEVEL SECURITY",
        "DROP POLICY sealing ON audit_log",
        "DROP TABLE audit_log",
    ] {
        let mut tx = conn.begin().await.unwrap();
        sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
            .bind(tenant.to_string())
            .execute(&mut *tx)
            .await
            .unwrap();
        let err = tx
            .execute(sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_owned())))
            .await
            .expect_err(statement);
        assert_eq!(
            err.as_database_error().and_then(|e| e.code()).as_deref(),
            Some("42501"),
            "{statement}: {err}"
        );
    }
    assert_eq!(
        count(&mut conn).await,
        before,
        "every record is still there"
    );
}

#[tokio::test]
async fn sqlite_refuses_to_change_an_audit_record() {
    let (store, path) = sqlite_file_store().await;
    let s = services(store);
    let (tenant, _) = new_tenant(&s).await;
    s.leads.create(tenant, &lead_req("Kept")).await.unwrap();
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let err = conn
        .execute("UPDATE audit_log SET request_id = 'forged'")
        .await
        .expect_err("append-only");
    assert!(err.to_string().contains("append-only"), "{err}");
}

#[tokio::test]
async fn concurrent_writers_and_sealers_build_one_unbroken_chain() {
    let s = services(pg_store().await);
    let (tenant, _) = new_tenant(&s).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sealers: Vec<_> = (0..3)
        .map(|_| {
            let (s, stop) = (s.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    s.audit.seal_all().await.unwrap();
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let writers: Vec<_> = (0..24)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let lead = s
                    .leads
                    .create(tenant, &lead_req(&format!("W{i}")))
                    .await
                    .unwrap();
                let patch = leadline_domain::UpdateLeadRequest {
                    status: Some(leadline_domain::LeadStatus::Contacted),
                    expected_version: lead.version,
                    ..Default::default()
                };
                s.leads.update(tenant, lead.id, &patch).await.unwrap();
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for sealer in sealers {
        sealer.await.unwrap();
    }
    // The tenant's three records, then created, updated, and the status
    // move's event, for each writer.
    let expected = 3 + 24 * 3;
    let state = eventually(
        "the whole trail is sealed",
        Duration::from_secs(30),
        async || {
            s.audit.seal_all().await.map_err(|e| e.to_string())?;
            match s
                .audit
                .verify(tenant, None)
                .await
                .map_err(|e| e.to_string())?
            {
                Verdict::Intact(state) if state.unsealed == 0 => Ok(state),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    assert_eq!(state.sealed, expected, "{state:?}");
}

/// Sealing in small batches (a batch ends inside a tenant's records, and
/// the next one goes on from its head) chains the same records, in the
/// same order, as one seal of everything: the set-wise sealer of migration
/// 29 writes a batch's links in one statement.
#[tokio::test]
async fn small_seal_batches_build_the_same_chain() {
    use leadline_ports::AuditTrail;
    let store = pg_store().await;
    let s = services(store.clone());
    let (tenant, _) = new_tenant(&s).await;
    for i in 0..7 {
        s.leads
            .create(tenant, &lead_req(&format!("Batch{i}")))
            .await
            .unwrap();
    }
    let state = eventually(
        "the trail is sealed two records at a time",
        Duration::from_secs(30),
        async || {
            let sealed = store.seal(2).await.map_err(|e| e.to_string())?;
            assert!(sealed <= 2, "a batch of two sealed {sealed}");
            match s
                .audit
                .verify(tenant, None)
                .await
                .map_err(|e| e.to_string())?
            {
                Verdict::Intact(state) if state.unsealed == 0 => Ok(state),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    // The tenant's three records, then one per lead.
    assert_eq!(state.sealed, 3 + 7, "{state:?}");
    let entries = chain(&s, tenant).await;
    assert_eq!(entries.len(), 10);
    let mut prev = leadline_domain::audit::GENESIS;
    for e in &entries {
        assert_eq!(e.prev_hash.as_deref(), Some(prev.as_slice()), "{e:?}");
        let content = e.content_hash.as_slice().try_into().unwrap();
        prev = leadline_domain::audit::link(&prev, &content);
        assert_eq!(e.hash.as_deref(), Some(prev.as_slice()), "{e:?}");
    }
}

/// Until the tenant's whole trail is sealed (by `seal`) and verifies, its
/// state.
async fn sealed_intact(
    s: &Services,
    tenant: TenantId,
    mut seal: impl AsyncFnMut() -> Result<(), String>,
) -> leadline_domain::ChainState {
    eventually(
        "the trail is sealed and intact",
        Duration::from_secs(30),
        async || {
            seal().await?;
            match s
                .audit
                .verify(tenant, None)
                .await
                .map_err(|e| e.to_string())?
            {
                Verdict::Intact(state) if state.unsealed == 0 => Ok(state),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
}

/// Two instances' sealers taking turns, two records at a time: each gives
/// `audit_seal_from` the chain heads it left last (migration 30), which the
/// other's batch has made stale. A stale head is found not to hold (the
/// record after it is sealed) and the head is scanned for, so the chain
/// stays whole; a sealer that trusted it would link records to the wrong
/// predecessor. A database of its own: no other test's sealer takes a turn.
#[tokio::test]
async fn sealers_of_two_instances_taking_turns_keep_one_chain() {
    use leadline_ports::AuditTrail;
    let url = isolated_pg_url("leadline_turns").await;
    let (a, b) = (store_at(&url).await, store_at(&url).await);
    let s = services(a.clone());
    let (tenant, _) = new_tenant(&s).await;
    for i in 0..9 {
        s.leads
            .create(tenant, &lead_req(&format!("Turn{i}")))
            .await
            .unwrap();
    }
    let state = sealed_intact(&s, tenant, async || {
        for store in [&a, &b] {
            store.seal(2).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    })
    .await;
    // The tenant's three records, then one per lead.
    assert_eq!(state.sealed, 3 + 9, "{state:?}");
}

/// The heads `audit_seal_from` is given are checked, not trusted. Called by
/// the service role itself with heads that do not hold (an earlier record,
/// a forged hash, a position that does not exist), the call seals the one
/// new record, from the true head: nothing is skipped for a head that does
/// not exist, nothing sealed again after one that is not the last, and the
/// chain stays whole. A database of its own: only these calls seal its
/// records.
#[tokio::test]
async fn heads_given_to_the_sealer_that_do_not_hold_are_not_used() {
    let url = isolated_pg_url("leadline_heads").await;
    let s = services(store_at(&url).await);
    let (tenant, _) = new_tenant(&s).await;
    for name in ["First", "Second"] {
        s.leads.create(tenant, &lead_req(name)).await.unwrap();
    }
    sealed_intact(&s, tenant, async || {
        s.audit
            .seal_all()
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    })
    .await;
    let first = chain(&s, tenant).await.remove(0);
    let hex = |hash: &[u8]| -> String { hash.iter().map(|b| format!("{b:02x}")).collect() };
    let real_hash = hex(first.hash.as_deref().unwrap());
    let (tx, seq) = (first.position.tx.to_string(), first.position.seq);
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    for (i, (what, head)) in [
        ("an earlier record", json!([tx, seq, real_hash])),
        ("a forged hash", json!([tx, seq, "ab".repeat(32)])),
        ("no such record", json!(["1", 1, real_hash])),
        ("nothing sealed", json!(["0", 0, ""])),
    ]
    .into_iter()
    .enumerate()
    {
        s.leads
            .create(tenant, &lead_req(&format!("After{i}")))
            .await
            .unwrap();
        let heads = json!({ tenant.to_string(): head });
        // Until the new record is below every running transaction.
        let (head_hash, sealed): (String, i64) = eventually(
            &format!("the call given {what} seals the new record"),
            Duration::from_secs(30),
            async || {
                let row: Option<(String, i64)> = sqlx::query_as(
                    "SELECT head_hash, sealed FROM audit_seal_from(1000, $1::jsonb) \
                     WHERE tenant_id = $2",
                )
                .bind(&heads)
                .bind(tenant.as_uuid())
                .fetch_optional(&mut conn)
                .await
                .map_err(|e| format!("{what}: {e}"))?;
                row.ok_or_else(|| format!("{what}: nothing sealed"))
            },
        )
        .await;
        assert_eq!(sealed, 1, "{what}: only the new record is sealed");
        let state = sealed_intact(&s, tenant, async || Ok(())).await;
        assert_eq!(state.sealed, 3 + 3 + i as u64, "{what}: {state:?}");
        assert_eq!(head_hash, hex(&state.head), "{what}: the head it returns");
    }
}

/// With no head given (a process's first seal), `audit_chain_head` finds
/// the last sealed record by bisection (migration 31), not by a scan of the
/// backlog. A backlog built to test the bisection: two tenants' records
/// interleaved, transactions of one to seven records, and gaps of unused
/// transaction ids between them. It is sealed one record at a time, so the
/// boundary lands at every place, within transactions and between them,
/// and at each the head found is the one the definition gives (the last
/// sealed record in `(tx, seq)` order). At the end each tenant's records
/// are one chain, linked from the heads found. A database of its own: only
/// these calls seal its records.
#[tokio::test]
async fn the_head_is_found_by_bisection_wherever_the_sealed_records_end() {
    let (owner_url, url) = crate::support::isolated_pg("leadline_bisect").await;
    let s = services(store_at(&url).await);
    let tenants = [new_tenant(&s).await.0, new_tenant(&s).await.0];
    let mut owner = sqlx::PgConnection::connect(&owner_url).await.unwrap();
    for (i, (records, gap)) in [
        (1, 0),
        (4, 3),
        (2, 0),
        (7, 40),
        (1, 1),
        (3, 0),
        (5, 17),
        (2, 2),
    ]
    .into_iter()
    .enumerate()
    {
        // Each call is a transaction of its own, and takes an id.
        for _ in 0..gap {
            owner.execute("SELECT pg_current_xact_id()").await.unwrap();
        }
        sqlx::query(
            "INSERT INTO audit_log (tenant_id, at, entity, entity_id, action, changes, content_hash) \
             SELECT $1, now(), 'lead', gen_random_uuid(), 'created', '{}'::json, \
                    sha256(g::text::bytea) FROM generate_series(1, $2) g",
        )
        .bind(tenants[i % 2].as_uuid())
        .bind(records)
        .execute(&mut owner)
        .await
        .unwrap();
    }
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log")
        .fetch_one(&mut owner)
        .await
        .unwrap();
    type Head = (String, i64, Option<Vec<u8>>);
    let mut steps = 0;
    eventually(
        "every record is sealed, one at a time",
        Duration::from_secs(60),
        async || {
            for tenant in tenants {
                let found: Head =
                    sqlx::query_as("SELECT tx::text, seq, hash FROM audit_chain_head($1, NULL)")
                        .bind(tenant.as_uuid())
                        .fetch_one(&mut owner)
                        .await
                        .map_err(|e| e.to_string())?;
                let last: Head = sqlx::query_as(
                    "SELECT tx::text, seq, hash FROM audit_log \
                     WHERE tenant_id = $1 AND hash IS NOT NULL \
                     ORDER BY tx DESC, seq DESC LIMIT 1",
                )
                .bind(tenant.as_uuid())
                .fetch_optional(&mut owner)
                .await
                .map_err(|e| e.to_string())?
                .unwrap_or(("0".into(), 0, None));
                assert_eq!(found, last, "after {steps} records sealed");
            }
            let sealed: i64 = sqlx::query_scalar("SELECT count(hash) FROM audit_log")
                .fetch_one(&mut owner)
                .await
                .map_err(|e| e.to_string())?;
            steps = sealed;
            if sealed == total {
                return Ok(());
            }
            // Nothing when a transaction of the server (another test's) is
            // older than the next record: then again.
            sqlx::query("SELECT * FROM audit_seal_from(1, '{}')")
                .execute(&mut owner)
                .await
                .map_err(|e| e.to_string())?;
            Err(format!("{sealed} of {total} sealed"))
        },
    )
    .await;
    for tenant in tenants {
        let unlinked: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT prev_hash, \
                    lag(hash, 1, decode(repeat('00', 32), 'hex')) OVER (ORDER BY tx, seq) AS before \
               FROM audit_log WHERE tenant_id = $1) r \
              WHERE prev_hash IS DISTINCT FROM before",
        )
        .bind(tenant.as_uuid())
        .fetch_one(&mut owner)
        .await
        .unwrap();
        assert_eq!(
            unlinked, 0,
            "{tenant}: every record links to the one before"
        );
    }
}

/// Two stores on one SQLite file (two processes, say) writing one tenant in
/// turn: each remembers the chain head it last wrote, the other's writes
/// make that stale at every turn, and the chain stays whole. A store that
/// trusted its remembered head would chain a record to the wrong one.
#[tokio::test]
async fn two_stores_on_one_sqlite_file_keep_one_chain() {
    let (first, path) = sqlite_file_store().await;
    let second = crate::support::store_at(&crate::support::sqlite_url(&path)).await;
    let (a, b) = (services(first), services(second));
    let (tenant, _) = new_tenant(&a).await;
    for turn in 0..6 {
        let s = if turn % 2 == 0 { &a } else { &b };
        // The first write of a turn finds its remembered head stale, the
        // second finds it current.
        for write in 0..2 {
            s.leads
                .create(tenant, &lead_req(&format!("Turn{turn}W{write}")))
                .await
                .unwrap();
        }
    }
    match a.audit.verify(tenant, None).await.unwrap() {
        // The tenant's three records, then one per lead.
        Verdict::Intact(state) => assert_eq!(state.sealed, 3 + 12, "{state:?}"),
        other => panic!("{other:?}"),
    }
}

/// A decision in the console is the signed-in person's, as the agent they
/// act as.
async fn console_decisions_are_the_signed_in_users(setup: Setup) {
    let (s, app) = (&setup.services, &setup.app);
    let (tenant, _) = new_tenant(s).await;
    let invited = s
        .people
        .invite(
            tenant,
            leadline_domain::Email::parse("approver@acme.example").unwrap(),
            leadline_domain::DisplayName::new("Approver").unwrap(),
            leadline_domain::Role::Approver,
        )
        .await
        .unwrap();
    let signed = s
        .people
        .redeem_link(invited.link.expose(), "correct horse battery staple")
        .await
        .unwrap();
    let (session, user) = s
        .people
        .session(signed.token.expose())
        .await
        .unwrap()
        .expect("signed in");
    let drafter = s
        .agents
        .create(tenant, &crate::support::agent_req("drafter@acme.example"))
        .await
        .unwrap();
    let lead = s.leads.create(tenant, &lead_req("Lin")).await.unwrap();
    let draft = leadline_domain::DraftApprovalRequest {
        channel: leadline_domain::Channel::Email,
        subject: None,
        body: leadline_domain::MessageBody::new("hello").unwrap(),
        requested_by: drafter.id,
    };
    let approval = s.approvals.draft(tenant, lead.id, &draft).await.unwrap();

    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("/approvals/{}/approve", approval.id))
        .header(
            header::COOKIE,
            format!("ll_session={}", signed.token.expose()),
        )
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("x-request-id", "console-approve")
        .body(Body::from(format!("csrf={}", session.csrf_token)))
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    assert!(
        res.status().is_success() || res.status().is_redirection(),
        "{}",
        res.status()
    );
    let page = s
        .audit
        .list(
            tenant,
            &leadline_domain::AuditQuery::about(
                "approval",
                Some(approval.id.as_uuid()),
                leadline_domain::PageLimit::DEFAULT,
            ),
        )
        .await
        .unwrap();
    let approved = &page.items[0].record;
    assert_eq!(approved.action, "approval.approved");
    assert_eq!(approved.actor.user_id, Some(user.id));
    assert_eq!(approved.actor.agent_id, user.agent_id);
    assert!(user.agent_id.is_some(), "an approver acts as an agent");
    assert_eq!(approved.actor.key_id, None);
    assert_eq!(approved.request_id.as_deref(), Some("console-approve"));
    let changes: Value = serde_json::from_str(&approved.changes).unwrap();
    assert_eq!(
        changes["status"],
        json!({"old": "pending", "new": "approved"})
    );
    assert_eq!(
        changes["decided_by"],
        json!({"old": null, "new": user.agent_id.unwrap().to_string()})
    );
}

/// `database.audit = false` (the bench's baseline) writes no records, on
/// the one-statement append too, and still writes everything else.
async fn audit_off_writes_no_records(store: leadline_store::Store) {
    let s = services(store);
    let (tenant, _) = new_tenant(&s).await;
    let before = s
        .audit
        .chain(tenant, ChangePosition::default(), 1_000)
        .await
        .unwrap()
        .len();
    let lead = s.leads.create(tenant, &lead_req("Quiet")).await.unwrap();
    let note = leadline_domain::AppendEventRequest {
        kind: leadline_domain::EventKind::Note,
        direction: leadline_domain::Direction::Internal,
        content: None,
        occurred_at: None,
        actor: None,
        metadata: leadline_domain::Metadata::default(),
    };
    let event = s.timeline.append(tenant, lead.id, &note).await.unwrap();
    assert_eq!(event.lead_id, lead.id, "the write itself happened");
    let after = s
        .audit
        .chain(tenant, ChangePosition::default(), 1_000)
        .await
        .unwrap()
        .len();
    assert_eq!(after, before, "nothing recorded");
}

mod audit_off {
    fn off(settings: &mut leadline_store::StoreSettings) {
        settings.audit = false;
    }

    #[tokio::test]
    async fn on_sqlite() {
        super::audit_off_writes_no_records(crate::support::sqlite_store_with(off).await).await;
    }

    #[tokio::test]
    async fn on_postgres() {
        let mut settings = crate::support::settings(&crate::support::pg().await.service_url);
        off(&mut settings);
        let store = leadline_store::Store::connect(&settings).await.unwrap();
        super::audit_off_writes_no_records(store).await;
    }
}

/// A chain alone cannot show that its newest records were deleted: the
/// anchor an earlier verification left (outside the database) can.
async fn records_deleted_from_the_end_are_found_by_the_anchor(setup: Setup) {
    let s = &setup.services;
    let (tenant, _) = new_tenant(s).await;
    for name in ["A", "B", "C"] {
        s.leads.create(tenant, &lead_req(name)).await.unwrap();
    }
    let slug = s.tenants.get(tenant).await.unwrap().slug.to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("anchors.json");

    // The first verification leaves its anchor; a later write moves it on.
    let mut anchors = leadline::audit::read_anchors(&file).unwrap();
    let checked = leadline::audit::verify(s, Some(&slug), &mut anchors)
        .await
        .unwrap();
    assert!(!checked[0].is_broken(), "{}", checked[0].describe());
    leadline::audit::write_anchors(&file, &anchors).unwrap();
    let first = anchors[&tenant].clone();
    s.leads.create(tenant, &lead_req("D")).await.unwrap();
    assert_eq!(
        leadline::audit::read_anchors(&file).unwrap()[&tenant],
        first,
        "the file holds what was written"
    );
    // On PostgreSQL a record is sealed once every transaction older than
    // it has ended, and other tests' transactions share the server's
    // horizon: verify until the new record is sealed.
    let mut anchors = crate::support::eventually(
        "the new record sealed",
        std::time::Duration::from_secs(30),
        async || {
            let mut anchors = leadline::audit::read_anchors(&file).unwrap();
            let checked = leadline::audit::verify(s, Some(&slug), &mut anchors)
                .await
                .unwrap();
            assert!(!checked[0].is_broken(), "{}", checked[0].describe());
            let second = &anchors[&tenant];
            if second.sealed == first.sealed + 1 {
                Ok(anchors)
            } else {
                Err(format!("{} sealed", second.sealed))
            }
        },
    )
    .await;
    let second = anchors[&tenant].clone();
    assert!(second.position > first.position && second.sealed == first.sealed + 1);

    // The newest record deleted: every record left still chains, but the
    // anchor's record is gone.
    setup
        .owner
        .execute(&format!(
            "DELETE FROM audit_log WHERE seq = {}",
            second.position.seq
        ))
        .await;
    let checked = leadline::audit::verify(s, Some(&slug), &mut anchors)
        .await
        .unwrap();
    let line = checked[0].describe();
    assert!(
        matches!(checked[0].verdict, Verdict::Truncated { .. }),
        "{line}"
    );
    assert!(line.contains(&second.position.to_string()), "{line}");
    assert_eq!(anchors[&tenant], second, "a broken trail keeps its anchor");
    // Without the anchor the same trail looks whole: that is what it is for.
    assert!(matches!(
        s.audit.verify(tenant, None).await.unwrap(),
        Verdict::Intact(_)
    ));
}

//! Handlers driven through the router with `oneshot`, on in-memory SQLite.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::{
    Router,
    body::Body,
    http::{Method, Request, StatusCode, header},
};
use http_body_util::BodyExt;
use leadline_app::{RecallSettings, Services};
use leadline_domain::{CreateTenantRequest, DisplayName, Slug};
use leadline_store::StoreSettings;
use leadline_store::{MigrateOp, Store};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::{AppState, router};

mod hardening;
mod openapi;
mod rate_limits;

struct Harness {
    app: Router,
    key: String,
    composition: Wired,
}

/// The services over a store, wired as the binary's composition root wires
/// them, without a cache.
struct Wired {
    services: Services,
    store: Store,
}

impl Wired {
    fn over(store: Store) -> Self {
        let mut services = Services::over(
            std::sync::Arc::new(store.clone()),
            std::sync::Arc::new(leadline_cache::NullCache::new()),
            RecallSettings::default(),
        );
        services.webhooks = services.webhooks.clone().with_sealer(std::sync::Arc::new(
            leadline_outbound::ChaChaBox::new(&[5; 32]),
        ));
        Self { services, store }
    }

    fn store(&self) -> &Store {
        &self.store
    }

    async fn shutdown(&self) {
        self.store.close().await;
    }
}

async fn harness() -> Harness {
    let store = Store::connect(&StoreSettings::for_url("sqlite::memory:"))
        .await
        .unwrap();
    store.migrate(MigrateOp::Up).await.unwrap();
    let composition = Wired::over(store);
    let created = composition
        .services
        .tenants
        .create(&CreateTenantRequest {
            slug: Slug::parse("acme").unwrap(),
            name: DisplayName::new("Acme").unwrap(),
        })
        .await
        .unwrap();
    // These tests draft and decide with one agent; the rule that stops
    // that is tested in tests/integration/separation.rs.
    composition
        .services
        .tenants
        .set_separation_of_duties(created.tenant.id, false)
        .await
        .unwrap();
    Harness {
        app: router(AppState::new(composition.services.clone())),
        key: created.api_key.expose().to_owned(),
        composition,
    }
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

impl Harness {
    async fn send(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.key));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
            .unwrap();
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn json(&self, method: Method, uri: &str, body: Value) -> Reply {
        self.send(
            method,
            uri,
            &[("content-type", "application/json")],
            Some(&body.to_string()),
        )
        .await
    }
}

fn assert_problem(reply: &Reply, status: StatusCode, field: Option<&str>) {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert_eq!(
        reply.headers[header::CONTENT_TYPE],
        "application/problem+json"
    );
    assert_eq!(reply.body["status"], status.as_u16());
    assert!(
        reply.body["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:leadline:problem:")
    );
    if let Some(field) = field {
        assert_eq!(reply.body["errors"][0]["field"], field, "{}", reply.body);
    }
}

#[tokio::test]
async fn health_and_readiness() {
    let h = harness().await;
    let r = h.send(Method::GET, "/healthz", &[], None).await;
    assert_eq!(
        (r.status, &r.body["status"]),
        (StatusCode::OK, &json!("ok"))
    );
    let r = h.send(Method::GET, "/readyz", &[], None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["database"]["backend"], "sqlite");

    // With the pool closed the database is unreachable: 503 with Retry-After.
    h.composition.shutdown().await;
    let r = h.send(Method::GET, "/readyz", &[], None).await;
    assert_problem(&r, StatusCode::SERVICE_UNAVAILABLE, None);
    assert_eq!(r.headers[header::RETRY_AFTER], "1");
    let r = h.send(Method::GET, "/v1/leads", &[], None).await;
    assert_problem(&r, StatusCode::SERVICE_UNAVAILABLE, None);
}

#[tokio::test]
async fn create_read_update_with_etags() {
    let h = harness().await;
    let r = h.json(Method::POST, "/v1/leads", json!({"first_name": "Grace", "last_name": "Hopper", "tags": ["VIP"], "metadata": {"score": 7}})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.headers[header::ETAG], "\"1\"");
    assert_eq!(r.body["tags"], json!(["vip"]), "tags are normalised");
    assert_eq!(r.body["status"], "new");
    let uri = r.headers[header::LOCATION].to_str().unwrap().to_owned();

    let r = h.send(Method::GET, &uri, &[], None).await;
    assert_eq!(
        (r.status, &r.headers[header::ETAG]),
        (StatusCode::OK, &"\"1\"".parse().unwrap())
    );

    let patch = json!({"status": "contacted", "company": "Navy"}).to_string();
    let r = h
        .send(
            Method::PATCH,
            &uri,
            &[("content-type", "application/json")],
            Some(&patch),
        )
        .await;
    assert_problem(&r, StatusCode::PRECONDITION_REQUIRED, Some("version"));

    let r = h
        .send(
            Method::PATCH,
            &uri,
            &[
                ("content-type", "application/json"),
                ("if-match", "W/\"1\""),
            ],
            Some(&patch),
        )
        .await;
    assert_eq!(
        (
            r.status,
            r.body["version"].as_i64(),
            r.body["company"].as_str()
        ),
        (StatusCode::OK, Some(2), Some("Navy"))
    );
    assert_eq!(r.headers[header::ETAG], "\"2\"");

    // A stale If-Match is 412; a stale body version is 409.
    let r = h
        .send(
            Method::PATCH,
            &uri,
            &[("content-type", "application/json"), ("if-match", "\"1\"")],
            Some(&patch),
        )
        .await;
    assert_problem(&r, StatusCode::PRECONDITION_FAILED, None);
    let r = h
        .json(Method::PATCH, &uri, json!({"version": 1, "source": "x"}))
        .await;
    assert_problem(&r, StatusCode::CONFLICT, Some("version"));
    let r = h
        .send(
            Method::PATCH,
            &uri,
            &[("content-type", "application/json"), ("if-match", "\"2\"")],
            Some(r#"{"version": 3}"#),
        )
        .await;
    assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, Some("version"));
    let r = h
        .send(
            Method::PATCH,
            &uri,
            &[("content-type", "application/json"), ("if-match", "banana")],
            Some("{}"),
        )
        .await;
    assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, Some("If-Match"));

    // Explicit null clears; the transition rule is enforced.
    let r = h
        .json(Method::PATCH, &uri, json!({"version": 2, "company": null}))
        .await;
    assert_eq!(
        (r.status, &r.body["company"]),
        (StatusCode::OK, &Value::Null)
    );
    let r = h
        .json(Method::PATCH, &uri, json!({"version": 3, "status": "won"}))
        .await;
    assert_problem(&r, StatusCode::CONFLICT, Some("status"));
}

#[tokio::test]
async fn bad_input_is_a_4xx_naming_the_field_and_writes_nothing() {
    let h = harness().await;
    let cases = [
        (json!({"last_name": "x"}), "first_name"),
        (
            json!({"first_name": "a", "last_name": "b", "email": "nope"}),
            "email",
        ),
        (
            json!({"first_name": "a", "last_name": "b", "phone": "call me"}),
            "phone",
        ),
        (
            json!({"first_name": "a", "last_name": "b", "status": "open"}),
            "status",
        ),
        (
            json!({"first_name": "a", "last_name": "b", "tags": ["ok", "not ok"]}),
            "tags[1]",
        ),
        (
            json!({"first_name": "a", "last_name": "b", "metadata": [1]}),
            "metadata",
        ),
        (
            json!({"first_name": "a", "last_name": "b", "assigned_agent_id": "nope"}),
            "assigned_agent_id",
        ),
        (
            json!({"first_name": "a", "last_name": "b", "colour": "red"}),
            "colour",
        ),
        (
            json!({"first_name": "x".repeat(101), "last_name": "b"}),
            "first_name",
        ),
    ];
    for (body, field) in cases {
        let r = h.json(Method::POST, "/v1/leads", body.clone()).await;
        assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, Some(field));
    }
    let r = h
        .send(
            Method::POST,
            "/v1/leads",
            &[("content-type", "application/json")],
            Some("{\"first_name\":"),
        )
        .await;
    assert_problem(&r, StatusCode::BAD_REQUEST, None);
    let r = h
        .send(
            Method::POST,
            "/v1/leads",
            &[("content-type", "text/plain")],
            Some("{}"),
        )
        .await;
    assert_problem(&r, StatusCode::UNSUPPORTED_MEDIA_TYPE, None);
    let r = h.send(Method::GET, "/v1/leads?limit=500", &[], None).await;
    assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, Some("limit"));
    let r = h.send(Method::GET, "/v1/leads?cursor=zzz", &[], None).await;
    assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, Some("cursor"));
    let r = h.send(Method::GET, "/v1/leads?sort=name", &[], None).await;
    assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, Some("sort"));
    let r = h.send(Method::GET, "/v1/leads/not-a-uuid", &[], None).await;
    assert_problem(&r, StatusCode::NOT_FOUND, None);
    let r = h.send(Method::DELETE, "/v1/leads", &[], None).await;
    assert_problem(&r, StatusCode::METHOD_NOT_ALLOWED, None);
    let r = h.send(Method::GET, "/v2/nothing", &[], None).await;
    assert_problem(&r, StatusCode::NOT_FOUND, None);

    let r = h.send(Method::GET, "/v1/leads", &[], None).await;
    assert_eq!(r.body["items"], json!([]), "nothing was half-written");

    let ok = json!({"name": "Ada", "email": "ada@example.com"});
    assert_eq!(
        h.json(Method::POST, "/v1/agents", ok.clone()).await.status,
        StatusCode::CREATED
    );
    let r = h
        .json(
            Method::POST,
            "/v1/agents",
            json!({"name": "Ada 2", "email": "ADA@example.com"}),
        )
        .await;
    assert_problem(&r, StatusCode::CONFLICT, Some("email"));
    let r = h
        .json(
            Method::POST,
            "/v1/agents",
            json!({"name": "Root", "email": "r@example.com", "role": "root"}),
        )
        .await;
    assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, Some("role"));
}

#[tokio::test]
async fn lists_page_with_opaque_cursors_and_filters() {
    let h = harness().await;
    let agent = h
        .json(
            Method::POST,
            "/v1/agents",
            json!({"name": "Ada", "email": "ada@example.com"}),
        )
        .await
        .body;
    let mut ids = Vec::new();
    for i in 0..5 {
        let body = json!({"first_name": format!("L{i}"), "last_name": "X", "tags": if i % 2 == 0 { vec!["even"] } else { vec![] },
                          "assigned_agent_id": if i < 2 { agent["id"].clone() } else { Value::Null }});
        ids.push(h.json(Method::POST, "/v1/leads", body).await.body["id"].clone());
    }
    ids.reverse();
    let mut uri = "/v1/leads?limit=2".to_owned();
    let mut seen = Vec::new();
    loop {
        let r = h.send(Method::GET, &uri, &[], None).await;
        assert_eq!(r.status, StatusCode::OK);
        seen.extend(
            r.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["id"].clone()),
        );
        match r.body["next_cursor"].as_str() {
            Some(c) => uri = format!("/v1/leads?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, ids, "newest first, every lead once");
    let r = h.send(Method::GET, "/v1/leads?tag=even", &[], None).await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 3);
    let r = h
        .send(
            Method::GET,
            &format!(
                "/v1/leads?assigned_agent_id={}&status=new",
                agent["id"].as_str().unwrap()
            ),
            &[],
            None,
        )
        .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 2);

    let r = h.send(Method::GET, "/v1/agents?limit=1", &[], None).await;
    assert_eq!(r.body["items"][0]["id"], agent["id"]);
    assert!(
        r.body.get("next_cursor").is_none(),
        "a single page has no cursor"
    );
}

#[tokio::test]
async fn a_search_cursor_continues_only_its_own_search() {
    let h = harness().await;
    for first in ["Grace", "Gray", "Greta"] {
        let body = json!({"first_name": first, "last_name": "Hopper"});
        assert_eq!(
            h.json(Method::POST, "/v1/leads", body).await.status,
            StatusCode::CREATED
        );
    }
    let r = h
        .send(Method::GET, "/v1/leads/search?q=gr&limit=1", &[], None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let cursor = r.body["next_cursor"]
        .as_str()
        .expect("more hits follow")
        .to_owned();
    let next = h
        .send(
            Method::GET,
            &format!("/v1/leads/search?q=gr&limit=1&cursor={cursor}"),
            &[],
            None,
        )
        .await;
    assert_eq!(next.status, StatusCode::OK, "{}", next.body);
    assert_ne!(
        next.body["items"][0]["lead"]["id"],
        r.body["items"][0]["lead"]["id"]
    );
    for other in ["q=hopper", "q=gr&status=won", "q=gr&tag=vip"] {
        let reply = h
            .send(
                Method::GET,
                &format!("/v1/leads/search?{other}&cursor={cursor}"),
                &[],
                None,
            )
            .await;
        assert_problem(&reply, StatusCode::UNPROCESSABLE_ENTITY, Some("cursor"));
    }
}

#[tokio::test]
async fn draft_approve_send_and_read_the_context() {
    let h = harness().await;
    let agent = h
        .json(
            Method::POST,
            "/v1/agents",
            json!({"name": "Ada", "email": "ada@example.com"}),
        )
        .await
        .body["id"]
        .clone();
    let lead = h
        .json(
            Method::POST,
            "/v1/leads",
            json!({"first_name": "Grace", "last_name": "Hopper", "assigned_agent_id": agent}),
        )
        .await
        .body["id"]
        .clone();
    let lead = lead.as_str().unwrap();

    let r = h.json(Method::POST, &format!("/v1/leads/{lead}/approvals"), json!({"channel": "email", "subject": "Hi", "body": "Hello Grace", "requested_by": agent})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let approval = r.headers[header::LOCATION].to_str().unwrap().to_owned();
    assert_eq!(r.body["status"], "pending");

    let queue = h.send(Method::GET, "/v1/approvals", &[], None).await;
    assert_eq!(queue.body["items"][0]["id"], r.body["id"]);

    let r = h
        .json(
            Method::POST,
            &format!("{approval}/send"),
            json!({"sent_by": agent}),
        )
        .await;
    assert_problem(&r, StatusCode::CONFLICT, Some("status"));
    assert_eq!(
        r.body["current_status"], "pending",
        "the loser learns the current status"
    );

    let r = h
        .json(
            Method::POST,
            &format!("{approval}/reject"),
            json!({"decided_by": agent}),
        )
        .await;
    assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, Some("reason"));
    let r = h
        .json(
            Method::POST,
            &format!("{approval}/approve"),
            json!({"decided_by": agent}),
        )
        .await;
    assert_eq!(
        (r.status, &r.body["status"]),
        (StatusCode::OK, &json!("approved"))
    );
    let r = h
        .json(
            Method::POST,
            &format!("{approval}/send"),
            json!({"sent_by": agent}),
        )
        .await;
    assert_eq!(
        (r.status, &r.body["status"]),
        (StatusCode::OK, &json!("sent"))
    );
    let r = h
        .json(
            Method::POST,
            &format!("{approval}/send"),
            json!({"sent_by": agent}),
        )
        .await;
    assert_eq!(r.body["current_status"], "sent");

    let r = h.json(Method::POST, &format!("/v1/leads/{lead}/events"), json!({"kind": "call", "direction": "inbound", "content": "Grace called back", "actor": agent})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = h
        .json(
            Method::POST,
            &format!("/v1/leads/{lead}/events"),
            json!({"kind": "fax", "direction": "inbound"}),
        )
        .await;
    assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, Some("kind"));
    let r = h
        .json(
            Method::POST,
            &format!("/v1/leads/{lead}/events"),
            json!({"kind": "note", "direction": "internal", "occurred_at": "2999-01-01T00:00:00Z"}),
        )
        .await;
    assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, Some("occurred_at"));

    let r = h
        .send(
            Method::GET,
            &format!("/v1/leads/{lead}/events?limit=2"),
            &[],
            None,
        )
        .await;
    let kinds: Vec<_> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].clone())
        .collect();
    assert_eq!(kinds, [json!("call"), json!("email_sent")]);
    let next = r.body["next_cursor"].as_str().unwrap();
    let r = h
        .send(
            Method::GET,
            &format!("/v1/leads/{lead}/events?limit=2&cursor={next}"),
            &[],
            None,
        )
        .await;
    assert_eq!(r.body["items"][0]["kind"], "approval_decided");

    let ctx = h
        .send(Method::GET, &format!("/v1/leads/{lead}/context"), &[], None)
        .await;
    assert_eq!(ctx.status, StatusCode::OK);
    assert_eq!(ctx.body["lead"]["id"], lead);
    assert_eq!(ctx.body["assigned_agent"]["id"], agent);
    assert_eq!(ctx.body["open_approvals"], json!([]));
    assert_eq!(ctx.body["recent_approvals"][0]["status"], "sent");
    assert_eq!(ctx.body["events"].as_array().unwrap().len(), 3);

    let r = h
        .send(
            Method::GET,
            &format!("/v1/leads/{}/context", uuid::Uuid::now_v7()),
            &[],
            None,
        )
        .await;
    assert_problem(&r, StatusCode::NOT_FOUND, None);
}

#[tokio::test]
async fn idempotency_key_replays_refuses_a_different_body_and_runs_once() {
    let h = harness().await;
    let body = json!({"name": "Ada", "email": "ada@example.com"}).to_string();
    let key = [
        ("content-type", "application/json"),
        ("idempotency-key", "create-ada-1"),
    ];
    let first = h.send(Method::POST, "/v1/agents", &key, Some(&body)).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(first.headers.get("idempotent-replayed").is_none());

    // Same key, same request (re-serialised differently): the stored answer.
    let again = h
        .send(
            Method::POST,
            "/v1/agents",
            &key,
            Some("{ \"email\": \"ada@example.com\", \"name\": \"Ada\" }"),
        )
        .await;
    assert_eq!(
        (again.status, &again.body),
        (StatusCode::CREATED, &first.body)
    );
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(
        again.headers[header::LOCATION],
        first.headers[header::LOCATION]
    );
    let agents = h.send(Method::GET, "/v1/agents", &[], None).await;
    assert_eq!(
        agents.body["items"].as_array().unwrap().len(),
        1,
        "the agent was created once"
    );

    let other = h
        .send(
            Method::POST,
            "/v1/agents",
            &key,
            Some(&json!({"name": "Eve", "email": "eve@example.com"}).to_string()),
        )
        .await;
    assert_problem(
        &other,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("Idempotency-Key"),
    );

    // A 4xx outcome is stored too: the retry gets the same refusal.
    let dup_key = [
        ("content-type", "application/json"),
        ("idempotency-key", "dup-ada"),
    ];
    let dup = h
        .send(Method::POST, "/v1/agents", &dup_key, Some(&body))
        .await;
    assert_problem(&dup, StatusCode::CONFLICT, Some("email"));
    let dup_again = h
        .send(Method::POST, "/v1/agents", &dup_key, Some(&body))
        .await;
    assert_eq!((dup_again.status, &dup_again.body), (dup.status, &dup.body));
    assert_eq!(
        dup_again.headers[header::CONTENT_TYPE],
        "application/problem+json"
    );

    let bad = h
        .send(
            Method::POST,
            "/v1/agents",
            &[
                ("content-type", "application/json"),
                ("idempotency-key", ""),
            ],
            Some(&body),
        )
        .await;
    assert_problem(
        &bad,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("Idempotency-Key"),
    );
    // Without a valid API key the layer answers 401 before touching keys.
    let anonymous = h
        .app
        .clone()
        .oneshot(
            Request::builder()
                .method(Method::POST)
                .uri("/v1/agents")
                .header("idempotency-key", "k")
                .header("content-type", "application/json")
                .body(Body::from(body.clone()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn readiness_waits_for_warmup_and_preload_reports_what_it_did() {
    let h = harness().await;
    let (state, warmup) = AppState::warming(h.composition.services.clone());
    let warming = Harness {
        app: router(state),
        key: h.key.clone(),
        composition: Wired::over(h.composition.store().clone()),
    };
    let r = warming.send(Method::GET, "/readyz", &[], None).await;
    assert_problem(&r, StatusCode::SERVICE_UNAVAILABLE, None);
    assert_eq!(r.body["type"], "urn:leadline:problem:warming-up");
    assert_eq!(
        warming
            .send(Method::GET, "/healthz", &[], None)
            .await
            .status,
        StatusCode::OK,
        "alive while warming"
    );
    warmup.done();
    assert_eq!(
        warming.send(Method::GET, "/readyz", &[], None).await.status,
        StatusCode::OK
    );

    let lead = h
        .json(
            Method::POST,
            "/v1/leads",
            json!({"first_name": "A", "last_name": "B"}),
        )
        .await
        .body["id"]
        .clone();
    let lead = lead.as_str().unwrap();
    for kind in ["note", "call"] {
        h.json(
            Method::POST,
            &format!("/v1/leads/{lead}/events"),
            json!({"kind": kind, "direction": "internal"}),
        )
        .await;
    }
    let quiet = h
        .json(
            Method::POST,
            "/v1/leads",
            json!({"first_name": "C", "last_name": "D"}),
        )
        .await;
    assert_eq!(quiet.status, StatusCode::CREATED);
    let r = h
        .send(Method::POST, "/v1/cache/preload?limit=10", &[], None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        (
            r.body["requested"].as_u64(),
            r.body["loaded"].as_u64(),
            r.body["failed"].as_u64()
        ),
        (Some(1), Some(1), Some(0)),
        "only leads with activity: {}",
        r.body
    );
    let r = h
        .send(Method::POST, "/v1/cache/preload?limit=0", &[], None)
        .await;
    assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, Some("limit"));
    let stats = h.send(Method::GET, "/v1/cache/stats", &[], None).await;
    assert_eq!(stats.status, StatusCode::OK);
    assert!(stats.body["loads"].as_u64().is_some(), "{}", stats.body);
}

#[tokio::test]
async fn request_ids_are_generated_or_echoed() {
    let h = harness().await;
    let generated = h.send(Method::GET, "/v1/leads", &[], None).await;
    let id = generated.headers["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "a fresh UUID: {id}");
    let echoed = h
        .send(
            Method::GET,
            "/v1/leads",
            &[("x-request-id", "trace-abc-123")],
            None,
        )
        .await;
    assert_eq!(echoed.headers["x-request-id"], "trace-abc-123");
    let problem = h
        .send(
            Method::GET,
            "/v1/leads/not-an-id",
            &[("x-request-id", "trace-404")],
            None,
        )
        .await;
    assert_eq!(
        problem.headers["x-request-id"], "trace-404",
        "errors carry it too"
    );
}

#[tokio::test]
async fn metrics_are_exposed_in_prometheus_text() {
    let h = harness().await;
    h.json(
        Method::POST,
        "/v1/leads",
        json!({"first_name": "M", "last_name": "X"}),
    )
    .await;
    let lead = h.send(Method::GET, "/v1/leads", &[], None).await.body["items"][0]["id"].clone();
    h.send(
        Method::GET,
        &format!("/v1/leads/{}", lead.as_str().unwrap()),
        &[],
        None,
    )
    .await;
    h.send(
        Method::GET,
        &format!("/v1/leads/{}/context", lead.as_str().unwrap()),
        &[],
        None,
    )
    .await;
    let req = Request::builder()
        .uri("/metrics")
        .body(Body::empty())
        .unwrap();
    let res = h.app.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text =
        String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    for needle in [
        r#"http_requests_total{method="POST",route="/v1/leads",status="201"}"#,
        // The route template, never the concrete id.
        r#"http_requests_total{method="GET",route="/v1/leads/{id}",status="200"}"#,
        r#"http_request_duration_seconds_bucket{method="GET",route="/v1/leads",status="200",le="0.005"}"#,
        r#"db_pool_connections{pool="primary",state="in_use"}"#,
        r#"db_pool_max_connections{pool="primary"} 1"#,
        // Store operations by name, and the wait for a connection.
        r#"db_query_duration_seconds_bucket{operation="leads.create",le="0.005"}"#,
        r#"db_query_duration_seconds_count{operation="leads.get"}"#,
        r#"db_pool_acquire_seconds_count{pool="primary"}"#,
        r#"cache_misses_total{tier="l1"}"#,
        "cache_loads_total",
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
    assert!(
        !text.contains(lead.as_str().unwrap()),
        "ids never become labels"
    );
    assert!(!text.contains(&h.key), "keys never appear");
    // Operators read the metrics in docs/operations.md: every family
    // exported here must have its row there.
    let docs = include_str!("../../../docs/operations.md");
    let undocumented: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| !docs.contains(&format!("`{name}`")))
        .collect();
    assert!(
        undocumented.is_empty(),
        "metrics missing from docs/operations.md: {undocumented:?}"
    );
}

/// A `MakeWriter` that appends every log line to a shared buffer.
#[tokio::test]
async fn request_logs_carry_id_tenant_route_status_and_never_the_key() {
    let h = harness().await;
    let tenant = h.send(Method::GET, "/v1/tenant", &[], None).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // tracing caches, per callsite, whether any subscriber is interested. A
    // callsite that another test was registering (with no subscriber, so
    // "never") while `set_default` rebuilt that cache keeps the stale answer
    // until the next rebuild, and the request logs nothing: rebuild and try
    // again. Only that race is retried; a request that logs the wrong thing
    // still fails below.
    let mut captured = None;
    for attempt in 0..5 {
        let logs = leadline_testsupport::CapturedLogs::default();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(logs.clone())
            .with_max_level(tracing::Level::INFO)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        tracing::callsite::rebuild_interest_cache();
        let request_id = format!("req-log-{attempt}");
        h.send(
            Method::GET,
            "/v1/leads?limit=5",
            &[("x-request-id", request_id.as_str())],
            None,
        )
        .await;
        drop(_guard);
        let text = logs.text();
        if let Some(line) = text.lines().find(|l| l.contains(&request_id)) {
            captured = Some((line.to_owned(), text));
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (line, text) = captured.expect("no log line for the request in five attempts");
    for needle in [
        &tenant,
        "/v1/leads",
        "\"status\":200",
        "latency",
        "\"method\":\"GET\"",
    ] {
        assert!(line.contains(needle), "missing {needle} in {line}");
    }
    assert!(
        !text.contains(&h.key) && !text.contains("Bearer"),
        "the API key must never be logged:\n{text}"
    );
}

//! Roles over HTTP, through the router on both backends (PostgreSQL as the
//! service role): every operation, called with a key of every role and
//! with a key holding explicit scopes, is let through exactly when the
//! key's access grants the operation's scope, and refused otherwise with a
//! 403 problem naming the scope and the least role that has it.
//!
//! The least role of each operation is written out below. The document and
//! the enforcement are one table (the handlers' annotations); this one is
//! the reviewer's copy, so that changing who may call an operation is a
//! visible change here and not only a word in an annotation.

use std::collections::BTreeSet;

use axum::{
    body::Body,
    http::{Method, Request, StatusCode, header},
};
use http_body_util::BodyExt;
use leadline_domain::{Access, DisplayName, NewApiKey, Role, Scope, ScopeSet};
use leadline_http::{AppState, router};
use leadline_store::Store;
use serde_json::Value;
use tower::ServiceExt;

use crate::support::{both_backends, new_tenant, services};

/// (method, route, the least role that may call it).
const EXPECTED: &[(&str, &str, &str)] = &[
    ("get", "/v1/tenant", "viewer"),
    ("get", "/v1/agents", "viewer"),
    ("post", "/v1/agents", "admin"),
    ("get", "/v1/agents/{id}", "viewer"),
    ("patch", "/v1/agents/{id}", "admin"),
    ("get", "/v1/leads", "viewer"),
    ("post", "/v1/leads", "agent"),
    ("get", "/v1/leads/{id}", "viewer"),
    ("patch", "/v1/leads/{id}", "agent"),
    ("delete", "/v1/leads/{id}", "agent"),
    ("post", "/v1/leads/{id}/restore", "agent"),
    ("get", "/v1/leads/search", "viewer"),
    ("get", "/v1/leads/export", "viewer"),
    ("get", "/v1/leads/duplicates", "viewer"),
    ("post", "/v1/leads/batch", "agent"),
    ("post", "/v1/leads/bulk", "agent"),
    ("post", "/v1/imports", "agent"),
    ("get", "/v1/imports/{id}", "viewer"),
    ("get", "/v1/imports/{id}/rejected.csv", "viewer"),
    ("get", "/v1/leads/{id}/events", "viewer"),
    ("post", "/v1/leads/{id}/events", "agent"),
    ("get", "/v1/leads/{id}/context", "viewer"),
    ("post", "/v1/leads/{id}/approvals", "agent"),
    ("get", "/v1/approvals", "viewer"),
    ("get", "/v1/approvals/{id}", "viewer"),
    ("post", "/v1/approvals/{id}/edit", "agent"),
    ("post", "/v1/approvals/{id}/approve", "approver"),
    ("post", "/v1/approvals/{id}/reject", "approver"),
    ("post", "/v1/approvals/{id}/send", "approver"),
    ("post", "/v1/approvals/{id}/cancel", "agent"),
    ("get", "/v1/deliveries", "viewer"),
    ("get", "/v1/deliveries/{id}", "viewer"),
    ("post", "/v1/deliveries/{id}/retry", "approver"),
    ("get", "/v1/settings/email", "admin"),
    ("put", "/v1/settings/email", "admin"),
    ("get", "/v1/settings/approvals", "admin"),
    ("put", "/v1/settings/approvals", "admin"),
    ("get", "/v1/settings/retention", "admin"),
    ("put", "/v1/settings/retention", "admin"),
    ("get", "/v1/changes", "viewer"),
    ("get", "/v1/audit", "admin"),
    ("get", "/v1/analytics/funnel", "viewer"),
    ("get", "/v1/analytics/agents", "viewer"),
    ("get", "/v1/analytics/activity", "viewer"),
    ("post", "/v1/privacy/export", "admin"),
    ("post", "/v1/privacy/erase", "admin"),
    ("get", "/v1/webhooks", "admin"),
    ("post", "/v1/webhooks", "admin"),
    ("get", "/v1/webhooks/{id}", "admin"),
    ("patch", "/v1/webhooks/{id}", "admin"),
    ("delete", "/v1/webhooks/{id}", "admin"),
    ("post", "/v1/webhooks/{id}/rotate", "admin"),
    ("get", "/v1/webhooks/{id}/dead-letters", "admin"),
    ("get", "/v1/keys", "admin"),
    ("post", "/v1/keys", "admin"),
    ("get", "/v1/keys/{id}", "admin"),
    ("delete", "/v1/keys/{id}", "admin"),
    ("post", "/v1/keys/{id}/rotate", "admin"),
    ("get", "/v1/users", "admin"),
    ("post", "/v1/users", "admin"),
    ("get", "/v1/users/{id}", "admin"),
    ("patch", "/v1/users/{id}", "admin"),
    ("post", "/v1/users/{id}/link", "admin"),
    ("get", "/v1/cache/stats", "admin"),
    ("post", "/v1/cache/preload", "admin"),
];

/// Every `/v1` operation of the document, with its scope and the role it
/// says it needs.
fn documented() -> Vec<(String, String, Scope, String)> {
    let doc = serde_json::to_value(leadline_http::openapi_document()).unwrap();
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !path.starts_with("/v1/") {
            continue;
        }
        for (method, op) in item.as_object().unwrap() {
            let scope = op["security"][0]["api_key"][0]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("{method} {path}: no scope"));
            let role = op["x-required-role"].as_str().unwrap().to_owned();
            ops.push((method.clone(), path.clone(), scope, role));
        }
    }
    ops
}

async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    key: &str,
) -> (StatusCode, Value, String) {
    let method: Method = method.to_uppercase().parse().unwrap();
    let with_body = [Method::POST, Method::PATCH, Method::PUT].contains(&method);
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {key}"));
    let req = if with_body {
        req.header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{}"))
    } else {
        req.body(Body::empty())
    }
    .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let content_type = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        content_type,
    )
}

async fn every_operation_with_every_role(store: Store) {
    let expected: BTreeSet<(String, String, String)> = EXPECTED
        .iter()
        .map(|(m, p, r)| ((*m).to_owned(), (*p).to_owned(), (*r).to_owned()))
        .collect();
    let ops = documented();
    let actual: BTreeSet<(String, String, String)> = ops
        .iter()
        .map(|(m, p, _, r)| (m.clone(), p.clone(), r.clone()))
        .collect();
    assert_eq!(
        actual.symmetric_difference(&expected).collect::<Vec<_>>(),
        Vec::<&(String, String, String)>::new(),
        "the document and this table disagree"
    );

    let s = services(store);
    let app = router(AppState::new(s.clone()));
    let (tenant, _) = new_tenant(&s).await;
    let mut callers = Vec::new();
    for role in Role::ALL {
        callers.push(Access::Role(role));
    }
    callers.push(Access::Scopes(
        ScopeSet::new([Scope::Read, Scope::EventsWrite]).unwrap(),
    ));
    callers.push(Access::Scopes(
        ScopeSet::new([Scope::ApprovalsDecide]).unwrap(),
    ));
    let mut keys = Vec::new();
    for access in callers {
        let key = NewApiKey {
            name: DisplayName::new(&access.to_string()).unwrap(),
            access,
            expires_at: None,
        };
        let issued = s.keys.issue(tenant, &key).await.unwrap();
        keys.push((access, issued.token.expose().to_owned()));
    }

    let mut checked = 0;
    for (method, path, scope, role) in &ops {
        let uri = path.replace("{id}", &uuid::Uuid::now_v7().to_string());
        for (access, key) in &keys {
            let (status, body, content_type) = call(&app, method, &uri, key).await;
            let at = format!("{method} {path} as {access}");
            if access.allows(*scope) {
                assert!(
                    status != StatusCode::FORBIDDEN && status != StatusCode::UNAUTHORIZED,
                    "{at}: refused ({status}): {body}"
                );
            } else {
                assert_eq!(status, StatusCode::FORBIDDEN, "{at}: {body}");
                assert_eq!(content_type, "application/problem+json", "{at}");
                assert_eq!(body["type"], "urn:leadline:problem:forbidden", "{at}");
                assert_eq!(body["required_scope"], scope.as_str(), "{at}: {body}");
                assert_eq!(body["required_role"], role.as_str(), "{at}: {body}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, EXPECTED.len() * keys.len());
}

/// Tenant A's admin key cannot see, revoke or rotate tenant B's keys: they
/// are 404 like keys that never existed.
async fn keys_are_per_tenant(store: Store) {
    let s = services(store);
    let app = router(AppState::new(s.clone()));
    let (_, admin_a) = new_tenant(&s).await;
    let (b, _) = new_tenant(&s).await;
    let b_key = s.keys.issue(b, &NewApiKey::first()).await.unwrap();
    let uri = format!("/v1/keys/{}", b_key.key.id);
    for (method, uri) in [
        ("get", uri.clone()),
        ("delete", uri.clone()),
        ("post", format!("{uri}/rotate")),
    ] {
        let (status, body, _) = call(&app, method, &uri, &admin_a).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {uri}: {body}");
    }
    let (_, page, _) = call(&app, "get", "/v1/keys?limit=100", &admin_a).await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "only A's own first key: {page}");
    assert!(
        s.keys.authenticate(b_key.token.expose()).await.is_ok(),
        "B's key still works"
    );
}

/// A key hands out no more than it has: the `admin` scope alone manages
/// keys, but can neither issue nor rotate a key that does more.
async fn a_key_hands_out_no_more_than_it_has(store: Store) {
    let s = services(store);
    let app = router(AppState::new(s.clone()));
    let (tenant, admin) = new_tenant(&s).await;
    let scoped = s
        .keys
        .issue(
            tenant,
            &NewApiKey {
                name: DisplayName::new("keys only").unwrap(),
                access: Access::Scopes(ScopeSet::new([Scope::Admin]).unwrap()),
                expires_at: None,
            },
        )
        .await
        .unwrap();
    let scoped = scoped.token.expose().to_owned();
    let post = |key: String, body: serde_json::Value| {
        let app = app.clone();
        async move {
            let req = Request::builder()
                .method(Method::POST)
                .uri("/v1/keys")
                .header(header::AUTHORIZATION, format!("Bearer {key}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .unwrap();
            let res = app.oneshot(req).await.unwrap();
            let status = res.status();
            let bytes = res.into_body().collect().await.unwrap().to_bytes();
            (
                status,
                serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null),
            )
        }
    };
    for wider in [
        serde_json::json!({"name": "w", "role": "admin"}),
        serde_json::json!({"name": "w", "role": "viewer"}),
        serde_json::json!({"name": "w", "scopes": ["admin", "read"]}),
    ] {
        let (status, problem) = post(scoped.clone(), wider.clone()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{wider}: {problem}");
        assert_eq!(
            problem["type"], "urn:leadline:problem:forbidden",
            "{problem}"
        );
    }
    let (status, _) = post(
        scoped.clone(),
        serde_json::json!({"name": "same", "scopes": ["admin"]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    // Nor may it rotate the tenant's admin key into its hands.
    let admin_id = s.keys.authenticate(&admin).await.unwrap().key_id;
    let (status, _, _) = call(
        &app,
        "post",
        &format!("/v1/keys/{admin_id}/rotate"),
        &scoped,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = post(
        admin.clone(),
        serde_json::json!({"name": "any", "role": "admin"}),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "an admin key covers everything"
    );

    // Nor more time: an admin key that expires tomorrow hands out nothing
    // that works longer, by issuing or by rotating.
    let tomorrow = chrono::Utc::now() + chrono::Duration::days(1);
    let brief = s
        .keys
        .issue(
            tenant,
            &NewApiKey {
                name: DisplayName::new("brief admin").unwrap(),
                access: Access::Role(leadline_domain::Role::Admin),
                expires_at: Some(tomorrow),
            },
        )
        .await
        .unwrap();
    let brief = brief.token.expose().to_owned();
    let at = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339();
    for (body, allowed) in [
        (
            serde_json::json!({"name": "forever", "role": "viewer"}),
            false,
        ),
        (
            serde_json::json!({"name": "later", "role": "viewer", "expires_at": at(tomorrow + chrono::Duration::hours(1))}),
            false,
        ),
        (
            serde_json::json!({"name": "sooner", "role": "viewer", "expires_at": at(tomorrow - chrono::Duration::hours(1))}),
            true,
        ),
    ] {
        let (status, problem) = post(brief.clone(), body.clone()).await;
        if allowed {
            assert_eq!(status, StatusCode::CREATED, "{body}: {problem}");
        } else {
            assert_eq!(status, StatusCode::FORBIDDEN, "{body}: {problem}");
            assert_eq!(problem["errors"][0]["field"], "expires_at", "{problem}");
        }
    }
    let (status, _, _) = call(&app, "post", &format!("/v1/keys/{admin_id}/rotate"), &brief).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "rotating a key without expiry into a brief key's hands"
    );

    // People do not expire: a brief key neither invites nor re-links nor
    // empowers them, and a key re-links only users within its own reach
    // (a login link signs in as the user).
    let boss = s
        .people
        .invite(
            tenant,
            leadline_domain::Email::parse("boss@acme.example").unwrap(),
            DisplayName::new("Boss").unwrap(),
            leadline_domain::Role::Admin,
        )
        .await
        .unwrap()
        .user;
    let send = |method: Method, uri: String, key: String, body: Value| {
        let app = app.clone();
        async move {
            let req = Request::builder()
                .method(method)
                .uri(uri)
                .header(header::AUTHORIZATION, format!("Bearer {key}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .unwrap();
            app.oneshot(req).await.unwrap().status()
        }
    };
    for (method, uri, key, body) in [
        (
            Method::POST,
            "/v1/users".to_owned(),
            &brief,
            serde_json::json!({"email": "new@acme.example", "role": "viewer"}),
        ),
        (
            Method::POST,
            format!("/v1/users/{}/link", boss.id),
            &brief,
            Value::Null,
        ),
        (
            Method::PATCH,
            format!("/v1/users/{}", boss.id),
            &brief,
            serde_json::json!({"version": boss.version, "role": "viewer"}),
        ),
        (
            Method::POST,
            format!("/v1/users/{}/link", boss.id),
            &scoped,
            Value::Null,
        ),
    ] {
        assert_eq!(
            send(method.clone(), uri.clone(), key.clone(), body).await,
            StatusCode::FORBIDDEN,
            "{method} {uri}"
        );
    }
    assert_eq!(
        send(
            Method::POST,
            format!("/v1/users/{}/link", boss.id),
            admin,
            Value::Null
        )
        .await,
        StatusCode::CREATED,
        "a lasting admin key re-links anyone"
    );
}

both_backends!(
    every_operation_with_every_role,
    keys_are_per_tenant,
    a_key_hands_out_no_more_than_it_has
);

//! Tenancy over HTTP, through the router on PostgreSQL as the service role:
//! every route refuses a missing or wrong key, and tenant A's key on tenant
//! B's ids is a 404 everywhere — indistinguishable from an id that never
//! existed.

use axum::{
    Router,
    body::Body,
    http::{Method, Request, StatusCode, header},
};
use http_body_util::BodyExt;
use leadline_http::{AppState, router};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::support::{agent_req, lead_req, new_tenant, pg_store, services};

async fn call(
    app: &Router,
    method: Method,
    uri: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(key) = key {
        req = req.header(header::AUTHORIZATION, format!("Bearer {key}"));
    }
    let req = match body {
        Some(b) => req
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    };
    (status, json)
}

#[tokio::test]
async fn tenant_a_key_on_tenant_b_ids_is_404_on_every_route() {
    let s = services(pg_store().await);
    let app = router(AppState::new(s.clone()));
    let (_a, key_a) = new_tenant(&s).await;
    let (b, key_b) = new_tenant(&s).await;
    let agent_b = s
        .agents
        .create(b, &agent_req("b@example.com"))
        .await
        .unwrap();
    let mut req = lead_req("Bee");
    req.assigned_agent_id = Some(agent_b.id);
    let lead_b = s.leads.create(b, &req).await.unwrap();
    let draft = leadline_domain::DraftApprovalRequest {
        channel: leadline_domain::Channel::Email,
        subject: None,
        body: leadline_domain::MessageBody::new("hello").unwrap(),
        requested_by: agent_b.id,
    };
    let approval_b = s.approvals.draft(b, lead_b.id, &draft).await.unwrap();
    let approval_uri = format!("/v1/approvals/{}", approval_b.id);
    // A message B sent: its delivery, and B's sender.
    let lead_sent = s.leads.create(b, &lead_req("Sent")).await.unwrap();
    let sent_b = s.approvals.draft(b, lead_sent.id, &draft).await.unwrap();
    for action in [
        leadline_domain::ApprovalAction::Approve { by: agent_b.id },
        leadline_domain::ApprovalAction::MarkSent { by: agent_b.id },
    ] {
        s.approvals.act(b, sent_b.id, &action).await.unwrap();
    }
    let delivery_b = s
        .deliveries
        .list(b, None, None, leadline_domain::PageLimit::new(1).unwrap())
        .await
        .unwrap()
        .items[0]
        .id;
    let delivery_uri = format!("/v1/deliveries/{delivery_b}");
    s.deliveries
        .set_sender(
            b,
            &leadline_domain::SenderIdentity {
                from_email: leadline_domain::Email::parse("b@example.com").unwrap(),
                from_name: None,
                reply_to: None,
                unsubscribe: None,
            },
        )
        .await
        .unwrap();
    // A lead B deleted: A can neither see nor restore it.
    let deleted_b = s.leads.create(b, &lead_req("Gone")).await.unwrap();
    s.leads.delete(b, deleted_b.id).await.unwrap();
    let deleted_restore = format!("/v1/leads/{}/restore", deleted_b.id);
    let lead_events = format!("/v1/leads/{}/events", lead_b.id);
    let lead_context = format!("/v1/leads/{}/context", lead_b.id);
    let lead_approvals = format!("/v1/leads/{}/approvals", lead_b.id);

    let agent_uri = format!("/v1/agents/{}", agent_b.id);
    let lead_uri = format!("/v1/leads/{}", lead_b.id);
    // An import of B's.
    let import_b = s
        .imports
        .start(
            b,
            &"ab".repeat(32),
            "b.csv",
            &["name".to_owned()],
            leadline_domain::import::OnDuplicate::Skip,
        )
        .await
        .unwrap();
    let import_uri = format!("/v1/imports/{}", import_b.id);
    let routes = [
        (Method::GET, delivery_uri.clone(), None),
        (Method::POST, format!("{delivery_uri}/retry"), None),
        (Method::GET, import_uri.clone(), None),
        (Method::GET, format!("{import_uri}/rejected.csv"), None),
        (Method::GET, agent_uri.clone(), None),
        (
            Method::PATCH,
            agent_uri.clone(),
            Some(json!({"version": 1, "name": "Hijacked"})),
        ),
        (Method::GET, lead_uri.clone(), None),
        (
            Method::PATCH,
            lead_uri.clone(),
            Some(json!({"version": 1, "status": "lost"})),
        ),
        (Method::DELETE, lead_uri.clone(), None),
        (Method::POST, format!("{lead_uri}/restore"), None),
        (Method::POST, deleted_restore.clone(), None),
        (Method::GET, lead_context.clone(), None),
        (Method::GET, lead_events.clone(), None),
        (
            Method::POST,
            lead_events.clone(),
            Some(json!({"kind": "note", "direction": "internal"})),
        ),
        (
            Method::POST,
            lead_approvals.clone(),
            Some(json!({"channel": "email", "body": "x", "requested_by": agent_b.id})),
        ),
        (Method::GET, approval_uri.clone(), None),
        (
            Method::POST,
            format!("{approval_uri}/approve"),
            Some(json!({"decided_by": agent_b.id})),
        ),
        (
            Method::POST,
            format!("{approval_uri}/reject"),
            Some(json!({"decided_by": agent_b.id, "reason": "no"})),
        ),
        (
            Method::POST,
            format!("{approval_uri}/send"),
            Some(json!({"sent_by": agent_b.id})),
        ),
        (
            Method::POST,
            format!("{approval_uri}/cancel"),
            Some(json!({"cancelled_by": agent_b.id})),
        ),
    ];
    for (method, uri, body) in &routes {
        let (status, problem) = call(&app, method.clone(), uri, Some(&key_a), body.clone()).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {uri}: {problem}");
        assert_eq!(problem["type"], "urn:leadline:problem:not-found");
        // The same as for an id that never existed.
        let fresh = [
            lead_b.id.to_string(),
            deleted_b.id.to_string(),
            agent_b.id.to_string(),
            approval_b.id.to_string(),
            import_b.id.to_string(),
            delivery_b.to_string(),
        ]
        .iter()
        .fold(uri.clone(), |u, id| {
            u.replace(id, &uuid::Uuid::now_v7().to_string())
        });
        assert_ne!(&fresh, uri);
        let (status2, problem2) =
            call(&app, method.clone(), &fresh, Some(&key_a), body.clone()).await;
        assert_eq!(
            (status2, &problem2),
            (status, &problem),
            "{method}: foreign and missing ids look alike"
        );
    }
    // Lists and settings never surface B's data to A.
    let (status, page) = call(&app, Method::GET, "/v1/deliveries", Some(&key_a), None).await;
    assert_eq!(
        (status, page["items"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(0))
    );
    let (_, page) = call(&app, Method::GET, "/v1/deliveries", Some(&key_b), None).await;
    assert_eq!(page["items"][0]["id"], json!(delivery_b));
    let (_, sender) = call(&app, Method::GET, "/v1/settings/email", Some(&key_a), None).await;
    assert_eq!(sender, json!({"sender": null}));
    // The change feed: none of B's changes for A, whatever the filter.
    for uri in [
        "/v1/changes?limit=1000",
        "/v1/changes?types=lead,approval&after=0-0",
    ] {
        let (status, page) = call(&app, Method::GET, uri, Some(&key_a), None).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {page}");
        let text = page.to_string();
        for id in [
            lead_b.id.to_string(),
            approval_b.id.to_string(),
            agent_b.id.to_string(),
        ] {
            assert!(!text.contains(&id), "{uri} shows B's {id}");
        }
    }
    // Lists and filters never surface B's data to A.
    let (status, page) = call(
        &app,
        Method::GET,
        &format!("/v1/leads?assigned_agent_id={}", agent_b.id),
        Some(&key_a),
        None,
    )
    .await;
    assert_eq!(
        (status, page["items"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(0))
    );
    // Search never finds B's leads for A, whatever the words or filters;
    // B finds its own.
    for q in [
        "bee".to_owned(),
        "be".to_owned(),
        "bee+tester".to_owned(),
        format!("bee&assigned_agent_id={}", agent_b.id),
        "bee&metadata=%7B%7D".to_owned(),
    ] {
        let uri = format!("/v1/leads/search?q={q}");
        let (status, page) = call(&app, Method::GET, &uri, Some(&key_a), None).await;
        assert_eq!(
            (status, page["items"].as_array().map(Vec::len)),
            (StatusCode::OK, Some(0)),
            "{uri}"
        );
        let (status, page) = call(&app, Method::GET, &uri, Some(&key_b), None).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert_eq!(page["items"][0]["lead"]["id"], json!(lead_b.id), "{uri}");
    }
    // A's batch cannot update B's lead (404 for that item, as for a lead
    // that never existed), and A's bulk change matches none of B's.
    let (status, result) = call(
        &app,
        Method::POST,
        "/v1/leads/batch",
        Some(&key_a),
        Some(json!({"items": [{"op": "update", "id": lead_b.id, "lead": {"version": 1, "status": "lost"}}]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(result["results"][0]["status"], 404, "{result}");
    let (_, result) = call(
        &app,
        Method::POST,
        "/v1/leads/bulk",
        Some(&key_a),
        Some(json!({"set": {"status": "lost"}})),
    )
    .await;
    assert_eq!(result["matched"], 0, "{result}");
    // B's duplicate leads are no group of A's.
    let mut twin = lead_req("Bee");
    twin.assigned_agent_id = Some(agent_b.id);
    s.leads.create(b, &twin).await.unwrap();
    for (key, groups) in [(&key_a, 0), (&key_b, 1)] {
        let (status, page) = call(&app, Method::GET, "/v1/leads/duplicates", Some(key), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            page["items"].as_array().map(Vec::len),
            Some(groups),
            "{page}"
        );
    }
    // A's export holds none of B's leads; B's holds its own (Bee, its twin, Sent).
    for (key, expected) in [(&key_a, 0), (&key_b, 3)] {
        let res = app
            .clone()
            .oneshot(
                Request::builder()
                    .uri("/v1/leads/export")
                    .header(header::AUTHORIZATION, format!("Bearer {key}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let text = String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec())
            .unwrap();
        assert_eq!(text.lines().count(), 1 + expected, "{text}");
        assert_eq!(text.contains(&lead_b.id.to_string()), expected > 0);
    }
    let (_, agents) = call(&app, Method::GET, "/v1/agents", Some(&key_a), None).await;
    assert_eq!(agents["items"].as_array().map(Vec::len), Some(0));
    let (_, queue) = call(&app, Method::GET, "/v1/approvals", Some(&key_a), None).await;
    assert_eq!(
        queue["items"].as_array().map(Vec::len),
        Some(0),
        "B's queue is invisible to A"
    );
    // B's agent cannot be assigned by A; the answer does not say it exists.
    let (status, problem) = call(
        &app,
        Method::POST,
        "/v1/leads",
        Some(&key_a),
        Some(json!({"first_name": "X", "last_name": "Y", "assigned_agent_id": agent_b.id})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["errors"][0]["field"], "assigned_agent_id");

    // B still sees its data unchanged.
    let (status, approval) = call(&app, Method::GET, &approval_uri, Some(&key_b), None).await;
    assert_eq!(
        (status, approval["status"].as_str()),
        (StatusCode::OK, Some("pending")),
        "A's attempts moved nothing"
    );
    let (_, timeline) = call(&app, Method::GET, &lead_events, Some(&key_b), None).await;
    assert_eq!(
        timeline["items"].as_array().map(Vec::len),
        Some(0),
        "A appended nothing to B's timeline"
    );
    let (status, lead) = call(&app, Method::GET, &lead_uri, Some(&key_b), None).await;
    assert_eq!(
        (status, lead["version"].as_i64(), lead["status"].as_str()),
        (StatusCode::OK, Some(1), Some("new"))
    );
    let (_, agent) = call(&app, Method::GET, &agent_uri, Some(&key_b), None).await;
    assert_eq!(agent["name"], "Agent");
    let (status, _) = call(
        &app,
        Method::GET,
        &format!("/v1/leads/{}", deleted_b.id),
        Some(&key_b),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "A restored nothing of B's");
}

#[tokio::test]
async fn every_v1_route_requires_a_valid_key() {
    let s = services(pg_store().await);
    let app = router(AppState::new(s.clone()));
    let (_, key) = new_tenant(&s).await;
    let id = uuid::Uuid::now_v7();
    let routes = [
        (Method::GET, "/v1/tenant".to_owned()),
        (Method::GET, "/v1/agents".to_owned()),
        (Method::POST, "/v1/agents".to_owned()),
        (Method::GET, format!("/v1/agents/{id}")),
        (Method::PATCH, format!("/v1/agents/{id}")),
        (Method::GET, "/v1/leads".to_owned()),
        (Method::POST, "/v1/leads".to_owned()),
        (Method::GET, "/v1/leads/search?q=bee".to_owned()),
        (Method::GET, "/v1/leads/export".to_owned()),
        (Method::GET, "/v1/leads/duplicates".to_owned()),
        (Method::POST, "/v1/leads/batch".to_owned()),
        (Method::POST, "/v1/leads/bulk".to_owned()),
        (Method::POST, "/v1/imports".to_owned()),
        (Method::GET, format!("/v1/imports/{id}")),
        (Method::GET, format!("/v1/imports/{id}/rejected.csv")),
        (Method::GET, format!("/v1/leads/{id}")),
        (Method::PATCH, format!("/v1/leads/{id}")),
        (Method::DELETE, format!("/v1/leads/{id}")),
        (Method::POST, format!("/v1/leads/{id}/restore")),
        (Method::GET, format!("/v1/leads/{id}/context")),
        (Method::GET, format!("/v1/leads/{id}/events")),
        (Method::POST, format!("/v1/leads/{id}/events")),
        (Method::POST, format!("/v1/leads/{id}/approvals")),
        (Method::GET, "/v1/approvals".to_owned()),
        (Method::GET, format!("/v1/approvals/{id}")),
        (Method::POST, format!("/v1/approvals/{id}/approve")),
        (Method::POST, format!("/v1/approvals/{id}/reject")),
        (Method::POST, format!("/v1/approvals/{id}/send")),
        (Method::POST, format!("/v1/approvals/{id}/cancel")),
        (Method::GET, "/v1/deliveries".to_owned()),
        (Method::GET, format!("/v1/deliveries/{id}")),
        (Method::POST, format!("/v1/deliveries/{id}/retry")),
        (Method::GET, "/v1/settings/email".to_owned()),
        (Method::PUT, "/v1/settings/email".to_owned()),
        (Method::GET, "/v1/changes".to_owned()),
    ];
    let forged = format!("{}{}", &key[..key.len() - 4], "0000");
    for (method, uri) in &routes {
        for bad in [None, Some("garbage"), Some(forged.as_str())] {
            let (status, problem) = call(&app, method.clone(), uri, bad, Some(json!({}))).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {uri} with {bad:?}"
            );
            assert_eq!(problem["type"], "urn:leadline:problem:unauthorized");
        }
    }
    let (status, tenant) = call(&app, Method::GET, "/v1/tenant", Some(&key), None).await;
    assert_eq!(status, StatusCode::OK, "{tenant}");
}

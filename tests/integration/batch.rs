//! Batch writes and bulk changes over HTTP, on both backends: each batch
//! item succeeds or fails alone; a bulk change respects every lead's
//! lifecycle and version.

use axum::{
    body::Body,
    http::{Method, Request, StatusCode, header},
};
use http_body_util::BodyExt;
use leadline_http::{AppState, router};
use leadline_store::Store;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::support::{agent_req, both_backends, new_tenant, services};

both_backends!(
    each_batch_item_succeeds_or_fails_alone,
    a_bulk_change_respects_each_leads_lifecycle,
);

async fn post(app: &axum::Router, key: &str, uri: &str, body: &Value) -> (StatusCode, Value) {
    let res = app
        .clone()
        .oneshot(
            Request::builder()
                .method(Method::POST)
                .uri(uri)
                .header(header::AUTHORIZATION, format!("Bearer {key}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn each_batch_item_succeeds_or_fails_alone(store: Store) {
    let s = services(store);
    let app = router(AppState::new(s.clone()));
    let (t, key) = new_tenant(&s).await;
    let existing = s
        .leads
        .create(t, &crate::support::lead_req("Old"))
        .await
        .unwrap();
    let (status, body) = post(
        &app,
        &key,
        "/v1/leads/batch",
        &json!({"items": [
            {"op": "create", "lead": {"first_name": "Ada", "last_name": "Lovelace"}},
            {"op": "create", "lead": {"first_name": "Bad", "last_name": "Email", "email": "nope"}},
            {"op": "update", "id": existing.id, "lead": {"version": 1, "company": "New Co"}},
            {"op": "update", "id": existing.id, "lead": {"version": 1, "company": "Stale Co"}},
            {"op": "delete", "id": existing.id},
            {"op": "update", "id": uuid::Uuid::now_v7(), "lead": {"version": 1}},
            [1, 2],
        ]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let statuses: Vec<u64> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [201, 422, 200, 409, 422, 404, 422], "{body}");
    assert_eq!(
        (body["succeeded"].as_u64(), body["failed"].as_u64()),
        (Some(2), Some(5))
    );
    assert_eq!(
        body["results"][1]["problem"]["errors"][0]["field"],
        "lead.email"
    );
    assert!(
        body["results"][1]["problem"]["detail"]
            .as_str()
            .unwrap()
            .starts_with("lead.email: "),
        "{body}"
    );
    assert_eq!(body["results"][4]["problem"]["errors"][0]["field"], "op");
    assert_eq!(body["results"][2]["lead"]["company"], "New Co");
    let id = body["results"][0]["lead"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(s.leads.get(t, id).await.unwrap().first_name.as_str(), "Ada");
    assert_eq!(
        s.leads
            .get(t, existing.id)
            .await
            .unwrap()
            .company
            .unwrap()
            .as_str(),
        "New Co",
        "the stale update changed nothing"
    );

    for bad in [
        json!({"items": []}),
        json!({"items": vec![json!({}); 1001]}),
    ] {
        let (status, body) = post(&app, &key, "/v1/leads/batch", &bad).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["errors"][0]["field"], "items");
    }
}

async fn a_bulk_change_respects_each_leads_lifecycle(store: Store) {
    let s = services(store);
    let app = router(AppState::new(s.clone()));
    let (t, key) = new_tenant(&s).await;
    let (other, other_key) = new_tenant(&s).await;
    let agent = s
        .agents
        .create(t, &agent_req("bulk@example.com"))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for (i, status) in ["new", "contacted", "won", "new"].iter().enumerate() {
        let mut req = crate::support::lead_req(&format!("Bulk{i}"));
        req.status = status.parse().unwrap();
        req.tags = leadline_domain::Tags::parse(&["fair"]).unwrap();
        ids.push(s.leads.create(t, &req).await.unwrap().id);
    }
    let mut untagged = crate::support::lead_req("Untagged");
    untagged.tags = leadline_domain::Tags::default();
    let untagged = s.leads.create(t, &untagged).await.unwrap();
    let mut foreign = crate::support::lead_req("Foreign");
    foreign.tags = leadline_domain::Tags::parse(&["fair"]).unwrap();
    let foreign = s.leads.create(other, &foreign).await.unwrap();

    let (status, body) = post(
        &app,
        &key,
        "/v1/leads/bulk",
        &json!({
            "filter": {"tag": "fair"},
            "set": {"status": "lost", "assigned_agent_id": agent.id, "add_tags": ["q4"], "remove_tags": ["fair"]},
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (
            body["matched"].as_u64(),
            body["changed"].as_u64(),
            body["failed"].as_array().map(Vec::len)
        ),
        (Some(4), Some(3), Some(1)),
        "{body}"
    );
    assert_eq!(
        body["failed"][0]["id"],
        json!(ids[2]),
        "won cannot move to lost"
    );
    assert_eq!(body["failed"][0]["problem"]["errors"][0]["field"], "status");
    for id in [ids[0], ids[1], ids[3]] {
        let lead = s.leads.get(t, id).await.unwrap();
        assert_eq!(lead.status.as_str(), "lost");
        assert_eq!(lead.assigned_agent_id, Some(agent.id));
        let tags: Vec<&str> = lead.tags.as_slice().iter().map(|t| t.as_str()).collect();
        assert_eq!(tags, ["q4"]);
        assert_eq!(lead.version, 2, "one update per lead");
    }
    assert_eq!(
        s.leads.get(t, ids[2]).await.unwrap().version,
        1,
        "the refused one is untouched"
    );
    assert_eq!(s.leads.get(t, untagged.id).await.unwrap().version, 1);
    assert_eq!(s.leads.get(other, foreign.id).await.unwrap().version, 1);

    // Run again: nothing left to do for the same filter.
    let (_, body) = post(
        &app,
        &key,
        "/v1/leads/bulk",
        &json!({"filter": {"tag": "q4"}, "set": {"status": "lost"}}),
    )
    .await;
    assert_eq!(
        (body["matched"].as_u64(), body["unchanged"].as_u64()),
        (Some(3), Some(3))
    );
    // Another tenant's bulk change never reaches these leads.
    let (_, body) = post(
        &app,
        &other_key,
        "/v1/leads/bulk",
        &json!({"set": {"add_tags": ["x"]}}),
    )
    .await;
    assert_eq!(body["matched"].as_u64(), Some(1), "{body}");
    let (status, body) = post(&app, &key, "/v1/leads/bulk", &json!({"set": {}})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["errors"][0]["field"], "set");
}

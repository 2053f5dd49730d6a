//! Separation of duties on both backends: on for a new tenant, the agent
//! who drafted an approval can neither approve nor reject it (someone else
//! can), sending and withdrawing stay the drafter's to do, and a tenant
//! admin may turn the rule off (`PUT /v1/settings/approvals`).

use axum::{
    body::Body,
    http::{Method, Request, StatusCode, header},
};
use http_body_util::BodyExt;
use leadline_domain::{
    ApprovalAction, Channel, CreateTenantRequest, DisplayName, DraftApprovalRequest, MessageBody,
    RejectionReason, Slug,
};
use leadline_http::{AppState, router};
use leadline_ports::TransitionApprovalError;
use leadline_store::Store;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::support::{agent_req, both_backends, lead_req, services, unique_slug};

async fn call(
    app: &axum::Router,
    method: Method,
    uri: &str,
    key: &str,
    body: Value,
) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn the_drafter_does_not_decide(store: Store) {
    let s = services(store);
    let created = s
        .tenants
        .create(&CreateTenantRequest {
            slug: Slug::parse(&unique_slug("sod")).unwrap(),
            name: DisplayName::new("Separated").unwrap(),
        })
        .await
        .unwrap();
    assert!(created.tenant.separation_of_duties, "on by default");
    let tenant = created.tenant.id;
    let key = created.api_key.expose().to_owned();
    let dee = s
        .agents
        .create(tenant, &agent_req("dee@acme.example"))
        .await
        .unwrap()
        .id;
    let eve = s
        .agents
        .create(tenant, &agent_req("eve@acme.example"))
        .await
        .unwrap()
        .id;
    let lead = s.leads.create(tenant, &lead_req("Sep")).await.unwrap().id;
    let draft = DraftApprovalRequest {
        channel: Channel::Email,
        subject: None,
        body: MessageBody::new("Hello").unwrap(),
        requested_by: dee,
    };
    let first = s.approvals.draft(tenant, lead, &draft).await.unwrap();
    for action in [
        ApprovalAction::Approve { by: dee },
        ApprovalAction::Reject {
            by: dee,
            reason: RejectionReason::new("mine").unwrap(),
        },
    ] {
        assert!(
            matches!(
                s.approvals.act(tenant, first.id, &action).await,
                Err(TransitionApprovalError::SelfDecision)
            ),
            "{action:?}"
        );
    }
    // Nothing moved, and nothing was recorded.
    let still = s.approvals.get(tenant, first.id).await.unwrap();
    assert_eq!(still.status, leadline_domain::ApprovalStatus::Pending);
    s.approvals
        .act(tenant, first.id, &ApprovalAction::Approve { by: eve })
        .await
        .expect("another person approves");
    s.approvals
        .act(tenant, first.id, &ApprovalAction::MarkSent { by: dee })
        .await
        .expect("the drafter sends what another approved");
    let second = s.approvals.draft(tenant, lead, &draft).await.unwrap();
    s.approvals
        .act(tenant, second.id, &ApprovalAction::Cancel { by: dee })
        .await
        .expect("the drafter withdraws her own draft");

    // Over HTTP: 409 naming decided_by; turned off by an admin, allowed.
    let app = router(AppState::new(s.clone()));
    let third = s.approvals.draft(tenant, lead, &draft).await.unwrap();
    let approve = format!("/v1/approvals/{}/approve", third.id);
    let (status, problem) = call(
        &app,
        Method::POST,
        &approve,
        &key,
        json!({"decided_by": dee}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "decided_by", "{problem}");
    let (status, settings) = call(
        &app,
        Method::PUT,
        "/v1/settings/approvals",
        &key,
        json!({"separation_of_duties": false}),
    )
    .await;
    assert_eq!(
        (status, &settings),
        (StatusCode::OK, &json!({"separation_of_duties": false}))
    );
    let (status, got) = call(
        &app,
        Method::GET,
        "/v1/settings/approvals",
        &key,
        Value::Null,
    )
    .await;
    assert_eq!(
        (status, got),
        (StatusCode::OK, json!({"separation_of_duties": false}))
    );
    let (status, approved) = call(
        &app,
        Method::POST,
        &approve,
        &key,
        json!({"decided_by": dee}),
    )
    .await;
    assert_eq!(
        (status, &approved["status"]),
        (StatusCode::OK, &json!("approved")),
        "{approved}"
    );
    let (status, problem) = call(
        &app,
        Method::PUT,
        "/v1/settings/approvals",
        &key,
        json!({"separation_of_duties": "no"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
}

both_backends!(the_drafter_does_not_decide);

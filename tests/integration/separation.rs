//! Separation of duties on both backends: on for a new tenant, the agent
//! who drafted an approval can neither approve nor reject it (someone else
//! can), sending and withdrawing stay the drafter's to do, and a tenant
//! admin may turn the rule off (`PUT /v1/settings/approvals`). Editing a
//! draft makes its editor an author too.

use axum::{
    body::Body,
    http::{Method, Request, StatusCode, header},
};
use http_body_util::BodyExt;
use leadline_domain::{
    ApprovalAction, Channel, CreateTenantRequest, DisplayName, DraftApprovalRequest,
    EditDraftRequest, MessageBody, RejectionReason, Slug, Subject,
};
use leadline_http::{AppState, router};
use leadline_ports::{EditApprovalError, TransitionApprovalError};
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

/// Editing a draft before it is decided: the edit bumps the revision and
/// makes its editor an author (who may not then decide it); a decision
/// names the revision it read, so nobody approves words they did not see;
/// a decided approval cannot be edited; and of an edit and an approval
/// racing from the same revision, exactly one lands.
async fn drafts_are_edited_before_they_are_decided(store: Store) {
    let s = services(store);
    let created = s
        .tenants
        .create(&CreateTenantRequest {
            slug: Slug::parse(&unique_slug("edit")).unwrap(),
            name: DisplayName::new("Edits").unwrap(),
        })
        .await
        .unwrap();
    let tenant = created.tenant.id;
    let mut agents = Vec::new();
    for email in ["dee@acme.example", "eve@acme.example", "fay@acme.example"] {
        agents.push(s.agents.create(tenant, &agent_req(email)).await.unwrap().id);
    }
    let [dee, eve, fay] = agents[..] else {
        unreachable!()
    };
    let lead = s.leads.create(tenant, &lead_req("Edit")).await.unwrap().id;
    let draft = DraftApprovalRequest {
        channel: Channel::Email,
        subject: Some(Subject::new("Hello").unwrap()),
        body: MessageBody::new("Frist draft").unwrap(),
        requested_by: dee,
    };
    let first = s.approvals.draft(tenant, lead, &draft).await.unwrap();
    assert_eq!((first.revision, first.edited_by), (1, None));
    let fix = EditDraftRequest {
        subject: None,
        body: MessageBody::new("First draft").unwrap(),
        edited_by: eve,
        revision: 1,
    };
    let edited = s.approvals.edit(tenant, first.id, &fix).await.unwrap();
    assert_eq!(
        (edited.revision, edited.edited_by, edited.subject.clone()),
        (2, Some(eve), None)
    );
    assert_eq!(edited.body.as_str(), "First draft");
    assert!(matches!(
        s.approvals.edit(tenant, first.id, &fix).await,
        Err(EditApprovalError::Stale {
            current_revision: 2
        })
    ));
    // Eve wrote the words now: she may not decide them; neither may Dee.
    for by in [eve, dee] {
        assert!(matches!(
            s.approvals
                .act_at(tenant, first.id, &ApprovalAction::Approve { by }, Some(2))
                .await,
            Err(TransitionApprovalError::SelfDecision)
        ));
    }
    // Fay read revision 1: her approval is refused, naming the revision.
    assert!(matches!(
        s.approvals
            .act_at(
                tenant,
                first.id,
                &ApprovalAction::Approve { by: fay },
                Some(1)
            )
            .await,
        Err(TransitionApprovalError::Edited {
            current_revision: 2
        })
    ));
    let approved = s
        .approvals
        .act_at(
            tenant,
            first.id,
            &ApprovalAction::Approve { by: fay },
            Some(2),
        )
        .await
        .unwrap();
    assert_eq!(approved.body.as_str(), "First draft");
    assert!(matches!(
        s.approvals
            .edit(
                tenant,
                first.id,
                &EditDraftRequest {
                    revision: 2,
                    ..fix.clone()
                }
            )
            .await,
        Err(EditApprovalError::NotPending {
            current: leadline_domain::ApprovalStatus::Approved
        })
    ));
    // An editor from nowhere.
    let second = s.approvals.draft(tenant, lead, &draft).await.unwrap();
    assert!(matches!(
        s.approvals
            .edit(
                tenant,
                second.id,
                &EditDraftRequest {
                    edited_by: leadline_domain::AgentId::new(),
                    ..fix.clone()
                }
            )
            .await,
        Err(EditApprovalError::AgentNotFound)
    ));

    // Over HTTP: a revision below 1, or an inactive editor, is a 422 naming
    // the field.
    let app = router(AppState::new(s.clone()));
    let key = created.api_key.expose().to_owned();
    let gone = s
        .agents
        .create(tenant, &agent_req("gone@acme.example"))
        .await
        .unwrap();
    s.agents
        .update(
            tenant,
            gone.id,
            &leadline_domain::UpdateAgentRequest {
                expected_version: gone.version,
                name: None,
                email: None,
                role: None,
                active: Some(false),
            },
        )
        .await
        .unwrap();
    let edit_uri = format!("/v1/approvals/{}/edit", second.id);
    for (body, field) in [
        (
            json!({"body": "x", "edited_by": eve, "revision": 0}),
            "revision",
        ),
        (
            json!({"body": "x", "edited_by": gone.id, "revision": 1}),
            "edited_by",
        ),
    ] {
        let (status, problem) = call(&app, Method::POST, &edit_uri, &key, body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    let (status, problem) = call(
        &app,
        Method::POST,
        &format!("/v1/approvals/{}/approve", second.id),
        &key,
        json!({"decided_by": fay, "revision": -5}),
    )
    .await;
    assert_eq!(
        (status, &problem["errors"][0]["field"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &json!("revision")),
        "{problem}"
    );

    // Races: an edit and an approval from revision 1; exactly one lands,
    // and the approved text is the one its approver read.
    let approve = ApprovalAction::Approve { by: fay };
    for _ in 0..8 {
        let race = s.approvals.draft(tenant, lead, &draft).await.unwrap();
        let (edit, approve) = tokio::join!(
            s.approvals.edit(tenant, race.id, &fix),
            s.approvals.act_at(tenant, race.id, &approve, Some(1)),
        );
        let after = s.approvals.get(tenant, race.id).await.unwrap();
        match (edit, approve) {
            (
                Ok(_),
                Err(TransitionApprovalError::Edited {
                    current_revision: 2,
                }),
            ) => {
                assert_eq!(
                    (after.status, after.revision),
                    (leadline_domain::ApprovalStatus::Pending, 2)
                );
            }
            (Err(EditApprovalError::NotPending { .. }), Ok(_)) => {
                assert_eq!(
                    (after.status, after.revision, after.body.as_str()),
                    (leadline_domain::ApprovalStatus::Approved, 1, "Frist draft")
                );
            }
            other => panic!("not exactly one winner: {other:?}"),
        }
    }
}

both_backends!(
    the_drafter_does_not_decide,
    drafts_are_edited_before_they_are_decided
);

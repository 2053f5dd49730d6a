//! Privacy export against real databases: one person's leads (deleted ones
//! too), their events, approvals, deliveries and audit records, and
//! nothing of anyone else; the export itself is audited without the email.

use axum::{
    Router,
    http::{Method, StatusCode},
};
use leadline_domain::{ApprovalAction, Channel, DraftApprovalRequest, Email, MessageBody};
use leadline_http::{AppState, router};
use leadline_store::Store;
use serde_json::{Value, json};

use crate::support::{agent_req, both_backends, lead_req, new_tenant, services};

both_backends!(an_export_holds_the_person_and_no_one_else);

async fn post(app: &Router, key: &str, uri: &str, body: Value) -> (StatusCode, Value) {
    let (status, _, body) = post_with(app, key, uri, body, &[]).await;
    (status, body)
}

async fn post_with(
    app: &Router,
    key: &str,
    uri: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let answer = crate::support::call(app, key, Method::POST, uri, Some(&body), headers).await;
    (answer.status, answer.headers, answer.body)
}

async fn an_export_holds_the_person_and_no_one_else(store: Store) {
    let s = services(store);
    let app = router(AppState::new(s.clone()));
    let (tenant, key) = new_tenant(&s).await;
    let agent = s
        .agents
        .create(tenant, &agent_req("rep@acme.example"))
        .await
        .unwrap();
    let person = |first: &str, email: &str| {
        let mut req = lead_req(first);
        req.email = Some(Email::parse(email).unwrap());
        req
    };
    let lead = s
        .leads
        .create(tenant, &person("Pat", "pat.doe@example.com"))
        .await
        .unwrap();
    let again = s
        .leads
        .create(tenant, &person("Patricia", "Pat.Doe@Example.com"))
        .await
        .unwrap();
    let other = s
        .leads
        .create(tenant, &person("Sam", "sam@example.com"))
        .await
        .unwrap();
    s.leads.delete(tenant, again.id).await.unwrap();
    // A message to the person, approved and sent: an approval and a
    // delivery, and their events.
    let draft = DraftApprovalRequest {
        channel: Channel::Email,
        subject: None,
        body: MessageBody::new("Hello Pat").unwrap(),
        requested_by: agent.id,
    };
    let approval = s.approvals.draft(tenant, lead.id, &draft).await.unwrap();
    for action in [
        ApprovalAction::Approve { by: agent.id },
        ApprovalAction::MarkSent { by: agent.id },
    ] {
        s.approvals.act(tenant, approval.id, &action).await.unwrap();
    }
    // Someone else's message, which must not appear.
    s.approvals.draft(tenant, other.id, &draft).await.unwrap();

    let (status, doc) = post(
        &app,
        &key,
        "/v1/privacy/export",
        json!({"email": "PAT.DOE@example.com"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["email"], "pat.doe@example.com");
    let ids = |list: &str| -> Vec<String> {
        doc[list]
            .as_array()
            .unwrap_or_else(|| panic!("{list}: {doc}"))
            .iter()
            .map(|v| v["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        ids("leads"),
        [lead.id.to_string(), again.id.to_string()],
        "both leads, the deleted one too"
    );
    assert_eq!(ids("approvals"), [approval.id.to_string()]);
    assert_eq!(doc["deliveries"].as_array().unwrap().len(), 1, "{doc}");
    assert_eq!(doc["deliveries"][0]["approval_id"], approval.id.to_string());
    let kinds: Vec<&str> = doc["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["approval_decided", "email_sent"],
        "the approval's events on Pat's lead, none of Sam's: {doc}"
    );
    let actions: Vec<&str> = doc["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    for expected in [
        "lead.created",
        "lead.deleted",
        "approval.drafted",
        "approval.approved",
        "approval.sent",
        "event.recorded",
    ] {
        assert!(actions.contains(&expected), "{expected} in {actions:?}");
    }
    let text = doc.to_string();
    assert!(!text.contains(&other.id.to_string()), "nobody else's lead");
    assert!(!text.contains("sam@example.com"), "nobody else's email");

    // The export is on the trail: which leads, how much; not the email.
    let page = s
        .audit
        .list(
            tenant,
            &leadline_domain::AuditQuery::about(
                "person",
                None,
                leadline_domain::PageLimit::DEFAULT,
            ),
        )
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    let record = &page.items[0].record;
    assert_eq!(record.action, "person.exported");
    assert!(
        record.changes.contains(&lead.id.to_string()),
        "{}",
        record.changes
    );
    assert!(!record.changes.contains("pat.doe"), "{}", record.changes);

    // An export is never stored for replay (it is one person's data, and
    // a replay would go unrecorded): under an idempotency key each call
    // runs and is recorded.
    for _ in 0..2 {
        let (status, headers, again) = post_with(
            &app,
            &key,
            "/v1/privacy/export",
            json!({"email": "pat.doe@example.com"}),
            &[("idempotency-key", "export-1")],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{again}");
        assert!(headers.get("idempotent-replayed").is_none());
        assert_eq!(again["leads"], doc["leads"]);
    }
    let exported = s
        .audit
        .list(
            tenant,
            &leadline_domain::AuditQuery::about(
                "person",
                None,
                leadline_domain::PageLimit::DEFAULT,
            ),
        )
        .await
        .unwrap();
    assert_eq!(exported.items.len(), 3, "every export is on the trail");
    // A malformed key is refused, as on every route.
    let (status, _, problem) = post_with(
        &app,
        &key,
        "/v1/privacy/export",
        json!({"email": "pat.doe@example.com"}),
        &[("idempotency-key", "")],
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(
        problem["errors"][0]["field"], "Idempotency-Key",
        "{problem}"
    );

    // Nobody held is an answer; a bad email is a 422 naming it.
    let (status, empty) = post(
        &app,
        &key,
        "/v1/privacy/export",
        json!({"email": "nobody@example.com"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{empty}");
    assert_eq!(empty["leads"], json!([]));
    let (status, problem) = post(&app, &key, "/v1/privacy/export", json!({"email": "nope"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "email", "{problem}");

    // The command gives the same document, and writes it for its owner only.
    let slug = s.tenants.get(tenant).await.unwrap().slug.to_string();
    let json = leadline::privacy::export(&s, &slug, "pat.doe@example.com")
        .await
        .unwrap();
    let cli: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(cli["leads"], doc["leads"]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pat.json");
    let file = leadline::privacy::create_private(&path).unwrap();
    leadline::privacy::write_all(file, &json).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim_end(), json);
    assert!(
        leadline::privacy::create_private(&path).is_err(),
        "an existing file is not overwritten"
    );
}

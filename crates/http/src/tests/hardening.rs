//! Issue 12's defects at the HTTP edge: what the API accepts must stay
//! readable, and every refusal is problem+json naming its field.

use axum::http::{Method, StatusCode};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::json;

use super::{Harness, Reply, assert_problem, harness};

async fn new_lead(h: &Harness) -> String {
    let r = h
        .json(
            Method::POST,
            "/v1/leads",
            json!({"first_name": "Grace", "last_name": "Hopper"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body["id"].as_str().unwrap().to_owned()
}

async fn new_agent(h: &Harness) -> String {
    let r = h
        .json(
            Method::POST,
            "/v1/agents",
            json!({"name": "Ada", "email": format!("ada-{}@acme.example", uuid::Uuid::now_v7())}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body["id"].as_str().unwrap().to_owned()
}

fn no_rust_type_names(reply: &Reply) {
    let text = reply.body.to_string();
    for rust in ["struct ", "Body", "i64", "u32", "elements", "enum "] {
        assert!(!text.contains(rust), "{rust:?} in {text}");
    }
}

#[tokio::test]
async fn an_email_that_grows_when_lower_cased_is_refused_not_stored() {
    let h = harness().await;
    let email = format!("{}@ex.co", "İ".repeat(124));
    let r = h
        .json(
            Method::POST,
            "/v1/leads",
            json!({"first_name": "A", "last_name": "B", "email": email}),
        )
        .await;
    assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, Some("email"));
    let list = h.send(Method::GET, "/v1/leads", &[], None).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
}

#[tokio::test]
async fn metadata_with_nul_is_refused_with_its_field_named() {
    let h = harness().await;
    for metadata in [json!({"a\u{0}b": 1}), json!({"a": ["ok", "x\u{0}"]})] {
        let r = h
            .json(
                Method::POST,
                "/v1/leads",
                json!({"first_name": "A", "last_name": "B", "metadata": metadata}),
            )
            .await;
        assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, Some("metadata"));
    }
    let lead = new_lead(&h).await;
    let r = h
        .json(
            Method::POST,
            &format!("/v1/leads/{lead}/events"),
            json!({"kind": "note", "direction": "internal", "metadata": {"k": "\u{0}"}}),
        )
        .await;
    assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, Some("metadata"));
}

#[tokio::test]
async fn extreme_numbers_in_metadata_read_back() {
    let h = harness().await;
    let body = r#"{"first_name":"A","last_name":"B","metadata":{"max":1.7976931348623157e308,"tiny":5e-324,"big":18446744073709551615,"neg":-9223372036854775808}}"#;
    let r = h
        .send(
            Method::POST,
            "/v1/leads",
            &[("content-type", "application/json")],
            Some(body),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let id = r.body["id"].as_str().unwrap();
    let read = h
        .send(Method::GET, &format!("/v1/leads/{id}"), &[], None)
        .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    assert_eq!(read.body["metadata"]["max"].as_f64(), Some(f64::MAX));
    assert_eq!(read.body["metadata"]["big"].as_u64(), Some(u64::MAX));
}

#[tokio::test]
async fn a_cursor_outside_the_storable_years_is_a_422() {
    let h = harness().await;
    let lead = new_lead(&h).await;
    // A well-formed timeline cursor (version 1, micros, event id) for -4800.
    let micros = chrono::NaiveDate::from_ymd_opt(-4800, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_micros();
    let mut bytes = vec![1u8];
    bytes.extend_from_slice(&micros.to_be_bytes());
    bytes.extend_from_slice(uuid::Uuid::now_v7().as_bytes());
    let cursor = URL_SAFE_NO_PAD.encode(bytes);
    let r = h
        .send(
            Method::GET,
            &format!("/v1/leads/{lead}/events?cursor={cursor}"),
            &[],
            None,
        )
        .await;
    assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, Some("cursor"));
    let r = h
        .json(
            Method::POST,
            &format!("/v1/leads/{lead}/events"),
            json!({"kind": "call", "direction": "inbound", "occurred_at": "-4800-01-01T00:00:00Z"}),
        )
        .await;
    assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, Some("occurred_at"));
}

#[tokio::test]
async fn bodies_must_be_objects_and_errors_speak_of_fields() {
    let h = harness().await;
    let r = h
        .send(
            Method::POST,
            "/v1/leads",
            &[("content-type", "application/json")],
            Some(r#"["F","L",null,null,null,null,"new",null,[],{}]"#),
        )
        .await;
    assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, Some("body"));
    no_rust_type_names(&r);
    for body in ["\"text\"", "12", "null", " \n[1]"] {
        let r = h
            .send(
                Method::POST,
                "/v1/agents",
                &[("content-type", "application/json")],
                Some(body),
            )
            .await;
        assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, Some("body"));
    }
    let r = h
        .send(
            Method::POST,
            "/v1/leads",
            &[("content-type", "application/json")],
            Some("[1,"),
        )
        .await;
    assert_problem(&r, StatusCode::BAD_REQUEST, None);
    let lead = new_lead(&h).await;
    let r = h
        .json(
            Method::PATCH,
            &format!("/v1/leads/{lead}"),
            json!({"version": "one"}),
        )
        .await;
    assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, Some("version"));
    no_rust_type_names(&r);
}

#[tokio::test]
async fn framework_rejections_are_problems_too() {
    let h = harness().await;
    // Not UTF-8 once percent-decoded: names no resource.
    for uri in [
        "/v1/leads/%FF%FE",
        "/v1/agents/%C0",
        "/v1/approvals/%FF/approve",
    ] {
        let method = if uri.ends_with("approve") {
            Method::POST
        } else {
            Method::GET
        };
        let r = h
            .send(
                method,
                uri,
                &[("content-type", "application/json")],
                Some("{}"),
            )
            .await;
        assert_problem(&r, StatusCode::NOT_FOUND, None);
    }
    // Larger than any body the API takes, with and without an idempotency key.
    let big = format!(
        "{{\"first_name\":\"A\",\"last_name\":\"B\",\"source\":\"{}\"}}",
        "x".repeat(3 * 1024 * 1024)
    );
    for headers in [
        vec![("content-type", "application/json")],
        vec![
            ("content-type", "application/json"),
            ("idempotency-key", "big-1"),
        ],
    ] {
        let r = h
            .send(Method::POST, "/v1/leads", &headers, Some(&big))
            .await;
        assert_problem(&r, StatusCode::PAYLOAD_TOO_LARGE, None);
    }
    let long = format!("/v1/leads?tag={}", "a".repeat(9 * 1024));
    let r = h.send(Method::GET, &long, &[], None).await;
    assert_problem(&r, StatusCode::URI_TOO_LONG, None);
    let names: Vec<String> = (0..120).map(|i| format!("x-extra-{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
    let r = h.send(Method::GET, "/v1/leads", &many, None).await;
    assert_problem(&r, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, None);
    let huge = "v".repeat(40 * 1024);
    let r = h
        .send(Method::GET, "/healthz", &[("x-big", huge.as_str())], None)
        .await;
    assert_problem(&r, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, None);
}

#[tokio::test]
async fn clients_cannot_forge_system_events() {
    let h = harness().await;
    let lead = new_lead(&h).await;
    for kind in [
        "status_changed",
        "approval_decided",
        "email_sent",
        "sms_sent",
    ] {
        let r = h
            .json(
                Method::POST,
                &format!("/v1/leads/{lead}/events"),
                json!({"kind": kind, "direction": "outbound"}),
            )
            .await;
        assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, Some("kind"));
    }
    for kind in ["note", "call", "meeting", "email_received", "sms_received"] {
        let r = h
            .json(
                Method::POST,
                &format!("/v1/leads/{lead}/events"),
                json!({"kind": kind, "direction": "inbound"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{kind}: {}", r.body);
    }
}

#[tokio::test]
async fn a_subject_cannot_carry_a_header() {
    let h = harness().await;
    let lead = new_lead(&h).await;
    let agent = new_agent(&h).await;
    for subject in ["Hi\r\nBcc: everyone@example.com", "Hi\nX-Injected: 1"] {
        let r = h
            .json(
                Method::POST,
                &format!("/v1/leads/{lead}/approvals"),
                json!({"channel": "email", "subject": subject, "body": "Hello", "requested_by": agent}),
            )
            .await;
        assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, Some("subject"));
    }
}

#[tokio::test]
async fn the_idempotency_key_covers_the_query_string() {
    let h = harness().await;
    let body = json!({"first_name": "A", "last_name": "B"}).to_string();
    let headers = [
        ("content-type", "application/json"),
        ("idempotency-key", "q-1"),
    ];
    let first = h
        .send(Method::POST, "/v1/leads?x=1", &headers, Some(&body))
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let replay = h
        .send(Method::POST, "/v1/leads?x=1", &headers, Some(&body))
        .await;
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    let other = h
        .send(Method::POST, "/v1/leads?x=2", &headers, Some(&body))
        .await;
    assert_problem(
        &other,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("Idempotency-Key"),
    );
}

#[tokio::test]
async fn a_request_id_that_could_forge_a_log_line_is_replaced() {
    let h = harness().await;
    let forged = "x\" level=error msg=\"forged";
    let r = h
        .send(Method::GET, "/healthz", &[("x-request-id", forged)], None)
        .await;
    let echoed = r.headers["x-request-id"].to_str().unwrap();
    assert_ne!(echoed, forged);
    assert!(uuid::Uuid::parse_str(echoed).is_ok(), "{echoed}");
    let fine = "trace-0b6f4c1e";
    let r = h
        .send(Method::GET, "/healthz", &[("x-request-id", fine)], None)
        .await;
    assert_eq!(r.headers["x-request-id"], fine);
}

#[test]
fn a_500_logs_its_whole_cause_chain() {
    let logs = leadline_testsupport::CapturedLogs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    let cause = anyhow::anyhow!("stored leads.email is invalid: must be at most 254 characters")
        .context("leads row 0190 cannot be read");
    tracing::subscriber::with_default(subscriber, || {
        let err = crate::error::ApiError::internal(&cause);
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
    });
    let text = logs.text();
    assert!(text.contains("leads row 0190 cannot be read"), "{text}");
    assert!(text.contains("must be at most 254 characters"), "{text}");
}

#[tokio::test]
async fn an_inactive_agent_gets_no_new_leads_and_cannot_draft() {
    let h = harness().await;
    let agent = new_agent(&h).await;
    let lead = new_lead(&h).await;
    let r = h
        .json(
            Method::PATCH,
            &format!("/v1/agents/{agent}"),
            json!({"version": 1, "active": false}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    let r = h
        .json(
            Method::POST,
            "/v1/leads",
            json!({"first_name": "A", "last_name": "B", "assigned_agent_id": agent}),
        )
        .await;
    assert_problem(
        &r,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("assigned_agent_id"),
    );
    let r = h
        .json(
            Method::PATCH,
            &format!("/v1/leads/{lead}"),
            json!({"version": 1, "assigned_agent_id": agent}),
        )
        .await;
    assert_problem(
        &r,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("assigned_agent_id"),
    );
    let r = h
        .json(
            Method::POST,
            &format!("/v1/leads/{lead}/approvals"),
            json!({"channel": "email", "subject": "Hi", "body": "Hello", "requested_by": agent}),
        )
        .await;
    assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, Some("requested_by"));

    // Reactivated, the same calls succeed.
    let r = h
        .json(
            Method::PATCH,
            &format!("/v1/agents/{agent}"),
            json!({"version": 2, "active": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = h
        .json(
            Method::PATCH,
            &format!("/v1/leads/{lead}"),
            json!({"version": 1, "assigned_agent_id": agent}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = h
        .json(
            Method::POST,
            &format!("/v1/leads/{lead}/approvals"),
            json!({"channel": "email", "subject": "Hi", "body": "Hello", "requested_by": agent}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    // Deactivated again: the lead it already has stays, and an unrelated
    // patch of that lead is not refused.
    h.json(
        Method::PATCH,
        &format!("/v1/agents/{agent}"),
        json!({"version": 3, "active": false}),
    )
    .await;
    let r = h
        .json(
            Method::PATCH,
            &format!("/v1/leads/{lead}"),
            json!({"version": 2, "company": "Navy"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

//! Rate limits through the router (the in-process limiter; the shared one
//! is tested on a real Redis in the cache crate): a key past its limit gets
//! 429 problem+json with `Retry-After` and the IETF headers, another key of
//! the tenant is held to its own limit and then to the tenant's, and each
//! class of request has limits of its own.

use axum::http::{Method, StatusCode, header};
use leadline_app::{LimitSetting, RateLimitService, RateLimitSettings};
use leadline_domain::{Access, DisplayName, NewApiKey, Role};
use serde_json::json;

use super::{Harness, assert_problem, harness};

/// Writes: two per key and three per tenant at once, refilled too slowly
/// to matter during the test. Reads: plenty.
fn tight() -> RateLimitSettings {
    let slow = |burst| LimitSetting {
        per_second: 0.001,
        burst,
    };
    let mut settings = RateLimitSettings::default();
    settings.key.write = slow(2);
    settings.tenant.write = slow(3);
    settings
}

async fn limited() -> Harness {
    let mut h = harness().await;
    h.composition.services.rate_limits = RateLimitService::new(
        std::sync::Arc::new(leadline_cache::LocalRateLimiter::new()),
        &tight(),
    );
    h.app = crate::router(crate::AppState::new(h.composition.services.clone()));
    h
}

#[tokio::test]
async fn a_key_past_its_limit_is_told_when_to_come_back() {
    let h = limited().await;
    let lead = json!({"first_name": "Ada", "last_name": "Lovelace"});
    for remaining in ["1", "0"] {
        let r = h.json(Method::POST, "/v1/leads", lead.clone()).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert_eq!(
            r.headers["ratelimit-policy"],
            "\"key-write\";q=2;w=2000, \"tenant-write\";q=3;w=3000"
        );
        let current = r.headers["ratelimit"].to_str().unwrap();
        assert!(
            current.starts_with(&format!("\"key-write\";r={remaining};t=")),
            "{current}"
        );
    }
    let r = h.json(Method::POST, "/v1/leads", lead.clone()).await;
    assert_problem(&r, StatusCode::TOO_MANY_REQUESTS, None);
    assert_eq!(r.body["type"], "urn:leadline:problem:rate-limited");
    assert_eq!(
        (&r.body["limit"], &r.body["class"]),
        (&json!("key"), &json!("write"))
    );
    let retry: u64 = r.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1, "{retry}");
    assert!(
        r.headers["ratelimit"]
            .to_str()
            .unwrap()
            .starts_with("\"key-write\";r=0;")
    );
    // Reads have their own limit.
    let r = h.send(Method::GET, "/v1/leads", &[], None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.headers["ratelimit"]
            .to_str()
            .unwrap()
            .starts_with("\"key-read\";")
    );

    // Another key of the tenant writes once more, then the tenant's limit
    // (three) refuses it although its own (two) would not.
    let other = h
        .composition
        .services
        .keys
        .issue(
            h.composition
                .services
                .keys
                .authenticate(&h.key)
                .await
                .unwrap()
                .tenant
                .id,
            &NewApiKey {
                name: DisplayName::new("second").unwrap(),
                access: Access::Role(Role::Agent),
                expires_at: None,
            },
        )
        .await
        .unwrap();
    let second = Harness {
        app: h.app.clone(),
        key: other.token.expose().to_owned(),
        composition: super::Wired::over(h.composition.store().clone()),
    };
    let r = second.json(Method::POST, "/v1/leads", lead.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert!(
        r.headers["ratelimit"]
            .to_str()
            .unwrap()
            .starts_with("\"tenant-write\";r=0;"),
        "the tenant is the closer limit: {:?}",
        r.headers["ratelimit"]
    );
    let r = second.json(Method::POST, "/v1/leads", lead).await;
    assert_problem(&r, StatusCode::TOO_MANY_REQUESTS, None);
    assert_eq!(r.body["limit"], "tenant");
}

#[tokio::test]
async fn a_request_refused_for_its_role_costs_the_tenant_nothing() {
    let h = limited().await;
    let tenant = h
        .composition
        .services
        .keys
        .authenticate(&h.key)
        .await
        .unwrap()
        .tenant
        .id;
    let viewer = h
        .composition
        .services
        .keys
        .issue(
            tenant,
            &NewApiKey {
                name: DisplayName::new("viewer").unwrap(),
                access: Access::Role(Role::Viewer),
                expires_at: None,
            },
        )
        .await
        .unwrap();
    let viewer = Harness {
        app: h.app.clone(),
        key: viewer.token.expose().to_owned(),
        composition: super::Wired::over(h.composition.store().clone()),
    };
    let lead = json!({"first_name": "Ada", "last_name": "Lovelace"});
    for _ in 0..5 {
        let r = viewer.json(Method::POST, "/v1/leads", lead.clone()).await;
        assert_problem(&r, StatusCode::FORBIDDEN, None);
        assert!(
            !r.headers.contains_key("ratelimit"),
            "never reached the limiter"
        );
    }
    // The tenant's three writes are all still there.
    for _ in 0..2 {
        let r = h.json(Method::POST, "/v1/leads", lead.clone()).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
}

#[tokio::test]
async fn without_limits_there_are_no_headers() {
    let unlimited = harness().await;
    let r = unlimited.send(Method::GET, "/v1/leads", &[], None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        !r.headers.contains_key("ratelimit"),
        "no limits, no headers"
    );
    assert!(!r.headers.contains_key("ratelimit-policy"));
}

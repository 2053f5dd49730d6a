//! The shared rate limiter on a real Redis: it answers as the local one
//! does, two instances sharing Redis hold a tenant to its limit together,
//! and with Redis stopped each instance goes on under its local limit
//! (never refusing everyone, never letting everything through), then back
//! to the shared state when Redis returns.

use std::time::{Duration, Instant};

use leadline_cache::{CacheSettings, LocalRateLimiter, SharedRateLimiter};
use leadline_domain::{ApiKeyId, RateLimit, RouteClass, TenantId};
use leadline_ports::{RateLimiter, RateLimits, RateSource};
use leadline_testsupport::OwnedRedisServer;

fn limits(key: (f64, u32), tenant: (f64, u32)) -> RateLimits {
    RateLimits {
        key: RateLimit::new(key.0, key.1).expect("a valid limit"),
        tenant: RateLimit::new(tenant.0, tenant.1).expect("a valid limit"),
    }
}

fn shared(url: &str) -> SharedRateLimiter {
    SharedRateLimiter::connect(&CacheSettings {
        redis_timeout_ms: 200,
        ..CacheSettings::for_redis(url)
    })
    .expect("a valid URL")
}

#[tokio::test]
async fn shared_and_local_give_the_same_answers() {
    let url = leadline_testsupport::redis().url();
    let shared = shared(&url);
    let local = LocalRateLimiter::new();
    // Too slow a rate to refill during the test: only bursts count.
    let l = limits((0.001, 3), (0.001, 4));
    for (name, limiter) in [("shared", &shared as &dyn RateLimiter), ("local", &local)] {
        let tenant = TenantId::new();
        let (a, b) = (ApiKeyId::new(), ApiKeyId::new());
        let mut answers = Vec::new();
        for key in [a, a, a, a, b, b, b] {
            let verdict = limiter.check(tenant, key, RouteClass::Write, l).await;
            answers.push((
                verdict.key.allowed,
                verdict.tenant.allowed,
                verdict.key.remaining,
            ));
        }
        assert_eq!(
            answers,
            [
                (true, true, 2),
                (true, true, 1),
                (true, true, 0),
                (false, true, 0),
                (true, true, 2),
                // The tenant refuses; b's own limit would have allowed,
                // and the refusal cost it nothing.
                (true, false, 1),
                (true, false, 1),
            ],
            "{name}"
        );
        let refused = limiter.check(tenant, a, RouteClass::Write, l).await;
        assert!(refused.key.retry_after_secs() >= 1);
        assert!(
            limiter
                .check(tenant, a, RouteClass::Read, l)
                .await
                .allowed()
        );
    }
    let verdict = shared
        .check(TenantId::new(), ApiKeyId::new(), RouteClass::Read, l)
        .await;
    assert_eq!(verdict.source, RateSource::Shared, "Redis answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_hold_a_tenant_to_its_limit_together() {
    let url = leadline_testsupport::redis().url();
    let (a, b) = (shared(&url), shared(&url));
    let tenant = TenantId::new();
    // The tenant may do 100 a second with a burst of 20; each key alone
    // could do far more.
    let l = limits((10_000.0, 10_000), (100.0, 20));
    let window = Duration::from_secs(2);
    let started = Instant::now();
    let hammer = move |limiter: SharedRateLimiter| async move {
        let key = ApiKeyId::new();
        let mut allowed = 0_u32;
        while started.elapsed() < window {
            let verdict = limiter.check(tenant, key, RouteClass::Read, l).await;
            assert_eq!(verdict.source, RateSource::Shared);
            allowed += u32::from(verdict.allowed());
        }
        allowed
    };
    let (from_a, from_b) = tokio::join!(
        tokio::spawn(hammer(a.clone())),
        tokio::spawn(hammer(b.clone()))
    );
    let elapsed = started.elapsed().as_secs_f64();
    let allowed = f64::from(from_a.expect("A's task") + from_b.expect("B's task"));
    let expected = 20.0 + 100.0 * elapsed;
    assert!(
        (allowed - expected).abs() <= expected * 0.10,
        "two instances let {allowed} through in {elapsed:.2} s; the limit allows {expected:.0}"
    );
}

/// Blocking server control, off the async workers.
fn control(what: &str, action: impl FnOnce() -> anyhow::Result<()>) {
    tokio::task::block_in_place(action).unwrap_or_else(|e| panic!("{what}: {e:#}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_stopped_each_instance_limits_by_itself() {
    let mut server = tokio::task::block_in_place(OwnedRedisServer::start).expect("owned Redis");
    let limiter = shared(&server.url());
    let tenant = TenantId::new();
    let key = ApiKeyId::new();
    let l = limits((0.001, 5), (0.001, 100));
    let first = limiter.check(tenant, key, RouteClass::Write, l).await;
    assert_eq!((first.source, first.allowed()), (RateSource::Shared, true));

    control("stop", || server.stop());
    let mut outcomes = Vec::new();
    for _ in 0..8 {
        let verdict = limiter.check(tenant, key, RouteClass::Write, l).await;
        assert_eq!(verdict.source, RateSource::Local, "Redis is down");
        outcomes.push(verdict.allowed());
    }
    // The local state starts afresh: its own burst of five passes, the
    // rest is refused. Neither everyone refused nor everything let through.
    assert_eq!(
        outcomes,
        [true, true, true, true, true, false, false, false]
    );

    control("restart", || server.restart());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let verdict = limiter
            .check(tenant, ApiKeyId::new(), RouteClass::Read, l)
            .await;
        if verdict.source == RateSource::Shared {
            break;
        }
        assert!(Instant::now() < deadline, "never back on Redis");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

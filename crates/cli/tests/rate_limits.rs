//! Rate limits on the real binary: two `leadline serve` processes sharing
//! one Redis hold a tenant to its limit together (within 10 %); with Redis
//! stopped each goes on answering under its own local limit, never
//! refusing everyone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use common::{BIN, Running};
use leadline_testsupport::OwnedRedisServer;

fn leadline(db: &str, redis: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", db)
        .env("LEADLINE_HTTP__BIND", "127.0.0.1:0")
        .env("LEADLINE_CACHE__REDIS_URL", redis)
        // A loaded machine must not push a call past the bound and into the
        // per-instance fallback while the shared limit is measured; a
        // stopped Redis refuses connections at once anyway.
        .env("LEADLINE_CACHE__REDIS_TIMEOUT_MS", "2000")
        .env("LEADLINE_RECALL__PRELOAD_ON_START", "false")
        // The tenant: 50 reads a second, 10 at once. The key alone could
        // do far more.
        .env("LEADLINE_RATE_LIMIT__TENANT__READ__PER_SECOND", "50")
        .env("LEADLINE_RATE_LIMIT__TENANT__READ__BURST", "10")
        .env("LEADLINE_RATE_LIMIT__KEY__READ__PER_SECOND", "100000")
        .env("LEADLINE_RATE_LIMIT__KEY__READ__BURST", "100000");
    cmd
}

fn serve(db: &str, redis: &str) -> (Running, String) {
    let server = Running::start({
        let mut cmd = leadline(db, redis);
        cmd.arg("serve");
        cmd
    });
    let seen = server.wait_for_line("listening on", Duration::from_secs(30));
    let base = seen
        .iter()
        .find_map(|l| l.split("listening on ").nth(1))
        .unwrap()
        .trim()
        .to_owned();
    (server, base)
}

/// GETs `/v1/tenant` on `base` as fast as it answers for `window`;
/// returns (allowed, limited), failing on any other status.
async fn hammer(base: String, key: String, window: Duration) -> (u32, u32) {
    let http = reqwest::Client::new();
    let started = Instant::now();
    let (mut allowed, mut limited) = (0, 0);
    while started.elapsed() < window {
        let res = http
            .get(format!("{base}/v1/tenant"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        match res.status().as_u16() {
            200 => allowed += 1,
            429 => {
                assert!(res.headers().contains_key("retry-after"));
                assert!(res.headers().contains_key("ratelimit"));
                limited += 1;
            }
            other => panic!("{base}: {other}: {}", res.text().await.unwrap()),
        }
    }
    (allowed, limited)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_tenant_limit_and_survive_redis_stopping() {
    let mut redis = tokio::task::block_in_place(OwnedRedisServer::start).expect("owned Redis");
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("rl.db").display());
    common::migrate_up(&db);
    let out = leadline(&db, &redis.url())
        .args(["tenant", "create", "acme"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let (_a, base_a) = serve(&db, &redis.url());
    let (_b, base_b) = serve(&db, &redis.url());

    let window = Duration::from_secs(3);
    let started = Instant::now();
    let (from_a, from_b) = tokio::join!(
        tokio::spawn(hammer(base_a.clone(), key.clone(), window)),
        tokio::spawn(hammer(base_b.clone(), key.clone(), window)),
    );
    let elapsed = started.elapsed().as_secs_f64();
    let ((allowed_a, limited_a), (allowed_b, limited_b)) = (from_a.unwrap(), from_b.unwrap());
    let allowed = f64::from(allowed_a + allowed_b);
    let expected = 10.0 + 50.0 * elapsed;
    assert!(
        (allowed - expected).abs() <= expected * 0.10,
        "two instances allowed {allowed} ({allowed_a} + {allowed_b}) in {elapsed:.2} s; \
         the tenant's limit allows {expected:.0}"
    );
    assert!(
        limited_a > 0 && limited_b > 0,
        "both were held to the shared limit"
    );

    tokio::task::block_in_place(|| redis.stop()).unwrap();
    // Each instance now limits by itself: answers keep coming, some
    // allowed (its own burst and rate), the rest 429, none a 5xx.
    let (after_a, after_b) = tokio::join!(
        tokio::spawn(hammer(base_a, key.clone(), Duration::from_secs(2))),
        tokio::spawn(hammer(base_b, key, Duration::from_secs(2))),
    );
    for (allowed, limited) in [after_a.unwrap(), after_b.unwrap()] {
        assert!(
            allowed >= 10,
            "an instance stopped serving: {allowed} allowed"
        );
        assert!(limited > 0, "an instance stopped limiting");
    }
}

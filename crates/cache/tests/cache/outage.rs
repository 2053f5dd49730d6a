//! Redis down, slow or gone: every call still succeeds, quickly, and the
//! cache catches up by itself when Redis is back.

use std::future::Future;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use leadline_cache::{CacheSettings, TwoTierCache};
use leadline_ports::ContextCache;
use leadline_testsupport::OwnedRedisServer;

use crate::support::{Store, two_tier, until};

/// With `redis_timeout_ms` = 50, a call that waits on Redis at most twice
/// (read, then write or invalidate) stays well within this.
const CALL_BOUND: Duration = Duration::from_millis(500);

/// Runs `call` and checks it returned within [`CALL_BOUND`].
async fn bounded<T>(what: &str, call: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let answer = call.await;
    let took = started.elapsed();
    assert!(took < CALL_BOUND, "{what} took {took:?}");
    answer
}

/// Blocking server control, off the async workers.
fn control(what: &str, action: impl FnOnce() -> anyhow::Result<()>) {
    tokio::task::block_in_place(action).unwrap_or_else(|e| panic!("{what}: {e:#}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_mid_test_costs_nothing_and_is_caught_up_after() {
    let mut server = tokio::task::block_in_place(OwnedRedisServer::start).expect("owned Redis");
    let url = server.url();
    let (a, b) = (two_tier(&url).await, two_tier(&url).await);
    let warm = Store::new();
    bounded(
        "warm-up",
        a.get_or_load(warm.tenant, warm.lead, warm.loader()),
    )
    .await
    .expect("loads");

    control("stop", || server.stop());
    until(Duration::from_secs(3), async || !a.subscribed())
        .await
        .expect("A notices the lost subscription");

    // During the outage: loads, L1 hits and invalidations, all fine and fast.
    let during = warm.other_lead();
    for round in 0..10 {
        let store = warm.other_lead();
        let context = bounded(
            "get_or_load, Redis down",
            a.get_or_load(store.tenant, store.lead, store.loader()),
        )
        .await
        .expect("served from the loader");
        assert_eq!(context.parse().expect("a context").lead.id, store.lead);
        bounded(
            "get_or_load of a kept key, Redis down",
            a.get_or_load(during.tenant, during.lead, during.loader()),
        )
        .await
        .expect("served");
        bounded(
            "invalidate, Redis down",
            a.invalidate(store.tenant, store.lead),
        )
        .await;
        assert_eq!(
            during.loads(),
            1,
            "round {round}: loaded once, then L1 hits"
        );
    }
    assert!(
        a.stats().l2.errors > 0,
        "the outage is visible in the stats"
    );
    assert_eq!(a.stats().invalidations_sent, 0);

    control("restart", || server.restart());
    let restarted = Instant::now();
    until(Duration::from_secs(5), async || a.subscribed())
        .await
        .expect("A resubscribes by itself");
    let resubscribed = restarted.elapsed();
    // What A loaded during the outage may have missed invalidations: gone.
    a.get_or_load(during.tenant, during.lead, during.loader())
        .await
        .expect("reloads");
    assert_eq!(
        during.loads(),
        2,
        "L1 was cleared when the subscription came back"
    );

    // The request connection reconnects too: A's writes reach L2 and B
    // reads them again.
    let l2_back = until(Duration::from_secs(5), async || {
        let store = warm.other_lead();
        bounded(
            "get_or_load after restart",
            a.get_or_load(store.tenant, store.lead, store.loader()),
        )
        .await
        .expect("A loads");
        bounded(
            "get_or_load after restart",
            b.get_or_load(store.tenant, store.lead, store.loader()),
        )
        .await
        .expect("B reads");
        store.loads() == 1
    })
    .await
    .map(|_| restarted.elapsed())
    .expect("L2 hits again within 5 s of the restart");
    assert!(b.stats().l2.hits > 0);
    // The ten invalidations Redis missed were replayed (to a Redis that
    // restarted empty, so they changed nothing, harmlessly).
    until(Duration::from_secs(2), async || {
        a.stats().invalidations_sent == 10
    })
    .await
    .expect("A replays what Redis missed");
    eprintln!(
        "after the Redis restart: resubscribed in {resubscribed:?}, L2 hits again after \
         {l2_back:?}"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_at_start_is_not_an_error() {
    // A port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port();
    let started = Instant::now();
    let cache = TwoTierCache::connect(&CacheSettings::for_redis(&format!(
        "redis://127.0.0.1:{port}"
    )))
    .await
    .expect("Redis being down is not a settings problem");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "connect waited {took:?}");
    assert!(!cache.subscribed());
    let store = Store::new();
    for _ in 0..3 {
        bounded(
            "get_or_load, no Redis",
            cache.get_or_load(store.tenant, store.lead, store.loader()),
        )
        .await
        .expect("served");
    }
    bounded(
        "invalidate, no Redis",
        cache.invalidate(store.tenant, store.lead),
    )
    .await;
    assert_eq!(store.loads(), 1);
    assert!(cache.stats().l2.errors > 0);
    cache.shutdown().await;
}

/// A Redis that accepts connections but never answers (a listener nobody
/// reads from): every call still returns within the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_redis_is_bounded_by_the_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    // Accept and hold connections without ever replying.
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let started = Instant::now();
    let cache = TwoTierCache::connect(&CacheSettings::for_redis(&format!(
        "redis://127.0.0.1:{port}"
    )))
    .await
    .expect("connects degraded");
    assert!(started.elapsed() < Duration::from_secs(2));
    let store = Store::new();
    for _ in 0..3 {
        let other = store.other_lead();
        bounded(
            "get_or_load, silent Redis",
            cache.get_or_load(other.tenant, other.lead, other.loader()),
        )
        .await
        .expect("served");
        bounded(
            "invalidate, silent Redis",
            cache.invalidate(other.tenant, other.lead),
        )
        .await;
    }
    cache.shutdown().await;
    hold.abort();
}

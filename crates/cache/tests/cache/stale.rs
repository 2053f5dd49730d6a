//! Stale-if-error: a copy past its freshness is served while the store is
//! unavailable, within the window, and not after.

use std::time::Duration;

use leadline_cache::CacheSettings;
use leadline_ports::{ContextCache, GetLeadError};

use crate::support::{Behaviour, Store, redis_get, shared_url, two_tier_with, until, value_key};

/// Exact window edges with a paused tokio clock. L1 only: the paused clock
/// would fire the Redis timeouts at once (the runtime auto-advances when
/// idle), and Redis's own TTLs run on real time anyway. moka's expiry also
/// runs on the real clock, so the entry (kept `l1_ttl + stale` = 15 s real
/// time) is still there; only the freshness decision, which reads
/// `tokio::time::Instant`, sees the paused clock.
#[tokio::test(start_paused = true)]
async fn stale_copy_is_served_within_the_window_only() {
    let cache = two_tier_with(CacheSettings {
        l1_ttl_secs: 10,
        stale_if_error_secs: 5,
        ..CacheSettings::default()
    })
    .await;
    let store = Store::new();
    cache
        .get_or_load(store.tenant, store.lead, store.loader())
        .await
        .expect("loads");

    store.behave(Behaviour::Unavailable);
    tokio::time::advance(Duration::from_secs(9)).await;
    cache
        .get_or_load(store.tenant, store.lead, store.loader())
        .await
        .expect("still fresh");
    assert_eq!(store.loads(), 1, "a fresh copy is served without loading");

    tokio::time::advance(Duration::from_secs(3)).await; // 12 s: stale, in the window
    let stale = cache
        .get_or_load(store.tenant, store.lead, store.loader())
        .await
        .expect("the stale copy");
    assert_eq!(stale.parse().expect("a context").lead.id, store.lead);
    assert_eq!(store.loads(), 2, "the loader was tried first");
    let stats = cache.stats();
    assert_eq!((stats.stale_served, stats.load_errors), (1, 1));

    tokio::time::advance(Duration::from_secs(4)).await; // 16 s: past 10 + 5
    let error = cache
        .get_or_load(store.tenant, store.lead, store.loader())
        .await
        .expect_err("too old to serve");
    assert!(matches!(error, GetLeadError::Unavailable(_)), "{error:?}");
    assert_eq!(cache.stats().stale_served, 1);

    store.behave(Behaviour::Answer);
    cache
        .get_or_load(store.tenant, store.lead, store.loader())
        .await
        .expect("the store is back");
    assert_eq!(store.loads(), 4);
}

/// L1's freshness in the test on the real clock.
const L1_TTL: Duration = Duration::from_secs(1);

/// The same with Redis, on the real clock (1 s TTLs): once Redis has expired
/// its copy (polled for, so a little over a second) L1's is past freshness
/// too, so the loader runs, fails, and the stale L1 copy is served. An
/// invalidated copy is never served stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_copy_with_redis_and_real_time() {
    let url = shared_url();
    let cache = two_tier_with(CacheSettings {
        l1_ttl_secs: L1_TTL.as_secs(),
        l2_ttl_secs: 1,
        stale_if_error_secs: 30,
        ..CacheSettings::for_redis(&url)
    })
    .await;
    let store = Store::new();
    let invalidated = store.other_lead();
    for s in [&store, &invalidated] {
        cache
            .get_or_load(s.tenant, s.lead, s.loader())
            .await
            .expect("loads");
    }
    // L1 keeps a copy before Redis gets it, so once Redis has expired it
    // (Redis's TTL, real time) L1's is past freshness too; the clock check
    // says so in so many words.
    let loaded = std::time::Instant::now();
    assert!(
        redis_get(&url, &value_key(&store)).await.is_some(),
        "L2 holds the copy at first"
    );
    until(Duration::from_secs(5), async || {
        loaded.elapsed() > L1_TTL && redis_get(&url, &value_key(&store)).await.is_none()
    })
    .await
    .expect("Redis expires the copy after its 1 s TTL");
    store.behave(Behaviour::Unavailable);
    invalidated.behave(Behaviour::Unavailable);
    cache
        .get_or_load(store.tenant, store.lead, store.loader())
        .await
        .expect("stale copy");
    assert_eq!(store.loads(), 2);
    assert_eq!(cache.stats().stale_served, 1);
    assert_eq!(cache.stats().l2.hits, 0, "L2 had expired too");

    cache.invalidate(invalidated.tenant, invalidated.lead).await;
    let error = cache
        .get_or_load(invalidated.tenant, invalidated.lead, invalidated.loader())
        .await
        .expect_err("no copy after an invalidation");
    assert!(matches!(error, GetLeadError::Unavailable(_)), "{error:?}");
    assert_eq!(cache.stats().stale_served, 1);
}

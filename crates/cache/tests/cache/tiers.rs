//! Hits, misses and loads across the two tiers and two instances; errors
//! that must not be cached; the null cache; size-weighed eviction.

use std::time::Duration;

use leadline_cache::{CacheSettings, NullCache};
use leadline_ports::{ContextCache, GetLeadError};

use crate::support::{
    Behaviour, Store, redis_get, shared_url, two_tier, two_tier_with, until, value_key,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_call_hits_l1_and_another_instance_hits_l2() {
    let url = shared_url();
    let (a, b) = (two_tier(&url).await, two_tier(&url).await);
    let store = Store::new();

    let first = a
        .get_or_load(store.tenant, store.lead, store.loader())
        .await
        .expect("loads");
    assert_eq!(first.parse().expect("a context").lead.id, store.lead);
    assert_eq!(store.loads(), 1);
    let stats = a.stats();
    assert_eq!((stats.l1.hits, stats.l1.misses), (0, 1));
    assert_eq!((stats.l2.hits, stats.l2.misses), (0, 1));
    assert_eq!((stats.loads, stats.load_errors), (1, 0));

    let second = a
        .get_or_load(store.tenant, store.lead, store.loader())
        .await
        .expect("from L1");
    assert_eq!(second, first);
    assert_eq!(store.loads(), 1, "an L1 hit runs no loader");
    assert_eq!(a.stats().l1.hits, 1);

    let from_l2 = b
        .get_or_load(store.tenant, store.lead, store.loader())
        .await
        .expect("from L2");
    assert_eq!(from_l2, first, "the same document, byte for byte");
    assert_eq!(store.loads(), 1, "instance B found A's copy in Redis");
    let stats = b.stats();
    assert_eq!((stats.l1.misses, stats.l2.hits, stats.loads), (1, 1, 0));
    b.get_or_load(store.tenant, store.lead, store.loader())
        .await
        .expect("from B's L1");
    assert_eq!(b.stats().l1.hits, 1);
    assert_eq!(store.loads(), 1);
    assert_eq!(a.stats().l2.errors + b.stats().l2.errors, 0);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_other_than_unavailable_are_returned_and_not_cached() {
    let url = shared_url();
    let cache = two_tier(&url).await;
    let store = Store::new();
    for (behaviour, round) in [(Behaviour::NotFound, 1), (Behaviour::NotFound, 2)] {
        store.behave(behaviour);
        let error = cache
            .get_or_load(store.tenant, store.lead, store.loader())
            .await
            .expect_err("not found");
        assert!(matches!(error, GetLeadError::NotFound), "{error:?}");
        assert_eq!(store.loads(), round, "NotFound is not cached");
    }
    store.behave(Behaviour::Unknown);
    let error = cache
        .get_or_load(store.tenant, store.lead, store.loader())
        .await
        .expect_err("unknown");
    assert!(
        matches!(&error, GetLeadError::Unknown(cause) if cause.to_string() == "boom"),
        "the leader gets the loader's own error: {error:?}"
    );
    assert_eq!(
        redis_get(&url, &value_key(&store)).await,
        None,
        "nothing in L2"
    );
    store.behave(Behaviour::Answer);
    cache
        .get_or_load(store.tenant, store.lead, store.loader())
        .await
        .expect("found now");
    assert_eq!(store.loads(), 4, "the lead is loaded once it exists");
    let stats = cache.stats();
    assert_eq!((stats.loads, stats.load_errors), (4, 3));
    assert!(redis_get(&url, &value_key(&store)).await.is_some());
}

/// During a rolling deploy Redis holds copies the other release wrote. One
/// without this build's header (here: the bare JSON an earlier release
/// kept) is a miss: loaded from the store and overwritten, not served, and
/// not counted as a Redis error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_from_another_release_is_reloaded_and_replaced() {
    let url = shared_url();
    let a = two_tier(&url).await;
    let store = Store::new();
    let bare = a
        .get_or_load(store.tenant, store.lead, store.loader())
        .await
        .expect("loads")
        .bytes()
        .clone();
    let mut connection = redis::Client::open(url.as_str())
        .expect("a Redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis");
    let _: () = redis::cmd("SET")
        .arg(value_key(&store))
        .arg(bare.as_ref())
        .query_async(&mut connection)
        .await
        .expect("SET");

    let b = two_tier(&url).await;
    b.get_or_load(store.tenant, store.lead, store.loader())
        .await
        .expect("loads");
    let stats = b.stats();
    assert_eq!((stats.l2.hits, stats.l2.errors, stats.loads), (0, 0, 1));
    let framed = redis_get(&url, &value_key(&store))
        .await
        .expect("rewritten");
    assert!(
        leadline_ports::ContextJson::from_shared(framed.into(), store.tenant, store.lead).is_ok(),
        "replaced by a copy this build reads"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn null_cache_always_loads() {
    let store = Store::new();
    let cache = leadline_cache::build(&CacheSettings {
        enabled: false,
        ..CacheSettings::default()
    })
    .await
    .expect("disabled cache builds");
    for round in 1..=3 {
        cache
            .get_or_load(store.tenant, store.lead, store.loader())
            .await
            .expect("loads");
        assert_eq!(store.loads(), round);
    }
    cache.invalidate(store.tenant, store.lead).await;
    let stats = cache.stats();
    assert_eq!(stats.loads, 3);
    assert_eq!((stats.l1, stats.l2), Default::default());

    let null = NullCache::new();
    store.behave(Behaviour::NotFound);
    assert!(matches!(
        null.get_or_load(store.tenant, store.lead, store.loader())
            .await,
        Err(GetLeadError::NotFound)
    ));
    assert_eq!((null.stats().loads, null.stats().load_errors), (1, 1));
}

/// L1 is weighed in serialized bytes: a budget of a few contexts keeps only a
/// few, and the rest are counted as evictions.
#[tokio::test]
async fn l1_is_bounded_by_bytes_and_counts_evictions() {
    let cache = two_tier_with(CacheSettings {
        l1_capacity_bytes: 4 * 1024,
        ..CacheSettings::default()
    })
    .await;
    let first = Store::new();
    for _ in 0..100 {
        let store = first.other_lead();
        cache
            .get_or_load(store.tenant, store.lead, store.loader())
            .await
            .expect("loads");
    }
    // moka applies its policy in batches; keep asking until it has.
    until(Duration::from_secs(5), async || {
        if cache.stats().l1.evictions >= 50 {
            return true;
        }
        let store = first.other_lead();
        cache
            .get_or_load(store.tenant, store.lead, store.loader())
            .await
            .expect("loads");
        false
    })
    .await;
    let evictions = cache.stats().l1.evictions;
    assert!(evictions >= 50, "only {evictions} evictions for 4 KiB");
}

//! `hot_keys`: the leads the fleet loaded last, for warming a new instance.
//! On a Redis of its own: the hot set is fleet-wide, so on the shared server
//! other tests' loads would mix in.

use std::time::{Duration, Instant};

use leadline_ports::ContextCache;
use leadline_testsupport::OwnedRedisServer;

use crate::support::{Store, pause_redis, two_tier, unix_ms, until};

/// With `redis_timeout_ms` = 50.
const BOUND: Duration = Duration::from_millis(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_keys_are_the_latest_loads_most_recent_first() {
    let server = tokio::task::block_in_place(OwnedRedisServer::start).expect("owned Redis");
    let url = server.url();
    let (a, b) = (two_tier(&url).await, two_tier(&url).await);
    assert_eq!(a.hot_keys(10).await, [], "nothing loaded yet");
    let first = Store::new();
    let stores: Vec<Store> = (0..5)
        .map(|i| if i == 0 { first.clone() } else { Store::new() })
        .collect();
    for store in &stores {
        a.get_or_load(store.tenant, store.lead, store.loader())
            .await
            .expect("loads");
        // The hot set is scored in Unix milliseconds: the next load must see
        // a later one for the order to be defined.
        let loaded = unix_ms();
        until(Duration::from_secs(1), async || unix_ms() > loaded)
            .await
            .expect("the clock moves on");
    }
    let ids = |stores: &[&Store]| -> Vec<_> { stores.iter().map(|s| (s.tenant, s.lead)).collect() };
    let newest = ids(&[&stores[4], &stores[3], &stores[2]]);
    assert_eq!(a.hot_keys(3).await, newest);
    assert_eq!(b.hot_keys(3).await, newest, "fleet-wide");
    assert_eq!(a.hot_keys(100).await.len(), 5);
    assert_eq!(a.hot_keys(0).await, []);

    // Hits record nothing, neither in L1 nor in L2 (B's lookup is a cold
    // one for B, but no loader ran).
    a.get_or_load(first.tenant, first.lead, first.loader())
        .await
        .expect("L1");
    b.get_or_load(first.tenant, first.lead, first.loader())
        .await
        .expect("L2");
    assert_eq!(first.loads(), 1);
    assert_eq!(a.hot_keys(3).await, newest);

    // A written lead stays hot, and moves up when it is loaded again.
    a.invalidate(first.tenant, first.lead).await;
    assert!(a.hot_keys(5).await.contains(&(first.tenant, first.lead)));
    b.get_or_load(first.tenant, first.lead, first.loader())
        .await
        .expect("reloads");
    assert_eq!(first.loads(), 2);
    assert_eq!(a.hot_keys(1).await, ids(&[&first]));

    // What is not `{tenant}:{lead}` is skipped.
    let client = redis::Client::open(url.as_str()).expect("URL");
    let mut redis = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let () = redis::cmd("ZADD")
        .arg("leadline:hot")
        .arg(u64::MAX >> 12)
        .arg("not-a-lead")
        .query_async(&mut redis)
        .await
        .expect("ZADD");
    assert_eq!(a.hot_keys(2).await, ids(&[&first]), "the junk took a slot");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_keys_is_empty_and_quick_when_redis_does_not_answer() {
    let mut server = tokio::task::block_in_place(OwnedRedisServer::start).expect("owned Redis");
    let url = server.url();
    let cache = two_tier(&url).await;
    let store = Store::new();
    cache
        .get_or_load(store.tenant, store.lead, store.loader())
        .await
        .expect("loads");
    assert_eq!(cache.hot_keys(10).await.len(), 1);

    let timed = async |cache: &leadline_cache::TwoTierCache| {
        let started = Instant::now();
        let keys = cache.hot_keys(10).await;
        (keys, started.elapsed())
    };
    pause_redis(&url, "ALL", Duration::from_millis(500)).await;
    let (keys, took) = timed(&cache).await;
    assert!(keys.is_empty(), "paused Redis: {keys:?}");
    assert!(took < BOUND, "paused Redis: took {took:?}");

    tokio::task::block_in_place(|| server.stop()).expect("stop");
    let (keys, took) = timed(&cache).await;
    assert!(keys.is_empty(), "stopped Redis: {keys:?}");
    assert!(took < BOUND, "stopped Redis: took {took:?}");
    eprintln!("hot_keys with Redis stopped answered (empty) in {took:?}");
    cache.shutdown().await;
}

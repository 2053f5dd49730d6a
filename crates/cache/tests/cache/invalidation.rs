//! Invalidation reaches A's L1, L2 and B's L1; how fast it reaches B.

use std::time::{Duration, Instant};

use leadline_ports::ContextCache;
use leadline_testsupport::OwnedRedisServer;

use crate::support::{Store, redis_get, two_tier, until, value_key};

/// Spins (yielding) until `condition` holds, for at most a second: unlike
/// [`until`], it never sleeps, so the propagation time it measures is not
/// rounded up to a pause.
async fn until_spin(mut condition: impl FnMut() -> bool) -> Option<()> {
    let started = Instant::now();
    while !condition() {
        if started.elapsed() > Duration::from_secs(1) {
            return None;
        }
        tokio::task::yield_now().await;
    }
    Some(())
}

/// On a Redis of its own: the invalidation channel is one per Redis, so on
/// the shared server other tests' invalidations would reach B too and spoil
/// both the exact counts and the timing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_on_a_clears_a_l2_and_b_and_reports_propagation_time() {
    let server = tokio::task::block_in_place(OwnedRedisServer::start).expect("owned Redis");
    let url = server.url();
    let (a, b) = (two_tier(&url).await, two_tier(&url).await);
    const ROUNDS: usize = 20;
    let mut propagation = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let store = Store::new();
        a.get_or_load(store.tenant, store.lead, store.loader())
            .await
            .expect("A loads");
        b.get_or_load(store.tenant, store.lead, store.loader())
            .await
            .expect("B from L2");
        assert_eq!(store.loads(), 1);
        assert!(redis_get(&url, &value_key(&store)).await.is_some());

        store.write(2);
        let received_before = b.stats().invalidations_received;
        let started = Instant::now();
        a.invalidate(store.tenant, store.lead).await;
        until_spin(|| b.stats().invalidations_received > received_before)
            .await
            .expect("B hears of the invalidation within a second");
        // From the start of A's invalidate() to B having dropped its copy
        // (the counter is bumped after the removal).
        propagation.push(started.elapsed());

        assert_eq!(
            redis_get(&url, &value_key(&store)).await,
            None,
            "gone from L2"
        );
        let on_b = b
            .get_or_load(store.tenant, store.lead, store.loader())
            .await
            .expect("B reloads");
        assert_eq!(
            on_b.parse().expect("a context").lead.version,
            2,
            "round {round}: B's L1 copy was dropped"
        );
        assert_eq!(store.loads(), 2, "B missed L1 and L2 and ran its loader");
        let on_a = a
            .get_or_load(store.tenant, store.lead, store.loader())
            .await
            .expect("A");
        assert_eq!(
            on_a.parse().expect("a context").lead.version,
            2,
            "A's L1 copy was dropped too"
        );
    }
    assert_eq!(a.stats().invalidations_sent, ROUNDS as u64);
    assert_eq!(b.stats().invalidations_received, ROUNDS as u64);
    assert_eq!(
        a.stats().invalidations_received,
        0,
        "an instance skips its own echo"
    );
    propagation.sort();
    eprintln!(
        "invalidation propagation A→B over {ROUNDS} rounds (A.invalidate() start → B's L1 \
         copy dropped, local Redis): min {:?}, median {:?}, max {:?}",
        propagation[0],
        propagation[ROUNDS / 2],
        propagation[ROUNDS - 1]
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// Shutdown stops the subscriber and the Redis traffic; the cache still
/// answers, in-process only. On a Redis of its own, so that a third instance,
/// C, still subscribed, hears exactly A's invalidation: once C has, B would
/// have too if it still listened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_listening_and_leaves_an_in_process_cache() {
    let server = tokio::task::block_in_place(OwnedRedisServer::start).expect("owned Redis");
    let url = server.url();
    let (a, b, c) = (
        two_tier(&url).await,
        two_tier(&url).await,
        two_tier(&url).await,
    );
    b.shutdown().await;
    assert!(!b.subscribed());
    let store = Store::new();
    b.get_or_load(store.tenant, store.lead, store.loader())
        .await
        .expect("loads without Redis");
    a.invalidate(store.tenant, store.lead).await;
    until(Duration::from_secs(5), async || {
        c.stats().invalidations_received == 1
    })
    .await
    .expect("C, still subscribed, hears of the invalidation");
    assert_eq!(b.stats().invalidations_received, 0);
    assert_eq!(
        b.stats().l2.hits + b.stats().l2.misses,
        0,
        "no L2 after shutdown"
    );
    b.get_or_load(store.tenant, store.lead, store.loader())
        .await
        .expect("L1");
    assert_eq!(b.stats().l1.hits, 1);
    for cache in [a, c] {
        cache.shutdown().await;
    }
}

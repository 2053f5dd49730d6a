//! Invalidations that could not reach Redis are replayed when it answers
//! again, on a Redis that kept its data through the outage.

use std::time::{Duration, Instant};

use leadline_domain::LeadContext;
use leadline_ports::ContextCache;
use leadline_testsupport::OwnedRedisServer;

use crate::support::{
    Store, kill_request_connections, pause_redis, redis_get, two_tier, until, value_key,
};

/// How long writes are paused.
const PAUSE: Duration = Duration::from_millis(1000);
/// How long after Redis answers again the replay may take: the replayer
/// retries at least every 500 ms.
const REPLAY_BOUND: Duration = Duration::from_secs(2);

/// The version of the context Redis holds for `store`, if any.
async fn version_in_redis(url: &str, store: &Store) -> Option<i64> {
    let bytes = redis_get(url, &value_key(store)).await?;
    let context: LeadContext =
        leadline_ports::ContextJson::from_shared(bytes.into(), store.tenant, store.lead)
            .expect("a copy this build framed")
            .parse()
            .expect("a context");
    Some(context.lead.version)
}

/// Writes are paused, so A's invalidation gets no answer; then the request
/// connections are closed, which drops the invalidation waiting on A's.
/// (With `CLIENT PAUSE … ALL` alone, the waiting transaction runs when the
/// pause ends and a cache without replays passes too; this outage does not
/// forgive.) B's subscription stands throughout, so only a replayed
/// `PUBLISH` can tell B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_redis_missed_is_replayed_when_it_answers() {
    let server = tokio::task::block_in_place(OwnedRedisServer::start).expect("owned Redis");
    let url = server.url();
    let (a, b) = (two_tier(&url).await, two_tier(&url).await);
    let store = Store::new();
    b.get_or_load(store.tenant, store.lead, store.loader())
        .await
        .expect("B loads v1");
    a.get_or_load(store.tenant, store.lead, store.loader())
        .await
        .expect("A reads v1 from L2");
    assert_eq!(
        (store.loads(), version_in_redis(&url, &store).await),
        (1, Some(1))
    );

    pause_redis(&url, "WRITE", PAUSE).await;
    let paused = Instant::now();
    store.write(2);
    let started = Instant::now();
    a.invalidate(store.tenant, store.lead).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(500),
        "invalidate took {took:?}"
    );
    assert_eq!(a.stats().invalidations_sent, 0, "Redis did not answer");
    kill_request_connections(&url).await;

    // The outage: Redis and B still hold v1.
    assert_eq!(version_in_redis(&url, &store).await, Some(1));
    let on_b = b
        .get_or_load(store.tenant, store.lead, store.loader())
        .await
        .expect("B");
    assert_eq!(
        on_b.parse().expect("a context").lead.version,
        1,
        "B has not heard yet"
    );
    // A itself does not read v1 back from Redis (reads still work).
    let on_a = a
        .get_or_load(store.tenant, store.lead, store.loader())
        .await
        .expect("A loads");
    assert_eq!(
        on_a.parse().expect("a context").lead.version,
        2,
        "A skipped L2 for its pending key"
    );
    assert_eq!(store.loads(), 2);
    assert!(
        paused.elapsed() < PAUSE,
        "the checks above ran during the pause"
    );

    // After the pause: the replay reaches Redis and B.
    let within = (PAUSE + REPLAY_BOUND).saturating_sub(paused.elapsed());
    let received = until(within, async || b.stats().invalidations_received > 0)
        .await
        .map(|_| paused.elapsed().saturating_sub(PAUSE))
        .expect("B hears of the replayed invalidation");
    assert_eq!(version_in_redis(&url, &store).await, None, "gone from L2");
    // Counted once a replay is answered: the one B heard may be an earlier
    // try that timed out while waiting for the pause to end.
    until(REPLAY_BOUND, async || a.stats().invalidations_sent >= 1)
        .await
        .expect("the replay is counted");

    let c = two_tier(&url).await;
    let on_c = c
        .get_or_load(store.tenant, store.lead, store.loader())
        .await
        .expect("C");
    assert_eq!(on_c.parse().expect("a context").lead.version, 2);
    assert_eq!(store.loads(), 3, "C loaded v2; there was no v1 in L2");
    let on_b = b
        .get_or_load(store.tenant, store.lead, store.loader())
        .await
        .expect("B");
    assert_eq!(
        on_b.parse().expect("a context").lead.version,
        2,
        "B dropped v1"
    );
    eprintln!("replayed invalidation reached B {received:?} after writes resumed");
    for cache in [a, b, c] {
        cache.shutdown().await;
    }
}

//! Many callers, one loader run.

use std::sync::Arc;
use std::time::Duration;

use leadline_cache::CacheSettings;
use leadline_ports::ContextCache;

use crate::support::{Store, shared_url, two_tier_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_cold_calls_run_the_loader_once() {
    let with_redis = CacheSettings::for_redis(&shared_url());
    for settings in [with_redis, CacheSettings::default()] {
        let cache: Arc<dyn ContextCache> = Arc::new(two_tier_with(settings.clone()).await);
        let store = Store::new().slowed(Duration::from_millis(50));
        let calls: Vec<_> = (0..50)
            .map(|_| {
                let (cache, store) = (Arc::clone(&cache), store.clone());
                tokio::spawn(async move {
                    cache
                        .get_or_load(store.tenant, store.lead, store.loader())
                        .await
                })
            })
            .collect();
        for call in calls {
            let context = call.await.expect("task").expect("loaded");
            assert_eq!(context.parse().expect("a context").lead.id, store.lead);
        }
        assert_eq!(
            store.loads(),
            1,
            "one loader run for 50 callers (redis: {})",
            settings.redis_url.is_some()
        );
        let stats = cache.stats();
        assert_eq!(stats.loads, 1);
        assert_eq!(stats.l1.hits + stats.l1.misses, 50);
    }
}

/// A caller that starts after an invalidation does not wait for a flight
/// that started before it: it would hand back the pre-write value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_after_an_invalidation_does_not_join_an_older_flight() {
    let cache = Arc::new(two_tier_with(CacheSettings::for_redis(&shared_url())).await);
    let store = Store::new();
    let slow = store.slowed(Duration::from_millis(200));
    let old_flight = {
        let (cache, slow) = (Arc::clone(&cache), slow.clone());
        tokio::spawn(async move {
            cache
                .get_or_load(slow.tenant, slow.lead, slow.loader())
                .await
        })
    };
    slow.read_done.notified().await;
    store.write(2);
    cache.invalidate(store.tenant, store.lead).await;
    let after = cache
        .get_or_load(store.tenant, store.lead, store.loader())
        .await
        .expect("loads");
    assert_eq!(
        after.parse().expect("a context").lead.version,
        2,
        "the read after the write sees it"
    );
    let before = old_flight.await.expect("task").expect("loads");
    assert_eq!(
        before.parse().expect("a context").lead.version,
        1,
        "the old flight's caller gets its own read"
    );
    assert_eq!(store.loads(), 2);
    let kept = cache
        .get_or_load(store.tenant, store.lead, store.loader())
        .await
        .expect("from L1");
    assert_eq!(
        kept.parse().expect("a context").lead.version,
        2,
        "the old flight did not put version 1 back"
    );
    assert_eq!(store.loads(), 2);
}

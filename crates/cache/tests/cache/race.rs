//! The stale re-insert race: a loader reads v1, a write commits v2 and
//! invalidates, the loader returns v1. v1 must end up in no tier.

use std::sync::Arc;
use std::time::Duration;

use leadline_ports::ContextCache;

use crate::support::{Store, redis_get, shared_url, two_tier, value_key};

/// How long the racing loader sleeps after reading: far longer than the
/// write, the invalidation and its delivery take on a local Redis.
const SLOW: Duration = Duration::from_millis(200);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loader_that_read_before_a_write_does_not_reinsert_its_value() {
    let url = shared_url();
    let a = two_tier(&url).await;
    let b = Arc::new(two_tier(&url).await);
    let store = Store::new();
    let slow = store.slowed(SLOW);

    let racing = {
        let (b, slow) = (Arc::clone(&b), slow.clone());
        tokio::spawn(async move { b.get_or_load(slow.tenant, slow.lead, slow.loader()).await })
    };
    // B's loader has read version 1 and sleeps; the write lands meanwhile.
    slow.read_done.notified().await;
    store.write(2);
    a.invalidate(store.tenant, store.lead).await;

    let returned = racing.await.expect("task").expect("loaded");
    assert_eq!(
        returned.parse().expect("a context").lead.version,
        1,
        "the racing caller gets what it read"
    );
    assert_eq!(
        redis_get(&url, &value_key(&store)).await,
        None,
        "L2 refused the write: the generation moved while B was loading"
    );
    let next = b
        .get_or_load(store.tenant, store.lead, store.loader())
        .await
        .expect("reloads");
    assert_eq!(
        next.parse().expect("a context").lead.version,
        2,
        "B's L1 did not keep version 1"
    );
    assert_eq!(store.loads(), 2, "the next lookup ran the loader");

    // And what B stored now is version 2, for everyone.
    let c = two_tier(&url).await;
    let on_c = c
        .get_or_load(store.tenant, store.lead, store.loader())
        .await
        .expect("from L2");
    assert_eq!(on_c.parse().expect("a context").lead.version, 2);
    assert_eq!(store.loads(), 2, "C found version 2 in L2");
}

/// The same race within one instance: only the local generation guards it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_race_on_one_instance() {
    let url = shared_url();
    let a = Arc::new(two_tier(&url).await);
    let store = Store::new();
    let slow = store.slowed(SLOW);
    let racing = {
        let (a, slow) = (Arc::clone(&a), slow.clone());
        tokio::spawn(async move { a.get_or_load(slow.tenant, slow.lead, slow.loader()).await })
    };
    slow.read_done.notified().await;
    store.write(2);
    a.invalidate(store.tenant, store.lead).await;
    assert_eq!(
        racing
            .await
            .expect("task")
            .expect("loaded")
            .parse()
            .expect("a context")
            .lead
            .version,
        1
    );
    assert_eq!(redis_get(&url, &value_key(&store)).await, None);
    let next = a
        .get_or_load(store.tenant, store.lead, store.loader())
        .await
        .expect("reloads");
    assert_eq!(next.parse().expect("a context").lead.version, 2);
    assert_eq!(store.loads(), 2);
}

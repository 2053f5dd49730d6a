//! The cache, the rate limiter and the session store on a real three-node
//! Redis Cluster (`cache.redis_cluster = true`), started locally for each
//! test: every command lands on the node owning its slot (a cross-slot
//! command would fail and be counted in `l2.errors`, which must stay 0), a
//! tenant's keys share a node while tenants spread over all three, the
//! invalidation channel reaches instances subscribed on other nodes, and a
//! stopped node costs no request and is recovered from.

#![allow(
    clippy::unwrap_used,
    reason = "a failed call fails the test, with its error"
)]

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use leadline_cache::{CacheSettings, RedisSessionStore, SharedRateLimiter, TwoTierCache};
use leadline_domain::{ApiKeyId, RateLimit, RouteClass, Session, SessionPolicy, TenantId, UserId};
use leadline_ports::{ContextCache, RateLimiter, RateLimits, RateSource, SessionStore};
use leadline_testsupport::RedisCluster;

use crate::support::{Store, two_tier_with, until};

fn settings(cluster: &RedisCluster) -> CacheSettings {
    CacheSettings {
        redis_cluster: true,
        // A cluster call may follow a redirection; a loaded CI machine
        // needs more than the default 50 ms for that.
        redis_timeout_ms: 500,
        ..CacheSettings::for_redis(&cluster.urls())
    }
}

async fn cluster() -> RedisCluster {
    tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .unwrap()
        .expect("a local three-node Redis Cluster")
}

/// The version of `store`'s lead as `cache` serves it.
async fn version_on(cache: &TwoTierCache, store: &Store) -> i64 {
    cache
        .get_or_load(store.tenant, store.lead, store.loader())
        .await
        .unwrap()
        .parse()
        .unwrap()
        .lead
        .version
}

/// Each node's keys matching `pattern`, asked of the node itself (not
/// through the cluster client, which would hide where they are).
async fn keys_per_node(cluster: &RedisCluster, pattern: &str) -> Vec<Vec<String>> {
    let mut per_node = Vec::new();
    for url in cluster.node_urls() {
        let mut node = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut node)
            .await
            .unwrap();
        per_node.push(keys);
    }
    per_node
}

/// The `{…}` hash tag of a key.
fn tag(key: &str) -> &str {
    key.split_once('{')
        .and_then(|(_, rest)| rest.split_once('}'))
        .map_or(key, |(tag, _)| tag)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_contexts_and_invalidations_across_the_nodes() {
    let cluster = cluster().await;
    let (a, b) = (
        two_tier_with(settings(&cluster)).await,
        two_tier_with(settings(&cluster)).await,
    );
    // Enough tenants that each node holds some: the chance that one of
    // three gets none of 48 is 3 × (2/3)^48, about 1e-8.
    let stores: Vec<Store> = (0..48).map(|_| Store::new()).collect();
    for store in &stores {
        assert_eq!(version_on(&a, store).await, 1);
        assert_eq!(version_on(&b, store).await, 1);
        assert_eq!(store.loads(), 1, "B was served from Redis, not the store");
    }
    let values = keys_per_node(&cluster, "leadline:*:ctx:*").await;
    assert!(
        values.iter().all(|keys| !keys.is_empty()),
        "tenants spread over every node: {:?}",
        values.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert_eq!(values.iter().map(Vec::len).sum::<usize>(), stores.len());

    for store in &stores {
        store.write(2);
        a.invalidate(store.tenant, store.lead).await;
        until(Duration::from_secs(2), async || {
            version_on(&b, store).await == 2
        })
        .await
        .expect("B serves the write within 2 s");
    }
    // A lead's value and generation live on one node, its tenant's.
    let generations = keys_per_node(&cluster, "leadline:*:ctxgen:*").await;
    let mut node_of_tenant = BTreeMap::new();
    for (node, keys) in values.iter().chain(&generations).enumerate() {
        for key in keys {
            let node = node % 3;
            let first = *node_of_tenant.entry(tag(key).to_owned()).or_insert(node);
            assert_eq!(
                first, node,
                "{key} is on another node than its tenant's keys"
            );
        }
    }
    assert_eq!(
        generations.iter().map(Vec::len).sum::<usize>(),
        stores.len()
    );
    let hot = a.hot_keys(1000).await;
    assert!(
        stores.iter().all(|s| hot.contains(&(s.tenant, s.lead))),
        "every load is in the fleet's hot set"
    );
    for (name, cache) in [("A", &a), ("B", &b)] {
        let stats = cache.stats();
        assert_eq!(stats.l2.errors, 0, "{name}: no call failed: {stats:?}");
    }
    assert!(b.stats().invalidations_received >= 48, "{:?}", b.stats());
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_sessions_hold_on_a_cluster() {
    let cluster = cluster().await;
    let (one, two) = (
        SharedRateLimiter::connect(&settings(&cluster)).unwrap(),
        SharedRateLimiter::connect(&settings(&cluster)).unwrap(),
    );
    let limits = RateLimits {
        key: RateLimit::new(0.001, 3).unwrap(),
        tenant: RateLimit::new(0.001, 100).unwrap(),
    };
    // Tenants on every node; each key's burst is shared by both limiters.
    for _ in 0..12 {
        let (tenant, key) = (TenantId::new(), ApiKeyId::new());
        let mut allowed = Vec::new();
        for limiter in [&one, &two, &one, &two] {
            let verdict = limiter.check(tenant, key, RouteClass::Write, limits).await;
            assert_eq!(verdict.source, RateSource::Shared, "Redis answered");
            allowed.push(verdict.allowed());
        }
        assert_eq!(
            allowed,
            [true, true, true, false],
            "one burst of 3 for both"
        );
    }

    let sessions = RedisSessionStore::connect(&settings(&cluster)).unwrap();
    let until_end = Utc::now() + chrono::Duration::minutes(5);
    for _ in 0..12 {
        let (tenant, user) = (TenantId::new(), UserId::new());
        let hashes = [[1u8; 32], [2u8; 32]];
        for hash in hashes {
            let session = Session::begin(tenant, user, hash, SessionPolicy::default(), Utc::now());
            sessions.create(hash, &session, until_end).await.unwrap();
        }
        let back = sessions.get(tenant, hashes[0]).await.unwrap().unwrap();
        assert_eq!(back.user_id, user);
        // The user's index and sessions share the tenant's slot, so this
        // one transaction does not cross slots.
        assert_eq!(sessions.end_all(tenant, user).await.unwrap(), 2);
        assert!(sessions.get(tenant, hashes[1]).await.unwrap().is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_costs_no_request_and_coherence_returns_with_it() {
    let mut cluster = cluster().await;
    let (a, b) = (
        two_tier_with(settings(&cluster)).await,
        two_tier_with(settings(&cluster)).await,
    );
    let stores: Vec<Store> = (0..12).map(|_| Store::new()).collect();
    // The first node is every instance's first choice for its subscription.
    tokio::task::block_in_place(|| cluster.stop_node(0)).unwrap();
    for store in &stores {
        // Served from the store (and the in-process tier) whatever the
        // node holding the tenant's slot does.
        assert_eq!(version_on(&a, store).await, 1);
        store.write(2);
        a.invalidate(store.tenant, store.lead).await;
        assert_eq!(version_on(&a, store).await, 2);
    }
    tokio::task::block_in_place(|| cluster.restart_node(0)).unwrap();
    until(Duration::from_secs(15), async || {
        a.subscribed() && b.subscribed()
    })
    .await
    .expect("both subscribe again");
    // Invalidations A could not deliver were replayed or swept; from here
    // on, every write reaches B.
    for store in &stores {
        assert_eq!(
            version_on(&b, store).await,
            2,
            "B never serves the old write"
        );
        store.write(3);
        a.invalidate(store.tenant, store.lead).await;
        until(Duration::from_secs(5), async || {
            version_on(&b, store).await == 3
        })
        .await
        .expect("B serves the write once the node is back");
    }
    a.shutdown().await;
    b.shutdown().await;
}

/// A node that holds some tenants' keys goes down while the instances stay
/// subscribed through another: a write on A still reaches B at once (B
/// drops its copy and loads from the store), not when the node is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_reaches_the_other_instance_while_its_tenants_node_is_down() {
    let mut cluster = cluster().await;
    let (a, b) = (
        two_tier_with(settings(&cluster)).await,
        two_tier_with(settings(&cluster)).await,
    );
    // Tenants until one lives on the last node (both instances subscribe
    // on the first): a third of them do.
    let mut on_last = None;
    for _ in 0..200 {
        let store = Store::new();
        assert_eq!(version_on(&a, &store).await, 1);
        let last = keys_per_node(&cluster, "leadline:*:ctx:*")
            .await
            .pop()
            .unwrap();
        if last.iter().any(|key| tag(key) == store.tenant.to_string()) {
            on_last = Some(store);
            break;
        }
    }
    let store = on_last.expect("some tenant hashes to the last node");
    assert_eq!(version_on(&b, &store).await, 1, "B holds the old copy");
    tokio::task::block_in_place(|| cluster.stop_node(2)).unwrap();
    store.write(2);
    a.invalidate(store.tenant, store.lead).await;
    assert!(
        a.subscribed() && b.subscribed(),
        "the first node still stands"
    );
    until(Duration::from_secs(2), async || {
        version_on(&b, &store).await == 2
    })
    .await
    .expect("B serves the write while the tenant's node is down");
    a.shutdown().await;
    b.shutdown().await;
}

//! The replayer: one task per [`TwoTierCache`] with Redis, which sends the
//! [pending](crate::pending) invalidations again once Redis answers.
//!
//! It sleeps while nothing is pending. When an invalidation fails it tries
//! at once, then with backoff from 50 ms up to 500 ms; it tries again at
//! once when Redis answers any other call again, or when the invalidation
//! subscription comes back. Each key is replayed exactly as `invalidate`
//! sends it (`INCR ctxgen`, `EXPIRE`, `DEL ctx`, `PUBLISH`), 100 keys per
//! transaction; repeating an invalidation that did land after all is
//! harmless. After an overflow it sweeps instead: deletes every tenant's
//! cached contexts and publishes "drop all" (see [`Shared::sweep`]).
//!
//! Replays count in `invalidations_sent` (one per key, or one per sweep)
//! and are logged.
//!
//! [`TwoTierCache`]: crate::TwoTierCache

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;

use crate::pending::{Pending, Work};
use crate::shared::Shared;
use crate::stats::{Counters, bump};

/// First pause after a failed replay; doubles up to [`MAX_BACKOFF`]. Each
/// try is one call bounded by the request timeout, so trying often costs
/// Redis little, and other instances keep a stale copy until it works.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_millis(500);
/// Keys per replay transaction: keeps each call well within the bound.
const BATCH: usize = 100;

/// Everything the task needs; it holds no reference to the cache itself.
pub(crate) struct Replayer {
    pub(crate) shared: Shared,
    pub(crate) pending: Arc<Pending>,
    pub(crate) stats: Arc<Counters>,
    pub(crate) instance: String,
    /// Changes (or closes) when the cache shuts down.
    pub(crate) stop: watch::Receiver<bool>,
}

impl Replayer {
    pub(crate) async fn run(mut self) {
        let mut backoff = MIN_BACKOFF;
        loop {
            if !self.pending.any() {
                backoff = MIN_BACKOFF;
                tokio::select! {
                    () = self.pending.woken() => continue,
                    _ = self.stop.changed() => return,
                }
            }
            if replay(&self.shared, &self.pending, &self.stats, &self.instance).await {
                backoff = MIN_BACKOFF;
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = self.pending.woken() => {}
                _ = self.stop.changed() => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// Replays what is pending now. `true` when all of it reached Redis (more
/// may have been queued meanwhile), `false` when Redis stopped answering.
pub(crate) async fn replay(
    shared: &Shared,
    pending: &Pending,
    stats: &Counters,
    instance: &str,
) -> bool {
    match pending.work() {
        None => true,
        Some(Work::Sweep(sequence)) => {
            let Some(deleted) = shared.sweep(instance).await else {
                return false;
            };
            pending.swept(sequence);
            bump(&stats.invalidations_sent);
            tracing::warn!(
                deleted,
                "cache: Redis answers again; more invalidations were missed than could be \
                 replayed one by one, so every cached context in Redis was deleted (other \
                 tenants' too; they reload) and every instance told to clear its in-process tier"
            );
            true
        }
        Some(Work::Keys(keys)) => {
            let mut replayed = 0;
            for batch in keys.chunks(BATCH) {
                let only_keys: Vec<_> = batch.iter().map(|(key, _)| *key).collect();
                if !shared.invalidate_all_of(&only_keys, instance).await {
                    if replayed > 0 {
                        tracing::debug!(
                            replayed,
                            left = keys.len() - replayed,
                            "cache: Redis stopped answering during a replay"
                        );
                    }
                    return false;
                }
                pending.replayed(batch);
                replayed += batch.len();
                stats.invalidations_sent.fetch_add(
                    u64::try_from(batch.len()).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
            }
            tracing::info!(
                replayed,
                "cache: Redis answers again; replayed the invalidations it missed"
            );
            true
        }
    }
}

/// Against a Redis of their own: a sweep deletes every tenant's contexts.
#[cfg(test)]
mod tests {
    use futures::StreamExt as _;
    use leadline_domain::{LeadId, TenantId};
    use leadline_testsupport::OwnedRedisServer;

    use super::*;
    use crate::keys::{HOT_KEYS, INVALIDATION_CHANNEL, generation_key, value_key};

    async fn shared_on(url: &str, pending: &Arc<Pending>, stats: &Arc<Counters>) -> Shared {
        let target = crate::connect::Target::Single(redis::Client::open(url).expect("URL"));
        Shared::new(
            &target,
            Duration::from_millis(500),
            Duration::from_secs(1),
            60,
            Arc::clone(stats),
            Arc::clone(pending),
        )
        .expect("client")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_overflow_is_replayed_as_a_sweep_of_every_context() {
        let server = tokio::task::block_in_place(OwnedRedisServer::start).expect("owned Redis");
        let url = server.url();
        let client = redis::Client::open(url.as_str()).expect("URL");
        let mut redis = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        // More contexts than one SCAN step, of several tenants.
        let keys: Vec<_> = (0..1200)
            .map(|_| (TenantId::new(), LeadId::new()))
            .collect();
        let mut fill = redis::pipe();
        for &(tenant, lead) in &keys {
            fill.set(value_key(tenant, lead), "{}").ignore();
        }
        let (tenant, lead) = keys[0];
        fill.set(generation_key(tenant, lead), 7)
            .ignore()
            .zadd(HOT_KEYS, "x", 1)
            .ignore()
            .set("unrelated", 1)
            .ignore();
        let () = fill.query_async(&mut redis).await.expect("fill");
        let mut messages = client.get_async_pubsub().await.expect("pubsub");
        messages
            .subscribe(INVALIDATION_CHANNEL)
            .await
            .expect("subscribe");

        let (pending, stats) = (Arc::new(Pending::with_capacity(2)), Arc::default());
        let shared = shared_on(&url, &pending, &stats).await;
        for &key in keys.iter().take(3) {
            pending.add(key);
        }
        assert_eq!(pending.size(), (0, true), "overflowed");
        assert!(replay(&shared, &pending, &stats, "me").await);
        assert!(!pending.any());
        assert_eq!(stats.invalidations_sent.load(Ordering::Relaxed), 1);

        let mut left: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut redis)
            .await
            .expect("KEYS (a test server)");
        left.sort();
        let mut expected = vec![
            generation_key(tenant, lead),
            HOT_KEYS.to_owned(),
            "unrelated".to_owned(),
        ];
        expected.sort();
        assert_eq!(left, expected, "every context went, nothing else");
        let message = tokio::time::timeout(Duration::from_secs(1), messages.on_message().next())
            .await
            .expect("a message")
            .expect("the stream");
        assert_eq!(message.get_payload::<String>().expect("text"), "* me");
    }

    /// The same sweep on a three-node cluster: `SCAN` visits every primary,
    /// and the contexts on all three go.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sweep_reaches_every_node_of_a_cluster() {
        let cluster = tokio::task::spawn_blocking(leadline_testsupport::RedisCluster::start)
            .await
            .expect("joins")
            .expect("a local Redis Cluster");
        let settings = crate::CacheSettings {
            redis_cluster: true,
            ..crate::CacheSettings::for_redis(&cluster.urls())
        };
        let target = crate::connect::Target::from_settings(&settings)
            .expect("valid")
            .expect("a target");
        let (pending, stats) = (Arc::new(Pending::with_capacity(1)), Arc::default());
        let shared = Shared::new(
            &target,
            Duration::from_millis(500),
            Duration::from_secs(1),
            60,
            Arc::clone(&stats),
            Arc::clone(&pending),
        )
        .expect("client");
        let mut writer = target
            .connection(Duration::from_secs(1), Duration::from_secs(1))
            .expect("client");
        for _ in 0..300 {
            let (tenant, lead) = (TenantId::new(), LeadId::new());
            let () = redis::cmd("SET")
                .arg(value_key(tenant, lead))
                .arg("{}")
                .query_async(&mut writer)
                .await
                .expect("SET");
        }
        let count = |url: String| async move {
            let client = redis::Client::open(url.as_str()).expect("URL");
            let mut node = client
                .get_multiplexed_async_connection()
                .await
                .expect("connect");
            redis::cmd("KEYS")
                .arg("leadline:*:ctx:*")
                .query_async::<Vec<String>>(&mut node)
                .await
                .expect("KEYS (a test server)")
                .len()
        };
        for url in cluster.node_urls() {
            assert!(count(url).await > 0, "every node holds contexts");
        }
        pending.add((TenantId::new(), LeadId::new()));
        pending.add((TenantId::new(), LeadId::new()));
        assert_eq!(pending.size(), (0, true), "overflowed");
        assert!(replay(&shared, &pending, &stats, "me").await);
        for url in cluster.node_urls() {
            assert_eq!(count(url).await, 0, "the sweep reached every node");
        }
    }
}

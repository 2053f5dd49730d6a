//! [`TwoTierCache`]: L1 (in-process) in front of L2 (Redis), with
//! single-flight fills, generation-guarded writes, pub/sub invalidation and
//! replay of invalidations Redis missed. The crate docs hold the design;
//! this module is its code.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher as _;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use leadline_domain::{LeadId, TenantId};
use leadline_ports::{
    CacheStats, ContextCache, ContextJson, ContextJsonError, ContextLoader, GetLeadError,
    HealthError,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::connect::Target;
use crate::error::CacheError;
use crate::flight::{self, Flights, Role, Served, SharedError};
use crate::local::{Key, Local, Stamp};
use crate::pending::Pending;
use crate::replay::Replayer;
use crate::settings::{CacheSettings, redact_url};
use crate::shared::{Read, Shared};
use crate::stats::{Counters, bump};
use crate::subscriber::Subscriber;

/// How long [`TwoTierCache::connect`] waits for Redis before starting
/// degraded. Only start-up waits this long; requests never do.
const STARTUP_WAIT: Duration = Duration::from_secs(1);
/// Floor of the bound on background Redis work (connecting, subscribing, the
/// subscription's health `PING`): a request-sized bound of a few
/// milliseconds would make a slightly slow network look like an outage, and
/// every false outage clears L1.
const MIN_BACKGROUND_TIMEOUT: Duration = Duration::from_secs(1);
/// How long [`TwoTierCache::shutdown`] lets the subscriber and the replayer
/// finish before aborting them.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

/// The lead-context cache of a service instance: an in-process tier in
/// front of Redis, kept coherent across instances by pub/sub invalidation.
/// See the [crate docs](crate) for the design.
pub struct TwoTierCache {
    local: Local,
    flights: Flights,
    /// `None` without `redis_url`, and after [`TwoTierCache::shutdown`].
    shared: RwLock<Option<Shared>>,
    stats: Arc<Counters>,
    /// Invalidations that could not reach Redis, until they are replayed.
    pending: Arc<Pending>,
    /// Tags this instance's invalidation messages, so it can skip its echo.
    instance: String,
    stale_window: Duration,
    l1_ttl: Duration,
    subscribed: watch::Receiver<bool>,
    /// Dropping it (with the cache) or sending on it stops the subscriber
    /// and the replayer.
    stop: watch::Sender<bool>,
    /// The subscriber and the replayer, while they run.
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for TwoTierCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwoTierCache")
            .field("instance", &self.instance)
            .field("shared", &self.shared())
            .field("subscribed", &self.subscribed())
            .finish_non_exhaustive()
    }
}

impl TwoTierCache {
    /// Builds the cache. With `redis_url` set it spawns the invalidation
    /// subscriber and waits (at most a second) for Redis to answer and the
    /// subscription to stand; if Redis is down it starts degraded, serving
    /// from L1 and the loader, and catches up by itself when Redis is back.
    ///
    /// Must be called within a tokio runtime.
    ///
    /// # Errors
    /// [`CacheError::InvalidSettings`] when [`CacheSettings::problems`] finds
    /// any; never because Redis is unreachable.
    pub async fn connect(settings: &CacheSettings) -> Result<Self, CacheError> {
        let problems = settings.problems();
        if !problems.is_empty() {
            return Err(CacheError::InvalidSettings(problems));
        }
        let stats = Arc::new(Counters::default());
        let local = Local::new(
            settings.l1_capacity_bytes,
            settings.l1_ttl(),
            settings.stale_window(),
            &stats,
        );
        let instance = instance_id();
        let (subscribed_sender, subscribed) = watch::channel(false);
        let (stop, stop_receiver) = watch::channel(false);
        let mut cache = Self {
            local,
            flights: Flights::default(),
            shared: RwLock::new(None),
            stats,
            pending: Arc::default(),
            instance,
            stale_window: settings.stale_window(),
            l1_ttl: settings.l1_ttl(),
            subscribed,
            stop,
            tasks: Mutex::new(Vec::new()),
        };
        let Some(target) = Target::from_settings(settings)? else {
            tracing::info!("cache: in-process tier only (no cache.redis_url)");
            return Ok(cache);
        };
        let url = settings.redis_url.as_deref().unwrap_or_default();
        let background_timeout = settings.redis_timeout().max(MIN_BACKGROUND_TIMEOUT);
        let shared = Shared::new(
            &target,
            settings.redis_timeout(),
            background_timeout,
            settings.l2_ttl_secs,
            Arc::clone(&cache.stats),
            Arc::clone(&cache.pending),
        )?;
        let subscriber = Subscriber {
            clients: target.subscription_clients(),
            local: cache.local.clone(),
            stats: Arc::clone(&cache.stats),
            instance: cache.instance.clone(),
            pending: Arc::clone(&cache.pending),
            timeout: background_timeout,
            subscribed: subscribed_sender,
            stop: stop_receiver.clone(),
        };
        let replayer = Replayer {
            shared: shared.clone(),
            pending: Arc::clone(&cache.pending),
            stats: Arc::clone(&cache.stats),
            instance: cache.instance.clone(),
            stop: stop_receiver,
        };
        cache
            .tasks
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .extend([tokio::spawn(subscriber.run()), tokio::spawn(replayer.run())]);

        let mut subscribed = cache.subscribed.clone();
        let warm_up = async {
            // The connection is made lazily by the first call; making it here
            // keeps the first requests from paying for it.
            let answers = async {
                while !shared.ping().await {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            };
            let listening = async {
                // An error means the subscriber is gone, so there is nothing
                // to wait for.
                let _ = subscribed.wait_for(|subscribed| *subscribed).await;
            };
            tokio::join!(answers, listening);
        };
        let redacted = redact_url(url);
        if tokio::time::timeout(STARTUP_WAIT, warm_up).await.is_ok() {
            tracing::info!(redis = %redacted, "cache: two tiers, in-process and Redis");
        } else {
            tracing::warn!(
                redis = %redacted,
                "cache: Redis is not answering; starting with the in-process tier only and \
                 reconnecting in the background"
            );
        }
        *cache
            .shared
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner) = Some(shared);
        Ok(cache)
    }

    /// Stops the subscriber and the replayer and drops the Redis
    /// connections. The cache keeps working afterwards, in-process only.
    /// Invalidations still waiting for Redis are logged and dropped.
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        for mut task in tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
            }
        }
        self.shared
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let (keys, overflowed) = self.pending.size();
        if keys > 0 || overflowed {
            tracing::warn!(
                keys,
                overflowed,
                "cache: shutting down with invalidations Redis never received; other instances \
                 keep their copies until their TTLs end"
            );
        }
    }

    /// Whether invalidations from other instances are being received right
    /// now; for health checks. Always `false` without Redis.
    #[must_use]
    pub fn subscribed(&self) -> bool {
        *self.subscribed.borrow()
    }

    fn shared(&self) -> Option<Shared> {
        self.shared
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The leader's work for a key that missed L1: L2, else the loader.
    async fn fill(
        &self,
        key: Key,
        stamp: Stamp,
        load: ContextLoader,
    ) -> Result<Served, GetLeadError> {
        let (tenant, lead) = key;
        // A flight that ended just before this one started may have filled
        // the key; asking Redis and the store again would be waste.
        if let Some(entry) = self.local.get(&key).await
            && entry.is_fresh(Instant::now())
        {
            return Ok(fresh(entry.value));
        }

        let shared = self.shared();
        // `None` when L2 could not tell: then the loaded value is not written
        // to L2, since nothing proves that no invalidation came first.
        let mut generation = None;
        if let Some(shared) = &shared {
            if self.pending.blocks_l2(&key) {
                // Redis may still hold the value this instance's missed
                // invalidation was meant to delete: load, and leave Redis
                // alone until the replay.
                bump(&self.stats.l2.misses);
            } else {
                match shared.read(tenant, lead).await {
                    Some(Read {
                        value: Some(bytes),
                        generation: seen,
                    }) => match ContextJson::from_shared(bytes.into(), tenant, lead) {
                        // Its header names this build's format and this key:
                        // kept and served as Redis had it.
                        Ok(value) => {
                            bump(&self.stats.l2.hits);
                            self.local.keep(key, stamp, value.clone()).await;
                            return Ok(fresh(value));
                        }
                        // Either way: reload, and the write below replaces it.
                        Err(error) => {
                            bump(&self.stats.l2.misses);
                            if matches!(error, ContextJsonError::WrongKey) {
                                // Only a bug or a foreign writer files a copy
                                // under another key.
                                bump(&self.stats.l2.errors);
                                tracing::warn!(%tenant, %lead, %error, "cache: misfiled copy in Redis");
                            } else {
                                // Expected for a while after a deploy that
                                // changed how contexts render.
                                tracing::debug!(%tenant, %lead, %error, "cache: copy from another release");
                            }
                            generation = Some(seen);
                        }
                    },
                    Some(Read {
                        value: None,
                        generation: seen,
                    }) => {
                        bump(&self.stats.l2.misses);
                        generation = Some(seen);
                    }
                    // Counted as an error where it failed; also a miss, so that
                    // hits + misses is the number of L2 lookups.
                    None => bump(&self.stats.l2.misses),
                }
            }
        }

        // Real time even under a paused test clock: this is a measurement.
        let started = std::time::Instant::now();
        let loaded = load().await;
        self.stats.record_load(started.elapsed(), loaded.is_err());
        match loaded {
            Ok(context) => {
                // Rendered once: the same bytes go to L1, to Redis and, on
                // every hit, to the caller.
                let value = ContextJson::render(&context)
                    .map_err(|error| GetLeadError::Unknown(error.into()))?;
                self.local.keep(key, stamp, value.clone()).await;
                if let (Some(shared), Some(generation)) = (&shared, &generation) {
                    shared
                        .write_if_generation(
                            tenant,
                            lead,
                            &value.to_shared(tenant, lead),
                            generation,
                        )
                        .await;
                }
                Ok(fresh(value))
            }
            Err(GetLeadError::Unavailable(why)) => {
                let now = Instant::now();
                match self.local.get(&key).await {
                    Some(entry) if now <= entry.fresh_until + self.stale_window => {
                        tracing::debug!(%tenant, %lead, reason = %why, "cache: store unavailable, serving a stale copy");
                        Ok(Served {
                            stale: !entry.is_fresh(now),
                            value: entry.value,
                        })
                    }
                    _ => Err(GetLeadError::Unavailable(why)),
                }
            }
            // Not cached: a lead that does not exist yet may be created.
            Err(other) => Err(other),
        }
    }

    fn serve(&self, served: Result<Served, GetLeadError>) -> Result<ContextJson, GetLeadError> {
        let served = served?;
        if served.stale {
            bump(&self.stats.stale_served);
        }
        Ok(served.value)
    }
}

fn fresh(value: ContextJson) -> Served {
    Served {
        value,
        stale: false,
    }
}

/// A random id for this cache instance: 64 bits from the standard library's
/// per-instance random hasher keys, mixed with the pid and the time.
fn instance_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    let hash = RandomState::new().hash_one((std::process::id(), nanos));
    format!("{hash:016x}")
}

#[async_trait]
impl ContextCache for TwoTierCache {
    async fn ping_shared(&self) -> Option<Result<std::time::Duration, HealthError>> {
        let shared = self.shared()?;
        let started = std::time::Instant::now();
        Some(if shared.ping().await {
            Ok(started.elapsed())
        } else {
            Err(HealthError::Failed(
                "Redis did not answer PING in time".to_owned(),
            ))
        })
    }

    async fn get_or_load(
        &self,
        tenant: TenantId,
        lead: LeadId,
        load: ContextLoader,
    ) -> Result<ContextJson, GetLeadError> {
        let key = (tenant, lead);
        if let Some(entry) = self.local.get(&key).await
            && entry.is_fresh(Instant::now())
        {
            bump(&self.stats.l1.hits);
            return Ok(entry.value);
        }
        bump(&self.stats.l1.misses);
        loop {
            // Taken before anything is read: see `Local::keep`.
            let stamp = self.local.stamp(&key);
            match self.flights.join(key, stamp) {
                Role::Leader(leader) => {
                    let served = self.fill(key, stamp, load).await;
                    leader.finish(match &served {
                        Ok(served) => Ok(served.clone()),
                        Err(error) => Err(SharedError::of(error)),
                    });
                    return self.serve(served);
                }
                Role::Follower(slot) => {
                    if let Some(outcome) = flight::wait(slot).await {
                        return self.serve(outcome.map_err(|error| error.to_error()));
                    }
                    // The leader's caller gave up before it finished: join
                    // or lead the next flight.
                }
            }
        }
    }

    async fn invalidate(&self, tenant: TenantId, lead: LeadId) {
        let key = (tenant, lead);
        self.local.drop_key(&key).await;
        let Some(shared) = self.shared() else {
            return;
        };
        if shared.invalidate(tenant, lead, &self.instance).await {
            bump(&self.stats.invalidations_sent);
        } else {
            self.pending.add(key);
            // The outage itself was logged as a warning where it began.
            tracing::debug!(
                %tenant,
                %lead,
                "cache: invalidation not sent to Redis; replayed when it answers again"
            );
        }
        // A lookup on this instance that stamped after the first drop may
        // have read the old value from Redis before the `DEL` landed (or
        // before the key was queued), and its stamp would still hold: this
        // second bump fences it off. Our own echo is skipped, so nothing
        // else would. After it, a filler sees the `DEL` or the queued key.
        self.local.drop_key(&key).await;
    }

    fn stats(&self) -> CacheStats {
        self.stats.snapshot()
    }

    fn needs_change_log(&self) -> Option<Duration> {
        // Without Redis no other process's invalidation reaches L1, whose
        // copies live their time to live, then the stale window.
        self.shared()
            .is_none()
            .then_some(self.l1_ttl + self.stale_window)
    }

    async fn hot_keys(&self, limit: usize) -> Vec<(TenantId, LeadId)> {
        match self.shared() {
            Some(shared) => shared.hot_keys(limit).await,
            None => Vec::new(),
        }
    }
}

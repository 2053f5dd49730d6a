//! Shared helpers: contexts, a fake store whose loader can be slowed down or
//! made to fail, and short-hands for building caches on a real Redis.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use leadline_cache::{CacheSettings, TwoTierCache};
use leadline_domain::{LeadContext, LeadId, TenantId};
use leadline_ports::{ContextLoader, GetLeadError, Unavailable};
use tokio::sync::Notify;

/// A context whose `lead.version` tells which write it reflects.
pub fn context(tenant: TenantId, lead: LeadId, version: i64) -> LeadContext {
    let mut context = leadline_domain::fixtures::lead_context(tenant, lead);
    context.lead.version = version;
    context
}

/// What the fake store's loader does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    Answer,
    Unavailable,
    NotFound,
    Unknown,
}

/// A fake store holding one lead's current version.
#[derive(Clone)]
pub struct Store {
    pub tenant: TenantId,
    pub lead: LeadId,
    version: Arc<Mutex<i64>>,
    loads: Arc<AtomicUsize>,
    behaviour: Arc<Mutex<Behaviour>>,
    delay: Duration,
    /// Notified once a loader has read the version (before its delay).
    pub read_done: Arc<Notify>,
}

impl Store {
    /// A lead of a fresh tenant at version 1, answering at once.
    pub fn new() -> Self {
        Self {
            tenant: TenantId::new(),
            lead: LeadId::new(),
            version: Arc::new(Mutex::new(1)),
            loads: Arc::default(),
            behaviour: Arc::new(Mutex::new(Behaviour::Answer)),
            delay: Duration::ZERO,
            read_done: Arc::default(),
        }
    }

    /// The same store (same lead, counters and version), with loaders that
    /// sleep `delay` after reading.
    pub fn slowed(&self, delay: Duration) -> Self {
        Self {
            delay,
            ..self.clone()
        }
    }

    /// Another lead of the same tenant, sharing nothing else.
    pub fn other_lead(&self) -> Self {
        Self {
            tenant: self.tenant,
            ..Self::new()
        }
    }

    pub fn write(&self, version: i64) {
        *self.version.lock().unwrap_or_else(PoisonError::into_inner) = version;
    }

    pub fn behave(&self, behaviour: Behaviour) {
        *self
            .behaviour
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = behaviour;
    }

    /// Loader runs so far.
    pub fn loads(&self) -> usize {
        self.loads.load(Ordering::SeqCst)
    }

    /// A loader for this lead: counts itself, reads the version, waits, then
    /// answers as told.
    pub fn loader(&self) -> ContextLoader {
        let store = self.clone();
        Box::new(move || {
            Box::pin(async move {
                store.loads.fetch_add(1, Ordering::SeqCst);
                let version = *store.version.lock().unwrap_or_else(PoisonError::into_inner);
                let behaviour = *store
                    .behaviour
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                store.read_done.notify_one();
                if !store.delay.is_zero() {
                    tokio::time::sleep(store.delay).await;
                }
                match behaviour {
                    Behaviour::Answer => Ok(context(store.tenant, store.lead, version)),
                    Behaviour::Unavailable => Err(GetLeadError::Unavailable(Unavailable(
                        "store is down".to_owned(),
                    ))),
                    Behaviour::NotFound => Err(GetLeadError::NotFound),
                    Behaviour::Unknown => Err(GetLeadError::Unknown(anyhow::anyhow!("boom"))),
                }
            })
        })
    }
}

/// The shared test Redis.
pub fn shared_url() -> String {
    leadline_testsupport::redis().url()
}

/// A two-tier cache on `url`, subscribed (connect waits for that).
pub async fn two_tier(url: &str) -> TwoTierCache {
    two_tier_with(CacheSettings::for_redis(url)).await
}

pub async fn two_tier_with(settings: CacheSettings) -> TwoTierCache {
    let has_redis = settings.redis_url.is_some();
    let cache = TwoTierCache::connect(&settings)
        .await
        .expect("valid settings");
    if has_redis {
        assert!(
            cache.subscribed(),
            "a reachable Redis is subscribed to by connect"
        );
    }
    cache
}

/// `GET key` straight from Redis.
pub async fn redis_get(url: &str, key: &str) -> Option<Vec<u8>> {
    let client = redis::Client::open(url).expect("URL");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis");
    redis::cmd("GET")
        .arg(key)
        .query_async(&mut connection)
        .await
        .expect("GET")
}

pub fn value_key(store: &Store) -> String {
    format!("leadline:{{{}}}:ctx:{}", store.tenant, store.lead)
}

/// Polls `condition` until it holds, for at most `within`; returns how long
/// it took, or `None`. Every wait for something to happen goes through here
/// (tests ask, they do not sleep and hope). The pause between tries starts at
/// a millisecond, so a measured time stays close, and doubles up to 20 ms, so
/// a long wait does not spin.
pub async fn until(within: Duration, mut condition: impl AsyncFnMut() -> bool) -> Option<Duration> {
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        if condition().await {
            return Some(started.elapsed());
        }
        if started.elapsed() > within {
            return None;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Now as Unix milliseconds, the clock the hot set is scored by.
pub fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is past 1970")
        .as_millis()
}

/// One command on a new connection of the test's own.
async fn command(url: &str, command: &redis::Cmd) -> redis::Value {
    let client = redis::Client::open(url).expect("URL");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis");
    command.query_async(&mut connection).await.expect("command")
}

/// `CLIENT PAUSE {for} {mode}`: in `ALL` mode every command waits; in
/// `WRITE` mode reads still run. Either way the data stays, and what waits
/// runs when the pause ends, unless its connection is gone by then.
pub async fn pause_redis(url: &str, mode: &str, r#for: Duration) {
    let mut pause = redis::cmd("CLIENT");
    pause
        .arg("PAUSE")
        .arg(u64::try_from(r#for.as_millis()).expect("milliseconds"))
        .arg(mode);
    command(url, &pause).await;
}

/// Closes every client connection but subscribers' (and this one), and with
/// them whatever commands were waiting on them: a network blip that took
/// the requests in flight with it.
pub async fn kill_request_connections(url: &str) {
    let mut kill = redis::cmd("CLIENT");
    kill.arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes");
    command(url, &kill).await;
}

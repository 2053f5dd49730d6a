//! Rate limiters: adapters of the [`RateLimiter`] port.
//!
//! - [`LocalRateLimiter`]: this instance's own GCRA state, in memory. Alone
//!   (no `cache.redis_url`) it is the limiter; each instance then allows up
//!   to the limits by itself.
//! - [`SharedRateLimiter`]: the state in Redis, shared by every instance, so
//!   that a tenant is held to its limits fleet-wide. One `EVALSHA` per
//!   request runs the domain's GCRA ([`RateLimit::decide`]) for the key's
//!   and the tenant's limit at once, on Redis' clock (`TIME`), and writes
//!   both only when both allow: one round trip, atomic. When Redis does not
//!   answer within `cache.redis_timeout_ms` the request is decided by the
//!   local state instead: limited per instance, never refused for everyone
//!   and never let through unlimited. After a failure Redis is left alone
//!   for a second (requests go straight to the local state rather than each
//!   waiting out the timeout), then one request tries it again.
//!
//! Keys: `leadline:{<tenant>}:rl:key:<key>:<class>` and
//! `leadline:{<tenant>}:rl:tenant:<class>`. The braces are a Redis Cluster
//! hash tag: both keys of a request live in one slot, as a script's keys
//! must. Each expires when its subject is back at rest (its TAT has
//! passed), which is also what a missing key means, so Redis keeps state
//! only for subjects that are using their limit.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use leadline_domain::{ApiKeyId, RateDecision, RouteClass, TenantId};
use leadline_ports::{RateLimiter, RateLimits, RateSource, RateVerdict};
use redis::Script;

use crate::connect::Connection;

use crate::{CacheError, CacheSettings};

/// How long a tenant's local state is kept without a request. Longer than
/// any sensible window, so a subject forgotten was at rest anyway.
const LOCAL_IDLE: Duration = Duration::from_secs(3600);

/// A tenant's local GCRA state: its own TAT per class, and its keys'.
#[derive(Debug, Default)]
struct TenantState {
    tenant: HashMap<RouteClass, f64>,
    keys: HashMap<(ApiKeyId, RouteClass), f64>,
}

/// This instance's own rate-limit state.
#[derive(Clone)]
pub struct LocalRateLimiter {
    tenants: moka::sync::Cache<TenantId, Arc<Mutex<TenantState>>>,
    epoch: Instant,
}

impl std::fmt::Debug for LocalRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRateLimiter")
            .field("tenants", &self.tenants.entry_count())
            .finish_non_exhaustive()
    }
}

impl Default for LocalRateLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalRateLimiter {
    /// Empty state.
    #[must_use]
    pub fn new() -> Self {
        Self {
            tenants: moka::sync::Cache::builder()
                .time_to_idle(LOCAL_IDLE)
                .build(),
            epoch: Instant::now(),
        }
    }

    fn decide(
        &self,
        tenant: TenantId,
        key: ApiKeyId,
        class: RouteClass,
        limits: RateLimits,
    ) -> RateVerdict {
        let state = self.tenants.get_with(tenant, Arc::default);
        let now = self.epoch.elapsed().as_secs_f64() * 1000.0;
        // A poisoned lock only means another request panicked mid-decision;
        // the numbers in it are still numbers.
        let mut state = state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key_decision = limits
            .key
            .decide(state.keys.get(&(key, class)).copied(), now);
        let tenant_decision = limits.tenant.decide(state.tenant.get(&class).copied(), now);
        if key_decision.allowed && tenant_decision.allowed {
            state.keys.insert((key, class), key_decision.tat_ms);
            state.tenant.insert(class, tenant_decision.tat_ms);
        }
        RateVerdict {
            key: key_decision,
            tenant: tenant_decision,
            source: RateSource::Local,
        }
    }
}

#[async_trait]
impl RateLimiter for LocalRateLimiter {
    async fn check(
        &self,
        tenant: TenantId,
        key: ApiKeyId,
        class: RouteClass,
        limits: RateLimits,
    ) -> RateVerdict {
        self.decide(tenant, key, class, limits)
    }
}

/// GCRA for two subjects at once, on Redis' clock. KEYS: the key's TAT, the
/// tenant's TAT. ARGV: each one's interval (ms) and burst. Returns, for the
/// key then the tenant: allowed (1/0), remaining, retry after (ms), reset
/// (ms); as strings, since Redis would truncate Lua numbers to integers.
/// Mirrors `RateLimit::decide` in the domain crate.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local slack = 0.001
local function decide(key, interval, burst)
  local tat = now
  local stored = redis.call('GET', key)
  if stored then tat = math.max(tonumber(stored), now) end
  local debt = tat - now
  local tolerance = (burst - 1) * interval
  if debt > tolerance + slack then
    return {false, 0, debt - tolerance, debt, tat}
  end
  local used = math.max(0, math.ceil((debt - slack) / interval))
  return {true, math.max(0, burst - 1 - used), 0, debt + interval, tat + interval}
end
local k = decide(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))
local g = decide(KEYS[2], tonumber(ARGV[3]), tonumber(ARGV[4]))
if k[1] and g[1] then
  redis.call('SET', KEYS[1], string.format('%.3f', k[5]), 'PX', math.max(1, math.ceil(k[5] - now)))
  redis.call('SET', KEYS[2], string.format('%.3f', g[5]), 'PX', math.max(1, math.ceil(g[5] - now)))
end
local function out(d)
  return {d[1] and '1' or '0', tostring(d[2]), string.format('%.3f', d[3]), string.format('%.3f', d[4])}
end
local a = out(k)
local b = out(g)
return {a[1], a[2], a[3], a[4], b[1], b[2], b[3], b[4]}
";

/// Rate-limit state shared through Redis, with the local state as the
/// fallback.
#[derive(Clone)]
pub struct SharedRateLimiter {
    connection: Connection,
    script: Arc<Script>,
    timeout: Duration,
    local: LocalRateLimiter,
    healthy: Arc<AtomicBool>,
    /// While Redis is failing: when to ask it again (ms since `local`'s
    /// epoch). Until then requests go straight to the local state instead
    /// of each waiting out the timeout.
    retry_at_ms: Arc<AtomicU64>,
}

/// How long a failed Redis is left alone before one request tries it again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

impl std::fmt::Debug for SharedRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRateLimiter")
            .field("timeout", &self.timeout)
            .field("healthy", &self.healthy.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// The Redis key of a key's TAT for `class`.
fn key_subject(tenant: TenantId, key: ApiKeyId, class: RouteClass) -> String {
    format!("leadline:{{{tenant}}}:rl:key:{key}:{class}")
}

/// The Redis key of a tenant's TAT for `class`.
fn tenant_subject(tenant: TenantId, class: RouteClass) -> String {
    format!("leadline:{{{tenant}}}:rl:tenant:{class}")
}

fn parse_decision(fields: &[String]) -> Option<RateDecision> {
    let [allowed, remaining, retry, reset] = fields else {
        return None;
    };
    Some(RateDecision {
        allowed: allowed == "1",
        remaining: remaining.parse().ok()?,
        retry_after_ms: retry.parse().ok()?,
        reset_ms: reset.parse().ok()?,
        // Kept in Redis; the caller has no use for it.
        tat_ms: 0.0,
    })
}

impl SharedRateLimiter {
    /// A limiter over the Redis (server or cluster) `settings` name, each
    /// call bounded by `cache.redis_timeout_ms`; connects in the
    /// background, so creating it never waits on Redis.
    ///
    /// # Errors
    /// [`CacheError::InvalidSettings`] without `cache.redis_url` or with a
    /// URL the client refuses.
    pub fn connect(settings: &CacheSettings) -> Result<Self, CacheError> {
        let timeout = settings.redis_timeout();
        let connection = Connection::from_settings(settings, timeout)?.ok_or_else(|| {
            CacheError::InvalidSettings(vec![(
                "cache.redis_url",
                "is needed to share rate limits through Redis".to_owned(),
            )])
        })?;
        Ok(Self {
            connection,
            script: Arc::new(Script::new(GCRA)),
            timeout,
            local: LocalRateLimiter::new(),
            healthy: Arc::new(AtomicBool::new(true)),
            retry_at_ms: Arc::new(AtomicU64::new(0)),
        })
    }

    async fn shared(
        &self,
        tenant: TenantId,
        key: ApiKeyId,
        class: RouteClass,
        limits: RateLimits,
    ) -> Result<RateVerdict, String> {
        let mut connection = self.connection.clone();
        let mut invocation = self.script.key(key_subject(tenant, key, class));
        invocation
            .key(tenant_subject(tenant, class))
            .arg(limits.key.interval_ms())
            .arg(limits.key.burst())
            .arg(limits.tenant.interval_ms())
            .arg(limits.tenant.burst());
        let call = invocation.invoke_async::<Vec<String>>(&mut connection);
        let fields = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(fields)) => fields,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err(format!("no answer within {:?}", self.timeout)),
        };
        let (key_fields, tenant_fields) = fields.split_at(fields.len().min(4));
        match (parse_decision(key_fields), parse_decision(tenant_fields)) {
            (Some(key), Some(tenant)) => Ok(RateVerdict {
                key,
                tenant,
                source: RateSource::Shared,
            }),
            _ => Err(format!("unexpected answer from the script: {fields:?}")),
        }
    }
}

#[async_trait]
impl RateLimiter for SharedRateLimiter {
    async fn check(
        &self,
        tenant: TenantId,
        key: ApiKeyId,
        class: RouteClass,
        limits: RateLimits,
    ) -> RateVerdict {
        let now_ms = u64::try_from(self.local.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        if !self.healthy.load(Ordering::Relaxed) {
            let retry_at = self.retry_at_ms.load(Ordering::Relaxed);
            // One request at a time gets to try Redis again; the others
            // stay local meanwhile.
            let probe = now_ms >= retry_at
                && self
                    .retry_at_ms
                    .compare_exchange(
                        retry_at,
                        now_ms + millis(RETRY_AFTER_FAILURE),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    )
                    .is_ok();
            if !probe {
                return self.local.decide(tenant, key, class, limits);
            }
        }
        match self.shared(tenant, key, class, limits).await {
            Ok(verdict) => {
                if !self.healthy.swap(true, Ordering::Relaxed) {
                    tracing::info!("rate limits: Redis answers again; limits hold fleet-wide");
                }
                verdict
            }
            Err(error) => {
                self.retry_at_ms
                    .store(now_ms + millis(RETRY_AFTER_FAILURE), Ordering::Relaxed);
                if self.healthy.swap(false, Ordering::Relaxed) {
                    tracing::warn!(
                        %error,
                        "rate limits: Redis did not answer; each instance limits by itself \
                         until it does"
                    );
                }
                self.local.decide(tenant, key, class, limits)
            }
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The limiter `settings` call for: shared through `cache.redis_url` when
/// set (whether or not the context cache is enabled), else local.
///
/// # Errors
/// [`CacheError::InvalidSettings`] for a bad Redis URL.
pub fn rate_limiter(settings: &CacheSettings) -> Result<Arc<dyn RateLimiter>, CacheError> {
    if settings.redis_url.is_some() {
        Ok(Arc::new(SharedRateLimiter::connect(settings)?))
    } else {
        Ok(Arc::new(LocalRateLimiter::new()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test fixtures of known-good values")]
mod tests {
    use super::*;
    use leadline_domain::RateLimit;

    fn limits(per_second: f64, burst: u32, tenant_burst: u32) -> RateLimits {
        RateLimits {
            key: RateLimit::new(per_second, burst).unwrap(),
            tenant: RateLimit::new(per_second, tenant_burst).unwrap(),
        }
    }

    #[tokio::test]
    async fn the_key_and_the_tenant_limit_each_hold_and_a_refusal_costs_neither() {
        let local = LocalRateLimiter::new();
        let tenant = TenantId::new();
        let (a, b) = (ApiKeyId::new(), ApiKeyId::new());
        // Key bursts of 3, a tenant burst of 4, a rate too slow to refill
        // during the test.
        let l = limits(0.001, 3, 4);
        let mut allowed = Vec::new();
        for key in [a, a, a, a, b, b, b] {
            allowed.push(
                local
                    .check(tenant, key, RouteClass::Write, l)
                    .await
                    .allowed(),
            );
        }
        // a: three pass, its fourth is the key limit; b: one more fits in
        // the tenant's four, then the tenant limit refuses.
        assert_eq!(allowed, [true, true, true, false, true, false, false]);
        // Reads have limits of their own.
        assert!(local.check(tenant, b, RouteClass::Read, l).await.allowed());
        // Another tenant is untouched.
        assert!(
            local
                .check(TenantId::new(), a, RouteClass::Write, l)
                .await
                .allowed()
        );
    }

    #[test]
    fn subjects_share_a_cluster_slot_per_tenant() {
        let tenant = TenantId::new();
        let key = key_subject(tenant, ApiKeyId::new(), RouteClass::Read);
        let whole = tenant_subject(tenant, RouteClass::Read);
        let tag = format!("{{{tenant}}}");
        assert!(key.contains(&tag) && whole.contains(&tag), "{key} {whole}");
        assert_eq!(key.matches('{').count(), 1);
    }
}

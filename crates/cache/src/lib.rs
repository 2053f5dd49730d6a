//! leadline's lead-context cache: an adapter of the [`ContextCache`] port.
//!
//! - [`TwoTierCache`]: an in-process tier (L1, moka) in front of a shared
//!   tier (L2, Redis), kept coherent across instances by pub/sub
//!   invalidation. Without `redis_url` it is L1 only, still coherent within
//!   one instance.
//! - [`NullCache`]: keeps nothing, always runs the loader
//!   (`cache.enabled = false`).
//! - [`build`] picks one from [`CacheSettings`]; the app holds the result as
//!   `Arc<dyn ContextCache>`. Redis types never leave this crate.
//!
//! # Design
//!
//! ```text
//!  get_or_load(tenant, lead, loader)
//!      │
//!      ▼
//!  L1 moka (this process) ── fresh hit ───────────────────────────► value
//!      │ miss, or only a stale copy (kept for stale-if-error)
//!      ▼
//!  single flight per (tenant, lead): one leader fills, the others await it
//!      │ leader: stamp := local generation of the key
//!      ▼
//!  L2 Redis: MGET ctx, ctxgen (≤ redis_timeout) ── hit ── keep in L1 ──► value
//!      │ miss / error / timeout (error counted, treated as a miss)
//!      ▼
//!  loader (the store) ── Ok ──► keep in L1 if stamp unchanged ──────────► value
//!      │                        SET ctx in L2 if ctxgen unchanged (Lua)
//!      └─ Unavailable ──► stale L1 copy within stale_if_error? ─ yes ──► value
//!                                                               no ───► error
//!
//!  invalidate(tenant, lead)              after the write's commit
//!      ├─ bump local generation, drop from L1
//!      └─ MULTI  INCR ctxgen · EXPIRE ctxgen · DEL ctx
//!               PUBLISH leadline:invalidate "{tenant}:{lead} {instance}"  EXEC
//!                     │
//!                     ▼  (every other instance's subscriber task)
//!      bump local generation, drop from L1; lost subscription ⇒ clear all L1
//! ```
//!
//! **Keys** carry the tenant: value `leadline:{tenant}:ctx:{lead}`,
//! generation `leadline:{tenant}:ctxgen:{lead}`, and one channel
//! `leadline:invalidate` whose messages are `{tenant}:{lead} {instance}`.
//! An instance skips its own echo (it already applied the invalidation
//! before publishing); `invalidations_received` counts the others'.
//!
//! **L1** is a moka `future::Cache<(TenantId, LeadId), Entry>` weighed by
//! each context's serialized size in bytes against `l1_capacity_bytes`.
//! moka keeps an entry for `l1_ttl + stale_if_error`; a lookup serves it
//! only until its `fresh_until` and after that keeps it solely as the
//! stale-if-error fallback. Freshness runs on `tokio::time::Instant` (so a
//! paused test clock moves it); moka's own expiry runs on the real clock.
//! Size and age evictions are counted in `l1.evictions`.
//!
//! **Single flight**: concurrent misses of one key share one fill, through a
//! small map of flights (not moka's `entry()` API, which would insert a
//! value loaded during an invalidation, and shares errors only as `Arc`s).
//! A caller joins a flight only if the key was not invalidated since the
//! flight began, so a read that starts after a write never receives a value
//! loaded before it. Followers of a cancelled leader retry.
//!
//! **The stale re-insert race** — a loader reads v1, a write commits v2 and
//! invalidates, then the loader finishes and would re-insert v1 — is closed
//! twice:
//! - *L1*: every invalidation bumps a generation; a filler stamps it before
//!   reading L2 or the store and keeps its value only if the stamp still
//!   holds after inserting (insert, then re-check, then remove if changed:
//!   checking first would leave a gap). Generations are 4096 monotonic
//!   counters striped by key hash, plus an epoch for "clear all": fixed
//!   memory, no expiry that could make an invalidated key look untouched,
//!   and a hash collision only ever drops an insert.
//! - *L2*: the filler reads `ctxgen` together with the value (one `MGET`,
//!   before loading) and writes with a Lua script that `SET`s only if
//!   `ctxgen` is still what it read (or still absent). Invalidation's
//!   `INCR ctxgen` + `DEL ctx` are one transaction, so a write either lands
//!   before the `DEL` or is refused. `ctxgen` expires an hour after its last
//!   bump: it only has to outlive the slowest loader, and so Redis does not
//!   keep one key per lead ever touched. If the generation could not be read
//!   (Redis down or slow), the filler does not write L2 at all.
//!
//! **Subscriber**: with `redis_url`, a task on its own pub/sub connection.
//! Each message drops its key from L1. When the subscription breaks it
//! clears all of L1 (invalidations may be missed while it is down) and
//! resubscribes with backoff from 50 ms up to 1 s; it clears L1 again each
//! time the subscription stands, since fills made in between may be stale.
//! An idle subscription is checked with `PING` every 5 s to notice half-open
//! connections. The TTLs are only the last safety net.
//!
//! **Degradation**: every Redis call on a request's path is bounded by
//! `redis_timeout_ms` (50 ms by default); a failure or timeout counts in
//! `l2.errors` and is treated as a miss or a skipped write. Requests go on
//! from L1 and the loader. The `ConnectionManager` reconnects by itself (in
//! the background, connect attempts bounded by at least 1 s). Start-up waits
//! at most 1 s for Redis and then starts degraded; only bad settings fail
//! [`TwoTierCache::connect`]. When the loader fails with `Unavailable`, an L1
//! copy whose `fresh_until + stale_if_error` is still ahead is served
//! (`stale_served`); other errors (`NotFound`, `Unknown`) are returned as
//! they are and never cached.
//!
//! **Limits**: an invalidation that cannot reach Redis is logged and counted
//! (`l2.errors`) but not retried: instances that stayed subscribed keep their
//! copy until its L1 TTL, and L2 keeps the old value until its L2 TTL. The
//! window is bounded by `l1_ttl_secs + l2_ttl_secs`. `l2.evictions` stays 0:
//! Redis does not tell a client what it evicted.
//!
//! **Stats** are relaxed atomics: L1/L2 hits, misses, evictions and errors,
//! loads, load errors and time, stale copies served, invalidations sent and
//! received.

mod error;
mod flight;
mod keys;
mod local;
mod null;
mod settings;
mod shared;
mod stats;
mod subscriber;
mod two_tier;

use std::sync::Arc;

use leadline_ports::ContextCache;

pub use error::CacheError;
pub use null::NullCache;
pub use settings::CacheSettings;
pub use two_tier::TwoTierCache;

/// The cache `settings` ask for: a [`NullCache`] when `enabled` is false,
/// else a [`TwoTierCache`] (see [`TwoTierCache::connect`]).
///
/// # Errors
/// [`CacheError::InvalidSettings`] when the cache is enabled and its
/// settings have problems; never because Redis is unreachable.
pub async fn build(settings: &CacheSettings) -> Result<Arc<dyn ContextCache>, CacheError> {
    if !settings.enabled {
        tracing::info!("cache: disabled; every lookup reads the store");
        return Ok(Arc::new(NullCache::new()));
    }
    Ok(Arc::new(TwoTierCache::connect(settings).await?))
}

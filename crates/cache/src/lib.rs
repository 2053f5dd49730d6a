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
//! - [`ContextCache::hot_keys`]: the leads the fleet loaded last, so that a
//!   starting instance can warm them (empty from [`NullCache`] and without
//!   Redis).
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
//!  key's invalidation pending (Redis missed it)? ── yes: skip L2 ──┐
//!      │ no                                                        │
//!      ▼                                                           │
//!  L2 Redis: MGET ctx, ctxgen (≤ redis_timeout) ── hit ── keep in L1 ──► value
//!      │ miss / error / timeout (error counted, treated as a miss) │
//!      ▼ ◄─────────────────────────────────────────────────────────┘
//!  loader (the store) ── Ok ──► keep in L1 if stamp unchanged ──────────► value
//!      │                        Lua: SET ctx in L2 if ctxgen unchanged,
//!      │                        sent with ZADD leadline:hot now + trim
//!      └─ Unavailable ──► stale L1 copy within stale_if_error? ─ yes ──► value
//!                                                               no ───► error
//!
//!  invalidate(tenant, lead)              after the write's commit
//!      ├─ bump local generation, drop from L1
//!      ├─ MULTI  INCR ctxgen · EXPIRE ctxgen · DEL ctx
//!      │        PUBLISH leadline:invalidate "{tenant}:{lead} {instance}"  EXEC
//!      │        (in a cluster: the MULTI on the tenant's node, then PUBLISH)
//!      │        no answer ⇒ queue the key; the replayer sends the same
//!      │        MULTI when Redis answers again (overflow ⇒ sweep all ctx)
//!      └─ bump local generation, drop from L1 again
//!                     │
//!                     ▼  (every other instance's subscriber task)
//!      bump local generation, drop from L1; lost subscription ⇒ clear all L1
//! ```
//!
//! **Keys** carry the tenant as a Redis Cluster hash tag: value
//! `leadline:{<tenant>}:ctx:<lead>`, generation
//! `leadline:{<tenant>}:ctxgen:<lead>` (one slot per tenant, so
//! `cache.redis_cluster` works unchanged; see `connect.rs`), and one channel
//! `leadline:invalidate` whose messages are `{tenant}:{lead} {instance}`
//! (or `* {instance}`, "drop everything", after a sweep; see below).
//! An instance skips its own echo (it already applied the invalidation
//! before publishing); `invalidations_received` counts the others'. The one
//! key without a tenant is the hot set, `leadline:hot` (below): it holds
//! ids, never a context.
//!
//! **Both tiers keep the context rendered** ([`leadline_ports::ContextJson`]):
//! a fill serializes once, the same bytes go to L1 and (behind a one-line
//! header) to Redis, and a hit hands them to the HTTP adapter as they are.
//! The header names the render format (a fingerprint of this build's
//! serializer), the tenant and the lead: an L2 copy whose header does not
//! match is a miss, so a copy from a release that renders differently, or a
//! misfiled one, is reloaded rather than served.
//!
//! **L1** is a moka `future::Cache<(TenantId, LeadId), Entry>` weighed by
//! each context's JSON size plus a fixed per-entry overhead, in bytes,
//! against `l1_capacity_bytes`.
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
//! - *Both, on the invalidating instance*: a filler that stamped after the
//!   first bump may still have read the old value from Redis before the
//!   `DEL` landed, and its own echo is skipped, so nothing else would drop
//!   it. `invalidate` therefore bumps the key again once Redis answered, or
//!   once the key is queued for replay (after which fillers skip L2 for it).
//!
//! **Subscriber**: with `redis_url`, a task on its own pub/sub connection.
//! Each message drops its key from L1 (a "drop everything" message, all of
//! L1). When the subscription breaks it clears all of L1 (invalidations may
//! be missed while it is down) and resubscribes with backoff from 50 ms up
//! to 1 s; it clears L1 again each time the subscription stands, since
//! fills made in between may be stale, and wakes the replayer (below).
//! An idle subscription is checked with `PING` every 5 s to notice half-open
//! connections. The TTLs are only the last safety net.
//!
//! **Replay of missed invalidations**: when `invalidate` gets no answer
//! (error or timeout), Redis may have been only unreachable (a network blip,
//! a paused or overloaded server) and still hold the old value, and the
//! other instances never heard of the write. The key is queued (a set of at
//! most 10 000 keys, so about 0.5 MiB) and a second task, the replayer,
//! sends the same transaction again (`INCR ctxgen`, `EXPIRE`, `DEL ctx`,
//! `PUBLISH`; 100 keys per `MULTI`) as soon as Redis answers: at once, then
//! with backoff from 50 ms up to 500 ms, and at once again when any other
//! call succeeds after a failure or the subscription stands again.
//! Repeating an invalidation that landed after all (a timeout does not say)
//! costs a miss. Until its replay is answered, the instance treats L2 as a
//! miss for a queued key (reading the store, writing nothing to L2), so it
//! never serves the value its own write was meant to remove. A key that
//! fails again during its replay stays queued (keys carry a sequence
//! number). Past 10 000 keys the set only remembers that it overflowed;
//! L2 is then skipped for every key, and when Redis answers the replayer
//! sweeps instead: it deletes every `leadline:*:ctx:*` value, all tenants',
//! with `SCAN` + `DEL` in batches (never `KEYS`), then publishes "drop
//! everything", on which every other instance clears its L1. Dropping other
//! tenants' copies is safe: they reload. Generations and the hot set stay.
//! A replay counts in `invalidations_sent` (one per key, one per sweep) and
//! is logged; shutting down with keys still queued logs a warning.
//!
//! **Hot set** (`hot_keys`): each time the loader runs and Redis answered the
//! read, the same Lua call that writes the value also does
//! `ZADD leadline:hot <unix ms> "{tenant}:{lead}"` (even when the write
//! itself is refused: it was still a load) and trims the set to its newest
//! 100 000 members with `ZREMRANGEBYRANK`. L1 and L2 hits record nothing, so
//! the hot path pays nothing; a load whose read got no answer, or whose key
//! is queued for replay, is not recorded (best effort). `hot_keys(limit)` is
//! `ZREVRANGE leadline:hot 0 limit-1` within `redis_timeout_ms`; any error
//! or timeout gives an empty list, and members that do not parse as
//! `{tenant}:{lead}` are skipped. The set is fleet-wide by design, so a
//! starting instance warms what the whole fleet uses; it holds tenant and
//! lead ids only, no data, and the app loads each warmed context inside its
//! own tenant's RLS transaction. `invalidate` leaves it alone: a lead that
//! was just written is still hot.
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
//! **Limits**: missed invalidations are replayed only by the instance that
//! missed them, and kept only in its memory: if it stops first, or if
//! another instance reaches Redis while it cannot (a one-sided partition),
//! other instances and L2 keep the old value until the replay, at worst
//! until their TTLs (`l1_ttl_secs + l2_ttl_secs`). A sweep cannot fence
//! loaders elsewhere that read the store before the write and write to
//! Redis after the sweep (it knows no keys whose generation it could bump);
//! that needs one loader to span the whole outage, and the L2 TTL bounds
//! it. `l2.evictions` stays 0: Redis does not tell a client what it
//! evicted.
//!
//! **Stats** are relaxed atomics: L1/L2 hits, misses, evictions and errors,
//! loads, load errors and time, stale copies served, invalidations sent
//! (replays included) and received. A lookup that skips L2 for a queued key
//! counts as an L2 miss; the replayer's failed tries count in `l2.errors`.

mod connect;
mod error;
mod flight;
mod keys;
mod local;
mod null;
mod pending;
mod rate;
mod replay;
mod sessions;
mod settings;
mod shared;
mod stats;
mod subscriber;
mod two_tier;

use std::sync::Arc;

use leadline_ports::ContextCache;

pub use error::CacheError;
pub use null::NullCache;
pub use rate::{LocalRateLimiter, SharedRateLimiter, rate_limiter};
pub use sessions::RedisSessionStore;
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

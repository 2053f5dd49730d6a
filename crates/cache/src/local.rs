//! The in-process tier (L1) and the generation stamps that guard it against
//! stale re-inserts.
//!
//! L1 is a moka cache weighed in bytes. Freshness is decided here, not by
//! moka: moka keeps an entry for `l1_ttl + stale_if_error`, and a lookup
//! treats a copy past `fresh_until` as a miss while it stays available as the
//! stale-if-error fallback. Freshness uses `tokio::time::Instant`, so tests can
//! move it with a paused clock; moka's own expiry runs on the real clock.
//!
//! A loader that read the store before a write must not put its old value
//! back after that write's invalidation. Every invalidation therefore bumps a
//! generation; a filler stamps the generation before it reads anything and
//! keeps its value only if the stamp still holds afterwards (see
//! [`Local::keep`]).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use leadline_domain::{LeadId, TenantId};
use leadline_ports::ContextJson;
use moka::future::Cache;
use moka::notification::RemovalCause;
use tokio::time::Instant;

use crate::stats::{Counters, bump};

/// An L1 key. The tenant is part of it, as in every cache key.
pub(crate) type Key = (TenantId, LeadId);

/// One cached context.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) value: ContextJson,
    /// After this the copy is only good as a stale-if-error fallback.
    pub(crate) fresh_until: Instant,
    /// The entry's weight against the byte budget: the JSON plus what the
    /// entry and moka's node around it take.
    pub(crate) bytes: u32,
}

impl Entry {
    pub(crate) fn is_fresh(&self, now: Instant) -> bool {
        now <= self.fresh_until
    }
}

/// Bytes an entry costs beyond its JSON: the key, the entry, the shared
/// buffer's header and moka's node and indexes (measured roughly with the
/// RSS benchmark, `cargo xtask bench`), so that the byte budget bounds memory
/// rather than JSON alone.
const ENTRY_OVERHEAD: usize = 256;

/// Number of generation slots. Keys hash onto slots; two keys sharing a slot
/// only cost each other a skipped insert now and then, never a stale one.
const SLOTS: usize = 4096;

/// Invalidation generations, striped by key hash.
///
/// Why slots rather than a map of keys: the map would need entries for every
/// key ever invalidated, and any expiry of those entries reopens the race it
/// guards against (an expired entry reads as "never invalidated"). A fixed
/// array of monotonic counters uses 32 KiB for ever, needs no lock and cannot
/// go back in time; its only cost is a false "changed" on a hash collision,
/// which drops one insert.
#[derive(Debug)]
pub(crate) struct Generations {
    slots: Box<[AtomicU64]>,
    /// Bumped when the whole tier is cleared (subscription lost or back).
    epoch: AtomicU64,
    hasher: RandomState,
}

/// What a filler saw before it read anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    epoch: u64,
    slot: u64,
}

impl Generations {
    fn new() -> Self {
        Self {
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            epoch: AtomicU64::new(0),
            hasher: RandomState::new(),
        }
    }

    fn slot(&self, key: &Key) -> &AtomicU64 {
        // The modulo keeps the index in range, so the fallback is unreachable.
        let index = usize::try_from(self.hasher.hash_one(key) % SLOTS as u64).unwrap_or(0);
        &self.slots[index]
    }

    pub(crate) fn stamp(&self, key: &Key) -> Stamp {
        // SeqCst pairs each stamp with the bumps: a filler's re-check after
        // its insert and an invalidator's bump before its removal are totally
        // ordered, which is what [`Local::keep`] relies on.
        Stamp {
            epoch: self.epoch.load(Ordering::SeqCst),
            slot: self.slot(key).load(Ordering::SeqCst),
        }
    }

    fn bump(&self, key: &Key) {
        self.slot(key).fetch_add(1, Ordering::SeqCst);
    }

    fn bump_all(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }
}

/// L1 plus its generations; cheap to clone (both are shared).
#[derive(Debug, Clone)]
pub(crate) struct Local {
    cache: Cache<Key, Entry>,
    generations: Arc<Generations>,
    ttl: Duration,
}

impl Local {
    /// A tier of `capacity_bytes`, serving copies for `ttl` and keeping them
    /// `stale_window` longer for the stale-if-error fallback.
    pub(crate) fn new(
        capacity_bytes: u64,
        ttl: Duration,
        stale_window: Duration,
        stats: &Arc<Counters>,
    ) -> Self {
        let stats = Arc::clone(stats);
        let cache = Cache::builder()
            .max_capacity(capacity_bytes)
            .weigher(|_key: &Key, entry: &Entry| entry.bytes)
            .time_to_live(ttl.saturating_add(stale_window))
            .eviction_listener(move |_key, _entry, cause| {
                // Explicit removals are invalidations and replacements are
                // refreshes; only size and age count as evictions.
                if matches!(cause, RemovalCause::Size | RemovalCause::Expired) {
                    bump(&stats.l1.evictions);
                }
            })
            .build();
        Self {
            cache,
            generations: Arc::new(Generations::new()),
            ttl,
        }
    }

    /// The copy of `key`, fresh or not.
    pub(crate) async fn get(&self, key: &Key) -> Option<Entry> {
        self.cache.get(key).await
    }

    pub(crate) fn stamp(&self, key: &Key) -> Stamp {
        self.generations.stamp(key)
    }

    /// Keeps `value` as the fresh copy of `key`, unless `key` was invalidated
    /// (or the tier cleared) since `stamp` was taken.
    ///
    /// Insert first, check after: checking first would leave a window in
    /// which an invalidation bumps and removes, and then the old value goes
    /// in. With the check after the insert, either the check sees the bump
    /// (and removes the value itself) or the bump, and the removal after it,
    /// come after the insert.
    pub(crate) async fn keep(&self, key: Key, stamp: Stamp, value: ContextJson) {
        if self.generations.stamp(&key) != stamp {
            return;
        }
        let bytes = value.len().saturating_add(ENTRY_OVERHEAD);
        let entry = Entry {
            value,
            fresh_until: Instant::now() + self.ttl,
            bytes: u32::try_from(bytes).unwrap_or(u32::MAX),
        };
        self.cache.insert(key, entry).await;
        if self.generations.stamp(&key) != stamp {
            // May also drop a newer filler's valid copy: that costs a miss,
            // never a stale read.
            self.cache.invalidate(&key).await;
        }
    }

    /// Drops `key` and fences off every filler that started before.
    pub(crate) async fn drop_key(&self, key: &Key) {
        self.generations.bump(key);
        self.cache.invalidate(key).await;
    }

    /// Drops everything and fences off every filler in flight: used when
    /// invalidations may have been missed.
    pub(crate) fn drop_all(&self) {
        self.generations.bump_all();
        self.cache.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_change_with_their_key_and_with_a_clear() {
        let generations = Generations::new();
        let key = (TenantId::new(), LeadId::new());
        let before = generations.stamp(&key);
        assert_eq!(generations.stamp(&key), before, "nothing happened");
        generations.bump(&key);
        let after_bump = generations.stamp(&key);
        assert_ne!(after_bump, before);
        generations.bump_all();
        assert_ne!(generations.stamp(&key), after_bump);
    }
}

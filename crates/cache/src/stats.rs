//! Lock-free counters behind [`CacheStats`].
//!
//! Relaxed atomics: each counter is exact, but a snapshot is not taken at one
//! instant across counters, which is all metrics need.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use leadline_ports::{CacheStats, TierStats};

#[derive(Debug, Default)]
pub(crate) struct Tier {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) evictions: AtomicU64,
    pub(crate) errors: AtomicU64,
}

impl Tier {
    fn snapshot(&self) -> TierStats {
        TierStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) l1: Tier,
    pub(crate) l2: Tier,
    pub(crate) loads: AtomicU64,
    pub(crate) load_errors: AtomicU64,
    pub(crate) load_micros: AtomicU64,
    pub(crate) stale_served: AtomicU64,
    pub(crate) invalidations_sent: AtomicU64,
    pub(crate) invalidations_received: AtomicU64,
}

/// Adds one.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    /// Counts one loader run that took `took`.
    pub(crate) fn record_load(&self, took: Duration, failed: bool) {
        bump(&self.loads);
        if failed {
            bump(&self.load_errors);
        }
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.load_micros.fetch_add(micros, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> CacheStats {
        CacheStats {
            l1: self.l1.snapshot(),
            l2: self.l2.snapshot(),
            loads: self.loads.load(Ordering::Relaxed),
            load_errors: self.load_errors.load(Ordering::Relaxed),
            load_time: Duration::from_micros(self.load_micros.load(Ordering::Relaxed)),
            stale_served: self.stale_served.load(Ordering::Relaxed),
            invalidations_sent: self.invalidations_sent.load(Ordering::Relaxed),
            invalidations_received: self.invalidations_received.load(Ordering::Relaxed),
        }
    }
}

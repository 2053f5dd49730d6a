//! The lead-context cache port.
//!
//! The app asks the cache for a lead's context and hands it a loader; the
//! cache answers from its tiers or runs the loader (once per key, however
//! many callers wait) and keeps the result. Every write that changes what a
//! context shows calls [`ContextCache::invalidate`] after its transaction
//! commits. Adapters: a two-tier cache (in-process, then shared) and a null
//! cache that always loads.

use std::{future::Future, pin::Pin, time::Duration};

use async_trait::async_trait;
use leadline_domain::{LeadContext, LeadId, TenantId};

use crate::{ContextJson, errors::GetLeadError};

/// Loads a context from the store. Boxed so the port stays object-safe.
pub type ContextLoader = Box<
    dyn FnOnce() -> Pin<Box<dyn Future<Output = Result<LeadContext, GetLeadError>> + Send>> + Send,
>;

/// Counters of one cache tier, since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct TierStats {
    /// Lookups answered by this tier.
    pub hits: u64,
    /// Lookups this tier could not answer.
    pub misses: u64,
    /// Entries this tier dropped for size or age.
    pub evictions: u64,
    /// Calls to this tier that failed or timed out (a shared tier only).
    pub errors: u64,
}

/// Cache statistics for operators and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct CacheStats {
    /// The in-process tier.
    pub l1: TierStats,
    /// The shared tier.
    pub l2: TierStats,
    /// Loader runs (misses in every tier that reached the store).
    pub loads: u64,
    /// Loader failures.
    pub load_errors: u64,
    /// Total time spent in loaders.
    #[serde(with = "duration_micros")]
    pub load_time: Duration,
    /// Contexts served stale because the store was unavailable.
    pub stale_served: u64,
    /// Invalidations this instance published.
    pub invalidations_sent: u64,
    /// Invalidations this instance received from others.
    pub invalidations_received: u64,
}

mod duration_micros {
    pub(super) fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }
}

/// The lead-context cache.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait ContextCache: Send + Sync {
    /// The context of `lead`, from a cache tier or from `load`, as JSON:
    /// tiers keep it rendered, so a hit serializes nothing.
    ///
    /// Concurrent callers for one key share one loader run. A value loaded
    /// while the key was being invalidated is returned to its caller but not
    /// kept. When `load` fails with `Unavailable` and a stale copy younger
    /// than the configured window exists, the stale copy is returned.
    ///
    /// # Errors
    /// What `load` returned, when no usable copy exists.
    async fn get_or_load(
        &self,
        tenant: TenantId,
        lead: LeadId,
        load: ContextLoader,
    ) -> Result<ContextJson, GetLeadError>;

    /// Drops the context of `lead` from every tier on every instance. Call it
    /// after the write's transaction committed. Never fails: a tier that
    /// cannot be reached is cleared when it comes back.
    async fn invalidate(&self, tenant: TenantId, lead: LeadId);

    /// Counters since start.
    fn stats(&self) -> CacheStats;

    /// `Some(longest a copy is kept)` when this cache keeps copies that no
    /// invalidation from another process reaches (an in-process tier
    /// without a shared tier): the app must then follow the change log and
    /// invalidate what other processes changed. `None` for a cache that
    /// keeps nothing, or one that hears other writers through its shared
    /// tier.
    fn needs_change_log(&self) -> Option<std::time::Duration> {
        None
    }

    /// Up to `limit` keys most recently loaded anywhere in the fleet, most
    /// recent first, for warming a starting instance. Each is later loaded
    /// in its own tenant's context, so this needs no cross-tenant query. A
    /// cache without a shared tier knows none.
    async fn hot_keys(&self, limit: usize) -> Vec<(TenantId, LeadId)> {
        let _ = limit;
        Vec::new()
    }

    /// Round-trips the shared tier (Redis `PING`); `None` when there is no
    /// shared tier. The cache works without it, so a failure here means
    /// "degraded", not "down".
    async fn ping_shared(&self) -> Option<Result<std::time::Duration, crate::HealthError>> {
        None
    }
}

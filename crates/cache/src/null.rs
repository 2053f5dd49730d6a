//! [`NullCache`]: the cache that keeps nothing, for `cache.enabled = false`
//! and for tests that want every read to reach the store.

use std::sync::Arc;

use async_trait::async_trait;
use leadline_domain::{LeadContext, LeadId, TenantId};
use leadline_ports::{CacheStats, ContextCache, ContextLoader, GetLeadError};

use crate::stats::Counters;

/// Runs the loader on every call. Its stats count loads (and their errors and
/// time) only; there are no tiers to hit.
#[derive(Debug, Default)]
pub struct NullCache {
    stats: Counters,
}

impl NullCache {
    /// A null cache with zeroed stats.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl ContextCache for NullCache {
    async fn get_or_load(
        &self,
        _tenant: TenantId,
        _lead: LeadId,
        load: ContextLoader,
    ) -> Result<Arc<LeadContext>, GetLeadError> {
        let started = std::time::Instant::now();
        let loaded = load().await;
        self.stats.record_load(started.elapsed(), loaded.is_err());
        loaded.map(Arc::new)
    }

    async fn invalidate(&self, _tenant: TenantId, _lead: LeadId) {}

    fn stats(&self) -> CacheStats {
        self.stats.snapshot()
    }
}

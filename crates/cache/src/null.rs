//! [`NullCache`]: the cache that keeps nothing, for `cache.enabled = false`
//! and for tests that want every read to reach the store.

use async_trait::async_trait;
use leadline_domain::{LeadId, TenantId};
use leadline_ports::{CacheStats, ContextCache, ContextJson, ContextLoader, GetLeadError};

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
    ) -> Result<ContextJson, GetLeadError> {
        let started = std::time::Instant::now();
        let loaded = load().await;
        self.stats.record_load(started.elapsed(), loaded.is_err());
        ContextJson::render(&loaded?).map_err(|e| GetLeadError::Unknown(e.into()))
    }

    async fn invalidate(&self, _tenant: TenantId, _lead: LeadId) {}

    fn stats(&self) -> CacheStats {
        self.stats.snapshot()
    }
}

//! [`HealthCheck`] on the store.

use std::time::Duration;

use async_trait::async_trait;
use leadline_ports::{HealthCheck, HealthError, PoolStats};

use crate::Store;

#[async_trait]
impl HealthCheck for Store {
    async fn ping(&self, timeout: Duration) -> Result<Duration, HealthError> {
        Store::ping(self, timeout).await
    }

    fn pool_stats(&self) -> PoolStats {
        Store::pool_stats(self)
    }

    fn backend(&self) -> &'static str {
        Store::backend(self).name()
    }

    async fn ping_read_pool(&self, timeout: Duration) -> Option<Result<Duration, HealthError>> {
        Store::ping_read_pool(self, timeout).await
    }

    fn read_pool_stats(&self) -> Option<PoolStats> {
        Store::read_pool_stats(self)
    }
}

//! [`HealthCheck`] on the store.
//!
//! The probe is a round trip, except after a write failed for lack of
//! storage: a full disk still answers `SELECT 1`, yet refuses every write
//! that needs space, so until a write commits again (or 30 s pass without
//! another such failure) the probe reports the full storage and `/readyz`
//! answers 503.

use std::time::Duration;

use async_trait::async_trait;
use leadline_ports::{HealthCheck, HealthError, PoolStats};

use crate::Store;

#[async_trait]
impl HealthCheck for Store {
    async fn ping(&self, timeout: Duration) -> Result<Duration, HealthError> {
        if let Some(age) = self.storage_full() {
            return Err(HealthError::Failed(format!(
                "storage full: a write failed for lack of space {} s ago and none has committed since",
                age.as_secs()
            )));
        }
        if self.write_flush_failed() {
            return Err(HealthError::Failed(
                "a flush of the SQLite write-ahead log failed: writes since the last good flush \
                 may not be on the disk, and every write is refused; restart the service"
                    .to_owned(),
            ));
        }
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

    fn point_read_stats(&self) -> Option<PoolStats> {
        Store::point_read_stats(self)
    }
}

//! Liveness of the backing store, for `/readyz` and operators.

use std::time::Duration;

use async_trait::async_trait;

/// A snapshot of the connection pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStats {
    /// Connections open now (idle + in use).
    pub size: u32,
    /// Open and idle.
    pub idle: u32,
    /// Open and lent out.
    pub in_use: u32,
    /// The configured ceiling.
    pub max: u32,
}

/// The store did not answer a health probe.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// No answer within the deadline.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// It answered with an error.
    #[error("{0}")]
    Failed(String),
}

/// Health of a backing service.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait HealthCheck: Send + Sync {
    /// Round-trips a trivial query within `timeout`; returns the latency.
    ///
    /// # Errors
    /// [`HealthError`] when the probe failed or timed out.
    async fn ping(&self, timeout: Duration) -> Result<Duration, HealthError>;

    /// The pool right now.
    fn pool_stats(&self) -> PoolStats;

    /// Which backend this is ("postgres", "sqlite").
    fn backend(&self) -> &'static str;

    /// Like [`HealthCheck::ping`] on the read pool; `None` when no read pool
    /// is configured.
    async fn ping_read_pool(&self, timeout: Duration) -> Option<Result<Duration, HealthError>> {
        let _ = timeout;
        None
    }

    /// The read pool right now; `None` when there is none.
    fn read_pool_stats(&self) -> Option<PoolStats> {
        None
    }

    /// The connections held for single-statement reads (SQLite on a
    /// database file), right now; `None` when there are none.
    fn point_read_stats(&self) -> Option<PoolStats> {
        None
    }
}

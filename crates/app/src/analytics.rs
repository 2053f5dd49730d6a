//! Analytics' use cases: the funnel, per-agent figures and activity, and
//! the background refresh of the figures a store precomputes.

use std::{sync::Arc, time::Duration};

use leadline_domain::{Activity, AgentsReport, DateRange, Funnel, Interval, TenantId};
use leadline_ports::{AnalyticsError, AnalyticsRepository};
use serde::Deserialize;

/// Settings of the `[analytics]` section.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalyticsSettings {
    /// How often the precomputed figures (PostgreSQL's materialized views)
    /// are refreshed; every answer says how fresh it is (`as_of`).
    pub refresh_secs: u64,
}

impl Default for AnalyticsSettings {
    fn default() -> Self {
        Self { refresh_secs: 300 }
    }
}

impl AnalyticsSettings {
    /// Lists every invalid value by its key.
    #[must_use]
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        if (5..=86_400).contains(&self.refresh_secs) {
            Vec::new()
        } else {
            vec![(
                "analytics.refresh_secs",
                "must be between 5 and 86400".to_owned(),
            )]
        }
    }
}

/// Analytics.
#[derive(Clone)]
pub struct AnalyticsService {
    repo: Arc<dyn AnalyticsRepository>,
}

impl AnalyticsService {
    /// The service over `repo`.
    #[must_use]
    pub fn new(repo: Arc<dyn AnalyticsRepository>) -> Self {
        Self { repo }
    }

    /// Leads entering each status within `range`, per `interval`.
    ///
    /// # Errors
    /// The store's failures.
    pub async fn funnel(
        &self,
        tenant: TenantId,
        range: DateRange,
        interval: Interval,
    ) -> Result<Funnel, AnalyticsError> {
        let counts = self.repo.funnel_counts(tenant, range).await?;
        Ok(Funnel::build(range, interval, counts))
    }

    /// Every agent's figures.
    ///
    /// # Errors
    /// The store's failures.
    pub async fn agents(&self, tenant: TenantId) -> Result<AgentsReport, AnalyticsError> {
        Ok(AgentsReport::build(self.repo.agent_figures(tenant).await?))
    }

    /// Events per channel and direction within `range`, per `interval`.
    ///
    /// # Errors
    /// The store's failures.
    pub async fn activity(
        &self,
        tenant: TenantId,
        range: DateRange,
        interval: Interval,
    ) -> Result<Activity, AnalyticsError> {
        let counts = self.repo.event_counts(tenant, range).await?;
        Ok(Activity::build(range, interval, counts))
    }

    /// Refreshes the precomputed figures now; the new `as_of`, if this
    /// instance refreshed.
    ///
    /// # Errors
    /// The store's failures.
    pub async fn refresh(&self) -> Result<Option<chrono::DateTime<chrono::Utc>>, AnalyticsError> {
        self.repo.refresh().await
    }

    /// Refreshes at once (figures as old as the last deployment would
    /// surprise), then every `every` until `shutdown` completes. Instances
    /// starting together do not refresh together: one holds the lock, the
    /// others skip their turn.
    pub async fn run_refresher(
        self,
        every: Duration,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) {
        tokio::pin!(shutdown);
        let mut first = true;
        loop {
            if !first {
                tokio::select! {
                    () = &mut shutdown => return,
                    () = tokio::time::sleep(every) => {}
                }
            }
            first = false;
            let started = std::time::Instant::now();
            match self.refresh().await {
                Ok(Some(_)) => {
                    metrics::histogram!("leadline_analytics_refresh_seconds")
                        .record(started.elapsed().as_secs_f64());
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "analytics: refresh failed; trying again later")
                }
            }
        }
    }
}

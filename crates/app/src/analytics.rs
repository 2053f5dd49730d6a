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

    /// Refreshes when the figures are `every` old, then every `every`,
    /// until `shutdown` completes. On start that is at once unless another
    /// instance refreshed less than `every` ago (figures as old as the last
    /// deployment would surprise; a fleet restarting one by one, each
    /// refreshing everything as it came up, would load the database for
    /// nothing). Instances starting together do not refresh together: one
    /// holds the lock, the others skip their turn.
    pub async fn run_refresher(
        self,
        every: Duration,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) {
        tokio::pin!(shutdown);
        let mut wait = match self.repo.figures_age().await {
            Ok(Some(age)) => every.saturating_sub(age),
            Ok(None) => Duration::ZERO,
            Err(e) => {
                tracing::warn!(error = %e, "analytics: cannot tell the figures' age; refreshing");
                Duration::ZERO
            }
        };
        loop {
            if !wait.is_zero() {
                tokio::select! {
                    () = &mut shutdown => return,
                    () = tokio::time::sleep(wait) => {}
                }
            }
            wait = every;
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

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use leadline_ports::{AnalyticsError, MockAnalyticsRepository};

    use super::{AnalyticsService, Duration};

    const EVERY: Duration = Duration::from_secs(300);

    /// The refresher over a store whose figures are `age` old, and how
    /// many refreshes it has run.
    fn refresher(
        age: Result<Option<Duration>, ()>,
    ) -> (Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
        let mut repo = MockAnalyticsRepository::new();
        repo.expect_figures_age().times(1).returning(move || {
            age.map_err(|()| AnalyticsError::Unknown(anyhow::anyhow!("no answer")))
        });
        let refreshed = Arc::new(AtomicUsize::new(0));
        let count = refreshed.clone();
        repo.expect_refresh().returning(move || {
            count.fetch_add(1, Ordering::SeqCst);
            Ok(Some(chrono::Utc::now()))
        });
        let task = tokio::spawn(
            AnalyticsService::new(Arc::new(repo)).run_refresher(EVERY, std::future::pending()),
        );
        (refreshed, task)
    }

    /// Lets the refresher run until it waits on its timer again.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn fresh_figures_are_refreshed_when_they_come_of_age_not_at_start() {
        let (refreshed, task) = refresher(Ok(Some(Duration::from_secs(100))));
        settle().await;
        assert_eq!(refreshed.load(Ordering::SeqCst), 0, "refreshed at start");
        tokio::time::advance(Duration::from_secs(199)).await;
        settle().await;
        assert_eq!(refreshed.load(Ordering::SeqCst), 0, "refreshed too early");
        tokio::time::advance(Duration::from_secs(1)).await;
        settle().await;
        assert_eq!(
            refreshed.load(Ordering::SeqCst),
            1,
            "not refreshed at 300 s"
        );
        tokio::time::advance(EVERY).await;
        settle().await;
        assert_eq!(
            refreshed.load(Ordering::SeqCst),
            2,
            "not refreshed a turn later"
        );
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn stale_unknown_or_unreadable_figures_are_refreshed_at_start() {
        for age in [Ok(Some(EVERY)), Ok(Some(Duration::MAX)), Ok(None), Err(())] {
            let (refreshed, task) = refresher(age);
            settle().await;
            assert_eq!(refreshed.load(Ordering::SeqCst), 1, "{age:?}");
            task.abort();
        }
    }
}

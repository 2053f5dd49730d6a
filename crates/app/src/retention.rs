//! Retention's use cases: a tenant's policy, and the background job that
//! applies every tenant's policy in bounded batches.

use std::{sync::Arc, time::Duration};

use leadline_domain::{RetentionPolicy, TenantId};
use leadline_ports::{ContextCache, RetentionError, RetentionRepository};
use serde::Deserialize;

/// Settings of the `[retention]` section.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSettings {
    /// How often `serve` applies every tenant's policy.
    pub interval_secs: u64,
    /// Events removed per transaction: the bound on how long one batch
    /// holds its row locks.
    pub batch: u32,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            interval_secs: 3_600,
            batch: 1_000,
        }
    }
}

impl RetentionSettings {
    /// Lists every invalid value by its key.
    #[must_use]
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if !(10..=604_800).contains(&self.interval_secs) {
            problems.push((
                "retention.interval_secs",
                "must be between 10 and 604800 (a week)".to_owned(),
            ));
        }
        if !(1..=10_000).contains(&self.batch) {
            problems.push(("retention.batch", "must be between 1 and 10000".to_owned()));
        }
        problems
    }
}

/// What one pass over the tenants removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Tenants with a policy.
    pub tenants: u64,
    /// Events deleted or archived.
    pub events: u64,
    /// Transactions it took.
    pub batches: u64,
}

/// Batches one tenant gets per pass, so that one tenant's backlog cannot
/// hold up the others for long; the rest waits for the next pass.
const BATCHES_PER_PASS: u64 = 100;

/// Retention.
#[derive(Clone)]
pub struct RetentionService {
    repo: Arc<dyn RetentionRepository>,
    cache: Arc<dyn ContextCache>,
}

impl RetentionService {
    /// The service over `repo`; removed events leave `cache`'s contexts.
    #[must_use]
    pub fn new(repo: Arc<dyn RetentionRepository>, cache: Arc<dyn ContextCache>) -> Self {
        Self { repo, cache }
    }

    /// The tenant's policy.
    ///
    /// # Errors
    /// The store's failures.
    pub async fn policy(
        &self,
        tenant: TenantId,
    ) -> Result<Option<RetentionPolicy>, RetentionError> {
        self.repo.policy(tenant).await
    }

    /// Sets or removes the tenant's policy; it applies from the next pass.
    ///
    /// # Errors
    /// The store's failures.
    pub async fn set_policy(
        &self,
        tenant: TenantId,
        policy: Option<RetentionPolicy>,
    ) -> Result<Option<RetentionPolicy>, RetentionError> {
        self.repo.set_policy(tenant, policy).await
    }

    /// Applies `tenant`'s policy in batches of `batch` until nothing is due
    /// (or [`BATCHES_PER_PASS`] batches ran); returns `(events, batches)`.
    ///
    /// # Errors
    /// The store's failures; batches before the failure stand.
    pub async fn apply_tenant(
        &self,
        tenant: TenantId,
        batch: u32,
    ) -> Result<(u64, u64), RetentionError> {
        let (mut events, mut batches) = (0, 0);
        while batches < BATCHES_PER_PASS {
            let done = self.repo.apply(tenant, batch).await?;
            batches += 1;
            events += done.removed;
            for lead in &done.leads {
                self.cache.invalidate(tenant, *lead).await;
            }
            if done.removed < u64::from(batch) {
                break;
            }
        }
        Ok((events, batches))
    }

    /// One pass over every tenant with a policy.
    ///
    /// # Errors
    /// The store's failures listing the tenants; a tenant whose batch fails
    /// is logged and skipped.
    pub async fn apply_all(&self, batch: u32) -> Result<RetentionReport, RetentionError> {
        let mut report = RetentionReport::default();
        for tenant in self.repo.tenants_with_policy().await? {
            report.tenants += 1;
            match self.apply_tenant(tenant, batch).await {
                Ok((events, batches)) => {
                    report.events += events;
                    report.batches += batches;
                }
                Err(e) => {
                    tracing::warn!(%tenant, error = %e, "retention: a batch failed; trying again next pass")
                }
            }
        }
        Ok(report)
    }

    /// Applies every policy every `settings.interval_secs` until `shutdown`.
    pub async fn run(
        self,
        settings: RetentionSettings,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) {
        tokio::pin!(shutdown);
        loop {
            match self.apply_all(settings.batch).await {
                Ok(report) if report.events > 0 => {
                    tracing::info!(?report, "retention: applied");
                    metrics::counter!("leadline_retention_events_total").increment(report.events);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "retention: pass failed; trying again later"),
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(Duration::from_secs(settings.interval_secs)) => {}
            }
        }
    }
}

//! Analytics: the stored counts the dashboards are built from.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leadline_domain::{AgentFigures, DateRange, EventCount, FunnelCounts, Snapshot, TenantId};

use crate::Unavailable;

/// Failure of an analytics read or refresh.
#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    /// The backend could not be reached in time.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    /// Anything else: a bug or an unexpected backend failure.
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

/// The counts behind the funnel, agents and activity reports. An adapter may
/// serve them from precomputed views, as of their last refresh; every answer
/// says what time it is true of.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait AnalyticsRepository: Send + Sync {
    /// Status entries per day, and conversion cohorts per day and stage,
    /// within `range`, read together.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn funnel_counts(
        &self,
        tenant: TenantId,
        range: DateRange,
    ) -> Result<Snapshot<FunnelCounts>, AnalyticsError>;

    /// Every agent's figures.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn agent_figures(
        &self,
        tenant: TenantId,
    ) -> Result<Snapshot<Vec<AgentFigures>>, AnalyticsError>;

    /// Events per day, kind, direction and named channel within `range`.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn event_counts(
        &self,
        tenant: TenantId,
        range: DateRange,
    ) -> Result<Snapshot<Vec<EventCount>>, AnalyticsError>;

    /// Brings precomputed figures up to date, for every tenant. Returns the
    /// new `as_of`, or `None` when there is nothing to refresh (figures are
    /// computed when asked) or another instance is refreshing right now.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn refresh(&self) -> Result<Option<DateTime<Utc>>, AnalyticsError>;

    /// How long ago the precomputed figures were last brought up to date,
    /// by the store's own clock (so an instance's clock does not skew it);
    /// `None` where figures are computed when asked.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn figures_age(&self) -> Result<Option<std::time::Duration>, AnalyticsError>;
}

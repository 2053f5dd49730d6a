//! Rate limiting: one request checked against its API key's limit and its
//! tenant's limit for the request's class, in one atomic step.

use async_trait::async_trait;
use leadline_domain::{ApiKeyId, RateDecision, RateLimit, RouteClass, TenantId};

/// The limits one request is held to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimits {
    /// The API key's own limit for the class.
    pub key: RateLimit,
    /// The limit of the key's tenant (all its keys together).
    pub tenant: RateLimit,
}

/// Who decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateSource {
    /// The state every instance shares (Redis): the limits hold fleet-wide.
    Shared,
    /// This instance alone: no shared state is configured, or it did not
    /// answer in time. Each instance then allows up to the limits by itself.
    Local,
}

impl RateSource {
    /// Its name, for metrics.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Shared => "shared",
            Self::Local => "local",
        }
    }
}

/// The outcome of one request against both limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateVerdict {
    /// Against the key's limit.
    pub key: RateDecision,
    /// Against the tenant's limit.
    pub tenant: RateDecision,
    /// Who decided.
    pub source: RateSource,
}

impl RateVerdict {
    /// Whether the request may go ahead: both limits allowed it.
    #[must_use]
    pub fn allowed(&self) -> bool {
        self.key.allowed && self.tenant.allowed
    }
}

/// Keeps the state of every limited subject. Never fails: when its shared
/// state does not answer, an adapter decides from its own per-instance
/// state rather than refusing everyone (fail open, within the local limit)
/// or letting everything through.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Checks one request of `key` (of `tenant`) in `class` against
    /// `limits`. Allowed by both, it is counted against both; refused by
    /// either, it is counted against neither.
    async fn check(
        &self,
        tenant: TenantId,
        key: ApiKeyId,
        class: RouteClass,
        limits: RateLimits,
    ) -> RateVerdict;
}

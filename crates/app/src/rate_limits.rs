//! Rate limits per API key and per tenant, by class of request (reads,
//! writes, imports), through the [`RateLimiter`] port.
//!
//! Each request is held to two limits at once: its key's and its tenant's
//! (all the tenant's keys together), so one busy integration cannot starve
//! the tenant's other callers, and one tenant cannot take more than its
//! share of the service.

use std::sync::Arc;

use leadline_domain::{Caller, RateLimit, RouteClass};
use leadline_ports::{RateLimiter, RateLimits, RateVerdict};
use serde::{Deserialize, Serialize};

/// One limit in settings: a sustained rate and a burst.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitSetting {
    /// Requests per second, sustained.
    pub per_second: f64,
    /// Requests allowed at once from rest.
    pub burst: u32,
}

impl LimitSetting {
    const fn of(per_second: f64, burst: u32) -> Self {
        Self { per_second, burst }
    }
}

/// A limit per class of request.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClassLimits {
    /// `GET`s.
    pub read: LimitSetting,
    /// Every other method, imports aside.
    pub write: LimitSetting,
    /// `POST /v1/imports`.
    pub import: LimitSetting,
}

impl ClassLimits {
    fn get(&self, class: RouteClass) -> LimitSetting {
        match class {
            RouteClass::Read => self.read,
            RouteClass::Write => self.write,
            RouteClass::Import => self.import,
        }
    }
}

/// Settings of the rate limits (`[rate_limit]`).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSettings {
    /// `false` lets every request through unlimited.
    pub enabled: bool,
    /// Each API key's limits.
    pub key: ClassLimits,
    /// Each tenant's limits, all its keys together.
    pub tenant: ClassLimits,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            key: ClassLimits {
                read: LimitSetting::of(100.0, 200),
                write: LimitSetting::of(50.0, 100),
                import: LimitSetting::of(1.0, 5),
            },
            tenant: ClassLimits {
                read: LimitSetting::of(500.0, 1000),
                write: LimitSetting::of(250.0, 500),
                import: LimitSetting::of(2.0, 10),
            },
        }
    }
}

/// Every limit's settings key, for error messages.
const KEYS: [(&str, bool, RouteClass); 6] = [
    ("rate_limit.key.read", true, RouteClass::Read),
    ("rate_limit.key.write", true, RouteClass::Write),
    ("rate_limit.key.import", true, RouteClass::Import),
    ("rate_limit.tenant.read", false, RouteClass::Read),
    ("rate_limit.tenant.write", false, RouteClass::Write),
    ("rate_limit.tenant.import", false, RouteClass::Import),
];

impl RateLimitSettings {
    /// Lists every invalid value by its key.
    #[must_use]
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        KEYS.iter()
            .filter_map(|(name, of_key, class)| {
                let setting = if *of_key { self.key } else { self.tenant }.get(*class);
                RateLimit::new(setting.per_second, setting.burst)
                    .err()
                    .map(|e| (*name, e.to_string()))
            })
            .collect()
    }

    fn limits(&self, class: RouteClass) -> Option<RateLimits> {
        let key = self.key.get(class);
        let tenant = self.tenant.get(class);
        Some(RateLimits {
            key: RateLimit::new(key.per_second, key.burst).ok()?,
            tenant: RateLimit::new(tenant.per_second, tenant.burst).ok()?,
        })
    }
}

/// The limits in force, and the limiter that keeps their state.
#[derive(Clone)]
pub struct RateLimitService {
    /// The limiter and the limits by class, in [`RouteClass::ALL`]'s
    /// order; `None` when nothing is limited.
    enforced: Option<(Arc<dyn RateLimiter>, [RateLimits; 3])>,
}

impl std::fmt::Debug for RateLimitService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitService")
            .field("limits", &self.enforced.as_ref().map(|(_, l)| l))
            .finish_non_exhaustive()
    }
}

impl RateLimitService {
    /// Limits per `settings`, kept by `limiter`. Settings with a bad value
    /// (which [`RateLimitSettings::problems`] reports at start) or
    /// `enabled = false` limit nothing.
    #[must_use]
    pub fn new(limiter: Arc<dyn RateLimiter>, settings: &RateLimitSettings) -> Self {
        let limits = settings
            .enabled
            .then(|| {
                Some([
                    settings.limits(RouteClass::Read)?,
                    settings.limits(RouteClass::Write)?,
                    settings.limits(RouteClass::Import)?,
                ])
            })
            .flatten();
        Self {
            enforced: limits.map(|l| (limiter, l)),
        }
    }

    /// Limits nothing (what [`crate::Services::over`] starts with; the
    /// composition root plugs in the configured limits).
    #[must_use]
    pub fn disabled() -> Self {
        Self { enforced: None }
    }

    /// The limits of `class`, if any are enforced.
    #[must_use]
    pub fn limits(&self, class: RouteClass) -> Option<RateLimits> {
        let index = RouteClass::ALL.iter().position(|c| *c == class)?;
        self.enforced.as_ref().map(|(_, l)| l[index])
    }

    /// Checks (and counts) one request of `caller` in `class`; `None` when
    /// limits are off. Counted in `leadline_rate_limit_total` by tenant,
    /// class, outcome (`allowed`, `limited`) and source (`shared`, `local`).
    pub async fn check(&self, caller: &Caller, class: RouteClass) -> Option<RateVerdict> {
        let (limiter, _) = self.enforced.as_ref()?;
        let limits = self.limits(class)?;
        let verdict = limiter
            .check(caller.tenant.id, caller.key_id, class, limits)
            .await;
        metrics::counter!(
            "leadline_rate_limit_total",
            "tenant" => caller.tenant.id.to_string(),
            "class" => class.as_str(),
            "outcome" => if verdict.allowed() { "allowed" } else { "limited" },
            "source" => verdict.source.as_str(),
        )
        .increment(1);
        Some(verdict)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test fixtures of known-good values")]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_bad_values_are_named() {
        assert!(RateLimitSettings::default().problems().is_empty());
        let mut bad = RateLimitSettings::default();
        bad.key.write.burst = 0;
        bad.tenant.import.per_second = -1.0;
        let problems = bad.problems();
        let keys: Vec<&str> = problems.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["rate_limit.key.write", "rate_limit.tenant.import"]);
    }
}

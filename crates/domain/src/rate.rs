//! Rate limits: the generic cell rate algorithm (GCRA) and the classes of
//! requests it is applied to.
//!
//! GCRA keeps one number per limited subject, the *theoretical arrival
//! time* (TAT) of its next request. A request at `now` is allowed when
//! `now ≥ TAT − burst·T` (`T` = 1/rate), and moves the TAT to
//! `max(TAT, now) + T`. That is a token bucket of `burst` tokens refilled
//! at `rate`, stored as one timestamp: cheap to keep in a map or in Redis,
//! and atomic with a single read-modify-write. The shared (Redis) adapter
//! runs the same arithmetic in a Lua script; this is the reference, and
//! what the per-instance fallback runs.

use std::fmt;

/// What kind of request is limited; each has its own limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RouteClass {
    /// Reads (`GET`).
    Read,
    /// Writes (every other method), except imports.
    Write,
    /// CSV imports (`POST /v1/imports`): few, but each a lot of work.
    Import,
}

impl RouteClass {
    /// Every class.
    pub const ALL: [Self; 3] = [Self::Read, Self::Write, Self::Import];

    /// Its name, in settings, headers and metrics.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Import => "import",
        }
    }
}

impl fmt::Display for RouteClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A limit: a sustained rate, and how many requests may come at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Requests per second, sustained.
    per_second: f64,
    /// Requests allowed at once from rest.
    burst: u32,
}

/// A limit that cannot work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RateLimitError {
    /// The rate is not a positive, finite number (at most a million a
    /// second).
    #[error("per_second must be a positive number of at most 1000000")]
    Rate,
    /// The burst is zero: nothing would ever pass.
    #[error("burst must be at least 1")]
    Burst,
}

impl RateLimit {
    /// A limit of `per_second`, with `burst` at once.
    ///
    /// # Errors
    /// [`RateLimitError`] for a rate that is not positive and finite, or a
    /// zero burst.
    pub fn new(per_second: f64, burst: u32) -> Result<Self, RateLimitError> {
        if !(per_second.is_finite() && per_second > 0.0 && per_second <= 1_000_000.0) {
            return Err(RateLimitError::Rate);
        }
        if burst == 0 {
            return Err(RateLimitError::Burst);
        }
        Ok(Self { per_second, burst })
    }

    /// The sustained rate.
    #[must_use]
    pub fn per_second(&self) -> f64 {
        self.per_second
    }

    /// The burst.
    #[must_use]
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// `T`: the time one request uses up, in milliseconds.
    #[must_use]
    pub fn interval_ms(&self) -> f64 {
        1000.0 / self.per_second
    }

    /// How long an idle subject takes to get its whole burst back, in whole
    /// seconds (the `w` of the `RateLimit-Policy` header).
    #[must_use]
    pub fn window_secs(&self) -> u64 {
        // At most a million seconds by the bounds above; the cast is exact.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let secs = (f64::from(self.burst) * self.interval_ms() / 1000.0).ceil() as u64;
        secs.max(1)
    }

    /// Decides a request at `now_ms` for a subject whose TAT is `tat_ms`
    /// (`None`: never seen, or forgotten). Times are milliseconds on one
    /// clock.
    ///
    /// Worked in terms of the subject's *debt*, `TAT − now`, rather than
    /// of absolute times: near a large clock value the difference of two
    /// absolute times loses the low bits, and a count of whole intervals
    /// would come out one short. [`SLACK_MS`] absorbs what rounding is left
    /// (Redis keeps the TAT to the microsecond).
    #[must_use]
    pub fn decide(&self, tat_ms: Option<f64>, now_ms: f64) -> RateDecision {
        let interval = self.interval_ms();
        let tat = tat_ms.map_or(now_ms, |t| t.max(now_ms));
        let debt = tat - now_ms;
        let tolerance = f64::from(self.burst - 1) * interval;
        if debt > tolerance + SLACK_MS {
            RateDecision {
                allowed: false,
                remaining: 0,
                retry_after_ms: debt - tolerance,
                reset_ms: debt,
                tat_ms: tat,
            }
        } else {
            // Whole intervals of the tolerance still unused; at most
            // `burst - 1`, so the cast is exact.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let used = ((debt - SLACK_MS) / interval).ceil().max(0.0) as u32;
            RateDecision {
                allowed: true,
                remaining: (self.burst - 1).saturating_sub(used),
                retry_after_ms: 0.0,
                reset_ms: debt + interval,
                tat_ms: tat + interval,
            }
        }
    }
}

/// Rounding slack in every comparison of [`RateLimit::decide`], in ms.
pub const SLACK_MS: f64 = 0.001;

/// The outcome of one request against one limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateDecision {
    /// Whether the request may go ahead.
    pub allowed: bool,
    /// Requests that could follow at once.
    pub remaining: u32,
    /// When refused, how long until one would be allowed (ms).
    pub retry_after_ms: f64,
    /// How long until the whole burst is back (ms).
    pub reset_ms: f64,
    /// The subject's TAT to keep (unchanged when refused).
    pub tat_ms: f64,
}

impl RateDecision {
    /// Whole seconds to wait before retrying (`Retry-After`), at least 1
    /// when refused.
    #[must_use]
    pub fn retry_after_secs(&self) -> u64 {
        ceil_secs(self.retry_after_ms).max(u64::from(!self.allowed))
    }

    /// Whole seconds until the burst is back (the `t` of `RateLimit`).
    #[must_use]
    pub fn reset_secs(&self) -> u64 {
        ceil_secs(self.reset_ms)
    }
}

fn ceil_secs(ms: f64) -> u64 {
    // Bounded by the limits' window; negative only by rounding, clamped.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let secs = (ms.max(0.0) / 1000.0).ceil() as u64;
    secs
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test fixtures of known-good values")]
mod tests {
    use super::*;

    /// Requests at `times` (ms) against `limit`, from rest: which passed.
    fn run(limit: RateLimit, times: &[f64]) -> Vec<bool> {
        let mut tat = None;
        times
            .iter()
            .map(|&now| {
                let d = limit.decide(tat, now);
                tat = Some(d.tat_ms);
                d.allowed
            })
            .collect()
    }

    #[test]
    fn a_burst_passes_at_once_then_the_rate_holds() {
        let limit = RateLimit::new(10.0, 5).unwrap();
        // Eight at t=0: the burst of five passes.
        let at_once = run(limit, &[0.0; 8]);
        assert_eq!(at_once.iter().filter(|a| **a).count(), 5);
        assert!(at_once[..5].iter().all(|a| *a));
        // A steady 10/s from rest passes forever.
        let steady: Vec<f64> = (0..100).map(|i| f64::from(i) * 100.0).collect();
        assert!(run(limit, &steady).iter().all(|a| *a));
        // Far from the clock's origin, as on Redis' clock (ms since 1970).
        let far: Vec<f64> = (0..8).map(|_| 1.7e12 + 0.123).collect();
        assert_eq!(run(limit, &far).iter().filter(|a| **a).count(), 5);
        // 20/s for ten seconds: about the burst plus ten a second.
        let fast: Vec<f64> = (0..200).map(|i| f64::from(i) * 50.0).collect();
        let passed = run(limit, &fast).iter().filter(|a| **a).count();
        assert!((104..=106).contains(&passed), "{passed}");
    }

    #[test]
    fn a_refusal_says_when_to_come_back_and_keeps_the_state() {
        let limit = RateLimit::new(2.0, 1).unwrap();
        let first = limit.decide(None, 1000.0);
        assert!(first.allowed);
        assert_eq!(first.remaining, 0);
        let second = limit.decide(Some(first.tat_ms), 1100.0);
        assert!(!second.allowed);
        assert!((second.retry_after_ms - 400.0).abs() < 1e-9, "{second:?}");
        assert_eq!(second.retry_after_secs(), 1);
        assert_eq!(second.tat_ms, first.tat_ms, "a refusal costs nothing");
        let third = limit.decide(Some(second.tat_ms), 1500.0);
        assert!(third.allowed, "{third:?}");
    }

    #[test]
    fn remaining_and_reset_count_down() {
        let limit = RateLimit::new(1.0, 3).unwrap();
        let mut tat = None;
        let mut remaining = Vec::new();
        for _ in 0..3 {
            let d = limit.decide(tat, 0.0);
            tat = Some(d.tat_ms);
            remaining.push(d.remaining);
        }
        assert_eq!(remaining, [2, 1, 0]);
        // From a clock origin that leaves rounding in the sums.
        let slow = RateLimit::new(0.001, 3).unwrap();
        assert_eq!(slow.decide(None, 0.005).remaining, 2);
        assert_eq!(slow.decide(None, 1.7e12 + 0.005).remaining, 2);
        let d = limit.decide(tat, 0.0);
        assert_eq!((d.allowed, d.reset_secs()), (false, 3));
        assert_eq!(limit.window_secs(), 3);
    }

    #[test]
    fn limits_that_cannot_work_are_refused() {
        assert_eq!(RateLimit::new(0.0, 1), Err(RateLimitError::Rate));
        assert_eq!(RateLimit::new(f64::NAN, 1), Err(RateLimitError::Rate));
        assert_eq!(RateLimit::new(-1.0, 1), Err(RateLimitError::Rate));
        assert_eq!(RateLimit::new(1.0, 0), Err(RateLimitError::Burst));
        assert!(RateLimit::new(0.5, 1).is_ok());
    }
}

//! Retention: how long a tenant keeps its timeline, and what becomes of the
//! events older than that.
//!
//! A policy says "events that occurred more than `events_days` days ago
//! are deleted, or moved to the archive". The archive is not the timeline
//! (no context or timeline page shows it) but a privacy export still reads
//! it. Applying a policy is a background job in bounded batches; each batch
//! leaves one audit record on the tenant saying how many events it removed
//! and from before when.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{AuditContext, AuditRecord, TenantId, ValueError, approval::wire_enum};

wire_enum!(
    /// What becomes of an event past the policy's age.
    RetentionAction {
        /// Removed for good.
        Delete => "delete",
        /// Moved to the tenant's archive, which privacy exports still read.
        Archive => "archive",
    }
);

/// A tenant's retention policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RetentionPolicy {
    events_older_than_days: u32,
    action: RetentionAction,
}

impl RetentionPolicy {
    /// The longest age a policy may name (about a hundred years).
    pub const MAX_DAYS: u32 = 36_500;

    /// A policy for events older than `days` days.
    ///
    /// # Errors
    /// [`ValueError::Invalid`] unless `days` is 1 to [`Self::MAX_DAYS`].
    pub fn new(days: i64, action: RetentionAction) -> Result<Self, ValueError> {
        u32::try_from(days)
            .ok()
            .filter(|d| (1..=Self::MAX_DAYS).contains(d))
            .map(|events_older_than_days| Self {
                events_older_than_days,
                action,
            })
            .ok_or(ValueError::Invalid(
                "must be a whole number of days from 1 to 36500",
            ))
    }

    /// The age, in days.
    #[must_use]
    pub const fn events_older_than_days(self) -> u32 {
        self.events_older_than_days
    }

    /// What becomes of older events.
    #[must_use]
    pub const fn action(self) -> RetentionAction {
        self.action
    }

    /// The events that occurred before this time are past the policy at
    /// `now`.
    #[must_use]
    pub fn cutoff(self, now: DateTime<Utc>) -> DateTime<Utc> {
        now.checked_sub_days(chrono::Days::new(u64::from(self.events_older_than_days)))
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    /// The audit record of one batch: `removed` events that occurred before
    /// `cutoff`, on `tenant`, at `at`.
    #[must_use]
    pub fn batch_record(
        self,
        tenant: TenantId,
        removed: u64,
        cutoff: DateTime<Utc>,
        at: DateTime<Utc>,
        context: &AuditContext,
    ) -> AuditRecord {
        let what = match self.action {
            RetentionAction::Delete => "tenant.events_deleted",
            RetentionAction::Archive => "tenant.events_archived",
        };
        let summary = serde_json::json!({
            "events": removed,
            "occurred_before": cutoff,
            "policy_days": self.events_older_than_days,
        });
        AuditRecord::new(
            tenant,
            at,
            context,
            ("tenant", tenant.as_uuid(), what),
            None,
            Some(&summary),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_names_whole_days_within_bounds() {
        assert!(RetentionPolicy::new(0, RetentionAction::Delete).is_err());
        assert!(RetentionPolicy::new(-3, RetentionAction::Delete).is_err());
        assert!(RetentionPolicy::new(36_501, RetentionAction::Archive).is_err());
        let p = RetentionPolicy::new(30, RetentionAction::Archive).expect("valid");
        let now: DateTime<Utc> = "2026-12-06T10:00:00Z".parse().expect("a time");
        assert_eq!(
            p.cutoff(now),
            "2026-11-06T10:00:00Z"
                .parse::<DateTime<Utc>>()
                .expect("a time")
        );
    }

    #[test]
    fn a_batch_record_says_how_many_and_before_when() {
        let p = RetentionPolicy::new(30, RetentionAction::Delete).expect("valid");
        let tenant = TenantId::new();
        let now = Utc::now();
        let r = p.batch_record(tenant, 7, p.cutoff(now), now, &AuditContext::default());
        assert_eq!(r.action, "tenant.events_deleted");
        assert_eq!(r.entity_id, tenant.as_uuid());
        assert!(r.changes.contains("\"events\""), "{}", r.changes);
        assert!(r.changes.contains('7'), "{}", r.changes);
    }
}

//! The change feed: a tenant's log of changes read as pages (`GET
//! /v1/changes` as JSON) or followed as a stream (the same route as
//! Server-Sent Events), and the retention job that keeps the log bounded.
//!
//! A follower reads the log after its position, then waits for a wake-up
//! (a commit on this instance, or another instance's NOTIFY on PostgreSQL)
//! or its poll timer, and reads again: the log is the truth, wake-ups only
//! make it prompt.

use std::{
    collections::VecDeque,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use chrono::Utc;
use futures::Stream;
use leadline_domain::{ChangeFilter, ChangePosition, LoggedChange, TenantId};
use leadline_ports::{ChangeLog, ChangeLogError, ChangeSpan};
use metrics::gauge;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

/// Settings of the change feed (`[changes]`).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChangeSettings {
    /// How long changes are kept; a reader further behind gets 410.
    pub retention_hours: u32,
    /// How often an idle stream sends a comment line, so proxies keep it open.
    pub heartbeat_secs: u64,
    /// How often a follower reads the log without a wake-up (a missed
    /// NOTIFY, another process writing to the same SQLite file).
    pub poll_ms: u64,
}

impl Default for ChangeSettings {
    fn default() -> Self {
        Self {
            retention_hours: 168,
            heartbeat_secs: 15,
            poll_ms: 1000,
        }
    }
}

impl ChangeSettings {
    /// Lists every invalid value by its key.
    #[must_use]
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if !(1..=87_600).contains(&self.retention_hours) {
            problems.push((
                "changes.retention_hours",
                "must be between 1 and 87600 (ten years)".to_owned(),
            ));
        }
        if !(1..=300).contains(&self.heartbeat_secs) {
            problems.push((
                "changes.heartbeat_secs",
                "must be between 1 and 300".to_owned(),
            ));
        }
        if !(10..=60_000).contains(&self.poll_ms) {
            problems.push(("changes.poll_ms", "must be between 10 and 60000".to_owned()));
        }
        problems
    }
}

/// Changes read per query while following.
const FOLLOW_PAGE: u32 = 500;
/// Changes removed per retention statement.
const PRUNE_BATCH: u32 = 10_000;

/// The change feed's use cases.
#[derive(Clone)]
pub struct ChangeFeed {
    log: Arc<dyn ChangeLog>,
    settings: ChangeSettings,
    closing: Arc<Closing>,
}

/// Set when the process shuts down: open streams end at once (their
/// clients resume with `Last-Event-ID`) instead of holding the shutdown
/// for its whole grace period.
#[derive(Default)]
struct Closing {
    closed: AtomicBool,
    notify: tokio::sync::Notify,
}

impl std::fmt::Debug for ChangeFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeFeed")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl ChangeFeed {
    /// Over `log`.
    #[must_use]
    pub fn new(log: Arc<dyn ChangeLog>, settings: ChangeSettings) -> Self {
        Self {
            log,
            settings,
            closing: Arc::new(Closing::default()),
        }
    }

    /// Ends every open stream of this feed (and of its clones), now and
    /// later: the process is shutting down.
    pub fn close(&self) {
        self.closing.closed.store(true, Ordering::Release);
        self.closing.notify.notify_waiters();
    }

    fn is_closed(&self) -> bool {
        self.closing.closed.load(Ordering::Acquire)
    }

    /// Refuses a position past the end of the log (no position this log
    /// gave: the database was restored or reset since).
    async fn not_ahead(
        &self,
        tenant: TenantId,
        after: ChangePosition,
    ) -> Result<(), ChangeLogError> {
        let head = self.log.head(tenant).await?;
        if after > head {
            return Err(ChangeLogError::Ahead { after, head });
        }
        Ok(())
    }

    /// The same feed with other settings.
    #[must_use]
    pub fn with_settings(self, settings: ChangeSettings) -> Self {
        Self { settings, ..self }
    }

    /// The settings.
    #[must_use]
    pub fn settings(&self) -> ChangeSettings {
        self.settings
    }

    /// Where the tenant's log ends now.
    ///
    /// # Errors
    /// The store failed.
    pub async fn head(&self, tenant: TenantId) -> Result<ChangePosition, ChangeLogError> {
        self.log.head(tenant).await
    }

    /// One page of changes after `after` (from the oldest kept when
    /// `None`), the filtered-out ones skipped: `last` is where to continue
    /// even when no item passed the filter.
    ///
    /// # Errors
    /// `Expired` when retention removed changes after `after`.
    pub async fn page(
        &self,
        tenant: TenantId,
        after: Option<ChangePosition>,
        filter: &ChangeFilter,
        limit: u32,
    ) -> Result<ChangeSpan, ChangeLogError> {
        let span = match after {
            Some(after) => {
                let span = self.log.after(tenant, after, limit).await?;
                if span.items.is_empty() {
                    self.not_ahead(tenant, after).await?;
                }
                span
            }
            None => match self
                .log
                .after(tenant, ChangePosition::default(), limit)
                .await
            {
                Err(ChangeLogError::Expired { horizon, .. }) => {
                    self.log.after(tenant, horizon, limit).await?
                }
                other => other?,
            },
        };
        Ok(ChangeSpan {
            items: span
                .items
                .into_iter()
                .filter(|c| filter.admits(c.change.kind))
                .collect(),
            ..span
        })
    }

    /// Starts listening for other instances' changes now, rather than with
    /// the first follower (whose first write could come before the
    /// listener is up).
    pub fn listen(&self) {
        drop(self.log.wakeups());
    }

    /// Checks that a follower may start after `after` (nothing it would
    /// need was removed).
    ///
    /// # Errors
    /// `Expired`, or the store failed.
    pub async fn check(
        &self,
        tenant: TenantId,
        after: ChangePosition,
    ) -> Result<(), ChangeLogError> {
        self.log.after(tenant, after, 1).await?;
        self.not_ahead(tenant, after).await
    }

    /// Follows the tenant's log after `after`: every change that passes
    /// `filter`, in log order, as it commits. Ends only with `Expired` (the
    /// follower fell behind retention); a store outage is waited out.
    pub fn follow(
        &self,
        tenant: TenantId,
        after: ChangePosition,
        filter: ChangeFilter,
    ) -> impl Stream<Item = Result<LoggedChange, ChangeLogError>> + Send + 'static {
        struct Follower {
            feed: ChangeFeed,
            tenant: TenantId,
            cursor: ChangePosition,
            filter: ChangeFilter,
            buffer: VecDeque<LoggedChange>,
            wake: tokio::sync::broadcast::Receiver<TenantId>,
            /// Quick re-reads left after a wake-up that found nothing yet
            /// (PostgreSQL: the commit sits behind an older transaction
            /// still running elsewhere), and the pause before the next.
            rechecks: (u8, Duration),
            done: bool,
            _gauge: Subscribed,
        }
        // Subscribed before the first read, so no commit falls between
        // reading and waiting.
        let state = Follower {
            wake: self.log.wakeups(),
            feed: self.clone(),
            tenant,
            cursor: after,
            filter,
            buffer: VecDeque::new(),
            rechecks: (0, Duration::ZERO),
            done: false,
            _gauge: Subscribed::new(),
        };
        futures::stream::unfold(state, |mut s| async move {
            let poll = Duration::from_millis(s.feed.settings.poll_ms);
            loop {
                if s.done || s.feed.is_closed() {
                    return None;
                }
                if let Some(change) = s.buffer.pop_front() {
                    return Some((Ok(change), s));
                }
                match s.feed.log.after(s.tenant, s.cursor, FOLLOW_PAGE).await {
                    Ok(span) => {
                        s.cursor = span.last;
                        let filter = &s.filter;
                        s.buffer.extend(
                            span.items
                                .into_iter()
                                .filter(|c| filter.admits(c.change.kind)),
                        );
                        if !s.buffer.is_empty() || span.has_more {
                            s.rechecks.0 = 0;
                            continue;
                        }
                    }
                    Err(e @ ChangeLogError::Expired { .. }) => {
                        s.done = true;
                        return Some((Err(e), s));
                    }
                    Err(e) => {
                        tracing::warn!(tenant = %s.tenant, error = %e, "change feed: cannot read the log; trying again");
                    }
                }
                if s.rechecks.0 > 0 {
                    s.rechecks.0 -= 1;
                    tokio::time::sleep(s.rechecks.1).await;
                    s.rechecks.1 = (s.rechecks.1 * 2).min(Duration::from_secs(1));
                    continue;
                }
                let timer = tokio::time::sleep(poll);
                tokio::pin!(timer);
                let closing = s.feed.closing.clone();
                let closed = closing.notify.notified();
                tokio::pin!(closed);
                if s.feed.is_closed() {
                    return None;
                }
                loop {
                    tokio::select! {
                        () = &mut closed => return None,
                        () = &mut timer => break,
                        woken = s.wake.recv() => match woken {
                            Ok(t) if t == s.tenant => {
                                s.rechecks = (8, Duration::from_millis(50));
                                break;
                            }
                            Ok(_) => {}
                            Err(RecvError::Lagged(_)) => break,
                            Err(RecvError::Closed) => {
                                (&mut timer).await;
                                break;
                            }
                        },
                    }
                }
            }
        })
    }

    /// Removes changes older than the retention, in batches.
    ///
    /// # Errors
    /// The store failed.
    pub async fn prune(&self) -> Result<u64, ChangeLogError> {
        let older_than =
            Utc::now() - chrono::Duration::hours(i64::from(self.settings.retention_hours));
        let mut total = 0;
        loop {
            let n = self.log.prune(older_than, PRUNE_BATCH).await?;
            total += n;
            if n < u64::from(PRUNE_BATCH) {
                return Ok(total);
            }
        }
    }

    /// Prunes every ten minutes until `shutdown` completes.
    pub async fn run_retention(self, shutdown: impl std::future::Future<Output = ()> + Send) {
        tokio::pin!(shutdown);
        loop {
            match self.prune().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "change feed: retention removed old changes"),
                Err(e) => {
                    tracing::warn!(error = %e, "change feed: retention failed; trying again later")
                }
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(Duration::from_secs(600)) => {}
            }
        }
    }
}

/// Counts open followers in `change_feed_followers` while it lives.
struct Subscribed;

impl Subscribed {
    fn new() -> Self {
        gauge!("change_feed_followers").increment(1.0);
        Self
    }
}

impl Drop for Subscribed {
    fn drop(&mut self) {
        gauge!("change_feed_followers").decrement(1.0);
    }
}

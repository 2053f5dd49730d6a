//! The change feed: a tenant's log of changes read as pages (`GET
//! /v1/changes` as JSON) or followed as a stream (the same route as
//! Server-Sent Events), and the retention job that keeps the log bounded.
//!
//! A follower first reads the log after its position until it is caught
//! up. From then on it takes what the tenant's *tail* reads: one task per
//! tenant with followers on this instance, which reads the log after each
//! wake-up (a commit on this instance, or another instance's NOTIFY on
//! PostgreSQL) and on its poll timer, and hands each batch to every
//! follower. So a thousand streams on one tenant cost one read per commit
//! and one per poll, not a thousand. The log is the truth, wake-ups only
//! make it prompt: a follower that misses a batch (it fell behind the
//! tail's buffer, or a batch starts past its position) reads the log itself
//! again until it is caught up.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex,
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
use tokio::sync::broadcast::{self, error::RecvError};

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
/// Batches a tail keeps for its slowest follower; one further behind reads
/// the log itself.
const TAIL_BATCHES: usize = 256;
/// Changes removed per retention statement.
const PRUNE_BATCH: u32 = 10_000;

/// The change feed's use cases.
#[derive(Clone)]
pub struct ChangeFeed {
    log: Arc<dyn ChangeLog>,
    settings: ChangeSettings,
    closing: Arc<Closing>,
    tails: Arc<Mutex<HashMap<TenantId, broadcast::Sender<Arc<Batch>>>>>,
}

/// What a tail read: the changes after `from` up to `to` (all of them,
/// unfiltered; `to` may move without a change passing, as a read can end
/// past filtered-out rows).
#[derive(Debug)]
struct Batch {
    from: ChangePosition,
    to: ChangePosition,
    items: Vec<LoggedChange>,
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
            tails: Arc::new(Mutex::new(HashMap::new())),
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
            tail: broadcast::Receiver<Arc<Batch>>,
            /// Whether its last read of its own reached the end of the log
            /// (no more pages): from then on the tail's batches carry it,
            /// and a batch that starts past `cursor` sends it back to the
            /// log. Requiring that read to be empty as well would make a
            /// follower whose reads keep finding the latest write chase the
            /// log with a read per write instead of joining the tail.
            caught_up: bool,
            done: bool,
            _gauge: Subscribed,
        }
        // Subscribed to the tail before the first read, so no batch falls
        // between reading and listening.
        let state = Follower {
            tail: self.tail(tenant),
            feed: self.clone(),
            tenant,
            cursor: after,
            filter,
            buffer: VecDeque::new(),
            caught_up: false,
            done: false,
            _gauge: Subscribed::new(),
        };
        futures::stream::unfold(state, |mut s| async move {
            loop {
                if s.done || s.feed.is_closed() {
                    return None;
                }
                if let Some(change) = s.buffer.pop_front() {
                    return Some((Ok(change), s));
                }
                if !s.caught_up {
                    match s.feed.log.after(s.tenant, s.cursor, FOLLOW_PAGE).await {
                        Ok(span) => {
                            s.caught_up = !span.has_more;
                            s.cursor = span.last;
                            let filter = &s.filter;
                            s.buffer.extend(
                                span.items
                                    .into_iter()
                                    .filter(|c| filter.admits(c.change.kind)),
                            );
                        }
                        Err(e @ ChangeLogError::Expired { .. }) => {
                            s.done = true;
                            return Some((Err(e), s));
                        }
                        Err(e) => {
                            tracing::warn!(tenant = %s.tenant, error = %e, "change feed: cannot read the log; trying again");
                            if !s
                                .feed
                                .pause(Duration::from_millis(s.feed.settings.poll_ms))
                                .await
                            {
                                return None;
                            }
                        }
                    }
                    continue;
                }
                let closing = s.feed.closing.clone();
                let closed = closing.notify.notified();
                tokio::pin!(closed);
                if s.feed.is_closed() {
                    return None;
                }
                tokio::select! {
                    () = &mut closed => return None,
                    batch = s.tail.recv() => match batch {
                        // A batch that starts past this follower's position
                        // leaves a gap only the log can fill.
                        Ok(batch) if batch.from > s.cursor => s.caught_up = false,
                        Ok(batch) => {
                            let (cursor, filter) = (s.cursor, &s.filter);
                            s.buffer.extend(
                                batch
                                    .items
                                    .iter()
                                    .filter(|c| c.position > cursor && filter.admits(c.change.kind))
                                    .cloned(),
                            );
                            s.cursor = s.cursor.max(batch.to);
                        }
                        Err(RecvError::Lagged(_)) => s.caught_up = false,
                        Err(RecvError::Closed) => {
                            s.tail = s.feed.tail(s.tenant);
                            s.caught_up = false;
                        }
                    },
                }
            }
        })
    }

    /// Waits `pause`, or less if the feed closes: `false` when it did.
    async fn pause(&self, pause: Duration) -> bool {
        let closed = self.closing.notify.notified();
        tokio::pin!(closed);
        if self.is_closed() {
            return false;
        }
        tokio::select! {
            () = &mut closed => false,
            () = tokio::time::sleep(pause) => true,
        }
    }

    /// A subscription to `tenant`'s tail, started if it is not running.
    fn tail(&self, tenant: TenantId) -> broadcast::Receiver<Arc<Batch>> {
        let mut tails = self
            .tails
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(tail) = tails.get(&tenant) {
            return tail.subscribe();
        }
        let (sender, receiver) = broadcast::channel(TAIL_BATCHES);
        tails.insert(tenant, sender.clone());
        // The wake-ups are subscribed before the tail's first read.
        let wake = self.log.wakeups();
        tokio::spawn(self.clone().run_tail(tenant, sender, wake));
        receiver
    }

    /// Whether `tenant`'s tail should stop: nobody follows it any more,
    /// or the feed closed. Decided under the tails' lock, where followers
    /// subscribe, so none subscribes to a tail that is stopping.
    fn tail_ends(&self, tenant: TenantId, sender: &broadcast::Sender<Arc<Batch>>) -> bool {
        let mut tails = self
            .tails
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if sender.receiver_count() > 0 && !self.is_closed() {
            return false;
        }
        if tails
            .get(&tenant)
            .is_some_and(|current| current.same_channel(sender))
        {
            tails.remove(&tenant);
        }
        true
    }

    /// Reads `tenant`'s log after each wake-up and poll, from where it
    /// ends now, and hands each batch to the followers.
    async fn run_tail(
        self,
        tenant: TenantId,
        sender: broadcast::Sender<Arc<Batch>>,
        mut wake: broadcast::Receiver<TenantId>,
    ) {
        let poll = Duration::from_millis(self.settings.poll_ms);
        let mut cursor = loop {
            match self.log.head(tenant).await {
                Ok(head) => break head,
                Err(e) => {
                    tracing::warn!(%tenant, error = %e, "change feed: cannot read the log's head; trying again");
                    if self.tail_ends(tenant, &sender) || !self.pause(poll).await {
                        return;
                    }
                }
            }
        };
        // Where the tail starts, as a batch of nothing: a follower caught up
        // short of it (a commit landed between its last read and this one)
        // sees the gap and reads the log itself, rather than waiting for a
        // later batch that may never come.
        let _ = sender.send(Arc::new(Batch {
            from: cursor,
            to: cursor,
            items: Vec::new(),
        }));
        // Quick re-reads left after a wake-up that found nothing yet
        // (PostgreSQL: the commit sits behind an older transaction still
        // running elsewhere), and the pause before the next.
        let mut rechecks = (0_u8, Duration::ZERO);
        loop {
            if self.tail_ends(tenant, &sender) {
                return;
            }
            match self.log.after(tenant, cursor, FOLLOW_PAGE).await {
                Ok(span) => {
                    let found = !span.items.is_empty();
                    if span.last != cursor || found {
                        let batch = Batch {
                            from: cursor,
                            to: span.last,
                            items: span.items,
                        };
                        cursor = batch.to;
                        // None listening: the next check ends the tail.
                        let _ = sender.send(Arc::new(batch));
                    }
                    if found || span.has_more {
                        rechecks.0 = 0;
                        continue;
                    }
                }
                Err(ChangeLogError::Expired { horizon, .. }) => {
                    // Only a tail stalled past the retention gets here: it
                    // goes on from the horizon, and its followers see the
                    // gap and read (and expire) on their own.
                    cursor = horizon;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(%tenant, error = %e, "change feed: cannot read the log; trying again");
                }
            }
            if rechecks.0 > 0 {
                rechecks.0 -= 1;
                if !self.pause(rechecks.1).await {
                    return;
                }
                rechecks.1 = (rechecks.1 * 2).min(Duration::from_secs(1));
                continue;
            }
            let timer = tokio::time::sleep(poll);
            tokio::pin!(timer);
            let closing = self.closing.clone();
            let closed = closing.notify.notified();
            tokio::pin!(closed);
            if self.is_closed() {
                continue;
            }
            loop {
                tokio::select! {
                    () = &mut closed => break,
                    () = &mut timer => break,
                    woken = wake.recv() => match woken {
                        Ok(t) if t == tenant => {
                            rechecks = (8, Duration::from_millis(50));
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
    }

    /// Removes changes older than the retention, in batches.
    ///
    /// # Errors
    /// The store failed.
    pub async fn prune(&self) -> Result<u64, ChangeLogError> {
        self.prune_while(|| true).await
    }

    /// Prunes batch after batch until none is full or `go_on` says stop
    /// (asked after each full batch).
    async fn prune_while(&self, go_on: impl FnMut() -> bool) -> Result<u64, ChangeLogError> {
        let older_than =
            Utc::now() - chrono::Duration::hours(i64::from(self.settings.retention_hours));
        crate::stopping::drain(
            u64::from(PRUNE_BATCH),
            || self.log.prune(older_than, PRUNE_BATCH),
            go_on,
        )
        .await
    }

    /// Prunes every ten minutes until `shutdown` completes.
    pub async fn run_retention(self, shutdown: impl std::future::Future<Output = ()> + Send) {
        tokio::pin!(shutdown);
        loop {
            // A stop waits for one batch at most, not for the whole backlog.
            let mut stopped = false;
            let pruned = self
                .prune_while(|| {
                    stopped = crate::stopping::requested(shutdown.as_mut());
                    !stopped
                })
                .await;
            match pruned {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "change feed: retention removed old changes"),
                Err(e) => {
                    tracing::warn!(error = %e, "change feed: retention failed; trying again later")
                }
            }
            if stopped {
                return;
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

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicU64, Ordering},
        },
        time::Duration,
    };

    use leadline_ports::MockChangeLog;

    use super::{ChangeFeed, ChangeSettings, PRUNE_BATCH};

    /// A log with `batches` full batches past retention, and how many
    /// times `prune` was called.
    fn backlog(batches: u64) -> (ChangeFeed, Arc<AtomicU64>) {
        let calls = Arc::new(AtomicU64::new(0));
        let count = calls.clone();
        let mut log = MockChangeLog::new();
        log.expect_prune().returning(move |_, max| {
            let call = count.fetch_add(1, Ordering::SeqCst);
            Ok(if call < batches { u64::from(max) } else { 0 })
        });
        (
            ChangeFeed::new(Arc::new(log), ChangeSettings::default()),
            calls,
        )
    }

    #[tokio::test]
    async fn prune_drains_the_whole_backlog() {
        let (feed, calls) = backlog(50);
        let pruned = feed.prune().await.expect("pruned");
        assert_eq!(pruned, 50 * u64::from(PRUNE_BATCH));
        assert_eq!(calls.load(Ordering::SeqCst), 51);
    }

    #[tokio::test]
    async fn a_stop_waits_for_one_batch_not_the_backlog() {
        let (feed, calls) = backlog(50);
        // Requested before retention starts; an `async` block panics if
        // polled after completing, so this also proves it returns at once.
        tokio::time::timeout(Duration::from_secs(10), feed.run_retention(async {}))
            .await
            .expect("retention stops");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}

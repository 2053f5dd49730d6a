//! Appends, combined: the events that concurrent requests append are
//! written together, on SQLite by one transaction of the one writer, on
//! PostgreSQL by one statement per tenant.
//!
//! A SQLite file has one writer connection, and a write's turn on it is
//! mostly waiting: `BEGIN`, the lead's check, the rows, `COMMIT`, each a
//! hand-off to the connection's thread and back, then the flush of the
//! log that acknowledges it (`wal_sync.rs`). On PostgreSQL each append was
//! one statement and one commit, and the server's work per statement (the
//! executor's set-up, the change log's statement trigger, the commit) was
//! most of the cost. Appends are the writes that arrive in streams, so
//! they share turns, as commits share a flush: each request queues its
//! event (with the change and the audit record it makes, which need the
//! request's own context) and waits for its answer; the first one to find
//! a turn free takes every event queued by then and writes them; those
//! queued meanwhile go in the next. SQLite has one queue and one turn for
//! every tenant. PostgreSQL has a queue and a turn per tenant with appends
//! waiting, and a batch is one statement (row-level security scopes a
//! statement to one tenant anyway): a tenant's batch that waits, on a
//! lead's lock say, holds up no other tenant's appends. A lone append is a
//! batch of one, written as before. Measured at 64 concurrent appends on
//! the 2-core bench machine (pool of 16, five tenants, `xtask bench-load`),
//! a lane per tenant makes 6,300–6,500 appends/s, two turns per lane
//! 5,100, and two turns shared by all tenants 6,700–7,600: the lanes cost
//! about a tenth of the throughput, for tenants that cannot hold each
//! other up.
//!
//! What each request is told is what a transaction of its own would have
//! told it:
//! - Refusals are decided per event (a missing or deleted lead, an event
//!   that predates its lead, an actor that is no agent of the tenant): a
//!   refused event is left out, the others are written. SQLite reads the
//!   batch's leads and agents in the transaction; PostgreSQL's statement
//!   writes only onto live leads, asks about each event it did not write,
//!   and leaves unknown actors to their foreign key (which fails the
//!   statement: see halving below).
//! - An answer leaves only after the commit (on SQLite, and its flush), as
//!   every write is acknowledged.
//! - A fault the whole batch meets (the writer unavailable, a full disk,
//!   lock contention past its deadline) is every request's answer. Any
//!   other failure might be one event's: the batch is then halved, and each
//!   half written again, until the events that fail are alone, so that
//!   each event gets its own answer.
//! - A request that gave up before its transaction began is left out; once
//!   it began, the event is written like any other (an abandoned request's
//!   own transaction could have committed too).
//! - An append waits for a turn as any write waits for a connection: for
//!   at most `database.acquire_timeout_ms`, then
//!   it is taken back out of the queue and answered unavailable (503 with
//!   `Retry-After`). Once taken, its batch answers it, within the bounds of
//!   any transaction (the connection, the lock, the flush).
//!
//! The batch runs in a task of its own, so a request that gives up while
//! its batch is being written cannot leave the other requests without an
//! answer. Appends under an `Idempotency-Key`, which record their effect on
//! the key in the same transaction, keep a transaction each.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
};

use chrono::{DateTime, Utc};
use leadline_domain::{AuditRecord, Change, Event, EventId, TenantId};
use leadline_ports::{AppendEventError, Unavailable};
use metrics::{counter, histogram};
use sea_orm::{ConnectionTrait as _, DatabaseTransaction, DbBackend, Statement};
use tokio::sync::{Semaphore, oneshot};
use uuid::Uuid;

use crate::{Backend, Store, errors::Failure, tx::transaction};

/// The most events one transaction takes; more wait for the next.
const MAX_BATCH: usize = 256;

/// An append's outcome: `Ok(Err(_))` refused, `Err(_)` failed.
pub(crate) type Outcome = Result<Result<(), AppendEventError>, Failure>;

/// One request's event, with what the request decided about it.
#[derive(Debug)]
pub(crate) struct Append {
    /// The event, as [`Event::logged`] made it.
    pub(crate) event: Event,
    /// Its change-log entry.
    pub(crate) change: Change,
    /// Its audit record, made with the request's audit context.
    pub(crate) audit: AuditRecord,
}

/// An append waiting for its batch.
#[derive(Debug)]
struct Pending {
    append: Append,
    reply: oneshot::Sender<Outcome>,
}

/// The lanes of appends, one per store: on SQLite one lane for every
/// tenant (the one writer), on PostgreSQL one per tenant with appends
/// waiting, so that a tenant whose batch waits (on a lead's lock, say) holds
/// up no other tenant's appends.
#[derive(Debug)]
pub(crate) struct Appends {
    per_tenant: bool,
    lanes: Mutex<HashMap<TenantId, Arc<Lane>>>,
    /// The most appends one transaction has written.
    largest: AtomicUsize,
}

/// A queue of appends and the turn to write them: held by the batch being
/// written, from before its transaction begins until its answers have been
/// sent.
#[derive(Debug)]
struct Lane {
    queue: Mutex<Vec<Pending>>,
    turn: Arc<Semaphore>,
}

impl Default for Lane {
    fn default() -> Self {
        Self {
            queue: Mutex::default(),
            turn: Arc::new(Semaphore::new(1)),
        }
    }
}

impl Appends {
    /// One lane for all (`per_tenant` false: SQLite) or one per tenant
    /// (PostgreSQL, where row-level security scopes a statement to one
    /// tenant anyway).
    pub(crate) fn new(per_tenant: bool) -> Self {
        Self {
            per_tenant,
            lanes: Mutex::default(),
            largest: AtomicUsize::new(0),
        }
    }

    fn key(&self, tenant: TenantId) -> TenantId {
        if self.per_tenant {
            tenant
        } else {
            TenantId::from_uuid(Uuid::nil())
        }
    }

    /// The lane of `tenant`'s appends, made if none waits yet; held until
    /// the request has its answer ([`LaneHold`]).
    fn hold(&self, tenant: TenantId) -> LaneHold<'_> {
        let key = self.key(tenant);
        let lane = Arc::clone(
            self.lanes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(key)
                .or_default(),
        );
        LaneHold {
            appends: self,
            key,
            lane: Some(lane),
        }
    }
}

/// A request's hold on its lane. When the last request of a tenant's lane
/// lets go (answered, or gone), the lane is dropped with it: PostgreSQL's
/// lanes last only while their tenant has appends waiting.
struct LaneHold<'a> {
    appends: &'a Appends,
    key: TenantId,
    lane: Option<Arc<Lane>>,
}

impl LaneHold<'_> {
    fn lane(&self) -> &Lane {
        self.lane
            .as_deref()
            .unwrap_or_else(|| unreachable!("held until dropped"))
    }
}

impl Drop for LaneHold<'_> {
    fn drop(&mut self) {
        if !self.appends.per_tenant {
            return;
        }
        let mut lanes = self
            .appends
            .lanes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Counted under the map's lock, which every new hold takes first.
        drop(self.lane.take());
        if lanes
            .get(&self.key)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            lanes.remove(&self.key);
        }
    }
}

impl Lane {
    fn push(&self, pending: Pending) {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(pending);
    }

    /// Takes the append of event `id` back out of the queue, if no batch
    /// has taken it yet.
    fn withdraw(&self, id: EventId) -> bool {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let at = queue.iter().position(|p| p.append.event.id == id);
        at.map(|at| queue.remove(at)).is_some()
    }

    /// Whether the append of event `id` is still queued.
    fn is_queued(&self, id: EventId) -> bool {
        let queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        queue.iter().any(|p| p.append.event.id == id)
    }

    /// The next batch: up to [`MAX_BATCH`] queued appends whose requests are
    /// still waiting, oldest first.
    fn take(&self) -> Vec<Pending> {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let n = queue.len().min(MAX_BATCH);
        queue.drain(..n).filter(|p| !p.reply.is_closed()).collect()
    }
}

impl Store {
    /// Appends `append` in a batch with whatever other appends are queued
    /// (module documentation), and answers as its own transaction would.
    /// Its `db_query_duration_seconds` is the request's whole wait, queue
    /// included; the batch's transaction is `events.append_batch`.
    ///
    /// # Errors
    /// The batch's [`Failure`], or this event's when the batch failed in a
    /// way that may have been one event's; unavailable when the append was
    /// not taken into a batch within `database.acquire_timeout_ms`.
    pub(crate) async fn append_combined(&self, append: Append) -> Outcome {
        let started = tokio::time::Instant::now();
        let outcome = self.queued_append(append, started).await;
        histogram!("db_query_duration_seconds", "operation" => "events.append")
            .record(started.elapsed().as_secs_f64());
        outcome
    }

    async fn queued_append(&self, append: Append, started: tokio::time::Instant) -> Outcome {
        let hold = self.appends().hold(append.event.tenant_id);
        let lane = hold.lane();
        let id = append.event.id;
        // As long as any write waits for the writer's connection.
        let patience = self.retry_policy().busy_deadline;
        let (reply, mut answer) = oneshot::channel();
        lane.push(Pending { append, reply });
        let mut taken = false;
        loop {
            tokio::select! {
                biased;
                answered = &mut answer => {
                    return answered.unwrap_or_else(|_| {
                        Err(Failure::Other(anyhow::anyhow!(
                            "the batch that took this append ended without answering"
                        )))
                    });
                }
                Ok(turn) = Arc::clone(&lane.turn).acquire_owned(), if !taken => {
                    let batch = lane.take();
                    // Once a batch holds this append, only its answer is
                    // awaited.
                    taken = !lane.is_queued(id);
                    if batch.is_empty() {
                        // A batch took this append and its answer is on the
                        // way, or only abandoned appends were ahead of it
                        // (`take` dropped them).
                        continue;
                    }
                    let store = self.clone();
                    tokio::spawn(async move {
                        store.write_batch(batch).await;
                        drop(turn);
                    });
                }
                () = tokio::time::sleep_until(started + patience), if !taken => {
                    if lane.withdraw(id) {
                        counter!("db_pool_acquire_timeouts_total", "pool" => "primary")
                            .increment(1);
                        return Err(Failure::Unavailable(Unavailable(format!(
                            "no turn to write this append came within {} ms",
                            patience.as_millis()
                        ))));
                    }
                    // Taken: its batch answers, within its own bounds.
                    taken = true;
                }
            }
        }
    }

    /// Writes `batch` (on PostgreSQL, of one tenant: its lane's) and
    /// answers each of its requests.
    async fn write_batch(&self, batch: Vec<Pending>) {
        let mut parts = vec![batch];
        while let Some(mut part) = parts.pop() {
            // Nothing is written for a request that stopped waiting before
            // its transaction began.
            part.retain(|p| !p.reply.is_closed());
            if part.is_empty() {
                continue;
            }
            let (appends, replies): (Vec<Append>, Vec<_>) =
                part.into_iter().map(|p| (p.append, p.reply)).unzip();
            match self.write_appends(&appends).await {
                Ok(outcomes) => {
                    for (reply, outcome) in replies.into_iter().zip(outcomes) {
                        // A request that stopped waiting needs no answer.
                        let _ = reply.send(outcome);
                    }
                }
                Err(failure) if appends.len() > 1 && shared(&failure).is_none() => {
                    // Perhaps one event's failure: halve the part until the
                    // events that fail are alone, the older half first.
                    let mut older: Vec<Pending> = appends
                        .into_iter()
                        .zip(replies)
                        .map(|(append, reply)| Pending { append, reply })
                        .collect();
                    let newer = older.split_off(older.len() / 2);
                    parts.push(newer);
                    parts.push(older);
                }
                Err(failure) => {
                    // Several requests only for a failure [`shared`] copies.
                    let mut replies = replies.into_iter();
                    let last = replies.next_back();
                    for reply in replies {
                        if let Some(copy) = shared(&failure) {
                            let _ = reply.send(Err(copy));
                        }
                    }
                    if let Some(reply) = last {
                        let _ = reply.send(Err(failure));
                    }
                }
            }
        }
    }

    /// Writes the events of `appends` that may be written, in one
    /// transaction (on PostgreSQL one statement, of one tenant), and says of
    /// each whether it was or why not.
    async fn write_appends(&self, appends: &[Append]) -> Result<Vec<Outcome>, Failure> {
        let outcomes = if self.backend() == Backend::Postgres {
            let tenant = appends.first().map(|a| a.event.tenant_id);
            debug_assert!(appends.iter().all(|a| Some(a.event.tenant_id) == tenant));
            match tenant {
                Some(tenant) => self.append_statement(tenant, appends).await?,
                None => Vec::new(),
            }
        } else {
            self.write_sqlite_appends(appends)
                .await?
                .into_iter()
                .map(Ok)
                .collect()
        };
        // Counted once written: a batch that failed and was halved counts
        // as the parts that were.
        #[expect(
            clippy::cast_precision_loss,
            reason = "at most MAX_BATCH, exact in an f64"
        )]
        histogram!("db_append_batch_size").record(appends.len() as f64);
        self.appends()
            .largest
            .fetch_max(appends.len(), Ordering::Relaxed);
        Ok(outcomes)
    }

    /// [`Store::write_appends`] on SQLite: one transaction of the writer.
    async fn write_sqlite_appends(
        &self,
        appends: &[Append],
    ) -> Result<Vec<Result<(), AppendEventError>>, Failure> {
        let audits = self.audits();
        // The transaction names no tenant: SQLite has no tenant context to
        // set, and the runner would wake the tenant it names whenever the
        // batch wrote anything. The tenants whose logs grew are woken below.
        let no_tenant = TenantId::from_uuid(Uuid::nil());
        let outcomes = transaction!(
            self,
            "events.append_batch",
            no_tenant,
            Write,
            rows = appends.len(),
            |txn| {
                let refused = refusals(txn, appends).await?;
                let mut events = Vec::with_capacity(appends.len());
                let mut changes = Vec::with_capacity(appends.len());
                let mut audited = Vec::with_capacity(if audits { appends.len() } else { 0 });
                for (append, _) in appends.iter().zip(&refused).filter(|(_, r)| r.is_none()) {
                    events.push(append.event.clone());
                    changes.push(append.change.clone());
                    if audits {
                        audited.push(append.audit.clone());
                    }
                }
                if !events.is_empty() {
                    crate::changes::record_with_audit(txn, &events, &changes, &audited).await?;
                }
                Ok(refused
                    .into_iter()
                    .map(|r| r.map_or(Ok(()), Err))
                    .collect::<Vec<_>>())
            }
        )?;
        let mut woken = HashSet::new();
        for (append, outcome) in appends.iter().zip(&outcomes) {
            if outcome.is_ok() && woken.insert(append.event.tenant_id) {
                self.ping_changes(append.event.tenant_id);
            }
        }
        Ok(outcomes)
    }

    /// The most appends one transaction has written so far: how tests see
    /// that appends were combined.
    #[doc(hidden)]
    #[must_use]
    pub fn largest_append_batch_for_tests(&self) -> usize {
        self.appends().largest.load(Ordering::Relaxed)
    }
}

/// The failures that are the whole batch's and not one event's, copied for
/// each request: `None` for the others.
fn shared(failure: &Failure) -> Option<Failure> {
    match failure {
        Failure::Unavailable(u) => Some(Failure::Unavailable(Unavailable(u.0.clone()))),
        Failure::StorageFull(m) => Some(Failure::StorageFull(m.clone())),
        Failure::Transient(cause, m) => Some(Failure::Transient(*cause, m.clone())),
        Failure::Unique(_) | Failure::ForeignKey(_) | Failure::Other(_) => None,
    }
}

/// Why each of `appends` may not be written, read in `txn` in one
/// statement: its lead is missing or deleted, it predates its lead
/// ([`Event::predates`]), or its actor is no agent of its tenant. The same
/// rules, in the same order, as a lone append's.
async fn refusals(
    txn: &DatabaseTransaction,
    appends: &[Append],
) -> Result<Vec<Option<AppendEventError>>, Failure> {
    let pairs = |sql: &mut String, values: &mut Vec<sea_orm::Value>, keys: &[(TenantId, Uuid)]| {
        for (i, (tenant, id)) in keys.iter().enumerate() {
            sql.push_str(if i == 0 { "(" } else { " OR (" });
            sql.push_str("tenant_id = ? AND id = ?)");
            values.push(tenant.as_uuid().into());
            values.push((*id).into());
        }
    };
    let leads: Vec<_> = appends
        .iter()
        .map(|a| (a.event.tenant_id, a.event.lead_id.as_uuid()))
        .collect();
    let actors: Vec<_> = appends
        .iter()
        .filter_map(|a| {
            a.event
                .actor
                .map(|actor| (a.event.tenant_id, actor.as_uuid()))
        })
        .collect();
    let mut sql = String::from(
        "SELECT 0, tenant_id, id, created_at FROM leads WHERE deleted_at IS NULL AND (",
    );
    let mut values = Vec::with_capacity(2 * (leads.len() + actors.len()));
    pairs(&mut sql, &mut values, &leads);
    sql.push(')');
    if !actors.is_empty() {
        sql.push_str(" UNION ALL SELECT 1, tenant_id, id, NULL FROM agents WHERE ");
        pairs(&mut sql, &mut values, &actors);
    }
    let rows = txn
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            sql,
            values,
        ))
        .await?;
    let mut live: HashMap<(Uuid, Uuid), DateTime<Utc>> = HashMap::new();
    let mut agents: HashSet<(Uuid, Uuid)> = HashSet::new();
    for row in rows {
        let kind: i64 = row.try_get_by_index(0)?;
        let key: (Uuid, Uuid) = (row.try_get_by_index(1)?, row.try_get_by_index(2)?);
        if kind == 0 {
            live.insert(key, row.try_get_by_index(3)?);
        } else {
            agents.insert(key);
        }
    }
    Ok(appends
        .iter()
        .map(|a| {
            let tenant = a.event.tenant_id.as_uuid();
            match live.get(&(tenant, a.event.lead_id.as_uuid())) {
                None => Some(AppendEventError::LeadNotFound),
                Some(&lead_created_at) if a.event.predates(lead_created_at) => {
                    Some(AppendEventError::PredatesLead { lead_created_at })
                }
                Some(_) => a
                    .event
                    .actor
                    .filter(|actor| !agents.contains(&(tenant, actor.as_uuid())))
                    .map(|_| AppendEventError::AgentNotFound),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use leadline_domain::{AuditContext, AuditRecord, Change, LeadId, TenantId};
    use tokio::sync::oneshot;

    use super::{Append, Appends, Lane, MAX_BATCH, Outcome, Pending};

    fn pending(text: &str) -> (Pending, oneshot::Receiver<Outcome>) {
        let event = leadline_domain::fixtures::note(TenantId::new(), LeadId::new(), text);
        let change = Change::event(&event);
        let audit = AuditRecord::of_change(&change, &AuditContext::default());
        let (reply, answer) = oneshot::channel();
        let append = Append {
            event,
            change,
            audit,
        };
        (Pending { append, reply }, answer)
    }

    fn texts(batch: &[Pending]) -> Vec<String> {
        batch
            .iter()
            .map(|p| {
                p.append
                    .event
                    .content
                    .as_ref()
                    .map_or("", |c| c.as_str())
                    .to_owned()
            })
            .collect()
    }

    /// On PostgreSQL each tenant's appends queue in a lane of their own,
    /// which lasts while any request holds it; on SQLite all share one.
    #[test]
    fn each_tenant_queues_apart_on_postgres_and_together_on_sqlite() {
        let lanes = |appends: &Appends| appends.lanes.lock().expect("not poisoned").len();
        let appends = Appends::new(true);
        let (a, b) = (TenantId::new(), TenantId::new());
        let (a1, a2, b1) = (appends.hold(a), appends.hold(a), appends.hold(b));
        assert!(std::ptr::eq(a1.lane(), a2.lane()));
        assert!(!std::ptr::eq(a1.lane(), b1.lane()));
        drop(a1);
        assert_eq!(lanes(&appends), 2, "a's lane is still held");
        drop(a2);
        assert_eq!(lanes(&appends), 1, "a's lane went with its last request");
        drop(b1);
        assert_eq!(lanes(&appends), 0);

        let one = Appends::new(false);
        let (x, y) = (one.hold(a), one.hold(b));
        assert!(std::ptr::eq(x.lane(), y.lane()));
    }

    /// A request that stopped waiting before its batch was taken is not
    /// written (its own transaction would not have been either), and a
    /// batch takes at most `MAX_BATCH` appends, oldest first.
    #[test]
    fn a_batch_takes_the_oldest_appends_still_awaited() {
        let appends = Lane::default();
        let mut awaited = Vec::new();
        for i in 0..MAX_BATCH + 5 {
            let (p, answer) = pending(&i.to_string());
            appends.push(p);
            // Every third request gives up.
            if i % 3 != 0 {
                awaited.push(answer);
            }
        }
        let kept = |range: std::ops::Range<usize>| -> Vec<String> {
            range
                .filter(|i| i % 3 != 0)
                .map(|i| i.to_string())
                .collect()
        };
        // A request that waited too long takes its append back, until a
        // batch has taken it.
        let (late, _answer) = pending("late");
        let id = late.append.event.id;
        appends.push(late);
        assert!(appends.withdraw(id), "still queued");
        assert!(!appends.withdraw(id), "gone once withdrawn");
        assert_eq!(texts(&appends.take()), kept(0..MAX_BATCH));
        assert_eq!(texts(&appends.take()), kept(MAX_BATCH..MAX_BATCH + 5));
        assert!(appends.take().is_empty());
    }
}

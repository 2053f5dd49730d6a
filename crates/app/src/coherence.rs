//! Keeps an in-process context cache coherent with writes made by other
//! processes when no shared tier carries their invalidations: a CLI import
//! beside a running server, a second instance without Redis.
//!
//! Every write records its changes in the tenant's change log (the same
//! log `GET /v1/changes` reads), so the log already says which contexts
//! went stale. The follower remembers, per tenant it has cached contexts
//! of, the log position its copies are at least as fresh as, reads the log
//! after it whenever the tenant's log may have grown (a commit here, a
//! `NOTIFY` from elsewhere on PostgreSQL) and on a timer (another process
//! writing the same SQLite file), and invalidates each context a change
//! makes stale ([`leadline_domain::Change::stale_contexts`]).
//!
//! A tenant is tracked from its first load: the loader reads the log's
//! head before it reads the context, so every change the copy misses lies
//! after the tracked position. A tenant not loaded for the cache's time to
//! live holds no copies and is forgotten.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use leadline_domain::{ChangePosition, StaleContexts, TenantId};
use leadline_ports::{
    ChangeLog, ChangeLogError, ContextCache, GetLeadError, LeadRepository, ListLeadsError,
};
use tokio::sync::broadcast::error::RecvError;

/// Changes read per query while catching up.
const PAGE: u32 = 500;

/// The follower's state, shared with the context loader.
pub struct Coherence {
    log: Arc<dyn ChangeLog>,
    leads: Arc<dyn LeadRepository>,
    cache: Arc<dyn ContextCache>,
    /// Per tracked tenant: where its copies are fresh to, and when a
    /// context of it was last loaded.
    tracked: Mutex<HashMap<TenantId, Tracked>>,
    /// How long after its last load a tenant is forgotten (the cache's
    /// time to live: by then it holds no copy).
    forget_after: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Tracked {
    after: ChangePosition,
    last_load: Instant,
}

impl std::fmt::Debug for Coherence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coherence")
            .field("forget_after", &self.forget_after)
            .finish_non_exhaustive()
    }
}

impl Coherence {
    /// Over the log, the leads (to list an agent's leads) and the cache it
    /// invalidates.
    #[must_use]
    pub fn new(
        log: Arc<dyn ChangeLog>,
        leads: Arc<dyn LeadRepository>,
        cache: Arc<dyn ContextCache>,
        forget_after: Duration,
    ) -> Self {
        Self {
            log,
            leads,
            cache,
            tracked: Mutex::new(HashMap::new()),
            forget_after,
        }
    }

    fn tracked(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, Tracked>> {
        self.tracked.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Called by a context loader before it reads: from here on, changes
    /// to `tenant` are followed. The first load of a tenant reads where its
    /// log ends (one indexed query); later loads only note the time.
    ///
    /// # Errors
    /// `Unavailable` or `Unknown` when the log's head cannot be read: the
    /// context is then not loaded, since nothing would keep it fresh.
    pub async fn before_load(&self, tenant: TenantId) -> Result<(), GetLeadError> {
        if let Some(t) = self.tracked().get_mut(&tenant) {
            t.last_load = Instant::now();
            return Ok(());
        }
        let head = self.log.head(tenant).await.map_err(|e| match e {
            ChangeLogError::Unavailable(u) => GetLeadError::Unavailable(u),
            other => GetLeadError::Unknown(other.into()),
        })?;
        // A concurrent first load may have inserted meanwhile: keep the
        // older position (it covers more).
        self.tracked()
            .entry(tenant)
            .and_modify(|t| t.last_load = Instant::now())
            .or_insert(Tracked {
                after: head,
                last_load: Instant::now(),
            });
        Ok(())
    }

    /// Reads `tenant`'s log after its tracked position and invalidates
    /// every context the changes there make stale. Returns how many were
    /// invalidated.
    ///
    /// # Errors
    /// The log could not be read; the position is kept, so the next catch
    /// up starts where this one failed.
    pub async fn catch_up(&self, tenant: TenantId) -> Result<usize, ChangeLogError> {
        let Some(Tracked { mut after, .. }) = self.tracked().get(&tenant).copied() else {
            return Ok(0);
        };
        let mut invalidated = 0;
        loop {
            let span = match self.log.after(tenant, after, PAGE).await {
                Ok(span) => span,
                Err(ChangeLogError::Expired { horizon, .. }) => {
                    // Cannot happen while the cache's lifetime is shorter
                    // than the log's retention; say so if it does.
                    tracing::warn!(%tenant, "cache coherence: changes were pruned before they were read; some contexts may stay stale until they expire");
                    self.advance(tenant, horizon);
                    after = horizon;
                    continue;
                }
                Err(e) => return Err(e),
            };
            for logged in &span.items {
                match logged.change.stale_contexts() {
                    StaleContexts::None => {}
                    StaleContexts::Lead(lead) => {
                        self.cache.invalidate(tenant, lead).await;
                        invalidated += 1;
                    }
                    StaleContexts::AssignedTo(agent) => {
                        let leads = self.leads.ids_assigned_to(tenant, agent).await.map_err(
                            |e| match e {
                                ListLeadsError::Unavailable(u) => ChangeLogError::Unavailable(u),
                                ListLeadsError::Unknown(e) => ChangeLogError::Unknown(e),
                            },
                        )?;
                        for lead in leads {
                            self.cache.invalidate(tenant, lead).await;
                            invalidated += 1;
                        }
                    }
                }
                // Advanced per change: a failure above resumes after the
                // last change fully handled.
                self.advance(tenant, logged.position);
            }
            self.advance(tenant, span.last);
            after = span.last;
            if !span.has_more {
                return Ok(invalidated);
            }
        }
    }

    fn advance(&self, tenant: TenantId, to: ChangePosition) {
        if let Some(t) = self.tracked().get_mut(&tenant)
            && to > t.after
        {
            t.after = to;
        }
    }

    /// Forgets tenants not loaded within the cache's lifetime; returns the
    /// ones still tracked.
    fn live_tenants(&self) -> Vec<TenantId> {
        let now = Instant::now();
        let mut tracked = self.tracked();
        tracked.retain(|_, t| now.duration_since(t.last_load) < self.forget_after);
        tracked.keys().copied().collect()
    }

    async fn catch_up_logged(&self, tenant: TenantId) {
        match self.catch_up(tenant).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(%tenant, invalidated = n, "cache coherence: caught up"),
            Err(e) => {
                tracing::warn!(%tenant, error = %e, "cache coherence: cannot read the change log; trying again");
            }
        }
    }

    /// Follows the log until `shutdown` completes: a tracked tenant's log
    /// is read on its wake-ups (those that arrive while a read runs are
    /// merged, so a burst of commits costs one read per tenant), and every
    /// tracked tenant's every `poll`.
    pub async fn run(
        self: Arc<Self>,
        poll: Duration,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) {
        tokio::pin!(shutdown);
        let mut wake = Some(self.log.wakeups());
        let mut timer = tokio::time::interval(poll);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let woken = async {
                match wake.as_mut() {
                    Some(w) => w.recv().await,
                    None => std::future::pending().await,
                }
            };
            let tenants = tokio::select! {
                () = &mut shutdown => return,
                _ = timer.tick() => self.live_tenants(),
                woken = woken => match woken {
                    Ok(tenant) => {
                        let mut tenants = vec![tenant];
                        let mut lagged = false;
                        if let Some(w) = wake.as_mut() {
                            loop {
                                match w.try_recv() {
                                    Ok(t) => tenants.push(t),
                                    Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => lagged = true,
                                    Err(_) => break,
                                }
                            }
                        }
                        if lagged {
                            self.live_tenants()
                        } else {
                            tenants.sort_unstable();
                            tenants.dedup();
                            tenants
                        }
                    }
                    Err(RecvError::Lagged(_)) => self.live_tenants(),
                    // No more wake-ups: the timer alone keeps going.
                    Err(RecvError::Closed) => {
                        wake = None;
                        Vec::new()
                    }
                },
            };
            for tenant in tenants {
                self.catch_up_logged(tenant).await;
            }
        }
    }
}

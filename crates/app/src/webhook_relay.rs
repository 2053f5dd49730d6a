//! The webhook relay: every active endpoint is an ordered stream over its
//! tenant's change log, delivered one change at a time.
//!
//! A round claims a tenant's endpoints (none that another relay holds),
//! reads each one's log after its position, skips the types it does not
//! want, and POSTs the rest in order through the channel. A delivered
//! change moves the position; a transient failure stops the stream there
//! until the retry policy's next attempt (the same change, the same
//! `webhook-id`); a permanent refusal, or the last failed attempt, makes the
//! change a dead letter and the stream moves on. The round records where it
//! got in one write, only while its claim holds.
//!
//! At-least-once: the position is recorded after the receiver answered, so
//! a relay killed in between leaves the endpoint leased; it comes due when
//! the lease ends and the change goes out again with the same
//! `webhook-id`, which receivers use to drop the duplicate.
//!
//! Rounds run when a tenant's log grows (its wake-ups) and on a timer for
//! retries and for what no wake-up announced (another process writing the
//! same SQLite file): a caught-up endpoint is looked at again within
//! [`IDLE_RECHECK`] at the latest.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::Utc;
use futures::StreamExt;
use leadline_domain::{
    AttemptOutcome, CircuitBreaker, DeadLetter, Decision, RetryPolicy, TenantId, WebhookMessage,
    WebhookSecret,
};
use leadline_ports::{
    ChangeLog, ChangeLogError, ClaimedWebhook, SealedSecret, SecretBox, WebhookChannel,
    WebhookError, WebhookProgress, WebhookQueue, WebhookTarget,
};
use metrics::{counter, histogram};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use crate::RelaySettings;

/// How long a caught-up endpoint waits before it is looked at again
/// without a wake-up.
pub const IDLE_RECHECK: Duration = Duration::from_secs(10);

/// Changes read from the log per query.
const PAGE: u32 = 200;

/// The longest one endpoint's round goes on starting deliveries (or half
/// the lease, if shorter): then it yields, so that a slow receiver holds
/// up nobody else's for long.
const ROUND_BUDGET: Duration = Duration::from_secs(5);

/// What a round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebhookRoundReport {
    /// Endpoints claimed.
    pub endpoints: usize,
    /// Changes delivered.
    pub delivered: usize,
    /// Changes given up on (dead letters).
    pub dead: usize,
    /// Endpoints left waiting for a retry.
    pub retrying: usize,
    /// Endpoints whose progress could not be recorded (their claim ran
    /// out): their changes go out again.
    pub unrecorded: usize,
}

/// The relay.
pub struct WebhookRelay {
    queue: Arc<dyn WebhookQueue>,
    log: Arc<dyn ChangeLog>,
    channel: Arc<dyn WebhookChannel>,
    sealer: Arc<dyn SecretBox>,
    settings: RelaySettings,
    policy: RetryPolicy,
    breakers: Mutex<HashMap<String, CircuitBreaker>>,
}

impl std::fmt::Debug for WebhookRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookRelay")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// One endpoint's round, as it ends.
struct Round {
    progress: WebhookProgress,
    delivered: usize,
    retrying: bool,
}

impl WebhookRelay {
    /// A relay over the queue and the log, posting through `channel`,
    /// opening secrets with `sealer`; `relay.*` settings give the batch,
    /// lease, concurrency, retry policy and circuit breaker.
    #[must_use]
    pub fn new(
        queue: Arc<dyn WebhookQueue>,
        log: Arc<dyn ChangeLog>,
        channel: Arc<dyn WebhookChannel>,
        sealer: Arc<dyn SecretBox>,
        settings: RelaySettings,
    ) -> Self {
        Self {
            queue,
            log,
            channel,
            sealer,
            policy: settings.policy(),
            settings,
            breakers: Mutex::new(HashMap::new()),
        }
    }

    fn breakers(&self) -> std::sync::MutexGuard<'_, HashMap<String, CircuitBreaker>> {
        self.breakers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn admit(&self, destination: &str) -> Result<(), chrono::DateTime<Utc>> {
        let settings = &self.settings;
        self.breakers()
            .entry(destination.to_owned())
            .or_insert_with(|| {
                CircuitBreaker::new(
                    settings.breaker_threshold,
                    Duration::from_secs(settings.breaker_cool_down_secs),
                    Duration::from_secs(settings.breaker_cool_down_secs * 10),
                )
            })
            .admit(Utc::now())
    }

    fn observe(&self, destination: &str, healthy: bool) {
        if let Some(breaker) = self.breakers().get_mut(destination) {
            breaker.record(healthy, Utc::now());
        }
    }

    /// The secrets a claimed endpoint signs with, opened.
    fn secrets(&self, claimed: &ClaimedWebhook) -> Result<Vec<WebhookSecret>, String> {
        open_secrets(
            self.sealer.as_ref(),
            &claimed.secret,
            claimed.previous_secret.as_ref(),
        )
    }

    /// Delivers what one claimed endpoint has waiting, in order, until it
    /// is caught up, a change must wait for a retry, or half the lease is
    /// spent (the rest is left for the next claim).
    async fn round(&self, claimed: &ClaimedWebhook, send_by: Instant) -> Round {
        let hook = &claimed.webhook;
        let tenant = hook.tenant_id;
        let mut progress = WebhookProgress {
            after: claimed.after,
            attempts: claimed.attempts,
            next_attempt_at: Utc::now() + IDLE_RECHECK,
            // Kept until a delivery succeeds.
            last_error: hook.delivery.last_error.clone(),
            delivered_at: None,
            dead_letters: Vec::new(),
            idle: false,
        };
        let round = |progress| Round {
            progress,
            delivered: 0,
            retrying: false,
        };
        let secrets = match self.secrets(claimed) {
            Ok(secrets) => secrets,
            Err(reason) => {
                tracing::error!(%tenant, webhook = %hook.id, "{reason}");
                progress.last_error = Some(reason);
                progress.next_attempt_at = Utc::now() + chrono::Duration::hours(1);
                return round(progress);
            }
        };
        let target = WebhookTarget {
            url: hook.url.clone(),
            secrets,
        };
        // One tenant's failing endpoint must not silence another tenant's
        // on the same host: breakers are per tenant and destination.
        let destination = format!("{tenant}/{}", self.channel.destination(&hook.url));
        let mut delivered = 0;
        loop {
            let span = match self.log.after(tenant, progress.after, PAGE).await {
                Ok(span) => span,
                Err(ChangeLogError::Expired { horizon, .. }) => {
                    let reason = format!(
                        "changes up to {horizon} were removed by retention before they were delivered"
                    );
                    tracing::warn!(%tenant, webhook = %hook.id, "{reason}");
                    progress.after = horizon;
                    progress.attempts = 0;
                    progress.last_error = Some(reason);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(%tenant, error = %e, "webhooks: cannot read the change log; trying again");
                    progress.next_attempt_at = Utc::now() + chrono::Duration::seconds(5);
                    break;
                }
            };
            for logged in &span.items {
                if !hook.types.admits(logged.change.kind) {
                    progress.after = logged.position;
                    continue;
                }
                if Instant::now() >= send_by {
                    progress.next_attempt_at = Utc::now();
                    return Round {
                        progress,
                        delivered,
                        retrying: false,
                    };
                }
                if let Err(until) = self.admit(&destination) {
                    progress.next_attempt_at = until;
                    progress.last_error = Some(format!(
                        "the circuit breaker for {} is open after repeated failures: next attempt at {until}",
                        self.channel.destination(&hook.url)
                    ));
                    return Round {
                        progress,
                        delivered,
                        retrying: true,
                    };
                }
                let message = WebhookMessage::of(hook.id, logged);
                let started = Instant::now();
                let outcome = self.channel.post(&target, &message).await;
                histogram!("webhook_attempt_seconds").record(started.elapsed().as_secs_f64());
                counter!("webhook_attempts_total", "outcome" => outcome.label()).increment(1);
                self.observe(
                    &destination,
                    !matches!(outcome, AttemptOutcome::Transient { .. }),
                );
                let now = Utc::now();
                if let AttemptOutcome::Delivered { reply } = &outcome {
                    // The moment a crash means a redelivery: say it.
                    tracing::debug!(
                        webhook = %hook.id,
                        message_id = %message.id,
                        reply = %reply,
                        "webhook: accepted by the destination; recording"
                    );
                    progress.after = logged.position;
                    progress.attempts = 0;
                    progress.last_error = None;
                    progress.delivered_at = Some(now);
                    delivered += 1;
                    continue;
                }
                let attempt = progress.attempts + 1;
                let jitter = rand::random::<f64>();
                match self.policy.decide(attempt, &outcome, now, jitter) {
                    Decision::RetryAt(at) => {
                        progress.attempts = attempt;
                        progress.next_attempt_at = at;
                        progress.last_error = Some(outcome.detail().to_owned());
                        return Round {
                            progress,
                            delivered,
                            retrying: true,
                        };
                    }
                    Decision::Delivered | Decision::Failed | Decision::Dead => {
                        progress.dead_letters.push(DeadLetter {
                            webhook_id: hook.id,
                            change_id: logged.position,
                            kind: logged.change.kind,
                            entity_id: logged.change.entity_id,
                            attempts: attempt,
                            reason: outcome.detail().to_owned(),
                            at: now,
                        });
                        counter!("webhook_dead_letters_total").increment(1);
                        progress.after = logged.position;
                        progress.attempts = 0;
                        progress.last_error = Some(outcome.detail().to_owned());
                    }
                }
            }
            progress.after = progress.after.max(span.last);
            if !span.has_more {
                // Caught up: a wake-up may take it again at once.
                progress.idle = true;
                break;
            }
        }
        Round {
            progress,
            delivered,
            retrying: false,
        }
    }

    /// Claims `tenant`'s endpoints (woken: the caught-up ones too) and
    /// delivers what each has waiting.
    ///
    /// # Errors
    /// The claim failed (the store is unreachable).
    pub async fn run_tenant(
        &self,
        tenant: TenantId,
        woken: bool,
    ) -> Result<WebhookRoundReport, WebhookError> {
        let lease = Duration::from_secs(self.settings.lease_secs);
        let claimed = self.queue.claim(tenant, lease, woken).await?;
        // A claim holds for the lease by the claimer's clock: attempts start
        // only in its first half, so each has the second to be answered and
        // recorded before another relay may take the endpoint.
        let send_by = Instant::now() + (lease / 2).min(ROUND_BUDGET);
        let mut report = WebhookRoundReport {
            endpoints: claimed.len(),
            ..WebhookRoundReport::default()
        };
        let mut rounds = futures::stream::iter(claimed)
            .map(|claimed| async move {
                let round = self.round(&claimed, send_by).await;
                let recorded = match self.queue.progress(&claimed, &round.progress).await {
                    Ok(recorded) => recorded,
                    Err(e) => {
                        tracing::warn!(%tenant, webhook = %claimed.webhook.id, error = %e, "webhooks: progress not recorded; those changes go out again when the lease ends");
                        false
                    }
                };
                (round, recorded)
            })
            .buffer_unordered(usize::from(self.settings.concurrency));
        while let Some((round, recorded)) = rounds.next().await {
            report.delivered += round.delivered;
            report.dead += round.progress.dead_letters.len();
            report.retrying += usize::from(round.retrying);
            report.unrecorded += usize::from(!recorded);
        }
        Ok(report)
    }

    /// One pass over the tenants with due endpoints, one at a time (the
    /// tests' way to drive the relay; [`WebhookRelay::run`] runs tenants
    /// side by side).
    ///
    /// # Errors
    /// The scan failed (the store is unreachable).
    pub async fn run_due(&self) -> Result<WebhookRoundReport, WebhookError> {
        let mut total = WebhookRoundReport::default();
        for tenant in self.queue.due_tenants(64).await? {
            match self.run_tenant(tenant, false).await {
                Ok(r) => {
                    total.endpoints += r.endpoints;
                    total.delivered += r.delivered;
                    total.dead += r.dead;
                    total.retrying += r.retrying;
                    total.unrecorded += r.unrecorded;
                }
                Err(e) => {
                    tracing::warn!(%tenant, error = %e, "webhooks: cannot claim this tenant's endpoints; next round");
                }
            }
        }
        Ok(total)
    }

    /// Runs until `shutdown` completes: a tenant's endpoints as soon as its
    /// log grows, and the due ones every `relay.poll_interval_ms`. Tenants
    /// run side by side (up to `relay.concurrency` at once), each at most
    /// once at a time: a wake-up for a tenant in progress runs it again when
    /// it ends, so a slow receiver delays only its own tenant. Rounds in
    /// progress finish first.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()> + Send) {
        tokio::pin!(shutdown);
        let mut wake = Some(self.log.wakeups());
        let mut timer =
            tokio::time::interval(Duration::from_millis(self.settings.poll_interval_ms));
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut tenants = Tenants::new(usize::from(self.settings.concurrency.max(1)));
        tracing::info!("webhook relay started");
        loop {
            let woken = async {
                match wake.as_mut() {
                    Some(w) => w.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = &mut shutdown => break,
                _ = timer.tick() => match self.queue.due_tenants(64).await {
                    Ok(due) => {
                        for tenant in due {
                            tenants.start(&self, tenant, false);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "webhooks: cannot scan for due endpoints; trying again");
                    }
                },
                woken = woken => {
                    let mut heard = Vec::new();
                    match woken {
                        Ok(tenant) => heard.push(tenant),
                        Err(RecvError::Lagged(_)) => {}
                        Err(RecvError::Closed) => wake = None,
                    }
                    if let Some(w) = wake.as_mut() {
                        loop {
                            match w.try_recv() {
                                Ok(t) => heard.push(t),
                                Err(TryRecvError::Lagged(_)) => {}
                                Err(_) => break,
                            }
                        }
                    }
                    for tenant in heard {
                        tenants.start(&self, tenant, true);
                    }
                }
                Some(done) = tenants.tasks.join_next_with_id(), if !tenants.tasks.is_empty() => {
                    tenants.finished(&self, done);
                }
            }
        }
        while tenants.tasks.join_next().await.is_some() {}
        tracing::info!("webhook relay stopped");
    }
}

/// The tenants a running relay serves side by side.
/// Opens an endpoint's signing secrets: the current one (or why it cannot
/// be opened), and the previous one while it still signs and opens.
pub(crate) fn open_secrets(
    sealer: &dyn SecretBox,
    current: &SealedSecret,
    previous: Option<&SealedSecret>,
) -> Result<Vec<WebhookSecret>, String> {
    let open = |sealed| {
        sealer
            .open(sealed)
            .ok()
            .and_then(|bytes| WebhookSecret::from_bytes(&bytes).ok())
            .ok_or_else(|| {
                "the webhook's secret does not open with webhooks.secret_key (was the key changed?): rotate the webhook's secret".to_owned()
            })
    };
    let mut secrets = vec![open(current)?];
    if let Some(previous) = previous
        && let Ok(previous) = open(previous)
    {
        secrets.push(previous);
    }
    Ok(secrets)
}

struct Tenants {
    tasks: tokio::task::JoinSet<()>,
    /// Which task serves which tenant.
    running: HashMap<tokio::task::Id, TenantId>,
    /// Tenants to run (again) when a place is free or their run ends:
    /// `true` when woken.
    waiting: HashMap<TenantId, bool>,
    max: usize,
}

impl Tenants {
    fn new(max: usize) -> Self {
        Self {
            tasks: tokio::task::JoinSet::new(),
            running: HashMap::new(),
            waiting: HashMap::new(),
            max,
        }
    }

    fn start(&mut self, relay: &Arc<WebhookRelay>, tenant: TenantId, woken: bool) {
        if self.running.values().any(|t| *t == tenant) || self.running.len() >= self.max {
            *self.waiting.entry(tenant).or_default() |= woken;
            return;
        }
        let relay = Arc::clone(relay);
        let handle = self.tasks.spawn(async move {
            if let Err(e) = relay.run_tenant(tenant, woken).await {
                tracing::warn!(%tenant, error = %e, "webhooks: cannot claim this tenant's endpoints; the timer retries");
            }
        });
        self.running.insert(handle.id(), tenant);
    }

    fn finished(
        &mut self,
        relay: &Arc<WebhookRelay>,
        done: Result<(tokio::task::Id, ()), tokio::task::JoinError>,
    ) {
        let id = match &done {
            Ok((id, ())) => *id,
            Err(e) => {
                tracing::error!(error = %e, "webhooks: a tenant's round failed");
                e.id()
            }
        };
        let ended = self.running.remove(&id);
        // The tenant that ended first (its news came meanwhile), then any.
        let next = ended
            .filter(|t| self.waiting.contains_key(t))
            .or_else(|| self.waiting.keys().next().copied());
        if let Some(tenant) = next
            && let Some(woken) = self.waiting.remove(&tenant)
        {
            self.start(relay, tenant, woken);
        }
    }
}

//! Delivery of sent messages: the relay that drains the outbox through the
//! channel adapters, and the use cases people drive over HTTP (list the
//! deliveries, retry a failed one, set the tenant's sender).
//!
//! Email goes out over SMTP; every other channel (a text, a call, a
//! LinkedIn message) is POSTed, signed, to the tenant's webhook endpoint for
//! that channel, for the system that actually sends it.
//!
//! The relay is at-least-once: an attempt is recorded after the destination
//! answered, so a relay killed in between leaves the row leased, it comes
//! due again when the lease ends, and the message goes out a second time
//! with the same `Message-ID` (derived from the approval) or `webhook-id`
//! (the delivery's) for the receiver to recognise. The timeline still shows
//! one outcome: only the claim that holds the row records one.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::Utc;
use futures::StreamExt;
use leadline_domain::{
    AttemptOutcome, Channel, CircuitBreaker, Decision, Delivery, DeliveryId, DeliveryStatus,
    OutboundEmail, Page, PageLimit, RetryPolicy, SenderIdentity, TenantId, WebhookMessage,
};
use leadline_ports::{
    AttemptRecord, ClaimedDelivery, ContextCache, DeliveryError, DeliveryRepository, EmailChannel,
    QueueDepth, SecretBox, WebhookChannel, WebhookTarget,
};

use crate::webhook_relay::open_secrets;
use metrics::{counter, gauge, histogram};
use serde::Deserialize;
use tokio::sync::Notify;

/// The relay's settings (`[relay]`).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelaySettings {
    /// Run the relay inside `serve` (turn off to run `leadline relay`
    /// elsewhere).
    pub enabled: bool,
    /// Deliveries claimed at once.
    pub batch: u32,
    /// Deliveries attempted at the same time.
    pub concurrency: u16,
    /// How long a claimed delivery stays with its relay before another may
    /// take it (a relay that died holding it).
    pub lease_secs: u64,
    /// How often an idle relay looks for due work.
    pub poll_interval_ms: u64,
    /// Attempts before a message is dead-lettered.
    pub max_attempts: u32,
    /// First retry delay; it doubles per attempt (with jitter).
    pub retry_base_secs: u64,
    /// Longest retry delay.
    pub retry_cap_secs: u64,
    /// Consecutive transient failures that open a destination's circuit
    /// breaker.
    pub breaker_threshold: u32,
    /// How long an open breaker keeps the destination quiet (doubling on
    /// each failed probe, up to ten times this).
    pub breaker_cool_down_secs: u64,
}

impl Default for RelaySettings {
    fn default() -> Self {
        let policy = RetryPolicy::default();
        Self {
            enabled: true,
            batch: 100,
            concurrency: 8,
            lease_secs: 300,
            poll_interval_ms: 500,
            max_attempts: policy.max_attempts,
            retry_base_secs: policy.base.as_secs(),
            retry_cap_secs: policy.cap.as_secs(),
            breaker_threshold: 5,
            breaker_cool_down_secs: 30,
        }
    }
}

impl RelaySettings {
    /// Lists every invalid value by its key.
    #[must_use]
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        let mut at_least_one = |key, value: u64| {
            if value == 0 {
                problems.push((key, "must be at least 1".to_owned()));
            }
        };
        at_least_one("relay.batch", u64::from(self.batch));
        at_least_one("relay.concurrency", u64::from(self.concurrency));
        at_least_one("relay.lease_secs", self.lease_secs);
        at_least_one("relay.poll_interval_ms", self.poll_interval_ms);
        at_least_one("relay.max_attempts", u64::from(self.max_attempts));
        at_least_one("relay.retry_base_secs", self.retry_base_secs);
        at_least_one("relay.breaker_threshold", u64::from(self.breaker_threshold));
        at_least_one("relay.breaker_cool_down_secs", self.breaker_cool_down_secs);
        // Bounded so that no due time computed from them can overflow.
        let mut at_most = |key, value: u64, max: u64, what: &str| {
            if value > max {
                problems.push((key, format!("must be at most {max} ({what})")));
            }
        };
        at_most("relay.lease_secs", self.lease_secs, 86_400, "a day");
        at_most(
            "relay.poll_interval_ms",
            self.poll_interval_ms,
            60_000,
            "a minute",
        );
        at_most(
            "relay.retry_cap_secs",
            self.retry_cap_secs,
            604_800,
            "a week",
        );
        at_most(
            "relay.breaker_cool_down_secs",
            self.breaker_cool_down_secs,
            86_400,
            "a day",
        );
        at_most(
            "relay.max_attempts",
            u64::from(self.max_attempts),
            100,
            "attempts",
        );
        if self.retry_cap_secs < self.retry_base_secs {
            problems.push((
                "relay.retry_cap_secs",
                "must be at least relay.retry_base_secs".to_owned(),
            ));
        }
        if self.batch > 10_000 {
            problems.push(("relay.batch", "must be at most 10000".to_owned()));
        }
        problems
    }

    /// The retry policy these settings describe.
    #[must_use]
    pub fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts,
            base: Duration::from_secs(self.retry_base_secs),
            cap: Duration::from_secs(self.retry_cap_secs),
        }
    }
}

/// What one round of the relay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundReport {
    /// Deliveries claimed.
    pub claimed: usize,
    /// Delivered.
    pub delivered: usize,
    /// To be retried later.
    pub retrying: usize,
    /// Failed for good or dead-lettered.
    pub failed: usize,
    /// Put back untried: the destination's breaker is open.
    pub deferred: usize,
    /// Put back untried: half the lease had passed before their turn came,
    /// too late to be sure of recording an answer before another relay may
    /// take them.
    pub released: usize,
    /// Outcomes not recorded (the claim was lost, or the store failed: the
    /// lease brings those back).
    pub unrecorded: usize,
}

/// How messages other than email leave: POSTed through the webhook channel,
/// signed with secrets the sealer opens.
#[derive(Clone)]
pub struct MessageWebhooks {
    /// The HTTP adapter.
    pub channel: Arc<dyn WebhookChannel>,
    /// Opens the endpoints' secrets.
    pub sealer: Arc<dyn SecretBox>,
}

/// Drains the outbox: claims due deliveries, sends each through its
/// channel, records the outcome.
pub struct Relay {
    repo: Arc<dyn DeliveryRepository>,
    email: Option<Arc<dyn EmailChannel>>,
    messages: Option<MessageWebhooks>,
    cache: Arc<dyn ContextCache>,
    settings: RelaySettings,
    policy: RetryPolicy,
    default_sender: SenderIdentity,
    breakers: Mutex<HashMap<String, CircuitBreaker>>,
    wake: Notify,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("settings", &self.settings)
            .field("email", &self.email.as_ref().map(|e| e.destination()))
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// A relay over `repo`, sending email through `email` (none: email
    /// deliveries wait), from `default_sender` for tenants that set none,
    /// and the other channels' messages through `messages` (none: they
    /// wait).
    #[must_use]
    pub fn new(
        repo: Arc<dyn DeliveryRepository>,
        email: Option<Arc<dyn EmailChannel>>,
        messages: Option<MessageWebhooks>,
        cache: Arc<dyn ContextCache>,
        settings: RelaySettings,
        default_sender: SenderIdentity,
    ) -> Self {
        Self {
            repo,
            email,
            messages,
            cache,
            policy: settings.policy(),
            settings,
            default_sender,
            breakers: Mutex::new(HashMap::new()),
            wake: Notify::new(),
        }
    }

    /// The channels this relay can deliver on.
    #[must_use]
    pub fn channels(&self) -> Vec<Channel> {
        let mut channels: Vec<Channel> = self.email.iter().map(|_| Channel::Email).collect();
        if self.messages.is_some() {
            channels.extend(Channel::ALL.iter().filter(|&&c| c != Channel::Email));
        }
        channels
    }

    /// Asks an idle relay to look for work now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Claims one batch and delivers it.
    ///
    /// # Errors
    /// When the claim itself fails (the store is unreachable).
    pub async fn run_once(&self) -> Result<RoundReport, DeliveryError> {
        let channels = self.channels();
        let claimed = self
            .repo
            .claim_due(
                &channels,
                self.settings.batch,
                Duration::from_secs(self.settings.lease_secs),
            )
            .await?;
        let mut report = RoundReport {
            claimed: claimed.len(),
            ..RoundReport::default()
        };
        // A claim holds for `lease_secs` by the claimer's clock; an attempt
        // starts only in its first half, so it has the second half to be
        // answered and recorded before another relay may take the row.
        let send_by = Instant::now() + Duration::from_secs(self.settings.lease_secs) / 2;
        let mut outcomes = futures::stream::iter(in_turns(claimed))
            .map(|c| async move { self.deliver(c, send_by).await })
            .buffer_unordered(usize::from(self.settings.concurrency));
        while let Some(step) = outcomes.next().await {
            match step {
                Step::Recorded(Decision::Delivered) => report.delivered += 1,
                Step::Recorded(Decision::RetryAt(_)) => report.retrying += 1,
                Step::Recorded(Decision::Failed | Decision::Dead) => report.failed += 1,
                Step::Deferred => report.deferred += 1,
                Step::Released => report.released += 1,
                Step::Unrecorded => report.unrecorded += 1,
            }
        }
        Ok(report)
    }

    /// Runs rounds until `shutdown` completes: at once while there is work,
    /// otherwise every `relay.poll_interval_ms` (or when woken). A round in
    /// progress finishes first, so no attempt is cut off between the
    /// destination's answer and its record.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()> + Send) {
        let channels = self.channels();
        if channels.is_empty() {
            tracing::warn!(
                "relay: no channel configured (smtp.url and webhooks.secret_key unset); deliveries wait"
            );
        }
        tracing::info!(channels = ?channels, "relay started");
        let idle = Duration::from_millis(self.settings.poll_interval_ms);
        let mut last_depth = Instant::now()
            .checked_sub(Duration::from_secs(10))
            .unwrap_or_else(Instant::now);
        tokio::pin!(shutdown);
        loop {
            if last_depth.elapsed() >= Duration::from_secs(5) {
                last_depth = Instant::now();
                self.report_depth(&channels).await;
            }
            let busy = match self.run_once().await {
                Ok(report) => {
                    if report.claimed > 0 {
                        tracing::debug!(?report, "relay round");
                    }
                    report.claimed >= self.settings.batch as usize
                }
                Err(err) => {
                    tracing::warn!(error = %err, "relay: cannot claim deliveries; trying again");
                    false
                }
            };
            if busy {
                if futures::poll!(&mut shutdown).is_ready() {
                    break;
                }
                continue;
            }
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(idle) => {}
                () = self.wake.notified() => {}
            }
        }
        tracing::info!("relay stopped");
    }

    async fn report_depth(&self, channels: &[Channel]) {
        match self.repo.depth(channels).await {
            Ok(QueueDepth {
                pending,
                due,
                oldest_due,
            }) => {
                #[allow(clippy::cast_precision_loss)]
                {
                    gauge!("delivery_queue_depth", "state" => "pending").set(pending as f64);
                    gauge!("delivery_queue_depth", "state" => "due").set(due as f64);
                }
                gauge!("delivery_oldest_due_seconds")
                    .set(oldest_due.unwrap_or_default().as_secs_f64());
            }
            Err(err) => tracing::warn!(error = %err, "relay: cannot read the queue's depth"),
        }
    }

    fn admit(&self, destination: &str) -> Result<(), chrono::DateTime<Utc>> {
        let mut breakers = self
            .breakers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let cool_down = Duration::from_secs(self.settings.breaker_cool_down_secs);
        breakers
            .entry(destination.to_owned())
            .or_insert_with(|| {
                CircuitBreaker::new(self.settings.breaker_threshold, cool_down, cool_down * 10)
            })
            .admit(Utc::now())
    }

    fn observe(&self, destination: &str, healthy: bool) {
        let mut breakers = self
            .breakers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(breaker) = breakers.get_mut(destination) {
            let was_open = breaker.is_open();
            breaker.record(healthy, Utc::now());
            match (was_open, breaker.is_open()) {
                (false, true) => tracing::warn!(
                    destination,
                    "relay: circuit breaker open; the destination is left alone for a while"
                ),
                (true, false) => tracing::info!(destination, "relay: circuit breaker closed"),
                _ => {}
            }
            gauge!("delivery_breaker_open", "destination" => destination.to_owned())
                .set(if breaker.is_open() { 1.0 } else { 0.0 });
        }
    }

    async fn deliver(&self, claimed: ClaimedDelivery, send_by: Instant) -> Step {
        let delivery = &claimed.delivery;
        if Instant::now() >= send_by {
            return match self.repo.defer(&claimed, Utc::now()).await {
                Ok(_) => Step::Released,
                Err(err) => {
                    tracing::warn!(delivery = %delivery.id, error = %err, "relay: cannot release; the lease brings it back");
                    Step::Unrecorded
                }
            };
        }
        let channel = delivery.channel.as_str();
        let started_at = Utc::now();
        let clock = Instant::now();
        let outcome = match self.prepare(&claimed) {
            Err(Skip::Outcome(outcome)) => outcome,
            Err(Skip::Hold(until)) => return self.defer(&claimed, until).await,
            Ok(attempt) => {
                let destination = attempt.destination();
                if let Err(until) = self.admit(&destination) {
                    return self.defer(&claimed, until).await;
                }
                let outcome = attempt.send().await;
                self.observe(
                    &destination,
                    !matches!(outcome, AttemptOutcome::Transient { .. }),
                );
                if let AttemptOutcome::Delivered { reply } = &outcome {
                    // The one moment a crash means a redelivery: say it.
                    tracing::info!(
                        delivery = %delivery.id,
                        message_id = %attempt.message_id(),
                        reply = %reply,
                        "accepted by the destination; recording"
                    );
                }
                outcome
            }
        };
        histogram!("delivery_attempt_seconds", "channel" => channel)
            .record(clock.elapsed().as_secs_f64());
        let attempt = delivery.attempts + 1;
        let decision = self.policy.decide(
            attempt.saturating_sub(claimed.round_start),
            &outcome,
            Utc::now(),
            rand::random::<f64>(),
        );
        let record = AttemptRecord {
            attempt,
            started_at: trunc(started_at),
            finished_at: trunc(Utc::now()),
            outcome,
            decision,
        };
        match self.record(&claimed, &record).await {
            Ok(true) => {
                let label = match decision {
                    Decision::Delivered => "delivered",
                    Decision::RetryAt(_) => "retry",
                    Decision::Failed => "failed",
                    Decision::Dead => "dead",
                };
                counter!("deliveries_total", "channel" => channel, "outcome" => label).increment(1);
                if !matches!(decision, Decision::RetryAt(_)) {
                    // The outcome is on the lead's timeline now.
                    self.cache
                        .invalidate(delivery.tenant_id, delivery.lead_id)
                        .await;
                }
                if let AttemptOutcome::Transient { reason, .. }
                | AttemptOutcome::Permanent { reason }
                | AttemptOutcome::Undeliverable { reason } = &record.outcome
                {
                    tracing::info!(delivery = %delivery.id, attempt, outcome = label, %reason, "delivery attempt failed");
                }
                Step::Recorded(decision)
            }
            Ok(false) => {
                tracing::warn!(delivery = %delivery.id, "relay: the claim ran out before the outcome was recorded; the relay that holds it now records it");
                Step::Unrecorded
            }
            Err(err) => {
                tracing::error!(delivery = %delivery.id, error = %err, "relay: cannot record an attempt; the lease brings the delivery back");
                Step::Unrecorded
            }
        }
    }

    /// Puts a claimed delivery back untried, due at `until`, its attempts
    /// not counted.
    async fn defer(&self, claimed: &ClaimedDelivery, until: chrono::DateTime<Utc>) -> Step {
        counter!("deliveries_deferred_total", "channel" => claimed.delivery.channel.as_str())
            .increment(1);
        match self.repo.defer(claimed, until).await {
            Ok(_) => Step::Deferred,
            Err(err) => {
                tracing::warn!(delivery = %claimed.delivery.id, error = %err, "relay: cannot defer; the lease brings it back");
                Step::Unrecorded
            }
        }
    }

    /// Records an attempt, trying again while the store is unavailable (the
    /// store already reran transient faults): once the destination has
    /// answered, an outcome not recorded means the message goes out again
    /// when the lease ends.
    async fn record(
        &self,
        claimed: &ClaimedDelivery,
        record: &AttemptRecord,
    ) -> Result<bool, DeliveryError> {
        let mut pause = Duration::from_millis(200);
        for _ in 0..5 {
            match self.repo.record(claimed, record).await {
                Err(DeliveryError::Unavailable(u)) => {
                    tracing::warn!(delivery = %claimed.delivery.id, error = %u, "relay: the store is unavailable; recording again shortly");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                other => return other,
            }
        }
        self.repo.record(claimed, record).await
    }

    /// What an attempt of `claimed` takes, or why none is made: the
    /// outcome it has without one (nowhere to deliver), or a hold (a paused
    /// endpoint).
    fn prepare<'a>(&'a self, claimed: &ClaimedDelivery) -> Result<Attempt<'a>, Skip> {
        let channel = claimed.delivery.channel;
        let undeliverable = |reason: &str| {
            Skip::Outcome(AttemptOutcome::Undeliverable {
                reason: reason.to_owned(),
            })
        };
        let Some(to) = &claimed.recipient else {
            return Err(undeliverable("the lead was deleted"));
        };
        if let Some(reason) = to.unreachable_on(channel) {
            return Err(undeliverable(reason));
        }
        if channel == Channel::Email {
            let (Some(email), Some(address)) = (&self.email, &to.email) else {
                // Claimed only for channels that have an adapter.
                return Err(Skip::Outcome(AttemptOutcome::Transient {
                    reason: "no email channel configured".to_owned(),
                    retry_after: None,
                }));
            };
            let sender = claimed.sender.as_ref().unwrap_or(&self.default_sender);
            let message = OutboundEmail::compose(
                &claimed.delivery,
                &claimed.message,
                (to.name.clone(), address.clone()),
                sender,
            );
            return Ok(Attempt::Email(email.as_ref(), message));
        }
        let Some(messages) = &self.messages else {
            return Err(Skip::Outcome(AttemptOutcome::Transient {
                reason: "no webhook channel configured".to_owned(),
                retry_after: None,
            }));
        };
        let Some(route) = &claimed.route else {
            return Err(undeliverable(&format!(
                "no webhook carries {channel} messages: give one endpoint \"channels\": [\"{channel}\"] (POST /v1/webhooks), then retry the delivery"
            )));
        };
        if !route.active {
            // Held, not failed: a paused endpoint keeps its messages, as a
            // paused change stream keeps its place.
            return Err(Skip::Hold(Utc::now() + PAUSED_RECHECK));
        }
        // A key that no longer opens the secret is the operator's to fix
        // (the message is not at fault): asked again in an hour.
        let secrets = open_secrets(
            messages.sealer.as_ref(),
            &route.secret,
            route.previous_secret.as_ref(),
        )
        .map_err(|reason| {
            Skip::Outcome(AttemptOutcome::Transient {
                reason,
                retry_after: Some(Duration::from_secs(3600)),
            })
        })?;
        Ok(Attempt::Webhook(
            claimed.delivery.tenant_id,
            messages.channel.as_ref(),
            WebhookTarget {
                url: route.url.clone(),
                secrets,
            },
            WebhookMessage::of_delivery(&claimed.delivery, &claimed.message, to),
        ))
    }
}

/// How long a message for a paused endpoint waits before it is looked at
/// again (its attempts not counted).
const PAUSED_RECHECK: chrono::Duration = chrono::Duration::seconds(60);

/// Why a claimed delivery is not attempted.
enum Skip {
    /// It has this outcome without an attempt.
    Outcome(AttemptOutcome),
    /// It waits, untried, until then.
    Hold(chrono::DateTime<Utc>),
}

/// One attempt, ready to go.
enum Attempt<'a> {
    Email(&'a dyn EmailChannel, OutboundEmail),
    Webhook(
        TenantId,
        &'a dyn WebhookChannel,
        WebhookTarget,
        WebhookMessage,
    ),
}

impl Attempt<'_> {
    /// The key its destination's circuit breaker counts under: the mail
    /// server, which every tenant's email shares; a tenant's own endpoint,
    /// so one tenant's failing receiver never holds back another's
    /// messages to the same host.
    fn destination(&self) -> String {
        match self {
            Self::Email(email, _) => email.destination(),
            Self::Webhook(tenant, channel, target, _) => {
                format!("{tenant}/{}", channel.destination(&target.url))
            }
        }
    }

    /// The id the receiver recognises a redelivery by.
    fn message_id(&self) -> &str {
        match self {
            Self::Email(_, message) => &message.message_id,
            Self::Webhook(_, _, _, message) => &message.id,
        }
    }

    async fn send(&self) -> AttemptOutcome {
        match self {
            Self::Email(email, message) => email.send(message).await,
            Self::Webhook(_, channel, target, message) => channel.post(target, message).await,
        }
    }
}

/// `claimed` in turns: each tenant's first, then each tenant's second,
/// and so on (each tenant's in claim order), so one tenant's slow messages
/// do not all go before another tenant's first.
pub(crate) fn in_turns(claimed: Vec<ClaimedDelivery>) -> Vec<ClaimedDelivery> {
    let mut queues: Vec<(TenantId, std::collections::VecDeque<ClaimedDelivery>)> = Vec::new();
    for c in claimed {
        let tenant = c.delivery.tenant_id;
        match queues.iter_mut().find(|(t, _)| *t == tenant) {
            Some((_, queue)) => queue.push_back(c),
            None => queues.push((tenant, std::collections::VecDeque::from([c]))),
        }
    }
    let mut out = Vec::new();
    while queues.iter().any(|(_, q)| !q.is_empty()) {
        for (_, queue) in &mut queues {
            if let Some(c) = queue.pop_front() {
                out.push(c);
            }
        }
    }
    out
}

/// Microseconds, as both stores keep time.
fn trunc(t: chrono::DateTime<Utc>) -> chrono::DateTime<Utc> {
    use chrono::SubsecRound;
    t.trunc_subsecs(6)
}

enum Step {
    Recorded(Decision),
    Deferred,
    Released,
    Unrecorded,
}

/// Deliveries and sender settings, as people see them.
#[derive(Clone)]
pub struct DeliveryService {
    repo: Arc<dyn DeliveryRepository>,
}

impl std::fmt::Debug for DeliveryService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryService").finish_non_exhaustive()
    }
}

impl DeliveryService {
    /// Over `repo`.
    #[must_use]
    pub fn new(repo: Arc<dyn DeliveryRepository>) -> Self {
        Self { repo }
    }

    /// One delivery.
    ///
    /// # Errors
    /// `NotFound`, or the store failed.
    pub async fn get(&self, tenant: TenantId, id: DeliveryId) -> Result<Delivery, DeliveryError> {
        self.repo.get(tenant, id).await
    }

    /// A page of the tenant's deliveries.
    ///
    /// # Errors
    /// The store failed.
    pub async fn list(
        &self,
        tenant: TenantId,
        status: Option<DeliveryStatus>,
        after: Option<DeliveryId>,
        limit: PageLimit,
    ) -> Result<Page<Delivery>, DeliveryError> {
        self.repo.list(tenant, status, after, limit).await
    }

    /// Queues a failed or dead delivery again, with a fresh budget of
    /// attempts.
    ///
    /// # Errors
    /// `NotFound`; `Conflict` unless it is failed or dead.
    pub async fn retry(&self, tenant: TenantId, id: DeliveryId) -> Result<Delivery, DeliveryError> {
        self.repo.retry(tenant, id).await
    }

    /// The tenant's sender identity, if set.
    ///
    /// # Errors
    /// The store failed.
    pub async fn sender(&self, tenant: TenantId) -> Result<Option<SenderIdentity>, DeliveryError> {
        self.repo.sender(tenant).await
    }

    /// Sets the tenant's sender identity.
    ///
    /// # Errors
    /// The store failed.
    pub async fn set_sender(
        &self,
        tenant: TenantId,
        sender: &SenderIdentity,
    ) -> Result<(), DeliveryError> {
        self.repo.set_sender(tenant, sender).await
    }
}

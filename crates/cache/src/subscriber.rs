//! The invalidation listener: one task per [`TwoTierCache`], on a dedicated
//! pub/sub connection.
//!
//! Each message from another instance drops its key from L1 (or all of L1,
//! for a "drop all" sent after a sweep). While the subscription is down,
//! invalidations are missed, so L1 is cleared when the subscription breaks
//! and again as soon as it is back (anything loaded in between may already
//! be stale); the TTL is only the last safety net. A subscription that
//! stands again also means Redis answers again, so it wakes the replayer of
//! this instance's own missed invalidations.
//!
//! [`TwoTierCache`]: crate::TwoTierCache

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use redis::Client;
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::watch;

use crate::keys::{INVALIDATION_CHANNEL, Invalidation, parse_invalidation};
use crate::local::Local;
use crate::pending::Pending;
use crate::stats::{Counters, bump};

/// First pause before resubscribing; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// Cap on the resubscribe backoff: an instance is back in sync at most this
/// long after Redis is.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How often an idle subscription is checked with `PING`. A half-open TCP
/// connection (peer gone without a FIN) would otherwise look like a quiet
/// channel for ever.
const PING_EVERY: Duration = Duration::from_secs(5);

/// Everything the task needs; it owns no reference to the cache itself, so
/// dropping the cache ends it.
pub(crate) struct Subscriber {
    /// Where to subscribe: tried in turn, from the next one after a
    /// failure (a cluster's seed nodes; one server's one client).
    pub(crate) clients: Vec<Client>,
    pub(crate) local: Local,
    pub(crate) stats: Arc<Counters>,
    pub(crate) instance: String,
    /// This instance's invalidations that wait for Redis.
    pub(crate) pending: Arc<Pending>,
    /// Bounds connecting, subscribing and each health `PING`.
    pub(crate) timeout: Duration,
    /// `true` while subscribed.
    pub(crate) subscribed: watch::Sender<bool>,
    /// Changes (or closes) when the cache shuts down.
    pub(crate) stop: watch::Receiver<bool>,
}

enum End {
    Stopped,
    Lost(String),
}

impl Subscriber {
    pub(crate) async fn run(mut self) {
        let mut backoff = MIN_BACKOFF;
        let mut subscriptions: u64 = 0;
        let mut failures_in_a_row: u64 = 0;
        let mut next_client: usize = 0;
        loop {
            let Some(client) = self.clients.get(next_client % self.clients.len().max(1)) else {
                return;
            };
            let client = client.clone();
            next_client = next_client.wrapping_add(1);
            let attempt = tokio::select! {
                attempt = tokio::time::timeout(self.timeout, subscribe(&client)) => attempt,
                _ = self.stop.changed() => return,
            };
            match attempt {
                Ok(Ok((sink, stream))) => {
                    subscriptions += 1;
                    // Cleared on every subscription, the first included: if
                    // Redis was down at start, the tier has been filling
                    // without invalidations; if it was not, it is empty.
                    self.local.drop_all();
                    if subscriptions > 1 {
                        tracing::info!(
                            "cache: invalidation subscription is back; cleared the in-process \
                             tier"
                        );
                    }
                    self.subscribed.send_replace(true);
                    self.pending.wake();
                    backoff = MIN_BACKOFF;
                    failures_in_a_row = 0;
                    let end = self.listen(sink, stream).await;
                    match end {
                        End::Stopped => {
                            self.subscribed.send_replace(false);
                            return;
                        }
                        End::Lost(why) => {
                            // Cleared before anyone can see "not subscribed",
                            // so whatever is in L1 from then on was loaded
                            // during the outage.
                            self.local.drop_all();
                            self.subscribed.send_replace(false);
                            bump(&self.stats.l2.errors);
                            tracing::warn!(
                                error = %why,
                                "cache: invalidation subscription lost; cleared the in-process \
                                 tier, resubscribing"
                            );
                        }
                    }
                }
                failed => {
                    bump(&self.stats.l2.errors);
                    let why = match failed {
                        Ok(Err(error)) => error.to_string(),
                        _ => format!("no answer within {:?}", self.timeout),
                    };
                    failures_in_a_row += 1;
                    // The first failure is worth a warning; the rest of an
                    // outage is one line per attempt only at debug level.
                    if failures_in_a_row == 1 {
                        tracing::warn!(error = %why, "cache: cannot subscribe to invalidations");
                    } else {
                        tracing::debug!(error = %why, "cache: cannot subscribe to invalidations");
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = self.stop.changed() => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn listen(&mut self, mut sink: PubSubSink, mut stream: PubSubStream) -> End {
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate; the subscription was just confirmed.
        ping.tick().await;
        loop {
            tokio::select! {
                message = stream.next() => match message {
                    Some(message) => self.handle(&message).await,
                    None => return End::Lost("connection closed".to_owned()),
                },
                _ = ping.tick() => {
                    match tokio::time::timeout(self.timeout, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(error)) => return End::Lost(error.to_string()),
                        Err(_) => {
                            return End::Lost(format!("no PING answer within {:?}", self.timeout));
                        }
                    }
                }
                _ = self.stop.changed() => return End::Stopped,
            }
        }
    }

    async fn handle(&self, message: &redis::Msg) {
        let payload: String = match message.get_payload() {
            Ok(payload) => payload,
            Err(error) => {
                tracing::debug!(%error, "cache: ignoring a non-text invalidation message");
                return;
            }
        };
        let Some((what, sender)) = parse_invalidation(&payload) else {
            tracing::debug!(payload, "cache: ignoring a malformed invalidation message");
            return;
        };
        // Our own invalidations were applied locally before they were sent;
        // applying the echo again would only throw away fills that started
        // after them.
        if sender == self.instance {
            return;
        }
        match what {
            Invalidation::One(tenant, lead) => self.local.drop_key(&(tenant, lead)).await,
            Invalidation::All => {
                self.local.drop_all();
                tracing::info!(
                    "cache: another instance swept Redis after missing invalidations; cleared \
                     the in-process tier"
                );
            }
        }
        bump(&self.stats.invalidations_received);
    }
}

async fn subscribe(client: &Client) -> redis::RedisResult<(PubSubSink, PubSubStream)> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(INVALIDATION_CHANNEL).await?;
    Ok(pubsub.split())
}

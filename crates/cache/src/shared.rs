//! The shared tier (L2): Redis (one server or a cluster, see
//! [`crate::connect`]) through one auto-reconnecting connection, every call
//! bounded by `redis_timeout`.
//!
//! Nothing here returns a Redis error to the cache's callers: a failure or a
//! timeout is counted in `l2.errors`, logged, and turned into "no answer".
//! Logging is by state change (one warning when Redis stops answering, one
//! note when it answers again), so an outage does not flood the log with a
//! line per request. That note also wakes the replayer when invalidations
//! wait for Redis (see [`crate::replay`]).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use leadline_domain::{LeadId, TenantId};
use redis::{RedisResult, Script};

use crate::connect::{Connection, Target};
use crate::keys::{
    HOT_KEYS, INVALIDATION_CHANNEL, VALUE_PATTERN, generation_key, invalidate_all_message,
    invalidation_message, lead_member, legacy_keys, parse_lead_member, value_key,
};
use crate::local::Key;
use crate::pending::Pending;
use crate::stats::{Counters, bump};

/// How long a generation counter outlives its last invalidation. It only has
/// to outlast the slowest loader in flight (a filler that read the counter
/// before it vanished sees "absent" afterwards and does not write), so an
/// hour is a wide margin, and it keeps Redis from holding one key per lead
/// ever invalidated.
const GENERATION_TTL_SECS: u64 = 3600;

/// How many members [`HOT_KEYS`] keeps (the most recently loaded): a few MiB
/// of ids in Redis, and more than any instance would warm.
pub(crate) const HOT_KEYS_KEPT: u64 = 100_000;

/// The `COUNT` of each `SCAN` step of a sweep: small enough that each step
/// (and the `DEL` of what it found) stays well within the request bound,
/// which also bounds these background calls.
const SWEEP_BATCH: u64 = 500;

/// Stores a value only if the lead's generation is still what the filler
/// read before loading. `ARGV[2]` is `""` for "absent": generations are
/// integers, so it can never equal a real one. Both keys carry the tenant's
/// hash tag, so in a cluster they share a slot, as a script's keys must;
/// the fleet-wide hot set is therefore recorded beside it, not in it.
const WRITE_IF_GENERATION: &str = r"
local current = redis.call('GET', KEYS[2])
if (current == false and ARGV[2] == '') or current == ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
  return 1
end
return 0
";

/// The generation a filler read before loading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Generation {
    /// Never invalidated (or its counter expired).
    Absent,
    Value(String),
}

impl Generation {
    fn as_arg(&self) -> &str {
        match self {
            Self::Absent => "",
            Self::Value(value) => value,
        }
    }
}

/// What one L2 read found.
#[derive(Debug)]
pub(crate) struct Read {
    pub(crate) value: Option<Vec<u8>>,
    pub(crate) generation: Generation,
}

/// The L2 client.
#[derive(Clone)]
pub(crate) struct Shared {
    connection: Connection,
    timeout: Duration,
    ttl_secs: u64,
    write_script: Arc<Script>,
    stats: Arc<Counters>,
    /// Whether the last call succeeded; drives the state-change logging.
    healthy: Arc<AtomicBool>,
    /// Woken when Redis answers again.
    pending: Arc<Pending>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("timeout", &self.timeout)
            .field("ttl_secs", &self.ttl_secs)
            .field("healthy", &self.healthy.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// A client that connects in the background: creating it never waits on
    /// Redis and never fails because Redis is down.
    ///
    /// `connect_timeout` bounds each connection attempt, which happens off
    /// the request path (callers still give up after `timeout`).
    ///
    /// # Errors
    /// [`CacheError::InvalidSettings`](crate::CacheError) when the client
    /// cannot be set up.
    pub(crate) fn new(
        target: &Target,
        timeout: Duration,
        connect_timeout: Duration,
        ttl_secs: u64,
        stats: Arc<Counters>,
        pending: Arc<Pending>,
    ) -> Result<Self, crate::CacheError> {
        let connection = target.connection(connect_timeout, timeout)?;
        Ok(Self {
            connection,
            timeout,
            ttl_secs,
            write_script: Arc::new(Script::new(WRITE_IF_GENERATION)),
            stats,
            healthy: Arc::new(AtomicBool::new(true)),
            pending,
        })
    }

    /// Runs one Redis call within the bound; `None` on failure or timeout.
    async fn bounded<T, F>(&self, what: &'static str, call: F) -> Option<T>
    where
        F: Future<Output = RedisResult<T>>,
    {
        let failure = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(answer)) => {
                if !self.healthy.swap(true, Ordering::Relaxed) {
                    tracing::info!("cache: Redis answers again");
                    self.pending.wake();
                }
                return Some(answer);
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("no answer within {:?}", self.timeout),
        };
        bump(&self.stats.l2.errors);
        if self.healthy.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                operation = what,
                error = %failure,
                "cache: Redis call failed; serving from the in-process tier and the store \
                 until it answers again"
            );
        } else {
            tracing::debug!(operation = what, error = %failure, "cache: Redis call failed");
        }
        None
    }

    /// Answers `PING`; used to warm the connection up at start.
    pub(crate) async fn ping(&self) -> bool {
        let mut connection = self.connection.clone();
        self.bounded(
            "ping",
            redis::cmd("PING").query_async::<String>(&mut connection),
        )
        .await
        .is_some()
    }

    /// The stored context and the generation, in one round trip. `None` when
    /// Redis did not answer.
    pub(crate) async fn read(&self, tenant: TenantId, lead: LeadId) -> Option<Read> {
        let mut connection = self.connection.clone();
        let mut command = redis::cmd("MGET");
        command
            .arg(value_key(tenant, lead))
            .arg(generation_key(tenant, lead));
        let query = command.query_async::<(Option<Vec<u8>>, Option<String>)>(&mut connection);
        let (value, generation) = self.bounded("read", query).await?;
        Some(Read {
            value,
            generation: generation.map_or(Generation::Absent, Generation::Value),
        })
    }

    /// Stores `bytes` unless the lead was invalidated since `generation` was
    /// read, and records the lead in the hot set either way (a refused
    /// write was still a load), trimmed to its newest [`HOT_KEYS_KEPT`]
    /// members. The two are sent at once on the multiplexed connection, so
    /// they cost one round trip, not two. Whether the value was stored
    /// matters to no caller, so it is not told.
    pub(crate) async fn write_if_generation(
        &self,
        tenant: TenantId,
        lead: LeadId,
        bytes: &[u8],
        generation: &Generation,
    ) {
        let mut connection = self.connection.clone();
        let mut invocation = self.write_script.prepare_invoke();
        invocation
            .key(value_key(tenant, lead))
            .key(generation_key(tenant, lead))
            .arg(bytes)
            .arg(generation.as_arg())
            .arg(self.ttl_secs);
        let mut hot_connection = self.connection.clone();
        let mut hot = redis::pipe();
        hot.zadd(HOT_KEYS, lead_member(tenant, lead), unix_millis())
            .ignore()
            .zremrangebyrank(
                HOT_KEYS,
                0,
                -isize::try_from(HOT_KEYS_KEPT).unwrap_or(isize::MAX) - 1,
            )
            .ignore();
        let both = async {
            let (stored, recorded) = tokio::join!(
                invocation.invoke_async::<i64>(&mut connection),
                hot.query_async::<()>(&mut hot_connection),
            );
            recorded.and(stored)
        };
        let stored = self.bounded("write", both).await;
        if stored == Some(0) {
            tracing::debug!(%tenant, %lead, "cache: not stored, invalidated while loading");
        }
    }

    /// Bumps the generation, deletes the value and tells every instance, as
    /// one transaction in one round trip (on a single server, the keys of
    /// releases before the hash tag too: [`legacy_keys`]). `false` if Redis
    /// did not answer.
    pub(crate) async fn invalidate(&self, tenant: TenantId, lead: LeadId, instance: &str) -> bool {
        self.invalidate_all_of(&[(tenant, lead)], instance).await
    }

    /// [`Shared::invalidate`] for several keys. `false` if Redis did not
    /// answer: then any or all of them may still have happened (a timeout
    /// does not say), and repeating them is harmless.
    ///
    /// On one server it is one transaction: the bumps, the deletes and the
    /// messages. In a cluster a transaction may not cross slots, and the
    /// channel hashes to a slot of its own, so each tenant's bumps and
    /// deletes are a transaction on the tenant's node, and the messages
    /// follow once all of them answered (never before: an instance reloading
    /// on a message must not find the old value still there). That costs a
    /// second round trip. A tenant whose node does not answer still gets
    /// its messages (see below).
    pub(crate) async fn invalidate_all_of(&self, keys: &[Key], instance: &str) -> bool {
        let mut connection = self.connection.clone();
        let publish_all = |pipe: &mut redis::Pipeline| {
            for &(tenant, lead) in keys {
                pipe.publish(
                    INVALIDATION_CHANNEL,
                    invalidation_message(tenant, lead, instance),
                )
                .ignore();
            }
        };
        if matches!(connection, Connection::Single(_)) {
            let mut pipe = redis::pipe();
            pipe.atomic();
            for &(tenant, lead) in keys {
                bump_and_delete(
                    &mut pipe,
                    &generation_key(tenant, lead),
                    value_key(tenant, lead),
                );
                let (old_value, old_generation) = legacy_keys(tenant, lead);
                bump_and_delete(&mut pipe, &old_generation, old_value);
            }
            // The messages inside the transaction: they go out after the
            // deletes, in the same round trip.
            publish_all(&mut pipe);
            return self
                .bounded("invalidate", pipe.query_async::<()>(&mut connection))
                .await
                .is_some();
        }
        let mut by_tenant: Vec<(TenantId, redis::Pipeline)> = Vec::new();
        for &(tenant, lead) in keys {
            let at = match by_tenant.iter().position(|(t, _)| *t == tenant) {
                Some(at) => at,
                None => {
                    let mut pipe = redis::pipe();
                    pipe.atomic();
                    by_tenant.push((tenant, pipe));
                    by_tenant.len() - 1
                }
            };
            let pipe = &mut by_tenant[at].1;
            bump_and_delete(pipe, &generation_key(tenant, lead), value_key(tenant, lead));
        }
        let mut deleted = true;
        for (_, pipe) in &by_tenant {
            let answered = self
                .bounded("invalidate", pipe.query_async::<()>(&mut connection))
                .await;
            if answered.is_none() {
                deleted = false;
                break;
            }
        }
        // The messages go out even when a tenant's node did not answer: the
        // other instances then drop their in-process copies and load from
        // the store (the node holding the old value is the one they cannot
        // read either), rather than serve them until the node is back. The
        // keys still wait for replay, which deletes that value later.
        let mut publish = redis::pipe();
        publish_all(&mut publish);
        let published = self
            .bounded("invalidate", publish.query_async::<()>(&mut connection))
            .await
            .is_some();
        deleted && published
    }

    /// Deletes every tenant's cached contexts ([`VALUE_PATTERN`], by `SCAN`
    /// and `DEL` in batches: never `KEYS`, which would stall Redis; in a
    /// cluster, `SCAN` on each primary in turn), then tells every instance
    /// to clear its in-process tier. Generations and the hot set stay.
    /// `None` if Redis stopped answering on the way (what was deleted stays
    /// deleted; the next sweep starts over). Otherwise the number of values
    /// deleted.
    pub(crate) async fn sweep(&self, instance: &str) -> Option<u64> {
        let mut connection = self.connection.clone();
        let mut deleted: u64 = 0;
        let primaries = self.bounded("sweep", connection.primaries()).await?;
        for node in &primaries {
            let mut cursor: u64 = 0;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor)
                    .arg("MATCH")
                    .arg(VALUE_PATTERN)
                    .arg("COUNT")
                    .arg(SWEEP_BATCH);
                let (next, keys) = self
                    .bounded(
                        "sweep",
                        connection.query_on::<(u64, Vec<String>)>(node.as_ref(), scan),
                    )
                    .await?;
                if !keys.is_empty() {
                    // In a cluster the client splits a `DEL` by slot.
                    let mut del = redis::cmd("DEL");
                    del.arg(&keys);
                    deleted += self
                        .bounded("sweep", del.query_async::<u64>(&mut connection))
                        .await?;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        // After the deletes, so that an instance reloading on this message
        // cannot find an old value in Redis.
        let mut publish = redis::cmd("PUBLISH");
        publish
            .arg(INVALIDATION_CHANNEL)
            .arg(invalidate_all_message(instance));
        self.bounded("sweep", publish.query_async::<u64>(&mut connection))
            .await?;
        Some(deleted)
    }

    /// Up to `limit` leads most recently loaded by any instance, most recent
    /// first. Empty when Redis does not answer within the bound; members
    /// that are not `{tenant}:{lead}` are skipped.
    pub(crate) async fn hot_keys(&self, limit: usize) -> Vec<Key> {
        if limit == 0 {
            return Vec::new();
        }
        let mut connection = self.connection.clone();
        let mut command = redis::cmd("ZREVRANGE");
        command
            .arg(HOT_KEYS)
            .arg(0)
            .arg(i64::try_from(limit - 1).unwrap_or(i64::MAX));
        let Some(members) = self
            .bounded(
                "hot_keys",
                command.query_async::<Vec<Vec<u8>>>(&mut connection),
            )
            .await
        else {
            return Vec::new();
        };
        let total = members.len();
        let keys: Vec<Key> = members
            .iter()
            .filter_map(|member| parse_lead_member(std::str::from_utf8(member).ok()?))
            .collect();
        if keys.len() < total {
            tracing::debug!(
                skipped = total - keys.len(),
                "cache: skipped malformed members of the hot set"
            );
        }
        keys
    }
}

/// Adds to `pipe`: bump the generation (kept [`GENERATION_TTL_SECS`] past
/// its last bump) and delete the value.
fn bump_and_delete(pipe: &mut redis::Pipeline, generation: &str, value: String) {
    let ttl = i64::try_from(GENERATION_TTL_SECS).unwrap_or(i64::MAX);
    pipe.incr(generation, 1)
        .ignore()
        .expire(generation, ttl)
        .ignore()
        .del(value)
        .ignore();
}

/// Now as Unix milliseconds: the hot set's score. Instances' clocks may
/// differ a little, which only blurs "most recent" by as much.
fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

//! The shared tier (L2): Redis through one auto-reconnecting
//! `ConnectionManager`, every call bounded by `redis_timeout`.
//!
//! Nothing here returns a Redis error to the cache's callers: a failure or a
//! timeout is counted in `l2.errors`, logged, and turned into "no answer".
//! Logging is by state change (one warning when Redis stops answering, one
//! note when it answers again), so an outage does not flood the log with a
//! line per request.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use leadline_domain::{LeadId, TenantId};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisResult, Script};

use crate::keys::{INVALIDATION_CHANNEL, generation_key, invalidation_message, value_key};
use crate::stats::{Counters, bump};

/// How long a generation counter outlives its last invalidation. It only has
/// to outlast the slowest loader in flight (a filler that read the counter
/// before it vanished sees "absent" afterwards and does not write), so an
/// hour is a wide margin, and it keeps Redis from holding one key per lead
/// ever invalidated.
const GENERATION_TTL_SECS: u64 = 3600;

/// Stores a value only if the lead's generation is still what the filler
/// read before loading. `ARGV[2]` is `""` for "absent": generations are
/// integers, so it can never equal a real one.
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
    connection: ConnectionManager,
    timeout: Duration,
    ttl_secs: u64,
    write_script: Arc<Script>,
    stats: Arc<Counters>,
    /// Whether the last call succeeded; drives the state-change logging.
    healthy: Arc<AtomicBool>,
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
    pub(crate) fn new(
        client: Client,
        timeout: Duration,
        connect_timeout: Duration,
        ttl_secs: u64,
        stats: Arc<Counters>,
    ) -> RedisResult<Self> {
        // Retries are few and capped: after the last one fails, the next
        // call starts a new round, so giving up early costs nothing while
        // retrying for long would only delay noticing a recovery.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(timeout))
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1))
            .set_number_of_retries(4);
        let connection = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self {
            connection,
            timeout,
            ttl_secs,
            write_script: Arc::new(Script::new(WRITE_IF_GENERATION)),
            stats,
            healthy: Arc::new(AtomicBool::new(true)),
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
    /// read. Whether it was stored matters to no caller, so it is not told.
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
        let stored = self
            .bounded("write", invocation.invoke_async::<i64>(&mut connection))
            .await;
        if stored == Some(0) {
            tracing::debug!(%tenant, %lead, "cache: not stored, invalidated while loading");
        }
    }

    /// Bumps the generation, deletes the value and tells every instance, as
    /// one transaction in one round trip. `false` if Redis did not answer.
    pub(crate) async fn invalidate(&self, tenant: TenantId, lead: LeadId, instance: &str) -> bool {
        let mut connection = self.connection.clone();
        let generation = generation_key(tenant, lead);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .incr(&generation, 1)
            .ignore()
            .expire(
                &generation,
                i64::try_from(GENERATION_TTL_SECS).unwrap_or(i64::MAX),
            )
            .ignore()
            .del(value_key(tenant, lead))
            .ignore()
            .publish(
                INVALIDATION_CHANNEL,
                invalidation_message(tenant, lead, instance),
            )
            .ignore();
        self.bounded("invalidate", pipe.query_async::<()>(&mut connection))
            .await
            .is_some()
    }
}

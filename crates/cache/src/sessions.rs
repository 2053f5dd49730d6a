//! [`RedisSessionStore`]: console sessions in Redis, an adapter of the
//! [`SessionStore`] port, used instead of the database's sessions table
//! when `cache.redis_url` is set.
//!
//! Every instance sees every session at once, a session costs the database
//! nothing per request, and Redis forgets a session by itself when it dies:
//! each key expires when its session stops being live unless used again
//! ([`leadline_domain::Session::live_until`]: the idle deadline, capped by
//! the absolute one), and a request that records use moves that deadline.
//!
//! Keys, in the `leadline:{<tenant>}:session` namespace (the braces are a
//! Redis Cluster hash tag: a tenant's session keys share a slot, so one
//! `MULTI` may touch several):
//! - `leadline:{<tenant>}:session:<token hash, hex>`: a hash with
//!   `user_id`, `csrf_token`, and `created_at`, `last_seen_at`,
//!   `expires_at` in Unix milliseconds. Only the token's SHA-256 is stored,
//!   never the token.
//! - `leadline:{<tenant>}:session-user:<user>`: the set of that user's
//!   token hashes, for signing out everywhere; it expires with the user's
//!   longest-lived session. A member whose session already expired is
//!   harmless and goes with the set.
//!
//! When Redis does not answer within `cache.redis_timeout_ms`, session
//! operations fail as `Unavailable`: the console answers 503 rather than
//! guessing who is signed in.

use std::{collections::HashMap, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leadline_domain::{Session, TenantId, UserId};
use leadline_ports::{PeopleError, SessionStore, Unavailable};
use redis::Script;

use crate::connect::Connection;

use crate::{CacheError, CacheSettings};

/// Records use of a session that still exists: sets `last_seen_at` and
/// moves the expiry. KEYS: the session. ARGV: last seen (ms), expiry (ms).
/// A session ended meanwhile is not brought back.
const TOUCH: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'last_seen_at', ARGV[1])
  redis.call('PEXPIREAT', KEYS[1], ARGV[2])
end
return 0
";

/// Stores a new session and adds it to its user's set, which lives as long
/// as the user's longest session. KEYS: the session, the user's set. ARGV:
/// user id, CSRF token, created, last seen, expires (ms), the session's
/// own expiry (ms), its member of the set. One script rather than `PEXPIREAT
/// … GT`, which needs Redis 7.
const CREATE: &str = r"
redis.call('HSET', KEYS[1], 'user_id', ARGV[1], 'csrf_token', ARGV[2],
  'created_at', ARGV[3], 'last_seen_at', ARGV[4], 'expires_at', ARGV[5])
redis.call('PEXPIREAT', KEYS[1], ARGV[6])
redis.call('SADD', KEYS[2], ARGV[7])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local left = redis.call('PTTL', KEYS[2])
if left < 0 or now + left < tonumber(ARGV[5]) then
  redis.call('PEXPIREAT', KEYS[2], ARGV[5])
end
return 0
";

/// Console sessions kept in Redis.
#[derive(Clone)]
pub struct RedisSessionStore {
    connection: Connection,
    create: std::sync::Arc<Script>,
    touch: std::sync::Arc<Script>,
    timeout: Duration,
}

impl std::fmt::Debug for RedisSessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSessionStore")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The key of one session.
fn session_key(tenant: TenantId, token_hash: &[u8; 32]) -> String {
    format!("leadline:{{{tenant}}}:session:{}", hex(token_hash))
}

/// The key of a user's set of sessions.
fn user_key(tenant: TenantId, user: UserId) -> String {
    format!("leadline:{{{tenant}}}:session-user:{user}")
}

fn unavailable(e: impl std::fmt::Display) -> PeopleError {
    PeopleError::Unavailable(Unavailable(format!("sessions in Redis: {e}")))
}

/// A session read back from its hash; `None` for a hash that is not one
/// (a partial write cannot happen, since every write is one `MULTI` or
/// script, but a stranger's key could).
fn parse(tenant: TenantId, fields: &HashMap<String, String>) -> Option<Session> {
    let time = |name: &str| -> Option<DateTime<Utc>> {
        DateTime::from_timestamp_millis(fields.get(name)?.parse().ok()?)
    };
    Some(Session {
        tenant_id: tenant,
        user_id: fields.get("user_id")?.parse().ok()?,
        csrf_token: fields.get("csrf_token")?.clone(),
        created_at: time("created_at")?,
        last_seen_at: time("last_seen_at")?,
        expires_at: time("expires_at")?,
    })
}

impl RedisSessionStore {
    /// Sessions in the Redis at `settings.redis_url`; connects in the
    /// background, so creating it never waits on Redis.
    ///
    /// # Errors
    /// [`CacheError::InvalidSettings`] without a Redis URL or with one the
    /// client refuses.
    pub fn connect(settings: &CacheSettings) -> Result<Self, CacheError> {
        let timeout = settings.redis_timeout();
        let connection = Connection::from_settings(settings, timeout)?.ok_or_else(|| {
            CacheError::InvalidSettings(vec![(
                "cache.redis_url",
                "is needed to keep sessions in Redis".to_owned(),
            )])
        })?;
        Ok(Self {
            connection,
            create: std::sync::Arc::new(Script::new(CREATE)),
            touch: std::sync::Arc::new(Script::new(TOUCH)),
            timeout,
        })
    }

    async fn bounded<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, PeopleError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(unavailable(e)),
            Err(_) => Err(unavailable(format!("no answer within {:?}", self.timeout))),
        }
    }
}

#[async_trait]
impl SessionStore for RedisSessionStore {
    async fn create(
        &self,
        token_hash: [u8; 32],
        session: &Session,
        keep_until: DateTime<Utc>,
    ) -> Result<(), PeopleError> {
        let tenant = session.tenant_id;
        let key = session_key(tenant, &token_hash);
        let index = user_key(tenant, session.user_id);
        let mut connection = self.connection.clone();
        let mut invocation = self.create.key(key);
        invocation
            .key(index)
            .arg(session.user_id.to_string())
            .arg(&session.csrf_token)
            .arg(session.created_at.timestamp_millis())
            .arg(session.last_seen_at.timestamp_millis())
            .arg(session.expires_at.timestamp_millis())
            .arg(keep_until.timestamp_millis())
            .arg(hex(&token_hash));
        self.bounded(invocation.invoke_async::<i64>(&mut connection))
            .await
            .map(drop)
    }

    async fn get(
        &self,
        tenant: TenantId,
        token_hash: [u8; 32],
    ) -> Result<Option<Session>, PeopleError> {
        let mut connection = self.connection.clone();
        let mut command = redis::cmd("HGETALL");
        command.arg(session_key(tenant, &token_hash));
        let fields: HashMap<String, String> =
            self.bounded(command.query_async(&mut connection)).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        Ok(parse(tenant, &fields))
    }

    async fn touch(
        &self,
        tenant: TenantId,
        token_hash: [u8; 32],
        at: DateTime<Utc>,
        keep_until: DateTime<Utc>,
    ) -> Result<(), PeopleError> {
        let mut connection = self.connection.clone();
        let mut invocation = self.touch.key(session_key(tenant, &token_hash));
        invocation
            .arg(at.timestamp_millis())
            .arg(keep_until.timestamp_millis());
        self.bounded(invocation.invoke_async::<i64>(&mut connection))
            .await
            .map(drop)
    }

    async fn end(&self, tenant: TenantId, token_hash: [u8; 32]) -> Result<(), PeopleError> {
        let mut connection = self.connection.clone();
        let mut command = redis::cmd("DEL");
        command.arg(session_key(tenant, &token_hash));
        self.bounded(command.query_async::<u64>(&mut connection))
            .await
            .map(drop)
    }

    async fn end_all(&self, tenant: TenantId, user: UserId) -> Result<u64, PeopleError> {
        let index = user_key(tenant, user);
        let mut connection = self.connection.clone();
        let mut members = redis::cmd("SMEMBERS");
        members.arg(&index);
        let hashes: Vec<String> = self.bounded(members.query_async(&mut connection)).await?;
        if hashes.is_empty() {
            return Ok(0);
        }
        // Removes exactly the members read: a session begun meanwhile stays
        // in the index, so a later sign-out everywhere still finds it.
        let keys: Vec<String> = hashes
            .iter()
            .map(|h| format!("leadline:{{{tenant}}}:session:{h}"))
            .collect();
        let mut pipe = redis::pipe();
        pipe.atomic().del(&keys).srem(&index, &hashes).ignore();
        let (ended,): (u64,) = self.bounded(pipe.query_async(&mut connection)).await?;
        Ok(ended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_the_tenant_as_a_hash_tag_and_never_the_token() {
        let tenant = TenantId::new();
        let key = session_key(tenant, &[0xab; 32]);
        assert_eq!(
            key,
            format!("leadline:{{{tenant}}}:session:{}", "ab".repeat(32))
        );
        let user = UserId::new();
        assert_eq!(
            user_key(tenant, user),
            format!("leadline:{{{tenant}}}:session-user:{user}")
        );
    }

    #[test]
    fn a_hash_that_is_not_a_session_reads_as_none() {
        let tenant = TenantId::new();
        let mut fields: HashMap<String, String> = [
            ("user_id", UserId::new().to_string()),
            ("csrf_token", "ab".repeat(32)),
            ("created_at", "1700000000000".to_owned()),
            ("last_seen_at", "1700000000000".to_owned()),
            ("expires_at", "1700043200000".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let session = parse(tenant, &fields).expect("a session");
        assert_eq!(session.tenant_id, tenant);
        assert_eq!(session.expires_at.timestamp_millis(), 1_700_043_200_000);
        fields.insert("user_id".to_owned(), "someone".to_owned());
        assert!(parse(tenant, &fields).is_none());
        fields.remove("user_id");
        assert!(parse(tenant, &fields).is_none());
    }
}

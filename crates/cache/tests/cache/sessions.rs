//! Console sessions in a real Redis: what is stored reads back, use moves
//! the expiry and never brings back an ended session, signing out
//! everywhere ends exactly the user's sessions, and a stopped Redis is an
//! `Unavailable` error within the timeout, never a wrong answer.

#![allow(
    clippy::unwrap_used,
    reason = "a failed call fails the test, with its error"
)]

use std::time::{Duration, Instant};

use chrono::Utc;
use leadline_cache::{CacheSettings, RedisSessionStore};
use leadline_domain::{Session, SessionPolicy, TenantId, UserId};
use leadline_ports::{PeopleError, SessionStore};
use leadline_testsupport::OwnedRedisServer;

fn store(url: &str) -> RedisSessionStore {
    RedisSessionStore::connect(&CacheSettings {
        redis_url: Some(url.to_owned()),
        redis_timeout_ms: 300,
        ..CacheSettings::default()
    })
    .expect("a valid URL")
}

/// A distinct token hash (its value does not matter to the store).
fn token() -> [u8; 32] {
    let mut hash = [0u8; 32];
    hash[..16].copy_from_slice(UserId::new().as_uuid().as_bytes());
    hash[16..].copy_from_slice(UserId::new().as_uuid().as_bytes());
    hash
}

fn session(tenant: TenantId, user: UserId) -> Session {
    Session::begin(tenant, user, token(), SessionPolicy::default(), Utc::now())
}

#[tokio::test]
async fn a_session_reads_back_and_use_moves_its_expiry() {
    let url = leadline_testsupport::redis().url();
    let (a, b) = (store(&url), store(&url));
    let tenant = TenantId::new();
    let s = session(tenant, UserId::new());
    let hash = token();
    let soon = Utc::now() + chrono::Duration::seconds(60);
    a.create(hash, &s, soon).await.unwrap();
    let back = b.get(tenant, hash).await.unwrap().expect("stored");
    assert_eq!(back.user_id, s.user_id);
    assert_eq!(back.csrf_token, s.csrf_token);
    assert_eq!(
        back.expires_at.timestamp_millis(),
        s.expires_at.timestamp_millis()
    );
    // Another tenant's id with the same hash finds nothing.
    assert!(b.get(TenantId::new(), hash).await.unwrap().is_none());

    let later = Utc::now() + chrono::Duration::seconds(5);
    b.touch(
        tenant,
        hash,
        later,
        Utc::now() + chrono::Duration::minutes(30),
    )
    .await
    .unwrap();
    let touched = a.get(tenant, hash).await.unwrap().expect("still there");
    assert_eq!(
        touched.last_seen_at.timestamp_millis(),
        later.timestamp_millis()
    );

    // An expiry in the near past: Redis forgets it by itself.
    a.touch(
        tenant,
        hash,
        later,
        Utc::now() + chrono::Duration::milliseconds(200),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.get(tenant, hash).await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "the session never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Use after the end brings nothing back.
    a.touch(tenant, hash, Utc::now(), soon).await.unwrap();
    assert!(a.get(tenant, hash).await.unwrap().is_none());
}

#[tokio::test]
async fn signing_out_everywhere_ends_exactly_the_users_sessions() {
    let url = leadline_testsupport::redis().url();
    let sessions = store(&url);
    let tenant = TenantId::new();
    let (ada, bob) = (UserId::new(), UserId::new());
    let until = Utc::now() + chrono::Duration::minutes(5);
    let (one, two, other) = (token(), token(), token());
    sessions
        .create(one, &session(tenant, ada), until)
        .await
        .unwrap();
    sessions
        .create(two, &session(tenant, ada), until)
        .await
        .unwrap();
    sessions
        .create(other, &session(tenant, bob), until)
        .await
        .unwrap();
    // The user's set lives as long as the longest session: to its absolute
    // end, 12 hours.
    let mut redis = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let ttl_ms: i64 = redis::cmd("PTTL")
        .arg(format!("leadline:{{{tenant}}}:session-user:{ada}"))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(
        ttl_ms > 11 * 3_600_000 && ttl_ms <= 12 * 3_600_000,
        "{ttl_ms} ms"
    );
    sessions.end(tenant, one).await.unwrap();
    assert!(sessions.get(tenant, one).await.unwrap().is_none());
    // One of Ada's two was already ended alone.
    assert_eq!(sessions.end_all(tenant, ada).await.unwrap(), 1);
    assert!(sessions.get(tenant, two).await.unwrap().is_none());
    assert!(
        sessions.get(tenant, other).await.unwrap().is_some(),
        "Bob's stays"
    );
    assert_eq!(sessions.end_all(tenant, ada).await.unwrap(), 0);
    // A session begun after the sign-out is found by the next one.
    let three = token();
    sessions
        .create(three, &session(tenant, ada), until)
        .await
        .unwrap();
    assert_eq!(sessions.end_all(tenant, ada).await.unwrap(), 1);
}

#[tokio::test]
async fn a_stopped_redis_is_unavailable_not_signed_out() {
    let mut redis = OwnedRedisServer::start().expect("redis starts");
    let sessions = store(&redis.url());
    let tenant = TenantId::new();
    let hash = token();
    let until = Utc::now() + chrono::Duration::minutes(5);
    sessions
        .create(hash, &session(tenant, UserId::new()), until)
        .await
        .unwrap();
    redis.stop().unwrap();
    let started = Instant::now();
    let err = sessions.get(tenant, hash).await.expect_err("no Redis");
    assert!(matches!(err, PeopleError::Unavailable(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "bounded by the timeout: {:?}",
        started.elapsed()
    );
}

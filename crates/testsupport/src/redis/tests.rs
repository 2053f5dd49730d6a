//! Tests against real Redis servers. Expected here: no `TEST_REDIS_URL`, no Docker daemon,
//! `redis-server` installed — so the shared server is a local one. When run elsewhere the
//! provider check adapts to the environment instead of failing.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use redis::Commands as _;

use super::client;
use super::*;

const TIMEOUT: Duration = Duration::from_secs(5);

/// The provider the rules in the crate docs should pick on this machine.
fn expected_provider() -> Provider {
    if std::env::var("TEST_REDIS_URL").is_ok_and(|u| !u.trim().is_empty()) {
        Provider::EnvUrl
    } else if crate::docker::daemon_address().is_ok() {
        Provider::Docker
    } else {
        Provider::LocalBinaries
    }
}

/// A key in the namespace of a fresh tenant, as leadline's own keys are.
fn tenant_key(name: &str) -> String {
    format!("leadline:{}:{name}", util::random_hex(12))
}

fn assert_refused(server: &RedisServer) {
    let result = TcpStream::connect((server.host(), server.port()));
    assert!(
        result.is_err(),
        "{}:{} still accepts connections",
        server.host(),
        server.port()
    );
}

#[tokio::test]
async fn shared_server_answers_ping() {
    let started = Instant::now();
    let server = redis();
    eprintln!("redis() took {:?}", started.elapsed());
    assert_eq!(server.provider(), expected_provider());
    // Second call: same instance, no second startup.
    assert!(std::ptr::eq(server, redis()));
    client::ping(&server.url(), TIMEOUT).expect("PING answers PONG");
}

#[test]
fn shared_server_works_without_a_runtime() {
    let server = redis();
    assert_ne!(server.port(), 0);
    assert!(!server.host().is_empty());
    assert!(server.url().starts_with("redis://"), "{}", server.url());
    assert!(
        server.url().ends_with(&format!(":{}", server.port())),
        "the URL ends at the port, ready for a database index: {}",
        server.url()
    );
    client::ping(&server.url(), TIMEOUT).expect("PING answers PONG");
}

#[test]
fn set_get_round_trip_through_url() {
    let server = redis();
    let key = tenant_key("round-trip");
    let mut conn = client::connect(&server.url(), TIMEOUT).expect("connect");
    let () = conn.set(&key, "v\r\n1").expect("SET");
    let value: Option<String> = conn.get(&key).expect("GET");
    assert_eq!(value.as_deref(), Some("v\r\n1"));
    let deleted: i64 = conn.del(&key).expect("DEL");
    assert_eq!(deleted, 1);
    let value: Option<String> = conn.get(&key).expect("GET");
    assert_eq!(value, None);

    // Callers may append a database index; databases do not share keys.
    let mut db1 = client::connect(&format!("{}/1", server.url()), TIMEOUT).expect("db 1");
    let mut db2 = client::connect(&format!("{}/2", server.url()), TIMEOUT).expect("db 2");
    let () = db1.set_ex(&key, "in 1", 60).expect("SET in db 1");
    let in2: Option<String> = db2.get(&key).expect("GET in db 2");
    assert_eq!(in2, None);
    let in1: Option<String> = db1.get(&key).expect("GET in db 1");
    assert_eq!(in1.as_deref(), Some("in 1"));
    let _: i64 = db1.del(&key).expect("DEL");
}

#[test]
fn owned_server_stops_restarts_and_cleans_up() {
    let started = Instant::now();
    let mut owned = OwnedRedisServer::start().expect("owned server starts");
    eprintln!("OwnedRedisServer::start() took {:?}", started.elapsed());
    assert!(owned.is_running());
    assert_ne!(owned.port(), redis().port(), "not the shared server");
    let port = owned.port();
    let dir = owned.directory().map(std::path::Path::to_path_buf);
    let pid = dir.as_ref().map(|dir| {
        std::fs::read_to_string(dir.join("server.pid"))
            .expect("server.pid while running")
            .trim()
            .parse::<i32>()
            .expect("a pid")
    });

    client::ping(&owned.url(), TIMEOUT).expect("PING");
    let key = tenant_key("lost-on-restart");
    let mut conn = client::connect(&owned.url(), TIMEOUT).expect("connect");
    let () = conn.set(&key, "x").expect("SET");

    owned.stop().expect("stop");
    assert!(!owned.is_running());
    assert_refused(&owned);
    assert!(
        redis::cmd("PING").query::<String>(&mut conn).is_err(),
        "the open connection is gone"
    );
    if let Some(dir) = &dir {
        assert!(
            !dir.join("server.pid").exists(),
            "no server.pid while stopped"
        );
    }
    owned.stop().expect("stopping twice is a no-op");

    let restarted = Instant::now();
    owned.restart().expect("restart");
    eprintln!("OwnedRedisServer::restart() took {:?}", restarted.elapsed());
    assert!(owned.is_running());
    assert_eq!(owned.port(), port, "same port after restart");
    client::ping(&owned.url(), TIMEOUT).expect("PING after restart");
    let mut conn = client::connect(&owned.url(), TIMEOUT).expect("connect after restart");
    if dir.is_some() {
        // Nothing is persisted, so a local server comes back empty.
        let value: Option<String> = conn.get(&key).expect("GET");
        assert_eq!(value, None);
    }

    // Restarting a running server stops it first; the open connection is closed.
    owned.restart().expect("restart while running");
    assert!(redis::cmd("PING").query::<String>(&mut conn).is_err());
    client::ping(&owned.url(), TIMEOUT).expect("PING after the second restart");

    let server = owned.server().clone();
    drop(owned);
    assert_refused(&server);
    if let Some(dir) = dir {
        assert!(!dir.exists(), "{} must be removed on drop", dir.display());
    }
    if let Some(pid) = pid {
        assert!(!util::pid_alive(pid), "redis-server {pid} must be gone");
    }
}

#[test]
fn env_urls_must_end_at_the_port() {
    let server =
        RedisServer::from_url(Provider::EnvUrl, "redis://:s%40cret@cache.internal").expect("URL");
    assert_eq!(server.host(), "cache.internal");
    assert_eq!(server.port(), 6379);
    assert_eq!(server.url(), "redis://:s%40cret@cache.internal:6379");
    let slash = RedisServer::from_url(Provider::EnvUrl, "redis://h:7000/").expect("URL");
    assert_eq!(slash.url(), "redis://h:7000");
    for bad in [
        "redis://h:6379/0",
        "redis://h:6379?protocol=resp3",
        "rediss://h:6379",
        "postgres://h:6379",
        "redis://",
    ] {
        assert!(
            RedisServer::from_url(Provider::EnvUrl, bad).is_err(),
            "{bad} must be refused"
        );
    }
}

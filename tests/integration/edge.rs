//! The HTTP edge from outside: the real accept loop on a TCP socket, and an
//! API key revoked behind two running instances.

use std::time::{Duration, Instant};

use leadline_http::{AppState, router, serve};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use crate::support::{new_tenant, pg_store, services, sqlite_store};

/// Sends `head` (and nothing else) on a fresh connection and returns the
/// status code, the content type and the body of the answer.
async fn raw(addr: std::net::SocketAddr, head: &str) -> (u16, String, serde_json::Value) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut bytes))
        .await
        .expect("the server answers and closes")
        .unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let content_type = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    (
        status,
        content_type,
        serde_json::from_str(body).unwrap_or_default(),
    )
}

#[tokio::test]
async fn oversized_request_heads_are_problems_over_tcp() {
    let s = services(sqlite_store().await);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, router(AppState::new(s)), async move {
        let _ = stopped.await;
    }));

    let long_target = format!(
        "GET /v1/leads?tag={} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    let many_headers = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{}\r\n",
        (0..150)
            .map(|i| format!("X-H{i}: 1\r\n"))
            .collect::<String>()
    );
    let big_header = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: {}\r\n\r\n",
        "v".repeat(64 * 1024)
    );
    for (head, status) in [(long_target, 414), (many_headers, 431), (big_header, 431)] {
        let (got, content_type, body) = raw(addr, &head).await;
        assert_eq!(got, status, "{body}");
        assert_eq!(content_type, "application/problem+json");
        assert_eq!(body["status"], status);
    }
    let (ok, _, body) = raw(
        addr,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(ok, 200, "{body}");

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server stops on shutdown")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_revoked_key_stops_working_on_every_instance_within_a_second() {
    // Two instances: their own pools, services and verified-key caches,
    // one database.
    let a = services(pg_store().await);
    let b = services(pg_store().await);
    let (tenant, key) = new_tenant(&a).await;
    for instance in [&a, &b] {
        instance
            .keys
            .authenticate(&key)
            .await
            .expect("the key works before it is revoked");
    }
    // Revoked through instance A, as `DELETE /v1/keys/{id}` does: A
    // forgets the key at once, B within its second of trust.
    let key_id = a.keys.authenticate(&key).await.unwrap().key_id;
    a.keys.revoke(tenant, key_id).await.unwrap();
    let revoked = Instant::now();
    assert!(
        a.keys.authenticate(&key).await.is_err(),
        "the revoking instance refuses the key at once"
    );
    // The bound is one second of trust plus a request; the deadline leaves
    // room for a loaded CI machine, and the elapsed time is asserted below.
    let deadline = revoked + Duration::from_secs(5);
    let mut refused = [None, None];
    while refused.iter().any(Option::is_none) {
        assert!(Instant::now() < deadline, "still accepted: {refused:?}");
        for (i, instance) in [&a, &b].into_iter().enumerate() {
            if refused[i].is_none() && instance.keys.authenticate(&key).await.is_err() {
                refused[i] = Some(revoked.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for elapsed in refused.into_iter().flatten() {
        assert!(
            elapsed < Duration::from_millis(1_500),
            "a revoked key worked for {elapsed:?}"
        );
    }
}

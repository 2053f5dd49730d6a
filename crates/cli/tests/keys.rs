//! `leadline keys …` on the real binary, against a running `leadline
//! serve` on the embedded default (SQLite): a key issued by the command
//! works over HTTP within its role, bad arguments are refused naming their
//! flag, a revocation is seen by the running server within a second, and a
//! rotation with no overlap retires the old key.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    process::{Command, Output},
    time::{Duration, Instant},
};

use common::{BIN, Running};

fn leadline(db: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", db)
        .env("LEADLINE_HTTP__BIND", "127.0.0.1:0");
    cmd
}

fn run(db: &str, args: &[&str]) -> Output {
    leadline(db).args(args).output().unwrap()
}

fn stdout_line(out: &Output) -> String {
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .trim()
        .to_owned()
}

/// Polls `probe` until it holds; panics naming `what` after `within`.
async fn until(what: &str, within: Duration, mut probe: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !probe().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn keys_commands_drive_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("keys.db").display());
    common::migrate_up(&db);
    let admin = stdout_line(&run(&db, &["tenant", "create", "acme"]));

    let out = run(
        &db,
        &[
            "keys", "create", "--tenant", "acme", "--name", "ci bot", "--role", "viewer",
        ],
    );
    let viewer = stdout_line(&out);
    assert!(viewer.starts_with("ll_"), "{viewer}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("shown only this once"),
        "{out:?}"
    );
    for (args, flag) in [
        (&["--name", "x", "--role", "root"][..], "--role"),
        (&["--name", "x", "--scopes", "read,sudo"][..], "--scopes"),
        (&["--name", "x"][..], "--role"),
        (
            &[
                "--name",
                "x",
                "--role",
                "viewer",
                "--expires-at",
                "2001-01-01T00:00:00Z",
            ][..],
            "--expires-at",
        ),
        (
            &[
                "--name",
                "x",
                "--role",
                "viewer",
                "--expires-at",
                "tomorrow",
            ][..],
            "--expires-at",
        ),
        (&["--name", "", "--role", "viewer"][..], "--name"),
    ] {
        let mut full = vec!["keys", "create", "--tenant", "acme"];
        full.extend_from_slice(args);
        let out = run(&db, &full);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "no key printed for {args:?}");
    }
    let out = run(
        &db,
        &[
            "keys", "create", "--tenant", "nobody", "--name", "x", "--role", "viewer",
        ],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("no tenant has the slug nobody"));

    let listed = stdout_line(&run(&db, &["keys", "list", "--tenant", "acme"]));
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 2, "{listed}");
    assert!(
        lines[0].contains("role=admin") && lines[0].contains("first admin key"),
        "{listed}"
    );
    assert!(
        lines[1].contains("role=viewer") && lines[1].contains("ci bot"),
        "{listed}"
    );
    let secret_part = &viewer[viewer.len() - 48..];
    assert!(
        lines[1].contains(&secret_part[..8]),
        "the prefix is listed: {listed}"
    );
    assert!(
        !listed.contains(&secret_part[8..]),
        "never the secret: {listed}"
    );
    let viewer_id = lines[1].split_whitespace().next().unwrap().to_owned();
    let admin_id = lines[0].split_whitespace().next().unwrap().to_owned();

    let server = Running::start({
        let mut cmd = leadline(&db);
        cmd.arg("serve");
        cmd
    });
    let seen = server.wait_for_line("listening on", Duration::from_secs(30));
    let base = seen
        .iter()
        .find_map(|l| l.split("listening on ").nth(1))
        .unwrap()
        .trim()
        .to_owned();
    let http = reqwest::Client::new();
    let status = async |key: &str, method: reqwest::Method, path: &str| {
        let mut req = http
            .request(method.clone(), format!("{base}{path}"))
            .bearer_auth(key);
        if method == reqwest::Method::POST {
            req = req.json(&serde_json::json!({"first_name": "Ada", "last_name": "Lovelace"}));
        }
        let res = req.send().await.unwrap();
        let content_type = res
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        (res.status().as_u16(), content_type)
    };
    assert_eq!(
        status(&viewer, reqwest::Method::GET, "/v1/leads").await.0,
        200
    );
    assert_eq!(
        status(&viewer, reqwest::Method::POST, "/v1/leads").await,
        (403, Some("application/problem+json".to_owned()))
    );
    assert_eq!(
        status(&admin, reqwest::Method::POST, "/v1/leads").await.0,
        201
    );

    let out = run(&db, &["keys", "revoke", "--tenant", "acme", &viewer_id]);
    assert!(out.status.success(), "{out:?}");
    let revoked = Instant::now();
    until(
        "the server refuses the revoked key",
        Duration::from_secs(10),
        async || status(&viewer, reqwest::Method::GET, "/v1/leads").await.0 == 401,
    )
    .await;
    assert!(
        revoked.elapsed() < Duration::from_secs(3),
        "a revoked key worked for {:?}",
        revoked.elapsed()
    );

    let out = run(
        &db,
        &[
            "keys",
            "rotate",
            "--tenant",
            "acme",
            &admin_id,
            "--overlap-seconds",
            "0",
        ],
    );
    let successor = stdout_line(&out);
    until(
        "the server refuses the rotated-out key",
        Duration::from_secs(10),
        async || status(&admin, reqwest::Method::GET, "/v1/leads").await.0 == 401,
    )
    .await;
    assert_eq!(
        status(&successor, reqwest::Method::GET, "/v1/keys").await.0,
        200
    );
    let out = run(&db, &["keys", "revoke", "--tenant", "acme", "not-an-id"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ID:"),
        "{out:?}"
    );
}

//! Cleanup when the test process is killed, for every kind of local server: a child copy of
//! this test binary starts owned servers and is then `SIGKILL`ed, so no `Drop` runs and only the
//! reapers can clean up.
//!
//! `harness = false`: the binary is its own `main`, so the child half is an ordinary mode of the
//! program rather than an ignored test.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use leadline_testsupport::{OwnedPgServer, OwnedRedisServer};

/// Set in the child: makes `main` hold servers until killed.
const HOLD_ENV: &str = "LEADLINE_TESTSUPPORT_HOLD_SERVERS";

/// What the child reports of one server: its directory, its pid, its port.
#[derive(Debug)]
struct Held {
    dir: PathBuf,
    pid: i32,
    port: u16,
}

/// The child process, `SIGKILL`ed on drop so that a failing assertion does not leave it behind.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    if std::env::var_os(HOLD_ENV).is_some() {
        hold_servers_until_killed();
        return;
    }
    killed_test_process_leaves_nothing_behind();
    println!("test killed_test_process_leaves_nothing_behind ... ok");
    println!("reaper: 1 passed, 0 failed");
}

/// The child half of [`killed_test_process_leaves_nothing_behind`].
fn hold_servers_until_killed() {
    let pg = OwnedPgServer::start().expect("owned PostgreSQL");
    let redis = OwnedRedisServer::start().expect("owned Redis");
    for (dir, port) in [
        (pg.directory(), pg.port()),
        (redis.directory(), redis.port()),
    ] {
        if let Some(dir) = dir {
            let pid = std::fs::read_to_string(dir.join("server.pid")).expect("server.pid");
            eprintln!("HELD {} {} {port}", pid.trim(), dir.display());
        } else {
            // A container has no directory; its cleanup is `docker rm`, not tested here.
            eprintln!("DOCKER {port}");
        }
    }
    eprintln!("READY");
    std::thread::sleep(Duration::from_secs(120));
}

fn killed_test_process_leaves_nothing_behind() {
    // The markers go to stderr, away from anything else the child prints.
    let child = Command::new(std::env::current_exe().expect("the test binary"))
        .env(HOLD_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child test process");
    let mut child = KillOnDrop(child);
    let stderr = child.0.stderr.take().expect("piped stderr");
    let mut held = Vec::new();
    let mut in_docker = 0;
    let mut other_output = Vec::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.expect("read the child's output");
        if line == "READY" {
            break;
        }
        if let Some(rest) = line.strip_prefix("HELD ") {
            let mut parts = rest.splitn(3, ' ');
            let pid = parts.next().and_then(|p| p.parse().ok()).expect("pid");
            let dir = parts.next().map(PathBuf::from).expect("dir");
            let port = parts.next().and_then(|p| p.parse().ok()).expect("port");
            held.push(Held { dir, pid, port });
        } else if line.starts_with("DOCKER ") {
            in_docker += 1;
        } else {
            other_output.push(line);
        }
    }
    assert!(
        child.0.try_wait().expect("child status").is_none(),
        "the child exited before it was ready:\n{}",
        other_output.join("\n")
    );
    assert_eq!(
        held.len() + in_docker,
        2,
        "one PostgreSQL and one Redis server; the child said:\n{}",
        other_output.join("\n")
    );

    child.0.kill().expect("SIGKILL the child");
    child.0.wait().expect("reap the child");

    let deadline = Instant::now() + Duration::from_secs(20);
    for server in &held {
        while (server.dir.exists() || !process_gone(server.pid)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            !server.dir.exists(),
            "{} must be removed by the reaper",
            server.dir.display()
        );
        assert!(
            process_gone(server.pid),
            "server {} must be stopped",
            server.pid
        );
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", server.port)).is_err(),
            "port {} must be closed",
            server.port
        );
    }
}

/// Gone, or a zombie: killed servers are reparented, and their new parent may be slow to reap.
fn process_gone(pid: i32) -> bool {
    if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
        return true;
    }
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'))
    })
}

//! Real PostgreSQL and Redis servers for leadline's tests.
//!
//! A test that needs PostgreSQL calls [`postgres()`], one that needs Redis calls [`redis()`], and
//! gets the process-wide shared server of that kind, started on first use. Such a test never
//! skips silently: either it gets a server or it panics with a message that says how to provide
//! one.
//!
//! For each kind, the first of these that applies wins (an explicit choice beats
//! autodetection): a URL in the environment ([`Provider::EnvUrl`]), else a Docker daemon
//! ([`Provider::Docker`]), else local server binaries ([`Provider::LocalBinaries`]).
//! Docker support is the `docker` feature, which every test crate turns on; without it (the
//! release build `cargo xtask bench` makes, which should not compile a Docker client) the
//! daemon counts as unreachable. A Docker
//! daemon is reachable when `DOCKER_HOST` (if it is a `unix://` or `tcp://` address), else the
//! socket `/var/run/docker.sock`, accepts a connection. If Docker is reachable but the container
//! cannot be started (e.g. the image cannot be pulled), local binaries are tried next, with a
//! note on stderr.
//!
//! # PostgreSQL
//!
//! 1. **`TEST_DATABASE_URL`** is set (and not empty) → that server is used as is. It must be a
//!    *superuser* URL, e.g. `postgres://postgres:postgres@localhost:5432/postgres`, because
//!    tests create and drop databases and roles. Nothing is started there. Each database the
//!    tests create is marked with its creator (boot, pid namespace, pid, time), and a process's
//!    first `create_database` on a server drops the marked databases whose creator has exited
//!    (or, made on another machine, that are over 3 hours old): runs that were killed leave
//!    nothing behind for long. Unmarked databases are never touched.
//! 2. **Docker** → a `postgres:15-alpine` container through testcontainers.
//! 3. **Local PostgreSQL server binaries** (`initdb` and `postgres`) → a throw-away cluster in a
//!    temporary directory. The binaries are looked up in `PG_BIN_DIR`, then
//!    `pg_config --bindir`, then the highest `/usr/lib/postgresql/*/bin`, then `PATH`. When the
//!    tests run as root, the cluster is created and run as the `postgres` OS user (or `nobody`),
//!    because PostgreSQL refuses to run as root.
//!
//! With none of these the test panics with: *"PostgreSQL is needed for this test: set
//! `TEST_DATABASE_URL` to a superuser URL, start a Docker daemon, or install the PostgreSQL
//! server binaries (apt-get install postgresql) — see README.md"*.
//!
//! The superuser of a server started here is `postgres` with password `postgres`; host
//! connections use `scram-sha-256`, so role passwords are really checked.
//!
//! # PostgreSQL with TLS
//!
//! [`postgres_tls(cert)`](postgres_tls()) is a server with `ssl=on`, shared by the process like
//! [`postgres()`], one per [`ServerCert`]: a certificate for `localhost`/`127.0.0.1`, or one for
//! [`WRONG_HOST`]. Both are signed by a CA made up for the server with `rcgen`
//! ([`TlsPgServer::ca_file`]); a second CA that signed nothing
//! ([`TlsPgServer::untrusted_ca_file`]) is there to be distrusted. The certificates and the key
//! (mode 0600, owned by the server's OS user) live in the cluster's directory and go with it.
//!
//! It always runs from the local server binaries, even when `TEST_DATABASE_URL` or Docker is
//! there, because the test must control the server's certificates; without local binaries it
//! panics with a message saying so. Cleanup is that of every local cluster (below).
//!
//! # Redis
//!
//! 1. **`TEST_REDIS_URL`** is set (and not empty) → that server is used as is, once it has
//!    answered `PING` (within 10 s). It must look like `redis://[[user]:password@]host[:port]`:
//!    no database index (tests append their own), no TLS.
//! 2. **Docker** → a `redis:7-alpine` container through testcontainers.
//! 3. **A local `redis-server`** (on `PATH`, else `/usr/bin` or `/usr/local/bin`) → a server on
//!    a free port on 127.0.0.1 that persists nothing (`--save "" --appendonly no`), run in a
//!    temporary directory.
//!
//! With none of these the test panics with: *"Redis is needed for this test: set
//! `TEST_REDIS_URL`, start a Docker daemon, or install redis-server (apt-get install
//! redis-server) — see README.md"*.
//!
//! Tests share the one server, so they must keep out of each other's way: leadline's keys are
//! `leadline:{tenant}:…`, and each test uses fresh tenant ids (or a database index of its own,
//! `{url}/N`). Nothing here flushes a shared server.
//!
//! The crate talks to Redis itself only to check that it answers, with a few lines of the
//! protocol over TCP rather than a Redis client library, so it pins none for the application.
//!
//! # Cleanup
//!
//! The shared servers live in `static`s and are never dropped, so cleanup cannot rely on `Drop`.
//! Instead, with local binaries, a small "reaper" shell (`sh`) is started next to each server.
//! Its standard input is a pipe whose only write end is kept by the test process. When the test
//! process ends — normally, by a panic, or by `SIGKILL` — the kernel closes that write end, the
//! reaper's `read` returns, and it stops the server (PostgreSQL: `SIGINT`, its fast shutdown;
//! Redis: `SIGTERM`) and removes the temporary directory. Rust creates its pipes with
//! `O_CLOEXEC`, so processes that the tests themselves spawn do not inherit the write end and
//! cannot keep the reaper waiting. The servers and the reapers run in their own process groups
//! so a Ctrl-C in the terminal reaches only the test process; the orderly cleanup then follows
//! from the pipe closing.
//!
//! As a second line of defence, every start of a local server first sweeps the directories of
//! its kind (`leadline-pg-*`, `leadline-redis-*`) in the temporary directory that are older than
//! a minute and whose owning test process and server are both gone (left behind by e.g. a
//! killed reaper or a reboot).
//!
//! With Docker, the same reaper idea runs `docker rm -f -v <container>` when the test process
//! ends, if the `docker` CLI is on `PATH`; without the CLI the shared container outlives the test
//! process and has to be removed by hand (testcontainers only removes containers on `Drop`).
//!
//! # Servers a test owns
//!
//! [`OwnedPgServer`] and [`OwnedRedisServer`] are separate servers for one test, for tests that
//! stop and restart them. They prefer local binaries and fall back to Docker, and they are
//! stopped and removed when dropped (and by the reaper if the process dies first). The
//! environment URLs are not used for them: a shared external server is not ours to stop.
//!
//! # Runtimes
//!
//! Every `#[tokio::test]` has its own runtime, so nothing here keeps runtime-bound resources
//! (pools, connections) in statics: the async helpers on [`PgServer`] open and close their own
//! connection. The blocking parts (starting servers, waiting for them) run on dedicated threads
//! with private runtimes where they need one, so they may be called from inside any runtime or
//! from none.

#[cfg_attr(not(feature = "docker"), path = "docker_off.rs")]
mod docker;
mod logs;
mod pgbouncer;
mod postgres;
mod provider;
mod redis;
mod server_dir;
mod smtp;
mod util;

pub use logs::CapturedLogs;
pub use pgbouncer::PgBouncer;
pub use postgres::{
    OwnedPgServer, PgServer, ServerCert, TlsPgServer, WRONG_HOST, pg_tool, postgres, postgres_tls,
};
pub use redis::{OwnedRedisServer, RedisCluster, RedisServer, redis};
pub use smtp::{ReceivedMessage, SmtpOptions, SmtpServer, smtp_server};

/// Which way a server was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// The server named by the environment: `TEST_DATABASE_URL` or `TEST_REDIS_URL`.
    EnvUrl,
    /// A testcontainers-managed Docker container.
    Docker,
    /// A throw-away server run from local binaries.
    LocalBinaries,
}

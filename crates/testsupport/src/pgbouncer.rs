//! A throw-away PgBouncer in transaction-pooling mode in front of a PostgreSQL server, run from
//! the local `pgbouncer` binary (Debian's package puts it in /usr/sbin).
//!
//! It runs in a [`ServerDir`] `$TMPDIR/leadline-pgbouncer-<test pid>-<random>/` holding its
//! `pgbouncer.ini`, `userlist.txt` and log, `pgbouncer.log`. PgBouncer refuses to run as root,
//! so as root it runs as the user PostgreSQL runs as. There is no Docker fallback and no
//! skipping: a test that asks for one fails, saying how to install it.

use std::fmt::Write as _;
use std::net::TcpStream;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use nix::sys::signal::Signal;

use crate::postgres::local::run_as;
use crate::server_dir::{Kind, ServerDir};
use crate::util;

/// Where `pgbouncer` is looked for after `PATH`.
const FALLBACK_BINARIES: [&str; 2] = ["/usr/sbin/pgbouncer", "/usr/local/bin/pgbouncer"];
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// `SIGTERM` is PgBouncer's immediate shutdown; the tests' clients are gone by then.
static KIND: Kind = Kind {
    dir_prefix: "leadline-pgbouncer-",
    program: "pgbouncer",
    log_file: "pgbouncer.log",
    stop_signal: Signal::SIGTERM,
    stop_timeout: Duration::from_secs(10),
    harsher_signal: None,
    extra_pid_files: &[],
};

/// A running PgBouncer; stopped and its directory removed on drop.
#[derive(Debug)]
pub struct PgBouncer {
    dir: ServerDir,
    port: u16,
}

impl PgBouncer {
    /// Starts PgBouncer in `pool_mode = transaction` on a free port in front of the PostgreSQL
    /// server at `pg_host:pg_port` (every database), with at most `pool_size` server
    /// connections per user and database, so that many clients share few server connections.
    /// `users` are the logins it accepts, with their passwords (it logs in to PostgreSQL with
    /// the same ones).
    ///
    /// # Errors
    /// No `pgbouncer` binary (the message says how to install it), or it did not start (with
    /// its log).
    pub fn start_transaction_pool(
        pg_host: &str,
        pg_port: u16,
        users: &[(&str, &str)],
        pool_size: u32,
    ) -> anyhow::Result<Self> {
        let binary = find_binary()?;
        let run_as = run_as()?;
        let mut dir = ServerDir::create(&KIND, run_as.as_ref().map(|u| (u.uid, u.gid)))?;
        let port = util::free_port()?;
        let mut userlist = String::new();
        for (user, password) in users {
            let _ = writeln!(
                userlist,
                "\"{}\" \"{}\"",
                user.replace('"', "\"\""),
                password.replace('"', "\"\"")
            );
        }
        let userlist_path = dir.path().join("userlist.txt");
        std::fs::write(&userlist_path, userlist).context("writing userlist.txt")?;
        dir.chown(&userlist_path)?;
        let ini = format!(
            "[databases]\n\
             * = host={pg_host} port={pg_port}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = scram-sha-256\n\
             auth_file = {}\n\
             pool_mode = transaction\n\
             default_pool_size = {pool_size}\n\
             min_pool_size = 0\n\
             reserve_pool_size = 0\n\
             max_client_conn = 500\n\
             ignore_startup_parameters = extra_float_digits\n",
            userlist_path.display()
        );
        let ini_path = dir.path().join("pgbouncer.ini");
        std::fs::write(&ini_path, ini).context("writing pgbouncer.ini")?;
        dir.chown(&ini_path)?;
        let mut command = Command::new(&binary);
        command.arg(&ini_path);
        if let Some(user) = &run_as {
            command.uid(user.uid).gid(user.gid);
        }
        let what = format!("{} on 127.0.0.1:{port}", binary.display());
        dir.start(command, &what, START_TIMEOUT, move || {
            TcpStream::connect_timeout(
                &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_millis(200),
            )
            .map(drop)
            .context("pgbouncer does not accept connections yet")
        })?;
        Ok(Self { dir, port })
    }

    /// Its port on 127.0.0.1.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A `postgres://` URL through PgBouncer.
    #[must_use]
    pub fn url(&self, user: &str, password: &str, database: &str) -> String {
        format!(
            "postgres://{user}:{password}@127.0.0.1:{}/{database}?sslmode=disable",
            self.port
        )
    }

    /// Its log so far, for failure messages.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(KIND.log_file)).unwrap_or_default()
    }
}

/// Finds `pgbouncer` on `PATH`, else in /usr/sbin or /usr/local/bin.
fn find_binary() -> anyhow::Result<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("pgbouncer"))
            .find(|binary| binary.is_file())
    });
    on_path
        .or_else(|| {
            FALLBACK_BINARIES
                .iter()
                .map(PathBuf::from)
                .find(|binary| binary.is_file())
        })
        .with_context(|| {
            format!(
                "`pgbouncer` was not found on PATH, nor at {}: install it (apt-get install \
                 pgbouncer); the PgBouncer tests need a real one",
                FALLBACK_BINARIES.join(" or ")
            )
        })
}

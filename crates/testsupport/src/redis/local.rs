//! Throw-away Redis servers run from a local `redis-server` binary.
//!
//! Each runs in a [`ServerDir`] `$TMPDIR/leadline-redis-<test pid>-<random>/`, which is also
//! its working directory (`--dir`) and holds its log, `redis.log`. Nothing is persisted
//! (`--save "" --appendonly no`), so a restart comes back empty. Redis runs fine as root, so
//! unlike PostgreSQL it runs as the current user.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::RedisServer;
use crate::Provider;
use crate::server_dir::{Kind, ServerDir};
use crate::util;

/// Where `redis-server` is looked for after `PATH` (which a test runner may have trimmed).
const FALLBACK_BINARIES: [&str; 2] = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"];
/// How long a starting server may take to answer `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// `SIGTERM` is Redis's orderly shutdown; with nothing to save it is immediate.
static KIND: Kind = Kind {
    dir_prefix: "leadline-redis-",
    program: "redis-server",
    log_file: "redis.log",
    stop_signal: Signal::SIGTERM,
    stop_timeout: Duration::from_secs(10),
    harsher_signal: None,
    extra_pid_files: &[],
};

/// Finds `redis-server` on `PATH`, else at /usr/bin or /usr/local/bin.
pub(crate) fn find_binary() -> Result<PathBuf, String> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("redis-server"))
            .find(|binary| binary.is_file())
    });
    on_path
        .or_else(|| {
            FALLBACK_BINARIES
                .iter()
                .map(PathBuf::from)
                .find(|binary| binary.is_file())
        })
        .ok_or_else(|| {
            format!(
                "`redis-server` was not found on PATH, nor at {}",
                FALLBACK_BINARIES.join(" or ")
            )
        })
}

/// One throw-away server: its directory, the process while it runs, and the reaper.
#[derive(Debug)]
pub(crate) struct Instance {
    server: RedisServer,
    dir: ServerDir,
    binary: PathBuf,
    /// Arguments after the standard ones (a cluster node's).
    extra_args: Vec<String>,
}

impl Instance {
    /// Makes a directory and starts `binary` in it on a free port.
    pub(crate) fn start_new(binary: &Path) -> anyhow::Result<Self> {
        Self::start_new_with(binary, Vec::new())
    }

    /// As [`Instance::start_new`], with `extra_args` after the standard arguments.
    pub(crate) fn start_new_with(binary: &Path, extra_args: Vec<String>) -> anyhow::Result<Self> {
        let mut instance = Self {
            // Port 0 is a placeholder until the server is started.
            server: RedisServer::started(Provider::LocalBinaries, "127.0.0.1", 0)?,
            dir: ServerDir::create(&KIND, None)?,
            binary: binary.to_path_buf(),
            extra_args,
        };
        instance.start_on_free_port()?;
        Ok(instance)
    }

    pub(crate) fn server(&self) -> &RedisServer {
        &self.server
    }

    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// First start: picks a free port, retrying with another one if some other process took it
    /// between our probe and the server's bind.
    fn start_on_free_port(&mut self) -> anyhow::Result<()> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = util::free_port()?;
            self.server = RedisServer::started(Provider::LocalBinaries, "127.0.0.1", port)?;
            match self.start() {
                Ok(()) => return Ok(()),
                Err(e) if attempt < 3 && format!("{e:#}").contains("already in use") => {
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Starts the server on its port and waits until it answers `PING`.
    pub(crate) fn start(&mut self) -> anyhow::Result<()> {
        let port = self.server.port();
        let mut command = Command::new(&self.binary);
        command
            // No config file: the built-in defaults plus these, whatever /etc/redis says.
            .args(["--save", "", "--appendonly", "no"])
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            // We wait on this very process; it must not fork into the background.
            .args(["--daemonize", "no"])
            .args(&self.extra_args);
        let what = format!("{} on 127.0.0.1:{port}", self.binary.display());
        let probe = super::ping_probe(&self.server);
        self.dir.start(command, &what, START_TIMEOUT, probe)
    }

    pub(crate) fn is_running(&self) -> bool {
        self.dir.is_running()
    }

    /// Orderly shutdown (`SIGTERM`); the directory stays. Stopping a stopped server is a no-op.
    pub(crate) fn stop(&mut self) -> anyhow::Result<()> {
        self.dir.stop()
    }
}

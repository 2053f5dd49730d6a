//! Throw-away PostgreSQL clusters run from the local server binaries.
//!
//! A cluster lives in a [`ServerDir`] `$TMPDIR/leadline-pg-<test pid>-<random>/` which, besides
//! the common entries, holds:
//!
//! | entry          | what                                                              |
//! |----------------|-------------------------------------------------------------------|
//! | `data/`        | the cluster (`initdb -D`)                                         |
//! | `postgres.log` | the server's stdout/stderr (appended across restarts)             |
//! | `pwfile`       | the superuser password, read by `initdb --pwfile`                 |
//! | `.s.PGSQL.*`   | the server's unix socket (`unix_socket_directories`)              |
//!
//! A TLS cluster ([`super::tls`]) adds its certificate files.

use std::fs;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context as _, bail};
use nix::sys::signal::Signal;

use super::{PgServer, SUPERUSER, SUPERUSER_PASSWORD};
use crate::Provider;
use crate::server_dir::{Kind, ServerDir};
use crate::util;

/// How long a starting server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Fast shutdown (`SIGINT`), then immediate shutdown (`SIGQUIT`): a `SIGKILL`ed postmaster would
/// leave its backends running.
static KIND: Kind = Kind {
    dir_prefix: "leadline-pg-",
    program: "postgres",
    log_file: "postgres.log",
    stop_signal: Signal::SIGINT,
    stop_timeout: Duration::from_secs(30),
    harsher_signal: Some(Signal::SIGQUIT),
    extra_pid_files: &["data/postmaster.pid"],
};

/// Finds the directory holding `initdb` and `postgres`: `PG_BIN_DIR`, else `pg_config --bindir`,
/// else the highest `/usr/lib/postgresql/*/bin`, else `PATH`.
///
/// An explicit but wrong `PG_BIN_DIR` is an error rather than a reason to look elsewhere.
pub(crate) fn find_bindir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("PG_BIN_DIR").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        return if has_server_binaries(&dir) {
            Ok(dir)
        } else {
            Err(format!(
                "PG_BIN_DIR={} does not contain both `initdb` and `postgres`",
                dir.display()
            ))
        };
    }

    if let Ok(output) = Command::new("pg_config")
        .arg("--bindir")
        .stderr(Stdio::null())
        .output()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        // Debian's pg_config comes from libpq-dev and may point at a dir without the server.
        if output.status.success() && has_server_binaries(&dir) {
            return Ok(dir);
        }
    }

    if let Some(dir) = highest_debian_bindir(Path::new("/usr/lib/postgresql")) {
        return Ok(dir);
    }

    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let initdb = dir.join("initdb");
            if !initdb.is_file() {
                continue;
            }
            // /usr/local/bin/initdb is often a symlink into the real bin dir; prefer that dir
            // so `postgres` comes from the same installation.
            if let Some(real_dir) = fs::canonicalize(&initdb)
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf))
                .filter(|d| has_server_binaries(d))
            {
                return Ok(real_dir);
            }
            if has_server_binaries(&dir) {
                return Ok(dir);
            }
        }
    }

    Err(
        "`initdb` and `postgres` were not found in PG_BIN_DIR (unset), `pg_config --bindir`, \
         /usr/lib/postgresql/*/bin or PATH"
            .to_owned(),
    )
}

fn has_server_binaries(dir: &Path) -> bool {
    dir.join("initdb").is_file() && dir.join("postgres").is_file()
}

/// `/usr/lib/postgresql/<version>/bin` with the highest version (Debian/Ubuntu layout).
fn highest_debian_bindir(root: &Path) -> Option<PathBuf> {
    let mut best: Option<(Vec<u32>, PathBuf)> = None;
    for entry in fs::read_dir(root).ok()?.flatten() {
        let name = entry.file_name();
        let Some(version) = name.to_str().and_then(|v| {
            v.split('.')
                .map(|p| p.parse::<u32>().ok())
                .collect::<Option<Vec<_>>>()
        }) else {
            continue;
        };
        let bin = entry.path().join("bin");
        if has_server_binaries(&bin) && best.as_ref().is_none_or(|(b, _)| version > *b) {
            best = Some((version, bin));
        }
    }
    best.map(|(_, bin)| bin)
}

/// The unprivileged OS user the server runs as when the tests run as root.
#[derive(Debug, Clone)]
pub(crate) struct RunAs {
    pub(crate) name: String,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// `None` when not root (the server simply runs as the current user). PostgreSQL refuses to run
/// as root, so as root we switch to `postgres`, or `nobody` where there is no `postgres` user.
pub(crate) fn run_as() -> anyhow::Result<Option<RunAs>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    for name in ["postgres", "nobody"] {
        if let Ok(Some(user)) = nix::unistd::User::from_name(name) {
            return Ok(Some(RunAs {
                name: user.name,
                uid: user.uid.as_raw(),
                gid: user.gid.as_raw(),
            }));
        }
    }
    bail!(
        "the tests run as root, and PostgreSQL refuses to run as root, but there is neither a \
         `postgres` nor a `nobody` OS user to run it as"
    )
}

/// `C.UTF-8` where the C library has it (proper UTF-8 character classes for `lower()` etc.),
/// else plain `C`.
fn initdb_locale() -> &'static str {
    static LOCALE: OnceLock<&'static str> = OnceLock::new();
    LOCALE.get_or_init(|| {
        let has_c_utf8 = Command::new("locale")
            .arg("-a")
            .stderr(Stdio::null())
            .output()
            .map(|out| {
                String::from_utf8_lossy(&out.stdout).lines().any(|l| {
                    let l = l.trim().to_ascii_lowercase();
                    l == "c.utf8" || l == "c.utf-8"
                })
            })
            .unwrap_or(false);
        if has_c_utf8 { "C.UTF-8" } else { "C" }
    })
}

/// One throw-away cluster: its directory (with the postmaster while it runs, and the reaper).
#[derive(Debug)]
pub(crate) struct Cluster {
    server: PgServer,
    dir: ServerDir,
    bindir: PathBuf,
    run_as: Option<RunAs>,
    /// Further `-c name=value` server settings, on every start.
    settings: Vec<String>,
}

impl Cluster {
    /// Creates a new cluster with the binaries in `bindir` and starts it on a free port.
    pub(crate) fn start_new(bindir: &Path) -> anyhow::Result<Self> {
        Self::start_new_with(bindir, |_| Ok(Vec::new()))
    }

    /// Like [`Cluster::start_new`], with further server settings (`name=value`, passed as `-c`)
    /// returned by `prepare`, which runs after `initdb` and before the first start, so it may
    /// write files into the directory (e.g. certificates) for the settings to name.
    pub(crate) fn start_new_with(
        bindir: &Path,
        prepare: impl FnOnce(&ServerDir) -> anyhow::Result<Vec<String>>,
    ) -> anyhow::Result<Self> {
        let mut cluster = Self::create(bindir)?;
        cluster.settings = prepare(&cluster.dir)?;
        cluster.start_on_free_port()?;
        Ok(cluster)
    }

    /// A streaming replica of `primary`, made with `pg_basebackup -R` over the primary's unix
    /// socket (where local connections, replication included, are trusted) and started on a
    /// free port. It replays the primary's WAL continuously and refuses writes.
    pub(crate) fn start_replica_of(primary: &Cluster) -> anyhow::Result<Self> {
        let run_as = run_as()?;
        let dir = ServerDir::create(&KIND, run_as.as_ref().map(|u| (u.uid, u.gid)))?;
        let mut replica = Self {
            server: PgServer::started(Provider::LocalBinaries, "127.0.0.1", 0)?,
            dir,
            bindir: primary.bindir.clone(),
            run_as,
            settings: primary.settings.clone(),
        };
        let output = replica
            .command("pg_basebackup")
            .current_dir(replica.dir.path())
            .arg("-h")
            .arg(primary.dir())
            .arg("-p")
            .arg(primary.server.port().to_string())
            .args(["-U", SUPERUSER, "-D"])
            .arg(replica.dir.path().join("data"))
            // -R: write standby.signal and primary_conninfo, so it starts as a streaming replica.
            .args(["-R", "-X", "stream", "-c", "fast", "--no-sync"])
            .stdin(Stdio::null())
            .output()
            .context("running pg_basebackup")?;
        if !output.status.success() {
            bail!(
                "pg_basebackup failed ({}){}:\n{}{}",
                output.status,
                replica.run_as_hint(),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        replica.start_on_free_port()?;
        Ok(replica)
    }

    pub(crate) fn server(&self) -> &PgServer {
        &self.server
    }

    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Makes the directory and the cluster (`initdb`). Does not start the server.
    fn create(bindir: &Path) -> anyhow::Result<Self> {
        let run_as = run_as()?;
        let dir = ServerDir::create(&KIND, run_as.as_ref().map(|u| (u.uid, u.gid)))?;
        let cluster = Self {
            // Port 0 is a placeholder until the server is started.
            server: PgServer::started(Provider::LocalBinaries, "127.0.0.1", 0)?,
            dir,
            bindir: bindir.to_path_buf(),
            run_as,
            settings: Vec::new(),
        };
        cluster.init()?;
        Ok(cluster)
    }

    /// Writes the password file and runs `initdb`.
    fn init(&self) -> anyhow::Result<()> {
        let dir = self.dir.path();
        let pwfile = dir.join("pwfile");
        fs::write(&pwfile, SUPERUSER_PASSWORD).context("writing pwfile")?;
        self.dir.chown(&pwfile)?;

        let locale = initdb_locale();
        let output = self
            .command("initdb")
            .current_dir(dir)
            .arg("-D")
            .arg(dir.join("data"))
            .args([
                "-U",
                SUPERUSER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .args(["-E", "UTF8", &format!("--locale={locale}"), "--no-sync"])
            .stdin(Stdio::null())
            .output()
            .context("running initdb")?;
        if !output.status.success() {
            bail!(
                "initdb failed ({}){}:\n{}{}",
                output.status,
                self.run_as_hint(),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// A command for one of the server binaries, run as the unprivileged user when we are root.
    fn command(&self, binary: &str) -> Command {
        let mut cmd = Command::new(self.bindir.join(binary));
        if let Some(user) = &self.run_as {
            // std also drops supplementary groups when switching uid as root.
            cmd.uid(user.uid).gid(user.gid);
        }
        cmd
    }

    fn run_as_hint(&self) -> String {
        self.run_as
            .as_ref()
            .map(|u| {
                format!(
                    " (running as OS user {} because the tests run as root; {} must be reachable \
                     by that user — set TMPDIR to e.g. /tmp otherwise)",
                    u.name,
                    self.dir.path().display()
                )
            })
            .unwrap_or_default()
    }

    /// First start: picks a free port, retrying with another one if some other process took it
    /// between our probe and the server's bind.
    fn start_on_free_port(&mut self) -> anyhow::Result<()> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = util::free_port()?;
            self.server = PgServer::started(Provider::LocalBinaries, "127.0.0.1", port)?;
            match self.start() {
                Ok(()) => return Ok(()),
                Err(e) if attempt < 3 && format!("{e:#}").contains("already in use") => {
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Starts the postmaster on the server's port and waits until it accepts connections.
    pub(crate) fn start(&mut self) -> anyhow::Result<()> {
        let dir = self.dir.path();
        let port = self.server.port();
        let mut command = self.command("postgres");
        command
            .arg("-D")
            .arg(dir.join("data"))
            .arg("-p")
            .arg(port.to_string())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", dir.display()))
            // Durability is pointless for throw-away test data; speed is not.
            .args(["-c", "fsync=off"])
            .args(["-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off"])
            // Many test binaries × pools of connections.
            .args(["-c", "max_connections=300"])
            .args(["-c", "shared_buffers=128MB"])
            // Statement statistics, for the check that every statement the store sends filters
            // by tenant (tests/integration/distributable.rs). Top-level statements only: those
            // are what the store sends; room for every distinct one a whole run produces.
            .args(["-c", "shared_preload_libraries=pg_stat_statements"])
            .args(["-c", "pg_stat_statements.track=top"])
            .args(["-c", "pg_stat_statements.max=10000"]);
        for setting in &self.settings {
            command.arg("-c").arg(setting);
        }
        let what = format!("postgres on 127.0.0.1:{port}{}", self.run_as_hint());
        let probe = super::connect_probe(self.server.admin_url("postgres"));
        self.dir.start(command, &what, START_TIMEOUT, probe)
    }

    pub(crate) fn is_running(&self) -> bool {
        self.dir.is_running()
    }

    /// Fast shutdown (`SIGINT`), keeping the data directory. Stopping a stopped server is a no-op.
    pub(crate) fn stop(&mut self) -> anyhow::Result<()> {
        self.dir.stop()
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn picks_highest_numeric_version() {
        let root =
            std::env::temp_dir().join(format!("leadline-test-bindirs-{}", util::random_hex(8)));
        for v in ["9.6", "13", "15", "notaversion"] {
            let bin = root.join(v).join("bin");
            fs::create_dir_all(&bin).expect("mkdir");
            fs::write(bin.join("initdb"), "").expect("write");
            fs::write(bin.join("postgres"), "").expect("write");
        }
        // 16 without binaries must be skipped.
        fs::create_dir_all(root.join("16").join("bin")).expect("mkdir");
        let found = highest_debian_bindir(&root);
        let _ = fs::remove_dir_all(&root);
        assert_eq!(found, Some(root.join("15").join("bin")));
    }
}

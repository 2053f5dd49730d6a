//! Throw-away PostgreSQL clusters run from the local server binaries.
//!
//! Layout of a cluster's directory `$TMPDIR/leadline-pg-<test pid>-<random>/`:
//!
//! | entry          | what                                                              |
//! |----------------|-------------------------------------------------------------------|
//! | `data/`        | the cluster (`initdb -D`)                                         |
//! | `postgres.log` | the server's stdout/stderr (appended across restarts)             |
//! | `owner.pid`    | pid of the test process that owns the directory (for the sweep)   |
//! | `server.pid`   | pid of the running postmaster; absent while stopped (for the reaper) |
//! | `pwfile`       | the superuser password, read by `initdb --pwfile`                 |
//! | `.s.PGSQL.*`   | the server's unix socket (`unix_socket_directories`)              |

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};

use crate::util::{self, Reaper, pid_alive};
use crate::{PgServer, Provider, SUPERUSER, SUPERUSER_PASSWORD};

/// Prefix of the temporary directories; also what the sweep looks for.
const DIR_PREFIX: &str = "leadline-pg-";
/// Leftover directories younger than this are never swept: they may be mid-creation.
const SWEEP_MIN_AGE: Duration = Duration::from_secs(60);
/// How long a starting server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a fast shutdown may take before harsher signals follow.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

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
struct RunAs {
    name: String,
    uid: u32,
    gid: u32,
}

/// `None` when not root (the server simply runs as the current user). PostgreSQL refuses to run
/// as root, so as root we switch to `postgres`, or `nobody` where there is no `postgres` user.
fn run_as() -> anyhow::Result<Option<RunAs>> {
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

/// Removes `leadline-pg-*` directories left behind by test processes that died without their
/// reaper cleaning up: older than [`SWEEP_MIN_AGE`], owner process gone, no live postmaster.
/// Best effort: errors (e.g. another user's directory) are ignored.
fn sweep_leftovers(tmp: &Path) {
    let Ok(entries) = fs::read_dir(tmp) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let is_ours = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(DIR_PREFIX));
        let Ok(meta) = entry.metadata() else { continue };
        if !is_ours || !meta.is_dir() {
            continue;
        }
        let old_enough = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age >= SWEEP_MIN_AGE);
        if !old_enough {
            continue;
        }
        let dir = entry.path();
        let alive = |file: &Path| read_pid(file).is_some_and(pid_alive);
        if alive(&dir.join("owner.pid"))
            || alive(&dir.join("server.pid"))
            || alive(&dir.join("data").join("postmaster.pid"))
        {
            continue;
        }
        let _ = fs::remove_dir_all(&dir);
    }
}

/// First line of a pid file (postmaster.pid has the pid on its first line too).
fn read_pid(file: &Path) -> Option<i32> {
    fs::read_to_string(file)
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// The reaper: waits for EOF on stdin (= the test process is gone, or dropped the cluster), then
/// stops the postmaster named in `server.pid` and removes the directory. `$1` is the directory.
///
/// The `alive` check also treats a zombie as dead: after the test process dies, the postmaster is
/// reparented, and until its new parent reaps it `kill -0` would still succeed.
const REAPER_SCRIPT: &str = r#"
read _ignored
alive() {
    kill -0 "$1" 2>/dev/null || return 1
    if [ -r "/proc/$1/stat" ]; then
        state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)
        [ "$state" != Z ] || return 1
    fi
    return 0
}
pid=$(head -n 1 "$1/server.pid" 2>/dev/null)
if [ -n "$pid" ] && alive "$pid"; then
    kill -INT "$pid" 2>/dev/null
    i=0
    while alive "$pid"; do
        i=$((i + 1))
        if [ "$i" -eq 300 ]; then kill -QUIT "$pid" 2>/dev/null; fi
        if [ "$i" -ge 600 ]; then kill -KILL "$pid" 2>/dev/null; break; fi
        sleep 0.1
    done
fi
rm -rf "$1"
"#;

/// One throw-away cluster: its directory, the postmaster while it runs, and its reaper.
#[derive(Debug)]
pub(crate) struct Cluster {
    server: PgServer,
    dir: PathBuf,
    bindir: PathBuf,
    run_as: Option<RunAs>,
    postmaster: Option<Child>,
    reaper: Reaper,
}

impl Cluster {
    /// Creates a new cluster with the binaries in `bindir` and starts it on a free port.
    pub(crate) fn start_new(bindir: &Path) -> anyhow::Result<Self> {
        let mut cluster = Self::create(bindir)?;
        cluster.start_on_free_port()?;
        Ok(cluster)
    }

    pub(crate) fn server(&self) -> &PgServer {
        &self.server
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes the directory, its reaper, and the cluster (`initdb`). Does not start the server.
    fn create(bindir: &Path) -> anyhow::Result<Self> {
        let tmp = std::env::temp_dir();
        sweep_leftovers(&tmp);
        let run_as = run_as()?;

        let dir = tmp.join(format!(
            "{DIR_PREFIX}{}-{}",
            std::process::id(),
            util::random_hex(8)
        ));
        fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // The reaper goes first, so that from here on the directory is removed even if this
        // function fails or the process dies.
        let reaper = match Reaper::spawn(REAPER_SCRIPT, [&dir]) {
            Ok(reaper) => reaper,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let mut cluster = Self {
            // Port 0 is a placeholder until the server is started.
            server: PgServer::started(Provider::LocalBinaries, "127.0.0.1", 0)?,
            dir,
            bindir: bindir.to_path_buf(),
            run_as,
            postmaster: None,
            reaper,
        };
        cluster.init()?;
        Ok(cluster)
    }

    /// Writes the bookkeeping files and runs `initdb`.
    fn init(&mut self) -> anyhow::Result<()> {
        let dir = &self.dir;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod 700 {}", dir.display()))?;
        fs::write(dir.join("owner.pid"), format!("{}\n", std::process::id()))
            .context("writing owner.pid")?;
        let pwfile = dir.join("pwfile");
        fs::write(&pwfile, SUPERUSER_PASSWORD).context("writing pwfile")?;
        if let Some(user) = &self.run_as {
            for path in [dir.as_path(), &dir.join("owner.pid"), &pwfile] {
                std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).with_context(
                    || format!("chown {} to OS user {}", path.display(), user.name),
                )?;
            }
        }

        let locale = initdb_locale();
        let output = self
            .command("initdb")
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
        cmd.current_dir(&self.dir);
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
                    self.dir.display()
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
        anyhow::ensure!(self.postmaster.is_none(), "the server is already running");
        let log_path = self.dir.join("postgres.log");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        if let Some(user) = &self.run_as {
            // Owned by the server's user, like everything else in the directory.
            let _ = std::os::unix::fs::chown(&log_path, Some(user.uid), Some(user.gid));
        }
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let port = self.server.port();
        let mut child = self
            .command("postgres")
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-p")
            .arg(port.to_string())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.dir.display()))
            // Durability is pointless for throw-away test data; speed is not.
            .args(["-c", "fsync=off"])
            .args(["-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off"])
            // Many test binaries × pools of connections.
            .args(["-c", "max_connections=300"])
            .args(["-c", "shared_buffers=128MB"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("duplicating the log file handle")?)
            .stderr(log)
            // Own process group: a terminal Ctrl-C goes to the test process only; the reaper then
            // shuts the server down in order.
            .process_group(0)
            .spawn()
            .with_context(|| format!("spawning {}", self.bindir.join("postgres").display()))?;

        let pid = child.id();
        if let Err(e) = write_atomically(&self.dir.join("server.pid"), &format!("{pid}\n")) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e.context("writing server.pid"));
        }

        let mut exited = None;
        let ready =
            util::wait_until_ready(&self.server, START_TIMEOUT, || match child.try_wait() {
                Ok(Some(status)) => {
                    exited = Some(status);
                    bail!("the postgres process exited during startup ({status})")
                }
                Ok(None) => Ok(()),
                Err(e) => Err(anyhow::Error::new(e).context("checking the postgres process")),
            });
        match ready {
            Ok(()) => {
                self.postmaster = Some(child);
                Ok(())
            }
            Err(e) => {
                if exited.is_none() {
                    let _ = stop_child(&mut child);
                }
                let _ = fs::remove_file(self.dir.join("server.pid"));
                Err(e.context(format!(
                    "starting postgres on 127.0.0.1:{port}{}; its log:\n{}",
                    self.run_as_hint(),
                    log_since(&log_path, log_start)
                )))
            }
        }
    }

    pub(crate) fn is_running(&self) -> bool {
        self.postmaster.is_some()
    }

    /// Fast shutdown (`SIGINT`), keeping the data directory. Stopping a stopped server is a no-op.
    pub(crate) fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.postmaster.take() else {
            return Ok(());
        };
        let result = stop_child(&mut child);
        let _ = fs::remove_file(self.dir.join("server.pid"));
        result
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.stop();
        let _ = fs::remove_dir_all(&self.dir);
        // Also lets the reaper run now (it finds nothing left to do) and reaps it.
        self.reaper.finish(Duration::from_secs(10));
    }
}

/// Sends `SIGINT` (fast shutdown) and waits; escalates to `SIGQUIT` and finally `SIGKILL`.
fn stop_child(child: &mut Child) -> anyhow::Result<()> {
    use nix::sys::signal::{Signal, kill};
    let pid = nix::unistd::Pid::from_raw(
        i32::try_from(child.id()).context("postmaster pid does not fit in pid_t")?,
    );
    if child.try_wait()?.is_some() {
        return Ok(());
    }
    let _ = kill(pid, Signal::SIGINT);
    if wait_for_exit(child, STOP_TIMEOUT)? {
        return Ok(());
    }
    let _ = kill(pid, Signal::SIGQUIT);
    if wait_for_exit(child, Duration::from_secs(5))? {
        bail!(
            "postgres ignored the fast shutdown for {STOP_TIMEOUT:?}; it was stopped with SIGQUIT"
        );
    }
    child.kill().context("killing postgres")?;
    child.wait().context("waiting for the killed postgres")?;
    bail!("postgres ignored SIGINT and SIGQUIT; it was killed")
}

fn wait_for_exit(child: &mut Child, timeout: Duration) -> anyhow::Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait().context("waiting for postgres")?.is_some() {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Writes via a temporary file and rename, so the reaper never reads a half-written pid.
fn write_atomically(path: &Path, contents: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(contents.as_bytes())?;
    drop(file);
    fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// The log written since byte `start` (the last 60 lines of it), for error messages.
fn log_since(path: &Path, start: u64) -> String {
    let Ok(bytes) = fs::read(path) else {
        return "(no log)".to_owned();
    };
    let from = usize::try_from(start).unwrap_or(0).min(bytes.len());
    let text = String::from_utf8_lossy(&bytes[from..]);
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(60)..];
    if tail.is_empty() {
        "(empty)".to_owned()
    } else {
        tail.join("\n")
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

    #[test]
    fn log_tail_starts_at_offset() {
        let path = std::env::temp_dir().join(format!("leadline-test-log-{}", util::random_hex(8)));
        fs::write(&path, "old line\nnew 1\nnew 2\n").expect("write");
        let tail = log_since(&path, "old line\n".len() as u64);
        let _ = fs::remove_file(&path);
        assert_eq!(tail, "new 1\nnew 2");
    }
}

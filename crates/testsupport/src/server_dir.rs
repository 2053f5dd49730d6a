//! Temporary directories for servers run from local binaries, the one server process in each,
//! and the cleanup that removes both even when the test process is killed.
//!
//! Layout of a directory `$TMPDIR/<prefix><test pid>-<random>/` (e.g. `leadline-pg-…`,
//! `leadline-redis-…`); each kind of server adds its own entries:
//!
//! | entry         | what                                                                 |
//! |---------------|----------------------------------------------------------------------|
//! | `owner.pid`   | pid of the test process that owns the directory (for the sweep)      |
//! | `server.pid`  | pid of the running server; absent while stopped (for the reaper)     |
//! | `<log file>`  | the server's stdout/stderr, appended across restarts                 |
//!
//! Cleanup has two lines of defence (see the [crate docs](crate#cleanup)): a reaper shell per
//! directory that stops the server and removes the directory when the test process goes away,
//! and a sweep of old leftovers whose owner and server are both gone, run before every new
//! directory of the same kind is made.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use nix::sys::signal::Signal;

use crate::util::{self, Reaper, pid_alive};

/// Leftover directories younger than this are never swept: they may be mid-creation.
const SWEEP_MIN_AGE: Duration = Duration::from_secs(60);
/// How long a server gets after the harsher signal before it is killed.
const HARSHER_TIMEOUT: Duration = Duration::from_secs(5);

/// What differs between the kinds of server run in such a directory.
#[derive(Debug)]
pub(crate) struct Kind {
    /// Start of the directory names; also what the sweep looks for. Ends with `-`.
    pub(crate) dir_prefix: &'static str,
    /// The server program, for messages.
    pub(crate) program: &'static str,
    /// Name of the log file in the directory.
    pub(crate) log_file: &'static str,
    /// The signal for an orderly shutdown, and how long the server gets to obey it.
    pub(crate) stop_signal: Signal,
    pub(crate) stop_timeout: Duration,
    /// Tried for [`HARSHER_TIMEOUT`] before `SIGKILL`, for servers where a kill would leave a
    /// mess behind (PostgreSQL's backends would outlive a killed postmaster; `SIGQUIT` takes
    /// them down too).
    pub(crate) harsher_signal: Option<Signal>,
    /// Further pid files (relative to the directory) whose live process means "still in use".
    pub(crate) extra_pid_files: &'static [&'static str],
}

/// One temporary directory, its reaper, and the server process while it runs.
#[derive(Debug)]
pub(crate) struct ServerDir {
    kind: &'static Kind,
    path: PathBuf,
    /// uid and gid the server runs as, when not as the current user.
    owner: Option<(u32, u32)>,
    server: Option<Child>,
    reaper: Reaper,
}

impl ServerDir {
    /// Sweeps old leftovers of this kind, then makes a new directory (mode 700, owned by
    /// `owner` if given) and its reaper.
    pub(crate) fn create(kind: &'static Kind, owner: Option<(u32, u32)>) -> anyhow::Result<Self> {
        let tmp = std::env::temp_dir();
        sweep_leftovers(&tmp, kind);
        let path = tmp.join(format!(
            "{}{}-{}",
            kind.dir_prefix,
            std::process::id(),
            util::random_hex(8)
        ));
        fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        // The reaper goes first, so that from here on the directory is removed even if this
        // function fails or the process dies.
        let harsher = kind.harsher_signal.map(signal_name).unwrap_or_default();
        let ticks = (kind.stop_timeout.as_millis() / 100).to_string();
        let reaper = match Reaper::spawn(
            REAPER_SCRIPT,
            [
                path.as_os_str(),
                signal_name(kind.stop_signal).as_ref(),
                harsher.as_ref(),
                ticks.as_ref(),
            ],
        ) {
            Ok(reaper) => reaper,
            Err(e) => {
                let _ = fs::remove_dir_all(&path);
                return Err(e);
            }
        };
        // From here on `Drop` removes the directory on every error path.
        let dir = Self {
            kind,
            path,
            owner,
            server: None,
            reaper,
        };
        fs::set_permissions(&dir.path, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod 700 {}", dir.path.display()))?;
        let owner_pid = dir.path.join("owner.pid");
        fs::write(&owner_pid, format!("{}\n", std::process::id())).context("writing owner.pid")?;
        for path in [dir.path.as_path(), &owner_pid] {
            dir.chown(path)?;
        }
        Ok(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Gives `path` to the user the server runs as (a no-op when it runs as the current user).
    pub(crate) fn chown(&self, path: &Path) -> anyhow::Result<()> {
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .with_context(|| format!("chown {} to uid {uid}", path.display()))?;
        }
        Ok(())
    }

    /// Spawns `command` as the directory's server and waits until `probe` succeeds, for at most
    /// `timeout`. `what` describes the server for the error message ("postgres on
    /// 127.0.0.1:5432"), which also carries the server's log.
    ///
    /// The command gets the directory as working directory, the log file as stdout and
    /// stderr, and a process group of its own, so a terminal Ctrl-C reaches only the test
    /// process and the orderly cleanup follows from there.
    pub(crate) fn start(
        &mut self,
        mut command: Command,
        what: &str,
        timeout: Duration,
        probe: impl FnMut() -> anyhow::Result<()> + Send,
    ) -> anyhow::Result<()> {
        anyhow::ensure!(self.server.is_none(), "the server is already running");
        let log_path = self.path.join(self.kind.log_file);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        // Owned by the server's user, like everything else in the directory.
        let _ = self.chown(&log_path);
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let mut child = command
            .current_dir(&self.path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("duplicating the log file handle")?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("spawning {}", Path::new(command.get_program()).display()))?;

        let pid = child.id();
        if let Err(e) = write_atomically(&self.path.join("server.pid"), &format!("{pid}\n")) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e.context("writing server.pid"));
        }

        let program = self.kind.program;
        let mut exited = None;
        let ready = util::wait_until_ready(program, timeout, probe, || match child.try_wait() {
            Ok(Some(status)) => {
                exited = Some(status);
                bail!("{program} exited during startup ({status})")
            }
            Ok(None) => Ok(()),
            Err(e) => Err(anyhow::Error::new(e).context(format!("checking the {program} process"))),
        });
        match ready {
            Ok(()) => {
                self.server = Some(child);
                Ok(())
            }
            Err(e) => {
                if exited.is_none() {
                    let _ = stop_child(&mut child, self.kind);
                }
                let _ = fs::remove_file(self.path.join("server.pid"));
                Err(e.context(format!(
                    "starting {what}; its log:\n{}",
                    log_since(&log_path, log_start)
                )))
            }
        }
    }

    pub(crate) fn is_running(&self) -> bool {
        self.server.is_some()
    }

    /// Orderly shutdown with the kind's stop signal, escalating if it is ignored; the directory
    /// stays. Stopping a stopped server is a no-op.
    pub(crate) fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.server.take() else {
            return Ok(());
        };
        let result = stop_child(&mut child, self.kind);
        let _ = fs::remove_file(self.path.join("server.pid"));
        result
    }
}

impl Drop for ServerDir {
    fn drop(&mut self) {
        let _ = self.stop();
        let _ = fs::remove_dir_all(&self.path);
        // Also lets the reaper run now (it finds nothing left to do) and reaps it.
        self.reaper.finish(Duration::from_secs(10));
    }
}

/// `INT` for `SIGINT`: the spelling `kill -s` takes.
fn signal_name(signal: Signal) -> &'static str {
    let name = signal.as_str();
    name.strip_prefix("SIG").unwrap_or(name)
}

/// The reaper: waits for EOF on stdin (= the test process is gone, or dropped the directory),
/// then stops the server named in `server.pid` and removes the directory.
///
/// Arguments: `$1` the directory, `$2` the stop signal, `$3` a harsher signal or empty, `$4`
/// how many tenths of a second the server gets before the harsher signal; 5 s after that it is
/// killed. The `alive` check also treats a zombie as dead: after the test process dies, the
/// server is reparented, and until its new parent reaps it `kill -0` would still succeed.
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
    kill -s "$2" "$pid" 2>/dev/null
    i=0
    while alive "$pid"; do
        i=$((i + 1))
        if [ "$i" -eq "$4" ] && [ -n "$3" ]; then kill -s "$3" "$pid" 2>/dev/null; fi
        if [ "$i" -ge $(($4 + 50)) ]; then kill -s KILL "$pid" 2>/dev/null; break; fi
        sleep 0.1
    done
fi
rm -rf "$1"
"#;

/// Removes directories of this kind left behind by test processes that died without their
/// reaper cleaning up: older than [`SWEEP_MIN_AGE`], owner process gone, no live server.
/// Best effort: errors (e.g. another user's directory) are ignored.
fn sweep_leftovers(tmp: &Path, kind: &Kind) {
    let Ok(entries) = fs::read_dir(tmp) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let is_ours = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(kind.dir_prefix));
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
        let alive = |file: &str| read_pid(&dir.join(file)).is_some_and(pid_alive);
        if ["owner.pid", "server.pid"]
            .iter()
            .chain(kind.extra_pid_files)
            .any(|file| alive(file))
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

/// Sends the stop signal and waits; escalates to the harsher signal, if any, and finally
/// `SIGKILL`. Stopping is reported as an error when it needed more than the stop signal.
fn stop_child(child: &mut Child, kind: &Kind) -> anyhow::Result<()> {
    use nix::sys::signal::kill;
    let program = kind.program;
    let pid = nix::unistd::Pid::from_raw(
        i32::try_from(child.id())
            .with_context(|| format!("{program} pid does not fit in pid_t"))?,
    );
    if child.try_wait()?.is_some() {
        return Ok(());
    }
    let _ = kill(pid, kind.stop_signal);
    if wait_for_exit(child, kind.stop_timeout)? {
        return Ok(());
    }
    let stop_signal = kind.stop_signal;
    let stop_timeout = kind.stop_timeout;
    if let Some(harsher) = kind.harsher_signal {
        let _ = kill(pid, harsher);
        if wait_for_exit(child, HARSHER_TIMEOUT)? {
            bail!(
                "{program} ignored {stop_signal} for {stop_timeout:?}; it was stopped with {harsher}"
            );
        }
    }
    child.kill().with_context(|| format!("killing {program}"))?;
    child
        .wait()
        .with_context(|| format!("waiting for the killed {program}"))?;
    bail!("{program} did not stop on {stop_signal} within {stop_timeout:?}; it was killed")
}

fn wait_for_exit(child: &mut Child, timeout: Duration) -> anyhow::Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        if child
            .try_wait()
            .context("waiting for the server process")?
            .is_some()
        {
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
    fn log_tail_starts_at_offset() {
        let path = std::env::temp_dir().join(format!("leadline-test-log-{}", util::random_hex(8)));
        fs::write(&path, "old line\nnew 1\nnew 2\n").expect("write");
        let tail = log_since(&path, "old line\n".len() as u64);
        let _ = fs::remove_file(&path);
        assert_eq!(tail, "new 1\nnew 2");
    }

    #[test]
    fn signal_names_as_kill_takes_them() {
        assert_eq!(signal_name(Signal::SIGINT), "INT");
        assert_eq!(signal_name(Signal::SIGTERM), "TERM");
    }
}

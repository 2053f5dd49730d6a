//! What the benchmark runs on: the external tools it needs, the processes
//! it starts (`leadline serve`, the trivial JSON server), the machine it
//! describes, and the log of every command it ran.

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use nix::{sys::signal, unistd::Pid};

use super::load::{self, Request};

/// The external programs the benchmark drives.
#[derive(Debug, Clone)]
pub struct Tools {
    /// `pgbench` (from the PostgreSQL server packages).
    pub pgbench: PathBuf,
    /// `postgres`, for its version.
    pub postgres: PathBuf,
    /// `redis-server`, for its version (the server itself is started by
    /// leadline-testsupport, which finds it the same way).
    pub redis_server: PathBuf,
    /// `redis-benchmark` (from the redis-tools package).
    pub redis_benchmark: PathBuf,
}

impl Tools {
    /// Finds every tool, or says what to install.
    ///
    /// # Errors
    /// One message listing every missing tool and the package that has it.
    pub fn find() -> anyhow::Result<Self> {
        let pg_bin = pg_bindir();
        let in_pg = |name: &str| {
            pg_bin
                .as_ref()
                .map(|dir| dir.join(name))
                .filter(|p| p.is_file())
                .or_else(|| on_path(name))
        };
        let pgbench = in_pg("pgbench");
        let postgres = in_pg("postgres");
        let redis_server = on_path("redis-server");
        let redis_benchmark = on_path("redis-benchmark");
        let mut missing = Vec::new();
        if postgres.is_none() {
            missing.push("the PostgreSQL server binaries (apt-get install postgresql)");
        }
        if pgbench.is_none() {
            missing.push("pgbench (apt-get install postgresql-contrib, or postgresql)");
        }
        if redis_server.is_none() {
            missing.push("redis-server (apt-get install redis-server)");
        }
        if redis_benchmark.is_none() {
            missing.push("redis-benchmark (apt-get install redis-tools, or redis-server)");
        }
        match (pgbench, postgres, redis_server, redis_benchmark) {
            (Some(pgbench), Some(postgres), Some(redis_server), Some(redis_benchmark)) => {
                Ok(Self {
                    pgbench,
                    postgres,
                    redis_server,
                    redis_benchmark,
                })
            }
            _ => bail!(
                "the benchmark needs tools that are not installed:\n  - {}\nInstall them (as root: apt-get update && apt-get install -y postgresql redis-server) and run it again.",
                missing.join("\n  - ")
            ),
        }
    }
}

/// `PG_BIN_DIR`, else the highest `/usr/lib/postgresql/*/bin`, as
/// leadline-testsupport looks for its server binaries.
fn pg_bindir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN_DIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    let mut best: Option<(Vec<u32>, PathBuf)> = None;
    for entry in fs::read_dir("/usr/lib/postgresql").ok()?.flatten() {
        let Some(version) = entry.file_name().to_str().and_then(|v| {
            v.split('.')
                .map(|p| p.parse::<u32>().ok())
                .collect::<Option<Vec<_>>>()
        }) else {
            continue;
        };
        let bin = entry.path().join("bin");
        if bin.join("postgres").is_file() && best.as_ref().is_none_or(|(b, _)| version > *b) {
            best = Some((version, bin));
        }
    }
    best.map(|(_, bin)| bin)
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin".into(), "/usr/local/bin".into()])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Every command the benchmark ran, in order, for the report.
#[derive(Debug, Default)]
pub struct CommandLog {
    lines: Vec<String>,
}

impl CommandLog {
    /// Records a command line (with the environment it was given).
    pub fn record(&mut self, command: &Command) {
        let mut line = String::new();
        for (key, value) in command.get_envs() {
            if let Some(value) = value {
                line.push_str(&format!(
                    "{}={} ",
                    key.to_string_lossy(),
                    shell_quote(&value.to_string_lossy())
                ));
            }
        }
        line.push_str(&shell_quote(&command.get_program().to_string_lossy()));
        for arg in command.get_args() {
            line.push(' ');
            line.push_str(&shell_quote(&arg.to_string_lossy()));
        }
        self.lines.push(line);
    }

    /// Records a step that is not a command (SQL, an HTTP load run).
    pub fn note(&mut self, line: impl Into<String>) {
        self.lines.push(line.into());
    }

    /// Everything recorded.
    #[must_use]
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// As [`Commands::run`], and returns the child's peak memory, read from
    /// `/proc` until it exits (polled every 50 ms, so the last reading is
    /// within that of its end).
    ///
    /// # Errors
    /// Spawn failures and non-zero exits.
    pub fn run_peak_rss(&mut self, command: &mut Command) -> anyhow::Result<PeakMemory> {
        self.record(command);
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {}", command.get_program().to_string_lossy()))?;
        // Drained as it comes: a child whose stderr pipe fills blocks on its
        // next log line (a run stalled 7 minutes that way).
        let drain = child.stderr.take().map(|mut pipe| {
            std::thread::spawn(move || {
                use std::io::Read as _;
                let mut text = String::new();
                let _ = pipe.read_to_string(&mut text);
                text
            })
        });
        let status_file = format!("/proc/{}/status", child.id());
        let mut peak = PeakMemory::default();
        let status = loop {
            if let Ok(text) = std::fs::read_to_string(&status_file) {
                peak.observe(&text);
            }
            if let Some(status) = child.try_wait()? {
                break status;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let stderr = drain
            .and_then(|thread| thread.join().ok())
            .unwrap_or_default();
        if !status.success() {
            bail!(
                "{} failed ({status}):\n{stderr}",
                command.get_program().to_string_lossy()
            );
        }
        Ok(peak)
    }

    /// Runs `command` to completion, recording it; fails on a non-zero exit
    /// with its output.
    ///
    /// # Errors
    /// Spawn failures and non-zero exits.
    pub fn run(&mut self, command: &mut Command) -> anyhow::Result<String> {
        self.record(command);
        let output = command
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", command.get_program().to_string_lossy()))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            bail!(
                "{} failed ({}):\n{}{}",
                command.get_program().to_string_lossy(),
                output.status,
                stdout,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(stdout)
    }
}

fn shell_quote(text: &str) -> String {
    if !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c))
    {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// A free TCP port on 127.0.0.1 (free when asked; the server binds it next).
///
/// # Errors
/// When no port can be bound.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// A server process the benchmark started; stopped (SIGTERM, then SIGKILL
/// after 10 s) when dropped, so an error path leaves nothing running.
#[derive(Debug)]
pub struct Process {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its stdout and stderr.
    pub log: PathBuf,
    name: String,
}

impl Process {
    /// Starts `command` with its output in `log` and waits until
    /// `GET ready_path` answers 200 on `addr` (at most 120 s).
    ///
    /// # Errors
    /// Spawn failures, or the process exited or never became ready (with
    /// the end of its log).
    pub async fn start(
        name: &str,
        command: &mut Command,
        addr: SocketAddr,
        log: PathBuf,
        ready_path: &str,
        commands: &mut CommandLog,
    ) -> anyhow::Result<Self> {
        commands.record(command);
        let out = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let mut process = Self {
            child,
            addr,
            log,
            name: name.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = process.child.try_wait()? {
                bail!(
                    "{name} exited ({status}) before it was ready:\n{}",
                    process.log_tail()
                );
            }
            let probe = load::once(addr, Request::get(ready_path.to_owned(), None)).await;
            if matches!(probe, Ok((status, _)) if status.is_success()) {
                return Ok(process);
            }
            if Instant::now() > deadline {
                bail!(
                    "{name} was not ready on {addr} within 120 s:\n{}",
                    process.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Its process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size in KiB, from `/proc/<pid>/status`.
    ///
    /// # Errors
    /// When the process is gone or the file has no `VmRSS`.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .context("no VmRSS in /proc/<pid>/status")
    }

    /// The last lines of its log.
    #[must_use]
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Stops it: SIGTERM, then SIGKILL if it is still running after 10 s.
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = signal::kill(Pid::from_raw(pid), signal::Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "bench: {} did not stop within 10 s; killing it. Its last lines:\n{}",
            self.name,
            self.log_tail()
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The machine and software versions, for the report.
#[derive(Debug, Clone, Default)]
pub struct Machine {
    /// `nproc`.
    pub cores: usize,
    /// The CPU model, from `/proc/cpuinfo`.
    pub cpu: String,
    /// `MemTotal` from `/proc/meminfo`.
    pub memory: String,
    /// `uname -srm`.
    pub kernel: String,
    /// `rustc --version`.
    pub rustc: String,
    /// `postgres --version`.
    pub postgres: String,
    /// `pgbench --version`.
    pub pgbench: String,
    /// `redis-server --version`.
    pub redis: String,
    /// The commit benchmarked, and whether the tree had local changes.
    pub commit: String,
}

impl Machine {
    /// Describes this machine; unknown facts read "unknown".
    #[must_use]
    pub fn describe(tools: &Tools, workspace: &Path) -> Self {
        let first_line = |program: &Path, args: &[&str]| {
            Command::new(program)
                .args(args)
                .current_dir(workspace)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .next()
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| "unknown".to_owned())
        };
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or_else(
                || "unknown".to_owned(),
                |kib| format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0),
            );
        let dirty = Command::new("git")
            .args(["status", "--porcelain", "--untracked-files=no"])
            .current_dir(workspace)
            .output()
            .is_ok_and(|o| !o.stdout.is_empty());
        Self {
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            cpu: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
                .unwrap_or_else(|| "unknown".to_owned()),
            memory,
            kernel: first_line(Path::new("uname"), &["-srm"]),
            rustc: first_line(Path::new("rustc"), &["--version"]),
            postgres: first_line(&tools.postgres, &["--version"]),
            pgbench: first_line(&tools.pgbench, &["--version"]),
            redis: first_line(&tools.redis_server, &["--version"]),
            commit: format!(
                "{}{}",
                first_line(Path::new("git"), &["rev-parse", "--short=12", "HEAD"]),
                if dirty { " (with local changes)" } else { "" }
            ),
        }
    }
}

/// `GET /v1/leads/export` with `bearer` from the service at `addr`, read to
/// its end; returns the data rows (lines after the header).
///
/// # Errors
/// The connection's, or a status other than 200.
pub async fn export_lines(addr: std::net::SocketAddr, bearer: &str) -> anyhow::Result<u64> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request =
        format!("GET /v1/leads/export HTTP/1.0\r\nHost: {addr}\r\nAuthorization: {bearer}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut body = Vec::new();
    stream.read_to_end(&mut body).await?;
    let head_end = body
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no response head")?;
    let head = String::from_utf8_lossy(&body[..head_end]);
    anyhow::ensure!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "export answered {head}"
    );
    let lines = body[head_end + 4..].iter().filter(|&&b| b == b'\n').count() as u64;
    Ok(lines.saturating_sub(1))
}

/// The machine's CPU time so far, in clock ticks, from `/proc`: in all
/// (what the host gave this machine), idle, and per program (a process's `comm`, its threads included).
#[derive(Debug, Clone, Default)]
pub struct CpuTicks {
    total: u64,
    idle: u64,
    by_program: std::collections::HashMap<String, u64>,
}

impl CpuTicks {
    /// Reads them now. Processes that end before the next reading drop
    /// out of it; the scenarios' programs (PostgreSQL's pooled backends,
    /// the service, the load generator) live through a run.
    #[must_use]
    pub fn now() -> Self {
        let mut ticks = Self::default();
        if let Some(line) = fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| s.lines().next().map(str::to_owned))
        {
            let fields: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|f| f.parse().ok())
                .collect();
            // user, nice, system, idle, iowait, irq, softirq: not steal
            // (time the host gave to others) nor guest (counted in user).
            ticks.total = fields.iter().take(7).sum();
            // idle and iowait
            ticks.idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
        }
        let Ok(entries) = fs::read_dir("/proc") else {
            return ticks;
        };
        for entry in entries.flatten() {
            if !entry
                .file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
            {
                continue;
            }
            let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // `pid (comm) state ppid …`: comm may hold spaces, so split at
            // the last ')'; utime and stime are fields 14 and 15.
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let comm = stat[open + 1..close].to_owned();
            let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
            let used = [11, 12]
                .iter()
                .filter_map(|&i| rest.get(i).and_then(|f| f.parse::<u64>().ok()))
                .sum::<u64>();
            *ticks.by_program.entry(comm).or_default() += used;
        }
        ticks
    }

    /// The share of the machine's CPU time between `self` and `later`:
    /// busy in all, and each of `programs`, in per cent.
    #[must_use]
    pub fn shares(&self, later: &Self, programs: &[&str]) -> (f64, Vec<f64>) {
        let total = later.total.saturating_sub(self.total).max(1) as f64;
        let busy = total - later.idle.saturating_sub(self.idle) as f64;
        let of = |name: &str| {
            let before = self.by_program.get(name).copied().unwrap_or(0);
            let after = later.by_program.get(name).copied().unwrap_or(0);
            after.saturating_sub(before) as f64 * 100.0 / total
        };
        (
            busy * 100.0 / total,
            programs.iter().map(|p| of(p)).collect(),
        )
    }
}

/// A process's peak memory, KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeakMemory {
    /// Resident set (`VmHWM`): everything in RAM, including the pages of
    /// files it maps (SQLite's memory-mapped database), which the kernel
    /// can drop and read again.
    pub resident_kib: u64,
    /// The largest anonymous resident set seen (`RssAnon`): the process's
    /// own heap and stacks, which only it can free.
    pub anonymous_kib: u64,
}

impl PeakMemory {
    /// Folds in one reading of `/proc/<pid>/status`.
    fn observe(&mut self, status: &str) {
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        };
        self.resident_kib = self.resident_kib.max(field("VmHWM:"));
        self.anonymous_kib = self.anonymous_kib.max(field("RssAnon:"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_keeps_the_largest_of_each_reading() {
        let mut peak = PeakMemory::default();
        peak.observe("Name:\tleadline\nVmHWM:\t  2048 kB\nRssAnon:\t   900 kB\n");
        peak.observe("VmHWM:\t  4096 kB\nRssAnon:\t   500 kB\n");
        peak.observe("gone");
        assert_eq!(
            peak,
            PeakMemory {
                resident_kib: 4096,
                anonymous_kib: 900
            }
        );
    }

    /// Shares are of the CPU time between two readings, per program; a
    /// program missing from a reading counts as idle.
    #[test]
    fn cpu_shares_are_of_the_time_between_readings() {
        let before = CpuTicks {
            total: 1_000,
            idle: 400,
            by_program: [("postgres".to_owned(), 100), ("leadline".to_owned(), 50)].into(),
        };
        let after = CpuTicks {
            total: 1_200,
            idle: 420,
            by_program: [("postgres".to_owned(), 200), ("leadline".to_owned(), 110)].into(),
        };
        let (busy, shares) = before.shares(&after, &["postgres", "leadline", "redis-server"]);
        assert!((busy - 90.0).abs() < 1e-9, "{busy}");
        assert_eq!(shares, vec![50.0, 30.0, 0.0]);
    }

    /// This machine's own reading has a total and finds this process.
    #[test]
    fn a_reading_of_this_machine_sees_this_process() {
        let now = CpuTicks::now();
        assert!(now.total > 0 && now.idle <= now.total);
        assert!(!now.by_program.is_empty());
    }
}

//! What the process-level tests share: a `leadline` child process whose
//! log lines can be awaited, killed (SIGKILL) and reaped when dropped.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

/// The `leadline` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_leadline");

/// A running `leadline` process and its stderr lines.
pub struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    /// Starts `command` (already given its environment and arguments) with
    /// stderr piped and read line by line on a thread.
    pub fn start(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Self { child, lines }
    }

    /// Waits for a log line containing `needle`, returning everything seen.
    ///
    /// # Panics
    /// When no such line comes within `within`.
    pub fn wait_for_line(&self, needle: &str, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    seen.push(line);
                    if found {
                        return seen;
                    }
                }
                Err(_) => panic!(
                    "no log line with {needle:?} within {within:?}; seen:\n{}",
                    seen.join("\n")
                ),
            }
        }
    }
}

/// Applies every migration to `db` with the binary itself, as an operator
/// would before starting it.
///
/// # Panics
/// When `leadline migrate up` fails.
pub fn migrate_up(db: &str) {
    let status = Command::new(BIN)
        .env_clear()
        .env("DATABASE_URL", db)
        .args(["migrate", "up"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "leadline migrate up failed on {db}");
}

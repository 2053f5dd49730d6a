//! Small helpers shared by the providers of every kind of server.

use std::any::Any;
use std::ffi::OsStr;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// `n` random lowercase hex digits.
pub(crate) fn random_hex(n: usize) -> String {
    let mut out = String::with_capacity(n + 16);
    while out.len() < n {
        out.push_str(&format!("{:016x}", rand::random::<u64>()));
    }
    out.truncate(n);
    out
}

/// Quotes an SQL identifier (`"…"`, with embedded quotes doubled).
pub(crate) fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// A TCP port on 127.0.0.1 that was free a moment ago: bind to port 0, read the port the kernel
/// picked, and release it for the server. Another process may grab it in between; callers that
/// can, retry on "address already in use".
pub(crate) fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
    Ok(listener
        .local_addr()
        .context("reading the bound port")?
        .port())
}

/// Whether a process with this pid exists (`kill(pid, 0)`; `EPERM` means it exists but is not
/// ours to signal).
pub(crate) fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(errno) => errno == nix::errno::Errno::EPERM,
    }
}

/// Runs `f` on a new named thread and waits for it. Used for blocking work that must not run
/// inside the caller's tokio runtime (building and blocking on a runtime there panics, and
/// testcontainers' `SyncRunner` does exactly that). A panic in `f` comes back as `Err(message)`.
pub(crate) fn on_own_thread<T: Send>(
    name: &str,
    f: impl FnOnce() -> T + Send,
) -> Result<T, String> {
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn_scoped(scope, f)
            .map_err(|e| format!("could not spawn thread {name}: {e}"))?;
        handle.join().map_err(|payload| panic_message(&*payload))
    })
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_owned()
    }
}

/// The value of a process-wide `cell`, computed by `start` on its own thread on first use.
///
/// A failure is kept too, so that every later caller panics at once with the same message
/// instead of retrying a slow, doomed startup.
///
/// # Panics
///
/// With the message of the (first and only) failed `start`.
#[track_caller]
pub(crate) fn shared<T: Send + Sync>(
    cell: &'static OnceLock<Result<T, String>>,
    thread_name: &str,
    start: impl FnOnce() -> Result<T, String> + Send,
) -> &'static T {
    let shared = cell.get_or_init(|| {
        on_own_thread(thread_name, start)
            .unwrap_or_else(|panic| Err(format!("{thread_name} panicked: {panic}")))
    });
    match shared {
        Ok(value) => value,
        Err(message) => panic!("{message}"),
    }
}

/// Polls `probe` until it succeeds, for at most `timeout`; `what` names the server in the error
/// ("PostgreSQL", "Redis").
///
/// `still_starting` is called between attempts; it returns an error when the server can no
/// longer come up (e.g. its process exited), which ends the wait at once with that error.
/// Everything runs on a thread of its own, so a probe may build and block on a private runtime
/// even when the caller is inside a tokio runtime.
pub(crate) fn wait_until_ready(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> anyhow::Result<()> + Send,
    mut still_starting: impl FnMut() -> anyhow::Result<()> + Send,
) -> anyhow::Result<()> {
    on_own_thread("leadline-wait", move || {
        let deadline = Instant::now() + timeout;
        // Short at first (a local Redis answers within milliseconds), then at most 50 ms apart.
        let mut pause = Duration::from_millis(5);
        loop {
            let error = match probe() {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            still_starting()?;
            if Instant::now() >= deadline {
                return Err(error.context(format!("{what} did not answer within {timeout:?}")));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    })
    .map_err(|panic| anyhow::anyhow!("waiting for {what} panicked: {panic}"))?
}

/// A cleanup shell that waits for EOF on its stdin and then runs the rest of its script.
///
/// Its stdin is a pipe whose only write end this process keeps (std creates pipes with
/// `O_CLOEXEC`, so children that tests spawn never inherit it). The write end closes when
/// [`Reaper::finish`] is called or when this process ends in any way, even by `SIGKILL`; that is
/// what makes the cleanup survive panics and killed test runs.
#[derive(Debug)]
pub(crate) struct Reaper {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Reaper {
    /// Starts `sh -c <script> leadline-reaper <args…>`. `script` must begin by reading stdin
    /// (`read _ignored`); `INT` and `HUP` are ignored before it runs.
    pub(crate) fn spawn(
        script: &str,
        args: impl IntoIterator<Item = impl AsRef<OsStr>>,
    ) -> anyhow::Result<Self> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("trap '' INT HUP\n{script}"))
            .arg("leadline-reaper")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Own process group: a Ctrl-C in the terminal must not kill the reaper before the
            // test process is gone and the cleanup can run.
            .process_group(0)
            .spawn()
            .context("spawning the cleanup shell (sh)")?;
        let stdin = child.stdin.take();
        Ok(Self { child, stdin })
    }

    /// Triggers the cleanup now and reaps the shell, waiting at most `timeout` for it.
    pub(crate) fn finish(&mut self, timeout: Duration) {
        drop(self.stdin.take());
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                _ => return,
            }
        }
    }
}

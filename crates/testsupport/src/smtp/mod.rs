//! A real SMTP server for one test: [aiosmtpd] (from PyPI) with the small
//! handler in `server.py`, run by `python3` in a [`ServerDir`] like the
//! local PostgreSQL and Redis servers (so the reaper removes it when the
//! test process dies).
//!
//! It keeps every accepted message for the test to read
//! ([`SmtpServer::messages`]), and scripts its answers by recipient:
//! `tempfail…@` gets a 451 at RCPT, `reject…@` a 550, and `hold…@` is
//! stored and then kept waiting for the 250 until [`SmtpServer::release`].
//! With [`SmtpOptions::tls`] it offers and requires STARTTLS with a
//! certificate for `127.0.0.1` signed by a CA made up for it
//! ([`SmtpServer::ca_file`]); with [`SmtpOptions::auth`] it requires AUTH.
//!
//! Without `python3` and aiosmtpd the test panics saying how to install
//! them (`python3 -m pip install aiosmtpd`); it never skips.
//!
//! [aiosmtpd]: https://aiosmtpd.aio-libs.org/

use std::{
    fs,
    io::{BufRead as _, BufReader, Read as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use nix::sys::signal::Signal;

use crate::{
    postgres::write_certificates,
    server_dir::{Kind, ServerDir},
    util,
};

const SCRIPT: &str = include_str!("server.py");

static KIND: Kind = Kind {
    dir_prefix: "leadline-smtp-",
    program: "aiosmtpd",
    log_file: "smtp.log",
    stop_signal: Signal::SIGTERM,
    stop_timeout: Duration::from_secs(10),
    harsher_signal: None,
    extra_pid_files: &[],
};

/// How the server is set up.
#[derive(Debug, Clone, Default)]
pub struct SmtpOptions {
    /// Offer and require STARTTLS.
    pub tls: bool,
    /// Require AUTH with this user and password.
    pub auth: Option<(String, String)>,
    /// Accept every message and keep none (`messages` stays empty): a sink
    /// for throughput runs, without the stored copy's fsync per message.
    pub discard: bool,
}

/// One message the server accepted.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ReceivedMessage {
    /// The envelope sender.
    pub mail_from: String,
    /// The envelope recipients.
    pub rcpt_tos: Vec<String>,
    /// The message as received (headers and body).
    pub data: String,
}

impl ReceivedMessage {
    /// The first header `name` (case-blind), unfolded.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self
            .data
            .split("\r\n\r\n")
            .next()
            .unwrap_or_default()
            .split("\n\n")
            .next()
            .unwrap_or_default();
        let mut value: Option<String> = None;
        for line in head.lines() {
            if let Some(v) = value.as_mut() {
                if line.starts_with([' ', '\t']) {
                    v.push(' ');
                    v.push_str(line.trim());
                    continue;
                }
                return value;
            }
            if let Some((n, v)) = line.split_once(':')
                && n.eq_ignore_ascii_case(name)
            {
                value = Some(v.trim().to_owned());
            }
        }
        value
    }
}

/// A running SMTP server, stopped and removed on drop.
#[derive(Debug)]
pub struct SmtpServer {
    dir: ServerDir,
    port: u16,
    options: SmtpOptions,
    ca: Option<PathBuf>,
}

/// Starts a server for one test.
///
/// # Panics
/// Without `python3` and aiosmtpd, or when the server does not come up;
/// the message says how to fix it.
#[must_use]
pub fn smtp_server(options: SmtpOptions) -> SmtpServer {
    match SmtpServer::start(options) {
        Ok(server) => server,
        Err(e) => panic!(
            "an SMTP server is needed for this test: install python3 and aiosmtpd \
             (`python3 -m pip install aiosmtpd==1.4.6`; .ci/run does) — see README.md.\n{e:#}"
        ),
    }
}

impl SmtpServer {
    /// Starts a server, saying what is missing when it cannot (for callers
    /// that report rather than panic, such as the benchmark).
    ///
    /// # Errors
    /// Without `python3` and aiosmtpd, or when the server does not come up.
    pub fn start(options: SmtpOptions) -> anyhow::Result<Self> {
        let check = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .output()
            .context("running python3")?;
        anyhow::ensure!(
            check.status.success(),
            "python3 cannot import aiosmtpd: {}",
            String::from_utf8_lossy(&check.stderr).trim()
        );
        let mut dir = ServerDir::create(&KIND, None)?;
        let script = dir.path().join("server.py");
        fs::write(&script, SCRIPT).context("writing server.py")?;
        let certs = if options.tls {
            Some(write_certificates(&dir, crate::ServerCert::Localhost)?)
        } else {
            None
        };
        let mut attempt = 0;
        let port = loop {
            attempt += 1;
            let port = util::free_port()?;
            let mut command = Command::new("python3");
            command
                .arg(&script)
                .args(["--port", &port.to_string()])
                .arg("--dir")
                .arg(dir.path());
            if let Some(certs) = &certs {
                command
                    .arg("--tls-cert")
                    .arg(&certs.server_cert)
                    .arg("--tls-key")
                    .arg(&certs.server_key);
            }
            if let Some((user, password)) = &options.auth {
                command.args(["--auth", &format!("{user}:{password}")]);
            }
            if options.discard {
                command.arg("--discard");
            }
            let probe = move || banner(port);
            match dir.start(
                command,
                &format!("aiosmtpd on 127.0.0.1:{port}"),
                Duration::from_secs(30),
                probe,
            ) {
                Ok(()) => break port,
                Err(e) if attempt < 3 && format!("{e:#}").contains("in use") => {}
                Err(e) => return Err(e),
            }
        };
        Ok(Self {
            dir,
            port,
            options,
            ca: certs.map(|c| c.ca),
        })
    }

    /// The URL leadline's `smtp.url` takes: credentials when AUTH is on,
    /// `tls=required` with TLS, else `tls=none`.
    #[must_use]
    pub fn url(&self) -> String {
        let auth = self
            .options
            .auth
            .as_ref()
            .map(|(u, p)| format!("{u}:{p}@"))
            .unwrap_or_default();
        let tls = if self.options.tls { "required" } else { "none" };
        format!("smtp://{auth}127.0.0.1:{}?tls={tls}", self.port)
    }

    /// The port it listens on (127.0.0.1).
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The CA that signed its certificate (with [`SmtpOptions::tls`]).
    #[must_use]
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca.as_deref()
    }

    /// Every message accepted so far, in order.
    ///
    /// # Panics
    /// When the server's record cannot be read.
    #[must_use]
    pub fn messages(&self) -> Vec<ReceivedMessage> {
        let path = self.dir.path().join("messages.jsonl");
        let Ok(file) = fs::File::open(&path) else {
            return Vec::new();
        };
        BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            // A line still being written is not a message yet.
            .filter_map(|line| serde_json::from_str(&line).ok())
            .collect()
    }

    /// Waits until at least `n` messages arrived, for at most `timeout`.
    ///
    /// # Panics
    /// When they do not arrive in time.
    #[must_use]
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<ReceivedMessage> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.messages();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} messages within {timeout:?}, got {}: {got:#?}\nserver log:\n{}",
                got.len(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Lets replies to `hold…@` messages go out (this one and all later).
    ///
    /// # Panics
    /// When the file cannot be written.
    pub fn release(&self) {
        fs::write(self.dir.path().join("release"), b"go\n").expect("writing the release file");
    }

    /// The server's log so far.
    #[must_use]
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join(KIND.log_file)).unwrap_or_default()
    }

    /// Stops the server (connections are then refused).
    ///
    /// # Errors
    /// When it does not stop.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        self.dir.stop()
    }
}

/// Connects and reads the server's `220` greeting.
fn banner(port: u16) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut greeting = [0u8; 3];
    stream.read_exact(&mut greeting)?;
    anyhow::ensure!(&greeting == b"220", "unexpected greeting {greeting:?}");
    Ok(())
}

//! Servers in Docker containers, through testcontainers' blocking `SyncRunner`.
//!
//! The sync API blocks on a tokio runtime of its own, which panics inside another runtime (and
//! every `#[tokio::test]` has one), so every call into it — including the container's `Drop` —
//! runs on a dedicated thread.

use std::fmt::Debug;
use std::net::{TcpStream, ToSocketAddrs as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use testcontainers::core::IntoContainerPort as _;
use testcontainers::runners::SyncRunner as _;
use testcontainers::{Container, ContainerRequest, Image, ImageExt as _};

use crate::util::{self, Reaper, on_own_thread};

const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// How long a (re)started container may take to answer a real client.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the Docker daemon answers, or why it is considered unreachable.
///
/// `DOCKER_HOST` is honoured when it is a `unix://` or `tcp://` address; otherwise the default
/// socket is tried. Reachable means a connection to it succeeds.
pub(crate) fn daemon_address() -> Result<String, String> {
    let docker_host = std::env::var("DOCKER_HOST").unwrap_or_default();
    if let Some(path) = docker_host.strip_prefix("unix://") {
        return connect_unix(path).map(|()| docker_host.clone());
    }
    if let Some(rest) = docker_host.strip_prefix("tcp://") {
        let authority = rest.split('/').next().unwrap_or(rest);
        let addrs = authority
            .to_socket_addrs()
            .map_err(|e| format!("DOCKER_HOST={docker_host}: cannot resolve: {e}"))?;
        for addr in addrs {
            if TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok() {
                return Ok(docker_host);
            }
        }
        return Err(format!("DOCKER_HOST={docker_host}: connection failed"));
    }
    connect_unix(DEFAULT_SOCKET).map(|()| format!("unix://{DEFAULT_SOCKET}"))
}

fn connect_unix(path: &str) -> Result<(), String> {
    UnixStream::connect(path)
        .map(drop)
        .map_err(|e| format!("cannot connect to {path}: {e}"))
}

/// A kind of server that runs in a container: the image with its settings, and how to tell
/// that the server really answers.
pub(crate) trait Service: Image + 'static {
    /// What a test sees of a started server ([`PgServer`](crate::PgServer),
    /// [`RedisServer`](crate::RedisServer)).
    type Server: Clone + Debug + Send;

    /// The server's port inside the container.
    const PORT: u16;

    /// The image with tag, command and startup timeout, as for `docker run`.
    fn request() -> ContainerRequest<Self>;

    /// `image:tag`, for messages.
    fn image() -> String;

    /// The handle for a server that listens on `host:port`.
    fn server(host: &str, port: u16) -> anyhow::Result<Self::Server>;

    /// Waits until a real client gets an answer: testcontainers only waited for a log line.
    fn wait_until_ready(server: &Self::Server, timeout: Duration) -> anyhow::Result<()>;
}

/// A running container plus the reaper that removes it when the process ends.
#[derive(Debug)]
pub(crate) struct Running<S: Service> {
    server: S::Server,
    /// `None` only transiently while the container is being used on another thread. Boxed: the
    /// handle is large, and moving it between threads should stay cheap.
    container: Option<Box<Container<S>>>,
    reaper: Option<Reaper>,
    /// Tracked for the owned servers' `is_running`.
    running: bool,
}

impl<S: Service> Running<S> {
    /// A shared container: Docker picks the host port.
    pub(crate) fn start_shared() -> anyhow::Result<Self> {
        Self::start(None)
    }

    /// A container owned by one test. The host port is fixed up front: with a Docker-assigned
    /// port, a stopped and restarted container could come back on a different one.
    pub(crate) fn start_owned() -> anyhow::Result<Self> {
        Self::start(Some(util::free_port()?))
    }

    pub(crate) fn server(&self) -> &S::Server {
        &self.server
    }

    fn start(host_port: Option<u16>) -> anyhow::Result<Self> {
        let started = on_own_thread("leadline-docker", move || {
            let request = S::request();
            let request = match host_port {
                Some(port) => request.with_mapped_port(port, S::PORT.tcp()),
                None => request,
            };
            let container = request
                .start()
                .with_context(|| format!("starting container {}", S::image()))?;
            let host = container.get_host().context("container host")?.to_string();
            let port = container
                .get_host_port_ipv4(S::PORT)
                .context("container port mapping")?;
            anyhow::Ok((container, host, port))
        })
        .map_err(|panic| anyhow::anyhow!("starting the container panicked: {panic}"))??;
        let (container, host, port) = started;

        // From here on the container is removed on every path: by `Drop`, or by the reaper.
        let reaper = spawn_reaper(container.id());
        let running = Self {
            server: S::server(&host, port)?,
            container: Some(Box::new(container)),
            reaper,
            running: true,
        };
        S::wait_until_ready(&running.server, READY_TIMEOUT)?;
        Ok(running)
    }

    /// Runs `f` with the container on a dedicated thread (see the module docs).
    fn with_container(
        &mut self,
        what: &str,
        f: impl FnOnce(&Container<S>) -> testcontainers::core::error::Result<()> + Send,
    ) -> anyhow::Result<()> {
        let container = self
            .container
            .take()
            .context("the container is gone after an earlier failure")?;
        let (container, result) = on_own_thread("leadline-docker", move || {
            let result = f(&container);
            (container, result)
        })
        .map_err(|panic| anyhow::anyhow!("{what} panicked: {panic}"))?;
        self.container = Some(container);
        result.with_context(|| what.to_owned())
    }

    /// Stops the container (keeps it, and so the data).
    pub(crate) fn stop(&mut self) -> anyhow::Result<()> {
        let what = format!("stopping the {} container", S::image());
        self.with_container(&what, |c| c.stop())?;
        self.running = false;
        Ok(())
    }

    pub(crate) fn is_running(&self) -> bool {
        self.running
    }

    /// Starts the stopped container again; the fixed host port mapping survives.
    pub(crate) fn restart(&mut self) -> anyhow::Result<()> {
        if self.running {
            self.stop()?;
        }
        let what = format!("starting the {} container", S::image());
        self.with_container(&what, |c| c.start())?;
        self.running = true;
        S::wait_until_ready(&self.server, READY_TIMEOUT)
    }
}

impl<S: Service> Drop for Running<S> {
    fn drop(&mut self) {
        if let Some(container) = self.container.take() {
            // The container's own Drop removes it, blocking on testcontainers' runtime.
            let _ = on_own_thread("leadline-docker", move || drop(container));
        }
        if let Some(reaper) = self.reaper.as_mut() {
            reaper.finish(Duration::from_secs(30));
        }
    }
}

/// `docker rm -f -v <id>` once the reaper's stdin closes: the shared containers are in statics
/// and never dropped, so this is what removes them when the process ends. Needs the `docker`
/// CLI; without it there is no reaper, and the container must be removed by hand afterwards.
fn spawn_reaper(container_id: &str) -> Option<Reaper> {
    let has_cli = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| Path::new(&dir).join("docker").is_file())
    });
    let reaper = if has_cli {
        Reaper::spawn(
            r#"read _ignored; docker rm -f -v "$1" >/dev/null 2>&1"#,
            [container_id],
        )
        .ok()
    } else {
        None
    };
    if reaper.is_none() {
        eprintln!(
            "leadline-testsupport: cannot run the `docker` CLI, so container {container_id} \
             will not be removed when the tests end (docker rm -f {container_id})"
        );
    }
    reaper
}

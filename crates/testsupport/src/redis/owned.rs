//! A Redis server owned by a single test, which may stop and restart it.

use std::ops::Deref;
use std::path::Path;

#[cfg(not(feature = "docker"))]
use crate::docker::Redis;
#[cfg(feature = "docker")]
use testcontainers_modules::redis::Redis;

use super::{NO_REDIS, RedisServer, local};
use crate::docker;

/// A Redis server owned by one test, for tests that stop and restart Redis (e.g. to check how
/// the application behaves while its cache is down). Stopped and removed on `Drop`, and by the
/// reaper if the test process dies first (see the [crate docs](crate#cleanup)).
///
/// It dereferences to [`RedisServer`], so `url()`, `port()` etc. work on it directly.
///
/// A local `redis-server` is preferred (fast, and stopping is just a signal); Docker is the
/// fallback. `TEST_REDIS_URL` is not used: a shared external server is not ours to stop.
#[derive(Debug)]
pub struct OwnedRedisServer {
    inner: Inner,
}

#[derive(Debug)]
#[cfg_attr(
    not(feature = "docker"),
    allow(
        clippy::large_enum_variant,
        reason = "without Docker support the container variant is empty and never built"
    )
)]
enum Inner {
    Local(local::Instance),
    Docker(docker::Running<Redis>),
}

impl OwnedRedisServer {
    /// Starts a new server on a free port on 127.0.0.1 (local binary), or in a new container
    /// with a fixed host port (Docker), and waits until it answers `PING`.
    ///
    /// Blocking (some tens of milliseconds with a local binary); fine to call from async tests.
    ///
    /// # Errors
    ///
    /// If neither a local `redis-server` nor a Docker daemon is available (the message says how
    /// to get one), or if starting the server fails (with the server's log).
    pub fn start() -> anyhow::Result<Self> {
        let local_error = match local::find_binary() {
            Ok(binary) => {
                return Ok(Self {
                    inner: Inner::Local(local::Instance::start_new(&binary)?),
                });
            }
            Err(why) => why,
        };
        match docker::daemon_address() {
            Ok(_) => Ok(Self {
                inner: Inner::Docker(docker::Running::<Redis>::start_owned()?),
            }),
            Err(docker_error) => anyhow::bail!(
                "{NO_REDIS}\n  (an owned server needs a local redis-server or Docker; \
                 TEST_REDIS_URL is not used for it)\n  (no local redis-server: {local_error})\n  \
                 (no Docker daemon: {docker_error})"
            ),
        }
    }

    /// The server's address (also reachable through `Deref`).
    #[must_use]
    pub fn server(&self) -> &RedisServer {
        match &self.inner {
            Inner::Local(instance) => instance.server(),
            Inner::Docker(running) => running.server(),
        }
    }

    /// Stops the server; from then on connections to its port are refused. Stopping an already
    /// stopped local server is a no-op.
    ///
    /// # Errors
    ///
    /// If the server did not stop in time (it is then killed) or Docker reported an error.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        match &mut self.inner {
            Inner::Local(instance) => instance.stop(),
            Inner::Docker(running) => running.stop(),
        }
    }

    /// Starts the server again on the same port and waits until it answers `PING`. A running
    /// server is stopped first. The data does not survive: nothing is persisted.
    ///
    /// # Errors
    ///
    /// If it does not come up within 30 s (60 s for Docker) — e.g. the port was taken by another
    /// process meanwhile — with the server's log where there is one.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        match &mut self.inner {
            Inner::Local(instance) => {
                instance.stop()?;
                instance.start()
            }
            Inner::Docker(running) => running.restart(),
        }
    }

    /// Whether the server is running, as far as this handle knows (it was started and not
    /// stopped since).
    #[must_use]
    pub fn is_running(&self) -> bool {
        match &self.inner {
            Inner::Local(instance) => instance.is_running(),
            Inner::Docker(running) => running.is_running(),
        }
    }

    /// The temporary directory the server runs in, holding its log (`redis.log`); removed on
    /// drop. `None` for Docker.
    #[must_use]
    pub fn directory(&self) -> Option<&Path> {
        match &self.inner {
            Inner::Local(instance) => Some(instance.dir()),
            Inner::Docker(_) => None,
        }
    }
}

impl Deref for OwnedRedisServer {
    type Target = RedisServer;

    fn deref(&self) -> &RedisServer {
        self.server()
    }
}

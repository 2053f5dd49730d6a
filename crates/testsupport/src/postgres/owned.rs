//! A PostgreSQL server owned by a single test, which may stop and restart it.

use std::ops::Deref;
use std::path::Path;

#[cfg(not(feature = "docker"))]
use crate::docker::Postgres;
#[cfg(feature = "docker")]
use testcontainers_modules::postgres::Postgres;

use super::{NO_POSTGRES, PgServer, local};
use crate::docker;

/// A server owned by one test, for tests that stop and restart PostgreSQL (e.g. to check how the
/// application behaves while the database is down). Stopped and removed on `Drop`, and by the
/// reaper if the test process dies first (see the [crate docs](crate#cleanup)).
///
/// It dereferences to [`PgServer`], so `admin_url`, `create_database` etc. work on it directly.
///
/// Local binaries are preferred (fast, and stopping is just a signal); Docker is the fallback.
/// `TEST_DATABASE_URL` is not used: a shared external server is not ours to stop.
#[derive(Debug)]
pub struct OwnedPgServer {
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
    Local(local::Cluster),
    Docker(docker::Running<Postgres>),
}

impl OwnedPgServer {
    /// Creates a new server and starts it on a free port on 127.0.0.1 (local binaries), or in a
    /// new container with a fixed host port (Docker).
    ///
    /// Blocking (a few hundred milliseconds with local binaries); fine to call from async tests.
    ///
    /// # Errors
    ///
    /// If neither local PostgreSQL binaries nor a Docker daemon are available (the message says
    /// how to get one), or if starting the server fails (with the server's log).
    pub fn start() -> anyhow::Result<Self> {
        let local_error = match local::find_bindir() {
            Ok(bindir) => {
                let cluster = local::Cluster::start_new(&bindir)?;
                return Ok(Self {
                    inner: Inner::Local(cluster),
                });
            }
            Err(why) => why,
        };
        match docker::daemon_address() {
            Ok(_) => Ok(Self {
                inner: Inner::Docker(docker::Running::<Postgres>::start_owned()?),
            }),
            Err(docker_error) => anyhow::bail!(
                "{NO_POSTGRES}\n  (an owned server needs local binaries or Docker; \
                 TEST_DATABASE_URL is not used for it)\n  (no local PostgreSQL binaries: \
                 {local_error})\n  (no Docker daemon: {docker_error})"
            ),
        }
    }

    /// A streaming replica of `primary` (`pg_basebackup -R`), owned by the caller like
    /// `primary` itself. Stop it before its primary, or drop it first.
    ///
    /// # Errors
    ///
    /// If `primary` does not run from local binaries (a replica needs the primary's files and
    /// socket), or if `pg_basebackup` or the start fails (with the server's log).
    pub fn start_replica_of(primary: &OwnedPgServer) -> anyhow::Result<Self> {
        match &primary.inner {
            Inner::Local(cluster) => Ok(Self {
                inner: Inner::Local(local::Cluster::start_replica_of(cluster)?),
            }),
            Inner::Docker(_) => anyhow::bail!(
                "{NO_POSTGRES}\n  (a streaming replica is made with the local PostgreSQL binaries \
                 (pg_basebackup); this primary runs in Docker because none were found)"
            ),
        }
    }

    /// The server's address and credentials (also reachable through `Deref`).
    #[must_use]
    pub fn server(&self) -> &PgServer {
        match &self.inner {
            Inner::Local(cluster) => cluster.server(),
            Inner::Docker(running) => running.server(),
        }
    }

    /// Stops the server with a fast shutdown (open connections are terminated), keeping its
    /// data. Stopping an already stopped local server is a no-op.
    ///
    /// # Errors
    ///
    /// If the server did not stop in time (it is then killed) or Docker reported an error.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        match &mut self.inner {
            Inner::Local(cluster) => cluster.stop(),
            Inner::Docker(running) => running.stop(),
        }
    }

    /// Starts the server again on the same port with the same data, and waits until it accepts
    /// connections. A running server is stopped first.
    ///
    /// # Errors
    ///
    /// If it does not come up within 30 s (60 s for Docker) — e.g. the port was taken by another
    /// process meanwhile — with the server's log where there is one.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        match &mut self.inner {
            Inner::Local(cluster) => {
                cluster.stop()?;
                cluster.start()
            }
            Inner::Docker(running) => running.restart(),
        }
    }

    /// Whether the server is running, as far as this handle knows (it was started and not
    /// stopped since).
    #[must_use]
    pub fn is_running(&self) -> bool {
        match &self.inner {
            Inner::Local(cluster) => cluster.is_running(),
            Inner::Docker(running) => running.is_running(),
        }
    }

    /// The temporary directory holding the cluster (`data/`) and the server log
    /// (`postgres.log`); removed on drop. `None` for Docker.
    #[must_use]
    pub fn directory(&self) -> Option<&Path> {
        match &self.inner {
            Inner::Local(cluster) => Some(cluster.dir()),
            Inner::Docker(_) => None,
        }
    }
}

impl Deref for OwnedPgServer {
    type Target = PgServer;

    fn deref(&self) -> &PgServer {
        self.server()
    }
}

//! Docker support compiled out: this build of leadline-testsupport has the `docker` feature off
//! (`cargo xtask bench` builds it so, to keep testcontainers and its Docker client out of a
//! release build that never uses them). The same names as `docker.rs`, so the providers compile
//! unchanged: the daemon is reported unreachable, and a running container cannot exist.

use std::{convert::Infallible, fmt::Debug, marker::PhantomData};

const NO_DOCKER: &str =
    "this build has no Docker support (leadline-testsupport's `docker` feature is off)";

/// Always unreachable, saying why.
pub(crate) fn daemon_address() -> Result<String, String> {
    Err(NO_DOCKER.to_owned())
}

/// A kind of server that would run in a container.
pub(crate) trait Service: 'static {
    /// What a test sees of a started server.
    type Server: Clone + Debug + Send;
}

/// Stand-in for testcontainers' PostgreSQL image type.
#[derive(Debug)]
pub(crate) struct Postgres;

/// Stand-in for testcontainers' Redis image type.
#[derive(Debug)]
pub(crate) struct Redis;

impl Service for Postgres {
    type Server = crate::PgServer;
}

impl Service for Redis {
    type Server = crate::RedisServer;
}

/// A running container, which this build can never have.
#[derive(Debug)]
pub(crate) struct Running<S: Service> {
    never: Infallible,
    kind: PhantomData<S>,
}

impl<S: Service> Running<S> {
    pub(crate) fn start_shared() -> anyhow::Result<Self> {
        anyhow::bail!(NO_DOCKER)
    }

    pub(crate) fn start_owned() -> anyhow::Result<Self> {
        anyhow::bail!(NO_DOCKER)
    }

    pub(crate) fn server(&self) -> &S::Server {
        match self.never {}
    }

    pub(crate) fn stop(&mut self) -> anyhow::Result<()> {
        match self.never {}
    }

    pub(crate) fn is_running(&self) -> bool {
        match self.never {}
    }

    pub(crate) fn restart(&mut self) -> anyhow::Result<()> {
        match self.never {}
    }
}

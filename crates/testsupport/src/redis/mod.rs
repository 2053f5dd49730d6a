//! Redis: the shared server ([`redis()`]), servers a test owns ([`OwnedRedisServer`]), and
//! where they come from (see the [crate docs](crate#redis)).

pub(crate) mod client;
mod cluster;
mod local;
mod owned;

use std::sync::OnceLock;
use std::time::Duration;

#[cfg(not(feature = "docker"))]
use crate::docker::Redis;
use anyhow::Context as _;
#[cfg(feature = "docker")]
use testcontainers::{ContainerRequest, ImageExt as _};
#[cfg(feature = "docker")]
use testcontainers_modules::redis::Redis;

use crate::{Provider, provider, util};

pub use cluster::RedisCluster;
pub use owned::OwnedRedisServer;

/// The message every "no Redis available" panic starts with.
pub(crate) const NO_REDIS: &str = "Redis is needed for this test: set TEST_REDIS_URL, start a \
     Docker daemon, or install redis-server (apt-get install redis-server) — see README.md";

/// How long the server named by `TEST_REDIS_URL` gets to answer `PING`.
const ENV_URL_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a Redis server is.
///
/// Tests that share one server must not collide: they namespace their keys, as leadline does
/// anyway (`leadline:{tenant}:…` with a fresh tenant id per test), or use a database index of
/// their own (`{url}/N`). Nothing here flushes the shared server.
#[derive(Debug, Clone)]
pub struct RedisServer {
    provider: Provider,
    /// `redis://[credentials@]host:port`, without a database index.
    url: String,
    host: String,
    port: u16,
}

impl RedisServer {
    /// A server this crate started: no password, on `host:port`.
    pub(crate) fn started(provider: Provider, host: &str, port: u16) -> anyhow::Result<Self> {
        Self::from_url(provider, &format!("redis://{host}:{port}"))
    }

    /// Parses a URL such as `TEST_REDIS_URL`: `redis://[[user]:password@]host[:port]`.
    ///
    /// A database index is refused rather than dropped: callers append their own (`/N`), so
    /// the URL handed out must end at the port.
    pub(crate) fn from_url(provider: Provider, url: &str) -> anyhow::Result<Self> {
        let mut base = url::Url::parse(url).context("not a valid URL")?;
        anyhow::ensure!(
            base.scheme() == "redis",
            "the URL scheme must be redis://, not {}:// (TLS is not supported here)",
            base.scheme()
        );
        anyhow::ensure!(
            matches!(base.path(), "" | "/") && base.query().is_none() && base.fragment().is_none(),
            "the URL must end at the port, like redis://[[user]:password@]host[:port]: tests \
             append their own database index"
        );
        // Parsed by the client too, so a URL it would refuse (bad port, bad escapes) fails here.
        redis::Client::open(url).context("not a Redis URL")?;
        let port = base.port().unwrap_or(6379);
        base.set_path("");
        // Explicit even where it was left out, so that `url()` always shows it.
        base.set_port(Some(port))
            .map_err(|()| anyhow::anyhow!("the URL cannot carry a port"))?;
        let host = base
            .host_str()
            .filter(|h| !h.is_empty())
            .context("the URL has no host")?
            .to_owned();
        Ok(Self {
            provider,
            url: base.into(),
            host,
            port,
        })
    }

    /// Which way this server was obtained.
    #[must_use]
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// `redis://127.0.0.1:PORT` (with the credentials of `TEST_REDIS_URL`, if it has any). A
    /// database index may be appended: `format!("{}/3", server.url())`.
    #[must_use]
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Host name or address of the server (as it appears in the URL).
    #[must_use]
    pub fn host(&self) -> &str {
        &self.host
    }

    /// TCP port of the server.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// Waits until `server` answers `PING` with `PONG`, for at most `timeout`; see
/// [`util::wait_until_ready`] for `still_starting`.
pub(crate) fn wait_until_ready(
    server: &RedisServer,
    timeout: Duration,
    still_starting: impl FnMut() -> anyhow::Result<()> + Send,
) -> anyhow::Result<()> {
    util::wait_until_ready("Redis", timeout, ping_probe(server), still_starting)
}

/// A readiness probe for [`util::wait_until_ready`]: one `PING` on a new connection.
pub(crate) fn ping_probe(server: &RedisServer) -> impl FnMut() -> anyhow::Result<()> + Send {
    let url = server.url();
    move || client::ping(&url, Duration::from_secs(2))
}

/// Outcome of the one startup attempt (see [`util::shared`]).
static SHARED: OnceLock<Result<provider::Shared<Redis>, String>> = OnceLock::new();

/// The process-wide shared Redis server, started on first call.
///
/// Thread-safe, and callable from inside any tokio runtime or outside of one: the one-time
/// startup runs on its own thread. See the [crate docs](crate#redis) for where the server comes
/// from, and [`RedisServer`] for how tests sharing it keep out of each other's way.
///
/// # Panics
///
/// If no server can be had, or if starting one failed; the message says why and how to fix it.
/// Every later call panics with the same message.
#[track_caller]
pub fn redis() -> &'static RedisServer {
    &util::shared(&SHARED, "starting Redis", provider::start_shared::<Redis>).server
}

impl provider::Kind for Redis {
    type Local = local::Instance;
    const NAME: &'static str = "Redis";
    const ENV: &'static str = "TEST_REDIS_URL";
    const UNAVAILABLE: &'static str = NO_REDIS;
    const LOCAL: &'static str = "local redis-server";

    fn from_env_url(url: &str) -> Result<RedisServer, String> {
        let server = RedisServer::from_url(Provider::EnvUrl, url)
            .map_err(|e| format!("TEST_REDIS_URL is not a usable Redis URL: {e:#}"))?;
        // Fail fast with a clear message instead of every test reporting a connection error.
        wait_until_ready(&server, ENV_URL_TIMEOUT, || Ok(())).map_err(|e| {
            format!(
                "TEST_REDIS_URL is set, but its server ({}:{}) does not answer PING: {e:#}",
                server.host(),
                server.port()
            )
        })?;
        Ok(server)
    }

    fn find_local() -> Result<std::path::PathBuf, String> {
        local::find_binary()
    }

    fn start_local(binary: &std::path::Path) -> anyhow::Result<local::Instance> {
        local::Instance::start_new(binary)
    }

    fn local_server(instance: &local::Instance) -> &RedisServer {
        instance.server()
    }
}

/// Image tag: the Redis major leadline targets; the module's default (5.0) is long out of
/// support.
#[cfg(feature = "docker")]
const DOCKER_TAG: &str = "7-alpine";

#[cfg(feature = "docker")]
impl crate::docker::Service for Redis {
    type Server = RedisServer;
    const PORT: u16 = 6379;

    fn request() -> ContainerRequest<Self> {
        Redis::default()
            .with_tag(DOCKER_TAG)
            // Same as the local servers: nothing is written to disk.
            .with_cmd(["redis-server", "--save", "", "--appendonly", "no"])
            .with_startup_timeout(Duration::from_secs(180))
    }

    fn image() -> String {
        format!("redis:{DOCKER_TAG}")
    }

    fn server(host: &str, port: u16) -> anyhow::Result<RedisServer> {
        RedisServer::started(Provider::Docker, host, port)
    }

    fn wait_until_ready(server: &RedisServer, timeout: Duration) -> anyhow::Result<()> {
        wait_until_ready(server, timeout, || Ok(()))
    }
}

#[cfg(test)]
mod tests;

//! PostgreSQL: the shared server ([`postgres()`]), servers a test owns ([`OwnedPgServer`]),
//! servers with TLS ([`postgres_tls()`]), and where they come from (see the
//! [crate docs](crate#postgresql)); test databases left behind on a server that outlives the
//! tests are dropped by the next run ([`sweep`]).

pub(crate) mod local;
mod owned;
mod sweep;
mod tls;

use std::sync::OnceLock;
use std::time::Duration;

#[cfg(not(feature = "docker"))]
use crate::docker::Postgres;
use anyhow::Context as _;
use sqlx::Connection as _;
#[cfg(feature = "docker")]
use testcontainers::{ContainerRequest, ImageExt as _};
#[cfg(feature = "docker")]
use testcontainers_modules::postgres::Postgres;

use crate::{Provider, provider, util};

pub use owned::OwnedPgServer;
pub(crate) use tls::write_certificates;
pub use tls::{ServerCert, TlsPgServer, WRONG_HOST, postgres_tls};

/// The message every "no PostgreSQL available" panic starts with.
pub(crate) const NO_POSTGRES: &str = "PostgreSQL is needed for this test: set TEST_DATABASE_URL to a superuser URL, \
     start a Docker daemon, or install the PostgreSQL server binaries (apt-get install postgresql) — see README.md";

/// Superuser name and password of the servers this crate starts itself.
pub(crate) const SUPERUSER: &str = "postgres";
pub(crate) const SUPERUSER_PASSWORD: &str = "postgres";

/// Where a PostgreSQL server is and how to log in to it as superuser.
#[derive(Debug, Clone)]
pub struct PgServer {
    provider: Provider,
    /// Superuser URL without a meaningful path; every URL handed out is derived from it, so
    /// extra query parameters of `TEST_DATABASE_URL` (e.g. `sslmode`) are kept.
    base: url::Url,
    host: String,
    port: u16,
}

impl PgServer {
    /// A server this crate started: superuser `postgres`/`postgres` on `host:port`.
    pub(crate) fn started(provider: Provider, host: &str, port: u16) -> anyhow::Result<Self> {
        let url = format!("postgres://{SUPERUSER}:{SUPERUSER_PASSWORD}@{host}:{port}/postgres");
        Self::from_url(provider, &url)
    }

    /// Parses a superuser URL such as `TEST_DATABASE_URL`.
    pub(crate) fn from_url(provider: Provider, url: &str) -> anyhow::Result<Self> {
        let base = url::Url::parse(url).context("not a valid URL")?;
        anyhow::ensure!(
            matches!(base.scheme(), "postgres" | "postgresql"),
            "the URL scheme must be postgres:// or postgresql://, not {}://",
            base.scheme()
        );
        anyhow::ensure!(
            !base.cannot_be_a_base(),
            "the URL must look like postgres://user:password@host:port/database"
        );
        let host = base
            .host_str()
            .filter(|h| !h.is_empty())
            .context("the URL has no host")?
            .to_owned();
        let port = base.port().unwrap_or(5432);
        Ok(Self {
            provider,
            base,
            host,
            port,
        })
    }

    /// Which way this server was obtained.
    #[must_use]
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// Host name or address of the server (as it appears in the URLs).
    #[must_use]
    pub fn host(&self) -> &str {
        &self.host
    }

    /// TCP port of the server.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Superuser URL for `database`, e.g. `postgres://postgres:postgres@127.0.0.1:PORT/DB`.
    #[must_use]
    pub fn admin_url(&self, database: &str) -> String {
        with_database(self.base.clone(), database).into()
    }

    /// URL for `database` as `user` with `password` (user and password percent-encoded).
    #[must_use]
    pub fn url(&self, user: &str, password: &str, database: &str) -> String {
        let mut url = self.base.clone();
        // Both only fail for URLs that cannot carry credentials, which `from_url` rules out.
        let _ = url.set_username(user);
        let _ = url.set_password(Some(password));
        with_database(url, database).into()
    }

    /// Runs `sql` as superuser on `database`, opening and closing its own connection.
    ///
    /// `sql` may contain several statements: it is sent with the simple-query protocol, so it
    /// cannot take bind parameters, and statements outside an explicit transaction each commit on
    /// their own (which also allows `CREATE DATABASE` and friends).
    ///
    /// # Errors
    ///
    /// The driver's error (connection or SQL), with context naming the database.
    pub async fn admin_execute(&self, database: &str, sql: &str) -> anyhow::Result<()> {
        let mut conn = sqlx::PgConnection::connect(&self.admin_url(database))
            .await
            .with_context(|| {
                format!(
                    "connecting as superuser to database {database:?} on {}:{}",
                    self.host, self.port
                )
            })?;
        let result = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .with_context(|| format!("running SQL on database {database:?}: {}", abbreviate(sql)));
        // Close politely even after an SQL error; a failed close does not hide the real result.
        let _ = conn.close().await;
        result.map(|_| ())
    }

    /// Creates a new empty database named `{prefix}_{12 random lowercase hex digits}` and returns
    /// its name. Its owner is the role `owner` if given, else the superuser.
    ///
    /// Its comment names this process as its creator, and the first call of a process on a server
    /// first drops the databases whose creator is gone (see `postgres/sweep.rs`): on a server that outlives
    /// the tests (`TEST_DATABASE_URL`), what one run leaves behind is dropped by the next.
    ///
    /// # Errors
    ///
    /// If the name would exceed PostgreSQL's 63-byte limit (it would be truncated silently, so the
    /// returned name would be wrong), or the driver's error (also that of the sweep).
    pub async fn create_database(
        &self,
        prefix: &str,
        owner: Option<&str>,
    ) -> anyhow::Result<String> {
        let name = format!("{prefix}_{}", util::random_hex(12));
        anyhow::ensure!(
            name.len() <= 63,
            "database name {name:?} is longer than PostgreSQL's 63-byte limit; use a shorter prefix"
        );
        if sweep::first_time_for(self) {
            sweep::sweep(self).await.with_context(|| {
                format!(
                    "sweeping left-over test databases on {}:{}",
                    self.host, self.port
                )
            })?;
        }
        let mut sql = format!("CREATE DATABASE {}", util::quote_ident(&name));
        if let Some(owner) = owner {
            sql.push_str(" OWNER ");
            sql.push_str(&util::quote_ident(owner));
        }
        self.admin_execute("postgres", &sql)
            .await
            .with_context(|| format!("creating database {name:?}"))?;
        let mark = sweep::mark_sql(&name, &sweep::Creator::this_process());
        if let Err(e) = self.admin_execute("postgres", &mark).await {
            // Unmarked, it would never be swept: better not to have it.
            let _ = self.drop_database(&name).await;
            return Err(e.context(format!("marking database {name:?} as a test database")));
        }
        Ok(name)
    }

    /// Drops a database, disconnecting its sessions first (`WITH (FORCE)`). A database that does
    /// not exist is not an error (`IF EXISTS`), so cleanup code may call this unconditionally.
    ///
    /// # Errors
    ///
    /// The driver's error.
    pub async fn drop_database(&self, name: &str) -> anyhow::Result<()> {
        let sql = format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            util::quote_ident(name)
        );
        self.admin_execute("postgres", &sql)
            .await
            .with_context(|| format!("dropping database {name:?}"))
    }
}

fn with_database(mut url: url::Url, database: &str) -> url::Url {
    if let Ok(mut segments) = url.path_segments_mut() {
        // `push` percent-encodes, so odd database names survive the round trip.
        segments.clear().push(database);
    }
    url
}

/// First line of `sql`, shortened, for error messages.
fn abbreviate(sql: &str) -> String {
    let first = sql.trim().lines().next().unwrap_or_default();
    let mut out: String = first.chars().take(120).collect();
    if out.len() < sql.trim().len() {
        out.push('…');
    }
    out
}

/// Outcome of the one startup attempt (see [`util::shared`]).
static SHARED: OnceLock<Result<provider::Shared<Postgres>, String>> = OnceLock::new();

/// A PostgreSQL client tool (`pg_dump`, `pg_restore`, `psql`) from the
/// installation whose server the tests start.
///
/// # Errors
/// No installation was found, or it lacks the tool.
pub fn pg_tool(name: &str) -> anyhow::Result<std::path::PathBuf> {
    let dir = local::find_bindir().map_err(anyhow::Error::msg)?;
    let tool = dir.join(name);
    anyhow::ensure!(tool.is_file(), "{} has no `{name}`", dir.display());
    Ok(tool)
}

/// The process-wide shared server, started on first call.
///
/// Thread-safe, and callable from inside any tokio runtime or outside of one: the one-time
/// startup runs on its own thread. See the [crate docs](crate#postgresql) for where the server
/// comes from.
///
/// # Panics
///
/// If no server can be had (see the crate docs), or if starting one failed; the message says why
/// and how to fix it. Every later call panics with the same message.
#[track_caller]
pub fn postgres() -> &'static PgServer {
    &util::shared(
        &SHARED,
        "starting PostgreSQL",
        provider::start_shared::<Postgres>,
    )
    .server
}

impl provider::Kind for Postgres {
    type Local = local::Cluster;
    const NAME: &'static str = "PostgreSQL";
    const ENV: &'static str = "TEST_DATABASE_URL";
    const UNAVAILABLE: &'static str = NO_POSTGRES;
    const LOCAL: &'static str = "local PostgreSQL binaries";

    fn from_env_url(url: &str) -> Result<PgServer, String> {
        let server = PgServer::from_url(Provider::EnvUrl, url)
            .map_err(|e| format!("TEST_DATABASE_URL is not a usable PostgreSQL URL: {e:#}"))?;
        // Fail fast with a clear message instead of every test reporting a connection error.
        wait_until_url_ready(url, Duration::from_secs(10), || Ok(())).map_err(|e| {
            format!(
                "TEST_DATABASE_URL is set, but its server ({}:{}) does not accept a superuser \
                 connection: {e:#}",
                server.host(),
                server.port()
            )
        })?;
        Ok(server)
    }

    fn find_local() -> Result<std::path::PathBuf, String> {
        local::find_bindir()
    }

    fn start_local(bindir: &std::path::Path) -> anyhow::Result<local::Cluster> {
        local::Cluster::start_new(bindir)
    }

    fn local_server(cluster: &local::Cluster) -> &PgServer {
        cluster.server()
    }
}

/// Polls until a real superuser connection to `server` succeeds, for at most `timeout`; see
/// [`util::wait_until_ready`] for `still_starting`. Containers only: local clusters wait on
/// their own process.
#[cfg(feature = "docker")]
pub(crate) fn wait_until_ready(
    server: &PgServer,
    timeout: Duration,
    still_starting: impl FnMut() -> anyhow::Result<()> + Send,
) -> anyhow::Result<()> {
    wait_until_url_ready(&server.admin_url("postgres"), timeout, still_starting)
}

/// [`wait_until_ready`] for an arbitrary URL.
fn wait_until_url_ready(
    url: &str,
    timeout: Duration,
    still_starting: impl FnMut() -> anyhow::Result<()> + Send,
) -> anyhow::Result<()> {
    util::wait_until_ready(
        "PostgreSQL",
        timeout,
        connect_probe(url.to_owned()),
        still_starting,
    )
}

/// A readiness probe for [`util::wait_until_ready`]: one connection attempt to `url` (at most
/// 5 s), closed again at once.
pub(crate) fn connect_probe(url: String) -> impl FnMut() -> anyhow::Result<()> + Send {
    // Built at the first attempt, on the waiting thread: a runtime cannot be blocked on from
    // inside the caller's runtime, and one per attempt would be wasteful.
    let mut runtime = None;
    move || {
        let runtime = match &mut runtime {
            Some(runtime) => runtime,
            None => runtime.insert(
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("building a tokio runtime to wait for PostgreSQL")?,
            ),
        };
        runtime.block_on(async {
            let attempt =
                tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(&url))
                    .await;
            match attempt {
                Ok(Ok(conn)) => {
                    let _ = conn.close().await;
                    Ok(())
                }
                Ok(Err(e)) => Err(anyhow::Error::new(e)),
                Err(_) => Err(anyhow::anyhow!("connection attempt timed out")),
            }
        })
    }
}

/// Image tag; 15 matches the server version the project targets.
#[cfg(feature = "docker")]
const DOCKER_TAG: &str = "15-alpine";

#[cfg(feature = "docker")]
impl crate::docker::Service for Postgres {
    type Server = PgServer;
    const PORT: u16 = 5432;

    fn request() -> ContainerRequest<Self> {
        Postgres::default()
            .with_tag(DOCKER_TAG)
            // Same speed-over-durability settings as the local clusters.
            .with_cmd([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=300",
                // As the local clusters: statement statistics for the tenant-filter check.
                "-c",
                "shared_preload_libraries=pg_stat_statements",
                "-c",
                "pg_stat_statements.track=top",
                "-c",
                "pg_stat_statements.max=10000",
            ])
            .with_startup_timeout(Duration::from_secs(180))
    }

    fn image() -> String {
        format!("postgres:{DOCKER_TAG}")
    }

    fn server(host: &str, port: u16) -> anyhow::Result<PgServer> {
        PgServer::started(Provider::Docker, host, port)
    }

    fn wait_until_ready(server: &PgServer, timeout: Duration) -> anyhow::Result<()> {
        wait_until_ready(server, timeout, || Ok(()))
    }
}

#[cfg(test)]
mod tests;

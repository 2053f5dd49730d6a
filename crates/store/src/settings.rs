//! The store's own settings, loaded by the binary's layered config.

use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

/// `database.sqlite_mmap_bytes` unless set: 64 GiB, more than any file
/// leadline is expected to keep, so the whole file is mapped (a map larger
/// than the file costs nothing). The bundled SQLite is built to allow up to
/// 1 TiB (`SQLITE_MAX_MMAP_SIZE` in `.cargo/config.toml`).
pub const SQLITE_MMAP_DEFAULT: u64 = 64 << 30;

/// The most reader connections SQLite gets unless `sqlite_readers` says
/// otherwise: each is a thread with its own page cache, and past a few per
/// core they only wait for one another.
pub const SQLITE_READERS_MAX: u32 = 32;

/// How to reach the database and size the pool.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSettings {
    /// `postgres://…` or `sqlite://…`. Secret: it may hold a password.
    pub url: SecretString,
    /// Optional URL of the schema owner, used for migrations. The service
    /// itself should connect (`url`) as a role that owns nothing; when unset,
    /// migrations use `url`.
    pub migration_url: Option<SecretString>,
    /// PostgreSQL TLS mode. When set it overrides `sslmode` in the URLs'
    /// query strings; when unset the URL's own `sslmode` applies, else
    /// `prefer`. SQLite ignores it.
    pub ssl_mode: Option<SslMode>,
    /// PostgreSQL: a PEM file of the CA certificate(s) the server's
    /// certificate must chain to. When set it overrides `sslrootcert` in the
    /// URLs; when no CA is given at all, `verify-ca` and `verify-full` trust
    /// the Mozilla root bundle built into the binary (not the OS store).
    pub ssl_root_cert: Option<std::path::PathBuf>,
    /// PostgreSQL: `url` (and `read_url`) reach the server through a
    /// transaction-mode pooler, such as PgBouncer with `pool_mode =
    /// transaction`, which hands each transaction whichever server
    /// connection is free. Statements are then prepared afresh each time
    /// (no statement cache), each transaction first drops prepared
    /// statements other clients left on its server connection, and the
    /// one-statement reads and appends run inside a transaction.
    pub transaction_pooling: bool,
    /// PostgreSQL: a URL that reaches the server directly, for the one
    /// connection that `LISTEN`s for other instances' changes. Needed
    /// behind a transaction pooler, which cannot carry `LISTEN`; unset, the
    /// listener uses `url`, or, with `transaction_pooling`, there is none
    /// and other instances' changes reach a change feed on its re-read
    /// timer instead. Secret like `url`.
    pub listen_url: Option<SecretString>,
    /// Pool ceiling. PostgreSQL only: SQLite always has one writer
    /// connection, and `sqlite_readers` readers (see
    /// [`crate::Store::connect`]).
    pub max_connections: u32,
    /// Connections kept open when idle.
    pub min_connections: u32,
    /// How long a request waits for a free connection before it fails with
    /// "unavailable" (HTTP 503) instead of queueing without bound.
    pub acquire_timeout_ms: u64,
    /// Idle connections above `min_connections` close after this long.
    pub idle_timeout_secs: u64,
    /// SQLite: how long a statement waits on a locked database.
    pub sqlite_busy_timeout_ms: u64,
    /// SQLite: when a commit counts as durable (`PRAGMA synchronous`).
    pub sqlite_synchronous: SqliteSynchronous,
    /// SQLite: how many reader connections serve reads beside the one
    /// writer; unset means four per core, at most 32 (a reader's thread
    /// waits on each hand-off to and from the service, so one per core
    /// leaves the cores idle between statements). 0 sends reads to the
    /// writer's connection too. An in-memory database never has readers.
    pub sqlite_readers: Option<u32>,
    /// SQLite: how much of the file each connection reads through a memory
    /// map (`PRAGMA mmap_size`) instead of a `read` call and a copy per
    /// page; 0 turns it off. The pages are the operating system's cache,
    /// shared by every connection (they count in the process's resident
    /// memory once touched). Writes still go through the write-ahead log.
    pub sqlite_mmap_bytes: u64,
    /// Optional URL of a read replica (`DATABASE_READ_URL`). List, search
    /// and analytics reads go there; writes and reads that must see them
    /// stay on `url`. Same backend as `url`. Secret like `url`.
    pub read_url: Option<SecretString>,
    /// PostgreSQL: where analytics reads go (a read replica, say), on a
    /// pool of their own so that dashboards never take the write path's
    /// connections. Unset: `read_url` when set, else `url`. Secret like
    /// `url`. The figures are refreshed on the primary either way.
    pub analytics_url: Option<SecretString>,
    /// PostgreSQL: the analytics pool's ceiling. SQLite's analytics reads
    /// share its readers.
    pub analytics_max_connections: u32,
    /// How many times a transaction is rerun after a transient fault
    /// (serialization failure, deadlock, broken connection before COMMIT).
    /// 0 disables retrying.
    pub retry_max: usize,
    /// First backoff delay before a rerun; doubles per rerun, with jitter.
    pub retry_min_delay_ms: u64,
    /// Ceiling of one backoff delay.
    pub retry_max_delay_ms: u64,
    /// Database operations slower than this are logged (name and duration,
    /// never parameter values).
    pub slow_query_ms: u64,
    /// Whether every write leaves an audit record (on by default). Off is
    /// for measuring what the trail costs (`cargo xtask bench`): a
    /// deployment that turns it off keeps no record of who changed what.
    pub audit: bool,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            url: SecretString::from("sqlite://leadline.db?mode=rwc"),
            migration_url: None,
            ssl_mode: None,
            ssl_root_cert: None,
            transaction_pooling: false,
            listen_url: None,
            max_connections: 16,
            min_connections: 0,
            acquire_timeout_ms: 3_000,
            idle_timeout_secs: 600,
            sqlite_busy_timeout_ms: 5_000,
            sqlite_synchronous: SqliteSynchronous::Full,
            sqlite_readers: None,
            sqlite_mmap_bytes: SQLITE_MMAP_DEFAULT,
            read_url: None,
            analytics_url: None,
            analytics_max_connections: 2,
            retry_max: 3,
            retry_min_delay_ms: 10,
            retry_max_delay_ms: 200,
            slow_query_ms: 250,
            audit: true,
        }
    }
}

impl StoreSettings {
    /// Settings for `url` with every other value at its default.
    #[must_use]
    pub fn for_url(url: &str) -> Self {
        Self {
            url: SecretString::from(url.to_owned()),
            ..Self::default()
        }
    }

    /// The schema owner's URL: `migration_url`, else `url`. Migrations,
    /// backups and tenant moves run as the owner.
    #[must_use]
    pub fn owner_url(&self) -> &SecretString {
        self.migration_url.as_ref().unwrap_or(&self.url)
    }

    /// SQLite's reader connections: `sqlite_readers`, else four per core
    /// and at most [`SQLITE_READERS_MAX`]. A database file gets this many
    /// held open for single-statement reads (`point_reads.rs`) and a pool
    /// of up to as many for reads of several statements.
    #[must_use]
    pub fn sqlite_reader_count(&self) -> u32 {
        self.sqlite_readers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(8, |n| u32::try_from(n.get()).unwrap_or(u32::MAX))
                .saturating_mul(4)
                .min(SQLITE_READERS_MAX)
        })
    }

    /// The acquire timeout as a duration.
    #[must_use]
    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.acquire_timeout_ms)
    }

    /// Lists every invalid value by its key.
    #[must_use]
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if self.max_connections == 0 {
            problems.push(("database.max_connections", "must be at least 1".to_owned()));
        }
        if self.min_connections > self.max_connections {
            problems.push((
                "database.min_connections",
                "must not exceed database.max_connections".to_owned(),
            ));
        }
        if self.acquire_timeout_ms == 0 {
            problems.push((
                "database.acquire_timeout_ms",
                "must be at least 1".to_owned(),
            ));
        }
        if self.sqlite_readers.is_some_and(|n| n > 64) {
            problems.push((
                "database.sqlite_readers",
                "must be at most 64: readers beyond the cores only queue in SQLite".to_owned(),
            ));
        }
        if self.retry_max > 10 {
            problems.push((
                "database.retry_max",
                "must be at most 10: more reruns only hold a failing request longer".to_owned(),
            ));
        }
        if self.retry_min_delay_ms > self.retry_max_delay_ms {
            problems.push((
                "database.retry_min_delay_ms",
                "must not exceed database.retry_max_delay_ms".to_owned(),
            ));
        }
        {
            use secrecy::ExposeSecret;
            let on_sqlite = self.url.expose_secret().starts_with("sqlite:");
            if self.transaction_pooling && on_sqlite {
                problems.push((
                    "database.transaction_pooling",
                    "is for PostgreSQL behind a pooler; database.url is SQLite".to_owned(),
                ));
            }
            if let Some(listen) = &self.listen_url {
                let listen = listen.expose_secret();
                if !listen.starts_with("postgres://") && !listen.starts_with("postgresql://") {
                    problems.push((
                        "database.listen_url",
                        "must be a postgres:// URL".to_owned(),
                    ));
                } else if on_sqlite {
                    problems.push((
                        "database.listen_url",
                        "needs database.url on PostgreSQL too".to_owned(),
                    ));
                }
            }
        }
        if let Some(read_url) = &self.read_url {
            use secrecy::ExposeSecret;
            let (read, primary) = (read_url.expose_secret(), self.url.expose_secret());
            if !read.starts_with("postgres://") && !read.starts_with("postgresql://") {
                problems.push((
                    "database.read_url",
                    "must be a postgres:// URL (a read pool needs PostgreSQL)".to_owned(),
                ));
            } else if primary.starts_with("sqlite:") {
                problems.push((
                    "database.read_url",
                    "needs database.url on PostgreSQL too".to_owned(),
                ));
            }
        }
        if self.analytics_max_connections == 0 {
            problems.push((
                "database.analytics_max_connections",
                "must be at least 1".to_owned(),
            ));
        }
        if let Some(analytics) = &self.analytics_url {
            use secrecy::ExposeSecret;
            let (analytics, primary) = (analytics.expose_secret(), self.url.expose_secret());
            if !analytics.starts_with("postgres://") && !analytics.starts_with("postgresql://") {
                problems.push((
                    "database.analytics_url",
                    "must be a postgres:// URL".to_owned(),
                ));
            } else if primary.starts_with("sqlite:") {
                problems.push((
                    "database.analytics_url",
                    "needs database.url on PostgreSQL too".to_owned(),
                ));
            }
        }
        if let Some(ca) = &self.ssl_root_cert {
            if !ca.is_file() {
                problems.push((
                    "database.ssl_root_cert",
                    format!("{} is not a readable file", ca.display()),
                ));
            }
            if matches!(self.ssl_mode, Some(SslMode::Disable | SslMode::Prefer)) {
                problems.push((
                    "database.ssl_root_cert",
                    "is only used with database.ssl_mode require, verify-ca or verify-full"
                        .to_owned(),
                ));
            }
        }
        problems
    }
}

/// When SQLite counts a commit as done (`PRAGMA synchronous`, in WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SqliteSynchronous {
    /// The default: a write is acknowledged once the write-ahead log holding
    /// it is on the disk, so an acknowledged write survives a power loss.
    /// The writer commits at `NORMAL` and concurrent writes share one
    /// `fdatasync` of the log (group commit, `wal_sync.rs`); an in-memory
    /// database runs at `FULL`, which costs it nothing.
    Full,
    /// Commits wait for the log to reach the operating system, not the
    /// disk: faster writes, and an acknowledged write survives the process
    /// being killed but may be lost on a power loss or an OS crash (the
    /// database stays consistent either way).
    Normal,
}

impl SqliteSynchronous {
    /// The setting's name, as configured.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Normal => "normal",
        }
    }
}

/// How the PostgreSQL connection uses TLS; libpq's `sslmode` values.
///
/// Only `verify-full` protects against an active attacker: `verify-ca`
/// accepts any certificate the CA signed, for any host, and `require`
/// checks nothing unless a CA is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Plain TCP, never TLS.
    Disable,
    /// TLS when the server offers it, else plain TCP; no certificate check.
    Prefer,
    /// TLS or no connection. The certificate is not checked, except that
    /// with a CA file (`database.ssl_root_cert` or the URL's
    /// `sslrootcert`) it must chain to that CA, as with libpq.
    Require,
    /// TLS, and the certificate must chain to a trusted CA; the host name
    /// is not checked.
    VerifyCa,
    /// TLS, the certificate must chain to a trusted CA and name the host
    /// connected to.
    VerifyFull,
}

impl SslMode {
    /// Its name in config files and URLs.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

//! The store's own settings, loaded by the binary's layered config.

use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

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
    /// Pool ceiling. PostgreSQL only: the SQLite pool is always one
    /// connection (see [`crate::Store::connect`]).
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
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            url: SecretString::from("sqlite://leadline.db?mode=rwc"),
            migration_url: None,
            max_connections: 16,
            min_connections: 0,
            acquire_timeout_ms: 3_000,
            idle_timeout_secs: 600,
            sqlite_busy_timeout_ms: 5_000,
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
        problems
    }
}

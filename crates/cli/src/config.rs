//! Typed, layered configuration: built-in defaults, then an optional TOML
//! file, then `DATABASE_URL`, then `LEADLINE_*` environment variables
//! (nested keys joined by `__`, e.g. `LEADLINE_DATABASE__MAX_CONNECTIONS`).
//! Unknown keys are errors, and every error names its key.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use leadline_store::StoreSettings;
use serde::Deserialize;

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The HTTP listener.
    pub http: HttpSettings,
    /// The database.
    pub database: StoreSettings,
    /// Logging.
    pub log: LogSettings,
    /// The lead-context read model.
    pub recall: leadline_app::RecallSettings,
    /// The lead-context cache: in-process, and Redis when `cache.redis_url` is set.
    pub cache: leadline_cache::CacheSettings,
    /// The delivery relay.
    pub relay: leadline_app::RelaySettings,
    /// The mail server email deliveries go through.
    pub smtp: leadline_outbound::SmtpSettings,
    /// The change feed (`GET /v1/changes`).
    pub changes: leadline_app::ChangeSettings,
    /// Webhook endpoints (the key their secrets are sealed with).
    pub webhooks: leadline_outbound::WebhookSettings,
    /// Analytics (`[analytics]`): how often precomputed figures refresh.
    pub analytics: leadline_app::AnalyticsSettings,
    /// Retention (`[retention]`): how often policies apply, in what batches.
    pub retention: leadline_app::RetentionSettings,
    /// Rate limits per API key and per tenant (`[rate_limit]`), kept in
    /// Redis when `cache.redis_url` is set.
    pub rate_limit: leadline_app::RateLimitSettings,
}

/// The HTTP listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// Address to listen on.
    pub bind: SocketAddr,
    /// On SIGTERM/SIGINT, how long in-flight requests get to finish.
    pub shutdown_grace_secs: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            shutdown_grace_secs: 20,
        }
    }
}

impl HttpSettings {
    /// The grace period as a duration.
    #[must_use]
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

/// Log output.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `human` or `json`.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `leadline=debug,sqlx=warn`.
    /// `RUST_LOG`, when set, wins.
    pub filter: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            filter: "info,sqlx=warn,sea_orm=warn".to_owned(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

impl Config {
    /// Every setting as `(key, value)`, in file order, with secrets
    /// redacted: what `leadline config check` prints.
    #[must_use]
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        use secrecy::ExposeSecret;
        let redact = |url: &str| leadline_store::redact_url(url);
        let db = &self.database;
        let cache = &self.cache;
        let recall = &self.recall;
        let relay = &self.relay;
        let smtp = &self.smtp;
        let changes = &self.changes;
        let limit = |l: leadline_app::LimitSetting| {
            format!("per_second = {}, burst = {}", l.per_second, l.burst)
        };
        vec![
            ("http.bind", self.http.bind.to_string()),
            (
                "http.shutdown_grace_secs",
                self.http.shutdown_grace_secs.to_string(),
            ),
            ("database.url", redact(db.url.expose_secret())),
            (
                "database.migration_url",
                db.migration_url.as_ref().map_or_else(
                    || "(unset: database.url)".to_owned(),
                    |u| redact(u.expose_secret()),
                ),
            ),
            (
                "database.ssl_mode",
                db.ssl_mode.map_or_else(
                    || "(unset: the URL's sslmode, else prefer)".to_owned(),
                    |m| m.as_str().to_owned(),
                ),
            ),
            (
                "database.ssl_root_cert",
                db.ssl_root_cert.as_ref().map_or_else(
                    || "(unset: the URL's sslrootcert, else built-in roots)".to_owned(),
                    |p| p.display().to_string(),
                ),
            ),
            (
                "database.transaction_pooling",
                db.transaction_pooling.to_string(),
            ),
            ("database.audit", db.audit.to_string()),
            (
                "database.listen_url",
                db.listen_url.as_ref().map_or_else(
                    || "(unset: LISTEN on database.url)".to_owned(),
                    |u| redact(u.expose_secret()),
                ),
            ),
            ("database.max_connections", db.max_connections.to_string()),
            ("database.min_connections", db.min_connections.to_string()),
            (
                "database.acquire_timeout_ms",
                db.acquire_timeout_ms.to_string(),
            ),
            (
                "database.idle_timeout_secs",
                db.idle_timeout_secs.to_string(),
            ),
            (
                "database.sqlite_busy_timeout_ms",
                db.sqlite_busy_timeout_ms.to_string(),
            ),
            (
                "database.sqlite_synchronous",
                db.sqlite_synchronous.as_str().to_owned(),
            ),
            (
                "database.sqlite_readers",
                db.sqlite_readers.map_or_else(
                    || {
                        format!(
                            "(unset: four per core, at most 32: {})",
                            db.sqlite_reader_count()
                        )
                    },
                    |n| n.to_string(),
                ),
            ),
            (
                "database.sqlite_mmap_bytes",
                db.sqlite_mmap_bytes.to_string(),
            ),
            (
                "database.read_url",
                db.read_url.as_ref().map_or_else(
                    || "(unset: every read uses database.url)".to_owned(),
                    |u| redact(u.expose_secret()),
                ),
            ),
            (
                "database.analytics_url",
                db.analytics_url.as_ref().map_or_else(
                    || "(unset: database.read_url, else database.url)".to_owned(),
                    |u| redact(u.expose_secret()),
                ),
            ),
            (
                "database.analytics_max_connections",
                db.analytics_max_connections.to_string(),
            ),
            ("database.retry_max", db.retry_max.to_string()),
            (
                "database.retry_min_delay_ms",
                db.retry_min_delay_ms.to_string(),
            ),
            (
                "database.retry_max_delay_ms",
                db.retry_max_delay_ms.to_string(),
            ),
            ("database.slow_query_ms", db.slow_query_ms.to_string()),
            ("recall.events", recall.events.to_string()),
            (
                "recall.preload_on_start",
                recall.preload_on_start.to_string(),
            ),
            ("recall.preload_max", recall.preload_max.to_string()),
            (
                "recall.preload_timeout_ms",
                recall.preload_timeout_ms.to_string(),
            ),
            (
                "recall.preload_concurrency",
                recall.preload_concurrency.to_string(),
            ),
            ("cache.enabled", cache.enabled.to_string()),
            (
                "cache.redis_url",
                cache
                    .redis_url_redacted()
                    .unwrap_or_else(|| "(unset: in-process only)".to_owned()),
            ),
            ("cache.redis_cluster", cache.redis_cluster.to_string()),
            ("cache.l1_ttl_secs", cache.l1_ttl_secs.to_string()),
            (
                "cache.l1_capacity_bytes",
                cache.l1_capacity_bytes.to_string(),
            ),
            ("cache.l2_ttl_secs", cache.l2_ttl_secs.to_string()),
            ("cache.redis_timeout_ms", cache.redis_timeout_ms.to_string()),
            (
                "cache.stale_if_error_secs",
                cache.stale_if_error_secs.to_string(),
            ),
            ("relay.enabled", relay.enabled.to_string()),
            ("relay.batch", relay.batch.to_string()),
            ("relay.concurrency", relay.concurrency.to_string()),
            ("relay.lease_secs", relay.lease_secs.to_string()),
            ("relay.poll_interval_ms", relay.poll_interval_ms.to_string()),
            ("relay.max_attempts", relay.max_attempts.to_string()),
            ("relay.retry_base_secs", relay.retry_base_secs.to_string()),
            ("relay.retry_cap_secs", relay.retry_cap_secs.to_string()),
            (
                "relay.breaker_threshold",
                relay.breaker_threshold.to_string(),
            ),
            (
                "relay.breaker_cool_down_secs",
                relay.breaker_cool_down_secs.to_string(),
            ),
            (
                "smtp.url",
                smtp.url.as_ref().map_or_else(
                    || "(unset: email deliveries wait)".to_owned(),
                    |u| redact(u.expose_secret()),
                ),
            ),
            (
                "smtp.ca_file",
                smtp.ca_file.as_ref().map_or_else(
                    || "(unset: the system's roots)".to_owned(),
                    |p| p.display().to_string(),
                ),
            ),
            ("smtp.from", smtp.from.clone()),
            (
                "smtp.from_name",
                smtp.from_name
                    .clone()
                    .unwrap_or_else(|| "(unset)".to_owned()),
            ),
            ("smtp.timeout_ms", smtp.timeout_ms.to_string()),
            ("smtp.pool_max", smtp.pool_max.to_string()),
            (
                "changes.retention_hours",
                changes.retention_hours.to_string(),
            ),
            ("changes.heartbeat_secs", changes.heartbeat_secs.to_string()),
            ("changes.poll_ms", changes.poll_ms.to_string()),
            (
                "analytics.refresh_secs",
                self.analytics.refresh_secs.to_string(),
            ),
            (
                "retention.interval_secs",
                self.retention.interval_secs.to_string(),
            ),
            ("retention.batch", self.retention.batch.to_string()),
            (
                "webhooks.secret_key",
                if self.webhooks.secret_key.is_some() {
                    "***"
                } else {
                    "(unset: webhooks cannot be created)"
                }
                .to_owned(),
            ),
            ("webhooks.timeout_ms", self.webhooks.timeout_ms.to_string()),
            (
                "webhooks.allow_private_targets",
                self.webhooks.allow_private_targets.to_string(),
            ),
            ("rate_limit.enabled", self.rate_limit.enabled.to_string()),
            ("rate_limit.key.read", limit(self.rate_limit.key.read)),
            ("rate_limit.key.write", limit(self.rate_limit.key.write)),
            ("rate_limit.key.import", limit(self.rate_limit.key.import)),
            ("rate_limit.tenant.read", limit(self.rate_limit.tenant.read)),
            (
                "rate_limit.tenant.write",
                limit(self.rate_limit.tenant.write),
            ),
            (
                "rate_limit.tenant.import",
                limit(self.rate_limit.tenant.import),
            ),
            (
                "log.format",
                format!("{:?}", self.log.format).to_lowercase(),
            ),
            ("log.filter", self.log.filter.clone()),
        ]
    }
}

/// The configuration could not be loaded; each entry names a key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError(pub Vec<String>);

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_FILE: &str = "leadline.toml";

/// The layered sources, without extracting.
#[must_use]
pub fn figment(file: Option<&Path>) -> Figment {
    // Nested tables whose defaults depend on where they sit (a key's read
    // limit is not a tenant's) start from their defaults as values, so a
    // file or variable that sets one leaf keeps the others.
    let mut figment = Figment::new().merge(Serialized::default(
        "rate_limit",
        leadline_app::RateLimitSettings::default(),
    ));
    match file {
        Some(path) => figment = figment.merge(Toml::file_exact(path)),
        None => {
            if Path::new(DEFAULT_FILE).exists() {
                figment = figment.merge(Toml::file_exact(DEFAULT_FILE));
            }
        }
    }
    figment
        // The conventional variable, for PaaS platforms that inject it.
        .merge(
            Env::raw()
                .only(&["DATABASE_URL", "DATABASE_READ_URL"])
                .map(|key| {
                    if key.as_str().eq_ignore_ascii_case("DATABASE_READ_URL") {
                        "database.read_url".into()
                    } else {
                        "database.url".into()
                    }
                }),
        )
        .merge(
            Env::prefixed("LEADLINE_")
                // Not settings: the config file's path, and the password
                // `leadline roles setup` reads (a secret kept out of config).
                .filter(|key| key != "config" && key != "service_password")
                .split("__"),
        )
}

/// Loads and validates the configuration, reporting every problem by key.
///
/// # Errors
/// [`ConfigError`] listing each bad key with its reason and source.
pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
    let config: Config = figment(file)
        .extract()
        .map_err(|err| ConfigError(err.into_iter().map(|e| describe(&e)).collect()))?;
    let problems: Vec<String> = config
        .database
        .problems()
        .into_iter()
        .chain(config.recall.problems())
        .chain(config.cache.problems())
        .chain(config.relay.problems())
        .chain(config.smtp.problems())
        .chain(config.changes.problems())
        .chain(config.analytics.problems())
        .chain(config.retention.problems())
        .chain(config.webhooks.problems())
        .chain(config.rate_limit.problems())
        .map(|(key, why)| format!("{key}: {why}"))
        .collect();
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError(problems))
    }
}

/// One figment error as `key: reason (source)`, with the key in the
/// lower-case dotted form the docs use, whichever source it came from.
fn describe(err: &figment::Error) -> String {
    let key = err.path.join(".").to_lowercase();
    let source = err
        .metadata
        .as_ref()
        .map(|m| match &m.source {
            Some(src) => format!(" (from {} {src})", m.name),
            None => format!(" (from {})", m.name),
        })
        .unwrap_or_default();
    if key.is_empty() {
        format!("{}{source}", err.kind)
    } else {
        format!("{key}: {}{source}", err.kind)
    }
}

/// The config file named by `LEADLINE_CONFIG`, when set.
#[must_use]
pub fn file_from_env() -> Option<PathBuf> {
    std::env::var_os("LEADLINE_CONFIG").map(PathBuf::from)
}

#[cfg(test)]
// figment::Jail's closures return figment::Error, which is large; that is its API.
#[allow(clippy::result_large_err)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn one_rate_limit_leaf_can_be_set_alone() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("LEADLINE_RATE_LIMIT__TENANT__READ__BURST", "7");
            jail.create_file(
                "leadline.toml",
                "[rate_limit.key.write]\nper_second = 3.5\n",
            )?;
            let config = load(None).map_err(|e| e.to_string())?;
            let defaults = leadline_app::RateLimitSettings::default();
            assert_eq!(config.rate_limit.tenant.read.burst, 7);
            assert_eq!(
                config.rate_limit.tenant.read.per_second,
                defaults.tenant.read.per_second
            );
            assert_eq!(config.rate_limit.key.write.per_second, 3.5);
            assert_eq!(config.rate_limit.key.write.burst, defaults.key.write.burst);
            assert_eq!(config.rate_limit.key.read, defaults.key.read);
            jail.set_env("LEADLINE_RATE_LIMIT__KEY__IMPORT__BURST", "0");
            let err = load(None).expect_err("a zero burst");
            assert!(err.to_string().contains("rate_limit.key.import"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn defaults_then_file_then_env() {
        figment::Jail::expect_with(|jail| {
            let defaults = load(None).map_err(|e| e.to_string())?;
            assert_eq!(
                defaults.database.url.expose_secret(),
                "sqlite://leadline.db?mode=rwc"
            );
            assert_eq!(defaults.http.bind.port(), 8080);

            jail.create_file(
                "leadline.toml",
                "[http]\nbind = \"0.0.0.0:9000\"\n[database]\nmax_connections = 4\n",
            )?;
            let from_file = load(None).map_err(|e| e.to_string())?;
            assert_eq!(
                (
                    from_file.http.bind.port(),
                    from_file.database.max_connections
                ),
                (9000, 4)
            );

            jail.set_env("DATABASE_URL", "postgres://a@b/c");
            jail.set_env("DATABASE_READ_URL", "postgres://r:pw@replica/c");
            jail.set_env("LEADLINE_DATABASE__MAX_CONNECTIONS", "9");
            let from_env = load(None).map_err(|e| e.to_string())?;
            assert_eq!(from_env.database.url.expose_secret(), "postgres://a@b/c");
            assert_eq!(
                from_env
                    .database
                    .read_url
                    .as_ref()
                    .map(|u| u.expose_secret().to_owned())
                    .as_deref(),
                Some("postgres://r:pw@replica/c"),
                "DATABASE_READ_URL is the read pool"
            );
            assert_eq!(from_env.database.max_connections, 9);

            jail.set_env("LEADLINE_SERVICE_PASSWORD", "not a setting");
            jail.set_env("LEADLINE_DATABASE__URL", "postgres://x@y/z");
            let specific = load(None).map_err(|e| e.to_string())?;
            assert_eq!(
                specific.database.url.expose_secret(),
                "postgres://x@y/z",
                "LEADLINE_ wins over DATABASE_URL"
            );
            Ok(())
        });
    }

    #[test]
    fn bad_values_are_reported_by_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("LEADLINE_DATABASE__MAX_CONNECTIONS", "lots");
            let err = load(None).expect_err("not a number").to_string();
            assert!(err.contains("database.max_connections"), "{err}");

            jail.set_env("LEADLINE_DATABASE__MAX_CONNECTIONS", "0");
            let err = load(None).expect_err("zero").to_string();
            assert!(
                err.contains("database.max_connections: must be at least 1"),
                "{err}"
            );

            jail.set_env("LEADLINE_DATABASE__MAX_CONNECTIONS", "4");
            jail.set_env("LEADLINE_HTTP__BINDD", "x");
            let err = load(None).expect_err("typo").to_string();
            assert!(err.contains("bindd"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn describe_lists_every_key_and_redacts_secrets() {
        figment::Jail::expect_with(|jail| {
            jail.set_env(
                "LEADLINE_DATABASE__URL",
                "postgres://app:db-s3cret@db/leadline",
            );
            jail.set_env(
                "LEADLINE_DATABASE__MIGRATION_URL",
                "postgres://owner:own3r-pw@db/leadline",
            );
            // A cluster's seed nodes, each with its password.
            jail.set_env(
                "LEADLINE_CACHE__REDIS_URL",
                "redis://:r3dis-pw@cache:6379,redis://:n0de-b-pw@cache-b:6379",
            );
            jail.set_env("LEADLINE_CACHE__REDIS_CLUSTER", "true");
            jail.set_env(
                "DATABASE_READ_URL",
                "postgres://app:r3plica-pw@replica/leadline",
            );
            jail.set_env("LEADLINE_SMTP__URL", "smtp://relay:smtp-s3cret@mail:587");
            jail.set_env(
                "LEADLINE_WEBHOOKS__SECRET_KEY",
                "c2VhbGluZy1rZXktc2VhbGluZy1rZXktc2VhbGluZyE=",
            );
            let config = load(None).map_err(|e| e.to_string())?;
            let shown: String = config
                .describe()
                .iter()
                .map(|(k, v)| format!("{k} = {v}\n"))
                .collect();
            for secret in [
                "db-s3cret",
                "own3r-pw",
                "r3dis-pw",
                "n0de-b-pw",
                "r3plica-pw",
                "smtp-s3cret",
                "c2VhbGluZy1rZXktc2VhbGluZy1rZXktc2VhbGluZyE=",
            ] {
                assert!(!shown.contains(secret), "{secret} leaked:\n{shown}");
            }
            assert!(
                shown.contains("database.url = postgres://app:***@db/leadline"),
                "{shown}"
            );
            assert!(
                shown.contains(
                    "cache.redis_url = redis://***@cache:6379,redis://***@cache-b:6379\n\
                     cache.redis_cluster = true"
                ),
                "{shown}"
            );
            assert!(
                shown.contains("smtp.url = smtp://relay:***@mail:587"),
                "{shown}"
            );
            assert!(shown.contains("webhooks.secret_key = ***"), "{shown}");
            assert_eq!(config.describe().len(), 71, "every setting is listed");
            Ok(())
        });
    }

    /// Operators read the keys in docs/operations.md: a key `config check`
    /// shows must have its row there.
    #[test]
    fn every_key_is_documented_in_operations_md() {
        let docs = include_str!("../../../docs/operations.md");
        let missing: Vec<&str> = Config::default()
            .describe()
            .into_iter()
            .map(|(key, _)| key)
            .filter(|key| !docs.contains(&format!("| `{key}` |")))
            .collect();
        assert!(
            missing.is_empty(),
            "keys without a row in docs/operations.md: {missing:?}"
        );
    }

    #[test]
    fn tls_settings_come_from_the_environment_and_a_missing_ca_is_named() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("LEADLINE_DATABASE__SSL_MODE", "verify-full");
            let config = load(None).map_err(|e| e.to_string())?;
            assert_eq!(
                config.database.ssl_mode,
                Some(leadline_store::SslMode::VerifyFull)
            );
            assert!(
                config
                    .describe()
                    .contains(&("database.ssl_mode", "verify-full".to_owned()))
            );

            jail.set_env("LEADLINE_DATABASE__SSL_MODE", "verify-everything");
            let err = load(None).expect_err("unknown mode").to_string();
            assert!(err.contains("database.ssl_mode"), "{err}");

            jail.set_env("LEADLINE_DATABASE__SSL_MODE", "verify-ca");
            jail.set_env("LEADLINE_DATABASE__SSL_ROOT_CERT", "no-such-ca.pem");
            let err = load(None).expect_err("missing CA file").to_string();
            assert!(
                err.contains("database.ssl_root_cert: no-such-ca.pem is not a readable file"),
                "{err}"
            );

            jail.create_file("ca.pem", "-----BEGIN CERTIFICATE-----\n")?;
            jail.set_env("LEADLINE_DATABASE__SSL_ROOT_CERT", "ca.pem");
            let config = load(None).map_err(|e| e.to_string())?;
            assert_eq!(
                config.database.ssl_root_cert.as_deref(),
                Some(Path::new("ca.pem"))
            );
            Ok(())
        });
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        figment::Jail::expect_with(|_| {
            let err = load(Some(Path::new("nope.toml")))
                .expect_err("missing")
                .to_string();
            assert!(err.contains("nope.toml"), "{err}");
            Ok(())
        });
    }
}

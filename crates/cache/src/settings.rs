//! The cache's own settings, loaded by the binary's layered config under
//! `cache.*`, and the check that reports every bad value by its key.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// The longest TTL or stale window accepted: a day. Longer would make the TTL
/// useless as the last safety net against a missed invalidation.
const MAX_WINDOW_SECS: u64 = 86_400;
/// The smallest in-process tier accepted. Below this nothing but toy contexts
/// would fit, which is a typo rather than a choice.
const MIN_CAPACITY_BYTES: u64 = 1024;
/// The longest per-call Redis bound accepted. The point of the bound is that
/// a slow Redis costs a request little; ten seconds is already no bound.
const MAX_REDIS_TIMEOUT_MS: u64 = 10_000;

/// How the lead-context cache is set up.
///
/// `Debug` is written by hand so that a password in `redis_url` never reaches
/// a log line.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSettings {
    /// `false` plugs in the null cache: every lookup runs the loader.
    pub enabled: bool,
    /// How long an in-process copy is served without asking anyone.
    pub l1_ttl_secs: u64,
    /// Budget of the in-process tier in bytes, weighed as each context's
    /// JSON plus a fixed per-entry overhead (not an entry count).
    pub l1_capacity_bytes: u64,
    /// How long a copy lives in Redis.
    pub l2_ttl_secs: u64,
    /// `redis://[[user]:password@]host[:port][/db]`. `None` keeps the cache
    /// in-process only (still coherent within one instance). Secret-ish: it
    /// may hold a password, and is only ever logged redacted.
    pub redis_url: Option<String>,
    /// `true`: `redis_url` names a Redis Cluster by one or more of its
    /// nodes, comma-separated (`redis://a:6379,redis://b:6379`), each
    /// without a database index (a cluster has only database 0).
    pub redis_cluster: bool,
    /// Bound on every single Redis call made on a request's path.
    pub redis_timeout_ms: u64,
    /// How long past its freshness a copy may still be served when the loader
    /// fails with `Unavailable`.
    pub stale_if_error_secs: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            l1_ttl_secs: 300,
            l1_capacity_bytes: 256 * 1024 * 1024,
            l2_ttl_secs: 300,
            redis_url: None,
            redis_cluster: false,
            redis_timeout_ms: 50,
            stale_if_error_secs: 60,
        }
    }
}

impl fmt::Debug for CacheSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheSettings")
            .field("enabled", &self.enabled)
            .field("l1_ttl_secs", &self.l1_ttl_secs)
            .field("l1_capacity_bytes", &self.l1_capacity_bytes)
            .field("l2_ttl_secs", &self.l2_ttl_secs)
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("redis_cluster", &self.redis_cluster)
            .field("redis_timeout_ms", &self.redis_timeout_ms)
            .field("stale_if_error_secs", &self.stale_if_error_secs)
            .finish()
    }
}

impl CacheSettings {
    /// Settings for an in-process cache in front of `redis_url`, every other
    /// value at its default.
    #[must_use]
    pub fn for_redis(redis_url: &str) -> Self {
        Self {
            redis_url: Some(redis_url.to_owned()),
            ..Self::default()
        }
    }

    /// Lists every invalid value by its key (`cache.l1_ttl_secs`, …) with the
    /// reason. Empty when the settings are usable.
    #[must_use]
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        let mut window = |key: &'static str, value: u64, min: u64| {
            if value < min || value > MAX_WINDOW_SECS {
                problems.push((
                    key,
                    format!("must be between {min} and {MAX_WINDOW_SECS} seconds, not {value}"),
                ));
            }
        };
        window("cache.l1_ttl_secs", self.l1_ttl_secs, 1);
        window("cache.l2_ttl_secs", self.l2_ttl_secs, 1);
        window("cache.stale_if_error_secs", self.stale_if_error_secs, 0);
        if self.l1_capacity_bytes < MIN_CAPACITY_BYTES {
            problems.push((
                "cache.l1_capacity_bytes",
                format!(
                    "must be at least {MIN_CAPACITY_BYTES} bytes, not {}",
                    self.l1_capacity_bytes
                ),
            ));
        }
        if self.redis_timeout_ms == 0 || self.redis_timeout_ms > MAX_REDIS_TIMEOUT_MS {
            problems.push((
                "cache.redis_timeout_ms",
                format!(
                    "must be between 1 and {MAX_REDIS_TIMEOUT_MS} ms, not {}",
                    self.redis_timeout_ms
                ),
            ));
        }
        match (&self.redis_url, self.redis_cluster) {
            (Some(url), false) => {
                if let Err(why) = check_redis_url(url) {
                    problems.push(("cache.redis_url", why));
                }
            }
            (Some(urls), true) => {
                if let Err(why) = check_cluster_urls(urls) {
                    problems.push(("cache.redis_url", why));
                }
            }
            (None, true) => problems.push((
                "cache.redis_cluster",
                "needs cache.redis_url to name the cluster's nodes".to_owned(),
            )),
            (None, false) => {}
        }
        problems
    }

    /// `redis_url` with every node's credentials replaced by `***`, fit
    /// for logs and `config check`.
    #[must_use]
    pub fn redis_url_redacted(&self) -> Option<String> {
        self.redis_url.as_deref().map(redact_url)
    }

    pub(crate) fn l1_ttl(&self) -> Duration {
        Duration::from_secs(self.l1_ttl_secs)
    }

    pub(crate) fn stale_window(&self) -> Duration {
        Duration::from_secs(self.stale_if_error_secs)
    }

    pub(crate) fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
    }
}

/// Why `url` cannot be used, in words that never repeat the URL itself (it
/// may hold a password).
pub(crate) fn check_redis_url(url: &str) -> Result<(), String> {
    let url = url.trim();
    if url.is_empty() {
        return Err("must not be empty (leave it out for an in-process cache only)".to_owned());
    }
    let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
    match scheme {
        "redis" | "redis+unix" | "unix" => {}
        "rediss" => {
            return Err("TLS (rediss://) is not enabled in this build".to_owned());
        }
        _ => {
            return Err(
                "must look like redis://[[user]:password@]host[:port][/db] (the scheme is not \
                 redis://)"
                    .to_owned(),
            );
        }
    }
    // The client's own parser is the authority; its message is dropped
    // because it may quote the URL.
    redis::Client::open(url).map(drop).map_err(|_| {
        "is not a valid Redis URL (expected redis://[[user]:password@]host[:port][/db])".to_owned()
    })
}

/// The node URLs in a comma-separated list. A comma splits only where a
/// URL scheme follows it, so a password holding a raw comma stays in one
/// piece (and is never shown in part by [`redact_url`]).
pub(crate) fn split_nodes(urls: &str) -> Vec<&str> {
    let mut nodes = Vec::new();
    let mut start = 0;
    for (at, _) in urls.match_indices(',') {
        let rest = urls[at + 1..].trim_start();
        if ["redis://", "rediss://", "redis+unix://", "unix://"]
            .iter()
            .any(|scheme| rest.starts_with(scheme))
        {
            nodes.push(urls[start..at].trim());
            start = at + 1;
        }
    }
    nodes.push(urls[start..].trim());
    nodes
}

/// Why `urls`, a cluster's comma-separated seed nodes, cannot be used;
/// like [`check_redis_url`], never quoting them.
pub(crate) fn check_cluster_urls(urls: &str) -> Result<(), String> {
    for (n, url) in split_nodes(urls).into_iter().enumerate() {
        let node = n + 1;
        check_redis_url(url).map_err(|why| format!("node {node}: {why}"))?;
        let db = redis::Client::open(url.trim())
            .map(|client| client.get_connection_info().redis_settings().db())
            .unwrap_or_default();
        if db != 0 {
            return Err(format!(
                "node {node}: a Redis Cluster has only database 0, not {db}"
            ));
        }
    }
    Ok(())
}

/// `url` with any credentials replaced by `***`, fit for logs.
pub(crate) fn redact_url(url: &str) -> String {
    let nodes = split_nodes(url);
    if nodes.len() > 1 {
        // A cluster's seed nodes, each redacted on its own.
        return nodes
            .into_iter()
            .map(redact_url)
            .collect::<Vec<_>>()
            .join(",");
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        // Not a URL we understand: say nothing about it rather than risk it.
        return "<unparsable URL>".to_owned();
    };
    // Credentials end at the last `@`: a password that was not
    // percent-encoded may itself hold an `@` or a `/`, and a Redis URL's
    // path (the database index) never holds one.
    match rest.rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_as_documented() {
        let settings = CacheSettings::default();
        assert!(settings.problems().is_empty(), "{:?}", settings.problems());
        assert!(settings.enabled);
        assert_eq!(settings.l1_ttl_secs, 300);
        assert_eq!(settings.l1_capacity_bytes, 256 * 1024 * 1024);
        assert_eq!(settings.l2_ttl_secs, 300);
        assert_eq!(settings.redis_url, None);
        assert_eq!(settings.redis_timeout_ms, 50);
        assert_eq!(settings.stale_if_error_secs, 60);
        let with_redis = CacheSettings::for_redis("redis://:pw@127.0.0.1:6379/2");
        assert!(
            with_redis.problems().is_empty(),
            "{:?}",
            with_redis.problems()
        );
    }

    #[test]
    fn every_bad_value_is_named_by_its_key() {
        let settings = CacheSettings {
            enabled: true,
            l1_ttl_secs: 0,
            l1_capacity_bytes: 10,
            l2_ttl_secs: MAX_WINDOW_SECS + 1,
            redis_url: Some("rediss://:hunter2@cache:6380".to_owned()),
            redis_cluster: false,
            redis_timeout_ms: 0,
            stale_if_error_secs: MAX_WINDOW_SECS + 1,
        };
        let problems = settings.problems();
        let keys: Vec<_> = problems.iter().map(|(key, _)| *key).collect();
        assert_eq!(
            keys,
            [
                "cache.l1_ttl_secs",
                "cache.l2_ttl_secs",
                "cache.stale_if_error_secs",
                "cache.l1_capacity_bytes",
                "cache.redis_timeout_ms",
                "cache.redis_url",
            ]
        );
        for (_, why) in &problems {
            assert!(
                !why.contains("hunter2"),
                "a reason leaks the password: {why}"
            );
        }
    }

    #[test]
    fn bad_urls_are_refused_without_being_quoted() {
        for bad in [
            "",
            "  ",
            "http://h:6379",
            "h:6379",
            "redis://:secret@h:notaport",
        ] {
            let why = check_redis_url(bad).expect_err(bad);
            assert!(!why.contains("secret"), "{why}");
        }
        check_redis_url("redis://127.0.0.1:6379").expect("plain URL");
        check_redis_url("redis://user:p%40ss@cache.internal/3").expect("credentials and db");
    }

    #[test]
    fn a_cluster_is_named_by_its_nodes_each_checked_and_redacted() {
        let cluster = |urls: &str| CacheSettings {
            redis_cluster: true,
            ..CacheSettings::for_redis(urls)
        };
        let good = cluster("redis://:pw@10.0.0.1:7000, redis://:pw@10.0.0.2:7001");
        assert!(good.problems().is_empty(), "{:?}", good.problems());
        assert_eq!(
            split_nodes("redis://:a,b@h:1,redis://h:2"),
            ["redis://:a,b@h:1", "redis://h:2"],
            "a comma inside a password does not split"
        );
        assert_eq!(
            redact_url("redis://:a,b@h:1,redis://u:c@h:2"),
            "redis://***@h:1,redis://***@h:2"
        );
        for (urls, reason) in [
            (
                "redis://h:7000,redis://h:7001/3",
                "node 2: a Redis Cluster has only database 0",
            ),
            ("redis://h:7000,http://:secret@h", "node 1: "),
            (
                "redis://:secret@h:notaport",
                "node 1: is not a valid Redis URL",
            ),
        ] {
            let problems = cluster(urls).problems();
            assert_eq!(problems.len(), 1, "{urls}: {problems:?}");
            assert_eq!(problems[0].0, "cache.redis_url");
            assert!(problems[0].1.starts_with(reason), "{urls}: {problems:?}");
            assert!(!problems[0].1.contains("secret"), "{problems:?}");
        }
        let no_url = CacheSettings {
            redis_cluster: true,
            ..CacheSettings::default()
        };
        assert_eq!(no_url.problems()[0].0, "cache.redis_cluster");
    }

    #[test]
    fn deserializes_with_defaults_and_refuses_unknown_keys() {
        let partial: CacheSettings =
            serde_json::from_str(r#"{"redis_url":"redis://h:1","l1_ttl_secs":5}"#)
                .expect("partial settings");
        assert_eq!(partial.l1_ttl_secs, 5);
        assert_eq!(partial.l2_ttl_secs, 300);
        assert_eq!(partial.redis_url.as_deref(), Some("redis://h:1"));
        assert!(serde_json::from_str::<CacheSettings>(r#"{"l1_tll_secs":5}"#).is_err());
    }

    #[test]
    fn urls_are_redacted_for_logs_and_debug() {
        assert_eq!(
            redact_url("redis://user:pa@ss@cache:6379/2"),
            "redis://***@cache:6379/2"
        );
        assert_eq!(redact_url("redis://:pw@h"), "redis://***@h");
        assert_eq!(redact_url("redis://:p/w@h/1"), "redis://***@h/1");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
        assert_eq!(redact_url("garbage:pw@h"), "<unparsable URL>");
        let debug = format!("{:?}", CacheSettings::for_redis("redis://:hunter2@h:1"));
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("redis://***@h:1"), "{debug}");
    }
}

//! What can stop the cache from being built: only its settings. An
//! unreachable Redis is not an error; the cache starts degraded and
//! reconnects by itself.

use std::fmt::Write as _;

/// The cache could not be built.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Some settings are unusable; each is named by its key with the reason.
    #[error("invalid cache settings: {}", list(.0))]
    InvalidSettings(Vec<(&'static str, String)>),
}

fn list(problems: &[(&'static str, String)]) -> String {
    let mut out = String::new();
    for (i, (key, why)) in problems.iter().enumerate() {
        let separator = if i == 0 { "" } else { "; " };
        // Writing to a String cannot fail.
        let _ = write!(out, "{separator}{key} {why}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_every_problem() {
        let error = CacheError::InvalidSettings(vec![
            ("cache.l1_ttl_secs", "must be at least 1".to_owned()),
            ("cache.redis_url", "must not be empty".to_owned()),
        ]);
        assert_eq!(
            error.to_string(),
            "invalid cache settings: cache.l1_ttl_secs must be at least 1; cache.redis_url must \
             not be empty"
        );
    }
}

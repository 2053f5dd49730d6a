//! Bad settings are the only reason the cache does not build.

use leadline_cache::{CacheError, CacheSettings};

#[tokio::test]
async fn bad_settings_are_refused_by_name() {
    let settings = CacheSettings {
        l1_ttl_secs: 0,
        redis_url: Some("rediss://:hunter2@cache:6380".to_owned()),
        ..CacheSettings::default()
    };
    let Err(CacheError::InvalidSettings(problems)) = leadline_cache::build(&settings).await else {
        panic!("bad settings must be refused");
    };
    let keys: Vec<_> = problems.iter().map(|(key, _)| *key).collect();
    assert_eq!(keys, ["cache.l1_ttl_secs", "cache.redis_url"]);
    let message = CacheError::InvalidSettings(problems).to_string();
    assert!(!message.contains("hunter2"), "{message}");

    // A disabled cache ignores the rest.
    let disabled = CacheSettings {
        enabled: false,
        ..settings
    };
    assert!(leadline_cache::build(&disabled).await.is_ok());
}

//! The Redis connection the rate limiter and the session store share the
//! settings of: lazy (creating it never waits on Redis), reconnecting with
//! a short backoff, every call bounded by `cache.redis_timeout_ms`.

use std::time::Duration;

use redis::{Client, aio::ConnectionManager, aio::ConnectionManagerConfig};

use crate::CacheError;

/// A lazily connecting manager for the Redis at `url`.
///
/// # Errors
/// [`CacheError::InvalidSettings`] for a URL the client refuses.
pub(crate) fn connection_manager(
    url: &str,
    timeout: Duration,
) -> Result<ConnectionManager, CacheError> {
    let bad_url =
        |why: &str| CacheError::InvalidSettings(vec![("cache.redis_url", why.to_owned())]);
    // The client's message is dropped: it may quote the URL.
    let client = Client::open(url).map_err(|_| bad_url("is not a valid Redis URL"))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout.max(Duration::from_secs(1))))
        .set_response_timeout(Some(timeout))
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_secs(1))
        .set_number_of_retries(4);
    ConnectionManager::new_lazy_with_config(client, config)
        .map_err(|e| bad_url(&format!("cannot set up a client: {:?}", e.kind())))
}

//! Readiness checks and this crate's own tests talk to Redis through the `redis` crate, the same
//! client the cache adapter uses (its blocking API: the probes run outside any runtime).

use std::time::Duration;

use anyhow::{Context as _, ensure};

/// A blocking connection to the server at `url` (`redis://…[/db]`), with `timeout` on connect,
/// reads and writes, so a wedged server fails the probe instead of hanging it.
///
/// # Errors
///
/// If the URL is not a Redis URL or the server cannot be reached in time.
pub(crate) fn connect(url: &str, timeout: Duration) -> anyhow::Result<redis::Connection> {
    let client = redis::Client::open(url).context("not a Redis URL")?;
    let conn = client
        .get_connection_with_timeout(timeout)
        .with_context(|| format!("connecting to {}", redacted(url)))?;
    conn.set_read_timeout(Some(timeout))?;
    conn.set_write_timeout(Some(timeout))?;
    Ok(conn)
}

/// One `PING` on a new connection; `Ok` only for `PONG`.
///
/// # Errors
///
/// If the server cannot be reached or answers anything else.
pub(crate) fn ping(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let mut conn = connect(url, timeout)?;
    let reply: String = redis::cmd("PING").query(&mut conn).context("PING")?;
    ensure!(reply == "PONG", "PING answered {reply:?}");
    Ok(())
}

/// The URL without its password, for error messages.
fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.into()
        }
        _ => url.to_owned(),
    }
}

//! Asking a background task's shutdown future, between two units of work,
//! whether a stop was requested, without waiting for it.
//!
//! The sealer and the change log's retention drain a backlog in batches. A
//! backlog can be millions of rows (a `leadline import` run leaves its
//! audit records for the next `serve` to seal), and a stop that waited for
//! all of it held SIGTERM for a minute. Each batch is its own transaction,
//! so stopping between two is safe; the next instance carries on.

use std::{future::Future, pin::Pin};

use futures::FutureExt;

/// Whether `shutdown` has completed. Once this returned `true` the future
/// must not be polled again (an `async` block panics when resumed after
/// completion): the caller returns.
pub(crate) fn requested<F: Future<Output = ()>>(shutdown: Pin<&mut F>) -> bool {
    shutdown.now_or_never().is_some()
}

/// Runs `batch` until one does less than `full` or `go_on` says stop (asked
/// after each full batch); what they did in all.
///
/// # Errors
/// The first batch's error; the batches before it stay done.
pub(crate) async fn drain<E, F>(
    full: u64,
    mut batch: impl FnMut() -> F,
    mut go_on: impl FnMut() -> bool,
) -> Result<u64, E>
where
    F: Future<Output = Result<u64, E>>,
{
    let mut total = 0;
    loop {
        let n = batch().await?;
        total += n;
        if n < full || !go_on() {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::Notify;

    use super::*;

    /// Batches of 10 from a backlog of `left`, at most 10 at a time.
    fn backlog(left: &mut u64) -> impl Future<Output = Result<u64, &'static str>> + use<> {
        let n = (*left).min(10);
        *left -= n;
        std::future::ready(Ok(n))
    }

    #[tokio::test]
    async fn a_drain_ends_at_the_first_short_batch() {
        let mut left = 35;
        let done = drain(10, || backlog(&mut left), || true).await;
        assert_eq!(done, Ok(35));
        assert_eq!(left, 0);
        // A backlog of whole batches ends with an empty one.
        let mut left = 20;
        let mut batches = 0;
        let done = drain(
            10,
            || {
                batches += 1;
                backlog(&mut left)
            },
            || true,
        )
        .await;
        assert_eq!((done, batches), (Ok(20), 3));
    }

    #[tokio::test]
    async fn a_drain_stops_when_asked_and_on_an_error() {
        let mut left = 100;
        let mut asked = 0;
        let done = drain(
            10,
            || backlog(&mut left),
            || {
                asked += 1;
                asked < 2
            },
        )
        .await;
        assert_eq!(done, Ok(20), "a stop is asked after each full batch");
        assert_eq!(left, 80);
        let mut calls = 0;
        let failed = drain(
            10,
            || {
                calls += 1;
                std::future::ready(if calls < 3 { Ok(10) } else { Err("store down") })
            },
            || true,
        )
        .await;
        assert_eq!((failed, calls), (Err("store down"), 3));
    }

    #[tokio::test]
    async fn a_stop_is_seen_once_notified_and_not_before() {
        let stop = Arc::new(Notify::new());
        let stopped = stop.clone();
        let shutdown = async move { stopped.notified().await };
        tokio::pin!(shutdown);
        assert!(!requested(shutdown.as_mut()));
        assert!(!requested(shutdown.as_mut()), "asking twice is fine");
        stop.notify_one();
        assert!(requested(shutdown.as_mut()));
    }
}

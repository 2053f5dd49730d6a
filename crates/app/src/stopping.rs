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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::Notify;

    use super::*;

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

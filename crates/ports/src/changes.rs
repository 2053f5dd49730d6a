//! The change-log port: what `GET /v1/changes` and its subscribers read.
//! The store writes each change in the transaction of its write; this port
//! reads them back in log order, says where the log ends, prunes old rows,
//! and wakes readers when a tenant's log may have grown.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use leadline_domain::{ChangePosition, LoggedChange, TenantId};

use crate::errors::Unavailable;

/// Failure of a change-log operation; see the crate docs for when each
/// variant is returned.
#[derive(Debug, thiserror::Error)]
pub enum ChangeLogError {
    /// Retention removed changes after `after`: a reader there would miss
    /// them. It must start again from the present (and resynchronise what
    /// it keeps by reading the entities).
    #[error(
        "changes after {after} are no longer kept (retention removed up to {horizon}): start again from the present"
    )]
    Expired {
        /// Where the reader asked to continue.
        after: ChangePosition,
        /// The newest position retention removed.
        horizon: ChangePosition,
    },
    /// `after` lies past the end of the log: it is no position this log
    /// gave (the database was restored or reset since, or it is another
    /// log's). The reader must start again from the present.
    #[error("{after} is past the end of this log ({head}): start again from the present")]
    Ahead {
        /// Where the reader asked to continue.
        after: ChangePosition,
        /// Where the log ends.
        head: ChangePosition,
    },
    /// The backend could not be reached in time.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    /// Anything else: a bug or an unexpected backend failure.
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

/// A stretch of one tenant's log.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeSpan {
    /// The changes, in log order.
    pub items: Vec<LoggedChange>,
    /// The position to continue after: the last change in `items`, or the
    /// position asked for when there was none.
    pub last: ChangePosition,
    /// Whether more changes were already there (the span was cut at its
    /// limit).
    pub has_more: bool,
}

/// The change log.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait ChangeLog: Send + Sync {
    /// Up to `limit` of `tenant`'s changes after `after`, in log order:
    /// only changes no concurrent writer can still precede, so continuing
    /// after the last one never skips a change that commits later.
    ///
    /// # Errors
    /// `Expired` when retention removed changes after `after`.
    async fn after(
        &self,
        tenant: TenantId,
        after: ChangePosition,
        limit: u32,
    ) -> Result<ChangeSpan, ChangeLogError>;

    /// Where `tenant`'s log ends now: a reader starting here sees only
    /// later changes.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn head(&self, tenant: TenantId) -> Result<ChangePosition, ChangeLogError>;

    /// Removes up to `max_rows` changes older than `older_than`, across
    /// tenants, remembering per tenant the newest position removed.
    /// Returns how many went.
    ///
    /// # Errors
    /// Only `Unavailable` or `Unknown`.
    async fn prune(&self, older_than: DateTime<Utc>, max_rows: u32) -> Result<u64, ChangeLogError>;

    /// Tenants whose log may have grown, as they commit (on this instance,
    /// and on others where the backend can tell: PostgreSQL's
    /// `LISTEN`/`NOTIFY`). A hint, never the truth: a reader reads the log.
    fn wakeups(&self) -> tokio::sync::broadcast::Receiver<TenantId>;
}

//! Translation of driver errors at the adapter boundary. `DbErr` never
//! leaves this crate: each repository maps a [`Failure`] onto its port's
//! error enum.

use leadline_ports::Unavailable;
use sea_orm::{DbErr, RuntimeErr, SqlErr, sqlx};

/// A database error sorted by what a caller can do about it.
#[derive(Debug)]
pub(crate) enum Failure {
    /// A unique constraint refused the write; carries the constraint text.
    Unique(String),
    /// A foreign key refused the write.
    ForeignKey(String),
    /// A fault that a fresh attempt of the whole transaction may not meet:
    /// see [`Transient`]. Retried by [`crate::Store`]'s transaction runner;
    /// once the retries are spent it is reported as unavailable.
    Transient(Transient, String),
    /// The database could not be reached, no connection was free in time,
    /// or a COMMIT's outcome could not be resolved.
    Unavailable(Unavailable),
    /// The database's storage is full (SQLite `SQLITE_FULL`, PostgreSQL
    /// SQLSTATE 53100 `disk_full`): nothing was written. Not retried, since
    /// space comes back only when someone frees it; reported as unavailable
    /// and noted for `/readyz` ([`crate::Store::storage_full`]).
    StorageFull(String),
    /// Anything else.
    Other(anyhow::Error),
}

/// Why a transaction may succeed if run again from the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transient {
    /// SQLSTATE 40001: another transaction's write made this one
    /// unserialisable.
    Serialization,
    /// SQLSTATE 40P01: PostgreSQL broke a deadlock by aborting this one.
    Deadlock,
    /// The connection broke or the server refused it (I/O error, SQLSTATE
    /// class 08, 57P01-57P03 shutdown, 53300 too many connections). Before
    /// COMMIT the server has rolled the transaction back, so a rerun is safe.
    Connection,
    /// SQLite: another connection (another process on the same file) held
    /// the lock past `busy_timeout`, or wrote after this transaction's read
    /// snapshot (`SQLITE_BUSY` and `SQLITE_LOCKED` with their extended
    /// codes, e.g. 517 `BUSY_SNAPSHOT`). Nothing of this transaction was
    /// written; a rerun takes a fresh snapshot.
    Busy,
}

impl Transient {
    /// The `cause` label of `db_retries_total`.
    pub(crate) const fn label(self) -> &'static str {
        match self {
            Self::Serialization => "serialization_failure",
            Self::Deadlock => "deadlock",
            Self::Connection => "connection",
            Self::Busy => "busy",
        }
    }
}

/// PostgreSQL SQLSTATEs that mean "the server is going away or refusing
/// connections", as opposed to "your statement is wrong".
fn connection_sqlstate(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || code == "57P01" // admin_shutdown
        || code == "57P02" // crash_shutdown
        || code == "57P03" // cannot_connect_now
        || code == "53300" // too_many_connections
}

/// SQLite's busy and locked result codes, primary and extended (sqlx
/// reports the extended one): 5 `BUSY`, 261 `BUSY_RECOVERY`, 517
/// `BUSY_SNAPSHOT`, 773 `BUSY_TIMEOUT`, 6 `LOCKED`, 262
/// `LOCKED_SHAREDCACHE`. SQLSTATEs have five characters, so these cannot be
/// mistaken for PostgreSQL's.
fn sqlite_busy(code: &str) -> bool {
    matches!(code, "5" | "261" | "517" | "773" | "6" | "262")
}

/// Sorts a driver error by whether a rerun could succeed. `None` for errors
/// a rerun would only repeat, and for a pool that is exhausted or closed:
/// retrying those would turn a fast 503 into a slow one.
fn sqlx_transient(err: &sqlx::Error) -> Option<Transient> {
    match err {
        sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed => Some(Transient::Connection),
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("40001") => Some(Transient::Serialization),
            Some("40P01") => Some(Transient::Deadlock),
            Some(code) if connection_sqlstate(code) => Some(Transient::Connection),
            Some(code) if sqlite_busy(code) => Some(Transient::Busy),
            _ => None,
        },
        _ => None,
    }
}

/// Whether the database refused a write for lack of space: SQLite's primary
/// result code 13 (`SQLITE_FULL`, which sqlx reports as the extended code,
/// and `SQLITE_FULL` has no extended variants) or PostgreSQL's SQLSTATE
/// 53100. The two code spaces cannot collide: SQLSTATEs have five characters.
fn sqlx_storage_full(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => matches!(db.code().as_deref(), Some("13" | "53100")),
        _ => false,
    }
}

fn sqlx_unavailable(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed)
}

impl From<DbErr> for Failure {
    fn from(err: DbErr) -> Self {
        match err.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(m)) => return Self::Unique(m),
            Some(SqlErr::ForeignKeyConstraintViolation(m)) => return Self::ForeignKey(m),
            _ => {}
        }
        let sqlx_err = match &err {
            DbErr::Conn(RuntimeErr::SqlxError(e))
            | DbErr::Exec(RuntimeErr::SqlxError(e))
            | DbErr::Query(RuntimeErr::SqlxError(e)) => Some(e.as_ref()),
            _ => None,
        };
        if sqlx_err.is_some_and(sqlx_storage_full) {
            return Self::StorageFull(err.to_string());
        }
        if let Some(cause) = sqlx_err.and_then(sqlx_transient) {
            return Self::Transient(cause, err.to_string());
        }
        let unavailable = match &err {
            DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
            _ => sqlx_err.is_some_and(sqlx_unavailable),
        };
        if unavailable {
            Self::Unavailable(Unavailable(err.to_string()))
        } else {
            Self::Other(anyhow::Error::new(err))
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(err: anyhow::Error) -> Self {
        Self::Other(err)
    }
}

/// Maps the failures every operation shares; the caller handles its
/// business variants (`Unique`, `ForeignKey`) first.
macro_rules! common {
    ($failure:expr, $err:ident) => {
        match $failure {
            $crate::errors::Failure::Unavailable(u) => $err::Unavailable(u),
            $crate::errors::Failure::StorageFull(m) => $err::Unavailable(
                leadline_ports::Unavailable(format!("storage full, nothing was written: {m}")),
            ),
            $crate::errors::Failure::Transient(_, m) => {
                $err::Unavailable(leadline_ports::Unavailable(m))
            }
            $crate::errors::Failure::Other(e) => $err::Unknown(e),
            $crate::errors::Failure::Unique(m) | $crate::errors::Failure::ForeignKey(m) => {
                $err::Unknown(anyhow::anyhow!("unexpected constraint violation: {m}"))
            }
        }
    };
}
pub(crate) use common;

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
    /// The database could not be reached, or no connection was free in time.
    Unavailable(Unavailable),
    /// Anything else.
    Other(anyhow::Error),
}

/// PostgreSQL SQLSTATEs that mean "the server is going away or refusing
/// connections", as opposed to "your statement is wrong".
fn unavailable_sqlstate(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || code == "57P01" // admin_shutdown
        || code == "57P02" // crash_shutdown
        || code == "57P03" // cannot_connect_now
        || code == "53300" // too_many_connections
}

fn sqlx_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| unavailable_sqlstate(&c)),
        _ => false,
    }
}

impl From<DbErr> for Failure {
    fn from(err: DbErr) -> Self {
        match err.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(m)) => return Self::Unique(m),
            Some(SqlErr::ForeignKeyConstraintViolation(m)) => return Self::ForeignKey(m),
            _ => {}
        }
        let unavailable = match &err {
            DbErr::ConnectionAcquire(_) => true,
            DbErr::Conn(RuntimeErr::SqlxError(e))
            | DbErr::Exec(RuntimeErr::SqlxError(e))
            | DbErr::Query(RuntimeErr::SqlxError(e)) => {
                matches!(err, DbErr::Conn(_)) || sqlx_unavailable(e)
            }
            DbErr::Conn(_) => true,
            _ => false,
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
            $crate::errors::Failure::Other(e) => $err::Unknown(e),
            $crate::errors::Failure::Unique(m) | $crate::errors::Failure::ForeignKey(m) => {
                $err::Unknown(anyhow::anyhow!("unexpected constraint violation: {m}"))
            }
        }
    };
}
pub(crate) use common;

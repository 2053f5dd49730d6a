//! The instants leadline stores and accepts.
//!
//! Both stores must hold every instant the API accepts, and read it back:
//! PostgreSQL's `timestamptz` spans 4713 BC to 294276 AD, while SQLite keeps
//! text that sorts correctly only for four-digit years. Years 1 to 9999
//! (UTC) fit both, so any instant from a client (an event's `occurred_at`,
//! the time inside a cursor) is checked against that range first.

use chrono::{DateTime, NaiveDate, Utc};

use crate::ValueError;

/// The earliest storable instant: 0001-01-01T00:00:00Z.
#[must_use]
pub fn earliest() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(1, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(DateTime::<Utc>::MIN_UTC, |t| t.and_utc())
}

/// The latest storable instant: 9999-12-31T23:59:59.999999Z.
#[must_use]
pub fn latest() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(9999, 12, 31)
        .and_then(|d| d.and_hms_micro_opt(23, 59, 59, 999_999))
        .map_or(DateTime::<Utc>::MAX_UTC, |t| t.and_utc())
}

/// Checks that `t` lies in years 1 to 9999.
///
/// # Errors
/// [`ValueError::Invalid`] outside that range.
pub fn check_storable(t: DateTime<Utc>) -> Result<DateTime<Utc>, ValueError> {
    if t < earliest() || t > latest() {
        return Err(ValueError::Invalid(
            "must be a time between the years 1 and 9999",
        ));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_is_years_1_to_9999() {
        assert!(check_storable(earliest()).is_ok());
        assert!(check_storable(latest()).is_ok());
        assert!(check_storable(earliest() - chrono::Duration::microseconds(1)).is_err());
        assert!(check_storable(latest() + chrono::Duration::microseconds(1)).is_err());
        let bc = NaiveDate::from_ymd_opt(-4800, 1, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc())
            .expect("valid date");
        assert!(check_storable(bc).is_err());
        assert!(check_storable(Utc::now()).is_ok());
    }
}

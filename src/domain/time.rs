//! The one range of times and dates the crate accepts, and the one form it
//! keeps them in: UTC, whole microseconds, years 1 to 9999.
//!
//! Why this range: every backend stores it (PostgreSQL's `timestamptz`
//! and `date` reach much further, chrono further still, but each the other
//! way round somewhere), and every text format the crate writes can be
//! read back by its importers — RFC 3339 and `YYYY-MM-DD` have four-digit
//! years, so an instant in the year 10000 would be exported in a form
//! (`+10000-…`) no importer takes. Checking it once, here, before a value
//! reaches a store is what keeps the two backends answering alike: the
//! database never sees a time the domain did not accept.
//!
//! Why this form: PostgreSQL keeps microseconds, and folds a leap second
//! (chrono's `23:59:60`) into the next second; the in-memory store keeps
//! what it is given. [`truncate_to_micros`](super::truncate_to_micros)
//! does both to every time that enters, so both stores hold the same.

use chrono::{DateTime, NaiveDate, Utc};

use super::Timestamp;
use crate::domain::error::{FieldError, ValidationErrors};

/// The earliest instant accepted, 0001-01-01T00:00:00Z, in microseconds
/// since the Unix epoch.
pub const EARLIEST_MICROS: i64 = -62_135_596_800_000_000;

/// The latest instant accepted, 9999-12-31T23:59:59.999999Z, in
/// microseconds since the Unix epoch.
pub const LATEST_MICROS: i64 = 253_402_300_799_999_999;

/// The earliest instant accepted: 0001-01-01T00:00:00Z.
pub fn earliest_timestamp() -> Timestamp {
    DateTime::from_timestamp_micros(EARLIEST_MICROS).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// The latest instant accepted: 9999-12-31T23:59:59.999999Z.
pub fn latest_timestamp() -> Timestamp {
    DateTime::from_timestamp_micros(LATEST_MICROS).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The earliest date accepted: 0001-01-01.
pub fn earliest_date() -> NaiveDate {
    NaiveDate::from_ymd_opt(1, 1, 1).unwrap_or(NaiveDate::MIN)
}

/// The latest date accepted: 9999-12-31.
pub fn latest_date() -> NaiveDate {
    NaiveDate::from_ymd_opt(9999, 12, 31).unwrap_or(NaiveDate::MAX)
}

/// `t` in the form every store keeps ([`truncate_to_micros`](super::truncate_to_micros)),
/// checked to be within years 1–9999 (UTC); the error names `field`.
///
/// Every operation that takes a time calls this first, on every backend.
pub fn check_timestamp(field: &str, t: Timestamp) -> Result<Timestamp, FieldError> {
    let t = super::truncate_to_micros(t);
    let micros = t.timestamp_micros();
    if (EARLIEST_MICROS..=LATEST_MICROS).contains(&micros) {
        Ok(t)
    } else {
        Err(out_of_range(field, &t.to_rfc3339()))
    }
}

/// [`check_timestamp`] of several times at once, reporting every one out
/// of range (for operations that take more than one, such as a range).
pub fn check_timestamps<const N: usize>(
    times: [(&str, Timestamp); N],
) -> Result<[Timestamp; N], ValidationErrors> {
    let mut errors = ValidationErrors::new();
    let mut out = [Timestamp::UNIX_EPOCH; N];
    for (slot, (field, t)) in out.iter_mut().zip(times) {
        if let Some(t) = errors.check(check_timestamp(field, t)) {
            *slot = t;
        }
    }
    errors.finish(|| out)
}

/// [`check_timestamp`] of an optional time.
pub fn check_optional_timestamp(
    field: &str,
    t: Option<Timestamp>,
) -> Result<Option<Timestamp>, FieldError> {
    t.map(|t| check_timestamp(field, t)).transpose()
}

/// The instant `micros` microseconds after the Unix epoch, if it is within
/// years 1–9999; the error names `field`.
pub fn timestamp_from_micros(field: &str, micros: i64) -> Result<Timestamp, FieldError> {
    if !(EARLIEST_MICROS..=LATEST_MICROS).contains(&micros) {
        return Err(out_of_range(field, &format!("{micros} µs since 1970")));
    }
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| out_of_range(field, &format!("{micros} µs since 1970")))
}

/// `d` checked to be within years 1–9999; the error names `field`.
pub fn check_date(field: &str, d: NaiveDate) -> Result<NaiveDate, FieldError> {
    if (earliest_date()..=latest_date()).contains(&d) {
        Ok(d)
    } else {
        Err(FieldError::new(
            field,
            "out_of_range",
            format!("must be a date from 0001-01-01 to 9999-12-31, got {d}"),
        ))
    }
}

fn out_of_range(field: &str, got: &str) -> FieldError {
    FieldError::new(
        field,
        "out_of_range",
        format!(
            "must be a time from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z, got {got}"
        ),
    )
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};

    use super::*;

    #[test]
    fn the_ends_of_the_range_are_the_first_and_last_microseconds_of_years_1_and_9999() {
        assert_eq!(
            earliest_timestamp(),
            Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).unwrap()
        );
        assert_eq!(
            latest_timestamp() + Duration::microseconds(1),
            Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap()
        );
        assert_eq!(
            earliest_timestamp().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "0001-01-01T00:00:00.000000Z"
        );
        assert_eq!(
            latest_timestamp().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "9999-12-31T23:59:59.999999Z"
        );
    }

    #[test]
    fn a_time_a_nanosecond_before_the_end_is_truncated_into_the_range() {
        let t = latest_timestamp() + Duration::nanoseconds(999);
        assert_eq!(check_timestamp("at", t), Ok(latest_timestamp()));
        let before = earliest_timestamp() - Duration::nanoseconds(1);
        assert_eq!(
            check_timestamp("at", before).unwrap_err().code,
            "out_of_range"
        );
    }
}

//! The times a record had in the system it is imported from: when it was
//! created and when it last changed there, so that a tenant moved from
//! another CRM keeps its age (the scoring lookback and the decay of
//! `deal_exists` run from these times, not from the day of the import).
//!
//! Each time is within the accepted range ([`check_timestamp`]), not after
//! the clock of whoever checks it (no tolerance: a time one microsecond
//! after `now` is refused), and `updated_at` is not before `created_at`.

use super::{Timestamp, check_timestamp};
use crate::domain::error::{FieldError, ValidationErrors};

/// The field name of an original creation time.
pub(crate) const CREATED_AT: &str = "created_at";
/// The field name of an original time of last change.
pub(crate) const UPDATED_AT: &str = "updated_at";

/// When a record was created and last changed in the system it comes from.
///
/// Valid by construction ([`OriginalTimes::new`]): both times within years
/// 1–9999 at microsecond precision, neither in the future, and
/// `created_at <= updated_at`. A store creating a record with original
/// times keeps them as its `created_at` and `updated_at`; the record's
/// history version is still written at the time of the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OriginalTimes {
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl OriginalTimes {
    /// Original times checked against the current time (UTC).
    ///
    /// Errors: every reason at once, each naming `created_at` or
    /// `updated_at`: `out_of_range` (outside years 1–9999), `in_future`
    /// (after now), `out_of_order` (`updated_at` before `created_at`).
    pub fn new(
        created_at: Timestamp,
        updated_at: Timestamp,
    ) -> Result<OriginalTimes, ValidationErrors> {
        Self::new_at(created_at, updated_at, now())
    }

    /// [`new`](Self::new) with `now` given (a test's clock, or a load's
    /// own start time): a time after `now` is refused.
    pub fn new_at(
        created_at: Timestamp,
        updated_at: Timestamp,
        now: Timestamp,
    ) -> Result<OriginalTimes, ValidationErrors> {
        Self::named(CREATED_AT, created_at, UPDATED_AT, updated_at, now)
    }

    /// [`new_at`](Self::new_at) reporting errors under the given names
    /// (an importer's column names).
    pub(crate) fn named(
        created_field: &str,
        created_at: Timestamp,
        updated_field: &str,
        updated_at: Timestamp,
        now: Timestamp,
    ) -> Result<OriginalTimes, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let created = errors.check(check_past(created_field, created_at, now));
        let updated = errors.check(check_past(updated_field, updated_at, now));
        if let (Some(c), Some(u)) = (created, updated)
            && u < c
        {
            errors.push(FieldError::new(
                updated_field,
                "out_of_order",
                format!(
                    "must not be before {created_field} ({}), got {}",
                    rfc3339(c),
                    rfc3339(u)
                ),
            ));
        }
        match (created, updated) {
            (Some(created_at), Some(updated_at)) => errors.finish(|| OriginalTimes {
                created_at,
                updated_at,
            }),
            _ => Err(errors),
        }
    }

    /// When the record was created in the system it comes from.
    pub fn created_at(&self) -> Timestamp {
        self.created_at
    }

    /// When it last changed there.
    pub fn updated_at(&self) -> Timestamp {
        self.updated_at
    }

    /// The same times, checked again against `now` (a store's clock): a
    /// value built with [`new_at`](Self::new_at) and a later `now` is
    /// refused by the store as it would have been at construction.
    pub(crate) fn recheck(self, now: Timestamp) -> Result<OriginalTimes, ValidationErrors> {
        Self::new_at(self.created_at, self.updated_at, now)
    }
}

/// The current time as the stores keep it.
pub(crate) fn now() -> Timestamp {
    super::truncate_to_micros(chrono::Utc::now())
}

/// `t` normalised ([`check_timestamp`]) and not after `now`; the error
/// names `field` (`out_of_range` or `in_future`).
pub fn check_past(field: &str, t: Timestamp, now: Timestamp) -> Result<Timestamp, FieldError> {
    let t = check_timestamp(field, t)?;
    if t > now {
        return Err(FieldError::new(
            field,
            "in_future",
            format!(
                "must not be in the future (after {}), got {}",
                rfc3339(now),
                rfc3339(t)
            ),
        ));
    }
    Ok(t)
}

fn rfc3339(t: Timestamp) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// The original times sent as two optional RFC 3339 texts, which go
/// together: `Some(None)` when both are absent, `None` when an error was
/// recorded.
pub(crate) fn parse_original(
    errors: &mut ValidationErrors,
    created_at: Option<&str>,
    updated_at: Option<&str>,
) -> Option<Option<OriginalTimes>> {
    let created_at = created_at.filter(|v| !v.trim().is_empty());
    let updated_at = updated_at.filter(|v| !v.trim().is_empty());
    match (created_at, updated_at) {
        (None, None) => Some(None),
        (Some(c), Some(u)) => {
            let c = errors.check(super::activity::parse_timestamp(CREATED_AT, c));
            let u = errors.check(super::activity::parse_timestamp(UPDATED_AT, u));
            let (c, u) = (c?, u?);
            match OriginalTimes::new(c, u) {
                Ok(t) => Some(Some(t)),
                Err(e) => {
                    for e in e {
                        errors.push(e);
                    }
                    None
                }
            }
        }
        (Some(_), None) => {
            errors.push(FieldError::new(
                UPDATED_AT,
                "required",
                format!("is required with {CREATED_AT}"),
            ));
            None
        }
        (None, Some(_)) => {
            errors.push(FieldError::new(
                CREATED_AT,
                "required",
                format!("is required with {UPDATED_AT}"),
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone, Utc};

    use super::*;

    fn at(y: i32) -> Timestamp {
        Utc.with_ymd_and_hms(y, 6, 1, 12, 0, 0).unwrap()
    }

    #[test]
    fn a_time_one_microsecond_after_now_is_in_the_future() {
        let now = at(2020);
        let e = OriginalTimes::new_at(at(2019), now + Duration::microseconds(1), now).unwrap_err();
        let e: Vec<_> = e.for_field("updated_at").collect();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].code, "in_future");
        assert!(OriginalTimes::new_at(now, now, now).is_ok());
    }

    #[test]
    fn updated_before_created_is_out_of_order_on_updated_at() {
        let e = OriginalTimes::new_at(at(2019), at(2018), at(2020)).unwrap_err();
        assert_eq!(e.as_slice().len(), 1);
        assert_eq!(e.as_slice()[0].field, "updated_at");
        assert_eq!(e.as_slice()[0].code, "out_of_order");
    }

    #[test]
    fn both_times_out_of_range_are_both_reported() {
        let year0 = Utc.with_ymd_and_hms(0, 6, 1, 0, 0, 0).unwrap();
        let year10000 = Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap();
        let e = OriginalTimes::new_at(year0, year10000, year10000).unwrap_err();
        let codes: Vec<_> = e.as_slice().iter().map(|e| (&*e.field, e.code)).collect();
        assert_eq!(
            codes,
            [
                ("created_at", "out_of_range"),
                ("updated_at", "out_of_range")
            ]
        );
    }

    #[test]
    fn the_times_are_kept_at_microsecond_precision() {
        let c = at(2001) + Duration::nanoseconds(1_234_567);
        let t = OriginalTimes::new_at(c, c, at(2020)).unwrap();
        assert_eq!(t.created_at(), at(2001) + Duration::microseconds(1_234));
        assert_eq!(t.updated_at(), t.created_at());
    }

    #[test]
    fn one_time_without_the_other_is_required_on_the_missing_one() {
        let mut errors = ValidationErrors::new();
        assert_eq!(
            parse_original(&mut errors, Some("2001-01-01T00:00:00Z"), None),
            None
        );
        assert_eq!(errors.as_slice()[0].field, "updated_at");
        assert_eq!(errors.as_slice()[0].code, "required");
        let mut errors = ValidationErrors::new();
        assert_eq!(parse_original(&mut errors, Some(" "), None), Some(None));
        assert!(errors.is_empty());
    }

    #[test]
    fn a_malformed_time_is_invalid_format_naming_its_field() {
        let mut errors = ValidationErrors::new();
        assert_eq!(
            parse_original(&mut errors, Some("yesterday"), Some("2001-01-01T00:00:00Z")),
            None
        );
        assert_eq!(errors.as_slice().len(), 1);
        assert_eq!(errors.as_slice()[0].field, "created_at");
        assert_eq!(errors.as_slice()[0].code, "invalid_format");
    }
}

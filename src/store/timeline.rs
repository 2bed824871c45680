//! A contact's activity timeline and behavioural signals ([`TimelineTx`]).

use async_trait::async_trait;

use crate::{
    domain::*,
    error::{Error, FieldError, Result, ValidationErrors},
};

/// A contact's activities and signals. Part of [`Transaction`](crate::Transaction).
#[async_trait]
pub trait TimelineTx: Send {
    /// Logs an activity on a contact's timeline (and, optionally, one of
    /// its deals). Without `occurred_at`, it happened when it was logged:
    /// `occurred_at == created_at`. With
    /// [`NewActivity::original_created_at`] (when it was logged in the
    /// system it is imported from), that is its `created_at`.
    ///
    /// Errors: [`Error::NotFound`] for the contact or the deal;
    /// [`Error::Validation`] on `deal_id` when the deal belongs to another
    /// contact.
    async fn log_activity(&mut self, new: NewActivity) -> Result<Activity>;

    /// Logs `new` in order, as many calls of
    /// [`log_activity`](Self::log_activity) would, and returns the
    /// activities in the same order: each row is checked and built as one
    /// call checks and builds it, and each adds its term to its contact's
    /// live score and moves its freshness. All or nothing: when a row is
    /// refused, nothing of the batch is written (the transaction goes on).
    /// An empty batch is no write. The rows' text does not bound a
    /// batch: on PostgreSQL its rows go in as many statements as keep each
    /// within the server's limits, in one operation.
    ///
    /// Errors: those of [`log_activity`](Self::log_activity) for the first
    /// row (in order) that fails them: [`Error::NotFound`] names the
    /// contact or the deal it names; the fields of an
    /// [`Error::Validation`] are the row's, prefixed with its index
    /// (`activities[3].deal_id`; see [`batch_row`]).
    async fn log_activities(&mut self, new: &[NewActivity]) -> Result<Vec<Activity>>;

    /// A contact's activities, newest first (`occurred_at`, then id,
    /// descending). Empty for a contact that does not exist.
    async fn timeline(&mut self, contact: ContactId, page: &PageRequest) -> Result<Page<Activity>>;

    /// The first page of each of `contacts`' timelines, in the order given:
    /// what [`timeline`](Self::timeline) gives it for
    /// `PageRequest::first(limit)`, its next cursor included (a contact
    /// listed twice gets its page twice; a contact that does not exist, an
    /// empty page). At most [`MAX_GET_MANY`](crate::store::MAX_GET_MANY)
    /// contacts. For pages of contacts (the exports): on PostgreSQL one
    /// statement, where a timeline per contact takes one each. The default
    /// reads each contact's timeline in turn.
    ///
    /// Errors: [`Error::Validation`] on `contacts` when it lists more, on
    /// `limit` out of range.
    async fn first_timeline_pages(
        &mut self,
        contacts: &[ContactId],
        limit: u32,
    ) -> Result<Vec<Page<Activity>>> {
        let page = PageRequest::first(limit);
        page.checked_limit()?;
        crate::store::check_get_many("contacts", contacts.len())?;
        let mut out = Vec::with_capacity(contacts.len());
        for contact in contacts {
            out.push(self.timeline(*contact, &page).await?);
        }
        Ok(out)
    }

    /// Records a behavioural signal for a contact.
    ///
    /// Errors: [`Error::NotFound`] for the contact.
    async fn record_signal(&mut self, new: NewSignal) -> Result<Signal>;

    /// Records `new` in order, as many calls of
    /// [`record_signal`](Self::record_signal) would, and returns the
    /// signals in the same order; all or nothing, as
    /// [`log_activities`](Self::log_activities). An empty batch is no
    /// write.
    ///
    /// Errors: those of [`record_signal`](Self::record_signal) for the
    /// first row (in order) that fails them: [`Error::NotFound`] names the
    /// contact; the fields of an [`Error::Validation`] are prefixed with the
    /// row's index (`signals[0].occurred_at`).
    async fn record_signals(&mut self, new: &[NewSignal]) -> Result<Vec<Signal>>;

    /// A contact's signals, oldest first (`occurred_at`, then id). Empty
    /// for a contact that does not exist.
    async fn list_signals(&mut self, contact: ContactId) -> Result<Vec<Signal>>;

    /// The signals of each of `contacts`, in the order given: what
    /// [`list_signals`](Self::list_signals) gives each (a contact listed
    /// twice gets its list twice; a contact that does not exist, an empty
    /// one). At most [`MAX_GET_MANY`](crate::store::MAX_GET_MANY)
    /// contacts; every signal of each is held, so list fewer contacts when
    /// some have many. For pages of contacts (the exports): on PostgreSQL
    /// one statement, where a list per contact takes one each. The default
    /// reads each contact's signals in turn.
    ///
    /// Errors: [`Error::Validation`] on `contacts` when it lists more.
    async fn signals_of_many(&mut self, contacts: &[ContactId]) -> Result<Vec<Vec<Signal>>> {
        crate::store::check_get_many("contacts", contacts.len())?;
        let mut out = Vec::with_capacity(contacts.len());
        for contact in contacts {
            out.push(self.list_signals(*contact).await?);
        }
        Ok(out)
    }
}

/// The row of a batch (of [`TimelineTx::log_activities`] or
/// [`TimelineTx::record_signals`]) that a validation error names, and the
/// field of that row: `Some((3, "deal_id"))` for
/// `activities[3].deal_id`. `None` for a field that names no row.
pub fn batch_row(field: &str) -> Option<(usize, &str)> {
    let (_, rest) = field.split_once('[')?;
    let (index, rest) = rest.split_once("].")?;
    Some((index.parse().ok()?, rest))
}

/// `e` as the error of row `index` of the batch `list` (`activities`,
/// `signals`): the fields of a validation error prefixed with the row.
pub(crate) fn row_error(list: &str, index: usize, e: Error) -> Error {
    match e {
        Error::Validation(errors) => {
            let mut prefixed = ValidationErrors::new();
            for f in errors {
                prefixed.push(FieldError::new(
                    format!("{list}[{index}].{}", f.field),
                    f.code,
                    f.reason,
                ));
            }
            Error::Validation(prefixed)
        }
        other => other,
    }
}

/// The rows of a batch checked with `check`, in order, up to the first
/// refused one: the rows before it, checked, and its error (named by
/// [`row_error`] in the batch `list`).
#[cfg(feature = "postgres")]
pub(crate) fn checked_rows<T: Clone>(
    list: &str,
    new: &[T],
    check: impl Fn(T) -> std::result::Result<T, ValidationErrors>,
) -> (Vec<T>, Option<Error>) {
    let mut rows = Vec::with_capacity(new.len());
    for (i, row) in new.iter().enumerate() {
        match check(row.clone()) {
            Ok(row) => rows.push(row),
            Err(e) => return (rows, Some(row_error(list, i, e.into()))),
        }
    }
    (rows, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_field_names_its_row_and_field() {
        assert_eq!(batch_row("activities[3].deal_id"), Some((3, "deal_id")));
        assert_eq!(
            batch_row("signals[0].occurred_at"),
            Some((0, "occurred_at"))
        );
        assert_eq!(batch_row("deal_id"), None);
        assert_eq!(batch_row("activities[x].deal_id"), None);
    }

    #[test]
    fn a_row_error_prefixes_every_field_and_keeps_other_errors() {
        let e = row_error(
            "activities",
            2,
            ValidationErrors::single(FieldError::new("body", "too_long", "long")).into(),
        );
        assert_eq!(e.field_errors()[0].field, "activities[2].body");
        let nf = row_error("activities", 2, Error::not_found(crate::Entity::Deal, "d"));
        assert!(matches!(nf, Error::NotFound { .. }));
    }
}

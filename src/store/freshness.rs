//! How fresh each contact's data is ([`FreshnessTx`]): read it, verify
//! fields, list the stale contacts stalest first. The domain side —
//! the score, its half-lives and the order — is in
//! [`crate::domain::Freshness`].

use async_trait::async_trait;

#[cfg(doc)]
use crate::error::Error;
use crate::{
    domain::{ContactId, FreshField, Freshness, StaleContact, StaleQuery},
    error::Result,
    store::Page,
};

/// Contact freshness. Part of [`Transaction`](crate::Transaction).
///
/// # Contract
///
/// Beside the points on [`Store`](crate::Store):
///
/// - **Kept current by every write, in its transaction, in O(1).** Every
///   contact has a [`Freshness`] from its creation on. Logging an activity
///   or recording a signal moves `last_engaged_at` to its `occurred_at`
///   when that is later (a backfilled older one does not move it back),
///   and the signals `email_bounced`, `job_changed` and `unsubscribed`
///   leave their marks as [`Freshness::engaged`] says. Changing a
///   contact's email (to another address, not another casing) clears its
///   email's verified time and invalid mark ([`Freshness::email_changed`]),
///   whatever the path (update, merge, erasure). A merge gives the
///   survivor the later engagement of the two and keeps its own verified
///   times and marks ([`Freshness::merged`]). Deleting a contact drops its
///   freshness.
/// - **Erased contacts** keep their freshness (times, no personal data)
///   but are never listed by [`stale_contacts`](Self::stale_contacts).
/// - **The stale order** is [`Freshness::order_key`]: invalid emails
///   first, then stalest first by a key that ranks contacts as their
///   freshness score ranks them at every instant, then contact id. It does
///   not move with time, so a cursor stays valid while time passes; each
///   call applies its conditions at its own time.
#[async_trait]
pub trait FreshnessTx: Send {
    /// The freshness of `contact`; `Ok(None)` when there is no such
    /// contact.
    async fn freshness(&mut self, contact: ContactId) -> Result<Option<Freshness>>;

    /// Marks `fields` of `contact` verified now (the time the store stamps
    /// writes with): see [`Freshness::verified`] (verifying the email
    /// clears its invalid mark; a job change's re-verification is cleared
    /// once title and company were both verified after it, in one call or
    /// two). A field listed twice counts once. Returns the new freshness.
    ///
    /// Errors: [`Error::Validation`] on `fields` when it is empty;
    /// [`Error::NotFound`] when there is no such contact.
    async fn verify_contact(
        &mut self,
        contact: ContactId,
        fields: &[FreshField],
    ) -> Result<Freshness>;

    /// The stale contacts: those matching any condition of `query` now,
    /// in the stale order (see the contract), keyset paged. Erased
    /// contacts are left out; inactive ones are listed. The list stops
    /// where no match can follow ([`StaleQuery::bounds`]), reckoning that
    /// no contact was created or verified more than a day after the
    /// call's time (stores stamp both with their own clock).
    ///
    /// Errors: [`Error::Validation`] as [`StaleQuery::bounds`] says, and on
    /// `cursor` for a cursor of another list or of a query with other
    /// conditions.
    async fn stale_contacts(&mut self, query: &StaleQuery) -> Result<Page<StaleContact>>;
}

/// Refuses an empty list of fields to verify.
pub(crate) fn check_fields(fields: &[FreshField]) -> Result<()> {
    if fields.is_empty() {
        return Err(
            crate::error::ValidationErrors::single(crate::error::FieldError::new(
                "fields",
                "required",
                "must name at least one field to verify",
            ))
            .into(),
        );
    }
    Ok(())
}

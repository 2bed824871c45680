//! A contact's activity timeline and behavioural signals ([`TimelineTx`]).

use async_trait::async_trait;

#[cfg(doc)]
use crate::error::Error;
use crate::{domain::*, error::Result};

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

    /// A contact's activities, newest first (`occurred_at`, then id,
    /// descending). Empty for a contact that does not exist.
    async fn timeline(&mut self, contact: ContactId, page: &PageRequest) -> Result<Page<Activity>>;

    /// Records a behavioural signal for a contact.
    ///
    /// Errors: [`Error::NotFound`] for the contact.
    async fn record_signal(&mut self, new: NewSignal) -> Result<Signal>;

    /// A contact's signals, oldest first (`occurred_at`, then id). Empty
    /// for a contact that does not exist.
    async fn list_signals(&mut self, contact: ContactId) -> Result<Vec<Signal>>;
}

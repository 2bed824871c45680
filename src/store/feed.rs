//! Reading the change feed and keeping consumers' cursors ([`FeedTx`]);
//! the feed is described in [`crate::feed`].

use async_trait::async_trait;

use crate::{
    domain::*,
    error::{Error, FieldError, Result, ValidationErrors},
};

/// The change feed. Part of [`Transaction`](crate::Transaction).
///
/// # Contract
///
/// Beside the points on [`Store`](crate::Store):
///
/// - **One event per committed change**, written in the same transaction
///   as the change: every create, update and delete of a contact, deal,
///   company, tag, tagging, task, activity and signal, every erasure
///   (each version the history records is one event, with its diff;
///   activities and signals have events without a diff). A rolled-back
///   (or dropped) transaction leaves none; score write-backs write none.
/// - **Commit order, never a skip.** Each tenant's committed transactions
///   that wrote events are numbered 1, 2, 3, … in the order they
///   committed, with no gap, and their events are numbered 1, 2, 3, … in
///   the order they were written ([`FeedPosition`]). (Two transactions
///   whose commits overlapped in time — neither had returned when the
///   other began — may be numbered in either order; two changes of one
///   record never overlap so.) A read returns the events after a
///   position, in position order, and never returns an event while one
///   before it can still appear: a transaction still open may delay the
///   events committed after it (the built-in backends do not even delay
///   them: the open transaction is numbered after them when it commits),
///   and never hides them. Two changes of one record appear in the order
///   they were committed. A backend may give the numbers at commit (the
///   in-memory store) or at the first read after it (PostgreSQL, so that
///   one tenant's commits do not wait for each other): a commit's number
///   is final once a read has returned it.
/// - **Consumers.** A named consumer's cursor is kept in the store, per
///   tenant. [`next_batch`](FeedTx::next_batch) returns the events after
///   it; [`ack`](FeedTx::ack) moves it, forward or back, as a write of the
///   transaction it runs in (it commits with the consumer's own writes, or
///   not at all). A consumer that never acked starts at the oldest event
///   still held. Consumers are independent.
/// - **Retention.** [`purge_feed`](FeedTx::purge_feed) deletes the events
///   of transactions committed before a time. A read from a position
///   before the last purged event is [`Error::FeedExpired`], never a
///   silent jump.
/// - **Input.** A consumer's name is a [`ConsumerName`]; `max` is 1 to
///   [`MAX_FEED_BATCH`] ([`Error::Validation`] on `max`); a position has
///   no negative part, and one given to [`ack`](FeedTx::ack) no commit
///   after the last one ([`Error::Validation`] on `position`). Reading
///   after a position past the last event returns nothing.
#[async_trait]
pub trait FeedTx: Send {
    /// Up to `max` events after `consumer`'s cursor, in position order.
    ///
    /// Errors: [`Error::Validation`] on `max`; [`Error::FeedExpired`] when
    /// the cursor is behind the retention.
    async fn next_batch(&mut self, consumer: &ConsumerName, max: usize) -> Result<Vec<FeedEvent>>;

    /// Moves `consumer`'s cursor to `position`: the events up to it
    /// (included) are done. Creates the consumer if it had no cursor.
    ///
    /// Errors: [`Error::Validation`] on `position` (negative, or a commit
    /// after the last one); [`Error::FeedExpired`] when `position` is
    /// behind the retention.
    async fn ack(&mut self, consumer: &ConsumerName, position: FeedPosition) -> Result<()>;

    /// `consumer`'s cursor: the last position it acked, or, for a consumer
    /// that never acked, the last purged position ([`FeedPosition::START`]
    /// when nothing was purged).
    async fn consumer_position(&mut self, consumer: &ConsumerName) -> Result<FeedPosition>;

    /// Up to `max` events after `after`, in position order: a replay, or a
    /// reader that keeps its cursor elsewhere.
    ///
    /// Errors: [`Error::Validation`] on `max` or `position`;
    /// [`Error::FeedExpired`] when `after` is behind the retention.
    async fn events_after(&mut self, after: FeedPosition, max: usize) -> Result<Vec<FeedEvent>>;

    /// The position of the last committed event ([`FeedPosition::START`]
    /// when there is none).
    async fn feed_head(&mut self) -> Result<FeedPosition>;

    /// Deletes the events of the tenant's transactions committed before
    /// `before` (and only whole transactions); returns how many events it
    /// deleted. Reads from a position up to the last one deleted then fail
    /// with [`Error::FeedExpired`].
    ///
    /// Errors: [`Error::Validation`] on `before`.
    async fn purge_feed(&mut self, before: Timestamp) -> Result<u64>;
}

/// A position after the last commit, given to `ack`: refused on `position`.
pub(crate) fn after_head(position: FeedPosition) -> Error {
    ValidationErrors::single(FieldError::new(
        "position",
        "out_of_range",
        format!("is after the last committed event ({position})"),
    ))
    .into()
}

/// The operators' view of the feed, across tenants: which tenants have
/// events, and up to where. Kept apart from the tenant-scoped [`FeedTx`]
/// (a store implements it, not a transaction): a host's own worker lists
/// the heads, then reads each tenant whose head is past its cursor in a
/// transaction of that tenant.
///
/// On PostgreSQL only a role that is a member of `crm_feed_operator` sees
/// other tenants' heads (row-level security, as for everything else): see
/// [`PostgresStore`](crate::PostgresStore)'s implementation.
#[async_trait]
pub trait FeedHeads: Send + Sync {
    /// Every tenant that has had events, with the position of its last
    /// event, by tenant id.
    async fn feed_heads(&self) -> Result<Vec<(TenantId, FeedPosition)>>;
}

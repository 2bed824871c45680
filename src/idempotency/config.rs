//! The guard's settings ([`GuardConfig`]) and when it claims an event's
//! key ([`ClaimTiming`]).

use std::time::Duration;

#[cfg(doc)]
use super::IdempotencyGuard;
use super::WaitPolicy;

/// The guard's settings: [`GuardConfig::default`], then the `with_*`
/// setters for what differs.
///
/// ```
/// use std::time::Duration;
/// use crm_core::idempotency::{ClaimTiming, GuardConfig, IdempotencyGuard};
///
/// let guard = IdempotencyGuard::with_config(
///     GuardConfig::default()
///         .with_retention(Duration::from_secs(24 * 3600))
///         .with_claim(ClaimTiming::BeforeHandler),
/// );
/// assert_eq!(guard.config().claim, ClaimTiming::BeforeHandler);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct GuardConfig {
    /// How long a record is kept (and a duplicate replayed): default 72 hours.
    pub retention: Duration,
    /// How long a duplicate waits for the delivery holding its key.
    pub wait: WaitPolicy,
    /// How many records [`IdempotencyGuard::purge_expired`] deletes per
    /// transaction (at least 1): default 1000.
    pub purge_batch: u32,
    /// When the claim is made: with the handler's first statement (the
    /// default) or before the handler starts.
    pub claim: ClaimTiming,
}

/// When the guard claims an event's key, relative to its handler.
///
/// Either way the handler's CRM writes commit exactly once per event: a
/// duplicate's writes never commit. The two differ in whether a duplicate
/// can *start* the handler, and in cost on a backend with round trips.
///
/// More claim timings may come as the CRM grows: a `match` on it outside
/// this crate needs a `_` arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ClaimTiming {
    /// The claim goes out with the handler's first statement, in the same
    /// round trip (on PostgreSQL, right after `BEGIN`), so the guard costs
    /// no round trip of its own. A duplicate delivery may start the
    /// handler: its first store call then fails, the guard rolls the
    /// transaction back and replays the stored result. Code the handler
    /// runs before that call runs for duplicates too, so a handler should
    /// make no effect outside the transaction before its first store call
    /// (and effects outside the transaction are never covered by the guard
    /// anyway: a transient failure or a crash repeats them).
    #[default]
    WithFirstStatement,
    /// The claim is answered before the handler starts, so a duplicate
    /// never runs any of it: one round trip more on PostgreSQL.
    BeforeHandler,
}

impl GuardConfig {
    /// The default retention: 72 hours.
    pub const DEFAULT_RETENTION: Duration = Duration::from_secs(72 * 3600);
    /// The shortest retention: 1 ms.
    pub const MIN_RETENTION: Duration = Duration::from_millis(1);

    /// How long a record is kept, and a duplicate replayed
    /// ([`retention`](Self::retention)).
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// How long a duplicate waits for the delivery holding its key
    /// ([`wait`](Self::wait)).
    pub fn with_wait(mut self, wait: WaitPolicy) -> Self {
        self.wait = wait;
        self
    }

    /// How many records [`IdempotencyGuard::purge_expired`] deletes per
    /// transaction, at least 1 ([`purge_batch`](Self::purge_batch)).
    pub fn with_purge_batch(mut self, records: u32) -> Self {
        self.purge_batch = records;
        self
    }

    /// When the claim is made ([`claim`](Self::claim)).
    pub fn with_claim(mut self, claim: ClaimTiming) -> Self {
        self.claim = claim;
        self
    }
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            retention: Self::DEFAULT_RETENTION,
            wait: WaitPolicy::DEFAULT,
            purge_batch: 1000,
            claim: ClaimTiming::WithFirstStatement,
        }
    }
}

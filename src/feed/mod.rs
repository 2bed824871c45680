//! The change feed: every committed change as one event, in commit order,
//! read by named consumers whose cursors live in the store.
//!
//! # The model
//!
//! Every transaction that commits a change of a contact, deal, company,
//! tag, tagging, task, activity or signal writes one [`FeedEvent`] per
//! change, in the same transaction: an event says which record
//! ([`FeedKind`] and id), what happened ([`Operation`](crate::history::Operation)),
//! the record's version after it, the changed fields (the history's diff,
//! see [`crate::history`]), who acted, why, for which request and
//! idempotency key, and when the transaction committed. A rolled-back
//! transaction leaves no event; score write-backs write none.
//!
//! Each tenant's events are ordered by [`FeedPosition`]: the transactions
//! are numbered in the order they **committed**, 1, 2, 3, … with no gap
//! (on PostgreSQL by the first read after the commit, so that a tenant's
//! commits never wait for each other), and the events of one transaction
//! in the order they were written. A
//! reader never sees a position while an earlier one can still appear,
//! and a transaction that stays open never makes a reader skip an event:
//! it has no position until it commits, and then takes the next one (so
//! it does not delay the readers of what others commit meanwhile either).
//! Two changes of the same record therefore come in the order they were
//! committed.
//!
//! # Consumers
//!
//! A consumer is a name ([`ConsumerName`]) whose cursor the store keeps per
//! tenant. [`FeedTx::next_batch`] reads the events after it;
//! [`FeedTx::ack`] moves it, as an ordinary write of the transaction it
//! runs in: a consumer that records its own effects in crm-core and acks in
//! the same transaction applies each event exactly once. Consumers are
//! independent; [`FeedTx::ack`] to an earlier position replays, and
//! [`FeedTx::events_after`] reads from any position without a consumer.
//!
//! # Retention
//!
//! [`FeedTx::purge_feed`] deletes the events of transactions committed
//! before a time; [`purge_older_than`] purges what is older than a
//! retention ([`DEFAULT_RETENTION`]: 7 days). A consumer whose cursor is
//! behind the purged events gets [`Error::FeedExpired`](crate::Error::FeedExpired),
//! never a silent jump. Purging the history ([`crate::history`]) removes
//! the diffs of the events whose versions it purged: those events come
//! with no diff.
//!
//! # Push
//!
//! [`subscribe`] turns a consumer into a [`Stream`](futures_util::Stream)
//! of events: it reads by position and, when it has read everything,
//! waits for a wake-up ([`WakeUps`]: an in-process channel in memory,
//! `PostgresStore::feed_wake_ups` on PostgreSQL, a payload-free
//! LISTEN/NOTIFY) or for its poll interval. A lost connection loses
//! nothing: the stream reads again from the cursor kept in the store.
//!
//! # Operators
//!
//! [`FeedHeads`](crate::store::FeedHeads) lists every tenant's last
//! position, for a host's own workers; on PostgreSQL only for a role that
//! is a member of `crm_feed_operator` (row-level security).
//!
//! How the PostgreSQL backend numbers commits without ever skipping one,
//! also on Citus, and why not by a sequence, by transaction ids or by
//! logical decoding: `ARCHITECTURE.md` in the repository, section "Change
//! feed".
//!
//! # Example
//!
//! ```
//! use crm_core::{InMemoryStore, Store, StoreExt, TenantId, Context, Actor};
//! use crm_core::domain::{ConsumerName, Email, FeedKind, NewContact, PersonName};
//! use crm_core::store::FeedTx;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = InMemoryStore::new();
//! let tenant = TenantId::new();
//! let ctx = Context::new(Actor::parse("user:ada")?);
//! let crm = store.scope(tenant, &ctx);
//! let grace = crm.create_contact(NewContact::new(
//!     Email::parse("grace@example.com")?, PersonName::parse("Grace")?, PersonName::parse("Hopper")?,
//! )).await?;
//!
//! let dashboard = ConsumerName::parse("dashboard")?;
//! let mut tx = store.begin(tenant, ctx.clone()).await?;
//! let events = tx.next_batch(&dashboard, 100).await?;
//! assert_eq!(events.len(), 1);
//! assert_eq!((events[0].kind, events[0].id), (FeedKind::Contact, grace.id.as_uuid()));
//! // … act on the events, in this transaction or elsewhere, then:
//! tx.ack(&dashboard, events[0].position).await?;
//! tx.commit().await?;
//!
//! let mut tx = store.begin(tenant, ctx).await?;
//! assert!(tx.next_batch(&dashboard, 100).await?.is_empty());
//! # tx.commit().await?;
//! # Ok::<_, crm_core::Error>(())
//! # }).unwrap();
//! ```

use chrono::Duration;

mod subscribe;
pub use subscribe::{SubscribeOptions, WakeUps, no_wake_ups, subscribe};

pub use crate::domain::{ConsumerName, FeedEvent, FeedKind, FeedPosition, MAX_FEED_BATCH};
pub use crate::store::FeedTx;
use crate::{
    domain::{Context, TenantId},
    error::Result,
    store::Store,
};

/// How long the feed keeps events unless told otherwise: 7 days.
pub const DEFAULT_RETENTION: Duration = Duration::days(7);

/// Purges `tenant`'s events of transactions committed more than
/// `retention` ago, in a transaction of its own acting as `context`;
/// returns how many events it deleted.
pub async fn purge_older_than<S: Store + ?Sized>(
    store: &S,
    tenant: TenantId,
    context: Context,
    retention: Duration,
) -> Result<u64> {
    let before = crate::store::shared_now() - retention;
    let mut tx = store.begin(tenant, context).await?;
    let purged = tx.purge_feed(before).await?;
    tx.commit().await?;
    Ok(purged)
}

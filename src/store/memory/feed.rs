//! The in-memory store's change feed ([`FeedTx`]): a transaction's events
//! wait in its tenant's pending list (undone on rollback like every other
//! write) and are numbered when it commits. Transactions are serialized, so
//! the order they commit in is the order they are numbered in.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use uuid::Uuid;

use super::{InMemoryStore, MemoryTransaction, Undo, history::EntryKey};
use crate::{
    domain::{
        ConsumerName, FeedEvent, FeedKind, FeedPosition, Score, TenantId, Timestamp,
        check_feed_batch, check_timestamp,
    },
    error::{Error, Result},
    history::{FieldChange, Operation},
    store::{FeedHeads, FeedTx, feed::after_head},
};

/// A score as the feed shows it (PostgreSQL's `jsonb` of the column).
fn score_value(score: Score) -> i64 {
    i64::from(score.get())
}

/// One tenant's feed.
#[derive(Default)]
pub(super) struct MemoryFeed {
    /// The committed transactions that wrote events, by number.
    commits: BTreeMap<i64, Commit>,
    /// The last number given.
    head: i64,
    /// The last event purged.
    purged: FeedPosition,
    /// The consumers' cursors.
    consumers: HashMap<String, FeedPosition>,
    /// The events of the open transaction.
    pending: Vec<PendingEvent>,
}

#[derive(Clone)]
pub(super) struct Commit {
    committed_at: Timestamp,
    events: Vec<PendingEvent>,
}

/// An event as written: its diff stays in the history (`history`), or,
/// for a score, in the event (`detail`).
#[derive(Clone)]
pub(super) struct PendingEvent {
    kind: FeedKind,
    id: Uuid,
    operation: Operation,
    version: Option<i64>,
    history: Option<EntryKey>,
    detail: Option<BTreeMap<String, FieldChange>>,
    acting: Acting,
}

/// Who made a change, why and for what, as its event records it.
#[derive(Clone)]
pub(super) struct Acting {
    pub(super) actor: String,
    pub(super) reason: Option<String>,
    pub(super) request_id: Option<String>,
    pub(super) idempotency_key: Option<String>,
}

/// What to restore on rollback.
pub(super) enum FeedUndo {
    /// Remove the last pending event.
    Pending,
    /// Put this event back as the last pending one (it was merged with
    /// the next: a signal deleted and inserted again is one update).
    Replaced(Box<PendingEvent>),
    /// Restore a consumer's cursor.
    Consumer(String, Option<FeedPosition>),
    /// Restore purged commits and the purge mark.
    Purged(Vec<(i64, Commit)>, FeedPosition),
}

impl MemoryFeed {
    pub(super) fn undo(&mut self, u: FeedUndo) {
        match u {
            FeedUndo::Pending => {
                self.pending.pop();
            }
            FeedUndo::Replaced(e) => {
                self.pending.pop();
                self.pending.push(*e);
            }
            FeedUndo::Consumer(name, old) => match old {
                Some(p) => {
                    self.consumers.insert(name, p);
                }
                None => {
                    self.consumers.remove(&name);
                }
            },
            FeedUndo::Purged(commits, purged) => {
                self.commits.extend(commits);
                self.purged = purged;
            }
        }
    }

    /// Numbers the open transaction's events, if it wrote any; true when
    /// it did.
    pub(super) fn commit_pending(&mut self, at: Timestamp) -> bool {
        if self.pending.is_empty() {
            return false;
        }
        self.head += 1;
        let events = std::mem::take(&mut self.pending);
        self.commits.insert(
            self.head,
            Commit {
                committed_at: at,
                events,
            },
        );
        true
    }

    fn head_position(&self) -> FeedPosition {
        self.commits
            .iter()
            .next_back()
            .map_or(self.purged, |(n, c)| {
                FeedPosition::new(*n, c.events.len() as i32)
            })
    }
}

impl MemoryTransaction {
    /// Writes one event of this transaction. `history` names the version
    /// it announces, if the history keeps the record; `acting` is the
    /// version's context (the transaction's when `None`).
    pub(super) fn feed_write(
        &mut self,
        kind: FeedKind,
        id: Uuid,
        operation: Operation,
        version: Option<i64>,
        history: Option<EntryKey>,
        acting: Option<Acting>,
    ) -> Result<()> {
        let acting = acting.unwrap_or_else(|| {
            let c = &self.context;
            Acting {
                actor: c.actor().as_str().to_string(),
                reason: c.reason().map(str::to_string),
                request_id: c.request_id().map(str::to_string),
                idempotency_key: c.idempotency_key().map(str::to_string),
            }
        });
        let event = PendingEvent {
            kind,
            id,
            operation,
            version,
            history,
            detail: None,
            acting,
        };
        self.feed_push(event)
    }

    /// Writes the event of a changed stored score (a write-back), when the
    /// store announces scores.
    pub(super) fn feed_score(&mut self, id: Uuid, old: Score, new: Score) -> Result<()> {
        if !self.score_events {
            return Ok(());
        }
        let change = FieldChange {
            old: serde_json::Value::from(score_value(old)),
            new: serde_json::Value::from(score_value(new)),
        };
        let c = &self.context;
        let event = PendingEvent {
            kind: FeedKind::Score,
            id,
            operation: Operation::Updated,
            version: None,
            history: None,
            detail: Some(BTreeMap::from([("score".to_string(), change)])),
            acting: Acting {
                actor: c.actor().as_str().to_string(),
                reason: c.reason().map(str::to_string),
                request_id: c.request_id().map(str::to_string),
                idempotency_key: c.idempotency_key().map(str::to_string),
            },
        };
        self.feed_push(event)
    }

    fn feed_push(&mut self, event: PendingEvent) -> Result<()> {
        let tenant = self.tenant;
        let feed = &mut self.data_mut()?.feed;
        // A signal moved to another contact is deleted and inserted again
        // under its new key: one update, as PostgreSQL records it.
        let moved = event.operation == Operation::Created
            && feed.pending.last().is_some_and(|last| {
                last.kind == event.kind
                    && last.id == event.id
                    && last.operation == Operation::Deleted
            });
        if moved {
            let mut updated = event;
            updated.operation = Operation::Updated;
            let replaced = feed.pending.pop();
            feed.pending.push(updated);
            if let Some(r) = replaced {
                self.undo
                    .push(Undo::Feed(tenant, FeedUndo::Replaced(Box::new(r))));
            }
        } else {
            feed.pending.push(event);
            self.undo.push(Undo::Feed(tenant, FeedUndo::Pending));
        }
        Ok(())
    }

    /// Events after `after`, up to `max`.
    fn read_feed(
        &self,
        after: FeedPosition,
        max: usize,
        consumer: Option<&ConsumerName>,
    ) -> Result<Vec<FeedEvent>> {
        let data = self.data()?;
        let feed = &data.feed;
        if after < feed.purged {
            return Err(Error::FeedExpired {
                consumer: consumer.cloned(),
                position: after,
                purged: feed.purged,
            });
        }
        let mut out = Vec::new();
        for (n, commit) in feed.commits.range(after.commit.max(0)..) {
            for (i, e) in commit.events.iter().enumerate() {
                let position = FeedPosition::new(*n, i as i32 + 1);
                if position <= after {
                    continue;
                }
                if out.len() == max {
                    return Ok(out);
                }
                let diff = e
                    .history
                    .and_then(|key| data.history.get(&key))
                    .map(|h| h.diff.clone())
                    .or_else(|| e.detail.clone());
                out.push(FeedEvent {
                    position,
                    committed_at: commit.committed_at,
                    kind: e.kind,
                    id: e.id,
                    operation: e.operation,
                    version: e.version,
                    diff,
                    actor: e.acting.actor.clone(),
                    reason: e.acting.reason.clone(),
                    request_id: e.acting.request_id.clone(),
                    idempotency_key: e.acting.idempotency_key.clone(),
                });
            }
        }
        Ok(out)
    }

    fn cursor_of(&self, consumer: &ConsumerName) -> Result<FeedPosition> {
        let feed = &self.data()?.feed;
        Ok(feed
            .consumers
            .get(consumer.as_str())
            .copied()
            .unwrap_or(feed.purged))
    }
}

#[async_trait]
impl FeedTx for MemoryTransaction {
    async fn next_batch(&mut self, consumer: &ConsumerName, max: usize) -> Result<Vec<FeedEvent>> {
        let max = check_feed_batch(max)?;
        let after = self.cursor_of(consumer)?;
        self.read_feed(after, max, Some(consumer))
    }

    async fn ack(&mut self, consumer: &ConsumerName, position: FeedPosition) -> Result<()> {
        let position = position.checked("position")?;
        let tenant = self.tenant;
        let feed = &mut self.data_mut()?.feed;
        if position.commit > feed.head {
            return Err(after_head(position));
        }
        if position < feed.purged {
            return Err(Error::FeedExpired {
                consumer: Some(consumer.clone()),
                position,
                purged: feed.purged,
            });
        }
        let old = feed
            .consumers
            .insert(consumer.as_str().to_string(), position);
        self.undo.push(Undo::Feed(
            tenant,
            FeedUndo::Consumer(consumer.as_str().to_string(), old),
        ));
        Ok(())
    }

    async fn consumer_position(&mut self, consumer: &ConsumerName) -> Result<FeedPosition> {
        self.cursor_of(consumer)
    }

    async fn events_after(&mut self, after: FeedPosition, max: usize) -> Result<Vec<FeedEvent>> {
        let max = check_feed_batch(max)?;
        let after = after.checked("position")?;
        self.read_feed(after, max, None)
    }

    async fn feed_head(&mut self) -> Result<FeedPosition> {
        Ok(self.data()?.feed.head_position())
    }

    async fn purge_feed(&mut self, before: Timestamp) -> Result<u64> {
        let before = check_timestamp("before", before)?;
        let tenant = self.tenant;
        let feed = &mut self.data_mut()?.feed;
        let Some(last) = feed
            .commits
            .iter()
            .filter(|(_, c)| c.committed_at < before)
            .map(|(n, _)| *n)
            .next_back()
        else {
            return Ok(0);
        };
        let doomed: Vec<i64> = feed.commits.range(..=last).map(|(n, _)| *n).collect();
        let mut removed = Vec::with_capacity(doomed.len());
        let mut events = 0u64;
        for n in doomed {
            if let Some(c) = feed.commits.remove(&n) {
                events += c.events.len() as u64;
                removed.push((n, c));
            }
        }
        let last_len = removed.last().map_or(0, |(_, c)| c.events.len() as i32);
        let old = feed.purged;
        feed.purged = FeedPosition::new(last, last_len);
        self.undo
            .push(Undo::Feed(tenant, FeedUndo::Purged(removed, old)));
        Ok(events)
    }
}

#[async_trait]
impl FeedHeads for InMemoryStore {
    async fn feed_heads(&self) -> Result<Vec<(TenantId, FeedPosition)>> {
        let state = self.state.lock().await;
        let mut heads: Vec<(TenantId, FeedPosition)> = state
            .tenants
            .iter()
            .filter(|(_, t)| t.feed.head > 0)
            .map(|(id, t)| (*id, t.feed.head_position()))
            .collect();
        heads.sort_by_key(|(id, _)| id.as_uuid());
        Ok(heads)
    }
}

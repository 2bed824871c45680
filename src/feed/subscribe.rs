//! Push: a consumer's events as a [`Stream`], read by position and woken
//! by the backend when a transaction that wrote events commits.

use std::{collections::VecDeque, pin::Pin, sync::Arc, time::Duration};

use futures_util::{Stream, StreamExt, stream};

use crate::{
    domain::{ConsumerName, Context, FeedEvent, FeedPosition, TenantId},
    error::Result,
    store::Store,
};

/// Wake-ups from a backend: an item whenever a transaction that wrote
/// events may have committed (spurious ones are harmless). Made by
/// [`InMemoryStore::feed_wake_ups`](crate::InMemoryStore::feed_wake_ups) or
/// `PostgresStore::feed_wake_ups`; a stream that never yields
/// ([`no_wake_ups`]) leaves the subscription to its polling.
pub type WakeUps = Pin<Box<dyn Stream<Item = ()> + Send>>;

/// Wake-ups that never come: the subscription polls.
pub fn no_wake_ups() -> WakeUps {
    Box::pin(stream::pending())
}

/// How a subscription reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// Events read per transaction (1 to [`MAX_FEED_BATCH`](crate::domain::MAX_FEED_BATCH)),
    /// and acked together: also how many can come again after the
    /// process stops (see [`subscribe`]).
    pub batch: usize,
    /// How long it waits for a wake-up before it reads anyway: the latency
    /// where no wake-up comes (after a write by SQL outside the store,
    /// while the listening connection reconnects).
    pub poll_interval: Duration,
    /// The longest pause between retries after a retryable error.
    pub max_backoff: Duration,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions {
            batch: 500,
            poll_interval: Duration::from_secs(1),
            max_backoff: Duration::from_secs(5),
        }
    }
}

struct State<S: ?Sized> {
    store: Arc<S>,
    tenant: TenantId,
    context: Context,
    consumer: ConsumerName,
    options: SubscribeOptions,
    wake_ups: WakeUps,
    buffer: VecDeque<FeedEvent>,
    /// The last event handed out and not acked yet.
    delivered: Option<FeedPosition>,
    failures: u32,
    ended: bool,
}

/// `consumer`'s events of `tenant`, from its cursor on, as a stream that
/// waits for new ones when it has read them all.
///
/// Delivery is at least once: the stream acks the events it handed out
/// (moves the consumer's cursor past them) when it reads the next batch,
/// that is when the next event is asked for after the last of a batch. So
/// when the process stops, the events of the batch being handled (up to
/// [`SubscribeOptions::batch`] of them: those handed out and the one in
/// hand) come again to the next subscriber; with a batch of 1 only the
/// event in hand does, at the price of a transaction per event. A
/// consumer that needs exactly-once effects in crm-core
/// reads with [`FeedTx::next_batch`](crate::store::FeedTx::next_batch) and
/// acks in the transaction of its own writes instead.
///
/// A retryable failure (a lost connection, a restarted server) is retried
/// after a growing pause, from the cursor in the store: nothing is lost or
/// skipped. Any other failure is the stream's last item.
pub fn subscribe<S: Store + ?Sized>(
    store: Arc<S>,
    tenant: TenantId,
    context: Context,
    consumer: ConsumerName,
    wake_ups: WakeUps,
    options: SubscribeOptions,
) -> impl Stream<Item = Result<FeedEvent>> + Send {
    let state = State {
        store,
        tenant,
        context,
        consumer,
        options,
        wake_ups,
        buffer: VecDeque::new(),
        delivered: None,
        failures: 0,
        ended: false,
    };
    stream::unfold(state, |mut s| async move {
        if s.ended {
            return None;
        }
        loop {
            if let Some(event) = s.buffer.pop_front() {
                s.delivered = Some(event.position);
                return Some((Ok(event), s));
            }
            match s.read().await {
                Ok(true) => {}
                Ok(false) => s.wait().await,
                Err(e) if e.is_retryable() => {
                    s.failures += 1;
                    tracing::debug!(
                        target: "crm_core::feed",
                        failures = s.failures,
                        "feed subscription retries after a retryable failure"
                    );
                    tokio::time::sleep(s.backoff()).await;
                }
                Err(e) => {
                    s.ended = true;
                    return Some((Err(e), s));
                }
            }
        }
    })
}

impl<S: Store + ?Sized> State<S> {
    /// Acks what was handed out (a transaction of its own) and reads the
    /// next batch; true when it read events.
    ///
    /// A read with nothing to ack writes nothing and ends with a rollback:
    /// on a distributed schema every commit wakes the tenant's
    /// subscribers, and a subscription that committed its empty reads
    /// would wake itself, again and again.
    async fn read(&mut self) -> Result<bool> {
        // The ack in a transaction of its own, then the read: a transaction
        // holding the cursor's row (an ack) while it waits for the
        // consumer's lock (a read) would meet another process's
        // read-then-ack in a deadlock.
        if let Some(p) = self.delivered {
            let mut tx = self.store.begin(self.tenant, self.context.clone()).await?;
            tx.ack(&self.consumer, p).await?;
            // An ack is safe to make twice: one whose commit's answer was
            // lost is made again, as after any lost connection.
            tx.commit().await.map_err(|e| {
                if e.is_commit_outcome_unknown() {
                    crate::Error::retryable(e)
                } else {
                    e
                }
            })?;
            self.delivered = None;
        }
        let mut tx = self.store.begin(self.tenant, self.context.clone()).await?;
        let batch = tx.next_batch(&self.consumer, self.options.batch).await?;
        tx.rollback().await?;
        self.failures = 0;
        let read = !batch.is_empty();
        self.buffer.extend(batch);
        Ok(read)
    }

    /// Waits for a wake-up or the poll interval, then takes every wake-up
    /// already queued.
    async fn wait(&mut self) {
        let woken = tokio::time::timeout(self.options.poll_interval, self.wake_ups.next()).await;
        if let Ok(None) = woken {
            // The wake-ups ended: poll from now on.
            self.wake_ups = no_wake_ups();
        }
        while let Some(Some(())) = futures_util::FutureExt::now_or_never(self.wake_ups.next()) {}
    }

    fn backoff(&self) -> Duration {
        let step = Duration::from_millis(20).saturating_mul(1 << self.failures.min(10));
        step.min(self.options.max_backoff)
    }
}

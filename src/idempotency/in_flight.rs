//! The in-process registry of deliveries being handled, shared by the clones
//! of one guard: a duplicate that arrives while the first delivery of its
//! event runs waits here (or gives up at once) without opening a
//! transaction, and learns whether the first one stored a result.
//!
//! The registry is advisory: the store's claim is what makes the effect
//! happen once. It makes waiting exact on a store that serializes whole
//! transactions (the in-memory one), and spares pooled connections on
//! PostgreSQL, where duplicates from other processes wait at the claim.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use tokio::sync::watch;

use super::{IdempotencyKey, IdempotencySource};
use crate::domain::TenantId;

type Key = (TenantId, IdempotencySource, IdempotencyKey);

/// Deliveries in flight, by (tenant, source, key). Each holds the receiving
/// end of a channel that turns `true` once its result is committed and
/// closes when the delivery ends either way.
#[derive(Debug, Default)]
pub(super) struct InFlight {
    map: Mutex<HashMap<Key, watch::Receiver<bool>>>,
}

/// The answer to [`InFlight::enter`].
pub(super) enum Entry {
    /// This delivery is now the one in flight for its key.
    Entered(Slot),
    /// Another delivery is; wait on this.
    Busy(watch::Receiver<bool>),
}

impl InFlight {
    /// Registers a delivery of `key`, unless one is in flight already.
    pub(super) fn enter(self: &Arc<Self>, key: Key) -> Entry {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(rx) = map.get(&key) {
            return Entry::Busy(rx.clone());
        }
        let (tx, rx) = watch::channel(false);
        map.insert(key.clone(), rx);
        Entry::Entered(Slot {
            registry: Arc::clone(self),
            key,
            tx,
        })
    }
}

/// The registration of the delivery in flight; dropping it (also when the
/// handler panics) ends the registration and wakes the waiters.
#[derive(Debug)]
pub(super) struct Slot {
    registry: Arc<InFlight>,
    key: Key,
    tx: watch::Sender<bool>,
}

impl Slot {
    /// Tells the waiters that a result is committed: they may replay it.
    pub(super) fn settle(&self) {
        self.tx.send_replace(true);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self
            .registry
            .map
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if map
            .get(&self.key)
            .is_some_and(|rx| rx.same_channel(&self.tx.subscribe()))
        {
            map.remove(&self.key);
        }
    }
}

/// Waits until the delivery behind `rx` ends: `true` when it committed a
/// result, `false` when it failed (and stored nothing).
pub(super) async fn settled(mut rx: watch::Receiver<bool>) -> bool {
    rx.wait_for(|settled| *settled).await.is_ok()
}

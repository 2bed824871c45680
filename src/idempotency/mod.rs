//! Exactly-once effects for inbound webhooks and events: an
//! [`IdempotencyGuard`] runs a host's handler at most once per event, however
//! often, in whatever order and however concurrently the provider delivers it.
//!
//! A delivery is an [`InboundEvent`]: a source (`"stripe"`, `"hubspot"`), the
//! provider's key for the event, and a [`Fingerprint`] of its payload.
//! [`IdempotencyGuard::run`] opens one transaction and in it
//!
//! 1. **claims** the key (tenant, source, key): holds it for this
//!    transaction, waiting for a transaction that holds it already, and
//!    looks up its record, seeing the record of a holder that committed
//!    while it waited — there is no check-then-insert race;
//! 2. runs the **handler** with that transaction: its CRM writes are part of it;
//! 3. **stores the result** (the handler's output as JSON) and commits; a
//!    key never holds a second record.
//!
//! All three commit together or not at all: a handler that fails
//! transiently, panics, or loses its connection leaves no key and no
//! writes, and the provider's next retry runs it again. A later delivery
//! of the same event gets the stored result back, marked
//! [`Execution::Replayed`], without running the handler.
//!
//! When `run` returns — whatever it returns — or the handler's panic
//! leaves it, the delivery's transaction has ended (rolled back when it
//! did not commit, and the rollback awaited): it holds the key no longer,
//! so a retry of the same delivery right after it, even one that may not
//! wait, does not meet it. (A transaction whose connection was lost is
//! the exception: the server ends it by itself, shortly after.)
//!
//! - **Same key, other payload.** When the stored fingerprint differs from
//!   the delivery's, the guard returns [`Error::FingerprintMismatch`] with
//!   the original record (when, which fingerprint, what result).
//! - **Concurrent duplicates.** A delivery whose key is held by one still
//!   running waits for it (up to [`GuardConfig::wait`], 10 s by default)
//!   and then replays its result — or, when that one failed, runs the
//!   handler itself. With [`WaitPolicy::NoWait`], or when the wait runs
//!   out, it gets [`Error::KeyInUse`], which is retryable. Whenever a wait
//!   ends with a stored result, that result is replayed: also to a
//!   delivery whose own handler failed permanently while another
//!   delivery (from another process) stored its outcome first.
//! - **What is stored.** Successes, and failures the handler declares
//!   permanent ([`HandlerError::Permanent`]): a replay returns the same
//!   failure. A [`HandlerError::Transient`] failure stores nothing and is
//!   returned to the caller, so that the provider retries.
//! - **Retention.** A record expires [`GuardConfig::retention`] after its
//!   claim (72 hours by default, longer than common providers retry); an
//!   expired record counts as absent, so the event runs again.
//!   [`IdempotencyGuard::purge_expired`] deletes expired records in batches.
//! - **Inspection.** [`IdempotencyGuard::lookup`] and
//!   [`IdempotencyGuard::list`] (newest first, keyset-paginated).
//! - **History.** The handler's transaction carries `source:key` as its
//!   context's [idempotency key](crate::Context::idempotency_key), which
//!   the audit history records with every change.
//!
//! # When the claim is made
//!
//! By default ([`ClaimTiming::WithFirstStatement`]) the claim goes out
//! with the handler's first store call, in the same round trip, so on
//! PostgreSQL a guarded event costs no round trip more than the handler
//! alone (the stored result goes with the commit). The price: a duplicate
//! delivery may *start* the handler. Its first store call then fails
//! (nothing it wrote can commit), and the guard replays the stored result
//! whatever the handler returns. So a handler must not act outside the
//! transaction before its first store call — which it should not do
//! anyway: an effect outside the transaction (an email, an HTTP call) is
//! repeated by a transient failure or a crash whatever the guard does; put
//! it after [`IdempotencyGuard::run`] returns [`Execution::Executed`], or
//! in an outbox row the handler writes. A handler that makes no store call
//! at all runs to its end for a duplicate, and its output is discarded.
//!
//! [`ClaimTiming::BeforeHandler`] answers the claim before the handler
//! starts, so a duplicate never runs any of it, for one round trip more on
//! PostgreSQL. On the in-memory store both are the same.
//!
//! # Waiting, per backend
//!
//! Use **one guard per store** (clone it into every task): the clones
//! share a registry of the deliveries in flight in this process, and a
//! duplicate that arrives while the first delivery runs waits on it (or
//! fails at once with `NoWait`) without opening a transaction.
//!
//! - On **PostgreSQL**, deliveries from other processes (or other guards)
//!   meet at the claim: it waits for the transaction holding the key for
//!   what is left of the wait (with `NoWait`, a millisecond), and a wait
//!   that runs out is [`Error::KeyInUse`]. The handler's own statements
//!   wait for locks as they would without the guard. When the holder
//!   commits, the claim finds its record and replays it.
//! - The **in-memory store** runs one transaction at a time, so a
//!   delivery through another guard waits in `begin` for the transaction
//!   holding the key; the guard bounds that wait by what is left of the
//!   wait, and a delivery that times out there gets [`Error::KeyInUse`]
//!   too. With one shared guard, `NoWait` is exact; through separate
//!   guards a `NoWait` delivery waits for the store like any transaction
//!   does.
//!
//! Timeouts need a tokio runtime with its time driver enabled.
//!
//! How the PostgreSQL backend keeps these promises (a transaction-level
//! advisory lock per key, a bounded `lock_timeout`, the record written
//! once, with the commit) and why it was built so: `ARCHITECTURE.md` in
//! the repository, section "Idempotency".
//!
//! # Example
//!
//! ```
//! use crm_core::{Actor, Context, InMemoryStore, Store, TenantId};
//! use crm_core::domain::{Email, NewContact, PersonName};
//! use crm_core::idempotency::{Execution, HandlerError, IdempotencyGuard, InboundEvent, handler};
//! use serde_json::json;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = InMemoryStore::new();
//! let guard = IdempotencyGuard::new(); // one per store; clones share it
//! let tenant = TenantId::new();
//! let ctx = Context::new(Actor::parse("webhook:stripe")?);
//!
//! let payload = json!({"id": "evt_1", "email": "ada@example.com", "name": "Ada Lovelace"});
//! let event = InboundEvent::new("stripe", "evt_1", &payload)?;
//!
//! // The handler gets the guard's transaction; its output is stored as JSON.
//! let handle = |payload: serde_json::Value| {
//!     handler(move |tx| {
//!         Box::pin(async move {
//!             let Some(email) = payload["email"].as_str() else {
//!                 // Malformed forever: store the failure, do not retry.
//!                 return Err(HandlerError::permanent(json!({"error": "no email"})));
//!             };
//!             let contact = tx
//!                 .create_contact(NewContact::new(
//!                     Email::parse(email)?,
//!                     PersonName::parse("Ada")?,
//!                     PersonName::parse("Lovelace")?,
//!                 ))
//!                 .await?; // a crm-core error is transient: nothing is stored
//!             Ok(contact.id.to_string())
//!         })
//!     })
//! };
//!
//! let first = guard.run(&store, tenant, &ctx, &event, handle(payload.clone())).await?;
//! assert_eq!(first.execution, Execution::Executed);
//!
//! // The provider delivers the same event again: the handler does not run,
//! // the stored result comes back.
//! let again = guard.run(&store, tenant, &ctx, &event, handle(payload.clone())).await?;
//! assert_eq!(again.execution, Execution::Replayed);
//! assert_eq!(again.result, first.result);
//!
//! // The same key with another payload is refused, with the original record.
//! let forged = InboundEvent::new("stripe", "evt_1", &json!({"id": "evt_1", "email": "eve@example.com"}))?;
//! let err = guard.run(&store, tenant, &ctx, &forged, handle(json!({}))).await.unwrap_err();
//! assert!(matches!(err, crm_core::Error::FingerprintMismatch { original, .. }
//!     if original.fingerprint == *event.fingerprint()));
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! A handler is any `Send` closure `FnOnce(&mut dyn Transaction) ->
//! HandlerFuture<'_, T>`: `|tx| Box::pin(async move { … })`. Written
//! directly in the call to [`IdempotencyGuard::run`] it needs nothing more;
//! made elsewhere (as `handle` above), wrap it in [`handler`] so that the
//! compiler sees that its future borrows the transaction. An
//! `async fn on_event(tx: &mut dyn Transaction, …) -> Result<T, HandlerError>`
//! fits as `|tx| Box::pin(on_event(tx, …))`.

mod config;
mod in_flight;

use std::{panic::AssertUnwindSafe, sync::Arc, time::Duration};

use chrono::Utc;
use futures_util::{FutureExt, future::BoxFuture};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use tokio::time::Instant;

pub use crate::domain::idempotency::{
    Claim, Fingerprint, IdempotencyClaim, IdempotencyKey, IdempotencyRecord, IdempotencySource,
    InboundEvent, StoredResult, WaitPolicy,
};

use crate::{
    domain::{Context, TenantId, Timestamp, truncate_to_micros},
    error::{BoxError, Error, Result},
    store::{DynStore, Page, PageRequest, Transaction},
};
pub use config::{ClaimTiming, GuardConfig};
use in_flight::{Entry, InFlight, Slot};

#[cfg_attr(not(feature = "postgres"), allow(unused_imports))]
pub(crate) use crate::domain::idempotency::key_in_use;

/// The future a handler returns: it may borrow the transaction, and is
/// `Send` so that the guard can run in spawned tasks.
pub type HandlerFuture<'t, T> = BoxFuture<'t, Result<T, HandlerError>>;

/// Gives a closure the signature of a handler, so that the compiler sees
/// that its future borrows the transaction: needed where the closure is
/// not written directly in the call to [`IdempotencyGuard::run`] (returned
/// from a function or another closure, stored in a variable).
///
/// ```
/// use crm_core::idempotency::{HandlerError, handler};
///
/// let make = |n: u32| handler(move |tx| Box::pin(async move {
///     let _ = tx.tenant();
///     Ok::<_, HandlerError>(n)
/// }));
/// # let _ = make(1);
/// ```
pub fn handler<'a, T, F>(f: F) -> F
where
    F: for<'t> FnOnce(&'t mut (dyn Transaction + 'a)) -> HandlerFuture<'t, T> + Send + 'a,
{
    f
}

/// How a handler fails.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The event can never succeed (malformed, refers to something that
    /// does not exist, …): the failure is stored with the key and every
    /// later delivery replays it. Its CRM writes are still rolled back
    /// (they are not part of the stored outcome); the record is kept.
    #[error("the event failed for good: {0}")]
    Permanent(Value),
    /// Trying again may succeed: nothing is stored, the error is returned
    /// to the caller (and the provider's retry runs the handler again).
    #[error("the event failed for now: {0}")]
    Transient(#[source] Error),
}

impl HandlerError {
    /// A permanent failure described by `detail` (stored as JSON). A value
    /// that does not serialize to JSON, or nests deeper than
    /// [`StoredResult::MAX_DEPTH`] (a validation error on `result`), makes a
    /// transient error instead.
    pub fn permanent(detail: impl Serialize) -> Self {
        match result_value(&detail) {
            Ok(v) => HandlerError::Permanent(v),
            Err(e) => HandlerError::Transient(e),
        }
    }

    /// A transient failure from any error (a retryable backend error).
    pub fn transient(error: impl Into<BoxError>) -> Self {
        HandlerError::Transient(Error::retryable(error))
    }
}

impl From<Error> for HandlerError {
    /// A crm-core error from the handler's transaction is transient: the
    /// transaction is rolled back, nothing is stored. Map the ones your
    /// handler considers final (e.g. [`Error::Validation`]) to
    /// [`HandlerError::Permanent`] yourself.
    fn from(e: Error) -> Self {
        HandlerError::Transient(e)
    }
}

impl From<crate::error::ValidationErrors> for HandlerError {
    fn from(e: crate::error::ValidationErrors) -> Self {
        HandlerError::Transient(e.into())
    }
}

impl From<crate::error::FieldError> for HandlerError {
    fn from(e: crate::error::FieldError) -> Self {
        HandlerError::Transient(e.into())
    }
}

/// Whether the handler ran for this delivery or its result was replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Execution {
    /// The handler ran, and its result was stored.
    Executed,
    /// An earlier delivery's stored result was returned; the handler did not run.
    Replayed,
}

/// What a guarded delivery gives back.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome<T> {
    /// Executed now or replayed.
    pub execution: Execution,
    /// The handler's output, or the permanent failure it declared.
    pub result: std::result::Result<T, Value>,
    /// When the result was stored.
    pub completed_at: Timestamp,
}

impl<T> Outcome<T> {
    /// True when the result was replayed.
    pub fn is_replay(&self) -> bool {
        self.execution == Execution::Replayed
    }
}

/// Runs handlers of inbound events exactly once per (tenant, source, key):
/// see the [module docs](self). Cheap to clone; clones share the registry
/// of deliveries in flight, so use one guard (and its clones) per store.
#[derive(Debug, Clone, Default)]
pub struct IdempotencyGuard {
    config: GuardConfig,
    in_flight: Arc<InFlight>,
}

impl IdempotencyGuard {
    /// A guard with the default settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// A guard with `config` (a retention below
    /// [`GuardConfig::MIN_RETENTION`] is raised to it).
    pub fn with_config(mut config: GuardConfig) -> Self {
        config.retention = config.retention.max(GuardConfig::MIN_RETENTION);
        config.purge_batch = config.purge_batch.max(1);
        IdempotencyGuard {
            config,
            in_flight: Arc::default(),
        }
    }

    /// Its settings.
    pub fn config(&self) -> &GuardConfig {
        &self.config
    }

    /// The same guard (sharing the registry of deliveries in flight) with
    /// another wait policy: e.g. `guard.with_wait(WaitPolicy::NoWait)` for
    /// a caller that would rather answer "busy, retry" than wait.
    pub fn with_wait(&self, wait: WaitPolicy) -> Self {
        let mut g = self.clone();
        g.config.wait = wait;
        g
    }

    /// Handles one delivery of `event` for `tenant`: runs `handler` in a
    /// transaction that also claims the key and stores its result, or
    /// replays the result stored by an earlier delivery. See the
    /// [module docs](self).
    ///
    /// The transaction's context is `context` with the idempotency key set
    /// to `source:key`.
    ///
    /// Errors: [`Error::FingerprintMismatch`] when the key was used with
    /// another payload; [`Error::KeyInUse`] when a delivery holding the key
    /// did not end in time; the handler's transient error; the store's
    /// errors (claim, store the result, commit); [`Error::Backend`] when a
    /// stored result does not deserialize into `T`.
    ///
    /// Whatever it returns, the delivery's transaction has ended by then
    /// and holds the key no longer (but for a transaction whose connection
    /// was lost, which the server ends by itself, shortly).
    ///
    /// # Panics
    ///
    /// When the handler panics: the panic goes on to the caller once the
    /// transaction is rolled back (and the key released).
    pub async fn run<'a, T, F>(
        &self,
        store: &DynStore,
        tenant: TenantId,
        context: &Context,
        event: &InboundEvent,
        handler: F,
    ) -> Result<Outcome<T>>
    where
        T: Serialize + DeserializeOwned + Send,
        F: for<'t> FnOnce(&'t mut (dyn Transaction + 'a)) -> HandlerFuture<'t, T> + Send + 'a,
    {
        let deadline = match self.config.wait {
            WaitPolicy::Wait(d) => Instant::now().checked_add(d),
            WaitPolicy::NoWait => Some(Instant::now()),
        };
        let context = context.clone().with_idempotency_key(&event.scoped_key())?;
        let reclaim_context = context.clone();
        let busy = || key_in_use(event.source(), event.key());

        // Wait out a delivery of the same event in flight in this process.
        let slot: Option<Slot> = loop {
            let key = (tenant, event.source().clone(), event.key().clone());
            match self.in_flight.enter(key) {
                Entry::Entered(slot) => break Some(slot),
                Entry::Busy(rx) => {
                    if self.config.wait == WaitPolicy::NoWait {
                        tracing::debug!(
                            tenant = %tenant,
                            source = %event.source(),
                            key = %event.key(),
                            "idempotency key in use by a delivery in this process: not waiting"
                        );
                        return Err(busy());
                    }
                    tracing::debug!(
                        tenant = %tenant,
                        source = %event.source(),
                        key = %event.key(),
                        "idempotency key in use by a delivery in this process: waiting for it"
                    );
                    let stored = match deadline {
                        Some(d) => tokio::time::timeout_at(d, in_flight::settled(rx))
                            .await
                            .map_err(|_| gave_up(tenant, event))?,
                        None => in_flight::settled(rx).await,
                    };
                    if stored {
                        // Its result is committed: go and replay it.
                        break None;
                    }
                    // It failed and stored nothing: try to become the one.
                }
            }
        };

        let mut begin = store.begin(tenant, context);
        let mut tx = match futures_util::poll!(&mut begin) {
            // Ready at once (a pooled connection was idle): no timer needed,
            // and none is armed (arming one can wake the runtime's driver).
            std::task::Poll::Ready(tx) => tx?,
            std::task::Poll::Pending => match deadline {
                // A store that runs one transaction at a time makes `begin`
                // wait for the transaction holding the key: bound that wait.
                Some(d) if self.config.wait != WaitPolicy::NoWait => {
                    tokio::time::timeout_at(d, begin)
                        .await
                        .map_err(|_| gave_up(tenant, event))??
                }
                _ => begin.await?,
            },
        };

        let now = now();
        let claim = IdempotencyClaim {
            source: event.source().clone(),
            key: event.key().clone(),
            fingerprint: event.fingerprint().clone(),
            now,
            expires_at: expiry(now, self.config.retention),
            wait: match (self.config.wait, deadline) {
                (WaitPolicy::NoWait, _) => WaitPolicy::NoWait,
                (WaitPolicy::Wait(_), Some(d)) => {
                    WaitPolicy::Wait(d.saturating_duration_since(Instant::now()))
                }
                (w, None) => w,
            },
        };
        // From here on the transaction may hold the key's lock: every way
        // out that does not commit ends it with `end`, which returns once
        // the lock is released, so that whatever the caller does next (a
        // retry of the same delivery, say) does not meet it.
        let claimed = match self.config.claim {
            ClaimTiming::BeforeHandler => tx.claim_idempotency_key(&claim).await.map(Some),
            ClaimTiming::WithFirstStatement => tx.defer_idempotency_claim(&claim).await,
        };
        let claimed = match claimed {
            Ok(claimed) => claimed,
            Err(e) => {
                end(tx).await;
                return Err(e);
            }
        };
        if let Some(Claim::Existing(record)) = claimed {
            end(tx).await;
            return replay(record, event);
        }
        // The closure is called inside the caught future, so that a panic
        // of either the closure or its future is caught.
        let run_handler = async { handler(&mut *tx).await };
        let outcome = match AssertUnwindSafe(run_handler).catch_unwind().await {
            Ok(outcome) => outcome,
            Err(panic) => {
                // Roll back before the panic goes on: the retry that may
                // follow it finds the key free. (The registry slot is
                // released as the panic unwinds, after this.)
                end(tx).await;
                std::panic::resume_unwind(panic);
            }
        };
        if claimed.is_none() {
            // The claim went out with the handler's first statement (or
            // goes now, if it made none): the handler's outcome counts
            // only if the key is this delivery's.
            match tx.resolve_idempotency_claim().await {
                Ok(Claim::Claimed) => {}
                Ok(Claim::Existing(record)) => {
                    end(tx).await;
                    return replay(record, event);
                }
                Err(e) => {
                    end(tx).await;
                    return Err(e);
                }
            }
        }
        let (stored, result) = match outcome {
            Ok(value) => match result_value(&value) {
                Ok(json) => (StoredResult::Succeeded(json), Ok(value)),
                Err(e) => {
                    end(tx).await;
                    return Err(e);
                }
            },
            Err(HandlerError::Permanent(detail)) => {
                // The handler's writes are not part of a stored
                // failure: start over with only the claim.
                end(tx).await;
                tx = match reclaim(store, tenant, reclaim_context, &claim).await? {
                    Reclaimed::Claimed(tx) => tx,
                    // The slot in the registry is still held, so only a
                    // delivery from elsewhere (another process) can have
                    // come between, and stored its outcome: this delivery
                    // waited for it like any duplicate, and replays it.
                    Reclaimed::Existing(record) => return replay(record, event),
                };
                (StoredResult::Failed(detail.clone()), Err(detail))
            }
            Err(HandlerError::Transient(e)) => {
                end(tx).await;
                return Err(e);
            }
        };
        let record = tx
            .complete_idempotency_key_and_commit(event.source(), event.key(), &stored, self::now())
            .await?;
        if let Some(slot) = &slot {
            slot.settle();
        }
        Ok(Outcome {
            execution: Execution::Executed,
            result,
            completed_at: record.completed_at.unwrap_or(record.created_at),
        })
    }

    /// The record of `source`/`key`, expired or not, until purged.
    pub async fn lookup(
        &self,
        store: &DynStore,
        tenant: TenantId,
        context: &Context,
        source: &IdempotencySource,
        key: &IdempotencyKey,
    ) -> Result<Option<IdempotencyRecord>> {
        let mut tx = store.begin(tenant, context.clone()).await?;
        let out = tx.get_idempotency_record(source, key).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// The records of `source`, newest first, one page at a time.
    pub async fn list(
        &self,
        store: &DynStore,
        tenant: TenantId,
        context: &Context,
        source: &IdempotencySource,
        page: &PageRequest,
    ) -> Result<Page<IdempotencyRecord>> {
        let mut tx = store.begin(tenant, context.clone()).await?;
        let out = tx.list_idempotency_records(source, page).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// Deletes the tenant's expired records, [`GuardConfig::purge_batch`]
    /// per transaction, until none is left; returns how many it deleted.
    pub async fn purge_expired(
        &self,
        store: &DynStore,
        tenant: TenantId,
        context: &Context,
    ) -> Result<u64> {
        let now = now();
        let mut total = 0;
        loop {
            let mut tx = store.begin(tenant, context.clone()).await?;
            let n = tx
                .purge_idempotency_records(now, self.config.purge_batch)
                .await?;
            tx.commit().await?;
            total += n;
            if n < u64::from(self.config.purge_batch) {
                return Ok(total);
            }
        }
    }
}

/// Ends a transaction that must not commit, and returns once it has
/// ended: what it held (the key's lock above all) is released by then,
/// which a drop does not promise (see [`Transaction`]). A failed rollback
/// means a lost connection, whose transaction the server ends by itself;
/// the caller's answer stands either way.
async fn end(tx: Box<dyn Transaction>) {
    let _ = tx.rollback().await;
}

/// What claiming the key again found.
enum Reclaimed {
    /// The key is this transaction's.
    Claimed(Box<dyn Transaction>),
    /// A record holds it: another delivery stored its outcome meanwhile.
    Existing(IdempotencyRecord),
}

/// Claims the key again in a new transaction after a permanent failure
/// rolled the handler's writes back, waiting for a delivery holding it as
/// `claim.wait` allows. When a record holds it, the new transaction is
/// rolled back (and has ended) before the record is returned.
async fn reclaim(
    store: &DynStore,
    tenant: TenantId,
    context: Context,
    claim: &IdempotencyClaim,
) -> Result<Reclaimed> {
    let mut tx = store.begin(tenant, context).await?;
    match tx.claim_idempotency_key(claim).await {
        Ok(Claim::Claimed) => Ok(Reclaimed::Claimed(tx)),
        Ok(Claim::Existing(record)) => {
            end(tx).await;
            Ok(Reclaimed::Existing(record))
        }
        Err(e) => {
            end(tx).await;
            Err(e)
        }
    }
}

/// [`Error::KeyInUse`] for a delivery whose wait for the one holding its
/// key ran out.
fn gave_up(tenant: TenantId, event: &InboundEvent) -> Error {
    tracing::debug!(
        tenant = %tenant,
        source = %event.source(),
        key = %event.key(),
        "idempotency key still in use when the wait ran out"
    );
    key_in_use(event.source(), event.key())
}

/// Turns an existing record into a replay, or the errors it stands for.
fn replay<T: DeserializeOwned>(
    record: IdempotencyRecord,
    event: &InboundEvent,
) -> Result<Outcome<T>> {
    if record.fingerprint != *event.fingerprint() {
        tracing::warn!(
            tenant = %record.tenant_id,
            source = %event.source(),
            key = %event.key(),
            "idempotency key used again for another payload"
        );
        return Err(Error::FingerprintMismatch {
            original: Box::new(record),
            fingerprint: event.fingerprint().clone(),
        });
    }
    let completed_at = record.completed_at.unwrap_or(record.created_at);
    tracing::debug!(
        tenant = %record.tenant_id,
        source = %event.source(),
        key = %event.key(),
        failed = matches!(record.result, Some(StoredResult::Failed(_))),
        "replaying the stored result of an idempotency key"
    );
    let result = match record.result {
        Some(StoredResult::Succeeded(v)) => Ok(serde_json::from_value(v).map_err(|e| {
            Error::backend(StoredResultMismatch {
                key: event.scoped_key(),
                source: e,
            })
        })?),
        Some(StoredResult::Failed(v)) => Err(v),
        // Committed without a result: only a caller of the storage methods
        // that bypassed the guard can leave that.
        None => return Err(key_in_use(event.source(), event.key())),
    };
    Ok(Outcome {
        execution: Execution::Replayed,
        result,
        completed_at,
    })
}

/// A handler's output or failure as the JSON stored for it: refused on
/// `result` when it nests deeper than [`StoredResult::MAX_DEPTH`]
/// (serializing stops there), a backend error when it is not JSON.
fn result_value<T: Serialize + ?Sized>(value: &T) -> Result<Value> {
    use crate::domain::json::{ToValueError, to_value_within};
    to_value_within(value, StoredResult::MAX_DEPTH).map_err(|e| match e {
        ToValueError::TooDeep(_) => {
            crate::error::FieldError::new("result", "too_deep", e.to_string()).into()
        }
        ToValueError::NotJson(_) => Error::backend(e),
    })
}

/// A stored result does not deserialize into the handler's output type.
#[derive(Debug, thiserror::Error)]
#[error("the stored result of {key} does not fit the handler's output type")]
struct StoredResultMismatch {
    key: String,
    #[source]
    source: serde_json::Error,
}

fn now() -> Timestamp {
    truncate_to_micros(Utc::now())
}

/// When a record claimed at `now` expires: `retention` later, but never
/// after the last microsecond of the year 9999 (the latest instant every
/// backend and text format takes), so that any retention works.
fn expiry(now: Timestamp, retention: Duration) -> Timestamp {
    let last = latest_expiry();
    let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let at = now.checked_add_signed(retention).unwrap_or(last).min(last);
    truncate_to_micros(at)
}

/// 9999-12-31T23:59:59.999999Z: the end of the range every store takes.
fn latest_expiry() -> Timestamp {
    crate::domain::latest_timestamp()
}

#[cfg(test)]
mod handler_error_tests {
    use super::*;

    #[test]
    fn a_handler_error_says_whether_it_is_final_and_keeps_its_cause() {
        let permanent = HandlerError::permanent(serde_json::json!({"error": "no email"}));
        assert_eq!(
            permanent.to_string(),
            r#"the event failed for good: {"error":"no email"}"#
        );
        assert!(std::error::Error::source(&permanent).is_none());
        let transient = HandlerError::transient("connection reset");
        assert!(
            transient
                .to_string()
                .starts_with("the event failed for now: ")
        );
        let source = std::error::Error::source(&transient).map(|e| e.to_string());
        assert_eq!(
            source,
            Some(Error::retryable("connection reset").to_string())
        );
    }
}

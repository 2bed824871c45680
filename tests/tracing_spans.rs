//! The spans and events the store makes through `tracing`, recorded by a
//! capturing layer: one `crm.transaction` span per transaction with its
//! tenant and how it ended, one `crm.op` child span per operation with its
//! outcome, events for migrations, retries and replays — and never an
//! email or a name that was written, in any field.

#[cfg(feature = "postgres")]
mod support;

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use crm_core::{
    Actor, Context, DynStore, Error, InMemoryStore, Store, StoreExt, TenantId, Transaction,
    bulk::{self, ImportOptions},
    domain::{ContactId, ContactPatch, Email, NewContact, PersonName, Pipelines, Version},
    idempotency::{Execution, IdempotencyGuard, InboundEvent},
    store::trace_transaction,
};
use serde_json::json;
use tracing::{
    Subscriber,
    field::{Field, Visit},
    span,
};
use tracing_subscriber::{Layer, layer::Context as LayerContext, prelude::*, registry::LookupSpan};

// ---------------------------------------------------------------- capture

/// A recorded span: its name, parent (an index into the recorded spans),
/// fields as text, and whether it was closed.
#[derive(Debug, Clone)]
struct SpanRec {
    name: &'static str,
    parent: Option<usize>,
    fields: BTreeMap<String, String>,
    closed: bool,
}

impl SpanRec {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

/// A recorded event: its fields, the message included.
#[derive(Debug, Clone)]
struct EventRec {
    fields: BTreeMap<String, String>,
}

impl EventRec {
    fn message(&self) -> &str {
        self.fields.get("message").map_or("", String::as_str)
    }
}

#[derive(Debug, Default)]
struct Recorded {
    spans: Vec<SpanRec>,
    events: Vec<EventRec>,
}

/// Records every span and event of the thread it is the default for.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Recorded>>);

/// A span's index in [`Recorded::spans`], kept in the span's extensions
/// (span ids are reused once a span closes; indexes are not).
struct Index(usize);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let parent = span
            .parent()
            .and_then(|p| p.extensions().get::<Index>().map(|i| i.0));
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let index = {
            let mut rec = self.0.lock().unwrap();
            rec.spans.push(SpanRec {
                name: attrs.metadata().name(),
                parent,
                fields,
                closed: false,
            });
            rec.spans.len() - 1
        };
        span.extensions_mut().insert(Index(index));
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: LayerContext<'_, S>) {
        let Some(index) = ctx
            .span(id)
            .and_then(|s| s.extensions().get::<Index>().map(|i| i.0))
        else {
            return;
        };
        let mut rec = self.0.lock().unwrap();
        values.record(&mut Fields(&mut rec.spans[index].fields));
    }

    fn on_event(&self, event: &tracing::Event<'_>, _: LayerContext<'_, S>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        self.0.lock().unwrap().events.push(EventRec { fields });
    }

    fn on_close(&self, id: span::Id, ctx: LayerContext<'_, S>) {
        if let Some(index) = ctx
            .span(&id)
            .and_then(|s| s.extensions().get::<Index>().map(|i| i.0))
        {
            self.0.lock().unwrap().spans[index].closed = true;
        }
    }
}

impl Capture {
    /// Makes this capture the default subscriber of the current thread
    /// (the test's, and its current-thread runtime's) until the guard drops.
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        tracing::subscriber::set_default(tracing_subscriber::registry().with(self.clone()))
    }

    fn spans(&self) -> Vec<SpanRec> {
        self.0.lock().unwrap().spans.clone()
    }

    fn events(&self) -> Vec<EventRec> {
        self.0.lock().unwrap().events.clone()
    }

    /// The indexes of the `crm.transaction` spans.
    fn transactions(&self) -> Vec<usize> {
        let spans = self.spans();
        (0..spans.len())
            .filter(|&i| spans[i].name == "crm.transaction")
            .collect()
    }

    /// The `crm.op` spans whose parent is the span at `tx`, in order.
    fn ops_of(&self, tx: usize) -> Vec<SpanRec> {
        self.spans()
            .into_iter()
            .filter(|s| s.name == "crm.op" && s.parent == Some(tx))
            .collect()
    }

    /// `(operation, outcome)` of the operations of the span at `tx`.
    fn op_outcomes(&self, tx: usize) -> Vec<(String, String)> {
        self.ops_of(tx)
            .iter()
            .map(|s| {
                (
                    s.field("operation").unwrap_or("").to_string(),
                    s.field("outcome").unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    /// Panics when any span or event field holds one of `secrets`, in any
    /// casing.
    fn assert_nothing_personal(&self, secrets: &[&str]) {
        let rec = self.0.lock().unwrap();
        let fields = rec
            .spans
            .iter()
            .map(|s| (s.name, &s.fields))
            .chain(rec.events.iter().map(|e| ("event", &e.fields)));
        let mut checked = 0;
        for (owner, fields) in fields {
            for (name, value) in fields {
                checked += 1;
                for secret in secrets {
                    assert!(
                        !value.to_lowercase().contains(&secret.to_lowercase()),
                        "{owner} field {name} = {value:?} holds {secret:?}"
                    );
                }
            }
        }
        assert!(checked > 0, "nothing was recorded");
    }
}

// ---------------------------------------------------------------- data

const EMAIL: &str = "Augusta.Traceable@Example.com";
const FIRST: &str = "Augustina";
const LAST: &str = "Traceworthy";
const SECRETS: &[&str] = &[EMAIL, FIRST, LAST, "Traceable", "a reason nobody may read"];

fn ctx() -> Context {
    Context::new(Actor::parse("user:trace").unwrap())
        .with_reason("a reason nobody may read")
        .unwrap()
}

fn person() -> NewContact {
    NewContact::new(
        Email::parse(EMAIL).unwrap(),
        PersonName::parse(FIRST).unwrap(),
        PersonName::parse(LAST).unwrap(),
    )
}

// ---------------------------------------------------------------- the checks

/// A committed transaction: one transaction span (tenant, backend, pool
/// wait, `committed`), op spans in order, a failing op with its kind and
/// retryable flag, and nothing personal anywhere — also not from a
/// duplicate-email error, whose message quotes the email.
async fn a_committed_transaction_has_one_span_with_its_ops(store: &DynStore, backend: &str) {
    let capture = Capture::default();
    let _guard = capture.install();
    let tenant = TenantId::new();

    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    let contact = tx.create_contact(person()).await.unwrap();
    let err = tx
        .update_contact(contact.id, Version::new(7), ContactPatch::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }));
    let dup = tx.create_contact(person()).await.unwrap_err();
    assert!(matches!(dup, Error::DuplicateEmail { .. }));
    assert!(dup.to_string().contains(EMAIL));
    tx.get_contact(contact.id).await.unwrap();
    tx.commit().await.unwrap();

    let txs = capture.transactions();
    assert_eq!(txs.len(), 1, "{:#?}", capture.spans());
    let span = &capture.spans()[txs[0]];
    assert_eq!(span.field("tenant"), Some(tenant.to_string().as_str()));
    assert_eq!(span.field("backend"), Some(backend));
    assert_eq!(span.field("outcome"), Some("committed"));
    let wait: u64 = span.field("pool_wait_us").unwrap().parse().unwrap();
    assert!(wait < 60_000_000);
    assert!(span.closed);

    let outcomes = capture.op_outcomes(txs[0]);
    let expected = [
        ("create_contact", "ok"),
        ("update_contact", "conflict"),
        ("create_contact", "duplicate_email"),
        ("get_contact", "ok"),
        ("commit", "ok"),
    ]
    .map(|(o, r)| (o.to_string(), r.to_string()));
    assert_eq!(outcomes, expected);
    let ops = capture.ops_of(txs[0]);
    assert!(ops.iter().all(|s| s.closed));
    assert_eq!(ops[0].field("retryable"), None, "only a failure says");
    assert_eq!(ops[1].field("retryable"), Some("false"));
    assert_eq!(ops[2].field("retryable"), Some("false"));

    capture.assert_nothing_personal(SECRETS);
}

/// Rolled back, dropped, and a failed commit: each transaction's span says
/// how it ended.
async fn a_transaction_that_does_not_commit_says_how_it_ended(store: &DynStore) {
    let capture = Capture::default();
    let _guard = capture.install();
    let tenant = TenantId::new();

    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    tx.create_contact(person()).await.unwrap();
    tx.rollback().await.unwrap();

    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    tx.create_contact(person()).await.unwrap();
    drop(tx);

    // A read through the scoped handle ends its transaction by a drop.
    store
        .scope(tenant, &ctx())
        .get_contact(ContactId::new())
        .await
        .unwrap();

    let spans = capture.spans();
    let outcomes: Vec<_> = capture
        .transactions()
        .iter()
        .map(|&i| spans[i].field("outcome").unwrap_or("").to_string())
        .collect();
    assert_eq!(outcomes, ["rolled_back", "dropped", "dropped"]);
    let txs = capture.transactions();
    assert_eq!(
        capture.op_outcomes(txs[0]),
        [("create_contact", "ok"), ("rollback", "ok")].map(|(o, r)| (o.into(), r.into()))
    );
    assert_eq!(
        capture.op_outcomes(txs[2]),
        [("get_contact".to_string(), "ok".to_string())]
    );
    assert!(txs.iter().all(|&i| spans[i].closed));
    capture.assert_nothing_personal(SECRETS);
}

/// A guarded event delivered twice: the second delivery's replay is an
/// event naming the source and key, inside neither the payload nor the
/// contact's data. The first delivery's transaction makes `first_ops`: the
/// backend's own idempotency steps, which the spans' wrapper passes on.
async fn a_replayed_delivery_is_an_event(store: &DynStore, first_ops: &[&str]) {
    let capture = Capture::default();
    let _guard = capture.install();
    let tenant = TenantId::new();
    let guard = IdempotencyGuard::new();
    let payload = json!({"email": EMAIL, "first": FIRST, "last": LAST});
    let event = InboundEvent::new("stripe", "evt_trace_1", &payload).unwrap();
    for expected in [Execution::Executed, Execution::Replayed] {
        let outcome = guard
            .run(store, tenant, &ctx(), &event, |tx| {
                Box::pin(async move {
                    let c = tx.create_contact(person()).await?;
                    Ok(c.id.to_string())
                })
            })
            .await
            .unwrap();
        assert_eq!(outcome.execution, expected);
    }
    let replays: Vec<_> = capture
        .events()
        .into_iter()
        .filter(|e| e.message().contains("replaying"))
        .collect();
    assert_eq!(replays.len(), 1, "{:#?}", capture.events());
    assert_eq!(replays[0].fields.get("source").unwrap(), "stripe");
    assert_eq!(replays[0].fields.get("key").unwrap(), "evt_trace_1");
    assert_eq!(
        replays[0].fields.get("tenant").unwrap(),
        &tenant.to_string()
    );
    // The first delivery committed through the idempotency step.
    let spans = capture.spans();
    let first = capture.transactions()[0];
    assert_eq!(spans[first].field("outcome"), Some("committed"));
    let ops = capture.op_outcomes(first);
    assert_eq!(
        ops.iter().map(|(o, _)| o.as_str()).collect::<Vec<_>>(),
        first_ops
    );
    assert!(ops.iter().all(|(_, outcome)| outcome == "ok"), "{ops:?}");
    capture.assert_nothing_personal(SECRETS);
}

// ---------------------------------------------------------------- in memory

#[tokio::test]
async fn a_committed_in_memory_transaction_has_one_span_with_its_ops() {
    a_committed_transaction_has_one_span_with_its_ops(&InMemoryStore::new(), "memory").await;
}

#[tokio::test]
async fn an_in_memory_transaction_that_does_not_commit_says_how_it_ended() {
    a_transaction_that_does_not_commit_says_how_it_ended(&InMemoryStore::new()).await;
}

#[tokio::test]
async fn a_replayed_delivery_on_the_in_memory_store_is_an_event() {
    // The in-memory store claims at once, even when asked to defer.
    let ops = [
        "defer_idempotency_claim",
        "create_contact",
        "complete_idempotency_key_and_commit",
    ];
    a_replayed_delivery_is_an_event(&InMemoryStore::new(), &ops).await;
}

/// A store whose first `begin`s fail retryably, around the in-memory store.
#[derive(Debug)]
struct Flaky {
    inner: InMemoryStore,
    failures: AtomicU32,
}

#[async_trait::async_trait]
impl Store for Flaky {
    async fn begin(
        &self,
        tenant: TenantId,
        context: Context,
    ) -> crm_core::Result<Box<dyn Transaction>> {
        if self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(Error::retryable("the server went away"));
        }
        self.inner.begin(tenant, context).await
    }

    fn pipelines(&self) -> &Pipelines {
        self.inner.pipelines()
    }
}

#[tokio::test]
async fn an_import_batch_retried_after_a_retryable_failure_is_an_event() {
    let capture = Capture::default();
    let _guard = capture.install();
    let store = Flaky {
        inner: InMemoryStore::new(),
        failures: AtomicU32::new(1),
    };
    let tenant = TenantId::new();
    let csv = format!("email,first_name,last_name\n{EMAIL},{FIRST},{LAST}\n");
    let report = bulk::import_contacts_csv(
        &store,
        tenant,
        &ctx(),
        csv.as_bytes(),
        ImportOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(report.rows, 1);
    let retries: Vec<_> = capture
        .events()
        .into_iter()
        .filter(|e| e.message().contains("retrying an import batch"))
        .collect();
    assert_eq!(retries.len(), 1, "{:#?}", capture.events());
    let f = &retries[0].fields;
    assert_eq!(f.get("rows").map(String::as_str), Some("1"));
    assert_eq!(f.get("retry").map(String::as_str), Some("1"));
    assert_eq!(f.get("error").map(String::as_str), Some("Backend"));
    assert_eq!(f.get("tenant"), Some(&tenant.to_string()));
    // The batch that went through is a committed transaction.
    let spans = capture.spans();
    let txs = capture.transactions();
    assert_eq!(txs.len(), 1);
    assert_eq!(spans[txs[0]].field("outcome"), Some("committed"));
    assert_eq!(
        capture
            .op_outcomes(txs[0])
            .iter()
            .map(|(o, _)| o.as_str())
            .collect::<Vec<_>>(),
        ["lock_for_import", "upsert_contacts", "commit"]
    );
    capture.assert_nothing_personal(SECRETS);
}

#[tokio::test]
async fn a_transaction_wrapped_by_the_public_helper_has_the_same_spans() {
    let store = InMemoryStore::new();
    let tx = store.begin(TenantId::new(), ctx()).await.unwrap();
    let capture = Capture::default();
    let _guard = capture.install();
    let mut tx = trace_transaction(tx, "custom", Duration::from_micros(42));
    tx.create_contact(person()).await.unwrap();
    tx.commit().await.unwrap();
    let spans = capture.spans();
    let custom: Vec<_> = capture
        .transactions()
        .into_iter()
        .filter(|&i| spans[i].field("backend") == Some("custom"))
        .collect();
    assert_eq!(custom.len(), 1);
    let span = &spans[custom[0]];
    assert_eq!(span.field("pool_wait_us"), Some("42"));
    assert_eq!(span.field("outcome"), Some("committed"));
    assert_eq!(
        capture.op_outcomes(custom[0]),
        [("create_contact", "ok"), ("commit", "ok")].map(|(o, r)| (o.into(), r.into()))
    );
}

/// A transaction begun under one subscriber and used under another (a
/// scoped default set meanwhile): the first records the transaction, the
/// second its operations (as spans of their own), and nothing panics
/// (the second subscriber is never handed an id of the first's).
#[tokio::test]
async fn a_transaction_used_under_another_subscriber_than_it_began_under_is_traced_by_both() {
    let store = InMemoryStore::new();
    let first = Capture::default();
    let guard = first.install();
    let mut tx = store.begin(TenantId::new(), ctx()).await.unwrap();
    drop(guard);
    let second = Capture::default();
    let _guard = second.install();
    tx.create_contact(person()).await.unwrap();
    tx.commit().await.unwrap();
    let spans = first.spans();
    assert_eq!(spans.len(), 1, "{spans:#?}");
    assert_eq!(spans[0].field("outcome"), Some("committed"));
    let ops: Vec<_> = second
        .spans()
        .into_iter()
        .map(|s| (s.name, s.field("operation").unwrap_or("").to_string()))
        .collect();
    assert_eq!(
        ops,
        [("crm.op", "create_contact"), ("crm.op", "commit")].map(|(n, o)| (n, o.to_string()))
    );
}

#[tokio::test]
async fn a_transaction_span_is_a_child_of_the_span_begin_was_called_in() {
    let capture = Capture::default();
    let _guard = capture.install();
    let store = InMemoryStore::new();
    let request = tracing::info_span!("request");
    let tx = tracing::Instrument::instrument(store.begin(TenantId::new(), ctx()), request)
        .await
        .unwrap();
    drop(tx);
    let spans = capture.spans();
    let tx = capture.transactions()[0];
    let parent = spans[tx].parent.map(|p| spans[p].name);
    assert_eq!(parent, Some("request"));
}

// ---------------------------------------------------------------- PostgreSQL

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use crm_core::{
        PostgresStore, conformance,
        idempotency::{
            Claim, Fingerprint, IdempotencyClaim, IdempotencyKey, IdempotencySource, WaitPolicy,
        },
    };
    use support::{TestDb, TestStore};

    #[tokio::test]
    async fn a_committed_postgres_transaction_has_one_span_with_its_ops() {
        let store = TestStore::new().await;
        a_committed_transaction_has_one_span_with_its_ops(&*store, "postgres").await;
    }

    #[tokio::test]
    async fn a_postgres_transaction_that_does_not_commit_says_how_it_ended() {
        let store = TestStore::new().await;
        a_transaction_that_does_not_commit_says_how_it_ended(&*store).await;
    }

    #[tokio::test]
    async fn a_replayed_delivery_on_postgres_is_an_event() {
        let store = TestStore::new().await;
        // The claim goes with the first statement and is resolved after it.
        let ops = [
            "defer_idempotency_claim",
            "create_contact",
            "resolve_idempotency_claim",
            "complete_idempotency_key_and_commit",
        ];
        a_replayed_delivery_is_an_event(&*store, &ops).await;
    }

    #[tokio::test]
    async fn migrating_is_an_event_naming_the_schema_and_the_versions() {
        let db = TestDb::create().await;
        let store = PostgresStore::from_pool(db.pool(2), conformance::test_pipelines());
        let capture = Capture::default();
        let _guard = capture.install();
        let applied = store.migrate().await.unwrap();
        assert!(!applied.is_empty());
        let events: Vec<_> = capture
            .events()
            .into_iter()
            .filter(|e| e.message() == "applied migrations")
            .collect();
        assert_eq!(events.len(), 1, "{:#?}", capture.events());
        assert_eq!(
            events[0].fields.get("schema").map(String::as_str),
            Some("crm")
        );
        assert_eq!(
            events[0].fields.get("versions"),
            Some(&format!("{applied:?}"))
        );
        // Nothing left to apply: no such event again.
        assert!(store.migrate().await.unwrap().is_empty());
        let again = capture
            .events()
            .iter()
            .filter(|e| e.message() == "applied migrations")
            .count();
        assert_eq!(again, 1);
    }

    /// A schema holding migrations this build does not know (applied by a
    /// newer build) is migrated around them, as documented, with a warning
    /// naming them: the build runs against changes it does not know.
    #[tokio::test]
    async fn migrations_of_a_newer_build_are_a_warning_naming_them() {
        let db = TestDb::create().await;
        let store = PostgresStore::from_pool(db.pool(2), conformance::test_pipelines());
        store.migrate().await.unwrap();
        let client = db.client().await;
        client
            .batch_execute(
                "INSERT INTO crm.schema_migrations (version, name, checksum) \
                 VALUES (9999, 'from_a_newer_build', 0)",
            )
            .await
            .unwrap();
        let capture = Capture::default();
        let _guard = capture.install();
        assert!(store.migrate().await.unwrap().is_empty());
        let warned: Vec<_> = capture
            .events()
            .into_iter()
            .filter(|e| e.message().contains("this build does not know"))
            .collect();
        assert_eq!(warned.len(), 1, "{:#?}", capture.events());
        assert_eq!(
            warned[0].fields.get("versions").map(String::as_str),
            Some("[9999]")
        );
    }

    /// A claim that may not wait for the transaction holding its key fails
    /// with `key_in_use`, which is retryable.
    #[tokio::test]
    async fn a_failing_postgres_operation_records_its_kind_and_that_it_is_retryable() {
        let store = TestStore::new().await;
        let capture = Capture::default();
        let _guard = capture.install();
        let tenant = TenantId::new();
        let now = crm_core::domain::truncate_to_micros(chrono::Utc::now());
        let claim = IdempotencyClaim {
            source: IdempotencySource::parse("crm").unwrap(),
            key: IdempotencyKey::parse("held").unwrap(),
            fingerprint: Fingerprint::of_json(&json!({"k": 1})),
            now,
            expires_at: now + chrono::Duration::hours(1),
            wait: WaitPolicy::NoWait,
        };
        let mut holder = store.begin(tenant, ctx()).await.unwrap();
        assert!(matches!(
            holder.claim_idempotency_key(&claim).await.unwrap(),
            Claim::Claimed
        ));
        let mut other = store.begin(tenant, ctx()).await.unwrap();
        let err = other.claim_idempotency_key(&claim).await.unwrap_err();
        assert!(matches!(err, Error::KeyInUse { .. }), "{err}");
        other.rollback().await.unwrap();
        holder.rollback().await.unwrap();

        let txs = capture.transactions();
        assert_eq!(txs.len(), 2);
        let failed = capture.ops_of(txs[1]);
        assert_eq!(failed[0].field("operation"), Some("claim_idempotency_key"));
        assert_eq!(failed[0].field("outcome"), Some("key_in_use"));
        assert_eq!(failed[0].field("retryable"), Some("true"));
        let spans = capture.spans();
        assert!(
            txs.iter()
                .all(|&i| spans[i].field("outcome") == Some("rolled_back"))
        );
    }
}

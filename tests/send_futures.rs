//! Every public async function of the crate returns a future that is
//! `Send`, so that a host can `tokio::spawn` it. Checked at compile time:
//! each future is built (never awaited) and handed to `assert_send`; a
//! future that is not `Send` makes this file fail to compile.

use std::collections::HashMap;

use crm_core::{
    Context, DynStore, InMemoryStore, Store, StoreExt, TenantId, Transaction, Version,
    bulk::{self, CsvFormulas, ImportLock, ImportOptions},
    domain::{
        ActivityKind, ContactId, ContactPatch, DealId, LostReason, NewActivity, NewContact,
        NewDeal, PersonName, PipelineKey, StageKey,
    },
    history::{EntityKind, FieldQuery, HistoryEntity},
    idempotency::{
        HandlerError, IdempotencyGuard, IdempotencyKey, IdempotencySource, InboundEvent,
    },
    scoring::{self, RescoreOptions, ScoringModel},
    store::{ContactQuery, PageRequest},
};

fn assert_send<T: Send>(_: &T) {}

/// Builds every future of the bulk module, the ones with a generic store
/// on `S` (a concrete store) and on `dyn Store`.
fn bulk_futures<S: Store + ?Sized>(store: &S, t: TenantId, ctx: &Context) {
    let ids = HashMap::new();
    let csv: &[u8] = b"email\n";
    assert_send(&bulk::import_contacts_csv(
        store,
        t,
        ctx,
        csv,
        ImportOptions::default(),
    ));
    assert_send(&bulk::import_contacts_jsonl(
        store,
        t,
        ctx,
        csv,
        ImportOptions::default(),
    ));
    // A progress callback that is `Send` but not `Sync`.
    let cell = std::cell::Cell::new(0u64);
    let options = ImportOptions::default().with_progress(move |n| cell.set(n));
    assert_send(&bulk::import_contacts_csv(store, t, ctx, csv, options));
    assert_send(&bulk::export_contacts_csv(store, t, ctx, Vec::new()));
    assert_send(&bulk::export_contacts_csv_with(
        store,
        t,
        ctx,
        Vec::new(),
        CsvFormulas::Verbatim,
    ));
    assert_send(&bulk::export_contacts_jsonl(store, t, ctx, Vec::new()));
    assert_send(&bulk::export_deals_jsonl(store, t, ctx, Vec::new()));
    assert_send(&bulk::export_deals_csv(store, t, ctx, Vec::new()));
    assert_send(&bulk::export_deals_csv_with(
        store,
        t,
        ctx,
        Vec::new(),
        CsvFormulas::Verbatim,
    ));
    assert_send(&bulk::export_signals_jsonl(store, t, ctx, Vec::new()));
    assert_send(&bulk::export_signals_csv(store, t, ctx, Vec::new()));
    assert_send(&bulk::export_signals_csv_with(
        store,
        t,
        ctx,
        Vec::new(),
        CsvFormulas::Verbatim,
    ));
    assert_send(&bulk::export_activities_jsonl(store, t, ctx, Vec::new()));
    assert_send(&bulk::export_activities_csv(store, t, ctx, Vec::new()));
    assert_send(&bulk::export_activities_csv_with(
        store,
        t,
        ctx,
        Vec::new(),
        CsvFormulas::Verbatim,
    ));
    assert_send(&bulk::import_deals_jsonl(store, t, ctx, csv, 10));
    assert_send(&bulk::import_deals_csv(store, t, ctx, csv, 10));
    assert_send(&bulk::import_deals_csv_with(
        store,
        t,
        ctx,
        csv,
        10,
        CsvFormulas::Verbatim,
    ));
    assert_send(&bulk::import_activities_jsonl(store, t, ctx, csv, &ids, 10));
    assert_send(&bulk::import_activities_csv(store, t, ctx, csv, &ids, 10));
    assert_send(&bulk::import_activities_csv_with(
        store,
        t,
        ctx,
        csv,
        &ids,
        10,
        CsvFormulas::Verbatim,
    ));
    assert_send(&bulk::import_signals_jsonl(store, t, ctx, csv, 10));
    assert_send(&bulk::import_signals_csv(store, t, ctx, csv, 10));
    assert_send(&bulk::import_signals_csv_with(
        store,
        t,
        ctx,
        csv,
        10,
        CsvFormulas::Verbatim,
    ));
}

/// The `Store`, `Scope` and `Transaction` futures (history reads
/// included), through `dyn Store`.
fn store_futures(store: &DynStore, tx: &mut dyn Transaction, t: TenantId, ctx: &Context) {
    let (contact, deal) = (ContactId::new(), DealId::new());
    let email = "a@example.com".parse().expect("an email");
    let name = || PersonName::parse("A").expect("a name");
    let new = || NewContact::new("a@example.com".parse().expect("an email"), name(), name());
    let money = crm_core::domain::Money::parse(
        "1",
        crm_core::domain::Currency::parse("EUR").expect("a currency"),
    )
    .expect("money");
    let title = crm_core::domain::DealTitle::parse("T").expect("a title");
    let stage = StageKey::parse("proposal").expect("a stage");
    let page = PageRequest::first(10);
    assert_send(&store.begin(t, ctx.clone()));
    let crm = store.scope(t, ctx);
    assert_send(&crm.begin());
    assert_send(&crm.create_contact(new()));
    assert_send(&crm.get_contact(contact));
    assert_send(&crm.get_contact_by_email(&email));
    assert_send(&crm.update_contact(contact, Version::FIRST, ContactPatch::default()));
    assert_send(&crm.search_contacts(&ContactQuery::new()));
    assert_send(&crm.create_deal(NewDeal::new(contact, title, money)));
    assert_send(&crm.move_deal(deal, Version::FIRST, &stage));
    assert_send(&crm.win_deal(deal, Version::FIRST));
    assert_send(&crm.lose_deal(
        deal,
        Version::FIRST,
        LostReason::parse("no budget").expect("a reason"),
    ));
    assert_send(&crm.reopen_deal(deal, Version::FIRST, StageKey::PROPOSAL));
    assert_send(&crm.log_activity(NewActivity::new(contact, ActivityKind::Note)));
    assert_send(&crm.timeline(contact, &page));
    assert_send(&crm.pipeline_summary(&PipelineKey::default_pipeline()));
    assert_send(&crm.entity_history(contact, &page));
    let now = chrono::Utc::now();
    let entity = HistoryEntity::new(EntityKind::Contact, contact.as_uuid());
    assert_send(&tx.entity_history(entity, &page));
    assert_send(&tx.entity_as_of(entity, now));
    assert_send(&tx.field_changes(&FieldQuery::contacts("email")));
    assert_send(&tx.changes_between(now, now, &page));
    assert_send(&tx.purge_history(now));
    assert_send(&tx.erase_contact(contact));
    assert_send(&tx.upsert_contacts(&[], bulk::ConflictPolicy::default()));
    assert_send(&tx.lock_for_import(ImportLock::Exclusive));
}

/// The scoring and idempotency futures.
fn engine_futures(store: &DynStore, tx: &mut dyn Transaction, t: TenantId, ctx: &Context) {
    let model = ScoringModel::default();
    let options = RescoreOptions::default();
    let now = chrono::Utc::now();
    let contact = ContactId::new();
    assert_send(&scoring::rescore(store, t, ctx.clone(), &model, &options));
    assert_send(&scoring::rescore_in_transaction(&mut *tx, &model, &options));
    assert_send(&scoring::live_score(&mut *tx, &model, contact, now));
    assert_send(&scoring::live_top_leads(&mut *tx, &model, 10, now));
    assert_send(&scoring::explain(&mut *tx, &model, contact, None));

    let guard = IdempotencyGuard::new();
    let source = IdempotencySource::parse("stripe").expect("a source");
    let key = IdempotencyKey::parse("evt_1").expect("a key");
    let event = InboundEvent::new("stripe", "evt_1", &serde_json::json!({})).expect("an event");
    assert_send(&guard.run(store, t, ctx, &event, |tx| {
        Box::pin(async move {
            let _ = tx.tenant();
            Ok::<_, HandlerError>(1u32)
        })
    }));
    assert_send(&guard.lookup(store, t, ctx, &source, &key));
    assert_send(&guard.list(store, t, ctx, &source, &PageRequest::first(10)));
    assert_send(&guard.purge_expired(store, t, ctx));
}

#[cfg(feature = "postgres")]
fn postgres_futures(store: &crm_core::PostgresStore, t: TenantId, ctx: &Context) {
    assert_send(&crm_core::PostgresStore::connect(
        "postgres://localhost/none",
    ));
    assert_send(&crm_core::PostgresStore::builder("postgres://localhost/none").build());
    assert_send(&store.migrate());
    bulk_futures(store, t, ctx);
}

#[tokio::test]
async fn every_public_async_function_returns_a_send_future() {
    let store = InMemoryStore::new();
    let (t, ctx) = (TenantId::new(), Context::system("send"));
    bulk_futures(&store, t, &ctx);
    let dyn_store: &DynStore = &store;
    bulk_futures(dyn_store, t, &ctx);
    let mut tx = store.begin(t, ctx.clone()).await.expect("a transaction");
    store_futures(dyn_store, &mut *tx, t, &ctx);
    engine_futures(dyn_store, &mut *tx, t, &ctx);
    drop(tx);
    #[cfg(feature = "postgres")]
    {
        // Only type-checked: a store over a pool that never connects.
        let _: fn(&crm_core::PostgresStore, TenantId, &Context) = postgres_futures;
    }
}

/// What the issue asked for, literally: an import spawned on the runtime.
#[tokio::test]
async fn an_import_can_be_spawned_on_the_runtime() {
    let store = std::sync::Arc::new(InMemoryStore::new());
    let t = TenantId::new();
    let task = tokio::spawn({
        let store = std::sync::Arc::clone(&store);
        async move {
            let csv = b"email,first_name,last_name\nada@example.com,Ada,L\n";
            let options = ImportOptions::default().with_progress(|_| {});
            bulk::import_contacts_csv(&*store, t, &Context::system("spawn"), &csv[..], options)
                .await
        }
    });
    let report = task.await.expect("the task ran").expect("the import ran");
    assert_eq!(report.inserted, 1);
}

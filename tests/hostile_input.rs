#![cfg(all(feature = "postgres", feature = "conformance"))]
//! Hostile input driven through the public API on both backends, the
//! same input on each: both must answer alike (the same value, or the same
//! `Error::Validation` naming the same field), never with an untyped
//! backend error, never with a panic; and what the crate writes it must be
//! able to read back.

mod support;

use std::{future::Future, pin::Pin, sync::Arc};

use crm_core::{
    Actor, ContactQuery, Context, DynStore, Error, InMemoryStore, PageRequest, StoreExt, TenantId,
    bulk::{self, ImportOptions},
    conformance,
    domain::{ContactId, ContactScore, Email, LiveState, Metadata, NewContact, PersonName},
    idempotency::{HandlerError, HandlerFuture, IdempotencyGuard, InboundEvent},
};
use serde_json::{Value, json};

type Attack = for<'a> fn(&'a DynStore) -> Pin<Box<dyn Future<Output = String> + Send + 'a>>;

fn ctx() -> Context {
    Context::new(Actor::parse("attacker:test").unwrap())
}

/// Runs `attack` on a fresh in-memory store and on a fresh PostgreSQL
/// database; returns what each answered, described as text.
async fn on_both(attack: Attack) -> (String, String) {
    let memory: Arc<DynStore> =
        Arc::new(InMemoryStore::with_pipelines(conformance::test_pipelines()));
    let on_memory = attack(&*memory).await;
    let pg = support::TestStore::new().await;
    let on_postgres = attack(&*pg).await;
    eprintln!("memory:   {on_memory}\npostgres: {on_postgres}");
    (on_memory, on_postgres)
}

/// An outcome as text: the value, or the error's kind and field errors
/// (never its free-text message, which may legitimately differ).
fn describe<T: std::fmt::Debug>(r: &Result<T, Error>) -> String {
    match r {
        Ok(v) => format!("Ok({v:?})"),
        Err(e @ Error::Validation(_)) => {
            let fields: Vec<String> = e
                .field_errors()
                .iter()
                .map(|f| format!("{}/{}", f.field, f.code))
                .collect();
            format!("Validation{fields:?}")
        }
        // The kind only: messages name ids, which differ between runs.
        Err(e) if e.kind() == crm_core::ErrorKind::Backend => format!("Backend: {e}"),
        Err(e) => format!("{:?}", e.kind()),
    }
}

async fn contact(store: &DynStore, t: TenantId, email: &str) -> ContactId {
    let new = NewContact::new(
        Email::parse(email).unwrap(),
        PersonName::parse("Eve").unwrap(),
        PersonName::parse("Attacker").unwrap(),
    );
    store.scope(t, &ctx()).create_contact(new).await.unwrap().id
}

fn assert_alike(what: &str, (memory, postgres): (String, String)) {
    assert_eq!(
        memory, postgres,
        "{what}: the in-memory store (left) and PostgreSQL (right) disagree"
    );
}

// ------------------------------------------------ idempotency results

/// A handler returns `result`; the outcome of the first delivery and of a
/// replay, as text.
async fn deliver_twice(store: &DynStore, result: Value) -> String {
    let t = TenantId::new();
    let guard = IdempotencyGuard::new();
    let ev = InboundEvent::new("attack", "evt_1", &json!({"n": 1})).unwrap();
    let mut out = Vec::new();
    for _ in 0..2 {
        let result = result.clone();
        let r = guard
            .run(store, t, &ctx(), &ev, move |_tx| {
                Box::pin(async move { Ok::<_, HandlerError>(result) }) as HandlerFuture<'_, Value>
            })
            .await
            .map(|o| (o.execution, o.result.map(|v| v.to_string())));
        out.push(describe(&r));
    }
    out.join(" then ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_result_holding_a_nul_character_is_answered_alike_on_both_backends() {
    let outcome = on_both(|store| {
        Box::pin(async move { deliver_twice(store, json!({"note": "a\u{0}b"})).await })
    })
    .await;
    assert_alike("a result with a NUL in a string", outcome);
    let outcome =
        on_both(|store| Box::pin(async move { deliver_twice(store, json!({"a\u{0}b": 1})).await }))
            .await;
    assert_alike("a result with a NUL in a key", outcome);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_result_holding_negative_zero_replays_alike_on_both_backends() {
    let outcome = on_both(|store| {
        Box::pin(async move { deliver_twice(store, json!({"delta": -0.0})).await })
    })
    .await;
    assert_alike("a result holding -0.0", outcome);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_failure_holding_a_nul_character_is_answered_alike_on_both_backends() {
    async fn fail(store: &DynStore) -> String {
        let t = TenantId::new();
        let guard = IdempotencyGuard::new();
        let ev = InboundEvent::new("attack", "evt_2", &json!({"n": 2})).unwrap();
        let mut out = Vec::new();
        for _ in 0..2 {
            let r = guard
                .run(store, t, &ctx(), &ev, |_tx| {
                    Box::pin(async move {
                        Err::<u32, _>(HandlerError::permanent(json!({"why": "bad\u{0}input"})))
                    }) as HandlerFuture<'_, u32>
                })
                .await
                .map(|o| (o.execution, o.result));
            out.push(describe(&r));
        }
        out.join(" then ")
    }
    assert_alike(
        "a permanent failure with a NUL",
        on_both(|store| Box::pin(fail(store))).await,
    );
}

// ------------------------------------------------ live score states

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_top_leads_order_a_negative_and_a_positive_zero_alike_on_both_backends() {
    async fn attack(store: &DynStore) -> String {
        let t = TenantId::new();
        let mut ids = [
            contact(store, t, "zero1@example.com").await,
            contact(store, t, "zero2@example.com").await,
        ];
        ids.sort();
        let mut tx = store.begin(t, ctx()).await.unwrap();
        // The larger id gets -0.0, the smaller +0.0: equal states, so the
        // contract's tie-break (id descending) puts the larger id first.
        let written = tx
            .write_live_score_logs(&[
                LiveState::new(ids[0], Some(0.0)),
                LiveState::new(ids[1], Some(-0.0)),
            ])
            .await;
        let top = tx.live_top_leads(10).await;
        tx.rollback().await.unwrap();
        let top = top.map(|v| {
            v.into_iter()
                .map(|r| {
                    (
                        if r.contact.id == ids[0] {
                            "smaller"
                        } else {
                            "larger"
                        },
                        r.log,
                    )
                })
                .collect::<Vec<_>>()
        });
        format!("{} {}", describe(&written), describe(&top))
    }
    assert_alike(
        "states -0.0 and 0.0",
        on_both(|store| Box::pin(attack(store))).await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_score_state_that_is_not_a_number_is_answered_alike_on_both_backends() {
    async fn attack(store: &DynStore) -> String {
        let t = TenantId::new();
        let a = contact(store, t, "nan1@example.com").await;
        let b = contact(store, t, "nan2@example.com").await;
        let mut tx = store.begin(t, ctx()).await.unwrap();
        let written = tx
            .write_live_score_logs(&[
                LiveState::new(a, Some(-f64::NAN)),
                LiveState::new(b, Some(f64::INFINITY)),
            ])
            .await;
        let top = tx.live_top_leads(10).await;
        tx.rollback().await.unwrap();
        let top = top.map(|v| {
            v.into_iter()
                .map(|r| {
                    (
                        if r.contact.id == a { "a" } else { "b" },
                        r.log.is_nan(),
                        r.log,
                    )
                })
                .collect::<Vec<_>>()
        });
        format!("{} {}", describe(&written), describe(&top))
    }
    let (memory, postgres) = on_both(|store| Box::pin(attack(store))).await;
    // A state is ln Σ w·2^(t/h): never NaN. Either both refuse it naming
    // the field, or both keep it and rank it alike.
    assert_eq!(
        memory, postgres,
        "NaN/inf states: the in-memory store (left) and PostgreSQL (right) disagree"
    );
}

// ------------------------------------------------ metadata containment

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_by_tiny_metadata_numbers_matches_alike_on_both_backends() {
    async fn attack(store: &DynStore) -> String {
        let t = TenantId::new();
        let mut answers = Vec::new();
        // Pairs of different doubles whose decimal forms differ only past
        // the 28th decimal place.
        let pairs: [(f64, f64); 3] = [
            (1e-30, 2e-30),
            (1.234_567_890_123_456_6e-13, 1.234_567_890_123_457e-13),
            (5e-324, 1e-323),
        ];
        for (i, (stored, asked)) in pairs.into_iter().enumerate() {
            let new = NewContact {
                metadata: Metadata::parse(json!({"x": stored})).unwrap(),
                ..NewContact::new(
                    Email::parse(&format!("tiny{i}@example.com")).unwrap(),
                    PersonName::parse("Ti").unwrap(),
                    PersonName::parse("Ny").unwrap(),
                )
            };
            store.scope(t, &ctx()).create_contact(new).await.unwrap();
            let q = ContactQuery::new()
                .with_metadata_contains(Metadata::parse(json!({"x": asked})).unwrap());
            let found = store
                .scope(t, &ctx())
                .search_contacts(&q)
                .await
                .map(|p| p.items.len());
            answers.push(format!("{stored:e} ⊇ {asked:e}: {}", describe(&found)));
        }
        answers.join("; ")
    }
    assert_alike(
        "metadata containment of tiny numbers",
        on_both(|store| Box::pin(attack(store))).await,
    );
}

// ------------------------------------------------ CSV files

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_with_a_byte_order_mark_and_carriage_return_line_ends_imports_every_field() {
    async fn attack(store: &DynStore) -> String {
        let t = TenantId::new();
        let csv = "\u{feff}email,first_name,last_name,company\r\
                   bom@example.com,Bo,M,\"Quote \"\"Co\"\"\"\r\
                   cr@example.com,C,R,'=1+1\r";
        let report =
            bulk::import_contacts_csv(store, t, &ctx(), csv.as_bytes(), ImportOptions::default())
                .await;
        let mut all = store
            .scope(t, &ctx())
            .search_contacts(&ContactQuery::new().with_page(PageRequest::first(10)))
            .await
            .unwrap()
            .items;
        all.sort_by(|a, b| a.email.as_str().cmp(b.email.as_str()));
        let rows: Vec<String> = all
            .iter()
            .map(|c| {
                format!(
                    "{}|{}|{}|{:?}|{}",
                    c.email,
                    c.first_name,
                    c.last_name,
                    c.company.as_ref().map(|v| v.as_str()),
                    Value::Object(c.metadata.as_map().clone())
                )
            })
            .collect();
        format!(
            "{} {rows:?}",
            describe(&report.map(|r| (r.rows, r.inserted, r.rejected)))
        )
    }
    let (memory, postgres) = on_both(|store| Box::pin(attack(store))).await;
    assert_eq!(memory, postgres);
    let expected: Vec<String> = vec![
        r#"bom@example.com|Bo|M|Some("Quote \"Co\"")|{}"#.into(),
        r#"cr@example.com|C|R|Some("=1+1")|{}"#.into(),
    ];
    assert_eq!(memory, format!("Ok((2, 2, [])) {expected:?}"));
}

// ------------------------------------------------ a catalogue of probes

/// One call per public entry point with hostile or boundary arguments, each
/// in a transaction of its own; every answer, one per line.
async fn probes(store: &DynStore) -> Vec<String> {
    use chrono::{DateTime, Utc};
    use crm_core::{
        domain::{
            Currency, DealId, DealTitle, Money, NewDeal, PipelineKey, Score, StageKey,
            earliest_timestamp, latest_timestamp,
        },
        history::{EntityKind, FieldQuery, HistoryEntity},
        idempotency::{IdempotencyKey, IdempotencySource},
        scoring::InputsRequest,
        store::Cursor,
    };

    let t = TenantId::new();
    let a = contact(store, t, "probe-a@example.com").await;
    let b = contact(store, t, "probe-b@example.com").await;
    let deal = store
        .scope(t, &ctx())
        .create_deal(NewDeal::new(
            a,
            DealTitle::parse("Probe").unwrap(),
            Money::parse("10", Currency::parse("EUR").unwrap()).unwrap(),
        ))
        .await
        .unwrap();
    let missing = ContactId::new();
    let zero = PageRequest::first(0);
    let garbage = PageRequest::after(10, Cursor::from_string("zz".into()));
    let now = Utc::now();
    let source = IdempotencySource::parse("probe").unwrap();
    let key = IdempotencyKey::parse("k1").unwrap();
    let mut out = Vec::new();

    macro_rules! probe {
        ($name:literal, |$tx:ident| $call:expr) => {
            probe!($name, |$tx| $call, |v| v)
        };
        ($name:literal, |$tx:ident| $call:expr, $f:expr) => {{
            let mut $tx = store.begin(t, ctx()).await.unwrap();
            let r = $call.await.map($f);
            let _ = $tx.rollback().await;
            out.push(format!("{}: {}", $name, describe(&r)));
        }};
    }

    probe!("deals of a missing contact, limit 0", |tx| tx
        .list_deals_for_contact(missing, &zero));
    probe!(
        "deals of a missing contact, garbage cursor",
        |tx| tx.list_deals_for_contact(missing, &garbage),
        |p| p.items.len()
    );
    probe!(
        "timeline of a missing contact, limit 0",
        |tx| tx.timeline(missing, &zero),
        |p| p.items.len()
    );
    probe!(
        "timeline of a missing contact, garbage cursor",
        |tx| tx.timeline(missing, &garbage),
        |p| p.items.len()
    );
    probe!(
        "deals in a missing stage, limit 0",
        |tx| tx.list_deals_in_stage(
            &PipelineKey::parse("no_such_pipeline").unwrap(),
            &StageKey::parse("nowhere").unwrap(),
            &zero
        ),
        |p| p.items.len()
    );
    probe!(
        "history of a missing record, limit 0",
        |tx| tx.entity_history(HistoryEntity::Contact(missing), &zero),
        |p| p.items.len()
    );
    probe!(
        "as of the earliest instant",
        |tx| tx.entity_as_of(HistoryEntity::Contact(a), earliest_timestamp()),
        |e| e.is_some()
    );
    probe!(
        "as of the latest instant",
        |tx| tx.entity_as_of(HistoryEntity::Contact(a), latest_timestamp()),
        |e| e.map(|e| e.operation)
    );
    probe!(
        "as of MIN_UTC of a missing record",
        |tx| tx.entity_as_of(HistoryEntity::Contact(missing), DateTime::<Utc>::MIN_UTC),
        |e| e.is_some()
    );
    probe!(
        "field changes of an empty field name",
        |tx| tx.field_changes(&FieldQuery::new(EntityKind::Contact, "")),
        |p| p.items.len()
    );
    probe!(
        "field changes of a 1 MB field name",
        |tx| tx.field_changes(&FieldQuery::new(EntityKind::Contact, &"f".repeat(1 << 20))),
        |p| p.items.len()
    );
    probe!(
        "changes between reversed bounds",
        |tx| tx.changes_between(
            latest_timestamp(),
            earliest_timestamp(),
            &PageRequest::first(10)
        ),
        |p| p.items.len()
    );
    probe!(
        "changes between the ends of the range",
        |tx| tx.changes_between(
            earliest_timestamp(),
            latest_timestamp(),
            &PageRequest::first(10)
        ),
        |p| p.items.len()
    );
    probe!(
        "changes between, both out of range, limit 0",
        |tx| tx.changes_between(DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC, &zero),
        |p| p.items.len()
    );
    probe!("purge history before the earliest instant", |tx| tx
        .purge_history(earliest_timestamp()));
    probe!("purge idempotency records, limit 0", |tx| tx
        .purge_idempotency_records(now, 0));
    probe!("purge idempotency records, limit u32::MAX", |tx| tx
        .purge_idempotency_records(now, u32::MAX));
    probe!("purge idempotency records at MAX_UTC, limit 0", |tx| tx
        .purge_idempotency_records(DateTime::<Utc>::MAX_UTC, 0));
    probe!(
        "idempotency records, limit 0",
        |tx| tx.list_idempotency_records(&source, &zero),
        |p| p.items.len()
    );
    probe!(
        "idempotency records, garbage cursor",
        |tx| tx.list_idempotency_records(&source, &garbage),
        |p| p.items.len()
    );
    probe!(
        "an idempotency record never claimed",
        |tx| tx.get_idempotency_record(&source, &key),
        |p| p.is_some()
    );
    probe!("live top leads, limit 0", |tx| tx.live_top_leads(0), |v| v
        .len());
    probe!(
        "live top leads, limit 1001",
        |tx| tx.live_top_leads(1001),
        |v| v.len()
    );
    probe!("no live states", |tx| tx.write_live_score_logs(&[]));
    probe!("a live state of an unknown contact", |tx| tx
        .write_live_score_logs(&[LiveState::new(missing, Some(1.0))]));
    probe!("scores, one contact twice", |tx| tx.write_scores(&[
        ContactScore::new(a, Score::new(10).unwrap()),
        ContactScore::new(a, Score::new(20).unwrap())
    ]));
    probe!("scores of an unknown contact", |tx| tx.write_scores(&[
        ContactScore::new(missing, Score::new(10).unwrap())
    ]));
    probe!(
        "upsert nothing",
        |tx| tx.upsert_contacts(&[], bulk::ConflictPolicy::default()),
        |v| v.len()
    );
    probe!(
        "scoring inputs, limit 0, from MIN_UTC",
        |tx| tx.scoring_inputs(&InputsRequest {
            created_from: DateTime::<Utc>::MIN_UTC,
            after: None,
            limit: 0,
            inputs_from: Some(DateTime::<Utc>::MAX_UTC),
        }),
        |v| v.len()
    );
    probe!(
        "scoring inputs, limit u32::MAX, after a missing id",
        |tx| tx.scoring_inputs(&InputsRequest {
            created_from: earliest_timestamp(),
            after: Some(missing),
            limit: u32::MAX,
            inputs_from: Some(latest_timestamp()),
        }),
        |v| v.len()
    );
    probe!(
        "merge a contact into itself",
        |tx| tx.merge_contacts(a, a, bulk::ConflictPolicy::default()),
        |c| c.id == a
    );
    probe!(
        "merge a missing contact",
        |tx| tx.merge_contacts(a, missing, bulk::ConflictPolicy::default()),
        |c| c.id == a
    );
    probe!(
        "merge into a missing contact",
        |tx| tx.merge_contacts(missing, b, bulk::ConflictPolicy::default()),
        |c| c.id == a
    );
    probe!(
        "move a missing deal to a missing stage",
        |tx| tx.move_deal(
            DealId::new(),
            crm_core::Version::FIRST,
            &StageKey::parse("nowhere").unwrap(),
            None
        ),
        |d| d.id
    );
    probe!(
        "move a deal to a missing stage at a stale version",
        |tx| tx.move_deal(
            deal.id,
            crm_core::Version::FIRST.next(),
            &StageKey::parse("nowhere").unwrap(),
            None
        ),
        |d| d.id == deal.id
    );
    probe!(
        "reopen an open deal",
        |tx| tx.reopen_deal(
            deal.id,
            deal.version,
            &StageKey::parse("qualified").unwrap()
        ),
        |d| d.id == deal.id
    );
    probe!(
        "erase a missing contact",
        |tx| tx.erase_contact(missing),
        |c| c.id
    );
    probe!("live state of a missing contact", |tx| tx
        .live_score_log(missing));
    probe!(
        "signals of a missing contact",
        |tx| tx.list_signals(missing),
        |v| v.len()
    );
    let _ = (b, key);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_probe_of_the_catalogue_is_answered_alike_on_both_backends() {
    let memory: Arc<DynStore> =
        Arc::new(InMemoryStore::with_pipelines(conformance::test_pipelines()));
    let on_memory = probes(&*memory).await;
    let pg = support::TestStore::new().await;
    let on_postgres = probes(&*pg).await;
    drop(pg);
    let mut differ = Vec::new();
    for (m, p) in on_memory.iter().zip(&on_postgres) {
        eprintln!("memory:   {m}\npostgres: {p}");
        if m != p {
            differ.push(format!("memory:   {m}\npostgres: {p}"));
        }
    }
    let untyped: Vec<&String> = on_memory
        .iter()
        .chain(&on_postgres)
        .filter(|s| s.contains("Backend"))
        .collect();
    assert!(
        differ.is_empty() && untyped.is_empty(),
        "{} probes answered differently:\n{}\nuntyped errors: {untyped:#?}",
        differ.len(),
        differ.join("\n")
    );
}

// ------------------------------------------------ forged cursors

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_name_cursor_between_odd_names_pages_alike_on_both_backends() {
    async fn attack(store: &DynStore) -> String {
        use crm_core::{
            ContactSort, Cursor,
            store::{ContactSortKey, CursorList},
        };
        let t = TenantId::new();
        let names = [
            "a",
            "Z",
            "é",
            "e\u{301}x",
            "𝔘nicode",
            "\u{FFFD}",
            "ǅ",
            "ß",
            "ﬃ",
            "Ω",
        ];
        for (i, last) in names.iter().enumerate() {
            let new = NewContact::new(
                Email::parse(&format!("odd{i}@example.com")).unwrap(),
                PersonName::parse("F").unwrap(),
                PersonName::parse(last).unwrap(),
            );
            store.scope(t, &ctx()).create_contact(new).await.unwrap();
        }
        let mut out = Vec::new();
        for position in ["", "a", "e", "é", "\u{10FFFF}", "\u{7F}", "ss", "\u{FFFD}"] {
            for sort in [ContactSort::NameAsc, ContactSort::NameDesc] {
                let cursor = Cursor::encode(
                    CursorList::ContactsByName,
                    &ContactSortKey::Name(position.into(), "f".into(), uuid::Uuid::nil()),
                );
                let q = ContactQuery::new()
                    .with_sort(sort)
                    .with_page(PageRequest::after(100, cursor));
                let page = store.scope(t, &ctx()).search_contacts(&q).await.map(|p| {
                    p.items
                        .iter()
                        .map(|c| c.last_name.as_str().to_string())
                        .collect::<Vec<_>>()
                });
                out.push(format!("{position:?} {sort:?}: {}", describe(&page)));
            }
        }
        out.join("\n")
    }
    assert_alike(
        "forged name cursors",
        on_both(|store| Box::pin(attack(store))).await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_containment_of_nested_arrays_and_objects_matches_alike_on_both_backends() {
    async fn attack(store: &DynStore) -> String {
        let t = TenantId::new();
        let stored = json!({
            "a": [1, [2, 3], {"b": [4, {"c": 5}]}, "x", null, true],
            "n": 3,
            "f": 0.5,
            "o": {},
            "e": [],
            "s": "=1",
        });
        let new = NewContact {
            metadata: Metadata::parse(stored).unwrap(),
            ..NewContact::new(
                Email::parse("nested@example.com").unwrap(),
                PersonName::parse("Ne").unwrap(),
                PersonName::parse("St").unwrap(),
            )
        };
        store.scope(t, &ctx()).create_contact(new).await.unwrap();
        let asks = [
            json!({"a": [[2]]}),
            json!({"a": [2]}),
            json!({"a": [[3, 2, 2]]}),
            json!({"a": [{"b": [{}]}]}),
            json!({"a": [{"b": [{"c": 5.0}]}]}),
            json!({"a": "x"}),
            json!({"a": [null, true, "x", 1.0]}),
            json!({"a": []}),
            json!({"n": 3.0}),
            json!({"n": [3]}),
            json!({"f": 0.50}),
            json!({"o": {}}),
            json!({"e": []}),
            json!({"e": {}}),
            json!({"o": []}),
            json!({"s": "=1"}),
            json!({"s": "=1 "}),
            json!({}),
        ];
        let mut out = Vec::new();
        for ask in asks {
            let q =
                ContactQuery::new().with_metadata_contains(Metadata::parse(ask.clone()).unwrap());
            let n = store
                .scope(t, &ctx())
                .search_contacts(&q)
                .await
                .map(|p| p.items.len());
            out.push(format!("{ask}: {}", describe(&n)));
        }
        out.join("\n")
    }
    assert_alike(
        "nested metadata containment",
        on_both(|store| Box::pin(attack(store))).await,
    );
}

// ------------------------------------------------ exports

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_backends_export_the_same_records_identically_and_read_them_back() {
    async fn attack(store: &DynStore) -> String {
        use crm_core::domain::{
            ActivityKind, CompanyName, Currency, DealTitle, LostReason, Money, NewActivity,
            NewDeal, Phone, StageKey, Subject, latest_timestamp,
        };
        let t = TenantId::new();
        let mut new = NewContact::new(
            Email::parse("Ünïcode.Ω@Example.COM").unwrap(),
            PersonName::parse("'=Ada").unwrap(),
            PersonName::parse("\u{05D0}\u{05D1} Lovelace").unwrap(),
        );
        new.company = Some(CompanyName::parse("\"Quoted\", Inc; =x").unwrap());
        new.phone = Some(Phone::parse("+1 (555) 010-9999").unwrap());
        new.metadata = Metadata::parse(json!({
            "u": u64::MAX,
            "i": i64::MIN,
            "f": 1.5e-7,
            "g": 9007199254740991.0_f64 - 1.0,
            "z": 0.0,
            "h": 0.1,
            "s": "-1\r\n=2",
            "ключ": ["é", {"x": null}],
        }))
        .unwrap();
        let c = store.scope(t, &ctx()).create_contact(new).await.unwrap();
        let eur = Currency::parse("EUR").unwrap();
        let deal = store
            .scope(t, &ctx())
            .create_deal(NewDeal {
                expected_close_date: Some(crm_core::domain::latest_date()),
                ..NewDeal::new(
                    c.id,
                    DealTitle::parse("-5% =SUM(A1)").unwrap(),
                    Money::parse("999999999999999.9999", eur).unwrap(),
                )
            })
            .await
            .unwrap();
        let mut tx = store.begin(t, ctx()).await.unwrap();
        tx.move_deal(
            deal.id,
            deal.version,
            &StageKey::parse("closed_lost").unwrap(),
            Some(LostReason::parse("line one\rline two\n@three").unwrap()),
        )
        .await
        .unwrap();
        tx.log_activity(NewActivity {
            occurred_at: Some(latest_timestamp()),
            ..NewActivity::new(c.id, ActivityKind::Email)
                .subject(Subject::parse("+ re: \"hi\"").unwrap())
                .body("\t=cmd\r\nsecond line")
                .unwrap()
        })
        .await
        .unwrap();
        tx.commit().await.unwrap();

        let (mut cc, mut dc, mut ac) = (Vec::new(), Vec::new(), Vec::new());
        bulk::export_contacts_csv(store, t, &ctx(), &mut cc)
            .await
            .unwrap();
        bulk::export_deals_csv(store, t, &ctx(), &mut dc)
            .await
            .unwrap();
        bulk::export_activities_csv(store, t, &ctx(), &mut ac)
            .await
            .unwrap();
        let (mut cj, mut dj, mut aj) = (Vec::new(), Vec::new(), Vec::new());
        bulk::export_contacts_jsonl(store, t, &ctx(), &mut cj)
            .await
            .unwrap();
        bulk::export_deals_jsonl(store, t, &ctx(), &mut dj)
            .await
            .unwrap();
        bulk::export_activities_jsonl(store, t, &ctx(), &mut aj)
            .await
            .unwrap();

        // Read back into a fresh tenant, from CSV and from JSON Lines.
        let mut back = Vec::new();
        for (contacts, deals, acts, csv) in [(&cc, &dc, &ac, true), (&cj, &dj, &aj, false)] {
            let copy = TenantId::new();
            let r = if csv {
                bulk::import_contacts_csv(
                    store,
                    copy,
                    &ctx(),
                    &contacts[..],
                    ImportOptions::default(),
                )
                .await
            } else {
                bulk::import_contacts_jsonl(
                    store,
                    copy,
                    &ctx(),
                    &contacts[..],
                    ImportOptions::default(),
                )
                .await
            };
            back.push(describe(&r.map(|r| (r.inserted, r.rejected))));
            let d = if csv {
                bulk::import_deals_csv(store, copy, &ctx(), &deals[..], 10).await
            } else {
                bulk::import_deals_jsonl(store, copy, &ctx(), &deals[..], 10).await
            };
            let ids = d.as_ref().map(|d| d.ids.clone()).unwrap_or_default();
            back.push(describe(&d.map(|d| (d.created, d.rejected))));
            let a = if csv {
                bulk::import_activities_csv(store, copy, &ctx(), &acts[..], &ids, 10).await
            } else {
                bulk::import_activities_jsonl(store, copy, &ctx(), &acts[..], &ids, 10).await
            };
            back.push(describe(&a.map(|a| (a.created, a.rejected))));
            let (mut c2, mut d2, mut a2) = (Vec::new(), Vec::new(), Vec::new());
            bulk::export_contacts_jsonl(store, copy, &ctx(), &mut c2)
                .await
                .unwrap();
            bulk::export_deals_jsonl(store, copy, &ctx(), &mut d2)
                .await
                .unwrap();
            bulk::export_activities_jsonl(store, copy, &ctx(), &mut a2)
                .await
                .unwrap();
            for (orig, again, what) in [
                (&cj, &c2, "contacts"),
                (&dj, &d2, "deals"),
                (&aj, &a2, "activities"),
            ] {
                // A version counts the writes of this store: a deal
                // exported closed is read back in one write, created
                // closed with its original close time.
                let (o, a) = (
                    without_versions(&masked(orig)),
                    without_versions(&masked(again)),
                );
                if o != a {
                    back.push(format!(
                        "{what} differ after the round trip ({}):\n{o}\n{a}",
                        if csv { "csv" } else { "jsonl" }
                    ));
                }
            }
        }
        format!(
            "{}\n{}\n{}\n{}\n{}",
            masked(&cc),
            masked(&dc),
            masked(&ac),
            masked(&cj),
            back.join("\n")
        )
    }
    let (memory, postgres) = on_both(|store| Box::pin(attack(store))).await;
    assert!(
        !memory.contains("differ after"),
        "memory round trip:\n{memory}"
    );
    assert!(
        !postgres.contains("differ after"),
        "postgres round trip:\n{postgres}"
    );
    assert_eq!(memory, postgres);
}

/// JSON Lines with the `version` of each line masked.
fn without_versions(text: &str) -> String {
    text.lines()
        .map(
            |line| match serde_json::from_str::<serde_json::Value>(line) {
                Ok(serde_json::Value::Object(mut map)) => {
                    if map.contains_key("version") {
                        map.insert("version".into(), "<version>".into());
                    }
                    serde_json::Value::Object(map).to_string()
                }
                _ => line.to_string(),
            },
        )
        .collect::<Vec<_>>()
        .join("\n")
}

/// An export with its ids (UUIDs) and store-assigned times masked.
fn masked(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes).to_string();
    mask_ids_and_times(&text)
}

/// Replaces UUIDs and RFC 3339 times of this century (store-assigned) by
/// placeholders; the year 9999 ones the test chose are kept.
fn mask_ids_and_times(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let rest: String = chars[i..chars.len().min(i + 36)].iter().collect();
        if rest.len() == 36 && uuid::Uuid::parse_str(&rest).is_ok() {
            out.push_str("<id>");
            i += 36;
            continue;
        }
        if rest.starts_with("20")
            && rest.len() >= 20
            && rest.as_bytes()[4] == b'-'
            && rest.as_bytes()[10] == b'T'
        {
            let end = chars[i..]
                .iter()
                .position(|c| *c == 'Z' || *c == '"' || *c == ',')
                .map_or(chars.len(), |p| i + p + 1);
            out.push_str("<now>");
            i = end;
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

// ------------------------------------------------ fingerprints

/// Two payloads that differ only in an integer beyond 64 bits are two
/// payloads: a second delivery of the key with the other one must be a
/// fingerprint mismatch (or be refused), never a replay of the first's
/// result.
#[test]
fn payloads_differing_only_in_an_integer_beyond_64_bits_have_different_fingerprints() {
    use crm_core::idempotency::Fingerprint;
    #[derive(serde::Serialize)]
    struct Payment {
        amount_minor_units: u128,
    }
    let a = Fingerprint::of(&Payment {
        amount_minor_units: 1 << 64,
    });
    let b = Fingerprint::of(&Payment {
        amount_minor_units: (1 << 64) + 1,
    });
    match (a, b) {
        (Ok(a), Ok(b)) => assert_ne!(a, b, "two payloads, one fingerprint"),
        // Refusing such a payload (naming it) is as good.
        (Err(e), _) | (_, Err(e)) => assert_eq!(e.field, "payload"),
    }
}

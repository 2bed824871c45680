//! The conformance suite's input points: every time, text, JSON value and
//! size a caller hands a transaction is checked the same way on every
//! backend, before anything reaches storage (cursors: `cursors.rs`). A refused input is
//! [`Error::Validation`](crate::Error::Validation) naming the field, and
//! the transaction goes on as if it had not been tried.

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use serde_json::{Value, json};

use super::prelude::*;
use super::support::{
    begin, create, ctx, deal, expect_validation, live_states, new_contact, new_deal, ok,
};

/// 0001-01-01T00:00:00Z, the earliest instant a store takes.
pub(super) fn earliest() -> Timestamp {
    Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0)
        .single()
        .expect("year 1 is a time")
}

/// 9999-12-31T23:59:59.999999Z, the latest instant a store takes.
pub(super) fn latest() -> Timestamp {
    DateTime::from_timestamp_micros(253_402_300_799_999_999).expect("year 9999 is a time")
}

/// Instants outside years 1–9999: at the ends of chrono's range and one
/// microsecond past each end of the accepted one.
fn outside() -> [(&'static str, Timestamp); 4] {
    [
        ("the earliest chrono time", DateTime::<Utc>::MIN_UTC),
        (
            "one microsecond before year 1",
            earliest() - Duration::microseconds(1),
        ),
        (
            "one microsecond after year 9999",
            latest() + Duration::microseconds(1),
        ),
        ("the latest chrono time", DateTime::<Utc>::MAX_UTC),
    ]
}

/// Dates outside years 1–9999.
fn dates_outside() -> [(&'static str, NaiveDate); 5] {
    let date = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).expect("a date");
    [
        ("the earliest chrono date", NaiveDate::MIN),
        ("5000 BC", date(-5000, 1, 1)),
        ("the last day of year 0", date(0, 12, 31)),
        ("the first day of year 10000", date(10000, 1, 1)),
        ("the latest chrono date", NaiveDate::MAX),
    ]
}

pub(super) fn source(s: &str) -> IdempotencySource {
    IdempotencySource::parse(s).expect("a valid source")
}

fn key(s: &str) -> IdempotencyKey {
    IdempotencyKey::parse(s).expect("a valid key")
}

pub(super) fn claim(k: &str, now: Timestamp, expires_at: Timestamp) -> IdempotencyClaim {
    IdempotencyClaim {
        source: source("input"),
        key: key(k),
        fingerprint: Fingerprint::of_json(&json!({ "k": k })),
        now,
        expires_at,
        wait: WaitPolicy::NoWait,
    }
}

/// Logs a note on `contact` in `tx`, proving the transaction still works.
pub(super) async fn still_usable(tx: &mut dyn Transaction, contact: ContactId, what: &str) {
    ok(
        tx.log_activity(NewActivity::new(contact, ActivityKind::Note))
            .await,
        &format!("a write after {what}: the transaction goes on"),
    );
}

/// The activities of `contact`, newest first.
async fn activities(store: &DynStore, t: TenantId, contact: ContactId) -> Vec<Timestamp> {
    let mut tx = begin(store, t).await;
    let page = ok(
        tx.timeline(contact, &PageRequest::first(1000)).await,
        "timeline",
    );
    ok(tx.commit().await, "commit");
    page.items.iter().map(|a| a.occurred_at).collect()
}

/// Every instant and date outside years 1–9999, given to every operation
/// that takes one, is a validation error naming the parameter or field,
/// on every backend alike; none of them harms the transaction, which
/// commits the one write made between them.
pub async fn times_outside_years_1_to_9999_are_refused_naming_the_field(store: &DynStore) {
    let t = TenantId::new();
    let c = create(store, t, new_contact("times@example.com", "Ti", "Mes")).await;
    let d = deal(store, t, new_deal(c.id, "Times", "10", "EUR")).await;
    let mut boxed = begin(store, t).await;
    let tx = &mut *boxed;
    for (label, at) in outside() {
        let what = |op: &str| format!("{op} at {label}");
        let activity = NewActivity {
            occurred_at: Some(at),
            ..NewActivity::new(c.id, ActivityKind::Call)
        };
        expect_validation(
            tx.log_activity(activity).await,
            "occurred_at",
            &what("log_activity"),
        );
        let signal = NewSignal {
            occurred_at: Some(at),
            ..NewSignal::new(c.id, SignalKind::PAGE_VIEW)
        };
        expect_validation(
            tx.record_signal(signal).await,
            "occurred_at",
            &what("record_signal"),
        );
        for (field, query) in [
            (
                "created_from",
                ContactQuery {
                    created_from: Some(at),
                    ..ContactQuery::new()
                },
            ),
            (
                "created_until",
                ContactQuery {
                    created_until: Some(at),
                    ..ContactQuery::new()
                },
            ),
            (
                "updated_from",
                ContactQuery {
                    updated_from: Some(at),
                    ..ContactQuery::new()
                },
            ),
            (
                "updated_until",
                ContactQuery {
                    updated_until: Some(at),
                    ..ContactQuery::new()
                },
            ),
        ] {
            expect_validation(
                tx.search_contacts(&query).await,
                field,
                &what(&format!("search {field}")),
            );
        }
        expect_validation(
            tx.entity_as_of(HistoryEntity::Contact(c.id), at).await,
            "at",
            &what("entity_as_of"),
        );
        let page = PageRequest::first(10);
        expect_validation(
            tx.changes_between(at, Utc::now(), &page).await,
            "from",
            &what("changes_between from"),
        );
        expect_validation(
            tx.changes_between(earliest(), at, &page).await,
            "until",
            &what("changes_between until"),
        );
        expect_validation(tx.purge_history(at).await, "before", &what("purge_history"));
        expect_validation(
            tx.purge_idempotency_records(at, 10).await,
            "now",
            &what("purge_idempotency_records"),
        );
        let inputs = InputsRequest {
            created_from: earliest(),
            after: None,
            limit: 10,
            inputs_from: None,
        };
        expect_validation(
            tx.scoring_inputs(&InputsRequest {
                created_from: at,
                ..inputs.clone()
            })
            .await,
            "created_from",
            &what("scoring_inputs created_from"),
        );
        expect_validation(
            tx.scoring_inputs(&InputsRequest {
                inputs_from: Some(at),
                ..inputs
            })
            .await,
            "inputs_from",
            &what("scoring_inputs inputs_from"),
        );
        let now = super::truncate_to_micros(Utc::now());
        expect_validation(
            tx.claim_idempotency_key(&claim("claim-now", at, now)).await,
            "now",
            &what("claim now"),
        );
        expect_validation(
            tx.claim_idempotency_key(&claim("claim-expiry", now, at))
                .await,
            "expires_at",
            &what("claim expires_at"),
        );
        expect_validation(
            tx.defer_idempotency_claim(&claim("defer-now", at, now))
                .await,
            "now",
            &what("deferred claim now"),
        );
        expect_validation(
            tx.complete_idempotency_key(
                &source("input"),
                &key("never-claimed"),
                &StoredResult::Succeeded(json!(1)),
                at,
            )
            .await,
            "completed_at",
            &what("complete completed_at"),
        );
        still_usable(tx, c.id, &what("every refusal")).await;
    }
    for (label, date) in dates_outside() {
        let mut new = new_deal(c.id, "Far", "1", "EUR");
        new.expected_close_date = Some(date);
        expect_validation(
            tx.create_deal(new).await,
            "expected_close_date",
            &format!("create_deal closing on {label}"),
        );
        let patch = DealPatch {
            expected_close_date: Some(Some(date)),
            ..DealPatch::default()
        };
        expect_validation(
            tx.update_deal(d.id, d.version, patch).await,
            "expected_close_date",
            &format!("update_deal closing on {label}"),
        );
    }
    still_usable(tx, c.id, "the refused dates").await;
    // A claim must expire after it is made (PostgreSQL checks it; so does
    // every backend, before storing anything).
    let now = super::truncate_to_micros(Utc::now());
    expect_validation(
        tx.claim_idempotency_key(&claim("expires-at-once", now, now))
            .await,
        "expires_at",
        "a claim expiring when it is made",
    );
    still_usable(tx, c.id, "the refused claim").await;
    ok(boxed.commit().await, "commit after the refusals");
    let notes = activities(store, t, c.id).await;
    assert_eq!(
        notes.len(),
        outside().len() + 2,
        "only the notes between the refusals were written"
    );
    let mut tx = begin(store, t).await;
    assert!(
        ok(tx.list_signals(c.id).await, "signals").is_empty(),
        "no refused signal was recorded"
    );
    let deals = ok(
        tx.list_deals_for_contact(c.id, &PageRequest::first(10))
            .await,
        "deals",
    );
    assert_eq!(deals.items.len(), 1, "no refused deal was created");
    assert_eq!(
        deals.items[0].expected_close_date, None,
        "no refused date was written"
    );
    let records = ok(
        tx.list_idempotency_records(&source("input"), &PageRequest::first(10))
            .await,
        "records",
    );
    assert!(records.items.is_empty(), "no refused claim was stored");
    ok(tx.commit().await, "commit");
}

/// The first and the last instant of years 1–9999, and their first and
/// last days, are taken everywhere and read back exactly: the range is
/// not narrower than it says.
pub async fn the_first_and_last_instants_of_years_1_to_9999_are_kept_exactly(store: &DynStore) {
    let t = TenantId::new();
    let c = create(store, t, new_contact("edges@example.com", "Ed", "Ges")).await;
    let first_day = NaiveDate::from_ymd_opt(1, 1, 1).expect("a date");
    let last_day = NaiveDate::from_ymd_opt(9999, 12, 31).expect("a date");
    let mut tx = begin(store, t).await;
    for at in [earliest(), latest()] {
        let a = ok(
            tx.log_activity(NewActivity::new(c.id, ActivityKind::Email).occurred_at(at))
                .await,
            "an activity at an edge",
        );
        assert_eq!(a.occurred_at, at, "the activity keeps its edge time");
        let s = ok(
            tx.record_signal(NewSignal::new(c.id, SignalKind::EMAIL_OPEN).occurred_at(at))
                .await,
            "a signal at an edge",
        );
        assert_eq!(s.occurred_at, at, "the signal keeps its edge time");
    }
    let mut ids = Vec::new();
    for date in [first_day, last_day] {
        let mut new = new_deal(c.id, "Edge", "5", "EUR");
        new.expected_close_date = Some(date);
        let d = ok(tx.create_deal(new).await, "a deal closing on an edge day");
        assert_eq!(d.expected_close_date, Some(date));
        ids.push(d.id);
    }
    let q = ContactQuery {
        created_from: Some(earliest()),
        created_until: Some(latest()),
        updated_from: Some(earliest()),
        updated_until: Some(latest()),
        ..ContactQuery::new()
    };
    let found = ok(tx.search_contacts(&q).await, "search over the whole range");
    assert_eq!(found.items.len(), 1, "the whole range finds the contact");
    ok(
        tx.changes_between(earliest(), latest(), &PageRequest::first(10))
            .await,
        "changes over the whole range",
    );
    assert!(
        ok(
            tx.entity_as_of(HistoryEntity::Contact(c.id), latest())
                .await,
            "as of the last instant"
        )
        .is_some(),
        "the contact exists at the last instant"
    );
    assert_eq!(
        ok(tx.purge_history(earliest()).await, "purge before year 1"),
        0
    );
    assert_eq!(
        ok(
            tx.purge_idempotency_records(earliest(), 10).await,
            "purge at year 1"
        ),
        0
    );
    ok(
        tx.scoring_inputs(&InputsRequest {
            created_from: earliest(),
            after: None,
            limit: 10,
            inputs_from: Some(earliest()),
        })
        .await,
        "scoring inputs from year 1",
    );
    ok(
        tx.claim_idempotency_key(&claim("edge", earliest(), latest()))
            .await,
        "a claim from year 1 to year 9999",
    );
    ok(
        tx.complete_idempotency_key(
            &source("input"),
            &key("edge"),
            &StoredResult::Succeeded(json!("done")),
            latest(),
        )
        .await,
        "completed at the last instant",
    );
    ok(tx.commit().await, "commit");
    let times = activities(store, t, c.id).await;
    assert_eq!(times, vec![latest(), earliest()], "read back exactly");
    let mut tx = begin(store, t).await;
    let signals = ok(tx.list_signals(c.id).await, "signals");
    assert_eq!(
        signals.iter().map(|s| s.occurred_at).collect::<Vec<_>>(),
        vec![earliest(), latest()]
    );
    for (id, date) in ids.into_iter().zip([first_day, last_day]) {
        let d = ok(tx.get_deal(id).await, "get").expect("the deal");
        assert_eq!(d.expected_close_date, Some(date), "the edge day is kept");
        let versions = ok(
            tx.entity_history(HistoryEntity::Deal(id), &PageRequest::first(10))
                .await,
            "history",
        );
        assert_eq!(
            versions.items[0].values["expected_close_date"],
            json!(date.format("%Y-%m-%d").to_string()),
            "the history writes the edge day with four digits"
        );
    }
    let record = ok(
        tx.get_idempotency_record(&source("input"), &key("edge"))
            .await,
        "record",
    )
    .expect("the record");
    assert_eq!(
        (record.created_at, record.completed_at, record.expires_at),
        (earliest(), Some(latest()), latest())
    );
    ok(tx.commit().await, "commit");
}

/// A leap second (chrono's `23:59:60`) is kept as PostgreSQL keeps it:
/// folded into the first instant of the next second, on every backend,
/// whether it came through a builder or a field set directly.
pub async fn a_leap_second_is_kept_as_the_next_second_on_every_backend(store: &DynStore) {
    let t = TenantId::new();
    let c = create(store, t, new_contact("leap@example.com", "Le", "Ap")).await;
    let leap = NaiveDate::from_ymd_opt(2016, 12, 31)
        .and_then(|d| d.and_hms_micro_opt(23, 59, 59, 1_500_000))
        .expect("a leap second")
        .and_utc();
    let folded = Utc
        .with_ymd_and_hms(2017, 1, 1, 0, 0, 0)
        .single()
        .expect("a time")
        + Duration::milliseconds(500);
    let mut tx = begin(store, t).await;
    let built = ok(
        tx.log_activity(NewActivity::new(c.id, ActivityKind::Call).occurred_at(leap))
            .await,
        "log at a leap second through the builder",
    );
    let direct = ok(
        tx.log_activity(NewActivity {
            occurred_at: Some(leap),
            ..NewActivity::new(c.id, ActivityKind::Note)
        })
        .await,
        "log at a leap second set directly",
    );
    let signal = ok(
        tx.record_signal(NewSignal {
            occurred_at: Some(leap),
            ..NewSignal::new(c.id, SignalKind::PAGE_VIEW)
        })
        .await,
        "a signal at a leap second",
    );
    ok(tx.commit().await, "commit");
    for (what, at) in [
        ("the built activity", built.occurred_at),
        ("the direct activity", direct.occurred_at),
        ("the signal", signal.occurred_at),
    ] {
        assert_eq!(at, folded, "{what} as returned is the next second");
    }
    assert_eq!(
        activities(store, t, c.id).await,
        vec![folded, folded],
        "read back as the next second"
    );
    let mut tx = begin(store, t).await;
    let signals = ok(tx.list_signals(c.id).await, "signals");
    assert_eq!(signals[0].occurred_at, folded, "the signal read back");
    ok(tx.commit().await, "commit");
}

/// A NUL character in a text a caller passes (a search prefix, a history
/// field name, an activity body set directly) is refused naming it; the
/// transaction goes on.
pub async fn a_nul_in_a_text_parameter_is_refused_naming_it(store: &DynStore) {
    let t = TenantId::new();
    let c = create(store, t, new_contact("nul@example.com", "Nu", "Ll")).await;
    let mut boxed = begin(store, t).await;
    let tx = &mut *boxed;
    for (field, query) in [
        (
            "email_prefix",
            ContactQuery {
                email_prefix: Some("nu\0".into()),
                ..ContactQuery::new()
            },
        ),
        (
            "name_prefix",
            ContactQuery {
                name_prefix: Some("\0".into()),
                ..ContactQuery::new()
            },
        ),
        (
            "company_prefix",
            ContactQuery {
                company_prefix: Some("a\0b".into()),
                ..ContactQuery::new()
            },
        ),
    ] {
        expect_validation(tx.search_contacts(&query).await, field, field);
        still_usable(tx, c.id, field).await;
    }
    expect_validation(
        tx.field_changes(&FieldQuery::contacts("first\0name")).await,
        "field",
        "a field name with NUL",
    );
    still_usable(tx, c.id, "the field query").await;
    expect_validation(
        tx.log_activity(NewActivity {
            body: Some("a\0b".into()),
            ..NewActivity::new(c.id, ActivityKind::Note)
        })
        .await,
        "body",
        "a body with NUL set directly",
    );
    still_usable(tx, c.id, "the body").await;
    ok(boxed.commit().await, "commit");
    assert_eq!(activities(store, t, c.id).await.len(), 5);
}

/// An activity body set directly on [`NewActivity`] is checked as the
/// builder checks it: trimmed, blank meaning none, at most
/// [`MAX_BODY_CHARS`](crate::domain::MAX_BODY_CHARS) characters; both
/// backends store the same.
pub async fn an_activity_body_set_directly_is_checked_like_the_builder_checks_it(store: &DynStore) {
    let t = TenantId::new();
    let c = create(store, t, new_contact("body@example.com", "Bo", "Dy")).await;
    let with_body = |body: &str| NewActivity {
        body: Some(body.to_string()),
        ..NewActivity::new(c.id, ActivityKind::Note)
    };
    let mut boxed = begin(store, t).await;
    let tx = &mut *boxed;
    let blank = ok(tx.log_activity(with_body("  \n ")).await, "a blank body");
    assert_eq!(blank.body, None, "a blank body is none");
    let empty = ok(tx.log_activity(with_body("")).await, "an empty body");
    assert_eq!(empty.body, None, "an empty body is none");
    let padded = ok(tx.log_activity(with_body("  hello \n")).await, "a body");
    assert_eq!(padded.body.as_deref(), Some("hello"), "a body is trimmed");
    let long = "x".repeat(crate::domain::MAX_BODY_CHARS + 1);
    expect_validation(tx.log_activity(with_body(&long)).await, "body", "too long");
    still_usable(tx, c.id, "a body too long").await;
    ok(boxed.commit().await, "commit");
    let mut tx = begin(store, t).await;
    let stored = ok(tx.timeline(c.id, &PageRequest::first(10)).await, "timeline");
    let mut bodies: Vec<Option<String>> = stored.items.into_iter().map(|a| a.body).collect();
    bodies.sort();
    assert_eq!(bodies, vec![None, None, None, Some("hello".to_string())]);
    ok(tx.commit().await, "commit");
}

// ------------------------------------------------------ JSON, numbers, sizes

/// Drops a deeply nested value without recursing.
fn dismantle(v: Value) {
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::Array(items) => stack.extend(items),
            Value::Object(fields) => stack.extend(fields.into_iter().map(|(_, v)| v)),
            _ => {}
        }
    }
}

/// A stored result nested 10,000 levels deep is refused on `result`
/// without overflowing the stack (a backend that clones or serializes it
/// recursively would), and the key can still be completed.
pub async fn a_result_nested_too_deep_is_refused_without_overflowing_the_stack(store: &DynStore) {
    let t = TenantId::new();
    let now = super::truncate_to_micros(Utc::now());
    let c = claim("deep", now, now + Duration::hours(1));
    let mut tx = begin(store, t).await;
    assert!(matches!(
        ok(tx.claim_idempotency_key(&c).await, "claim"),
        Claim::Claimed
    ));
    let mut deep = json!("bottom");
    for _ in 0..10_000 {
        deep = Value::Array(vec![deep]);
    }
    let result = StoredResult::Succeeded(deep);
    let refused = tx
        .complete_idempotency_key(&c.source, &c.key, &result, now)
        .await;
    let StoredResult::Succeeded(deep) = result else {
        unreachable!()
    };
    dismantle(deep);
    expect_validation(refused, "result", "a result 10,000 levels deep");
    ok(
        tx.complete_idempotency_key(
            &c.source,
            &c.key,
            &StoredResult::Succeeded(json!({"ok": [1, 2]})),
            now,
        )
        .await,
        "complete with a plain result",
    );
    ok(tx.commit().await, "commit");
    let mut tx = begin(store, t).await;
    let record = ok(tx.get_idempotency_record(&c.source, &c.key).await, "get").expect("the record");
    assert_eq!(
        record.result,
        Some(StoredResult::Succeeded(json!({"ok": [1, 2]})))
    );
    ok(tx.commit().await, "commit");
}

/// A metadata number is either refused on `metadata` when it is parsed,
/// or kept exactly: every backend reads back the same JSON text, and a
/// containment search with it finds the contact.
pub async fn metadata_numbers_are_kept_exactly_or_refused(store: &DynStore) {
    let t = TenantId::new();
    let numbers = [
        "0",
        "-0",
        "-0.0",
        "0.5",
        "-1.25",
        "1.0",
        "1e2",
        "9007199254740993",
        "18446744073709551615",
        "-9223372036854775808",
        "9007199254740992.0",
        "123456789012345678901234567890",
        "1e20",
        "1.7976931348623157e308",
        "5e-324",
    ];
    for (i, text) in numbers.into_iter().enumerate() {
        let value: Value = serde_json::from_str(&format!(r#"{{"n": {text}}}"#)).expect("JSON");
        let metadata = match Metadata::parse(value) {
            Ok(m) => m,
            Err(e) => {
                assert_eq!(e.field, "metadata", "{text} is refused on metadata");
                continue;
            }
        };
        let mut new = new_contact(&format!("n{i}@example.com"), "Num", "Ber");
        new.metadata = metadata.clone();
        let c = create(store, t, new).await;
        let mut tx = begin(store, t).await;
        let read = ok(tx.get_contact(c.id).await, "get").expect("the contact");
        let q = ContactQuery {
            metadata_contains: Some(metadata.clone()),
            email_prefix: Some(format!("n{i}@")),
            ..ContactQuery::new()
        };
        let found = ok(tx.search_contacts(&q).await, "contains");
        ok(tx.commit().await, "commit");
        assert_eq!(
            serde_json::to_string(&read.metadata).expect("JSON"),
            serde_json::to_string(&metadata).expect("JSON"),
            "the metadata number {text} reads back exactly"
        );
        assert_eq!(found.items.len(), 1, "containment of {text} finds it");
    }
}

/// `write_live_score_logs` with an id listed more than once sets the last
/// value given for it and counts the contact once (as `write_scores`).
pub async fn live_score_logs_give_a_repeated_id_its_last_value_and_count_it_once(store: &DynStore) {
    let t = TenantId::new();
    let a = create(store, t, new_contact("live-a@example.com", "Li", "Ve")).await;
    let b = create(store, t, new_contact("live-b@example.com", "Li", "Ve")).await;
    let logs = [
        (a.id, Some(1.0)),
        (b.id, Some(2.0)),
        (a.id, Some(3.0)),
        (ContactId::new(), Some(4.0)),
    ];
    let mut tx = begin(store, t).await;
    let set = ok(tx.write_live_score_logs(&live_states(&logs)).await, "write");
    assert_eq!(set, 2, "two contacts were set, each counted once");
    assert_eq!(
        ok(tx.live_score_log(a.id).await.map(|s| s.map(|s| s.log)), "a"),
        Some(Some(3.0)),
        "the last value given wins"
    );
    assert_eq!(
        ok(tx.live_score_log(b.id).await.map(|s| s.map(|s| s.log)), "b"),
        Some(Some(2.0))
    );
    ok(tx.commit().await, "commit");
}

/// A rescoring asked for a top list beyond the limit is refused on `top`,
/// before anything is read (it used to overflow or abort on allocating it).
pub async fn a_rescoring_top_beyond_the_limit_is_refused_naming_top(store: &DynStore) {
    let t = TenantId::new();
    create(store, t, new_contact("top@example.com", "To", "P")).await;
    for top in [usize::MAX, usize::MAX - 1, 1 << 40, 1001] {
        expect_validation(
            rescore(
                store,
                t,
                ctx(),
                &ScoringModel::default(),
                &RescoreOptions::dry_run().with_top(top),
            )
            .await,
            "top",
            &format!("a top of {top}"),
        );
    }
    let report = ok(
        rescore(
            store,
            t,
            ctx(),
            &ScoringModel::default(),
            &RescoreOptions::dry_run().with_top(1000),
        )
        .await,
        "a top of 1000",
    );
    assert_eq!(report.top.len(), 1);
}

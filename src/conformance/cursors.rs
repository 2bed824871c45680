//! The conformance suite's cursor points: every keyset-paginated list
//! takes back only the cursors it made, and checks the position a cursor
//! holds before any store uses it.

use chrono::{Duration, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::input::{claim, earliest, latest, source, still_usable};
use super::prelude::*;
use super::support::{begin, create, expect_validation, new_contact, new_deal, ok};

/// Every keyset-paginated list of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum List {
    ContactsByScore,
    ContactsByCreation,
    ContactsByUpdate,
    ContactsByName,
    DealsOfContact,
    DealsInStage,
    Timeline,
    EntityHistory,
    FieldChanges,
    TenantChanges,
    IdempotencyRecords,
}

const LISTS: [List; 11] = [
    List::ContactsByScore,
    List::ContactsByCreation,
    List::ContactsByUpdate,
    List::ContactsByName,
    List::DealsOfContact,
    List::DealsInStage,
    List::Timeline,
    List::EntityHistory,
    List::FieldChanges,
    List::TenantChanges,
    List::IdempotencyRecords,
];

/// A tenant where every list has at least two items.
struct Lists {
    contact: Contact,
    pipeline: crate::domain::PipelineKey,
    stage: crate::domain::StageKey,
}

async fn lists(store: &DynStore, t: TenantId) -> Lists {
    let a = create(store, t, new_contact("lists-a@example.com", "Ada", "Lists")).await;
    create(store, t, new_contact("lists-b@example.com", "Bob", "Lists")).await;
    let mut tx = begin(store, t).await;
    let mut contact = a;
    for name in ["Adele", "Adelaide"] {
        let patch = crate::domain::ContactPatch {
            first_name: Some(super::support::person(name)),
            ..Default::default()
        };
        contact = ok(
            tx.update_contact(contact.id, contact.version, patch).await,
            "rename",
        );
    }
    let mut first = None;
    for title in ["One", "Two"] {
        let d = ok(
            tx.create_deal(new_deal(contact.id, title, "1", "EUR"))
                .await,
            "deal",
        );
        first.get_or_insert(d);
        ok(
            tx.log_activity(NewActivity::new(contact.id, ActivityKind::Email))
                .await,
            "activity",
        );
    }
    let now = super::truncate_to_micros(Utc::now());
    for k in ["one", "two"] {
        let c = IdempotencyClaim {
            source: source("lists"),
            ..claim(k, now, now + Duration::hours(1))
        };
        assert!(matches!(
            ok(tx.claim_idempotency_key(&c).await, "claim"),
            Claim::Claimed
        ));
        ok(
            tx.complete_idempotency_key(&c.source, &c.key, &StoredResult::Succeeded(json!(k)), now)
                .await,
            "complete",
        );
    }
    ok(tx.commit().await, "commit");
    let d = first.expect("a deal");
    Lists {
        contact,
        pipeline: d.pipeline,
        stage: d.stage,
    }
}

/// One page of `list`; its next cursor.
async fn read(
    tx: &mut dyn Transaction,
    fixture: &Lists,
    list: List,
    page: PageRequest,
) -> crate::Result<Option<Cursor>> {
    let search = |sort: ContactSort| ContactQuery::new().with_sort(sort).with_page(page.clone());
    let id = fixture.contact.id;
    Ok(match list {
        List::ContactsByScore => {
            tx.search_contacts(&search(ContactSort::ScoreDesc))
                .await?
                .next_cursor
        }
        List::ContactsByCreation => {
            tx.search_contacts(&search(ContactSort::CreatedDesc))
                .await?
                .next_cursor
        }
        List::ContactsByUpdate => {
            tx.search_contacts(&search(ContactSort::UpdatedAsc))
                .await?
                .next_cursor
        }
        List::ContactsByName => {
            tx.search_contacts(&search(ContactSort::NameAsc))
                .await?
                .next_cursor
        }
        List::DealsOfContact => tx.list_deals_for_contact(id, &page).await?.next_cursor,
        List::DealsInStage => {
            tx.list_deals_in_stage(&fixture.pipeline, &fixture.stage, &page)
                .await?
                .next_cursor
        }
        List::Timeline => tx.timeline(id, &page).await?.next_cursor,
        List::EntityHistory => {
            tx.entity_history(HistoryEntity::Contact(id), &page)
                .await?
                .next_cursor
        }
        List::FieldChanges => {
            tx.field_changes(&FieldQuery::contacts("first_name").page(page))
                .await?
                .next_cursor
        }
        List::TenantChanges => {
            tx.changes_between(earliest(), latest(), &page)
                .await?
                .next_cursor
        }
        List::IdempotencyRecords => {
            tx.list_idempotency_records(&source("lists"), &page)
                .await?
                .next_cursor
        }
    })
}

/// The next cursor of the first page (one item) of every list.
async fn cursors(tx: &mut dyn Transaction, fixture: &Lists) -> Vec<(List, Cursor)> {
    let mut out = Vec::new();
    for list in LISTS {
        let cursor = ok(
            read(tx, fixture, list, PageRequest::first(1)).await,
            "a list",
        )
        .unwrap_or_else(|| panic!("{list:?} has a second page"));
        // The list takes its own cursor back.
        ok(
            read(tx, fixture, list, PageRequest::after(1, cursor.clone())).await,
            &format!("{list:?} after its own cursor"),
        );
        out.push((list, cursor));
    }
    out
}

/// A cursor one list made, given to any other list (searches on other
/// keys included), is a validation error on `cursor`, for every pair of
/// lists; the transaction goes on.
pub async fn a_cursor_of_another_list_is_refused_by_every_list(store: &DynStore) {
    let t = TenantId::new();
    let fixture = lists(store, t).await;
    let mut boxed = begin(store, t).await;
    let tx = &mut *boxed;
    let cursors = cursors(tx, &fixture).await;
    for (from, cursor) in &cursors {
        for to in LISTS.into_iter().filter(|to| to != from) {
            expect_validation(
                read(tx, &fixture, to, PageRequest::after(1, cursor.clone())).await,
                "cursor",
                &format!("{to:?} after a cursor of {from:?}"),
            );
        }
    }
    still_usable(tx, fixture.contact.id, "the foreign cursors").await;
    ok(boxed.commit().await, "commit");
}

/// A cursor's bytes as JSON, changed by `change` and encoded back the same
/// way (lower-case hex of the JSON text). When the cursor is tagged with
/// its list and parameters (`[list, scope, position]`), only the position
/// is changed, so that what is refused is the position itself.
fn tamper(cursor: &Cursor, change: &dyn Fn(&mut Value)) -> Cursor {
    let hex = cursor.as_str().as_bytes();
    let nibble = |c: u8| char::from(c).to_digit(16).expect("a hex cursor") as u8;
    let bytes: Vec<u8> = hex
        .chunks(2)
        .map(|p| nibble(p[0]) << 4 | nibble(p[1]))
        .collect();
    let mut json: Value = serde_json::from_slice(&bytes).expect("a JSON cursor");
    match &mut json {
        Value::Array(a) if a.len() == 3 && a[0].is_string() => change(&mut a[2]),
        other => change(other),
    }
    let text = serde_json::to_vec(&json).expect("JSON");
    Cursor::from_string(text.iter().map(|b| format!("{b:02x}")).collect())
}

/// Replaces every integer of a position by `n`.
fn integers(n: i64) -> impl Fn(&mut Value) {
    move |v: &mut Value| match v {
        Value::Number(x) if x.is_i64() || x.is_u64() => *v = json!(n),
        Value::Array(items) => items.iter_mut().for_each(integers(n)),
        Value::Object(fields) => fields.values_mut().for_each(integers(n)),
        _ => {}
    }
}

/// Replaces every string of a position that is not a UUID by `s`.
fn strings(s: String) -> impl Fn(&mut Value) {
    move |v: &mut Value| match v {
        Value::String(x) if Uuid::parse_str(x).is_err() => *v = json!(s),
        Value::Array(items) => items.iter_mut().for_each(strings(s.clone())),
        Value::Object(fields) => fields.values_mut().for_each(strings(s.clone())),
        _ => {}
    }
}

/// A well-shaped cursor of the right list whose position is out of range
/// (a time outside years 1–9999, a score outside 0–100, a NUL in a name
/// or a key, a key too long, a cursor too long) is a validation error on
/// `cursor`, on every list; the transaction goes on.
pub async fn a_cursor_holding_an_out_of_range_position_is_refused_by_every_list(store: &DynStore) {
    const EARLIEST_MICROS: i64 = -62_135_596_800_000_000;
    const LATEST_MICROS: i64 = 253_402_300_799_999_999;
    let t = TenantId::new();
    let fixture = lists(store, t).await;
    let mut boxed = begin(store, t).await;
    let tx = &mut *boxed;
    let cursors = cursors(tx, &fixture).await;
    for (list, cursor) in &cursors {
        let mut bad: Vec<(String, Cursor)> = Vec::new();
        match list {
            List::ContactsByScore => {
                for n in [-1, 101, i64::MAX] {
                    bad.push((format!("score {n}"), tamper(cursor, &integers(n))));
                }
            }
            List::ContactsByName => {
                for s in ["a\0b".to_string(), "x".repeat(2000)] {
                    let label = format!("a name of {} characters", s.len());
                    bad.push((label, tamper(cursor, &strings(s))));
                }
            }
            _ => {
                for n in [i64::MIN, EARLIEST_MICROS - 1, LATEST_MICROS + 1, i64::MAX] {
                    bad.push((format!("time {n} µs"), tamper(cursor, &integers(n))));
                }
            }
        }
        if *list == List::IdempotencyRecords {
            for s in ["k\0".to_string(), "k".repeat(256)] {
                let label = format!("a key of {} characters", s.len());
                bad.push((label, tamper(cursor, &strings(s))));
            }
        }
        bad.push((
            "a cursor of a million characters".into(),
            Cursor::from_string("0".repeat(1 << 20)),
        ));
        for (label, cursor) in bad {
            expect_validation(
                read(tx, &fixture, *list, PageRequest::after(1, cursor)).await,
                "cursor",
                &format!("{list:?} after a cursor holding {label}"),
            );
        }
    }
    still_usable(tx, fixture.contact.id, "the out-of-range cursors").await;
    ok(boxed.commit().await, "commit");
}

/// Contract: a cursor is taken back only by the call it was made for: the
/// same list for another contact, stage, record, source, range, search
/// filter or order is a validation error on `cursor` (following it would
/// skip or repeat items), and the transaction goes on.
pub async fn a_cursor_of_the_same_list_with_other_parameters_is_refused(store: &DynStore) {
    use crate::{
        bulk::ConflictPolicy,
        domain::{NewSignal, PipelineKey, SignalKind},
    };
    let t = TenantId::new();
    let a = create(store, t, new_contact("a@example.com", "Ann", "A")).await;
    let b = create(store, t, new_contact("b@example.com", "Ben", "B")).await;
    let mut boxed = begin(store, t).await;
    let tx: &mut dyn Transaction = &mut *boxed;
    for c in [&a, &b] {
        for _ in 0..2 {
            ok(
                tx.create_deal(new_deal(c.id, "Deal", "10", "EUR")).await,
                "deal",
            );
            ok(
                tx.log_activity(NewActivity::new(c.id, ActivityKind::Note))
                    .await,
                "activity",
            );
        }
        ok(
            tx.record_signal(NewSignal::new(c.id, SignalKind::PAGE_VIEW))
                .await,
            "signal",
        );
    }
    ok(
        tx.upsert_contacts(
            &[
                new_contact("c@example.com", "Cy", "C"),
                new_contact("d@example.com", "Di", "D"),
            ],
            ConflictPolicy::Incoming,
        )
        .await,
        "more contacts",
    );
    let first = PageRequest::first(1);
    let next = |c: Option<Cursor>, what: &str| -> PageRequest {
        PageRequest::after(1, c.unwrap_or_else(|| panic!("{what} has a second page")))
    };

    // Deals of a contact, the timeline.
    let c = ok(tx.list_deals_for_contact(a.id, &first).await, "deals").next_cursor;
    expect_validation(
        tx.list_deals_for_contact(b.id, &next(c, "a's deals")).await,
        "cursor",
        "b's deals after a cursor of a's",
    );
    let c = ok(tx.timeline(a.id, &first).await, "timeline").next_cursor;
    expect_validation(
        tx.timeline(b.id, &next(c, "a's timeline")).await,
        "cursor",
        "b's timeline after a cursor of a's",
    );
    // Deals in a stage.
    let pipeline = PipelineKey::default_pipeline();
    let stages = super::support::default_stages(store);
    let c = ok(
        tx.list_deals_in_stage(&pipeline, &stages.open[0], &first)
            .await,
        "stage",
    )
    .next_cursor;
    expect_validation(
        tx.list_deals_in_stage(&pipeline, &stages.open[1], &next(c, "the first stage"))
            .await,
        "cursor",
        "another stage after a cursor of the first",
    );
    // History: one record, one field, one range.
    let renamed = crate::domain::ContactPatch {
        first_name: Some(crate::domain::PersonName::parse("Anna").expect("a name")),
        ..Default::default()
    };
    ok(
        tx.update_contact(a.id, a.version, renamed).await,
        "a second version",
    );
    let c = ok(
        tx.entity_history(HistoryEntity::Contact(a.id), &first)
            .await,
        "history",
    )
    .next_cursor;
    expect_validation(
        tx.entity_history(HistoryEntity::Contact(b.id), &next(c, "a's history"))
            .await,
        "cursor",
        "b's history after a cursor of a's",
    );
    let mut q = FieldQuery::contacts("email");
    q.page = first.clone();
    let c = ok(tx.field_changes(&q).await, "field changes").next_cursor;
    let mut other = FieldQuery::contacts("first_name");
    other.page = next(c, "email changes");
    expect_validation(
        tx.field_changes(&other).await,
        "cursor",
        "another field after a cursor of email",
    );
    let (from, until) = (
        Utc::now() - Duration::hours(1),
        Utc::now() + Duration::hours(1),
    );
    let c = ok(tx.changes_between(from, until, &first).await, "changes").next_cursor;
    expect_validation(
        tx.changes_between(from, until + Duration::hours(1), &next(c, "the range"))
            .await,
        "cursor",
        "another range after a cursor of the first",
    );
    // Searches: other filters, the same key in the other direction.
    let q = ContactQuery::new()
        .with_sort(ContactSort::ScoreDesc)
        .with_page(first.clone());
    let c = ok(tx.search_contacts(&q).await, "search").next_cursor;
    let c = next(c, "the search");
    expect_validation(
        tx.search_contacts(
            &q.clone()
                .with_sort(ContactSort::ScoreAsc)
                .with_page(c.clone()),
        )
        .await,
        "cursor",
        "the other direction after a cursor of one",
    );
    let filtered = ContactQuery {
        active: Some(true),
        ..q.clone()
    };
    expect_validation(
        tx.search_contacts(&filtered.with_page(c.clone())).await,
        "cursor",
        "other filters after a cursor of none",
    );
    let same = ok(
        tx.search_contacts(&q.clone().with_page(c)).await,
        "the same search",
    );
    assert_eq!(
        same.items.len(),
        1,
        "the search it was made for takes it back"
    );
    // Idempotency records of another source.
    let now = crate::domain::truncate_to_micros(Utc::now());
    for key in ["k1", "k2"] {
        let mut claim_of = claim(key, now, now + Duration::hours(1));
        claim_of.source = source("crm");
        if let Claim::Claimed = ok(tx.claim_idempotency_key(&claim_of).await, "claim") {
            ok(
                tx.complete_idempotency_key(
                    &claim_of.source,
                    &claim_of.key,
                    &StoredResult::Succeeded(json!(1)),
                    now,
                )
                .await,
                "complete",
            );
        }
    }
    let c = ok(
        tx.list_idempotency_records(&source("crm"), &first).await,
        "records",
    )
    .next_cursor;
    expect_validation(
        tx.list_idempotency_records(&source("other"), &next(c, "crm's records"))
            .await,
        "cursor",
        "another source after a cursor of crm's",
    );
    still_usable(tx, a.id, "the cursors of other calls").await;
    ok(boxed.commit().await, "commit");
}

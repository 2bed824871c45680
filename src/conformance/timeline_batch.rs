//! The conformance suite's points for activities and signals in batches
//! ([`log_activities`](crate::store::TimelineTx::log_activities),
//! [`record_signals`](crate::store::TimelineTx::record_signals)): a batch
//! leaves what the single calls in order leave (timelines, signals, live
//! scores, freshness, feed events), all or nothing, naming the row that
//! refuses it.

use std::collections::BTreeMap;

use chrono::{Duration, TimeZone, Utc};

use super::prelude::*;
use super::support::{begin, create, ctx, deal, expect_not_found, new_contact, new_deal, ok};
use crate::domain::{FeedEvent, FeedPosition, FreshField, Freshness, MAX_BODY_CHARS};

/// Every event of tenant `t` after `after`.
async fn events_after(store: &DynStore, t: TenantId, after: FeedPosition) -> Vec<FeedEvent> {
    let mut all = Vec::new();
    let mut at = after;
    loop {
        let batch = with_tx!(store, t, async |tx| ok(
            tx.events_after(at, 500).await,
            "read the feed"
        ))
        .await;
        let Some(last) = batch.last() else {
            return all;
        };
        at = last.position;
        all.extend(batch);
    }
}

async fn feed_head(store: &DynStore, t: TenantId) -> FeedPosition {
    with_tx!(store, t, async |tx| ok(tx.feed_head().await, "feed head")).await
}

/// The feed events' kinds and operations, counted.
fn event_counts(events: &[FeedEvent]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for e in events {
        *counts
            .entry(format!("{:?} {:?}", e.kind, e.operation))
            .or_default() += 1;
    }
    counts
}

/// An activity as [`Held`] keeps it: kind, direction, subject, body,
/// occurred_at and the deal's index.
type HeldActivity = (
    ActivityKind,
    Option<Direction>,
    Option<String>,
    Option<String>,
    Timestamp,
    Option<usize>,
);

/// What a contact holds, with nothing that differs between two contacts
/// given the same writes: its activities (newest first; the deal as its
/// index in `deals`), signals, live state and freshness marks.
#[derive(Debug, PartialEq)]
struct Held {
    activities: Vec<HeldActivity>,
    signals: Vec<(String, Timestamp)>,
    live: Option<u64>,
    freshness: Option<[Option<Timestamp>; 4]>,
}

async fn held(store: &DynStore, t: TenantId, c: ContactId, deals: &[DealId]) -> Held {
    let scope = store.scope(t, &ctx());
    let mut activities = Vec::new();
    let mut page = PageRequest::first(MAX_PAGE_SIZE);
    loop {
        let got = ok(scope.timeline(c, &page).await, "read the timeline");
        for a in &got.items {
            activities.push((
                a.kind,
                a.direction,
                a.subject.as_ref().map(|s| s.as_str().to_string()),
                a.body.clone(),
                a.occurred_at,
                a.deal_id.and_then(|d| deals.iter().position(|x| *x == d)),
            ));
        }
        match got.next_cursor {
            Some(next) => page.cursor = Some(next),
            None => break,
        }
    }
    let signals = ok(scope.list_signals(c).await, "list the signals")
        .into_iter()
        .map(|s| (s.kind.as_str().to_string(), s.occurred_at))
        .collect();
    let live = with_tx!(store, t, async |tx| ok(
        tx.live_score_log(c).await,
        "read the live state"
    ))
    .await
    .and_then(|s| s.log)
    .map(f64::to_bits);
    let freshness = ok(scope.freshness(c).await, "read the freshness").map(|f: Freshness| {
        [
            f.last_engaged_at,
            f.email_invalid_at,
            f.reverify_since,
            f.unsubscribed_at,
        ]
    });
    Held {
        activities,
        signals,
        live,
        freshness,
    }
}

/// One tenant's contacts and deals for a comparison: three contacts, the
/// first verified on every field, a deal of each of the first two.
struct Side {
    t: TenantId,
    contacts: Vec<ContactId>,
    deals: Vec<DealId>,
}

async fn side(store: &DynStore, name: &str) -> Side {
    let t = TenantId::new();
    let mut contacts = Vec::new();
    for i in 0..3 {
        let c = create(
            store,
            t,
            new_contact(&format!("{name}{i}@example.com"), "B", "Atch"),
        )
        .await;
        contacts.push(c.id);
    }
    let fields = [
        FreshField::Email,
        FreshField::Phone,
        FreshField::Title,
        FreshField::Company,
    ];
    ok(
        store
            .scope(t, &ctx())
            .verify_contact(contacts[0], &fields)
            .await,
        "verify the first contact",
    );
    let mut deals = Vec::new();
    for c in &contacts[..2] {
        deals.push(deal(store, t, new_deal(*c, "Batch", "10", "EUR")).await.id);
    }
    Side { t, contacts, deals }
}

/// The activities and signals the comparison logs: several per contact,
/// interleaved, out of time order, with deals, and every signal that
/// marks freshness, before and after the first contact's verification.
fn writes(s: &Side, now: Timestamp) -> (Vec<NewActivity>, Vec<NewSignal>) {
    let at = |hours: i64| now + Duration::hours(hours);
    let c = &s.contacts;
    let kinds = ActivityKind::ALL;
    let mut activities = Vec::new();
    for i in 0..12usize {
        let mut a = NewActivity::new(c[i % 3], kinds[i % kinds.len()])
            .occurred_at(at(-(i as i64 * 7 % 40) - 1));
        if i % 3 < 2 && i % 2 == 0 {
            a = a.deal(s.deals[i % 3]);
        }
        if i % 4 == 0 {
            a = a
                .direction(Direction::Outbound)
                .subject(Subject::parse(&format!("Subject {i}")).expect("subject"))
                .body(&format!("Body {i}"))
                .expect("body");
        }
        activities.push(a);
    }
    // One without a time: it happens when it is logged.
    activities.push(
        NewActivity::new(c[2], ActivityKind::Note)
            .body("now")
            .expect("body"),
    );
    let mut signals = Vec::new();
    for (i, kind) in [
        SignalKind::EMAIL_BOUNCED,
        SignalKind::JOB_CHANGED,
        SignalKind::UNSUBSCRIBED,
        SignalKind::PAGE_VIEW,
    ]
    .into_iter()
    .enumerate()
    {
        for (j, contact) in c.iter().enumerate() {
            // Before and after the first contact's verification.
            for hours in [-30 - (i + j) as i64, 2 + (i * 3 + j) as i64] {
                signals.push(NewSignal::new(*contact, kind.clone()).occurred_at(at(hours)));
            }
        }
    }
    (activities, signals)
}

/// A batch of activities and one of signals leave each contact with the
/// same timeline, signals, live state (to the bit) and freshness as the
/// same rows logged one call at a time, in order; the feed gets the same
/// events. Contacts appear many times in each batch.
pub async fn a_batch_leaves_what_the_single_calls_in_order_leave(store: &DynStore) {
    let single = side(store, "single").await;
    let batch = side(store, "batch").await;
    let now = truncate_to_micros(Utc::now());
    // Earlier state on both, so that the batch adds to something.
    for s in [&single, &batch] {
        ok(
            store
                .scope(s.t, &ctx())
                .log_activity(
                    NewActivity::new(s.contacts[0], ActivityKind::Call)
                        .occurred_at(now - Duration::minutes(5)),
                )
                .await,
            "log a first activity",
        );
    }
    let single_head = feed_head(store, single.t).await;
    let batch_head = feed_head(store, batch.t).await;
    let (activities, signals) = writes(&single, now);
    with_tx!(store, single.t, async |tx| {
        for a in activities {
            ok(tx.log_activity(a).await, "log one activity");
        }
        for s in signals {
            ok(tx.record_signal(s).await, "record one signal");
        }
    })
    .await;
    let (activities, signals) = writes(&batch, now);
    let (logged, recorded) = with_tx!(store, batch.t, async |tx| {
        let logged = ok(tx.log_activities(&activities).await, "log the batch");
        let recorded = ok(tx.record_signals(&signals).await, "record the batch");
        (logged, recorded)
    })
    .await;
    assert_eq!(logged.len(), activities.len(), "one activity per row");
    for (a, new) in logged.iter().zip(&activities) {
        assert_eq!(
            (a.contact_id, a.deal_id, a.kind, a.tenant_id),
            (new.contact_id, new.deal_id, new.kind, batch.t),
            "the activities come back in row order"
        );
        assert_eq!(a.occurred_at, new.occurred_at.unwrap_or(a.created_at));
    }
    assert_eq!(recorded.len(), signals.len(), "one signal per row");
    for (s, new) in recorded.iter().zip(&signals) {
        assert_eq!((s.contact_id, &s.kind), (new.contact_id, &new.kind));
    }
    for i in 0..3 {
        let mut one = held(store, single.t, single.contacts[i], &single.deals).await;
        let mut many = held(store, batch.t, batch.contacts[i], &batch.deals).await;
        if i == 2 {
            // The activity logged without a time happened when each side
            // logged it: the same once that time is set aside.
            for h in [&mut one, &mut many] {
                let first = h.activities.remove(0);
                assert_eq!(first.3.as_deref(), Some("now"));
                h.live = None;
                h.freshness = h.freshness.map(|[_, b, c, d]| [None, b, c, d]);
            }
        }
        assert_eq!(
            many, one,
            "contact {i}: the batch leaves what the calls leave"
        );
        assert!(!one.activities.is_empty() && !one.signals.is_empty());
    }
    let one = event_counts(&events_after(store, single.t, single_head).await);
    let many = event_counts(&events_after(store, batch.t, batch_head).await);
    assert_eq!(many, one, "the feed gets the same events");
}

/// A batch with a refused row writes nothing, whichever row it is: a
/// missing contact or deal is `NotFound`, a deal of another contact and an
/// invalid field are validation errors naming the row (`activities[2].…`);
/// the first refused row in order is the one reported. The transaction
/// goes on.
pub async fn a_batch_with_a_refused_row_writes_nothing_and_names_the_row(store: &DynStore) {
    let t = TenantId::new();
    let a = create(store, t, new_contact("rows-a@example.com", "A", "A")).await;
    let b = create(store, t, new_contact("rows-b@example.com", "B", "B")).await;
    let bd = deal(store, t, new_deal(b.id, "B's", "1", "EUR")).await;
    ok(
        store
            .scope(t, &ctx())
            .log_activity(NewActivity::new(a.id, ActivityKind::Call))
            .await,
        "log a first activity",
    );
    let before = held(store, t, a.id, &[]).await;
    let head = feed_head(store, t).await;
    let ghost = ContactId::new();
    let ghost_deal = DealId::new();
    let good = |i: i64| {
        NewActivity::new(a.id, ActivityKind::Email)
            .occurred_at(truncate_to_micros(Utc::now() - Duration::hours(i)))
    };
    let mut long = good(9);
    long.body = Some("x".repeat(MAX_BODY_CHARS + 1));
    let mut ancient = good(9);
    ancient.occurred_at = Some(Utc.with_ymd_and_hms(0, 6, 1, 0, 0, 0).unwrap());
    let mut tx = begin(store, t).await;
    expect_not_found(
        tx.log_activities(&[
            good(1),
            good(2),
            NewActivity::new(ghost, ActivityKind::Call),
        ])
        .await,
        Entity::Contact,
        ghost,
        "a row on a missing contact",
    );
    expect_not_found(
        tx.log_activities(&[good(1), good(2).deal(ghost_deal)])
            .await,
        Entity::Deal,
        ghost_deal,
        "a row on a missing deal",
    );
    expect_row_field(
        tx.log_activities(&[good(1), good(2), good(3).deal(bd.id)])
            .await,
        "activities[2].deal_id",
        "a row on another contact's deal",
    );
    expect_row_field(
        tx.log_activities(&[good(1), long.clone(), good(3)]).await,
        "activities[1].body",
        "a row with a body too long",
    );
    expect_row_field(
        tx.log_activities(&[ancient.clone(), good(3)]).await,
        "activities[0].occurred_at",
        "a row out of the years 1-9999",
    );
    // The first refused row is the one reported.
    expect_not_found(
        tx.log_activities(&[good(1), NewActivity::new(ghost, ActivityKind::Call), long])
            .await,
        Entity::Contact,
        ghost,
        "a missing contact before a body too long",
    );
    expect_row_field(
        tx.log_activities(&[
            good(1),
            good(2).deal(bd.id),
            NewActivity::new(ghost, ActivityKind::Call),
        ])
        .await,
        "activities[1].deal_id",
        "another contact's deal before a missing contact",
    );
    let mut ancient_signal = NewSignal::new(a.id, SignalKind::UNSUBSCRIBED);
    ancient_signal.occurred_at = ancient.occurred_at;
    expect_row_field(
        tx.record_signals(&[
            NewSignal::new(a.id, SignalKind::EMAIL_BOUNCED),
            ancient_signal,
        ])
        .await,
        "signals[1].occurred_at",
        "a signal out of the years 1-9999",
    );
    expect_not_found(
        tx.record_signals(&[
            NewSignal::new(a.id, SignalKind::UNSUBSCRIBED),
            NewSignal::new(ghost, SignalKind::PAGE_VIEW),
        ])
        .await,
        Entity::Contact,
        ghost,
        "a signal on a missing contact",
    );
    ok(tx.commit().await, "the transaction goes on and commits");
    assert_eq!(
        held(store, t, a.id, &[]).await,
        before,
        "no refused batch left anything on the contact"
    );
    assert!(
        events_after(store, t, head).await.is_empty(),
        "no refused batch left a feed event"
    );
    // The transaction goes on after a refused batch: a good one commits.
    let mut tx = begin(store, t).await;
    let _ = tx
        .log_activities(&[good(1), NewActivity::new(ghost, ActivityKind::Call)])
        .await;
    ok(
        tx.log_activities(&[good(4)]).await,
        "a good batch after a refused one",
    );
    ok(tx.commit().await, "commit");
    assert_eq!(
        held(store, t, a.id, &[]).await.activities.len(),
        before.activities.len() + 1,
        "only the good batch is kept"
    );
}

#[track_caller]
fn expect_row_field<T: std::fmt::Debug>(result: Result<T>, field: &str, what: &str) {
    match result {
        Err(Error::Validation(errors))
            if !errors.is_empty() && errors.as_slice().iter().all(|e| e.field == field) =>
        {
            assert!(
                crate::store::batch_row(field).is_some(),
                "{what}: the row reads back from `{field}`"
            );
        }
        other => panic!("{what}: expected a validation error on `{field}` only, got {other:?}"),
    }
}

/// An empty batch returns nothing and writes nothing.
pub async fn an_empty_batch_writes_nothing(store: &DynStore) {
    let t = TenantId::new();
    create(store, t, new_contact("empty@example.com", "E", "Mpty")).await;
    let head = feed_head(store, t).await;
    let (activities, signals) = with_tx!(store, t, async |tx| (
        ok(tx.log_activities(&[]).await, "an empty batch of activities"),
        ok(tx.record_signals(&[]).await, "an empty batch of signals"),
    ))
    .await;
    assert!(activities.is_empty() && signals.is_empty());
    assert_eq!(feed_head(store, t).await, head, "no feed event");
}

/// A batch over many contacts, each named several times and out of
/// order, leaves each as the single calls leave another.
pub async fn a_batch_over_many_contacts_leaves_each_as_the_single_calls_do(store: &DynStore) {
    const CONTACTS: usize = 60;
    let t = TenantId::new();
    let mut pairs = Vec::new();
    for i in 0..CONTACTS {
        let one = create(
            store,
            t,
            new_contact(&format!("one{i}@example.com"), "O", "Ne"),
        )
        .await;
        let many = create(
            store,
            t,
            new_contact(&format!("many{i}@example.com"), "M", "Any"),
        )
        .await;
        pairs.push((one.id, many.id));
    }
    let now = truncate_to_micros(Utc::now());
    let rows = |pick: &dyn Fn(&(ContactId, ContactId)) -> ContactId| {
        let mut rows = Vec::new();
        for round in 0..3i64 {
            for (i, p) in pairs.iter().enumerate().rev() {
                let at = now - Duration::minutes(round * 1000 + (i as i64 * 37 % 500));
                let kind = ActivityKind::ALL[(i + round as usize) % ActivityKind::ALL.len()];
                rows.push(NewActivity::new(pick(p), kind).occurred_at(at));
            }
        }
        rows
    };
    let singles = rows(&|p| p.0);
    with_tx!(store, t, async |tx| {
        for a in singles {
            ok(tx.log_activity(a).await, "log one");
        }
    })
    .await;
    let batch = rows(&|p| p.1);
    let logged = with_tx!(store, t, async |tx| ok(
        tx.log_activities(&batch).await,
        "log the batch"
    ))
    .await;
    assert_eq!(logged.len(), 3 * CONTACTS);
    for (one, many) in &pairs {
        assert_eq!(
            held(store, t, *many, &[]).await,
            held(store, t, *one, &[]).await,
            "contact {many} holds what {one} does"
        );
    }
}

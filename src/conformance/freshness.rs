//! The conformance suite's freshness points: every write keeps a
//! contact's freshness current, verifications clear what they answer, and
//! the stale list matches any condition, stalest first, keyset paged.

use super::prelude::*;
use super::support::{
    begin, create, ctx, expect_not_found, expect_validation, new_contact, ok, tick,
};
use crate::domain::{FreshField, Freshness, FreshnessModel, StaleContact, StaleQuery, StaleReason};

fn days_ago(days: i64) -> Timestamp {
    truncate_to_micros(chrono::Utc::now() - chrono::Duration::days(days))
}

async fn freshness(store: &DynStore, t: TenantId, id: ContactId) -> Option<Freshness> {
    ok(
        store.scope(t, &ctx()).freshness(id).await,
        "read the freshness",
    )
}

async fn fresh(store: &DynStore, t: TenantId, id: ContactId) -> Freshness {
    freshness(store, t, id)
        .await
        .unwrap_or_else(|| panic!("contact {id} has no freshness"))
}

async fn activity_at(store: &DynStore, t: TenantId, id: ContactId, at: Timestamp) {
    let mut a = NewActivity::new(id, ActivityKind::Call);
    a.occurred_at = Some(at);
    ok(
        store.scope(t, &ctx()).log_activity(a).await,
        "log an activity",
    );
}

async fn signal_at(store: &DynStore, t: TenantId, id: ContactId, kind: SignalKind, at: Timestamp) {
    let mut s = NewSignal::new(id, kind);
    s.occurred_at = Some(at);
    ok(
        store.scope(t, &ctx()).record_signal(s).await,
        "record a signal",
    );
}

async fn verify(store: &DynStore, t: TenantId, id: ContactId, fields: &[FreshField]) -> Freshness {
    ok(
        store.scope(t, &ctx()).verify_contact(id, fields).await,
        "verify",
    )
}

fn query(inactive: Option<u32>, unverified: Option<u32>, invalid: bool) -> StaleQuery {
    StaleQuery {
        inactive_days: inactive,
        unverified_days: unverified,
        invalid_email: invalid,
        page: PageRequest::first(1000),
    }
}

async fn stale(store: &DynStore, t: TenantId, q: &StaleQuery) -> Page<StaleContact> {
    ok(
        store.scope(t, &ctx()).stale_contacts(q).await,
        "list stale contacts",
    )
}

fn stale_ids(page: &Page<StaleContact>) -> Vec<ContactId> {
    page.items.iter().map(|s| s.contact.id).collect()
}

/// A new contact has a freshness from its creation; an activity or signal
/// moves `last_engaged_at` forward, and an older one, backfilled, does not
/// move it back.
pub async fn an_activity_moves_engagement_forward_and_an_older_one_does_not_move_it_back(
    store: &DynStore,
) {
    let t = TenantId::new();
    let c = create(store, t, new_contact("fresh1@example.com", "Fresh", "One")).await;
    let f = fresh(store, t, c.id).await;
    assert_eq!(f, Freshness::new(c.id, c.created_at), "a new contact");
    assert_eq!(
        freshness(store, t, ContactId::new()).await,
        None,
        "no contact"
    );

    let t1 = days_ago(5);
    activity_at(store, t, c.id, t1).await;
    assert_eq!(fresh(store, t, c.id).await.last_engaged_at, Some(t1));
    activity_at(store, t, c.id, days_ago(20)).await;
    assert_eq!(
        fresh(store, t, c.id).await.last_engaged_at,
        Some(t1),
        "an older activity does not move it back"
    );
    signal_at(store, t, c.id, SignalKind::EMAIL_OPEN, days_ago(30)).await;
    assert_eq!(fresh(store, t, c.id).await.last_engaged_at, Some(t1));
    let t2 = days_ago(1);
    signal_at(store, t, c.id, SignalKind::PAGE_VIEW, t2).await;
    let f = fresh(store, t, c.id).await;
    assert_eq!(f.last_engaged_at, Some(t2), "a later signal moves it");
    assert_eq!(
        f,
        Freshness {
            last_engaged_at: Some(t2),
            ..Freshness::new(c.id, c.created_at)
        },
        "engagement marks nothing else"
    );
}

/// `email_bounced`, `job_changed` and `unsubscribed` leave their marks:
/// the latest bounce, the earliest job change, the latest unsubscription.
pub async fn signals_mark_the_email_invalid_the_job_change_and_the_unsubscription(
    store: &DynStore,
) {
    let t = TenantId::new();
    let c = create(store, t, new_contact("fresh2@example.com", "Fresh", "Two")).await;
    let (b1, b0) = (days_ago(3), days_ago(9));
    signal_at(store, t, c.id, SignalKind::EMAIL_BOUNCED, b1).await;
    signal_at(store, t, c.id, SignalKind::EMAIL_BOUNCED, b0).await;
    let (j1, j0) = (days_ago(4), days_ago(8));
    signal_at(store, t, c.id, SignalKind::JOB_CHANGED, j1).await;
    signal_at(store, t, c.id, SignalKind::JOB_CHANGED, j0).await;
    let u = days_ago(2);
    signal_at(store, t, c.id, SignalKind::UNSUBSCRIBED, u).await;
    let f = fresh(store, t, c.id).await;
    assert_eq!(f.email_invalid_at, Some(b1), "the latest bounce");
    assert_eq!(f.reverify_since, Some(j0), "the earliest job change");
    assert_eq!(f.unsubscribed_at, Some(u));
    assert_eq!(f.last_engaged_at, Some(u), "signals are engagement too");
    assert_eq!(f.email_verified_at, None);
}

/// Verifying stamps the fields with the store's time; the email's
/// verification clears its bounce (and a bounce older than it is ignored);
/// a job change is answered once title and company were both verified.
/// Nothing verified is refused; a missing contact is not found; a rolled
/// back verification leaves nothing.
pub async fn verifying_stamps_the_fields_and_clears_what_it_answers(store: &DynStore) {
    let t = TenantId::new();
    let c = create(
        store,
        t,
        new_contact("fresh3@example.com", "Fresh", "Three"),
    )
    .await;
    signal_at(store, t, c.id, SignalKind::EMAIL_BOUNCED, days_ago(3)).await;
    signal_at(store, t, c.id, SignalKind::JOB_CHANGED, days_ago(3)).await;
    let before = truncate_to_micros(chrono::Utc::now());
    tick().await;
    let f = verify(store, t, c.id, &[FreshField::Phone, FreshField::Phone]).await;
    let phone = f.phone_verified_at.expect("phone verified");
    assert!(phone > before, "stamped with the store's time");
    assert!(f.email_invalid_at.is_some() && f.reverify_since.is_some());
    assert_eq!(
        f,
        fresh(store, t, c.id).await,
        "what verify returns is stored"
    );

    let f = verify(store, t, c.id, &[FreshField::Email]).await;
    assert!(f.email_verified_at.is_some());
    assert_eq!(
        f.email_invalid_at, None,
        "the email's verification clears the bounce"
    );
    signal_at(store, t, c.id, SignalKind::EMAIL_BOUNCED, days_ago(1)).await;
    assert_eq!(
        fresh(store, t, c.id).await.email_invalid_at,
        None,
        "a bounce older than the verification is ignored"
    );

    let f = verify(store, t, c.id, &[FreshField::Title]).await;
    assert!(
        f.reverify_since.is_some(),
        "title alone does not answer a job change"
    );
    let f = verify(store, t, c.id, &[FreshField::Company]).await;
    assert_eq!(f.reverify_since, None, "title and company both verified");
    assert_eq!(
        f.phone_verified_at,
        Some(phone),
        "other fields keep their times"
    );
    signal_at(store, t, c.id, SignalKind::JOB_CHANGED, days_ago(2)).await;
    assert_eq!(
        fresh(store, t, c.id).await.reverify_since,
        None,
        "a job change older than both verifications is ignored"
    );

    expect_validation(
        store.scope(t, &ctx()).verify_contact(c.id, &[]).await,
        "fields",
        "nothing to verify",
    );
    let missing = ContactId::new();
    expect_not_found(
        store
            .scope(t, &ctx())
            .verify_contact(missing, &[FreshField::Email])
            .await,
        Entity::Contact,
        missing,
        "a missing contact",
    );

    let kept = fresh(store, t, c.id).await;
    let mut tx = begin(store, t).await;
    ok(
        tx.verify_contact(c.id, &FreshField::ALL).await,
        "verify in a transaction",
    );
    ok(tx.rollback().await, "roll back");
    assert_eq!(
        fresh(store, t, c.id).await,
        kept,
        "a rollback leaves nothing"
    );
}

/// A new email address is unverified and carries no bounce; a change of
/// casing only is the same address.
pub async fn changing_the_email_clears_its_verification_and_bounce(store: &DynStore) {
    let t = TenantId::new();
    let c = create(store, t, new_contact("fresh4@example.com", "Fresh", "Four")).await;
    verify(store, t, c.id, &[FreshField::Email, FreshField::Phone]).await;
    signal_at(
        store,
        t,
        c.id,
        SignalKind::EMAIL_BOUNCED,
        truncate_to_micros(chrono::Utc::now()),
    )
    .await;
    let marked = fresh(store, t, c.id).await;
    assert!(marked.email_invalid_at.is_some() && marked.email_verified_at.is_some());

    let patch = ContactPatch {
        email: Some(Email::parse("FRESH4@example.com").expect("email")),
        ..ContactPatch::default()
    };
    let c = ok(
        store
            .scope(t, &ctx())
            .update_contact(c.id, c.version, patch)
            .await,
        "change the casing",
    );
    assert_eq!(fresh(store, t, c.id).await, marked, "the same address");

    let patch = ContactPatch {
        email: Some(Email::parse("fresh4.new@example.com").expect("email")),
        ..ContactPatch::default()
    };
    ok(
        store
            .scope(t, &ctx())
            .update_contact(c.id, c.version, patch)
            .await,
        "change the address",
    );
    let f = fresh(store, t, c.id).await;
    assert_eq!(
        f,
        Freshness {
            email_verified_at: None,
            email_invalid_at: None,
            ..marked
        },
        "the new address is unverified, with no bounce; the rest is kept"
    );
}

/// The stale list holds the contacts matching any condition given, with
/// their reasons, invalid emails first and then stalest first: the order
/// of the order key, which is the order of the score. Erased contacts are
/// left out.
pub async fn stale_contacts_match_any_condition_stalest_first(store: &DynStore) {
    let t = TenantId::new();
    let mk = |n: &str| new_contact(&format!("stale-{n}@example.com"), "Stale", n);
    let a = create(store, t, mk("a")).await;
    let b = create(store, t, mk("b")).await;
    let c = create(store, t, mk("c")).await;
    let d = create(store, t, mk("d")).await;
    let e = create(store, t, mk("e")).await;
    let never = create(store, t, mk("never")).await;
    let gone = create(store, t, mk("gone")).await;
    let edge_in = create(store, t, mk("edge-in")).await;
    let edge_out = create(store, t, mk("edge-out")).await;
    let hour = chrono::Duration::hours(1);
    activity_at(store, t, edge_in.id, days_ago(30) - hour).await;
    activity_at(store, t, edge_out.id, days_ago(30) + hour).await;
    activity_at(store, t, b.id, days_ago(50)).await;
    activity_at(store, t, a.id, days_ago(100)).await;
    activity_at(store, t, c.id, days_ago(10)).await;
    activity_at(store, t, gone.id, days_ago(200)).await;
    signal_at(store, t, d.id, SignalKind::EMAIL_BOUNCED, days_ago(1)).await;
    signal_at(store, t, e.id, SignalKind::JOB_CHANGED, days_ago(1)).await;
    ok(
        store.scope(t, &ctx()).erase_contact(gone.id).await,
        "erase a contact",
    );

    let page = stale(store, t, &query(Some(30), None, false)).await;
    assert_eq!(
        stale_ids(&page),
        [a.id, b.id, edge_in.id],
        "inactive for 30 days (an hour past it, not an hour short of it), stalest first"
    );
    assert!(
        page.items
            .iter()
            .all(|s| s.reasons == [StaleReason::Inactive])
    );
    assert_eq!(page.items[0].contact, a, "the contact as stored");
    assert_eq!(page.next_cursor, None);

    let page = stale(store, t, &query(None, None, true)).await;
    assert_eq!(stale_ids(&page), [d.id]);
    assert_eq!(page.items[0].reasons, [StaleReason::InvalidEmail]);

    let page = stale(store, t, &query(None, Some(1), false)).await;
    assert_eq!(
        stale_ids(&page),
        [e.id],
        "fields verified at creation a moment ago"
    );
    assert_eq!(page.items[0].reasons, [StaleReason::Reverify]);

    let page = stale(store, t, &query(Some(30), Some(1), true)).await;
    let got = stale_ids(&page);
    assert_eq!(got[0], d.id, "an invalid email first");
    let mut expected: Vec<&StaleContact> = page.items.iter().collect();
    expected.sort_by_key(|s| (s.freshness.order_key(), s.contact.id));
    assert_eq!(
        got,
        expected.iter().map(|s| s.contact.id).collect::<Vec<_>>(),
        "the order of the order key"
    );
    let mut want = vec![d.id, a.id, b.id, e.id, edge_in.id];
    want.sort();
    let mut have = got.clone();
    have.sort();
    assert_eq!(
        have, want,
        "any condition: not c, never, edge-out, nor the erased one"
    );
    assert!(!got.contains(&never.id) && !got.contains(&gone.id) && !got.contains(&edge_out.id));
    for s in &page.items {
        assert_eq!(s.freshness, fresh(store, t, s.contact.id).await);
    }
    let model = FreshnessModel::default();
    let now = chrono::Utc::now();
    let scores: Vec<u8> = page.items[1..]
        .iter()
        .map(|s| s.freshness.score(&model, now))
        .collect();
    assert!(
        scores.windows(2).all(|w| w[0] <= w[1]),
        "stalest first: scores {scores:?} do not decrease"
    );
}

/// Pages of the stale list visit every match once, in order; a cursor is
/// taken back only by the query (the same conditions) that made it.
pub async fn stale_contacts_page_with_cursors_bound_to_the_query(store: &DynStore) {
    let t = TenantId::new();
    let mut made = Vec::new();
    for i in 0..7 {
        let c = create(
            store,
            t,
            new_contact(&format!("page{i}@example.com"), "Page", "N"),
        )
        .await;
        activity_at(store, t, c.id, days_ago(40 + (i * 13) % 7)).await;
        made.push(c.id);
    }
    let q = query(Some(30), None, false);
    let all = stale_ids(&stale(store, t, &q).await);
    assert_eq!(all.len(), 7);
    let mut seen = Vec::new();
    let mut page_q = StaleQuery {
        page: PageRequest::first(3),
        ..q.clone()
    };
    let mut cursors = Vec::new();
    loop {
        let page = stale(store, t, &page_q).await;
        assert!(page.items.len() <= 3);
        seen.extend(stale_ids(&page));
        match page.next_cursor {
            Some(cursor) => {
                cursors.push(cursor.clone());
                page_q.page = PageRequest::after(3, cursor);
            }
            None => break,
        }
    }
    assert_eq!(seen, all, "the pages are the list");
    assert_eq!(cursors.len(), 2);

    let foreign = StaleQuery {
        page: PageRequest::after(3, cursors[0].clone()),
        ..query(Some(31), None, false)
    };
    expect_validation(
        store.scope(t, &ctx()).stale_contacts(&foreign).await,
        "cursor",
        "a cursor of a query with other conditions",
    );
    let timeline = ok(
        store
            .scope(t, &ctx())
            .timeline(made[0], &PageRequest::first(1))
            .await,
        "a timeline page",
    );
    if let Some(other) = timeline.next_cursor {
        expect_validation(
            store
                .scope(t, &ctx())
                .stale_contacts(&StaleQuery {
                    page: PageRequest::after(3, other),
                    ..q.clone()
                })
                .await,
            "cursor",
            "a cursor of another list",
        );
    }
    expect_validation(
        store
            .scope(t, &ctx())
            .stale_contacts(&StaleQuery {
                page: PageRequest::after(3, Cursor::from_string("00ff".to_string())),
                ..q
            })
            .await,
        "cursor",
        "garbage",
    );
}

/// A query that asks for nothing, or for days out of range, or a bad
/// limit, is refused naming what is wrong.
pub async fn stale_queries_are_checked(store: &DynStore) {
    let t = TenantId::new();
    let scope = store.scope(t, &ctx());
    expect_validation(
        scope.stale_contacts(&query(None, None, false)).await,
        "stale_query",
        "a query that asks for nothing",
    );
    expect_validation(
        scope.stale_contacts(&query(Some(0), None, false)).await,
        "inactive_days",
        "zero days",
    );
    expect_validation(
        scope
            .stale_contacts(&query(None, Some(40_000), false))
            .await,
        "unverified_days",
        "too many days",
    );
    expect_validation(
        scope
            .stale_contacts(&StaleQuery {
                page: PageRequest::first(0),
                ..query(None, None, true)
            })
            .await,
        "limit",
        "a limit of 0",
    );
}

/// A merge gives the survivor the later engagement of the two; the
/// survivor keeps its own verifications and marks; the loser's freshness
/// goes with it, as a deleted contact's does.
pub async fn a_merge_takes_the_later_engagement_and_keeps_the_survivors_verifications(
    store: &DynStore,
) {
    let t = TenantId::new();
    let s = create(
        store,
        t,
        new_contact("survivor@example.com", "Sur", "Vivor"),
    )
    .await;
    let l = create(store, t, new_contact("loser@example.com", "Lo", "Ser")).await;
    verify(store, t, s.id, &[FreshField::Phone]).await;
    verify(store, t, l.id, &[FreshField::Email, FreshField::Title]).await;
    activity_at(store, t, s.id, days_ago(30)).await;
    let late = days_ago(5);
    activity_at(store, t, l.id, late).await;
    let before = fresh(store, t, s.id).await;
    ok(
        store
            .scope(t, &ctx())
            .merge_contacts(s.id, l.id, ConflictPolicy::Existing)
            .await,
        "merge",
    );
    let after = fresh(store, t, s.id).await;
    assert_eq!(
        after,
        Freshness {
            last_engaged_at: Some(late),
            ..before.clone()
        },
        "the later engagement; the survivor's own verifications"
    );
    assert_eq!(freshness(store, t, l.id).await, None, "the loser's is gone");

    let old = create(store, t, new_contact("older@example.com", "Ol", "Der")).await;
    activity_at(store, t, old.id, days_ago(90)).await;
    ok(
        store
            .scope(t, &ctx())
            .merge_contacts(s.id, old.id, ConflictPolicy::Existing)
            .await,
        "merge an older one",
    );
    assert_eq!(
        fresh(store, t, s.id).await,
        after,
        "an older engagement changes nothing"
    );

    assert!(ok(
        store.scope(t, &ctx()).delete_contact(s.id).await,
        "delete"
    ));
    assert_eq!(
        freshness(store, t, s.id).await,
        None,
        "deleted with the contact"
    );
}

/// Another tenant neither sees a tenant's freshness nor verifies its
/// contacts, and its stale list does not hold them.
pub async fn freshness_is_invisible_to_another_tenant(store: &DynStore) {
    let t = TenantId::new();
    let other = TenantId::new();
    let c = create(store, t, new_contact("mine@example.com", "Mi", "Ne")).await;
    activity_at(store, t, c.id, days_ago(100)).await;
    signal_at(store, t, c.id, SignalKind::EMAIL_BOUNCED, days_ago(150)).await;
    assert_eq!(freshness(store, other, c.id).await, None);
    expect_not_found(
        store
            .scope(other, &ctx())
            .verify_contact(c.id, &[FreshField::Email])
            .await,
        Entity::Contact,
        c.id,
        "another tenant's contact",
    );
    let page = stale(store, other, &query(Some(30), Some(1), true)).await;
    assert!(page.items.is_empty(), "another tenant's list is empty");
    let page = stale(store, t, &query(Some(30), None, false)).await;
    assert_eq!(stale_ids(&page), [c.id], "inactive, with an invalid email");
    assert_eq!(page.items[0].reasons, [StaleReason::Inactive]);
    let page = stale(store, t, &query(Some(30), Some(1), true)).await;
    assert_eq!(stale_ids(&page), [c.id]);
    assert_eq!(
        page.items[0].reasons,
        [StaleReason::InvalidEmail, StaleReason::Inactive],
        "the reasons, in order"
    );
}

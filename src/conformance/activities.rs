//! The conformance suite's activity and signal points: activities keep
//! their fields and times, the timeline is newest first, signals oldest
//! first, and a missing contact has neither.

use chrono::{Duration, Utc};

use super::prelude::*;
use super::support::{
    assert_micros, assert_same, begin, create, ctx, deal, expect_not_found, expect_validation,
    new_contact, new_deal, ok, timeline_all,
};

/// An activity keeps the `occurred_at` it was given; without one it
/// happened when it was logged. Every field reads back.
pub async fn log_activity_keeps_occurred_at_or_uses_the_time_of_logging(store: &DynStore) {
    let t = TenantId::new();
    let c = create(store, t, new_contact("log@example.com", "L", "Og")).await;
    let d = deal(store, t, new_deal(c.id, "Logged", "1", "EUR")).await;
    let past = truncate_to_micros(Utc::now() - Duration::days(3));
    let before = Utc::now() - Duration::seconds(5);
    let (given, now) = with_tx!(store, t, async |tx| {
        let given = ok(
            tx.log_activity(
                NewActivity::new(c.id, ActivityKind::Email)
                    .deal(d.id)
                    .direction(Direction::Inbound)
                    .subject(Subject::parse("Re: pricing").expect("subject"))
                    .body("Line one\nLine two — ünïcödé ✓")
                    .expect("body")
                    .occurred_at(past),
            )
            .await,
            "log with occurred_at",
        );
        let now = ok(
            tx.log_activity(NewActivity::new(c.id, ActivityKind::Task))
                .await,
            "log now",
        );
        let long_body = "é".repeat(crate::domain::MAX_BODY_CHARS);
        let long = ok(
            tx.log_activity(
                NewActivity::new(c.id, ActivityKind::Note)
                    .body(&long_body)
                    .expect("a body of the largest size")
                    .occurred_at(past - Duration::days(1)),
            )
            .await,
            "log the largest body",
        );
        assert_eq!(
            long.body.as_deref(),
            Some(long_body.as_str()),
            "the largest body is kept whole"
        );
        (given, now)
    })
    .await;
    assert_eq!(given.occurred_at, past, "the given occurred_at is kept");
    assert_eq!(given.tenant_id, t);
    assert_eq!(given.contact_id, c.id);
    assert_eq!(given.deal_id, Some(d.id));
    assert_eq!(given.kind, ActivityKind::Email);
    assert_eq!(given.direction, Some(Direction::Inbound));
    assert_eq!(
        given.subject.as_ref().map(Subject::as_str),
        Some("Re: pricing")
    );
    assert_eq!(
        given.body.as_deref(),
        Some("Line one\nLine two — ünïcödé ✓")
    );
    assert!(
        given.created_at >= before,
        "created_at is the time of logging"
    );
    assert_micros(given.created_at, "an activity's created_at");
    assert_eq!(
        now.occurred_at, now.created_at,
        "without occurred_at, it is the time of logging"
    );
    assert!(now.occurred_at >= before);
    assert_micros(now.occurred_at, "an activity's occurred_at");
    assert!(
        now.deal_id.is_none()
            && now.direction.is_none()
            && now.subject.is_none()
            && now.body.is_none()
    );
    let timeline = timeline_all(store, t, c.id).await;
    assert_eq!(timeline.len(), 3);
    assert_eq!(
        timeline[2].body.as_ref().map(|b| b.chars().count()),
        Some(crate::domain::MAX_BODY_CHARS),
        "the largest body reads back whole"
    );
    assert_same(&timeline[0], &now, "the newest activity reads back first");
    assert_same(&timeline[1], &given, "the older activity reads back second");
}

/// An activity linked to another contact's deal is a validation error on
/// `deal_id`; a missing contact or deal is `NotFound`. Nothing is logged.
pub async fn log_activity_refuses_a_deal_of_another_contact_and_missing_records(store: &DynStore) {
    let t = TenantId::new();
    let a = create(store, t, new_contact("a@example.com", "A", "A")).await;
    let b = create(store, t, new_contact("b@example.com", "B", "B")).await;
    let bd = deal(store, t, new_deal(b.id, "B's", "1", "EUR")).await;
    let ghost = ContactId::new();
    let ghost_deal = DealId::new();
    with_tx!(store, t, async |tx| {
        expect_validation(
            tx.log_activity(NewActivity::new(a.id, ActivityKind::Call).deal(bd.id))
                .await,
            "deal_id",
            "an activity on another contact's deal",
        );
        expect_not_found(
            tx.log_activity(NewActivity::new(ghost, ActivityKind::Call))
                .await,
            Entity::Contact,
            ghost,
            "an activity on a missing contact",
        );
        expect_not_found(
            tx.log_activity(NewActivity::new(a.id, ActivityKind::Call).deal(ghost_deal))
                .await,
            Entity::Deal,
            ghost_deal,
            "an activity on a missing deal",
        );
    })
    .await;
    assert!(
        timeline_all(store, t, a.id).await.is_empty(),
        "nothing was logged for a"
    );
    assert!(
        timeline_all(store, t, b.id).await.is_empty(),
        "nothing was logged for b"
    );
}

/// The timeline is newest first by `occurred_at`, equal times by id
/// descending, only the contact's own activities, and paging visits each
/// once.
pub async fn timeline_is_newest_first_and_pages_through_every_activity(store: &DynStore) {
    let t = TenantId::new();
    let c = create(
        store,
        t,
        new_contact("busy.timeline@example.com", "Ti", "Meline"),
    )
    .await;
    let other = create(
        store,
        t,
        new_contact("other.timeline@example.com", "Ot", "Her"),
    )
    .await;
    let base = truncate_to_micros(Utc::now() - Duration::days(10));
    let logged: Vec<Activity> = with_tx!(store, t, async |tx| {
        let mut v = Vec::new();
        for n in 0..23i64 {
            // A shuffled order of logging; groups of three share a time.
            let i = (n * 7) % 23;
            let at = base + Duration::minutes(i / 3) + Duration::microseconds(1);
            v.push(ok(
                tx.log_activity(NewActivity::new(c.id, ActivityKind::Note).occurred_at(at))
                    .await,
                "activity",
            ));
            ok(
                tx.log_activity(NewActivity::new(other.id, ActivityKind::Note).occurred_at(at))
                    .await,
                "other's activity",
            );
        }
        v
    })
    .await;
    let mut expected: Vec<&Activity> = logged.iter().collect();
    expected.sort_by_key(|a| (a.occurred_at, a.id));
    expected.reverse();
    let expected: Vec<_> = expected.into_iter().map(|a| a.id).collect();
    let crm = store.scope(t, &ctx());
    for limit in [5, 1, 23, 1000] {
        let got = collect_pages!(limit, async |page| {
            ok(crm.timeline(c.id, &page).await, "timeline page")
        })
        .await;
        assert_eq!(
            got.iter().map(|a| a.id).collect::<Vec<_>>(),
            expected,
            "the timeline with limit {limit} is newest first, ties by id descending"
        );
    }
    let first = ok(
        crm.timeline(c.id, &PageRequest::first(5)).await,
        "first page",
    );
    assert_eq!(first.items.len(), 5);
    assert!(first.next_cursor.is_some(), "more follow after five of 23");
}

/// The timeline and the signals of a contact that does not exist are empty.
pub async fn timeline_and_signals_of_a_missing_contact_are_empty(store: &DynStore) {
    let t = TenantId::new();
    let ghost = ContactId::new();
    with_tx!(store, t, async |tx| {
        let page = ok(
            tx.timeline(ghost, &PageRequest::first(10)).await,
            "timeline",
        );
        assert!(
            page.items.is_empty() && page.next_cursor.is_none(),
            "an empty timeline"
        );
        assert!(
            ok(tx.list_signals(ghost).await, "signals").is_empty(),
            "no signals"
        );
        let deals = ok(
            tx.list_deals_for_contact(ghost, &PageRequest::first(10))
                .await,
            "deals",
        );
        assert!(deals.items.is_empty(), "no deals");
    })
    .await;
}

/// Signals are listed oldest first by `occurred_at`, then id, and keep
/// their kind and time.
pub async fn signals_are_listed_oldest_first(store: &DynStore) {
    let t = TenantId::new();
    let c = create(store, t, new_contact("signals@example.com", "Sig", "Nals")).await;
    let other = create(store, t, new_contact("quiet@example.com", "Qui", "Et")).await;
    let base = truncate_to_micros(Utc::now() - Duration::days(2));
    let custom = SignalKind::parse("webinar_attended").expect("kind");
    let recorded = with_tx!(store, t, async |tx| {
        let mut v = Vec::new();
        for (hours, kind) in [
            (5, SignalKind::EMAIL_OPEN),
            (1, SignalKind::PAGE_VIEW),
            (3, custom.clone()),
            (1, SignalKind::DEMO_REQUEST),
            (1, SignalKind::EMAIL_CLICK),
        ] {
            v.push(ok(
                tx.record_signal(
                    NewSignal::new(c.id, kind).occurred_at(base + Duration::hours(hours)),
                )
                .await,
                "signal",
            ));
        }
        let now = ok(
            tx.record_signal(NewSignal::new(c.id, SignalKind::FORM_SUBMIT))
                .await,
            "now",
        );
        assert_micros(now.occurred_at, "a signal's occurred_at");
        assert!(
            now.occurred_at > base + Duration::hours(5),
            "no occurred_at means now"
        );
        v.push(now);
        v
    })
    .await;
    assert!(
        recorded
            .iter()
            .all(|s| s.tenant_id == t && s.contact_id == c.id)
    );
    let mut expected = recorded.clone();
    expected.sort_by_key(|s| (s.occurred_at, s.id));
    let listed = with_tx!(store, t, async |tx| ok(
        tx.list_signals(c.id).await,
        "signals"
    ))
    .await;
    assert_same(&listed, &expected, "signals oldest first, ties by id");
    let quiet = with_tx!(store, t, async |tx| ok(
        tx.list_signals(other.id).await,
        "signals"
    ))
    .await;
    assert!(quiet.is_empty(), "another contact's signals are not listed");
}

/// Recording a signal for a contact that does not exist is `NotFound`.
pub async fn recording_a_signal_for_a_missing_contact_is_not_found(store: &DynStore) {
    let t = TenantId::new();
    let ghost = ContactId::new();
    with_tx!(store, t, async |tx| {
        expect_not_found(
            tx.record_signal(NewSignal::new(ghost, SignalKind::PAGE_VIEW))
                .await,
            Entity::Contact,
            ghost,
            "a signal for a missing contact",
        );
        assert!(ok(tx.list_signals(ghost).await, "signals").is_empty());
    })
    .await;
}

/// `first_timeline_pages` and `first_deal_pages` give each contact listed,
/// in the order listed, the first page its own list gives (items and next
/// cursor, which the contact's own list then takes back): a contact with
/// more records than the page, one with fewer, one without any, one that
/// does not exist, one listed twice. No contacts is no page; past the
/// limit of contacts, or with a page size out of range, they are refused
/// naming the field.
pub async fn first_pages_of_many_contacts_are_their_own_lists_first_pages(store: &DynStore) {
    let t = TenantId::new();
    let busy = create(store, t, new_contact("first.busy@example.com", "Bu", "Sy")).await;
    let few = create(store, t, new_contact("first.few@example.com", "Fe", "W")).await;
    let none = create(store, t, new_contact("first.none@example.com", "No", "Ne")).await;
    let base = truncate_to_micros(Utc::now() - Duration::days(5));
    with_tx!(store, t, async |tx| {
        for n in 0..7i64 {
            // Pairs share a time, so that ties are broken by id.
            let at = base + Duration::minutes(n / 2);
            ok(
                tx.log_activity(NewActivity::new(busy.id, ActivityKind::Note).occurred_at(at))
                    .await,
                "busy's activity",
            );
        }
        ok(
            tx.log_activity(NewActivity::new(few.id, ActivityKind::Call))
                .await,
            "few's activity",
        );
    })
    .await;
    for n in 0..4 {
        deal(
            store,
            t,
            new_deal(busy.id, &format!("Busy {n}"), "1", "EUR"),
        )
        .await;
    }
    deal(store, t, new_deal(few.id, "Few", "1", "EUR")).await;
    let listed = [busy.id, few.id, ContactId::new(), none.id, busy.id];
    let crm = store.scope(t, &ctx());
    for limit in [3, 1, 50] {
        let first = PageRequest::first(limit);
        let activities = ok(
            crm.first_timeline_pages(&listed, limit).await,
            "first timeline pages",
        );
        let deals = ok(
            crm.first_deal_pages(&listed, limit).await,
            "first deal pages",
        );
        assert_eq!(activities.len(), listed.len(), "a page per contact listed");
        assert_eq!(deals.len(), listed.len(), "a page per contact listed");
        for (i, contact) in listed.iter().enumerate() {
            let own = ok(crm.timeline(*contact, &first).await, "timeline");
            assert_eq!(
                activities[i], own,
                "contact {i}'s first timeline page, limit {limit}"
            );
            let own = ok(
                crm.list_deals_for_contact(*contact, &first).await,
                "deals of contact",
            );
            assert_eq!(
                deals[i], own,
                "contact {i}'s first page of deals, limit {limit}"
            );
        }
        if limit == 3 {
            assert_eq!(activities[0].items.len(), 3);
            let cursor = activities[0]
                .next_cursor
                .clone()
                .expect("more activities follow");
            let rest = ok(
                crm.timeline(busy.id, &PageRequest::after(limit, cursor))
                    .await,
                "the timeline after the first page",
            );
            assert_eq!(rest.items.len(), 3, "the busy contact's second page");
            let cursor = deals[0].next_cursor.clone().expect("more deals follow");
            let rest = ok(
                crm.list_deals_for_contact(busy.id, &PageRequest::after(limit, cursor))
                    .await,
                "deals after the first page",
            );
            assert_eq!(rest.items.len(), 1, "the busy contact's last deal");
        }
    }
    assert!(ok(crm.first_timeline_pages(&[], 10).await, "no contacts").is_empty());
    assert!(ok(crm.first_deal_pages(&[], 10).await, "no contacts").is_empty());
    let too_many = vec![busy.id; crate::store::MAX_GET_MANY + 1];
    expect_validation(
        crm.first_timeline_pages(&too_many, 10).await,
        "contacts",
        "more contacts than a call takes",
    );
    expect_validation(
        crm.first_deal_pages(&too_many, 10).await,
        "contacts",
        "more contacts than a call takes",
    );
    for limit in [0, crate::domain::MAX_PAGE_SIZE + 1] {
        expect_validation(
            crm.first_timeline_pages(&listed, limit).await,
            "limit",
            "a page size out of range",
        );
        expect_validation(
            crm.first_deal_pages(&listed, limit).await,
            "limit",
            "a page size out of range",
        );
    }
}

/// The signals of many contacts at once are each contact's own list, in
/// the order the contacts are given (a contact listed twice gets its list
/// twice, a missing one an empty list); no contacts, no lists; more than
/// `MAX_GET_MANY` contacts is a validation error.
pub async fn signals_of_many_contacts_are_their_own_lists(store: &DynStore) {
    let t = TenantId::new();
    let busy = create(store, t, new_contact("many.busy@example.com", "Bu", "Sy")).await;
    let few = create(store, t, new_contact("many.few@example.com", "Fe", "W")).await;
    let none = create(store, t, new_contact("many.none@example.com", "No", "Ne")).await;
    let elsewhere = create(
        store,
        TenantId::new(),
        new_contact("many.busy@example.com", "Bu", "Sy"),
    )
    .await;
    let base = truncate_to_micros(Utc::now() - Duration::days(5));
    with_tx!(store, t, async |tx| {
        for n in 0..7i64 {
            // Pairs share a time, so that ties are broken by id.
            let at = base + Duration::minutes(3 - n / 2);
            ok(
                tx.record_signal(NewSignal::new(busy.id, SignalKind::PAGE_VIEW).occurred_at(at))
                    .await,
                "busy's signal",
            );
        }
        ok(
            tx.record_signal(NewSignal::new(few.id, SignalKind::EMAIL_OPEN))
                .await,
            "few's signal",
        );
    })
    .await;
    let listed = [
        busy.id,
        few.id,
        ContactId::new(),
        none.id,
        elsewhere.id,
        busy.id,
    ];
    let crm = store.scope(t, &ctx());
    let many = ok(crm.signals_of_many(&listed).await, "signals of many");
    assert_eq!(many.len(), listed.len(), "a list per contact listed");
    for (i, contact) in listed.iter().enumerate() {
        let own = ok(crm.list_signals(*contact).await, "signals");
        assert_eq!(many[i], own, "contact {i}'s signals");
    }
    assert_eq!(many[0].len(), 7);
    assert!(many[4].is_empty(), "another tenant's contact has none here");
    assert!(ok(crm.signals_of_many(&[]).await, "no contacts").is_empty());
    let too_many = vec![busy.id; crate::store::MAX_GET_MANY + 1];
    expect_validation(
        crm.signals_of_many(&too_many).await,
        "contacts",
        "more contacts than a call takes",
    );
}

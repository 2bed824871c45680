//! The conformance suite's sort and paging points of contact search:
//! every sort is a total order, paging visits every match once and stays
//! stable under inserts, and limits and cursors are checked.

use chrono::{Duration, Utc};

use super::prelude::*;
use super::support::{
    all, begin, contact_scores, create, ctx, default_stages, expect_validation, expected_order,
    get, new_contact, ok, score, search, search_ids, tick,
};

async fn cursor_of(store: &DynStore, t: TenantId, sort: ContactSort) -> Cursor {
    search(
        store,
        t,
        &ContactQuery::new()
            .with_sort(sort)
            .with_page(PageRequest::first(2)),
    )
    .await
    .next_cursor
    .expect("eleven contacts have a second page")
}

const ALL_SORTS: [ContactSort; 8] = [
    ContactSort::ScoreDesc,
    ContactSort::ScoreAsc,
    ContactSort::CreatedDesc,
    ContactSort::CreatedAsc,
    ContactSort::UpdatedDesc,
    ContactSort::UpdatedAsc,
    ContactSort::NameAsc,
    ContactSort::NameDesc,
];

/// A tenant with ties in every sort key: equal scores, names equal but for
/// casing, contacts created (and so stamped) in one transaction.
async fn ties(store: &DynStore, t: TenantId) -> Vec<Contact> {
    let people = [
        ("Ada", "Lovelace"),
        ("ada", "lovelace"),
        ("ADA", "LOVELACE"),
        ("Bob", "Lovelace"),
        ("Zed", "Adams"),
        ("amy", "adams"),
        ("Carl", "O'Neil"),
        ("carl", "Oneil"),
        ("Eve", "adams"),
        ("Dan", "Zimmer"),
        ("dan", "zimmer"),
    ];
    let mut made = Vec::new();
    // The first five in one transaction (a backend stamping the
    // transaction's time gives them equal timestamps), the rest one by one.
    with_tx!(store, t, async |tx| {
        for (i, (first, last)) in people.iter().take(5).enumerate() {
            let c = ok(
                tx.create_contact(new_contact(&format!("tie{i}@example.com"), first, last))
                    .await,
                "create",
            );
            made.push(c.id);
        }
    })
    .await;
    for (i, (first, last)) in people.iter().enumerate().skip(5) {
        tick().await;
        made.push(
            create(
                store,
                t,
                new_contact(&format!("tie{i}@example.com"), first, last),
            )
            .await
            .id,
        );
    }
    // Two updates in one transaction: equal updated_at where the backend
    // stamps the transaction's time.
    tick().await;
    with_tx!(store, t, async |tx| {
        for id in [made[1], made[7]] {
            ok(
                tx.update_contact(
                    id,
                    Version::FIRST,
                    ContactPatch {
                        lead_source: Some(LeadSource::Paid),
                        ..ContactPatch::default()
                    },
                )
                .await,
                "update",
            );
        }
    })
    .await;
    let scores = [50, 50, 50, 20, 20, 90, 0, 0, 50, 100, 20];
    let pairs: Vec<(ContactId, Score)> = made.iter().copied().zip(scores.map(score)).collect();
    with_tx!(store, t, async |tx| ok(
        tx.write_scores(&contact_scores(&pairs)).await,
        "scores"
    ))
    .await;
    let mut out = Vec::new();
    for id in made {
        out.push(get(store, t, id).await.expect("exists"));
    }
    out
}

/// Every sort gives a total order: by its key, ties broken by id in the
/// direction of the sort.
pub async fn every_sort_is_a_total_order_with_id_tie_break_in_the_sort_direction(store: &DynStore) {
    let t = TenantId::new();
    let contacts = ties(store, t).await;
    for sort in ALL_SORTS {
        let got = search_ids(store, t, &all(sort)).await;
        assert_eq!(
            got,
            expected_order(sort, &contacts),
            "sort {sort:?} orders by its key, then by id in the same direction"
        );
    }
    let default = search_ids(
        store,
        t,
        &ContactQuery::new().with_page(PageRequest::first(MAX_PAGE_SIZE)),
    )
    .await;
    assert_eq!(
        default,
        expected_order(ContactSort::CreatedDesc, &contacts),
        "the default order is newest first"
    );
}

/// Following cursors with small pages visits every match exactly once, in
/// the order of the sort, with or without filters.
pub async fn paging_visits_every_match_exactly_once_in_order(store: &DynStore) {
    let t = TenantId::new();
    let contacts = ties(store, t).await;
    let crm = store.scope(t, &ctx());
    for sort in ALL_SORTS {
        let expected = expected_order(sort, &contacts);
        for limit in [1, 3, 11, 1000] {
            let q = ContactQuery::new().with_sort(sort);
            let got = collect_pages!(limit, async |page| {
                ok(
                    crm.search_contacts(&q.clone().with_page(page)).await,
                    "search page",
                )
            })
            .await;
            let got: Vec<ContactId> = got.iter().map(|c| c.id).collect();
            assert_eq!(got, expected, "paging {sort:?} with limit {limit}");
        }
        // With a filter: scores of at least 20.
        let filtered: Vec<Contact> = contacts
            .iter()
            .filter(|c| c.score >= score(20))
            .cloned()
            .collect();
        let q = ContactQuery {
            min_score: Some(score(20)),
            ..ContactQuery::new().with_sort(sort)
        };
        let got = collect_pages!(2, async |page| {
            ok(
                crm.search_contacts(&q.clone().with_page(page)).await,
                "search page",
            )
        })
        .await;
        let got: Vec<ContactId> = got.iter().map(|c| c.id).collect();
        assert_eq!(
            got,
            expected_order(sort, &filtered),
            "paging {sort:?} with a score filter"
        );
    }
}

/// Records inserted between two pages, whether they sort before or after
/// the cursor, do not make the next page repeat or skip a record that was
/// there all along (the position is a key, not an offset).
pub async fn paging_is_stable_when_records_are_inserted_between_pages(store: &DynStore) {
    let t = TenantId::new();
    let mut made = Vec::new();
    for i in 1..=6 {
        made.push(
            create(
                store,
                t,
                new_contact(&format!("b{i}@example.com"), "B", &format!("Baker{i}")),
            )
            .await,
        );
    }
    let q = ContactQuery::new()
        .with_sort(ContactSort::NameAsc)
        .with_page(PageRequest::first(3));
    let first = search(store, t, &q).await;
    assert_eq!(
        first.items.iter().map(|c| c.id).collect::<Vec<_>>(),
        made[..3].iter().map(|c| c.id).collect::<Vec<_>>(),
        "the first page holds Baker1 to Baker3"
    );
    let cursor = first.next_cursor.expect("more follow");
    let aaron = create(store, t, new_contact("aaron@example.com", "A", "Aaron")).await;
    let baker2b = create(store, t, new_contact("b2b@example.com", "B", "Baker2b")).await;
    let zed = create(store, t, new_contact("zed@example.com", "Z", "Zed")).await;
    let rest = collect_pages!(3, async |page| {
        let cursor = page.cursor.clone().unwrap_or_else(|| cursor.clone());
        search(store, t, &q.after(cursor)).await
    })
    .await;
    let mut want: Vec<ContactId> = made[3..].iter().map(|c| c.id).collect();
    want.push(zed.id);
    assert_eq!(
        rest.iter().map(|c| c.id).collect::<Vec<_>>(),
        want,
        "after the cursor come Baker4 to Baker6 and the new Zed; Aaron and Baker2b, \
         inserted before the cursor, shift nothing"
    );
    assert!(!rest.iter().any(|c| c.id == aaron.id || c.id == baker2b.id));

    let c = &made[0];
    let base = truncate_to_micros(Utc::now() - Duration::days(1));
    let logged = with_tx!(store, t, async |tx| {
        let mut v = Vec::new();
        for i in 1..=6 {
            v.push(ok(
                tx.log_activity(
                    NewActivity::new(c.id, ActivityKind::Note)
                        .occurred_at(base + Duration::minutes(i)),
                )
                .await,
                "activity",
            ));
        }
        v
    })
    .await;
    let crm = store.scope(t, &ctx());
    let first = ok(crm.timeline(c.id, &PageRequest::first(3)).await, "timeline");
    assert_eq!(
        first.items.iter().map(|a| a.id).collect::<Vec<_>>(),
        vec![logged[5].id, logged[4].id, logged[3].id],
        "the first timeline page holds the three newest"
    );
    let newest = with_tx!(store, t, async |tx| ok(
        tx.log_activity(NewActivity::new(c.id, ActivityKind::Call))
            .await,
        "newest"
    ))
    .await;
    let second = ok(
        crm.timeline(
            c.id,
            &PageRequest::after(3, first.next_cursor.expect("more")),
        )
        .await,
        "timeline",
    );
    assert_eq!(
        second.items.iter().map(|a| a.id).collect::<Vec<_>>(),
        vec![logged[2].id, logged[1].id, logged[0].id],
        "an activity logged since the first page shifts nothing"
    );
    assert!(second.next_cursor.is_none(), "nothing follows the oldest");
    assert!(!second.items.iter().any(|a| a.id == newest.id));
}

/// A page limit of 0 or above 1000 is a validation error on `limit`, in
/// every list.
pub async fn lists_reject_a_limit_outside_1_to_1000(store: &DynStore) {
    let t = TenantId::new();
    let stages = default_stages(store);
    let c = create(store, t, new_contact("limits@example.com", "Li", "Mits")).await;
    with_tx!(store, t, async |tx| {
        for limit in [0, MAX_PAGE_SIZE + 1, u32::MAX] {
            let page = PageRequest::first(limit);
            expect_validation(
                tx.search_contacts(&ContactQuery::new().with_page(page.clone()))
                    .await,
                "limit",
                &format!("search with limit {limit}"),
            );
            expect_validation(
                tx.timeline(c.id, &page).await,
                "limit",
                &format!("timeline with limit {limit}"),
            );
            expect_validation(
                tx.list_deals_for_contact(c.id, &page).await,
                "limit",
                &format!("deals of a contact with limit {limit}"),
            );
            expect_validation(
                tx.list_deals_in_stage(stages.pipeline.key(), &stages.open[0], &page)
                    .await,
                "limit",
                &format!("deals in a stage with limit {limit}"),
            );
        }
        for limit in [1, MAX_PAGE_SIZE] {
            ok(
                tx.search_contacts(&ContactQuery::new().with_page(PageRequest::first(limit)))
                    .await,
                "limits 1 and 1000 are accepted",
            );
        }
    })
    .await;
}

/// A cursor that is not one (garbage, another list's, another sort key's)
/// is a validation error on `cursor`.
pub async fn search_rejects_a_garbage_cursor_and_a_cursor_of_another_list(store: &DynStore) {
    let t = TenantId::new();
    let contacts = ties(store, t).await;
    let c = &contacts[0];
    let timeline_cursor = with_tx!(store, t, async |tx| {
        for _ in 0..3 {
            ok(
                tx.log_activity(NewActivity::new(c.id, ActivityKind::Note))
                    .await,
                "activity",
            );
        }
        ok(tx.timeline(c.id, &PageRequest::first(1)).await, "timeline")
            .next_cursor
            .expect("a timeline of three has a next page after one")
    })
    .await;
    let score_cursor = cursor_of(store, t, ContactSort::ScoreDesc).await;
    let name_cursor = cursor_of(store, t, ContactSort::NameAsc).await;
    let time_cursor = cursor_of(store, t, ContactSort::CreatedDesc).await;

    let garbage = [
        ("garbage text", Cursor::from_string("not a cursor!".into())),
        ("an empty cursor", Cursor::from_string(String::new())),
        ("odd hex", Cursor::from_string("abc".into())),
        (
            "a JSON string",
            Cursor::encode(ContactSort::ScoreDesc.cursor_list(), &"hello"),
        ),
        ("a timeline cursor", timeline_cursor.clone()),
    ];
    with_tx!(store, t, async |tx| {
        for sort in ALL_SORTS {
            for (label, cursor) in &garbage {
                expect_validation(
                    tx.search_contacts(&ContactQuery::new().with_sort(sort).after(cursor.clone()))
                        .await,
                    "cursor",
                    &format!("search {sort:?} after {label}"),
                );
            }
        }
        let crossed = [
            (
                "a score cursor",
                &score_cursor,
                [ContactSort::NameAsc, ContactSort::CreatedDesc],
            ),
            (
                "a name cursor",
                &name_cursor,
                [ContactSort::ScoreDesc, ContactSort::UpdatedAsc],
            ),
            (
                "a time cursor",
                &time_cursor,
                [ContactSort::ScoreAsc, ContactSort::NameDesc],
            ),
        ];
        for (label, cursor, sorts) in crossed {
            for sort in sorts {
                expect_validation(
                    tx.search_contacts(&ContactQuery::new().with_sort(sort).after(cursor.clone()))
                        .await,
                    "cursor",
                    &format!("search {sort:?} after {label}"),
                );
            }
        }
        for (label, cursor) in [
            ("garbage", Cursor::from_string("zz".into())),
            ("a search cursor", score_cursor.clone()),
        ] {
            expect_validation(
                tx.timeline(c.id, &PageRequest::after(5, cursor.clone()))
                    .await,
                "cursor",
                &format!("timeline after {label}"),
            );
            expect_validation(
                tx.list_deals_for_contact(c.id, &PageRequest::after(5, cursor.clone()))
                    .await,
                "cursor",
                &format!("deals of a contact after {label}"),
            );
        }
    })
    .await;
}

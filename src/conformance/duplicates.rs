//! The conformance suite's points for data quality over the contract:
//! duplicate candidates of a tenant's contacts and companies (the same
//! pairs on every backend, paged and refused cursors as every list), and
//! a merge preview that is exactly what the merge then writes, and writes
//! nothing itself.

use serde_json::json;

use super::prelude::*;
use super::support::{
    begin, create, deal, expect_not_found, expect_validation, metadata, new_contact, new_deal, ok,
};
use crate::{
    domain::{NewCompany, NewTag, NewTask, RecordRef, TagName, TaskTitle},
    quality::{
        CompanyDuplicateReason, DuplicateOptions, DuplicateReason, duplicate_candidates,
        duplicate_companies, merge_preview,
    },
};

/// A contact with a company, a phone or both.
fn person(
    email: &str,
    first: &str,
    last: &str,
    company: Option<&str>,
    phone: Option<&str>,
) -> NewContact {
    let mut c = new_contact(email, first, last);
    c.company = company.map(|n| CompanyName::parse(n).expect("a valid company name"));
    c.phone = phone.map(|p| Phone::parse(p).expect("a valid phone"));
    c
}

/// The emails of a pair, in order.
fn emails(a: &Email, b: &Email) -> (String, String) {
    let (a, b) = (a.normalized().to_string(), b.normalized().to_string());
    if a <= b { (a, b) } else { (b, a) }
}

/// Contract: a duplicate scan pairs a nickname with its full name and one
/// phone written two ways, swapped first and last names, the same local
/// part at another domain and the same name at the same company; it does
/// not pair different people who share a common surname at `gmail.com`,
/// a contact of another tenant, or an erased contact. Pairs are best
/// first, each with its reasons, and the same on every backend.
pub async fn duplicate_candidates_pair_the_same_person_written_differently(store: &DynStore) {
    let t = TenantId::new();
    let other = TenantId::new();
    let rows = [
        person(
            "robert.smith@acme.example",
            "Robert",
            "Smith",
            Some("Acme"),
            Some("(415) 555-0134"),
        ),
        person(
            "bob.smith@acme.example",
            "Bob",
            "Smith",
            Some("Acme"),
            Some("+1 415 555 0134"),
        ),
        person("p.nakamura@globex.example", "Priya", "Nakamura", None, None),
        person("p.nakamura@gmail.com", "NAKAMURA", "priya", None, None),
        person(
            "ines.mendez@initech.example",
            "Inés",
            "Méndez",
            Some("Initech"),
            None,
        ),
        person(
            "imendez@initech.example",
            "Ines",
            "Mendez",
            Some("Initech"),
            None,
        ),
        person(
            "john.smith@gmail.com",
            "John",
            "Smith",
            None,
            Some("212 555 0101"),
        ),
        person(
            "jane.smith@gmail.com",
            "Jane",
            "Smith",
            None,
            Some("212 555 0199"),
        ),
        person("mary.smith@gmail.com", "Mary", "Smith", None, None),
        person(
            "erased.twin@globex.example",
            "Priya",
            "Nakamura",
            None,
            None,
        ),
    ];
    let mut ids = Vec::new();
    for row in rows.iter().cloned() {
        ids.push(create(store, t, row).await.id);
    }
    create(
        store,
        other,
        person(
            "robert.smith@other.example",
            "Robert",
            "Smith",
            Some("Acme"),
            Some("415 555 0134"),
        ),
    )
    .await;
    let mut tx = begin(store, t).await;
    ok(tx.erase_contact(ids[9]).await, "erase a contact");
    ok(tx.commit().await, "commit");

    let scan = ok(
        duplicate_candidates(store, t, &DuplicateOptions::default()).await,
        "scan",
    );
    let found: Vec<((String, String), Vec<DuplicateReason>)> = scan
        .pairs()
        .iter()
        .map(|p| (emails(&p.email_a, &p.email_b), p.reasons.clone()))
        .collect();
    let pair = |a: &str, b: &str| emails(&Email::parse(a).unwrap(), &Email::parse(b).unwrap());
    let expected = [
        (
            pair("robert.smith@acme.example", "bob.smith@acme.example"),
            vec![
                DuplicateReason::SameEmailDomainSimilarName,
                DuplicateReason::SamePhone,
                DuplicateReason::SameNameSameCompany,
                DuplicateReason::Nickname,
            ],
        ),
        (
            pair("p.nakamura@globex.example", "p.nakamura@gmail.com"),
            vec![
                DuplicateReason::SameLocalPartOtherDomain,
                DuplicateReason::SwappedNames,
            ],
        ),
        (
            pair("ines.mendez@initech.example", "imendez@initech.example"),
            vec![
                DuplicateReason::SameEmailDomainSimilarName,
                DuplicateReason::SameNameSameCompany,
            ],
        ),
    ];
    assert_eq!(
        found.len(),
        expected.len(),
        "exactly the three people written twice are paired: {found:?}"
    );
    for e in &expected {
        assert!(found.contains(e), "the pair {e:?} is found: {found:?}");
    }
    for w in scan.pairs().windows(2) {
        assert!(
            w[0].confidence > w[1].confidence
                || (w[0].confidence == w[1].confidence && (w[0].a, w[0].b) < (w[1].a, w[1].b)),
            "pairs are best first, then by ids"
        );
    }
    for p in scan.pairs() {
        assert!(p.a < p.b, "a pair names the smaller id first");
        assert!((DuplicateOptions::default().threshold..=1.0).contains(&p.confidence));
    }
    assert_eq!(
        scan.contacts_scanned(),
        9,
        "the erased contact is not compared"
    );
}

/// Contract: a scan's pairs page as every list does: pages of `limit`,
/// a next cursor exactly when more follow, every pair once in order; a
/// limit outside 1–1000, a cursor of another list and a cursor of a scan
/// with other options are refused on `limit` and `cursor`; options out of
/// range are refused naming each.
pub async fn duplicate_pairs_page_through_every_pair_once_and_refuse_foreign_cursors(
    store: &DynStore,
) {
    let t = TenantId::new();
    for i in 0..7 {
        let first = [
            "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances",
        ][i];
        let last = [
            "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen",
        ][i];
        let phone = format!("+1 617 555 01{i:02}");
        create(
            store,
            t,
            person(
                &format!("{first}.{last}@one.example"),
                first,
                last,
                None,
                Some(&phone),
            ),
        )
        .await;
        create(
            store,
            t,
            person(
                &format!("{first}.{last}@two.example"),
                first,
                last,
                None,
                Some(&phone),
            ),
        )
        .await;
    }
    let options = DuplicateOptions::default();
    let scan = ok(duplicate_candidates(store, t, &options).await, "scan");
    assert_eq!(scan.len(), 7, "one pair per person");
    let mut seen = Vec::new();
    let mut request = PageRequest::first(3);
    loop {
        let page = ok(scan.page(&request), "a page of pairs");
        assert!(page.items.len() <= 3);
        assert_eq!(
            page.next_cursor.is_some(),
            seen.len() + page.items.len() < 7,
            "a next cursor exactly when more follow"
        );
        seen.extend(page.items);
        match page.next_cursor {
            Some(c) => request = PageRequest::after(3, c),
            None => break,
        }
    }
    assert_eq!(
        seen,
        scan.pairs(),
        "paging visits every pair once, in order"
    );

    expect_validation(scan.page(&PageRequest::first(0)), "limit", "limit 0");
    expect_validation(scan.page(&PageRequest::first(1001)), "limit", "limit 1001");
    let search = with_tx!(store, t, async |tx| ok(
        tx.search_contacts(&ContactQuery::new().with_page(PageRequest::first(1)))
            .await,
        "search"
    ))
    .await;
    let foreign = search.next_cursor.expect("more contacts follow");
    expect_validation(
        scan.page(&PageRequest::after(3, foreign)),
        "cursor",
        "a cursor of the contact search",
    );
    let other = ok(
        duplicate_candidates(store, t, &options.clone().with_threshold(0.5)).await,
        "scan with another threshold",
    );
    let cursor = ok(other.page(&PageRequest::first(1)), "page")
        .next_cursor
        .expect("more pairs follow");
    expect_validation(
        scan.page(&PageRequest::after(3, cursor)),
        "cursor",
        "a cursor of a scan with other options",
    );
    expect_validation(
        scan.page(&PageRequest::after(3, Cursor::from_string("zz".into()))),
        "cursor",
        "a garbage cursor",
    );
    for (bad, field) in [
        (DuplicateOptions::default().with_threshold(1.5), "threshold"),
        (
            DuplicateOptions::default().with_threshold(f64::NAN),
            "threshold",
        ),
        (
            DuplicateOptions::default().with_default_region("XX"),
            "default_region",
        ),
        (
            DuplicateOptions::default().with_max_block_size(1),
            "max_block_size",
        ),
        (
            DuplicateOptions::default().with_max_block_size(100_000),
            "max_block_size",
        ),
    ] {
        expect_validation(
            duplicate_candidates(store, t, &bad).await,
            field,
            "options out of range",
        );
    }
}

/// Contract: companies pair on one organisation domain (a subdomain, or a
/// name that is the domain) and on similar names with legal forms set
/// aside; different companies are not paired.
pub async fn duplicate_companies_pair_one_organisation_written_differently(store: &DynStore) {
    let t = TenantId::new();
    let mut names = Vec::new();
    for (name, domain) in [
        ("Acme Inc", Some("acme.example")),
        ("ACME Corporation", Some("eu.acme.example")),
        ("Globex", Some("globex.example")),
        ("Initech, LLC", None),
        ("Initech", None),
        ("Umbrella", Some("umbrella.example")),
    ] {
        let mut new = NewCompany::new(CompanyName::parse(name).expect("a company name"));
        new.domain = domain.map(|d| crate::domain::CompanyDomain::parse(d).expect("a domain"));
        let c = with_tx!(store, t, async |tx| ok(
            tx.create_company(new).await,
            "create a company"
        ))
        .await;
        names.push((c.id, name));
    }
    let scan = ok(
        duplicate_companies(store, t, &DuplicateOptions::default()).await,
        "scan companies",
    );
    let mut found: Vec<(Vec<&str>, Vec<CompanyDuplicateReason>)> = scan
        .pairs()
        .iter()
        .map(|p| {
            let mut n = vec![p.name_a.as_str(), p.name_b.as_str()];
            n.sort_unstable();
            (n, p.reasons.clone())
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        vec![
            (
                vec!["ACME Corporation", "Acme Inc"],
                vec![
                    CompanyDuplicateReason::SameDomain,
                    CompanyDuplicateReason::SimilarName
                ]
            ),
            (
                vec!["Initech", "Initech, LLC"],
                vec![CompanyDuplicateReason::SimilarName]
            ),
        ],
        "one organisation's two records pair, and nothing else"
    );
    let all = ok(scan.page(&PageRequest::first(10)), "a page");
    assert_eq!(all.items, scan.pairs());
    assert!(all.next_cursor.is_none());
}

/// Contract: a merge preview shows the survivor exactly as the merge then
/// writes it (every field but `updated_at`), the changed fields, and what
/// moves: the loser's deals, activities, signals, tasks and the tags the
/// survivor gains; the preview itself writes nothing.
pub async fn a_merge_preview_is_what_the_merge_writes_and_writes_nothing(store: &DynStore) {
    let t = TenantId::new();
    let mut s = new_contact("survivor@example.com", "Sam", "Survivor");
    s.metadata = metadata(json!({"a": 1, "shared": "survivor"}));
    let survivor = create(store, t, s).await;
    let mut l = person(
        "loser@example.com",
        "Samuel",
        "Survivor",
        Some("Loser Co"),
        Some("+1 555 0199"),
    );
    l.metadata = metadata(json!({"b": 2, "shared": "loser"}));
    let loser = create(store, t, l).await;
    let d = deal(store, t, new_deal(loser.id, "Big one", "100.00", "EUR")).await;
    let (activity, task, kept_tag, gained_tag) = with_tx!(store, t, async |tx| {
        let a = ok(
            tx.log_activity(NewActivity::new(loser.id, ActivityKind::Call).deal(d.id))
                .await,
            "log",
        );
        ok(
            tx.record_signal(NewSignal::new(
                loser.id,
                SignalKind::parse("page_view").unwrap(),
            ))
            .await,
            "signal",
        );
        let task = ok(
            tx.create_task(NewTask {
                contact_id: Some(loser.id),
                ..NewTask::new(TaskTitle::parse("Call back").expect("a title"))
            })
            .await,
            "task",
        );
        let both = ok(
            tx.create_tag(NewTag::new(TagName::parse("Both").unwrap()))
                .await,
            "tag",
        );
        let only = ok(
            tx.create_tag(NewTag::new(TagName::parse("Only loser").unwrap()))
                .await,
            "tag",
        );
        ok(
            tx.attach_tag(both.id, RecordRef::Contact(survivor.id))
                .await,
            "attach",
        );
        ok(
            tx.attach_tag(both.id, RecordRef::Contact(loser.id)).await,
            "attach",
        );
        ok(
            tx.attach_tag(only.id, RecordRef::Contact(loser.id)).await,
            "attach",
        );
        (a, task, both, only)
    })
    .await;
    let before = with_tx!(store, t, async |tx| ok(
        tx.entity_history(
            HistoryEntity::Contact(survivor.id),
            &PageRequest::first(100)
        )
        .await,
        "history"
    ))
    .await;

    for policy in [ConflictPolicy::Existing, ConflictPolicy::NonEmptyIncoming] {
        let mut tx = begin(store, t).await;
        let preview = ok(
            merge_preview(&mut *tx, survivor.id, loser.id, policy).await,
            "preview",
        );
        ok(tx.commit().await, "commit the preview");
        assert_eq!(preview.deals, vec![d.id]);
        assert_eq!(preview.activities, vec![activity.id]);
        assert_eq!(preview.signals, 1);
        assert_eq!(preview.tasks, vec![task.id]);
        assert_eq!(
            preview.tags_gained,
            vec![gained_tag.id],
            "the survivor gains the tag it lacks, not {:?}",
            kept_tag.id
        );
        assert_eq!(preview.loser.id, loser.id);
        assert!(preview.changes.contains_key("company") && preview.changes.contains_key("phone"));
        assert!(
            !preview.changes.contains_key("version") && !preview.changes.contains_key("updated_at")
        );
        assert_eq!(
            preview.changes.contains_key("first_name"),
            policy != ConflictPolicy::Existing,
            "the first name changes only when the loser's values win"
        );
    }
    // Nothing was written: the same records and the same history.
    assert_eq!(
        super::support::get(store, t, survivor.id).await.as_ref(),
        Some(&survivor)
    );
    assert_eq!(
        super::support::get(store, t, loser.id).await.as_ref(),
        Some(&loser)
    );
    let after = with_tx!(store, t, async |tx| ok(
        tx.entity_history(
            HistoryEntity::Contact(survivor.id),
            &PageRequest::first(100)
        )
        .await,
        "history"
    ))
    .await;
    assert_eq!(
        before.items.len(),
        after.items.len(),
        "a preview records no history"
    );

    let policy = ConflictPolicy::NonEmptyIncoming;
    let mut tx = begin(store, t).await;
    let preview = ok(
        merge_preview(&mut *tx, survivor.id, loser.id, policy).await,
        "preview",
    );
    let merged = ok(
        tx.merge_contacts(survivor.id, loser.id, policy).await,
        "merge",
    );
    ok(tx.commit().await, "commit");
    let mut expected = preview.survivor.clone();
    expected.updated_at = merged.updated_at;
    super::support::assert_same(
        &merged,
        &expected,
        "the merge writes the previewed survivor",
    );
    let mut tx = begin(store, t).await;
    let deals = ok(
        tx.list_deals_for_contact(survivor.id, &PageRequest::first(10))
            .await,
        "deals",
    );
    assert_eq!(
        deals.items.iter().map(|d| d.id).collect::<Vec<_>>(),
        preview.deals
    );
    let timeline = ok(
        tx.timeline(survivor.id, &PageRequest::first(10)).await,
        "timeline",
    );
    assert_eq!(
        timeline.items.iter().map(|a| a.id).collect::<Vec<_>>(),
        preview.activities
    );
    assert_eq!(
        ok(tx.list_signals(survivor.id).await, "signals").len() as u64,
        preview.signals
    );
    let moved = ok(tx.get_task(task.id).await, "task").expect("the task is kept");
    assert_eq!(moved.contact_id, Some(survivor.id));
    let tags = ok(tx.tags_of(RecordRef::Contact(survivor.id)).await, "tags");
    assert!(tags.iter().any(|t| t.id == gained_tag.id));
    ok(tx.commit().await, "commit");
}

/// Contract: a merge preview refuses what the merge refuses, with the same
/// errors: a contact into itself (`loser`), a missing survivor (named
/// first) or loser, an erased survivor (`survivor`).
pub async fn a_merge_preview_refuses_what_the_merge_refuses(store: &DynStore) {
    let t = TenantId::new();
    let a = create(store, t, new_contact("a@example.com", "Ann", "A")).await;
    let b = create(store, t, new_contact("b@example.com", "Ben", "B")).await;
    let gone = ContactId::new();
    let policy = ConflictPolicy::default();
    let mut tx = begin(store, t).await;
    expect_validation(
        merge_preview(&mut *tx, a.id, a.id, policy).await,
        "loser",
        "itself",
    );
    expect_validation(
        tx.merge_contacts(a.id, a.id, policy).await,
        "loser",
        "itself",
    );
    expect_not_found(
        merge_preview(&mut *tx, gone, a.id, policy).await,
        Entity::Contact,
        gone,
        "a missing survivor",
    );
    expect_not_found(
        merge_preview(&mut *tx, a.id, gone, policy).await,
        Entity::Contact,
        gone,
        "a missing loser",
    );
    let other = ContactId::new();
    expect_not_found(
        merge_preview(&mut *tx, gone, other, policy).await,
        Entity::Contact,
        gone,
        "both missing: the survivor is named",
    );
    expect_not_found(
        tx.merge_contacts(gone, other, policy).await,
        Entity::Contact,
        gone,
        "both missing: the merge names the survivor",
    );
    ok(tx.erase_contact(b.id).await, "erase");
    expect_validation(
        merge_preview(&mut *tx, b.id, a.id, policy).await,
        "survivor",
        "erased",
    );
    expect_validation(
        tx.merge_contacts(b.id, a.id, policy).await,
        "survivor",
        "erased",
    );
    ok(tx.commit().await, "commit");
}

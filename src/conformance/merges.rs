//! The conformance suite's merge points for companies and for what a
//! contact merge does to companies, owners and tags: a company merge moves
//! every linked record and tag to the survivor, fills the survivor's blanks
//! and records all of it under its reason; it refuses itself and missing
//! companies and writes nothing then; links racing it move with it or find
//! the loser gone. A contact merge keeps the survivor's company and owner
//! under every policy and gives it the loser's tags. Also the live top
//! accounts and the deal search, which filters by company, owner and tags.

use futures_util::future::join_all;
use serde_json::json;

use super::prelude::*;
use super::support::{
    begin, create, deal, expect_not_found, expect_validation, metadata, money, new_contact,
    new_deal, ok,
};
use crate::{
    DealQuery,
    bulk::{company_merge_reason, merge_reason},
    domain::{
        Address, AddressPart, Company, CompanyDomain, CompanyId, Industry, NewCompany, NewTag,
        NewTask, OwnerId, RecordRef, Tag, TagName, TaskTitle,
    },
};

fn owner(s: &str) -> OwnerId {
    OwnerId::parse(s).expect("a valid owner id")
}

fn named(name: &str) -> NewCompany {
    NewCompany::new(CompanyName::parse(name).expect("a valid company name"))
}

async fn create_company(store: &DynStore, t: TenantId, new: NewCompany) -> Company {
    with_tx!(store, t, async |tx| ok(
        tx.create_company(new).await,
        "create a company"
    ))
    .await
}

async fn create_tag(store: &DynStore, t: TenantId, name: &str) -> Tag {
    with_tx!(store, t, async |tx| ok(
        tx.create_tag(NewTag::new(TagName::parse(name).expect("a tag name")))
            .await,
        "create a tag"
    ))
    .await
}

async fn attach(store: &DynStore, t: TenantId, tag: &Tag, record: RecordRef) {
    with_tx!(store, t, async |tx| ok(
        tx.attach_tag(tag.id, record).await,
        "attach a tag"
    ))
    .await;
}

/// The names of the tags `record` carries, in order.
async fn tag_names(store: &DynStore, t: TenantId, record: RecordRef) -> Vec<String> {
    with_tx!(store, t, async |tx| ok(tx.tags_of(record).await, "tags of"))
        .await
        .into_iter()
        .map(|tag| tag.name.as_str().to_string())
        .collect()
}

/// Every version of `entity`, newest first.
async fn history_of(store: &DynStore, t: TenantId, entity: HistoryEntity) -> Vec<HistoryEntry> {
    with_tx!(store, t, async |tx| ok(
        tx.entity_history(entity, &PageRequest::first(MAX_PAGE_SIZE))
            .await,
        "entity history"
    ))
    .await
    .items
}

async fn merge_companies(
    store: &DynStore,
    t: TenantId,
    survivor: CompanyId,
    loser: CompanyId,
) -> Company {
    with_tx!(store, t, async |tx| ok(
        tx.merge_companies(survivor, loser).await,
        "merge companies"
    ))
    .await
}

/// A company merge links the loser's contacts, deals and tasks to the
/// survivor (each a new version), gives it the loser's tags once, fills
/// its blanks from the loser (the whole address, custom fields under new
/// keys only; its name and values stay), deletes the loser and frees its
/// domain for the survivor; every version it writes carries its reason.
pub async fn merging_companies_moves_every_link_and_tag_and_fills_the_survivors_blanks(
    store: &DynStore,
) {
    let t = TenantId::new();
    let part = |field: &str, v: &str| Some(AddressPart::parse_field(field, v).expect("a part"));
    let survivor = create_company(
        store,
        t,
        NewCompany {
            metadata: metadata(json!({"tier": "silver", "region": "emea"})),
            employee_count: Some(12),
            ..named("Survivor GmbH")
        },
    )
    .await;
    let loser = create_company(
        store,
        t,
        NewCompany {
            domain: Some(CompanyDomain::parse("loser.example").expect("a domain")),
            industry: Some(Industry::parse("Logistics").expect("an industry")),
            employee_count: Some(900),
            annual_revenue: Some(money("1000000", "EUR")),
            address: Address {
                city: part("city", "Lyon"),
                country: part("country", "France"),
                ..Address::default()
            },
            metadata: metadata(json!({"tier": "gold", "seats": 40})),
            owner: Some(owner("user-9")),
            ..named("Loser SA")
        },
    )
    .await;
    let bystander = create_company(store, t, named("Bystander")).await;
    let moved = create(
        store,
        t,
        NewContact {
            company_id: Some(loser.id),
            ..new_contact("moved@elsewhere.example", "Moved", "Person")
        },
    )
    .await;
    let stays = create(
        store,
        t,
        NewContact {
            company_id: Some(bystander.id),
            ..new_contact("stays@elsewhere.example", "Stays", "Person")
        },
    )
    .await;
    let d = deal(
        store,
        t,
        NewDeal {
            company_id: Some(loser.id),
            ..new_deal(stays.id, "Loser deal", "10", "EUR")
        },
    )
    .await;
    let task = with_tx!(store, t, async |tx| ok(
        tx.create_task(NewTask {
            company_id: Some(loser.id),
            ..NewTask::new(TaskTitle::parse("Call them").expect("a title"))
        })
        .await,
        "create a task"
    ))
    .await;
    let (only_loser, both) = (
        create_tag(store, t, "Only loser").await,
        create_tag(store, t, "Both").await,
    );
    attach(store, t, &only_loser, RecordRef::Company(loser.id)).await;
    attach(store, t, &both, RecordRef::Company(loser.id)).await;
    attach(store, t, &both, RecordRef::Company(survivor.id)).await;

    let merged = merge_companies(store, t, survivor.id, loser.id).await;

    assert_eq!(merged.id, survivor.id);
    assert_eq!(merged.name, survivor.name, "the survivor keeps its name");
    assert_eq!(merged.domain, loser.domain, "it takes the freed domain");
    assert_eq!(merged.industry, loser.industry);
    assert_eq!(merged.employee_count, Some(12), "a value it holds stays");
    assert_eq!(merged.annual_revenue, loser.annual_revenue);
    assert_eq!(merged.address, loser.address, "the whole address");
    assert_eq!(merged.owner, loser.owner);
    assert_eq!(
        merged.metadata.as_map().get("tier"),
        Some(&json!("silver")),
        "a shared custom field keeps the survivor's value"
    );
    assert_eq!(merged.metadata.as_map().get("seats"), Some(&json!(40)));
    assert_eq!(merged.metadata.as_map().get("region"), Some(&json!("emea")));
    assert_eq!(merged.version, survivor.version.next());

    with_tx!(store, t, async |tx| {
        assert_eq!(ok(tx.get_company(loser.id).await, "get loser"), None);
        assert_eq!(
            ok(tx.get_company(survivor.id).await, "get survivor").as_ref(),
            Some(&merged),
            "the survivor reads back as returned"
        );
        let by_domain = ok(
            tx.get_company_by_domain(&CompanyDomain::parse("LOSER.example").expect("a domain"))
                .await,
            "by domain",
        );
        assert_eq!(by_domain.map(|c| c.id), Some(survivor.id));
        let c = ok(tx.get_contact(moved.id).await, "get").expect("the contact is kept");
        assert_eq!(c.company_id, Some(survivor.id), "the contact moves");
        assert_eq!(c.version, moved.version.next(), "a change of the contact");
        let s = ok(tx.get_contact(stays.id).await, "get").expect("kept");
        assert_eq!(s, stays, "a contact of another company is untouched");
        let dd = ok(tx.get_deal(d.id).await, "get").expect("the deal is kept");
        assert_eq!(dd.company_id, Some(survivor.id), "the deal moves");
        assert_eq!(dd.version, d.version.next());
        let tt = ok(tx.get_task(task.id).await, "get").expect("the task is kept");
        assert_eq!(tt.company_id, Some(survivor.id), "the task moves");
        assert_eq!(tt.version, task.version.next());
    })
    .await;
    assert_eq!(
        tag_names(store, t, RecordRef::Company(survivor.id)).await,
        vec!["Both".to_string(), "Only loser".to_string()],
        "the survivor carries each tag once"
    );
    assert!(
        tag_names(store, t, RecordRef::Company(loser.id))
            .await
            .is_empty()
    );

    let reason = company_merge_reason(survivor.id, loser.id);
    for (what, entity) in [
        ("survivor", HistoryEntity::Company(survivor.id)),
        ("loser", HistoryEntity::Company(loser.id)),
        ("contact", HistoryEntity::Contact(moved.id)),
        ("deal", HistoryEntity::Deal(d.id)),
        ("task", HistoryEntity::Task(task.id)),
    ] {
        let versions = history_of(store, t, entity).await;
        assert_eq!(
            versions.first().and_then(|v| v.reason.as_deref()),
            Some(reason.as_str()),
            "the {what}'s last version carries the merge's reason"
        );
    }
    let gone = history_of(store, t, HistoryEntity::Company(loser.id)).await;
    assert!(
        gone[0].is_tombstone(),
        "the loser's last version is a tombstone"
    );
    let unchanged = history_of(store, t, HistoryEntity::Contact(stays.id)).await;
    assert_eq!(unchanged.len(), 1, "an unrelated contact gets no version");
}

/// Merging a company into itself is a validation error on `loser`; a
/// missing survivor (also when both are missing) or loser is `NotFound`
/// naming it; none of them changes anything, and the transaction goes on.
pub async fn merging_a_company_into_itself_or_with_a_missing_one_is_refused_and_writes_nothing(
    store: &DynStore,
) {
    let t = TenantId::new();
    let c = create_company(store, t, named("Alone")).await;
    let contact = create(
        store,
        t,
        NewContact {
            company_id: Some(c.id),
            ..new_contact("alone@example.com", "Al", "One")
        },
    )
    .await;
    let (missing, also_missing) = (CompanyId::new(), CompanyId::new());
    let mut tx = begin(store, t).await;
    expect_validation(
        tx.merge_companies(c.id, c.id).await,
        "loser",
        "a company merged into itself",
    );
    expect_not_found(
        tx.merge_companies(c.id, missing).await,
        Entity::Company,
        missing,
        "a missing loser",
    );
    expect_not_found(
        tx.merge_companies(missing, c.id).await,
        Entity::Company,
        missing,
        "a missing survivor",
    );
    for (a, b) in [(missing, also_missing), (also_missing, missing)] {
        expect_not_found(
            tx.merge_companies(a, b).await,
            Entity::Company,
            a,
            "both missing: the survivor is named",
        );
    }
    let still = ok(tx.get_company(c.id).await, "get in the transaction");
    assert_eq!(
        still.as_ref(),
        Some(&c),
        "the transaction goes on, unchanged"
    );
    ok(tx.commit().await, "commit");
    with_tx!(store, t, async |tx| {
        assert_eq!(ok(tx.get_company(c.id).await, "get").as_ref(), Some(&c));
        let kept = ok(tx.get_contact(contact.id).await, "get").expect("kept");
        assert_eq!(kept, contact, "its contact is untouched");
    })
    .await;
    let versions = history_of(store, t, HistoryEntity::Company(c.id)).await;
    assert_eq!(versions.len(), 1, "nothing was recorded");
}

/// Tasks linked to the loser while a merge runs: each link either comes
/// first (and moves to the survivor) or finds the loser gone; none is left
/// linked to a deleted company, and the merge never fails on them.
pub async fn links_racing_a_company_merge_move_with_it_or_find_the_loser_gone(store: &DynStore) {
    let t = TenantId::new();
    let survivor = create_company(store, t, named("Keeper")).await;
    let loser = create_company(store, t, named("Goner")).await;
    let linked = || NewTask {
        company_id: Some(loser.id),
        ..NewTask::new(TaskTitle::parse("Follow up").expect("a title"))
    };
    let merging = merge_companies(store, t, survivor.id, loser.id);
    let linking = join_all((0..10).map(|_| async {
        let mut tx = begin(store, t).await;
        let r = tx.create_task(linked()).await;
        ok(tx.commit().await, "commit a link");
        r
    }));
    let (merged, links) = futures_util::join!(merging, linking);
    assert_eq!(merged.id, survivor.id);
    let mut made = Vec::new();
    for r in links {
        match r {
            Ok(task) => made.push(task.id),
            Err(e) => {
                expect_not_found::<()>(Err(e), Entity::Company, loser.id, "a link after the merge")
            }
        }
    }
    with_tx!(store, t, async |tx| {
        for id in made {
            let task = ok(tx.get_task(id).await, "get task").expect("the task is kept");
            assert_eq!(
                task.company_id,
                Some(survivor.id),
                "a task linked first moves to the survivor"
            );
        }
        assert_eq!(ok(tx.get_company(loser.id).await, "get"), None);
    })
    .await;
}

/// A contact merge keeps the survivor's company and owner under every
/// policy, also `Incoming` (which takes the loser's other values); a
/// survivor without them takes the loser's.
pub async fn a_contact_merge_keeps_the_survivors_company_and_owner_unless_it_has_none(
    store: &DynStore,
) {
    let t = TenantId::new();
    let (a, b) = (
        create_company(store, t, named("Company A")).await,
        create_company(store, t, named("Company B")).await,
    );
    for policy in [
        ConflictPolicy::Incoming,
        ConflictPolicy::NonEmptyIncoming,
        ConflictPolicy::Existing,
    ] {
        let tag = format!("{policy:?}").to_lowercase();
        let with = |address: &str, company: Option<CompanyId>, who: Option<&str>| NewContact {
            company_id: company,
            owner: who.map(owner),
            ..new_contact(address, "Merge", "Me")
        };
        let kept = create(
            store,
            t,
            with(&format!("kept-{tag}@x.example"), Some(a.id), Some("user-a")),
        )
        .await;
        let gone = create(
            store,
            t,
            with(&format!("gone-{tag}@x.example"), Some(b.id), Some("user-b")),
        )
        .await;
        let merged = ok(
            store
                .scope(t, &super::support::ctx())
                .merge_contacts(kept.id, gone.id, policy)
                .await,
            "merge",
        );
        assert_eq!(
            merged.company_id,
            Some(a.id),
            "{policy:?}: its company stays"
        );
        assert_eq!(
            merged.owner,
            Some(owner("user-a")),
            "{policy:?}: its owner stays"
        );

        let bare = create(store, t, with(&format!("bare-{tag}@x.example"), None, None)).await;
        let giver = create(
            store,
            t,
            with(
                &format!("giver-{tag}@x.example"),
                Some(b.id),
                Some("user-b"),
            ),
        )
        .await;
        let filled = ok(
            store
                .scope(t, &super::support::ctx())
                .merge_contacts(bare.id, giver.id, policy)
                .await,
            "merge",
        );
        assert_eq!(
            filled.company_id,
            Some(b.id),
            "{policy:?}: a survivor without a company takes the loser's"
        );
        assert_eq!(filled.owner, Some(owner("user-b")), "{policy:?}: and owner");
    }
}

/// A contact merge gives the survivor every tag the loser carried (each
/// once, as a recorded attachment) and leaves the loser's taggings gone
/// with it; the survivor's own tags stay.
pub async fn a_contact_merge_gives_the_survivor_the_losers_tags(store: &DynStore) {
    let t = TenantId::new();
    let survivor = create(store, t, new_contact("keep@tags.example", "Keep", "Tags")).await;
    let loser = create(store, t, new_contact("drop@tags.example", "Drop", "Tags")).await;
    let other = create(store, t, new_contact("other@tags.example", "Other", "One")).await;
    let (mine, theirs, shared) = (
        create_tag(store, t, "Mine").await,
        create_tag(store, t, "Theirs").await,
        create_tag(store, t, "Shared").await,
    );
    attach(store, t, &mine, RecordRef::Contact(survivor.id)).await;
    attach(store, t, &shared, RecordRef::Contact(survivor.id)).await;
    attach(store, t, &theirs, RecordRef::Contact(loser.id)).await;
    attach(store, t, &shared, RecordRef::Contact(loser.id)).await;
    attach(store, t, &theirs, RecordRef::Contact(other.id)).await;
    ok(
        store
            .scope(t, &super::support::ctx())
            .merge_contacts(survivor.id, loser.id, ConflictPolicy::NonEmptyIncoming)
            .await,
        "merge",
    );
    assert_eq!(
        tag_names(store, t, RecordRef::Contact(survivor.id)).await,
        vec!["Mine", "Shared", "Theirs"],
        "the survivor carries its tags and the loser's, each once"
    );
    assert_eq!(
        tag_names(store, t, RecordRef::Contact(other.id)).await,
        vec!["Theirs"],
        "another contact's tags are untouched"
    );
    let carrying = with_tx!(store, t, async |tx| ok(
        tx.search_contacts(&ContactQuery {
            tags: crate::store::TagFilter::new().all_of([theirs.id]),
            ..ContactQuery::default()
        })
        .await,
        "search by tag"
    ))
    .await;
    let mut ids: Vec<ContactId> = carrying.items.iter().map(|c| c.id).collect();
    ids.sort();
    let mut want = vec![survivor.id, other.id];
    want.sort();
    assert_eq!(
        ids, want,
        "the tag filter finds the survivor, not the loser"
    );
    // The survivor's new tagging is recorded with the merge's reason.
    let reason = merge_reason(survivor.id, loser.id);
    let recorded = with_tx!(store, t, async |tx| ok(
        tx.changes_between(
            survivor.created_at,
            survivor.created_at + chrono::Duration::days(1),
            &PageRequest::first(MAX_PAGE_SIZE)
        )
        .await,
        "changes"
    ))
    .await;
    let attached = recorded.items.iter().any(|v| {
        matches!(v.entity, HistoryEntity::Tagging(_))
            && v.operation == Operation::Created
            && v.reason.as_deref() == Some(reason.as_str())
            && v.values.get("contact_id") == Some(&json!(survivor.id.to_string()))
            && v.values.get("tag_id") == Some(&json!(theirs.id.to_string()))
    });
    assert!(
        attached,
        "the attachment to the survivor is recorded: {recorded:?}"
    );
}

/// The live top accounts rank companies by their best three active
/// contacts' live states together, then the best one, then company id
/// (descending); a fourth contact, an inactive one and a contact without a
/// company count for nothing; a company without a scored contact is not
/// listed. A logged meeting raises its contact's company at once, and a
/// contact moved to another company moves its weight with it.
pub async fn top_accounts_rank_companies_by_their_best_contacts_and_follow_every_change(
    store: &DynStore,
) {
    use crate::domain::LiveRankedAccount;
    let t = TenantId::new();
    let model = ScoringModel::default();
    let mut companies = Vec::new();
    for name in ["Alpha", "Beta", "Gamma", "Delta"] {
        companies.push(create_company(store, t, named(name)).await);
    }
    let [alpha, beta, gamma, delta] = [0, 1, 2, 3].map(|i| companies[i].id);
    let person = |i: usize, company: Option<CompanyId>| NewContact {
        company_id: company,
        ..new_contact(&format!("p{i}@accounts.example"), "Account", "Person")
    };
    // Alpha: one contact at 10; Beta: four at 9, 9, 9 and 8 (three count);
    // Gamma: one at 10 (ties with Alpha on both keys) and an inactive one
    // at 50; Delta: a contact with no live state; one without a company.
    let plan: [(Option<CompanyId>, Option<f64>, bool); 9] = [
        (Some(alpha), Some(10.0), true),
        (Some(beta), Some(9.0), true),
        (Some(beta), Some(9.0), true),
        (Some(beta), Some(9.0), true),
        (Some(beta), Some(8.0), true),
        (Some(gamma), Some(10.0), true),
        (Some(gamma), Some(50.0), false),
        (Some(delta), None, true),
        (None, Some(99.0), true),
    ];
    let mut contacts = Vec::new();
    for (i, (company, _, _)) in plan.iter().enumerate() {
        contacts.push(create(store, t, person(i, *company)).await);
    }
    with_tx!(store, t, async |tx| {
        let states: Vec<LiveState> = plan
            .iter()
            .zip(&contacts)
            .map(|((_, log, _), c)| LiveState::new(c.id, *log))
            .collect();
        ok(tx.write_live_score_logs(&states).await, "write states");
        for ((_, _, active), c) in plan.iter().zip(&contacts) {
            if !active {
                ok(tx.deactivate_contact(c.id).await, "deactivate");
            }
        }
    })
    .await;
    let ranked = |accounts: &[LiveRankedAccount]| -> Vec<CompanyId> {
        accounts.iter().map(|a| a.company.id).collect()
    };
    let (first, second) = if alpha > gamma {
        (alpha, gamma)
    } else {
        (gamma, alpha)
    };
    let mut tx = begin(store, t).await;
    let top = ok(tx.live_top_accounts(10).await, "top accounts");
    assert_eq!(
        ranked(&top),
        [beta, first, second],
        "three contacts together first, then the tie by company id"
    );
    let mut beta_contacts: Vec<ContactId> = contacts[1..4].iter().map(|c| c.id).collect();
    beta_contacts.sort_by(|a, b| b.cmp(a));
    assert_eq!(
        top[0].best_contacts,
        beta_contacts
            .iter()
            .map(|id| (*id, 9.0))
            .collect::<Vec<_>>(),
        "the best three, ties by contact id descending; the fourth is left out"
    );
    let expected_top = 9.0 + 3.0_f64.ln();
    assert!(
        (top[0].top_log() - expected_top).abs() < 1e-12,
        "{} vs {expected_top}",
        top[0].top_log()
    );
    assert_eq!(
        top[1].best_contacts.len(),
        1,
        "an inactive contact counts for nothing"
    );
    assert_eq!(
        ranked(&ok(tx.live_top_accounts(1).await, "top 1")),
        [beta],
        "the limit"
    );
    expect_validation(tx.live_top_accounts(0).await, "limit", "a limit of 0");
    expect_validation(
        tx.live_top_accounts(1001).await,
        "limit",
        "a limit over 1000",
    );

    // A meeting now has a state far above these (each half-life since the
    // log epoch, 2020, adds ln 2): Alpha leads at once, in the same
    // transaction.
    let now = truncate_to_micros(chrono::Utc::now());
    ok(
        tx.log_activity(NewActivity::new(contacts[0].id, ActivityKind::Meeting).occurred_at(now))
            .await,
        "log a meeting",
    );
    let after = ok(tx.live_top_accounts(10).await, "top accounts");
    assert_eq!(
        ranked(&after)[0],
        alpha,
        "a meeting raises its account at once"
    );
    // The contact moves to Delta: its weight goes with it.
    let moved = ok(
        tx.update_contact(
            contacts[0].id,
            contacts[0].version,
            ContactPatch {
                company_id: Some(Some(delta)),
                ..ContactPatch::default()
            },
        )
        .await,
        "move the contact",
    );
    assert_eq!(moved.company_id, Some(delta));
    let moved_top = ok(tx.live_top_accounts(10).await, "top accounts");
    assert_eq!(
        ranked(&moved_top),
        [delta, beta, gamma],
        "Alpha has no scored contact left"
    );
    let shown = ok(
        crate::scoring::live_top_accounts(&mut *tx, &model, 10, now).await,
        "top accounts with scores",
    );
    assert_eq!(shown[0].company.id, delta);
    assert_eq!(shown[0].best_contacts[0].0, contacts[0].id);
    assert_eq!(shown[0].best_score, shown[0].best_contacts[0].1);
    let beta_scores = &shown[1].best_contacts;
    assert_eq!(
        u32::from(shown[1].top_score_sum),
        beta_scores
            .iter()
            .map(|(_, s)| u32::from(s.get()))
            .sum::<u32>(),
        "the sum of the best contacts' scores"
    );
    ok(tx.commit().await, "commit");
    let committed = with_tx!(store, t, async |tx| ok(
        tx.live_top_accounts(10).await,
        "top accounts"
    ))
    .await;
    assert_eq!(
        ranked(&committed),
        [delta, beta, gamma],
        "and after the commit"
    );
}

/// Every deal matching `q`, paging through `limit` at a time: the pages
/// in order, each item once.
async fn all_deals(store: &DynStore, t: TenantId, q: DealQuery, limit: u32) -> Vec<DealId> {
    let mut out = Vec::new();
    let mut page = PageRequest::first(limit);
    loop {
        let got = with_tx!(store, t, async |tx| ok(
            tx.search_deals(&q.clone().with_page(page.clone())).await,
            "search deals"
        ))
        .await;
        assert!(got.items.len() <= limit as usize);
        out.extend(got.items.iter().map(|d| d.id));
        match got.next_cursor {
            Some(c) => page = PageRequest::after(limit, c),
            None => return out,
        }
    }
}

/// The deal search filters by owner, company, contact, pipeline, stage and
/// tags (combined with AND), lists newest first and pages through every
/// match once; a cursor of another query, an unknown pipeline, a stage not
/// in the pipeline and too many tags are refused naming the field.
pub async fn deal_search_filters_by_owner_company_contact_stage_and_tags(store: &DynStore) {
    let t = TenantId::new();
    let acme = create_company(store, t, named("Acme")).await;
    let a = create(store, t, new_contact("a@deals.example", "A", "Buyer")).await;
    let b = create(store, t, new_contact("b@deals.example", "B", "Buyer")).await;
    let hot = create_tag(store, t, "Hot").await;
    let enterprise = PipelineKey::parse("enterprise").expect("a pipeline key");
    // (contact, owner, company, enterprise pipeline, tagged)
    let plan = [
        (a.id, Some("ann"), Some(acme.id), false, true),
        (a.id, Some("ann"), None, true, false),
        (b.id, Some("bob"), Some(acme.id), true, true),
        (b.id, None, Some(acme.id), false, false),
        (a.id, Some("ann"), Some(acme.id), false, false),
        (b.id, Some("ann"), None, false, true),
    ];
    let mut deals = Vec::new();
    for (i, (contact, who, company, ent, tagged)) in plan.iter().enumerate() {
        let mut new = NewDeal {
            owner: who.map(owner),
            company_id: *company,
            ..new_deal(*contact, &format!("Deal {i}"), "100", "EUR")
        };
        if *ent {
            new.pipeline = enterprise.clone();
        }
        let d = deal(store, t, new).await;
        if *tagged {
            attach(store, t, &hot, RecordRef::Deal(d.id)).await;
        }
        deals.push(d);
        super::support::tick().await;
    }
    // One enterprise deal moves on to `proposal`, a stage key the default
    // pipeline has too.
    let proposal = StageKey::parse("proposal").expect("a stage key");
    deals[2] = with_tx!(store, t, async |tx| ok(
        tx.move_deal(deals[2].id, deals[2].version, &proposal, None)
            .await,
        "move a deal"
    ))
    .await;
    let newest_first = |pick: &dyn Fn(usize) -> bool| -> Vec<DealId> {
        (0..deals.len())
            .rev()
            .filter(|i| pick(*i))
            .map(|i| deals[i].id)
            .collect()
    };
    let cases: Vec<(&str, DealQuery, Vec<DealId>)> = vec![
        ("all", DealQuery::new(), newest_first(&|_| true)),
        (
            "owner",
            DealQuery::new().with_owner(owner("ann")),
            newest_first(&|i| plan[i].1 == Some("ann")),
        ),
        (
            "company",
            DealQuery::new().with_company(acme.id),
            newest_first(&|i| plan[i].2 == Some(acme.id)),
        ),
        (
            "owner and company",
            DealQuery::new()
                .with_owner(owner("ann"))
                .with_company(acme.id),
            newest_first(&|i| plan[i].1 == Some("ann") && plan[i].2 == Some(acme.id)),
        ),
        (
            "contact",
            DealQuery::new().with_contact(b.id),
            newest_first(&|i| plan[i].0 == b.id),
        ),
        (
            "pipeline",
            DealQuery::new().with_pipeline(enterprise.clone()),
            newest_first(&|i| plan[i].3),
        ),
        (
            "tags",
            DealQuery::new().with_tags(crate::store::TagFilter::new().any_of([hot.id])),
            newest_first(&|i| plan[i].4),
        ),
        (
            "no tags",
            DealQuery::new().with_tags(crate::store::TagFilter::new().none_of([hot.id])),
            newest_first(&|i| !plan[i].4),
        ),
        (
            "first stage of the enterprise pipeline",
            DealQuery::new()
                .with_pipeline(enterprise.clone())
                .with_stage(deals[1].stage.clone()),
            vec![deals[1].id],
        ),
        (
            "a stage key of both pipelines, with no pipeline",
            DealQuery::new().with_stage(proposal.clone()),
            vec![deals[2].id],
        ),
        (
            "a stage key of the default pipeline",
            DealQuery::new().with_stage(deals[0].stage.clone()),
            newest_first(&|i| !plan[i].3),
        ),
        (
            "all of the tags, and an owner",
            DealQuery::new()
                .with_owner(owner("ann"))
                .with_tags(crate::store::TagFilter::new().all_of([hot.id])),
            newest_first(&|i| plan[i].4 && plan[i].1 == Some("ann")),
        ),
    ];
    for (what, q, want) in cases {
        for limit in [1, 2, 50] {
            assert_eq!(
                all_deals(store, t, q.clone(), limit).await,
                want,
                "{what}, {limit} a page"
            );
        }
    }
    let mut tx = begin(store, t).await;
    let first = ok(
        tx.search_deals(&DealQuery::new().with_page(PageRequest::first(1)))
            .await,
        "first page",
    );
    let cursor = first.next_cursor.expect("more than one deal");
    expect_validation(
        tx.search_deals(
            &DealQuery::new()
                .with_owner(owner("ann"))
                .with_page(PageRequest::after(1, cursor)),
        )
        .await,
        "cursor",
        "a cursor of another query",
    );
    expect_validation(
        tx.search_deals(
            &DealQuery::new().with_pipeline(PipelineKey::parse("nope").expect("a key")),
        )
        .await,
        "pipeline",
        "an unknown pipeline",
    );
    expect_validation(
        tx.search_deals(
            &DealQuery::new()
                .with_pipeline(enterprise.clone())
                .with_stage(StageKey::parse("nowhere").expect("a key")),
        )
        .await,
        "stage",
        "a stage not in the pipeline",
    );
    expect_validation(
        tx.search_deals(&DealQuery::new().with_stage(StageKey::parse("nowhere").expect("a key")))
            .await,
        "stage",
        "a stage in no pipeline",
    );
    let many: Vec<crate::domain::TagId> = (0..=crate::store::MAX_FILTER_TAGS)
        .map(|_| crate::domain::TagId::new())
        .collect();
    expect_validation(
        tx.search_deals(&DealQuery::new().with_tags(crate::store::TagFilter::new().all_of(many)))
            .await,
        "tags.all_of",
        "too many tags",
    );
    ok(tx.rollback().await, "rollback");
    let other = TenantId::new();
    assert!(
        all_deals(store, other, DealQuery::new(), 50)
            .await
            .is_empty(),
        "another tenant sees none"
    );
}

/// The live top accounts of a tenant with more scored contacts than one
/// read of a store may take (1,200 contacts of 120 companies, states spread
/// out, some of the highest inactive or without a company) are the top
/// accounts computed from every state, for every limit.
pub async fn top_accounts_of_many_contacts_are_the_ones_every_state_gives(store: &DynStore) {
    use crate::domain::LiveRankedAccount;
    let t = TenantId::new();
    let mut companies = Vec::new();
    for i in 0..120 {
        companies.push(create_company(store, t, named(&format!("Account {i}"))).await);
    }
    let rows: Vec<NewContact> = (0..1300)
        .map(|k| NewContact {
            company_id: (k < 1250).then(|| companies[k % 120].id),
            ..new_contact(&format!("m{k}@many.example"), "Many", "Contacts")
        })
        .collect();
    let made = with_tx!(store, t, async |tx| ok(
        tx.upsert_contacts(&rows, ConflictPolicy::Incoming).await,
        "create contacts"
    ))
    .await;
    let ids: Vec<ContactId> = made
        .iter()
        .map(|o| match o {
            UpsertOutcome::Inserted(c) => *c,
            other => panic!("a new contact: {other:?}"),
        })
        .collect();
    // The 50 contacts without a company and every 97th contact (inactive)
    // have the highest states. Companies 2p and 2p + 1 share a base,
    // spread over 0–100.8: the even one has one contact just above it,
    // the odd one its best at the base and nine two below, so that its
    // three best together (base + 0.24) beat the even one (base + 0.2),
    // which a store ranking companies by the contacts it read first would
    // get wrong.
    let state = |k: usize| {
        let (i, j) = (k % 120, k / 120);
        let base = ((i / 2 * 7919) % 1009) as f64 / 10.0;
        if k >= 1250 || k.is_multiple_of(97) {
            500.0 + k as f64
        } else if i.is_multiple_of(2) {
            if j == 0 {
                base + 0.2
            } else {
                base - 40.0 - j as f64
            }
        } else if j == 0 {
            base
        } else {
            base - 2.0 - 0.01 * j as f64
        }
    };
    with_tx!(store, t, async |tx| {
        let states: Vec<LiveState> = ids
            .iter()
            .enumerate()
            .map(|(k, id)| LiveState::new(*id, Some(state(k))))
            .collect();
        ok(tx.write_live_score_logs(&states).await, "write states");
        for (k, id) in ids.iter().enumerate() {
            if k < 1250 && k.is_multiple_of(97) {
                ok(tx.deactivate_contact(*id).await, "deactivate");
            }
        }
    })
    .await;
    // Every account from every state.
    let mut expected: Vec<LiveRankedAccount> = companies
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let mut best: Vec<(ContactId, f64)> = (0..1250)
                .filter(|k| k % 120 == i && !k.is_multiple_of(97))
                .map(|k| (ids[k], state(k)))
                .collect();
            best.sort_by(LiveRankedAccount::contact_order);
            best.truncate(3);
            (!best.is_empty()).then(|| LiveRankedAccount {
                company: c.clone(),
                best_contacts: best,
            })
        })
        .collect();
    expected.sort_by(LiveRankedAccount::rank);
    for limit in [
        1u32, 2, 3, 5, 8, 13, 20, 25, 30, 35, 40, 45, 50, 60, 80, 120, 1000,
    ] {
        let got = with_tx!(store, t, async |tx| ok(
            tx.live_top_accounts(limit).await,
            "top accounts"
        ))
        .await;
        let want: Vec<LiveRankedAccount> = expected.iter().take(limit as usize).cloned().collect();
        let summary = |a: &[LiveRankedAccount]| -> Vec<(CompanyId, Vec<(ContactId, u64)>)> {
            a.iter()
                .map(|a| {
                    (
                        a.company.id,
                        a.best_contacts
                            .iter()
                            .map(|(c, l)| (*c, l.to_bits()))
                            .collect(),
                    )
                })
                .collect()
        };
        assert_eq!(summary(&got), summary(&want), "limit {limit}");
    }
}

/// Top accounts with states at the edges: a company whose two contacts'
/// states are ±1e308 (their difference overflows) is ranked, not an
/// error; near-ties decided by the last bit of the sum are cut where they
/// rank (the top 1 is the first of the top 2), as the states' ranking
/// computed from them says.
pub async fn top_accounts_with_extreme_and_near_tied_states_cut_where_they_rank(store: &DynStore) {
    use crate::domain::LiveRankedAccount;
    let t = TenantId::new();
    let [a, b, huge] = [
        create_company(store, t, named("Near tie A")).await,
        create_company(store, t, named("Near tie B")).await,
        create_company(store, t, named("Extremes")).await,
    ];
    // A: 0 and two terms of 1.5·2⁻⁵⁴ (each less than half an ulp of 1);
    // B: one contact at 1e-16.
    let x = (1.5f64 * 2f64.powi(-54)).ln();
    let plan: Vec<(CompanyId, f64)> = vec![
        (a.id, 0.0),
        (a.id, x),
        (a.id, x),
        (b.id, 1e-16),
        (huge.id, 1e308),
        (huge.id, -1e308),
    ];
    let mut states = Vec::new();
    let mut expected: Vec<LiveRankedAccount> = Vec::new();
    for (i, (company, log)) in plan.iter().enumerate() {
        let c = create(
            store,
            t,
            NewContact {
                company_id: Some(*company),
                ..new_contact(&format!("edge{i}@edges.example"), "Edge", "Case")
            },
        )
        .await;
        states.push(LiveState::new(c.id, Some(*log)));
        let company = [&a, &b, &huge]
            .into_iter()
            .find(|x| x.id == *company)
            .expect("a company of the plan");
        match expected.iter_mut().find(|e| e.company.id == company.id) {
            Some(e) => e.best_contacts.push((c.id, *log)),
            None => expected.push(LiveRankedAccount {
                company: company.clone(),
                best_contacts: vec![(c.id, *log)],
            }),
        }
    }
    for e in &mut expected {
        e.best_contacts.sort_by(LiveRankedAccount::contact_order);
    }
    expected.sort_by(LiveRankedAccount::rank);
    let ranked = |v: &[LiveRankedAccount]| v.iter().map(|a| a.company.id).collect::<Vec<_>>();
    let mut tx = begin(store, t).await;
    ok(tx.write_live_score_logs(&states).await, "write states");
    let all = ok(tx.live_top_accounts(10).await, "top accounts");
    assert_eq!(ranked(&all), ranked(&expected), "the ranking of the states");
    assert_eq!(all[0].company.id, huge.id, "the extreme company first");
    for limit in 1..=3u32 {
        let cut = ok(tx.live_top_accounts(limit).await, "top accounts");
        assert_eq!(
            ranked(&cut),
            ranked(&all)[..limit as usize],
            "the top {limit} begins the full list"
        );
    }
    ok(tx.rollback().await, "rollback");
}

//! The conformance suite's company points: domains unique per tenant in
//! every spelling (also under a race), versioned updates, deletes that
//! unlink rather than delete, the search's filters, orders and paging,
//! tenancy and history.

use futures_util::future::join_all;
use serde_json::json;

use super::prelude::*;
use super::support::{begin, expect_conflict, expect_validation, metadata, money, ok, tick};
use crate::{
    domain::{
        Address, AddressPart, Company, CompanyDomain, CompanyId, CompanyPatch, Industry,
        NewCompany, NewTag, NewTask, OwnerId, RecordRef, TagId, TagName, TaskTitle,
    },
    history::company_values,
    store::{CompanyQuery, CompanySort, TagFilter},
};

fn domain(s: &str) -> CompanyDomain {
    CompanyDomain::parse(s).expect("a valid domain")
}

fn owner(s: &str) -> OwnerId {
    OwnerId::parse(s).expect("a valid owner id")
}

fn named(name: &str) -> NewCompany {
    NewCompany::new(CompanyName::parse(name).expect("a valid company name"))
}

fn with_domain(name: &str, d: &str) -> NewCompany {
    NewCompany {
        domain: Some(domain(d)),
        ..named(name)
    }
}

/// A company with every field filled in.
fn full_company(d: &str) -> NewCompany {
    let part = |field: &str, v: &str| Some(AddressPart::parse_field(field, v).expect("a part"));
    NewCompany {
        domain: Some(domain(d)),
        industry: Some(Industry::parse("Industrial Software").expect("an industry")),
        employee_count: Some(250),
        annual_revenue: Some(money("1250000.50", "EUR")),
        address: Address {
            street: part("street", "1 Rue de l'Été"),
            city: part("city", "Zürich"),
            region: part("region", "ZH"),
            postal_code: part("postal_code", "8001"),
            country: part("country", "Switzerland"),
        },
        metadata: metadata(json!({"tier": "gold", "seats": 42, "note": "Zoë ☕"})),
        owner: Some(owner("user-17")),
        ..named("Acme Industries ⚙")
    }
}

async fn create_company(store: &DynStore, t: TenantId, new: NewCompany) -> Company {
    with_tx!(store, t, async |tx| ok(
        tx.create_company(new).await,
        "create a company"
    ))
    .await
}

async fn get_company(store: &DynStore, t: TenantId, id: CompanyId) -> Option<Company> {
    with_tx!(store, t, async |tx| ok(
        tx.get_company(id).await,
        "get a company"
    ))
    .await
}

async fn search(store: &DynStore, t: TenantId, q: &CompanyQuery) -> Result<Page<Company>> {
    with_tx!(store, t, async |tx| tx.search_companies(q).await).await
}

/// The ids of every company matching `q`, sorted (one page holds them all).
async fn matching(store: &DynStore, t: TenantId, q: CompanyQuery) -> Vec<CompanyId> {
    let q = q.with_page(PageRequest::first(MAX_PAGE_SIZE));
    let page = ok(search(store, t, &q).await, "search companies");
    assert!(
        page.next_cursor.is_none(),
        "a page that holds every match has no next cursor"
    );
    let mut ids: Vec<CompanyId> = page.items.iter().map(|c| c.id).collect();
    ids.sort();
    ids
}

fn sorted(cs: &[&Company]) -> Vec<CompanyId> {
    let mut v: Vec<CompanyId> = cs.iter().map(|c| c.id).collect();
    v.sort();
    v
}

#[track_caller]
fn expect_duplicate_domain<T: std::fmt::Debug>(
    result: Result<T>,
    value: &str,
    existing: CompanyId,
    what: &str,
) {
    match result {
        Err(Error::Duplicate {
            entity: Entity::Company,
            field: "domain",
            value: v,
            existing_id,
        }) if v == value && existing_id == existing.to_string() => {}
        other => panic!(
            "{what}: expected Duplicate on the domain {value} naming {existing}, got {other:?}"
        ),
    }
}

/// A company created with every field is read back identically by id and
/// by its domain in any spelling; it starts at version 1.
pub async fn create_then_get_returns_the_same_company_by_id_and_by_domain(store: &DynStore) {
    let t = TenantId::new();
    let created = create_company(store, t, full_company("HTTPS://WWW.Acme.COM/x")).await;
    assert_eq!(
        created.version,
        Version::FIRST,
        "a new company is at version 1"
    );
    assert_eq!(
        created.domain.as_ref().map(|d| d.as_str()),
        Some("acme.com"),
        "the domain is kept normalised"
    );
    assert_eq!(created.created_at, created.updated_at);
    let got = get_company(store, t, created.id).await;
    assert_eq!(
        got.as_ref(),
        Some(&created),
        "get returns what create returned"
    );
    for spelling in ["acme.com", "http://www.ACME.com.", "Acme.Com"] {
        let by_domain = with_tx!(store, t, async |tx| ok(
            tx.get_company_by_domain(&domain(spelling)).await,
            "get by domain"
        ))
        .await;
        assert_eq!(
            by_domain.as_ref(),
            Some(&created),
            "{spelling} finds the company"
        );
    }
    let missing = with_tx!(store, t, async |tx| {
        let by_id = ok(tx.get_company(CompanyId::new()).await, "get");
        let by_domain = ok(
            tx.get_company_by_domain(&domain("other.example")).await,
            "get by domain",
        );
        (by_id, by_domain)
    })
    .await;
    assert_eq!(
        missing,
        (None, None),
        "nothing is found for what does not exist"
    );
    let r = with_tx!(store, t, async |tx| tx
        .create_company(NewCompany {
            employee_count: Some(crate::domain::MAX_EMPLOYEES + 1),
            ..named("Too Big")
        })
        .await)
    .await;
    expect_validation(r, "employee_count", "too many employees");
    let r = with_tx!(store, t, async |tx| tx
        .update_company(
            created.id,
            created.version,
            CompanyPatch {
                employee_count: Some(Some(crate::domain::MAX_EMPLOYEES + 1)),
                ..CompanyPatch::default()
            }
        )
        .await)
    .await;
    expect_validation(r, "employee_count", "too many employees");
    assert_eq!(
        get_company(store, t, created.id).await.as_ref(),
        Some(&created),
        "refused input changes nothing"
    );
    let plain = create_company(store, t, named("No Domain Ltd")).await;
    let other = create_company(store, t, named("No Domain Ltd")).await;
    assert_ne!(
        plain.id, other.id,
        "companies without a domain never collide"
    );
}

/// A second company with the same domain in another spelling is refused
/// naming the holder; another tenant may hold the domain.
pub async fn creating_a_company_with_a_taken_domain_in_another_spelling_is_refused(
    store: &DynStore,
) {
    let t = TenantId::new();
    let first = create_company(store, t, with_domain("Acme", "acme.com")).await;
    let r = with_tx!(store, t, async |tx| tx
        .create_company(with_domain("Acme again", "https://WWW.ACME.com:443/about"))
        .await)
    .await;
    expect_duplicate_domain(r, "acme.com", first.id, "a duplicate domain");
    assert_eq!(
        matching(store, t, CompanyQuery::new()).await,
        vec![first.id],
        "the refused company was not created"
    );
    let elsewhere = create_company(store, TenantId::new(), with_domain("Acme", "acme.com")).await;
    assert_ne!(elsewhere.id, first.id, "another tenant may hold the domain");
}

/// Twenty transactions racing to create a company with one domain, each
/// spelling it differently: exactly one wins, the others are told its id.
pub async fn concurrent_creates_of_one_company_domain_let_exactly_one_win(store: &DynStore) {
    let t = TenantId::new();
    let spellings: Vec<String> = (0..20)
        .map(|i| match i % 4 {
            0 => format!("https://www.Race.example/{i}"),
            1 => "RACE.EXAMPLE".to_string(),
            2 => format!("race.example/path{i}"),
            _ => "http://WWW.race.Example.:80/".to_string(),
        })
        .collect();
    let results = join_all(spellings.iter().enumerate().map(|(i, s)| async move {
        let mut tx = begin(store, t).await;
        let r = tx
            .create_company(with_domain(&format!("Racer {i}"), s))
            .await;
        ok(tx.commit().await, "commit a racer");
        r
    }))
    .await;
    let winners: Vec<&Company> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "exactly one racer creates the company");
    let winner = winners[0].id;
    for r in results {
        if r.is_err() {
            expect_duplicate_domain(r, "race.example", winner, "a losing racer");
        }
    }
    assert_eq!(
        matching(store, t, CompanyQuery::new()).await,
        vec![winner],
        "exactly one company exists afterwards"
    );
}

/// Twenty transactions racing for one domain, half creating a company
/// with it and half moving an existing company to it: exactly one wins,
/// the others are told the winner's id, and each loser's transaction goes
/// on (it renames its company and commits).
pub async fn creates_and_updates_racing_for_one_domain_let_exactly_one_win(store: &DynStore) {
    let t = TenantId::new();
    let mut movers = Vec::new();
    for i in 0..10 {
        movers.push(create_company(store, t, named(&format!("Mover {i}"))).await);
    }
    let results = join_all((0..20).map(|i| {
        let mover = movers[i / 2].clone();
        async move {
            let mut tx = begin(store, t).await;
            let r = if i % 2 == 0 {
                tx.create_company(with_domain(
                    &format!("Creator {i}"),
                    "WWW.Contested.example",
                ))
                .await
            } else {
                let patch = CompanyPatch {
                    domain: Some(Some(domain("https://contested.example/"))),
                    ..CompanyPatch::default()
                };
                tx.update_company(mover.id, mover.version, patch).await
            };
            if r.is_err() && i % 2 == 1 {
                let rename = CompanyPatch {
                    name: Some(CompanyName::parse("Mover that lost").expect("a name")),
                    ..CompanyPatch::default()
                };
                ok(
                    tx.update_company(mover.id, mover.version, rename).await,
                    "the loser's transaction goes on",
                );
            }
            if r.is_ok() {
                // The winner holds the domain uncommitted a while, so that
                // the others meet it in flight.
                for _ in 0..5 {
                    tick().await;
                }
            }
            ok(tx.commit().await, "commit a racer");
            r
        }
    }))
    .await;
    let winners: Vec<&Company> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "exactly one racer gets the domain");
    let winner = winners[0].id;
    for r in results {
        if r.is_err() {
            expect_duplicate_domain(r, "contested.example", winner, "a losing racer");
        }
    }
    let holder = with_tx!(store, t, async |tx| ok(
        tx.get_company_by_domain(&domain("contested.example")).await,
        "get by domain"
    ))
    .await;
    assert_eq!(
        holder.map(|c| c.id),
        Some(winner),
        "the winner holds the domain"
    );
    let renamed = matching(
        store,
        t,
        CompanyQuery::new().with_name_prefix("mover that lost"),
    )
    .await;
    let losing_movers = movers.iter().filter(|m| m.id != winner).count();
    assert_eq!(
        renamed.len(),
        losing_movers,
        "every losing mover was renamed"
    );
}

/// An update at the current version bumps the version and `updated_at`; a
/// stale version is a conflict that changes nothing; a patch that changes
/// nothing keeps the version; a missing company is not found.
pub async fn update_company_checks_the_version_and_a_no_op_keeps_it(store: &DynStore) {
    let t = TenantId::new();
    let c = create_company(store, t, full_company("acme.com")).await;
    tick().await;
    let patch = CompanyPatch {
        name: Some(CompanyName::parse("Acme Group").expect("a name")),
        employee_count: Some(None),
        city: Some(None),
        owner: Some(Some(owner("user-18"))),
        ..CompanyPatch::default()
    };
    let updated = with_tx!(store, t, async |tx| ok(
        tx.update_company(c.id, c.version, patch.clone()).await,
        "update"
    ))
    .await;
    assert_eq!(
        updated.version,
        c.version.next(),
        "the version moves on by one"
    );
    assert!(updated.updated_at > c.updated_at, "updated_at moves on");
    assert_eq!(updated.created_at, c.created_at);
    assert_eq!(updated.name.as_str(), "Acme Group");
    assert_eq!(updated.employee_count, None);
    assert_eq!(updated.address.city, None);
    assert_eq!(
        updated.address.street, c.address.street,
        "absent fields stay"
    );
    assert_eq!(updated.owner, Some(owner("user-18")));
    assert_eq!(get_company(store, t, c.id).await.as_ref(), Some(&updated));

    let stale = with_tx!(store, t, async |tx| tx
        .update_company(c.id, c.version, patch.clone())
        .await)
    .await;
    expect_conflict(stale, Entity::Company, c.id, 1, 2, "a stale version");

    let same = CompanyPatch {
        name: Some(updated.name.clone()),
        domain: Some(Some(domain("WWW.acme.com"))),
        ..CompanyPatch::default()
    };
    let unchanged = with_tx!(store, t, async |tx| ok(
        tx.update_company(c.id, updated.version, same).await,
        "a no-op update"
    ))
    .await;
    assert_eq!(
        unchanged, updated,
        "a patch that changes nothing keeps the version"
    );
    assert_eq!(get_company(store, t, c.id).await.as_ref(), Some(&updated));

    let missing = CompanyId::new();
    let r = with_tx!(store, t, async |tx| tx
        .update_company(missing, Version::FIRST, patch)
        .await)
    .await;
    super::support::expect_not_found(r, Entity::Company, missing, "update a missing company");
}

/// Changing a company's domain to one another company holds is refused
/// naming the holder, changes nothing, and the transaction goes on.
pub async fn changing_a_company_domain_to_a_taken_one_is_refused_and_the_transaction_goes_on(
    store: &DynStore,
) {
    let t = TenantId::new();
    let a = create_company(store, t, with_domain("Alpha", "alpha.example")).await;
    let b = create_company(store, t, with_domain("Bravo", "bravo.example")).await;
    let renamed = with_tx!(store, t, async |tx| {
        let taken = CompanyPatch {
            domain: Some(Some(domain("https://WWW.Alpha.Example/"))),
            ..CompanyPatch::default()
        };
        let r = tx.update_company(b.id, b.version, taken).await;
        expect_duplicate_domain(r, "alpha.example", a.id, "a taken domain");
        let rename = CompanyPatch {
            name: Some(CompanyName::parse("Bravo Renamed").expect("a name")),
            domain: Some(Some(domain("bravo-new.example"))),
            ..CompanyPatch::default()
        };
        ok(
            tx.update_company(b.id, b.version, rename).await,
            "the transaction goes on after a refused domain",
        )
    })
    .await;
    assert_eq!(renamed.version, b.version.next());
    let read = get_company(store, t, b.id).await.expect("b exists");
    assert_eq!(read, renamed);
    assert_eq!(read.domain, Some(domain("bravo-new.example")));
    let freed = create_company(store, t, with_domain("Bravo II", "bravo.example")).await;
    assert_ne!(freed.id, b.id, "the old domain is free again");
    let cleared = with_tx!(store, t, async |tx| ok(
        tx.update_company(
            a.id,
            a.version,
            CompanyPatch {
                domain: Some(None),
                ..CompanyPatch::default()
            }
        )
        .await,
        "clear a domain"
    ))
    .await;
    assert_eq!(cleared.domain, None);
    let by_old = with_tx!(store, t, async |tx| ok(
        tx.get_company_by_domain(&domain("alpha.example")).await,
        "get by domain"
    ))
    .await;
    assert_eq!(by_old, None, "a cleared domain finds nothing");
}

/// Deleting a company returns true, then false; it is gone, and the
/// contacts of the tenant are kept.
pub async fn deleting_a_company_returns_true_once_and_keeps_other_records(store: &DynStore) {
    let t = TenantId::new();
    let c = create_company(store, t, with_domain("Doomed", "doomed.example")).await;
    let contact = super::support::create(
        store,
        t,
        NewContact {
            company_id: Some(c.id),
            ..super::support::new_contact("kept@doomed.example", "Kept", "Person")
        },
    )
    .await;
    assert_eq!(contact.company_id, Some(c.id), "the contact is linked");
    let first = with_tx!(store, t, async |tx| ok(
        tx.delete_company(c.id).await,
        "delete"
    ))
    .await;
    assert!(first, "the first delete deletes");
    let second = with_tx!(store, t, async |tx| ok(
        tx.delete_company(c.id).await,
        "delete again"
    ))
    .await;
    assert!(!second, "a second delete finds nothing");
    assert_eq!(get_company(store, t, c.id).await, None);
    assert_eq!(
        matching(store, t, CompanyQuery::new()).await,
        Vec::<CompanyId>::new()
    );
    let kept = super::support::get(store, t, contact.id)
        .await
        .expect("deleting a company deletes no contact");
    assert_eq!(kept.company_id, None, "the contact is unlinked");
    assert_eq!(
        kept.version,
        contact.version.next(),
        "unlinking is a change of the contact"
    );
    let reused = create_company(store, t, with_domain("Reborn", "doomed.example")).await;
    assert_ne!(reused.id, c.id, "the domain of a deleted company is free");
}

/// Deleting a company detaches its tags (each detachment recorded) and
/// unlinks its tasks (each a recorded change), deleting neither the tags
/// nor the tasks.
pub async fn deleting_a_company_detaches_its_tags_and_unlinks_its_tasks(store: &DynStore) {
    let t = TenantId::new();
    let c = create_company(store, t, with_domain("Tagged", "tagged.example")).await;
    let other = create_company(store, t, named("Other")).await;
    let mut tx = begin(store, t).await;
    let tag = tx
        .create_tag(NewTag::new(
            TagName::parse("Key account").expect("a tag name"),
        ))
        .await;
    let task = tx
        .create_task(NewTask {
            company_id: Some(c.id),
            ..NewTask::new(TaskTitle::parse("Call them").expect("a title"))
        })
        .await;
    let (tag, task) = (ok(tag, "create a tag"), ok(task, "create a task"));
    for record in [RecordRef::Company(c.id), RecordRef::Company(other.id)] {
        assert!(ok(tx.attach_tag(tag.id, record).await, "attach"));
    }
    ok(tx.commit().await, "commit");

    assert!(
        with_tx!(store, t, async |tx| ok(
            tx.delete_company(c.id).await,
            "delete"
        ))
        .await
    );
    with_tx!(store, t, async |tx| {
        let tags = ok(tx.tags_of(RecordRef::Company(c.id)).await, "tags of");
        assert!(tags.is_empty(), "a deleted company carries no tag");
        let kept = ok(tx.tags_of(RecordRef::Company(other.id)).await, "tags of");
        assert_eq!(kept.len(), 1, "other companies keep their tags");
        assert!(
            ok(tx.get_tag(tag.id).await, "get tag").is_some(),
            "the tag itself is kept"
        );
        let unlinked = ok(tx.get_task(task.id).await, "get task").expect("the task is kept");
        assert_eq!(unlinked.company_id, None, "the task is unlinked");
        assert_eq!(
            unlinked.version,
            task.version.next(),
            "unlinking is a change of the task"
        );
        let versions = ok(
            tx.entity_history(HistoryEntity::Task(task.id), &PageRequest::first(10))
                .await,
            "task history",
        );
        assert_eq!(
            versions.items.first().map(|v| v.operation),
            Some(Operation::Updated),
            "the unlinking is recorded"
        );
    })
    .await;
}

/// Tasks linked to a company while it is being deleted: each link either
/// comes first (and the delete unlinks it) or finds the company gone
/// (`NotFound`); the delete never fails on a link made meanwhile.
pub async fn links_racing_a_company_delete_come_first_or_find_it_gone(store: &DynStore) {
    let t = TenantId::new();
    let c = create_company(store, t, with_domain("Contended", "contended.example")).await;
    let title = || TaskTitle::parse("Follow up").expect("a title");
    let probe = with_tx!(store, t, async |tx| tx
        .create_task(NewTask::new(title()))
        .await)
    .await;
    ok(probe, "create a task");
    let linked = || NewTask {
        company_id: Some(c.id),
        ..NewTask::new(title())
    };
    let deleting = async {
        with_tx!(store, t, async |tx| ok(
            tx.delete_company(c.id).await,
            "delete while tasks link"
        ))
        .await
    };
    let linking = join_all((0..10).map(|_| async {
        let mut tx = begin(store, t).await;
        let r = tx.create_task(linked()).await;
        ok(tx.commit().await, "commit a link");
        r
    }));
    let (deleted, links) = futures_util::join!(deleting, linking);
    assert!(deleted, "the delete deletes");
    let mut made = Vec::new();
    for r in links {
        match r {
            Ok(task) => made.push(task.id),
            Err(e) => super::support::expect_not_found::<()>(
                Err(e),
                Entity::Company,
                c.id,
                "a link after the delete",
            ),
        }
    }
    with_tx!(store, t, async |tx| {
        for id in made {
            let task = ok(tx.get_task(id).await, "get task").expect("the task is kept");
            assert_eq!(task.company_id, None, "a task linked first is unlinked");
        }
        assert_eq!(ok(tx.get_company(c.id).await, "get"), None);
    })
    .await;
}

/// The search filters by name prefix (caseless, wildcards literal), exact
/// domain, owner and metadata containment, combined with AND; a prefix the
/// contract refuses is a validation error naming it.
pub async fn company_search_filters_by_name_prefix_domain_owner_and_metadata(store: &DynStore) {
    let t = TenantId::new();
    let a = create_company(
        store,
        t,
        NewCompany {
            owner: Some(owner("u1")),
            metadata: metadata(json!({"tier": "gold", "region": "eu"})),
            ..with_domain("Acme Inc", "acme.com")
        },
    )
    .await;
    let b = create_company(
        store,
        t,
        NewCompany {
            owner: Some(owner("u2")),
            metadata: metadata(json!({"tier": "gold"})),
            ..with_domain("ACME Labs", "acmelabs.io")
        },
    )
    .await;
    let c = create_company(
        store,
        t,
        NewCompany {
            metadata: metadata(json!({"tier": "silver"})),
            ..named("Beta 50%_off")
        },
    )
    .await;
    let d = create_company(store, t, named("Acm_e Straße")).await;
    let every = sorted(&[&a, &b, &c, &d]);
    assert_eq!(matching(store, t, CompanyQuery::new()).await, every);
    let by_prefix = [
        ("acme", sorted(&[&a, &b])),
        ("ACM", sorted(&[&a, &b, &d])),
        ("acm_", sorted(&[&d])),
        ("ACM_E STRASSE", sorted(&[&d])),
        ("beta 50%_", sorted(&[&c])),
        ("%", vec![]),
        ("_", vec![]),
        ("", every.clone()),
    ];
    for (prefix, want) in by_prefix {
        assert_eq!(
            matching(store, t, CompanyQuery::new().with_name_prefix(prefix)).await,
            want,
            "name prefix {prefix:?}"
        );
    }
    assert_eq!(
        matching(
            store,
            t,
            CompanyQuery::new().with_domain(domain("www.ACME.com"))
        )
        .await,
        vec![a.id],
        "exact domain"
    );
    assert_eq!(
        matching(store, t, CompanyQuery::new().with_domain(domain("acme.co"))).await,
        vec![],
        "a domain matches exactly, not as a prefix"
    );
    assert_eq!(
        matching(store, t, CompanyQuery::new().with_owner(owner("u2"))).await,
        vec![b.id]
    );
    assert_eq!(
        matching(store, t, CompanyQuery::new().with_owner(owner("U2"))).await,
        vec![],
        "owner ids are compared exactly"
    );
    assert_eq!(
        matching(
            store,
            t,
            CompanyQuery::new().with_metadata_contains(metadata(json!({"tier": "gold"})))
        )
        .await,
        sorted(&[&a, &b])
    );
    assert_eq!(
        matching(
            store,
            t,
            CompanyQuery::new()
                .with_metadata_contains(metadata(json!({"tier": "gold", "region": "eu"})))
        )
        .await,
        vec![a.id]
    );
    assert_eq!(
        matching(
            store,
            t,
            CompanyQuery::new()
                .with_name_prefix("acme")
                .with_owner(owner("u2"))
                .with_metadata_contains(metadata(json!({"tier": "gold"})))
        )
        .await,
        vec![b.id],
        "filters combine with AND"
    );
    let too_long = "a".repeat(crate::store::MAX_PREFIX_CHARS + 1);
    for bad in [too_long.as_str(), "ac\0me"] {
        let r = search(store, t, &CompanyQuery::new().with_name_prefix(bad)).await;
        expect_validation(r, "name_prefix", "a prefix the contract refuses");
    }
}

/// The tag filter: at least one of `any_of`, every one of `all_of`, none
/// of `none_of`.
pub async fn company_search_filters_by_tags_any_all_and_none(store: &DynStore) {
    let t = TenantId::new();
    let a = create_company(store, t, named("A")).await;
    let b = create_company(store, t, named("B")).await;
    let c = create_company(store, t, named("C")).await;
    let d = create_company(store, t, named("D")).await;
    let mut tx = begin(store, t).await;
    let mut tags: Vec<TagId> = Vec::new();
    for name in ["one", "two", "three"] {
        let r = tx
            .create_tag(NewTag::new(TagName::parse(name).expect("a tag name")))
            .await;
        tags.push(ok(r, "create a tag").id);
    }
    let (t1, t2, t3) = (tags[0], tags[1], tags[2]);
    for (company, tag) in [(a.id, t1), (a.id, t2), (b.id, t2), (d.id, t3)] {
        ok(
            tx.attach_tag(tag, RecordRef::Company(company)).await,
            "attach",
        );
    }
    ok(tx.commit().await, "commit");
    let cases = [
        (TagFilter::new().any_of([t1, t3]), sorted(&[&a, &d])),
        (TagFilter::new().all_of([t1, t2]), sorted(&[&a])),
        (TagFilter::new().all_of([t2, t1, t2]), sorted(&[&a])),
        (TagFilter::new().all_of([t2]), sorted(&[&a, &b])),
        (TagFilter::new().none_of([t2]), sorted(&[&c, &d])),
        (TagFilter::new().any_of([t2]).none_of([t1]), sorted(&[&b])),
        (
            TagFilter::new().any_of([TagId::new()]),
            Vec::<CompanyId>::new(),
        ),
        (TagFilter::new(), sorted(&[&a, &b, &c, &d])),
    ];
    for (filter, want) in cases {
        assert_eq!(
            matching(store, t, CompanyQuery::new().with_tags(filter.clone())).await,
            want,
            "tags {filter:?}"
        );
    }
}

/// The id order of `companies` under `sort`, as the contract defines it.
fn expected_order(sort: CompanySort, companies: &[Company]) -> Vec<CompanyId> {
    let mut v: Vec<(String, i64, uuid::Uuid)> = companies
        .iter()
        .map(|c| match sort {
            CompanySort::NameAsc | CompanySort::NameDesc => {
                (caseless_key(c.name.as_str()), 0, c.id.as_uuid())
            }
            _ => (
                String::new(),
                c.created_at.timestamp_micros(),
                c.id.as_uuid(),
            ),
        })
        .collect();
    v.sort();
    if sort.is_descending() {
        v.reverse();
    }
    v.into_iter()
        .map(|(_, _, id)| CompanyId::from_uuid(id))
        .collect()
}

/// Every order is total (ties broken by id in the sort's direction), and
/// paging with any limit visits every match exactly once, in order; a
/// cursor made for another query is refused.
pub async fn every_company_sort_is_a_total_order_and_paging_visits_every_match_once(
    store: &DynStore,
) {
    let t = TenantId::new();
    let names = [
        "acme", "ACME", "Acme", "Äcme", "beta", "Beta Co", "zeta", "ß Corp", "SS CORP", "Ωmega",
        "acme",
    ];
    let mut companies = Vec::new();
    for (i, name) in names.iter().enumerate() {
        if i % 3 == 0 {
            tick().await;
        }
        companies.push(create_company(store, t, named(name)).await);
    }
    for sort in [
        CompanySort::NameAsc,
        CompanySort::NameDesc,
        CompanySort::CreatedAsc,
        CompanySort::CreatedDesc,
    ] {
        let want = expected_order(sort, &companies);
        for limit in [1u32, 2, 4, 50] {
            let got: Vec<Company> = collect_pages!(limit, async |page| ok(
                search(
                    store,
                    t,
                    &CompanyQuery::new().with_sort(sort).with_page(page)
                )
                .await,
                "search a page"
            ))
            .await;
            let ids: Vec<CompanyId> = got.iter().map(|c| c.id).collect();
            assert_eq!(ids, want, "{sort:?} with pages of {limit}");
        }
    }
    let prefixed = CompanyQuery::new()
        .with_name_prefix("a")
        .with_page(PageRequest::first(1));
    let first = ok(search(store, t, &prefixed).await, "first page");
    let cursor = first
        .next_cursor
        .expect("more than one company starts with a");
    let other_prefix = CompanyQuery::new()
        .with_name_prefix("b")
        .with_page(PageRequest::after(1, cursor.clone()));
    expect_validation(
        search(store, t, &other_prefix).await,
        "cursor",
        "a cursor of another prefix",
    );
    let other_sort = CompanyQuery::new()
        .with_name_prefix("a")
        .with_sort(CompanySort::CreatedAsc)
        .with_page(PageRequest::after(1, cursor.clone()));
    expect_validation(
        search(store, t, &other_sort).await,
        "cursor",
        "a cursor of another order",
    );
    let others = [
        CompanyQuery::new().with_owner(owner("u1")),
        CompanyQuery::new().with_domain(domain("a.example")),
        CompanyQuery::new().with_metadata_contains(metadata(json!({"a": 1}))),
        CompanyQuery::new().with_tags(TagFilter::new().none_of([TagId::new()])),
    ];
    for other in others {
        let q = CompanyQuery {
            name_prefix: Some("a".to_string()),
            page: PageRequest::after(1, cursor.clone()),
            ..other
        };
        expect_validation(
            search(store, t, &q).await,
            "cursor",
            "a cursor of a query with other filters",
        );
    }
    let r = search(
        store,
        t,
        &CompanyQuery::new().with_page(PageRequest::first(0)),
    )
    .await;
    expect_validation(r, "limit", "a limit of 0");
    let same = prefixed.after(cursor);
    let second = ok(search(store, t, &same).await, "second page");
    assert_eq!(
        second.items.len(),
        1,
        "the cursor goes on with its own query"
    );
    assert_ne!(second.items[0].id, first.items[0].id);
}

/// Another tenant sees none of a tenant's companies and cannot change or
/// delete them.
pub async fn another_tenant_cannot_see_or_change_a_company(store: &DynStore) {
    let t = TenantId::new();
    let other = TenantId::new();
    let c = create_company(store, t, with_domain("Private", "private.example")).await;
    with_tx!(store, other, async |tx| {
        assert_eq!(ok(tx.get_company(c.id).await, "get"), None);
        assert_eq!(
            ok(
                tx.get_company_by_domain(&domain("private.example")).await,
                "get by domain"
            ),
            None
        );
        let r = tx
            .update_company(
                c.id,
                c.version,
                CompanyPatch {
                    name: Some(CompanyName::parse("Stolen").expect("a name")),
                    ..CompanyPatch::default()
                },
            )
            .await;
        super::support::expect_not_found(r, Entity::Company, c.id, "update from another tenant");
        assert!(!ok(tx.delete_company(c.id).await, "delete"));
        let page = ok(
            tx.search_companies(&CompanyQuery::new().with_name_prefix("priv"))
                .await,
            "search",
        );
        assert!(
            page.items.is_empty(),
            "another tenant's search finds nothing"
        );
    })
    .await;
    assert_eq!(
        get_company(store, t, c.id).await,
        Some(c),
        "nothing changed"
    );
}

/// A company's creation, update and deletion are versions of its history
/// holding exactly the recorded values of the company.
pub async fn company_history_records_created_updated_and_deleted(store: &DynStore) {
    let t = TenantId::new();
    let c = create_company(store, t, full_company("history.example")).await;
    tick().await;
    let updated = with_tx!(store, t, async |tx| ok(
        tx.update_company(
            c.id,
            c.version,
            CompanyPatch {
                annual_revenue: Some(Some(money("99.1250", "USD"))),
                ..CompanyPatch::default()
            }
        )
        .await,
        "update"
    ))
    .await;
    tick().await;
    assert!(
        with_tx!(store, t, async |tx| ok(
            tx.delete_company(c.id).await,
            "delete"
        ))
        .await
    );
    let versions = with_tx!(store, t, async |tx| ok(
        tx.entity_history(HistoryEntity::Company(c.id), &PageRequest::first(10))
            .await,
        "history"
    ))
    .await;
    let mut vs = versions.items;
    vs.reverse();
    let ops: Vec<Operation> = vs.iter().map(|v| v.operation).collect();
    assert_eq!(
        ops,
        vec![Operation::Created, Operation::Updated, Operation::Deleted],
        "created, updated, deleted"
    );
    assert_eq!(vs[0].values, company_values(&c), "the created values");
    assert_eq!(vs[1].values, company_values(&updated), "the updated values");
    assert_eq!(vs[2].values, company_values(&updated), "the last values");
    assert!(
        vs[1].diff.contains_key("revenue_amount") && vs[1].diff.contains_key("revenue_currency"),
        "the update's diff names the changed fields: {:?}",
        vs[1].diff
    );
    assert_eq!(vs[0].actor, "system:conformance", "who created it");
}

/// A contact of `company` (none for `None`) with address `address`.
async fn contact_of(
    store: &DynStore,
    t: TenantId,
    company: Option<CompanyId>,
    address: &str,
) -> Contact {
    super::support::create(
        store,
        t,
        NewContact {
            company_id: company,
            ..super::support::new_contact(address, "Some", "One")
        },
    )
    .await
}

/// Logs an activity of `contact` that happened `minutes` after a fixed instant.
async fn activity_at(store: &DynStore, t: TenantId, contact: ContactId, minutes: i64) -> Activity {
    let at = chrono::DateTime::from_timestamp(1_700_000_000, 0).expect("an instant")
        + chrono::Duration::minutes(minutes);
    with_tx!(store, t, async |tx| ok(
        tx.log_activity(NewActivity {
            occurred_at: Some(at),
            ..NewActivity::new(contact, ActivityKind::Note)
        })
        .await,
        "log an activity"
    ))
    .await
}

/// The company timeline holds the activities of the company's contacts
/// only, newest first with ties broken by id, and pages through them with
/// every limit; its cursors are refused for another company, and a
/// missing company has an empty timeline.
pub async fn company_timeline_pages_the_activities_of_its_contacts_newest_first(store: &DynStore) {
    let t = TenantId::new();
    let a = create_company(store, t, named("Timeline A")).await;
    let b = create_company(store, t, named("Timeline B")).await;
    let a1 = contact_of(store, t, Some(a.id), "a1@timeline.example").await;
    let a2 = contact_of(store, t, Some(a.id), "a2@timeline.example").await;
    let b1 = contact_of(store, t, Some(b.id), "b1@timeline.example").await;
    let loose = contact_of(store, t, None, "loose@timeline.example").await;
    let mut expected = Vec::new();
    // Equal times across contacts, so that the id decides.
    for (contact, minutes) in [(a1.id, 5), (a2.id, 5), (a1.id, 1), (a2.id, 9), (a2.id, 5)] {
        expected.push(activity_at(store, t, contact, minutes).await);
    }
    for (contact, minutes) in [(b1.id, 7), (loose.id, 6), (b1.id, 0)] {
        activity_at(store, t, contact, minutes).await;
    }
    expected.sort_by_key(|x| std::cmp::Reverse((x.occurred_at, x.id.as_uuid())));
    let scope = store.scope(t, &super::support::ctx());
    for limit in [1, 2, 3, 5, 100] {
        let got: Vec<Activity> = collect_pages!(limit, async |page| ok(
            scope.company_timeline(a.id, &page).await,
            "a page of the company timeline"
        ))
        .await;
        assert_eq!(got, expected, "the company timeline with limit {limit}");
    }
    let first = ok(
        scope.company_timeline(a.id, &PageRequest::first(2)).await,
        "the first page",
    );
    let cursor = first.next_cursor.expect("a full first page has a cursor");
    expect_validation(
        scope
            .company_timeline(b.id, &PageRequest::after(2, cursor.clone()))
            .await,
        "cursor",
        "a cursor of company A's timeline for company B's",
    );
    expect_validation(
        scope.timeline(a1.id, &PageRequest::after(2, cursor)).await,
        "cursor",
        "a company timeline cursor for a contact's timeline",
    );
    let missing = ok(
        scope
            .company_timeline(CompanyId::new(), &PageRequest::first(10))
            .await,
        "the timeline of a missing company",
    );
    assert!(missing.items.is_empty() && missing.next_cursor.is_none());
    let other_tenant = ok(
        store
            .scope(TenantId::new(), &super::support::ctx())
            .company_timeline(a.id, &PageRequest::first(10))
            .await,
        "another tenant's view",
    );
    assert!(other_tenant.items.is_empty(), "another tenant sees nothing");
}

/// The deals of a company are those whose `company_id` is it (whatever
/// their contact's company), newest first, paged with every limit; the
/// cursors are refused for another company.
pub async fn deals_of_a_company_page_newest_first(store: &DynStore) {
    let t = TenantId::new();
    let a = create_company(store, t, named("Deals A")).await;
    let b = create_company(store, t, named("Deals B")).await;
    let of_a = contact_of(store, t, Some(a.id), "a@deals.example").await;
    let of_b = contact_of(store, t, Some(b.id), "b@deals.example").await;
    let mut expected = Vec::new();
    for (i, (contact, company)) in [
        (of_a.id, Some(a.id)),
        (of_b.id, Some(b.id)),
        (of_b.id, Some(a.id)),
        (of_a.id, None),
        (of_a.id, Some(a.id)),
        (of_b.id, Some(a.id)),
    ]
    .into_iter()
    .enumerate()
    {
        let d = super::support::deal(
            store,
            t,
            NewDeal {
                company_id: company,
                ..super::support::new_deal(contact, &format!("Deal {i}"), "100", "EUR")
            },
        )
        .await;
        if company == Some(a.id) {
            expected.push(d);
        }
    }
    expected.sort_by_key(|d| std::cmp::Reverse((d.created_at, d.id.as_uuid())));
    let scope = store.scope(t, &super::support::ctx());
    for limit in [1, 2, 3, 4, 100] {
        let got: Vec<Deal> = collect_pages!(limit, async |page| ok(
            scope.list_deals_for_company(a.id, &page).await,
            "a page of the company's deals"
        ))
        .await;
        assert_eq!(got, expected, "the company's deals with limit {limit}");
    }
    let first = ok(
        scope
            .list_deals_for_company(a.id, &PageRequest::first(1))
            .await,
        "the first page",
    );
    let cursor = first.next_cursor.expect("a full first page has a cursor");
    expect_validation(
        scope
            .list_deals_for_company(b.id, &PageRequest::after(1, cursor.clone()))
            .await,
        "cursor",
        "a cursor of company A's deals for company B's",
    );
    expect_validation(
        scope
            .list_deals_for_contact(of_a.id, &PageRequest::after(1, cursor))
            .await,
        "cursor",
        "a company's deal cursor for a contact's deals",
    );
}

/// The summary of a pipeline for one company counts only the deals
/// linked to it, and agrees with the whole pipeline's summary when every
/// deal is the company's; an unknown pipeline is refused on `pipeline`.
pub async fn pipeline_summary_for_a_company_counts_only_its_deals(store: &DynStore) {
    let t = TenantId::new();
    let stages = super::support::default_stages(store);
    let pipeline = stages.pipeline.key().clone();
    let a = create_company(store, t, named("Summary A")).await;
    let b = create_company(store, t, named("Summary B")).await;
    let c = contact_of(store, t, None, "c@summary.example").await;
    let deal = async |company: Option<CompanyId>, amount: &str, currency: &str| {
        super::support::deal(
            store,
            t,
            NewDeal {
                company_id: company,
                ..super::support::new_deal(c.id, "Summed", amount, currency)
            },
        )
        .await
    };
    deal(Some(a.id), "100.50", "EUR").await;
    deal(Some(a.id), "200", "EUR").await;
    deal(Some(a.id), "7", "USD").await;
    deal(Some(b.id), "1000", "EUR").await;
    deal(None, "5000", "EUR").await;
    let scope = store.scope(t, &super::support::ctx());
    let of_a = ok(
        scope.pipeline_summary_for_company(&pipeline, a.id).await,
        "a's summary",
    );
    let totals = |s: &crate::store::PipelineSummary| -> Vec<(StageKey, Currency, u64, String)> {
        s.stages
            .iter()
            .flat_map(|st| {
                st.totals.iter().map(|x| {
                    (
                        st.stage.clone(),
                        x.currency,
                        x.count,
                        x.sum.normalize().to_string(),
                    )
                })
            })
            .collect()
    };
    let first = stages.open[0].clone();
    let eur = Currency::parse("EUR").expect("EUR");
    let usd = Currency::parse("USD").expect("USD");
    assert_eq!(
        totals(&of_a),
        vec![
            (first.clone(), eur, 2, "300.5".to_string()),
            (first.clone(), usd, 1, "7".to_string()),
        ],
        "only a's deals are counted"
    );
    assert_eq!(
        of_a.stages.len(),
        stages.pipeline.stages().len(),
        "every stage is listed, empty ones too"
    );
    let of_none = ok(
        scope
            .pipeline_summary_for_company(&pipeline, CompanyId::new())
            .await,
        "a missing company's summary",
    );
    assert!(totals(&of_none).is_empty(), "no deal is counted");
    let whole_b = ok(
        scope.pipeline_summary_for_company(&pipeline, b.id).await,
        "b's summary",
    );
    assert_eq!(totals(&whole_b), vec![(first, eur, 1, "1000".to_string())]);
    let unknown = PipelineKey::parse("no_such_pipeline").expect("a key");
    expect_validation(
        scope.pipeline_summary_for_company(&unknown, a.id).await,
        "pipeline",
        "an unknown pipeline",
    );
}

//! The conformance suite's link points: contacts and deals link to a
//! company and have an owner; a link to a missing company is refused and
//! writes nothing; new contacts are linked by their email's domain; the
//! contact search filters by owner and company; an owner's records are
//! reassigned; the history records both links.

use super::prelude::*;
use super::support::{begin, create, deal, expect_not_found, new_contact, new_deal, ok};
use crate::{
    domain::{Company, CompanyDomain, CompanyId, NewCompany, OwnerId, RecordKind},
    history::contact_values,
    store::Reassigned,
};

fn owner(s: &str) -> OwnerId {
    OwnerId::parse(s).expect("a valid owner id")
}

async fn company(store: &DynStore, t: TenantId, name: &str, domain: Option<&str>) -> Company {
    let new = NewCompany {
        domain: domain.map(|d| CompanyDomain::parse(d).expect("a valid domain")),
        ..NewCompany::new(CompanyName::parse(name).expect("a valid company name"))
    };
    with_tx!(store, t, async |tx| ok(
        tx.create_company(new).await,
        "create a company"
    ))
    .await
}

fn linked(address: &str, company: Option<CompanyId>, who: Option<&str>) -> NewContact {
    NewContact {
        company_id: company,
        owner: who.map(owner),
        ..new_contact(address, "Link", "Ed")
    }
}

async fn contact_of(store: &DynStore, t: TenantId, id: ContactId) -> Contact {
    with_tx!(store, t, async |tx| ok(
        tx.get_contact(id).await,
        "get a contact"
    ))
    .await
    .expect("the contact exists")
}

async fn deal_of(store: &DynStore, t: TenantId, id: DealId) -> Deal {
    with_tx!(store, t, async |tx| ok(tx.get_deal(id).await, "get a deal"))
        .await
        .expect("the deal exists")
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

/// A contact's and a deal's company and owner are stored on create, changed
/// and cleared by an update, and read back as written.
pub async fn contacts_and_deals_keep_their_company_and_owner_through_create_and_update(
    store: &DynStore,
) {
    let t = TenantId::new();
    let acme = company(store, t, "Acme", Some("acme.example")).await;
    let globex = company(store, t, "Globex", None).await;
    let c = create(
        store,
        t,
        linked("ada@elsewhere.example", Some(acme.id), Some("user:ada")),
    )
    .await;
    assert_eq!(c.company_id, Some(acme.id));
    assert_eq!(c.owner, Some(owner("user:ada")));
    assert_eq!(
        contact_of(store, t, c.id).await,
        c,
        "the contact reads back"
    );

    let patch = ContactPatch {
        company_id: Some(Some(globex.id)),
        owner: Some(Some(owner("user:Bob"))),
        ..ContactPatch::default()
    };
    let c2 = with_tx!(store, t, async |tx| ok(
        tx.update_contact(c.id, c.version, patch).await,
        "relink a contact"
    ))
    .await;
    assert_eq!(c2.company_id, Some(globex.id));
    assert_eq!(c2.owner, Some(owner("user:Bob")));
    assert_eq!(c2.version, c.version.next());
    assert_eq!(contact_of(store, t, c.id).await, c2);

    let clear = ContactPatch {
        company_id: Some(None),
        owner: Some(None),
        ..ContactPatch::default()
    };
    let c3 = with_tx!(store, t, async |tx| ok(
        tx.update_contact(c.id, c2.version, clear.clone()).await,
        "unlink a contact"
    ))
    .await;
    assert_eq!((c3.company_id, c3.owner.clone()), (None, None));
    assert_eq!(contact_of(store, t, c.id).await, c3);
    // Clearing what is already clear changes nothing.
    let c4 = with_tx!(store, t, async |tx| ok(
        tx.update_contact(c.id, c3.version, clear).await,
        "unlink again"
    ))
    .await;
    assert_eq!(c4.version, c3.version, "a no-op keeps the version");

    let new = NewDeal {
        company_id: Some(acme.id),
        owner: Some(owner("user:ada")),
        ..new_deal(c.id, "Linked deal", "100", "EUR")
    };
    let d = deal(store, t, new).await;
    assert_eq!(d.company_id, Some(acme.id));
    assert_eq!(d.owner, Some(owner("user:ada")));
    assert_eq!(deal_of(store, t, d.id).await, d, "the deal reads back");
    let patch = DealPatch {
        company_id: Some(Some(globex.id)),
        owner: Some(None),
        ..DealPatch::default()
    };
    let d2 = with_tx!(store, t, async |tx| ok(
        tx.update_deal(d.id, d.version, patch).await,
        "relink a deal"
    ))
    .await;
    assert_eq!((d2.company_id, d2.owner.clone()), (Some(globex.id), None));
    assert_eq!(d2.version, d.version.next());
    assert_eq!(deal_of(store, t, d.id).await, d2);
}

/// A create, update or import linking to a company that does not exist is
/// `NotFound` for the company, writes nothing, and the transaction goes on.
pub async fn linking_to_a_missing_company_is_not_found_and_writes_nothing(store: &DynStore) {
    let t = TenantId::new();
    let real = company(store, t, "Real", None).await;
    let ghost = CompanyId::new();
    let c = create(store, t, linked("kept@links.example", Some(real.id), None)).await;
    let d = deal(store, t, new_deal(c.id, "Kept deal", "5", "EUR")).await;

    let mut tx = begin(store, t).await;
    expect_not_found(
        tx.create_contact(linked("ghost@links.example", Some(ghost), None))
            .await,
        Entity::Company,
        ghost,
        "create a contact at a missing company",
    );
    let patch = ContactPatch {
        company_id: Some(Some(ghost)),
        ..ContactPatch::default()
    };
    expect_not_found(
        tx.update_contact(c.id, c.version, patch).await,
        Entity::Company,
        ghost,
        "move a contact to a missing company",
    );
    let new = NewDeal {
        company_id: Some(ghost),
        ..new_deal(c.id, "Ghost deal", "1", "EUR")
    };
    expect_not_found(
        tx.create_deal(new).await,
        Entity::Company,
        ghost,
        "create a deal at a missing company",
    );
    let patch = DealPatch {
        company_id: Some(Some(ghost)),
        title: Some(DealTitle::parse("Renamed").expect("a title")),
        ..DealPatch::default()
    };
    expect_not_found(
        tx.update_deal(d.id, d.version, patch).await,
        Entity::Company,
        ghost,
        "move a deal to a missing company",
    );
    let rows = vec![
        linked("first@links.example", None, None),
        linked("kept@links.example", None, Some("user:import")),
        linked("second@links.example", Some(ghost), None),
    ];
    expect_not_found(
        tx.upsert_contacts(&rows, ConflictPolicy::NonEmptyIncoming)
            .await,
        Entity::Company,
        ghost,
        "import a row naming a missing company",
    );
    // The transaction is still usable.
    let after = ok(
        tx.create_contact(linked("after@links.example", Some(real.id), None))
            .await,
        "create after the refusals",
    );
    ok(tx.commit().await, "commit");

    assert_eq!(
        contact_of(store, t, c.id).await,
        c,
        "the contact is as it was"
    );
    assert_eq!(deal_of(store, t, d.id).await, d, "the deal is as it was");
    let emails: Vec<String> = with_tx!(store, t, async |tx| {
        let page = ok(
            tx.search_contacts(&ContactQuery::new().with_page(PageRequest::first(MAX_PAGE_SIZE)))
                .await,
            "search",
        );
        page.items
            .iter()
            .map(|c| c.email.normalized().to_string())
            .collect()
    })
    .await;
    let mut emails = emails;
    emails.sort();
    assert_eq!(emails, vec!["after@links.example", "kept@links.example"]);
    assert_eq!(
        contact_of(store, t, after.id).await.company_id,
        Some(real.id)
    );
    let deals = with_tx!(store, t, async |tx| ok(
        tx.list_deals_for_contact(c.id, &PageRequest::first(MAX_PAGE_SIZE))
            .await,
        "deals"
    ))
    .await;
    assert_eq!(deals.items, vec![d], "no deal was added");
}

/// A new contact without a company is linked to the company of its email's
/// domain — by a create and by an import — but never by a free-mail domain,
/// never over a company it names, and an import does not link a contact
/// that already exists.
pub async fn a_new_contact_is_linked_by_its_email_domain_unless_free_mail_or_named(
    store: &DynStore,
) {
    let t = TenantId::new();
    let acme = company(store, t, "Acme", Some("acme-links.example")).await;
    let other = company(store, t, "Other", Some("other-links.example")).await;
    // A company that holds a free-mail domain still links nobody by it.
    let gmail = company(store, t, "Gmail holder", Some("gmail.com")).await;

    let by_domain = create(store, t, linked("Ann@ACME-links.example", None, None)).await;
    assert_eq!(by_domain.company_id, Some(acme.id), "linked by its domain");
    assert_eq!(contact_of(store, t, by_domain.id).await, by_domain);

    let free = create(store, t, linked("ann.private@gmail.com", None, None)).await;
    assert_eq!(free.company_id, None, "a free-mail domain links nothing");
    assert_ne!(Some(gmail.id), free.company_id);

    let named = create(
        store,
        t,
        linked("bob@acme-links.example", Some(other.id), None),
    )
    .await;
    assert_eq!(named.company_id, Some(other.id), "the named company wins");

    let nobody = create(store, t, linked("cy@no-company.example", None, None)).await;
    assert_eq!(nobody.company_id, None, "no company holds the domain");

    // An import: new rows are linked as a create links them; a row for a
    // contact that exists links nothing new.
    let rows = vec![
        linked("dee@acme-links.example", None, None),
        linked("eve@gmail.com", None, None),
        linked("nobody-yet@other-links.example", Some(acme.id), None),
        linked("cy@no-company.example", None, Some("user:cy")),
    ];
    let outcomes = with_tx!(store, t, async |tx| ok(
        tx.upsert_contacts(&rows, ConflictPolicy::NonEmptyIncoming)
            .await,
        "import"
    ))
    .await;
    let companies: Vec<Option<CompanyId>> = {
        let mut v = Vec::new();
        for o in &outcomes {
            v.push(contact_of(store, t, o.id()).await.company_id);
        }
        v
    };
    assert_eq!(
        companies,
        vec![Some(acme.id), None, Some(acme.id), None],
        "imported rows are linked as new contacts are"
    );
    assert!(matches!(outcomes[3], UpsertOutcome::Updated(id) if id == nobody.id));
    // Creating the company later links nobody after the fact.
    let late = company(store, t, "Late", Some("no-company.example")).await;
    assert_eq!(contact_of(store, t, nobody.id).await.company_id, None);
    let fresh = create(store, t, linked("zed@no-company.example", None, None)).await;
    assert_eq!(fresh.company_id, Some(late.id));
}

/// The contact search's owner and company filters, alone and together,
/// with each other filter, through pages.
pub async fn contact_search_filters_by_owner_and_company_through_pages(store: &DynStore) {
    let t = TenantId::new();
    let acme = company(store, t, "Acme", None).await;
    let globex = company(store, t, "Globex", None).await;
    let plan: [(Option<CompanyId>, Option<&str>); 9] = [
        (Some(acme.id), Some("user:ada")),
        (Some(acme.id), Some("user:ada")),
        (Some(acme.id), Some("user:bob")),
        (Some(acme.id), None),
        (Some(globex.id), Some("user:ada")),
        (Some(globex.id), Some("User:ada")),
        (None, Some("user:ada")),
        (None, Some("user:ad")),
        (None, None),
    ];
    // Few transactions: the suite also runs every point at once on one
    // store, whose transactions take turns.
    let made: Vec<Contact> = with_tx!(store, t, async |tx| {
        let mut made = Vec::new();
        for (i, (co, who)) in plan.iter().enumerate() {
            let new = linked(&format!("p{i}@search-links.example"), *co, *who);
            made.push(ok(tx.create_contact(new).await, "create a contact"));
        }
        made
    })
    .await;
    let expect = |f: &dyn Fn(&Contact) -> bool| {
        let mut v: Vec<ContactId> = made.iter().filter(|c| f(c)).map(|c| c.id).collect();
        v.sort();
        v
    };
    let ada = owner("user:ada");
    let mut cases: Vec<(ContactQuery, Vec<ContactId>, String)> = Vec::new();
    for sort in [ContactSort::CreatedDesc, ContactSort::NameAsc] {
        let q = ContactQuery::new().with_sort(sort);
        cases.push((
            q.clone().with_owner(ada.clone()),
            expect(&|c| c.owner.as_ref() == Some(&ada)),
            format!("owner filter ({sort:?}): exact, case and all"),
        ));
        cases.push((
            q.clone().with_company(acme.id),
            expect(&|c| c.company_id == Some(acme.id)),
            format!("company filter ({sort:?})"),
        ));
        cases.push((
            q.clone().with_owner(ada.clone()).with_company(acme.id),
            expect(&|c| c.owner.as_ref() == Some(&ada) && c.company_id == Some(acme.id)),
            format!("both filters ({sort:?})"),
        ));
        cases.push((
            q.clone().with_owner(owner("user:nobody")),
            Vec::new(),
            format!("an owner with no contacts ({sort:?})"),
        ));
        cases.push((
            q.clone().with_company(CompanyId::new()),
            Vec::new(),
            format!("a company with no contacts ({sort:?})"),
        ));
    }
    let found: Vec<Vec<ContactId>> = with_tx!(store, t, async |tx| {
        let mut found = Vec::new();
        for (q, _, _) in &cases {
            let got: Vec<Contact> = collect_pages!(2, async |page| ok(
                tx.search_contacts(&q.clone().with_page(page)).await,
                "search"
            ))
            .await;
            let mut ids: Vec<ContactId> = got.iter().map(|c| c.id).collect();
            let n = ids.len();
            ids.sort();
            ids.dedup();
            assert_eq!(ids.len(), n, "paging returns each match once");
            found.push(ids);
        }
        found
    })
    .await;
    for ((_, expected, what), got) in cases.iter().zip(found) {
        assert_eq!(&got, expected, "{what}");
    }
    // Another tenant sees none of them.
    let other = TenantId::new();
    let page = with_tx!(store, other, async |tx| ok(
        tx.search_contacts(&ContactQuery::new().with_company(acme.id))
            .await,
        "search in another tenant"
    ))
    .await;
    assert!(page.items.is_empty());
}

/// Reassigning moves exactly the records of `from` (of the kind asked, if
/// any) to `to`, each a recorded change with its version moved on;
/// reassigning an owner to itself changes nothing.
pub async fn reassigning_an_owner_moves_exactly_their_records_of_the_kind_asked(store: &DynStore) {
    let t = TenantId::new();
    let (ada, bob, cy) = (owner("user:ada"), owner("user:bob"), owner("user:cy"));
    let ada_co = {
        let new = NewCompany {
            owner: Some(ada.clone()),
            ..NewCompany::new(CompanyName::parse("Ada's").expect("a name"))
        };
        with_tx!(store, t, async |tx| ok(
            tx.create_company(new).await,
            "create"
        ))
        .await
    };
    let c_ada = create(
        store,
        t,
        linked("a1@reassign.example", None, Some("user:ada")),
    )
    .await;
    let c_ada2 = create(
        store,
        t,
        linked("a2@reassign.example", None, Some("user:ada")),
    )
    .await;
    let c_bob = create(
        store,
        t,
        linked("b1@reassign.example", None, Some("user:bob")),
    )
    .await;
    let c_none = create(store, t, linked("n1@reassign.example", None, None)).await;
    let d_ada = deal(
        store,
        t,
        NewDeal {
            owner: Some(ada.clone()),
            ..new_deal(c_bob.id, "Ada's deal", "1", "EUR")
        },
    )
    .await;
    let d_bob = deal(
        store,
        t,
        NewDeal {
            owner: Some(bob.clone()),
            ..new_deal(c_ada.id, "Bob's deal", "1", "EUR")
        },
    )
    .await;
    // Another tenant's records of the same owner stay.
    let other = TenantId::new();
    let elsewhere = create(
        store,
        other,
        linked("a@reassign.example", None, Some("user:ada")),
    )
    .await;

    // To itself: nothing.
    let same = with_tx!(store, t, async |tx| ok(
        tx.reassign_owner(&ada, &ada, None).await,
        "reassign to itself"
    ))
    .await;
    assert_eq!(same, Reassigned::default());
    assert_eq!(contact_of(store, t, c_ada.id).await, c_ada);

    // Deals only.
    let deals_only = with_tx!(store, t, async |tx| ok(
        tx.reassign_owner(&ada, &cy, Some(RecordKind::Deal)).await,
        "reassign deals"
    ))
    .await;
    assert_eq!(
        deals_only,
        Reassigned {
            contacts: 0,
            companies: 0,
            deals: 1
        }
    );
    let d = deal_of(store, t, d_ada.id).await;
    assert_eq!(d.owner, Some(cy.clone()));
    assert_eq!(d.version, d_ada.version.next());
    assert!(d.updated_at >= d_ada.updated_at);
    assert_eq!(deal_of(store, t, d_bob.id).await, d_bob);
    assert_eq!(contact_of(store, t, c_ada.id).await, c_ada, "contacts stay");

    // Everything else of ada.
    let all = with_tx!(store, t, async |tx| ok(
        tx.reassign_owner(&ada, &bob, None).await,
        "reassign everything"
    ))
    .await;
    assert_eq!(
        all,
        Reassigned {
            contacts: 2,
            companies: 1,
            deals: 0
        }
    );
    for before in [&c_ada, &c_ada2] {
        let after = contact_of(store, t, before.id).await;
        assert_eq!(after.owner, Some(bob.clone()));
        assert_eq!(after.version, before.version.next());
        assert_eq!(
            Contact {
                owner: before.owner.clone(),
                version: before.version,
                updated_at: before.updated_at,
                ..after.clone()
            },
            *before,
            "only the owner, version and change time move"
        );
        let history = history_of(store, t, HistoryEntity::Contact(before.id)).await;
        assert_eq!(history.len(), 2, "the reassignment is a recorded change");
        assert_eq!(history[0].values, contact_values(&after));
        assert!(history[0].diff.contains_key("owner_id"));
    }
    assert_eq!(contact_of(store, t, c_bob.id).await, c_bob, "bob's stay");
    assert_eq!(contact_of(store, t, c_none.id).await, c_none);
    let co = with_tx!(store, t, async |tx| ok(
        tx.get_company(ada_co.id).await,
        "get"
    ))
    .await
    .expect("the company exists");
    assert_eq!(co.owner, Some(bob.clone()));
    assert_eq!(co.version, ada_co.version.next());
    let co_history = history_of(store, t, HistoryEntity::Company(ada_co.id)).await;
    assert_eq!(co_history.len(), 2);
    assert_eq!(
        contact_of(store, other, elsewhere.id).await,
        elsewhere,
        "another tenant's records stay"
    );

    // Nothing left to move.
    let again = with_tx!(store, t, async |tx| ok(
        tx.reassign_owner(&ada, &bob, None).await,
        "reassign again"
    ))
    .await;
    assert_eq!(again, Reassigned::default());
}

/// A contact's and a deal's recorded values hold its company and owner,
/// and a change of either is a recorded change.
pub async fn the_history_of_contacts_and_deals_records_company_and_owner(store: &DynStore) {
    let t = TenantId::new();
    let acme = company(store, t, "Acme", None).await;
    let c = create(
        store,
        t,
        linked("hist@links.example", Some(acme.id), Some("user:ada")),
    )
    .await;
    let history = history_of(store, t, HistoryEntity::Contact(c.id)).await;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].values, contact_values(&c));
    assert_eq!(
        history[0].values["company_id"],
        serde_json::json!(acme.id.as_uuid().to_string())
    );
    assert_eq!(history[0].values["owner_id"], serde_json::json!("user:ada"));

    let patch = ContactPatch {
        company_id: Some(None),
        ..ContactPatch::default()
    };
    let c2 = with_tx!(store, t, async |tx| ok(
        tx.update_contact(c.id, c.version, patch).await,
        "unlink"
    ))
    .await;
    let history = history_of(store, t, HistoryEntity::Contact(c.id)).await;
    assert_eq!(history.len(), 2, "unlinking is a recorded change");
    assert_eq!(history[0].values, contact_values(&c2));
    assert_eq!(history[0].values["company_id"], serde_json::Value::Null);
    assert_eq!(
        history[0].diff.keys().collect::<Vec<_>>(),
        vec!["company_id", "updated_at", "version"]
    );

    let d = deal(
        store,
        t,
        NewDeal {
            company_id: Some(acme.id),
            owner: Some(owner("user:bob")),
            ..new_deal(c.id, "History deal", "2", "EUR")
        },
    )
    .await;
    let history = history_of(store, t, HistoryEntity::Deal(d.id)).await;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].values, crate::history::deal_values(&d));
    assert_eq!(history[0].values["owner_id"], serde_json::json!("user:bob"));
}

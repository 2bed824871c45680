#![cfg(all(feature = "postgres", feature = "conformance"))]
//! Merges racing single writes on PostgreSQL, each race set up step by
//! step (a transaction holds a lock, the merge is seen waiting, then the
//! first commits): tag detaches and deletes during a merge, records moved
//! to the survivor during a company merge, activities logged on both
//! contacts of a merge, and contacts created on the domain a company merge
//! moves to its survivor. None loses an acknowledged write or deadlocks,
//! and every record ends where some serial order of the two would put it.

mod support;

use std::time::Duration;

use crm_core::{
    Actor, Context, Store, StoreExt, TenantId,
    bulk::ConflictPolicy,
    domain::{
        ActivityKind, CompanyDomain, CompanyId, CompanyName, CompanyPatch, ContactPatch, Email,
        NewActivity, NewCompany, NewContact, NewTag, PersonName, RecordRef, TagName,
    },
};
use support::{Target, TestStore, lock_waiters, until_backends_wait_for_locks};

fn ctx() -> Context {
    Context::new(Actor::parse("user:merge-race").unwrap())
}

fn new_contact(email: &str, company: Option<CompanyId>) -> NewContact {
    NewContact {
        company_id: company,
        ..NewContact::new(
            Email::parse(email).unwrap(),
            PersonName::parse("Ada").unwrap(),
            PersonName::parse("Lovelace").unwrap(),
        )
    }
}

/// A new company named `name`, holding `domain` if given.
fn company(name: &str, domain: Option<&str>) -> NewCompany {
    NewCompany {
        domain: domain.map(|d| CompanyDomain::parse(d).unwrap()),
        ..NewCompany::new(CompanyName::parse(name).unwrap())
    }
}

/// A detach of the loser's tag that is in progress when a contact merge
/// reads the loser's tags is waited for: once acknowledged, the survivor
/// does not get the tag.
async fn a_tag_detached_from_the_loser_while_contacts_merge_stays_detached(target: Target) {
    let Some(owner) = TestStore::on(target).await else {
        return;
    };
    let tenant = TenantId::new();
    let crm = owner.scope(tenant, &ctx());
    let s = crm
        .create_contact(new_contact("s@x.example", None))
        .await
        .unwrap();
    let l = crm
        .create_contact(new_contact("l@x.example", None))
        .await
        .unwrap();
    let tag = crm
        .create_tag(NewTag::new(TagName::parse("T").unwrap()))
        .await
        .unwrap();
    crm.attach_tag(tag.id, RecordRef::Contact(l.id))
        .await
        .unwrap();

    let mut t1 = owner.begin(tenant, ctx()).await.unwrap();
    assert!(
        t1.detach_tag(tag.id, RecordRef::Contact(l.id))
            .await
            .unwrap()
    );
    let merger = owner.db().store();
    let merge = tokio::spawn(async move {
        merger
            .scope(tenant, &ctx())
            .merge_contacts(s.id, l.id, ConflictPolicy::NonEmptyIncoming)
            .await
    });
    until_backends_wait_for_locks(owner.db(), 1).await;
    t1.commit().await.expect("the detach is acknowledged");
    merge.await.unwrap().expect("merge ok");
    let tags = crm.tags_of(RecordRef::Contact(s.id)).await.unwrap();
    assert!(
        tags.is_empty(),
        "the survivor carries a tag whose detach from the loser was acknowledged"
    );
}

/// The same for a company merge.
async fn a_tag_detached_from_the_loser_while_companies_merge_stays_detached(target: Target) {
    let Some(owner) = TestStore::on(target).await else {
        return;
    };
    let tenant = TenantId::new();
    let crm = owner.scope(tenant, &ctx());
    let s = crm
        .create_company(NewCompany::new(CompanyName::parse("S").unwrap()))
        .await
        .unwrap();
    let l = crm
        .create_company(NewCompany::new(CompanyName::parse("L").unwrap()))
        .await
        .unwrap();
    let tag = crm
        .create_tag(NewTag::new(TagName::parse("T").unwrap()))
        .await
        .unwrap();
    crm.attach_tag(tag.id, RecordRef::Company(l.id))
        .await
        .unwrap();

    let mut t1 = owner.begin(tenant, ctx()).await.unwrap();
    assert!(
        t1.detach_tag(tag.id, RecordRef::Company(l.id))
            .await
            .unwrap()
    );
    let merger = owner.db().store();
    let merge = tokio::spawn(async move {
        merger
            .scope(tenant, &ctx())
            .merge_companies(s.id, l.id)
            .await
    });
    until_backends_wait_for_locks(owner.db(), 1).await;
    t1.commit().await.expect("the detach is acknowledged");
    merge.await.unwrap().expect("merge ok");
    let tags = crm.tags_of(RecordRef::Company(s.id)).await.unwrap();
    assert!(
        tags.is_empty(),
        "the survivor carries a tag whose detach from the loser was acknowledged"
    );
}

/// A tag being deleted while a company merge copies the loser's tags is
/// waited for and skipped; the merge succeeds.
async fn a_tag_deleted_while_companies_merge_is_waited_for_not_an_error(target: Target) {
    let Some(owner) = TestStore::on(target).await else {
        return;
    };
    let tenant = TenantId::new();
    let crm = owner.scope(tenant, &ctx());
    let s = crm
        .create_company(NewCompany::new(CompanyName::parse("S").unwrap()))
        .await
        .unwrap();
    let l = crm
        .create_company(NewCompany::new(CompanyName::parse("L").unwrap()))
        .await
        .unwrap();
    let tag = crm
        .create_tag(NewTag::new(TagName::parse("T").unwrap()))
        .await
        .unwrap();
    crm.attach_tag(tag.id, RecordRef::Company(l.id))
        .await
        .unwrap();

    let mut t1 = owner.begin(tenant, ctx()).await.unwrap();
    assert!(t1.delete_tag(tag.id).await.unwrap());
    let merger = owner.db().store();
    let merge = tokio::spawn(async move {
        merger
            .scope(tenant, &ctx())
            .merge_companies(s.id, l.id)
            .await
    });
    until_backends_wait_for_locks(owner.db(), 1).await;
    t1.commit().await.unwrap();
    let r = merge.await.unwrap();
    assert!(r.is_ok(), "the merge failed: {r:?}");
}

/// A contact moved from the loser to the survivor while the companies are
/// merged: the update key-shares the survivor before it locks the contact,
/// the merge's order (companies, then contacts), so neither deadlocks.
async fn moving_a_contact_to_the_survivor_while_companies_merge_does_not_deadlock(target: Target) {
    let Some(owner) = TestStore::on(target).await else {
        return;
    };
    let tenant = TenantId::new();
    let crm = owner.scope(tenant, &ctx());
    let y = crm
        .create_company(NewCompany::new(CompanyName::parse("Main").unwrap()))
        .await
        .unwrap();
    let x = crm
        .create_company(NewCompany::new(CompanyName::parse("Dup").unwrap()))
        .await
        .unwrap();
    let c = crm
        .create_contact(new_contact("c@x.example", Some(x.id)))
        .await
        .unwrap();
    // T0 holds the contact's row lock (an update that changes nothing).
    let mut t0 = owner.begin(tenant, ctx()).await.unwrap();
    t0.update_contact(c.id, c.version, ContactPatch::default())
        .await
        .unwrap();
    // T1: one call, moving the contact from the duplicate to the main company.
    let mover = owner.db().store();
    let (cid, cv, yid) = (c.id, c.version, y.id);
    let moving = tokio::spawn(async move {
        mover
            .scope(tenant, &ctx())
            .update_contact(
                cid,
                cv,
                ContactPatch {
                    company_id: Some(Some(yid)),
                    ..ContactPatch::default()
                },
            )
            .await
    });
    until_backends_wait_for_locks(owner.db(), 1).await;
    let merger = owner.db().store();
    let (yid, xid) = (y.id, x.id);
    let merging =
        tokio::spawn(async move { merger.scope(tenant, &ctx()).merge_companies(yid, xid).await });
    until_backends_wait_for_locks(owner.db(), 2).await;
    t0.commit().await.unwrap();
    let (m, g) = (moving.await.unwrap(), merging.await.unwrap());
    assert!(
        m.is_ok() && g.is_ok(),
        "the move ({m:?}) or the merge ({g:?}) failed"
    );
}

/// A transaction that logs activities for both contacts of a merge, the
/// survivor first: the merge locks the survivor `FOR NO KEY UPDATE`, which
/// does not wait for the activity's key-share lock, so the two do not
/// deadlock (the second activity finds the loser merged away).
async fn activities_on_the_survivor_then_the_loser_do_not_deadlock_with_a_merge(target: Target) {
    let Some(owner) = TestStore::on(target).await else {
        return;
    };
    let tenant = TenantId::new();
    let crm = owner.scope(tenant, &ctx());
    let a = crm
        .create_contact(new_contact("a@x.example", None))
        .await
        .unwrap();
    let b = crm
        .create_contact(new_contact("b@x.example", None))
        .await
        .unwrap();
    // The loser has the lower id: the merge locks it first.
    let (l, s) = if a.id < b.id { (a, b) } else { (b, a) };
    let mut t1 = owner.begin(tenant, ctx()).await.unwrap();
    t1.log_activity(NewActivity::new(s.id, ActivityKind::Note))
        .await
        .unwrap();
    let merger = owner.db().store();
    let (sid, lid) = (s.id, l.id);
    let merging = tokio::spawn(async move {
        merger
            .scope(tenant, &ctx())
            .merge_contacts(sid, lid, ConflictPolicy::NonEmptyIncoming)
            .await
    });
    // The merge either waits (for a lock the activity holds) or ends.
    let client = owner.db().client().await;
    for _ in 0..2000 {
        if merging.is_finished() || lock_waiters(owner.db(), &client).await >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let second = t1
        .log_activity(NewActivity::new(l.id, ActivityKind::Note))
        .await;
    let committed = match &second {
        Ok(_) => t1.commit().await.map(drop),
        Err(_) => t1.rollback().await.map(drop),
    };
    let g = merging.await.unwrap();
    committed.expect("the activity's transaction ends");
    assert!(g.is_ok(), "the merge failed: {g:?}");
    match second {
        Ok(_) => {}
        Err(crm_core::Error::NotFound { .. }) => {}
        other => panic!("the second activity: {other:?}"),
    }
}

/// The same with a deal moved from the loser to the survivor.
async fn moving_a_deal_to_the_survivor_while_companies_merge_does_not_deadlock(target: Target) {
    use crm_core::domain::{Currency, DealPatch, DealTitle, Money, NewDeal};
    let Some(owner) = TestStore::on(target).await else {
        return;
    };
    let tenant = TenantId::new();
    let crm = owner.scope(tenant, &ctx());
    let y = crm
        .create_company(NewCompany::new(CompanyName::parse("Main").unwrap()))
        .await
        .unwrap();
    let x = crm
        .create_company(NewCompany::new(CompanyName::parse("Dup").unwrap()))
        .await
        .unwrap();
    let c = crm
        .create_contact(new_contact("c@x.example", None))
        .await
        .unwrap();
    let d = crm
        .create_deal(NewDeal {
            company_id: Some(x.id),
            ..NewDeal::new(
                c.id,
                DealTitle::parse("Renewal").unwrap(),
                Money::parse("100", Currency::parse("EUR").unwrap()).unwrap(),
            )
        })
        .await
        .unwrap();
    let mut t0 = owner.begin(tenant, ctx()).await.unwrap();
    t0.update_deal(d.id, d.version, DealPatch::default())
        .await
        .unwrap();
    let mover = owner.db().store();
    let (did, dv, yid) = (d.id, d.version, y.id);
    let moving = tokio::spawn(async move {
        mover
            .scope(tenant, &ctx())
            .update_deal(
                did,
                dv,
                DealPatch {
                    company_id: Some(Some(yid)),
                    ..DealPatch::default()
                },
            )
            .await
    });
    until_backends_wait_for_locks(owner.db(), 1).await;
    let merger = owner.db().store();
    let (yid, xid) = (y.id, x.id);
    let merging =
        tokio::spawn(async move { merger.scope(tenant, &ctx()).merge_companies(yid, xid).await });
    until_backends_wait_for_locks(owner.db(), 2).await;
    t0.commit().await.unwrap();
    let (m, g) = (moving.await.unwrap(), merging.await.unwrap());
    assert!(
        m.is_ok() && g.is_ok(),
        "the move ({m:?}) or the merge ({g:?}) failed"
    );
}

/// A contact created alone and one imported in a batch, on `acme.example`,
/// each through a store of its own (standing for two processes), started
/// at once.
struct DomainWriters {
    emails: [String; 2],
    creating: tokio::task::JoinHandle<crm_core::Result<crm_core::domain::Contact>>,
    importing: tokio::task::JoinHandle<crm_core::Result<crm_core::bulk::ImportReport>>,
}

impl DomainWriters {
    fn start(owner: &TestStore, tenant: TenantId, single: &str, batch: &str) -> Self {
        let emails = [
            format!("{single}@acme.example"),
            format!("{batch}@acme.example"),
        ];
        let (store, email) = (owner.db().store(), emails[0].clone());
        let creating = tokio::spawn(async move {
            store
                .scope(tenant, &ctx())
                .create_contact(new_contact(&email, None))
                .await
        });
        let (store, csv) = (
            owner.db().store(),
            format!("email,first_name,last_name\n{},Bat,Ch\n", emails[1]),
        );
        let importing = tokio::spawn(async move {
            crm_core::bulk::import_contacts_csv(
                &store,
                tenant,
                &ctx(),
                csv.as_bytes(),
                crm_core::bulk::ImportOptions::default(),
            )
            .await
        });
        DomainWriters {
            emails,
            creating,
            importing,
        }
    }

    /// Waits for both, checks that both contacts are stored linked to
    /// `company`, and returns the company the single create answered.
    async fn end_on<S: Store + ?Sized>(
        self,
        crm: &crm_core::Scope<'_, S>,
        company: CompanyId,
    ) -> Option<CompanyId> {
        let created = self.creating.await.unwrap().unwrap();
        let report = self.importing.await.unwrap().unwrap();
        assert_eq!(
            (report.inserted, report.rejected.len()),
            (1, 0),
            "{report:?}"
        );
        for email in &self.emails {
            let stored = crm
                .get_contact_by_email(&Email::parse(email).unwrap())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(stored.company_id, Some(company), "{email}");
        }
        created.company_id
    }
}

/// A contact created on a domain while a company merge moves that domain
/// from the loser to the survivor (which had none) is linked to the
/// survivor, as in either serial order (created first: linked to the
/// loser, then moved; merged first: linked by the domain). It waited for
/// the loser's row lock, found the loser deleted, and linked no company.
/// The same for a contact imported in a batch.
async fn a_contact_created_on_the_domain_a_company_merge_moves_links_to_the_survivor(
    target: Target,
) {
    let Some(owner) = TestStore::on(target).await else {
        return;
    };
    let tenant = TenantId::new();
    let crm = owner.scope(tenant, &ctx());
    let survivor = crm
        .create_company(NewCompany::new(
            CompanyName::parse("Acme Holdings").unwrap(),
        ))
        .await
        .unwrap();
    let loser = crm
        .create_company(NewCompany {
            domain: Some(CompanyDomain::parse("acme.example").unwrap()),
            ..NewCompany::new(CompanyName::parse("Acme").unwrap())
        })
        .await
        .unwrap();
    let mut merge = owner.begin(tenant, ctx()).await.unwrap();
    let merged = merge.merge_companies(survivor.id, loser.id).await.unwrap();
    assert_eq!(
        merged.domain.map(|d| d.as_str().to_string()).as_deref(),
        Some("acme.example")
    );
    let writers = DomainWriters::start(&owner, tenant, "new.person", "batch.person");
    until_backends_wait_for_locks(owner.db(), 2).await;
    merge.commit().await.unwrap();
    let created = writers.end_on(&crm, survivor.id).await;
    assert_eq!(created, Some(survivor.id), "the single create");
}

/// Two merges in a row move one domain: `L` into `S1` (which takes the
/// domain), then `S1` into `S2`, the second queued behind the first. A
/// contact created, and one imported, on the domain while the first holds
/// its locks end linked to `S2`, as in any serial order. Each lookup of
/// the domain's company that waits finds the company it waited for gone;
/// one extra lookup absorbed the first wait only, and the insert's own
/// lookup then met `S1` locked by the second merge and linked nothing.
async fn contacts_created_during_two_chained_merges_link_the_last_survivor(target: Target) {
    let Some(owner) = TestStore::on(target).await else {
        return;
    };
    let tenant = TenantId::new();
    let crm = owner.scope(tenant, &ctx());
    let l = crm
        .create_company(company("Acme", Some("acme.example")))
        .await
        .unwrap();
    let s1 = crm
        .create_company(company("Acme Holdings", None))
        .await
        .unwrap();
    let s2 = crm
        .create_company(company("Acme Group", None))
        .await
        .unwrap();
    let mut m1 = owner.begin(tenant, ctx()).await.unwrap();
    m1.merge_companies(s1.id, l.id).await.unwrap();
    let writers = DomainWriters::start(&owner, tenant, "chain.person", "chain.batch");
    until_backends_wait_for_locks(owner.db(), 2).await;
    let second = owner.db().store();
    let merging = tokio::spawn(async move {
        let mut m2 = second.begin(tenant, ctx()).await.unwrap();
        m2.merge_companies(s2.id, s1.id).await.unwrap();
        m2
    });
    until_backends_wait_for_locks(owner.db(), 3).await;
    m1.commit().await.unwrap();
    let m2 = merging.await.unwrap();
    m2.commit().await.unwrap();
    // Created between the two merges (linked to `S1`, then moved by the
    // second) or after both: either way it ends on `S2`.
    let created = writers.end_on(&crm, s2.id).await;
    assert!(
        [Some(s1.id), Some(s2.id)].contains(&created),
        "the single create linked {created:?}"
    );
}

/// An import batch linking contacts by the domains of two companies
/// while they merge waits for the merge and never deadlocks with it. The
/// batch key-share locks its companies in id order, as a merge locks its
/// pair (`FOR UPDATE`). Locked in the order the table held them (the
/// survivor's row, renamed, after the loser's), the batch held the loser
/// while it waited for the survivor, which the merge held while it waited
/// for the loser: one of the two was aborted as a deadlock.
async fn an_import_batch_linking_by_the_domains_of_merging_companies_does_not_deadlock(
    target: Target,
) {
    let Some(owner) = TestStore::on(target).await else {
        return;
    };
    let tenant = TenantId::new();
    let crm = owner.scope(tenant, &ctx());
    let survivor = crm
        .create_company(company("Acme", Some("acme.example")))
        .await
        .unwrap();
    let loser = crm
        .create_company(company("Acme Labs", Some("labs.example")))
        .await
        .unwrap();
    let third = crm
        .create_company(company("Other", Some("other.example")))
        .await
        .unwrap();
    assert!(survivor.id.as_uuid() < loser.id.as_uuid() && loser.id.as_uuid() < third.id.as_uuid());
    // The survivor's row, updated, now lies after the loser's.
    crm.update_company(
        survivor.id,
        survivor.version,
        CompanyPatch {
            name: Some(CompanyName::parse("Acme Inc").unwrap()),
            ..CompanyPatch::default()
        },
    )
    .await
    .unwrap();
    // T0 holds the survivor (another merge into it, rolled back later).
    let mut t0 = owner.begin(tenant, ctx()).await.unwrap();
    t0.merge_companies(survivor.id, third.id).await.unwrap();
    // T1, the merge, waits for the survivor.
    let merger = owner.db().store();
    let (sid, lid) = (survivor.id, loser.id);
    let merging = tokio::spawn(async move {
        let mut tx = merger.begin(tenant, ctx()).await?;
        tx.merge_companies(sid, lid).await?;
        tx.commit().await
    });
    until_backends_wait_for_locks(owner.db(), 1).await;
    // The batch: one new contact on each company's domain.
    let importer = owner.db().store();
    let importing = tokio::spawn(async move {
        let mut tx = importer.begin(tenant, ctx()).await?;
        let outcomes = tx
            .upsert_contacts(
                &[
                    new_contact("ann@acme.example", None),
                    new_contact("bob@labs.example", None),
                ],
                ConflictPolicy::NonEmptyIncoming,
            )
            .await?;
        tx.commit().await?;
        Ok::<_, crm_core::Error>(outcomes)
    });
    until_backends_wait_for_locks(owner.db(), 2).await;
    t0.rollback().await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), merging)
        .await
        .expect("the merge ended")
        .unwrap()
        .expect("the merge committed, not aborted as a deadlock");
    let outcomes = tokio::time::timeout(Duration::from_secs(30), importing)
        .await
        .expect("the batch ended")
        .unwrap()
        .expect("the batch committed, not aborted as a deadlock");
    assert_eq!(outcomes.len(), 2);
    let ann = crm
        .get_contact_by_email(&Email::parse("ann@acme.example").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ann.company_id, Some(survivor.id));
    assert!(crm.get_company(loser.id).await.unwrap().is_none());
}

/// A batch upsert that waits for a company merge (which holds the company
/// the batch's row names by its email's domain, and then changes the
/// contact itself) writes the contact after the merge's change: its
/// `updated_at` moves forward. With the call's time taken before the wait,
/// the batch's version carried an earlier `updated_at` than the one it
/// followed.
async fn a_batch_upsert_that_waits_for_a_company_merge_moves_updated_at_forward(target: Target) {
    let Some(owner) = TestStore::on(target).await else {
        return;
    };
    let tenant = TenantId::new();
    let crm = owner.scope(tenant, &ctx());
    let s = crm
        .create_company(company("S", Some("s.example")))
        .await
        .unwrap();
    let l = crm
        .create_company(company("L", Some("l.example")))
        .await
        .unwrap();
    let y = crm
        .create_contact(new_contact("y@l.example", Some(l.id)))
        .await
        .unwrap();
    // The merge holds both companies, and moves `y` to the survivor.
    let mut merge = owner.begin(tenant, ctx()).await.unwrap();
    merge.merge_companies(s.id, l.id).await.unwrap();
    let importer = owner.db().store();
    let batch = tokio::spawn(async move {
        let mut tx = importer.begin(tenant, ctx()).await?;
        let mut row = new_contact("y@l.example", None);
        row.last_name = PersonName::parse("New").unwrap();
        let out = tx.upsert_contacts(&[row], ConflictPolicy::Incoming).await?;
        tx.commit().await?;
        Ok::<_, crm_core::Error>(out)
    });
    until_backends_wait_for_locks(owner.db(), 1).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    // The merge's transaction changes `y` after the batch began waiting.
    let current = merge.get_contact(y.id).await.unwrap().unwrap();
    let changed = merge
        .update_contact(
            y.id,
            current.version,
            ContactPatch {
                title: Some(Some(crm_core::domain::JobTitle::parse("CTO").unwrap())),
                ..ContactPatch::default()
            },
        )
        .await
        .unwrap();
    merge.commit().await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), batch)
        .await
        .expect("the batch ended")
        .unwrap()
        .unwrap();
    let after = crm.get_contact(y.id).await.unwrap().unwrap();
    assert_eq!(after.last_name.as_str(), "New");
    assert!(
        after.updated_at > changed.updated_at,
        "updated_at went back: {} by the merge's transaction, then {} by the batch",
        changed.updated_at,
        after.updated_at
    );
}

crate::on_every_target!(
    a_tag_detached_from_the_loser_while_contacts_merge_stays_detached(worker_threads = 4),
    a_tag_detached_from_the_loser_while_companies_merge_stays_detached(worker_threads = 4),
    a_tag_deleted_while_companies_merge_is_waited_for_not_an_error(worker_threads = 4),
    moving_a_contact_to_the_survivor_while_companies_merge_does_not_deadlock(worker_threads = 4),
    activities_on_the_survivor_then_the_loser_do_not_deadlock_with_a_merge(worker_threads = 4),
    moving_a_deal_to_the_survivor_while_companies_merge_does_not_deadlock(worker_threads = 4),
    a_contact_created_on_the_domain_a_company_merge_moves_links_to_the_survivor(worker_threads = 4),
    contacts_created_during_two_chained_merges_link_the_last_survivor(worker_threads = 4),
    an_import_batch_linking_by_the_domains_of_merging_companies_does_not_deadlock(
        worker_threads = 4
    ),
    a_batch_upsert_that_waits_for_a_company_merge_moves_updated_at_forward(worker_threads = 4),
);

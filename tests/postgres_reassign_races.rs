#![cfg(all(feature = "postgres", feature = "conformance"))]
//! `reassign_owner` racing the writes that lock a company before its
//! contacts, or a contact before its deals, on PostgreSQL and on a Citus
//! cluster: a company delete, a company merge, a contact merge, a contact
//! delete. Each race is set up step by step (a third transaction holds one
//! record of the owner, so that the reassignment stops half-way), and both
//! sides must succeed: the reassignment locks what it moves in the order of
//! the deletes and merges (companies, contacts, deals, each by id) before
//! it writes, so the other side waits for it, or it waits for the other
//! side, and neither meets a deadlock. Then, beyond the reassignment: an
//! unmerge racing a delete of the company it links the loser back to; a
//! contact merge made again after a company delete unlinked its survivor
//! (step by step); and rounds of crossing reassignments, merges, unmerges,
//! erasures and the other writes of contacts, companies, deals, tasks and
//! tags, from stores of their own: no call may fail but as the contract
//! says (never a deadlock).

mod support;

use crm_core::{
    Actor, Context, Store, StoreExt, TenantId,
    bulk::ConflictPolicy,
    domain::{
        CompanyDomain, CompanyId, CompanyName, ContactId, ContactPatch, Currency, DealPatch,
        DealTitle, Email, JobTitle, Money, NewCompany, NewContact, NewDeal, OwnerId, PersonName,
        RecordKind,
    },
    store::Reassigned,
};
use support::{Target, TestStore, until_backends_wait_for_locks};

fn ctx() -> Context {
    Context::new(Actor::parse("user:reassign-race").unwrap())
}

fn from() -> OwnerId {
    OwnerId::parse("user:from").unwrap()
}

fn to() -> OwnerId {
    OwnerId::parse("user:to").unwrap()
}

/// A new company of `from`.
fn owned_company(name: &str) -> NewCompany {
    NewCompany {
        owner: Some(from()),
        ..NewCompany::new(CompanyName::parse(name).unwrap())
    }
}

fn contact(email: &str, owner: Option<OwnerId>, company: Option<CompanyId>) -> NewContact {
    NewContact {
        owner,
        company_id: company,
        ..NewContact::new(
            Email::parse(email).unwrap(),
            PersonName::parse("Ada").unwrap(),
            PersonName::parse("Lovelace").unwrap(),
        )
    }
}

/// Holds `id` (an open update of its title) until the returned
/// transaction ends.
async fn hold_contact(
    store: &crm_core::PostgresStore,
    tenant: TenantId,
    id: ContactId,
) -> Box<dyn crm_core::Transaction> {
    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    let c = tx.get_contact(id).await.unwrap().unwrap();
    tx.update_contact(
        id,
        c.version,
        ContactPatch {
            title: Some(Some(JobTitle::parse("Held").unwrap())),
            ..ContactPatch::default()
        },
    )
    .await
    .unwrap();
    tx
}

/// A company of `from` with a contact of `from` linked to it, and an older
/// contact of `from` not linked, which a third transaction holds: the
/// reassignment (of everything) stops at it. Then a delete of the company
/// (`merge`: a merge of it into another) starts; the holder commits.
async fn reassign_racing_a_company_delete_or_merge(target: Target, merge: bool) {
    let Some(db) = TestStore::on(target).await else {
        return;
    };
    let (holder, reassigner, other) = (db.db().store(), db.db().store(), db.db().store());
    let t = TenantId::new();
    let crm = db.scope(t, &ctx());
    let co = crm.create_company(owned_company("Doomed")).await.unwrap();
    let survivor = crm
        .create_company(NewCompany::new(CompanyName::parse("Survivor").unwrap()))
        .await
        .unwrap();
    // Ids grow with time: `held` comes first in id order.
    let held = crm
        .create_contact(contact("held@x.example", Some(from()), None))
        .await
        .unwrap();
    let linked = crm
        .create_contact(contact("linked@x.example", Some(from()), Some(co.id)))
        .await
        .unwrap();

    let hold = hold_contact(&holder, t, held.id).await;
    let reassign = tokio::spawn(async move {
        reassigner
            .scope(t, &ctx())
            .reassign_owner(&from(), &to(), None)
            .await
    });
    until_backends_wait_for_locks(db.db(), 1).await;
    let destroy = tokio::spawn(async move {
        let crm = other.scope(t, &ctx());
        if merge {
            crm.merge_companies(survivor.id, co.id).await.map(drop)
        } else {
            crm.delete_company(co.id).await.map(drop)
        }
    });
    until_backends_wait_for_locks(db.db(), 2).await;
    hold.commit().await.unwrap();
    let reassigned = reassign.await.unwrap();
    let destroyed = destroy.await.unwrap();
    assert_eq!(
        reassigned.as_ref().ok(),
        Some(&Reassigned {
            contacts: 2,
            companies: 1,
            deals: 0
        }),
        "merge {merge}: {reassigned:?}; the other side: {destroyed:?}"
    );
    assert!(destroyed.is_ok(), "merge {merge}: {destroyed:?}");
    assert!(crm.get_company(co.id).await.unwrap().is_none());
    let linked = crm.get_contact(linked.id).await.unwrap().unwrap();
    assert_eq!(linked.owner, Some(to()));
    assert_eq!(linked.company_id, merge.then_some(survivor.id));
    let held = crm.get_contact(held.id).await.unwrap().unwrap();
    assert_eq!(held.owner, Some(to()));
    assert_eq!(held.title.unwrap().as_str(), "Held");
}

async fn reassign_owner_racing_a_company_delete_waits(target: Target) {
    reassign_racing_a_company_delete_or_merge(target, false).await;
}

async fn reassign_owner_racing_a_company_merge_waits(target: Target) {
    reassign_racing_a_company_delete_or_merge(target, true).await;
}

/// Three contacts of `from`, the middle one held: a reassignment of
/// contacts locks the oldest and stops at the middle one; a merge of the
/// newest into the oldest starts (it locks the two in id order); the
/// holder commits.
async fn reassign_owner_racing_a_contact_merge_waits(target: Target) {
    let Some(db) = TestStore::on(target).await else {
        return;
    };
    let (holder, reassigner, merger) = (db.db().store(), db.db().store(), db.db().store());
    let t = TenantId::new();
    let crm = db.scope(t, &ctx());
    let mut cs = Vec::new();
    for i in 0..3 {
        cs.push(
            crm.create_contact(contact(&format!("m{i}@x.example"), Some(from()), None))
                .await
                .unwrap(),
        );
    }
    let (oldest, middle, newest) = (cs[0].id, cs[1].id, cs[2].id);
    let hold = hold_contact(&holder, t, middle).await;
    let reassign = tokio::spawn(async move {
        reassigner
            .scope(t, &ctx())
            .reassign_owner(&from(), &to(), Some(RecordKind::Contact))
            .await
    });
    until_backends_wait_for_locks(db.db(), 1).await;
    let merge = tokio::spawn(async move {
        merger
            .scope(t, &ctx())
            .merge_contacts(oldest, newest, ConflictPolicy::NonEmptyIncoming)
            .await
    });
    until_backends_wait_for_locks(db.db(), 2).await;
    hold.commit().await.unwrap();
    let reassigned = reassign.await.unwrap();
    let merged = merge.await.unwrap();
    assert_eq!(
        reassigned.as_ref().map(|r| r.contacts).ok(),
        Some(3),
        "{reassigned:?}; the merge: {merged:?}"
    );
    assert!(merged.is_ok(), "{merged:?}");
    assert!(crm.get_contact(newest).await.unwrap().is_none());
    for id in [oldest, middle] {
        let c = crm.get_contact(id).await.unwrap().unwrap();
        assert_eq!(c.owner, Some(to()));
    }
}

/// A contact of no one with two deals of `from`, the first held: a
/// reassignment of everything locks the contact, then stops at the held
/// deal; a delete of the contact starts (it locks the contact, then its
/// deals); the holder commits.
async fn reassign_owner_racing_a_contact_delete_waits(target: Target) {
    let Some(db) = TestStore::on(target).await else {
        return;
    };
    let (holder, reassigner, deleter) = (db.db().store(), db.db().store(), db.db().store());
    let t = TenantId::new();
    let crm = db.scope(t, &ctx());
    let c = crm
        .create_contact(contact("deals@x.example", None, None))
        .await
        .unwrap();
    let deal = |title: &str| NewDeal {
        owner: Some(from()),
        ..NewDeal::new(
            c.id,
            DealTitle::parse(title).unwrap(),
            Money::parse("100", Currency::parse("EUR").unwrap()).unwrap(),
        )
    };
    let first = crm.create_deal(deal("First")).await.unwrap();
    let second = crm.create_deal(deal("Second")).await.unwrap();

    let mut hold = holder.begin(t, ctx()).await.unwrap();
    hold.update_deal(
        first.id,
        first.version,
        DealPatch {
            title: Some(DealTitle::parse("First, held").unwrap()),
            ..DealPatch::default()
        },
    )
    .await
    .unwrap();
    let reassign = tokio::spawn(async move {
        reassigner
            .scope(t, &ctx())
            .reassign_owner(&from(), &to(), None)
            .await
    });
    until_backends_wait_for_locks(db.db(), 1).await;
    let delete = tokio::spawn(async move { deleter.scope(t, &ctx()).delete_contact(c.id).await });
    until_backends_wait_for_locks(db.db(), 2).await;
    hold.commit().await.unwrap();
    let reassigned = reassign.await.unwrap();
    let deleted = delete.await.unwrap();
    assert_eq!(
        reassigned.as_ref().map(|r| r.deals).ok(),
        Some(2),
        "{reassigned:?}; the delete: {deleted:?}"
    );
    assert!(matches!(deleted, Ok(true)), "{deleted:?}");
    for id in [first.id, second.id] {
        assert!(crm.get_deal(id).await.unwrap().is_none());
    }
}

/// Only what is reassigned is locked: a reassignment of companies alone
/// does not wait for a held contact of the owner.
async fn a_reassignment_of_companies_does_not_wait_for_contacts(target: Target) {
    let Some(db) = TestStore::on(target).await else {
        return;
    };
    let holder = db.db().store();
    let t = TenantId::new();
    let crm = db.scope(t, &ctx());
    let co = crm.create_company(owned_company("Kept")).await.unwrap();
    let c = crm
        .create_contact(contact("kept@x.example", Some(from()), Some(co.id)))
        .await
        .unwrap();
    let hold = hold_contact(&holder, t, c.id).await;
    let moved = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        crm.reassign_owner(&from(), &to(), Some(RecordKind::Company)),
    )
    .await
    .expect("the reassignment of companies waited for a contact")
    .unwrap();
    assert_eq!(
        moved,
        Reassigned {
            contacts: 0,
            companies: 1,
            deals: 0
        }
    );
    hold.rollback().await.unwrap();
    let c = crm.get_contact(c.id).await.unwrap().unwrap();
    assert_eq!(c.owner, Some(from()));
}

/// Rounds of a reassignment of everything racing, each from a store of
/// its own after a random pause: two contact merges and a contact delete
/// among the owner's contacts, a company delete and a company merge among
/// its companies, and a versioned update of one of its contacts. Every
/// call succeeds (the update may meet the reassignment's new version:
/// `Conflict`), never a deadlock; afterwards the owner has nothing left
/// and every acknowledged update is there.
async fn reassign_owner_racing_deletes_merges_and_updates(target: Target) {
    let Some(db) = TestStore::on(target).await else {
        return;
    };
    let stores: Vec<_> = (0..7).map(|_| db.db().store()).collect();
    let mut pause = pauses(0x2545_f491_4f6c_dd1d, 4_000);
    let rounds = if target == Target::Citus { 4 } else { 12 };
    for round in 0..rounds {
        let t = TenantId::new();
        let crm = db.scope(t, &ctx());
        let doomed = crm.create_company(owned_company("Doomed")).await.unwrap();
        let loser = crm.create_company(owned_company("Loser")).await.unwrap();
        let survivor = crm.create_company(owned_company("Survivor")).await.unwrap();
        let mut cs = Vec::new();
        for i in 0..7 {
            let linked = match i % 3 {
                0 => Some(doomed.id),
                1 => Some(loser.id),
                _ => None,
            };
            cs.push(
                crm.create_contact(contact(&format!("r{i}@x.example"), Some(from()), linked))
                    .await
                    .unwrap(),
            );
        }
        for c in [&cs[0], &cs[5], &cs[6]] {
            crm.create_deal(NewDeal {
                owner: Some(from()),
                ..NewDeal::new(
                    c.id,
                    DealTitle::parse("Deal").unwrap(),
                    Money::parse("10", Currency::parse("EUR").unwrap()).unwrap(),
                )
            })
            .await
            .unwrap();
        }
        let mut calls = Vec::new();
        let ids: Vec<ContactId> = cs.iter().map(|c| c.id).collect();
        let updated = cs[2].clone();
        for (i, store) in stores.iter().cloned().enumerate() {
            let (wait, ids, updated) = (pause(), ids.clone(), updated.clone());
            calls.push(tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                let crm = store.scope(t, &ctx());
                let out: (&str, Result<(), crm_core::Error>) = match i {
                    0 => (
                        "reassign",
                        crm.reassign_owner(&from(), &to(), None).await.map(drop),
                    ),
                    1 => (
                        "merge contact 5 into 0",
                        crm.merge_contacts(ids[0], ids[5], ConflictPolicy::NonEmptyIncoming)
                            .await
                            .map(drop),
                    ),
                    2 => (
                        "merge contact 1 into 3",
                        crm.merge_contacts(ids[3], ids[1], ConflictPolicy::NonEmptyIncoming)
                            .await
                            .map(drop),
                    ),
                    3 => (
                        "delete contact 6",
                        crm.delete_contact(ids[6]).await.map(drop),
                    ),
                    4 => (
                        "delete company",
                        crm.delete_company(doomed.id).await.map(drop),
                    ),
                    5 => (
                        "merge company",
                        crm.merge_companies(survivor.id, loser.id).await.map(drop),
                    ),
                    _ => (
                        "update contact 2",
                        crm.update_contact(
                            updated.id,
                            updated.version,
                            ContactPatch {
                                title: Some(Some(JobTitle::parse("Updated").unwrap())),
                                ..ContactPatch::default()
                            },
                        )
                        .await
                        .map(drop),
                    ),
                };
                out
            }));
        }
        let mut update_acknowledged = false;
        for call in calls {
            let (what, out) = call.await.unwrap();
            match out {
                Ok(()) => update_acknowledged |= what == "update contact 2",
                Err(e)
                    if what == "update contact 2" && e.kind() == crm_core::ErrorKind::Conflict => {}
                Err(e) => panic!("round {round}: {what}: {e:?}"),
            }
        }
        // The owner has nothing left; what the reassignment found is the
        // new owner's, whatever ran first.
        let contacts = crm
            .search_contacts(&crm_core::ContactQuery::new().with_owner(from()))
            .await
            .unwrap();
        let companies = crm
            .search_companies(&crm_core::CompanyQuery::new().with_owner(from()))
            .await
            .unwrap();
        let deals = crm
            .search_deals(&crm_core::DealQuery::new().with_owner(from()))
            .await
            .unwrap();
        assert!(
            contacts.items.is_empty() && companies.items.is_empty() && deals.items.is_empty(),
            "round {round}: left to the owner: {contacts:?} {companies:?} {deals:?}"
        );
        for id in [ids[0], ids[2], ids[3], ids[4]] {
            let c = crm.get_contact(id).await.unwrap().expect("a survivor");
            assert_eq!(c.owner, Some(to()), "round {round}");
        }
        for id in [ids[1], ids[5], ids[6]] {
            assert!(
                crm.get_contact(id).await.unwrap().is_none(),
                "round {round}"
            );
        }
        let two = crm.get_contact(ids[2]).await.unwrap().unwrap();
        assert_eq!(
            two.title.map(|t| t.as_str().to_string()),
            update_acknowledged.then(|| "Updated".to_string()),
            "round {round}"
        );
        let survivor = crm.get_company(survivor.id).await.unwrap().unwrap();
        assert_eq!(survivor.owner, Some(to()), "round {round}");
        assert!(crm.get_company(loser.id).await.unwrap().is_none());
        assert!(crm.get_company(doomed.id).await.unwrap().is_none());
    }
}

fn company(name: &str, domain: &str) -> NewCompany {
    NewCompany {
        domain: Some(CompanyDomain::parse(domain).unwrap()),
        ..NewCompany::new(CompanyName::parse(name).unwrap())
    }
}

fn is_deadlock(e: &crm_core::Error) -> bool {
    let s = format!("{e:?} {e}");
    s.contains("deadlock") || s.contains("40P01")
}

/// Pauses of up to `max_micros`, from a small fixed-seed generator
/// (xorshift): each randomized round staggers its calls the same way on
/// every run.
fn pauses(seed: u64, max_micros: u64) -> impl FnMut() -> std::time::Duration {
    let mut seed = seed;
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::time::Duration::from_micros(seed % max_micros)
    }
}

/// The merge retry, step by step: the survivor `s` (newer) has company
/// `x`, the loser `l` (older, locked first) has `y`. A holder holds `l`;
/// the merge reads the links (no key share: the survivor has a company)
/// and waits for `l`; `x` is deleted (unlinks `s`) and commits; a merge
/// of `y` into `y2` starts and waits for `l`; the holder commits. The
/// contact merge then finds the survivor without a company, taking `y`:
/// it must retry rather than deadlock with the company merge. Afterwards:
/// one journal entry, the survivor linked to `y2`, one merge version in
/// the survivor's history.
async fn merge_retry_after_a_company_delete_and_a_company_merge(target: Target) {
    let Some(db) = TestStore::on(target).await else {
        return;
    };
    let (holder, merger, other) = (db.db().store(), db.db().store(), db.db().store());
    let t = TenantId::new();
    let crm = db.scope(t, &ctx());
    let x = crm.create_company(company("X", "x.example")).await.unwrap();
    let y = crm.create_company(company("Y", "y.example")).await.unwrap();
    let y2 = crm
        .create_company(company("Y2", "y2.example"))
        .await
        .unwrap();
    let l = crm
        .create_contact(contact("loser@u.example", None, Some(y.id)))
        .await
        .unwrap();
    let s = crm
        .create_contact(contact("survivor@u.example", None, Some(x.id)))
        .await
        .unwrap();
    let hold = hold_contact(&holder, t, l.id).await;
    let merge = tokio::spawn(async move {
        merger
            .scope(t, &ctx())
            .merge_contacts(s.id, l.id, ConflictPolicy::NonEmptyIncoming)
            .await
    });
    until_backends_wait_for_locks(db.db(), 1).await;
    assert!(crm.delete_company(x.id).await.unwrap());
    let cm = tokio::spawn(async move { other.scope(t, &ctx()).merge_companies(y2.id, y.id).await });
    until_backends_wait_for_locks(db.db(), 2).await;
    hold.commit().await.unwrap();
    let merged = merge.await.unwrap();
    let cmerged = cm.await.unwrap();
    assert!(
        merged.is_ok() && cmerged.is_ok(),
        "contact merge {merged:?}; company merge {cmerged:?}"
    );
    let out = crm.get_contact(s.id).await.unwrap().unwrap();
    assert_eq!(out.company_id, Some(y2.id));
    assert!(crm.get_contact(l.id).await.unwrap().is_none());
    let journal = crm.contact_merges(s.id).await.unwrap();
    assert_eq!(journal.len(), 1, "{journal:?}");
    let client = db.db().client().await;
    let rows = client
        .query(
            &db.db().sql(
                "SELECT operation, reason FROM crm.history WHERE tenant_id = $1 AND entity_id = $2 \
                 ORDER BY valid_from",
            ),
            &[&t.as_uuid(), &s.id.as_uuid()],
        )
        .await
        .unwrap();
    let ops: Vec<(String, Option<String>)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    eprintln!("survivor history: {ops:?}");
    let merges = client
        .query_one(
            &db.db()
                .sql("SELECT count(*) FROM crm.contact_merges WHERE tenant_id = $1"),
            &[&t.as_uuid()],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(merges, 1);
}

/// Two reassignments at once, a→b and b→a, whose records share
/// companies and whose deals sit on each other's contacts, with contact
/// merges and company merges among them; rounds with random pauses.
async fn crossing_reassignments_and_merges(target: Target) {
    let Some(db) = TestStore::on(target).await else {
        return;
    };
    let stores: Vec<_> = (0..6).map(|_| db.db().store()).collect();
    let mut pause = pauses(0x9e37_79b9_7f4a_7c15, 3_000);
    let a = || OwnerId::parse("user:a").unwrap();
    let b = || OwnerId::parse("user:b").unwrap();
    let rounds = if target == Target::Citus { 4 } else { 15 };
    let mut failures = Vec::new();
    for round in 0..rounds {
        let t = TenantId::new();
        let crm = db.scope(t, &ctx());
        let mut cos = Vec::new();
        for i in 0..4 {
            cos.push(
                crm.create_company(NewCompany {
                    owner: Some(if i % 2 == 0 { a() } else { b() }),
                    ..NewCompany::new(CompanyName::parse(&format!("Co{i}")).unwrap())
                })
                .await
                .unwrap(),
            );
        }
        let mut cs = Vec::new();
        for i in 0..8 {
            let owner = if i % 2 == 0 { a() } else { b() };
            cs.push(
                crm.create_contact(contact(
                    &format!("x{i}@r.example"),
                    Some(owner),
                    Some(cos[(i * 3) % 4].id),
                ))
                .await
                .unwrap(),
            );
        }
        for (i, c) in cs.iter().enumerate() {
            crm.create_deal(NewDeal {
                owner: Some(if i % 2 == 0 { b() } else { a() }),
                company_id: Some(cos[(i + 1) % 4].id),
                ..NewDeal::new(
                    c.id,
                    DealTitle::parse("Deal").unwrap(),
                    Money::parse("10", Currency::parse("EUR").unwrap()).unwrap(),
                )
            })
            .await
            .unwrap();
        }
        let ids: Vec<ContactId> = cs.iter().map(|c| c.id).collect();
        let co: Vec<CompanyId> = cos.iter().map(|c| c.id).collect();
        let mut calls = Vec::new();
        for (i, store) in stores.iter().cloned().enumerate() {
            let (wait, ids, co) = (pause(), ids.clone(), co.clone());
            calls.push(tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                let crm = store.scope(t, &ctx());
                let out: (&str, Result<(), crm_core::Error>) = match i {
                    0 => (
                        "reassign a->b",
                        crm.reassign_owner(&a(), &b(), None).await.map(drop),
                    ),
                    1 => (
                        "reassign b->a",
                        crm.reassign_owner(&b(), &a(), None).await.map(drop),
                    ),
                    2 => (
                        "merge contacts 7 into 0",
                        crm.merge_contacts(ids[0], ids[7], ConflictPolicy::NonEmptyIncoming)
                            .await
                            .map(drop),
                    ),
                    3 => (
                        "merge company 3 into 0",
                        crm.merge_companies(co[0], co[3]).await.map(drop),
                    ),
                    4 => (
                        "reassign a->b deals",
                        crm.reassign_owner(&a(), &b(), Some(RecordKind::Deal))
                            .await
                            .map(drop),
                    ),
                    _ => (
                        "delete company 2",
                        crm.delete_company(co[2]).await.map(drop),
                    ),
                };
                out
            }));
        }
        for call in calls {
            let (what, out) = call.await.unwrap();
            if let Err(e) = out {
                failures.push(format!("round {round}: {what}: {e}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures: {failures:#?}",
        failures.len()
    );
}

/// Rounds of a reassignment of everything and a contact merge racing the
/// other writes of the brief, each from a store of its own after a random
/// pause: an unmerge, an erase, a deal delete, a deal update linking a
/// company, a task linking a company, contact and deal, tag attaches and
/// a detach, a contact delete, a company merge. Counts the failures.
async fn reassign_and_merge_racing_the_other_writes(target: Target) {
    use crm_core::domain::{
        DealPatch, NewTag, NewTask, RecordRef, TagName, TaskTitle, UnmergeConflicts,
    };
    let Some(db) = TestStore::on(target).await else {
        return;
    };
    let stores: Vec<_> = (0..12).map(|_| db.db().store()).collect();
    let mut pause = pauses(0x2545_f491_4f6c_dd1d ^ 0xabcdef, 4_000);
    let rounds = if target == Target::Citus { 4 } else { 15 };
    let mut failures = Vec::new();
    for round in 0..rounds {
        let t = TenantId::new();
        let crm = db.scope(t, &ctx());
        let mut cos = Vec::new();
        for i in 0..3 {
            cos.push(
                crm.create_company(NewCompany {
                    owner: Some(from()),
                    ..NewCompany::new(CompanyName::parse(&format!("Co{i}")).unwrap())
                })
                .await
                .unwrap(),
            );
        }
        let mut cs = Vec::new();
        for i in 0..9 {
            let linked = match i % 3 {
                0 => Some(cos[0].id),
                1 => Some(cos[1].id),
                _ => None,
            };
            cs.push(
                crm.create_contact(contact(&format!("o{i}@r.example"), Some(from()), linked))
                    .await
                    .unwrap(),
            );
        }
        let mut deals = Vec::new();
        for c in &cs {
            deals.push(
                crm.create_deal(NewDeal {
                    owner: Some(from()),
                    company_id: c.company_id,
                    ..NewDeal::new(
                        c.id,
                        DealTitle::parse("Deal").unwrap(),
                        Money::parse("10", Currency::parse("EUR").unwrap()).unwrap(),
                    )
                })
                .await
                .unwrap(),
            );
        }
        let tag = crm
            .create_tag(NewTag::new(TagName::parse("T").unwrap()))
            .await
            .unwrap();
        crm.attach_tag(tag.id, RecordRef::Contact(cs[1].id))
            .await
            .unwrap();
        crm.merge_contacts(cs[1].id, cs[8].id, ConflictPolicy::NonEmptyIncoming)
            .await
            .unwrap();
        let merge_id = crm.contact_merges(cs[1].id).await.unwrap()[0].id;
        let ids: Vec<ContactId> = cs.iter().map(|c| c.id).collect();
        let co: Vec<CompanyId> = cos.iter().map(|c| c.id).collect();
        let ds: Vec<_> = deals.iter().map(|d| (d.id, d.version)).collect();
        let mut calls = Vec::new();
        for (i, store) in stores.iter().cloned().enumerate() {
            let (wait, ids, co, ds, tag) = (pause(), ids.clone(), co.clone(), ds.clone(), tag.id);
            calls.push(tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                let crm = store.scope(t, &ctx());
                let out: (&str, Result<(), crm_core::Error>) = match i {
                    0 => (
                        "reassign",
                        crm.reassign_owner(&from(), &to(), None).await.map(drop),
                    ),
                    1 => (
                        "merge contact 5 into 0",
                        crm.merge_contacts(ids[0], ids[5], ConflictPolicy::NonEmptyIncoming)
                            .await
                            .map(drop),
                    ),
                    2 => (
                        "unmerge",
                        crm.unmerge_contacts(merge_id, UnmergeConflicts::KeepCurrent)
                            .await
                            .map(drop),
                    ),
                    3 => ("erase contact 2", crm.erase_contact(ids[2]).await.map(drop)),
                    4 => ("delete deal of 3", crm.delete_deal(ds[3].0).await.map(drop)),
                    5 => (
                        "update deal of 4 -> company 2",
                        crm.update_deal(
                            ds[4].0,
                            ds[4].1,
                            DealPatch {
                                company_id: Some(Some(co[2])),
                                ..DealPatch::default()
                            },
                        )
                        .await
                        .map(drop),
                    ),
                    6 => (
                        "task on company 0, contact 3, deal 6",
                        crm.create_task(NewTask {
                            company_id: Some(co[0]),
                            contact_id: Some(ids[3]),
                            deal_id: Some(ds[6].0),
                            ..NewTask::new(TaskTitle::parse("Call").unwrap())
                        })
                        .await
                        .map(drop),
                    ),
                    7 => (
                        "attach tag to company 1, contact 3, deal 0",
                        async {
                            crm.attach_tag(tag, RecordRef::Company(co[1])).await?;
                            crm.attach_tag(tag, RecordRef::Contact(ids[3])).await?;
                            crm.attach_tag(tag, RecordRef::Deal(ds[0].0))
                                .await
                                .map(drop)
                        }
                        .await,
                    ),
                    8 => (
                        "detach tag from contact 1",
                        crm.detach_tag(tag, RecordRef::Contact(ids[1]))
                            .await
                            .map(drop),
                    ),
                    9 => (
                        "delete contact 7",
                        crm.delete_contact(ids[7]).await.map(drop),
                    ),
                    10 => (
                        "merge company 1 into 0",
                        crm.merge_companies(co[0], co[1]).await.map(drop),
                    ),
                    _ => (
                        "reassign deals back",
                        crm.reassign_owner(&to(), &from(), Some(RecordKind::Deal))
                            .await
                            .map(drop),
                    ),
                };
                out
            }));
        }
        for call in calls {
            let (what, out) = call.await.unwrap();
            if let Err(e) = out
                && !matches!(
                    e,
                    crm_core::Error::NotFound { .. }
                        | crm_core::Error::Conflict { .. }
                        | crm_core::Error::UnmergeRefused { .. }
                )
            {
                failures.push(format!("round {round}: {what}: {e}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures in {rounds} rounds: {failures:#?}",
        failures.len()
    );
}

/// An unmerge locks the survivor, then key-shares the loser's company
/// (`insert_loser`): the reverse of a company delete (company, then its
/// contacts). Survivor and loser both of company `c`; a holder holds the
/// survivor; the unmerge waits for it; a delete of `c` locks `c` and waits
/// for the survivor; the holder commits.
async fn unmerge_racing_a_company_delete(target: Target) {
    use crm_core::domain::UnmergeConflicts;
    let Some(db) = TestStore::on(target).await else {
        return;
    };
    let (holder, unmerger, deleter) = (db.db().store(), db.db().store(), db.db().store());
    let t = TenantId::new();
    let crm = db.scope(t, &ctx());
    let c = crm.create_company(company("C", "c.example")).await.unwrap();
    let s = crm
        .create_contact(contact("s@u.example", None, Some(c.id)))
        .await
        .unwrap();
    let l = crm
        .create_contact(contact("l@u.example", None, Some(c.id)))
        .await
        .unwrap();
    crm.merge_contacts(s.id, l.id, ConflictPolicy::NonEmptyIncoming)
        .await
        .unwrap();
    let merge = crm.contact_merges(s.id).await.unwrap()[0].id;
    let hold = hold_contact(&holder, t, s.id).await;
    let unmerge = tokio::spawn(async move {
        unmerger
            .scope(t, &ctx())
            .unmerge_contacts(merge, UnmergeConflicts::KeepCurrent)
            .await
    });
    until_backends_wait_for_locks(db.db(), 1).await;
    let delete = tokio::spawn(async move { deleter.scope(t, &ctx()).delete_company(c.id).await });
    until_backends_wait_for_locks(db.db(), 2).await;
    hold.commit().await.unwrap();
    let unmerged = unmerge.await.unwrap();
    let deleted = delete.await.unwrap();
    let dl = unmerged.as_ref().err().is_some_and(is_deadlock)
        || deleted.as_ref().err().is_some_and(is_deadlock);
    assert!(
        unmerged.is_ok() && deleted.is_ok(),
        "deadlock={dl}: unmerge {unmerged:?}; delete {deleted:?}"
    );
}

crate::on_every_target!(
    reassign_owner_racing_a_company_delete_waits,
    reassign_owner_racing_a_company_merge_waits,
    reassign_owner_racing_a_contact_merge_waits,
    reassign_owner_racing_a_contact_delete_waits,
    a_reassignment_of_companies_does_not_wait_for_contacts,
    reassign_owner_racing_deletes_merges_and_updates,
    unmerge_racing_a_company_delete,
    reassign_and_merge_racing_the_other_writes,
    merge_retry_after_a_company_delete_and_a_company_merge,
    crossing_reassignments_and_merges,
);

#![cfg(all(feature = "postgres", feature = "conformance"))]
//! Batches of activities racing single loggers and a merge of contacts
//! they log on, on PostgreSQL with several stores (one pool each): none
//! deadlocks for good, every acknowledged activity is kept exactly once on
//! the contact that holds it in the end (the survivor for the loser's),
//! and every live score equals its recomputation.

mod support;

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use crm_core::{
    Actor, Context, Error, PageRequest, Store, StoreExt, TenantId,
    bulk::ConflictPolicy,
    domain::{ActivityId, ActivityKind, ContactId, Email, NewActivity, NewContact, PersonName},
    scoring::{ScoringModel, explain},
};
use support::TestStore;

fn ctx() -> Context {
    Context::new(Actor::parse("user:bulk-race").unwrap())
}

fn new_contact(i: usize) -> NewContact {
    NewContact::new(
        Email::parse(&format!("race{i}@x.example")).unwrap(),
        PersonName::parse("Ada").unwrap(),
        PersonName::parse("Lovelace").unwrap(),
    )
}

/// Whether `e` is worth trying the transaction again for.
fn retry(e: &Error) -> bool {
    e.is_retryable()
}

const BATCHES: usize = 12;
const SINGLES: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_single_loggers_and_a_merge_keep_every_acknowledged_activity_once() {
    let owner = TestStore::new().await;
    let tenant = TenantId::new();
    let crm = owner.scope(tenant, &ctx());
    let mut contacts = Vec::new();
    for i in 0..6 {
        contacts.push(crm.create_contact(new_contact(i)).await.unwrap().id);
    }
    // The loser is in the middle of the id order, the survivor first.
    let (survivor, loser) = (contacts[0], contacts[3]);

    let mut tasks = Vec::new();
    for w in 0..3usize {
        let store = owner.db().store();
        let contacts = contacts.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked: Vec<(ActivityId, ContactId)> = Vec::new();
            let mut gone: HashSet<ContactId> = HashSet::new();
            for b in 0..BATCHES {
                // Every contact, several times, in an order of its own.
                let mut rows: Vec<NewActivity> = (0..18)
                    .map(|i| {
                        let c = contacts[(i * (w + 1) + b) % contacts.len()];
                        NewActivity::new(c, ActivityKind::ALL[(i + w) % ActivityKind::ALL.len()])
                    })
                    .collect();
                loop {
                    rows.retain(|r| !gone.contains(&r.contact_id));
                    let mut tx = store.begin(tenant, ctx()).await.unwrap();
                    let logged = match tx.log_activities(&rows).await {
                        Ok(l) => l,
                        Err(Error::NotFound { id, .. }) => {
                            // The loser was merged away: its rows go.
                            gone.extend(
                                rows.iter()
                                    .map(|r| r.contact_id)
                                    .filter(|c| c.to_string() == id),
                            );
                            let _ = tx.rollback().await;
                            continue;
                        }
                        Err(e) if retry(&e) => {
                            let _ = tx.rollback().await;
                            continue;
                        }
                        Err(e) => panic!("batch {w}/{b}: {e:?}"),
                    };
                    match tx.commit().await {
                        Ok(()) => {
                            acked.extend(logged.iter().map(|a| (a.id, a.contact_id)));
                            break;
                        }
                        Err(e) if retry(&e) => continue,
                        Err(e) => panic!("commit {w}/{b}: {e:?}"),
                    }
                }
            }
            acked
        }));
    }
    for w in 0..2usize {
        let store = owner.db().store();
        let contacts = contacts.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..SINGLES {
                let c = contacts[(i * 5 + w) % contacts.len()];
                let scope = store.scope(tenant, &ctx());
                match scope
                    .log_activity(NewActivity::new(c, ActivityKind::Email))
                    .await
                {
                    Ok(a) => acked.push((a.id, a.contact_id)),
                    Err(Error::NotFound { .. }) => {}
                    Err(e) if retry(&e) => {}
                    Err(e) => panic!("single {w}/{i}: {e:?}"),
                }
            }
            acked
        }));
    }
    let merger = owner.db().store();
    let merge = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        loop {
            match merger
                .scope(tenant, &ctx())
                .merge_contacts(survivor, loser, ConflictPolicy::NonEmptyIncoming)
                .await
            {
                Ok(_) => return,
                Err(e) if retry(&e) => continue,
                Err(e) => panic!("merge: {e:?}"),
            }
        }
    });
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    merge.await.unwrap();

    // Where each activity is now.
    let mut held: HashMap<ActivityId, (ContactId, usize)> = HashMap::new();
    for c in &contacts {
        let mut page = PageRequest::first(1000);
        loop {
            let got = crm.timeline(*c, &page).await.unwrap();
            for a in &got.items {
                held.entry(a.id).or_insert((*c, 0)).1 += 1;
            }
            match got.next_cursor {
                Some(next) => page.cursor = Some(next),
                None => break,
            }
        }
    }
    assert!(
        crm.get_contact(loser).await.unwrap().is_none(),
        "the loser is gone"
    );
    assert!(!acked.is_empty());
    let logged_on_loser = acked.iter().filter(|(_, c)| *c == loser).count();
    assert!(
        logged_on_loser > 0,
        "some acknowledged activities were on the loser"
    );
    for (id, logged_on) in &acked {
        let expected = if *logged_on == loser {
            survivor
        } else {
            *logged_on
        };
        assert_eq!(
            held.get(id),
            Some(&(expected, 1)),
            "activity {id} (logged on {logged_on}) is on {expected} exactly once"
        );
    }
    assert_eq!(held.len(), acked.len(), "nothing unacknowledged is kept");

    let model = ScoringModel::default();
    let mut tx = owner.begin(tenant, ctx()).await.unwrap();
    for c in contacts.iter().filter(|c| **c != loser) {
        let e = explain(&mut *tx, &model, *c, None).await.unwrap().unwrap();
        assert!(
            e.live_consistent(),
            "contact {c}: live state {:?}, recomputed {:?}",
            e.live_log,
            e.live_log_recomputed
        );
    }
    tx.rollback().await.unwrap();
}

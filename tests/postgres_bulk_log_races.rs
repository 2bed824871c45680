#![cfg(all(feature = "postgres", feature = "conformance"))]
//! Batches of activities racing single loggers and a merge of contacts
//! they log on, on PostgreSQL with several stores (one pool each): none
//! deadlocks for good, every acknowledged activity is kept exactly once on
//! the contact that holds it in the end (the survivor for the loser's),
//! and every live score equals its recomputation. Also: a batch on
//! contacts whose live-state row is missing gives them one.

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

/// A contact whose live-state row is missing (loaded with the triggers
/// off, or the row deleted by hand) gets one from a batch, as from a
/// single call, and its live score follows its activities like the others':
/// the batch leaves out only the contacts whose row exists.
#[tokio::test]
async fn a_batch_gives_a_contact_without_a_live_state_its_row() {
    let store = TestStore::new().await;
    let tenant = TenantId::new();
    let crm = store.scope(tenant, &ctx());
    let mut contacts = Vec::new();
    for i in 0..4 {
        contacts.push(crm.create_contact(new_contact(100 + i)).await.unwrap().id);
    }
    let client = store.db().client().await;
    let lacking = [contacts[1], contacts[3]];
    for c in lacking {
        let gone = client
            .execute(
                &store
                    .db()
                    .sql("DELETE FROM crm.contact_scores WHERE tenant_id = $1 AND contact_id = $2"),
                &[&tenant.as_uuid(), &c.as_uuid()],
            )
            .await
            .unwrap();
        assert_eq!(gone, 1, "contact {c} had no live-state row to delete");
    }
    // Twice: the first batch creates the rows, the second finds them.
    for _ in 0..2 {
        let rows: Vec<NewActivity> = contacts
            .iter()
            .flat_map(|c| {
                [ActivityKind::Email, ActivityKind::Meeting].map(|k| NewActivity::new(*c, k))
            })
            .collect();
        let mut tx = store.begin(tenant, ctx()).await.unwrap();
        assert_eq!(tx.log_activities(&rows).await.unwrap().len(), rows.len());
        tx.commit().await.unwrap();
    }
    let rows: i64 = client
        .query_one(
            &store.db().sql(
                "SELECT count(*) FROM crm.contact_scores s JOIN crm.contacts c \
                 ON c.tenant_id = s.tenant_id AND c.id = s.contact_id \
                 WHERE s.tenant_id = $1 AND s.created_at = c.created_at",
            ),
            &[&tenant.as_uuid()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 4, "every contact has its row, with its creation time");
    let model = ScoringModel::default();
    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    let mut live = Vec::new();
    for c in &contacts {
        let e = explain(&mut *tx, &model, *c, None).await.unwrap().unwrap();
        assert!(e.live_consistent(), "contact {c}: {e:?}");
        live.push(e.live_log.expect("a live state"));
    }
    // The same activities, logged at nearly the same time: the same score.
    for (c, l) in contacts.iter().zip(&live) {
        assert!(
            (l - live[0]).abs() < 1e-3,
            "contact {c}: {l} against {}",
            live[0]
        );
    }
}

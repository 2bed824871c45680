#![cfg(all(feature = "postgres", feature = "conformance"))]
//! Batch rescoring racing other writers on PostgreSQL. A rescore reads its
//! chunks on a transaction of its own while it writes the scores on
//! another; these races check that a contact renamed, deleted or merged
//! while the rescore runs keeps that write, that the rescore neither fails
//! nor writes a score a contact should not get, and that activities logged
//! meanwhile do not wait for it. Each race is set up step by step: a
//! transaction holds the contacts' locks, the rescore is seen waiting, then
//! the first commits.

mod support;

use chrono::{Duration, Utc};
use crm_core::{
    Actor, Context, Store, StoreExt, TenantId,
    bulk::ConflictPolicy,
    domain::{
        ActivityKind, ContactId, ContactPatch, ContactScore, Email, NewActivity, NewContact,
        PersonName, Score, truncate_to_micros,
    },
    scoring::{RescoreOptions, ScoringModel, rescore, rescore_in_transaction},
    store::PageRequest,
};
use support::{Target, TestStore, until_backends_wait_for_locks};

fn ctx() -> Context {
    Context::new(Actor::parse("user:rescore-race").unwrap())
}

fn new_contact(i: usize) -> NewContact {
    NewContact::new(
        Email::parse(&format!("lead{i}@x.example")).unwrap(),
        PersonName::parse("Ada").unwrap(),
        PersonName::parse("Lovelace").unwrap(),
    )
}

async fn scores(store: &dyn Store, tenant: TenantId, ids: &[ContactId]) -> Vec<Option<Score>> {
    let crm = store.scope(tenant, &ctx());
    let mut out = Vec::new();
    for id in ids {
        out.push(crm.get_contact(*id).await.unwrap().map(|c| c.score));
    }
    out
}

/// A contact renamed, one deleted and two merged by a transaction that
/// holds their locks while a rescore wants to write their scores: the
/// rescore waits, then writes the scores of those that are left; every
/// write of the other transaction stays, an activity logged meanwhile
/// (on another contact) does not wait for the rescore, and a second
/// rescore at the same time finds nothing more to change but what the
/// merge and the activity changed. `own` runs the rescore on a transaction
/// of its own ([`rescore`], reading beside the writes); else in a
/// transaction of the test's ([`rescore_in_transaction`]).
async fn writers_during_a_rescore_keep_their_writes(target: Target, own: bool) {
    let Some(owner) = TestStore::on(target).await else {
        return;
    };
    let tenant = TenantId::new();
    let crm = owner.scope(tenant, &ctx());
    let base = truncate_to_micros(Utc::now()) - Duration::days(1);
    let mut ids = Vec::new();
    for i in 0..12 {
        let c = crm.create_contact(new_contact(i)).await.unwrap();
        crm.log_activity(NewActivity::new(c.id, ActivityKind::Meeting).occurred_at(base))
            .await
            .unwrap();
        ids.push(c.id);
    }
    // Every score far from the model's (a meeting a day old scores about 10).
    let mut tx = owner.begin(tenant, ctx()).await.unwrap();
    let all_high: Vec<ContactScore> = ids
        .iter()
        .map(|id| ContactScore::new(*id, Score::new(77).unwrap()))
        .collect();
    tx.write_scores(&all_high).await.unwrap();
    tx.commit().await.unwrap();
    let (renamed, deleted, survivor, loser, logged) = (ids[3], ids[5], ids[7], ids[8], ids[10]);

    // The other writer: holds the locks of four contacts.
    let mut t0 = owner.begin(tenant, ctx()).await.unwrap();
    let c = t0.get_contact(renamed).await.unwrap().unwrap();
    t0.update_contact(
        renamed,
        c.version,
        ContactPatch {
            last_name: Some(PersonName::parse("Byron").unwrap()),
            ..ContactPatch::default()
        },
    )
    .await
    .unwrap();
    assert!(t0.delete_contact(deleted).await.unwrap());
    t0.merge_contacts(survivor, loser, ConflictPolicy::NonEmptyIncoming)
        .await
        .unwrap();

    let now = truncate_to_micros(Utc::now());
    let options = RescoreOptions::new().with_now(now).with_chunk_size(2);
    let store = owner.db().store();
    let running = tokio::spawn(async move {
        let model = ScoringModel::default();
        if own {
            rescore(&store, tenant, ctx(), &model, &options).await
        } else {
            let mut tx = store.begin(tenant, ctx()).await?;
            let report = rescore_in_transaction(tx.as_mut(), &model, &options).await?;
            tx.commit().await?;
            Ok(report)
        }
    });
    until_backends_wait_for_locks(owner.db(), 1).await;
    // Logging an activity takes a key-share lock on its contact, which a
    // score write does not block: it does not wait for the rescore.
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        crm.log_activity(NewActivity::new(logged, ActivityKind::Meeting).occurred_at(base)),
    )
    .await
    .expect("logging an activity does not wait for the rescore")
    .unwrap();
    assert!(!running.is_finished(), "the rescore waits for the locks");
    t0.commit().await.unwrap();
    let report = running.await.unwrap().expect("the rescore succeeds");
    assert!(report.written <= report.changed);
    assert!(
        report.written >= report.changed.saturating_sub(2),
        "only the deleted contact and the loser may be left unwritten: {report:?}"
    );

    // The other writer's writes are all there.
    let c = crm.get_contact(renamed).await.unwrap().unwrap();
    assert_eq!(c.last_name.as_str(), "Byron", "the rename stays");
    assert!(crm.get_contact(deleted).await.unwrap().is_none());
    assert!(crm.get_contact(loser).await.unwrap().is_none());
    let moved = crm
        .timeline(survivor, &PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(
        moved.items.len(),
        2,
        "the survivor has the loser's activity"
    );
    let logged_page = crm.timeline(logged, &PageRequest::first(10)).await.unwrap();
    assert_eq!(logged_page.items.len(), 2, "the activity logged meanwhile");

    // The rescore wrote every score left but those whose inputs the
    // writers changed (it may have read them before): a second rescore
    // at the same time changes nothing else.
    let untouched: Vec<ContactId> = ids
        .iter()
        .copied()
        .filter(|id| ![deleted, loser, survivor, logged].contains(id))
        .collect();
    let before = scores(&*owner, tenant, &untouched).await;
    assert!(
        before.iter().all(|s| s.is_some_and(|s| s.get() != 77)),
        "every score left was rewritten: {before:?}"
    );
    let again = rescore(
        &*owner,
        tenant,
        ctx(),
        &ScoringModel::default(),
        &RescoreOptions::new().with_now(now),
    )
    .await
    .unwrap();
    assert!(
        again.changed <= 2,
        "at most the survivor and {logged}: {again:?}"
    );
    assert_eq!(scores(&*owner, tenant, &untouched).await, before);
}

async fn writers_during_a_rescore_of_its_own_keep_their_writes(target: Target) {
    writers_during_a_rescore_keep_their_writes(target, true).await;
}

async fn writers_during_a_rescore_in_a_callers_transaction_keep_their_writes(target: Target) {
    writers_during_a_rescore_keep_their_writes(target, false).await;
}

/// A store whose pool holds one connection cannot read beside its writes,
/// nor can one whose other connection the caller holds: the rescore then
/// reads and writes on its one transaction, and does not wait for a
/// second connection.
async fn a_rescore_without_a_spare_connection_runs_on_one(target: Target) {
    let Some(owner) = TestStore::on(target).await else {
        return;
    };
    for pool in [1, 2] {
        let store = owner
            .db()
            .store_with(pool, crm_core::conformance::test_pipelines());
        let tenant = TenantId::new();
        let crm = store.scope(tenant, &ctx());
        for i in 0..5 {
            let c = crm.create_contact(new_contact(i)).await.unwrap();
            crm.log_activity(NewActivity::new(c.id, ActivityKind::Call))
                .await
                .unwrap();
        }
        // With a pool of two, the caller holds one (begun: it holds the
        // connection).
        let mut held = None;
        if pool == 2 {
            let mut tx = store.begin(TenantId::new(), ctx()).await.unwrap();
            tx.get_contact(ContactId::new()).await.unwrap();
            held = Some(tx);
        }
        let report = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            rescore(
                &store,
                tenant,
                ctx(),
                &ScoringModel::default(),
                &RescoreOptions::new().with_chunk_size(2),
            ),
        )
        .await
        .expect("no wait for a second connection")
        .unwrap();
        assert_eq!((report.scanned, report.written), (5, 5), "pool of {pool}");
        // Every connection in use: no spare one.
        let tx = store.begin(tenant, ctx()).await.unwrap();
        if pool == 1 {
            assert!(!store.concurrent_transactions());
        }
        drop(tx);
        if let Some(tx) = held {
            tx.rollback().await.unwrap();
        }
    }
}

/// A contact's live state after `store` reads it.
async fn live_log(store: &dyn Store, tenant: TenantId, id: ContactId) -> Option<f64> {
    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    let log = tx
        .live_score_log(id)
        .await
        .unwrap()
        .expect("the contact")
        .log;
    tx.rollback().await.unwrap();
    log
}

/// A rebuild of the live states while another process logs an activity:
/// the activity, acknowledged while the rebuild waits for its contact's
/// state, counts in the state the rebuild leaves, as a rebuild run
/// afterwards finds it. The rebuild locks each chunk's states before it
/// reads the chunk: computed from a read made before the activity
/// committed and written after, the state would drop it.
async fn an_activity_logged_during_a_rebuild_of_the_live_states_counts(target: Target) {
    let Some(owner) = TestStore::on(target).await else {
        return;
    };
    let tenant = TenantId::new();
    let crm = owner.scope(tenant, &ctx());
    let base = truncate_to_micros(Utc::now()) - Duration::hours(1);
    let mut ids = Vec::new();
    for i in 0..3 {
        let c = crm.create_contact(new_contact(i)).await.unwrap();
        crm.log_activity(NewActivity::new(c.id, ActivityKind::Meeting).occurred_at(base))
            .await
            .unwrap();
        ids.push(c.id);
    }
    let one = live_log(&*owner, tenant, ids[1]).await;
    // Another process logs a second activity on the middle contact and has
    // not committed: it holds the contact's state.
    let mut logger = owner.begin(tenant, ctx()).await.unwrap();
    logger
        .log_activity(NewActivity::new(ids[1], ActivityKind::Meeting).occurred_at(base))
        .await
        .unwrap();
    let store = owner.db().store();
    let running = tokio::spawn(async move {
        let options = RescoreOptions::new()
            .with_rebuild_live(true)
            .with_chunk_size(2);
        rescore(&store, tenant, ctx(), &ScoringModel::default(), &options).await
    });
    until_backends_wait_for_locks(owner.db(), 1).await;
    logger
        .commit()
        .await
        .expect("the second activity is acknowledged");
    let report = running.await.unwrap().unwrap();
    assert_eq!(report.live_rebuilt, 3);
    let after = live_log(&*owner, tenant, ids[1]).await;
    assert_ne!(after, one, "the second activity counts");
    let again = owner.db().store();
    rescore(
        &again,
        tenant,
        ctx(),
        &ScoringModel::default(),
        &RescoreOptions::new().with_rebuild_live(true),
    )
    .await
    .unwrap();
    let rebuilt = live_log(&*owner, tenant, ids[1]).await;
    assert_eq!(after, rebuilt, "the state the race left is the rebuilt one");
}

/// Rebuilds of the live states in small chunks while other processes
/// update, merge and log activities on the same contacts: no deadlock and
/// no untyped failure on either side (a rebuild takes each contact before
/// its state, as the writers do), and every activity acknowledged counts
/// in the states a last rebuild leaves unchanged.
async fn rebuilds_beside_updates_merges_and_loggers_never_deadlock(target: Target) {
    use crm_core::{Error, bulk::ConflictPolicy as Policy};
    let Some(owner) = TestStore::on(target).await else {
        return;
    };
    let tenant = TenantId::new();
    let crm = owner.scope(tenant, &ctx());
    let mut ids = Vec::new();
    for i in 0..24 {
        let c = crm.create_contact(new_contact(i)).await.unwrap();
        ids.push(c.id);
    }
    let ids = std::sync::Arc::new(ids);
    let mut writers = Vec::new();
    for w in 0..3u64 {
        let store = owner.db().store();
        let ids = ids.clone();
        writers.push(tokio::spawn(async move {
            let crm = store.scope(tenant, &ctx());
            let mut rng = fastrand::Rng::with_seed(w);
            for _ in 0..40 {
                let a = ids[rng.usize(..ids.len())];
                let b = ids[rng.usize(..ids.len())];
                let r = match rng.u8(..3) {
                    0 => crm
                        .log_activity(NewActivity::new(a, ActivityKind::Call))
                        .await
                        .map(drop),
                    1 => match crm.get_contact(a).await {
                        Ok(Some(c)) => crm
                            .update_contact(
                                c.id,
                                c.version,
                                ContactPatch {
                                    title: Some(Some(
                                        crm_core::domain::JobTitle::parse("Lead").unwrap(),
                                    )),
                                    ..ContactPatch::default()
                                },
                            )
                            .await
                            .map(drop),
                        other => other.map(drop),
                    },
                    _ if a != b => crm
                        .merge_contacts(a, b, Policy::NonEmptyIncoming)
                        .await
                        .map(drop),
                    _ => Ok(()),
                };
                match r {
                    Ok(()) | Err(Error::NotFound { .. } | Error::Conflict { .. }) => {}
                    Err(e) => panic!("a writer beside the rebuilds failed: {e:?}"),
                }
            }
        }));
    }
    for _ in 0..4 {
        let store = owner.db().store();
        let options = RescoreOptions::new()
            .with_rebuild_live(true)
            .with_chunk_size(3);
        rescore(&store, tenant, ctx(), &ScoringModel::default(), &options)
            .await
            .expect("a rebuild beside the writers");
    }
    for w in writers {
        w.await.unwrap();
    }
    // What the racing rebuilds and the writers' own updates left is what
    // a rebuild now computes (up to rounding: a merge adds the loser's
    // state to the survivor's instead of summing the terms again).
    let mut left = Vec::new();
    for id in ids.iter() {
        let mut tx = owner.begin(tenant, ctx()).await.unwrap();
        left.push(tx.live_score_log(*id).await.unwrap().and_then(|s| s.log));
        tx.rollback().await.unwrap();
    }
    let store = owner.db().store();
    let options = RescoreOptions::new().with_rebuild_live(true);
    rescore(&store, tenant, ctx(), &ScoringModel::default(), &options)
        .await
        .unwrap();
    for (id, left) in ids.iter().zip(left) {
        let mut tx = owner.begin(tenant, ctx()).await.unwrap();
        let rebuilt = tx.live_score_log(*id).await.unwrap().and_then(|s| s.log);
        tx.rollback().await.unwrap();
        match (left, rebuilt) {
            (Some(a), Some(b)) => assert!(
                (a - b).abs() <= 1e-9 * b.abs().max(1.0),
                "contact {id}: the race left {a}, a rebuild gives {b}"
            ),
            (a, b) => assert_eq!(a, b, "contact {id}"),
        }
    }
}

/// A rebuild of the live states and a merge of two contacts of its chunk:
/// the rebuild locks the chunk's contacts, then their states, then writes
/// their scores; the merge locks both contacts, then the survivor's state.
/// A session holding `signals` stops each after its first locks (the
/// chunk's read and the merge's move of signals both need it); released,
/// both end without a deadlock. With the states locked before the
/// contacts, they deadlocked.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_and_a_merge_do_not_deadlock() {
    let owner = TestStore::new().await;
    let tenant = TenantId::new();
    let crm = owner.scope(tenant, &ctx());
    let s = crm.create_contact(new_contact(100)).await.unwrap();
    let l = crm.create_contact(new_contact(101)).await.unwrap();
    for id in [s.id, l.id] {
        crm.log_activity(NewActivity::new(id, ActivityKind::Meeting))
            .await
            .unwrap();
    }
    let side = owner.db().client().await;
    side.batch_execute("BEGIN; LOCK TABLE crm.signals IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let store = owner.db().store();
    let rescoring = tokio::spawn(async move {
        rescore(
            &store,
            tenant,
            ctx(),
            &ScoringModel::default(),
            &RescoreOptions::new().with_rebuild_live(true),
        )
        .await
    });
    until_backends_wait_for_locks(owner.db(), 1).await;
    let store = owner.db().store();
    let (sid, lid) = (s.id, l.id);
    let merging = tokio::spawn(async move {
        let mut tx = store.begin(tenant, ctx()).await?;
        tx.merge_contacts(sid, lid, ConflictPolicy::NonEmptyIncoming)
            .await?;
        tx.commit().await
    });
    until_backends_wait_for_locks(owner.db(), 2).await;
    side.batch_execute("ROLLBACK").await.unwrap();
    let r = tokio::time::timeout(std::time::Duration::from_secs(60), rescoring)
        .await
        .expect("the rescore ends")
        .unwrap();
    let m = tokio::time::timeout(std::time::Duration::from_secs(60), merging)
        .await
        .expect("the merge ends")
        .unwrap();
    assert!(
        r.is_ok() && m.is_ok(),
        "rescore: {:?}\nmerge: {:?}",
        r.as_ref().err(),
        m.as_ref().err()
    );
}

crate::on_every_target!(
    rebuilds_beside_updates_merges_and_loggers_never_deadlock(worker_threads = 4),
    an_activity_logged_during_a_rebuild_of_the_live_states_counts,
    writers_during_a_rescore_of_its_own_keep_their_writes(worker_threads = 4),
    writers_during_a_rescore_in_a_callers_transaction_keep_their_writes(worker_threads = 4),
    a_rescore_without_a_spare_connection_runs_on_one,
);

#![cfg(all(feature = "postgres", feature = "conformance"))]
//! Scores live in `contact_ranks`, one row per contact beside it, with
//! copies of the contact's active flag and creation time (schema 17).
//! These races write scores from one process while others change,
//! create, delete and merge the same contacts, then check that every
//! acknowledged write is there, that each contact has exactly its rank
//! row and that the row's copies follow the contact, and that the top
//! leads are the active contacts by score.

mod support;

use std::collections::HashMap;

use chrono::{Duration, Utc};
use crm_core::{
    Actor, ContactQuery, Context, PostgresStore, Store, StoreExt, TenantId, Transaction,
    bulk::{ConflictPolicy, UnmergeConflicts},
    domain::{
        ActivityKind, Contact, ContactId, ContactPatch, ContactScore, Email, NewActivity,
        NewContact, PersonName, Score, truncate_to_micros,
    },
    scoring::{RescoreOptions, ScoringModel, rescore_in_transaction},
};
use support::{Target, TestStore, ranks_out_of_step, until_backends_wait_for_locks};

fn ctx() -> Context {
    Context::new(Actor::parse("user:rank-race").unwrap())
}

fn new_contact(tag: &str, i: usize) -> NewContact {
    NewContact::new(
        Email::parse(&format!("{tag}{i}@rank.example")).unwrap(),
        PersonName::parse("Ada").unwrap(),
        PersonName::parse("Lovelace").unwrap(),
    )
}

/// Runs `op` until it succeeds or fails with an error that is not
/// retryable.
async fn retried<T, F, Fut>(mut op: F) -> crm_core::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = crm_core::Result<T>>,
{
    loop {
        match op().await {
            Err(e) if e.is_retryable() => tokio::task::yield_now().await,
            other => return other,
        }
    }
}

/// Flips the active flag of `ids` `rounds` times each, in turn (first to
/// inactive), and returns the flag each was last acknowledged with.
async fn flipper(
    store: PostgresStore,
    tenant: TenantId,
    ids: Vec<ContactId>,
    rounds: usize,
) -> HashMap<ContactId, bool> {
    let crm = store.scope(tenant, &ctx());
    let mut last = HashMap::new();
    for round in 0..rounds {
        for id in &ids {
            let active = round % 2 == 1;
            let written = retried(|| async {
                let c = crm
                    .get_contact(*id)
                    .await?
                    .expect("a flipper's contact stays");
                crm.update_contact(
                    *id,
                    c.version,
                    ContactPatch {
                        active: Some(active),
                        ..ContactPatch::default()
                    },
                )
                .await
            })
            .await
            .unwrap();
            assert_eq!(written.active, active);
            last.insert(*id, active);
        }
    }
    last
}

/// Writes a score to every contact of `ids` per round, all in one
/// transaction per round, and returns the scores last acknowledged.
async fn scorer(
    store: PostgresStore,
    tenant: TenantId,
    ids: Vec<ContactId>,
    rounds: usize,
) -> HashMap<ContactId, Score> {
    let mut last = HashMap::new();
    for round in 0..rounds {
        let scores: Vec<ContactScore> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                ContactScore::new(
                    *id,
                    Score::new(((i * 7 + round * 13) % 101) as i64).unwrap(),
                )
            })
            .collect();
        retried(|| async {
            let mut tx = store.begin(tenant, ctx()).await?;
            tx.write_scores(&scores).await?;
            tx.commit().await
        })
        .await
        .unwrap();
        for s in &scores {
            last.insert(s.contact, s.score);
        }
    }
    last
}

/// Three processes: one writes scores to every contact, one flips the
/// active flag of a third of them, one creates contacts, deletes some of
/// them and merges pairs of the scored ones. Afterwards: every contact has
/// its rank row and no row is left without one, the rows' copies follow
/// the contacts, each flipped contact has its last acknowledged flag and
/// each scored contact that is left its last acknowledged score, and the
/// top leads are the active contacts by score then id.
async fn score_writes_beside_contact_writers_keep_every_write(target: Target) {
    let Some(owner) = TestStore::on(target).await else {
        return;
    };
    let tenant = TenantId::new();
    let crm = owner.scope(tenant, &ctx());
    let mut ids = Vec::new();
    for i in 0..60 {
        ids.push(crm.create_contact(new_contact("s", i)).await.unwrap().id);
    }
    let flipped: Vec<ContactId> = ids[..20].to_vec();
    let merged: Vec<(ContactId, ContactId)> = (0..5).map(|i| (ids[40 + i], ids[50 + i])).collect();

    let scores = tokio::spawn(scorer(owner.db().store(), tenant, ids.clone(), 25));
    let flags = tokio::spawn(flipper(owner.db().store(), tenant, flipped.clone(), 5));
    let lifecycle = {
        let store = owner.db().store();
        let merged = merged.clone();
        tokio::spawn(async move {
            let crm = store.scope(tenant, &ctx());
            let mut created = Vec::new();
            for i in 0..30 {
                created.push(crm.create_contact(new_contact("n", i)).await.unwrap().id);
            }
            for id in created.iter().step_by(3) {
                assert!(
                    retried(|| crm.delete_contact(*id)).await.unwrap(),
                    "deleted once"
                );
            }
            for (survivor, loser) in &merged {
                retried(|| async {
                    let mut tx = store.begin(tenant, ctx()).await?;
                    tx.merge_contacts(*survivor, *loser, ConflictPolicy::NonEmptyIncoming)
                        .await?;
                    tx.commit().await
                })
                .await
                .unwrap();
            }
            created
        })
    };
    let scores = scores.await.unwrap();
    let flags = flags.await.unwrap();
    let created = lifecycle.await.unwrap();

    assert_eq!(ranks_out_of_step(owner.db()).await, 0, "rank rows follow");
    let losers: Vec<ContactId> = merged.iter().map(|(_, l)| *l).collect();
    let mut everyone = Vec::new();
    for id in ids.iter().chain(&created) {
        if let Some(c) = crm.get_contact(*id).await.unwrap() {
            everyone.push(c);
        }
    }
    assert_eq!(
        everyone.len(),
        60 - 5 + 30 - 10,
        "the losers and the deleted are gone"
    );
    for c in &everyone {
        assert!(!losers.contains(&c.id));
        if let Some(active) = flags.get(&c.id) {
            assert_eq!(c.active, *active, "the last flag acknowledged");
        }
        match scores.get(&c.id) {
            Some(score) => assert_eq!(c.score, *score, "the last score acknowledged"),
            None => assert_eq!(c.score, Score::MIN, "a new contact's score"),
        }
    }
    let mut leads: Vec<(Score, ContactId)> = everyone
        .iter()
        .filter(|c| c.active)
        .map(|c| (c.score, c.id))
        .collect();
    leads.sort_by(|a, b| b.cmp(a));
    let top = crm
        .search_contacts(&ContactQuery::top_leads(100))
        .await
        .unwrap();
    let got: Vec<(Score, ContactId)> = top.items.iter().map(|c| (c.score, c.id)).collect();
    assert_eq!(got, leads, "the top leads, from the rank rows");
}

/// Merges `loser` into `survivor` from another store while `open` (a
/// transaction that wrote the loser's score) is still open: waits until
/// the merge waits for a lock, commits `open`, lets the merge finish, then
/// takes the merge back and returns the loser as it comes back.
async fn merged_and_unmerged_beside(
    owner: &TestStore,
    tenant: TenantId,
    survivor: ContactId,
    loser: ContactId,
    open: Box<dyn Transaction>,
) -> Contact {
    let merger = owner.db().store();
    let merging = tokio::spawn(async move {
        let mut tx = merger.begin(tenant, ctx()).await?;
        tx.merge_contacts(survivor, loser, ConflictPolicy::NonEmptyIncoming)
            .await?;
        tx.commit().await
    });
    until_backends_wait_for_locks(owner.db(), 1).await;
    open.commit().await.unwrap();
    merging.await.unwrap().expect("the merge");
    let crm = owner.scope(tenant, &ctx());
    let merge = crm.contact_merges(survivor).await.unwrap()[0].id;
    crm.unmerge_contacts(merge, UnmergeConflicts::KeepCurrent)
        .await
        .unwrap();
    crm.get_contact(loser)
        .await
        .unwrap()
        .expect("the loser is back")
}

/// A score written to a merge's loser by a transaction still open when
/// the merge reads the loser, and committed before the merge: the merge
/// waits for it and keeps it, so the unmerge brings the loser back with
/// the acknowledged score (not the one from before the write).
async fn a_score_acknowledged_before_a_merge_commits_survives_its_unmerge(target: Target) {
    let Some(owner) = TestStore::on(target).await else {
        return;
    };
    let tenant = TenantId::new();
    let crm = owner.scope(tenant, &ctx());
    let s = crm.create_contact(new_contact("m", 0)).await.unwrap();
    let l = crm.create_contact(new_contact("m", 1)).await.unwrap();
    let ten = Score::new(10).unwrap();
    let eighty = Score::new(80).unwrap();
    let mut tx = owner.begin(tenant, ctx()).await.unwrap();
    tx.write_scores(&[ContactScore::new(l.id, ten)])
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let writer = owner.db().store();
    let mut w = writer.begin(tenant, ctx()).await.unwrap();
    let written = w
        .write_scores(&[ContactScore::new(l.id, eighty)])
        .await
        .unwrap();
    assert_eq!(written, 1);
    let back = merged_and_unmerged_beside(&owner, tenant, s.id, l.id, w).await;
    assert_eq!(
        back.score, eighty,
        "the score acknowledged before the merge"
    );
}

/// The same through a rescore, one long transaction: a merge begun while
/// it runs waits for it, and the unmerged loser has the rescored score,
/// as its twin (the same activity, never merged) has.
async fn a_rescore_committed_during_a_merge_is_not_undone_by_the_unmerge(target: Target) {
    let Some(owner) = TestStore::on(target).await else {
        return;
    };
    let tenant = TenantId::new();
    let crm = owner.scope(tenant, &ctx());
    let base = truncate_to_micros(Utc::now()) - Duration::days(1);
    let s = crm.create_contact(new_contact("r", 0)).await.unwrap();
    let l = crm.create_contact(new_contact("r", 1)).await.unwrap();
    let twin = crm.create_contact(new_contact("r", 2)).await.unwrap();
    for id in [l.id, twin.id] {
        crm.log_activity(NewActivity::new(id, ActivityKind::Meeting).occurred_at(base))
            .await
            .unwrap();
    }
    let high = Score::new(77).unwrap();
    let mut tx = owner.begin(tenant, ctx()).await.unwrap();
    tx.write_scores(&[
        ContactScore::new(s.id, high),
        ContactScore::new(l.id, high),
        ContactScore::new(twin.id, high),
    ])
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let rescorer = owner.db().store();
    let mut r = rescorer.begin(tenant, ctx()).await.unwrap();
    let options = RescoreOptions::new().with_now(truncate_to_micros(Utc::now()));
    let report = rescore_in_transaction(r.as_mut(), &ScoringModel::default(), &options)
        .await
        .unwrap();
    assert!(report.written >= 2, "{report:?}");
    let back = merged_and_unmerged_beside(&owner, tenant, s.id, l.id, r).await;
    let twin = crm.get_contact(twin.id).await.unwrap().unwrap();
    assert_ne!(twin.score, high, "the rescore changed the twin");
    assert_eq!(back.score, twin.score, "the loser's rescored score");
}

/// An erasure begun while a score write to its contact is open waits for
/// it and returns the contact with that score.
async fn an_erasure_returns_the_score_written_before_it(target: Target) {
    let Some(owner) = TestStore::on(target).await else {
        return;
    };
    let tenant = TenantId::new();
    let crm = owner.scope(tenant, &ctx());
    let c = crm.create_contact(new_contact("e", 0)).await.unwrap();
    let score = Score::new(55).unwrap();
    let writer = owner.db().store();
    let mut w = writer.begin(tenant, ctx()).await.unwrap();
    assert_eq!(
        w.write_scores(&[ContactScore::new(c.id, score)])
            .await
            .unwrap(),
        1
    );
    let eraser = owner.db().store();
    let id = c.id;
    let erasing = tokio::spawn(async move {
        let mut tx = eraser.begin(tenant, ctx()).await?;
        let out = tx.erase_contact(id).await?;
        tx.commit().await?;
        Ok::<_, crm_core::Error>(out)
    });
    until_backends_wait_for_locks(owner.db(), 1).await;
    w.commit().await.unwrap();
    let erased = erasing.await.unwrap().unwrap();
    assert_eq!(erased.score, score, "the score written before the erasure");
    let stored = crm.get_contact(c.id).await.unwrap().unwrap();
    assert_eq!(stored.score, score);
}

on_every_target!(
    score_writes_beside_contact_writers_keep_every_write(worker_threads = 4),
    a_score_acknowledged_before_a_merge_commits_survives_its_unmerge(worker_threads = 4),
    a_rescore_committed_during_a_merge_is_not_undone_by_the_unmerge(worker_threads = 4),
    an_erasure_returns_the_score_written_before_it(worker_threads = 4),
);

#![cfg(all(feature = "postgres", feature = "conformance"))]
//! Two transactions linking the same external id to different records, on
//! PostgreSQL and on a Citus cluster: exactly one wins, the other gets
//! `Error::Duplicate` naming the winner's record (never a database error,
//! never two records holding one id), and its transaction stays usable.

mod support;

use crm_core::{
    Actor, Context, Entity, Error, Store, TenantId,
    domain::{EntityKind, ExternalId, ExternalLink, ExternalSystem},
};
use support::{Target, TestStore};
use uuid::Uuid;

fn ctx() -> Context {
    Context::new(Actor::parse("user:external-race").unwrap())
}

fn hubspot() -> ExternalSystem {
    ExternalSystem::parse("hubspot").unwrap()
}

fn link(record: Uuid, external: &str) -> ExternalLink {
    ExternalLink::new(
        EntityKind::Contact,
        record,
        ExternalId::parse(external).unwrap(),
    )
}

/// True when `result` is the typed refusal of `external` held by `holder`.
fn refused_for(result: &Result<u64, Error>, external: &str, holder: Uuid) -> bool {
    matches!(result, Err(Error::Duplicate { entity: Entity::Contact, field: "external_id", value, existing_id })
        if value == external && *existing_id == holder.to_string())
}

/// T1 links A to the id and holds; T2 links B to it and waits for T1;
/// T1 commits: T2 is refused with the typed error and goes on. Then the
/// same with T1 rolling back: T2 takes the id.
async fn a_link_waiting_for_a_racing_one_is_refused_when_it_commits_and_wins_when_it_rolls_back(
    target: Target,
) {
    let Some(owner) = TestStore::on(target).await else {
        return;
    };
    for first_commits in [true, false] {
        let (one, two) = (owner.db().store(), owner.db().store());
        let tenant = TenantId::new();
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let mut t1 = one.begin(tenant, ctx()).await.unwrap();
        assert_eq!(
            t1.link_external_ids(&hubspot(), &[link(a, "42")])
                .await
                .unwrap(),
            1
        );
        let second = tokio::spawn(async move {
            let mut t2 = two.begin(tenant, ctx()).await.unwrap();
            let out = t2.link_external_ids(&hubspot(), &[link(b, "42")]).await;
            // The transaction goes on after a refusal.
            let after = t2.link_external_ids(&hubspot(), &[link(c, "43")]).await;
            t2.commit().await.unwrap();
            (out, after)
        });
        support::until_a_backend_waits_for_a_lock(owner.db()).await;
        if first_commits {
            t1.commit().await.unwrap();
        } else {
            t1.rollback().await.unwrap();
        }
        let (out, after) = second.await.unwrap();
        assert_eq!(after.ok(), Some(1), "T2 goes on after the link");
        let mut check = owner.begin(tenant, ctx()).await.unwrap();
        let held = check
            .records_by_external_id(
                &hubspot(),
                EntityKind::Contact,
                &[ExternalId::parse("42").unwrap()],
            )
            .await
            .unwrap();
        check.rollback().await.unwrap();
        let holder = held.values().copied().collect::<Vec<_>>();
        if first_commits {
            assert!(refused_for(&out, "42", a), "T1 committed first: {out:?}");
            assert_eq!(holder, vec![a]);
        } else {
            assert_eq!(out.ok(), Some(1), "T1 rolled back: T2 takes the id");
            assert_eq!(holder, vec![b]);
        }
    }
}

/// Fifty times: two stores link one id to two records at the same moment.
/// Exactly one succeeds; the other is refused naming it; the id names the
/// winner alone.
async fn racing_links_of_one_external_id_leave_exactly_one_winner(target: Target) {
    let Some(owner) = TestStore::on(target).await else {
        return;
    };
    let (one, two) = (owner.db().store(), owner.db().store());
    let tenant = TenantId::new();
    for round in 0..50 {
        let external = format!("race-{round}");
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(2));
        let run = |store: crm_core::PostgresStore, record: Uuid| {
            let external = external.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let mut tx = store.begin(tenant, ctx()).await?;
                barrier.wait().await;
                let n = tx
                    .link_external_ids(&hubspot(), &[link(record, &external)])
                    .await;
                match n {
                    Ok(n) => {
                        tx.commit().await?;
                        Ok(n)
                    }
                    Err(e) => {
                        tx.rollback().await?;
                        Err(e)
                    }
                }
            })
        };
        let (ra, rb) = (run(one.clone(), a), run(two.clone(), b));
        let (ra, rb) = (ra.await.unwrap(), rb.await.unwrap());
        let winner = match (&ra, &rb) {
            (Ok(1), _) => {
                assert!(refused_for(&rb, &external, a), "round {round}: {rb:?}");
                a
            }
            (_, Ok(1)) => {
                assert!(refused_for(&ra, &external, b), "round {round}: {ra:?}");
                b
            }
            _ => panic!("round {round}: no winner: {ra:?} / {rb:?}"),
        };
        let mut check = owner.begin(tenant, ctx()).await.unwrap();
        let held = check
            .records_by_external_id(
                &hubspot(),
                EntityKind::Contact,
                &[ExternalId::parse(&external).unwrap()],
            )
            .await
            .unwrap();
        let linked = check
            .external_ids(&hubspot(), EntityKind::Contact, &[a, b])
            .await
            .unwrap();
        check.rollback().await.unwrap();
        assert_eq!(held.values().copied().collect::<Vec<_>>(), vec![winner]);
        assert_eq!(linked.len(), 1, "round {round}: only the winner is linked");
    }
}

crate::on_every_target!(
    a_link_waiting_for_a_racing_one_is_refused_when_it_commits_and_wins_when_it_rolls_back,
    racing_links_of_one_external_id_leave_exactly_one_winner,
);

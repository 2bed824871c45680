#![cfg(all(feature = "postgres", feature = "conformance"))]
//! Unmerges racing other writers on PostgreSQL, several stores over one
//! database, each race set up step by step (a transaction holds a lock,
//! the unmerge is seen waiting, then the first commits): an activity
//! logged on the survivor, an update of a deal that came from the loser,
//! two unmerges of one merge, and a merge of the survivor into another
//! contact. Every acknowledged write is intact afterwards, and nothing
//! deadlocks. Also: what an erasure leaves in the journal's table.

mod support;

use crm_core::{
    Actor, Context, Error, Store, StoreExt, TenantId,
    bulk::{ConflictPolicy, MergeId, UnmergeConflicts, UnmergeRefusal},
    domain::{
        ActivityKind, ContactId, ContactPatch, Currency, DealPatch, DealTitle, Email, Money,
        NewActivity, NewContact, NewDeal, PersonName,
    },
    scoring::{ScoringModel, live_log_sum},
};
use support::{Target, TestStore, until_backends_wait_for_locks};

fn ctx() -> Context {
    Context::new(Actor::parse("user:unmerge-race").unwrap())
}

fn new_contact(email: &str) -> NewContact {
    NewContact::new(
        Email::parse(email).unwrap(),
        PersonName::parse("Ada").unwrap(),
        PersonName::parse("Lovelace").unwrap(),
    )
}

/// A survivor and a loser with a deal and an activity, merged.
async fn merged(
    owner: &TestStore,
    tenant: TenantId,
) -> (ContactId, ContactId, crm_core::domain::Deal, MergeId) {
    let crm = owner.scope(tenant, &ctx());
    let s = crm
        .create_contact(new_contact("s@x.example"))
        .await
        .unwrap();
    let l = crm
        .create_contact(new_contact("l@x.example"))
        .await
        .unwrap();
    let eur = Currency::parse("EUR").unwrap();
    let d = crm
        .create_deal(NewDeal::new(
            l.id,
            DealTitle::parse("From the loser").unwrap(),
            Money::parse("10", eur).unwrap(),
        ))
        .await
        .unwrap();
    crm.log_activity(NewActivity::new(l.id, ActivityKind::Call))
        .await
        .unwrap();
    crm.merge_contacts(s.id, l.id, ConflictPolicy::NonEmptyIncoming)
        .await
        .unwrap();
    let m = crm.contact_merges(s.id).await.unwrap()[0].id;
    let d = crm.get_deal(d.id).await.unwrap().unwrap();
    (s.id, l.id, d, m)
}

/// An activity logged on the survivor while an unmerge recomputes its live
/// score is waited for: it stays on the survivor, and the survivor's live
/// state counts it.
async fn an_activity_logged_on_the_survivor_during_an_unmerge_is_kept_and_scored(target: Target) {
    let Some(owner) = TestStore::on(target).await else {
        return;
    };
    let tenant = TenantId::new();
    let (s, l, _, m) = merged(&owner, tenant).await;
    let mut t1 = owner.begin(tenant, ctx()).await.unwrap();
    let logged = t1
        .log_activity(NewActivity::new(s, ActivityKind::Meeting))
        .await
        .unwrap();
    let unmerger = owner.db().store();
    let unmerging = tokio::spawn(async move {
        unmerger
            .scope(tenant, &ctx())
            .unmerge_contacts(m, UnmergeConflicts::Refuse)
            .await
    });
    until_backends_wait_for_locks(owner.db(), 1).await;
    t1.commit().await.expect("the activity is acknowledged");
    unmerging.await.unwrap().expect("the unmerge");
    let crm = owner.scope(tenant, &ctx());
    let first = crm_core::PageRequest::first(100);
    let on_s = crm.timeline(s, &first).await.unwrap().items;
    assert_eq!(on_s.len(), 1, "{on_s:?}");
    assert_eq!(on_s[0].id, logged.id);
    assert_eq!(crm.timeline(l, &first).await.unwrap().items.len(), 1);
    let model = ScoringModel::default();
    let want = live_log_sum(
        on_s.iter()
            .filter_map(|a| model.log_term(model.activity_signal(a.kind), a.occurred_at)),
    );
    let mut tx = owner.begin(tenant, ctx()).await.unwrap();
    let got = tx.live_score_log(s).await.unwrap().unwrap().log;
    tx.commit().await.unwrap();
    assert_eq!(got, want, "the survivor's live state counts the activity");
}

/// An update of a deal that came from the loser, in progress when the
/// unmerge moves it back, is waited for and kept: the deal goes back with
/// the new title.
async fn a_deal_updated_during_an_unmerge_goes_back_with_the_update(target: Target) {
    let Some(owner) = TestStore::on(target).await else {
        return;
    };
    let tenant = TenantId::new();
    let (_, l, d, m) = merged(&owner, tenant).await;
    let mut t1 = owner.begin(tenant, ctx()).await.unwrap();
    let title = DealTitle::parse("Renamed meanwhile").unwrap();
    let patch = DealPatch {
        title: Some(title.clone()),
        ..DealPatch::default()
    };
    t1.update_deal(d.id, d.version, patch).await.unwrap();
    let unmerger = owner.db().store();
    let unmerging = tokio::spawn(async move {
        unmerger
            .scope(tenant, &ctx())
            .unmerge_contacts(m, UnmergeConflicts::Refuse)
            .await
    });
    until_backends_wait_for_locks(owner.db(), 1).await;
    t1.commit().await.expect("the update is acknowledged");
    let done = unmerging.await.unwrap().expect("the unmerge");
    assert_eq!(done.deals, vec![d.id]);
    let now = owner
        .scope(tenant, &ctx())
        .get_deal(d.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now.title, title);
    assert_eq!(now.contact_id, l);
    assert_eq!(now.version, d.version.next().next());
}

/// Two unmerges of one merge, both waiting for the survivor: one undoes
/// it, the other is refused as undone already; the loser is back once
/// with its deal.
async fn two_unmerges_of_one_merge_undo_it_once(target: Target) {
    let Some(owner) = TestStore::on(target).await else {
        return;
    };
    let tenant = TenantId::new();
    let (s, l, d, m) = merged(&owner, tenant).await;
    let mut t0 = owner.begin(tenant, ctx()).await.unwrap();
    let current = t0.get_contact(s).await.unwrap().unwrap();
    let patch = ContactPatch {
        email: Some(Email::parse("s2@x.example").unwrap()),
        ..ContactPatch::default()
    };
    t0.update_contact(s, current.version, patch).await.unwrap();
    let mut racers = Vec::new();
    for _ in 0..2 {
        let store = owner.db().store();
        racers.push(tokio::spawn(async move {
            store
                .scope(tenant, &ctx())
                .unmerge_contacts(m, UnmergeConflicts::Refuse)
                .await
        }));
    }
    until_backends_wait_for_locks(owner.db(), 2).await;
    t0.commit().await.expect("the email change is acknowledged");
    let mut done = 0;
    for r in racers {
        match r.await.unwrap() {
            Ok(_) => done += 1,
            Err(Error::UnmergeRefused {
                refusal: UnmergeRefusal::AlreadyUnmerged(_),
                ..
            }) => {}
            other => panic!("an unmerge: {other:?}"),
        }
    }
    assert_eq!(done, 1);
    let crm = owner.scope(tenant, &ctx());
    assert_eq!(
        crm.get_contact(s).await.unwrap().unwrap().email.as_str(),
        "s2@x.example"
    );
    assert!(crm.get_contact(l).await.unwrap().is_some());
    assert_eq!(crm.get_deal(d.id).await.unwrap().unwrap().contact_id, l);
}

/// An unmerge and a merge of the survivor into another contact, both
/// waiting for the survivor: either the unmerge goes first and both
/// succeed, or the merge does and the unmerge is refused naming it.
async fn an_unmerge_racing_a_merge_of_its_survivor_is_done_or_refused(target: Target) {
    let Some(owner) = TestStore::on(target).await else {
        return;
    };
    let tenant = TenantId::new();
    let (s, l, d, m) = merged(&owner, tenant).await;
    let x = owner
        .scope(tenant, &ctx())
        .create_contact(new_contact("x@x.example"))
        .await
        .unwrap()
        .id;
    let mut t0 = owner.begin(tenant, ctx()).await.unwrap();
    let current = t0.get_contact(s).await.unwrap().unwrap();
    let patch = ContactPatch {
        email: Some(Email::parse("s2@x.example").unwrap()),
        ..ContactPatch::default()
    };
    t0.update_contact(s, current.version, patch).await.unwrap();
    let unmerger = owner.db().store();
    let unmerging = tokio::spawn(async move {
        unmerger
            .scope(tenant, &ctx())
            .unmerge_contacts(m, UnmergeConflicts::Refuse)
            .await
    });
    let merger = owner.db().store();
    let merging = tokio::spawn(async move {
        merger
            .scope(tenant, &ctx())
            .merge_contacts(x, s, ConflictPolicy::NonEmptyIncoming)
            .await
    });
    until_backends_wait_for_locks(owner.db(), 2).await;
    t0.commit().await.unwrap();
    let (u, g) = (unmerging.await.unwrap(), merging.await.unwrap());
    g.expect("the merge");
    let crm = owner.scope(tenant, &ctx());
    assert!(crm.get_contact(s).await.unwrap().is_none(), "s merged away");
    let later = crm.contact_merges(x).await.unwrap()[0].id;
    match u {
        Ok(_) => {
            assert!(crm.get_contact(l).await.unwrap().is_some());
            assert_eq!(crm.get_deal(d.id).await.unwrap().unwrap().contact_id, l);
        }
        Err(Error::UnmergeRefused {
            refusal: UnmergeRefusal::SurvivorMerged { merge, into },
            ..
        }) => {
            assert_eq!((merge, into), (later, x));
            assert!(crm.get_contact(l).await.unwrap().is_none());
            assert_eq!(crm.get_deal(d.id).await.unwrap().unwrap().contact_id, x);
        }
        other => panic!("the unmerge: {other:?}"),
    }
}

/// Erasing the contact at the end of a chain of merges (A into B, B into
/// C, C erased) leaves none of the three's personal data in the journal's
/// rows: no snapshot, no email.
async fn an_erasure_leaves_no_personal_data_in_the_merge_journal(target: Target) {
    let Some(owner) = TestStore::on(target).await else {
        return;
    };
    let tenant = TenantId::new();
    let crm = owner.scope(tenant, &ctx());
    let mut ids = Vec::new();
    for e in [
        "first.person@x.example",
        "second.person@x.example",
        "third.person@x.example",
    ] {
        ids.push(crm.create_contact(new_contact(e)).await.unwrap().id);
    }
    crm.merge_contacts(ids[1], ids[0], ConflictPolicy::NonEmptyIncoming)
        .await
        .unwrap();
    crm.merge_contacts(ids[2], ids[1], ConflictPolicy::NonEmptyIncoming)
        .await
        .unwrap();
    crm.erase_contact(ids[2]).await.unwrap();
    let rows = owner
        .db()
        .client()
        .await
        .query(
            &owner.db().sql(
                "SELECT snapshot IS NULL, cleared, to_jsonb(m)::text FROM crm.contact_merges m \
                 WHERE tenant_id = $1",
            ),
            &[&tenant.as_uuid()],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    for r in rows {
        assert!(r.get::<_, bool>(0), "a snapshot is left");
        assert_eq!(r.get::<_, Option<String>>(1).as_deref(), Some("erased"));
        let text: String = r.get(2);
        assert!(!text.contains("person@"), "personal data is left: {text}");
    }
}

crate::on_every_target!(
    an_erasure_leaves_no_personal_data_in_the_merge_journal,
    an_activity_logged_on_the_survivor_during_an_unmerge_is_kept_and_scored(worker_threads = 4),
    a_deal_updated_during_an_unmerge_goes_back_with_the_update(worker_threads = 4),
    two_unmerges_of_one_merge_undo_it_once(worker_threads = 4),
    an_unmerge_racing_a_merge_of_its_survivor_is_done_or_refused(worker_threads = 4),
);

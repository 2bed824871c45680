#![cfg(all(feature = "postgres", feature = "conformance"))]
//! Batches of activities and signals at the edges of what one statement
//! carries, and refused batches beside open transactions, on PostgreSQL:
//!
//! - a batch whose rows pass one statement's parameters is inserted by
//!   several statements in one operation, every row kept, in order, with
//!   its live score and feed events as for a smaller batch;
//! - a batch the domain refuses (a row too long) reports its first refused
//!   row at once, even when another transaction holds the rows before it.

mod support;

use std::{collections::HashMap, time::Duration};

use crm_core::{
    Actor, Context, Error, Store, StoreExt, TenantId,
    domain::{ActivityKind, ContactId, Email, NewActivity, NewContact, NewSignal, PersonName},
    domain::{MAX_BODY_CHARS, SignalKind},
    scoring::{ScoringModel, explain},
};
use support::TestStore;

fn ctx() -> Context {
    Context::new(Actor::parse("user:batch-limits").unwrap())
}

async fn contacts(store: &TestStore, tenant: TenantId, n: usize) -> Vec<ContactId> {
    let crm = store.scope(tenant, &ctx());
    let mut ids = Vec::new();
    for i in 0..n {
        let new = NewContact::new(
            Email::parse(&format!("limit{i}@x.example")).unwrap(),
            PersonName::parse("Ada").unwrap(),
            PersonName::parse("Lovelace").unwrap(),
        );
        ids.push(crm.create_contact(new).await.unwrap().id);
    }
    ids
}

/// How many feed events of `kind` the tenant's committed transactions hold.
async fn events(store: &TestStore, tenant: TenantId, kind: &str) -> i64 {
    let client = store.db().client().await;
    client
        .query_one(
            &store.db().sql(
                "SELECT count(*) FROM crm.feed_events WHERE tenant_id = $1 AND entity_kind = $2",
            ),
            &[&tenant.as_uuid(), &kind],
        )
        .await
        .unwrap()
        .get(0)
}

async fn live_scores_hold(store: &TestStore, tenant: TenantId, contacts: &[ContactId]) {
    let model = ScoringModel::default();
    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    for c in contacts {
        let e = explain(&mut *tx, &model, *c, None).await.unwrap().unwrap();
        assert!(e.live_consistent(), "contact {c}: {e:?}");
        assert!(e.live_log.is_some(), "contact {c} has a live state");
    }
}

/// 250 activities of 100,000 two-byte characters each: about 50 MB of
/// bodies, several statements' worth.
#[tokio::test]
async fn a_batch_past_one_statements_parameters_is_logged_whole_and_in_order() {
    let store = TestStore::new().await;
    let tenant = TenantId::new();
    let ids = contacts(&store, tenant, 3).await;
    const ROWS: usize = 250;
    let fill = "ж".repeat(MAX_BODY_CHARS - 4);
    let rows: Vec<NewActivity> = (0..ROWS)
        .map(|i| {
            NewActivity::new(ids[i % ids.len()], ActivityKind::ALL[i % 5])
                .body(&format!("{i:04}{fill}"))
                .unwrap()
        })
        .collect();
    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    let logged = tx.log_activities(&rows).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(logged.len(), ROWS);

    let client = store.db().client().await;
    let stored: HashMap<uuid::Uuid, (uuid::Uuid, String, i64)> = client
        .query(
            &store.db().sql(
                "SELECT id, contact_id, left(body, 4), octet_length(body)::int8 \
                 FROM crm.activities WHERE tenant_id = $1",
            ),
            &[&tenant.as_uuid()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
        .collect();
    assert_eq!(stored.len(), ROWS, "every row is stored, once");
    for (i, a) in logged.iter().enumerate() {
        let (contact, head, bytes) = &stored[&a.id.as_uuid()];
        assert_eq!(*contact, ids[i % ids.len()].as_uuid(), "row {i}'s contact");
        assert_eq!(
            head,
            &format!("{i:04}"),
            "row {i} is the activity returned as {i}"
        );
        assert_eq!(*bytes as usize, 4 + fill.len(), "row {i}'s body, whole");
        assert_eq!(a.body.as_deref().map(str::len), Some(4 + fill.len()));
    }
    assert_eq!(events(&store, tenant, "activity").await, ROWS as i64);
    live_scores_hold(&store, tenant, &ids).await;
}

/// 125,000 signals: past one statement's parameters by their number alone.
#[tokio::test]
async fn signals_past_one_statements_parameters_are_recorded_whole() {
    let store = TestStore::new().await;
    let tenant = TenantId::new();
    let ids = contacts(&store, tenant, 10).await;
    const ROWS: usize = 125_000;
    // Two the reference model weighs, one it does not.
    let kinds = [
        SignalKind::PAGE_VIEW,
        SignalKind::DEMO_REQUEST,
        SignalKind::parse("webinar_attended").unwrap(),
    ];
    let rows: Vec<NewSignal> = (0..ROWS)
        .map(|i| NewSignal::new(ids[i % ids.len()], kinds[i % kinds.len()].clone()))
        .collect();
    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    let recorded = tx.record_signals(&rows).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(recorded.len(), ROWS);

    let client = store.db().client().await;
    let per_kind: HashMap<String, i64> = client
        .query(
            &store.db().sql(
                "SELECT kind, count(DISTINCT id) FROM crm.signals WHERE tenant_id = $1 GROUP BY kind",
            ),
            &[&tenant.as_uuid()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (k, kind) in kinds.iter().enumerate() {
        let expected = (0..ROWS).filter(|i| i % kinds.len() == k).count() as i64;
        assert_eq!(per_kind.get(kind.as_str()), Some(&expected), "{kind:?}");
    }
    let returned: std::collections::HashSet<_> = recorded.iter().map(|s| s.id).collect();
    assert_eq!(returned.len(), ROWS, "each signal its own id");
    assert_eq!(events(&store, tenant, "signal").await, ROWS as i64);
    live_scores_hold(&store, tenant, &ids).await;
}

/// Another transaction holds the first row's contact (its live state, as a
/// single call leaves it until commit); a batch whose second row the domain
/// refuses reports that row at once, and one whose first row names no
/// contact reports that, as the in-memory store does, without waiting.
#[tokio::test]
async fn a_refused_batch_waits_for_no_other_transaction() {
    let store = TestStore::new().await;
    let tenant = TenantId::new();
    let ids = contacts(&store, tenant, 2).await;
    let mut holder = store.begin(tenant, ctx()).await.unwrap();
    holder
        .log_activity(NewActivity::new(ids[0], ActivityKind::Call))
        .await
        .unwrap();

    let other = store.db().store();
    let mut too_long = NewActivity::new(ids[0], ActivityKind::Note);
    too_long.body = Some("x".repeat(MAX_BODY_CHARS + 1));
    let ok = NewActivity::new(ids[0], ActivityKind::Email);
    let cases: [(&str, Vec<NewActivity>); 2] = [
        ("a row too long", vec![ok.clone(), too_long.clone()]),
        (
            "a missing contact first",
            vec![
                NewActivity::new(ContactId::new(), ActivityKind::Email),
                ok.clone(),
                too_long.clone(),
            ],
        ),
    ];
    for (what, rows) in cases {
        let mut tx = other.begin(tenant, ctx()).await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(20), tx.log_activities(&rows))
            .await
            .unwrap_or_else(|_| panic!("{what}: the refused batch waited for the holder"));
        match (what, answer) {
            ("a row too long", Err(Error::Validation(errors))) => {
                assert!(
                    errors
                        .as_slice()
                        .iter()
                        .all(|e| e.field == "activities[1].body" && e.code == "too_long"),
                    "{what}: {errors:?}"
                );
            }
            ("a missing contact first", Err(Error::NotFound { .. })) => {}
            (what, other) => panic!("{what}: {other:?}"),
        }
        // The transaction goes on: a batch on the other contact is logged.
        tx.log_activities(&[NewActivity::new(ids[1], ActivityKind::Meeting)])
            .await
            .unwrap();
        tx.rollback().await.unwrap();
    }
    holder.rollback().await.unwrap();
}

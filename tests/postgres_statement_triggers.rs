#![cfg(all(feature = "postgres", feature = "conformance"))]
//! The history, feed and freshness triggers handle a statement's rows
//! together (schema 12: statement-level triggers with transition tables).
//! What a bulk statement records must be what the same changes made one
//! by one record: the same versions, diffs and events in the same order,
//! nothing for an unchanged row, the previous version closed, valid_from
//! increasing per record, nothing left by a rolled-back savepoint. On
//! PostgreSQL and on a Citus cluster, where the triggers run on the
//! shards.

mod support;

use std::collections::BTreeMap;

use crm_core::{
    Actor, Context, Store, TenantId,
    bulk::ConflictPolicy,
    domain::{ContactPatch, Email, JobTitle, NewContact, PersonName, UpsertOutcome},
};
use proptest::{
    prelude::*,
    test_runner::{Config as ProptestConfig, TestRunner},
};
use serde_json::Value;
use support::{Target, TestStore};
use uuid::Uuid;

fn ctx() -> Context {
    Context::new(Actor::parse("user:bulk").unwrap())
}

fn new_contact(email: &str, title: Option<&str>) -> NewContact {
    let mut c = NewContact::new(
        Email::parse(email).unwrap(),
        PersonName::parse("Ada").unwrap(),
        PersonName::parse("Lovelace").unwrap(),
    );
    c.title = title.map(|t| JobTitle::parse(t).unwrap());
    c
}

/// One history version as stored.
#[derive(Debug, Clone)]
struct Version {
    kind: String,
    entity: Uuid,
    operation: String,
    data: Value,
    diff: Value,
    actor: String,
    reason: Option<String>,
    valid_from: chrono::DateTime<chrono::Utc>,
    valid_to: Option<chrono::DateTime<chrono::Utc>>,
}

/// One feed event as stored, with its transaction's position.
#[derive(Debug, Clone)]
struct Event {
    position: i64,
    seq: i32,
    kind: String,
    entity: Uuid,
    operation: String,
    version: Option<i64>,
    valid_from: Option<chrono::DateTime<chrono::Utc>>,
    actor: String,
}

/// The tenant's versions, oldest first (valid_from, then entity id).
async fn versions(store: &TestStore, tenant: TenantId) -> Vec<Version> {
    let raw = store.db().client().await;
    raw.query(
        &store.db().sql(
            "SELECT entity_kind, entity_id, operation, data, diff, actor, reason, valid_from, \
             valid_to FROM crm.history WHERE tenant_id = $1 ORDER BY valid_from, entity_id",
        ),
        &[&tenant.as_uuid()],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| Version {
        kind: r.get(0),
        entity: r.get(1),
        operation: r.get(2),
        data: r.get(3),
        diff: r.get(4),
        actor: r.get(5),
        reason: r.get(6),
        valid_from: r.get(7),
        valid_to: r.get(8),
    })
    .collect()
}

/// Every event of the feed's tables: rows of `feed_events` (activities,
/// signals) and history versions, which are their own events (schema 18).
const ALL_EVENTS: &str = "(SELECT tenant_id, txn, seq, entity_kind, entity_id, operation, \
     version, valid_from, actor FROM crm.feed_events \
     UNION ALL SELECT tenant_id, txn, seq, entity_kind, entity_id, operation, \
     (data ->> 'version')::bigint, valid_from, actor FROM crm.history WHERE txn IS NOT NULL)";

/// The tenant's committed events in feed order (position, then seq).
async fn events(store: &TestStore, tenant: TenantId) -> Vec<Event> {
    // A read numbers the commits no read numbered yet (schema 19).
    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    tx.feed_head().await.unwrap();
    tx.commit().await.unwrap();
    let raw = store.db().client().await;
    raw.query(
        &store.db().sql(&format!(
            "SELECT c.position, e.seq, e.entity_kind, e.entity_id, e.operation, e.version, \
             e.valid_from, e.actor \
             FROM {ALL_EVENTS} e JOIN crm.feed_commits c \
               ON c.tenant_id = e.tenant_id AND c.txn = e.txn \
             WHERE e.tenant_id = $1 AND c.tenant_id = $1 ORDER BY c.position, e.seq"
        )),
        &[&tenant.as_uuid()],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| Event {
        position: r.get(0),
        seq: r.get(1),
        kind: r.get(2),
        entity: r.get(3),
        operation: r.get(4),
        version: r.get(5),
        valid_from: r.get(6),
        actor: r.get(7),
    })
    .collect()
}

/// How many events and committed transactions the tenant has, numbered
/// or not (schema 19: the log of `feed_pending`).
async fn feed_counts(store: &TestStore, tenant: TenantId) -> (i64, i64) {
    let raw = store.db().client().await;
    let events: i64 = raw
        .query_one(
            &store.db().sql(&format!(
                "SELECT count(*) FROM {ALL_EVENTS} e WHERE tenant_id = $1"
            )),
            &[&tenant.as_uuid()],
        )
        .await
        .unwrap()
        .get(0);
    let commits: i64 = raw
        .query_one(
            &store.db().sql(
                "SELECT count(*) FROM (SELECT txn FROM crm.feed_commits WHERE tenant_id = $1 \
                      UNION SELECT txn FROM crm.feed_pending WHERE tenant_id = $1) AS m",
            ),
            &[&tenant.as_uuid()],
        )
        .await
        .unwrap()
        .get(0);
    (events, commits)
}

/// Runs `sql` (naming the store's tables `crm.…`) in one transaction of
/// `tenant` on a raw connection, as someone in psql would.
async fn by_hand(store: &TestStore, tenant: TenantId, sql: &str) {
    let raw = store.db().client().await;
    raw.batch_execute(&format!(
        "BEGIN; SELECT set_config('crm.tenant_id', '{tenant}', true); {} COMMIT;",
        store.db().sql(sql)
    ))
    .await
    .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
}

/// A JSON object without the keys that differ between two otherwise equal
/// runs (ids, times), with the entity replaced by its email.
fn normalised(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        for k in ["id", "created_at", "updated_at"] {
            o.remove(k);
        }
    }
    v
}

/// Every version and event of a tenant, comparable across tenants: ids
/// replaced by emails, times dropped. Also checks what must hold within
/// one tenant: every event announces the version written with it, and the
/// events of a transaction are numbered 1, 2, … without a gap.
async fn recorded(store: &TestStore, tenant: TenantId) -> (Vec<Value>, Vec<Value>) {
    let versions = versions(store, tenant).await;
    let events = events(store, tenant).await;
    let emails: BTreeMap<Uuid, String> = versions
        .iter()
        .filter_map(|v| Some((v.entity, v.data.get("email")?.as_str()?.to_string())))
        .collect();
    let mut expected_seq = BTreeMap::new();
    for e in &events {
        let seq = expected_seq.entry(e.position).or_insert(0);
        *seq += 1;
        assert_eq!(e.seq, *seq, "events numbered without a gap: {events:?}");
    }
    // The events of recorded versions (activities and signals have none).
    let events: Vec<&Event> = events
        .iter()
        .filter(|e| !matches!(e.kind.as_str(), "activity" | "signal"))
        .collect();
    for e in &events {
        let v = versions
            .iter()
            .find(|v| v.entity == e.entity && Some(v.valid_from) == e.valid_from)
            .unwrap_or_else(|| panic!("the version of event {e:?}"));
        assert_eq!(v.operation, e.operation);
        assert_eq!(v.kind, e.kind);
        assert_eq!(v.actor, e.actor);
        assert_eq!(v.data.get("version").and_then(Value::as_i64), e.version);
    }
    assert_eq!(events.len(), versions.len(), "one event per version");
    let mut by_entity: BTreeMap<Uuid, Vec<&Version>> = BTreeMap::new();
    for v in &versions {
        by_entity.entry(v.entity).or_default().push(v);
    }
    for (entity, vs) in &by_entity {
        for pair in vs.windows(2) {
            assert!(pair[0].valid_from < pair[1].valid_from, "{entity}: {vs:?}");
            assert_eq!(
                pair[0].valid_to,
                Some(pair[1].valid_from),
                "{entity}: {vs:?}"
            );
        }
        assert_eq!(vs.last().unwrap().valid_to, None, "{entity}: {vs:?}");
    }
    // Versions by record (email), then time: a bulk statement's versions
    // share their valid_from, so the global order between records is not
    // comparable; the events' order is.
    let mut sorted: Vec<&Version> = versions.iter().collect();
    sorted.sort_by_key(|v| (emails.get(&v.entity).cloned(), v.valid_from));
    let vs = sorted
        .iter()
        .map(|v| {
            serde_json::json!({
                "email": emails.get(&v.entity),
                "kind": v.kind,
                "operation": v.operation,
                "data": normalised(&v.data),
                "diff": normalised(&v.diff),
                "actor": v.actor,
                "reason": v.reason,
            })
        })
        .collect();
    let es = events
        .iter()
        .map(|e| {
            serde_json::json!({
                "email": emails.get(&e.entity),
                "seq": e.seq,
                "kind": e.kind,
                "operation": e.operation,
                "version": e.version,
                "actor": e.actor,
            })
        })
        .collect();
    (vs, es)
}

/// (a) One bulk upsert of N rows records what N single writes record, in
/// the same order; a bulk upsert that changes some rows and leaves the
/// others as they were records the changed ones only.
async fn a_bulk_upsert_records_what_single_writes_record(target: Target) {
    let Some(store) = TestStore::on(target).await else {
        return;
    };
    const N: usize = 40;
    // The bulk path merges rows in caseless email order: so do the singles.
    let emails: Vec<String> = (0..N).map(|i| format!("p{i:03}@bulk.example")).collect();
    let rows: Vec<NewContact> = emails
        .iter()
        .enumerate()
        .map(|(i, e)| new_contact(e, (i % 2 == 0).then_some("Engineer")))
        .collect();

    let bulk = TenantId::new();
    let mut tx = store.begin(bulk, ctx()).await.unwrap();
    let outcomes = tx
        .upsert_contacts(&rows, ConflictPolicy::Incoming)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, UpsertOutcome::Inserted(_)))
    );

    let single = TenantId::new();
    let mut tx = store.begin(single, ctx()).await.unwrap();
    let mut created = Vec::new();
    for row in &rows {
        created.push(tx.create_contact(row.clone()).await.unwrap());
    }
    tx.commit().await.unwrap();

    let (bulk_versions, bulk_events) = recorded(&store, bulk).await;
    let (single_versions, single_events) = recorded(&store, single).await;
    assert_eq!(bulk_versions.len(), N);
    assert_eq!(bulk_versions, single_versions);
    assert_eq!(bulk_events, single_events);

    // Every third row changes its title; the others come back as they are.
    let changed: Vec<bool> = (0..N).map(|i| i % 3 == 0).collect();
    let again: Vec<NewContact> = emails
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let title = if changed[i] {
                Some("Director")
            } else {
                (i % 2 == 0).then_some("Engineer")
            };
            new_contact(e, title)
        })
        .collect();
    let mut tx = store.begin(bulk, ctx()).await.unwrap();
    let outcomes = tx
        .upsert_contacts(&again, ConflictPolicy::Incoming)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    for (i, o) in outcomes.iter().enumerate() {
        if changed[i] {
            assert!(matches!(o, UpsertOutcome::Updated(_)), "{i}: {o:?}");
        } else {
            assert!(matches!(o, UpsertOutcome::Unchanged(_)), "{i}: {o:?}");
        }
    }
    let mut tx = store.begin(single, ctx()).await.unwrap();
    for (i, c) in created.iter().enumerate() {
        if changed[i] {
            let patch = ContactPatch {
                title: Some(Some(JobTitle::parse("Director").unwrap())),
                ..Default::default()
            };
            tx.update_contact(c.id, c.version, patch).await.unwrap();
        }
    }
    tx.commit().await.unwrap();

    let (bulk_versions, bulk_events) = recorded(&store, bulk).await;
    let (single_versions, single_events) = recorded(&store, single).await;
    let updates = changed.iter().filter(|c| **c).count();
    assert_eq!(
        bulk_versions.len(),
        N + updates,
        "no version for an unchanged row"
    );
    assert_eq!(bulk_versions, single_versions);
    assert_eq!(bulk_events, single_events);
    for v in bulk_versions.iter().filter(|v| v["operation"] == "updated") {
        let diff = v["diff"].as_object().unwrap();
        assert_eq!(diff.keys().collect::<Vec<_>>(), ["title", "version"], "{v}");
    }
}

/// (b) Multi-row INSERT, UPDATE and DELETE by hand: one version per
/// changed row with its own diff, nothing for a row whose recorded fields
/// did not change, and the events in the statement's order.
async fn hand_written_multi_row_statements_record_one_version_per_changed_row(target: Target) {
    let Some(store) = TestStore::on(target).await else {
        return;
    };
    let t = TenantId::new();
    let ids: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
    let values: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            format!(
                "('{t}', '{id}', 'h{i}@hand.example', 'H{i}', 'Hand', now(), now(), \
                 'h{i}@hand.example', 'h{i}', 'hand')"
            )
        })
        .collect();
    by_hand(
        &store,
        t,
        &format!(
            "INSERT INTO crm.contacts (tenant_id, id, email, first_name, last_name, created_at, \
             updated_at, email_key, first_name_key, last_name_key) VALUES {};",
            values.join(", ")
        ),
    )
    .await;
    let vs = versions(&store, t).await;
    assert_eq!(vs.len(), 4);
    assert!(
        vs.iter()
            .all(|v| v.operation == "created" && v.actor.starts_with("db:"))
    );
    let es = events(&store, t).await;
    assert_eq!(
        es.iter().map(|e| (e.seq, e.entity)).collect::<Vec<_>>(),
        ids.iter()
            .enumerate()
            .map(|(i, id)| (i as i32 + 1, *id))
            .collect::<Vec<_>>(),
        "the events follow the statement's rows"
    );
    // Every new contact got its freshness row.
    let raw = store.db().client().await;
    let fresh: i64 = raw
        .query_one(
            &store
                .db()
                .sql("SELECT count(*) FROM crm.contact_scores WHERE tenant_id = $1"),
            &[&t.as_uuid()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(fresh, 4);

    // Touches all four rows; changes the recorded fields of two (the
    // others' titles are set to themselves).
    by_hand(
        &store,
        t,
        &format!(
            "UPDATE crm.contacts SET \
             title = CASE WHEN id IN ('{}', '{}') THEN 'Boss' ELSE title END \
             WHERE tenant_id = '{t}';",
            ids[1], ids[3]
        ),
    )
    .await;
    let vs = versions(&store, t).await;
    let updated: Vec<&Version> = vs.iter().filter(|v| v.operation == "updated").collect();
    let mut entities: Vec<Uuid> = updated.iter().map(|v| v.entity).collect();
    entities.sort();
    let mut want = vec![ids[1], ids[3]];
    want.sort();
    assert_eq!(entities, want, "{vs:?}");
    for v in &updated {
        assert_eq!(
            v.diff,
            serde_json::json!({"title": {"old": null, "new": "Boss"}}),
            "{v:?}"
        );
    }
    let es = events(&store, t).await;
    assert_eq!(es.len(), 6);
    assert_eq!(es[4].seq, 1);
    assert_eq!(es[5].seq, 2);
    assert_eq!(es[4].position, es[5].position);

    // A multi-row DELETE: a tombstone each, the previous version closed.
    by_hand(
        &store,
        t,
        &format!(
            "DELETE FROM crm.contacts WHERE tenant_id = '{t}' AND id IN ('{}', '{}');",
            ids[0], ids[1]
        ),
    )
    .await;
    let vs = versions(&store, t).await;
    let deleted: Vec<&Version> = vs.iter().filter(|v| v.operation == "deleted").collect();
    assert_eq!(deleted.len(), 2);
    for d in &deleted {
        let before: Vec<&Version> = vs
            .iter()
            .filter(|v| v.entity == d.entity && v.valid_from < d.valid_from)
            .collect();
        assert_eq!(before.last().unwrap().valid_to, Some(d.valid_from));
        assert_eq!(d.data["id"], Value::String(d.entity.to_string()));
        assert_eq!(d.diff["email"]["new"], Value::Null);
    }
    let (versions_now, events_now) = recorded(&store, t).await;
    assert_eq!(versions_now.len(), 8);
    assert_eq!(events_now.len(), 8);

    // Statements that touch no row record nothing.
    by_hand(
        &store,
        t,
        &format!(
            "UPDATE crm.contacts SET title = 'Nobody' WHERE tenant_id = '{t}' AND false; \
             DELETE FROM crm.contacts WHERE tenant_id = '{t}' AND false; \
             INSERT INTO crm.contacts (tenant_id, id, email, first_name, last_name, created_at, \
             updated_at, email_key, first_name_key, last_name_key) \
             VALUES ('{t}', '{}', 'h2@hand.example', 'X', 'Y', now(), now(), \
             'h2@hand.example', 'x', 'y') ON CONFLICT DO NOTHING;",
            Uuid::now_v7()
        ),
    )
    .await;
    assert_eq!(versions(&store, t).await.len(), 8);
    assert_eq!(feed_counts(&store, t).await, (8, 3));
}

/// (c) Two changes of one record in one transaction: valid_from strictly
/// increasing, the first version closed by the second, both events in one
/// transaction of the feed.
async fn two_changes_of_a_record_in_one_transaction_keep_its_versions_in_order(target: Target) {
    let Some(store) = TestStore::on(target).await else {
        return;
    };
    let t = TenantId::new();
    let mut tx = store.begin(t, ctx()).await.unwrap();
    let rows: Vec<NewContact> = (0..3)
        .map(|i| new_contact(&format!("twice{i}@example.com"), None))
        .collect();
    let ids: Vec<Uuid> = tx
        .upsert_contacts(&rows, ConflictPolicy::Incoming)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.id().as_uuid())
        .collect();
    tx.commit().await.unwrap();
    by_hand(
        &store,
        t,
        &format!(
            "UPDATE crm.contacts SET title = 'One' WHERE tenant_id = '{t}'; \
             UPDATE crm.contacts SET title = 'Two' WHERE tenant_id = '{t}'; \
             UPDATE crm.contacts SET title = 'Three' WHERE tenant_id = '{t}' AND id = '{}';",
            ids[0]
        ),
    )
    .await;
    let vs = versions(&store, t).await;
    let of_first: Vec<&Version> = vs.iter().filter(|v| v.entity == ids[0]).collect();
    assert_eq!(of_first.len(), 4);
    let titles: Vec<&Value> = of_first.iter().map(|v| &v.data["title"]).collect();
    assert_eq!(
        titles,
        [&Value::Null, &"One".into(), &"Two".into(), &"Three".into()]
    );
    // `recorded` checks order, closing and the events.
    let (versions_now, events_now) = recorded(&store, t).await;
    assert_eq!(versions_now.len(), 3 + 3 + 3 + 1);
    let es = events(&store, t).await;
    let last = es.last().unwrap().position;
    let of_last: Vec<i32> = es
        .iter()
        .filter(|e| e.position == last)
        .map(|e| e.seq)
        .collect();
    assert_eq!(of_last, (1..=7).collect::<Vec<_>>(), "{events_now:?}");
}

/// (d) A rolled-back savepoint takes its versions, its events and the
/// feed counter with it; a transaction whose only events were rolled back
/// commits no marker.
async fn a_rolled_back_savepoint_leaves_no_history_and_no_events(target: Target) {
    let Some(store) = TestStore::on(target).await else {
        return;
    };
    let t = TenantId::new();
    let mut tx = store.begin(t, ctx()).await.unwrap();
    let rows: Vec<NewContact> = (0..3)
        .map(|i| new_contact(&format!("sp{i}@example.com"), None))
        .collect();
    let ids: Vec<Uuid> = tx
        .upsert_contacts(&rows, ConflictPolicy::Incoming)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.id().as_uuid())
        .collect();
    tx.commit().await.unwrap();
    assert_eq!(feed_counts(&store, t).await, (3, 1));

    // Only rolled-back work: no version, no event, no marker.
    by_hand(
        &store,
        t,
        &format!(
            "SAVEPOINT s; UPDATE crm.contacts SET title = 'Gone' WHERE tenant_id = '{t}'; \
             DELETE FROM crm.contacts WHERE tenant_id = '{t}' AND id = '{}'; \
             ROLLBACK TO SAVEPOINT s;",
            ids[2]
        ),
    )
    .await;
    assert_eq!(versions(&store, t).await.len(), 3);
    assert_eq!(feed_counts(&store, t).await, (3, 1));

    // Before and after a rolled-back savepoint: numbered on as if it had
    // never run.
    by_hand(
        &store,
        t,
        &format!(
            "UPDATE crm.contacts SET title = 'Kept' WHERE tenant_id = '{t}' AND id = '{}'; \
             SAVEPOINT s; UPDATE crm.contacts SET title = 'Gone' WHERE tenant_id = '{t}'; \
             ROLLBACK TO SAVEPOINT s; \
             UPDATE crm.contacts SET title = 'Also kept' WHERE tenant_id = '{t}' AND id = '{}';",
            ids[0], ids[1]
        ),
    )
    .await;
    let vs = versions(&store, t).await;
    assert_eq!(vs.len(), 5);
    assert!(vs.iter().all(|v| v.data["title"] != "Gone"), "{vs:?}");
    let (_, es) = recorded(&store, t).await;
    assert_eq!(feed_counts(&store, t).await, (5, 2));
    assert_eq!(es[3]["seq"], 1);
    assert_eq!(es[4]["seq"], 2);
}

/// A hand-written UPDATE that changes a record's id is recorded as the
/// deletion of the old id and the creation of the new one.
async fn an_update_that_changes_an_id_records_a_deletion_and_a_creation(target: Target) {
    let Some(store) = TestStore::on(target).await else {
        return;
    };
    let t = TenantId::new();
    let (old, new) = (Uuid::now_v7(), Uuid::now_v7());
    by_hand(
        &store,
        t,
        &format!(
            "INSERT INTO crm.tags (tenant_id, id, name, created_at, updated_at, name_key) \
             VALUES ('{t}', '{old}', 'VIP', now(), now(), 'vip'); \
             UPDATE crm.tags SET id = '{new}' WHERE tenant_id = '{t}' AND id = '{old}';"
        ),
    )
    .await;
    let vs = versions(&store, t).await;
    let ops: Vec<(Uuid, &str)> = vs
        .iter()
        .map(|v| (v.entity, v.operation.as_str()))
        .collect();
    assert_eq!(ops.len(), 3, "{vs:?}");
    assert_eq!(ops[0], (old, "created"));
    assert!(ops[1..].contains(&(old, "deleted")), "{vs:?}");
    assert!(ops[1..].contains(&(new, "created")), "{vs:?}");
    assert_eq!(vs[0].valid_to, Some(vs[1].valid_from));
    let es = events(&store, t).await;
    let seq: Vec<(i32, Uuid, &str)> = es
        .iter()
        .map(|e| (e.seq, e.entity, e.operation.as_str()))
        .collect();
    assert_eq!(
        seq,
        [
            (1, old, "created"),
            (2, old, "deleted"),
            (3, new, "created")
        ]
    );
}

/// The activity events of a tenant in feed order: (seq, entity, operation).
async fn activity_events(store: &TestStore, tenant: TenantId) -> Vec<(i64, i32, Uuid, String)> {
    events(store, tenant)
        .await
        .into_iter()
        .filter(|e| e.kind == "activity")
        .map(|e| (e.position, e.seq, e.entity, e.operation))
        .collect()
}

/// The same hand-written statements in `tenant`: multi-row INSERT, UPDATE
/// of every row, UPDATE of some, DELETE of some, of contacts and of their
/// activities; with `slice`, under that `crm.statement_slice`. Returns the
/// contact ids in insertion order.
async fn statements_over_many_rows(
    store: &TestStore,
    tenant: TenantId,
    slice: Option<u32>,
) -> Vec<Uuid> {
    const N: usize = 21;
    let setting = slice.map_or(String::new(), |s| {
        format!(
            "SET LOCAL citus.propagate_set_commands TO 'local'; \
             SET LOCAL crm.statement_slice TO '{s}';"
        )
    });
    let ids: Vec<Uuid> = (0..N).map(|_| Uuid::now_v7()).collect();
    let values: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            format!(
                "('{tenant}', '{id}', 's{i:02}@slice.example', 'S{i}', 'Slice', now(), now(), \
                 's{i:02}@slice.example', 's{i}', 'slice')"
            )
        })
        .collect();
    let t = tenant;
    let statements = [
        format!(
            "INSERT INTO crm.contacts (tenant_id, id, email, first_name, last_name, created_at, \
             updated_at, email_key, first_name_key, last_name_key) VALUES {};",
            values.join(", ")
        ),
        format!(
            "INSERT INTO crm.activities (tenant_id, id, contact_id, kind, occurred_at, \
             created_at) SELECT tenant_id, gen_random_uuid(), id, 'note', now(), now() \
             FROM crm.contacts WHERE tenant_id = '{t}' ORDER BY email_key;"
        ),
        format!("UPDATE crm.contacts SET title = 'Lead' WHERE tenant_id = '{t}';"),
        format!(
            "UPDATE crm.contacts SET title = 'Head', updated_at = updated_at \
             WHERE tenant_id = '{t}' AND email_key > 's10@slice.example';"
        ),
        format!("UPDATE crm.activities SET subject = 'Seen' WHERE tenant_id = '{t}';"),
        format!(
            "DELETE FROM crm.contacts WHERE tenant_id = '{t}' AND email_key < 's11@slice.example';"
        ),
    ];
    for sql in &statements {
        by_hand(store, tenant, &format!("{setting} {sql}")).await;
    }
    ids
}

/// (f) A statement's rows go to the history, the feed and the freshness
/// rows in slices (`crm.statement_slice`, 10,000 rows unless set), so that
/// no statement is too large to record: sliced, the same statements
/// record exactly what they record in one slice — the same versions and
/// diffs, the same events in the same order, numbered without a gap.
async fn statements_in_slices_record_what_one_slice_records(target: Target) {
    let Some(store) = TestStore::on(target).await else {
        return;
    };
    let (sliced, whole) = (TenantId::new(), TenantId::new());
    // 21 rows in slices of 4: five of 4 and one of a single row (which
    // takes the single-row functions). On Citus the statements run without
    // the setting (one slice each): a hand-written transaction there that
    // sets `citus.propagate_set_commands` fails its multi-row INSERT on the
    // worker ("cannot execute a distributed query from a query on a
    // shard"); the slices of 10,000 are exercised on Citus below.
    let slice = (target == Target::Plain).then_some(4);
    let sliced_ids = statements_over_many_rows(&store, sliced, slice).await;
    let whole_ids = statements_over_many_rows(&store, whole, None).await;
    assert_eq!(
        recorded(&store, sliced).await,
        recorded(&store, whole).await
    );
    // The versions of the INSERT and of the first UPDATE: one valid_from
    // per slice when sliced (the clock is taken per slice), one for the
    // whole statement otherwise — so the setting was in force.
    let times = |vs: Vec<Version>, operation: &str| {
        let mut at: Vec<_> = vs
            .iter()
            .filter(|v| v.operation == operation)
            .filter(|v| operation != "updated" || v.data["title"] == "Lead")
            .map(|v| v.valid_from)
            .collect();
        at.dedup();
        at.len()
    };
    let slices = if slice.is_some() { 6 } else { 1 };
    for operation in ["created", "updated"] {
        assert_eq!(times(versions(&store, sliced).await, operation), slices);
        assert_eq!(times(versions(&store, whole).await, operation), 1);
    }
    // The activities' events: the same operations in the same order, on
    // the activities of the same contacts.
    let shape = |es: Vec<(i64, i32, Uuid, String)>| {
        let mut seq_per_position: BTreeMap<i64, i32> = BTreeMap::new();
        for (position, seq, _, _) in &es {
            let last = seq_per_position.entry(*position).or_insert(0);
            assert!(*seq > *last, "events in order within a transaction: {es:?}");
            *last = *seq;
        }
        es.into_iter()
            .map(|(_, seq, _, op)| (seq, op))
            .collect::<Vec<_>>()
    };
    let (a, b) = (
        activity_events(&store, sliced).await,
        activity_events(&store, whole).await,
    );
    assert_eq!(
        a.len(),
        21 + 21 + 11,
        "created, updated, deleted with the contacts"
    );
    assert_eq!(shape(a), shape(b));
    // Every contact got its freshness row, sliced or not; the deleted
    // ones lost it.
    let raw = store.db().client().await;
    for (t, ids) in [(sliced, &sliced_ids), (whole, &whole_ids)] {
        let fresh: Vec<Uuid> = raw
            .query(
                &store.db().sql(
                    "SELECT contact_id FROM crm.contact_scores WHERE tenant_id = $1 \
                     ORDER BY contact_id",
                ),
                &[&t.as_uuid()],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut kept: Vec<Uuid> = ids[11..].to_vec();
        kept.sort();
        assert_eq!(fresh, kept);
    }
}

/// (g) One statement over more rows than a slice (the default, 10,000):
/// 25,000 contacts inserted, updated and deleted by three statements, and
/// 25,000 activities, each recorded once — a version and an event per row,
/// numbered without a gap, a freshness row per contact. (Before slices, a
/// statement's rows were all held in arrays at once, and a statement over
/// a million contacts failed: "tuple is too big".)
async fn a_statement_over_several_slices_records_every_row(target: Target) {
    let Some(store) = TestStore::on(target).await else {
        return;
    };
    const N: i64 = 25_000;
    let t = TenantId::new();
    by_hand(
        &store,
        t,
        &format!(
            "INSERT INTO crm.contacts (tenant_id, id, email, first_name, last_name, created_at, \
             updated_at, email_key, first_name_key, last_name_key) \
             SELECT '{t}', gen_random_uuid(), 'big' || i || '@slice.example', 'Big', 'Slice', \
                    now(), now(), 'big' || i || '@slice.example', 'big', 'slice' \
               FROM generate_series(1, {N}) AS i;"
        ),
    )
    .await;
    by_hand(
        &store,
        t,
        &format!(
            "INSERT INTO crm.activities (tenant_id, id, contact_id, kind, occurred_at, \
             created_at) SELECT tenant_id, gen_random_uuid(), id, 'note', now(), now() \
             FROM crm.contacts WHERE tenant_id = '{t}';"
        ),
    )
    .await;
    let raw = store.db().client().await;
    let count = |sql: &str| {
        let (raw, store) = (&raw, &store);
        let sql = sql.replace("crm.feed_events", ALL_EVENTS);
        async move {
            raw.query_one(&store.db().sql(&sql), &[&t.as_uuid()])
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    assert_eq!(
        count("SELECT count(*) FROM crm.contact_scores WHERE tenant_id = $1").await,
        N
    );
    by_hand(
        &store,
        t,
        &format!("UPDATE crm.contacts SET title = 'Big' WHERE tenant_id = '{t}';"),
    )
    .await;
    by_hand(
        &store,
        t,
        &format!("DELETE FROM crm.contacts WHERE tenant_id = '{t}';"),
    )
    .await;
    assert_eq!(
        count("SELECT count(*) FROM crm.history WHERE tenant_id = $1").await,
        3 * N
    );
    assert_eq!(
        count("SELECT count(DISTINCT entity_id) FROM crm.history WHERE tenant_id = $1").await,
        N
    );
    assert_eq!(
        count(
            "SELECT count(*) FROM crm.history WHERE tenant_id = $1 AND valid_to IS NULL \
             AND operation = 'deleted'"
        )
        .await,
        N,
        "every record's last version is its deletion, the others closed"
    );
    // An event per version and per activity (created, then deleted with
    // its contact), each transaction's numbered 1..n (after a read has
    // numbered the commits).
    let mut tx = store.begin(t, ctx()).await.unwrap();
    tx.feed_head().await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        count(
            "SELECT count(*) FROM crm.feed_events e JOIN crm.feed_commits c \
               ON c.tenant_id = e.tenant_id AND c.txn = e.txn WHERE e.tenant_id = $1"
        )
        .await,
        3 * N + 2 * N
    );
    assert_eq!(
        count(
            "SELECT count(*) FROM (SELECT txn FROM crm.feed_events f WHERE tenant_id = $1 \
              GROUP BY txn HAVING min(seq) <> 1 OR max(seq) <> count(*) \
                  OR count(DISTINCT seq) <> count(*)) AS gaps"
        )
        .await,
        0,
        "each transaction's events numbered without a gap"
    );
}

/// The changed fields of a created record, by their definition: every
/// recorded value that is not null, as `{"old": null, "new": value}`.
fn created_changes(data: &Value) -> Value {
    let fields = data.as_object().expect("a version's data is an object");
    Value::Object(
        fields
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), serde_json::json!({"old": null, "new": v})))
            .collect(),
    )
}

/// Text a client may store by SQL, with what JSON must escape: quotes,
/// backslashes, control characters, a line separator, characters beyond
/// the Basic Multilingual Plane, and what looks like JSON itself.
const HOSTILE: [&str; 6] = [
    r#"E'"quoted" \\back\\slash'"#,
    r"E'tab\tnew\nline\r' || chr(1) || chr(31) || chr(127)",
    r"E'\u2028sep\u2029' || chr(119070) || 'é'",
    r#"'{"old":null,"new":1}'"#,
    r"'null'",
    r"repeat('x', 99)",
];

/// (f) A statement inserting contacts, companies and deals (by hand, with
/// hostile text, every optional field null or set, metadata with nested
/// nulls and exact numbers) records for each record a created version
/// whose changed fields are its every value not null, as the definition
/// gives them and as the general form of the database computes them
/// (`crm_created_diff`); the events follow the statement's rows.
async fn a_created_version_holds_every_value_not_null_as_a_change(target: Target) {
    let Some(store) = TestStore::on(target).await else {
        return;
    };
    let t = TenantId::new();
    let company = Uuid::now_v7();
    let bare_company = Uuid::now_v7();
    let contacts: Vec<Uuid> = HOSTILE.iter().map(|_| Uuid::now_v7()).collect();
    let contact_rows: Vec<String> = HOSTILE
        .iter()
        .zip(&contacts)
        .enumerate()
        .map(|(i, (text, id))| {
            // Odd rows leave every optional field null.
            let (company_name, title, phone, metadata, owner, company_id) = if i % 2 == 0 {
                (
                    text.to_string(),
                    text.to_string(),
                    "'+1 555 0100'".to_string(),
                    format!(
                        r#"jsonb_build_object('note', {text}, 'n', 1.50, 'big', 1e30, 'none', NULL, 'list', '[1, null, "x"]'::jsonb)"#
                    ),
                    text.to_string(),
                    format!("'{company}'"),
                )
            } else {
                let null = "NULL".to_string();
                (null.clone(), null.clone(), null.clone(), "'{}'".into(), null.clone(), null)
            };
            format!(
                "('{t}', '{id}', 'c{i}@hostile.example', {text}, {text}, {company_name}, \
                 CASE WHEN {company_name} IS NULL THEN NULL ELSE 'k{i}' END, {title}, {phone}, \
                 {metadata}, {owner}, {company_id}, now(), now(), 'c{i}@hostile.example', \
                 'f{i}', 'l{i}')"
            )
        })
        .collect();
    let deals: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    by_hand(
        &store,
        t,
        &format!(
            "INSERT INTO crm.companies (tenant_id, id, name, domain, industry, employee_count, \
             revenue_amount, revenue_currency, street, city, region, postal_code, country, \
             metadata, owner_id, created_at, updated_at, name_key) VALUES \
             ('{t}', '{company}', {h0}, 'hostile.example', {h1}, 12, 12345.6700, 'EUR', {h2}, \
              {h3}, {h4}, {h5}, 'DE', '{{\"a\": {{\"b\": null}}}}', {h0}, now(), now(), 'k'), \
             ('{t}', '{bare_company}', 'Bare', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
              NULL, NULL, '{{}}', NULL, now(), now(), 'bare'); \
             INSERT INTO crm.contacts (tenant_id, id, email, first_name, last_name, company, \
             company_key, title, phone, metadata, owner_id, company_id, created_at, updated_at, \
             email_key, first_name_key, last_name_key) VALUES {contact_rows}; \
             INSERT INTO crm.deals (tenant_id, id, contact_id, title, amount, currency, \
             pipeline, stage, expected_close_date, won_at, lost_at, lost_reason, company_id, \
             owner_id, created_at, updated_at) VALUES \
             ('{t}', '{d0}', '{c0}', {h0}, 0.0001, 'USD', 'sales', 'won', '2026-02-28', now(), \
              NULL, NULL, '{company}', {h1}, now(), now()), \
             ('{t}', '{d1}', '{c1}', {h2}, 999999999999999.9999, 'JPY', 'sales', 'lost', NULL, \
              NULL, now(), {h3}, NULL, NULL, now(), now()), \
             ('{t}', '{d2}', '{c0}', 'Plain', 0, 'EUR', 'sales', 'lead', NULL, NULL, NULL, \
              NULL, NULL, NULL, now(), now());",
            h0 = HOSTILE[0],
            h1 = HOSTILE[1],
            h2 = HOSTILE[2],
            h3 = HOSTILE[3],
            h4 = HOSTILE[4],
            h5 = HOSTILE[5],
            contact_rows = contact_rows.join(", "),
            d0 = deals[0],
            d1 = deals[1],
            d2 = deals[2],
            c0 = contacts[0],
            c1 = contacts[1],
        ),
    )
    .await;
    let vs = versions(&store, t).await;
    assert_eq!(vs.len(), 2 + HOSTILE.len() + deals.len());
    for v in &vs {
        assert_eq!(v.operation, "created", "{v:?}");
        assert_eq!(v.diff, created_changes(&v.data), "{v:?}");
    }
    // Every value came through: the stored text, exactly.
    let raw = store.db().client().await;
    for (i, id) in contacts.iter().enumerate() {
        let first: String = raw
            .query_one(
                &store
                    .db()
                    .sql("SELECT first_name FROM crm.contacts WHERE tenant_id = $1 AND id = $2"),
                &[&t.as_uuid(), id],
            )
            .await
            .unwrap()
            .get(0);
        let v = vs.iter().find(|v| v.entity == *id).unwrap();
        assert_eq!(v.data["first_name"], Value::String(first), "contact {i}");
    }
    let amounts: Vec<Value> = deals
        .iter()
        .map(|d| vs.iter().find(|v| v.entity == *d).unwrap().diff["amount"]["new"].clone())
        .collect();
    assert_eq!(
        amounts,
        ["0.0001", "999999999999999.9999", "0"].map(|a| Value::String(a.into()))
    );
    // The database's general form agrees, to the byte.
    let disagreeing: i64 = raw
        .query_one(
            &store.db().sql(
                "SELECT count(*) FROM crm.history WHERE tenant_id = $1 \
                  AND diff::text IS DISTINCT FROM crm.crm_created_diff(data)::text",
            ),
            &[&t.as_uuid()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(disagreeing, 0);
    // A field a later schema would add to a kind's data is not dropped.
    for kind in ["contact", "company", "deal"] {
        let same: bool = raw
            .query_one(
                &store.db().sql(&format!(
                    "SELECT bool_and(crm.crm_created_diff_{kind}(data || '{{\"later\": [1]}}') \
                     = crm.crm_created_diff(data || '{{\"later\": [1]}}')) \
                     FROM crm.history WHERE tenant_id = $1 AND entity_kind = '{kind}'"
                )),
                &[&t.as_uuid()],
            )
            .await
            .unwrap()
            .get(0);
        assert!(same, "{kind}");
    }
    // A record of more than a megabyte (SQL by hand only; past that size
    // the changed fields are computed by the general definition, which
    // builds no text) is recorded alike.
    let big = Uuid::now_v7();
    by_hand(
        &store,
        t,
        &format!(
            "INSERT INTO crm.contacts (tenant_id, id, email, first_name, last_name, metadata, \
             created_at, updated_at, email_key, first_name_key, last_name_key) VALUES \
             ('{t}', '{big}', 'big@hostile.example', 'Big', 'Record', \
              jsonb_build_object('escaped', repeat(chr(1), 1100000)), now(), now(), \
              'big@hostile.example', 'big', 'record');"
        ),
    )
    .await;
    let vs = versions(&store, t).await;
    let v = vs.iter().find(|v| v.entity == big).unwrap();
    assert_eq!(v.diff, created_changes(&v.data));
    assert_eq!(
        v.diff["metadata"]["new"]["escaped"].as_str().map(str::len),
        Some(1_100_000)
    );
    // One event per version, in the statements' row order (the large
    // record's in a transaction of its own).
    let es = events(&store, t).await;
    let expected: Vec<Uuid> = [company, bare_company]
        .into_iter()
        .chain(contacts.iter().copied())
        .chain(deals.iter().copied())
        .chain([big])
        .collect();
    assert_eq!(es.iter().map(|e| e.entity).collect::<Vec<_>>(), expected);
    assert_eq!(
        es.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..expected.len() as i32).chain([1]).collect::<Vec<_>>()
    );
}

/// (g) A statement by hand inserting the contacts of two tenants, their
/// rows interleaved (possible only past row-level security): each tenant
/// gets its own versions and its own feed transaction, its events
/// numbered 1, 2, … in its rows' order, and the versions of one slice
/// share their valid_from whatever their tenants.
async fn a_statement_inserting_for_two_tenants_records_each_tenants_versions(target: Target) {
    let Some(store) = TestStore::on(target).await else {
        return;
    };
    let (t, u) = (TenantId::new(), TenantId::new());
    let rows: Vec<(TenantId, Uuid)> = (0..6)
        .map(|i| (if i % 3 == 1 { u } else { t }, Uuid::now_v7()))
        .collect();
    let values: Vec<String> = rows
        .iter()
        .enumerate()
        .map(|(i, (tenant, id))| {
            format!(
                "('{tenant}', '{id}', 'm{i}@two.example', 'M{i}', 'Two', now(), now(), \
                 'm{i}@two.example', 'm{i}', 'two')"
            )
        })
        .collect();
    // On PostgreSQL in slices of 4 rows (see (f) for Citus).
    let slices = target == Target::Plain;
    let raw = store.db().client().await;
    raw.batch_execute(&store.db().sql(&format!(
        "BEGIN; {} INSERT INTO crm.contacts (tenant_id, id, email, first_name, last_name, \
         created_at, updated_at, email_key, first_name_key, last_name_key) VALUES {}; COMMIT;",
        if slices {
            "SET LOCAL crm.statement_slice TO '4';"
        } else {
            ""
        },
        values.join(", ")
    )))
    .await
    .unwrap();
    if slices {
        // One valid_from per slice, whatever the tenants in it.
        let mut at = BTreeMap::new();
        for tenant in [t, u] {
            for v in versions(&store, tenant).await {
                at.insert(v.entity, v.valid_from);
            }
        }
        let at: Vec<_> = rows.iter().map(|(_, id)| at[id]).collect();
        assert!(at[..4].iter().all(|a| *a == at[0]), "{at:?}");
        assert!(at[4..].iter().all(|a| *a == at[4]), "{at:?}");
        assert!(at[0] < at[4], "{at:?}");
    }
    for tenant in [t, u] {
        let mine: Vec<Uuid> = rows
            .iter()
            .filter(|(owner, _)| *owner == tenant)
            .map(|(_, id)| *id)
            .collect();
        let vs = versions(&store, tenant).await;
        assert_eq!(vs.len(), mine.len());
        for v in &vs {
            assert_eq!(v.diff, created_changes(&v.data), "{v:?}");
        }
        let es = events(&store, tenant).await;
        assert_eq!(
            es.iter().map(|e| e.entity).collect::<Vec<_>>(),
            mine,
            "a tenant's events in its rows' order"
        );
        // In one slice, one feed transaction per tenant, numbered 1, 2, …;
        // past a slice, a tenant's later rows may start another (the
        // other tenant's claim came between), each numbered from 1.
        let mut expected = 0;
        for (i, e) in es.iter().enumerate() {
            expected = if i > 0 && e.position == es[i - 1].position {
                expected + 1
            } else {
                1
            };
            assert_eq!(e.seq, expected, "{es:?}");
        }
        if !slices {
            assert!(es.iter().all(|e| e.position == es[0].position), "{es:?}");
        }
    }
}

/// One contact of a generated statement: its first name (any text but
/// NUL, after an `x` so that it is never blank), title and metadata.
type GeneratedRow = (String, Option<String>, serde_json::Map<String, Value>);

fn generated_rows() -> impl Strategy<Value = Vec<GeneratedRow>> {
    let text = || proptest::string::string_regex("[^\u{0}]{0,40}").expect("a regex");
    let value = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e300f64..1e300).prop_map(Value::from),
        text().prop_map(Value::String),
        proptest::collection::vec(text().prop_map(Value::String), 0..3).prop_map(Value::Array),
    ];
    proptest::collection::vec(
        (
            text().prop_map(|t| format!("x{t}")),
            proptest::option::of(text().prop_map(|t| format!("t{t}"))),
            proptest::collection::btree_map(text(), value, 0..4)
                .prop_map(|m| m.into_iter().collect()),
        ),
        1..8,
    )
}

/// (h) Generated text and metadata inserted by one statement: every
/// created version's changed fields are its values that are not null, and
/// its data holds the text as stored.
async fn generated_values_are_recorded_as_created_changes(target: Target) {
    let Some(store) = TestStore::on(target).await else {
        return;
    };
    let handle = tokio::runtime::Handle::current();
    let raw = store.db().client().await;
    let insert = store.db().sql(
        "INSERT INTO crm.contacts (tenant_id, id, email, first_name, last_name, title, \
         metadata, created_at, updated_at, email_key, first_name_key, last_name_key) \
         SELECT $1, u.id, u.email, u.first_name, 'Generated', u.title, u.metadata, now(), now(), \
                u.email, 'x', 'generated' \
           FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::jsonb[]) \
                WITH ORDINALITY AS u(id, email, first_name, title, metadata, n) ORDER BY u.n",
    );
    let read = store
        .db()
        .sql("SELECT entity_id, data, diff FROM crm.history WHERE tenant_id = $1 ORDER BY seq");
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 32,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&generated_rows(), |rows| {
        let tenant = TenantId::new();
        let ids: Vec<Uuid> = rows.iter().map(|_| Uuid::now_v7()).collect();
        let emails: Vec<String> = (0..rows.len())
            .map(|i| format!("g{i}@gen.example"))
            .collect();
        let names: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
        let titles: Vec<Option<&str>> = rows.iter().map(|r| r.1.as_deref()).collect();
        let metadata: Vec<Value> = rows.iter().map(|r| Value::Object(r.2.clone())).collect();
        let versions = tokio::task::block_in_place(|| {
            handle.block_on(async {
                raw.execute(
                    &insert,
                    &[&tenant.as_uuid(), &ids, &emails, &names, &titles, &metadata],
                )
                .await
                .unwrap();
                raw.query(&read, &[&tenant.as_uuid()]).await.unwrap()
            })
        });
        prop_assert_eq!(versions.len(), rows.len());
        for (i, version) in versions.iter().enumerate() {
            let (entity, data, diff): (Uuid, Value, Value) =
                (version.get(0), version.get(1), version.get(2));
            prop_assert_eq!(entity, ids[i]);
            prop_assert_eq!(&diff, &created_changes(&data));
            prop_assert_eq!(&data["first_name"], &Value::String(rows[i].0.clone()));
            prop_assert_eq!(
                &data["title"],
                &rows[i].1.clone().map_or(Value::Null, Value::String)
            );
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

crate::on_every_target!(
    a_bulk_upsert_records_what_single_writes_record,
    hand_written_multi_row_statements_record_one_version_per_changed_row,
    two_changes_of_a_record_in_one_transaction_keep_its_versions_in_order,
    a_rolled_back_savepoint_leaves_no_history_and_no_events,
    an_update_that_changes_an_id_records_a_deletion_and_a_creation,
    statements_in_slices_record_what_one_slice_records,
    a_statement_over_several_slices_records_every_row,
    a_created_version_holds_every_value_not_null_as_a_change,
    a_statement_inserting_for_two_tenants_records_each_tenants_versions,
    generated_values_are_recorded_as_created_changes,
);

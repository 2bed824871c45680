#![cfg(all(feature = "postgres", feature = "conformance"))]
//! The caseless keys, the merge locks and the atomic operations, driven
//! from outside as a user's program would drive the crate: rows left by
//! earlier versions, several `PostgresStore`s racing, lost connections,
//! and the two backends compared on the same operations. On PostgreSQL and
//! on a Citus cluster (see `support::citus`).

mod support;

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use crm_core::{
    Actor, ContactQuery, ContactSort, Context, Error, InMemoryStore, PageRequest, PostgresStore,
    Store, StoreExt, TenantId,
    bulk::{ConflictPolicy, UpsertOutcome},
    conformance,
    domain::{
        ActivityKind, ContactId, ContactPatch, Email, NewActivity, NewContact, PersonName,
        caseless_key,
    },
    idempotency::{HandlerError, HandlerFuture, IdempotencyGuard, InboundEvent},
};
use serde_json::json;
use support::{Target, TestDb, TestStore};
use uuid::Uuid;

fn ctx() -> Context {
    Context::new(Actor::parse("user:attack").unwrap())
}

fn person(name: &str) -> PersonName {
    PersonName::parse(name).unwrap()
}

fn new_contact(email: &str) -> NewContact {
    NewContact::new(
        Email::parse(email).unwrap(),
        person("Ada"),
        person("Lovelace"),
    )
}

fn named(email: &str, first: &str, last: &str) -> NewContact {
    NewContact::new(Email::parse(email).unwrap(), person(first), person(last))
}

// ---- rows stored by an earlier version ----

/// Before this version `Email::parse` accepted invisible characters (ZWSP,
/// soft hyphen, BOM, word joiner) and even C1 controls (NEL) in an address;
/// rows read back must keep the rules they were stored under.
async fn a_contact_whose_email_an_earlier_version_accepted_with_an_invisible_character_stays_readable(
    target: Target,
) {
    let Some(owner) = TestStore::on(target).await else {
        return;
    };
    let db = owner.db();
    let client = db.client().await;
    let store = db.store();
    let tenant = TenantId::new();
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    // Both addresses passed the parser of an earlier version.
    support::insert_contact_row(db, &client, tenant, a, "zero\u{200B}width@example.com").await;
    support::insert_contact_row(db, &client, tenant, b, "plain@example.com").await;

    let crm = store.scope(tenant, &ctx());
    let read = crm.get_contact(ContactId::from_uuid(a)).await;
    assert!(
        matches!(&read, Ok(Some(c)) if c.email.as_str() == "zero\u{200B}width@example.com"),
        "the stored contact is readable: {read:?}"
    );
    let page = crm.search_contacts(&ContactQuery::new()).await;
    assert!(
        matches!(&page, Ok(p) if p.items.len() == 2),
        "a search that meets it still answers: {page:?}"
    );
    // And it can be erased (a data subject's right) and merged away.
    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    let erased = tx.erase_contact(ContactId::from_uuid(a)).await;
    assert!(erased.is_ok(), "erasure succeeds: {erased:?}");
    tx.rollback().await.unwrap();
    drop((store, client));
}

/// Before this version a contact could hold the address
/// `erased-<id>@erased.invalid` that erasing contact `id` now writes, and
/// such a row may still be stored. Erasure must still succeed without a
/// duplicate (issue item 4: "Erasure always succeeds").
async fn erasing_a_contact_whose_placeholder_an_older_contact_holds_succeeds_without_a_duplicate(
    target: Target,
) {
    let Some(owner) = TestStore::on(target).await else {
        return;
    };
    let db = owner.db();
    let client = db.client().await;
    let store = db.store();
    let tenant = TenantId::new();
    let (victim, squatter) = (Uuid::now_v7(), Uuid::now_v7());
    support::insert_contact_row(db, &client, tenant, victim, "victim@example.com").await;
    support::insert_contact_row(
        db,
        &client,
        tenant,
        squatter,
        &format!("Erased-{}@Erased.Invalid", victim.simple()),
    )
    .await;

    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    let erased = tx.erase_contact(ContactId::from_uuid(victim)).await;
    assert!(erased.is_ok(), "erasure always succeeds: {erased:?}");
    tx.commit().await.unwrap();
    // The erased contact holds no email key (its placeholder is no email);
    // the other keeps its own.
    let keys: Vec<Option<String>> = client
        .query(
            &db.sql("SELECT email_key FROM crm.contacts WHERE tenant_id = $1"),
            &[&tenant.as_uuid()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let held: Vec<&String> = keys.iter().flatten().collect();
    let distinct: BTreeSet<&&String> = held.iter().collect();
    assert_eq!(distinct.len(), held.len(), "no duplicate email: {keys:?}");
    assert_eq!(held.len(), 1, "the squatter keeps its key: {keys:?}");
    drop((store, client));
}

// ---- merge chains and merges racing writers, across several stores ----

fn retryable(e: &Error) -> bool {
    matches!(
        e,
        Error::Backend {
            retryable: true,
            ..
        }
    )
}

/// A chain of contacts merged pairwise from several stores at once, in
/// every direction (A into B while B into C while C into A …), while
/// writers log activities for all of them: every merge either succeeds or
/// is `NotFound` (never a deadlock, never an untyped error), every
/// acknowledged activity survives on a surviving contact, and exactly the
/// contacts no successful merge removed are left.
async fn merge_chains_racing_each_other_and_writers_lose_nothing_and_never_deadlock(
    target: Target,
) {
    let Some(base) = TestStore::on(target).await else {
        return;
    };
    let stores: Vec<PostgresStore> = (0..4)
        .map(|_| base.db().store_with(4, conformance::test_pipelines()))
        .collect();
    let tenant = TenantId::new();
    for round in 0..6 {
        let mut ids = Vec::new();
        for i in 0..5 {
            let c = base
                .scope(tenant, &ctx())
                .create_contact(new_contact(&format!("r{round}c{i}@example.com")))
                .await
                .unwrap();
            ids.push(c.id);
        }
        let ids = Arc::new(ids);
        let mut tasks = Vec::new();
        // Merges: i into i+1 and i+1 into i (cycles and chains).
        for (k, (s, l)) in [(1, 0), (2, 1), (3, 2), (4, 3), (0, 4), (0, 1), (2, 3)]
            .into_iter()
            .enumerate()
        {
            let store = stores[k % stores.len()].clone();
            let ids = ids.clone();
            tasks.push(tokio::spawn(async move {
                let mut tx = store.begin(tenant, ctx()).await?;
                let r = tx
                    .merge_contacts(ids[s], ids[l], ConflictPolicy::Existing)
                    .await;
                match r {
                    Ok(_) => tx.commit().await.map(|()| Some((s, l))),
                    Err(e) => {
                        tx.rollback().await?;
                        Err(e)
                    }
                }
            }));
        }
        // Writers: activities on every contact of the chain.
        let mut writers = Vec::new();
        for w in 0..5 {
            let store = stores[w % stores.len()].clone();
            let ids = ids.clone();
            writers.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for n in 0..8 {
                    let target = ids[(w + n) % ids.len()];
                    let mut tx = store.begin(tenant, ctx()).await.unwrap();
                    match tx
                        .log_activity(NewActivity::new(target, ActivityKind::Note))
                        .await
                    {
                        Ok(a) => match tx.commit().await {
                            Ok(()) => acked.push(a.id),
                            Err(e) => panic!("commit of an activity failed: {e}"),
                        },
                        Err(Error::NotFound { .. }) => {}
                        Err(e) => panic!("logging an activity failed: {e:?}"),
                    }
                }
                acked
            }));
        }
        let mut removed = BTreeSet::new();
        for t in tasks {
            match t.await.unwrap() {
                Ok(Some((_, l))) => {
                    removed.insert(l);
                }
                Ok(None) => {}
                Err(Error::NotFound { .. }) => {}
                Err(e) => panic!(
                    "round {round}: a merge failed with {e:?} (retryable: {})",
                    retryable(&e)
                ),
            }
        }
        let mut acked = Vec::new();
        for w in writers {
            acked.extend(w.await.unwrap());
        }
        eprintln!(
            "round {round}: merged away {removed:?}, {} activities acknowledged",
            acked.len()
        );
        for (i, id) in ids.iter().enumerate() {
            let exists = base
                .scope(tenant, &ctx())
                .get_contact(*id)
                .await
                .unwrap()
                .is_some();
            assert_eq!(exists, !removed.contains(&i), "round {round}: contact {i}");
        }
        let client = base.db().client().await;
        let stored: i64 = client
            .query_one(
                &base.db().sql(
                    "SELECT count(*) FROM crm.activities WHERE tenant_id = $1 AND id = ANY($2)",
                ),
                &[
                    &tenant.as_uuid(),
                    &acked.iter().map(|a| a.as_uuid()).collect::<Vec<_>>(),
                ],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            stored as usize,
            acked.len(),
            "round {round}: every acknowledged activity"
        );
    }
}

/// Merges racing updates, deactivations, deletes and erasures of the same
/// contacts from other stores: each operation ends in a typed outcome
/// (`Ok`, `NotFound`, `Conflict`), never a deadlock or a raw database error.
async fn merges_racing_updates_deletes_and_erasures_end_in_typed_outcomes(target: Target) {
    let Some(base) = TestStore::on(target).await else {
        return;
    };
    let stores: Vec<PostgresStore> = (0..4)
        .map(|_| base.db().store_with(4, conformance::test_pipelines()))
        .collect();
    let tenant = TenantId::new();
    let mut failures = Vec::new();
    for round in 0..10 {
        let s = base
            .scope(tenant, &ctx())
            .create_contact(new_contact(&format!("s{round}@example.com")))
            .await
            .unwrap();
        let l = base
            .scope(tenant, &ctx())
            .create_contact(new_contact(&format!("l{round}@example.com")))
            .await
            .unwrap();
        let mut tasks: Vec<tokio::task::JoinHandle<(&str, Result<(), Error>)>> = Vec::new();
        let st = stores[0].clone();
        tasks.push(tokio::spawn(async move {
            let mut tx = st.begin(tenant, ctx()).await.unwrap();
            let r = tx
                .merge_contacts(s.id, l.id, ConflictPolicy::Incoming)
                .await;
            let r = match r {
                Ok(_) => tx.commit().await,
                Err(e) => Err(e),
            };
            ("merge", r)
        }));
        for (k, target) in [(1, l.clone()), (2, s.clone())] {
            let st = stores[k].clone();
            tasks.push(tokio::spawn(async move {
                let mut tx = st.begin(tenant, ctx()).await.unwrap();
                let r = tx
                    .update_contact(
                        target.id,
                        target.version,
                        ContactPatch {
                            last_name: Some(person("Changed")),
                            ..Default::default()
                        },
                    )
                    .await;
                let r = match r {
                    Ok(_) => tx.commit().await,
                    Err(e) => Err(e),
                };
                ("update", r)
            }));
        }
        let st = stores[3].clone();
        let which = round % 3;
        tasks.push(tokio::spawn(async move {
            let mut tx = st.begin(tenant, ctx()).await.unwrap();
            let target = if round % 2 == 0 { l.id } else { s.id };
            let r = match which {
                0 => tx.delete_contact(target).await.map(drop),
                1 => tx.erase_contact(target).await.map(drop),
                _ => tx.deactivate_contact(target).await.map(drop),
            };
            let r = match r {
                Ok(()) => tx.commit().await,
                Err(e) => Err(e),
            };
            (["delete", "erase", "deactivate"][which], r)
        }));
        for t in tasks {
            let (what, r) = t.await.unwrap();
            eprintln!(
                "round {round}: {what}: {:?}",
                r.as_ref().map_err(|e| e.kind())
            );
            match r {
                Ok(()) | Err(Error::NotFound { .. }) | Err(Error::Conflict { .. }) => {}
                // The survivor was erased first: nothing can be merged into it.
                Err(Error::Validation(v))
                    if what == "merge" && v.for_field("survivor").next().is_some() => {}
                Err(e) => failures.push(format!("round {round}: {what}: {e}")),
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

// ---- upserts racing creates of one email in other casings and normal forms ----

async fn upserts_and_creates_of_one_email_in_many_forms_race_to_exactly_one_contact(
    target: Target,
) {
    let Some(base) = TestStore::on(target).await else {
        return;
    };
    let stores: Vec<PostgresStore> = (0..4)
        .map(|_| base.db().store_with(4, conformance::test_pipelines()))
        .collect();
    let tenant = TenantId::new();
    // One address in many forms: casing, NFC/NFD, ß/SS/ẞ.
    let forms = [
        "Émile.Straße@example.com",
        "E\u{301}mile.strasse@EXAMPLE.com",
        "ÉMILE.STRASSE@example.com",
        "émile.straẞe@example.com",
        "e\u{301}mile.STRAßE@Example.Com",
        "ÉMILE.STRAẞE@EXAMPLE.COM",
    ];
    for round in 0..8 {
        let mut tasks = Vec::new();
        for (i, form) in forms.iter().enumerate() {
            let store = stores[i % stores.len()].clone();
            let address = form.replace("@", &format!("{round}@"));
            tasks.push(tokio::spawn(async move {
                let mut tx = store.begin(tenant, ctx()).await.unwrap();
                let row = named(&address, "Émile", &format!("V{i}"));
                if i % 2 == 0 {
                    match tx.create_contact(row).await {
                        Ok(c) => {
                            tx.commit().await.map_err(|e| format!("commit: {e}"))?;
                            Ok(Some(c.id))
                        }
                        Err(Error::DuplicateEmail { .. }) => Ok(None),
                        Err(e) => Err(format!("create {address}: {e:?}")),
                    }
                } else {
                    match tx.upsert_contacts(&[row], ConflictPolicy::Incoming).await {
                        Ok(outcomes) => {
                            tx.commit().await.map_err(|e| format!("commit: {e}"))?;
                            match outcomes[0] {
                                UpsertOutcome::Inserted(id) => Ok(Some(id)),
                                _ => Ok(None),
                            }
                        }
                        Err(e) => Err(format!("upsert {address}: {e:?}")),
                    }
                }
            }));
        }
        let mut inserted = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Ok(Some(id)) => inserted.push(id),
                Ok(None) => {}
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        assert_eq!(
            inserted.len(),
            1,
            "round {round}: exactly one insert won: {inserted:?}"
        );
        let key = caseless_key(&forms[0].replace("@", &format!("{round}@")));
        let count: i64 = base
            .db()
            .client()
            .await
            .query_one(
                &base.db().sql(
                    "SELECT count(*) FROM crm.contacts WHERE tenant_id = $1 AND email_key = $2",
                ),
                &[&tenant.as_uuid(), &key],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(count, 1, "round {round}: one contact");
    }
}

/// Makes the contacts table refuse rows whose first name is `Boom`, by a
/// trigger `BEFORE <events>` (its function in the test's schema, so that
/// tests sharing a Citus database do not meet).
async fn refuse_boom(db: &TestDb, events: &str) {
    db.ddl(&[
        "CREATE FUNCTION crm.refuse_boom() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.first_name = 'Boom' THEN RAISE EXCEPTION 'boom'; END IF;
             RETURN NEW;
         END $$",
        &format!(
            "CREATE TRIGGER refuse_boom BEFORE {events} ON crm.contacts
             FOR EACH ROW EXECUTE FUNCTION crm.refuse_boom()"
        ),
    ])
    .await;
}

// ---- the idempotency guard around a handler whose upsert fails ----

/// A handler whose upsert fails (a trigger refuses a row) and that goes on
/// with another write: the failed upsert leaves nothing, the claim made with
/// the first statement survives the savepoint's rollback, the result is
/// stored, and a second delivery replays it without running the handler.
async fn a_handler_that_survives_a_failed_upsert_keeps_its_claim_and_is_replayed(target: Target) {
    let Some(db) = TestStore::on(target).await else {
        return;
    };
    refuse_boom(db.db(), "INSERT OR UPDATE").await;
    let store: PostgresStore = (*db).clone();
    let tenant = TenantId::new();
    let ev = InboundEvent::new("stripe", "evt_upsert_fails", &json!({"id": 7})).unwrap();
    let guard = IdempotencyGuard::new();
    let mut results = Vec::new();
    for delivery in 0..2 {
        let outcome = guard
            .run(&store, tenant, &ctx(), &ev, move |tx| {
                Box::pin(async move {
                    let rows = [
                        named("ok@example.com", "Fine", "Row"),
                        named("boom@example.com", "Boom", "Row"),
                    ];
                    // The first statement of the handler: the claim goes
                    // with it (a duplicate starts the handler too, and its
                    // first statement finds the key taken).
                    let failed = tx.upsert_contacts(&rows, ConflictPolicy::Incoming).await;
                    assert!(failed.is_err(), "the trigger refuses the batch");
                    let c = tx
                        .create_contact(named("after@example.com", "After", "Row"))
                        .await?;
                    Ok::<_, HandlerError>(c.id.to_string())
                }) as HandlerFuture<'_, String>
            })
            .await
            .unwrap_or_else(|e| panic!("delivery {delivery}: {e:?}"));
        assert_eq!(outcome.is_replay(), delivery == 1, "delivery {delivery}");
        results.push(outcome.result.expect("the handler succeeded"));
    }
    assert_eq!(
        results[0], results[1],
        "the second delivery replays the first's result"
    );
    let client = db.db().client().await;
    let emails: Vec<String> = client
        .query(
            &db.db()
                .sql("SELECT email FROM crm.contacts WHERE tenant_id = $1 ORDER BY email"),
            &[&tenant.as_uuid()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        emails,
        ["after@example.com"],
        "nothing of the failed upsert"
    );
}

// ---- a lost connection in the middle of an atomic operation ----

async fn a_merge_whose_connection_is_killed_fails_retryably_and_leaves_nothing(target: Target) {
    let Some(db) = TestStore::on(target).await else {
        return;
    };
    let store: PostgresStore = (*db).clone();
    let tenant = TenantId::new();
    let crm = store.scope(tenant, &ctx());
    let s = crm
        .create_contact(new_contact("s@example.com"))
        .await
        .unwrap();
    let l = crm
        .create_contact(new_contact("l@example.com"))
        .await
        .unwrap();
    crm.log_activity(NewActivity::new(l.id, ActivityKind::Note))
        .await
        .unwrap();
    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    tx.create_contact(new_contact("in-tx@example.com"))
        .await
        .unwrap();
    // Kill every backend of this test's database but the killer's own (on
    // Citus every backend of the test's role on the coordinator, where the
    // store's connections are; the killer is the administrative user).
    let (admin, column, name) = if db.db().is_citus() {
        let role = db.db().store_config().get_user().unwrap().to_string();
        (db.db().client().await, "usename", role)
    } else {
        let mut c = db.db().config();
        c.dbname("postgres");
        let name = db.db().name().to_string();
        (support::client(&c).await, "datname", name)
    };
    admin
        .execute(
            &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE {column} = $1 AND pid <> pg_backend_pid()"
            ),
            &[&name],
        )
        .await
        .unwrap();
    // Until the killed backends are gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left: i64 = admin
            .query_one(
                &format!("SELECT count(*) FROM pg_stat_activity WHERE {column} = $1"),
                &[&name],
            )
            .await
            .unwrap()
            .get(0);
        if left == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the backends never went"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let merged = tx
        .merge_contacts(s.id, l.id, ConflictPolicy::Incoming)
        .await;
    assert!(
        matches!(&merged, Err(e) if retryable(e)),
        "a lost connection is a retryable error: {merged:?}"
    );
    let again = tx.get_contact(s.id).await;
    assert!(
        again.is_err(),
        "the transaction is not usable after the loss: {again:?}"
    );
    let committed = tx.commit().await;
    assert!(committed.is_err(), "commit reports the loss: {committed:?}");
    assert!(crm.get_contact(l.id).await.unwrap().is_some());
    let none = crm
        .get_contact_by_email(&Email::parse("in-tx@example.com").unwrap())
        .await
        .unwrap();
    assert!(none.is_none());
}

// ---- name keys that expand, near the length limits, on both backends ----

/// Names of 100 characters whose keys expand (ligatures, ß, Greek with
/// iota subscript, combining marks) page one by one in both directions,
/// every contact exactly once, in the same order on both backends.
async fn names_whose_keys_expand_page_once_each_and_alike_on_both_backends(target: Target) {
    let Some(pg) = TestStore::on(target).await else {
        return;
    };
    let memory = InMemoryStore::with_pipelines(conformance::test_pipelines());
    let tenant = TenantId::new();
    let unit = ["ﬃ", "ß", "ᾷ", "ŉ", "և", "ΐ", "e\u{301}", "İ", "ﬀ", "Σ"];
    let mut rows = Vec::new();
    for (i, u) in unit.iter().enumerate() {
        for (j, v) in unit.iter().enumerate() {
            // As many as fit in 100 characters, the names' limit.
            let last = u.repeat(100 / u.chars().count());
            let first = v.repeat(100 / v.chars().count());
            rows.push(named(&format!("n{i}x{j}@example.com"), &first, &last));
        }
    }
    // Also names whose keys collide with others only after keying.
    rows.push(named("dup1@example.com", "STRASSE", "ﬃ"));
    rows.push(named("dup2@example.com", "straße", "ffi"));
    let dyn_pg: &dyn Store = &*pg;
    let dyn_mem: &dyn Store = &memory;
    for store in [dyn_pg, dyn_mem] {
        let crm = store.scope(tenant, &ctx());
        for r in &rows {
            crm.create_contact(r.clone()).await.unwrap();
        }
    }
    let mut orders = Vec::new();
    for store in [dyn_pg, dyn_mem] {
        for sort in [ContactSort::NameAsc, ContactSort::NameDesc] {
            let mut seen = Vec::new();
            let mut q = ContactQuery::new()
                .with_sort(sort)
                .with_page(PageRequest::first(1));
            loop {
                let page = store
                    .scope(tenant, &ctx())
                    .search_contacts(&q)
                    .await
                    .unwrap();
                seen.extend(page.items.iter().map(|c| c.email.normalized().to_string()));
                assert!(seen.len() <= rows.len(), "{sort:?} never ends");
                match page.next_cursor {
                    Some(c) => q = q.after(c),
                    None => break,
                }
            }
            let distinct: BTreeSet<&String> = seen.iter().collect();
            assert_eq!(distinct.len(), rows.len(), "{sort:?}: every contact once");
            orders.push(seen);
        }
    }
    assert_eq!(orders[0], orders[2], "NameAsc alike on both backends");
    assert_eq!(orders[1], orders[3], "NameDesc alike on both backends");
}

// ---- prefix searches with wildcards and prefixes whose key changes length ----

async fn prefix_searches_with_wildcards_and_expanding_prefixes_agree_on_both_backends(
    target: Target,
) {
    let Some(pg) = TestStore::on(target).await else {
        return;
    };
    let memory = InMemoryStore::with_pipelines(conformance::test_pipelines());
    let tenant = TenantId::new();
    let people = [
        ("pct@example.com", "50%off", "Straße"),
        ("us@example.com", "a_b", "STRASSE"),
        ("bs@example.com", "back\\slash", "strasse"),
        ("x@example.com", "50xoff", "Strase"),
        ("y@example.com", "axb", "ﬃx"),
        ("z@example.com", "backXslash", "Zoe\u{308}y"),
        ("w@example.com", "İstanbul", "Zoëy"),
        ("v@example.com", "i\u{307}zmir", "Ǆemal"),
        ("u@example.com", "Σίσυφος", "ǆemal"),
    ];
    let dyn_pg: &dyn Store = &*pg;
    let dyn_mem: &dyn Store = &memory;
    for store in [dyn_pg, dyn_mem] {
        for (e, f, l) in people {
            store
                .scope(tenant, &ctx())
                .create_contact(named(e, f, l))
                .await
                .unwrap();
        }
    }
    let prefixes = [
        "50%", "a_", "back\\", "%", "_", "\\", "STRAß", "strass", "Straẞ", "ﬃ", "ff", "ffi", "Zoe",
        "Zoë", "ZOË", "İ", "i\u{307}", "I", "ǅ", "DŽ", "σί", "ΣΊ", "s", "ss", "ß",
    ];
    let mut disagreements = Vec::new();
    for p in prefixes {
        let q = ContactQuery::new()
            .with_name_prefix(p)
            .with_sort(ContactSort::NameAsc);
        let a: Vec<String> = dyn_pg
            .scope(tenant, &ctx())
            .search_contacts(&q)
            .await
            .unwrap()
            .items
            .iter()
            .map(|c| c.email.as_str().to_string())
            .collect();
        let b: Vec<String> = dyn_mem
            .scope(tenant, &ctx())
            .search_contacts(&q)
            .await
            .unwrap()
            .items
            .iter()
            .map(|c| c.email.as_str().to_string())
            .collect();
        if a != b {
            disagreements.push(format!("{p:?}: postgres {a:?}, memory {b:?}"));
        }
        // Every contact whose name starts with the prefix, ignoring case
        // as the key does, is found.
        let pk = caseless_key(p);
        for (e, f, l) in people {
            let expected = caseless_key(f).starts_with(&pk) || caseless_key(l).starts_with(&pk);
            if expected != a.contains(&e.to_string()) {
                disagreements.push(format!("{p:?}: {e} expected {expected}"));
            }
        }
    }
    assert!(disagreements.is_empty(), "{disagreements:#?}");
}

// ---- a merge against a transaction that changed one of the loser's deals ----

/// A common handler: close a deal, then log an activity for its contact,
/// in one transaction. A merge of that contact starting in between locks
/// the contact, then waits for the deal; the handler then waits for the
/// contact: PostgreSQL breaks the cycle after `deadlock_timeout` with
/// 40P01 for one of them. Neither operation did anything wrong.
async fn a_deal_update_then_an_activity_racing_a_merge_of_the_deals_contact_do_not_deadlock(
    target: Target,
) {
    use crm_core::domain::{Currency, DealPatch, DealTitle, Money, NewDeal};
    let Some(owner) = TestStore::on(target).await else {
        return;
    };
    let (writer, merger) = (owner.db().store(), owner.db().store());
    let tenant = TenantId::new();
    let s = owner
        .scope(tenant, &ctx())
        .create_contact(new_contact("s@example.com"))
        .await
        .unwrap();
    let l = owner
        .scope(tenant, &ctx())
        .create_contact(new_contact("l@example.com"))
        .await
        .unwrap();
    let deal = owner
        .scope(tenant, &ctx())
        .create_deal(NewDeal::new(
            l.id,
            DealTitle::parse("Renewal").unwrap(),
            Money::parse("100", Currency::parse("EUR").unwrap()).unwrap(),
        ))
        .await
        .unwrap();
    let mut handler = writer.begin(tenant, ctx()).await.unwrap();
    handler
        .update_deal(
            deal.id,
            deal.version,
            DealPatch {
                title: Some(DealTitle::parse("Renewal 2").unwrap()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let merge = tokio::spawn(async move {
        let mut tx = merger.begin(tenant, ctx()).await.unwrap();
        let r = tx
            .merge_contacts(s.id, l.id, ConflictPolicy::Existing)
            .await;
        match r {
            Ok(_) => tx.commit().await,
            Err(e) => Err(e),
        }
    });
    support::until_a_backend_waits_for_a_lock(owner.db()).await;
    let logged = handler
        .log_activity(NewActivity::new(l.id, ActivityKind::Note))
        .await;
    let handled = match logged {
        Ok(_) => handler.commit().await,
        Err(e) => Err(e),
    };
    let merged = merge.await.unwrap();
    let deadlocked = |r: &Result<(), Error>| matches!(r, Err(e) if e.to_string().contains("40P01"));
    assert!(
        !deadlocked(&handled) && !deadlocked(&merged),
        "handler: {handled:?}\nmerge: {merged:?}"
    );
}

// ---- live scores merged alike on both backends ----

async fn a_merge_adds_the_losers_live_score_to_the_survivors_alike_on_both_backends(
    target: Target,
) {
    use crm_core::domain::{NewSignal, SignalKind};
    let Some(pg) = TestStore::on(target).await else {
        return;
    };
    let memory = InMemoryStore::with_pipelines(conformance::test_pipelines());
    let dyn_pg: &dyn Store = &*pg;
    let dyn_mem: &dyn Store = &memory;
    let mut logs = Vec::new();
    let at = chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp() - 86_400, 0).unwrap();
    for store in [dyn_pg, dyn_mem] {
        let tenant = TenantId::new();
        let crm = store.scope(tenant, &ctx());
        let s = crm
            .create_contact(new_contact("s@example.com"))
            .await
            .unwrap();
        let l = crm
            .create_contact(new_contact("l@example.com"))
            .await
            .unwrap();
        let lonely = crm
            .create_contact(new_contact("n@example.com"))
            .await
            .unwrap();
        let mut tx = store.begin(tenant, ctx()).await.unwrap();
        for (c, kind) in [
            (s.id, "page_view"),
            (l.id, "demo_request"),
            (l.id, "email_open"),
        ] {
            let mut sig = NewSignal::new(c, SignalKind::parse(kind).unwrap());
            sig.occurred_at = Some(at);
            tx.record_signal(sig).await.unwrap();
        }
        tx.merge_contacts(s.id, l.id, ConflictPolicy::Existing)
            .await
            .unwrap();
        // A survivor without any state takes the loser's.
        let mut sig = NewSignal::new(l.id, SignalKind::parse("page_view").unwrap());
        sig.occurred_at = Some(at);
        assert!(tx.record_signal(sig).await.is_err(), "the loser is gone");
        tx.commit().await.unwrap();
        let mut tx = store.begin(tenant, ctx()).await.unwrap();
        let l2 = tx
            .create_contact(new_contact("l2@example.com"))
            .await
            .unwrap();
        let mut sig = NewSignal::new(l2.id, SignalKind::parse("meeting_booked").unwrap());
        sig.occurred_at = Some(at);
        tx.record_signal(sig).await.unwrap();
        tx.merge_contacts(lonely.id, l2.id, ConflictPolicy::Existing)
            .await
            .unwrap();
        let a = tx
            .live_score_log(s.id)
            .await
            .map(|s| s.map(|s| s.log))
            .unwrap();
        let b = tx
            .live_score_log(lonely.id)
            .await
            .map(|s| s.map(|s| s.log))
            .unwrap();
        tx.commit().await.unwrap();
        logs.push((a, b));
    }
    let close = |x: Option<Option<f64>>, y: Option<Option<f64>>| match (x, y) {
        (Some(Some(a)), Some(Some(b))) => (a - b).abs() < 1e-9,
        (x, y) => x == y,
    };
    assert!(
        logs[0].0.flatten().is_some() && logs[0].1.flatten().is_some(),
        "{logs:?}"
    );
    assert!(
        close(logs[0].0, logs[1].0) && close(logs[0].1, logs[1].1),
        "{logs:?}"
    );
}

// ---- the caseless key of text with U+0345 COMBINING GREEK YPOGEGRAMMENI ----

/// U+0345 COMBINING GREEK YPOGEGRAMMENI upper-cases to a letter (`Ι`),
/// so a mark after it moves onto that letter: `"\u{345}\u{300}"` keys to
/// `"\u{300}ι"`, its upper case `"Ι\u{300}"` to `"ὶ"`. Unicode's canonical
/// caseless match (D145) tells the two apart too, and no key can join
/// them and stay the same across normal forms. The property test in
/// `tests/domain_props.rs` asserted otherwise for random text and failed
/// in about one run in eight. Pinned here as the documented exception.
#[test]
fn text_with_a_ypogegrammeni_before_a_mark_keys_apart_from_its_upper_case() {
    let s = "\u{345}\u{300}";
    assert_ne!(caseless_key(s), caseless_key(&s.to_uppercase()));
    // As emails: two addresses, one the upper case of the other, both valid,
    // are stored as two contacts on both backends.
    let a = Email::parse("\u{1F80}\u{305}@example.com").unwrap();
    let b = Email::parse(&"\u{1F80}\u{305}@example.com".to_uppercase()).unwrap();
    assert_ne!(a.normalized(), b.normalized());
}

// ---- email changes racing creates and upserts of one email in other forms ----

async fn email_changes_creates_and_upserts_racing_for_one_email_leave_exactly_one_holder(
    target: Target,
) {
    let Some(base) = TestStore::on(target).await else {
        return;
    };
    let stores: Vec<PostgresStore> = (0..4)
        .map(|_| base.db().store_with(4, conformance::test_pipelines()))
        .collect();
    let tenant = TenantId::new();
    let forms = [
        "Ærøskøbing.ß@example.com",
        "ÆRØSKØBING.SS@EXAMPLE.COM",
        "ærøskøbing.ẞ@Example.com",
        "æRØskøbing.sS@example.COM",
    ];
    for round in 0..6 {
        let mut movers = Vec::new();
        for i in 0..4 {
            movers.push(
                base.scope(tenant, &ctx())
                    .create_contact(new_contact(&format!("m{round}.{i}@example.com")))
                    .await
                    .unwrap(),
            );
        }
        let mut tasks = Vec::new();
        for (i, form) in forms.iter().enumerate() {
            let address = form.replace("@", &format!("{round}@"));
            // An email change of a contact to this form.
            let (store, mover) = (stores[i].clone(), movers[i].clone());
            let to = address.clone();
            tasks.push(tokio::spawn(async move {
                let mut tx = store.begin(tenant, ctx()).await.unwrap();
                let r = tx
                    .update_contact(
                        mover.id,
                        mover.version,
                        ContactPatch {
                            email: Some(Email::parse(&to).unwrap()),
                            ..Default::default()
                        },
                    )
                    .await;
                match r {
                    Ok(_) => tx.commit().await.map(|()| ("update", true)),
                    Err(Error::DuplicateEmail { .. }) => Ok(("update", false)),
                    Err(e) => Err(e),
                }
            }));
            // A create of it, and an upsert.
            let store = stores[(i + 1) % 4].clone();
            let to = address.clone();
            tasks.push(tokio::spawn(async move {
                let mut tx = store.begin(tenant, ctx()).await.unwrap();
                match tx.create_contact(new_contact(&to)).await {
                    Ok(_) => tx.commit().await.map(|()| ("create", true)),
                    Err(Error::DuplicateEmail { .. }) => Ok(("create", false)),
                    Err(e) => Err(e),
                }
            }));
            let store = stores[(i + 2) % 4].clone();
            tasks.push(tokio::spawn(async move {
                let mut tx = store.begin(tenant, ctx()).await.unwrap();
                let out = tx
                    .upsert_contacts(&[new_contact(&address)], ConflictPolicy::NonEmptyIncoming)
                    .await?;
                tx.commit().await?;
                Ok(("upsert", matches!(out[0], UpsertOutcome::Inserted(_))))
            }));
        }
        let mut won = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Ok((what, true)) => won.push(what),
                Ok(_) => {}
                Err(e) => panic!("round {round}: {e:?}"),
            }
        }
        assert_eq!(
            won.len(),
            1,
            "round {round}: exactly one took the email: {won:?}"
        );
        let key = caseless_key(&forms[0].replace("@", &format!("{round}@")));
        let holders: i64 = base
            .db()
            .client()
            .await
            .query_one(
                &base.db().sql(
                    "SELECT count(*) FROM crm.contacts WHERE tenant_id = $1 AND email_key = $2",
                ),
                &[&tenant.as_uuid(), &key],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(holders, 1, "round {round}");
    }
}

// ---- two upserts in one transaction, the first failing ----

async fn an_upsert_after_a_failed_upsert_in_the_same_transaction_works_and_commits_alone(
    target: Target,
) {
    let Some(db) = TestStore::on(target).await else {
        return;
    };
    refuse_boom(db.db(), "INSERT").await;
    let tenant = TenantId::new();
    let mut tx = db.begin(tenant, ctx()).await.unwrap();
    for attempt in 0..3 {
        let bad = [
            named(&format!("a{attempt}@example.com"), "Fine", "Row"),
            named(&format!("b{attempt}@example.com"), "Boom", "Row"),
        ];
        assert!(
            tx.upsert_contacts(&bad, ConflictPolicy::Incoming)
                .await
                .is_err()
        );
        let good = [named(&format!("c{attempt}@example.com"), "Fine", "Row")];
        let out = tx.upsert_contacts(&good, ConflictPolicy::Incoming).await;
        assert!(
            matches!(out.as_deref(), Ok([UpsertOutcome::Inserted(_)])),
            "attempt {attempt}: {out:?}"
        );
    }
    tx.commit().await.unwrap();
    let emails: Vec<String> = db
        .db()
        .client()
        .await
        .query(
            &db.db()
                .sql("SELECT email FROM crm.contacts WHERE tenant_id = $1 ORDER BY email"),
            &[&tenant.as_uuid()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        emails,
        ["c0@example.com", "c1@example.com", "c2@example.com"]
    );
}

// ---- merge errors alike on both backends ----

/// Both contacts missing: the contract says `NotFound` "for either"; the
/// two backends name different ones (memory the survivor, PostgreSQL the
/// lower id), which the differential test reports as a disagreement.
async fn a_merge_of_two_missing_contacts_names_the_same_one_on_both_backends(target: Target) {
    let Some(pg) = TestStore::on(target).await else {
        return;
    };
    let memory = InMemoryStore::with_pipelines(conformance::test_pipelines());
    let dyn_pg: &dyn Store = &*pg;
    let dyn_mem: &dyn Store = &memory;
    let tenant = TenantId::new();
    // The survivor's id sorts after the loser's.
    let loser = ContactId::from_uuid(Uuid::from_u128(1));
    let survivor = ContactId::from_uuid(Uuid::from_u128(2));
    let mut named_ids = Vec::new();
    for store in [dyn_pg, dyn_mem] {
        let mut tx = store.begin(tenant, ctx()).await.unwrap();
        match tx
            .merge_contacts(survivor, loser, ConflictPolicy::Existing)
            .await
        {
            Err(Error::NotFound { id, .. }) => named_ids.push(id),
            other => panic!("{other:?}"),
        }
        tx.rollback().await.unwrap();
    }
    assert_eq!(named_ids[0], named_ids[1], "postgres vs memory");
}

crate::on_every_target!(
    a_merge_whose_connection_is_killed_fails_retryably_and_leaves_nothing,
    a_contact_whose_email_an_earlier_version_accepted_with_an_invisible_character_stays_readable,
    erasing_a_contact_whose_placeholder_an_older_contact_holds_succeeds_without_a_duplicate,
    merge_chains_racing_each_other_and_writers_lose_nothing_and_never_deadlock,
    merges_racing_updates_deletes_and_erasures_end_in_typed_outcomes,
    upserts_and_creates_of_one_email_in_many_forms_race_to_exactly_one_contact,
    a_handler_that_survives_a_failed_upsert_keeps_its_claim_and_is_replayed,
    names_whose_keys_expand_page_once_each_and_alike_on_both_backends,
    prefix_searches_with_wildcards_and_expanding_prefixes_agree_on_both_backends,
    a_deal_update_then_an_activity_racing_a_merge_of_the_deals_contact_do_not_deadlock,
    a_merge_adds_the_losers_live_score_to_the_survivors_alike_on_both_backends,
    email_changes_creates_and_upserts_racing_for_one_email_leave_exactly_one_holder,
    an_upsert_after_a_failed_upsert_in_the_same_transaction_works_and_commits_alone,
    a_merge_of_two_missing_contacts_names_the_same_one_on_both_backends,
);

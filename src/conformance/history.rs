//! The conformance suite's history points: every committed change of a
//! contact or deal is a version with who, when and why; reads by record,
//! by time, by field and by tenant; retention and erasure.

use chrono::Duration;
use futures_util::future::join_all;
use serde_json::json;

use super::prelude::*;
use super::support::{begin, create, ctx, deal, money, new_contact, new_deal, ok, person, score};

/// Every version of `entity`, oldest first, through pages of 2.
async fn versions(store: &DynStore, t: TenantId, entity: HistoryEntity) -> Vec<HistoryEntry> {
    with_tx!(store, t, async |tx| {
        let mut all = Vec::new();
        let mut page = PageRequest::first(2);
        loop {
            let p = ok(tx.entity_history(entity, &page).await, "entity history");
            assert!(p.items.len() <= 2, "a page holds at most its limit");
            all.extend(p.items);
            match p.next_cursor {
                Some(c) => page = PageRequest::after(2, c),
                None => break,
            }
        }
        all
    })
    .await
    .into_iter()
    .rev()
    .collect()
}

async fn as_of(
    store: &DynStore,
    t: TenantId,
    entity: HistoryEntity,
    at: Timestamp,
) -> Option<HistoryEntry> {
    with_tx!(store, t, async |tx| ok(
        tx.entity_as_of(entity, at).await,
        "entity as of"
    ))
    .await
}

/// Asserts that `vs` (oldest first) follow each other without gaps or
/// overlaps, each non-empty, the last one open.
#[track_caller]
fn assert_contiguous(vs: &[HistoryEntry], what: &str) {
    for w in vs.windows(2) {
        assert!(
            w[0].valid_from < w[1].valid_from,
            "{what}: valid_from increases strictly ({:?} then {:?})",
            w[0].valid_from,
            w[1].valid_from
        );
        assert_eq!(
            w[0].valid_to,
            Some(w[1].valid_from),
            "{what}: a version ends where the next one starts"
        );
    }
    if let Some(last) = vs.last() {
        assert_eq!(last.valid_to, None, "{what}: the last version is open");
    }
}

fn us(n: i64) -> Duration {
    Duration::microseconds(n)
}

/// "Who changed the deal amount from 50,000 to 30,000, when, and why?":
/// the field query finds the webhook's change with its actor, reason,
/// request id, idempotency key and time, and only changes of that field.
pub async fn a_deal_amount_change_is_found_by_the_field_query_with_actor_key_and_time(
    store: &DynStore,
) {
    let t = TenantId::new();
    let c = create(store, t, new_contact("buyer@example.com", "Bu", "Yer")).await;
    let d = deal(store, t, new_deal(c.id, "Licences", "50000", "EUR")).await;
    let other = deal(store, t, new_deal(c.id, "Support", "100", "EUR")).await;
    let webhook = Context::new(Actor::parse("integration:billing").expect("actor"))
        .with_reason("invoice corrected")
        .and_then(|c| c.with_request_id("req-77"))
        .and_then(|c| c.with_idempotency_key("billing:evt_42"))
        .expect("a valid context");
    let before = crate::domain::truncate_to_micros(chrono::Utc::now());
    let updated = ok(
        store
            .update_deal_amount(t, &webhook, d.id, d.version, "30000")
            .await,
        "the webhook changes the amount",
    );
    let after = crate::domain::truncate_to_micros(chrono::Utc::now());
    // A title change is not an amount change.
    with_tx!(store, t, async |tx| ok(
        tx.update_deal(
            other.id,
            other.version,
            DealPatch {
                title: Some(crate::domain::DealTitle::parse("Support+").expect("title")),
                ..DealPatch::default()
            }
        )
        .await,
        "retitle"
    ))
    .await;

    let page = with_tx!(store, t, async |tx| ok(
        tx.field_changes(&FieldQuery::deals("amount")).await,
        "field changes"
    ))
    .await;
    let ids: Vec<HistoryEntity> = page.items.iter().map(|e| e.entity).collect();
    assert_eq!(
        ids,
        vec![
            HistoryEntity::Deal(d.id),
            HistoryEntity::Deal(other.id),
            HistoryEntity::Deal(d.id)
        ],
        "the amount's changes, newest first: the webhook's, then the two creations"
    );
    let change = &page.items[0];
    assert_eq!(change.operation, Operation::Updated);
    assert_eq!(change.actor, "integration:billing");
    assert_eq!(change.reason.as_deref(), Some("invoice corrected"));
    assert_eq!(change.request_id.as_deref(), Some("req-77"));
    assert_eq!(change.idempotency_key.as_deref(), Some("billing:evt_42"));
    assert_eq!(change.diff["amount"].old, json!("50000"));
    assert_eq!(change.diff["amount"].new, json!("30000"));
    assert!(
        !change.diff.contains_key("title"),
        "only changed fields are in the diff"
    );
    assert_eq!(change.values["version"], json!(updated.version.get()));
    assert!(
        before <= change.valid_from && change.valid_from <= after + Duration::seconds(1),
        "the change is stamped when it was made: {before} <= {} <= {after}",
        change.valid_from
    );
    let created = &page.items[2];
    assert_eq!(created.operation, Operation::Created);
    assert_eq!(created.actor, "system:conformance");
    assert_eq!(created.idempotency_key, None);

    // For one deal only.
    let one = with_tx!(store, t, async |tx| ok(
        tx.field_changes(&FieldQuery::of(HistoryEntity::Deal(d.id), "amount"))
            .await,
        "field changes of one deal"
    ))
    .await;
    assert_eq!(
        one.items.len(),
        2,
        "the deal's creation and the webhook's change"
    );
    assert!(
        one.items
            .iter()
            .all(|e| e.entity == HistoryEntity::Deal(d.id))
    );

    // Paging visits the same changes.
    let mut paged = Vec::new();
    let mut q = FieldQuery::deals("amount").page(PageRequest::first(1));
    loop {
        let p = with_tx!(store, t, async |tx| ok(
            tx.field_changes(&q).await,
            "a page of field changes"
        ))
        .await;
        paged.extend(p.items.into_iter().map(|e| (e.entity, e.valid_from)));
        match p.next_cursor {
            Some(cursor) => q = q.after(cursor),
            None => break,
        }
    }
    let whole: Vec<_> = page
        .items
        .iter()
        .map(|e| (e.entity, e.valid_from))
        .collect();
    assert_eq!(
        paged, whole,
        "pages of one give the same changes in the same order"
    );
}

/// The values of a record as of a time: before its creation none, then
/// each version in turn, and none again after its deletion.
pub async fn as_of_gives_the_values_in_force_and_none_outside_the_life_of_the_record(
    store: &DynStore,
) {
    let t = TenantId::new();
    let c = create(store, t, new_contact("asof@example.com", "As", "Of")).await;
    let d = deal(store, t, new_deal(c.id, "Deal", "50000", "USD")).await;
    ok(
        store
            .update_deal_amount(t, &ctx(), d.id, d.version, "30000")
            .await,
        "change the amount",
    );
    let deleted = with_tx!(store, t, async |tx| ok(
        tx.delete_deal(d.id).await,
        "delete"
    ))
    .await;
    assert!(deleted);
    let e = HistoryEntity::Deal(d.id);
    let vs = versions(store, t, e).await;
    let ops: Vec<Operation> = vs.iter().map(|v| v.operation).collect();
    assert_eq!(
        ops,
        vec![Operation::Created, Operation::Updated, Operation::Deleted],
        "creation, change and deletion are recorded"
    );
    assert_contiguous(&vs, "a deal's versions");
    let (created, changed, gone) = (&vs[0], &vs[1], &vs[2]);
    assert_eq!(
        created.values["amount"],
        json!("50000"),
        "a version holds the full values"
    );
    assert_eq!(created.values["stage"], json!(d.stage.as_str()));
    assert!(
        created.values.get("score").is_none(),
        "no score in a version"
    );
    assert_eq!(
        gone.values["amount"],
        json!("30000"),
        "a tombstone keeps the last values"
    );
    assert_eq!(gone.diff["amount"].new, json!(null));

    assert_eq!(
        as_of(store, t, e, created.valid_from - us(1)).await,
        None,
        "before creation"
    );
    let at = |v: &HistoryEntry| v.values["amount"].clone();
    let found = as_of(store, t, e, created.valid_from)
        .await
        .expect("created");
    assert_eq!(at(&found), json!("50000"), "at the creation");
    let found = as_of(store, t, e, changed.valid_from - us(1))
        .await
        .expect("just before the change");
    assert_eq!(at(&found), json!("50000"), "just before the change");
    let found = as_of(store, t, e, changed.valid_from)
        .await
        .expect("at the change");
    assert_eq!(at(&found), json!("30000"), "from the change on");
    let found = as_of(store, t, e, gone.valid_from - us(1))
        .await
        .expect("just before the deletion");
    assert_eq!(at(&found), json!("30000"));
    assert_eq!(
        as_of(store, t, e, gone.valid_from).await,
        None,
        "after the deletion"
    );
    assert_eq!(
        as_of(store, t, HistoryEntity::Contact(c.id), changed.valid_from)
            .await
            .map(|v| v.values["email"].clone()),
        Some(json!("asof@example.com")),
        "the contact as of the same time"
    );
}

/// Deleting a contact records its tombstone and those of its deals.
pub async fn deleting_a_contact_records_its_tombstone_and_its_deals_tombstones(store: &DynStore) {
    let t = TenantId::new();
    let c = create(store, t, new_contact("gone@example.com", "Go", "Ne")).await;
    let d1 = deal(store, t, new_deal(c.id, "One", "1", "EUR")).await;
    let d2 = deal(store, t, new_deal(c.id, "Two", "2", "EUR")).await;
    assert!(
        with_tx!(store, t, async |tx| ok(
            tx.delete_contact(c.id).await,
            "delete"
        ))
        .await
    );
    for e in [
        HistoryEntity::Contact(c.id),
        HistoryEntity::Deal(d1.id),
        HistoryEntity::Deal(d2.id),
    ] {
        let vs = versions(store, t, e).await;
        let ops: Vec<Operation> = vs.iter().map(|v| v.operation).collect();
        assert_eq!(
            ops,
            vec![Operation::Created, Operation::Deleted],
            "{e:?}: created, then deleted (also by cascade)"
        );
        assert_contiguous(&vs, "created then deleted");
    }
}

/// An update that changes nothing and a score write-back record nothing;
/// a real change records one version.
pub async fn a_no_op_update_and_a_score_write_record_nothing(store: &DynStore) {
    let t = TenantId::new();
    let crm = store.scope(t, &ctx());
    let c = create(store, t, new_contact("noop@example.com", "No", "Op")).await;
    let same = ok(
        crm.update_contact(
            c.id,
            c.version,
            ContactPatch {
                first_name: Some(person("No")),
                ..ContactPatch::default()
            },
        )
        .await,
        "a patch that changes nothing",
    );
    assert_eq!(same.version, c.version);
    let written = with_tx!(store, t, async |tx| ok(
        tx.write_scores(&[ContactScore::new(c.id, score(77))]).await,
        "write a score"
    ))
    .await;
    assert_eq!(written, 1, "the score changed");
    let vs = versions(store, t, HistoryEntity::Contact(c.id)).await;
    assert_eq!(
        vs.len(),
        1,
        "only the creation is recorded, not the no-op nor the score: {vs:?}"
    );
    ok(
        crm.update_contact(
            c.id,
            c.version,
            ContactPatch {
                first_name: Some(person("Yes")),
                ..ContactPatch::default()
            },
        )
        .await,
        "a real change",
    );
    let vs = versions(store, t, HistoryEntity::Contact(c.id)).await;
    assert_eq!(vs.len(), 2, "a real change is recorded");
    let keys: Vec<&str> = vs[1].diff.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        vec!["first_name", "updated_at", "version"],
        "the diff holds the changed field and the bookkeeping"
    );
    assert_eq!(vs[1].diff["first_name"].old, json!("No"));
    assert_eq!(vs[1].diff["first_name"].new, json!("Yes"));
}

/// Several changes of one record in one transaction are all kept, in
/// order, as non-empty intervals that meet end to start.
pub async fn several_updates_in_one_transaction_give_ordered_contiguous_versions(store: &DynStore) {
    let t = TenantId::new();
    let c = create(store, t, new_contact("many@example.com", "Ma", "Ny")).await;
    let d = deal(store, t, new_deal(c.id, "Deal", "1", "EUR")).await;
    with_tx!(store, t, async |tx| {
        let mut v = d.version;
        for amount in ["2", "3", "4", "5"] {
            let next = ok(
                tx.update_deal(
                    d.id,
                    v,
                    DealPatch {
                        amount: Some(money(amount, "EUR")),
                        ..DealPatch::default()
                    },
                )
                .await,
                "update in one transaction",
            );
            v = next.version;
        }
    })
    .await;
    let vs = versions(store, t, HistoryEntity::Deal(d.id)).await;
    let amounts: Vec<_> = vs.iter().map(|v| v.values["amount"].clone()).collect();
    assert_eq!(
        amounts,
        vec![json!("1"), json!("2"), json!("3"), json!("4"), json!("5")],
        "every update of the transaction is kept, in order"
    );
    assert_contiguous(&vs, "updates in one transaction");
}

/// A rolled back or dropped transaction leaves no history, and the
/// version it would have closed stays open.
pub async fn a_rolled_back_or_dropped_transaction_leaves_no_history(store: &DynStore) {
    let t = TenantId::new();
    let c = create(store, t, new_contact("rb@example.com", "Ro", "Ll")).await;
    let patch = || ContactPatch {
        last_name: Some(person("Back")),
        ..ContactPatch::default()
    };
    let mut tx = begin(store, t).await;
    ok(tx.update_contact(c.id, c.version, patch()).await, "update");
    ok(
        tx.create_contact(new_contact("rb2@example.com", "X", "Y"))
            .await,
        "create",
    );
    ok(tx.rollback().await, "rollback");
    let mut tx = begin(store, t).await;
    ok(tx.update_contact(c.id, c.version, patch()).await, "update");
    ok(tx.delete_contact(c.id).await, "delete");
    drop(tx);
    let vs = versions(store, t, HistoryEntity::Contact(c.id)).await;
    assert_eq!(vs.len(), 1, "only the creation remains: {vs:?}");
    assert_eq!(vs[0].valid_to, None, "the creation's version is still open");
    let all = with_tx!(store, t, async |tx| ok(
        tx.changes_between(
            vs[0].valid_from - Duration::days(1),
            vs[0].valid_from + Duration::days(1),
            &PageRequest::first(100)
        )
        .await,
        "the tenant's changes"
    ))
    .await;
    assert_eq!(
        all.items.len(),
        1,
        "nothing of the rolled back work is recorded"
    );
}

/// Twenty concurrent updates of one deal leave twenty versions after the
/// creation, each ending where the next begins.
pub async fn twenty_concurrent_updates_leave_twenty_contiguous_versions(store: &DynStore) {
    let t = TenantId::new();
    let c = create(store, t, new_contact("race@example.com", "Ra", "Ce")).await;
    let d = deal(store, t, new_deal(c.id, "Raced", "1", "EUR")).await;
    let context = ctx();
    join_all((0..20).map(|i| {
        let context = context.clone();
        async move {
            loop {
                let current = match store.get_deal_now(t, &context, d.id).await {
                    Ok(Some(current)) => current,
                    other => panic!("the deal exists: {other:?}"),
                };
                match store
                    .update_deal_amount(t, &context, d.id, current.version, &format!("{}", 100 + i))
                    .await
                {
                    Ok(_) => break,
                    Err(Error::Conflict { .. }) => tokio::task::yield_now().await,
                    Err(e) if e.is_retryable() => tokio::task::yield_now().await,
                    Err(e) => panic!("update {i}: {e:?}"),
                }
            }
        }
    }))
    .await;
    let vs = versions(store, t, HistoryEntity::Deal(d.id)).await;
    assert_eq!(vs.len(), 21, "the creation and twenty updates");
    assert_contiguous(&vs, "concurrent updates");
    let mut versions_seen: Vec<i64> = vs
        .iter()
        .map(|v| v.values["version"].as_i64().expect("a version number"))
        .collect();
    versions_seen.dedup();
    assert_eq!(
        versions_seen,
        (1..=21).collect::<Vec<i64>>(),
        "one version per record version, in order"
    );
}

/// Purging before T deletes the versions that ended before T and the
/// tombstones of records deleted before T, and keeps current versions.
pub async fn purge_deletes_ended_versions_and_keeps_the_current_ones(store: &DynStore) {
    let t = TenantId::new();
    let c = create(store, t, new_contact("purge@example.com", "Pu", "Rge")).await;
    let d = deal(store, t, new_deal(c.id, "Deal", "1", "EUR")).await;
    let gone = deal(store, t, new_deal(c.id, "Gone", "1", "EUR")).await;
    ok(
        store
            .update_deal_amount(t, &ctx(), d.id, d.version, "2")
            .await,
        "change",
    );
    assert!(
        with_tx!(store, t, async |tx| ok(
            tx.delete_deal(gone.id).await,
            "delete"
        ))
        .await
    );
    super::support::tick().await;
    let cutoff = crate::domain::truncate_to_micros(chrono::Utc::now());
    super::support::tick().await;
    ok(
        store
            .update_deal_amount(t, &ctx(), d.id, d.version.next(), "3")
            .await,
        "change after the cutoff",
    );
    let purged = with_tx!(store, t, async |tx| ok(
        tx.purge_history(cutoff).await,
        "purge"
    ))
    .await;
    // Deal d: created and its first change ended before the cutoff (the
    // second ended after it); "gone": creation and tombstone.
    assert_eq!(
        purged, 3,
        "the ended versions and the old tombstone's history"
    );
    let vs = versions(store, t, HistoryEntity::Deal(d.id)).await;
    let amounts: Vec<_> = vs.iter().map(|v| v.values["amount"].clone()).collect();
    assert_eq!(
        amounts,
        vec![json!("2"), json!("3")],
        "what was in force at the cutoff is kept"
    );
    assert!(
        versions(store, t, HistoryEntity::Deal(gone.id))
            .await
            .is_empty()
    );
    assert_eq!(
        versions(store, t, HistoryEntity::Contact(c.id)).await.len(),
        1,
        "the contact's current version is kept"
    );
}

/// Erasing a contact replaces its personal data in its row and in every
/// version, and records who erased it and when.
pub async fn erasure_removes_personal_data_everywhere_and_is_recorded(store: &DynStore) {
    let t = TenantId::new();
    let mut new = new_contact("Private.Person@example.com", "Private", "Person");
    new.company = Some(crate::domain::CompanyName::parse("Secret Corp").expect("company"));
    let c = create(store, t, new).await;
    let c2 = ok(
        store
            .scope(t, &ctx())
            .update_contact(
                c.id,
                c.version,
                ContactPatch {
                    phone: Some(Some(
                        crate::domain::Phone::parse("+44 20 7946 0000").expect("phone"),
                    )),
                    ..ContactPatch::default()
                },
            )
            .await,
        "add a phone",
    );
    let dpo = Context::new(Actor::parse("user:dpo").expect("actor"))
        .with_reason("GDPR request 12")
        .expect("reason");
    let mut tx = ok(store.begin(t, dpo.clone()).await, "begin");
    let erased = ok(tx.erase_contact(c.id).await, "erase");
    ok(tx.commit().await, "commit");
    let placeholder = format!("erased-{}@erased.invalid", c.id.as_uuid().simple());
    assert_eq!(erased.email.as_str(), placeholder);
    assert_eq!(erased.first_name.as_str(), "Erased");
    assert_eq!(erased.company, None);
    assert_eq!(erased.phone, None);
    assert!(!erased.active);
    assert_eq!(erased.version, c2.version.next());
    let stored = super::support::get(store, t, c.id)
        .await
        .expect("the contact is kept");
    super::support::assert_same(&stored, &erased, "the erased row is stored");

    let vs = versions(store, t, HistoryEntity::Contact(c.id)).await;
    let ops: Vec<Operation> = vs.iter().map(|v| v.operation).collect();
    assert_eq!(
        ops,
        vec![Operation::Created, Operation::Updated, Operation::Erased]
    );
    assert_contiguous(&vs, "versions of an erased contact");
    let text = serde_json::to_string(&vs).expect("json");
    // The phone as written (its digits alone could occur in an id).
    for secret in [
        "Private",
        "Person",
        "Secret Corp",
        "20 7946 0000",
        "private.person",
    ] {
        assert!(
            !text.to_lowercase().contains(&secret.to_lowercase()),
            "{secret:?} is gone from every version: {text}"
        );
    }
    let last = &vs[2];
    assert_eq!(last.actor, "user:dpo");
    assert_eq!(last.reason.as_deref(), Some("GDPR request 12"));
    assert_eq!(last.values["email"], json!(placeholder));
    assert_eq!(
        vs[0].values["email"],
        json!(placeholder),
        "old versions are scrubbed too"
    );
    assert!(
        vs[1].diff.contains_key("phone"),
        "the diff still says what changed"
    );

    // Erasing again changes nothing; a missing contact is not found.
    let mut tx = ok(store.begin(t, dpo).await, "begin");
    let again = ok(tx.erase_contact(c.id).await, "erase again");
    assert_eq!(again.version, erased.version, "nothing left to erase");
    let missing = crate::domain::ContactId::new();
    assert!(matches!(
        tx.erase_contact(missing).await,
        Err(Error::NotFound { .. })
    ));
    ok(tx.commit().await, "commit");
    assert_eq!(
        versions(store, t, HistoryEntity::Contact(c.id)).await.len(),
        3
    );
}

/// Another tenant sees none of a tenant's history, cannot purge it, and
/// cannot erase its contacts.
pub async fn history_is_invisible_to_another_tenant(store: &DynStore) {
    let (a, b) = (TenantId::new(), TenantId::new());
    let c = create(store, a, new_contact("mine@example.com", "Mi", "Ne")).await;
    let d = deal(store, a, new_deal(c.id, "Mine", "5", "EUR")).await;
    let mine = versions(store, a, HistoryEntity::Deal(d.id)).await;
    assert_eq!(mine.len(), 1);
    let at = mine[0].valid_from;
    assert!(
        versions(store, b, HistoryEntity::Deal(d.id))
            .await
            .is_empty()
    );
    assert_eq!(as_of(store, b, HistoryEntity::Deal(d.id), at).await, None);
    with_tx!(store, b, async |tx| {
        let p = ok(
            tx.field_changes(&FieldQuery::deals("amount")).await,
            "field changes",
        );
        assert!(p.items.is_empty(), "no field changes of another tenant");
        let p = ok(
            tx.changes_between(
                at - Duration::days(1),
                at + Duration::days(1),
                &PageRequest::first(10),
            )
            .await,
            "changes between",
        );
        assert!(p.items.is_empty(), "no changes of another tenant");
        assert_eq!(
            ok(tx.purge_history(at + Duration::days(365)).await, "purge"),
            0
        );
        assert!(matches!(
            tx.erase_contact(c.id).await,
            Err(Error::NotFound { .. })
        ));
    })
    .await;
    assert_eq!(versions(store, a, HistoryEntity::Deal(d.id)).await, mine);
    assert_eq!(
        versions(store, a, HistoryEntity::Contact(c.id)).await.len(),
        1
    );
}

/// The tenant's changes in a range, oldest first, page by page, each once;
/// the range includes its start and excludes its end.
pub async fn tenant_changes_are_listed_oldest_first_within_the_range(store: &DynStore) {
    let t = TenantId::new();
    let c = create(store, t, new_contact("sync@example.com", "Sy", "Nc")).await;
    let d = deal(store, t, new_deal(c.id, "Deal", "1", "EUR")).await;
    for amount in ["2", "3", "4"] {
        let current = ok(store.get_deal_now(t, &ctx(), d.id).await, "get").expect("deal");
        ok(
            store
                .update_deal_amount(t, &ctx(), d.id, current.version, amount)
                .await,
            "change",
        );
    }
    let all = versions(store, t, HistoryEntity::Deal(d.id)).await;
    let contact = versions(store, t, HistoryEntity::Contact(c.id)).await;
    let from = contact[0].valid_from;
    let until = all[3].valid_from; // excludes the last change
    let mut seen = Vec::new();
    let mut page = PageRequest::first(2);
    loop {
        let p = with_tx!(store, t, async |tx| ok(
            tx.changes_between(from, until, &page).await,
            "changes between"
        ))
        .await;
        seen.extend(p.items);
        match p.next_cursor {
            Some(cursor) => page = PageRequest::after(2, cursor),
            None => break,
        }
    }
    let got: Vec<(HistoryEntity, Timestamp)> =
        seen.iter().map(|e| (e.entity, e.valid_from)).collect();
    let mut expected: Vec<(HistoryEntity, Timestamp)> = contact
        .iter()
        .chain(all[..3].iter())
        .map(|e| (e.entity, e.valid_from))
        .collect();
    expected.sort_by_key(|(e, at)| (*at, e.id()));
    assert_eq!(
        got, expected,
        "every change in [from, until), oldest first, once"
    );
    let bad = with_tx!(store, t, async |tx| tx
        .changes_between(from, until, &PageRequest::first(0))
        .await)
    .await;
    assert!(
        matches!(bad, Err(Error::Validation(_))),
        "a zero limit is refused"
    );
}

/// Conveniences the history points use.
trait HistoryTestExt {
    /// Changes a deal's amount (same currency) in a transaction of its own.
    fn update_deal_amount<'a>(
        &'a self,
        t: TenantId,
        context: &'a Context,
        id: crate::domain::DealId,
        expected: crate::Version,
        amount: &'a str,
    ) -> futures_util::future::BoxFuture<'a, crate::Result<crate::domain::Deal>>;

    /// Reads a deal in a transaction of its own.
    fn get_deal_now<'a>(
        &'a self,
        t: TenantId,
        context: &'a Context,
        id: crate::domain::DealId,
    ) -> futures_util::future::BoxFuture<'a, crate::Result<Option<crate::domain::Deal>>>;
}

impl HistoryTestExt for DynStore {
    fn update_deal_amount<'a>(
        &'a self,
        t: TenantId,
        context: &'a Context,
        id: crate::domain::DealId,
        expected: crate::Version,
        amount: &'a str,
    ) -> futures_util::future::BoxFuture<'a, crate::Result<crate::domain::Deal>> {
        Box::pin(async move {
            let mut tx = self.begin(t, context.clone()).await?;
            let currency = tx
                .get_deal(id)
                .await?
                .map(|d| d.amount.currency().code().to_string())
                .unwrap_or_else(|| "EUR".to_string());
            let out = tx
                .update_deal(
                    id,
                    expected,
                    DealPatch {
                        amount: Some(money(amount, &currency)),
                        ..DealPatch::default()
                    },
                )
                .await?;
            tx.commit().await?;
            Ok(out)
        })
    }

    fn get_deal_now<'a>(
        &'a self,
        t: TenantId,
        context: &'a Context,
        id: crate::domain::DealId,
    ) -> futures_util::future::BoxFuture<'a, crate::Result<Option<crate::domain::Deal>>> {
        Box::pin(async move {
            let mut tx = self.begin(t, context.clone()).await?;
            let out = tx.get_deal(id).await?;
            tx.commit().await?;
            Ok(out)
        })
    }
}

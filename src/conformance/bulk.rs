//! Bulk upsert by email: inserts, updates in any casing, unchanged rows,
//! conflict policies, repeated emails in a batch, overlapping concurrent
//! batches, rollback and history.

use futures_util::future::join_all;
use serde_json::json;

use super::prelude::*;
use super::support::{begin, create, ctx, deal, get, metadata, new_contact, new_deal, ok, search};

async fn upsert(
    store: &DynStore,
    tenant: TenantId,
    rows: &[NewContact],
    policy: ConflictPolicy,
) -> Vec<UpsertOutcome> {
    let mut tx = begin(store, tenant).await;
    let out = ok(tx.upsert_contacts(rows, policy).await, "upsert contacts");
    ok(tx.commit().await, "commit");
    out
}

async fn all_contacts(store: &DynStore, tenant: TenantId) -> Vec<crate::domain::Contact> {
    search(
        store,
        tenant,
        &ContactQuery::new().with_page(PageRequest::first(1000)),
    )
    .await
    .items
}

/// Contract: new emails are inserted, a known email in another casing
/// updates the contact holding it (keeping its stored email), one outcome
/// per row in row order.
pub async fn upsert_inserts_new_emails_and_updates_known_ones_in_any_casing(store: &DynStore) {
    let t = TenantId::new();
    let ada = create(store, t, new_contact("ada@example.com", "Ada", "Lovelace")).await;
    let rows = [
        new_contact("bob@example.com", "Bob", "Babbage"),
        new_contact("ADA@Example.COM", "Augusta", "Lovelace"),
    ];
    let out = upsert(store, t, &rows, ConflictPolicy::NonEmptyIncoming).await;
    assert_eq!(out.len(), 2, "one outcome per row");
    assert!(
        matches!(out[0], UpsertOutcome::Inserted(_)),
        "a new email is inserted: {out:?}"
    );
    assert_eq!(
        out[1],
        UpsertOutcome::Updated(ada.id),
        "a known email in another casing updates its contact"
    );
    let ada2 = get(store, t, ada.id).await.expect("ada is still there");
    assert_eq!(ada2.first_name.as_str(), "Augusta");
    assert_eq!(ada2.email.as_str(), "ada@example.com", "stored email kept");
    assert_eq!(ada2.version.get(), 2, "an update bumps the version once");
    let bob = get(store, t, out[0].id()).await.expect("bob was created");
    assert_eq!(bob.version.get(), 1);
    assert_eq!(bob.score.get(), 0);
    assert!(bob.active);
    assert_eq!(all_contacts(store, t).await.len(), 2, "no duplicate");
}

/// Contract: a row whose values the contact already has is unchanged, and
/// its version and `updated_at` stay.
pub async fn upserting_the_same_rows_again_reports_them_unchanged(store: &DynStore) {
    let t = TenantId::new();
    let mut row = new_contact("cy@example.com", "Cy", "Young");
    row.company = Some(CompanyName::parse("Acme").unwrap());
    row.metadata = metadata(json!({"tier": "gold", "n": 1}));
    let first = upsert(store, t, &[row.clone()], ConflictPolicy::Incoming).await;
    let before = get(store, t, first[0].id()).await.unwrap();
    for policy in [
        ConflictPolicy::Incoming,
        ConflictPolicy::NonEmptyIncoming,
        ConflictPolicy::Existing,
    ] {
        let again = upsert(store, t, &[row.clone()], policy).await;
        assert_eq!(
            again,
            vec![UpsertOutcome::Unchanged(first[0].id())],
            "{policy:?}: the same values again change nothing"
        );
    }
    let after = get(store, t, first[0].id()).await.unwrap();
    assert_eq!(
        after, before,
        "an unchanged row leaves the contact as it was"
    );
}

/// Contract: each policy picks its values (see `bulk::conflict_patch`).
pub async fn each_conflict_policy_picks_its_values(store: &DynStore) {
    let t = TenantId::new();
    for (i, policy) in [
        ConflictPolicy::Incoming,
        ConflictPolicy::NonEmptyIncoming,
        ConflictPolicy::Existing,
    ]
    .into_iter()
    .enumerate()
    {
        let address = format!("p{i}@example.com");
        let mut stored = new_contact(&address, "Old", "Name");
        stored.company = Some(CompanyName::parse("Old Co").unwrap());
        stored.phone = Some(Phone::parse("+1 555 0100").unwrap());
        stored.lead_source = LeadSource::Paid;
        stored.metadata = metadata(json!({"kept": true}));
        let existing = create(store, t, stored).await;
        let mut incoming = new_contact(&address.to_uppercase(), "New", "Name");
        incoming.company = Some(CompanyName::parse("New Co").unwrap());
        incoming.title = Some(JobTitle::parse("CTO").unwrap());
        incoming.lead_source = LeadSource::Import;
        let out = upsert(store, t, &[incoming], policy).await;
        assert_eq!(out, vec![UpsertOutcome::Updated(existing.id)], "{policy:?}");
        let c = get(store, t, existing.id).await.unwrap();
        let s = |v: Option<&str>| v.map(str::to_string);
        let got = (
            c.first_name.as_str().to_string(),
            s(c.company.as_ref().map(|v| v.as_str())),
            s(c.title.as_ref().map(|v| v.as_str())),
            s(c.phone.as_ref().map(|v| v.as_str())),
            c.lead_source,
            c.metadata.is_empty(),
        );
        let expected = match policy {
            ConflictPolicy::Incoming => (
                "New".to_string(),
                s(Some("New Co")),
                s(Some("CTO")),
                None,
                LeadSource::Import,
                true,
            ),
            ConflictPolicy::NonEmptyIncoming => (
                "New".to_string(),
                s(Some("New Co")),
                s(Some("CTO")),
                s(Some("+1 555 0100")),
                LeadSource::Import,
                false,
            ),
            ConflictPolicy::Existing => (
                "Old".to_string(),
                s(Some("Old Co")),
                s(Some("CTO")),
                s(Some("+1 555 0100")),
                LeadSource::Paid,
                false,
            ),
        };
        assert_eq!(got, expected, "{policy:?} picks its values");
        assert_eq!(
            c.email.as_str(),
            address,
            "{policy:?} keeps the stored email"
        );
    }
}

/// Contract: rows are applied in order, so a batch holding one email twice
/// inserts it once and then updates it, both at the call's one time: the
/// contact's `updated_at` is its `created_at`.
pub async fn a_batch_holding_one_email_twice_inserts_then_updates(store: &DynStore) {
    let t = TenantId::new();
    let rows = [
        new_contact("twice@example.com", "First", "Row"),
        new_contact("other@example.com", "Other", "Row"),
        new_contact("TWICE@example.com", "Second", "Row"),
    ];
    let out = upsert(store, t, &rows, ConflictPolicy::Incoming).await;
    let id = out[0].id();
    assert!(matches!(out[0], UpsertOutcome::Inserted(_)), "{out:?}");
    assert!(matches!(out[1], UpsertOutcome::Inserted(_)), "{out:?}");
    assert_eq!(out[2], UpsertOutcome::Updated(id), "{out:?}");
    let c = get(store, t, id).await.unwrap();
    assert_eq!(c.first_name.as_str(), "Second", "the later row wins");
    assert_eq!(c.version.get(), 2);
    assert_eq!(c.updated_at, c.created_at, "one time for the whole call");
    assert_eq!(all_contacts(store, t).await.len(), 2);
}

/// Contract: overlapping batches upserted at once by separate
/// transactions all succeed and leave one contact per email.
pub async fn concurrent_upserts_of_overlapping_batches_leave_one_contact_per_email(
    store: &DynStore,
) {
    let t = TenantId::new();
    let batches: Vec<Vec<NewContact>> = (0..4)
        .map(|k| {
            let mut rows: Vec<NewContact> = (0..60)
                .map(|i| {
                    let n = k * 20 + i; // batches overlap by 40 emails
                    let address = if k % 2 == 0 {
                        format!("lead{n}@example.com")
                    } else {
                        format!("LEAD{n}@EXAMPLE.com")
                    };
                    new_contact(&address, &format!("Batch{k}"), "Lead")
                })
                .collect();
            if k % 2 == 1 {
                rows.reverse();
            }
            rows
        })
        .collect();
    let results = join_all(batches.iter().map(|rows| async move {
        let mut attempt = 0;
        loop {
            let r = async {
                let mut tx = store.begin(t, ctx()).await?;
                let out = tx.upsert_contacts(rows, ConflictPolicy::Incoming).await?;
                tx.commit().await?;
                Ok::<_, crate::Error>(out)
            }
            .await;
            match r {
                Err(e) if e.is_retryable() && attempt < 5 => attempt += 1,
                other => break other,
            }
        }
    }))
    .await;
    let mut inserted = 0;
    for r in results {
        let out = ok(r, "a concurrent upsert");
        assert_eq!(out.len(), 60);
        inserted += out
            .iter()
            .filter(|o| matches!(o, UpsertOutcome::Inserted(_)))
            .count();
    }
    let contacts = all_contacts(store, t).await;
    assert_eq!(contacts.len(), 120, "one contact per distinct email");
    assert_eq!(inserted, 120, "each email inserted exactly once");
    let mut emails: Vec<String> = contacts
        .iter()
        .map(|c| c.email.normalized().to_string())
        .collect();
    emails.sort();
    emails.dedup();
    assert_eq!(emails.len(), 120);
}

/// Contract: a rolled-back upsert leaves no contact and no change.
pub async fn a_rolled_back_upsert_leaves_nothing(store: &DynStore) {
    let t = TenantId::new();
    let kept = create(store, t, new_contact("kept@example.com", "Kept", "As Is")).await;
    let mut tx = begin(store, t).await;
    ok(
        tx.upsert_contacts(
            &[
                new_contact("KEPT@example.com", "Changed", "Name"),
                new_contact("new@example.com", "New", "Row"),
            ],
            ConflictPolicy::Incoming,
        )
        .await,
        "upsert",
    );
    ok(tx.rollback().await, "rollback");
    assert_eq!(get(store, t, kept.id).await, Some(kept));
    assert_eq!(all_contacts(store, t).await.len(), 1);
}

/// Contract: upserted inserts and updates are in the history with the
/// transaction's context; unchanged rows add no version.
pub async fn upserts_are_recorded_in_history_and_unchanged_rows_are_not(store: &DynStore) {
    let t = TenantId::new();
    let rows = [new_contact("h@example.com", "Hist", "Ory")];
    let id: ContactId = upsert(store, t, &rows, ConflictPolicy::Incoming).await[0].id();
    upsert(store, t, &rows, ConflictPolicy::Incoming).await;
    upsert(
        store,
        t,
        &[new_contact("h@example.com", "Hester", "Ory")],
        ConflictPolicy::Incoming,
    )
    .await;
    let mut tx = begin(store, t).await;
    let page = ok(
        tx.entity_history(HistoryEntity::Contact(id), &PageRequest::first(10))
            .await,
        "history",
    );
    ok(tx.commit().await, "commit");
    assert_eq!(page.items.len(), 2, "an insert and one update: {page:?}");
    assert!(page.items[0].diff.contains_key("first_name"));
    assert_eq!(page.items[0].actor, page.items[1].actor);
}

async fn history_of(
    store: &DynStore,
    t: TenantId,
    entity: HistoryEntity,
) -> Vec<crate::history::HistoryEntry> {
    let mut tx = begin(store, t).await;
    let page = ok(
        tx.entity_history(entity, &PageRequest::first(100)).await,
        "history",
    );
    ok(tx.commit().await, "commit");
    page.items
}

/// Contract: a merge moves the loser's deals, activities and signals to
/// the survivor, fills the survivor's blanks (policy `Existing`), merges
/// custom fields key by key and deletes the loser.
pub async fn merging_moves_deals_activities_and_signals_and_deletes_the_loser(store: &DynStore) {
    let t = TenantId::new();
    let mut s = new_contact("survivor@example.com", "Sam", "Survivor");
    s.metadata = metadata(json!({"a": 1, "shared": "survivor"}));
    let survivor = create(store, t, s).await;
    let mut l = new_contact("loser@example.com", "Lou", "Loser");
    l.company = Some(CompanyName::parse("Loser Co").unwrap());
    l.phone = Some(Phone::parse("+1 555 0199").unwrap());
    l.metadata = metadata(json!({"b": 2, "shared": "loser"}));
    let loser = create(store, t, l).await;
    let d = deal(store, t, new_deal(loser.id, "Big one", "100.00", "EUR")).await;
    let mut tx = begin(store, t).await;
    let a = ok(
        tx.log_activity(NewActivity::new(loser.id, ActivityKind::Call).deal(d.id))
            .await,
        "log",
    );
    let sig = ok(
        tx.record_signal(NewSignal::new(
            loser.id,
            SignalKind::parse("page_view").unwrap(),
        ))
        .await,
        "signal",
    );
    ok(tx.commit().await, "commit");

    let mut tx = begin(store, t).await;
    let merged = ok(
        tx.merge_contacts(survivor.id, loser.id, ConflictPolicy::Existing)
            .await,
        "merge",
    );
    ok(tx.commit().await, "commit");

    assert_eq!(merged.id, survivor.id);
    assert_eq!(merged.email.as_str(), "survivor@example.com");
    assert_eq!(
        merged.first_name.as_str(),
        "Sam",
        "the survivor's value wins"
    );
    assert_eq!(
        merged.company.as_ref().unwrap().as_str(),
        "Loser Co",
        "a blank is filled"
    );
    assert_eq!(merged.phone.as_ref().unwrap().as_str(), "+1 555 0199");
    assert_eq!(
        crate::domain::Metadata::parse(json!({"a": 1, "b": 2, "shared": "survivor"})).unwrap(),
        merged.metadata,
        "custom fields merged key by key"
    );
    assert_eq!(merged.version.get(), 2);
    assert_eq!(get(store, t, survivor.id).await, Some(merged.clone()));
    assert_eq!(get(store, t, loser.id).await, None, "the loser is deleted");

    let mut tx = begin(store, t).await;
    let deals = ok(
        tx.list_deals_for_contact(survivor.id, &PageRequest::first(10))
            .await,
        "deals",
    );
    let timeline = ok(
        tx.timeline(survivor.id, &PageRequest::first(10)).await,
        "timeline",
    );
    let signals = ok(tx.list_signals(survivor.id).await, "signals");
    let by_email = ok(
        tx.get_contact_by_email(&loser.email).await,
        "the loser's email",
    );
    ok(tx.commit().await, "commit");
    assert_eq!(deals.items.len(), 1);
    assert_eq!(deals.items[0].id, d.id);
    assert_eq!(deals.items[0].contact_id, survivor.id);
    assert_eq!(
        deals.items[0].version.get(),
        d.version.get() + 1,
        "a moved deal gains a version"
    );
    assert_eq!(timeline.items.len(), 1);
    assert_eq!(timeline.items[0].id, a.id);
    assert_eq!(
        timeline.items[0].deal_id,
        Some(d.id),
        "the activity keeps its deal"
    );
    assert_eq!(signals.len(), 1);
    assert_eq!(signals[0].id, sig.id);
    assert_eq!(signals[0].contact_id, survivor.id);
    assert!(by_email.is_none(), "the loser's email is free again");
}

/// Contract: the whole merge is in the history under the transaction's
/// request id, each version with the reason `merged <loser> into <survivor>`.
pub async fn a_merge_is_recorded_in_history_under_one_request_id(store: &DynStore) {
    let t = TenantId::new();
    let survivor = create(store, t, new_contact("keep@example.com", "Keep", "Me")).await;
    let mut l = new_contact("drop@example.com", "Drop", "Me");
    l.title = Some(JobTitle::parse("CFO").unwrap());
    let loser = create(store, t, l).await;
    let d = deal(store, t, new_deal(loser.id, "Deal", "5", "USD")).await;
    let context = ctx()
        .with_request_id("merge-request-7")
        .unwrap()
        .with_reason("duplicate cleanup")
        .unwrap();
    let mut tx = ok(store.begin(t, context).await, "begin");
    ok(
        tx.merge_contacts(survivor.id, loser.id, ConflictPolicy::Incoming)
            .await,
        "merge",
    );
    ok(tx.commit().await, "commit");
    let reason = format!(
        "duplicate cleanup (merged {} into {})",
        loser.id, survivor.id
    );
    let s = history_of(store, t, HistoryEntity::Contact(survivor.id)).await;
    let l = history_of(store, t, HistoryEntity::Contact(loser.id)).await;
    let dh = history_of(store, t, HistoryEntity::Deal(d.id)).await;
    for (what, entry) in [("survivor", &s[0]), ("loser", &l[0]), ("deal", &dh[0])] {
        assert_eq!(entry.reason.as_deref(), Some(reason.as_str()), "{what}");
        assert_eq!(
            entry.request_id.as_deref(),
            Some("merge-request-7"),
            "{what}"
        );
    }
    assert!(
        l[0].is_tombstone(),
        "the loser's last version is its tombstone"
    );
    assert!(s[0].diff.contains_key("first_name"), "{:?}", s[0].diff);
    assert!(s[0].diff.contains_key("title"), "{:?}", s[0].diff);
    assert!(dh[0].diff.contains_key("contact_id"), "{:?}", dh[0].diff);
}

/// Contract: merging a contact into itself, or with a missing contact,
/// fails and changes nothing.
pub async fn merging_into_itself_or_with_a_missing_contact_fails_and_changes_nothing(
    store: &DynStore,
) {
    let t = TenantId::new();
    let c = create(store, t, new_contact("one@example.com", "One", "Only")).await;
    let missing = ContactId::new();
    let mut tx = begin(store, t).await;
    let same = tx
        .merge_contacts(c.id, c.id, ConflictPolicy::Existing)
        .await;
    assert!(
        matches!(&same, Err(crate::Error::Validation(v)) if v.for_field("loser").count() == 1),
        "{same:?}"
    );
    let gone = tx
        .merge_contacts(c.id, missing, ConflictPolicy::Existing)
        .await;
    assert!(
        matches!(gone, Err(crate::Error::NotFound { .. })),
        "{gone:?}"
    );
    let gone = tx
        .merge_contacts(missing, c.id, ConflictPolicy::Existing)
        .await;
    assert!(
        matches!(gone, Err(crate::Error::NotFound { .. })),
        "{gone:?}"
    );
    ok(tx.commit().await, "commit");
    assert_eq!(get(store, t, c.id).await, Some(c));
}

/// Contract: the survivor of a merge takes the loser's activities and
/// signals, and with them their weight in its live score: its live state
/// is the two states added (`ln(e^s + e^l)`, bit for bit the same on every
/// backend), so it ranks at once as a rebuild would rank it.
pub async fn a_merge_adds_the_losers_live_score_to_the_survivors(store: &DynStore) {
    let t = TenantId::new();
    let survivor = create(store, t, new_contact("s@example.com", "Sam", "Survivor")).await;
    let loser = create(store, t, new_contact("l@example.com", "Lou", "Loser")).await;
    let mut tx = begin(store, t).await;
    ok(
        tx.record_signal(NewSignal::new(survivor.id, SignalKind::PAGE_VIEW))
            .await,
        "record a signal",
    );
    ok(
        tx.log_activity(NewActivity::new(loser.id, ActivityKind::Meeting))
            .await,
        "log a meeting",
    );
    let s_before = ok(
        tx.live_score_log(survivor.id)
            .await
            .map(|s| s.map(|s| s.log)),
        "live state",
    )
    .flatten();
    let l_before = ok(
        tx.live_score_log(loser.id).await.map(|s| s.map(|s| s.log)),
        "live state",
    )
    .flatten();
    ok(tx.commit().await, "commit");
    let (Some(s_before), Some(l_before)) = (s_before, l_before) else {
        // A store that keeps no live scores has nothing to merge.
        return;
    };
    let mut tx = begin(store, t).await;
    ok(
        tx.merge_contacts(survivor.id, loser.id, ConflictPolicy::NonEmptyIncoming)
            .await,
        "merge",
    );
    ok(tx.commit().await, "commit");
    let mut tx = begin(store, t).await;
    let after = ok(
        tx.live_score_log(survivor.id)
            .await
            .map(|s| s.map(|s| s.log)),
        "live state",
    )
    .flatten();
    ok(tx.rollback().await, "rollback");
    assert_eq!(
        after.map(f64::to_bits),
        Some(crate::scoring::ScoringModel::log_add(Some(s_before), l_before).to_bits()),
        "the survivor's live state adds the loser's"
    );
}

/// Contract: merging an erased contact into another moves its deals,
/// activities and signals and takes none of its placeholders ("Erased"
/// names, no company, …) whatever the policy: it has no personal data
/// left to give.
pub async fn merging_an_erased_contact_takes_none_of_its_placeholders(store: &DynStore) {
    let t = TenantId::new();
    for policy in [
        ConflictPolicy::Incoming,
        ConflictPolicy::NonEmptyIncoming,
        ConflictPolicy::Existing,
    ] {
        let mut s = new_contact(&format!("keep-{policy:?}@example.com"), "Sam", "Survivor");
        s.company = Some(CompanyName::parse("Acme").unwrap());
        let survivor = create(store, t, s).await;
        let gone = create(
            store,
            t,
            new_contact(&format!("gone-{policy:?}@example.com"), "Lou", "Loser"),
        )
        .await;
        let d = deal(store, t, new_deal(gone.id, "Old deal", "10", "EUR")).await;
        let mut tx = begin(store, t).await;
        ok(tx.erase_contact(gone.id).await, "erase");
        let merged = ok(
            tx.merge_contacts(survivor.id, gone.id, policy).await,
            "merge",
        );
        ok(tx.commit().await, "commit");
        assert_eq!(
            (merged.first_name.as_str(), merged.last_name.as_str()),
            ("Sam", "Survivor"),
            "{policy:?}: the survivor keeps its names"
        );
        assert_eq!(merged.company, survivor.company, "{policy:?}");
        assert_eq!(
            merged.version, survivor.version,
            "{policy:?}: nothing changed"
        );
        let moved = ok(
            begin(store, t).await.get_deal(d.id).await,
            "get the moved deal",
        )
        .expect("the deal is kept");
        assert_eq!(moved.contact_id, survivor.id, "{policy:?}: the deal moved");
    }
}

/// Contract: nothing can be merged into an erased contact (it would hold
/// the loser's personal data): the merge is a validation error on
/// `survivor` and changes nothing.
pub async fn merging_into_an_erased_contact_is_refused_and_changes_nothing(store: &DynStore) {
    let t = TenantId::new();
    let erased = create(store, t, new_contact("erased@example.com", "Era", "Sed")).await;
    let mut live = new_contact("live@example.com", "Liv", "E");
    live.company = Some(CompanyName::parse("Acme").unwrap());
    let live = create(store, t, live).await;
    let mut tx = begin(store, t).await;
    ok(tx.erase_contact(erased.id).await, "erase");
    ok(tx.commit().await, "commit");
    let mut tx = begin(store, t).await;
    super::support::expect_validation(
        tx.merge_contacts(erased.id, live.id, ConflictPolicy::Existing)
            .await,
        "survivor",
        "merging into an erased contact",
    );
    let still = ok(tx.get_contact(live.id).await, "get").expect("the loser is kept");
    super::support::assert_same(&still, &live, "the loser is untouched");
    let e = ok(tx.get_contact(erased.id).await, "get").expect("the erased contact is kept");
    assert!(
        e.is_erased() && e.company.is_none(),
        "no data was merged in"
    );
    ok(tx.commit().await, "commit");
}

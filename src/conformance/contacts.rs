//! The conformance suite's contact points: a contact reads back as
//! created, is found by email in any casing, keeps its email unique,
//! takes versioned updates, is deactivated once and deleted with all it
//! holds; concurrent creates and updates let exactly one win.

use chrono::{Duration, Utc};
use futures_util::future::join_all;
use serde_json::json;

use super::prelude::*;
use super::support::{
    all, assert_micros, assert_same, begin, create, ctx, default_stages, email, expect_conflict,
    expect_duplicate, expect_not_found, expect_validation, full_contact, get, get_deal, metadata,
    new_contact, new_deal, ok, person, records_only, search_ids, snapshot, tick, timeline_all,
};

/// A created contact reads back equal in every field, at version 1 with
/// score 0, active, `created_at == updated_at` at microsecond precision.
pub async fn create_then_get_returns_the_same_contact(store: &DynStore) {
    let t = TenantId::new();
    let input = full_contact("Grace.Hopper@Navy.example.COM");
    let before = truncate_to_micros(Utc::now()) - Duration::seconds(5);
    let created = create(store, t, input.clone()).await;
    let after = Utc::now() + Duration::seconds(5);

    assert_eq!(created.tenant_id, t, "the contact belongs to the tenant");
    assert_eq!(
        created.email.as_str(),
        "Grace.Hopper@Navy.example.COM",
        "the email is kept as written"
    );
    assert_eq!(created.first_name, input.first_name);
    assert_eq!(created.last_name, input.last_name);
    assert_eq!(created.company, input.company);
    assert_eq!(created.title, input.title);
    assert_eq!(created.phone, input.phone);
    assert_eq!(created.lead_source, input.lead_source);
    assert_eq!(created.metadata, input.metadata);
    assert_eq!(
        created.version,
        Version::FIRST,
        "a new contact is version 1"
    );
    assert_eq!(created.score, Score::MIN, "a new contact has score 0");
    assert!(created.active, "a new contact is active");
    assert_eq!(
        created.created_at, created.updated_at,
        "a new contact's updated_at is its created_at"
    );
    assert!(
        before <= created.created_at && created.created_at <= after,
        "created_at is the time of creation, got {}",
        created.created_at
    );
    assert_micros(created.created_at, "created_at");

    let read = get(store, t, created.id).await.expect("the contact exists");
    assert_same(&read, &created, "get returns the created contact");

    let minimal = create(store, t, new_contact("min@example.com", "Min", "Imal")).await;
    let read = get(store, t, minimal.id).await.expect("the contact exists");
    assert_same(
        &read,
        &minimal,
        "a contact without optional fields reads back",
    );
    assert!(read.company.is_none() && read.title.is_none() && read.phone.is_none());
    assert!(read.metadata.is_empty(), "no metadata reads back as empty");
    assert_eq!(read.lead_source, LeadSource::Organic);
}

/// Reading an id that was never created gives `None`.
pub async fn get_of_a_missing_contact_returns_none(store: &DynStore) {
    let t = TenantId::new();
    assert!(
        get(store, t, ContactId::new()).await.is_none(),
        "a missing contact is None"
    );
    let by_email = ok(
        store
            .scope(t, &ctx())
            .get_contact_by_email(&email("nobody@example.com"))
            .await,
        "get by email",
    );
    assert!(by_email.is_none(), "a missing email is None");
    assert!(
        get_deal(store, t, DealId::new()).await.is_none(),
        "a missing deal is None"
    );
}

/// `get_contacts`, `get_contacts_by_email` and `get_deals` read a batch: the records that exist,
/// in the order asked for, each once; a missing id and another tenant's
/// record are left out; more than `MAX_GET_MANY` ids is `Validation` on
/// `ids`, an empty list nothing.
pub async fn batch_reads_return_the_records_that_exist_in_the_order_asked(store: &DynStore) {
    use crate::store::MAX_GET_MANY;
    let t = TenantId::new();
    let a = create(store, t, new_contact("batch-a@example.com", "Batch", "A")).await;
    let b = create(store, t, new_contact("batch-b@example.com", "Batch", "B")).await;
    let other = create(
        store,
        TenantId::new(),
        new_contact("batch-x@example.com", "Batch", "X"),
    )
    .await;
    let d1 = ok(
        store
            .scope(t, &ctx())
            .create_deal(new_deal(a.id, "One", "10", "EUR"))
            .await,
        "a deal",
    );
    let d2 = ok(
        store
            .scope(t, &ctx())
            .create_deal(new_deal(b.id, "Two", "20", "EUR"))
            .await,
        "a deal",
    );
    let (contacts, deals, none, too_many, too_many_deals) = with_tx!(store, t, async |tx| {
        let contacts = ok(
            tx.get_contacts(&[b.id, ContactId::new(), a.id, b.id, other.id])
                .await,
            "read contacts",
        );
        let deals = ok(
            tx.get_deals(&[d2.id, DealId::new(), d1.id, d2.id]).await,
            "read deals",
        );
        let by_email = ok(
            tx.get_contacts_by_email(&[
                email("BATCH-B@example.com"),
                email("nobody@example.com"),
                email("batch-a@example.com"),
                email("batch-b@EXAMPLE.com"),
                email("batch-x@example.com"),
            ])
            .await,
            "read contacts by email",
        );
        assert_eq!(
            by_email,
            vec![b.clone(), a.clone()],
            "by email in any casing, in the order asked, each once"
        );
        let too_many_emails = tx
            .get_contacts_by_email(&vec![email("batch-a@example.com"); MAX_GET_MANY + 1])
            .await
            .map(|v| v.len());
        expect_validation(too_many_emails, "emails", "too many emails");
        let none = ok(tx.get_contacts(&[]).await, "read no contact");
        let too_many = tx
            .get_contacts(&vec![a.id; MAX_GET_MANY + 1])
            .await
            .map(|v| v.len());
        let too_many_deals = tx
            .get_deals(&vec![d1.id; MAX_GET_MANY + 1])
            .await
            .map(|v| v.len());
        (contacts, deals, none, too_many, too_many_deals)
    })
    .await;
    assert_eq!(
        contacts,
        vec![b.clone(), a.clone()],
        "in the order asked, each once"
    );
    assert_eq!(
        deals.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![d2.id, d1.id]
    );
    assert_eq!(deals[0], d2);
    assert!(none.is_empty());
    expect_validation(too_many, "ids", "too many contact ids");
    expect_validation(too_many_deals, "ids", "too many deal ids");
}

/// `get_contact_by_email` finds the contact whatever the casing asked for,
/// and returns the email as it was written.
pub async fn get_by_email_finds_the_contact_in_any_casing(store: &DynStore) {
    let t = TenantId::new();
    let c = create(
        store,
        t,
        new_contact("Ada.Lovelace@Example.com", "Ada", "L"),
    )
    .await;
    create(store, t, new_contact("other@example.com", "O", "T")).await;
    for asked in [
        "Ada.Lovelace@Example.com",
        "ada.lovelace@example.com",
        "ADA.LOVELACE@EXAMPLE.COM",
        "aDa.lOvElAcE@eXaMpLe.CoM",
    ] {
        let found = ok(
            store
                .scope(t, &ctx())
                .get_contact_by_email(&email(asked))
                .await,
            "get by email",
        )
        .unwrap_or_else(|| panic!("{asked} finds the contact"));
        assert_same(&found, &c, &format!("get by email {asked}"));
    }
}

/// Creating a contact whose email another contact holds in another casing
/// is `DuplicateEmail` naming the first contact, and creates nothing.
pub async fn creating_a_duplicate_email_in_another_casing_is_refused(store: &DynStore) {
    let t = TenantId::new();
    let first = create(store, t, new_contact("Dup@Example.com", "First", "One")).await;
    for again in ["Dup@Example.com", "dup@example.com", "DUP@EXAMPLE.COM"] {
        let r = store
            .scope(t, &ctx())
            .create_contact(new_contact(again, "Second", "Two"))
            .await;
        expect_duplicate(r, first.id, &format!("creating {again} again"));
    }
    let everyone = search_ids(store, t, &all(ContactSort::CreatedAsc)).await;
    assert_eq!(
        everyone,
        vec![first.id],
        "refused duplicates create nothing"
    );
    assert_same(
        &get(store, t, first.id).await.expect("still there"),
        &first,
        "the holder is unchanged",
    );
}

/// Changing a contact's email to one another contact holds (in any casing)
/// is `DuplicateEmail` naming the holder, and changes neither contact.
pub async fn changing_the_email_to_one_another_contact_holds_is_refused_and_changes_nothing(
    store: &DynStore,
) {
    let t = TenantId::new();
    let crm = store.scope(t, &ctx());
    let a = create(store, t, new_contact("holder@example.com", "Hol", "Der")).await;
    let b = create(store, t, new_contact("mover@example.com", "Mo", "Ver")).await;
    let patch = ContactPatch {
        email: Some(email("HOLDER@example.COM")),
        first_name: Some(person("Changed")),
        ..ContactPatch::default()
    };
    let r = crm.update_contact(b.id, b.version, patch).await;
    expect_duplicate(r, a.id, "taking another contact's email");
    assert_same(
        &get(store, t, b.id).await.expect("b exists"),
        &b,
        "the refused update changed nothing",
    );
    assert_same(
        &get(store, t, a.id).await.expect("a exists"),
        &a,
        "the holder is unchanged",
    );
    let holder = ok(
        crm.get_contact_by_email(&email("holder@example.com")).await,
        "get by email",
    );
    assert_eq!(
        holder.map(|c| c.id),
        Some(a.id),
        "the email still leads to a"
    );
}

/// An update at the current version applies the patch, adds one to the
/// version and moves `updated_at` forward, keeping `created_at`.
pub async fn update_with_the_current_version_bumps_version_and_updated_at(store: &DynStore) {
    let t = TenantId::new();
    let crm = store.scope(t, &ctx());
    let c = create(store, t, full_contact("update@example.com")).await;
    tick().await;
    let patch = ContactPatch {
        first_name: Some(person("Amazing")),
        company: Some(None),
        lead_source: Some(LeadSource::Partner),
        metadata: Some(metadata(json!({"plan": "enterprise"}))),
        ..ContactPatch::default()
    };
    let updated = ok(crm.update_contact(c.id, c.version, patch).await, "update");
    assert_eq!(
        updated.version,
        Version::new(2),
        "the version goes up by one"
    );
    assert!(
        updated.updated_at > c.updated_at,
        "updated_at moves forward: {} -> {}",
        c.updated_at,
        updated.updated_at
    );
    assert_micros(updated.updated_at, "updated_at");
    assert_eq!(updated.created_at, c.created_at, "created_at stays");
    assert_eq!(updated.first_name.as_str(), "Amazing");
    assert_eq!(updated.company, None, "Some(None) clears the company");
    assert_eq!(updated.lead_source, LeadSource::Partner);
    assert_eq!(updated.metadata, metadata(json!({"plan": "enterprise"})));
    assert_eq!(updated.last_name, c.last_name, "unpatched fields stay");
    assert_eq!(updated.phone, c.phone, "unpatched fields stay");
    assert_eq!(updated.title, c.title, "unpatched fields stay");
    assert_same(
        &get(store, t, c.id).await.expect("exists"),
        &updated,
        "the update is stored",
    );

    let again = ok(
        crm.update_contact(
            c.id,
            updated.version,
            ContactPatch {
                last_name: Some(person("Hopper-Smith")),
                ..ContactPatch::default()
            },
        )
        .await,
        "second update",
    );
    assert_eq!(again.version, Version::new(3));
}

/// An update at a stale version is `Conflict { expected, actual }` and
/// changes nothing.
pub async fn update_with_a_stale_version_is_a_conflict_and_changes_nothing(store: &DynStore) {
    let t = TenantId::new();
    let crm = store.scope(t, &ctx());
    let c = create(store, t, new_contact("stale@example.com", "Sta", "Le")).await;
    let v2 = ok(
        crm.update_contact(
            c.id,
            c.version,
            ContactPatch {
                first_name: Some(person("Second")),
                ..ContactPatch::default()
            },
        )
        .await,
        "first update",
    );
    for stale in [Version::FIRST, Version::new(7)] {
        let r = crm
            .update_contact(
                c.id,
                stale,
                ContactPatch {
                    first_name: Some(person("Lost")),
                    email: Some(email("lost@example.com")),
                    ..ContactPatch::default()
                },
            )
            .await;
        expect_conflict(
            r,
            Entity::Contact,
            c.id,
            stale.get(),
            2,
            "update at a stale version",
        );
        assert_same(
            &get(store, t, c.id).await.expect("exists"),
            &v2,
            "a conflicting update changes nothing",
        );
    }
    let lost = ok(
        crm.get_contact_by_email(&email("lost@example.com")).await,
        "get by email",
    );
    assert!(lost.is_none(), "the refused email was not taken");
}

/// A patch that changes nothing (empty, or setting the current values)
/// returns the contact as it is: same version, same `updated_at`.
pub async fn a_patch_that_changes_nothing_keeps_the_version(store: &DynStore) {
    let t = TenantId::new();
    let c = create(store, t, full_contact("noop@example.com")).await;
    tick().await;
    let same_values = ContactPatch {
        email: Some(c.email.clone()),
        first_name: Some(c.first_name.clone()),
        company: Some(c.company.clone()),
        lead_source: Some(c.lead_source),
        metadata: Some(c.metadata.clone()),
        active: Some(true),
        ..ContactPatch::default()
    };
    for (label, patch) in [
        ("an empty patch", ContactPatch::default()),
        ("a patch of the current values", same_values),
    ] {
        let out = ok(
            store
                .scope(t, &ctx())
                .update_contact(c.id, c.version, patch)
                .await,
            label,
        );
        assert_same(&out, &c, &format!("{label} returns the contact as it is"));
        assert_same(
            &get(store, t, c.id).await.expect("exists"),
            &c,
            &format!("{label} stores nothing"),
        );
    }
}

/// A contact may change the casing of its own email: that is a change
/// (new version), and the new casing is what is stored.
pub async fn changing_only_the_casing_of_the_own_email_is_allowed(store: &DynStore) {
    let t = TenantId::new();
    let crm = store.scope(t, &ctx());
    let c = create(store, t, new_contact("casing@example.com", "Ca", "Sing")).await;
    let out = ok(
        crm.update_contact(
            c.id,
            c.version,
            ContactPatch {
                email: Some(email("Casing@Example.COM")),
                ..ContactPatch::default()
            },
        )
        .await,
        "changing the casing of the own email",
    );
    assert_eq!(
        out.email.as_str(),
        "Casing@Example.COM",
        "the new casing is kept"
    );
    assert_eq!(out.version, Version::new(2), "a casing change is a change");
    let found = ok(
        crm.get_contact_by_email(&email("casing@example.com")).await,
        "get by email",
    )
    .expect("still found in any casing");
    assert_same(&found, &out, "the stored contact has the new casing");
}

/// Deactivating marks the contact inactive with a new version; doing it
/// again is a no-op that keeps the version.
pub async fn deactivate_marks_the_contact_inactive_once(store: &DynStore) {
    let t = TenantId::new();
    let c = create(store, t, new_contact("deact@example.com", "De", "Act")).await;
    tick().await;
    let out = with_tx!(store, t, async |tx| {
        ok(tx.deactivate_contact(c.id).await, "deactivate")
    })
    .await;
    assert!(!out.active, "the contact is inactive");
    assert_eq!(out.version, Version::new(2), "deactivating is a change");
    assert!(out.updated_at > c.updated_at, "updated_at moves forward");
    assert_same(
        &get(store, t, c.id).await.expect("exists"),
        &out,
        "the deactivation is stored",
    );
    let again = with_tx!(store, t, async |tx| {
        ok(tx.deactivate_contact(c.id).await, "deactivate again")
    })
    .await;
    assert_same(
        &again,
        &out,
        "deactivating an inactive contact changes nothing",
    );
}

/// Deleting a contact deletes its deals, activities and signals (and
/// nothing of other contacts); it returns `true`, then `false`.
pub async fn deleting_a_contact_deletes_its_deals_activities_and_signals(store: &DynStore) {
    let t = TenantId::new();
    let stages = default_stages(store);
    let gone = create(store, t, new_contact("gone@example.com", "Go", "Ne")).await;
    let kept = create(store, t, new_contact("kept@example.com", "Ke", "Pt")).await;
    let (gone_deal, kept_deal) = with_tx!(store, t, async |tx| {
        let gd = ok(
            tx.create_deal(new_deal(gone.id, "Gone deal", "10", "EUR"))
                .await,
            "deal",
        );
        let kd = ok(
            tx.create_deal(new_deal(kept.id, "Kept deal", "20", "EUR"))
                .await,
            "deal",
        );
        for (c, d) in [(gone.id, gd.id), (kept.id, kd.id)] {
            ok(
                tx.log_activity(NewActivity::new(c, ActivityKind::Call).deal(d))
                    .await,
                "activity",
            );
            ok(
                tx.log_activity(NewActivity::new(c, ActivityKind::Note))
                    .await,
                "activity",
            );
            ok(
                tx.record_signal(NewSignal::new(c, SignalKind::PAGE_VIEW))
                    .await,
                "signal",
            );
        }
        (gd, kd)
    })
    .await;
    let kept_before = snapshot(store, t, &[kept.id], &[kept_deal.id]).await;

    let deleted = with_tx!(store, t, async |tx| {
        ok(tx.delete_contact(gone.id).await, "delete")
    })
    .await;
    assert!(deleted, "deleting an existing contact returns true");

    assert!(
        get(store, t, gone.id).await.is_none(),
        "the contact is gone"
    );
    let by_email = ok(
        store
            .scope(t, &ctx())
            .get_contact_by_email(&gone.email)
            .await,
        "get by email",
    );
    assert!(by_email.is_none(), "its email leads nowhere");
    assert!(
        get_deal(store, t, gone_deal.id).await.is_none(),
        "its deal is gone"
    );
    assert!(
        timeline_all(store, t, gone.id).await.is_empty(),
        "its activities are gone"
    );
    with_tx!(store, t, async |tx| {
        let signals = ok(tx.list_signals(gone.id).await, "signals");
        assert!(signals.is_empty(), "its signals are gone");
        let deals = ok(
            tx.list_deals_for_contact(gone.id, &PageRequest::first(10))
                .await,
            "deals",
        );
        assert!(deals.items.is_empty(), "its deals are not listed");
        let in_stage = ok(
            tx.list_deals_in_stage(
                stages.pipeline.key(),
                &stages.open[0],
                &PageRequest::first(10),
            )
            .await,
            "deals in stage",
        );
        assert_eq!(
            in_stage.items.iter().map(|d| d.id).collect::<Vec<_>>(),
            vec![kept_deal.id],
            "only the other contact's deal is left in the stage"
        );
    })
    .await;
    assert_eq!(
        records_only(snapshot(store, t, &[kept.id], &[kept_deal.id]).await),
        records_only(kept_before),
        "the other contact and its records are untouched"
    );

    let again = with_tx!(store, t, async |tx| {
        ok(tx.delete_contact(gone.id).await, "delete again")
    })
    .await;
    assert!(!again, "deleting a missing contact returns false");
    let reused = create(store, t, new_contact("GONE@example.com", "Back", "Again")).await;
    assert_ne!(reused.id, gone.id, "the freed email can be used again");
}

/// Updates, moves and logs on records that do not exist are `NotFound`
/// naming the missing record; deletes return `false`.
pub async fn operations_on_a_missing_contact_or_deal_are_not_found(store: &DynStore) {
    let t = TenantId::new();
    let stages = default_stages(store);
    let missing = ContactId::new();
    let missing_deal = DealId::new();
    let real = create(store, t, new_contact("real@example.com", "Re", "Al")).await;
    with_tx!(store, t, async |tx| {
        expect_not_found(
            tx.update_contact(
                missing,
                Version::FIRST,
                ContactPatch {
                    first_name: Some(person("X")),
                    ..ContactPatch::default()
                },
            )
            .await,
            Entity::Contact,
            missing,
            "update a missing contact",
        );
        expect_not_found(
            tx.deactivate_contact(missing).await,
            Entity::Contact,
            missing,
            "deactivate a missing contact",
        );
        assert!(
            !ok(tx.delete_contact(missing).await, "delete"),
            "deleting a missing contact returns false"
        );
        expect_not_found(
            tx.update_deal(
                missing_deal,
                Version::FIRST,
                DealPatch {
                    title: Some(DealTitle::parse("X").expect("title")),
                    ..DealPatch::default()
                },
            )
            .await,
            Entity::Deal,
            missing_deal,
            "update a missing deal",
        );
        expect_not_found(
            tx.move_deal(missing_deal, Version::FIRST, &stages.open[1], None)
                .await,
            Entity::Deal,
            missing_deal,
            "move a missing deal",
        );
        expect_not_found(
            tx.reopen_deal(missing_deal, Version::FIRST, &stages.open[0])
                .await,
            Entity::Deal,
            missing_deal,
            "reopen a missing deal",
        );
        assert!(
            !ok(tx.delete_deal(missing_deal).await, "delete deal"),
            "deleting a missing deal returns false"
        );
        expect_not_found(
            tx.log_activity(NewActivity::new(real.id, ActivityKind::Note).deal(missing_deal))
                .await,
            Entity::Deal,
            missing_deal,
            "log an activity on a missing deal",
        );
    })
    .await;
    assert_same(
        &get(store, t, real.id).await.expect("exists"),
        &real,
        "nothing changed",
    );
}

/// Fifty transactions racing to create one email in fifty casings: exactly
/// one wins, the 49 others get `DuplicateEmail` naming the winner.
pub async fn concurrent_creates_of_one_email_in_fifty_casings_let_exactly_one_win(
    store: &DynStore,
) {
    let t = TenantId::new();
    let base = "racer@example.com";
    let casings: Vec<String> = (0..50u32)
        .map(|i| {
            base.chars()
                .enumerate()
                .map(|(j, ch)| {
                    if j < 6 && (i >> j) & 1 == 1 {
                        ch.to_ascii_uppercase()
                    } else {
                        ch
                    }
                })
                .collect()
        })
        .collect();
    let crm = store.scope(t, &ctx());
    let results = join_all(
        casings
            .iter()
            .map(|e| crm.create_contact(new_contact(e, "Race", "Runner"))),
    )
    .await;
    let winners: Vec<&Contact> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one racer creates the contact, got {}",
        winners.len()
    );
    let winner = winners[0].id;
    for r in &results {
        match r {
            Ok(_) => {}
            Err(Error::DuplicateEmail { existing_id, .. }) => {
                assert_eq!(*existing_id, winner, "every loser is told the winner's id")
            }
            Err(e) => panic!("a losing racer gets DuplicateEmail, got {e:?}"),
        }
    }
    let everyone = search_ids(store, t, &all(ContactSort::CreatedAsc)).await;
    assert_eq!(
        everyone,
        vec![winner],
        "exactly one contact exists afterwards"
    );
}

/// Ten transactions racing to update one contact at the same version:
/// exactly one wins, the others get `Conflict`; no update is lost.
pub async fn concurrent_updates_at_the_same_version_let_exactly_one_win(store: &DynStore) {
    let t = TenantId::new();
    let c = create(
        store,
        t,
        new_contact("contended@example.com", "Con", "Tended"),
    )
    .await;
    let crm = store.scope(t, &ctx());
    let results = join_all((0..10).map(|i| {
        crm.update_contact(
            c.id,
            c.version,
            ContactPatch {
                first_name: Some(person(&format!("Writer{i}"))),
                ..ContactPatch::default()
            },
        )
    }))
    .await;
    let winners: Vec<&Contact> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "exactly one update at version 1 wins");
    for r in &results {
        if let Err(e) = r {
            assert!(
                matches!(
                    e,
                    Error::Conflict {
                        expected: 1,
                        actual: 2,
                        ..
                    }
                ),
                "a losing update is a Conflict (expected 1, actual 2), got {e:?}"
            );
        }
    }
    let stored = get(store, t, c.id).await.expect("exists");
    assert_same(&stored, winners[0], "the winner's update is stored");
}

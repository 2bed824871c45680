//! The conformance suite's points on ids in external systems
//! ([`ExternalIdsTx`](crate::store::ExternalIdsTx)): links read both ways,
//! replaced, counted only when they change, refused (and nothing of the
//! call written) when another record holds the id; unlinks; sync windows;
//! input limits; tenancy and rollback; and neither history nor feed.

use std::collections::HashMap;

use uuid::Uuid;

use super::prelude::*;
use super::support::{begin, expect_validation, ok};
use crate::domain::{
    EntityKind, ExternalId, ExternalLink, ExternalSystem, FeedPosition, MAX_EXTERNAL_LINKS,
    timestamp_from_micros,
};

fn system(s: &str) -> ExternalSystem {
    ExternalSystem::parse(s).expect("a valid system name")
}

fn xid(s: &str) -> ExternalId {
    ExternalId::parse(s).expect("a valid external id")
}

fn contact_link(record: Uuid, external: &str) -> ExternalLink {
    ExternalLink::new(EntityKind::Contact, record, xid(external))
}

async fn link(store: &DynStore, t: TenantId, sys: &ExternalSystem, links: &[ExternalLink]) -> u64 {
    with_tx!(store, t, async |tx| ok(
        tx.link_external_ids(sys, links).await,
        "link external ids"
    ))
    .await
}

async fn ids_of(
    store: &DynStore,
    t: TenantId,
    sys: &ExternalSystem,
    kind: EntityKind,
    records: &[Uuid],
) -> HashMap<Uuid, ExternalId> {
    with_tx!(store, t, async |tx| ok(
        tx.external_ids(sys, kind, records).await,
        "read external ids"
    ))
    .await
}

async fn records_of(
    store: &DynStore,
    t: TenantId,
    sys: &ExternalSystem,
    kind: EntityKind,
    external: &[ExternalId],
) -> HashMap<ExternalId, Uuid> {
    with_tx!(store, t, async |tx| ok(
        tx.records_by_external_id(sys, kind, external).await,
        "read records by external id"
    ))
    .await
}

/// Links are read both ways, per system and kind; a new id replaces the
/// old one (and frees it); an identical link counts 0; a call may swap
/// two records' ids; unlinking removes and counts.
pub async fn external_ids_are_linked_read_both_ways_replaced_and_unlinked(store: &DynStore) {
    let t = TenantId::new();
    let hub = system("hubspot");
    let other = system("other_crm");
    let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let created = link(
        store,
        t,
        &hub,
        &[
            contact_link(a, "101"),
            contact_link(b, "102"),
            ExternalLink::new(EntityKind::Deal, c, xid("101")),
        ],
    )
    .await;
    assert_eq!(created, 3, "three new links are three writes");
    let read = ids_of(store, t, &hub, EntityKind::Contact, &[a, b, c]).await;
    assert_eq!(
        read,
        HashMap::from([(a, xid("101")), (b, xid("102"))]),
        "a contact's ids, not the deal's; an unlinked record is absent"
    );
    assert_eq!(
        records_of(store, t, &hub, EntityKind::Deal, &[xid("101"), xid("999")]).await,
        HashMap::from([(xid("101"), c)]),
        "the same id names a deal apart from the contact"
    );
    assert!(
        ids_of(store, t, &other, EntityKind::Contact, &[a, b])
            .await
            .is_empty(),
        "another system has its own links"
    );

    let same = link(
        store,
        t,
        &hub,
        &[contact_link(a, "101"), contact_link(b, "102")],
    )
    .await;
    assert_eq!(same, 0, "identical links change nothing and count 0");

    let replaced = link(
        store,
        t,
        &hub,
        &[contact_link(a, "201"), contact_link(b, "102")],
    )
    .await;
    assert_eq!(replaced, 1, "only the changed link counts");
    assert_eq!(
        records_of(
            store,
            t,
            &hub,
            EntityKind::Contact,
            &[xid("101"), xid("201")]
        )
        .await,
        HashMap::from([(xid("201"), a)]),
        "a replaced id is free again and the new one names the record"
    );

    let swapped = link(
        store,
        t,
        &hub,
        &[contact_link(a, "102"), contact_link(b, "201")],
    )
    .await;
    assert_eq!(swapped, 2, "a swap is two changes");
    assert_eq!(
        ids_of(store, t, &hub, EntityKind::Contact, &[a, b]).await,
        HashMap::from([(a, xid("102")), (b, xid("201"))]),
        "one call may swap two records' ids"
    );

    let removed = with_tx!(store, t, async |tx| ok(
        tx.unlink_external_ids(&hub, EntityKind::Contact, &[a, Uuid::now_v7()])
            .await,
        "unlink"
    ))
    .await;
    assert_eq!(removed, 1, "one link removed; an unlinked record counts 0");
    assert_eq!(
        ids_of(store, t, &hub, EntityKind::Contact, &[a, b]).await,
        HashMap::from([(b, xid("201"))]),
        "the unlinked record has no id; the other keeps its own"
    );
    assert_eq!(
        records_of(store, t, &hub, EntityKind::Deal, &[xid("101")]).await,
        HashMap::from([(xid("101"), c)]),
        "unlinking contacts leaves deals alone"
    );
}

/// An id another record of the kind holds is refused as `Duplicate`
/// naming the id and its holder, nothing of the call is written, and the
/// transaction stays usable.
pub async fn an_external_id_held_by_another_record_is_refused_and_nothing_is_written(
    store: &DynStore,
) {
    let t = TenantId::new();
    let hub = system("hubspot");
    let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    link(store, t, &hub, &[contact_link(a, "501")]).await;
    let mut tx = begin(store, t).await;
    let refused = tx
        .link_external_ids(&hub, &[contact_link(c, "503"), contact_link(b, "501")])
        .await;
    match &refused {
        Err(Error::Duplicate {
            entity: Entity::Contact,
            field: "external_id",
            value,
            existing_id,
        }) if value == "501" && *existing_id == a.to_string() => {}
        other => panic!("expected Duplicate on 501 held by {a}, got {other:?}"),
    }
    assert!(
        ok(
            tx.external_ids(&hub, EntityKind::Contact, &[b, c]).await,
            "read after a refused link"
        )
        .is_empty(),
        "a refused call writes none of its links, and the transaction stays usable"
    );
    let later = ok(
        tx.link_external_ids(&hub, &[contact_link(c, "503")]).await,
        "link after a refused call",
    );
    assert_eq!(
        later, 1,
        "the transaction takes writes after a refused link"
    );
    ok(tx.commit().await, "commit after a refused link");
    assert_eq!(
        records_of(
            store,
            t,
            &hub,
            EntityKind::Contact,
            &[xid("501"), xid("503")]
        )
        .await,
        HashMap::from([(xid("501"), a), (xid("503"), c)]),
        "the holder keeps its id"
    );
}

/// A sync window is absent before the first, then what was last stored
/// (an earlier one too), per system and kind, at microsecond precision.
pub async fn sync_windows_are_kept_per_system_and_kind(store: &DynStore) {
    let t = TenantId::new();
    let hub = system("hubspot");
    let other = system("other_crm");
    let at = |micros: i64| timestamp_from_micros("at", micros).expect("a valid time");
    let first = at(1_700_000_000_123_456);
    let earlier = at(1_600_000_000_000_001);
    with_tx!(store, t, async |tx| {
        assert_eq!(
            ok(tx.sync_window(&hub, EntityKind::Contact).await, "window"),
            None,
            "no window before the first"
        );
        ok(
            tx.set_sync_window(&hub, EntityKind::Contact, first).await,
            "set a window",
        );
    })
    .await;
    with_tx!(store, t, async |tx| {
        assert_eq!(
            ok(tx.sync_window(&hub, EntityKind::Contact).await, "window"),
            Some(first),
            "the stored window, to the microsecond"
        );
        assert_eq!(
            ok(tx.sync_window(&hub, EntityKind::Deal).await, "window"),
            None,
            "another kind has its own window"
        );
        assert_eq!(
            ok(tx.sync_window(&other, EntityKind::Contact).await, "window"),
            None,
            "another system has its own window"
        );
        ok(
            tx.set_sync_window(&hub, EntityKind::Contact, earlier).await,
            "move a window back",
        );
    })
    .await;
    let read = with_tx!(store, t, async |tx| ok(
        tx.sync_window(&hub, EntityKind::Contact).await,
        "window"
    ))
    .await;
    assert_eq!(read, Some(earlier), "a window may move back");
}

/// More than [`MAX_EXTERNAL_LINKS`] links, records or ids, conflicting
/// links in one call, and a window out of range are refused naming the
/// field, and write nothing.
pub async fn external_id_input_is_checked(store: &DynStore) {
    let t = TenantId::new();
    let hub = system("hubspot");
    let too_many = MAX_EXTERNAL_LINKS + 1;
    let links: Vec<ExternalLink> = (0..too_many)
        .map(|i| contact_link(Uuid::now_v7(), &i.to_string()))
        .collect();
    let records: Vec<Uuid> = links.iter().map(|l| l.record).collect();
    let ids: Vec<ExternalId> = links.iter().map(|l| l.external.clone()).collect();
    let a = Uuid::now_v7();
    let mut tx = begin(store, t).await;
    expect_validation(
        tx.link_external_ids(&hub, &links).await,
        "links",
        "too many links",
    );
    expect_validation(
        tx.link_external_ids(&hub, &[contact_link(a, "1"), contact_link(a, "2")])
            .await,
        "links",
        "one record given two ids in one call",
    );
    expect_validation(
        tx.link_external_ids(
            &hub,
            &[contact_link(a, "1"), contact_link(Uuid::now_v7(), "1")],
        )
        .await,
        "links",
        "one id given to two records in one call",
    );
    expect_validation(
        tx.unlink_external_ids(&hub, EntityKind::Contact, &records)
            .await,
        "records",
        "too many records to unlink",
    );
    expect_validation(
        tx.external_ids(&hub, EntityKind::Contact, &records).await,
        "records",
        "too many records to read",
    );
    expect_validation(
        tx.records_by_external_id(&hub, EntityKind::Contact, &ids)
            .await,
        "external",
        "too many ids to read",
    );
    let beyond = crate::domain::latest_timestamp() + chrono::Duration::days(1);
    expect_validation(
        tx.set_sync_window(&hub, EntityKind::Contact, beyond).await,
        "at",
        "a window after year 9999",
    );
    assert_eq!(
        ok(tx.sync_window(&hub, EntityKind::Contact).await, "window"),
        None,
        "a refused window is not stored"
    );
    assert!(
        ok(
            tx.external_ids(&hub, EntityKind::Contact, &[a]).await,
            "read"
        )
        .is_empty(),
        "refused links are not stored"
    );
    let exactly = &links[..MAX_EXTERNAL_LINKS];
    assert_eq!(
        ok(tx.link_external_ids(&hub, exactly).await, "link the most"),
        MAX_EXTERNAL_LINKS as u64,
        "exactly the most links are taken"
    );
    ok(tx.rollback().await, "roll back");
}

/// Links and windows are another tenant's business: invisible to it, and
/// its own links of the same ids are its own.
pub async fn external_ids_are_invisible_to_another_tenant(store: &DynStore) {
    let (t1, t2) = (TenantId::new(), TenantId::new());
    let hub = system("hubspot");
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let at = timestamp_from_micros("at", 1_700_000_000_000_000).expect("a valid time");
    link(store, t1, &hub, &[contact_link(a, "701")]).await;
    with_tx!(store, t1, async |tx| ok(
        tx.set_sync_window(&hub, EntityKind::Contact, at).await,
        "set a window"
    ))
    .await;
    assert!(
        ids_of(store, t2, &hub, EntityKind::Contact, &[a])
            .await
            .is_empty(),
        "another tenant does not see the link"
    );
    assert!(
        records_of(store, t2, &hub, EntityKind::Contact, &[xid("701")])
            .await
            .is_empty(),
        "nor find the record by its id"
    );
    let window = with_tx!(store, t2, async |tx| ok(
        tx.sync_window(&hub, EntityKind::Contact).await,
        "window"
    ))
    .await;
    assert_eq!(window, None, "nor see the window");
    assert_eq!(
        link(store, t2, &hub, &[contact_link(b, "701")]).await,
        1,
        "another tenant links the same id to a record of its own"
    );
    let removed = with_tx!(store, t2, async |tx| ok(
        tx.unlink_external_ids(&hub, EntityKind::Contact, &[a])
            .await,
        "unlink another tenant's record"
    ))
    .await;
    assert_eq!(removed, 0, "nor unlink the first tenant's");
    assert_eq!(
        records_of(store, t1, &hub, EntityKind::Contact, &[xid("701")]).await,
        HashMap::from([(xid("701"), a)]),
        "the first tenant keeps its link"
    );
}

/// Links and windows go with a rolled-back (or dropped) transaction, and
/// write neither history nor feed events.
pub async fn external_ids_roll_back_and_write_no_history_or_event(store: &DynStore) {
    let t = TenantId::new();
    let hub = system("hubspot");
    let a = Uuid::now_v7();
    let at = timestamp_from_micros("at", 1_700_000_000_000_000).expect("a valid time");
    let head = async |store: &DynStore| {
        with_tx!(store, t, async |tx| ok(tx.feed_head().await, "feed head")).await
    };
    let before: FeedPosition = head(store).await;

    let mut tx = begin(store, t).await;
    ok(
        tx.link_external_ids(&hub, &[contact_link(a, "801")]).await,
        "link",
    );
    ok(
        tx.set_sync_window(&hub, EntityKind::Contact, at).await,
        "set a window",
    );
    ok(tx.rollback().await, "roll back");
    {
        let mut dropped = begin(store, t).await;
        ok(
            dropped
                .link_external_ids(&hub, &[contact_link(a, "802")])
                .await,
            "link in a dropped transaction",
        );
    }
    assert!(
        ids_of(store, t, &hub, EntityKind::Contact, &[a])
            .await
            .is_empty(),
        "a rolled-back or dropped link is gone"
    );
    let window = with_tx!(store, t, async |tx| ok(
        tx.sync_window(&hub, EntityKind::Contact).await,
        "window"
    ))
    .await;
    assert_eq!(window, None, "a rolled-back window is gone");

    link(store, t, &hub, &[contact_link(a, "803")]).await;
    with_tx!(store, t, async |tx| {
        ok(
            tx.set_sync_window(&hub, EntityKind::Contact, at).await,
            "set a window",
        );
        ok(
            tx.unlink_external_ids(&hub, EntityKind::Contact, &[a])
                .await,
            "unlink",
        );
    })
    .await;
    assert_eq!(
        head(store).await,
        before,
        "links and windows are no feed events"
    );
    let history = with_tx!(store, t, async |tx| ok(
        tx.changes_between(
            crate::domain::earliest_timestamp(),
            crate::domain::latest_timestamp(),
            &PageRequest::first(MAX_PAGE_SIZE),
        )
        .await,
        "history"
    ))
    .await;
    assert!(
        history.items.is_empty(),
        "links and windows write no history"
    );
}

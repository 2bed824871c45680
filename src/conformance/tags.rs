//! The conformance suite's tag points: a tag's name is unique per tenant
//! in any casing (also under a race), tags are renamed under their version
//! and listed by name; attaching and detaching are idempotent, refuse what
//! does not exist, go with deleted tags and records and are recorded in
//! the history; contact search filters by the tags contacts carry.

use chrono::{Duration, Utc};
use futures_util::future::join_all;
use serde_json::Value;

use super::prelude::*;
use super::support::{
    begin, create, ctx, deal, expect_conflict, expect_not_found, expect_validation, matching,
    new_contact, new_deal, ok, search,
};
use crate::{
    domain::{CompanyId, NewTag, RecordRef, Tag, TagColour, TagId, TagName, TagPatch, TaggingId},
    store::{MAX_FILTER_TAGS, TagFilter},
};

fn name(s: &str) -> TagName {
    TagName::parse(s).expect("a valid tag name")
}

/// Creates a tag named `s` in a transaction of its own.
async fn tag(store: &DynStore, t: TenantId, s: &str) -> Tag {
    ok(create_tag(store, t, s).await, "create a tag")
}

/// Tries to create a tag named `s` in a transaction of its own, committed
/// when the create succeeds and rolled back when it is refused.
async fn create_tag(store: &DynStore, t: TenantId, s: &str) -> Result<Tag> {
    let mut tx = begin(store, t).await;
    match tx.create_tag(NewTag::new(name(s))).await {
        Ok(tag) => {
            ok(tx.commit().await, "commit a tag");
            Ok(tag)
        }
        Err(e) => {
            ok(tx.rollback().await, "roll back a refused tag");
            Err(e)
        }
    }
}

async fn attach(store: &DynStore, t: TenantId, tag: TagId, record: RecordRef) -> bool {
    with_tx!(store, t, async |tx| ok(
        tx.attach_tag(tag, record).await,
        "attach a tag"
    ))
    .await
}

async fn detach(store: &DynStore, t: TenantId, tag: TagId, record: RecordRef) -> bool {
    with_tx!(store, t, async |tx| ok(
        tx.detach_tag(tag, record).await,
        "detach a tag"
    ))
    .await
}

/// The ids of the tags `record` carries, in the order `tags_of` gives.
async fn tags_of(store: &DynStore, t: TenantId, record: RecordRef) -> Vec<TagId> {
    with_tx!(store, t, async |tx| ok(tx.tags_of(record).await, "tags of"))
        .await
        .into_iter()
        .map(|t| t.id)
        .collect()
}

#[track_caller]
fn expect_duplicate_tag<T: std::fmt::Debug>(
    result: Result<T>,
    value: &str,
    holder: TagId,
    what: &str,
) {
    match result {
        Err(Error::Duplicate {
            entity: Entity::Tag,
            field: "name",
            value: v,
            existing_id,
        }) if v == value && existing_id == holder.to_string() => {}
        other => {
            panic!("{what}: expected Duplicate tag name {value:?} held by {holder}, got {other:?}")
        }
    }
}

/// The tenant's tagging entries of the history, oldest first.
async fn tagging_history(store: &DynStore, t: TenantId) -> Vec<HistoryEntry> {
    let now = Utc::now();
    with_tx!(store, t, async |tx| ok(
        tx.changes_between(
            now - Duration::days(1),
            now + Duration::days(1),
            &PageRequest::first(MAX_PAGE_SIZE)
        )
        .await,
        "the tenant's changes"
    ))
    .await
    .items
    .into_iter()
    .filter(|e| matches!(e.entity, HistoryEntity::Tagging(_)))
    .collect()
}

/// A created tag reads back equal by id and by its name in any casing, at
/// version 1 with `created_at == updated_at`.
pub async fn a_created_tag_reads_back_by_id_and_by_name_in_any_casing(store: &DynStore) {
    let t = TenantId::new();
    let created = with_tx!(store, t, async |tx| ok(
        tx.create_tag(NewTag {
            name: name("Hot Lead"),
            colour: Some(TagColour::parse("#FF8800").expect("a valid colour")),
        })
        .await,
        "create a tag"
    ))
    .await;
    assert_eq!(created.version, Version::FIRST, "a new tag is at version 1");
    assert_eq!(created.created_at, created.updated_at);
    assert_eq!(
        created.name.as_str(),
        "Hot Lead",
        "the name is kept as written"
    );
    with_tx!(store, t, async |tx| {
        let got = ok(tx.get_tag(created.id).await, "get a tag");
        assert_eq!(got.as_ref(), Some(&created), "a tag reads back as created");
        for casing in ["Hot Lead", "hot lead", "HOT LEAD", "  hOT lEAD "] {
            let got = ok(tx.get_tag_by_name(&name(casing)).await, "get by name");
            assert_eq!(got.as_ref(), Some(&created), "found by name as {casing:?}");
        }
        let missing = ok(tx.get_tag_by_name(&name("Cold Lead")).await, "get by name");
        assert_eq!(missing, None, "an unknown name finds nothing");
        let missing = ok(tx.get_tag(TagId::new()).await, "get a tag");
        assert_eq!(missing, None, "an unknown id finds nothing");
    })
    .await;
    let other = TenantId::new();
    with_tx!(store, other, async |tx| {
        assert_eq!(ok(tx.get_tag(created.id).await, "get"), None);
        assert_eq!(
            ok(tx.get_tag_by_name(&name("Hot Lead")).await, "get by name"),
            None,
            "another tenant does not see the tag"
        );
    })
    .await;
}

/// A create of a name the tenant holds in another casing (or another
/// Unicode form of it, `STRASSE` for `straße`) is refused with the
/// holder's id; another tenant may hold the same name.
pub async fn a_tag_name_held_in_another_casing_is_refused_naming_its_holder(store: &DynStore) {
    let t = TenantId::new();
    let vip = tag(store, t, "VIP").await;
    let street = tag(store, t, "Straße").await;
    for (casing, holder) in [
        ("VIP", &vip),
        ("vip", &vip),
        ("Vip", &vip),
        ("STRASSE", &street),
        ("strasse", &street),
        ("STRAẞE", &street),
        ("straße", &street),
    ] {
        expect_duplicate_tag(
            create_tag(store, t, casing).await,
            casing,
            holder.id,
            &format!("creating {casing:?}"),
        );
    }
    let names: Vec<String> = with_tx!(store, t, async |tx| ok(
        tx.list_tags(&PageRequest::first(MAX_PAGE_SIZE)).await,
        "list tags"
    ))
    .await
    .items
    .into_iter()
    .map(|t| t.name.as_str().to_string())
    .collect();
    assert_eq!(names, ["Straße", "VIP"], "the refused creates left nothing");
    let elsewhere = tag(store, TenantId::new(), "vip").await;
    assert_ne!(
        elsewhere.id, vip.id,
        "another tenant may hold the same name"
    );
}

/// Twenty transactions racing to create one tag name, each in another
/// casing: exactly one wins and every other is told the winner's id.
pub async fn concurrent_creates_of_one_tag_name_in_twenty_casings_let_exactly_one_win(
    store: &DynStore,
) {
    let t = TenantId::new();
    let base = "customer";
    let casings: Vec<String> = (0..20u32)
        .map(|i| {
            base.chars()
                .enumerate()
                .map(|(j, ch)| {
                    if (i >> j) & 1 == 1 {
                        ch.to_ascii_uppercase()
                    } else {
                        ch
                    }
                })
                .collect()
        })
        .collect();
    let results = join_all(casings.iter().map(|c| create_tag(store, t, c))).await;
    let winners: Vec<&Tag> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "exactly one racer creates the tag");
    let winner = winners[0].id;
    for r in &results {
        match r {
            Ok(_) => {}
            Err(Error::Duplicate {
                entity: Entity::Tag,
                existing_id,
                ..
            }) => assert_eq!(
                *existing_id,
                winner.to_string(),
                "losers are told the winner"
            ),
            Err(e) => panic!("a losing racer gets Duplicate, got {e:?}"),
        }
    }
    let listed = with_tx!(store, t, async |tx| ok(
        tx.list_tags(&PageRequest::first(MAX_PAGE_SIZE)).await,
        "list tags"
    ))
    .await;
    assert_eq!(listed.items.len(), 1, "exactly one tag exists afterwards");
}

/// A rename at the tag's version bumps it; a stale version is a conflict;
/// a rename into a name another tag holds in any casing is refused naming
/// it, changes nothing and leaves the transaction usable; recasing its own
/// name is allowed; a missing tag is not found.
pub async fn renaming_a_tag_checks_its_version_and_refuses_a_taken_name(store: &DynStore) {
    let t = TenantId::new();
    let hot = tag(store, t, "Hot").await;
    let cold = tag(store, t, "Cold").await;
    let rename = |s: &str| TagPatch {
        name: Some(name(s)),
        ..TagPatch::default()
    };
    let warm = with_tx!(store, t, async |tx| ok(
        tx.update_tag(hot.id, hot.version, rename("Warm")).await,
        "rename"
    ))
    .await;
    assert_eq!(warm.name.as_str(), "Warm");
    assert_eq!(
        warm.version,
        hot.version.next(),
        "a rename bumps the version"
    );
    assert!(warm.updated_at >= hot.updated_at);
    with_tx!(store, t, async |tx| {
        expect_conflict(
            tx.update_tag(hot.id, hot.version, rename("Tepid")).await,
            Entity::Tag,
            hot.id,
            hot.version.get(),
            warm.version.get(),
            "a stale rename",
        );
        expect_duplicate_tag(
            tx.update_tag(warm.id, warm.version, rename("COLD")).await,
            "COLD",
            cold.id,
            "renaming into a taken name",
        );
        // The transaction goes on after the refusal.
        let recoloured = ok(
            tx.update_tag(
                warm.id,
                warm.version,
                TagPatch {
                    colour: Some(Some(TagColour::parse("#00ff00").expect("a colour"))),
                    ..TagPatch::default()
                },
            )
            .await,
            "recolour after a refused rename",
        );
        assert_eq!(
            recoloured.name.as_str(),
            "Warm",
            "the refused rename changed nothing"
        );
        let recased = ok(
            tx.update_tag(warm.id, recoloured.version, rename("WARM"))
                .await,
            "recase the own name",
        );
        assert_eq!(recased.name.as_str(), "WARM");
        let same = ok(
            tx.update_tag(warm.id, recased.version, rename("WARM"))
                .await,
            "a rename to the same name",
        );
        assert_eq!(same.version, recased.version, "a no-op keeps the version");
        let gone = TagId::new();
        expect_not_found(
            tx.update_tag(gone, Version::FIRST, rename("Gone")).await,
            Entity::Tag,
            gone,
            "renaming a missing tag",
        );
    })
    .await;
    let names: Vec<String> = with_tx!(store, t, async |tx| ok(
        tx.list_tags(&PageRequest::first(MAX_PAGE_SIZE)).await,
        "list tags"
    ))
    .await
    .items
    .into_iter()
    .map(|t| t.name.as_str().to_string())
    .collect();
    assert_eq!(names, ["Cold", "WARM"], "what committed");
}

/// Ten transactions racing to rename ten tags into one name, each in
/// another casing: exactly one wins, every other is told the winner's id
/// and can still work and commit.
pub async fn concurrent_renames_into_one_name_let_exactly_one_win(store: &DynStore) {
    let t = TenantId::new();
    let mut racers = Vec::new();
    for i in 0..10 {
        racers.push(tag(store, t, &format!("racer {i}")).await);
    }
    let results = join_all(racers.iter().enumerate().map(|(i, racer)| async move {
        let target = if i % 2 == 0 {
            "Finish Line"
        } else {
            "FINISH line"
        };
        let mut tx = begin(store, t).await;
        let patch = TagPatch {
            name: Some(name(target)),
            ..TagPatch::default()
        };
        let r = tx.update_tag(racer.id, racer.version, patch).await;
        // The transaction goes on whatever the rename gave.
        let read = ok(tx.get_tag(racer.id).await, "read after the rename");
        ok(tx.commit().await, "commit");
        (r, read)
    }))
    .await;
    let winners: Vec<&Tag> = results
        .iter()
        .filter_map(|(r, _)| r.as_ref().ok())
        .collect();
    assert_eq!(winners.len(), 1, "exactly one rename wins: {results:?}");
    let winner = winners[0].id;
    for (r, read) in &results {
        match r {
            Ok(_) => {}
            Err(Error::Duplicate {
                entity: Entity::Tag,
                existing_id,
                ..
            }) => {
                assert_eq!(
                    *existing_id,
                    winner.to_string(),
                    "losers are told the winner"
                );
                let read = read.as_ref().expect("the loser still exists");
                assert!(
                    read.name.as_str().starts_with("racer"),
                    "a loser keeps its name"
                );
            }
            Err(e) => panic!("a losing rename gets Duplicate, got {e:?}"),
        }
    }
}

/// Ten transactions racing to attach one tag to one contact: exactly one
/// attaches it, and it is attached once.
pub async fn concurrent_attaches_of_one_tag_attach_it_once(store: &DynStore) {
    let t = TenantId::new();
    let vip = tag(store, t, "VIP").await;
    let c = create(store, t, new_contact("attach-race@example.com", "Ra", "Ce")).await;
    let record = RecordRef::Contact(c.id);
    let results = join_all((0..10).map(|_| attach(store, t, vip.id, record))).await;
    assert_eq!(
        results.iter().filter(|attached| **attached).count(),
        1,
        "exactly one attach reports the attachment: {results:?}"
    );
    assert_eq!(tags_of(store, t, record).await, [vip.id]);
    let history = tagging_history(store, t).await;
    assert_eq!(history.len(), 1, "one attachment is recorded: {history:?}");
}

/// Tags are listed by their caseless name key, then id, and paging
/// visits each once; a cursor of another list is refused.
pub async fn tags_are_listed_by_caseless_name_and_paged_through(store: &DynStore) {
    let t = TenantId::new();
    let written = [
        "beta", "Alpha", "GAMMA", "alpha-2", "Delta", "éclair", "Zulu",
    ];
    let mut made = Vec::new();
    for s in written {
        made.push(tag(store, t, s).await);
    }
    let mut expected: Vec<(String, uuid::Uuid)> = made
        .iter()
        .map(|t| (t.name.key(), t.id.as_uuid()))
        .collect();
    expected.sort();
    let expected: Vec<uuid::Uuid> = expected.into_iter().map(|(_, id)| id).collect();
    for limit in [1u32, 2, 3, 7, 100] {
        let got: Vec<Tag> = collect_pages!(limit, async |page| {
            with_tx!(store, t, async |tx| ok(
                tx.list_tags(&page).await,
                "list tags"
            ))
            .await
        })
        .await;
        let ids: Vec<uuid::Uuid> = got.iter().map(|t| t.id.as_uuid()).collect();
        assert_eq!(
            ids, expected,
            "tags by caseless name then id, limit {limit}"
        );
    }
    create(store, t, new_contact("tags-list@example.com", "Li", "St")).await;
    create(store, t, new_contact("tags-list2@example.com", "Li", "St")).await;
    let contacts_page = search(
        store,
        t,
        &ContactQuery::new().with_page(PageRequest::first(1)),
    )
    .await;
    let foreign = contacts_page
        .next_cursor
        .expect("a first page of one of two contacts has a cursor");
    with_tx!(store, t, async |tx| expect_validation(
        tx.list_tags(&PageRequest::after(2, foreign)).await,
        "cursor",
        "a contact search's cursor given to list_tags"
    ))
    .await;
}

/// Attaching a tag a record carries, and detaching one it does not, is a
/// no-op returning `false`, on contacts and on deals.
pub async fn attaching_and_detaching_a_tag_is_idempotent(store: &DynStore) {
    let t = TenantId::new();
    let vip = tag(store, t, "VIP").await;
    let c = create(store, t, new_contact("idem@example.com", "Id", "Em")).await;
    let d = deal(store, t, new_deal(c.id, "Idem", "10", "EUR")).await;
    for record in [RecordRef::Contact(c.id), RecordRef::Deal(d.id)] {
        assert!(
            attach(store, t, vip.id, record).await,
            "{record:?}: first attach"
        );
        assert!(
            !attach(store, t, vip.id, record).await,
            "{record:?}: second attach"
        );
        assert_eq!(
            tags_of(store, t, record).await,
            [vip.id],
            "{record:?} carries it once"
        );
        assert!(
            detach(store, t, vip.id, record).await,
            "{record:?}: first detach"
        );
        assert!(
            !detach(store, t, vip.id, record).await,
            "{record:?}: second detach"
        );
        assert!(
            tags_of(store, t, record).await.is_empty(),
            "{record:?} carries nothing"
        );
        assert!(
            attach(store, t, vip.id, record).await,
            "{record:?}: attach again"
        );
    }
    // A contact's tag is not its deal's.
    assert!(detach(store, t, vip.id, RecordRef::Contact(c.id)).await);
    assert_eq!(tags_of(store, t, RecordRef::Deal(d.id)).await, [vip.id]);
}

/// Attaching to a record or with a tag that does not exist is `NotFound`
/// naming which (and the transaction goes on); detaching either is a
/// no-op and a missing record carries no tags.
pub async fn attaching_to_a_missing_record_or_with_a_missing_tag_is_not_found(store: &DynStore) {
    let t = TenantId::new();
    let vip = tag(store, t, "VIP").await;
    let c = create(store, t, new_contact("missing@example.com", "Mi", "Ss")).await;
    let (gone_contact, gone_deal, gone_company, gone_tag) = (
        ContactId::new(),
        DealId::new(),
        CompanyId::new(),
        TagId::new(),
    );
    with_tx!(store, t, async |tx| {
        expect_not_found(
            tx.attach_tag(vip.id, RecordRef::Contact(gone_contact))
                .await,
            Entity::Contact,
            gone_contact,
            "a missing contact",
        );
        expect_not_found(
            tx.attach_tag(vip.id, RecordRef::Deal(gone_deal)).await,
            Entity::Deal,
            gone_deal,
            "a missing deal",
        );
        expect_not_found(
            tx.attach_tag(vip.id, RecordRef::Company(gone_company))
                .await,
            Entity::Company,
            gone_company,
            "a missing company",
        );
        expect_not_found(
            tx.attach_tag(gone_tag, RecordRef::Contact(c.id)).await,
            Entity::Tag,
            gone_tag,
            "a missing tag",
        );
        expect_not_found(
            tx.attach_tag(gone_tag, RecordRef::Contact(gone_contact))
                .await,
            Entity::Tag,
            gone_tag,
            "a missing tag and record: the tag is named",
        );
        for record in [
            RecordRef::Contact(gone_contact),
            RecordRef::Deal(gone_deal),
            RecordRef::Company(gone_company),
        ] {
            assert!(
                !ok(tx.detach_tag(vip.id, record).await, "detach"),
                "{record:?}"
            );
            assert!(
                ok(tx.tags_of(record).await, "tags of").is_empty(),
                "{record:?}"
            );
        }
        assert!(!ok(
            tx.detach_tag(gone_tag, RecordRef::Contact(c.id)).await,
            "detach"
        ));
        // The transaction goes on after the refusals.
        assert!(ok(
            tx.attach_tag(vip.id, RecordRef::Contact(c.id)).await,
            "attach"
        ));
    })
    .await;
    assert_eq!(tags_of(store, t, RecordRef::Contact(c.id)).await, [vip.id]);
    let elsewhere = TenantId::new();
    let c2 = create(store, elsewhere, new_contact("m2@example.com", "Mi", "Ss")).await;
    with_tx!(store, elsewhere, async |tx| expect_not_found(
        tx.attach_tag(vip.id, RecordRef::Contact(c2.id)).await,
        Entity::Tag,
        vip.id,
        "another tenant's tag"
    ))
    .await;
}

/// `tags_of` gives the tags a record carries by caseless name, then id.
pub async fn tags_of_lists_a_records_tags_by_name(store: &DynStore) {
    let t = TenantId::new();
    let c = create(store, t, new_contact("of@example.com", "Of", "Tags")).await;
    let other = create(store, t, new_contact("of2@example.com", "Of", "Tags")).await;
    let mut made = Vec::new();
    for s in ["zeta", "Beta", "alpha", "ÉTÉ", "Delta"] {
        let tg = tag(store, t, s).await;
        assert!(attach(store, t, tg.id, RecordRef::Contact(c.id)).await);
        made.push(tg);
    }
    let unrelated = tag(store, t, "Other").await;
    assert!(attach(store, t, unrelated.id, RecordRef::Contact(other.id)).await);
    made.sort_by_key(|t| (t.name.key(), t.id));
    let got = with_tx!(store, t, async |tx| ok(
        tx.tags_of(RecordRef::Contact(c.id)).await,
        "tags of"
    ))
    .await;
    assert_eq!(got, made, "a record's tags by name, as stored");
}

/// `tags_of_many` gives each record listed, in the order listed, the list
/// `tags_of` gives it: contacts, a deal and a company in one call, a
/// record listed twice, a record without tags and one that does not exist;
/// past the limit it is refused naming `records`.
pub async fn tags_of_many_gives_each_record_listed_its_tags_in_order(store: &DynStore) {
    use crate::domain::{CompanyName, NewCompany};
    let t = TenantId::new();
    let c = create(store, t, new_contact("many1@example.com", "Ma", "Ny")).await;
    let bare = create(store, t, new_contact("many2@example.com", "Ma", "Ny")).await;
    let d = deal(store, t, new_deal(c.id, "Many", "1", "EUR")).await;
    let company = with_tx!(store, t, async |tx| ok(
        tx.create_company(NewCompany::new(
            CompanyName::parse("Many Inc").expect("a name")
        ))
        .await,
        "create a company"
    ))
    .await;
    let (zeta, beta, alpha) = (
        tag(store, t, "zeta").await,
        tag(store, t, "Beta").await,
        tag(store, t, "alpha").await,
    );
    for (tg, record) in [
        (&zeta, RecordRef::Contact(c.id)),
        (&beta, RecordRef::Contact(c.id)),
        (&alpha, RecordRef::Deal(d.id)),
        (&zeta, RecordRef::Deal(d.id)),
        (&beta, RecordRef::Company(company.id)),
    ] {
        assert!(attach(store, t, tg.id, record).await);
    }
    let missing = RecordRef::Contact(ContactId::new());
    let records = [
        RecordRef::Contact(c.id),
        RecordRef::Deal(d.id),
        missing,
        RecordRef::Contact(bare.id),
        RecordRef::Company(company.id),
        RecordRef::Contact(c.id),
    ];
    let (many, each) = with_tx!(store, t, async |tx| {
        let many = ok(tx.tags_of_many(&records).await, "tags of many");
        let mut each = Vec::new();
        for r in records {
            each.push(ok(tx.tags_of(r).await, "tags of"));
        }
        (many, each)
    })
    .await;
    let ids = |lists: &[Vec<Tag>]| -> Vec<Vec<TagId>> {
        lists
            .iter()
            .map(|l| l.iter().map(|t| t.id).collect())
            .collect()
    };
    assert_eq!(
        ids(&many),
        vec![
            vec![beta.id, zeta.id],
            vec![alpha.id, zeta.id],
            vec![],
            vec![],
            vec![beta.id],
            vec![beta.id, zeta.id],
        ],
        "each record's tags, by name, in the order listed"
    );
    assert_eq!(many, each, "what tags_of gives each record");
    let empty = with_tx!(store, t, async |tx| ok(
        tx.tags_of_many(&[]).await,
        "tags of none"
    ))
    .await;
    assert!(empty.is_empty());
    let too_many = vec![RecordRef::Contact(c.id); crate::store::MAX_GET_MANY + 1];
    let refused = with_tx!(store, t, async |tx| tx.tags_of_many(&too_many).await).await;
    expect_validation(refused, "records", "more records than a call takes");
}

/// Deleting a tag detaches it from everything that carries it (each
/// detachment recorded); a second delete finds nothing.
pub async fn deleting_a_tag_detaches_it_everywhere(store: &DynStore) {
    let t = TenantId::new();
    let doomed = tag(store, t, "Doomed").await;
    let kept = tag(store, t, "Kept").await;
    let c = create(store, t, new_contact("doomed@example.com", "Do", "Omed")).await;
    let d = deal(store, t, new_deal(c.id, "Doomed", "1", "EUR")).await;
    for record in [RecordRef::Contact(c.id), RecordRef::Deal(d.id)] {
        assert!(attach(store, t, doomed.id, record).await);
        assert!(attach(store, t, kept.id, record).await);
    }
    let deleted = with_tx!(store, t, async |tx| ok(
        tx.delete_tag(doomed.id).await,
        "delete a tag"
    ))
    .await;
    assert!(deleted, "the tag was there");
    for record in [RecordRef::Contact(c.id), RecordRef::Deal(d.id)] {
        assert_eq!(
            tags_of(store, t, record).await,
            [kept.id],
            "{record:?} lost it"
        );
    }
    with_tx!(store, t, async |tx| {
        assert!(!ok(tx.delete_tag(doomed.id).await, "delete again"));
        assert_eq!(ok(tx.get_tag(doomed.id).await, "get"), None);
        expect_not_found(
            tx.attach_tag(doomed.id, RecordRef::Contact(c.id)).await,
            Entity::Tag,
            doomed.id,
            "attaching a deleted tag",
        );
    })
    .await;
    let history = tagging_history(store, t).await;
    let detached: Vec<&HistoryEntry> = history
        .iter()
        .filter(|e| e.operation == Operation::Deleted)
        .collect();
    assert_eq!(
        detached.len(),
        2,
        "each detachment is recorded: {history:?}"
    );
    for e in detached {
        assert_eq!(e.values["tag_id"], Value::String(doomed.id.to_string()));
    }
    // The name is free again.
    tag(store, t, "DOOMED").await;
}

/// Deleting a contact (with its deals) or a deal removes their taggings
/// and records each removal; the tags stay.
pub async fn deleting_a_contact_or_a_deal_removes_their_taggings(store: &DynStore) {
    let t = TenantId::new();
    let vip = tag(store, t, "VIP").await;
    let c = create(store, t, new_contact("gone@example.com", "Go", "Ne")).await;
    let d = deal(store, t, new_deal(c.id, "Gone", "1", "EUR")).await;
    let c2 = create(store, t, new_contact("stays@example.com", "St", "Ays")).await;
    let d2 = deal(store, t, new_deal(c2.id, "Goes alone", "1", "EUR")).await;
    for record in [
        RecordRef::Contact(c.id),
        RecordRef::Deal(d.id),
        RecordRef::Contact(c2.id),
        RecordRef::Deal(d2.id),
    ] {
        assert!(attach(store, t, vip.id, record).await);
    }
    with_tx!(store, t, async |tx| {
        assert!(ok(tx.delete_contact(c.id).await, "delete a contact"));
        assert!(ok(tx.delete_deal(d2.id).await, "delete a deal"));
    })
    .await;
    for record in [
        RecordRef::Contact(c.id),
        RecordRef::Deal(d.id),
        RecordRef::Deal(d2.id),
    ] {
        assert!(tags_of(store, t, record).await.is_empty(), "{record:?}");
    }
    assert_eq!(tags_of(store, t, RecordRef::Contact(c2.id)).await, [vip.id]);
    let only_c2 = matching(
        store,
        t,
        ContactQuery::new().with_tags(TagFilter::new().any_of([vip.id])),
    )
    .await;
    assert_eq!(
        only_c2,
        [c2.id],
        "the deleted contact is gone from the filter"
    );
    with_tx!(store, t, async |tx| assert!(
        ok(tx.get_tag(vip.id).await, "get").is_some(),
        "the tag stays"
    ))
    .await;
    let history = tagging_history(store, t).await;
    let removed: Vec<(Value, Value)> = history
        .iter()
        .filter(|e| e.operation == Operation::Deleted)
        .map(|e| (e.values["contact_id"].clone(), e.values["deal_id"].clone()))
        .collect();
    let s = |v: String| Value::String(v);
    for expected in [
        (s(c.id.to_string()), Value::Null),
        (Value::Null, s(d.id.to_string())),
        (Value::Null, s(d2.id.to_string())),
    ] {
        assert!(
            removed.contains(&expected),
            "the removal of {expected:?} is recorded: {removed:?}"
        );
    }
    assert_eq!(removed.len(), 3, "exactly the three removals: {removed:?}");
}

/// Each attachment is recorded as a tagging created and each detachment
/// as one deleted, with the tagging's values; a no-op records nothing.
pub async fn attaching_and_detaching_are_recorded_in_history(store: &DynStore) {
    let t = TenantId::new();
    let vip = tag(store, t, "VIP").await;
    let c = create(store, t, new_contact("hist@example.com", "Hi", "St")).await;
    let record = RecordRef::Contact(c.id);
    assert!(attach(store, t, vip.id, record).await);
    assert!(!attach(store, t, vip.id, record).await);
    assert!(detach(store, t, vip.id, record).await);
    assert!(!detach(store, t, vip.id, record).await);
    let history = tagging_history(store, t).await;
    assert_eq!(
        history.len(),
        2,
        "one attachment, one detachment: {history:?}"
    );
    let (made, gone) = (&history[0], &history[1]);
    assert_eq!(made.operation, Operation::Created);
    assert_eq!(gone.operation, Operation::Deleted);
    assert_eq!(
        made.entity, gone.entity,
        "one tagging, attached then detached"
    );
    let HistoryEntity::Tagging(id) = made.entity else {
        unreachable!("filtered to taggings")
    };
    assert_ne!(id, TaggingId::from_uuid(uuid::Uuid::nil()));
    let values = &made.values;
    assert_eq!(values["id"], Value::String(id.to_string()));
    assert_eq!(values["tag_id"], Value::String(vip.id.to_string()));
    assert_eq!(values["contact_id"], Value::String(c.id.to_string()));
    assert_eq!(values["company_id"], Value::Null);
    assert_eq!(values["deal_id"], Value::Null);
    assert!(values["created_at"].is_string(), "{values}");
    assert_eq!(
        &gone.values, values,
        "the detachment records the last values"
    );
    assert_eq!(
        made.valid_to,
        Some(gone.valid_from),
        "the versions are contiguous"
    );
    assert_eq!(made.actor, ctx().actor().as_str());
}

/// A rolled back attachment leaves no tagging and no history; a rolled
/// back delete of a tag restores the tag and everything that carried it.
pub async fn rolled_back_tag_writes_leave_no_trace(store: &DynStore) {
    let t = TenantId::new();
    let vip = tag(store, t, "VIP").await;
    let c = create(store, t, new_contact("rollback@example.com", "Ro", "Ll")).await;
    let d = deal(store, t, new_deal(c.id, "Rolled", "1", "EUR")).await;
    let mut tx = begin(store, t).await;
    assert!(ok(
        tx.attach_tag(vip.id, RecordRef::Contact(c.id)).await,
        "attach"
    ));
    let fresh = ok(tx.create_tag(NewTag::new(name("Fresh"))).await, "create");
    assert!(ok(
        tx.attach_tag(fresh.id, RecordRef::Deal(d.id)).await,
        "attach"
    ));
    ok(tx.rollback().await, "roll back");
    assert!(tags_of(store, t, RecordRef::Contact(c.id)).await.is_empty());
    assert!(tags_of(store, t, RecordRef::Deal(d.id)).await.is_empty());
    assert!(
        tagging_history(store, t).await.is_empty(),
        "nothing of the rolled back attachments is recorded"
    );
    assert!(attach(store, t, vip.id, RecordRef::Contact(c.id)).await);
    assert!(attach(store, t, vip.id, RecordRef::Deal(d.id)).await);
    let before = tagging_history(store, t).await;
    let mut tx = begin(store, t).await;
    assert!(ok(tx.delete_tag(vip.id).await, "delete the tag"));
    assert!(ok(tx.tags_of(RecordRef::Contact(c.id)).await, "tags of").is_empty());
    drop(tx);
    assert_eq!(tags_of(store, t, RecordRef::Contact(c.id)).await, [vip.id]);
    assert_eq!(tags_of(store, t, RecordRef::Deal(d.id)).await, [vip.id]);
    let got = with_tx!(store, t, async |tx| ok(tx.get_tag(vip.id).await, "get")).await;
    assert_eq!(got, Some(vip), "the tag is back as it was");
    assert_eq!(
        tagging_history(store, t).await,
        before,
        "nothing of the dropped delete is recorded"
    );
}

/// Contacts and the tags they carry for the search points: `a` carries x,
/// `b` x and y, `c` y, `d` nothing.
struct Tagged {
    x: TagId,
    y: TagId,
    z: TagId,
    a: ContactId,
    b: ContactId,
    c: ContactId,
    d: ContactId,
}

async fn tagged(store: &DynStore, t: TenantId) -> Tagged {
    let x = tag(store, t, "x").await.id;
    let y = tag(store, t, "y").await.id;
    let z = tag(store, t, "z").await.id;
    let a = create(store, t, new_contact("a@example.com", "Ann", "Alpha"))
        .await
        .id;
    let b = create(store, t, new_contact("b@example.com", "Bob", "Beta"))
        .await
        .id;
    let c = create(store, t, new_contact("c@other.org", "Cat", "Gamma"))
        .await
        .id;
    let d = create(store, t, new_contact("d@example.com", "Dan", "Delta"))
        .await
        .id;
    for (tag, contact) in [(x, a), (x, b), (y, b), (y, c)] {
        assert!(attach(store, t, tag, RecordRef::Contact(contact)).await);
    }
    Tagged {
        x,
        y,
        z,
        a,
        b,
        c,
        d,
    }
}

/// Contact search keeps contacts carrying any of `any_of`, all of
/// `all_of` and none of `none_of`, combined with each other and with the
/// other filters; repeats in a side change nothing.
pub async fn contact_search_filters_by_tags_any_all_and_none(store: &DynStore) {
    let t = TenantId::new();
    let Tagged {
        x,
        y,
        z,
        a,
        b,
        c,
        d,
    } = tagged(store, t).await;
    let sorted = |mut v: Vec<ContactId>| {
        v.sort();
        v
    };
    for (filter, expected, what) in [
        (TagFilter::new(), vec![a, b, c, d], "no filter"),
        (TagFilter::new().any_of([x]), vec![a, b], "any of x"),
        (
            TagFilter::new().any_of([x, y]),
            vec![a, b, c],
            "any of x, y",
        ),
        (TagFilter::new().any_of([z]), vec![], "any of an unused tag"),
        (
            TagFilter::new().any_of([x, x, x]),
            vec![a, b],
            "any of x repeated",
        ),
        (TagFilter::new().all_of([x]), vec![a, b], "all of x"),
        (TagFilter::new().all_of([x, y]), vec![b], "all of x, y"),
        (
            TagFilter::new().all_of([y, x, y, x]),
            vec![b],
            "all of x, y repeated",
        ),
        (
            TagFilter::new().all_of([x, z]),
            vec![],
            "all of x and an unused tag",
        ),
        (
            TagFilter::new().all_of([x, TagId::new()]),
            vec![],
            "all of x and an unknown id",
        ),
        (TagFilter::new().none_of([x]), vec![c, d], "none of x"),
        (TagFilter::new().none_of([x, y]), vec![d], "none of x, y"),
        (
            TagFilter::new().none_of([z]),
            vec![a, b, c, d],
            "none of an unused tag",
        ),
        (
            TagFilter::new().any_of([y]).none_of([x]),
            vec![c],
            "any of y, none of x",
        ),
        (
            TagFilter::new().any_of([x, y]).all_of([y]).none_of([z]),
            vec![b, c],
            "any of x, y; all of y; none of z",
        ),
        (
            TagFilter::new().all_of([x]).none_of([y]),
            vec![a],
            "all of x, none of y",
        ),
        (
            TagFilter::new().any_of([x]).none_of([x]),
            vec![],
            "any of and none of one tag",
        ),
    ] {
        let got = matching(store, t, ContactQuery::new().with_tags(filter.clone())).await;
        assert_eq!(got, sorted(expected), "{what}: {filter:?}");
    }
    let combined = matching(
        store,
        t,
        ContactQuery::new()
            .with_tags(TagFilter::new().any_of([x, y]))
            .with_email_prefix("c@"),
    )
    .await;
    assert_eq!(combined, [c], "tags and an email prefix combine with AND");
    let other = TenantId::new();
    let elsewhere = create(store, other, new_contact("a@example.com", "Ann", "Alpha")).await;
    let got = matching(
        store,
        other,
        ContactQuery::new().with_tags(TagFilter::new().none_of([x])),
    )
    .await;
    assert_eq!(
        got,
        [elsewhere.id],
        "another tenant's tags filter nothing here"
    );
}

/// Paging through a tag-filtered search visits every match exactly once,
/// in order, under every sort; a cursor of another tag filter is refused.
pub async fn paging_through_a_tag_filtered_search_visits_every_match_once(store: &DynStore) {
    let t = TenantId::new();
    let hot = tag(store, t, "hot").await.id;
    let cold = tag(store, t, "cold").await.id;
    let mut expected = Vec::new();
    for i in 0..9u32 {
        let c = create(
            store,
            t,
            new_contact(
                &format!("page{i}@example.com"),
                "Pa",
                &format!("Ger{}", i % 3),
            ),
        )
        .await;
        if i % 3 != 0 {
            assert!(attach(store, t, hot, RecordRef::Contact(c.id)).await);
            expected.push(c);
        } else {
            assert!(attach(store, t, cold, RecordRef::Contact(c.id)).await);
        }
    }
    let filter = TagFilter::new().any_of([hot]).none_of([cold]);
    for sort in [
        ContactSort::CreatedAsc,
        ContactSort::CreatedDesc,
        ContactSort::NameAsc,
        ContactSort::NameDesc,
        ContactSort::ScoreDesc,
        ContactSort::UpdatedAsc,
    ] {
        let order = super::support::expected_order(sort, &expected);
        for limit in [1u32, 2, 4] {
            let q = ContactQuery::new()
                .with_sort(sort)
                .with_tags(filter.clone());
            let got: Vec<Contact> = collect_pages!(limit, async |page| {
                search(store, t, &q.clone().with_page(page)).await
            })
            .await;
            let ids: Vec<ContactId> = got.iter().map(|c| c.id).collect();
            assert_eq!(ids, order, "{sort:?}, limit {limit}");
        }
    }
    let first = search(
        store,
        t,
        &ContactQuery::new()
            .with_tags(TagFilter::new().any_of([hot]))
            .with_page(PageRequest::first(1)),
    )
    .await;
    let cursor = first.next_cursor.expect("more than one match");
    let refused = store
        .scope(t, &ctx())
        .search_contacts(
            &ContactQuery::new()
                .with_tags(TagFilter::new().any_of([cold]))
                .with_page(PageRequest::after(1, cursor.clone())),
        )
        .await;
    expect_validation(refused, "cursor", "a cursor of another tag filter");
    let same = store
        .scope(t, &ctx())
        .search_contacts(
            &ContactQuery::new()
                .with_tags(TagFilter::new().any_of([hot, hot]))
                .with_page(PageRequest::after(1, cursor)),
        )
        .await;
    ok(same, "the same filter with a repeat takes the cursor");
}

/// A tag filter side naming more than [`MAX_FILTER_TAGS`] tags is a
/// validation error naming the side; exactly that many is accepted.
pub async fn a_tag_filter_naming_more_than_the_maximum_is_refused_naming_the_side(
    store: &DynStore,
) {
    let t = TenantId::new();
    let many: Vec<TagId> = (0..=MAX_FILTER_TAGS).map(|_| TagId::new()).collect();
    let crm = store.scope(t, &ctx());
    for (filter, field) in [
        (TagFilter::new().any_of(many.clone()), "tags.any_of"),
        (TagFilter::new().all_of(many.clone()), "tags.all_of"),
        (TagFilter::new().none_of(many.clone()), "tags.none_of"),
    ] {
        expect_validation(
            crm.search_contacts(&ContactQuery::new().with_tags(filter))
                .await,
            field,
            &format!("{} tags in {field}", many.len()),
        );
    }
    let c = create(store, t, new_contact("max@example.com", "Ma", "X")).await;
    let most: Vec<TagId> = many[..MAX_FILTER_TAGS].to_vec();
    let got = matching(
        store,
        t,
        ContactQuery::new().with_tags(TagFilter::new().none_of(most.clone()).any_of(most.clone())),
    )
    .await;
    assert!(got.is_empty(), "no contact carries an unknown tag");
    let got = matching(
        store,
        t,
        ContactQuery::new().with_tags(TagFilter::new().none_of(most)),
    )
    .await;
    assert_eq!(got, [c.id], "{MAX_FILTER_TAGS} tags are accepted");
}

//! The conformance suite's points for undoing a contact merge: the loser
//! comes back field by field with its deals, activities, signals, tasks
//! and tags; what the survivor got since stays; survivor fields edited
//! since refuse the unmerge (naming them) or are kept; every refusal is
//! typed and writes nothing; every version carries the unmerge's reason;
//! merges of a chain are undone newest first.

use serde_json::json;

use super::prelude::*;
use super::support::{begin, create, deal, full_contact, metadata, new_contact, new_deal, ok};
use crate::{
    bulk::{MergeCleared, MergeId, MergeRecord, UnmergeConflicts, UnmergeRefusal, Unmerged},
    domain::{NewTag, NewTask, RecordRef, Signal, Tag, TagName, Task, TaskTitle},
};

async fn merge(store: &DynStore, t: TenantId, survivor: ContactId, loser: ContactId) -> MergeId {
    with_tx!(store, t, async |tx| {
        ok(
            tx.merge_contacts(survivor, loser, ConflictPolicy::NonEmptyIncoming)
                .await,
            "merge",
        );
        let merges = ok(tx.contact_merges(survivor).await, "contact merges");
        merges
            .first()
            .map(|m| m.id)
            .expect("the merge is in the journal")
    })
    .await
}

/// Runs an unmerge in a transaction of its own, committed when it succeeds.
async fn unmerge(
    store: &DynStore,
    t: TenantId,
    merge: MergeId,
    conflicts: UnmergeConflicts,
) -> Result<Unmerged> {
    let mut tx = begin(store, t).await;
    let out = tx.unmerge_contacts(merge, conflicts).await;
    match &out {
        Ok(_) => ok(tx.commit().await, "commit"),
        Err(_) => ok(tx.rollback().await, "roll back"),
    }
    out
}

#[track_caller]
fn expect_refused(result: Result<Unmerged>, merge: MergeId, want: &UnmergeRefusal, what: &str) {
    match result {
        Err(Error::UnmergeRefused { merge: m, refusal }) if m == merge && &refusal == want => {}
        other => panic!("{what}: expected the refusal {want:?}, got {other:?}"),
    }
}

async fn merges_of(store: &DynStore, t: TenantId, c: ContactId) -> Vec<MergeRecord> {
    with_tx!(store, t, async |tx| ok(
        tx.contact_merges(c).await,
        "contact merges"
    ))
    .await
}

async fn tag(store: &DynStore, t: TenantId, name: &str, record: RecordRef) -> Tag {
    with_tx!(store, t, async |tx| {
        let tag = ok(
            tx.create_tag(NewTag::new(TagName::parse(name).expect("a tag name")))
                .await,
            "create a tag",
        );
        ok(tx.attach_tag(tag.id, record).await, "attach");
        tag
    })
    .await
}

async fn task_for(store: &DynStore, t: TenantId, c: ContactId, title: &str) -> Task {
    with_tx!(store, t, async |tx| ok(
        tx.create_task(NewTask {
            contact_id: Some(c),
            ..NewTask::new(TaskTitle::parse(title).expect("a title"))
        })
        .await,
        "create a task"
    ))
    .await
}

/// What a contact holds: its activities, signals, deals, tasks and tags,
/// each by id, sorted.
#[derive(Debug, PartialEq)]
struct Holdings {
    activities: Vec<String>,
    signals: Vec<String>,
    deals: Vec<String>,
    tasks: Vec<String>,
    tags: Vec<String>,
}

async fn holdings(store: &DynStore, t: TenantId, c: ContactId) -> Holdings {
    with_tx!(store, t, async |tx| {
        let first = PageRequest::first(MAX_PAGE_SIZE);
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v
        };
        Holdings {
            activities: sorted(
                ok(tx.timeline(c, &first).await, "timeline")
                    .items
                    .iter()
                    .map(|a| a.id.to_string())
                    .collect(),
            ),
            signals: sorted(
                ok(tx.list_signals(c).await, "signals")
                    .iter()
                    .map(|s: &Signal| s.id.to_string())
                    .collect(),
            ),
            deals: sorted(
                ok(tx.list_deals_for_contact(c, &first).await, "deals")
                    .items
                    .iter()
                    .map(|d| d.id.to_string())
                    .collect(),
            ),
            tasks: sorted(
                ok(tx.tasks_of(RecordRef::Contact(c), &first).await, "tasks")
                    .items
                    .iter()
                    .map(|t| t.id.to_string())
                    .collect(),
            ),
            tags: sorted(
                ok(tx.tags_of(RecordRef::Contact(c)).await, "tags")
                    .iter()
                    .map(|t| t.name.as_str().to_string())
                    .collect(),
            ),
        }
    })
    .await
}

/// Everything about `contacts` a reader can see, to show that a refused
/// unmerge wrote nothing.
async fn state(store: &DynStore, t: TenantId, contacts: &[ContactId]) -> String {
    let mut out = Vec::new();
    for c in contacts {
        let contact = super::support::get(store, t, *c).await;
        out.push(format!(
            "{:?} {:?} {:?}",
            contact,
            holdings(store, t, *c).await,
            merges_of(store, t, *c).await
        ));
    }
    out.join("\n")
}

/// The fields of a contact an unmerge restores: all but its version and
/// update time.
fn fields(c: &Contact) -> Contact {
    Contact {
        version: Version::FIRST,
        updated_at: c.created_at,
        ..c.clone()
    }
}

/// A survivor and a loser with something of everything; the loser fills
/// the survivor's blanks in a merge.
async fn pair(store: &DynStore, t: TenantId) -> (Contact, Contact) {
    let mut s = new_contact("keep@example.com", "Keep", "Me");
    s.metadata = metadata(json!({"plan": "basic"}));
    let survivor = create(store, t, s).await;
    let loser = create(store, t, full_contact("grace@example.com")).await;
    (survivor, loser)
}

/// Contract: an unmerge brings the loser back with its id and every value
/// it had before the merge (a version after its last one), moves back its
/// deals, activities, signals and tasks, gives back its tags, takes off the
/// survivor the tags the merge gave it, restores the survivor's fields,
/// and leaves with the survivor what it got after the merge.
pub async fn an_unmerge_restores_the_loser_and_leaves_what_the_survivor_got_since(
    store: &DynStore,
) {
    let t = TenantId::new();
    let (survivor, loser) = pair(store, t).await;
    let d = deal(store, t, new_deal(loser.id, "Licences", "100", "EUR")).await;
    let (activity, signal) = with_tx!(store, t, async |tx| (
        ok(
            tx.log_activity(NewActivity::new(loser.id, ActivityKind::Call))
                .await,
            "log"
        ),
        ok(
            tx.record_signal(NewSignal::new(loser.id, SignalKind::DEMO_REQUEST))
                .await,
            "signal"
        )
    ))
    .await;
    let task = task_for(store, t, loser.id, "Call back").await;
    tag(store, t, "loser-tag", RecordRef::Contact(loser.id)).await;
    tag(store, t, "survivor-tag", RecordRef::Contact(survivor.id)).await;
    let before_loser = holdings(store, t, loser.id).await;
    let before_survivor = holdings(store, t, survivor.id).await;

    let m = merge(store, t, survivor.id, loser.id).await;
    let merged = super::support::get(store, t, survivor.id)
        .await
        .expect("the survivor");
    assert_eq!(merged.title, loser.title, "the merge filled the title");
    assert!(
        holdings(store, t, survivor.id)
            .await
            .tags
            .contains(&"loser-tag".to_string())
    );
    // Added to the survivor after the merge: stays with it.
    let later_deal = deal(store, t, new_deal(survivor.id, "Later", "5", "EUR")).await;
    let later = with_tx!(store, t, async |tx| ok(
        tx.log_activity(NewActivity::new(survivor.id, ActivityKind::Note))
            .await,
        "log later"
    ))
    .await;

    let done = ok(
        unmerge(store, t, m, UnmergeConflicts::Refuse).await,
        "unmerge",
    );
    assert_eq!(done.merge, m);
    assert_eq!(done.deals, vec![d.id]);
    assert!(done.deals_skipped.is_empty());
    assert_eq!(done.activities, vec![activity.id]);
    assert_eq!(done.signals, vec![signal.id]);
    assert_eq!(done.tasks, vec![task.id]);
    assert_eq!(done.tags_removed.len(), 1, "{done:?}");
    assert!(done.kept_fields.is_empty());

    let back = super::support::get(store, t, loser.id)
        .await
        .expect("the loser is back");
    assert_eq!(fields(&back), fields(&loser), "the loser field by field");
    assert_eq!(
        back.version,
        loser.version.next(),
        "a version after its last"
    );
    assert_eq!(back, done.loser);
    let kept = super::support::get(store, t, survivor.id)
        .await
        .expect("the survivor");
    assert_eq!(fields(&kept), fields(&survivor), "the survivor's fields");
    assert_eq!(kept, done.survivor);

    assert_eq!(holdings(store, t, loser.id).await, before_loser);
    let mut expected = before_survivor;
    expected.deals.push(later_deal.id.to_string());
    expected.deals.sort();
    expected.activities.push(later.id.to_string());
    expected.activities.sort();
    assert_eq!(holdings(store, t, survivor.id).await, expected);
    let moved_back = super::support::get_deal(store, t, d.id)
        .await
        .expect("the deal");
    assert_eq!(moved_back.contact_id, loser.id);
    assert_eq!(moved_back.version, d.version.next().next(), "moved twice");

    let records = merges_of(store, t, loser.id).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].id, m);
    assert_eq!(records[0].survivor, survivor.id);
    assert!(records[0].unmerged_at.is_some(), "{records:?}");
    assert!(records[0].changed.contains(&"title".to_string()));
    // The live scores follow the activities and signals.
    let live = with_tx!(store, t, async |tx| ok(
        tx.live_score_log(loser.id).await,
        "live"
    ))
    .await
    .expect("the loser exists");
    assert!(live.log.is_some(), "the loser's live score has its terms");
}

/// Contract: with `Refuse`, a survivor field the merge changed and that
/// was edited since refuses the unmerge, naming it, and nothing is
/// written; with `KeepCurrent` it keeps its value and the other fields
/// are restored.
pub async fn an_unmerge_refuses_or_keeps_survivor_fields_edited_since(store: &DynStore) {
    let t = TenantId::new();
    let (survivor, loser) = pair(store, t).await;
    let m = merge(store, t, survivor.id, loser.id).await;
    let merged = super::support::get(store, t, survivor.id)
        .await
        .expect("the survivor");
    let edited = with_tx!(store, t, async |tx| ok(
        tx.update_contact(
            survivor.id,
            merged.version,
            ContactPatch {
                title: Some(Some(JobTitle::parse("Commodore").expect("a title"))),
                ..ContactPatch::default()
            }
        )
        .await,
        "edit"
    ))
    .await;
    let before = state(store, t, &[survivor.id, loser.id]).await;
    expect_refused(
        unmerge(store, t, m, UnmergeConflicts::Refuse).await,
        m,
        &UnmergeRefusal::EditedSince(vec!["title".into()]),
        "an edited title",
    );
    assert_eq!(state(store, t, &[survivor.id, loser.id]).await, before);

    let done = ok(
        unmerge(store, t, m, UnmergeConflicts::KeepCurrent).await,
        "unmerge keeping",
    );
    assert_eq!(done.kept_fields, vec!["title".to_string()]);
    let kept = super::support::get(store, t, survivor.id)
        .await
        .expect("the survivor");
    assert_eq!(kept.title, edited.title, "the edit stays");
    assert_eq!(kept.phone, survivor.phone, "the merge's phone goes");
    assert_eq!(kept.metadata, survivor.metadata, "and its custom fields");
}

/// Contract: every version an unmerge writes carries the reason
/// `unmerged <loser> from <survivor>` after the caller's own, with the
/// transaction's request id.
pub async fn an_unmerge_records_its_reason_in_every_version_it_writes(store: &DynStore) {
    let t = TenantId::new();
    let (survivor, loser) = pair(store, t).await;
    let d = deal(store, t, new_deal(loser.id, "Deal", "5", "USD")).await;
    let task = task_for(store, t, loser.id, "Follow up").await;
    let m = merge(store, t, survivor.id, loser.id).await;
    let context = super::support::ctx()
        .with_request_id("unmerge-1")
        .expect("an id")
        .with_reason("wrong person")
        .expect("a reason");
    let mut tx = ok(store.begin(t, context).await, "begin");
    ok(
        tx.unmerge_contacts(m, UnmergeConflicts::Refuse).await,
        "unmerge",
    );
    ok(tx.commit().await, "commit");
    let reason = format!("wrong person (unmerged {} from {})", loser.id, survivor.id);
    for entity in [
        HistoryEntity::Contact(survivor.id),
        HistoryEntity::Contact(loser.id),
        HistoryEntity::Deal(d.id),
        HistoryEntity::Task(task.id),
    ] {
        let h = with_tx!(store, t, async |tx| ok(
            tx.entity_history(entity, &PageRequest::first(MAX_PAGE_SIZE))
                .await,
            "history"
        ))
        .await
        .items;
        assert_eq!(h[0].reason.as_deref(), Some(reason.as_str()), "{entity:?}");
        assert_eq!(h[0].request_id.as_deref(), Some("unmerge-1"), "{entity:?}");
    }
    // The loser's versions stay in order: the merge's tombstone, then
    // the version the unmerge wrote.
    let h = with_tx!(store, t, async |tx| ok(
        tx.entity_history(
            HistoryEntity::Contact(loser.id),
            &PageRequest::first(MAX_PAGE_SIZE)
        )
        .await,
        "history"
    ))
    .await
    .items;
    assert!(h[1].is_tombstone(), "{h:?}");
    assert!(h[0].valid_from > h[1].valid_from);
}

/// Asserts that `versions` (newest first, as `entity_history` gives
/// them) follow each other without gap or overlap: each version ends
/// where the next begins, and only the newest can be open.
#[track_caller]
fn one_chain(what: &str, versions: &[HistoryEntry]) {
    for pair in versions.windows(2) {
        let (newer, older) = (&pair[0], &pair[1]);
        assert_eq!(
            older.valid_to,
            Some(newer.valid_from),
            "{what}: the {:?} version from {} must end where the {:?} one from {} begins: \
             {versions:#?}",
            older.operation,
            older.valid_from,
            newer.operation,
            newer.valid_from
        );
    }
}

/// Contract: a record an unmerge brings back under its old id (the loser,
/// and each tagging it gives back) keeps one history chain: its
/// tombstone ends where the version the unmerge writes begins, so that no
/// two of its versions are in force at once.
pub async fn an_unmerged_contact_and_its_taggings_keep_one_history_chain(store: &DynStore) {
    let t = TenantId::new();
    let (survivor, loser) = pair(store, t).await;
    tag(store, t, "Kept", RecordRef::Contact(loser.id)).await;
    let m = merge(store, t, survivor.id, loser.id).await;
    ok(
        unmerge(store, t, m, UnmergeConflicts::Refuse).await,
        "unmerge",
    );
    let first = PageRequest::first(MAX_PAGE_SIZE);
    let (contact, taggings) = with_tx!(store, t, async |tx| {
        let contact = ok(
            tx.entity_history(HistoryEntity::Contact(loser.id), &first)
                .await,
            "history",
        )
        .items;
        let created = ok(
            tx.field_changes(
                &FieldQuery::new(crate::history::EntityKind::Tagging, "tag_id").page(first.clone()),
            )
            .await,
            "taggings",
        )
        .items;
        let mut taggings = Vec::new();
        for entity in created.iter().map(|v| v.entity) {
            let h = ok(tx.entity_history(entity, &first).await, "history").items;
            if !taggings.contains(&(entity, h.clone())) {
                taggings.push((entity, h));
            }
        }
        (contact, taggings)
    })
    .await;
    let operations: Vec<Operation> = contact.iter().map(|v| v.operation).collect();
    assert_eq!(
        operations,
        [Operation::Created, Operation::Deleted, Operation::Created],
        "the loser: created again by the unmerge, deleted by the merge, created"
    );
    one_chain("the loser", &contact);
    assert!(contact[0].valid_to.is_none(), "the loser is in force again");
    let restored: Vec<_> = taggings.iter().filter(|(_, h)| h.len() == 3).collect();
    assert_eq!(
        restored.len(),
        1,
        "the loser's tagging, given back: {taggings:#?}"
    );
    for (entity, h) in &taggings {
        one_chain(&format!("{entity:?}"), h);
    }
}

/// Contract: an unknown merge is `NotFound`; a merge undone already, or
/// whose survivor was deleted or erased, is refused (typed) and nothing
/// is written.
pub async fn an_unmerge_is_refused_for_an_unknown_undone_or_orphaned_merge(store: &DynStore) {
    let t = TenantId::new();
    let unknown = MergeId::new();
    match unmerge(store, t, unknown, UnmergeConflicts::Refuse).await {
        Err(Error::NotFound {
            entity: Entity::Merge,
            id,
        }) => {
            assert_eq!(id, unknown.to_string())
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    let (survivor, loser) = pair(store, t).await;
    let m = merge(store, t, survivor.id, loser.id).await;
    ok(
        unmerge(store, t, m, UnmergeConflicts::Refuse).await,
        "unmerge",
    );
    let at = merges_of(store, t, survivor.id).await[0]
        .unmerged_at
        .expect("undone");
    expect_refused(
        unmerge(store, t, m, UnmergeConflicts::Refuse).await,
        m,
        &UnmergeRefusal::AlreadyUnmerged(at),
        "twice",
    );

    // The survivor deleted.
    let m = merge(store, t, survivor.id, loser.id).await;
    with_tx!(store, t, async |tx| ok(
        tx.delete_contact(survivor.id).await,
        "delete"
    ))
    .await;
    let before = state(store, t, &[survivor.id, loser.id]).await;
    expect_refused(
        unmerge(store, t, m, UnmergeConflicts::Refuse).await,
        m,
        &UnmergeRefusal::SurvivorDeleted(survivor.id),
        "a deleted survivor",
    );
    assert_eq!(state(store, t, &[survivor.id, loser.id]).await, before);

    // The survivor erased: the journal keeps nothing of either.
    let t = TenantId::new();
    let (survivor, loser) = pair(store, t).await;
    let m = merge(store, t, survivor.id, loser.id).await;
    with_tx!(store, t, async |tx| ok(
        tx.erase_contact(survivor.id).await,
        "erase"
    ))
    .await;
    let records = merges_of(store, t, survivor.id).await;
    assert_eq!(records[0].cleared, Some(MergeCleared::Erased));
    expect_refused(
        unmerge(store, t, m, UnmergeConflicts::Refuse).await,
        m,
        &UnmergeRefusal::Cleared(MergeCleared::Erased),
        "an erased survivor",
    );
}

/// Contract: an unmerge is refused with `DuplicateEmail` naming the
/// contact that took the loser's email since, and after the history purge
/// passed the merge's time; nothing is written.
pub async fn an_unmerge_is_refused_when_the_email_is_taken_or_the_merge_purged(store: &DynStore) {
    let t = TenantId::new();
    let (survivor, loser) = pair(store, t).await;
    let m = merge(store, t, survivor.id, loser.id).await;
    let taker = create(store, t, new_contact("GRACE@example.com", "Other", "Grace")).await;
    let before = state(store, t, &[survivor.id, loser.id, taker.id]).await;
    match unmerge(store, t, m, UnmergeConflicts::Refuse).await {
        Err(Error::DuplicateEmail { existing_id, .. }) => assert_eq!(existing_id, taker.id),
        other => panic!("expected DuplicateEmail, got {other:?}"),
    }
    assert_eq!(
        state(store, t, &[survivor.id, loser.id, taker.id]).await,
        before
    );
    super::support::tick().await;
    let cutoff = truncate_to_micros(chrono::Utc::now());
    with_tx!(store, t, async |tx| ok(
        tx.purge_history(cutoff).await,
        "purge"
    ))
    .await;
    assert_eq!(
        merges_of(store, t, survivor.id).await[0].cleared,
        Some(MergeCleared::Purged)
    );
    expect_refused(
        unmerge(store, t, m, UnmergeConflicts::Refuse).await,
        m,
        &UnmergeRefusal::Cleared(MergeCleared::Purged),
        "a purged merge",
    );
}

/// Contract: with A merged into B, then B into C, undoing A→B first is
/// refused naming B→C; in reverse order both are undone and A, B and C
/// are as before with their deals. A later merge into the same survivor
/// is undone first too.
pub async fn chained_merges_are_undone_newest_first(store: &DynStore) {
    let t = TenantId::new();
    let a = create(store, t, full_contact("a@example.com")).await;
    let b = create(store, t, new_contact("b@example.com", "Bea", "B")).await;
    let c = create(store, t, new_contact("c@example.com", "Cee", "C")).await;
    let da = deal(store, t, new_deal(a.id, "From A", "1", "EUR")).await;
    let db = deal(store, t, new_deal(b.id, "From B", "2", "EUR")).await;
    let ab = merge(store, t, b.id, a.id).await;
    let bc = merge(store, t, c.id, b.id).await;
    let before = state(store, t, &[a.id, b.id, c.id]).await;
    expect_refused(
        unmerge(store, t, ab, UnmergeConflicts::Refuse).await,
        ab,
        &UnmergeRefusal::SurvivorMerged {
            merge: bc,
            into: c.id,
        },
        "the survivor merged on",
    );
    assert_eq!(state(store, t, &[a.id, b.id, c.id]).await, before);
    ok(
        unmerge(store, t, bc, UnmergeConflicts::Refuse).await,
        "undo B→C",
    );
    ok(
        unmerge(store, t, ab, UnmergeConflicts::Refuse).await,
        "undo A→B",
    );
    for (x, d) in [(&a, &da), (&b, &db)] {
        let now = super::support::get(store, t, x.id).await.expect("back");
        assert_eq!(fields(&now), fields(x));
        let h = holdings(store, t, x.id).await;
        assert_eq!(h.deals, vec![d.id.to_string()]);
    }
    let now = super::support::get(store, t, c.id).await.expect("c");
    assert_eq!(fields(&now), fields(&c));

    // Two merges into one survivor: the later one first.
    let first = merge(store, t, c.id, a.id).await;
    let second = merge(store, t, c.id, b.id).await;
    expect_refused(
        unmerge(store, t, first, UnmergeConflicts::Refuse).await,
        first,
        &UnmergeRefusal::LaterMerge {
            merge: second,
            loser: b.id,
        },
        "a later merge in effect",
    );
    let listed: Vec<MergeId> = merges_of(store, t, c.id)
        .await
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(listed, vec![second, first, bc], "newest first");
    ok(
        unmerge(store, t, second, UnmergeConflicts::Refuse).await,
        "undo the second",
    );
    ok(
        unmerge(store, t, first, UnmergeConflicts::Refuse).await,
        "undo the first",
    );
    let now = super::support::get(store, t, c.id).await.expect("c");
    assert_eq!(fields(&now), fields(&c));
}

/// Contract: a deal that came from the loser and was deleted since is
/// left out and reported; the loser's tag deleted since is not given
/// back.
pub async fn an_unmerge_skips_a_deal_or_tag_deleted_since(store: &DynStore) {
    let t = TenantId::new();
    let (survivor, loser) = pair(store, t).await;
    let kept = deal(store, t, new_deal(loser.id, "Kept", "1", "EUR")).await;
    let gone = deal(store, t, new_deal(loser.id, "Gone", "2", "EUR")).await;
    let doomed = tag(store, t, "doomed", RecordRef::Contact(loser.id)).await;
    let m = merge(store, t, survivor.id, loser.id).await;
    with_tx!(store, t, async |tx| {
        ok(tx.delete_deal(gone.id).await, "delete the deal");
        ok(tx.delete_tag(doomed.id).await, "delete the tag");
    })
    .await;
    let done = ok(
        unmerge(store, t, m, UnmergeConflicts::Refuse).await,
        "unmerge",
    );
    assert_eq!(done.deals, vec![kept.id]);
    assert_eq!(done.deals_skipped, vec![gone.id]);
    let h = holdings(store, t, loser.id).await;
    assert_eq!(h.deals, vec![kept.id.to_string()]);
    assert!(h.tags.is_empty(), "{h:?}");
}

/// Contract: erasing a contact clears the journal rows of its merges and
/// of those of every contact merged into it and still merged (their data
/// is part of it); their unmerges are then refused as erased. Other
/// merges keep theirs.
pub async fn an_erasure_clears_the_merges_of_everyone_merged_into_the_contact(store: &DynStore) {
    let t = TenantId::new();
    let a = create(store, t, full_contact("a@example.com")).await;
    let b = create(store, t, new_contact("b@example.com", "Bea", "B")).await;
    let c = create(store, t, new_contact("c@example.com", "Cee", "C")).await;
    let other = create(store, t, new_contact("o@example.com", "Other", "O")).await;
    let x = create(store, t, new_contact("x@example.com", "Ex", "X")).await;
    let ab = merge(store, t, b.id, a.id).await;
    let bc = merge(store, t, c.id, b.id).await;
    let ox = merge(store, t, x.id, other.id).await;
    with_tx!(store, t, async |tx| ok(
        tx.erase_contact(c.id).await,
        "erase"
    ))
    .await;
    for (m, who) in [(ab, a.id), (bc, b.id)] {
        let records = merges_of(store, t, who).await;
        let record = records.iter().find(|r| r.id == m).expect("listed");
        assert_eq!(record.cleared, Some(MergeCleared::Erased), "{record:?}");
        expect_refused(
            unmerge(store, t, m, UnmergeConflicts::Refuse).await,
            m,
            &UnmergeRefusal::Cleared(MergeCleared::Erased),
            "a merge in the erased contact's chain",
        );
    }
    assert_eq!(merges_of(store, t, x.id).await[0].cleared, None);
    ok(
        unmerge(store, t, ox, UnmergeConflicts::Refuse).await,
        "another merge is undone",
    );
}

/// Contract: the merge of an erased loser (which gave the survivor nothing
/// but its records) is undone like any other: the loser comes back erased,
/// with its deals.
pub async fn the_merge_of_an_erased_loser_is_undone(store: &DynStore) {
    let t = TenantId::new();
    let (survivor, loser) = pair(store, t).await;
    let d = deal(store, t, new_deal(loser.id, "Kept", "1", "EUR")).await;
    let erased = with_tx!(store, t, async |tx| ok(
        tx.erase_contact(loser.id).await,
        "erase"
    ))
    .await;
    let m = merge(store, t, survivor.id, loser.id).await;
    let done = ok(
        unmerge(store, t, m, UnmergeConflicts::Refuse).await,
        "unmerge",
    );
    assert_eq!(fields(&done.loser), fields(&erased));
    assert!(done.loser.is_erased());
    assert_eq!(done.deals, vec![d.id]);
    let back = super::support::get(store, t, loser.id).await.expect("back");
    assert_eq!(back, done.loser);
}

/// Contract: an unmerge gives both contacts the freshness of what they
/// hold again: the survivor's last engagement falls back to its own latest
/// activity or signal, and the loser comes back with its last engagement,
/// its verifications and its marks (a bounced email stays invalid) as they
/// were when it was merged away.
pub async fn an_unmerge_restores_both_contacts_freshness(store: &DynStore) {
    use crate::domain::{FreshField, NewActivity, NewSignal, SignalKind};
    let t = TenantId::new();
    let (survivor, loser) = pair(store, t).await;
    let hour = chrono::Duration::hours(1);
    let (older, newer) = (chrono::Utc::now() - hour * 48, chrono::Utc::now() - hour);
    with_tx!(store, t, async |tx| {
        let mut call = NewActivity::new(survivor.id, ActivityKind::Call);
        call.occurred_at = Some(older);
        ok(tx.log_activity(call).await, "the survivor's call");
        let mut meeting = NewActivity::new(loser.id, ActivityKind::Meeting);
        meeting.occurred_at = Some(newer);
        ok(tx.log_activity(meeting).await, "the loser's meeting");
        ok(
            tx.verify_contact(loser.id, &[FreshField::Phone, FreshField::Title])
                .await,
            "verify the loser",
        );
        let mut bounce = NewSignal::new(loser.id, SignalKind::EMAIL_BOUNCED);
        bounce.occurred_at = Some(newer);
        ok(tx.record_signal(bounce).await, "a bounce");
    })
    .await;
    let fresh = |c: ContactId| async move {
        with_tx!(store, t, async |tx| ok(tx.freshness(c).await, "freshness"))
            .await
            .expect("a contact has its freshness")
    };
    let loser_before = fresh(loser.id).await;
    assert!(loser_before.email_invalid_at.is_some(), "{loser_before:?}");
    let merge = merge(store, t, survivor.id, loser.id).await;
    let merged = fresh(survivor.id).await;
    assert_eq!(
        merged.last_engaged_at, loser_before.last_engaged_at,
        "a merge gives the survivor the later engagement"
    );
    ok(
        unmerge(store, t, merge, UnmergeConflicts::Refuse).await,
        "unmerge",
    );
    let survivor_after = fresh(survivor.id).await;
    assert_eq!(
        survivor_after.last_engaged_at.map(|t| t.timestamp_micros()),
        Some(older.timestamp_micros()),
        "the survivor's engagement falls back to its own call: {survivor_after:?}"
    );
    let loser_after = fresh(loser.id).await;
    assert_eq!(
        loser_after, loser_before,
        "the loser's freshness comes back as it was"
    );
}

//! The conformance suite's change feed points: one event per committed
//! change, numbered in commit order with no gap; consumers' cursors kept
//! in the store and moved in the caller's transaction; retention; input.

use super::prelude::*;
use super::support::{begin, create, ctx, deal, expect_validation, new_contact, new_deal, ok};
use crate::domain::{
    CompanyName, ConsumerName, FeedEvent, FeedKind, FeedPosition, MAX_FEED_BATCH, NewCompany,
    NewTag, NewTask, RecordRef, TagName, TaskTitle,
};

fn consumer(name: &str) -> ConsumerName {
    ConsumerName::parse(name).expect("a valid consumer name")
}

/// Every event of tenant `t` after `after`, through batches of 3.
async fn events_since(store: &DynStore, t: TenantId, after: FeedPosition) -> Vec<FeedEvent> {
    let mut all = Vec::new();
    let mut at = after;
    loop {
        let batch = with_tx!(store, t, async |tx| ok(
            tx.events_after(at, 3).await,
            "read the feed"
        ))
        .await;
        assert!(batch.len() <= 3, "a read returns at most `max` events");
        let Some(last) = batch.last() else {
            return all;
        };
        at = last.position;
        all.extend(batch);
    }
}

async fn all_events(store: &DynStore, t: TenantId) -> Vec<FeedEvent> {
    events_since(store, t, FeedPosition::START).await
}

async fn head(store: &DynStore, t: TenantId) -> FeedPosition {
    with_tx!(store, t, async |tx| ok(tx.feed_head().await, "feed head")).await
}

/// Asserts that `events` are numbered 1, 2, … per commit, commits with no
/// gap starting after `first_commit - 1`.
#[track_caller]
fn assert_numbered(events: &[FeedEvent], first_commit: i64) {
    let mut expected = FeedPosition::new(first_commit, 1);
    for (i, e) in events.iter().enumerate() {
        if i > 0 && e.position.commit != expected.commit {
            expected = FeedPosition::new(expected.commit + 1, 1);
        }
        assert_eq!(
            e.position, expected,
            "positions follow each other with no gap (event {i}: {e:?})"
        );
        expected.index += 1;
    }
}

/// Each committed change is one event, in the order of the commits, with
/// the record, the operation, the version, the history's diff and the
/// acting context; commits are numbered with no gap.
pub async fn every_committed_change_is_one_event_in_commit_order(store: &DynStore) {
    let t = TenantId::new();
    let c = create(store, t, new_contact("feed@example.com", "Ada", "Lovelace")).await;
    let who = Context::new(Actor::parse("user:grace").expect("an actor"))
        .with_reason("renamed")
        .expect("a reason")
        .with_request_id("req-7")
        .expect("a request id");
    let mut tx = ok(store.begin(t, who).await, "begin");
    let patch = ContactPatch {
        first_name: Some(PersonName::parse("Augusta").expect("a name")),
        ..ContactPatch::default()
    };
    let c2 = ok(tx.update_contact(c.id, c.version, patch).await, "update");
    ok(tx.commit().await, "commit");
    let d = deal(store, t, new_deal(c.id, "Engines", "100", "EUR")).await;
    let (a, s) = with_tx!(store, t, async |tx| {
        let a = ok(
            tx.log_activity(NewActivity::new(c.id, ActivityKind::Call))
                .await,
            "log an activity",
        );
        let s = ok(
            tx.record_signal(NewSignal::new(c.id, SignalKind::PAGE_VIEW))
                .await,
            "record a signal",
        );
        (a, s)
    })
    .await;

    let events = all_events(store, t).await;
    let got: Vec<(FeedKind, uuid::Uuid, Operation, Option<i64>)> = events
        .iter()
        .map(|e| (e.kind, e.id, e.operation, e.version))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                FeedKind::Contact,
                c.id.as_uuid(),
                Operation::Created,
                Some(1)
            ),
            (
                FeedKind::Contact,
                c.id.as_uuid(),
                Operation::Updated,
                Some(c2.version.get())
            ),
            (FeedKind::Deal, d.id.as_uuid(), Operation::Created, Some(1)),
            (FeedKind::Activity, a.id.as_uuid(), Operation::Created, None),
            (FeedKind::Signal, s.id.as_uuid(), Operation::Created, None),
        ],
        "one event per committed change, in commit order"
    );
    assert_numbered(&events, 1);
    assert_eq!(
        events[3].position.commit, events[4].position.commit,
        "the events of one transaction share its commit"
    );
    let update = &events[1];
    assert_eq!(update.actor, "user:grace");
    assert_eq!(update.reason.as_deref(), Some("renamed"));
    assert_eq!(update.request_id.as_deref(), Some("req-7"));
    let diff = update.diff.as_ref().expect("a contact's event has a diff");
    assert_eq!(diff["first_name"].old, "Ada");
    assert_eq!(diff["first_name"].new, "Augusta");
    assert!(
        !diff.contains_key("last_name"),
        "the diff holds only the changed fields"
    );
    assert!(events[3].diff.is_none(), "an activity's event has no diff");
    assert_eq!(events[3].actor, ctx().actor().as_str());
    for w in events.windows(2) {
        assert!(
            w[0].committed_at <= w[1].committed_at,
            "commit times follow the positions"
        );
    }
    assert_eq!(
        head(store, t).await,
        events.last().expect("events").position,
        "the head is the last event"
    );
}

/// Companies, tags, taggings and tasks have events too, and deleting a
/// contact is an event for it and for what goes with it.
pub async fn companies_tags_tasks_and_deletes_are_events(store: &DynStore) {
    let t = TenantId::new();
    let c = create(store, t, new_contact("gone@example.com", "Gone", "Soon")).await;
    let d = deal(store, t, new_deal(c.id, "Doomed", "5", "EUR")).await;
    let (company, tag, task) = with_tx!(store, t, async |tx| {
        let company = ok(
            tx.create_company(NewCompany::new(
                CompanyName::parse("Analytical Engines").expect("a name"),
            ))
            .await,
            "create a company",
        );
        let tag = ok(
            tx.create_tag(NewTag::new(TagName::parse("vip").expect("a tag name")))
                .await,
            "create a tag",
        );
        let task = ok(
            tx.create_task(NewTask::new(TaskTitle::parse("Call").expect("a title")))
                .await,
            "create a task",
        );
        assert!(ok(
            tx.attach_tag(tag.id, RecordRef::Contact(c.id)).await,
            "attach"
        ));
        (company, tag, task)
    })
    .await;
    let before = head(store, t).await;
    let events = events_since(store, t, FeedPosition::new(before.commit - 1, i32::MAX)).await;
    let kinds: Vec<(FeedKind, uuid::Uuid)> = events.iter().map(|e| (e.kind, e.id)).collect();
    assert_eq!(kinds.len(), 4, "four changes, four events: {kinds:?}");
    assert_eq!(kinds[0], (FeedKind::Company, company.id.as_uuid()));
    assert_eq!(kinds[1], (FeedKind::Tag, tag.id.as_uuid()));
    assert_eq!(kinds[2], (FeedKind::Task, task.id.as_uuid()));
    assert_eq!(kinds[3].0, FeedKind::Tagging);
    assert_eq!(events[3].version, None, "a tagging has no version");

    assert!(ok(
        store.scope(t, &ctx()).delete_contact(c.id).await,
        "delete the contact"
    ));
    let deleted = events_since(store, t, before).await;
    let commit = before.commit + 1;
    assert!(
        deleted
            .iter()
            .all(|e| e.position.commit == commit && e.operation == Operation::Deleted),
        "one commit of deletions: {deleted:?}"
    );
    for (kind, id) in [
        (FeedKind::Contact, c.id.as_uuid()),
        (FeedKind::Deal, d.id.as_uuid()),
        (FeedKind::Tagging, events[3].id),
    ] {
        assert!(
            deleted.iter().any(|e| e.kind == kind && e.id == id),
            "deleting a contact is an event for its {kind}: {deleted:?}"
        );
    }
}

/// Rolled-back and dropped transactions leave no event, and do not use up
/// a position: the next commit takes the next number.
pub async fn rolled_back_work_leaves_no_event_and_no_gap(store: &DynStore) {
    let t = TenantId::new();
    create(store, t, new_contact("first@example.com", "First", "One")).await;
    let mut tx = begin(store, t).await;
    ok(
        tx.create_contact(new_contact("rolled@example.com", "Rolled", "Back"))
            .await,
        "create",
    );
    ok(tx.rollback().await, "roll back");
    let mut tx = begin(store, t).await;
    ok(
        tx.create_contact(new_contact("dropped@example.com", "Dropped", "Too"))
            .await,
        "create",
    );
    drop(tx);
    let last = create(store, t, new_contact("last@example.com", "Last", "One")).await;
    let events = all_events(store, t).await;
    assert_eq!(events.len(), 2, "only committed changes: {events:?}");
    assert_eq!(events[1].id, last.id.as_uuid());
    assert_eq!(
        events[1].position,
        FeedPosition::new(2, 1),
        "rolled-back work takes no position"
    );
    assert_eq!(
        with_tx!(store, t, async |tx| ok(tx.feed_head().await, "head")).await,
        FeedPosition::new(2, 1)
    );
}

/// A score write-back is no event.
pub async fn score_write_backs_write_no_event(store: &DynStore) {
    let t = TenantId::new();
    let c = create(store, t, new_contact("scored@example.com", "Scored", "One")).await;
    let before = head(store, t).await;
    with_tx!(store, t, async |tx| ok(
        tx.write_scores(&[ContactScore::new(c.id, Score::new(42).expect("a score"))])
            .await,
        "write a score"
    ))
    .await;
    assert_eq!(
        head(store, t).await,
        before,
        "a score write-back is no event"
    );
}

/// For a store configured to announce scores (`with_score_events(true)`;
/// not in [`SUITE`](super::SUITE), which runs on stores as they come):
/// each stored score a write-back changes is one event of kind `score`
/// with its old and new value and the transaction's context; an unchanged
/// score, a missing contact and a rolled-back write-back are none.
pub async fn score_write_backs_are_events_when_announced(store: &DynStore) {
    use crate::history::FieldChange;
    let t = TenantId::new();
    let a = create(store, t, new_contact("score-a@example.com", "Score", "A")).await;
    let b = create(store, t, new_contact("score-b@example.com", "Score", "B")).await;
    let c = create(store, t, new_contact("score-c@example.com", "Score", "C")).await;
    let score = |n: i64| Score::new(n).expect("a score");
    let before = head(store, t).await;
    let written = with_tx!(store, t, async |tx| ok(
        tx.write_scores(&[
            ContactScore::new(a.id, score(42)),
            ContactScore::new(b.id, b.score),
            ContactScore::new(c.id, score(7)),
            ContactScore::new(ContactId::new(), score(9)),
        ])
        .await,
        "write scores"
    ))
    .await;
    assert_eq!(written, 2, "two scores changed");
    let mut events = events_since(store, t, before).await;
    assert_eq!(events.len(), 2, "one event per changed score: {events:?}");
    assert!(
        events
            .iter()
            .all(|e| e.position.commit == before.commit + 1),
        "in one commit"
    );
    events.sort_by_key(|e| e.id);
    let mut expected = vec![(a.id.as_uuid(), a.score, 42), (c.id.as_uuid(), c.score, 7)];
    expected.sort_by_key(|(id, _, _)| *id);
    for (e, (id, old, new)) in events.iter().zip(expected) {
        assert_eq!(e.kind, FeedKind::Score);
        assert_eq!(e.id, id);
        assert_eq!(e.operation, Operation::Updated);
        assert_eq!(e.version, None, "a score write-back makes no version");
        assert_eq!(e.actor, ctx().actor().as_str());
        let change = FieldChange {
            old: serde_json::json!(i64::from(old.get())),
            new: serde_json::json!(new),
        };
        assert_eq!(
            e.diff,
            Some([("score".to_string(), change)].into_iter().collect()),
            "the event holds the old and the new score"
        );
    }

    // The same scores again: nothing changes, nothing is announced; a
    // rolled-back write-back leaves no event.
    let head_now = head(store, t).await;
    with_tx!(store, t, async |tx| ok(
        tx.write_scores(&[ContactScore::new(a.id, score(42))]).await,
        "write the same score"
    ))
    .await;
    let mut tx = begin(store, t).await;
    ok(
        tx.write_scores(&[ContactScore::new(a.id, score(99))]).await,
        "write a score",
    );
    ok(tx.rollback().await, "roll back");
    assert_eq!(
        head(store, t).await,
        head_now,
        "no event for an unchanged score or a rolled-back write-back"
    );

    // A merge taken back: the loser returns with the score it had, which
    // is no write-back and no score event.
    let before_merge = head(store, t).await;
    let merge = with_tx!(store, t, async |tx| {
        ok(
            tx.merge_contacts(a.id, c.id, ConflictPolicy::NonEmptyIncoming)
                .await,
            "merge",
        );
        ok(tx.contact_merges(a.id).await, "contact merges")
            .first()
            .map(|m| m.id)
            .expect("the merge is in the journal")
    })
    .await;
    with_tx!(store, t, async |tx| ok(
        tx.unmerge_contacts(merge, crate::bulk::UnmergeConflicts::Refuse)
            .await,
        "unmerge"
    ))
    .await;
    let back = with_tx!(store, t, async |tx| ok(tx.get_contact(c.id).await, "get"))
        .await
        .expect("the loser is back");
    assert_eq!(back.score, score(7), "with its score");
    let events = events_since(store, t, before_merge).await;
    assert!(
        events.iter().all(|e| e.kind != FeedKind::Score),
        "an unmerge announces no score: {events:?}"
    );
}

/// A consumer reads after its cursor, an ack moves it (forward or back),
/// and consumers do not move each other's.
pub async fn consumers_read_after_their_own_cursor(store: &DynStore) {
    let t = TenantId::new();
    for i in 0..3 {
        create(
            store,
            t,
            new_contact(&format!("c{i}@example.com"), "Con", "Sumer"),
        )
        .await;
    }
    let (a, b) = (consumer("dashboard"), consumer("search-index"));
    let mut tx = begin(store, t).await;
    assert_eq!(
        ok(tx.consumer_position(&a).await, "position"),
        FeedPosition::START,
        "a new consumer starts before every event"
    );
    let first = ok(tx.next_batch(&a, 2).await, "next batch");
    assert_eq!(first.len(), 2);
    assert_eq!(
        ok(tx.next_batch(&a, 2).await, "again"),
        first,
        "without an ack, the same events come again"
    );
    ok(tx.ack(&a, first[1].position).await, "ack");
    let second = ok(tx.next_batch(&a, 2).await, "next batch");
    assert_eq!(second.len(), 1, "the rest after the cursor");
    assert_eq!(second[0].position, FeedPosition::new(3, 1));
    assert_eq!(
        ok(tx.next_batch(&b, 10).await, "other consumer").len(),
        3,
        "consumers are independent"
    );
    ok(tx.commit().await, "commit");

    let mut tx = begin(store, t).await;
    assert_eq!(
        ok(tx.consumer_position(&a).await, "position"),
        FeedPosition::new(2, 1),
        "the cursor is kept in the store"
    );
    ok(tx.ack(&a, FeedPosition::START).await, "ack back");
    assert_eq!(
        ok(tx.next_batch(&a, 10).await, "replay").len(),
        3,
        "an ack back replays"
    );
    ok(tx.commit().await, "commit");
}

/// An ack is a write of its transaction: rolled back with it, committed
/// with the consumer's own writes.
pub async fn an_ack_commits_or_rolls_back_with_its_transaction(store: &DynStore) {
    let t = TenantId::new();
    create(store, t, new_contact("acked@example.com", "Acked", "One")).await;
    let name = consumer("mailer");
    let mut tx = begin(store, t).await;
    let batch = ok(tx.next_batch(&name, 10).await, "read");
    ok(tx.ack(&name, batch[0].position).await, "ack");
    ok(tx.rollback().await, "roll back");
    let mut tx = begin(store, t).await;
    assert_eq!(
        ok(tx.next_batch(&name, 10).await, "read").len(),
        1,
        "a rolled-back ack did not move the cursor"
    );
    ok(tx.ack(&name, batch[0].position).await, "ack");
    ok(
        tx.log_activity(NewActivity::new(
            ContactId::from_uuid(batch[0].id),
            ActivityKind::Email,
        ))
        .await,
        "the consumer's own write",
    );
    ok(tx.commit().await, "commit");
    let mut tx = begin(store, t).await;
    let next = ok(tx.next_batch(&name, 10).await, "read");
    assert_eq!(next.len(), 1, "only the consumer's own write is new");
    assert_eq!(next[0].kind, FeedKind::Activity);
    ok(tx.commit().await, "commit");
}

/// Purging deletes whole transactions; a cursor behind the purge is an
/// error naming the consumer, never a jump; a new consumer starts after
/// the purge.
pub async fn a_cursor_behind_the_retention_is_an_error(store: &DynStore) {
    let t = TenantId::new();
    create(store, t, new_contact("old1@example.com", "Old", "One")).await;
    create(store, t, new_contact("old2@example.com", "Old", "Two")).await;
    let late = consumer("late");
    let early = consumer("early");
    with_tx!(store, t, async |tx| ok(
        tx.ack(&early, FeedPosition::new(1, 1)).await,
        "ack"
    ))
    .await;
    let purge_at = crate::store::shared_now() + chrono::Duration::seconds(1);
    let purged = with_tx!(store, t, async |tx| ok(
        tx.purge_feed(purge_at).await,
        "purge"
    ))
    .await;
    assert_eq!(purged, 2, "both events purged");
    let last = create(store, t, new_contact("new@example.com", "New", "One")).await;
    let mut tx = begin(store, t).await;
    assert_eq!(
        ok(tx.consumer_position(&late).await, "position"),
        FeedPosition::new(2, 1),
        "a consumer that never acked starts after the purge"
    );
    let batch = ok(tx.next_batch(&late, 10).await, "read");
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].id, last.id.as_uuid());
    match tx.next_batch(&early, 10).await {
        Err(Error::FeedExpired {
            consumer: Some(c),
            position,
            purged,
        }) => {
            assert_eq!(c, early);
            assert_eq!(position, FeedPosition::new(1, 1));
            assert_eq!(purged, FeedPosition::new(2, 1));
        }
        other => panic!("a consumer behind the retention gets FeedExpired, got {other:?}"),
    }
    match tx.events_after(FeedPosition::START, 10).await {
        Err(Error::FeedExpired {
            consumer: None,
            position,
            purged,
        }) => {
            assert_eq!(position, FeedPosition::START);
            assert_eq!(purged, FeedPosition::new(2, 1));
        }
        other => panic!("a read behind the retention is FeedExpired, got {other:?}"),
    }
    match tx.ack(&late, FeedPosition::new(1, 1)).await {
        Err(Error::FeedExpired {
            consumer: Some(c), ..
        }) => assert_eq!(c, late),
        other => panic!("an ack behind the retention is FeedExpired, got {other:?}"),
    }
    ok(tx.commit().await, "commit");
    let long_ago = purge_at - chrono::Duration::hours(1);
    assert_eq!(
        with_tx!(store, t, async |tx| ok(
            tx.purge_feed(long_ago).await,
            "purge"
        ))
        .await,
        0,
        "nothing older to purge"
    );
}

/// Bad input is refused, naming the field.
pub async fn feed_input_is_checked(store: &DynStore) {
    let t = TenantId::new();
    create(store, t, new_contact("input@example.com", "In", "Put")).await;
    let name = consumer("checker");
    let mut tx = begin(store, t).await;
    expect_validation(tx.next_batch(&name, 0).await, "max", "a batch of none");
    expect_validation(
        tx.next_batch(&name, MAX_FEED_BATCH + 1).await,
        "max",
        "a batch too large",
    );
    expect_validation(
        tx.events_after(FeedPosition::new(-1, 0), 1).await,
        "position",
        "a negative position",
    );
    expect_validation(
        tx.ack(&name, FeedPosition::new(2, 1)).await,
        "position",
        "an ack after the last commit",
    );
    ok(tx.ack(&name, FeedPosition::new(1, 1)).await, "a good ack");
    ok(tx.commit().await, "the transaction stays usable");
    assert!(ConsumerName::parse("").is_err(), "an empty consumer name");
    assert!(ConsumerName::parse("a\0b").is_err(), "a NUL in a name");
}

/// Another tenant's events and cursors are invisible.
pub async fn the_feed_is_invisible_to_another_tenant(store: &DynStore) {
    let (t, other) = (TenantId::new(), TenantId::new());
    create(store, t, new_contact("mine@example.com", "Mine", "Only")).await;
    let name = consumer("shared-name");
    with_tx!(store, t, async |tx| ok(
        tx.ack(&name, FeedPosition::new(1, 1)).await,
        "ack"
    ))
    .await;
    let mut tx = begin(store, other).await;
    assert!(ok(tx.next_batch(&name, 10).await, "read").is_empty());
    assert_eq!(ok(tx.feed_head().await, "head"), FeedPosition::START);
    assert_eq!(
        ok(tx.consumer_position(&name).await, "position"),
        FeedPosition::START
    );
    ok(tx.commit().await, "commit");
}

/// Erasing a contact scrubs its personal data from the diffs of its
/// earlier events too, and is an event of its own.
pub async fn an_erasure_scrubs_earlier_events(store: &DynStore) {
    let t = TenantId::new();
    let c = create(store, t, new_contact("private@example.com", "Pri", "Vate")).await;
    ok(store.scope(t, &ctx()).erase_contact(c.id).await, "erase");
    let events = all_events(store, t).await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].operation, Operation::Erased);
    let created = events[0].diff.as_ref().expect("a diff");
    assert_ne!(
        created["email"].new, "private@example.com",
        "the erased email is not in the feed"
    );
}

/// Purging the history takes the diffs of the purged versions from their
/// events, never the events: a consumer that reads the feed afterwards
/// still receives every change, at the same positions, with the same
/// record, operation, version and acting context.
pub async fn purging_the_history_keeps_the_events_without_their_diffs(store: &DynStore) {
    let t = TenantId::new();
    let c = create(store, t, new_contact("kept@example.com", "Ada", "Kept")).await;
    let renamed = with_tx!(store, t, async |tx| {
        let patch = ContactPatch {
            first_name: Some(PersonName::parse("Augusta").expect("a name")),
            ..ContactPatch::default()
        };
        ok(tx.update_contact(c.id, c.version, patch).await, "update")
    })
    .await;
    with_tx!(store, t, async |tx| ok(
        tx.log_activity(NewActivity::new(c.id, ActivityKind::Call))
            .await,
        "log an activity",
    ))
    .await;
    super::support::tick().await;
    let cutoff = crate::domain::truncate_to_micros(chrono::Utc::now());
    super::support::tick().await;
    let before = all_events(store, t).await;
    assert_eq!(before.len(), 3, "{before:?}");
    assert!(
        before[0].diff.is_some(),
        "the creation's event has its diff"
    );
    let purged = with_tx!(store, t, async |tx| ok(
        tx.purge_history(cutoff).await,
        "purge the history"
    ))
    .await;
    assert_eq!(purged, 1, "the creation's version ended before the cutoff");
    let after = all_events(store, t).await;
    let summary = |events: &[FeedEvent]| -> Vec<_> {
        events
            .iter()
            .map(|e| {
                (
                    e.position,
                    e.kind,
                    e.id,
                    e.operation,
                    e.version,
                    e.actor.clone(),
                    e.committed_at,
                )
            })
            .collect()
    };
    assert_eq!(
        summary(&after),
        summary(&before),
        "the purge takes no event from the feed"
    );
    assert!(
        after[0].diff.is_none(),
        "the purged version's diff is gone: {:?}",
        after[0]
    );
    assert_eq!(
        after[1].diff, before[1].diff,
        "the live version's diff stays"
    );
    assert_eq!(after[1].version, Some(renamed.version.get()));
    assert_eq!(head(store, t).await, before[2].position);
}

/// A history purge and a feed purge in one transaction: the feed purge
/// takes the events the history purge kept with the rest, and nothing of
/// the purged commits comes back — no event, no new position.
pub async fn both_purges_in_one_transaction_leave_nothing_of_the_purged_commits(store: &DynStore) {
    let t = TenantId::new();
    let c = create(store, t, new_contact("purged@example.com", "Ada", "Gone")).await;
    with_tx!(store, t, async |tx| {
        let patch = ContactPatch {
            first_name: Some(PersonName::parse("Augusta").expect("a name")),
            ..ContactPatch::default()
        };
        ok(tx.update_contact(c.id, c.version, patch).await, "update")
    })
    .await;
    super::support::tick().await;
    let later =
        crate::domain::truncate_to_micros(chrono::Utc::now()) + chrono::Duration::seconds(1);
    let head_before = head(store, t).await;
    let (history, feed) = with_tx!(store, t, async |tx| {
        let history = ok(tx.purge_history(later).await, "purge the history");
        let feed = ok(tx.purge_feed(later).await, "purge the feed");
        (history, feed)
    })
    .await;
    assert_eq!(history, 1, "the first version ended");
    assert_eq!(feed, 2, "both commits' events");
    assert_eq!(head(store, t).await, head_before, "no new position");
    assert!(
        events_since(store, t, head_before).await.is_empty(),
        "nothing after the purged head"
    );
    let later_change = create(store, t, new_contact("after@example.com", "Ada", "Next")).await;
    let events = events_since(store, t, head_before).await;
    assert_eq!(
        events
            .iter()
            .map(|e| (e.position, e.id))
            .collect::<Vec<_>>(),
        vec![(
            FeedPosition::new(head_before.commit + 1, 1),
            later_change.id.as_uuid()
        )],
        "the next commit follows the purged ones"
    );
}

/// "Delete this contact and drop its history", in one transaction: the
/// purge removes versions this transaction wrote, before it has a
/// position; every change it committed is still an event (without the
/// purged diffs), numbered with no gap, and the head is its last one.
pub async fn a_history_purge_keeps_the_events_of_its_own_transaction(store: &DynStore) {
    let t = TenantId::new();
    let c = create(store, t, new_contact("forget@example.com", "Ada", "Gone")).await;
    let purged = with_tx!(store, t, async |tx| {
        let patch = ContactPatch {
            first_name: Some(PersonName::parse("Augusta").expect("a name")),
            ..ContactPatch::default()
        };
        ok(tx.update_contact(c.id, c.version, patch).await, "update");
        assert!(ok(tx.delete_contact(c.id).await, "delete"));
        super::support::tick().await;
        let later = crate::domain::truncate_to_micros(chrono::Utc::now());
        ok(tx.purge_history(later).await, "purge the history")
    })
    .await;
    assert_eq!(purged, 3, "every version and the tombstone");
    let events = all_events(store, t).await;
    assert_numbered(&events, 1);
    assert_eq!(
        events
            .iter()
            .map(|e| (e.position, e.operation, e.version))
            .collect::<Vec<_>>(),
        vec![
            (FeedPosition::new(1, 1), Operation::Created, Some(1)),
            (FeedPosition::new(2, 1), Operation::Updated, Some(2)),
            (FeedPosition::new(2, 2), Operation::Deleted, Some(2)),
        ],
        "the deletion is still announced"
    );
    assert!(events.iter().all(|e| e.diff.is_none()), "{events:?}");
    assert_eq!(head(store, t).await, FeedPosition::new(2, 2));
}

/// A consumer reading one event at a time goes from the last event of a
/// commit to the next commit (a read that took only the commit of its
/// cursor found nothing after it, and the consumer stopped for good).
pub async fn events_read_one_at_a_time_cross_commits(store: &DynStore) {
    let t = TenantId::new();
    for i in 0..3 {
        create(
            store,
            t,
            new_contact(&format!("one{i}@example.com"), "Ada", "One"),
        )
        .await;
    }
    let reader = consumer("one-by-one");
    let mut got = Vec::new();
    for _ in 0..4 {
        let batch = with_tx!(store, t, async |tx| {
            let batch = ok(tx.next_batch(&reader, 1).await, "next batch");
            if let Some(e) = batch.first() {
                ok(tx.ack(&reader, e.position).await, "ack");
            }
            batch
        })
        .await;
        got.extend(batch.iter().map(|e| e.position));
    }
    assert_eq!(
        got,
        (1..=3).map(|c| FeedPosition::new(c, 1)).collect::<Vec<_>>()
    );
    let mut at = FeedPosition::START;
    let mut one_by_one = Vec::new();
    while let Some(e) = with_tx!(store, t, async |tx| ok(
        tx.events_after(at, 1).await,
        "read one"
    ))
    .await
    .pop()
    {
        at = e.position;
        one_by_one.push(e.position);
    }
    assert_eq!(one_by_one, got);
}

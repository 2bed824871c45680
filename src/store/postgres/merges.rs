//! The merge journal on PostgreSQL (`migrations/0011_merge_journal.sql`):
//! the row a merge writes, the unmerge, and what an erasure or a history
//! purge removes from the journal.
//!
//! An unmerge reads its journal row, then locks the survivor (`FOR NO KEY
//! UPDATE`, as every update of it does), then reads the row again `FOR
//! UPDATE` with the survivor's other merges: a merge that takes the
//! survivor (as either side) holds the survivor's lock until it commits,
//! so what the checks read after it is what is in effect. Two unmerges of
//! one merge wait for each other on the journal row; the second finds it
//! undone. An erasure locks the contact before it clears the journal rows,
//! in the same order. The loser has no row to lock: no one can create a
//! contact with its id, and the unique email index settles a race for its
//! email ([`Error::DuplicateEmail`]).

use tokio_postgres::Row;
use uuid::Uuid;

use super::{
    contacts::{INSERT_CONTACT, InsertRow},
    error,
    tags::CopiedTaggings,
    transaction::{PgTransaction, now, set_local},
};
use crate::{
    domain::{
        ActivityId, ConflictPolicy, Contact, ContactId, DealId, MergeCleared, MergeId, MergeRecord,
        MergeSnapshot, SignalId, TagId, TaskId, Timestamp, UnmergeConflicts, Unmerged,
        merge_changed_fields, restored_loser, unmerge_reason, unmerge_refusal, unmerged_survivor,
        with_merge_reason,
    },
    error::{Entity, Error, Result},
};

const INSERT_MERGE: &str = "INSERT INTO contact_merges (tenant_id, id, survivor_id, loser_id, \
     merged_at, policy, actor, reason, request_id, changed, snapshot) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
const GET_MERGE: &str = "SELECT id, survivor_id, loser_id, merged_at, unmerged_at, policy, actor, \
     reason, request_id, changed, cleared, snapshot FROM contact_merges \
     WHERE tenant_id = $1 AND id = $2";
const LOCK_MERGE: &str = "SELECT id, survivor_id, loser_id, merged_at, unmerged_at, policy, \
     actor, reason, request_id, changed, cleared, snapshot FROM contact_merges \
     WHERE tenant_id = $1 AND id = $2 FOR UPDATE";
/// A contact's merges, newest first, without their snapshots.
const MERGES_OF: &str = "SELECT id, survivor_id, loser_id, merged_at, unmerged_at, policy, actor, \
     reason, request_id, changed, cleared, NULL::jsonb FROM contact_merges \
     WHERE tenant_id = $1 AND (survivor_id = $2 OR loser_id = $2) \
     ORDER BY merged_at DESC, id DESC";
const MARK_UNMERGED: &str =
    "UPDATE contact_merges SET unmerged_at = $3 WHERE tenant_id = $1 AND id = $2";
/// Erasing contacts `$2` removes the snapshots of their merges.
const CLEAR_ERASED_MERGES: &str = "UPDATE contact_merges SET snapshot = NULL, \
     cleared = 'erased' WHERE tenant_id = $1 AND (survivor_id = ANY($2) OR loser_id = ANY($2)) \
     AND snapshot IS NOT NULL";
/// The contacts merged into one of `$2` and still merged away.
const ABSORBED: &str = "SELECT loser_id FROM contact_merges \
     WHERE tenant_id = $1 AND survivor_id = ANY($2) AND unmerged_at IS NULL";
/// The history purge removes the snapshots of the merges before `$2`.
pub(super) const CLEAR_PURGED_MERGES: &str = "UPDATE contact_merges SET snapshot = NULL, \
     cleared = 'purged' WHERE tenant_id = $1 AND merged_at < $2 AND snapshot IS NOT NULL";

const BACK_DEALS: &str = "UPDATE deals SET contact_id = $3, version = version + 1, \
     updated_at = $5 WHERE tenant_id = $1 AND id = ANY($4) AND contact_id = $2 RETURNING id";
const BACK_ACTIVITIES: &str = "UPDATE activities SET contact_id = $3 \
     WHERE tenant_id = $1 AND id = ANY($4) AND contact_id = $2 RETURNING id";
const BACK_SIGNALS: &str = "UPDATE signals SET contact_id = $3 \
     WHERE tenant_id = $1 AND id = ANY($4) AND contact_id = $2 RETURNING id";
const BACK_TASKS: &str = "UPDATE tasks SET contact_id = $3, version = version + 1, \
     updated_at = $5 WHERE tenant_id = $1 AND id = ANY($4) AND contact_id = $2 RETURNING id";
/// Takes off the survivor (`$2`) the taggings the merge gave it (`$3`).
const DROP_GAINED: &str = "DELETE FROM taggings WHERE tenant_id = $1 AND contact_id = $2 \
     AND id = ANY($3) RETURNING tag_id";
/// The tags of `$2` that still exist, key-share locked.
const SHARE_TAGS: &str = "SELECT id FROM tags WHERE tenant_id = $1 AND id = ANY($2) FOR KEY SHARE";
/// Gives the loser (`$5`) its taggings back: `$2` ids, `$3` tags, `$4` times.
const RESTORE_TAGGINGS: &str = "INSERT INTO taggings (tenant_id, id, tag_id, contact_id, \
     created_at) SELECT $1, u.id, u.tag_id, $5, u.at \
     FROM unnest($2::uuid[], $3::uuid[], $4::timestamptz[]) AS u(id, tag_id, at) \
     ON CONFLICT DO NOTHING";
const CONTACT_ID_BY_EMAIL: &str = "SELECT id FROM contacts WHERE tenant_id = $1 AND email_key = $2";

/// Closes the tombstones of the records an unmerge inserted again under
/// their old ids (`$2`: the loser and the taggings given back): each one's
/// open `deleted` version ends where its open `created` version (the one
/// the insert wrote) begins. The history's writer looks for no previous
/// version on a create (ARCHITECTURE.md, *Audit history*), so the merge's
/// tombstone stayed open beside the new version. The versions are told
/// apart by their operation, not by their times: a create takes the
/// clock as it is, and a clock set back since the merge (or a shard
/// moved to a node whose clock is behind) dates the new version before
/// the tombstone; that tombstone stays open (a version cannot end before
/// it begins), and the new version stays in force either way.
const CLOSE_RESTORED: &str = "UPDATE history AS h SET valid_to = n.valid_from \
     FROM history AS n \
     WHERE h.tenant_id = $1 AND h.entity_id = ANY($2) AND h.valid_to IS NULL \
     AND h.operation = 'deleted' AND n.tenant_id = $1 AND n.entity_id = h.entity_id \
     AND n.valid_to IS NULL AND n.operation = 'created' AND n.valid_from > h.valid_from";

/// A restored loser's score, on the rank row its insert made.
const RESTORE_SCORE: &str =
    "UPDATE contact_ranks SET score = $3 WHERE tenant_id = $1 AND contact_id = $2";

/// The fixed statements of this file, for [`super::statements`].
pub(super) const STATEMENTS: &[(&str, &str)] = super::statements::listed![
    INSERT_MERGE,
    RESTORE_SCORE,
    GET_MERGE,
    LOCK_MERGE,
    MERGES_OF,
    MARK_UNMERGED,
    CLEAR_ERASED_MERGES,
    ABSORBED,
    CLEAR_PURGED_MERGES,
    BACK_DEALS,
    BACK_ACTIVITIES,
    BACK_SIGNALS,
    BACK_TASKS,
    DROP_GAINED,
    SHARE_TAGS,
    RESTORE_TAGGINGS,
    CLOSE_RESTORED,
    CONTACT_ID_BY_EMAIL,
];

/// The ids a merge's move statements returned, in their order: deals,
/// activities, signals, tasks.
fn ids<T>(moved: &[Vec<Row>], i: usize, wrap: fn(Uuid) -> T) -> Result<Vec<T>> {
    moved
        .get(i)
        .map(|rows| {
            rows.iter()
                .map(|r| r.try_get::<_, Uuid>(0).map(wrap).map_err(error::db))
                .collect()
        })
        .unwrap_or_else(|| Ok(Vec::new()))
}

/// The snapshot of a merge of `gone` into `kept` that left the survivor
/// as `after`, moved what `moved` returned and copied `taggings`.
pub(super) fn snapshot(
    kept: Contact,
    gone: Contact,
    after: &Contact,
    moved: &[Vec<Row>],
    taggings: CopiedTaggings,
) -> Result<MergeSnapshot> {
    // The loser's freshness, read in the moves' round trip (index 5).
    let loser_freshness = moved
        .get(5)
        .and_then(|rows| rows.first())
        .map(|r| super::freshness::fresh_row(r, 0))
        .transpose()?;
    Ok(MergeSnapshot {
        loser: gone,
        loser_taggings: taggings.carried,
        survivor_before: kept,
        survivor_after: after.clone(),
        deals: ids(moved, 0, DealId::from_uuid)?,
        activities: ids(moved, 1, ActivityId::from_uuid)?,
        signals: ids(moved, 2, SignalId::from_uuid)?,
        tasks: ids(moved, 3, TaskId::from_uuid)?,
        gained_taggings: taggings.gained,
        loser_freshness,
    })
}

fn policy_str(policy: ConflictPolicy) -> Result<String> {
    match serde_json::to_value(policy).map_err(|e| Error::backend(e.to_string()))? {
        serde_json::Value::String(s) => Ok(s),
        other => Err(Error::backend(format!("a policy stored as {other}"))),
    }
}

/// A contact as a snapshot holds it, before its values are checked.
#[derive(serde::Deserialize)]
struct StoredContact {
    id: ContactId,
    tenant_id: crate::domain::TenantId,
    email: String,
    first_name: String,
    last_name: String,
    company: Option<String>,
    title: Option<String>,
    phone: Option<String>,
    lead_source: crate::domain::LeadSource,
    metadata: serde_json::Value,
    score: crate::domain::Score,
    active: bool,
    created_at: Timestamp,
    updated_at: Timestamp,
    version: crate::domain::Version,
    company_id: Option<crate::domain::CompanyId>,
    owner: Option<String>,
}

impl StoredContact {
    /// The contact, its values rebuilt under the rules they were stored
    /// with, as a row of `contacts` is (an erased loser's placeholder
    /// email, a custom field an earlier version kept).
    fn contact(self) -> Result<Contact> {
        use crate::domain::{CompanyName, Email, JobTitle, Metadata, OwnerId, PersonName, Phone};
        let bad = |e: crate::error::FieldError| {
            Error::backend(format!(
                "a stored merge snapshot does not parse: {}: {}",
                e.field, e.reason
            ))
        };
        Ok(Contact {
            id: self.id,
            tenant_id: self.tenant_id,
            email: Email::parse_stored("email", &self.email).map_err(bad)?,
            first_name: PersonName::parse_stored("first_name", &self.first_name).map_err(bad)?,
            last_name: PersonName::parse_stored("last_name", &self.last_name).map_err(bad)?,
            company: self
                .company
                .map(|v| CompanyName::parse_stored("company", &v))
                .transpose()
                .map_err(bad)?,
            title: self
                .title
                .map(|v| JobTitle::parse_stored("title", &v))
                .transpose()
                .map_err(bad)?,
            phone: self
                .phone
                .map(|v| Phone::parse(&v))
                .transpose()
                .map_err(bad)?,
            lead_source: self.lead_source,
            metadata: Metadata::parse_stored(self.metadata).map_err(bad)?,
            score: self.score,
            active: self.active,
            created_at: self.created_at,
            updated_at: self.updated_at,
            version: self.version,
            company_id: self.company_id,
            owner: self
                .owner
                .map(|v| OwnerId::parse(&v))
                .transpose()
                .map_err(bad)?,
        })
    }
}

/// A snapshot as stored, its contacts not checked yet.
#[derive(serde::Deserialize)]
struct StoredSnapshot {
    loser: StoredContact,
    loser_taggings: Vec<(TagId, crate::domain::TaggingId, Timestamp)>,
    survivor_before: StoredContact,
    survivor_after: StoredContact,
    deals: Vec<DealId>,
    activities: Vec<ActivityId>,
    signals: Vec<SignalId>,
    tasks: Vec<TaskId>,
    gained_taggings: Vec<(TagId, crate::domain::TaggingId)>,
    #[serde(default)]
    loser_freshness: Option<crate::domain::Freshness>,
}

fn stored_snapshot(value: serde_json::Value) -> Result<MergeSnapshot> {
    let s: StoredSnapshot = serde_json::from_value(value)
        .map_err(|e| Error::backend(format!("a stored merge snapshot does not parse: {e}")))?;
    Ok(MergeSnapshot {
        loser: s.loser.contact()?,
        loser_taggings: s.loser_taggings,
        survivor_before: s.survivor_before.contact()?,
        survivor_after: s.survivor_after.contact()?,
        deals: s.deals,
        activities: s.activities,
        signals: s.signals,
        tasks: s.tasks,
        gained_taggings: s.gained_taggings,
        loser_freshness: s.loser_freshness,
    })
}

/// A journal row: its record and its snapshot (`None` when cleared).
fn journal_row(row: &Row) -> Result<(MergeRecord, Option<MergeSnapshot>)> {
    let get_policy: String = row.try_get(5).map_err(error::db)?;
    let policy: ConflictPolicy = serde_json::from_value(serde_json::Value::String(get_policy))
        .map_err(|e| Error::backend(format!("a stored merge policy does not parse: {e}")))?;
    let cleared: Option<String> = row.try_get(10).map_err(error::db)?;
    let cleared = match cleared {
        None => None,
        Some(c) => Some(
            MergeCleared::parse(&c)
                .ok_or_else(|| Error::backend(format!("a stored merge says cleared = {c}")))?,
        ),
    };
    let snapshot: Option<serde_json::Value> = row.try_get(11).map_err(error::db)?;
    let snapshot = snapshot.map(stored_snapshot).transpose()?;
    let record = MergeRecord {
        id: MergeId::from_uuid(row.try_get(0).map_err(error::db)?),
        survivor: ContactId::from_uuid(row.try_get(1).map_err(error::db)?),
        loser: ContactId::from_uuid(row.try_get(2).map_err(error::db)?),
        merged_at: row.try_get(3).map_err(error::db)?,
        unmerged_at: row.try_get(4).map_err(error::db)?,
        policy,
        actor: row.try_get(6).map_err(error::db)?,
        reason: row.try_get(7).map_err(error::db)?,
        request_id: row.try_get(8).map_err(error::db)?,
        changed: row.try_get(9).map_err(error::db)?,
        cleared,
    };
    Ok((record, snapshot))
}

impl PgTransaction {
    /// Writes the journal row of a merge (in its transaction).
    pub(super) async fn journal_merge(
        &mut self,
        snapshot: MergeSnapshot,
        policy: ConflictPolicy,
        at: Timestamp,
    ) -> Result<()> {
        let tenant = self.tenant_uuid();
        let id = MergeId::new().as_uuid();
        let changed = merge_changed_fields(&snapshot.survivor_before, &snapshot.survivor_after);
        let (survivor, loser) = (
            snapshot.survivor_before.id.as_uuid(),
            snapshot.loser.id.as_uuid(),
        );
        let json = serde_json::to_value(&snapshot).map_err(|e| Error::backend(e.to_string()))?;
        let policy = policy_str(policy)?;
        let actor = self.context.actor().to_string();
        let reason = self.context.reason().map(str::to_string);
        let request_id = self.context.request_id().map(str::to_string);
        self.execute(
            INSERT_MERGE,
            &[
                &tenant,
                &id,
                &survivor,
                &loser,
                &at,
                &policy,
                &actor,
                &reason,
                &request_id,
                &changed,
                &json,
            ],
        )
        .await
        .map(drop)
    }

    /// Removes the snapshots of the merges `contact` took part in (it is
    /// being erased), and of those of every contact merged into it and
    /// still merged, and so on down the chain: their data is part of it.
    pub(super) async fn clear_merges_of(&mut self, contact: ContactId) -> Result<()> {
        let tenant = self.tenant_uuid();
        let mut absorbed = vec![contact.as_uuid()];
        let mut frontier = absorbed.clone();
        while !frontier.is_empty() {
            let rows = self.query(ABSORBED, &[&tenant, &frontier]).await?;
            frontier = Vec::new();
            for r in &rows {
                let id: Uuid = r.try_get(0).map_err(error::db)?;
                if !absorbed.contains(&id) {
                    absorbed.push(id);
                    frontier.push(id);
                }
            }
        }
        self.execute(CLEAR_ERASED_MERGES, &[&tenant, &absorbed])
            .await
            .map(drop)
    }

    pub(super) async fn merges_of(&mut self, contact: ContactId) -> Result<Vec<MergeRecord>> {
        let tenant = self.tenant_uuid();
        self.query(MERGES_OF, &[&tenant, &contact.as_uuid()])
            .await?
            .iter()
            .map(|r| journal_row(r).map(|(record, _)| record))
            .collect()
    }

    pub(super) async fn unmerge(
        &mut self,
        merge: MergeId,
        conflicts: UnmergeConflicts,
    ) -> Result<Unmerged> {
        let tenant = self.tenant_uuid();
        let id = merge.as_uuid();
        let Some(row) = self.query_opt(GET_MERGE, &[&tenant, &id]).await? else {
            return Err(Error::not_found(Entity::Merge, merge));
        };
        let (record, snapshot) = journal_row(&row)?;
        let refused = |refusal| Error::UnmergeRefused { merge, refusal };
        // Nothing to lock for a merge that can no longer be undone.
        if let Some(r) = unmerge_refusal(&record, true, None, &[])
            .filter(|r| !matches!(r, crate::domain::UnmergeRefusal::SurvivorDeleted(_)))
        {
            return Err(refused(r));
        }
        // The companies the loser and the survivor come back linked to
        // (a journal's snapshot never changes), key-shared in id order
        // before the survivor is locked, as every other link does: taken
        // after it, the loser's would wait for a delete or merge of that
        // company that itself waits for the survivor's row — a deadlock.
        // One deleted meanwhile is no error here (its delete unlinked).
        if let Some(snapshot) = &snapshot {
            let mut companies: Vec<crate::domain::CompanyId> = [
                snapshot.loser.company_id,
                snapshot.survivor_before.company_id,
            ]
            .into_iter()
            .flatten()
            .collect();
            companies.sort_by_key(|c| c.as_uuid());
            companies.dedup();
            for company in companies {
                match self.share_company(company).await {
                    Err(Error::NotFound { .. }) => {}
                    other => other?,
                }
            }
        }
        let survivor = match self.lock_contact(record.survivor).await {
            Ok(c) => Some(c),
            Err(Error::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        let Some(row) = self.query_opt(LOCK_MERGE, &[&tenant, &id]).await? else {
            return Err(Error::not_found(Entity::Merge, merge));
        };
        let (record, snapshot) = journal_row(&row)?;
        let others = self.merges_of(record.survivor).await?;
        if let Some(r) = unmerge_refusal(&record, snapshot.is_some(), survivor.as_ref(), &others) {
            return Err(refused(r));
        }
        let (Some(snapshot), Some(current)) = (snapshot, survivor) else {
            return Err(Error::backend("the merge's snapshot vanished"));
        };
        let at = now();
        let (next, kept_fields) =
            unmerged_survivor(&current, &snapshot, conflicts, at).map_err(refused)?;
        let (s, l) = (record.survivor, record.loser);
        let reason = with_merge_reason(&self.context, unmerge_reason(s, l))
            .reason()
            .unwrap_or_default()
            .to_string();
        let own = self.context.reason().unwrap_or_default().to_string();
        self.simple(&set_local("crm.reason", &reason)).await?;
        let mut out = self
            .unmerge_writes(&record, snapshot, current, next, kept_fields, at)
            .await?;
        self.simple(&set_local("crm.reason", &own)).await?;
        self.execute(MARK_UNMERGED, &[&tenant, &id, &at]).await?;
        out.merge = merge;
        Ok(out)
    }

    /// Writes the loser back, with the email race mapped to
    /// [`Error::DuplicateEmail`].
    async fn insert_loser(&mut self, back: &mut Contact) -> Result<()> {
        if let Some(company) = back.company_id {
            match self.share_company(company).await {
                // Deleted since: its delete unlinks.
                Err(Error::NotFound { .. }) => back.company_id = None,
                other => other?,
            }
        }
        // No link by the email's domain: the loser comes back with the
        // company link it had (or none).
        let row = InsertRow::of(back, None);
        let params = row.params();
        if self.query_opt(INSERT_CONTACT, &params).await?.is_some() {
            // Its rank row, made by the insert, holds score 0. Putting
            // the stored score back is no score write-back: the change
            // feed announces none (as an insert with the score announced
            // none until schema 17), whether or not this store announces
            // score write-backs.
            if back.score != crate::domain::Score::MIN {
                let score = i16::from(back.score.get());
                if self.score_events {
                    self.simple(&set_local("crm.score_events", "off")).await?;
                }
                self.execute(
                    RESTORE_SCORE,
                    &[&self.tenant_uuid(), &back.id.as_uuid(), &score],
                )
                .await?;
                if self.score_events {
                    self.simple(&set_local("crm.score_events", "on")).await?;
                }
            }
            return Ok(());
        }
        let tenant = self.tenant_uuid();
        let holder = self
            .query_opt(CONTACT_ID_BY_EMAIL, &[&tenant, &back.email.normalized()])
            .await?;
        match holder {
            Some(r) => Err(Error::DuplicateEmail {
                email: back.email.clone(),
                existing_id: ContactId::from_uuid(r.try_get(0).map_err(error::db)?),
            }),
            None => Err(Error::retryable(error::EmailRace)),
        }
    }

    async fn unmerge_writes(
        &mut self,
        record: &MergeRecord,
        snapshot: MergeSnapshot,
        current: Contact,
        next: Option<Contact>,
        kept_fields: Vec<String>,
        at: Timestamp,
    ) -> Result<Unmerged> {
        let tenant = self.tenant_uuid();
        let (survivor, loser) = (record.survivor, record.loser);
        let mut back = restored_loser(&snapshot, at);
        self.insert_loser(&mut back).await?;
        let (s, l) = (survivor.as_uuid(), loser.as_uuid());
        let deals: Vec<Uuid> = snapshot.deals.iter().map(|d| d.as_uuid()).collect();
        let activities: Vec<Uuid> = snapshot.activities.iter().map(|a| a.as_uuid()).collect();
        let signals: Vec<Uuid> = snapshot.signals.iter().map(|a| a.as_uuid()).collect();
        let tasks: Vec<Uuid> = snapshot.tasks.iter().map(|a| a.as_uuid()).collect();
        let gained: Vec<Uuid> = snapshot
            .gained_taggings
            .iter()
            .map(|(_, t)| t.as_uuid())
            .collect();
        let moved_deals = self
            .query(BACK_DEALS, &[&tenant, &s, &l, &deals, &at])
            .await?;
        let moved_activities = self
            .query(BACK_ACTIVITIES, &[&tenant, &s, &l, &activities])
            .await?;
        let moved_signals = self
            .query(BACK_SIGNALS, &[&tenant, &s, &l, &signals])
            .await?;
        let moved_tasks = self
            .query(BACK_TASKS, &[&tenant, &s, &l, &tasks, &at])
            .await?;
        let dropped = self.query(DROP_GAINED, &[&tenant, &s, &gained]).await?;
        // The records inserted again under their old ids.
        let mut restored: Vec<Uuid> = vec![l];
        let wanted: Vec<Uuid> = snapshot
            .loser_taggings
            .iter()
            .map(|(tag, _, _)| tag.as_uuid())
            .collect();
        if !wanted.is_empty() {
            let existing: Vec<Uuid> = self
                .query(SHARE_TAGS, &[&tenant, &wanted])
                .await?
                .iter()
                .map(|r| r.try_get(0).map_err(error::db))
                .collect::<Result<_>>()?;
            let kept: Vec<_> = snapshot
                .loser_taggings
                .iter()
                .filter(|(tag, _, _)| existing.contains(&tag.as_uuid()))
                .collect();
            let ids: Vec<Uuid> = kept.iter().map(|(_, t, _)| t.as_uuid()).collect();
            let tags: Vec<Uuid> = kept.iter().map(|(t, _, _)| t.as_uuid()).collect();
            let times: Vec<Timestamp> = kept.iter().map(|(_, _, at)| *at).collect();
            self.execute(RESTORE_TAGGINGS, &[&tenant, &ids, &tags, &times, &l])
                .await?;
            restored.extend(ids);
        }
        self.execute(CLOSE_RESTORED, &[&tenant, &restored]).await?;
        let survivor_now = match next {
            Some(next) => self.write_contact(&current, next).await?,
            None => current,
        };
        // The live scores and last engagements, from the activities and
        // signals each holds now; the loser's verifications and marks as
        // they were when it was merged away.
        self.live_recompute(&[survivor, loser]).await?;
        self.fresh_recompute(survivor, None).await?;
        self.fresh_recompute(loser, Some(snapshot.loser_freshness.as_ref()))
            .await?;
        let ids_of = |rows: &[Row]| -> Result<Vec<Uuid>> {
            rows.iter()
                .map(|r| r.try_get::<_, Uuid>(0).map_err(error::db))
                .collect()
        };
        let moved: Vec<Uuid> = ids_of(&moved_deals)?;
        let ordered = |all: &[Uuid], moved: &[Uuid]| -> Vec<Uuid> {
            all.iter().filter(|i| moved.contains(i)).copied().collect()
        };
        let back_activities = ids_of(&moved_activities)?;
        let back_signals = ids_of(&moved_signals)?;
        let back_tasks = ids_of(&moved_tasks)?;
        let mut tags_removed: Vec<TagId> = dropped
            .iter()
            .map(|r| {
                r.try_get::<_, Uuid>(0)
                    .map(TagId::from_uuid)
                    .map_err(error::db)
            })
            .collect::<Result<_>>()?;
        tags_removed.sort_by_key(|t| {
            snapshot
                .gained_taggings
                .iter()
                .position(|(g, _)| g == t)
                .unwrap_or(usize::MAX)
        });
        Ok(Unmerged {
            merge: record.id,
            survivor: survivor_now,
            loser: back,
            deals: ordered(&deals, &moved)
                .into_iter()
                .map(DealId::from_uuid)
                .collect(),
            deals_skipped: deals
                .iter()
                .filter(|d| !moved.contains(d))
                .map(|d| DealId::from_uuid(*d))
                .collect(),
            activities: ordered(&activities, &back_activities)
                .into_iter()
                .map(ActivityId::from_uuid)
                .collect(),
            signals: ordered(&signals, &back_signals)
                .into_iter()
                .map(SignalId::from_uuid)
                .collect(),
            tasks: ordered(&tasks, &back_tasks)
                .into_iter()
                .map(TaskId::from_uuid)
                .collect(),
            tags_removed,
            kept_fields,
        })
    }
}

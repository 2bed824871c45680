//! The merge journal of the in-memory store: what a merge records so that
//! it can be undone, the unmerge itself, and what an erasure or a history
//! purge removes from the journal.

use uuid::Uuid;

use super::{MemoryTransaction, TenantData, Undo};
use crate::{
    domain::{
        ActivityId, ConflictPolicy, Contact, ContactId, DealId, MergeCleared, MergeId,
        MergeJournalEntry, MergeRecord, MergeSnapshot, RecordRef, SignalId, TagId, Tagging,
        TaggingId, Timestamp, UnmergeConflicts, Unmerged, merge_changed_fields, restored_loser,
        unmerge_reason, unmerge_refusal, unmerged_survivor, with_merge_reason,
    },
    error::{Entity, Error, Result},
    scoring::live_log_sum,
    store::shared::now,
};

/// What a merge is about to move, read before it moves it.
pub(super) struct MergeStart {
    loser: Contact,
    loser_taggings: Vec<(TagId, TaggingId, Timestamp)>,
    survivor_before: Contact,
    survivor_tags: Vec<TagId>,
    deals: Vec<DealId>,
    activities: Vec<ActivityId>,
    signals: Vec<SignalId>,
    tasks: Vec<crate::domain::TaskId>,
    loser_freshness: Option<crate::domain::Freshness>,
}

fn taggings_of(data: &TenantData, record: RecordRef) -> Vec<&Tagging> {
    data.carried_tags(record)
        .into_iter()
        .filter_map(|tag| data.taggings.get(&(record, tag)))
        .collect()
}

/// The journal rows `contact` takes part in, newest first.
fn involving(data: &TenantData, contact: ContactId) -> Vec<&MergeJournalEntry> {
    let mut rows: Vec<&MergeJournalEntry> = data
        .merges
        .values()
        .filter(|e| e.record.survivor == contact || e.record.loser == contact)
        .collect();
    rows.sort_by_key(|e| std::cmp::Reverse((e.record.merged_at, e.record.id)));
    rows
}

impl MemoryTransaction {
    fn set_merge(&mut self, id: MergeId, value: Option<MergeJournalEntry>) -> Result<()> {
        let tenant = self.tenant;
        let merges = &mut self.data_mut()?.merges;
        let old = match value {
            Some(e) => merges.insert(id, e),
            None => merges.remove(&id),
        };
        self.undo.push(Undo::Merge(tenant, id, old.map(Box::new)));
        Ok(())
    }

    /// What the merge of `gone` into `kept` will move.
    pub(super) fn merge_start(&self, kept: &Contact, gone: &Contact) -> Result<MergeStart> {
        let data = self.data()?;
        let (survivor, loser) = (kept.id, gone.id);
        let deals = data
            .deals_by_contact
            .range(
                (loser, i64::MIN, DealId::from_uuid(Uuid::nil()))
                    ..=(loser, i64::MAX, DealId::from_uuid(Uuid::max())),
            )
            .map(|k| k.2)
            .collect();
        let activities = data
            .timeline
            .range(
                (loser, i64::MIN, ActivityId::from_uuid(Uuid::nil()))
                    ..=(loser, i64::MAX, ActivityId::from_uuid(Uuid::max())),
            )
            .map(|k| k.2)
            .collect();
        let signals = data
            .signals
            .range(
                (loser, i64::MIN, SignalId::from_uuid(Uuid::nil()))
                    ..=(loser, i64::MAX, SignalId::from_uuid(Uuid::max())),
            )
            .map(|(k, _)| k.2)
            .collect();
        let mut tasks: Vec<_> = data
            .tasks
            .values()
            .filter(|t| t.contact_id == Some(loser))
            .map(|t| t.id)
            .collect();
        tasks.sort();
        Ok(MergeStart {
            loser: gone.clone(),
            loser_taggings: taggings_of(data, RecordRef::Contact(loser))
                .into_iter()
                .map(|t| (t.tag_id, t.id, t.created_at))
                .collect(),
            survivor_before: kept.clone(),
            survivor_tags: data
                .carried_tags(RecordRef::Contact(survivor))
                .into_iter()
                .collect(),
            deals,
            activities,
            signals,
            tasks,
            loser_freshness: data.freshness.get(&gone.id).cloned(),
        })
    }

    /// Writes the journal row of a merge that `start` began and that left
    /// the survivor as `after`.
    pub(super) fn journal_merge(
        &mut self,
        start: MergeStart,
        after: &Contact,
        policy: ConflictPolicy,
        at: Timestamp,
    ) -> Result<()> {
        let data = self.data()?;
        let gained_taggings = taggings_of(data, RecordRef::Contact(after.id))
            .into_iter()
            .filter(|t| !start.survivor_tags.contains(&t.tag_id))
            .map(|t| (t.tag_id, t.id))
            .collect();
        let record = MergeRecord {
            id: MergeId::new(),
            survivor: after.id,
            loser: start.loser.id,
            merged_at: at,
            unmerged_at: None,
            policy,
            actor: self.context.actor().to_string(),
            reason: self.context.reason().map(str::to_string),
            request_id: self.context.request_id().map(str::to_string),
            changed: merge_changed_fields(&start.survivor_before, after),
            cleared: None,
        };
        let snapshot = MergeSnapshot {
            loser: start.loser,
            loser_taggings: start.loser_taggings,
            survivor_before: start.survivor_before,
            survivor_after: after.clone(),
            deals: start.deals,
            activities: start.activities,
            signals: start.signals,
            tasks: start.tasks,
            gained_taggings,
            loser_freshness: start.loser_freshness,
        };
        self.set_merge(
            record.id,
            Some(MergeJournalEntry {
                record,
                snapshot: Some(snapshot),
            }),
        )
    }

    pub(super) fn merges_of(&self, contact: ContactId) -> Result<Vec<MergeRecord>> {
        Ok(involving(self.data()?, contact)
            .into_iter()
            .map(|e| e.record.clone())
            .collect())
    }

    /// Removes the snapshots of the merges `contact` took part in (it is
    /// being erased), and of those of every contact merged into it and
    /// still merged, and so on down the chain: their data is part of it.
    pub(super) fn clear_merges_of(&mut self, contact: ContactId) -> Result<()> {
        let data = self.data()?;
        let mut absorbed = vec![contact];
        let mut i = 0;
        while let Some(c) = absorbed.get(i).copied() {
            i += 1;
            for e in data.merges.values() {
                if e.record.survivor == c
                    && e.record.unmerged_at.is_none()
                    && !absorbed.contains(&e.record.loser)
                {
                    absorbed.push(e.record.loser);
                }
            }
        }
        let cleared: Vec<MergeJournalEntry> = data
            .merges
            .values()
            .filter(|e| {
                e.snapshot.is_some()
                    && (absorbed.contains(&e.record.survivor) || absorbed.contains(&e.record.loser))
            })
            .cloned()
            .collect();
        for mut e in cleared {
            e.snapshot = None;
            e.record.cleared = Some(MergeCleared::Erased);
            self.set_merge(e.record.id, Some(e))?;
        }
        Ok(())
    }

    /// Removes the snapshots of the merges made before `before` (the
    /// history purge removes the loser's tombstone of that time).
    pub(super) fn purge_merges(&mut self, before: Timestamp) -> Result<()> {
        let purged: Vec<MergeJournalEntry> = self
            .data()?
            .merges
            .values()
            .filter(|e| e.snapshot.is_some() && e.record.merged_at < before)
            .cloned()
            .collect();
        for mut e in purged {
            e.snapshot = None;
            e.record.cleared = Some(MergeCleared::Purged);
            self.set_merge(e.record.id, Some(e))?;
        }
        Ok(())
    }

    /// Recomputes the live score state of `contact` from its activities
    /// and signals.
    fn live_recompute(&mut self, contact: ContactId) -> Result<()> {
        let Some(model) = self.live_scoring.clone() else {
            return Ok(());
        };
        let data = self.data()?;
        let activities = data
            .activities_of(contact)
            .filter_map(|a| model.log_term(model.activity_signal(a.kind), a.occurred_at));
        let signals = data
            .signals_of(contact)
            .filter_map(|s| model.log_term(&s.kind, s.occurred_at));
        let log = live_log_sum(activities.chain(signals).collect::<Vec<f64>>());
        if data.live_scores.get(&contact).copied() == log {
            return Ok(());
        }
        self.set_live(contact, log)
    }

    pub(super) fn unmerge(
        &mut self,
        merge: MergeId,
        conflicts: UnmergeConflicts,
    ) -> Result<Unmerged> {
        let entry = self
            .data()?
            .merges
            .get(&merge)
            .cloned()
            .ok_or_else(|| Error::not_found(Entity::Merge, merge))?;
        let (survivor, loser) = (entry.record.survivor, entry.record.loser);
        let data = self.data()?;
        let current = data.contacts.get(&survivor).cloned();
        let others: Vec<MergeRecord> = involving(data, survivor)
            .into_iter()
            .map(|e| e.record.clone())
            .collect();
        let refusal = unmerge_refusal(
            &entry.record,
            entry.snapshot.is_some(),
            current.as_ref(),
            &others,
        );
        if let Some(refusal) = refusal {
            return Err(Error::UnmergeRefused { merge, refusal });
        }
        let (Some(snapshot), Some(current)) = (entry.snapshot.clone(), current) else {
            return Err(Error::backend("the merge's snapshot vanished"));
        };
        let at = now();
        let (next, kept_fields) = unmerged_survivor(&current, &snapshot, conflicts, at)
            .map_err(|refusal| Error::UnmergeRefused { merge, refusal })?;
        let email = &snapshot.loser.email;
        if let Some(holder) = self.data()?.by_email.get(email.normalized()) {
            return Err(Error::DuplicateEmail {
                email: email.clone(),
                existing_id: *holder,
            });
        }
        let context = self.context.clone();
        self.context = with_merge_reason(&context, unmerge_reason(survivor, loser));
        let result = self.unmerge_writes(&entry, snapshot, current, next, kept_fields, at);
        self.context = context;
        result
    }

    fn unmerge_writes(
        &mut self,
        entry: &MergeJournalEntry,
        snapshot: MergeSnapshot,
        current: Contact,
        next: Option<Contact>,
        kept_fields: Vec<String>,
        at: Timestamp,
    ) -> Result<Unmerged> {
        let (survivor, loser) = (entry.record.survivor, entry.record.loser);
        let mut back = restored_loser(&snapshot, at);
        if let Some(company) = back.company_id
            && !self.data()?.companies.contains_key(&company)
        {
            // The company was deleted since: its delete unlinks.
            back.company_id = None;
        }
        self.set_contact(loser, Some(back.clone()))?;
        let mut out = Unmerged {
            merge: entry.record.id,
            survivor: current.clone(),
            loser: back,
            deals: vec![],
            deals_skipped: vec![],
            activities: vec![],
            signals: vec![],
            tasks: vec![],
            tags_removed: vec![],
            kept_fields,
        };
        for id in &snapshot.deals {
            match self.data()?.deals.get(id).cloned() {
                Some(mut d) if d.contact_id == survivor => {
                    d.contact_id = loser;
                    d.updated_at = at;
                    d.version = d.version.next();
                    self.set_deal(*id, Some(d))?;
                    out.deals.push(*id);
                }
                _ => out.deals_skipped.push(*id),
            }
        }
        for id in &snapshot.activities {
            if let Some(mut a) = self.data()?.activities.get(id).cloned()
                && a.contact_id == survivor
            {
                a.contact_id = loser;
                self.set_activity(*id, Some(a))?;
                out.activities.push(*id);
            }
        }
        let signals: Vec<_> = self
            .data()?
            .signals
            .range(
                (survivor, i64::MIN, SignalId::from_uuid(Uuid::nil()))
                    ..=(survivor, i64::MAX, SignalId::from_uuid(Uuid::max())),
            )
            .filter(|(k, _)| snapshot.signals.contains(&k.2))
            .map(|(k, s)| (*k, s.clone()))
            .collect();
        for (key, mut s) in signals {
            self.set_signal(key, None)?;
            s.contact_id = loser;
            self.set_signal((loser, key.1, key.2), Some(s))?;
            out.signals.push(key.2);
        }
        for id in &snapshot.tasks {
            if let Some(mut t) = self.data()?.tasks.get(id).cloned()
                && t.contact_id == Some(survivor)
            {
                t.contact_id = Some(loser);
                t.updated_at = at;
                t.version = t.version.next();
                self.set_task(*id, Some(t))?;
                out.tasks.push(*id);
            }
        }
        let to = RecordRef::Contact(survivor);
        for (tag, tagging) in &snapshot.gained_taggings {
            if self.data()?.taggings.get(&(to, *tag)).map(|t| t.id) == Some(*tagging) {
                self.set_tagging((to, *tag), None)?;
                out.tags_removed.push(*tag);
            }
        }
        let tenant = self.tenant;
        for (tag, tagging, created_at) in &snapshot.loser_taggings {
            if self.data()?.tags.contains_key(tag) {
                let record = RecordRef::Contact(loser);
                let t = Tagging {
                    id: *tagging,
                    tenant_id: tenant,
                    tag_id: *tag,
                    record,
                    created_at: *created_at,
                };
                self.set_tagging((record, *tag), Some(t))?;
            }
        }
        if let Some(next) = next {
            self.set_contact(survivor, Some(next.clone()))?;
            out.survivor = next;
        }
        // The live scores and last engagements, from the activities and
        // signals each holds now; the loser's verifications and marks as
        // they were when it was merged away.
        self.live_recompute(survivor)?;
        self.live_recompute(loser)?;
        self.fresh_recompute(survivor, None)?;
        self.fresh_recompute(loser, Some(snapshot.loser_freshness.as_ref()))?;
        let mut done = entry.clone();
        done.record.unmerged_at = Some(at);
        self.set_merge(done.record.id, Some(done))?;
        Ok(out)
    }
}

//! The journal of contact merges and the rules that undo one: what a merge
//! recorded ([`MergeRecord`], and the snapshot it keeps of the loser and of
//! the survivor's values), how an unmerge treats survivor fields edited
//! since ([`UnmergeConflicts`]), why one is refused ([`UnmergeRefusal`])
//! and what it did ([`Unmerged`]).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{
    ActivityId, ConflictPolicy, Contact, ContactId, ContactPatch, DealId, SignalId, TagId,
    TaggingId, TaskId, Timestamp, id_type,
};

id_type!(
    /// The id of a merge of two contacts, as its journal keeps it (UUID v7).
    MergeId
);

/// Why a merge's journal row holds no snapshot any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MergeCleared {
    /// One of its two contacts was erased: the personal data the merge
    /// kept went with it.
    Erased,
    /// The history purge removed the records of its time.
    Purged,
}

impl MergeCleared {
    /// As stored: `erased`, `purged`.
    pub fn as_str(self) -> &'static str {
        match self {
            MergeCleared::Erased => "erased",
            MergeCleared::Purged => "purged",
        }
    }

    /// The value [`as_str`](Self::as_str) gives, back.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "erased" => Some(MergeCleared::Erased),
            "purged" => Some(MergeCleared::Purged),
            _ => None,
        }
    }
}

/// One merge of the journal, as
/// [`BulkTx::contact_merges`](crate::store::BulkTx::contact_merges) lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MergeRecord {
    /// Its id.
    pub id: MergeId,
    /// The contact that was kept.
    pub survivor: ContactId,
    /// The contact that was merged into it (and deleted).
    pub loser: ContactId,
    /// When the merge was written.
    pub merged_at: Timestamp,
    /// When it was undone, if it was.
    pub unmerged_at: Option<Timestamp>,
    /// The policy the survivor's values were resolved by.
    pub policy: ConflictPolicy,
    /// Who merged.
    pub actor: String,
    /// The merging transaction's own reason, if it gave one.
    pub reason: Option<String>,
    /// The merging transaction's request id, if it had one.
    pub request_id: Option<String>,
    /// The survivor's fields the merge changed ([`MERGE_FIELDS`] names).
    pub changed: Vec<String>,
    /// Set when the snapshot was removed (erasure, purge): the merge can
    /// no longer be undone.
    pub cleared: Option<MergeCleared>,
}

/// The survivor's fields a merge may change, by name.
pub const MERGE_FIELDS: [&str; 9] = [
    "first_name",
    "last_name",
    "company",
    "title",
    "phone",
    "lead_source",
    "metadata",
    "company_id",
    "owner",
];

/// What a merge keeps so that it can be undone: the loser as it was, the
/// survivor before and after, and the ids of what moved. Stored as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MergeSnapshot {
    /// The loser as it was just before the merge.
    pub loser: Contact,
    /// The loser's taggings (deleted with it).
    pub loser_taggings: Vec<(TagId, TaggingId, Timestamp)>,
    /// The survivor just before the merge.
    pub survivor_before: Contact,
    /// The survivor just after it.
    pub survivor_after: Contact,
    /// The loser's deals, moved to the survivor.
    pub deals: Vec<DealId>,
    /// The loser's activities, moved to the survivor.
    pub activities: Vec<ActivityId>,
    /// The loser's signals, moved to the survivor.
    pub signals: Vec<SignalId>,
    /// The loser's tasks, moved to the survivor.
    pub tasks: Vec<TaskId>,
    /// The taggings the merge gave the survivor (tags it did not carry).
    pub gained_taggings: Vec<(TagId, TaggingId)>,
    /// The loser's freshness just before the merge (its verifications and
    /// marks come back with it).
    #[serde(default)]
    pub loser_freshness: Option<super::Freshness>,
}

/// One merge with its snapshot, as the in-memory store keeps it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MergeJournalEntry {
    /// The merge.
    pub(crate) record: MergeRecord,
    /// What undoing it needs; `None` once cleared.
    pub(crate) snapshot: Option<MergeSnapshot>,
}

/// What an unmerge does with a survivor field the merge changed and that
/// was edited since.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum UnmergeConflicts {
    /// Refuse the unmerge ([`UnmergeRefusal::EditedSince`] listing the
    /// fields) and write nothing. The default.
    #[default]
    Refuse,
    /// Keep the current values of those fields; restore the others.
    KeepCurrent,
}

/// Why an unmerge was refused (it wrote nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnmergeRefusal {
    /// The merge was already undone, at that time.
    AlreadyUnmerged(Timestamp),
    /// The survivor was deleted since.
    SurvivorDeleted(ContactId),
    /// The survivor was merged into another contact since: undo that
    /// merge first.
    SurvivorMerged {
        /// The merge to undo first.
        merge: MergeId,
        /// The contact the survivor was merged into.
        into: ContactId,
    },
    /// Another contact was merged into the survivor later and that merge
    /// is still in effect: undo it first (merges of one survivor are
    /// undone newest first, so that each restores the values it found).
    LaterMerge {
        /// The merge to undo first.
        merge: MergeId,
        /// Its loser.
        loser: ContactId,
    },
    /// The survivor was erased since: nothing of the loser can be told
    /// apart from it any more.
    SurvivorErased(ContactId),
    /// The merge's snapshot was removed: by an erasure of one of its
    /// contacts, or by the history purge.
    Cleared(MergeCleared),
    /// Survivor fields the merge changed were edited since (with
    /// [`UnmergeConflicts::Refuse`]).
    EditedSince(Vec<String>),
}

impl fmt::Display for UnmergeRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnmergeRefusal::AlreadyUnmerged(at) => {
                write!(f, "it was already undone at {}", at.to_rfc3339())
            }
            UnmergeRefusal::SurvivorDeleted(id) => write!(f, "the survivor {id} was deleted"),
            UnmergeRefusal::SurvivorMerged { merge, into } => write!(
                f,
                "the survivor was merged into {into} since: undo merge {merge} first"
            ),
            UnmergeRefusal::LaterMerge { merge, loser } => write!(
                f,
                "{loser} was merged into the survivor later: undo merge {merge} first"
            ),
            UnmergeRefusal::SurvivorErased(id) => write!(f, "the survivor {id} was erased"),
            UnmergeRefusal::Cleared(MergeCleared::Erased) => {
                f.write_str("its record was removed when one of its contacts was erased")
            }
            UnmergeRefusal::Cleared(MergeCleared::Purged) => {
                f.write_str("its record was purged with the history of its time")
            }
            UnmergeRefusal::EditedSince(fields) => write!(
                f,
                "survivor fields it changed were edited since: {}",
                fields.join(", ")
            ),
        }
    }
}

/// What an unmerge did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Unmerged {
    /// The merge undone.
    pub merge: MergeId,
    /// The survivor, its fields restored.
    pub survivor: Contact,
    /// The loser, back with its id.
    pub loser: Contact,
    /// The deals moved back to the loser.
    pub deals: Vec<DealId>,
    /// The deals that came from the loser and were deleted (or linked to
    /// another contact) since: left as they are.
    pub deals_skipped: Vec<DealId>,
    /// The activities moved back.
    pub activities: Vec<ActivityId>,
    /// The signals moved back.
    pub signals: Vec<SignalId>,
    /// The tasks moved back.
    pub tasks: Vec<TaskId>,
    /// The tags the merge had given the survivor, taken off it.
    pub tags_removed: Vec<TagId>,
    /// Survivor fields the merge changed, edited since and kept as they
    /// are ([`UnmergeConflicts::KeepCurrent`]).
    pub kept_fields: Vec<String>,
}

/// The reason an unmerge records in the history of every record it changes.
pub fn unmerge_reason(survivor: ContactId, loser: ContactId) -> String {
    format!("unmerged {loser} from {survivor}")
}

/// Whether field `name` of [`MERGE_FIELDS`] holds the same value in `a`
/// and `b`.
fn same_field(name: &str, a: &Contact, b: &Contact) -> bool {
    match name {
        "first_name" => a.first_name == b.first_name,
        "last_name" => a.last_name == b.last_name,
        "company" => a.company == b.company,
        "title" => a.title == b.title,
        "phone" => a.phone == b.phone,
        "lead_source" => a.lead_source == b.lead_source,
        "metadata" => a.metadata == b.metadata,
        "company_id" => a.company_id == b.company_id,
        "owner" => a.owner == b.owner,
        _ => true,
    }
}

/// Sets field `name` of `patch` to its value in `from`.
fn restore_field(name: &str, from: &Contact, patch: &mut ContactPatch) {
    match name {
        "first_name" => patch.first_name = Some(from.first_name.clone()),
        "last_name" => patch.last_name = Some(from.last_name.clone()),
        "company" => patch.company = Some(from.company.clone()),
        "title" => patch.title = Some(from.title.clone()),
        "phone" => patch.phone = Some(from.phone.clone()),
        "lead_source" => patch.lead_source = Some(from.lead_source),
        "metadata" => patch.metadata = Some(from.metadata.clone()),
        "company_id" => patch.company_id = Some(from.company_id),
        "owner" => patch.owner = Some(from.owner.clone()),
        _ => {}
    }
}

/// The survivor's fields a merge changed, from its values before and after.
pub fn merge_changed_fields(before: &Contact, after: &Contact) -> Vec<String> {
    MERGE_FIELDS
        .iter()
        .filter(|f| !same_field(f, before, after))
        .map(|f| f.to_string())
        .collect()
}

/// The survivor after an unmerge: each field the merge changed that still
/// holds the merge's value gets its value from before the merge; one
/// holding neither was edited since, and is kept (`KeepCurrent`) or
/// refuses the unmerge (`Refuse`, listing every such field). Returns the
/// new survivor (`None` when nothing changes) and the fields kept.
pub fn unmerged_survivor(
    current: &Contact,
    snapshot: &MergeSnapshot,
    conflicts: UnmergeConflicts,
    now: Timestamp,
) -> Result<(Option<Contact>, Vec<String>), UnmergeRefusal> {
    let (before, after) = (&snapshot.survivor_before, &snapshot.survivor_after);
    let mut patch = ContactPatch::default();
    let mut edited = Vec::new();
    for field in merge_changed_fields(before, after) {
        if same_field(&field, current, before) {
            continue;
        }
        if same_field(&field, current, after) {
            restore_field(&field, before, &mut patch);
        } else {
            edited.push(field);
        }
    }
    if !edited.is_empty() && conflicts == UnmergeConflicts::Refuse {
        return Err(UnmergeRefusal::EditedSince(edited));
    }
    Ok((current.patched(&patch, now), edited))
}

/// Why merge `record` cannot be undone, if it cannot: `has_snapshot`
/// tells whether its journal row still holds its snapshot, `survivor` is
/// the survivor as it is now (`None`: gone), `involving` every merge of
/// the journal the survivor took part in. (The loser's email is checked
/// when it is written back.)
pub fn unmerge_refusal(
    record: &MergeRecord,
    has_snapshot: bool,
    survivor: Option<&Contact>,
    involving: &[MergeRecord],
) -> Option<UnmergeRefusal> {
    if let Some(at) = record.unmerged_at {
        return Some(UnmergeRefusal::AlreadyUnmerged(at));
    }
    if !has_snapshot {
        return Some(UnmergeRefusal::Cleared(
            record.cleared.unwrap_or(MergeCleared::Purged),
        ));
    }
    // The merges after this one still in effect, newest first.
    let mut later: Vec<&MergeRecord> = involving
        .iter()
        .filter(|e| e.unmerged_at.is_none() && (e.merged_at, e.id) > (record.merged_at, record.id))
        .collect();
    later.sort_by_key(|e| std::cmp::Reverse((e.merged_at, e.id)));
    let Some(current) = survivor else {
        return Some(match later.iter().find(|e| e.loser == record.survivor) {
            Some(e) => UnmergeRefusal::SurvivorMerged {
                merge: e.id,
                into: e.survivor,
            },
            None => UnmergeRefusal::SurvivorDeleted(record.survivor),
        });
    };
    if current.is_erased() {
        return Some(UnmergeRefusal::SurvivorErased(current.id));
    }
    later
        .iter()
        .find(|e| e.survivor == record.survivor)
        .map(|e| UnmergeRefusal::LaterMerge {
            merge: e.id,
            loser: e.loser,
        })
}

/// The loser as an unmerge brings it back: its values before the merge,
/// the version after its last one, `updated_at` now.
pub fn restored_loser(snapshot: &MergeSnapshot, now: Timestamp) -> Contact {
    let mut loser = snapshot.loser.clone();
    loser.version = loser.version.next();
    loser.updated_at = now;
    loser
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Email, NewContact, PersonName, TenantId};

    fn contact(first: &str) -> Contact {
        let new = NewContact::new(
            Email::parse("a@example.com").expect("an email"),
            PersonName::parse(first).expect("a name"),
            PersonName::parse("Lovelace").expect("a name"),
        );
        Contact::create(TenantId::new(), new, chrono::Utc::now())
    }

    fn snapshot(before: &Contact, after: &Contact) -> MergeSnapshot {
        MergeSnapshot {
            loser: before.clone(),
            loser_taggings: vec![],
            survivor_before: before.clone(),
            survivor_after: after.clone(),
            deals: vec![],
            activities: vec![],
            signals: vec![],
            tasks: vec![],
            gained_taggings: vec![],
            loser_freshness: None,
        }
    }

    #[test]
    fn a_field_edited_since_the_merge_is_listed_and_refuses_the_unmerge() {
        let before = contact("Ada");
        let mut after = before.clone();
        after.first_name = PersonName::parse("Augusta").expect("a name");
        let mut current = after.clone();
        current.first_name = PersonName::parse("Countess").expect("a name");
        let snap = snapshot(&before, &after);
        let refused =
            unmerged_survivor(&current, &snap, UnmergeConflicts::Refuse, after.updated_at);
        assert_eq!(
            refused,
            Err(UnmergeRefusal::EditedSince(vec!["first_name".into()]))
        );
        let (next, kept) = unmerged_survivor(
            &current,
            &snap,
            UnmergeConflicts::KeepCurrent,
            after.updated_at,
        )
        .expect("kept");
        assert_eq!(next, None);
        assert_eq!(kept, vec!["first_name".to_string()]);
    }

    #[test]
    fn a_field_still_holding_the_merges_value_gets_its_value_back() {
        let before = contact("Ada");
        let mut after = before.clone();
        after.first_name = PersonName::parse("Augusta").expect("a name");
        let snap = snapshot(&before, &after);
        let (next, kept) =
            unmerged_survivor(&after, &snap, UnmergeConflicts::Refuse, after.updated_at)
                .expect("restored");
        assert_eq!(next.expect("a change").first_name, before.first_name);
        assert!(kept.is_empty());
    }
}

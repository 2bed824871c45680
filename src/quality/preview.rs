//! What a merge of two contacts would do, read and not written
//! ([`merge_preview`]): the survivor as the merge would write it, its
//! changed fields, and what would move from the loser.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{
    Transaction,
    domain::{
        ActivityId, Contact, ContactId, DealId, FieldChange, PageRequest, RecordRef, TagId, TaskId,
    },
    error::Result,
    history::{BOOKKEEPING_FIELDS, contact_values, diff},
    store::{check_merge_pair, merged, shared_now},
};

/// What [`BulkTx::merge_contacts`](crate::store::BulkTx::merge_contacts)
/// would do with the same contacts and policy, as of the preview.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct MergePreview {
    /// The survivor as the merge would write it: its values, version and
    /// links exactly; `updated_at` is the time of the preview (the merge
    /// stamps its own). The survivor as it is when the merge changes none
    /// of its values.
    pub survivor: Contact,
    /// The survivor's fields the merge would change, old and new value (as
    /// the history records them; `version` and `updated_at` left out).
    pub changes: BTreeMap<String, FieldChange>,
    /// The loser's deals, which would move to the survivor (newest first).
    pub deals: Vec<DealId>,
    /// The loser's activities, which would move (newest first).
    pub activities: Vec<ActivityId>,
    /// How many signals of the loser would move.
    pub signals: u64,
    /// The tasks linked to the loser, which would move (newest first).
    pub tasks: Vec<TaskId>,
    /// The loser's tags the survivor does not carry yet, which it would
    /// gain (by name).
    pub tags_gained: Vec<TagId>,
    /// The contact that would be deleted.
    pub loser: Contact,
}

/// Every item of a keyset-paged list, from pages of 1,000.
macro_rules! all_pages {
    ($tx:expr, $list:ident($($arg:expr),*)) => {{
        let mut items = Vec::new();
        let mut request = PageRequest::first(1000);
        loop {
            let page = $tx.$list($($arg,)* &request).await?;
            items.extend(page.items);
            match page.next_cursor {
                Some(cursor) => request = PageRequest::after(1000, cursor),
                None => break,
            }
        }
        items
    }};
}

/// Previews merging contact `loser` into `survivor` under `policy`, in
/// `tx`, writing nothing: the survivor exactly as
/// [`BulkTx::merge_contacts`](crate::store::BulkTx::merge_contacts) would
/// write it (the one definition, [`merged_survivor`](crate::bulk::merged_survivor)),
/// its changed fields and what would move.
///
/// Errors, the merge's own: [`Error::Validation`](crate::Error::Validation)
/// on `loser` when it is the survivor, [`Error::NotFound`](crate::Error::NotFound)
/// naming the survivor when it is missing, else the loser when it is;
/// [`Error::Validation`](crate::Error::Validation) on `survivor` when it is
/// erased, on `metadata` when the merged custom fields are too large.
pub async fn merge_preview<T: Transaction + ?Sized>(
    tx: &mut T,
    survivor: ContactId,
    loser: ContactId,
    policy: crate::bulk::ConflictPolicy,
) -> Result<MergePreview> {
    check_merge_pair(survivor, loser)?;
    let kept = tx
        .get_contact(survivor)
        .await?
        .ok_or_else(|| crate::Error::not_found(crate::Entity::Contact, survivor))?;
    let gone = tx
        .get_contact(loser)
        .await?
        .ok_or_else(|| crate::Error::not_found(crate::Entity::Contact, loser))?;
    let next = merged(&kept, &gone, policy, shared_now())?.unwrap_or_else(|| kept.clone());
    let mut changes = diff(Some(&contact_values(&kept)), Some(&contact_values(&next)));
    changes.retain(|field, _| !BOOKKEEPING_FIELDS.contains(&field.as_str()));
    let deals = all_pages!(tx, list_deals_for_contact(loser))
        .into_iter()
        .map(|d| d.id)
        .collect();
    let activities = all_pages!(tx, timeline(loser))
        .into_iter()
        .map(|a| a.id)
        .collect();
    let signals = tx.list_signals(loser).await?.len() as u64;
    let tasks = all_pages!(tx, tasks_of(RecordRef::Contact(loser)))
        .into_iter()
        .filter(|t| t.contact_id == Some(loser))
        .map(|t| t.id)
        .collect();
    let held: Vec<TagId> = tx
        .tags_of(RecordRef::Contact(survivor))
        .await?
        .into_iter()
        .map(|t| t.id)
        .collect();
    let tags_gained = tx
        .tags_of(RecordRef::Contact(loser))
        .await?
        .into_iter()
        .map(|t| t.id)
        .filter(|id| !held.contains(id))
        .collect();
    Ok(MergePreview {
        survivor: next,
        changes,
        deals,
        activities,
        signals,
        tasks,
        tags_gained,
        loser: gone,
    })
}

//! Audit history: every committed change to a contact or a deal, kept as a
//! version with its validity, its full values, what changed field by field,
//! and who made it, why and on behalf of which request.
//!
//! # The model
//!
//! Each contact and deal has a sequence of [`HistoryEntry`] versions. A
//! version is valid over `[valid_from, valid_to)`: from the moment the
//! change was written until the next change of the same record (`valid_to`
//! is `None` for the version in force now). The versions of one record
//! follow each other without gaps or overlaps — each `valid_to` is the
//! next version's `valid_from` — and `valid_from` increases strictly, even
//! for several changes in one transaction: a version's `valid_from` is the
//! time of the write itself (not of its transaction's start) or one
//! microsecond after the previous version's, whichever is later. On
//! PostgreSQL that time comes from the database server's clock; the
//! records' own timestamps (`created_at`, `updated_at`) come from the
//! application's.
//!
//! - A **creation** records an entry with [`Operation::Created`].
//! - An **update** records an entry with [`Operation::Updated`] when, and
//!   only when, a recorded field other than the bookkeeping fields
//!   `version` and `updated_at` changed. An update that changes nothing
//!   records nothing.
//! - A **deletion** (also a deal deleted because its contact was) records a
//!   tombstone with [`Operation::Deleted`]: from its `valid_from` on, the
//!   record does not exist. Its `values` are the last values the record had.
//! - An **erasure**
//!   ([`Transaction::erase_contact`](crate::store::HistoryTx::erase_contact))
//!   records an entry with [`Operation::Erased`] (see *Privacy* below).
//!
//! [`HistoryEntry::values`] holds the record's recorded fields as a JSON
//! object; [`HistoryEntry::diff`] holds, for every field whose value
//! differs from the previous version's, the old and the new value (for a
//! creation every non-null field with `old: null`; for a deletion every
//! non-null field with `new: null`). Replaying the diffs from the first
//! version gives the values of every later version.
//!
//! ## What is recorded
//!
//! Contacts: `id`, `email`, `first_name`, `last_name`, `company`, `title`,
//! `phone`, `lead_source`, `metadata`, `active`, `created_at`,
//! `updated_at`, `version`. Deals: `id`, `contact_id`, `title`, `amount`
//! (a decimal string, exactly as stored), `currency`, `pipeline`, `stage`,
//! `expected_close_date` (`YYYY-MM-DD`), `won_at`, `lost_at`,
//! `lost_reason`, `created_at`, `updated_at`, `version`. Timestamps are
//! UTC strings with six fractional digits (`2025-01-31T12:00:00.000000Z`);
//! absent values are `null`.
//!
//! **Not recorded:** the lead `score` and any other column that only
//! scoring writes. The score is derived data, rewritten in bulk by the
//! rescoring pipeline and on every logged activity; a change to it alone
//! records nothing, and it appears in no version's values.
//!
//! ## Who, why, for what
//!
//! Every entry carries the acting [`Context`](crate::Context) of its
//! transaction: `actor`, `reason`, `request_id` and `idempotency_key`. On
//! PostgreSQL a change made by SQL outside the library is recorded too,
//! with the context taken from the transaction-local settings `crm.actor`,
//! `crm.reason`, `crm.request_id` and `crm.idempotency_key` (set them with
//! `SET LOCAL` to name who acts), and the actor `db:<database role>` when
//! no actor is set.
//!
//! How the PostgreSQL backend records the versions (triggers on `contacts`
//! and `deals`, the clock it uses, why versions never overlap):
//! `ARCHITECTURE.md` in the repository, section "Audit history".
//!
//! # The three questions
//!
//! - *What happened to this record?* —
//!   [`Transaction::entity_history`](crate::store::HistoryTx::entity_history),
//!   newest first.
//! - *What did it look like at time T?* —
//!   [`Transaction::entity_as_of`](crate::store::HistoryTx::entity_as_of): the
//!   version in force at T, or `None` when the record did not exist then.
//! - *Who changed this field?* —
//!   [`Transaction::field_changes`](crate::store::HistoryTx::field_changes),
//!   newest first, for one record or a whole tenant.
//!
//! [`Transaction::changes_between`](crate::store::HistoryTx::changes_between)
//! lists every change of a tenant in a time range, oldest first, for
//! export and for reading the past. A version's `valid_from` is the time
//! of its write, and it becomes visible at its transaction's commit,
//! which can come later: a window read while that transaction was open
//! misses it, and so does the next window. A sync that must see every
//! change follows the change feed ([`crate::feed`]), which hands out
//! changes in commit order and never skips one; one that reads windows
//! must reread the tail of the last one, by at least the longest
//! transaction's duration.
//!
//! # Retention and privacy
//!
//! [`Transaction::purge_history`](crate::store::HistoryTx::purge_history)
//! deletes the versions that ended before a time (`valid_to < T`) and the
//! tombstones of records deleted before it, keeping every current version:
//! reading a purged past then answers as if nothing had been recorded.
//!
//! [`Transaction::erase_contact`](crate::store::HistoryTx::erase_contact)
//! removes a contact's personal data — `email`, `first_name`, `last_name`,
//! `company`, `title`, `phone`, `metadata` — from its current row and from
//! every one of its versions, keeping the fact that it was erased, by whom
//! and when (an [`Operation::Erased`] entry). The erased contact keeps its
//! id, deals, activities and score, and becomes:
//! `email = erased-<id without hyphens>@erased.invalid` ([`erased_email`]:
//! no other contact can hold it, since the domain `erased.invalid` is
//! refused for every other address), `first_name = last_name = "Erased"`,
//! `company`, `title`, `phone` absent, `metadata = {}`, `active = false`.
//! In every version, each of these fields holds the same placeholder, in
//! the values and on both sides of the diff (so replaying still works).
//! Activities' subjects and bodies are not touched.
//!
//! # Example
//!
//! ```
//! use crm_core::{InMemoryStore, Store, StoreExt, TenantId, Context, Actor, PageRequest};
//! use crm_core::domain::{Currency, Email, Money, NewContact, NewDeal, PersonName, DealTitle, DealPatch};
//! use crm_core::history::{FieldQuery, HistoryEntity};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = InMemoryStore::new();
//! let tenant = TenantId::new();
//! let sales = Context::new(Actor::parse("user:ada")?);
//! let eur = Currency::parse("EUR")?;
//! let crm = store.scope(tenant, &sales);
//! let contact = crm.create_contact(NewContact::new(
//!     Email::parse("grace@example.com")?, PersonName::parse("Grace")?, PersonName::parse("Hopper")?,
//! )).await?;
//! let deal = crm.create_deal(NewDeal::new(
//!     contact.id, DealTitle::parse("Licences")?, Money::parse("50000", eur)?,
//! )).await?;
//!
//! // A webhook lowers the amount.
//! let webhook = Context::new(Actor::parse("integration:billing")?)
//!     .with_reason("invoice corrected")?
//!     .with_idempotency_key("billing:evt_42")?;
//! let mut tx = store.begin(tenant, webhook).await?;
//! let patch = DealPatch { amount: Some(Money::parse("30000", eur)?), ..DealPatch::default() };
//! tx.update_deal(deal.id, deal.version, patch).await?;
//! tx.commit().await?;
//!
//! // Who changed the amount, when and why?
//! let mut tx = store.begin(tenant, sales).await?;
//! let changes = tx.field_changes(&FieldQuery::deals("amount")).await?;
//! let last = &changes.items[0];
//! assert_eq!(last.actor, "integration:billing");
//! assert_eq!(last.idempotency_key.as_deref(), Some("billing:evt_42"));
//! assert_eq!(last.diff["amount"].old, "50000");
//! assert_eq!(last.diff["amount"].new, "30000");
//!
//! // What did the deal look like just before?
//! let before = last.valid_from - chrono::Duration::microseconds(1);
//! let then = tx.entity_as_of(HistoryEntity::Deal(deal.id), before).await?.unwrap();
//! assert_eq!(then.values["amount"], "50000");
//! # tx.commit().await?;
//! # Ok::<_, crm_core::Error>(())
//! # }).unwrap();
//! ```

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::domain::{Company, Contact, ContactId, Deal, RecordRef, Tag, Tagging, Task, Timestamp};
pub use crate::domain::{
    EntityKind, FieldChange, FieldQuery, HistoryEntity, HistoryEntry, HistoryKey, Operation,
};

/// The fields that change with every write and alone do not make a change.
pub const BOOKKEEPING_FIELDS: [&str; 2] = ["version", "updated_at"];

/// The personal fields of a contact that an erasure replaces.
pub const PERSONAL_FIELDS: [&str; 7] = [
    "email",
    "first_name",
    "last_name",
    "company",
    "title",
    "phone",
    "metadata",
];

/// The placeholder email of an erased contact.
pub fn erased_email(id: ContactId) -> String {
    crate::domain::Email::erased(id).as_str().to_string()
}

/// The placeholder name of an erased contact.
pub const ERASED_NAME: &str = "Erased";

/// The values the personal fields of an erased contact hold, in its row
/// and in every version.
pub fn erased_values(id: ContactId) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("email".into(), Value::String(erased_email(id)));
    m.insert("first_name".into(), Value::String(ERASED_NAME.into()));
    m.insert("last_name".into(), Value::String(ERASED_NAME.into()));
    m.insert("company".into(), Value::Null);
    m.insert("title".into(), Value::Null);
    m.insert("phone".into(), Value::Null);
    m.insert("metadata".into(), Value::Object(Map::new()));
    m
}

/// Replaces the personal fields in one version's values and diff by the
/// erasure placeholders.
pub fn scrub(entry: &mut HistoryEntry, placeholders: &Map<String, Value>) {
    if let Value::Object(values) = &mut entry.values {
        for (k, v) in placeholders {
            values.insert(k.clone(), v.clone());
        }
    }
    for (k, change) in entry.diff.iter_mut() {
        if let Some(v) = placeholders.get(k) {
            change.old = v.clone();
            change.new = v.clone();
        }
    }
}

/// A timestamp as the history records it: UTC, six fractional digits.
pub fn format_timestamp(t: Timestamp) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn opt_ts(t: Option<Timestamp>) -> Value {
    t.map_or(Value::Null, |t| Value::String(format_timestamp(t)))
}

fn opt_str(s: Option<&str>) -> Value {
    s.map_or(Value::Null, |s| Value::String(s.to_string()))
}

/// The recorded values of a contact (everything but the score).
pub fn contact_values(c: &Contact) -> Value {
    json!({
        "id": c.id.as_uuid().to_string(),
        "email": c.email.as_str(),
        "first_name": c.first_name.as_str(),
        "last_name": c.last_name.as_str(),
        "company": opt_str(c.company.as_ref().map(|v| v.as_str())),
        "title": opt_str(c.title.as_ref().map(|v| v.as_str())),
        "phone": opt_str(c.phone.as_ref().map(|v| v.as_str())),
        "lead_source": c.lead_source.as_str(),
        "metadata": Value::from(c.metadata.clone()),
        "active": c.active,
        "created_at": format_timestamp(c.created_at),
        "updated_at": format_timestamp(c.updated_at),
        "version": c.version.get(),
        "company_id": opt_str(c.company_id.map(|v| v.as_uuid().to_string()).as_deref()),
        "owner_id": opt_str(c.owner.as_ref().map(|v| v.as_str())),
    })
}

/// The recorded values of a deal.
pub fn deal_values(d: &Deal) -> Value {
    json!({
        "id": d.id.as_uuid().to_string(),
        "contact_id": d.contact_id.as_uuid().to_string(),
        "title": d.title.as_str(),
        "amount": d.amount.amount().to_string(),
        "currency": d.amount.currency().code(),
        "pipeline": d.pipeline.as_str(),
        "stage": d.stage.as_str(),
        "expected_close_date": d
            .expected_close_date
            .map_or(Value::Null, |v| Value::String(v.format("%Y-%m-%d").to_string())),
        "won_at": opt_ts(d.won_at),
        "lost_at": opt_ts(d.lost_at),
        "lost_reason": opt_str(d.lost_reason.as_ref().map(|v| v.as_str())),
        "created_at": format_timestamp(d.created_at),
        "updated_at": format_timestamp(d.updated_at),
        "version": d.version.get(),
        "company_id": opt_str(d.company_id.map(|v| v.as_uuid().to_string()).as_deref()),
        "owner_id": opt_str(d.owner.as_ref().map(|v| v.as_str())),
    })
}

/// The recorded values of a company (as `crm_company_data` in the schema
/// records them: the revenue amount as exact text).
pub fn company_values(c: &Company) -> Value {
    let a = &c.address;
    json!({
        "id": c.id.as_uuid().to_string(),
        "name": c.name.as_str(),
        "domain": opt_str(c.domain.as_ref().map(|v| v.as_str())),
        "industry": opt_str(c.industry.as_ref().map(|v| v.as_str())),
        "employee_count": c.employee_count.map_or(Value::Null, Value::from),
        "revenue_amount": c.annual_revenue.as_ref()
            .map_or(Value::Null, |m| Value::String(m.amount().to_string())),
        "revenue_currency": c.annual_revenue.as_ref()
            .map_or(Value::Null, |m| Value::String(m.currency().code().to_string())),
        "street": opt_str(a.street.as_ref().map(|v| v.as_str())),
        "city": opt_str(a.city.as_ref().map(|v| v.as_str())),
        "region": opt_str(a.region.as_ref().map(|v| v.as_str())),
        "postal_code": opt_str(a.postal_code.as_ref().map(|v| v.as_str())),
        "country": opt_str(a.country.as_ref().map(|v| v.as_str())),
        "metadata": Value::from(c.metadata.clone()),
        "owner_id": opt_str(c.owner.as_ref().map(|v| v.as_str())),
        "created_at": format_timestamp(c.created_at),
        "updated_at": format_timestamp(c.updated_at),
        "version": c.version.get(),
    })
}

/// The recorded values of a tag.
pub fn tag_values(t: &Tag) -> Value {
    json!({
        "id": t.id.as_uuid().to_string(),
        "name": t.name.as_str(),
        "colour": opt_str(t.colour.as_ref().map(|v| v.as_str())),
        "created_at": format_timestamp(t.created_at),
        "updated_at": format_timestamp(t.updated_at),
        "version": t.version.get(),
    })
}

/// The recorded values of a tagging: the tag and the one record carrying it.
pub fn tagging_values(t: &Tagging) -> Value {
    let id = |r: Option<uuid::Uuid>| r.map_or(Value::Null, |u| Value::String(u.to_string()));
    let (contact, company, deal) = match t.record {
        RecordRef::Contact(c) => (Some(c.as_uuid()), None, None),
        RecordRef::Company(c) => (None, Some(c.as_uuid()), None),
        RecordRef::Deal(d) => (None, None, Some(d.as_uuid())),
    };
    json!({
        "id": t.id.as_uuid().to_string(),
        "tag_id": t.tag_id.as_uuid().to_string(),
        "contact_id": id(contact),
        "company_id": id(company),
        "deal_id": id(deal),
        "created_at": format_timestamp(t.created_at),
    })
}

/// The recorded values of a task.
pub fn task_values(t: &Task) -> Value {
    let id = |r: Option<uuid::Uuid>| r.map_or(Value::Null, |u| Value::String(u.to_string()));
    json!({
        "id": t.id.as_uuid().to_string(),
        "title": t.title.as_str(),
        "body": opt_str(t.body.as_ref().map(|v| v.as_str())),
        "due_at": opt_ts(t.due_at),
        "done_at": opt_ts(t.done_at),
        "assignee": opt_str(t.assignee.as_ref().map(|v| v.as_str())),
        "priority": t.priority.as_str(),
        "contact_id": id(t.contact_id.map(|v| v.as_uuid())),
        "company_id": id(t.company_id.map(|v| v.as_uuid())),
        "deal_id": id(t.deal_id.map(|v| v.as_uuid())),
        "created_at": format_timestamp(t.created_at),
        "updated_at": format_timestamp(t.updated_at),
        "version": t.version.get(),
    })
}

/// The field-level diff between two versions' values (`None`: the record
/// did not exist). Fields absent on one side count as `null`; fields equal
/// on both sides are left out.
pub fn diff(old: Option<&Value>, new: Option<&Value>) -> BTreeMap<String, FieldChange> {
    let empty = Map::new();
    let as_map = |v: Option<&Value>| match v {
        Some(Value::Object(m)) => m.clone(),
        _ => empty.clone(),
    };
    let (o, n) = (as_map(old), as_map(new));
    let mut out = BTreeMap::new();
    for key in o.keys().chain(n.keys()) {
        if out.contains_key(key) {
            continue;
        }
        let ov = o.get(key).cloned().unwrap_or(Value::Null);
        let nv = n.get(key).cloned().unwrap_or(Value::Null);
        if ov != nv {
            out.insert(key.clone(), FieldChange { old: ov, new: nv });
        }
    }
    out
}

/// True when a diff changes something beyond the bookkeeping fields, i.e.
/// when it makes a version.
pub fn is_change(diff: &BTreeMap<String, FieldChange>) -> bool {
    diff.keys()
        .any(|k| !BOOKKEEPING_FIELDS.contains(&k.as_str()))
}

/// Applies a version's diff to the previous version's values, giving its
/// values (the inverse of [`diff`]; `null` fields are kept as `null`).
pub fn apply(values: &Value, diff: &BTreeMap<String, FieldChange>) -> Value {
    let mut m = match values {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    for (k, change) in diff {
        m.insert(k.clone(), change.new.clone());
    }
    Value::Object(m)
}

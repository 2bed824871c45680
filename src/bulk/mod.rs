//! Moving contacts in and out in bulk: upsert by email, CSV and JSON Lines
//! import and export, and merging two contacts.
//!
//! The storage step is
//! [`Transaction::upsert_contacts`](crate::store::BulkTx::upsert_contacts):
//! a batch of validated [`NewContact`]s is matched by email (in any
//! casing) against the tenant's contacts; new emails are inserted, known
//! ones updated as a [`ConflictPolicy`] says, and every row's
//! [`UpsertOutcome`] is reported. On PostgreSQL a batch costs a few
//! statements whatever its size, never one per row.
//!
//! Above it, [`import_contacts_csv`] and [`import_contacts_jsonl`] stream a
//! file in batches (bounded memory), validate every row through the domain
//! constructors, and report each rejected row with its number and every
//! field error; [`export_contacts_csv`] and [`export_contacts_jsonl`] page
//! through the store and write as they go. Deals and activities go out and
//! in as JSON Lines or CSV linked to their contacts by email:
//!
//! - [`export_deals_jsonl`], [`import_deals_jsonl`]: deals as JSON Lines.
//! - [`export_deals_csv`], [`import_deals_csv`]: deals as CSV, one column
//!   per JSON field, each row imported as its JSON line would be.
//! - [`export_activities_jsonl`], [`import_activities_jsonl`]: activities
//!   as JSON Lines, linked to the deals of a deal import.
//! - [`export_activities_csv`], [`import_activities_csv`]: activities as
//!   CSV, one column per JSON field, linked to deals the same way.
//!
//! [`Transaction::merge_contacts`](crate::store::BulkTx::merge_contacts)
//! folds a duplicate contact into another: its deals, activities and
//! signals move over, fields are resolved by a [`ConflictPolicy`]
//! ([`merged_survivor`]), and every version written carries the reason
//! `merged <loser> into <survivor>` and the transaction's request id.
//!
//! How the PostgreSQL backend upserts a batch, orders its locks and queues
//! overlapping imports: `ARCHITECTURE.md` in the repository, section "Bulk
//! import and export".
//!
//! # CSV columns
//!
//! Headers are matched ignoring case, spaces, `-` and `_`, with aliases:
//! `email` (`E-mail`, `Email Address`), `first_name` (`First Name`,
//! `Given Name`), `last_name` (`Surname`), `company` (`Organization`),
//! `title` (`Job Title`), `phone` (`Phone Number`, `Mobile`),
//! `lead_source` (`Source`; `import` when absent), `metadata` (a JSON
//! object). The columns an export adds (`id`, `score`, `active`,
//! `created_at`, `updated_at`, `version`) are ignored; any other column
//! becomes a custom field named by its header, holding the cell's text
//! (blank cells are left out).
//!
//! # Spreadsheets
//!
//! CSV exports neutralise every cell a spreadsheet would run as a formula
//! (one starting with `=`, `+`, `-`, `@`, tab or carriage return) with a
//! `'` in front, and CSV imports read such cells back exactly; see
//! [`CsvFormulas`] for the scheme and for writing cells verbatim.
//!
//! # Round trip
//!
//! An export imported into an empty tenant gives the same email, names,
//! company, title, phone, lead source and custom fields. Ids, timestamps,
//! versions, scores and the active flag are exported for information but
//! not imported: the importing store assigns them (a new contact has
//! version 1, score 0 and is active).
//!
//! # Example
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use crm_core::{Context, InMemoryStore, TenantId, bulk::{self, ImportOptions}};
//!
//! let store = InMemoryStore::new();
//! let tenant = TenantId::new();
//! let ctx = Context::system("import");
//! let csv = "E-mail,First Name,Last Name,Shoe size\n\
//!            ada@example.com,Ada,Lovelace,38\n\
//!            not-an-email,,Nobody,\n";
//! let report = bulk::import_contacts_csv(&store, tenant, &ctx, csv.as_bytes(), ImportOptions::default())
//!     .await
//!     .unwrap();
//! assert_eq!(report.inserted, 1);
//! assert_eq!(report.rejected.len(), 1);
//! assert_eq!(report.rejected[0].row, 2);
//!
//! let mut out = Vec::new();
//! bulk::export_contacts_csv(&store, tenant, &ctx, &mut out).await.unwrap();
//! assert!(String::from_utf8(out).unwrap().contains("ada@example.com"));
//! # });
//! ```

use crate::domain::{Contact, ContactId, ContactPatch, Metadata, NewContact};

mod export;
mod formulas;
mod import;
mod related;
mod row;

pub use export::{
    CONTACT_CSV_HEADER, export_contacts_csv, export_contacts_csv_with, export_contacts_jsonl,
};
pub use formulas::CsvFormulas;
pub use import::{
    ImportMode, ImportOptions, ImportReport, RejectedRow, import_contacts_csv,
    import_contacts_jsonl,
};
pub use related::{
    RelatedReport, export_activities_csv, export_activities_csv_with, export_activities_jsonl,
    export_deals_csv, export_deals_csv_with, export_deals_jsonl, import_activities_csv,
    import_activities_csv_with, import_activities_jsonl, import_deals_csv, import_deals_csv_with,
    import_deals_jsonl,
};

/// The largest batch an import takes ([`ImportOptions::batch_size`] and the
/// `batch_size` of the deal and activity imports): 10,000 rows. A batch is
/// what an import holds in memory and writes in one go.
pub const MAX_BATCH_SIZE: usize = 10_000;

/// Checks a batch size a caller gave: 1 to [`MAX_BATCH_SIZE`], else a
/// validation error on `batch_size`.
pub(crate) fn check_batch_size(batch_size: usize) -> crate::Result<usize> {
    if (1..=MAX_BATCH_SIZE).contains(&batch_size) {
        Ok(batch_size)
    } else {
        Err(
            crate::error::ValidationErrors::single(crate::error::FieldError::new(
                "batch_size",
                "out_of_range",
                format!("must be 1 to {MAX_BATCH_SIZE}, got {batch_size}"),
            ))
            .into(),
        )
    }
}

pub use crate::domain::{ConflictPolicy, ImportLock, UpsertOutcome};

/// The patch that applies `incoming` to `existing` under `policy` (email
/// excluded). Backends that compute the merge themselves (PostgreSQL does,
/// in SQL) must give the same result.
pub fn conflict_patch(
    existing: &Contact,
    incoming: &NewContact,
    policy: ConflictPolicy,
) -> ContactPatch {
    fn pick<T: Clone>(
        existing: &Option<T>,
        incoming: &Option<T>,
        policy: ConflictPolicy,
    ) -> Option<T> {
        match policy {
            ConflictPolicy::Incoming => incoming.clone(),
            ConflictPolicy::NonEmptyIncoming => incoming.clone().or_else(|| existing.clone()),
            ConflictPolicy::Existing => existing.clone().or_else(|| incoming.clone()),
        }
    }
    let existing_wins = policy == ConflictPolicy::Existing;
    let metadata = match policy {
        ConflictPolicy::Incoming => incoming.metadata.clone(),
        ConflictPolicy::NonEmptyIncoming if incoming.metadata.is_empty() => {
            existing.metadata.clone()
        }
        ConflictPolicy::NonEmptyIncoming => incoming.metadata.clone(),
        ConflictPolicy::Existing if existing.metadata.is_empty() => incoming.metadata.clone(),
        ConflictPolicy::Existing => existing.metadata.clone(),
    };
    ContactPatch {
        email: None,
        first_name: Some(if existing_wins {
            existing.first_name.clone()
        } else {
            incoming.first_name.clone()
        }),
        last_name: Some(if existing_wins {
            existing.last_name.clone()
        } else {
            incoming.last_name.clone()
        }),
        company: Some(pick(&existing.company, &incoming.company, policy)),
        title: Some(pick(&existing.title, &incoming.title, policy)),
        phone: Some(pick(&existing.phone, &incoming.phone, policy)),
        lead_source: Some(if existing_wins {
            existing.lead_source
        } else {
            incoming.lead_source
        }),
        metadata: Some(metadata),
        active: None,
    }
}

/// The survivor of a merge with `loser`'s values folded in under `policy`
/// (the loser plays the incoming row: [`ConflictPolicy::Existing`] keeps
/// the survivor's values and fills its blanks from the loser). Custom
/// fields are merged key by key, the same side winning a shared key. The
/// survivor keeps its email, score and active flag. `None` when the
/// survivor's values stay as they are — also when the loser is erased: it
/// has no personal data left to give.
///
/// Errors: `survivor` when it is erased (it must hold no personal data);
/// the merged custom fields break the [`Metadata`] limits.
pub fn merged_survivor(
    survivor: &Contact,
    loser: &Contact,
    policy: ConflictPolicy,
    now: crate::domain::Timestamp,
) -> Result<Option<Contact>, crate::error::FieldError> {
    if survivor.is_erased() {
        // Whatever it took from the loser would be personal data on a
        // record that must hold none.
        return Err(crate::error::FieldError::new(
            "survivor",
            "invalid_value",
            "is erased: it holds no personal data, so nothing can be merged into it",
        ));
    }
    if loser.is_erased() {
        // An erased contact has no personal data left to give: its
        // placeholders ("Erased", no company, …) are not values.
        return Ok(None);
    }
    let incoming = NewContact {
        email: loser.email.clone(),
        first_name: loser.first_name.clone(),
        last_name: loser.last_name.clone(),
        company: loser.company.clone(),
        title: loser.title.clone(),
        phone: loser.phone.clone(),
        lead_source: loser.lead_source,
        metadata: loser.metadata.clone(),
    };
    let mut patch = conflict_patch(survivor, &incoming, policy);
    let (base, over) = match policy {
        ConflictPolicy::Existing => (&loser.metadata, &survivor.metadata),
        ConflictPolicy::Incoming | ConflictPolicy::NonEmptyIncoming => {
            (&survivor.metadata, &loser.metadata)
        }
    };
    let mut map = base.as_map().clone();
    map.extend(over.as_map().clone());
    // Both sides are stored values: the rules they were stored under
    // (a merge must not fail on a custom field an earlier version kept).
    patch.metadata = Some(Metadata::parse_stored(serde_json::Value::Object(map))?);
    Ok(survivor.patched(&patch, now))
}

/// The reason a merge records in the history of every record it changes.
pub fn merge_reason(survivor: ContactId, loser: ContactId) -> String {
    format!("merged {loser} into {survivor}")
}

/// The acting context with the merge's reason (after the caller's own).
pub(crate) fn merge_context(
    context: &crate::Context,
    survivor: ContactId,
    loser: ContactId,
) -> crate::Context {
    let reason = merge_reason(survivor, loser);
    let full = match context.reason() {
        Some(r) => format!("{r} ({reason})"),
        None => reason.clone(),
    };
    context
        .clone()
        .with_reason(&full)
        .or_else(|_| context.clone().with_reason(&reason))
        .unwrap_or_else(|_| context.clone())
}

pub(crate) fn same_contact() -> crate::Error {
    crate::error::ValidationErrors::single(crate::error::FieldError::new(
        "loser",
        "invalid_value",
        "a contact cannot be merged into itself",
    ))
    .into()
}

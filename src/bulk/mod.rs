//! Moving contacts in and out in bulk: upsert by email, CSV and JSON Lines
//! import and export, and merging two contacts.
//!
//! The storage step is [`Transaction::upsert_contacts`](crate::store::BulkTx::upsert_contacts):
//! a batch of validated [`NewContact`](crate::domain::NewContact)s is matched by email (in any
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
//! - [`export_signals_jsonl`], [`import_signals_jsonl`],
//!   [`export_signals_csv`], [`import_signals_csv`]: behavioural signals
//!   (contact email, kind, when), each batch recorded with one
//!   [`record_signals`](crate::store::TimelineTx::record_signals) call.
//! - [`export_companies_csv`], [`import_companies_csv`],
//!   [`export_companies_jsonl`], [`import_companies_jsonl`]: companies,
//!   matched by domain, with their tags.
//!
//! Contacts and deals name their company by its domain (`company_domain`)
//! in both directions, so an export of companies, then contacts, then
//! deals, imported in that order into another tenant, links them alike.
//!
//! [`Transaction::merge_contacts`](crate::store::BulkTx::merge_contacts)
//! folds a duplicate contact into another: its deals, activities and
//! signals move over, fields are resolved by a [`ConflictPolicy`]
//! ([`merged_survivor`]), and every version written carries the reason
//! `merged <loser> into <survivor>` and the transaction's request id.
//!
//! A merge can be undone. Each one is written to a merge journal in its
//! own transaction ([`MergeRecord`], listed by
//! [`Transaction::contact_merges`](crate::store::BulkTx::contact_merges)),
//! and [`Transaction::unmerge_contacts`](crate::store::BulkTx::unmerge_contacts)
//! brings the loser back with its id, values, deals, activities, signals,
//! tasks and tags, restores the survivor's fields the merge changed
//! (survivor fields edited since refuse the unmerge or are kept, as
//! [`UnmergeConflicts`] says) and records `unmerged <loser> from
//! <survivor>` ([`unmerge_reason`]). A refusal is an
//! [`Error::UnmergeRefused`](crate::Error::UnmergeRefused) with an
//! [`UnmergeRefusal`] saying why, and writes nothing. Erasing a contact
//! clears the journal rows of its merges, and the history purge those of
//! the merges before its cut-off: neither can be undone afterwards.
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
//! object), `company_domain` (the contact is linked to the company holding
//! that domain; a domain no company holds rejects the row, naming
//! `company_domain`), `owner`, `tags` (`;`-separated names, a `;` or `\`
//! within a name written `\;` or `\\`, as the exports write them; in JSON
//! Lines also an array; a missing tag is created, and each is attached
//! after the upsert; names repeated in another casing count once). A row
//! that gives one field two different values, by two columns or keys
//! naming it (`email` and `E-mail`, `Phone` and `Mobile`), is refused,
//! naming the field (code `duplicate`): which to take is not the import's
//! to guess (a blank cell, or the same value twice, is no conflict; tags
//! columns add up). The columns an
//! export adds (`id`, `company_id`, `score`, `active`, `created_at`,
//! `updated_at`, `version`) are ignored; any other column
//! becomes a custom field named by its header, holding the cell's text
//! (blank cells are left out).
//!
//! # Hostile files
//!
//! A row longer than [`MAX_ROW_BYTES`] is never held: a JSON line is
//! rejected (code `too_long`) and read past, a CSV record ends the import
//! with a validation error on `file`. A JSON object writing one key twice
//! with two values is refused naming the key (code `duplicate`), where a
//! JSON parser would keep the last. Memory stays bounded by the batch
//! size and that limit whatever the file holds.
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
//! company, title, phone, lead source, custom fields, company link (by
//! domain, once the companies are imported), owner and tags. Ids, timestamps,
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

mod activities;
mod companies;
mod deals;
mod export;
mod formulas;
mod import;
mod read;
mod related;
mod row;
mod signals;

pub use activities::{
    export_activities_csv, export_activities_csv_with, export_activities_jsonl,
    import_activities_csv, import_activities_csv_with, import_activities_jsonl,
};
pub use companies::{
    COMPANY_CSV_HEADER, export_companies_csv, export_companies_csv_with, export_companies_jsonl,
    import_companies_csv, import_companies_jsonl,
};
pub use deals::{
    export_deals_csv, export_deals_csv_with, export_deals_jsonl, import_deals_csv,
    import_deals_csv_with, import_deals_jsonl,
};
pub use export::{
    CONTACT_CSV_HEADER, export_contacts_csv, export_contacts_csv_with, export_contacts_jsonl,
};
pub use formulas::CsvFormulas;
pub use import::{
    ImportMode, ImportOptions, ImportReport, RejectedRow, import_contacts_csv,
    import_contacts_jsonl,
};
pub use related::RelatedReport;
pub use signals::{
    export_signals_csv, export_signals_csv_with, export_signals_jsonl, import_signals_csv,
    import_signals_csv_with, import_signals_jsonl,
};

/// The longest row an import reads: 16 MiB (16,777,216 bytes), a JSON
/// line or a CSV record, its line break included (for a CSV record, the
/// blank lines before it too). Every row the domain accepts fits (an
/// activity's body of 100,000 characters, escaped, is at most 1.2 MB),
/// and a row that fits but holds a field over the domain's limits is a
/// rejected row, as before; memory stays bounded by it whatever a file
/// holds, where one endless line was held whole. A longer JSON line is a
/// rejected row (field `row`, code `too_long`), skipped without being
/// held, and the import goes on; a longer CSV record ends the import with
/// a validation error on `file` (code `too_long`, naming the row and its
/// line), since where a quoted record ends cannot be told without reading
/// it: the batches before it stay written.
pub const MAX_ROW_BYTES: usize = 16 * 1024 * 1024;

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

pub(crate) use crate::domain::merge_context;
pub use crate::domain::{
    ConflictPolicy, ImportLock, MergeCleared, MergeId, MergeRecord, UnmergeConflicts,
    UnmergeRefusal, Unmerged, UpsertOutcome, company_merge_reason, conflict_patch, merge_reason,
    merged_survivor, unmerge_reason,
};

//! Data quality over the store contract: duplicate candidates among a
//! tenant's contacts and companies, a preview of what a merge would do, and
//! the enrichment hook ([`enrich`]). Freshness itself is kept by the store
//! on every write ([`FreshnessTx`](crate::store::FreshnessTx)); a merge is
//! undone by [`BulkTx::unmerge_contacts`](crate::store::BulkTx::unmerge_contacts).
//!
//! Duplicate detection reads every contact of a tenant once
//! ([`duplicate_candidates`]), compares only contacts that share a blocking
//! key (the same email domain and a name word, the same phone in E.164, the
//! same name at the same company, the same email local part), and scores
//! each such pair with a confidence 0–1 and its [`DuplicateReason`]s (the
//! model is documented in [`scorer`]). The pairs are read in keyset pages
//! ([`DuplicateScan::page`]) or written as CSV for review in a spreadsheet
//! ([`DuplicateScan::write_csv`]). Before merging a pair,
//! [`merge_preview`] shows the survivor the merge would write and what
//! would move, writing nothing.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use crm_core::{Context, InMemoryStore, PageRequest, Store, TenantId};
//! use crm_core::domain::{NewContactDto, NewContact};
//! use crm_core::quality::{duplicate_candidates, DuplicateOptions, DuplicateReason};
//!
//! let store = InMemoryStore::new();
//! let tenant = TenantId::new();
//! let mut tx = store.begin(tenant, Context::system("docs")).await?;
//! for (email, first, last, phone) in [
//!     ("robert.smith@acme.com", "Robert", "Smith", "(415) 555-0134"),
//!     ("bob.smith@acme.com", "Bob", "Smith", "+1 415 555 0134"),
//!     ("jane.doe@acme.com", "Jane", "Doe", "415 555 0199"),
//! ] {
//!     let dto = NewContactDto {
//!         email: Some(email.into()),
//!         first_name: Some(first.into()),
//!         last_name: Some(last.into()),
//!         phone: Some(phone.into()),
//!         ..Default::default()
//!     };
//!     tx.create_contact(NewContact::try_from(dto)?).await?;
//! }
//! tx.commit().await?;
//!
//! let scan = duplicate_candidates(&store, tenant, &DuplicateOptions::default()).await?;
//! let page = scan.page(&PageRequest::first(50))?;
//! assert_eq!(page.items.len(), 1);
//! assert!(page.items[0].reasons.contains(&DuplicateReason::SamePhone));
//! assert!(page.items[0].reasons.contains(&DuplicateReason::Nickname));
//! # Ok::<(), crm_core::Error>(())
//! # }).unwrap();
//! ```

mod companies;
mod duplicates;
pub mod enrich;
mod keys;
mod preview;
pub mod scorer;

pub use companies::{
    CompanyDuplicatePair, CompanyDuplicateReason, CompanyDuplicateScan, duplicate_companies,
};
pub use duplicates::{
    DEFAULT_MAX_BLOCK_SIZE, DEFAULT_THRESHOLD, DuplicateOptions, DuplicatePair, DuplicateReason,
    DuplicateScan, MAX_BLOCK_SIZE_LIMIT, duplicate_candidates,
};
pub use keys::{canonical_first, e164, fold, local_part_key};
pub use preview::{MergePreview, merge_preview};

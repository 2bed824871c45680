//! # crm-core
//!
//! An embeddable CRM core for Rust applications: contacts whose emails are
//! validated and unique per tenant, deals that move through a stage machine,
//! an activity timeline and behavioural signals — on PostgreSQL in
//! production (feature `postgres`) and in memory for tests and small tools.
//!
//! - [`domain`] holds the validated types. A value of one of them is valid
//!   by construction; inbound JSON goes through a DTO and `TryFrom`, which
//!   reports every field error at once.
//! - [`Store`] opens a [`Transaction`] for one tenant and one acting
//!   [`Context`]; its documentation states the contract every backend
//!   honours. [`StoreExt::scope`] gives host code a [`Scope`]: the store
//!   seen by one tenant acting as one context, every operation as one call.
//! - [`InMemoryStore`] is always available; `PostgresStore` comes with the
//!   `postgres` feature.
//! - [`scoring`] is lead scoring: a pure model (weights per signal kind,
//!   half-life decay, a score from 0 to 100 with the signals that explain
//!   it), batch rescoring of a tenant, and always-current live scores.
//! - [`history`] keeps every change of a contact or deal — who, when, why,
//!   field by field — and answers what a record looked like at any time.
//! - [`idempotency`] runs the handler of an inbound webhook or event
//!   exactly once, however often the provider delivers it.
//! - [`bulk`] imports and exports contacts, deals and activities as CSV
//!   and JSON Lines, upserts by email and merges duplicate contacts.
//! - Every failure is an [`Error`] whose variant is a kind to branch on:
//!   [`Error::Validation`] lists every bad field, [`Error::DuplicateEmail`]
//!   names the contact holding the email, [`Error::Conflict`] means "reload
//!   and retry", [`Error::InvalidTransition`] says why a deal cannot move.
//!
//! How the crate is built inside — its layers, how the PostgreSQL backend
//! keeps the contract (locks, triggers, statements, round trips) and why —
//! is described in `ARCHITECTURE.md` in the repository; measurements are
//! in `BENCHMARKS.md`.
//!
//! # Feature flags
//!
//! - `postgres`: `PostgresStore`, on tokio-postgres with a connection pool
//!   and embedded migrations.
//! - `conformance`: the shared test suite every [`Store`] backend must pass,
//!   for your own backend too.
//! - `hubspot`: module `hubspot`, a HubSpot CRM client (rate limits,
//!   retries, a circuit breaker, batch operations, incremental pull, signed
//!   webhooks); `hubspot-fake` adds `hubspot::fake`, a local HubSpot-shaped
//!   server for tests, examples and benchmarks.
//!
//! `examples/quickstart.rs` (`cargo run --example quickstart`) is a guided
//! tour; the shortest use looks like this:
//!
//! ```
//! use crm_core::{InMemoryStore, StoreExt, TenantId, Context, Actor};
//! use crm_core::domain::{NewContact, NewContactDto};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = InMemoryStore::new();
//! let ctx = Context::new(Actor::parse("user:ada").unwrap());
//! let crm = store.scope(TenantId::new(), &ctx);
//!
//! let dto: NewContactDto = serde_json::from_str(
//!     r#"{"email": "Grace@Example.com", "first_name": "Grace", "last_name": "Hopper"}"#,
//! ).unwrap();
//! let contact = crm.create_contact(NewContact::try_from(dto)?).await?;
//!
//! // Emails are unique per tenant, in any casing.
//! let again = NewContact::try_from(NewContactDto {
//!     email: Some("grace@example.COM".into()),
//!     first_name: Some("G".into()),
//!     last_name: Some("H".into()),
//!     ..Default::default()
//! })?;
//! let err = crm.create_contact(again).await.unwrap_err();
//! assert!(matches!(err, crm_core::Error::DuplicateEmail { existing_id, .. } if existing_id == contact.id));
//! # Ok::<_, crm_core::Error>(())
//! # }).unwrap();
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![warn(
    unreachable_pub,
    missing_debug_implementations,
    rustdoc::broken_intra_doc_links
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod bulk;
pub mod domain;
pub mod feed;
pub mod history;
pub mod idempotency;
pub mod prelude;
pub mod quality;
pub mod scoring;
pub mod store;

#[cfg(feature = "conformance")]
#[cfg_attr(docsrs, doc(cfg(feature = "conformance")))]
pub mod conformance;

#[cfg(feature = "hubspot")]
#[cfg_attr(docsrs, doc(cfg(feature = "hubspot")))]
pub mod hubspot;

use domain::error;
pub use domain::error::{
    BoxError, CommitOutcomeUnknown, Entity, Error, ErrorKind, FieldError, Result, ValidationErrors,
};
pub use domain::{Actor, Context, TenantId, Version};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use store::postgres::PostgresStore;
/// The README's code, run as a doctest so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub use store::{
    CompanyQuery, CompanySort, ContactQuery, ContactSort, Cursor, DealQuery, DynStore, Page,
    PageRequest, PipelineSummary, Scope, Store, StoreExt, TagFilter, Transaction,
    memory::InMemoryStore,
};

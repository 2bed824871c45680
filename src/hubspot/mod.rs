//! A HubSpot CRM client (feature `hubspot`): configuration checked whole,
//! a rate-limited, retrying HTTP client with a circuit breaker, the CRM
//! operations a sync needs, and signed inbound webhooks.
//!
//! - [`HubSpotConfig`] comes from the environment ([`HubSpotConfig::from_env`],
//!   variables in [`config::vars`]) or a builder. Every problem is reported
//!   at once. The token ([`AccessToken`]) goes in the `Authorization: Bearer`
//!   header only — never in a URL, a log field, `Debug` output or an error —
//!   and a legacy API key (hapikey, retired in 2022) is refused.
//! - [`HubSpotClient`] (reqwest, rustls on ring) spends a client-side budget
//!   before every request — the rolling 10-second budget, the daily budget,
//!   and the search endpoints' per-second limit — so that the client never
//!   causes a 429 itself. It retries 429s, 5xx answers, timeouts and
//!   connection failures with jittered exponential backoff, waiting as long
//!   as `Retry-After` says, or as the 429's `policyName` implies (the
//!   rolling window; a second for search), and never retrying the daily
//!   limit. A circuit breaker per client opens after consecutive failures
//!   and fails calls fast ([`HubSpotError::CircuitOpen`]) until one probe
//!   succeeds; [`HubSpotClient::breaker_state`] reads it.
//! - Operations: [`HubSpotClient::upsert_contacts_by_email`] and
//!   [`HubSpotClient::batch_upsert`] (100 per call, each input's outcome in
//!   [`BatchOutcome`]), [`HubSpotClient::batch_update`] (by HubSpot id),
//!   [`HubSpotClient::batch_read`], [`HubSpotClient::batch_create`] (with
//!   associations), [`HubSpotClient::create_deals`] (associated with
//!   contact and company, the association types asked for once),
//!   [`HubSpotClient::search`] (bounds checked before sending) and
//!   [`HubSpotClient::pull_modified_since`], an incremental pull that stays
//!   correct past the search's 10,000-result ceiling and when thousands of
//!   records share one last-modified time.
//! - [`webhook`]: [`webhook::verify_signature_v3`], [`webhook::parse_events`]
//!   and [`webhook::run_guarded`], which runs each event once through the
//!   [`IdempotencyGuard`](crate::idempotency::IdempotencyGuard).
//! - `fake` (feature `hubspot-fake`): a local HubSpot-shaped server for
//!   tests, examples and benchmarks.
//!
//! ```no_run
//! use crm_core::hubspot::{HubSpotClient, HubSpotConfig, ObjectType, UpsertInput};
//!
//! # async fn run() -> Result<(), crm_core::hubspot::HubSpotError> {
//! let client = HubSpotClient::new(HubSpotConfig::from_env()?)?;
//! let outcome = client
//!     .upsert_contacts_by_email(&[
//!         UpsertInput::new("grace@example.com").with("firstname", "Grace"),
//!     ])
//!     .await?;
//! for (index, why) in outcome.rejected() {
//!     eprintln!("input {index} refused: {:?}", why.message);
//! }
//!
//! let since = chrono::Utc::now() - chrono::TimeDelta::hours(1);
//! let mut pull = client.pull_modified_since(ObjectType::Contacts, since, &["email"]);
//! while let Some(page) = pull.next_page().await? {
//!     println!("{} changed contacts", page.len());
//! }
//! let next_window_start = pull.window();
//! # let _ = next_window_start;
//! # Ok(())
//! # }
//! ```

mod breaker;
mod client;
pub mod config;
mod create;
mod error;
mod limiter;
mod objects;
mod search;
pub mod sync;
pub mod webhook;

#[cfg(feature = "hubspot-fake")]
#[cfg_attr(docsrs, doc(cfg(feature = "hubspot-fake")))]
pub mod fake;

pub use breaker::BreakerState;
pub use client::HubSpotClient;
pub use config::{AccessToken, HubSpotConfig, HubSpotConfigBuilder};
pub use create::{AssociationType, AssociationTypeIds, CreateInput, DealCreate};
pub use error::{ApiErrorBody, HubSpotError, RateLimitPolicy};
pub use objects::{
    BATCH_LIMIT, BatchOutcome, BatchRead, HubSpotRecord, InputError, InputOutcome, ObjectType,
    UpsertInput, parse_hubspot_time,
};
pub use search::{
    Filter, FilterGroup, FilterOperator, MAX_FILTER_GROUPS, MAX_FILTERS, MAX_FILTERS_PER_GROUP,
    MAX_PAGE_SIZE, MAX_RESULTS_PER_QUERY, ModifiedSincePull, PULL_OVERLAP, SearchPage,
    SearchRequest, Sort, SortDirection,
};
pub use sync::{HubSpotSync, SyncError, SyncFailure, SyncOptions, SyncReport};

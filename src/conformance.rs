//! The conformance suite every [`Store`](crate::Store) backend must pass:
//! one plain `pub async fn` per point of the contract documented on
//! [`Store`](crate::Store).
//!
//! Each function takes a `&`[`DynStore`], works in a fresh random
//! [`TenantId`] of its own and panics with a message naming the broken
//! contract point. Because every function keeps to its own tenant, all of
//! them can share one store (one database) and run in parallel.
//!
//! # Running the suite against your own backend
//!
//! Enable the `conformance` feature in your dev-dependencies, and let
//! [`conformance_tests!`](crate::conformance_tests) write one
//! `#[tokio::test]` per suite function:
//!
//! ```toml
//! [dev-dependencies]
//! crm-core = { version = "0.1", features = ["conformance"] }
//! tokio = { version = "1", features = ["macros", "rt-multi-thread"] }
//! ```
//!
//! ```ignore
//! // tests/my_store.rs
//! use std::sync::Arc;
//! use crm_core::Store;
//!
//! async fn my_store() -> Arc<dyn Store> {
//!     Arc::new(my_crate::MyStore::connect("…").await.unwrap())
//! }
//!
//! crm_core::conformance_tests!(async { my_store().await });
//! ```
//!
//! The store must know the default pipeline (with at least two open
//! stages, as the built-in one has). Every other pipeline it is given is
//! exercised too: [`test_pipelines`] is a set worth configuring, as it
//! orders its stages differently from the default one.
//!
//! Concurrent transactions are opened only from independent futures, none
//! of which waits for another while it holds a transaction, so a backend
//! that serializes transactions (as the in-memory one does) passes too.
//! Timestamps are compared only between separate transactions, a few
//! milliseconds apart: a backend may stamp every write of a transaction
//! with the transaction's start time (as PostgreSQL's `now()` does).
//!
//! [`SUITE`] lists every function by name and [`run_all`] runs them all at
//! once on one store. You may also call the functions one by one, for
//! instance to run a single point while debugging:
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = crm_core::InMemoryStore::new();
//! crm_core::conformance::get_by_email_finds_the_contact_in_any_casing(&store).await;
//! # });
//! ```

use std::{collections::BTreeMap, fmt, str::FromStr};

use chrono::{Duration, Utc};
use futures_util::future::{join, join_all};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    ContactQuery, ContactSort, Cursor, DynStore, Entity, Error, Page, PageRequest, Result,
    StoreExt, TenantId, Transaction, Version,
    domain::{
        Activity, ActivityKind, Company, Contact, ContactId, ContactPatch, Context, Currency, Deal,
        DealId, DealPatch, DealTitle, Direction, Email, JobTitle, LeadSource, LostReason, Metadata,
        Money, NewActivity, NewContact, NewDeal, NewSignal, PersonName, Phone, Pipeline,
        PipelineKey, Pipelines, Score, SignalKind, StageDef, StageKey, StageKind, Subject,
        Timestamp, truncate_to_micros,
    },
    store::{CurrencyTotal, MAX_PAGE_SIZE},
};

// ------------------------------------------------------------------------
// The macro
// ------------------------------------------------------------------------

/// Writes one `#[tokio::test]` per function of the
/// [conformance suite](crate::conformance), each running it against the
/// store that `$make_store` gives.
///
/// `$make_store` is an expression evaluated anew in every test that is a
/// future (typically an `async { … }` block); its output is anything that
/// dereferences to a [`Store`](crate::Store): `Arc<dyn Store>`,
/// `Box<dyn Store>`, `Arc<MyStore>`, …. Every suite function works in a
/// tenant of its own, so the future may hand out one shared store.
///
/// The tests run on tokio's multi-threaded runtime, one runtime per test.
/// A store whose connections are bound to the runtime that opened them
/// (tokio-postgres spawns a task per connection) should therefore be
/// built per test; the tests may still share one database.
///
/// The calling crate needs `tokio` with the `macros` and `rt-multi-thread`
/// features among its dev-dependencies.
///
/// # Example
///
/// ```ignore
/// // tests/my_store.rs of a crate that implements its own backend
/// #![cfg(test)]
/// use std::sync::Arc;
/// use crm_core::Store;
///
/// async fn store() -> Arc<dyn Store> {
///     // A fresh store per test over a shared database; each test
///     // uses its own tenant, so they do not see each other.
///     Arc::new(my_backend::MyStore::connect("postgres://localhost/test").await.unwrap())
/// }
///
/// crm_core::conformance_tests!(async { store().await });
/// ```
///
/// Against the in-memory store:
///
/// ```ignore
/// use std::sync::Arc;
/// use crm_core::{InMemoryStore, Store};
///
/// crm_core::conformance_tests!(async { Arc::new(InMemoryStore::new()) as Arc<dyn Store> });
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($make_store:expr) => {
        $crate::__conformance_suite!(__conformance_tests_expand; $make_store);
    };
}

/// Lists the suite's functions for a callback macro (the one list the
/// macro and [`SUITE`](crate::conformance::SUITE) are built from).
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_suite {
    ($callback:ident; $($args:tt)*) => {
        $crate::$callback! { [$($args)*]
            create_then_get_returns_the_same_contact,
            get_of_a_missing_contact_returns_none,
            get_by_email_finds_the_contact_in_any_casing,
            creating_a_duplicate_email_in_another_casing_is_refused,
            changing_the_email_to_one_another_contact_holds_is_refused_and_changes_nothing,
            update_with_the_current_version_bumps_version_and_updated_at,
            update_with_a_stale_version_is_a_conflict_and_changes_nothing,
            a_patch_that_changes_nothing_keeps_the_version,
            changing_only_the_casing_of_the_own_email_is_allowed,
            deactivate_marks_the_contact_inactive_once,
            deleting_a_contact_deletes_its_deals_activities_and_signals,
            operations_on_a_missing_contact_or_deal_are_not_found,
            concurrent_creates_of_one_email_in_fifty_casings_let_exactly_one_win,
            concurrent_updates_at_the_same_version_let_exactly_one_win,
            another_tenant_cannot_see_or_change_a_tenants_records,
            another_tenant_may_hold_the_same_email,
            rollback_leaves_no_trace_of_new_records,
            rollback_restores_changed_and_deleted_records,
            dropping_a_transaction_without_commit_leaves_no_trace,
            a_failed_operation_writes_nothing_and_the_transaction_goes_on,
            a_transaction_sees_its_own_writes_before_commit,
            uncommitted_writes_are_invisible_to_other_transactions,
            search_filters_by_email_name_and_company_prefix_case_insensitively,
            search_filters_by_lead_source_score_and_active,
            search_filters_by_created_and_updated_ranges_including_start_excluding_end,
            search_filters_by_metadata_containment,
            search_combines_filters_with_and,
            every_sort_is_a_total_order_with_id_tie_break_in_the_sort_direction,
            paging_visits_every_match_exactly_once_in_order,
            paging_is_stable_when_records_are_inserted_between_pages,
            lists_reject_a_limit_outside_1_to_1000,
            search_rejects_a_garbage_cursor_and_a_cursor_of_another_list,
            create_deal_starts_in_the_first_open_stage_of_the_default_pipeline,
            create_deal_for_a_missing_contact_is_not_found,
            create_deal_rejects_unknown_pipeline_unknown_stage_and_closed_stage,
            update_deal_checks_the_version,
            a_deal_moves_through_the_open_stages_to_won_and_is_stamped,
            losing_a_deal_needs_a_reason_and_stamps_lost_at,
            a_closed_deal_leaves_its_stage_only_through_reopen,
            reopen_clears_the_stamps_and_only_takes_closed_deals_into_open_stages,
            refused_moves_are_invalid_transitions_and_unknown_stages_validation_errors,
            a_stale_version_on_move_or_reopen_is_a_conflict,
            every_configured_pipeline_is_honoured,
            deal_lists_are_newest_first_and_page_through_every_deal,
            deleting_a_deal_unlinks_its_activities,
            pipeline_summary_sums_per_stage_and_currency_exactly,
            pipeline_summary_of_an_unknown_pipeline_is_a_validation_error,
            log_activity_keeps_occurred_at_or_uses_the_time_of_logging,
            log_activity_refuses_a_deal_of_another_contact_and_missing_records,
            timeline_is_newest_first_and_pages_through_every_activity,
            timeline_and_signals_of_a_missing_contact_are_empty,
            signals_are_listed_oldest_first,
            recording_a_signal_for_a_missing_contact_is_not_found,
            write_scores_counts_real_changes_and_ignores_unknown_and_foreign_ids,
            write_scores_keeps_version_and_updated_at_and_feeds_the_score_sort,
            write_scores_gives_a_repeated_id_its_last_score_and_counts_it_once,
            a_deal_amount_change_is_found_by_the_field_query_with_actor_key_and_time,
            as_of_gives_the_values_in_force_and_none_outside_the_life_of_the_record,
            deleting_a_contact_records_its_tombstone_and_its_deals_tombstones,
            a_no_op_update_and_a_score_write_record_nothing,
            several_updates_in_one_transaction_give_ordered_contiguous_versions,
            a_rolled_back_or_dropped_transaction_leaves_no_history,
            twenty_concurrent_updates_leave_twenty_contiguous_versions,
            purge_deletes_ended_versions_and_keeps_the_current_ones,
            erasure_removes_personal_data_everywhere_and_is_recorded,
            history_is_invisible_to_another_tenant,
            tenant_changes_are_listed_oldest_first_within_the_range,
            fifty_concurrent_deliveries_of_one_event_run_the_handler_once,
            a_panicking_handler_leaves_no_key_and_no_rows_and_the_retry_runs,
            the_same_key_with_another_payload_is_a_fingerprint_mismatch,
            a_permanent_failure_is_stored_and_replayed_and_a_transient_one_is_not,
            a_duplicate_that_may_not_wait_gets_key_in_use_while_the_first_runs,
            an_expired_key_runs_again_and_purge_deletes_only_expired_keys,
            the_same_key_in_two_tenants_or_two_sources_is_independent,
            lookup_and_list_show_the_stored_records_newest_first,
            completing_an_unclaimed_key_fails_and_commits_nothing,
            claim_complete_and_commit_store_the_returned_record,
            a_duplicates_handler_never_commits_a_write_under_either_claim_timing,
            a_null_result_is_stored_and_replayed,
            a_retention_beyond_the_calendar_keeps_the_record_until_the_year_9999,
            a_key_released_by_rollback_is_free_to_a_claim_that_may_not_wait,
            a_key_held_by_a_dropped_transaction_is_released_to_a_claim_that_waits,
            a_no_wait_delivery_right_after_a_replay_or_a_panic_is_not_refused,
            upsert_inserts_new_emails_and_updates_known_ones_in_any_casing,
            upserting_the_same_rows_again_reports_them_unchanged,
            each_conflict_policy_picks_its_values,
            a_batch_holding_one_email_twice_inserts_then_updates,
            concurrent_upserts_of_overlapping_batches_leave_one_contact_per_email,
            a_rolled_back_upsert_leaves_nothing,
            upserts_are_recorded_in_history_and_unchanged_rows_are_not,
            merging_moves_deals_activities_and_signals_and_deletes_the_loser,
            a_merge_is_recorded_in_history_under_one_request_id,
            merging_into_itself_or_with_a_missing_contact_fails_and_changes_nothing,
            a_merge_adds_the_losers_live_score_to_the_survivors,
            merging_an_erased_contact_takes_none_of_its_placeholders,
            merging_into_an_erased_contact_is_refused_and_changes_nothing,
            every_cased_character_and_its_other_casings_are_one_email,
            name_sorted_paging_visits_every_contact_once_whatever_the_casing,
            only_an_erased_contact_holds_its_placeholder_email,
            a_search_prefix_longer_than_any_value_is_refused_naming_it,
            rescoring_writes_only_changed_scores_and_reports_counts,
            a_dry_run_writes_nothing_and_previews_the_top,
            rescoring_scans_only_active_contacts_within_the_lookback,
            rescoring_at_a_fixed_now_is_deterministic_across_chunk_sizes,
            logging_a_meeting_raises_the_live_rank_at_once_and_a_rollback_undoes_it,
            the_displayed_live_score_is_what_explain_says,
            a_rebuild_stores_the_recomputed_live_state,
            times_outside_years_1_to_9999_are_refused_naming_the_field,
            the_first_and_last_instants_of_years_1_to_9999_are_kept_exactly,
            a_leap_second_is_kept_as_the_next_second_on_every_backend,
            a_nul_in_a_text_parameter_is_refused_naming_it,
            an_activity_body_set_directly_is_checked_like_the_builder_checks_it,
            a_cursor_of_another_list_is_refused_by_every_list,
            a_cursor_of_the_same_list_with_other_parameters_is_refused,
            a_cursor_holding_an_out_of_range_position_is_refused_by_every_list,
            a_result_nested_too_deep_is_refused_without_overflowing_the_stack,
            metadata_numbers_are_kept_exactly_or_refused,
            live_score_logs_give_a_repeated_id_its_last_value_and_count_it_once,
            a_rescoring_top_beyond_the_limit_is_refused_naming_top,
        }
    };
}

/// Expands the suite's list into tests (see [`conformance_tests!`]).
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests_expand {
    ([$make_store:expr] $($name:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let store = $make_store.await;
                let store: &$crate::DynStore = &*store;
                $crate::conformance::$name(store).await;
            }
        )*
    };
}

/// Expands the suite's list into [`SUITE`].
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_suite_table {
    ([] $($name:ident),* $(,)?) => {
        /// Every function of the suite with its name, in the order of the
        /// contract: for running the whole suite from one test or a tool.
        pub const SUITE: &[(&str, SuiteFn)] = &[
            $( (stringify!($name), |store| ::std::boxed::Box::pin($name(store))) ),*
        ];
    };
}

/// A suite function as a function pointer (see [`SUITE`]).
pub type SuiteFn =
    for<'a> fn(&'a DynStore) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

crate::__conformance_suite!(__conformance_suite_table;);

/// Runs every function of the suite against `store`, all at once.
pub async fn run_all(store: &DynStore) {
    join_all(SUITE.iter().map(|(_, f)| f(store))).await;
}

async fn cursor_of(store: &DynStore, t: TenantId, sort: ContactSort) -> Cursor {
    search(
        store,
        t,
        &ContactQuery::new().sort(sort).page(PageRequest::first(2)),
    )
    .await
    .next_cursor
    .expect("eleven contacts have a second page")
}

/// Pipelines worth giving a store under test besides the default one: an
/// `enterprise` pipeline whose lost stage comes before its won stage, with
/// stage keys of its own and one (`proposal`) it shares with the default
/// pipeline, so that a backend mixing pipelines up is caught.
pub fn test_pipelines() -> Pipelines {
    let stage = |key: &str, label: &str, p: u8, kind: StageKind| {
        StageDef::new(
            StageKey::parse(key).expect("a valid stage key"),
            label,
            p,
            kind,
        )
    };
    let enterprise = Pipeline::new(
        PipelineKey::parse("enterprise").expect("a valid pipeline key"),
        "Enterprise",
        vec![
            stage("discovery", "Discovery", 10, StageKind::Open),
            stage("proposal", "Proposal", 35, StageKind::Open),
            stage("procurement", "Procurement", 85, StageKind::Open),
            stage("lost", "Lost", 0, StageKind::Lost),
            stage("signed", "Signed", 100, StageKind::Won),
        ],
    )
    .expect("the enterprise test pipeline is valid");
    Pipelines::default().with(enterprise)
}

// ------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------

fn ctx() -> Context {
    Context::system("conformance")
}

#[track_caller]
fn ok<T>(result: Result<T>, what: &str) -> T {
    match result {
        Ok(v) => v,
        Err(e) => panic!("{what}: unexpected error: {e} ({e:?})"),
    }
}

#[track_caller]
fn expect_not_found<T: fmt::Debug>(
    result: Result<T>,
    entity: Entity,
    id: impl fmt::Display,
    what: &str,
) {
    let id = id.to_string();
    match result {
        Err(Error::NotFound { entity: e, id: i }) if e == entity && i == id => {}
        other => panic!("{what}: expected NotFound for {entity} {id}, got {other:?}"),
    }
}

#[track_caller]
fn expect_validation<T: fmt::Debug>(result: Result<T>, field: &str, what: &str) {
    match result {
        Err(Error::Validation(errors)) if errors.for_field(field).next().is_some() => {}
        other => panic!("{what}: expected a validation error on `{field}`, got {other:?}"),
    }
}

#[track_caller]
fn expect_duplicate<T: fmt::Debug>(result: Result<T>, existing: ContactId, what: &str) {
    match result {
        Err(Error::DuplicateEmail { existing_id, .. }) if existing_id == existing => {}
        other => panic!("{what}: expected DuplicateEmail naming {existing}, got {other:?}"),
    }
}

#[track_caller]
fn expect_conflict<T: fmt::Debug>(
    result: Result<T>,
    entity: Entity,
    id: impl fmt::Display,
    expected: i64,
    actual: i64,
    what: &str,
) {
    let id = id.to_string();
    match result {
        Err(Error::Conflict {
            entity: e,
            id: i,
            expected: x,
            actual: a,
        }) if e == entity && i == id && x == expected && a == actual => {}
        other => panic!(
            "{what}: expected Conflict on {entity} {id} (expected {expected}, actual {actual}), got {other:?}"
        ),
    }
}

#[track_caller]
fn expect_invalid_transition<T: fmt::Debug>(
    result: Result<T>,
    from: &StageKey,
    to: &StageKey,
    what: &str,
) {
    match result {
        Err(Error::InvalidTransition { from: f, to: t, .. }) if &f == from && &t == to => {}
        other => {
            panic!("{what}: expected InvalidTransition from {from} to {to}, got {other:?}")
        }
    }
}

#[track_caller]
fn assert_micros(t: Timestamp, what: &str) {
    assert_eq!(
        t.timestamp_subsec_nanos() % 1000,
        0,
        "{what}: timestamps are kept at microsecond precision, got {t:?}"
    );
}

/// The exact JSON form of a record: unlike `==`, it tells emails that
/// differ only in casing apart.
fn exact<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("records serialize to JSON")
}

#[track_caller]
fn assert_same<T: Serialize + fmt::Debug>(actual: &T, expected: &T, what: &str) {
    assert_eq!(
        exact(actual),
        exact(expected),
        "{what}: records differ\n actual: {actual:?}\n expected: {expected:?}"
    );
}

fn email(s: &str) -> Email {
    Email::parse(s).expect("a valid email")
}

fn person(s: &str) -> PersonName {
    PersonName::parse(s).expect("a valid name")
}

fn stage(s: &str) -> StageKey {
    StageKey::parse(s).expect("a valid stage key")
}

fn score(v: i64) -> Score {
    Score::new(v).expect("a valid score")
}

fn money(amount: &str, currency: &str) -> Money {
    Money::parse(amount, Currency::parse(currency).expect("a valid currency"))
        .expect("a valid amount")
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).expect("a valid decimal")
}

fn new_contact(address: &str, first: &str, last: &str) -> NewContact {
    NewContact::new(email(address), person(first), person(last))
}

fn new_deal(contact: ContactId, title: &str, amount: &str, currency: &str) -> NewDeal {
    NewDeal::new(
        contact,
        DealTitle::parse(title).expect("a valid title"),
        money(amount, currency),
    )
}

fn lost_reason(s: &str) -> LostReason {
    LostReason::parse(s).expect("a valid lost reason")
}

fn metadata(v: Value) -> Metadata {
    Metadata::parse(v).expect("valid metadata")
}

fn all(sort: ContactSort) -> ContactQuery {
    ContactQuery::new()
        .sort(sort)
        .page(PageRequest::first(MAX_PAGE_SIZE))
}

/// Waits until the clock has moved on by a few milliseconds, so that the
/// next transaction gets a later timestamp than the previous one.
async fn tick() {
    let start = Utc::now();
    while Utc::now() - start < Duration::milliseconds(3) {
        tokio::task::yield_now().await;
    }
}

async fn begin(store: &DynStore, tenant: TenantId) -> Box<dyn Transaction> {
    ok(store.begin(tenant, ctx()).await, "begin a transaction")
}

/// `with_tx!(store, tenant, async |tx| body)`: a future that runs `body`
/// with `tx: &mut dyn Transaction` in a transaction of its own, commits
/// and yields the body's value. (A macro rather than a function taking an
/// async closure, so that the suite's futures stay `Send`.)
macro_rules! with_tx {
    ($store:expr, $tenant:expr, async |$tx:ident| $body:expr) => {
        async {
            let mut boxed = begin($store, $tenant).await;
            let out = {
                let $tx: &mut dyn Transaction = &mut *boxed;
                $body
            };
            ok(boxed.commit().await, "commit");
            out
        }
    };
}

async fn create(store: &DynStore, tenant: TenantId, new: NewContact) -> Contact {
    ok(
        store.create_contact(tenant, &ctx(), new).await,
        "create a contact",
    )
}

async fn get(store: &DynStore, tenant: TenantId, id: ContactId) -> Option<Contact> {
    ok(store.get_contact(tenant, &ctx(), id).await, "get a contact")
}

async fn get_deal(store: &DynStore, tenant: TenantId, id: DealId) -> Option<Deal> {
    with_tx!(store, tenant, async |tx| ok(
        tx.get_deal(id).await,
        "get a deal"
    ))
    .await
}

async fn deal(store: &DynStore, tenant: TenantId, new: NewDeal) -> Deal {
    ok(
        store.create_deal(tenant, &ctx(), new).await,
        "create a deal",
    )
}

async fn search(store: &DynStore, tenant: TenantId, q: &ContactQuery) -> Page<Contact> {
    ok(
        store.search_contacts(tenant, &ctx(), q).await,
        "search contacts",
    )
}

async fn search_ids(store: &DynStore, tenant: TenantId, q: &ContactQuery) -> Vec<ContactId> {
    let page = search(store, tenant, q).await;
    assert!(
        page.next_cursor.is_none(),
        "a page that holds every match has no next cursor"
    );
    page.items.iter().map(|c| c.id).collect()
}

async fn timeline_all(store: &DynStore, tenant: TenantId, contact: ContactId) -> Vec<Activity> {
    ok(
        store
            .timeline(tenant, &ctx(), contact, &PageRequest::first(MAX_PAGE_SIZE))
            .await,
        "read a timeline",
    )
    .items
}

/// `collect_pages!(limit, async |page| fetch)`: a future that follows
/// cursors through a list (`fetch` gives the `Page` for `page:
/// PageRequest`), checks the page shapes and yields every item in order.
macro_rules! collect_pages {
    ($limit:expr, async |$page:ident| $fetch:expr) => {
        async {
            let limit: u32 = $limit;
            let mut out = Vec::new();
            let mut request = PageRequest::first(limit);
            let mut rounds = 0;
            loop {
                rounds += 1;
                assert!(rounds < 10_000, "paging with limit {limit} never ended");
                let $page: PageRequest = request.clone();
                let p = $fetch;
                assert!(
                    p.items.len() <= limit as usize,
                    "a page holds at most `limit` ({limit}) items, got {}",
                    p.items.len()
                );
                out.extend(p.items);
                match p.next_cursor {
                    Some(c) => {
                        assert_eq!(
                            out.len() % limit as usize,
                            0,
                            "only a full page has a next cursor (limit {limit})"
                        );
                        request = PageRequest::after(limit, c);
                    }
                    None => break out,
                }
            }
        }
    };
}

/// The stages of the store's default pipeline the suite moves deals along.
struct Stages {
    pipeline: Pipeline,
    open: Vec<StageKey>,
    won: StageKey,
    lost: StageKey,
}

fn default_stages(store: &DynStore) -> Stages {
    let key = PipelineKey::default_pipeline();
    let pipeline = store
        .pipelines()
        .get(&key)
        .expect("the store knows the `default` pipeline")
        .clone();
    stages_of(&pipeline)
}

fn stages_of(pipeline: &Pipeline) -> Stages {
    let of = |kind: StageKind| -> Vec<StageKey> {
        pipeline
            .stages()
            .iter()
            .filter(|s| s.kind == kind)
            .map(|s| s.key.clone())
            .collect()
    };
    let open = of(StageKind::Open);
    assert!(
        open.len() >= 2,
        "the suite needs a pipeline with at least two open stages, {} has {}",
        pipeline.key(),
        open.len()
    );
    Stages {
        pipeline: pipeline.clone(),
        open,
        won: of(StageKind::Won).remove(0),
        lost: of(StageKind::Lost).remove(0),
    }
}

/// Everything a tenant's records look like through every read of the
/// contract, as exact JSON: two equal snapshots mean nothing changed.
async fn snapshot(
    store: &DynStore,
    tenant: TenantId,
    contacts: &[ContactId],
    deals: &[DealId],
) -> Value {
    let stages = default_stages(store);
    with_tx!(store, tenant, async |tx| {
        let mut out = serde_json::Map::new();
        for sort in [
            ContactSort::CreatedAsc,
            ContactSort::ScoreDesc,
            ContactSort::NameAsc,
            ContactSort::UpdatedDesc,
        ] {
            let page = ok(tx.search_contacts(&all(sort)).await, "search");
            out.insert(format!("search {sort:?}"), exact(&page.items));
        }
        for id in contacts {
            let c = ok(tx.get_contact(*id).await, "get contact");
            if let Some(c) = &c {
                let by_email = ok(tx.get_contact_by_email(&c.email).await, "get by email");
                out.insert(format!("by email {id}"), exact(&by_email));
            }
            out.insert(format!("contact {id}"), exact(&c));
            let first = PageRequest::first(MAX_PAGE_SIZE);
            let timeline = ok(tx.timeline(*id, &first).await, "timeline");
            out.insert(format!("timeline {id}"), exact(&timeline.items));
            let signals = ok(tx.list_signals(*id).await, "signals");
            out.insert(format!("signals {id}"), exact(&signals));
            let deals = ok(tx.list_deals_for_contact(*id, &first).await, "deals");
            out.insert(format!("deals of {id}"), exact(&deals.items));
        }
        for id in deals {
            let d = ok(tx.get_deal(*id).await, "get deal");
            out.insert(format!("deal {id}"), exact(&d));
        }
        for s in stages.pipeline.stages() {
            let page = ok(
                tx.list_deals_in_stage(
                    stages.pipeline.key(),
                    &s.key,
                    &PageRequest::first(MAX_PAGE_SIZE),
                )
                .await,
                "deals in stage",
            );
            out.insert(format!("stage {}", s.key), exact(&page.items));
        }
        let summary = ok(
            tx.pipeline_summary(stages.pipeline.key()).await,
            "pipeline summary",
        );
        out.insert("summary".into(), exact(&summary));
        Value::Object(out)
    })
    .await
}

/// The part of a snapshot about the given records (without the
/// tenant-wide searches, stage lists and summary).
fn records_only(snapshot: Value) -> Value {
    match snapshot {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(k, _)| {
                    !(k.starts_with("search") || k.starts_with("stage") || k == "summary")
                })
                .collect(),
        ),
        other => other,
    }
}

/// A contact with every field filled in.
fn full_contact(address: &str) -> NewContact {
    NewContact {
        email: email(address),
        first_name: person("Grace"),
        last_name: person("Hopper"),
        company: Some(Company::parse("US Navy — Bureau of Ships ⚓").expect("a valid company")),
        title: Some(JobTitle::parse("Rear Admiral").expect("a valid title")),
        phone: Some(Phone::parse("+1 (555) 010-2030 x42").expect("a valid phone")),
        lead_source: LeadSource::Referral,
        metadata: metadata(json!({
            "plan": "pro",
            "seats": 42,
            "beta": true,
            "tags": ["cobol", "compilers"],
            "address": {"city": "Arlington", "zip": "22201"},
            "note": "Zoë ☕ 日本",
            "deep": {"a": {"b": {"c": [1, null, 2.5, "x"]}}}
        })),
    }
}

// ------------------------------------------------------------------------
// Contacts
// ------------------------------------------------------------------------

/// A created contact reads back equal in every field, at version 1 with
/// score 0, active, `created_at == updated_at` at microsecond precision.
pub async fn create_then_get_returns_the_same_contact(store: &DynStore) {
    let t = TenantId::new();
    let input = full_contact("Grace.Hopper@Navy.example.COM");
    let before = truncate_to_micros(Utc::now()) - Duration::seconds(5);
    let created = create(store, t, input.clone()).await;
    let after = Utc::now() + Duration::seconds(5);

    assert_eq!(created.tenant_id, t, "the contact belongs to the tenant");
    assert_eq!(
        created.email.as_str(),
        "Grace.Hopper@Navy.example.COM",
        "the email is kept as written"
    );
    assert_eq!(created.first_name, input.first_name);
    assert_eq!(created.last_name, input.last_name);
    assert_eq!(created.company, input.company);
    assert_eq!(created.title, input.title);
    assert_eq!(created.phone, input.phone);
    assert_eq!(created.lead_source, input.lead_source);
    assert_eq!(created.metadata, input.metadata);
    assert_eq!(
        created.version,
        Version::FIRST,
        "a new contact is version 1"
    );
    assert_eq!(created.score, Score::MIN, "a new contact has score 0");
    assert!(created.active, "a new contact is active");
    assert_eq!(
        created.created_at, created.updated_at,
        "a new contact's updated_at is its created_at"
    );
    assert!(
        before <= created.created_at && created.created_at <= after,
        "created_at is the time of creation, got {}",
        created.created_at
    );
    assert_micros(created.created_at, "created_at");

    let read = get(store, t, created.id).await.expect("the contact exists");
    assert_same(&read, &created, "get returns the created contact");

    let minimal = create(store, t, new_contact("min@example.com", "Min", "Imal")).await;
    let read = get(store, t, minimal.id).await.expect("the contact exists");
    assert_same(
        &read,
        &minimal,
        "a contact without optional fields reads back",
    );
    assert!(read.company.is_none() && read.title.is_none() && read.phone.is_none());
    assert!(read.metadata.is_empty(), "no metadata reads back as empty");
    assert_eq!(read.lead_source, LeadSource::Organic);
}

/// Reading an id that was never created gives `None`.
pub async fn get_of_a_missing_contact_returns_none(store: &DynStore) {
    let t = TenantId::new();
    assert!(
        get(store, t, ContactId::new()).await.is_none(),
        "a missing contact is None"
    );
    let by_email = ok(
        store
            .get_contact_by_email(t, &ctx(), &email("nobody@example.com"))
            .await,
        "get by email",
    );
    assert!(by_email.is_none(), "a missing email is None");
    assert!(
        get_deal(store, t, DealId::new()).await.is_none(),
        "a missing deal is None"
    );
}

/// `get_contact_by_email` finds the contact whatever the casing asked for,
/// and returns the email as it was written.
pub async fn get_by_email_finds_the_contact_in_any_casing(store: &DynStore) {
    let t = TenantId::new();
    let c = create(
        store,
        t,
        new_contact("Ada.Lovelace@Example.com", "Ada", "L"),
    )
    .await;
    create(store, t, new_contact("other@example.com", "O", "T")).await;
    for asked in [
        "Ada.Lovelace@Example.com",
        "ada.lovelace@example.com",
        "ADA.LOVELACE@EXAMPLE.COM",
        "aDa.lOvElAcE@eXaMpLe.CoM",
    ] {
        let found = ok(
            store.get_contact_by_email(t, &ctx(), &email(asked)).await,
            "get by email",
        )
        .unwrap_or_else(|| panic!("{asked} finds the contact"));
        assert_same(&found, &c, &format!("get by email {asked}"));
    }
}

/// Creating a contact whose email another contact holds in another casing
/// is `DuplicateEmail` naming the first contact, and creates nothing.
pub async fn creating_a_duplicate_email_in_another_casing_is_refused(store: &DynStore) {
    let t = TenantId::new();
    let first = create(store, t, new_contact("Dup@Example.com", "First", "One")).await;
    for again in ["Dup@Example.com", "dup@example.com", "DUP@EXAMPLE.COM"] {
        let r = store
            .create_contact(t, &ctx(), new_contact(again, "Second", "Two"))
            .await;
        expect_duplicate(r, first.id, &format!("creating {again} again"));
    }
    let everyone = search_ids(store, t, &all(ContactSort::CreatedAsc)).await;
    assert_eq!(
        everyone,
        vec![first.id],
        "refused duplicates create nothing"
    );
    assert_same(
        &get(store, t, first.id).await.expect("still there"),
        &first,
        "the holder is unchanged",
    );
}

/// Changing a contact's email to one another contact holds (in any casing)
/// is `DuplicateEmail` naming the holder, and changes neither contact.
pub async fn changing_the_email_to_one_another_contact_holds_is_refused_and_changes_nothing(
    store: &DynStore,
) {
    let t = TenantId::new();
    let a = create(store, t, new_contact("holder@example.com", "Hol", "Der")).await;
    let b = create(store, t, new_contact("mover@example.com", "Mo", "Ver")).await;
    let patch = ContactPatch {
        email: Some(email("HOLDER@example.COM")),
        first_name: Some(person("Changed")),
        ..ContactPatch::default()
    };
    let r = store
        .update_contact(t, &ctx(), b.id, b.version, patch)
        .await;
    expect_duplicate(r, a.id, "taking another contact's email");
    assert_same(
        &get(store, t, b.id).await.expect("b exists"),
        &b,
        "the refused update changed nothing",
    );
    assert_same(
        &get(store, t, a.id).await.expect("a exists"),
        &a,
        "the holder is unchanged",
    );
    let holder = ok(
        store
            .get_contact_by_email(t, &ctx(), &email("holder@example.com"))
            .await,
        "get by email",
    );
    assert_eq!(
        holder.map(|c| c.id),
        Some(a.id),
        "the email still leads to a"
    );
}

/// An update at the current version applies the patch, adds one to the
/// version and moves `updated_at` forward, keeping `created_at`.
pub async fn update_with_the_current_version_bumps_version_and_updated_at(store: &DynStore) {
    let t = TenantId::new();
    let c = create(store, t, full_contact("update@example.com")).await;
    tick().await;
    let patch = ContactPatch {
        first_name: Some(person("Amazing")),
        company: Some(None),
        lead_source: Some(LeadSource::Partner),
        metadata: Some(metadata(json!({"plan": "enterprise"}))),
        ..ContactPatch::default()
    };
    let updated = ok(
        store
            .update_contact(t, &ctx(), c.id, c.version, patch)
            .await,
        "update",
    );
    assert_eq!(
        updated.version,
        Version::new(2),
        "the version goes up by one"
    );
    assert!(
        updated.updated_at > c.updated_at,
        "updated_at moves forward: {} -> {}",
        c.updated_at,
        updated.updated_at
    );
    assert_micros(updated.updated_at, "updated_at");
    assert_eq!(updated.created_at, c.created_at, "created_at stays");
    assert_eq!(updated.first_name.as_str(), "Amazing");
    assert_eq!(updated.company, None, "Some(None) clears the company");
    assert_eq!(updated.lead_source, LeadSource::Partner);
    assert_eq!(updated.metadata, metadata(json!({"plan": "enterprise"})));
    assert_eq!(updated.last_name, c.last_name, "unpatched fields stay");
    assert_eq!(updated.phone, c.phone, "unpatched fields stay");
    assert_eq!(updated.title, c.title, "unpatched fields stay");
    assert_same(
        &get(store, t, c.id).await.expect("exists"),
        &updated,
        "the update is stored",
    );

    let again = ok(
        store
            .update_contact(
                t,
                &ctx(),
                c.id,
                updated.version,
                ContactPatch {
                    last_name: Some(person("Hopper-Smith")),
                    ..ContactPatch::default()
                },
            )
            .await,
        "second update",
    );
    assert_eq!(again.version, Version::new(3));
}

/// An update at a stale version is `Conflict { expected, actual }` and
/// changes nothing.
pub async fn update_with_a_stale_version_is_a_conflict_and_changes_nothing(store: &DynStore) {
    let t = TenantId::new();
    let c = create(store, t, new_contact("stale@example.com", "Sta", "Le")).await;
    let v2 = ok(
        store
            .update_contact(
                t,
                &ctx(),
                c.id,
                c.version,
                ContactPatch {
                    first_name: Some(person("Second")),
                    ..ContactPatch::default()
                },
            )
            .await,
        "first update",
    );
    for stale in [Version::FIRST, Version::new(7)] {
        let r = store
            .update_contact(
                t,
                &ctx(),
                c.id,
                stale,
                ContactPatch {
                    first_name: Some(person("Lost")),
                    email: Some(email("lost@example.com")),
                    ..ContactPatch::default()
                },
            )
            .await;
        expect_conflict(
            r,
            Entity::Contact,
            c.id,
            stale.get(),
            2,
            "update at a stale version",
        );
        assert_same(
            &get(store, t, c.id).await.expect("exists"),
            &v2,
            "a conflicting update changes nothing",
        );
    }
    let lost = ok(
        store
            .get_contact_by_email(t, &ctx(), &email("lost@example.com"))
            .await,
        "get by email",
    );
    assert!(lost.is_none(), "the refused email was not taken");
}

/// A patch that changes nothing (empty, or setting the current values)
/// returns the contact as it is: same version, same `updated_at`.
pub async fn a_patch_that_changes_nothing_keeps_the_version(store: &DynStore) {
    let t = TenantId::new();
    let c = create(store, t, full_contact("noop@example.com")).await;
    tick().await;
    let same_values = ContactPatch {
        email: Some(c.email.clone()),
        first_name: Some(c.first_name.clone()),
        company: Some(c.company.clone()),
        lead_source: Some(c.lead_source),
        metadata: Some(c.metadata.clone()),
        active: Some(true),
        ..ContactPatch::default()
    };
    for (label, patch) in [
        ("an empty patch", ContactPatch::default()),
        ("a patch of the current values", same_values),
    ] {
        let out = ok(
            store
                .update_contact(t, &ctx(), c.id, c.version, patch)
                .await,
            label,
        );
        assert_same(&out, &c, &format!("{label} returns the contact as it is"));
        assert_same(
            &get(store, t, c.id).await.expect("exists"),
            &c,
            &format!("{label} stores nothing"),
        );
    }
}

/// A contact may change the casing of its own email: that is a change
/// (new version), and the new casing is what is stored.
pub async fn changing_only_the_casing_of_the_own_email_is_allowed(store: &DynStore) {
    let t = TenantId::new();
    let c = create(store, t, new_contact("casing@example.com", "Ca", "Sing")).await;
    let out = ok(
        store
            .update_contact(
                t,
                &ctx(),
                c.id,
                c.version,
                ContactPatch {
                    email: Some(email("Casing@Example.COM")),
                    ..ContactPatch::default()
                },
            )
            .await,
        "changing the casing of the own email",
    );
    assert_eq!(
        out.email.as_str(),
        "Casing@Example.COM",
        "the new casing is kept"
    );
    assert_eq!(out.version, Version::new(2), "a casing change is a change");
    let found = ok(
        store
            .get_contact_by_email(t, &ctx(), &email("casing@example.com"))
            .await,
        "get by email",
    )
    .expect("still found in any casing");
    assert_same(&found, &out, "the stored contact has the new casing");
}

/// Deactivating marks the contact inactive with a new version; doing it
/// again is a no-op that keeps the version.
pub async fn deactivate_marks_the_contact_inactive_once(store: &DynStore) {
    let t = TenantId::new();
    let c = create(store, t, new_contact("deact@example.com", "De", "Act")).await;
    tick().await;
    let out = with_tx!(store, t, async |tx| {
        ok(tx.deactivate_contact(c.id).await, "deactivate")
    })
    .await;
    assert!(!out.active, "the contact is inactive");
    assert_eq!(out.version, Version::new(2), "deactivating is a change");
    assert!(out.updated_at > c.updated_at, "updated_at moves forward");
    assert_same(
        &get(store, t, c.id).await.expect("exists"),
        &out,
        "the deactivation is stored",
    );
    let again = with_tx!(store, t, async |tx| {
        ok(tx.deactivate_contact(c.id).await, "deactivate again")
    })
    .await;
    assert_same(
        &again,
        &out,
        "deactivating an inactive contact changes nothing",
    );
}

/// Deleting a contact deletes its deals, activities and signals (and
/// nothing of other contacts); it returns `true`, then `false`.
pub async fn deleting_a_contact_deletes_its_deals_activities_and_signals(store: &DynStore) {
    let t = TenantId::new();
    let stages = default_stages(store);
    let gone = create(store, t, new_contact("gone@example.com", "Go", "Ne")).await;
    let kept = create(store, t, new_contact("kept@example.com", "Ke", "Pt")).await;
    let (gone_deal, kept_deal) = with_tx!(store, t, async |tx| {
        let gd = ok(
            tx.create_deal(new_deal(gone.id, "Gone deal", "10", "EUR"))
                .await,
            "deal",
        );
        let kd = ok(
            tx.create_deal(new_deal(kept.id, "Kept deal", "20", "EUR"))
                .await,
            "deal",
        );
        for (c, d) in [(gone.id, gd.id), (kept.id, kd.id)] {
            ok(
                tx.log_activity(NewActivity::new(c, ActivityKind::Call).deal(d))
                    .await,
                "activity",
            );
            ok(
                tx.log_activity(NewActivity::new(c, ActivityKind::Note))
                    .await,
                "activity",
            );
            ok(
                tx.record_signal(NewSignal::new(c, SignalKind::PAGE_VIEW))
                    .await,
                "signal",
            );
        }
        (gd, kd)
    })
    .await;
    let kept_before = snapshot(store, t, &[kept.id], &[kept_deal.id]).await;

    let deleted = with_tx!(store, t, async |tx| {
        ok(tx.delete_contact(gone.id).await, "delete")
    })
    .await;
    assert!(deleted, "deleting an existing contact returns true");

    assert!(
        get(store, t, gone.id).await.is_none(),
        "the contact is gone"
    );
    let by_email = ok(
        store.get_contact_by_email(t, &ctx(), &gone.email).await,
        "get by email",
    );
    assert!(by_email.is_none(), "its email leads nowhere");
    assert!(
        get_deal(store, t, gone_deal.id).await.is_none(),
        "its deal is gone"
    );
    assert!(
        timeline_all(store, t, gone.id).await.is_empty(),
        "its activities are gone"
    );
    with_tx!(store, t, async |tx| {
        let signals = ok(tx.list_signals(gone.id).await, "signals");
        assert!(signals.is_empty(), "its signals are gone");
        let deals = ok(
            tx.list_deals_for_contact(gone.id, &PageRequest::first(10))
                .await,
            "deals",
        );
        assert!(deals.items.is_empty(), "its deals are not listed");
        let in_stage = ok(
            tx.list_deals_in_stage(
                stages.pipeline.key(),
                &stages.open[0],
                &PageRequest::first(10),
            )
            .await,
            "deals in stage",
        );
        assert_eq!(
            in_stage.items.iter().map(|d| d.id).collect::<Vec<_>>(),
            vec![kept_deal.id],
            "only the other contact's deal is left in the stage"
        );
    })
    .await;
    assert_eq!(
        records_only(snapshot(store, t, &[kept.id], &[kept_deal.id]).await),
        records_only(kept_before),
        "the other contact and its records are untouched"
    );

    let again = with_tx!(store, t, async |tx| {
        ok(tx.delete_contact(gone.id).await, "delete again")
    })
    .await;
    assert!(!again, "deleting a missing contact returns false");
    let reused = create(store, t, new_contact("GONE@example.com", "Back", "Again")).await;
    assert_ne!(reused.id, gone.id, "the freed email can be used again");
}

/// Updates, moves and logs on records that do not exist are `NotFound`
/// naming the missing record; deletes return `false`.
pub async fn operations_on_a_missing_contact_or_deal_are_not_found(store: &DynStore) {
    let t = TenantId::new();
    let stages = default_stages(store);
    let missing = ContactId::new();
    let missing_deal = DealId::new();
    let real = create(store, t, new_contact("real@example.com", "Re", "Al")).await;
    with_tx!(store, t, async |tx| {
        expect_not_found(
            tx.update_contact(
                missing,
                Version::FIRST,
                ContactPatch {
                    first_name: Some(person("X")),
                    ..ContactPatch::default()
                },
            )
            .await,
            Entity::Contact,
            missing,
            "update a missing contact",
        );
        expect_not_found(
            tx.deactivate_contact(missing).await,
            Entity::Contact,
            missing,
            "deactivate a missing contact",
        );
        assert!(
            !ok(tx.delete_contact(missing).await, "delete"),
            "deleting a missing contact returns false"
        );
        expect_not_found(
            tx.update_deal(
                missing_deal,
                Version::FIRST,
                DealPatch {
                    title: Some(DealTitle::parse("X").expect("title")),
                    ..DealPatch::default()
                },
            )
            .await,
            Entity::Deal,
            missing_deal,
            "update a missing deal",
        );
        expect_not_found(
            tx.move_deal(missing_deal, Version::FIRST, &stages.open[1], None)
                .await,
            Entity::Deal,
            missing_deal,
            "move a missing deal",
        );
        expect_not_found(
            tx.reopen_deal(missing_deal, Version::FIRST, &stages.open[0])
                .await,
            Entity::Deal,
            missing_deal,
            "reopen a missing deal",
        );
        assert!(
            !ok(tx.delete_deal(missing_deal).await, "delete deal"),
            "deleting a missing deal returns false"
        );
        expect_not_found(
            tx.log_activity(NewActivity::new(real.id, ActivityKind::Note).deal(missing_deal))
                .await,
            Entity::Deal,
            missing_deal,
            "log an activity on a missing deal",
        );
    })
    .await;
    assert_same(
        &get(store, t, real.id).await.expect("exists"),
        &real,
        "nothing changed",
    );
}

/// Fifty transactions racing to create one email in fifty casings: exactly
/// one wins, the 49 others get `DuplicateEmail` naming the winner.
pub async fn concurrent_creates_of_one_email_in_fifty_casings_let_exactly_one_win(
    store: &DynStore,
) {
    let t = TenantId::new();
    let base = "racer@example.com";
    let casings: Vec<String> = (0..50u32)
        .map(|i| {
            base.chars()
                .enumerate()
                .map(|(j, ch)| {
                    if j < 6 && (i >> j) & 1 == 1 {
                        ch.to_ascii_uppercase()
                    } else {
                        ch
                    }
                })
                .collect()
        })
        .collect();
    let context = ctx();
    let results = join_all(
        casings
            .iter()
            .map(|e| store.create_contact(t, &context, new_contact(e, "Race", "Runner"))),
    )
    .await;
    let winners: Vec<&Contact> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one racer creates the contact, got {}",
        winners.len()
    );
    let winner = winners[0].id;
    for r in &results {
        match r {
            Ok(_) => {}
            Err(Error::DuplicateEmail { existing_id, .. }) => {
                assert_eq!(*existing_id, winner, "every loser is told the winner's id")
            }
            Err(e) => panic!("a losing racer gets DuplicateEmail, got {e:?}"),
        }
    }
    let everyone = search_ids(store, t, &all(ContactSort::CreatedAsc)).await;
    assert_eq!(
        everyone,
        vec![winner],
        "exactly one contact exists afterwards"
    );
}

/// Ten transactions racing to update one contact at the same version:
/// exactly one wins, the others get `Conflict`; no update is lost.
pub async fn concurrent_updates_at_the_same_version_let_exactly_one_win(store: &DynStore) {
    let t = TenantId::new();
    let c = create(
        store,
        t,
        new_contact("contended@example.com", "Con", "Tended"),
    )
    .await;
    let context = ctx();
    let results = join_all((0..10).map(|i| {
        store.update_contact(
            t,
            &context,
            c.id,
            c.version,
            ContactPatch {
                first_name: Some(person(&format!("Writer{i}"))),
                ..ContactPatch::default()
            },
        )
    }))
    .await;
    let winners: Vec<&Contact> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "exactly one update at version 1 wins");
    for r in &results {
        if let Err(e) = r {
            assert!(
                matches!(
                    e,
                    Error::Conflict {
                        expected: 1,
                        actual: 2,
                        ..
                    }
                ),
                "a losing update is a Conflict (expected 1, actual 2), got {e:?}"
            );
        }
    }
    let stored = get(store, t, c.id).await.expect("exists");
    assert_same(&stored, winners[0], "the winner's update is stored");
}

// ------------------------------------------------------------------------
// Tenancy
// ------------------------------------------------------------------------

/// Another tenant using a tenant's ids and emails in every operation finds
/// nothing, changes nothing and gets `NotFound`, `None`, empty lists or
/// `false`; the first tenant's records are unchanged afterwards.
pub async fn another_tenant_cannot_see_or_change_a_tenants_records(store: &DynStore) {
    let a = TenantId::new();
    let b = TenantId::new();
    let stages = default_stages(store);
    let ca = create(store, a, full_contact("owner@example.com")).await;
    let (open_deal, won_deal) = with_tx!(store, a, async |tx| {
        let d1 = ok(
            tx.create_deal(new_deal(ca.id, "Open deal", "100", "EUR"))
                .await,
            "deal",
        );
        let d2 = ok(
            tx.create_deal(new_deal(ca.id, "Won deal", "200", "USD"))
                .await,
            "deal",
        );
        let d2 = ok(
            tx.move_deal(d2.id, d2.version, &stages.won, None).await,
            "win",
        );
        ok(
            tx.log_activity(NewActivity::new(ca.id, ActivityKind::Meeting).deal(d1.id))
                .await,
            "activity",
        );
        ok(
            tx.record_signal(NewSignal::new(ca.id, SignalKind::DEMO_REQUEST))
                .await,
            "signal",
        );
        ok(tx.write_scores(&[(ca.id, score(55))]).await, "score");
        (d1, d2)
    })
    .await;
    let before = snapshot(store, a, &[ca.id], &[open_deal.id, won_deal.id]).await;

    let cb = create(store, b, new_contact("someone@example.com", "Some", "One")).await;
    let first = PageRequest::first(MAX_PAGE_SIZE);
    with_tx!(store, b, async |tx| {
        assert!(
            ok(tx.get_contact(ca.id).await, "get").is_none(),
            "get_contact of another tenant's id is None"
        );
        assert!(
            ok(tx.get_contact_by_email(&ca.email).await, "get by email").is_none(),
            "get_contact_by_email of another tenant's email is None"
        );
        expect_not_found(
            tx.update_contact(
                ca.id,
                ca.version,
                ContactPatch {
                    first_name: Some(person("Hijacked")),
                    ..ContactPatch::default()
                },
            )
            .await,
            Entity::Contact,
            ca.id,
            "update another tenant's contact",
        );
        expect_not_found(
            tx.deactivate_contact(ca.id).await,
            Entity::Contact,
            ca.id,
            "deactivate another tenant's contact",
        );
        assert!(
            !ok(tx.delete_contact(ca.id).await, "delete"),
            "deleting another tenant's contact returns false"
        );
        let found = ok(
            tx.search_contacts(&all(ContactSort::CreatedAsc)).await,
            "search",
        );
        assert_eq!(
            found.items.iter().map(|c| c.id).collect::<Vec<_>>(),
            vec![cb.id],
            "search sees only the tenant's own contacts"
        );
        let q = ContactQuery {
            email_prefix: Some("owner".into()),
            ..all(ContactSort::ScoreDesc)
        };
        assert!(
            ok(tx.search_contacts(&q).await, "search").items.is_empty(),
            "search by another tenant's email prefix finds nothing"
        );
        expect_not_found(
            tx.create_deal(new_deal(ca.id, "Sneaky", "1", "EUR")).await,
            Entity::Contact,
            ca.id,
            "create a deal on another tenant's contact",
        );
        assert!(
            ok(tx.get_deal(open_deal.id).await, "get deal").is_none(),
            "get_deal of another tenant's deal is None"
        );
        expect_not_found(
            tx.update_deal(
                open_deal.id,
                open_deal.version,
                DealPatch {
                    title: Some(DealTitle::parse("Hijacked").expect("title")),
                    ..DealPatch::default()
                },
            )
            .await,
            Entity::Deal,
            open_deal.id,
            "update another tenant's deal",
        );
        expect_not_found(
            tx.move_deal(open_deal.id, open_deal.version, &stages.open[1], None)
                .await,
            Entity::Deal,
            open_deal.id,
            "move another tenant's deal",
        );
        expect_not_found(
            tx.reopen_deal(won_deal.id, won_deal.version, &stages.open[0])
                .await,
            Entity::Deal,
            won_deal.id,
            "reopen another tenant's deal",
        );
        assert!(
            !ok(tx.delete_deal(open_deal.id).await, "delete deal"),
            "deleting another tenant's deal returns false"
        );
        assert!(
            ok(tx.list_deals_for_contact(ca.id, &first).await, "deals")
                .items
                .is_empty(),
            "another tenant's contact has no deals here"
        );
        for s in stages.pipeline.stages() {
            let page = ok(
                tx.list_deals_in_stage(stages.pipeline.key(), &s.key, &first)
                    .await,
                "deals in stage",
            );
            assert!(
                page.items.is_empty(),
                "stage {} lists none of another tenant's deals",
                s.key
            );
        }
        let summary = ok(
            tx.pipeline_summary(stages.pipeline.key()).await,
            "pipeline summary",
        );
        assert!(
            summary.stages.iter().all(|s| s.totals.is_empty()),
            "the pipeline summary counts none of another tenant's deals: {summary:?}"
        );
        expect_not_found(
            tx.log_activity(NewActivity::new(ca.id, ActivityKind::Note))
                .await,
            Entity::Contact,
            ca.id,
            "log an activity on another tenant's contact",
        );
        expect_not_found(
            tx.log_activity(NewActivity::new(cb.id, ActivityKind::Note).deal(open_deal.id))
                .await,
            Entity::Deal,
            open_deal.id,
            "link an activity to another tenant's deal",
        );
        assert!(
            ok(tx.timeline(ca.id, &first).await, "timeline")
                .items
                .is_empty(),
            "another tenant's timeline is empty here"
        );
        expect_not_found(
            tx.record_signal(NewSignal::new(ca.id, SignalKind::PAGE_VIEW))
                .await,
            Entity::Contact,
            ca.id,
            "record a signal for another tenant's contact",
        );
        assert!(
            ok(tx.list_signals(ca.id).await, "signals").is_empty(),
            "another tenant's signals are not listed"
        );
        assert_eq!(
            ok(tx.write_scores(&[(ca.id, score(99))]).await, "write scores"),
            0,
            "scores of another tenant's contacts are not written"
        );
    })
    .await;

    let after = snapshot(store, a, &[ca.id], &[open_deal.id, won_deal.id]).await;
    assert_eq!(after, before, "the first tenant's records are unchanged");
}

/// Emails are unique per tenant: another tenant may create a contact with
/// the same email, and each tenant finds its own.
pub async fn another_tenant_may_hold_the_same_email(store: &DynStore) {
    let a = TenantId::new();
    let b = TenantId::new();
    let ca = create(store, a, new_contact("shared@example.com", "In", "A")).await;
    let cb = create(store, b, new_contact("Shared@Example.com", "In", "B")).await;
    assert_ne!(ca.id, cb.id);
    assert_eq!(cb.tenant_id, b);
    for (t, c) in [(a, &ca), (b, &cb)] {
        let found = ok(
            store
                .get_contact_by_email(t, &ctx(), &email("SHARED@example.com"))
                .await,
            "get by email",
        )
        .expect("each tenant finds its own contact");
        assert_same(&found, c, "the tenant's own contact");
    }
}

// ------------------------------------------------------------------------
// Atomicity
// ------------------------------------------------------------------------

/// A rolled-back transaction leaves none of the records it created.
pub async fn rollback_leaves_no_trace_of_new_records(store: &DynStore) {
    let t = TenantId::new();
    let mut tx = begin(store, t).await;
    let c = ok(
        tx.create_contact(new_contact("ghost@example.com", "Gho", "St"))
            .await,
        "create",
    );
    let d = ok(
        tx.create_deal(new_deal(c.id, "Ghost", "5", "EUR")).await,
        "deal",
    );
    ok(
        tx.log_activity(NewActivity::new(c.id, ActivityKind::Email).deal(d.id))
            .await,
        "activity",
    );
    ok(
        tx.record_signal(NewSignal::new(c.id, SignalKind::EMAIL_OPEN))
            .await,
        "signal",
    );
    ok(tx.rollback().await, "rollback");

    let empty = snapshot(store, t, &[c.id], &[d.id]).await;
    let fresh = snapshot(store, TenantId::new(), &[c.id], &[d.id]).await;
    assert_eq!(empty, fresh, "after a rollback the tenant looks untouched");
    assert!(get(store, t, c.id).await.is_none(), "the contact is gone");
    let again = create(store, t, new_contact("ghost@example.com", "Gho", "St")).await;
    assert_ne!(again.id, c.id, "the rolled-back email is free");
}

async fn busy_tenant(
    store: &DynStore,
    t: TenantId,
) -> (Vec<ContactId>, Vec<DealId>, Contact, Deal) {
    let stages = default_stages(store);
    with_tx!(store, t, async |tx| {
        let a = ok(
            tx.create_contact(full_contact("busy@example.com")).await,
            "a",
        );
        let b = ok(
            tx.create_contact(new_contact("bystander@example.com", "By", "Stander"))
                .await,
            "b",
        );
        let d = ok(
            tx.create_deal(new_deal(a.id, "Busy", "300", "EUR")).await,
            "deal",
        );
        let lost = ok(
            tx.create_deal(new_deal(b.id, "Lost", "30", "USD")).await,
            "deal",
        );
        ok(
            tx.move_deal(
                lost.id,
                lost.version,
                &stages.lost,
                Some(lost_reason("price")),
            )
            .await,
            "lose",
        );
        ok(
            tx.log_activity(NewActivity::new(a.id, ActivityKind::Call).deal(d.id))
                .await,
            "activity",
        );
        ok(
            tx.log_activity(NewActivity::new(b.id, ActivityKind::Note))
                .await,
            "activity",
        );
        ok(
            tx.record_signal(NewSignal::new(a.id, SignalKind::PRICING_PAGE_VIEW))
                .await,
            "signal",
        );
        ok(
            tx.write_scores(&[(a.id, score(40)), (b.id, score(10))])
                .await,
            "scores",
        );
        let a = ok(tx.get_contact(a.id).await, "get").expect("a");
        (vec![a.id, b.id], vec![d.id, lost.id], a, d)
    })
    .await
}

/// Changes the busy tenant with every kind of write; returns the id of the
/// contact it creates.
async fn change_everything(
    tx: &mut dyn Transaction,
    store: &DynStore,
    a: &Contact,
    d: &Deal,
    b: ContactId,
) -> ContactId {
    let stages = default_stages(store);
    let a2 = ok(
        tx.update_contact(
            a.id,
            a.version,
            ContactPatch {
                email: Some(email("renamed@example.com")),
                last_name: Some(person("Renamed")),
                ..ContactPatch::default()
            },
        )
        .await,
        "update",
    );
    ok(tx.deactivate_contact(a2.id).await, "deactivate");
    ok(tx.write_scores(&[(a.id, score(90))]).await, "score");
    let d2 = ok(
        tx.update_deal(
            d.id,
            d.version,
            DealPatch {
                amount: Some(money("999.99", "USD")),
                ..DealPatch::default()
            },
        )
        .await,
        "update deal",
    );
    ok(
        tx.move_deal(d2.id, d2.version, &stages.open[1], None).await,
        "move",
    );
    ok(tx.delete_deal(d.id).await, "delete deal");
    ok(
        tx.log_activity(NewActivity::new(a.id, ActivityKind::Task))
            .await,
        "activity",
    );
    ok(
        tx.record_signal(NewSignal::new(a.id, SignalKind::FORM_SUBMIT))
            .await,
        "signal",
    );
    assert!(
        ok(tx.delete_contact(b).await, "delete contact"),
        "b is deleted"
    );
    let c = ok(
        tx.create_contact(new_contact("newcomer@example.com", "New", "Comer"))
            .await,
        "create",
    );
    ok(
        tx.create_deal(new_deal(c.id, "Newcomer", "1", "EUR")).await,
        "deal",
    );
    c.id
}

/// `rollback` undoes updates, deactivations, score writes, deal moves,
/// deletes (with their cascades) and creations, indexes included.
pub async fn rollback_restores_changed_and_deleted_records(store: &DynStore) {
    let t = TenantId::new();
    let (contacts, deals, a, d) = busy_tenant(store, t).await;
    let before = snapshot(store, t, &contacts, &deals).await;
    let mut tx = begin(store, t).await;
    let newcomer = change_everything(&mut *tx, store, &a, &d, contacts[1]).await;
    ok(tx.rollback().await, "rollback");
    assert_eq!(
        snapshot(store, t, &contacts, &deals).await,
        before,
        "after a rollback every record and list is as before"
    );
    assert!(
        get(store, t, newcomer).await.is_none(),
        "the contact created in the rolled-back transaction does not exist"
    );
    let renamed = ok(
        store
            .get_contact_by_email(t, &ctx(), &email("renamed@example.com"))
            .await,
        "get by email",
    );
    assert!(
        renamed.is_none(),
        "the rolled-back email change left no trace"
    );
}

/// Dropping a transaction without committing discards everything it did:
/// new records and changes to existing ones.
pub async fn dropping_a_transaction_without_commit_leaves_no_trace(store: &DynStore) {
    let t = TenantId::new();
    {
        let mut tx = begin(store, t).await;
        let c = ok(
            tx.create_contact(new_contact("dropped@example.com", "Dro", "Pped"))
                .await,
            "create",
        );
        ok(
            tx.update_contact(
                c.id,
                c.version,
                ContactPatch {
                    first_name: Some(person("Updated")),
                    ..ContactPatch::default()
                },
            )
            .await,
            "update",
        );
        let d = ok(
            tx.create_deal(new_deal(c.id, "Dropped", "5", "EUR")).await,
            "deal",
        );
        ok(
            tx.log_activity(NewActivity::new(c.id, ActivityKind::Email).deal(d.id))
                .await,
            "activity",
        );
        drop(tx);
    }
    let found = search(store, t, &all(ContactSort::CreatedAsc)).await;
    assert!(
        found.items.is_empty(),
        "a dropped transaction created nothing"
    );
    let by_email = ok(
        store
            .get_contact_by_email(t, &ctx(), &email("dropped@example.com"))
            .await,
        "get by email",
    );
    assert!(by_email.is_none(), "a dropped transaction created nothing");
    let summary = ok(
        store
            .pipeline_summary(t, &ctx(), &PipelineKey::default_pipeline())
            .await,
        "summary",
    );
    assert!(
        summary.stages.iter().all(|s| s.totals.is_empty()),
        "a dropped transaction created no deal"
    );

    let (contacts, deals, a, d) = busy_tenant(store, t).await;
    let before = snapshot(store, t, &contacts, &deals).await;
    {
        let mut tx = begin(store, t).await;
        change_everything(&mut *tx, store, &a, &d, contacts[1]).await;
        drop(tx);
    }
    assert_eq!(
        snapshot(store, t, &contacts, &deals).await,
        before,
        "a dropped transaction changed nothing"
    );
}

/// An operation that fails writes nothing, and the transaction can go on
/// and commit its other writes.
pub async fn a_failed_operation_writes_nothing_and_the_transaction_goes_on(store: &DynStore) {
    let t = TenantId::new();
    let stages = default_stages(store);
    let (a, b, d) = with_tx!(store, t, async |tx| {
        let a = ok(
            tx.create_contact(new_contact("first@example.com", "Fir", "St"))
                .await,
            "create a",
        );
        expect_duplicate(
            tx.create_contact(new_contact("FIRST@example.com", "Du", "Plicate"))
                .await,
            a.id,
            "duplicate in the same transaction",
        );
        let b = ok(
            tx.create_contact(new_contact("second@example.com", "Sec", "Ond"))
                .await,
            "create b after a failure",
        );
        expect_conflict(
            tx.update_contact(
                b.id,
                Version::new(5),
                ContactPatch {
                    first_name: Some(person("Stale")),
                    ..ContactPatch::default()
                },
            )
            .await,
            Entity::Contact,
            b.id,
            5,
            1,
            "stale update",
        );
        expect_duplicate(
            tx.update_contact(
                b.id,
                b.version,
                ContactPatch {
                    email: Some(email("First@Example.com")),
                    first_name: Some(person("Taken")),
                    ..ContactPatch::default()
                },
            )
            .await,
            a.id,
            "taking a's email",
        );
        let d = ok(
            tx.create_deal(new_deal(a.id, "Deal", "10", "EUR")).await,
            "deal",
        );
        expect_invalid_transition(
            tx.move_deal(d.id, d.version, &stages.lost, None).await,
            &stages.open[0],
            &stages.lost,
            "losing without a reason",
        );
        expect_invalid_transition(
            tx.move_deal(d.id, d.version, &d.stage, None).await,
            &d.stage,
            &d.stage,
            "staying in the stage",
        );
        expect_validation(
            tx.create_deal(NewDeal {
                pipeline: PipelineKey::parse("no_such_pipeline").expect("key"),
                ..new_deal(a.id, "Nowhere", "1", "EUR")
            })
            .await,
            "pipeline",
            "unknown pipeline",
        );
        let ghost = ContactId::new();
        expect_not_found(
            tx.log_activity(NewActivity::new(ghost, ActivityKind::Note))
                .await,
            Entity::Contact,
            ghost,
            "activity on a missing contact",
        );
        let seen_b = ok(tx.get_contact(b.id).await, "get b").expect("b");
        assert_same(
            &seen_b,
            &b,
            "failed updates left b as it was, inside the transaction",
        );
        let seen_d = ok(tx.get_deal(d.id).await, "get d").expect("d");
        assert_same(&seen_d, &d, "failed moves left the deal as it was");
        let b2 = ok(
            tx.update_contact(
                b.id,
                b.version,
                ContactPatch {
                    first_name: Some(person("Fine")),
                    ..ContactPatch::default()
                },
            )
            .await,
            "a good update after failures",
        );
        assert_eq!(b2.version, Version::new(2));
        (a, b2, d)
    })
    .await;

    assert_same(
        &get(store, t, a.id).await.expect("a"),
        &a,
        "a was committed",
    );
    assert_same(
        &get(store, t, b.id).await.expect("b"),
        &b,
        "b's good update was committed",
    );
    assert_same(
        &get_deal(store, t, d.id).await.expect("d"),
        &d,
        "the deal was committed unmoved",
    );
    let everyone = search_ids(store, t, &all(ContactSort::CreatedAsc)).await;
    assert_eq!(
        everyone,
        vec![a.id, b.id],
        "the failed create wrote nothing"
    );
    let timeline = timeline_all(store, t, a.id).await;
    assert!(timeline.is_empty(), "no activity was written");
    let summary = ok(
        store
            .pipeline_summary(t, &ctx(), stages.pipeline.key())
            .await,
        "summary",
    );
    let counted: u64 = summary
        .stages
        .iter()
        .flat_map(|s| &s.totals)
        .map(|x| x.count)
        .sum();
    assert_eq!(counted, 1, "only the one good deal exists");
}

/// A transaction reads its own writes before it commits: gets, searches,
/// lists and deletes all see them.
pub async fn a_transaction_sees_its_own_writes_before_commit(store: &DynStore) {
    let t = TenantId::new();
    let stages = default_stages(store);
    let mut tx = begin(store, t).await;
    assert_eq!(tx.tenant(), t, "a transaction reports its tenant");
    assert_eq!(tx.context(), &ctx(), "a transaction reports its context");
    let c = ok(
        tx.create_contact(new_contact("mine@example.com", "Mi", "Ne"))
            .await,
        "create",
    );
    assert_same(
        &ok(tx.get_contact(c.id).await, "get").expect("own contact"),
        &c,
        "get sees the own new contact",
    );
    assert_same(
        &ok(
            tx.get_contact_by_email(&email("MINE@example.com")).await,
            "get by email",
        )
        .expect("own contact by email"),
        &c,
        "get by email sees the own new contact",
    );
    let found = ok(
        tx.search_contacts(&all(ContactSort::CreatedDesc)).await,
        "search",
    );
    assert_eq!(found.items.len(), 1, "search sees the own new contact");
    let c2 = ok(
        tx.update_contact(
            c.id,
            c.version,
            ContactPatch {
                first_name: Some(person("Changed")),
                ..ContactPatch::default()
            },
        )
        .await,
        "update own new contact",
    );
    assert_eq!(c2.version, Version::new(2));
    ok(tx.write_scores(&[(c.id, score(77))]).await, "score");
    let top = ok(
        tx.search_contacts(&ContactQuery {
            min_score: Some(score(77)),
            ..all(ContactSort::ScoreDesc)
        })
        .await,
        "search by score",
    );
    assert_eq!(top.items.len(), 1, "search sees the own score write");
    let d = ok(
        tx.create_deal(new_deal(c.id, "Mine", "5", "EUR")).await,
        "deal",
    );
    let listed = ok(
        tx.list_deals_in_stage(
            stages.pipeline.key(),
            &stages.open[0],
            &PageRequest::first(10),
        )
        .await,
        "deals in stage",
    );
    assert_eq!(listed.items.len(), 1, "the own deal is listed in its stage");
    let a = ok(
        tx.log_activity(NewActivity::new(c.id, ActivityKind::Note).deal(d.id))
            .await,
        "activity",
    );
    let timeline = ok(tx.timeline(c.id, &PageRequest::first(10)).await, "timeline");
    assert_eq!(
        timeline.items.iter().map(|x| x.id).collect::<Vec<_>>(),
        vec![a.id],
        "the timeline shows the own activity"
    );
    ok(
        tx.record_signal(NewSignal::new(c.id, SignalKind::PAGE_VIEW))
            .await,
        "signal",
    );
    assert_eq!(ok(tx.list_signals(c.id).await, "signals").len(), 1);
    let summary = ok(tx.pipeline_summary(stages.pipeline.key()).await, "summary");
    assert_eq!(
        summary.stages[0].totals.len(),
        1,
        "the summary counts the own deal"
    );
    assert!(
        ok(tx.delete_contact(c.id).await, "delete"),
        "the own contact can be deleted"
    );
    assert!(
        ok(tx.get_contact(c.id).await, "get").is_none(),
        "the own delete is seen"
    );
    assert!(
        ok(tx.get_deal(d.id).await, "get deal").is_none(),
        "the own cascade is seen"
    );
    ok(tx.commit().await, "commit");
    assert!(get(store, t, c.id).await.is_none());
}

/// What a transaction wrote is not visible to another transaction before
/// it commits (and, after a rollback, never).
pub async fn uncommitted_writes_are_invisible_to_other_transactions(store: &DynStore) {
    let t = TenantId::new();
    let (written_tx, written_rx) = tokio::sync::oneshot::channel::<()>();
    let writer = async {
        let mut tx = begin(store, t).await;
        ok(
            tx.create_contact(new_contact("pending@example.com", "Pen", "Ding"))
                .await,
            "create",
        );
        let _ = written_tx.send(());
        // Give the reader a chance to look while the transaction is open
        // (a backend that serializes transactions makes it wait instead).
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        tick().await;
        ok(tx.rollback().await, "rollback");
    };
    let reader = async {
        let _ = written_rx.await;
        ok(
            store
                .get_contact_by_email(t, &ctx(), &email("pending@example.com"))
                .await,
            "get by email",
        )
    };
    let ((), seen) = join(writer, reader).await;
    assert!(
        seen.is_none(),
        "another transaction never saw the uncommitted contact"
    );
}

// ------------------------------------------------------------------------
// Search
// ------------------------------------------------------------------------

/// The search fixture: seven contacts, created one after another (so that
/// each has its own `created_at`), some updated afterwards.
struct Crowd {
    ada: Contact,
    charles: Contact,
    grace: Contact,
    alan: Contact,
    katherine: Contact,
    adele: Contact,
    edsger: Contact,
}

impl Crowd {
    fn in_creation_order(&self) -> [&Contact; 7] {
        [
            &self.ada,
            &self.charles,
            &self.grace,
            &self.alan,
            &self.katherine,
            &self.adele,
            &self.edsger,
        ]
    }
}

async fn crowd(store: &DynStore, t: TenantId) -> Crowd {
    fn input(
        address: &str,
        first: &str,
        last: &str,
        company: Option<&str>,
        source: LeadSource,
        meta: Value,
    ) -> NewContact {
        NewContact {
            company: company.map(|c| Company::parse(c).expect("company")),
            lead_source: source,
            metadata: metadata(meta),
            ..new_contact(address, first, last)
        }
    }
    let inputs = [
        input(
            "ada@analytical.example",
            "Ada",
            "Lovelace",
            Some("Analytical Engines"),
            LeadSource::Referral,
            json!({"plan": "pro", "tags": ["vip", "beta"], "address": {"city": "London", "zip": "N1"}}),
        ),
        input(
            "charles@analytical.example",
            "Charles",
            "Babbage",
            Some("Analytical Engines Ltd"),
            LeadSource::Organic,
            json!({"plan": "free", "tags": ["beta"]}),
        ),
        input(
            "grace@navy.example",
            "Grace",
            "Hopper",
            Some("US Navy"),
            LeadSource::Paid,
            json!({"plan": "pro", "address": {"city": "Arlington"}}),
        ),
        input(
            "alan@bletchley.example",
            "Alan",
            "Turing",
            Some("Bletchley Park"),
            LeadSource::Partner,
            json!({"tags": ["vip"], "seats": 3}),
        ),
        input(
            "katherine@nasa.example",
            "Katherine",
            "Johnson",
            None,
            LeadSource::Import,
            json!({}),
        ),
        input(
            "Adele@Example.com",
            "Adele",
            "Goldberg",
            Some("Xerox PARC"),
            LeadSource::Referral,
            json!({"plan": "PRO", "seats": 3.0}),
        ),
        input(
            "edsger@example.com",
            "Edsger",
            "Dijkstra",
            Some("analytical research"),
            LeadSource::Organic,
            json!({"tags": [["nested"], {"k": "v"}]}),
        ),
    ];
    let mut made = Vec::new();
    for (i, new) in inputs.into_iter().enumerate() {
        let c = create(store, t, new).await;
        // Alan is deactivated right away, within his creation's tick.
        let c = if i == 3 {
            with_tx!(store, t, async |tx| ok(
                tx.deactivate_contact(c.id).await,
                "deactivate"
            ))
            .await
        } else {
            c
        };
        made.push(c);
        tick().await;
    }
    let scores = [80, 40, 95, 60, 0, 40, 10];
    let pairs: Vec<(ContactId, Score)> = made
        .iter()
        .zip(scores)
        .map(|(c, s)| (c.id, score(s)))
        .collect();
    with_tx!(store, t, async |tx| ok(
        tx.write_scores(&pairs).await,
        "scores"
    ))
    .await;
    let mut fresh = Vec::new();
    for c in &made {
        fresh.push(get(store, t, c.id).await.expect("exists"));
    }
    let mut it = fresh.into_iter();
    let mut next = || it.next().expect("seven contacts");
    Crowd {
        ada: next(),
        charles: next(),
        grace: next(),
        alan: next(),
        katherine: next(),
        adele: next(),
        edsger: next(),
    }
}

fn ids(cs: &[&Contact]) -> Vec<ContactId> {
    let mut v: Vec<ContactId> = cs.iter().map(|c| c.id).collect();
    v.sort();
    v
}

async fn matching(store: &DynStore, t: TenantId, q: ContactQuery) -> Vec<ContactId> {
    let mut v = search_ids(
        store,
        t,
        &ContactQuery {
            page: PageRequest::first(MAX_PAGE_SIZE),
            ..q
        },
    )
    .await;
    v.sort();
    v
}

/// Email, name (first or last) and company prefixes match
/// case-insensitively, each on its own.
pub async fn search_filters_by_email_name_and_company_prefix_case_insensitively(store: &DynStore) {
    let t = TenantId::new();
    let c = crowd(store, t).await;
    let q = ContactQuery::new;
    let cases: Vec<(&str, ContactQuery, Vec<&Contact>)> = vec![
        (
            "email prefix AD",
            ContactQuery {
                email_prefix: Some("AD".into()),
                ..q()
            },
            vec![&c.ada, &c.adele],
        ),
        (
            "email prefix ada@",
            ContactQuery {
                email_prefix: Some("ada@".into()),
                ..q()
            },
            vec![&c.ada],
        ),
        (
            "email prefix adele@example.COM",
            ContactQuery {
                email_prefix: Some("adele@example.COM".into()),
                ..q()
            },
            vec![&c.adele],
        ),
        (
            "email prefix nobody",
            ContactQuery {
                email_prefix: Some("nobody".into()),
                ..q()
            },
            vec![],
        ),
        (
            "name prefix ad (first names)",
            ContactQuery {
                name_prefix: Some("ad".into()),
                ..q()
            },
            vec![&c.ada, &c.adele],
        ),
        (
            "name prefix HOP (last name)",
            ContactQuery {
                name_prefix: Some("HOP".into()),
                ..q()
            },
            vec![&c.grace],
        ),
        (
            "name prefix j (last name Johnson)",
            ContactQuery {
                name_prefix: Some("j".into()),
                ..q()
            },
            vec![&c.katherine],
        ),
        (
            "name prefix a (Ada, Alan, Adele)",
            ContactQuery {
                name_prefix: Some("a".into()),
                ..q()
            },
            vec![&c.ada, &c.alan, &c.adele],
        ),
        (
            "company prefix ANALYT",
            ContactQuery {
                company_prefix: Some("ANALYT".into()),
                ..q()
            },
            vec![&c.ada, &c.charles, &c.edsger],
        ),
        (
            "company prefix analytical engines l",
            ContactQuery {
                company_prefix: Some("analytical engines l".into()),
                ..q()
            },
            vec![&c.charles],
        ),
        (
            "email prefix with a % (not a wildcard)",
            ContactQuery {
                email_prefix: Some("a%".into()),
                ..q()
            },
            vec![],
        ),
        (
            "email prefix with a _ (not a wildcard)",
            ContactQuery {
                email_prefix: Some("a_a".into()),
                ..q()
            },
            vec![],
        ),
        (
            "name prefix %",
            ContactQuery {
                name_prefix: Some("%".into()),
                ..q()
            },
            vec![],
        ),
        (
            "company prefix with a _ (not a wildcard)",
            ContactQuery {
                company_prefix: Some("us_navy".into()),
                ..q()
            },
            vec![],
        ),
        (
            "company prefix x",
            ContactQuery {
                company_prefix: Some("x".into()),
                ..q()
            },
            vec![&c.adele],
        ),
    ];
    for (label, query, expected) in cases {
        assert_eq!(
            matching(store, t, query).await,
            ids(&expected),
            "search by {label}"
        );
    }
}

/// Lead sources, score range (inclusive) and the active flag filter on
/// their own.
pub async fn search_filters_by_lead_source_score_and_active(store: &DynStore) {
    let t = TenantId::new();
    let c = crowd(store, t).await;
    let q = ContactQuery::new;
    let everyone: Vec<&Contact> = c.in_creation_order().to_vec();
    let cases: Vec<(&str, ContactQuery, Vec<&Contact>)> = vec![
        (
            "lead sources referral or paid",
            ContactQuery {
                lead_sources: vec![LeadSource::Referral, LeadSource::Paid],
                ..q()
            },
            vec![&c.ada, &c.grace, &c.adele],
        ),
        (
            "lead source import",
            ContactQuery {
                lead_sources: vec![LeadSource::Import],
                ..q()
            },
            vec![&c.katherine],
        ),
        ("no lead source filter", q(), everyone.clone()),
        (
            "score 40 to 80",
            ContactQuery {
                min_score: Some(score(40)),
                max_score: Some(score(80)),
                ..q()
            },
            vec![&c.ada, &c.charles, &c.alan, &c.adele],
        ),
        (
            "score at least 90",
            ContactQuery {
                min_score: Some(score(90)),
                ..q()
            },
            vec![&c.grace],
        ),
        (
            "score at most 0",
            ContactQuery {
                max_score: Some(score(0)),
                ..q()
            },
            vec![&c.katherine],
        ),
        (
            "score exactly 40",
            ContactQuery {
                min_score: Some(score(40)),
                max_score: Some(score(40)),
                ..q()
            },
            vec![&c.charles, &c.adele],
        ),
        (
            "inactive",
            ContactQuery {
                active: Some(false),
                ..q()
            },
            vec![&c.alan],
        ),
        (
            "active",
            ContactQuery {
                active: Some(true),
                ..q()
            },
            everyone
                .iter()
                .copied()
                .filter(|x| x.id != c.alan.id)
                .collect(),
        ),
    ];
    for (label, query, expected) in cases {
        assert_eq!(
            matching(store, t, query).await,
            ids(&expected),
            "search by {label}"
        );
    }
}

/// Created and updated ranges include their start and exclude their end.
pub async fn search_filters_by_created_and_updated_ranges_including_start_excluding_end(
    store: &DynStore,
) {
    let t = TenantId::new();
    let c = crowd(store, t).await;
    let order = c.in_creation_order();
    for w in order.windows(2) {
        assert!(
            w[0].created_at < w[1].created_at,
            "contacts created in later transactions have later created_at"
        );
    }
    let q = ContactQuery::new;
    let created = |from: usize, until: usize| ContactQuery {
        created_from: Some(order[from].created_at),
        created_until: Some(order[until].created_at),
        ..q()
    };
    assert_eq!(
        matching(store, t, created(2, 5)).await,
        ids(&order[2..5]),
        "created in [grace, adele) holds grace, alan, katherine"
    );
    assert_eq!(
        matching(store, t, created(3, 3)).await,
        ids(&[]),
        "an empty created range matches nothing"
    );
    assert_eq!(
        matching(
            store,
            t,
            ContactQuery {
                created_from: Some(order[5].created_at),
                ..q()
            }
        )
        .await,
        ids(&order[5..]),
        "created from adele on"
    );
    assert_eq!(
        matching(
            store,
            t,
            ContactQuery {
                created_until: Some(order[1].created_at),
                ..q()
            }
        )
        .await,
        ids(&order[..1]),
        "created before charles"
    );

    // Update charles, then katherine, one after the other.
    tick().await;
    let mut updated = Vec::new();
    for who in [&c.charles, &c.katherine] {
        let u = ok(
            store
                .update_contact(
                    t,
                    &ctx(),
                    who.id,
                    who.version,
                    ContactPatch {
                        title: Some(Some(JobTitle::parse("Updated").expect("title"))),
                        ..ContactPatch::default()
                    },
                )
                .await,
            "update",
        );
        updated.push(u);
        tick().await;
    }
    let (charles, katherine) = (&updated[0], &updated[1]);
    assert!(charles.updated_at < katherine.updated_at);
    assert_eq!(
        matching(
            store,
            t,
            ContactQuery {
                updated_from: Some(charles.updated_at),
                ..q()
            }
        )
        .await,
        ids(&[charles, katherine]),
        "updated from charles's update on"
    );
    assert_eq!(
        matching(
            store,
            t,
            ContactQuery {
                updated_from: Some(charles.updated_at),
                updated_until: Some(katherine.updated_at),
                ..q()
            }
        )
        .await,
        ids(&[charles]),
        "updated in [charles, katherine) holds charles only"
    );
    let untouched: Vec<&Contact> = order
        .iter()
        .copied()
        .filter(|x| x.id != charles.id && x.id != katherine.id)
        .collect();
    assert_eq!(
        matching(
            store,
            t,
            ContactQuery {
                updated_until: Some(charles.updated_at),
                ..q()
            }
        )
        .await,
        ids(&untouched),
        "updated before charles's update: everyone not updated since"
    );
}

/// Metadata containment follows `jsonb @>`: keys with equal values, nested
/// objects, array elements; strings compare exactly, numbers by value.
pub async fn search_filters_by_metadata_containment(store: &DynStore) {
    let t = TenantId::new();
    let c = crowd(store, t).await;
    let q = |m: Value| ContactQuery {
        metadata_contains: Some(metadata(m)),
        ..ContactQuery::new()
    };
    let everyone: Vec<&Contact> = c.in_creation_order().to_vec();
    let cases: Vec<(&str, ContactQuery, Vec<&Contact>)> = vec![
        (
            "plan pro (case-sensitive)",
            q(json!({"plan": "pro"})),
            vec![&c.ada, &c.grace],
        ),
        ("plan PRO", q(json!({"plan": "PRO"})), vec![&c.adele]),
        (
            "nested city London",
            q(json!({"address": {"city": "London"}})),
            vec![&c.ada],
        ),
        (
            "nested address (any)",
            q(json!({"address": {}})),
            vec![&c.ada, &c.grace],
        ),
        (
            "array element vip",
            q(json!({"tags": ["vip"]})),
            vec![&c.ada, &c.alan],
        ),
        (
            "array elements beta and vip, any order",
            q(json!({"tags": ["beta", "vip"]})),
            vec![&c.ada],
        ),
        (
            "array element beta",
            q(json!({"tags": ["beta"]})),
            vec![&c.ada, &c.charles],
        ),
        (
            "nested array element",
            q(json!({"tags": [["nested"]]})),
            vec![&c.edsger],
        ),
        (
            "object in an array",
            q(json!({"tags": [{"k": "v"}]})),
            vec![&c.edsger],
        ),
        (
            "numbers by value",
            q(json!({"seats": 3})),
            vec![&c.alan, &c.adele],
        ),
        (
            "two keys",
            q(json!({"plan": "pro", "address": {"city": "Arlington"}})),
            vec![&c.grace],
        ),
        ("a missing key", q(json!({"nope": 1})), vec![]),
        ("the empty object", q(json!({})), everyone),
    ];
    for (label, query, expected) in cases {
        assert_eq!(
            matching(store, t, query).await,
            ids(&expected),
            "metadata containment: {label}"
        );
    }
}

/// Filters combine with AND.
pub async fn search_combines_filters_with_and(store: &DynStore) {
    let t = TenantId::new();
    let c = crowd(store, t).await;
    let cases: Vec<(&str, ContactQuery, Vec<&Contact>)> = vec![
        (
            "company analyt and score at least 50",
            ContactQuery {
                company_prefix: Some("analyt".into()),
                min_score: Some(score(50)),
                ..ContactQuery::new()
            },
            vec![&c.ada],
        ),
        (
            "active, referral, plan pro",
            ContactQuery {
                active: Some(true),
                lead_sources: vec![LeadSource::Referral],
                metadata_contains: Some(metadata(json!({"plan": "pro"}))),
                ..ContactQuery::new()
            },
            vec![&c.ada],
        ),
        (
            "name a, tag vip, inactive",
            ContactQuery {
                name_prefix: Some("a".into()),
                metadata_contains: Some(metadata(json!({"tags": ["vip"]}))),
                active: Some(false),
                ..ContactQuery::new()
            },
            vec![&c.alan],
        ),
        (
            "email ad and company x and created from ada",
            ContactQuery {
                email_prefix: Some("ad".into()),
                company_prefix: Some("X".into()),
                created_from: Some(c.ada.created_at),
                ..ContactQuery::new()
            },
            vec![&c.adele],
        ),
        (
            "organic with score at most 10",
            ContactQuery {
                lead_sources: vec![LeadSource::Organic],
                max_score: Some(score(10)),
                ..ContactQuery::new()
            },
            vec![&c.edsger],
        ),
        (
            "contradicting filters",
            ContactQuery {
                email_prefix: Some("ada".into()),
                name_prefix: Some("grace".into()),
                ..ContactQuery::new()
            },
            vec![],
        ),
    ];
    for (label, query, expected) in cases {
        assert_eq!(
            matching(store, t, query).await,
            ids(&expected),
            "combined filters: {label}"
        );
    }
}

const ALL_SORTS: [ContactSort; 8] = [
    ContactSort::ScoreDesc,
    ContactSort::ScoreAsc,
    ContactSort::CreatedDesc,
    ContactSort::CreatedAsc,
    ContactSort::UpdatedDesc,
    ContactSort::UpdatedAsc,
    ContactSort::NameAsc,
    ContactSort::NameDesc,
];

/// The order the contract gives `contacts` under `sort`, computed here.
fn expected_order(sort: ContactSort, contacts: &[Contact]) -> Vec<ContactId> {
    let mut v: Vec<&Contact> = contacts.iter().collect();
    let key = |c: &Contact| -> (i64, String, String, uuid::Uuid) {
        let id = c.id.as_uuid();
        match sort {
            ContactSort::ScoreAsc | ContactSort::ScoreDesc => {
                (i64::from(c.score.get()), String::new(), String::new(), id)
            }
            ContactSort::CreatedAsc | ContactSort::CreatedDesc => (
                c.created_at.timestamp_micros(),
                String::new(),
                String::new(),
                id,
            ),
            ContactSort::UpdatedAsc | ContactSort::UpdatedDesc => (
                c.updated_at.timestamp_micros(),
                String::new(),
                String::new(),
                id,
            ),
            ContactSort::NameAsc | ContactSort::NameDesc => (
                0,
                crate::domain::caseless_key(c.last_name.as_str()),
                crate::domain::caseless_key(c.first_name.as_str()),
                id,
            ),
        }
    };
    v.sort_by_key(|c| key(c));
    if sort.is_descending() {
        v.reverse();
    }
    v.into_iter().map(|c| c.id).collect()
}

/// A tenant with ties in every sort key: equal scores, names equal but for
/// casing, contacts created (and so stamped) in one transaction.
async fn ties(store: &DynStore, t: TenantId) -> Vec<Contact> {
    let people = [
        ("Ada", "Lovelace"),
        ("ada", "lovelace"),
        ("ADA", "LOVELACE"),
        ("Bob", "Lovelace"),
        ("Zed", "Adams"),
        ("amy", "adams"),
        ("Carl", "O'Neil"),
        ("carl", "Oneil"),
        ("Eve", "adams"),
        ("Dan", "Zimmer"),
        ("dan", "zimmer"),
    ];
    let mut made = Vec::new();
    // The first five in one transaction (a backend stamping the
    // transaction's time gives them equal timestamps), the rest one by one.
    with_tx!(store, t, async |tx| {
        for (i, (first, last)) in people.iter().take(5).enumerate() {
            let c = ok(
                tx.create_contact(new_contact(&format!("tie{i}@example.com"), first, last))
                    .await,
                "create",
            );
            made.push(c.id);
        }
    })
    .await;
    for (i, (first, last)) in people.iter().enumerate().skip(5) {
        tick().await;
        made.push(
            create(
                store,
                t,
                new_contact(&format!("tie{i}@example.com"), first, last),
            )
            .await
            .id,
        );
    }
    // Two updates in one transaction: equal updated_at where the backend
    // stamps the transaction's time.
    tick().await;
    with_tx!(store, t, async |tx| {
        for id in [made[1], made[7]] {
            ok(
                tx.update_contact(
                    id,
                    Version::FIRST,
                    ContactPatch {
                        lead_source: Some(LeadSource::Paid),
                        ..ContactPatch::default()
                    },
                )
                .await,
                "update",
            );
        }
    })
    .await;
    let scores = [50, 50, 50, 20, 20, 90, 0, 0, 50, 100, 20];
    let pairs: Vec<(ContactId, Score)> = made.iter().copied().zip(scores.map(score)).collect();
    with_tx!(store, t, async |tx| ok(
        tx.write_scores(&pairs).await,
        "scores"
    ))
    .await;
    let mut out = Vec::new();
    for id in made {
        out.push(get(store, t, id).await.expect("exists"));
    }
    out
}

/// Every sort gives a total order: by its key, ties broken by id in the
/// direction of the sort.
pub async fn every_sort_is_a_total_order_with_id_tie_break_in_the_sort_direction(store: &DynStore) {
    let t = TenantId::new();
    let contacts = ties(store, t).await;
    for sort in ALL_SORTS {
        let got = search_ids(store, t, &all(sort)).await;
        assert_eq!(
            got,
            expected_order(sort, &contacts),
            "sort {sort:?} orders by its key, then by id in the same direction"
        );
    }
    let default = search_ids(
        store,
        t,
        &ContactQuery::new().page(PageRequest::first(MAX_PAGE_SIZE)),
    )
    .await;
    assert_eq!(
        default,
        expected_order(ContactSort::CreatedDesc, &contacts),
        "the default order is newest first"
    );
}

/// Following cursors with small pages visits every match exactly once, in
/// the order of the sort, with or without filters.
pub async fn paging_visits_every_match_exactly_once_in_order(store: &DynStore) {
    let t = TenantId::new();
    let contacts = ties(store, t).await;
    let context = ctx();
    for sort in ALL_SORTS {
        let expected = expected_order(sort, &contacts);
        for limit in [1, 3, 11, 1000] {
            let q = ContactQuery::new().sort(sort);
            let got = collect_pages!(limit, async |page| {
                ok(
                    store
                        .search_contacts(t, &context, &q.clone().page(page))
                        .await,
                    "search page",
                )
            })
            .await;
            let got: Vec<ContactId> = got.iter().map(|c| c.id).collect();
            assert_eq!(got, expected, "paging {sort:?} with limit {limit}");
        }
        // With a filter: scores of at least 20.
        let filtered: Vec<Contact> = contacts
            .iter()
            .filter(|c| c.score >= score(20))
            .cloned()
            .collect();
        let q = ContactQuery {
            min_score: Some(score(20)),
            ..ContactQuery::new().sort(sort)
        };
        let got = collect_pages!(2, async |page| {
            ok(
                store
                    .search_contacts(t, &context, &q.clone().page(page))
                    .await,
                "search page",
            )
        })
        .await;
        let got: Vec<ContactId> = got.iter().map(|c| c.id).collect();
        assert_eq!(
            got,
            expected_order(sort, &filtered),
            "paging {sort:?} with a score filter"
        );
    }
}

/// Records inserted between two pages, whether they sort before or after
/// the cursor, do not make the next page repeat or skip a record that was
/// there all along (the position is a key, not an offset).
pub async fn paging_is_stable_when_records_are_inserted_between_pages(store: &DynStore) {
    let t = TenantId::new();
    let mut made = Vec::new();
    for i in 1..=6 {
        made.push(
            create(
                store,
                t,
                new_contact(&format!("b{i}@example.com"), "B", &format!("Baker{i}")),
            )
            .await,
        );
    }
    let q = ContactQuery::new()
        .sort(ContactSort::NameAsc)
        .page(PageRequest::first(3));
    let first = search(store, t, &q).await;
    assert_eq!(
        first.items.iter().map(|c| c.id).collect::<Vec<_>>(),
        made[..3].iter().map(|c| c.id).collect::<Vec<_>>(),
        "the first page holds Baker1 to Baker3"
    );
    let cursor = first.next_cursor.expect("more follow");
    let aaron = create(store, t, new_contact("aaron@example.com", "A", "Aaron")).await;
    let baker2b = create(store, t, new_contact("b2b@example.com", "B", "Baker2b")).await;
    let zed = create(store, t, new_contact("zed@example.com", "Z", "Zed")).await;
    let rest = collect_pages!(3, async |page| {
        let cursor = page.cursor.clone().unwrap_or_else(|| cursor.clone());
        search(store, t, &q.after(cursor)).await
    })
    .await;
    let mut want: Vec<ContactId> = made[3..].iter().map(|c| c.id).collect();
    want.push(zed.id);
    assert_eq!(
        rest.iter().map(|c| c.id).collect::<Vec<_>>(),
        want,
        "after the cursor come Baker4 to Baker6 and the new Zed; Aaron and Baker2b, \
         inserted before the cursor, shift nothing"
    );
    assert!(!rest.iter().any(|c| c.id == aaron.id || c.id == baker2b.id));

    let c = &made[0];
    let base = truncate_to_micros(Utc::now() - Duration::days(1));
    let logged = with_tx!(store, t, async |tx| {
        let mut v = Vec::new();
        for i in 1..=6 {
            v.push(ok(
                tx.log_activity(
                    NewActivity::new(c.id, ActivityKind::Note)
                        .occurred_at(base + Duration::minutes(i)),
                )
                .await,
                "activity",
            ));
        }
        v
    })
    .await;
    let context = ctx();
    let first = ok(
        store
            .timeline(t, &context, c.id, &PageRequest::first(3))
            .await,
        "timeline",
    );
    assert_eq!(
        first.items.iter().map(|a| a.id).collect::<Vec<_>>(),
        vec![logged[5].id, logged[4].id, logged[3].id],
        "the first timeline page holds the three newest"
    );
    let newest = with_tx!(store, t, async |tx| ok(
        tx.log_activity(NewActivity::new(c.id, ActivityKind::Call))
            .await,
        "newest"
    ))
    .await;
    let second = ok(
        store
            .timeline(
                t,
                &context,
                c.id,
                &PageRequest::after(3, first.next_cursor.expect("more")),
            )
            .await,
        "timeline",
    );
    assert_eq!(
        second.items.iter().map(|a| a.id).collect::<Vec<_>>(),
        vec![logged[2].id, logged[1].id, logged[0].id],
        "an activity logged since the first page shifts nothing"
    );
    assert!(second.next_cursor.is_none(), "nothing follows the oldest");
    assert!(!second.items.iter().any(|a| a.id == newest.id));
}

/// A page limit of 0 or above 1000 is a validation error on `limit`, in
/// every list.
pub async fn lists_reject_a_limit_outside_1_to_1000(store: &DynStore) {
    let t = TenantId::new();
    let stages = default_stages(store);
    let c = create(store, t, new_contact("limits@example.com", "Li", "Mits")).await;
    with_tx!(store, t, async |tx| {
        for limit in [0, MAX_PAGE_SIZE + 1, u32::MAX] {
            let page = PageRequest::first(limit);
            expect_validation(
                tx.search_contacts(&ContactQuery::new().page(page.clone()))
                    .await,
                "limit",
                &format!("search with limit {limit}"),
            );
            expect_validation(
                tx.timeline(c.id, &page).await,
                "limit",
                &format!("timeline with limit {limit}"),
            );
            expect_validation(
                tx.list_deals_for_contact(c.id, &page).await,
                "limit",
                &format!("deals of a contact with limit {limit}"),
            );
            expect_validation(
                tx.list_deals_in_stage(stages.pipeline.key(), &stages.open[0], &page)
                    .await,
                "limit",
                &format!("deals in a stage with limit {limit}"),
            );
        }
        for limit in [1, MAX_PAGE_SIZE] {
            ok(
                tx.search_contacts(&ContactQuery::new().page(PageRequest::first(limit)))
                    .await,
                "limits 1 and 1000 are accepted",
            );
        }
    })
    .await;
}

/// A cursor that is not one (garbage, another list's, another sort key's)
/// is a validation error on `cursor`.
pub async fn search_rejects_a_garbage_cursor_and_a_cursor_of_another_list(store: &DynStore) {
    let t = TenantId::new();
    let contacts = ties(store, t).await;
    let c = &contacts[0];
    let timeline_cursor = with_tx!(store, t, async |tx| {
        for _ in 0..3 {
            ok(
                tx.log_activity(NewActivity::new(c.id, ActivityKind::Note))
                    .await,
                "activity",
            );
        }
        ok(tx.timeline(c.id, &PageRequest::first(1)).await, "timeline")
            .next_cursor
            .expect("a timeline of three has a next page after one")
    })
    .await;
    let score_cursor = cursor_of(store, t, ContactSort::ScoreDesc).await;
    let name_cursor = cursor_of(store, t, ContactSort::NameAsc).await;
    let time_cursor = cursor_of(store, t, ContactSort::CreatedDesc).await;

    let garbage = [
        ("garbage text", Cursor::from_string("not a cursor!".into())),
        ("an empty cursor", Cursor::from_string(String::new())),
        ("odd hex", Cursor::from_string("abc".into())),
        (
            "a JSON string",
            Cursor::encode(ContactSort::ScoreDesc.cursor_list(), &"hello"),
        ),
        ("a timeline cursor", timeline_cursor.clone()),
    ];
    with_tx!(store, t, async |tx| {
        for sort in ALL_SORTS {
            for (label, cursor) in &garbage {
                expect_validation(
                    tx.search_contacts(&ContactQuery::new().sort(sort).after(cursor.clone()))
                        .await,
                    "cursor",
                    &format!("search {sort:?} after {label}"),
                );
            }
        }
        let crossed = [
            (
                "a score cursor",
                &score_cursor,
                [ContactSort::NameAsc, ContactSort::CreatedDesc],
            ),
            (
                "a name cursor",
                &name_cursor,
                [ContactSort::ScoreDesc, ContactSort::UpdatedAsc],
            ),
            (
                "a time cursor",
                &time_cursor,
                [ContactSort::ScoreAsc, ContactSort::NameDesc],
            ),
        ];
        for (label, cursor, sorts) in crossed {
            for sort in sorts {
                expect_validation(
                    tx.search_contacts(&ContactQuery::new().sort(sort).after(cursor.clone()))
                        .await,
                    "cursor",
                    &format!("search {sort:?} after {label}"),
                );
            }
        }
        for (label, cursor) in [
            ("garbage", Cursor::from_string("zz".into())),
            ("a search cursor", score_cursor.clone()),
        ] {
            expect_validation(
                tx.timeline(c.id, &PageRequest::after(5, cursor.clone()))
                    .await,
                "cursor",
                &format!("timeline after {label}"),
            );
            expect_validation(
                tx.list_deals_for_contact(c.id, &PageRequest::after(5, cursor.clone()))
                    .await,
                "cursor",
                &format!("deals of a contact after {label}"),
            );
        }
    })
    .await;
}

// ------------------------------------------------------------------------
// Deals
// ------------------------------------------------------------------------

/// A new deal starts in the default pipeline's first open stage (or the
/// open stage it names), version 1, no stamps, at microsecond precision.
pub async fn create_deal_starts_in_the_first_open_stage_of_the_default_pipeline(store: &DynStore) {
    let t = TenantId::new();
    let key = PipelineKey::default_pipeline();
    assert!(
        store.pipelines().get(&key).is_some(),
        "every store knows the default pipeline"
    );
    let stages = default_stages(store);
    let c = create(store, t, new_contact("buyer@example.com", "Bu", "Yer")).await;
    let input = NewDeal {
        expected_close_date: chrono::NaiveDate::from_ymd_opt(2031, 2, 28),
        ..new_deal(c.id, "Big deal", "1250.50", "EUR")
    };
    let d = deal(store, t, input.clone()).await;
    assert_eq!(d.tenant_id, t);
    assert_eq!(d.contact_id, c.id);
    assert_eq!(d.title, input.title);
    assert_eq!(d.amount, input.amount);
    assert_eq!(d.amount.amount(), dec("1250.5"));
    assert_eq!(d.expected_close_date, input.expected_close_date);
    assert_eq!(d.pipeline, key);
    assert_eq!(
        d.stage,
        stages.pipeline.first_open_stage().key,
        "a deal starts in the first open stage"
    );
    assert_eq!(d.version, Version::FIRST);
    assert!(d.won_at.is_none() && d.lost_at.is_none() && d.lost_reason.is_none());
    assert_eq!(d.created_at, d.updated_at);
    assert_micros(d.created_at, "a deal's created_at");
    assert_same(
        &get_deal(store, t, d.id).await.expect("exists"),
        &d,
        "get_deal returns the created deal",
    );

    let named = deal(
        store,
        t,
        NewDeal {
            stage: Some(stages.open[1].clone()),
            ..new_deal(c.id, "Further along", "0", "USD")
        },
    )
    .await;
    assert_eq!(
        named.stage, stages.open[1],
        "a deal may start in a named open stage"
    );
    assert_eq!(named.amount.amount(), Decimal::ZERO);
    assert_same(
        &get_deal(store, t, named.id).await.expect("exists"),
        &named,
        "get_deal returns the created deal",
    );
}

/// Creating a deal for a contact that does not exist is `NotFound`.
pub async fn create_deal_for_a_missing_contact_is_not_found(store: &DynStore) {
    let t = TenantId::new();
    let ghost = ContactId::new();
    expect_not_found(
        store
            .create_deal(t, &ctx(), new_deal(ghost, "Nobody", "1", "EUR"))
            .await,
        Entity::Contact,
        ghost,
        "a deal for a missing contact",
    );
}

/// An unknown pipeline, an unknown stage or a closed starting stage is a
/// validation error (on `pipeline` or `stage`), and creates nothing.
pub async fn create_deal_rejects_unknown_pipeline_unknown_stage_and_closed_stage(store: &DynStore) {
    let t = TenantId::new();
    let stages = default_stages(store);
    let c = create(store, t, new_contact("picky@example.com", "Pi", "Cky")).await;
    let base = new_deal(c.id, "Picky", "1", "EUR");
    let cases = [
        (
            "an unknown pipeline",
            NewDeal {
                pipeline: PipelineKey::parse("no_such_pipeline").expect("key"),
                ..base.clone()
            },
            "pipeline",
        ),
        (
            "an unknown stage",
            NewDeal {
                stage: Some(stage("no_such_stage")),
                ..base.clone()
            },
            "stage",
        ),
        (
            "a won starting stage",
            NewDeal {
                stage: Some(stages.won.clone()),
                ..base.clone()
            },
            "stage",
        ),
        (
            "a lost starting stage",
            NewDeal {
                stage: Some(stages.lost.clone()),
                ..base.clone()
            },
            "stage",
        ),
    ];
    for (label, input, field) in cases {
        expect_validation(store.create_deal(t, &ctx(), input).await, field, label);
    }
    let listed = with_tx!(store, t, async |tx| {
        ok(
            tx.list_deals_for_contact(c.id, &PageRequest::first(10))
                .await,
            "deals",
        )
    })
    .await;
    assert!(listed.items.is_empty(), "refused deals were not created");
}

/// Deal updates check the version like contact updates: the right one
/// bumps it, a stale one is `Conflict`, a no-op keeps it.
pub async fn update_deal_checks_the_version(store: &DynStore) {
    let t = TenantId::new();
    let c = create(store, t, new_contact("deals@example.com", "De", "Als")).await;
    let d = deal(store, t, new_deal(c.id, "First title", "10", "EUR")).await;
    tick().await;
    let patch = DealPatch {
        title: Some(DealTitle::parse("Second title").expect("title")),
        amount: Some(money("12.3400", "USD")),
        expected_close_date: Some(chrono::NaiveDate::from_ymd_opt(2030, 1, 31)),
    };
    let d2 = with_tx!(store, t, async |tx| {
        ok(
            tx.update_deal(d.id, d.version, patch.clone()).await,
            "update deal",
        )
    })
    .await;
    assert_eq!(d2.version, Version::new(2));
    assert!(d2.updated_at > d.updated_at, "updated_at moves forward");
    assert_eq!(d2.created_at, d.created_at);
    assert_eq!(d2.title.as_str(), "Second title");
    assert_eq!(d2.amount, money("12.34", "USD"));
    assert_eq!(
        d2.expected_close_date,
        chrono::NaiveDate::from_ymd_opt(2030, 1, 31)
    );
    assert_eq!(d2.stage, d.stage, "an update does not move the deal");
    assert_same(
        &get_deal(store, t, d.id).await.expect("d"),
        &d2,
        "the update is stored",
    );

    with_tx!(store, t, async |tx| {
        expect_conflict(
            tx.update_deal(d.id, d.version, patch.clone()).await,
            Entity::Deal,
            d.id,
            1,
            2,
            "a stale deal update",
        );
        let same = ok(
            tx.update_deal(d.id, d2.version, patch.clone()).await,
            "no-op",
        );
        assert_same(&same, &d2, "a patch of the current values changes nothing");
        let empty = ok(
            tx.update_deal(d.id, d2.version, DealPatch::default()).await,
            "empty",
        );
        assert_same(&empty, &d2, "an empty patch changes nothing");
        let cleared = ok(
            tx.update_deal(
                d.id,
                d2.version,
                DealPatch {
                    expected_close_date: Some(None),
                    ..DealPatch::default()
                },
            )
            .await,
            "clear the close date",
        );
        assert_eq!(cleared.expected_close_date, None);
        assert_eq!(cleared.version, Version::new(3));
    })
    .await;
}

/// A deal moves through every open stage in order and then to won: each
/// move bumps the version; winning stamps `won_at`.
pub async fn a_deal_moves_through_the_open_stages_to_won_and_is_stamped(store: &DynStore) {
    let t = TenantId::new();
    let stages = default_stages(store);
    let c = create(store, t, new_contact("winner@example.com", "Win", "Ner")).await;
    let mut d = deal(store, t, new_deal(c.id, "Path", "100", "EUR")).await;
    let mut path: Vec<StageKey> = stages.open[1..].to_vec();
    path.push(stages.won.clone());
    for to in &path {
        tick().await;
        let before = d.clone();
        d = ok(
            store.move_deal(t, &ctx(), d.id, d.version, to, None).await,
            &format!("move to {to}"),
        );
        assert_eq!(&d.stage, to, "the deal is in {to}");
        assert_eq!(d.version, before.version.next(), "a move bumps the version");
        assert!(d.updated_at > before.updated_at, "a move bumps updated_at");
    }
    let won_at = d.won_at.expect("winning stamps won_at");
    assert_eq!(won_at, d.updated_at, "won_at is the time of the move");
    assert_micros(won_at, "won_at");
    assert!(d.lost_at.is_none() && d.lost_reason.is_none());
    assert_same(
        &get_deal(store, t, d.id).await.expect("d"),
        &d,
        "the win is stored",
    );
}

/// Losing a deal needs a reason (`InvalidTransition` without); with one it
/// stamps `lost_at` and keeps the reason.
pub async fn losing_a_deal_needs_a_reason_and_stamps_lost_at(store: &DynStore) {
    let t = TenantId::new();
    let stages = default_stages(store);
    let c = create(store, t, new_contact("loser@example.com", "Lo", "Ser")).await;
    let d = deal(store, t, new_deal(c.id, "Doomed", "100", "EUR")).await;
    expect_invalid_transition(
        store
            .move_deal(t, &ctx(), d.id, d.version, &stages.lost, None)
            .await,
        &d.stage,
        &stages.lost,
        "losing without a reason",
    );
    assert_same(
        &get_deal(store, t, d.id).await.expect("d"),
        &d,
        "the refused move changed nothing",
    );
    let lost = ok(
        store
            .move_deal(
                t,
                &ctx(),
                d.id,
                d.version,
                &stages.lost,
                Some(lost_reason("Went with a competitor\non price")),
            )
            .await,
        "lose with a reason",
    );
    assert_eq!(lost.stage, stages.lost);
    assert_eq!(lost.version, Version::new(2));
    assert_eq!(lost.lost_at, Some(lost.updated_at), "losing stamps lost_at");
    assert_eq!(
        lost.lost_reason.as_ref().map(LostReason::as_str),
        Some("Went with a competitor\non price"),
        "the reason is kept"
    );
    assert!(lost.won_at.is_none());
    assert_same(
        &get_deal(store, t, d.id).await.expect("d"),
        &lost,
        "the loss is stored",
    );
}

/// A won or lost deal cannot move to any stage; only a reopen takes it out.
pub async fn a_closed_deal_leaves_its_stage_only_through_reopen(store: &DynStore) {
    let t = TenantId::new();
    let s = default_stages(store);
    let c = create(store, t, new_contact("closed@example.com", "Clo", "Sed")).await;
    let won = deal(store, t, new_deal(c.id, "Won", "1", "EUR")).await;
    let won = ok(
        store
            .move_deal(t, &ctx(), won.id, won.version, &s.won, None)
            .await,
        "win",
    );
    let lost = deal(store, t, new_deal(c.id, "Lost", "1", "EUR")).await;
    let lost = ok(
        store
            .move_deal(
                t,
                &ctx(),
                lost.id,
                lost.version,
                &s.lost,
                Some(lost_reason("no budget")),
            )
            .await,
        "lose",
    );
    for closed in [&won, &lost] {
        for to in s.open.iter().chain([&s.won]) {
            if to == &closed.stage {
                continue;
            }
            expect_invalid_transition(
                store
                    .move_deal(t, &ctx(), closed.id, closed.version, to, None)
                    .await,
                &closed.stage,
                to,
                &format!("moving a closed deal to {to}"),
            );
        }
        expect_invalid_transition(
            store
                .move_deal(
                    t,
                    &ctx(),
                    closed.id,
                    closed.version,
                    &s.lost,
                    Some(lost_reason("again")),
                )
                .await,
            &closed.stage,
            &s.lost,
            "moving a closed deal to lost",
        );
        assert_same(
            &get_deal(store, t, closed.id).await.expect("exists"),
            closed,
            "refused moves changed nothing",
        );
    }
}

/// Reopening takes a closed deal into an open stage and clears `won_at`,
/// `lost_at` and the reason; an open deal, or a closed target stage, is
/// `InvalidTransition`.
pub async fn reopen_clears_the_stamps_and_only_takes_closed_deals_into_open_stages(
    store: &DynStore,
) {
    let t = TenantId::new();
    let s = default_stages(store);
    let c = create(store, t, new_contact("reopen@example.com", "Re", "Open")).await;
    let d = deal(store, t, new_deal(c.id, "Again", "1", "EUR")).await;
    with_tx!(store, t, async |tx| {
        expect_invalid_transition(
            tx.reopen_deal(d.id, d.version, &s.open[1]).await,
            &d.stage,
            &s.open[1],
            "reopening an open deal",
        );
        let lost = ok(
            tx.move_deal(d.id, d.version, &s.lost, Some(lost_reason("timing")))
                .await,
            "lose",
        );
        expect_invalid_transition(
            tx.reopen_deal(d.id, lost.version, &s.won).await,
            &s.lost,
            &s.won,
            "reopening into a won stage",
        );
        expect_invalid_transition(
            tx.reopen_deal(d.id, lost.version, &s.lost).await,
            &s.lost,
            &s.lost,
            "reopening into a lost stage",
        );
        let reopened = ok(
            tx.reopen_deal(d.id, lost.version, &s.open[1]).await,
            "reopen",
        );
        assert_eq!(
            reopened.stage, s.open[1],
            "the deal is in the chosen open stage"
        );
        assert_eq!(reopened.version, lost.version.next());
        assert!(reopened.lost_at.is_none(), "reopening clears lost_at");
        assert!(
            reopened.lost_reason.is_none(),
            "reopening clears the reason"
        );
        assert!(reopened.won_at.is_none());
        let won = ok(
            tx.move_deal(d.id, reopened.version, &s.won, None).await,
            "win after reopening",
        );
        assert!(won.won_at.is_some());
        let again = ok(
            tx.reopen_deal(d.id, won.version, &s.open[0]).await,
            "reopen a won deal",
        );
        assert!(again.won_at.is_none(), "reopening clears won_at");
        assert_eq!(again.stage, s.open[0]);
        assert_eq!(again.version, Version::new(5));
        let stored = ok(tx.get_deal(d.id).await, "get").expect("d");
        assert_same(&stored, &again, "the reopen is stored");
    })
    .await;
}

/// Moving to the deal's own stage, or giving a lost reason when not
/// losing, is `InvalidTransition`; a stage outside the pipeline is a
/// validation error.
pub async fn refused_moves_are_invalid_transitions_and_unknown_stages_validation_errors(
    store: &DynStore,
) {
    let t = TenantId::new();
    let s = default_stages(store);
    let c = create(store, t, new_contact("mover@example.com", "Mo", "Ver")).await;
    let d = deal(store, t, new_deal(c.id, "Stay", "1", "EUR")).await;
    with_tx!(store, t, async |tx| {
        expect_invalid_transition(
            tx.move_deal(d.id, d.version, &d.stage, None).await,
            &d.stage,
            &d.stage,
            "moving to the same stage",
        );
        expect_invalid_transition(
            tx.move_deal(d.id, d.version, &s.open[1], Some(lost_reason("why")))
                .await,
            &d.stage,
            &s.open[1],
            "a lost reason on an open move",
        );
        expect_invalid_transition(
            tx.move_deal(d.id, d.version, &s.won, Some(lost_reason("why")))
                .await,
            &d.stage,
            &s.won,
            "a lost reason on a win",
        );
        expect_validation(
            tx.move_deal(d.id, d.version, &stage("no_such_stage"), None)
                .await,
            "stage",
            "moving to a stage outside the pipeline",
        );
        let stored = ok(tx.get_deal(d.id).await, "get").expect("d");
        assert_same(&stored, &d, "refused moves changed nothing");
        let back = ok(
            tx.move_deal(d.id, d.version, &s.open[1], None).await,
            "forward",
        );
        let back = ok(
            tx.move_deal(d.id, back.version, &s.open[0], None).await,
            "backward",
        );
        assert_eq!(
            back.stage, s.open[0],
            "open stages may be moved between in either direction"
        );
    })
    .await;
}

/// A move or reopen at a stale version is `Conflict` and changes nothing.
pub async fn a_stale_version_on_move_or_reopen_is_a_conflict(store: &DynStore) {
    let t = TenantId::new();
    let s = default_stages(store);
    let c = create(store, t, new_contact("stale.deal@example.com", "St", "Ale")).await;
    let d = deal(store, t, new_deal(c.id, "Stale", "1", "EUR")).await;
    let moved = ok(
        store
            .move_deal(t, &ctx(), d.id, d.version, &s.open[1], None)
            .await,
        "move",
    );
    expect_conflict(
        store
            .move_deal(t, &ctx(), d.id, d.version, &s.won, None)
            .await,
        Entity::Deal,
        d.id,
        1,
        2,
        "a move at a stale version",
    );
    let won = ok(
        store
            .move_deal(t, &ctx(), d.id, moved.version, &s.won, None)
            .await,
        "win",
    );
    with_tx!(store, t, async |tx| {
        expect_conflict(
            tx.reopen_deal(d.id, moved.version, &s.open[0]).await,
            Entity::Deal,
            d.id,
            2,
            3,
            "a reopen at a stale version",
        );
    })
    .await;
    assert_same(
        &get_deal(store, t, d.id).await.expect("d"),
        &won,
        "conflicts changed nothing",
    );
}

/// Every pipeline the store knows is honoured: deals start in its first
/// open stage, move along its stages, and its summary lists its stages in
/// its order; a stage of another pipeline is a validation error.
pub async fn every_configured_pipeline_is_honoured(store: &DynStore) {
    let t = TenantId::new();
    let pipelines: Vec<Pipeline> = store.pipelines().iter().cloned().collect();
    assert!(
        pipelines
            .iter()
            .any(|p| p.key() == &PipelineKey::default_pipeline()),
        "the store knows the default pipeline"
    );
    let c = create(
        store,
        t,
        new_contact("pipelines@example.com", "Pipe", "Lines"),
    )
    .await;
    let mut parked_deals = Vec::new();
    for p in &pipelines {
        let s = stages_of(p);
        let d = deal(
            store,
            t,
            NewDeal {
                pipeline: p.key().clone(),
                ..new_deal(c.id, "In a pipeline", "10", "EUR")
            },
        )
        .await;
        assert_eq!(&d.pipeline, p.key());
        assert_eq!(
            d.stage,
            p.first_open_stage().key,
            "starts in {}'s first open stage",
            p.key()
        );
        let mut cur = d.clone();
        for to in s.open[1..].iter().chain([&s.won]) {
            cur = ok(
                store
                    .move_deal(t, &ctx(), cur.id, cur.version, to, None)
                    .await,
                &format!("move in {} to {to}", p.key()),
            );
        }
        assert!(cur.won_at.is_some());
        // A second deal stays in the second open stage (whose key another
        // pipeline may share).
        let parked = deal(
            store,
            t,
            NewDeal {
                pipeline: p.key().clone(),
                ..new_deal(c.id, "Parked", "5", "USD")
            },
        )
        .await;
        let parked = ok(
            store
                .move_deal(t, &ctx(), parked.id, parked.version, &s.open[1], None)
                .await,
            "park",
        );
        parked_deals.push((p.key().clone(), s.open[1].clone(), parked.id));
        for other in &pipelines {
            if let Some(foreign) = other.stages().iter().find(|x| p.stage(&x.key).is_none()) {
                let fresh = deal(
                    store,
                    t,
                    NewDeal {
                        pipeline: p.key().clone(),
                        ..new_deal(c.id, "Foreign", "1", "EUR")
                    },
                )
                .await;
                expect_validation(
                    store
                        .move_deal(t, &ctx(), fresh.id, fresh.version, &foreign.key, None)
                        .await,
                    "stage",
                    &format!(
                        "moving a {} deal to {}'s stage {}",
                        p.key(),
                        other.key(),
                        foreign.key
                    ),
                );
                expect_validation(
                    store
                        .create_deal(
                            t,
                            &ctx(),
                            NewDeal {
                                pipeline: p.key().clone(),
                                stage: Some(foreign.key.clone()),
                                ..new_deal(c.id, "Foreign start", "1", "EUR")
                            },
                        )
                        .await,
                    "stage",
                    &format!(
                        "starting a {} deal in {}'s stage {}",
                        p.key(),
                        other.key(),
                        foreign.key
                    ),
                );
                assert!(
                    ok(
                        with_tx!(store, t, async |tx| tx.delete_deal(fresh.id).await).await,
                        "delete"
                    ),
                    "the helper deal is deleted"
                );
            }
        }
    }
    for (pipeline, stage_key, parked) in &parked_deals {
        let listed = with_tx!(store, t, async |tx| ok(
            tx.list_deals_in_stage(pipeline, stage_key, &PageRequest::first(10))
                .await,
            "deals in stage"
        ))
        .await;
        assert_eq!(
            listed.items.iter().map(|d| d.id).collect::<Vec<_>>(),
            vec![*parked],
            "stage {stage_key} of {pipeline} lists only that pipeline's deal"
        );
    }
    for p in &pipelines {
        let summary = ok(store.pipeline_summary(t, &ctx(), p.key()).await, "summary");
        assert_eq!(&summary.pipeline, p.key());
        let got: Vec<(&StageKey, &str, StageKind, u8)> = summary
            .stages
            .iter()
            .map(|x| (&x.stage, x.label.as_str(), x.kind, x.win_probability))
            .collect();
        let want: Vec<(&StageKey, &str, StageKind, u8)> = p
            .stages()
            .iter()
            .map(|x| (&x.key, x.label.as_str(), x.kind, x.win_probability))
            .collect();
        assert_eq!(
            got,
            want,
            "the summary of {} lists its stages in order",
            p.key()
        );
        let counted: u64 = summary
            .stages
            .iter()
            .flat_map(|x| &x.totals)
            .map(|x| x.count)
            .sum();
        assert_eq!(
            counted,
            2,
            "the summary of {} counts only its own two deals",
            p.key()
        );
    }
}

/// Deal lists (of a contact, of a stage) are newest first, ties broken by
/// id descending, and paging visits every deal once.
pub async fn deal_lists_are_newest_first_and_page_through_every_deal(store: &DynStore) {
    let t = TenantId::new();
    let s = default_stages(store);
    let x = create(store, t, new_contact("x@example.com", "X", "X")).await;
    let y = create(store, t, new_contact("y@example.com", "Y", "Y")).await;
    let mut made: Vec<Deal> = with_tx!(store, t, async |tx| {
        let mut v = Vec::new();
        for i in 0..3 {
            v.push(ok(
                tx.create_deal(new_deal(x.id, &format!("x{i}"), "1", "EUR"))
                    .await,
                "deal",
            ));
        }
        v.push(ok(
            tx.create_deal(new_deal(y.id, "y0", "1", "EUR")).await,
            "deal",
        ));
        v
    })
    .await;
    for i in 3..7 {
        tick().await;
        made.push(deal(store, t, new_deal(x.id, &format!("x{i}"), "1", "EUR")).await);
    }
    tick().await;
    made.push(deal(store, t, new_deal(y.id, "y1", "1", "EUR")).await);
    // Move two of x's deals on.
    for i in [1, 4] {
        let d = &made[i];
        made[i] = ok(
            store
                .move_deal(t, &ctx(), d.id, d.version, &s.open[1], None)
                .await,
            "move",
        );
    }
    let newest_first = |ds: Vec<&Deal>| -> Vec<DealId> {
        let mut v = ds;
        v.sort_by_key(|d| (d.created_at, d.id));
        v.reverse();
        v.into_iter().map(|d| d.id).collect()
    };
    let of_x = newest_first(made.iter().filter(|d| d.contact_id == x.id).collect());
    assert_eq!(of_x[0], made[7].id, "the last deal created is listed first");
    let in_first = newest_first(made.iter().filter(|d| d.stage == s.open[0]).collect());
    let in_second = newest_first(made.iter().filter(|d| d.stage == s.open[1]).collect());
    assert_eq!(in_second.len(), 2);

    let context = ctx();
    for limit in [1, 3, 1000] {
        let got = collect_pages!(limit, async |page| {
            with_tx!(store, t, async |tx| {
                ok(tx.list_deals_for_contact(x.id, &page).await, "deals of x")
            })
            .await
        })
        .await;
        assert_eq!(
            got.iter().map(|d| d.id).collect::<Vec<_>>(),
            of_x,
            "deals of a contact, limit {limit}"
        );
        for (stage_key, want) in [(&s.open[0], &in_first), (&s.open[1], &in_second)] {
            let got = collect_pages!(limit, async |page| {
                let mut tx = ok(store.begin(t, context.clone()).await, "begin");
                let out = ok(
                    tx.list_deals_in_stage(s.pipeline.key(), stage_key, &page)
                        .await,
                    "deals in stage",
                );
                ok(tx.commit().await, "commit");
                out
            })
            .await;
            assert_eq!(
                &got.iter().map(|d| d.id).collect::<Vec<_>>(),
                want,
                "deals in {stage_key}, limit {limit}"
            );
        }
    }
    let won_list = with_tx!(store, t, async |tx| {
        ok(
            tx.list_deals_in_stage(s.pipeline.key(), &s.won, &PageRequest::first(10))
                .await,
            "won",
        )
    })
    .await;
    assert!(won_list.items.is_empty(), "an empty stage lists nothing");
}

/// Deleting a deal unlinks its activities (they stay, with no deal) and
/// returns `true`, then `false`.
pub async fn deleting_a_deal_unlinks_its_activities(store: &DynStore) {
    let t = TenantId::new();
    let c = create(store, t, new_contact("unlink@example.com", "Un", "Link")).await;
    let (d, other, linked, unlinked, other_linked) = with_tx!(store, t, async |tx| {
        let d = ok(
            tx.create_deal(new_deal(c.id, "Doomed", "1", "EUR")).await,
            "deal",
        );
        let other = ok(
            tx.create_deal(new_deal(c.id, "Other", "1", "EUR")).await,
            "deal",
        );
        let linked = ok(
            tx.log_activity(
                NewActivity::new(c.id, ActivityKind::Meeting)
                    .deal(d.id)
                    .subject(Subject::parse("Kick-off").expect("subject"))
                    .direction(Direction::Outbound),
            )
            .await,
            "activity",
        );
        let unlinked = ok(
            tx.log_activity(NewActivity::new(c.id, ActivityKind::Note))
                .await,
            "activity",
        );
        let other_linked = ok(
            tx.log_activity(NewActivity::new(c.id, ActivityKind::Call).deal(other.id))
                .await,
            "activity",
        );
        (d, other, linked, unlinked, other_linked)
    })
    .await;
    let deleted = with_tx!(store, t, async |tx| ok(
        tx.delete_deal(d.id).await,
        "delete"
    ))
    .await;
    assert!(deleted, "deleting an existing deal returns true");
    assert!(get_deal(store, t, d.id).await.is_none(), "the deal is gone");
    assert!(
        get_deal(store, t, other.id).await.is_some(),
        "the other deal stays"
    );
    let timeline = timeline_all(store, t, c.id).await;
    let find = |id| {
        timeline
            .iter()
            .find(|a| a.id == id)
            .cloned()
            .unwrap_or_else(|| panic!("activity {id} stays on the timeline"))
    };
    let mut expected = linked.clone();
    expected.deal_id = None;
    assert_same(
        &find(linked.id),
        &expected,
        "the deal's activity is unlinked, otherwise unchanged",
    );
    assert_same(
        &find(unlinked.id),
        &unlinked,
        "an unlinked activity is unchanged",
    );
    assert_same(
        &find(other_linked.id),
        &other_linked,
        "another deal's activity keeps its link",
    );
    assert_eq!(timeline.len(), 3);
    let again = with_tx!(store, t, async |tx| ok(
        tx.delete_deal(d.id).await,
        "delete again"
    ))
    .await;
    assert!(!again, "deleting a missing deal returns false");
}

// ------------------------------------------------------------------------
// Pipeline summary
// ------------------------------------------------------------------------

/// The summary counts and sums each stage's deals per currency (never
/// adding currencies), weights them by the stage's probability, exactly in
/// decimal, and lists empty stages too, in pipeline order.
pub async fn pipeline_summary_sums_per_stage_and_currency_exactly(store: &DynStore) {
    let t = TenantId::new();
    let s = default_stages(store);
    let c = create(store, t, new_contact("summary@example.com", "Sum", "Mary")).await;
    // (amount, currency, stage to move to, lost reason)
    let plan: Vec<(&str, &str, Option<&StageKey>, Option<&str>)> = vec![
        ("0.1", "EUR", None, None),
        ("0.2", "EUR", None, None),
        ("100", "USD", None, None),
        ("1000.5", "EUR", Some(&s.open[1]), None),
        ("0.0001", "EUR", Some(&s.open[1]), None),
        ("50", "USD", Some(&s.won), None),
        ("7", "EUR", Some(&s.lost), Some("too expensive")),
        ("999999999999.9999", "USD", Some(&s.won), None),
    ];
    let mut expected: BTreeMap<(StageKey, &str), (u64, Decimal)> = BTreeMap::new();
    with_tx!(store, t, async |tx| {
        for (amount, currency, to, reason) in &plan {
            let d = ok(
                tx.create_deal(new_deal(c.id, "Sum", amount, currency))
                    .await,
                "deal",
            );
            let d = match to {
                Some(to) => ok(
                    tx.move_deal(d.id, d.version, to, reason.map(lost_reason))
                        .await,
                    "move",
                ),
                None => d,
            };
            let e = expected
                .entry((d.stage.clone(), *currency))
                .or_insert((0, Decimal::ZERO));
            e.0 += 1;
            e.1 += dec(amount);
        }
    })
    .await;
    let summary = ok(
        store.pipeline_summary(t, &ctx(), s.pipeline.key()).await,
        "summary",
    );
    assert_eq!(&summary.pipeline, s.pipeline.key());
    assert_eq!(
        summary.stages.iter().map(|x| &x.stage).collect::<Vec<_>>(),
        s.pipeline
            .stages()
            .iter()
            .map(|x| &x.key)
            .collect::<Vec<_>>(),
        "every stage is listed, in pipeline order"
    );
    for (st, def) in summary.stages.iter().zip(s.pipeline.stages()) {
        assert_eq!(st.label, def.label);
        assert_eq!(st.kind, def.kind);
        assert_eq!(st.win_probability, def.win_probability);
        let want: Vec<CurrencyTotal> = expected
            .iter()
            .filter(|((k, _), _)| k == &def.key)
            .map(|((_, cur), (n, sum))| CurrencyTotal {
                currency: Currency::parse(cur).expect("currency"),
                count: *n,
                sum: *sum,
                weighted: *sum * Decimal::from(def.win_probability) / Decimal::ONE_HUNDRED,
            })
            .collect();
        assert_eq!(
            st.totals, want,
            "stage {}: count, sum and weighted sum per currency, ordered by currency code",
            def.key
        );
    }
    let first = &summary.stages[0];
    let eur = first
        .totals
        .iter()
        .find(|x| x.currency.code() == "EUR")
        .expect("EUR in the first stage");
    assert_eq!(eur.sum, dec("0.3"), "0.1 + 0.2 is exactly 0.3");
    assert_eq!(eur.count, 2);
    let usd = first
        .totals
        .iter()
        .find(|x| x.currency.code() == "USD")
        .expect("USD in the first stage");
    assert_eq!(usd.sum, dec("100"), "currencies are never added together");
    let second = &summary.stages[1];
    assert_eq!(second.totals.len(), 1);
    assert_eq!(
        second.totals[0].sum,
        dec("1000.5001"),
        "four decimal places are kept"
    );
    let won = summary
        .stages
        .iter()
        .find(|x| x.stage == s.won)
        .expect("won stage");
    assert_eq!(
        won.totals[0].sum,
        dec("1000000000049.9999"),
        "large sums are exact"
    );
    assert_eq!(
        won.totals[0].weighted, won.totals[0].sum,
        "won stages weigh 100 %"
    );
    let lost = summary
        .stages
        .iter()
        .find(|x| x.stage == s.lost)
        .expect("lost stage");
    assert_eq!(
        lost.totals[0].weighted,
        Decimal::ZERO,
        "lost stages weigh 0 %"
    );
    let empty: Vec<&StageKey> = summary
        .stages
        .iter()
        .filter(|x| x.totals.is_empty())
        .map(|x| &x.stage)
        .collect();
    assert_eq!(
        empty,
        s.open[2..].iter().collect::<Vec<_>>(),
        "stages without deals are listed with no totals"
    );
}

/// A summary of a pipeline the store does not know is a validation error
/// on `pipeline`.
pub async fn pipeline_summary_of_an_unknown_pipeline_is_a_validation_error(store: &DynStore) {
    let t = TenantId::new();
    expect_validation(
        store
            .pipeline_summary(
                t,
                &ctx(),
                &PipelineKey::parse("no_such_pipeline").expect("key"),
            )
            .await,
        "pipeline",
        "summary of an unknown pipeline",
    );
}

// ------------------------------------------------------------------------
// Activities and signals
// ------------------------------------------------------------------------

/// An activity keeps the `occurred_at` it was given; without one it
/// happened when it was logged. Every field reads back.
pub async fn log_activity_keeps_occurred_at_or_uses_the_time_of_logging(store: &DynStore) {
    let t = TenantId::new();
    let c = create(store, t, new_contact("log@example.com", "L", "Og")).await;
    let d = deal(store, t, new_deal(c.id, "Logged", "1", "EUR")).await;
    let past = truncate_to_micros(Utc::now() - Duration::days(3));
    let before = Utc::now() - Duration::seconds(5);
    let (given, now) = with_tx!(store, t, async |tx| {
        let given = ok(
            tx.log_activity(
                NewActivity::new(c.id, ActivityKind::Email)
                    .deal(d.id)
                    .direction(Direction::Inbound)
                    .subject(Subject::parse("Re: pricing").expect("subject"))
                    .body("Line one\nLine two — ünïcödé ✓")
                    .expect("body")
                    .occurred_at(past),
            )
            .await,
            "log with occurred_at",
        );
        let now = ok(
            tx.log_activity(NewActivity::new(c.id, ActivityKind::Task))
                .await,
            "log now",
        );
        let long_body = "é".repeat(crate::domain::MAX_BODY_CHARS);
        let long = ok(
            tx.log_activity(
                NewActivity::new(c.id, ActivityKind::Note)
                    .body(&long_body)
                    .expect("a body of the largest size")
                    .occurred_at(past - Duration::days(1)),
            )
            .await,
            "log the largest body",
        );
        assert_eq!(
            long.body.as_deref(),
            Some(long_body.as_str()),
            "the largest body is kept whole"
        );
        (given, now)
    })
    .await;
    assert_eq!(given.occurred_at, past, "the given occurred_at is kept");
    assert_eq!(given.tenant_id, t);
    assert_eq!(given.contact_id, c.id);
    assert_eq!(given.deal_id, Some(d.id));
    assert_eq!(given.kind, ActivityKind::Email);
    assert_eq!(given.direction, Some(Direction::Inbound));
    assert_eq!(
        given.subject.as_ref().map(Subject::as_str),
        Some("Re: pricing")
    );
    assert_eq!(
        given.body.as_deref(),
        Some("Line one\nLine two — ünïcödé ✓")
    );
    assert!(
        given.created_at >= before,
        "created_at is the time of logging"
    );
    assert_micros(given.created_at, "an activity's created_at");
    assert_eq!(
        now.occurred_at, now.created_at,
        "without occurred_at, it is the time of logging"
    );
    assert!(now.occurred_at >= before);
    assert_micros(now.occurred_at, "an activity's occurred_at");
    assert!(
        now.deal_id.is_none()
            && now.direction.is_none()
            && now.subject.is_none()
            && now.body.is_none()
    );
    let timeline = timeline_all(store, t, c.id).await;
    assert_eq!(timeline.len(), 3);
    assert_eq!(
        timeline[2].body.as_ref().map(|b| b.chars().count()),
        Some(crate::domain::MAX_BODY_CHARS),
        "the largest body reads back whole"
    );
    assert_same(&timeline[0], &now, "the newest activity reads back first");
    assert_same(&timeline[1], &given, "the older activity reads back second");
}

/// An activity linked to another contact's deal is a validation error on
/// `deal_id`; a missing contact or deal is `NotFound`. Nothing is logged.
pub async fn log_activity_refuses_a_deal_of_another_contact_and_missing_records(store: &DynStore) {
    let t = TenantId::new();
    let a = create(store, t, new_contact("a@example.com", "A", "A")).await;
    let b = create(store, t, new_contact("b@example.com", "B", "B")).await;
    let bd = deal(store, t, new_deal(b.id, "B's", "1", "EUR")).await;
    let ghost = ContactId::new();
    let ghost_deal = DealId::new();
    with_tx!(store, t, async |tx| {
        expect_validation(
            tx.log_activity(NewActivity::new(a.id, ActivityKind::Call).deal(bd.id))
                .await,
            "deal_id",
            "an activity on another contact's deal",
        );
        expect_not_found(
            tx.log_activity(NewActivity::new(ghost, ActivityKind::Call))
                .await,
            Entity::Contact,
            ghost,
            "an activity on a missing contact",
        );
        expect_not_found(
            tx.log_activity(NewActivity::new(a.id, ActivityKind::Call).deal(ghost_deal))
                .await,
            Entity::Deal,
            ghost_deal,
            "an activity on a missing deal",
        );
    })
    .await;
    assert!(
        timeline_all(store, t, a.id).await.is_empty(),
        "nothing was logged for a"
    );
    assert!(
        timeline_all(store, t, b.id).await.is_empty(),
        "nothing was logged for b"
    );
}

/// The timeline is newest first by `occurred_at`, equal times by id
/// descending, only the contact's own activities, and paging visits each
/// once.
pub async fn timeline_is_newest_first_and_pages_through_every_activity(store: &DynStore) {
    let t = TenantId::new();
    let c = create(
        store,
        t,
        new_contact("busy.timeline@example.com", "Ti", "Meline"),
    )
    .await;
    let other = create(
        store,
        t,
        new_contact("other.timeline@example.com", "Ot", "Her"),
    )
    .await;
    let base = truncate_to_micros(Utc::now() - Duration::days(10));
    let logged: Vec<Activity> = with_tx!(store, t, async |tx| {
        let mut v = Vec::new();
        for n in 0..23i64 {
            // A shuffled order of logging; groups of three share a time.
            let i = (n * 7) % 23;
            let at = base + Duration::minutes(i / 3) + Duration::microseconds(1);
            v.push(ok(
                tx.log_activity(NewActivity::new(c.id, ActivityKind::Note).occurred_at(at))
                    .await,
                "activity",
            ));
            ok(
                tx.log_activity(NewActivity::new(other.id, ActivityKind::Note).occurred_at(at))
                    .await,
                "other's activity",
            );
        }
        v
    })
    .await;
    let mut expected: Vec<&Activity> = logged.iter().collect();
    expected.sort_by_key(|a| (a.occurred_at, a.id));
    expected.reverse();
    let expected: Vec<_> = expected.into_iter().map(|a| a.id).collect();
    let context = ctx();
    for limit in [5, 1, 23, 1000] {
        let got = collect_pages!(limit, async |page| {
            ok(
                store.timeline(t, &context, c.id, &page).await,
                "timeline page",
            )
        })
        .await;
        assert_eq!(
            got.iter().map(|a| a.id).collect::<Vec<_>>(),
            expected,
            "the timeline with limit {limit} is newest first, ties by id descending"
        );
    }
    let first = ok(
        store
            .timeline(t, &context, c.id, &PageRequest::first(5))
            .await,
        "first page",
    );
    assert_eq!(first.items.len(), 5);
    assert!(first.next_cursor.is_some(), "more follow after five of 23");
}

/// The timeline and the signals of a contact that does not exist are empty.
pub async fn timeline_and_signals_of_a_missing_contact_are_empty(store: &DynStore) {
    let t = TenantId::new();
    let ghost = ContactId::new();
    with_tx!(store, t, async |tx| {
        let page = ok(
            tx.timeline(ghost, &PageRequest::first(10)).await,
            "timeline",
        );
        assert!(
            page.items.is_empty() && page.next_cursor.is_none(),
            "an empty timeline"
        );
        assert!(
            ok(tx.list_signals(ghost).await, "signals").is_empty(),
            "no signals"
        );
        let deals = ok(
            tx.list_deals_for_contact(ghost, &PageRequest::first(10))
                .await,
            "deals",
        );
        assert!(deals.items.is_empty(), "no deals");
    })
    .await;
}

/// Signals are listed oldest first by `occurred_at`, then id, and keep
/// their kind and time.
pub async fn signals_are_listed_oldest_first(store: &DynStore) {
    let t = TenantId::new();
    let c = create(store, t, new_contact("signals@example.com", "Sig", "Nals")).await;
    let other = create(store, t, new_contact("quiet@example.com", "Qui", "Et")).await;
    let base = truncate_to_micros(Utc::now() - Duration::days(2));
    let custom = SignalKind::parse("webinar_attended").expect("kind");
    let recorded = with_tx!(store, t, async |tx| {
        let mut v = Vec::new();
        for (hours, kind) in [
            (5, SignalKind::EMAIL_OPEN),
            (1, SignalKind::PAGE_VIEW),
            (3, custom.clone()),
            (1, SignalKind::DEMO_REQUEST),
            (1, SignalKind::EMAIL_CLICK),
        ] {
            v.push(ok(
                tx.record_signal(
                    NewSignal::new(c.id, kind).occurred_at(base + Duration::hours(hours)),
                )
                .await,
                "signal",
            ));
        }
        let now = ok(
            tx.record_signal(NewSignal::new(c.id, SignalKind::FORM_SUBMIT))
                .await,
            "now",
        );
        assert_micros(now.occurred_at, "a signal's occurred_at");
        assert!(
            now.occurred_at > base + Duration::hours(5),
            "no occurred_at means now"
        );
        v.push(now);
        v
    })
    .await;
    assert!(
        recorded
            .iter()
            .all(|s| s.tenant_id == t && s.contact_id == c.id)
    );
    let mut expected = recorded.clone();
    expected.sort_by_key(|s| (s.occurred_at, s.id));
    let listed = with_tx!(store, t, async |tx| ok(
        tx.list_signals(c.id).await,
        "signals"
    ))
    .await;
    assert_same(&listed, &expected, "signals oldest first, ties by id");
    let quiet = with_tx!(store, t, async |tx| ok(
        tx.list_signals(other.id).await,
        "signals"
    ))
    .await;
    assert!(quiet.is_empty(), "another contact's signals are not listed");
}

/// Recording a signal for a contact that does not exist is `NotFound`.
pub async fn recording_a_signal_for_a_missing_contact_is_not_found(store: &DynStore) {
    let t = TenantId::new();
    let ghost = ContactId::new();
    with_tx!(store, t, async |tx| {
        expect_not_found(
            tx.record_signal(NewSignal::new(ghost, SignalKind::PAGE_VIEW))
                .await,
            Entity::Contact,
            ghost,
            "a signal for a missing contact",
        );
        assert!(ok(tx.list_signals(ghost).await, "signals").is_empty());
    })
    .await;
}

// ------------------------------------------------------------------------
// Scores
// ------------------------------------------------------------------------

/// `write_scores` returns how many scores actually changed; unknown ids
/// and other tenants' ids are ignored.
pub async fn write_scores_counts_real_changes_and_ignores_unknown_and_foreign_ids(
    store: &DynStore,
) {
    let t = TenantId::new();
    let other = TenantId::new();
    let c1 = create(store, t, new_contact("s1@example.com", "S", "One")).await;
    let c2 = create(store, t, new_contact("s2@example.com", "S", "Two")).await;
    let c3 = create(store, t, new_contact("s3@example.com", "S", "Three")).await;
    let foreign = create(store, other, new_contact("s1@example.com", "F", "Oreign")).await;
    let writes = [
        (c1.id, score(10)),
        (c2.id, score(0)),
        (ContactId::new(), score(50)),
        (foreign.id, score(70)),
        (c3.id, score(100)),
    ];
    let changed = with_tx!(store, t, async |tx| ok(
        tx.write_scores(&writes).await,
        "write"
    ))
    .await;
    assert_eq!(
        changed, 2,
        "two scores changed (c2 already had 0; unknown and foreign ids ignored)"
    );
    assert_eq!(get(store, t, c1.id).await.expect("c1").score, score(10));
    assert_eq!(get(store, t, c2.id).await.expect("c2").score, score(0));
    assert_eq!(get(store, t, c3.id).await.expect("c3").score, score(100));
    assert_same(
        &get(store, other, foreign.id).await.expect("foreign"),
        &foreign,
        "another tenant's contact is untouched",
    );
    let again = with_tx!(store, t, async |tx| ok(
        tx.write_scores(&writes).await,
        "write again"
    ))
    .await;
    assert_eq!(again, 0, "writing the same scores again changes nothing");
    let none = with_tx!(store, t, async |tx| ok(
        tx.write_scores(&[]).await,
        "write nothing"
    ))
    .await;
    assert_eq!(none, 0, "an empty write changes nothing");
}

/// A score write-back keeps the version and `updated_at`, and the score
/// sort and filters see the new scores.
pub async fn write_scores_keeps_version_and_updated_at_and_feeds_the_score_sort(store: &DynStore) {
    let t = TenantId::new();
    let mut cs = Vec::new();
    for i in 0..5 {
        cs.push(
            create(
                store,
                t,
                new_contact(&format!("lead{i}@example.com"), "Lead", &format!("N{i}")),
            )
            .await,
        );
    }
    tick().await;
    let scores = [30, 90, 0, 60, 90];
    let pairs: Vec<(ContactId, Score)> = cs.iter().map(|c| c.id).zip(scores.map(score)).collect();
    let changed = with_tx!(store, t, async |tx| ok(
        tx.write_scores(&pairs).await,
        "write"
    ))
    .await;
    assert_eq!(changed, 4, "four scores differ from 0");
    let mut fresh = Vec::new();
    for (c, s) in cs.iter().zip(scores) {
        let now = get(store, t, c.id).await.expect("exists");
        assert_eq!(now.score, score(s));
        assert_eq!(now.version, c.version, "a score write keeps the version");
        assert_eq!(
            now.updated_at, c.updated_at,
            "a score write keeps updated_at"
        );
        let mut expected = c.clone();
        expected.score = score(s);
        assert_same(&now, &expected, "only the score changed");
        fresh.push(now);
    }
    assert_eq!(
        search_ids(store, t, &all(ContactSort::ScoreDesc)).await,
        expected_order(ContactSort::ScoreDesc, &fresh),
        "the score sort sees the new scores"
    );
    let top = search(store, t, &ContactQuery::top_leads(2)).await;
    let mut tied = vec![cs[1].id, cs[4].id];
    tied.sort();
    tied.reverse();
    assert_eq!(
        top.items.iter().map(|c| c.id).collect::<Vec<_>>(),
        tied,
        "the top two leads are the two 90s, by id descending"
    );
    assert_eq!(
        matching(
            store,
            t,
            ContactQuery {
                min_score: Some(score(60)),
                ..ContactQuery::new()
            }
        )
        .await,
        ids(&[&fresh[1], &fresh[3], &fresh[4]]),
        "the score filter sees the new scores"
    );
    // Score changes survive a later update, which keeps them.
    let upd = ok(
        store
            .update_contact(
                t,
                &ctx(),
                cs[0].id,
                cs[0].version,
                ContactPatch {
                    first_name: Some(person("Updated")),
                    ..ContactPatch::default()
                },
            )
            .await,
        "update after a score write",
    );
    assert_eq!(upd.score, score(30), "an update keeps the written score");
}

/// An id listed more than once in one `write_scores` call gets the last
/// score given for it and counts once; not at all when that score is the
/// one it had.
pub async fn write_scores_gives_a_repeated_id_its_last_score_and_counts_it_once(store: &DynStore) {
    let t = TenantId::new();
    let a = create(store, t, new_contact("twice@example.com", "Twi", "Ce")).await;
    let b = create(store, t, new_contact("back@example.com", "Ba", "Ck")).await;
    let writes = [
        (a.id, score(10)),
        (b.id, score(30)),
        (a.id, score(20)),
        (b.id, score(0)),
    ];
    let changed = with_tx!(store, t, async |tx| ok(
        tx.write_scores(&writes).await,
        "write"
    ))
    .await;
    assert_eq!(
        changed, 1,
        "a changed once (to its last score), b ends where it began"
    );
    assert_eq!(
        get(store, t, a.id).await.expect("a").score,
        score(20),
        "the last score given wins"
    );
    assert_eq!(
        get(store, t, b.id).await.expect("b").score,
        score(0),
        "the last score given wins"
    );
}

// Declared last: the suite's helper macros must be defined before it.
mod history;
pub use history::*;
mod idempotency;
pub use idempotency::*;
mod scoring;
pub use scoring::*;
mod bulk;
pub use bulk::*;
mod keys;
pub use keys::*;
mod input;
pub use input::*;
mod cursors;
pub use cursors::*;
mod release;
pub use release::*;

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
//! [`SUITE`] lists every function by name and [`run_all`] runs them all on
//! one store, several at a time. You may also call the functions one by one, for
//! instance to run a single point while debugging:
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = crm_core::InMemoryStore::new();
//! crm_core::conformance::get_by_email_finds_the_contact_in_any_casing(&store).await;
//! # });
//! ```

use prelude::*;

/// The crate items the suite's areas use: each area file takes them with
/// one `use super::prelude::*;`.
mod prelude {
    pub(super) use crate::{
        Actor, ContactQuery, ContactSort, Cursor, DynStore, Entity, Error, Page, PageRequest,
        Result, StoreExt, TenantId, Transaction, Version,
        bulk::{ConflictPolicy, UpsertOutcome},
        domain::{
            Activity, ActivityKind, CompanyName, Contact, ContactId, ContactPatch, ContactScore,
            Context, Currency, Deal, DealId, DealPatch, DealTitle, Direction, Email, JobTitle,
            LeadSource, LiveState, LostReason, Metadata, Money, NewActivity, NewContact,
            NewContactDto, NewDeal, NewSignal, PersonName, Phone, Pipeline, PipelineKey, Pipelines,
            Score, SignalKind, StageDef, StageKey, StageKind, Subject, Timestamp, caseless_key,
            truncate_to_micros,
        },
        history::{FieldQuery, HistoryEntity, HistoryEntry, Operation, erased_email},
        idempotency::{
            Claim, ClaimTiming, Execution, Fingerprint, GuardConfig, HandlerError, HandlerFuture,
            IdempotencyClaim, IdempotencyGuard, IdempotencyKey, IdempotencySource, InboundEvent,
            Outcome, StoredResult, WaitPolicy, handler,
        },
        scoring::{
            InputsRequest, RescoreOptions, RescoreReport, ScoringModel, explain, live_score,
            live_top_leads, rescore, rescore_in_transaction,
        },
        store::{CurrencyTotal, MAX_PAGE_SIZE},
    };
}

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
///
/// Against a backend that is not always at hand (a service that only some
/// machines run): `optional`, and an expression that yields an `Option` of
/// the store; a test given `None` passes at once, so the factory should say
/// why (and how to provide the service) when it gives `None`:
///
/// ```ignore
/// crm_core::conformance_tests!(optional async { my_cluster_store().await });
/// ```
#[macro_export]
macro_rules! conformance_tests {
    (optional $make_store:expr) => {
        $crate::__conformance_suite!(__conformance_tests_expand_optional; $make_store);
    };
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
            batch_reads_return_the_records_that_exist_in_the_order_asked,
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
            listing_an_unknown_pipeline_or_stage_is_a_validation_error,
            log_activity_keeps_occurred_at_or_uses_the_time_of_logging,
            log_activity_refuses_a_deal_of_another_contact_and_missing_records,
            timeline_is_newest_first_and_pages_through_every_activity,
            timeline_and_signals_of_a_missing_contact_are_empty,
            first_pages_of_many_contacts_are_their_own_lists_first_pages,
            signals_of_many_contacts_are_their_own_lists,
            signals_are_listed_oldest_first,
            recording_a_signal_for_a_missing_contact_is_not_found,
            a_batch_leaves_what_the_single_calls_in_order_leave,
            a_batch_with_a_refused_row_writes_nothing_and_names_the_row,
            an_empty_batch_writes_nothing,
            a_batch_over_many_contacts_leaves_each_as_the_single_calls_do,
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
            rescoring_writes_exactly_the_models_scores_in_any_chunk_size,
            each_chunk_of_scoring_inputs_holds_its_contacts_inputs_and_nobody_elses,
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
            a_scoped_handle_wins_and_loses_deals_in_every_pipeline,
            a_scope_keeps_to_its_tenant_and_context_and_a_failed_call_ends_its_transaction,
            one_call_reads_answer_as_reads_in_a_writing_transaction,
            a_created_tag_reads_back_by_id_and_by_name_in_any_casing,
            a_tag_name_held_in_another_casing_is_refused_naming_its_holder,
            concurrent_creates_of_one_tag_name_in_twenty_casings_let_exactly_one_win,
            renaming_a_tag_checks_its_version_and_refuses_a_taken_name,
            concurrent_renames_into_one_name_let_exactly_one_win,
            concurrent_attaches_of_one_tag_attach_it_once,
            tags_are_listed_by_caseless_name_and_paged_through,
            attaching_and_detaching_a_tag_is_idempotent,
            attaching_to_a_missing_record_or_with_a_missing_tag_is_not_found,
            tags_of_lists_a_records_tags_by_name,
            tags_of_many_gives_each_record_listed_its_tags_in_order,
            deleting_a_tag_detaches_it_everywhere,
            deleting_a_contact_or_a_deal_removes_their_taggings,
            attaching_and_detaching_are_recorded_in_history,
            rolled_back_tag_writes_leave_no_trace,
            contact_search_filters_by_tags_any_all_and_none,
            paging_through_a_tag_filtered_search_visits_every_match_once,
            a_tag_filter_naming_more_than_the_maximum_is_refused_naming_the_side,
            a_created_task_comes_back_with_every_field,
            a_task_linked_to_a_missing_record_is_refused_and_writes_nothing,
            a_task_update_is_versioned_and_a_no_op_keeps_the_version,
            completing_and_reopening_a_task_change_it_once,
            task_times_out_of_range_are_refused_naming_them,
            open_tasks_come_by_due_time_undated_last_ties_by_id,
            overdue_tasks_respect_now_and_the_assignee,
            the_tasks_of_a_record_come_newest_first,
            deleting_a_contact_or_a_deal_unlinks_its_tasks,
            merging_contacts_moves_the_losers_tasks_to_the_survivor,
            a_task_list_cursor_is_refused_for_other_parameters,
            a_tasks_history_records_creation_changes_and_deletion,
            contacts_and_deals_keep_their_company_and_owner_through_create_and_update,
            linking_to_a_missing_company_is_not_found_and_writes_nothing,
            a_new_contact_is_linked_by_its_email_domain_unless_free_mail_or_named,
            contact_search_filters_by_owner_and_company_through_pages,
            reassigning_an_owner_moves_exactly_their_records_of_the_kind_asked,
            the_history_of_contacts_and_deals_records_company_and_owner,
            create_then_get_returns_the_same_company_by_id_and_by_domain,
            creating_a_company_with_a_taken_domain_in_another_spelling_is_refused,
            concurrent_creates_of_one_company_domain_let_exactly_one_win,
            creates_and_updates_racing_for_one_domain_let_exactly_one_win,
            update_company_checks_the_version_and_a_no_op_keeps_it,
            changing_a_company_domain_to_a_taken_one_is_refused_and_the_transaction_goes_on,
            deleting_a_company_returns_true_once_and_keeps_other_records,
            deleting_a_company_detaches_its_tags_and_unlinks_its_tasks,
            links_racing_a_company_delete_come_first_or_find_it_gone,
            company_search_filters_by_name_prefix_domain_owner_and_metadata,
            company_search_filters_by_tags_any_all_and_none,
            every_company_sort_is_a_total_order_and_paging_visits_every_match_once,
            another_tenant_cannot_see_or_change_a_company,
            company_history_records_created_updated_and_deleted,
            tasks_created_while_their_contact_is_deleted_are_unlinked_or_refused,
            tasks_created_while_their_deal_is_deleted_or_contact_merged_are_kept_or_refused,
            company_timeline_pages_the_activities_of_its_contacts_newest_first,
            deals_of_a_company_page_newest_first,
            pipeline_summary_for_a_company_counts_only_its_deals,
            merging_companies_moves_every_link_and_tag_and_fills_the_survivors_blanks,
            merging_a_company_into_itself_or_with_a_missing_one_is_refused_and_writes_nothing,
            links_racing_a_company_merge_move_with_it_or_find_the_loser_gone,
            a_contact_merge_keeps_the_survivors_company_and_owner_unless_it_has_none,
            a_contact_merge_gives_the_survivor_the_losers_tags,
            // Undoing a contact merge.
            an_unmerge_restores_the_loser_and_leaves_what_the_survivor_got_since,
            an_unmerge_refuses_or_keeps_survivor_fields_edited_since,
            an_unmerge_records_its_reason_in_every_version_it_writes,
            an_unmerge_is_refused_for_an_unknown_undone_or_orphaned_merge,
            an_unmerge_is_refused_when_the_email_is_taken_or_the_merge_purged,
            chained_merges_are_undone_newest_first,
            an_unmerge_skips_a_deal_or_tag_deleted_since,
            an_erasure_clears_the_merges_of_everyone_merged_into_the_contact,
            the_merge_of_an_erased_loser_is_undone,
            an_unmerge_restores_both_contacts_freshness,
            an_unmerged_contact_and_its_taggings_keep_one_history_chain,
            top_accounts_rank_companies_by_their_best_contacts_and_follow_every_change,
            top_accounts_of_many_contacts_are_the_ones_every_state_gives,
            top_accounts_with_extreme_and_near_tied_states_cut_where_they_rank,
            deal_search_filters_by_owner_company_contact_stage_and_tags,
            // The change feed.
            every_committed_change_is_one_event_in_commit_order,
            companies_tags_tasks_and_deletes_are_events,
            rolled_back_work_leaves_no_event_and_no_gap,
            score_write_backs_write_no_event,
            consumers_read_after_their_own_cursor,
            an_ack_commits_or_rolls_back_with_its_transaction,
            a_cursor_behind_the_retention_is_an_error,
            feed_input_is_checked,
            the_feed_is_invisible_to_another_tenant,
            an_erasure_scrubs_earlier_events,
            purging_the_history_keeps_the_events_without_their_diffs,
            both_purges_in_one_transaction_leave_nothing_of_the_purged_commits,
            a_history_purge_keeps_the_events_of_its_own_transaction,
            events_read_one_at_a_time_cross_commits,
            // Ids in external systems.
            external_ids_are_linked_read_both_ways_replaced_and_unlinked,
            an_external_id_held_by_another_record_is_refused_and_nothing_is_written,
            sync_windows_are_kept_per_system_and_kind,
            external_id_input_is_checked,
            external_ids_are_invisible_to_another_tenant,
            external_ids_roll_back_and_write_no_history_or_event,
            // Contact freshness.
            an_activity_moves_engagement_forward_and_an_older_one_does_not_move_it_back,
            signals_mark_the_email_invalid_the_job_change_and_the_unsubscription,
            verifying_stamps_the_fields_and_clears_what_it_answers,
            changing_the_email_clears_its_verification_and_bounce,
            stale_contacts_match_any_condition_stalest_first,
            stale_contacts_page_with_cursors_bound_to_the_query,
            stale_queries_are_checked,
            a_merge_takes_the_later_engagement_and_keeps_the_survivors_verifications,
            freshness_is_invisible_to_another_tenant,
            // Data quality: duplicate candidates and merge previews.
            duplicate_candidates_pair_the_same_person_written_differently,
            duplicate_pairs_page_through_every_pair_once_and_refuse_foreign_cursors,
            duplicate_companies_pair_one_organisation_written_differently,
            a_merge_preview_is_what_the_merge_writes_and_writes_nothing,
            a_merge_preview_refuses_what_the_merge_refuses,
            // Original timestamps on import.
            a_migrated_tenant_keeps_its_original_times_through_import_and_export,
            scores_of_imported_records_run_from_their_original_times,
            an_activity_imported_without_its_time_happened_when_it_was_logged,
            a_later_row_with_an_id_already_given_is_refused,
            bad_original_times_reject_their_rows_naming_the_column,
            the_stores_refuse_bad_original_times_built_directly,
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

/// Expands the suite's list into tests of a backend that may be absent:
/// `$make_store` yields an `Option`, and a test given `None` returns at
/// once (the factory says why).
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests_expand_optional {
    ([$make_store:expr] $($name:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let ::std::option::Option::Some(store) = $make_store.await else {
                    return;
                };
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

/// How many suite functions [`run_all`] runs at the same time.
pub const RUN_ALL_CONCURRENCY: usize = 16;

/// Runs every function of the suite against `store`, [`RUN_ALL_CONCURRENCY`]
/// at a time: enough to interleave the functions' transactions, few enough
/// that the ones that wait for another transaction within a bounded time
/// (an idempotency claim that waits for the first delivery) are not queued
/// behind the whole suite on a backend that serializes transactions.
pub async fn run_all(store: &DynStore) {
    use futures_util::StreamExt;
    futures_util::stream::iter(SUITE.iter().map(|(_, f)| f(store)))
        .buffer_unordered(RUN_ALL_CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
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
// `support` comes first: the areas use its helper macros.
#[macro_use]
mod support;

mod contacts;
pub use contacts::*;
mod tenancy;
pub use tenancy::*;
mod atomicity;
pub use atomicity::*;
mod search;
pub use search::*;
mod search_paging;
pub use search_paging::*;
mod deals;
pub use deals::*;
mod deal_stages;
pub use deal_stages::*;
mod pipeline_summary;
pub use pipeline_summary::*;
mod activities;
mod timeline_batch;
pub use activities::*;
pub use timeline_batch::*;
mod score_writes;
pub use score_writes::*;
mod history;
pub use history::*;
mod idempotency;
pub use idempotency::*;
mod idempotency_records;
pub use idempotency_records::*;
mod scope;
pub use scope::*;
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
mod tags;
pub use tags::*;
mod tasks;
pub use tasks::*;
mod links;
pub use links::*;
mod original_times;
pub use original_times::*;
mod companies;
pub use companies::*;
mod merges;
pub use merges::*;
mod unmerge;
pub use unmerge::*;
mod feed;
pub use feed::*;
mod external_ids;
pub use external_ids::*;
mod freshness;
pub use freshness::*;
mod duplicate_data;
pub use duplicate_data::DuplicateTenant;
mod duplicates;
pub use duplicates::*;

#![cfg(all(feature = "postgres", feature = "conformance"))]
//! Differential model-based test: random operation sequences for two
//! tenants run against `InMemoryStore` (the model) and `PostgresStore`, and
//! every step must come out the same on both.
//!
//! Each proptest case gets a fresh `InMemoryStore` and two fresh tenant ids
//! in one PostgreSQL database shared by the whole run. Every step is applied
//! to the model first, then to PostgreSQL, each in a transaction of its own
//! (begin, operation, commit — also after an error, which must leave the
//! transaction usable and write nothing); a few steps are multi-operation
//! transactions that commit, roll back or are dropped.
//!
//! The two backends make their own ids (UUID v7), so records are compared
//! through labels given in order of creation (`c0`, `d3`, `a1`, `s2`): an
//! id of either backend is replaced by its label, every field but the
//! store-made ones (ids, tenant, `created_at`, `updated_at`, `won_at`,
//! `lost_at`) is compared as it is, and the store-made timestamps through
//! the relations that the contract fixes (`updated_at` moves exactly when
//! the version does, `won_at`/`lost_at` are set exactly when the deal is
//! closed and stamped by the move that closed it, an activity without an
//! explicit `occurred_at` happened when it was logged). Errors must be of
//! the same kind with the same details: the same field errors, the same
//! versions in a conflict, the same stages and reason in a refused move,
//! and a `DuplicateEmail` or `Duplicate` naming the same (mapped) record.
//!
//! Beside contacts, deals, activities, signals and scores, the steps cover
//! companies (`co0`: create, update, delete — which unlinks contacts, deals
//! and tasks —, get, get by domain, search with owner/domain/tag filters
//! and every sort), with domains from a small pool in several spellings of
//! one normalised domain so that duplicates are frequent; contacts and
//! deals linked to companies and owners (set on create and update, and
//! contacts linked by their email's domain, free-mail ones not); owners
//! reassigned with and without a kind; tags (`k0`: created in random
//! casings so that names collide, renamed, deleted, attached to and
//! detached from contacts, companies and deals, `tags_of`, `list_tags`);
//! contact searches filtered by owner, company and tags (any/all/none); and
//! tasks (`t0`: created and updated with links and assignees, completed,
//! reopened, deleted, `open_tasks`, `overdue_tasks` at a fixed `now`,
//! `tasks_of`). Task due and done times are explicit (in 2024), so they are
//! compared as they are.
//!
//! After a transaction that did not commit and at the end of a case, the
//! stored state of both tenants is read back and compared: contacts with
//! their deals, timelines, signals and tags; companies with their tags;
//! tags; every task by label; the history of every company, tag and task
//! (values with ids replaced by labels, `created_at`/`updated_at` left
//! out); and the history of the taggings, whose ids the test never sees,
//! as a multiset of versions without the tagging's own id.
//!
//! # Why the compared orders are deterministic
//!
//! Lists are compared as sequences of labels, so their order must not rest
//! on anything the two backends make differently:
//!
//! - **Ties broken by id** (equal names, equal scores, activities with the
//!   same explicit `occurred_at`): both backends make ids with
//!   `Uuid::now_v7`, which the `uuid` crate guarantees to be ordered by
//!   creation within a process. The test creates records on both backends
//!   in the same order, so ids order alike on both.
//! - **Store-made timestamps** (contact and company search by
//!   created/updated, deal lists and `tasks_of` newest first, activities
//!   and signals without an explicit time): the steps run
//!   one after the other, each backend's step between two of the other's,
//!   so the timestamps of one backend follow the order of the steps, and
//!   ties at the same microsecond are broken by creation order (above). A
//!   search sorted by `created_at`/`updated_at` whose result nevertheless
//!   holds two contacts with the same timestamp on either backend (a clock
//!   step, a very fast machine) is compared as a set, page sizes and
//!   cursors still as sequences.
//! - Explicit `occurred_at` values lie in 2024; store-made times are "now",
//!   so the two never interleave by accident.

mod support;

use std::{collections::HashMap, sync::Mutex};

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use crm_core::{
    Actor, CompanyQuery, CompanySort, ContactQuery, ContactSort, Context, DealQuery, Error,
    InMemoryStore, Page, PageRequest, PipelineSummary, PostgresStore, Store, TagFilter, TenantId,
    Transaction, Version, conformance,
    domain::{
        Activity, ActivityKind, Company, CompanyDomain, CompanyId, CompanyName, CompanyPatch,
        Contact, ContactId, ContactPatch, Currency, Deal, DealId, DealPatch, DealTitle, Direction,
        Email, HistoryEntity, HistoryEntry, Industry, JobTitle, LeadSource, LostReason, Metadata,
        Money, NewActivity, NewCompany, NewContact, NewDeal, NewSignal, NewTag, NewTask, OwnerId,
        PersonName, Phone, PipelineKey, RecordKind, RecordRef, Score, Signal, SignalKind, StageKey,
        Subject, Tag, TagColour, TagId, TagName, TagPatch, Task, TaskId, TaskPatch, TaskPriority,
        TaskTitle,
    },
};
use proptest::{
    prelude::*,
    test_runner::{
        Config, FileFailurePersistence, RngAlgorithm, TestCaseError, TestRng, TestRunner,
    },
};
use rust_decimal::Decimal;
use support::TestStore;
use uuid::Uuid;

// ------------------------------------------------------------------------
// Test data pools: small, so that collisions are frequent.
// ------------------------------------------------------------------------

/// Emails in one casing; steps use them in random casings, so the same
/// address often arrives in another casing. The Greek and Turkish ones
/// check that both backends compare by the same caseless key.
const EMAILS: &[&str] = &[
    "ada@example.com",
    "grace.hopper@example.org",
    "émile@exemple.fr",
    "κώστας@example.gr",
    "irem@example.com.tr",
    // One key in several spellings: ß and SS, a decomposed é, a ligature.
    "straße@example.de",
    "STRASSE@example.de",
    "e\u{301}mile@exemple.fr",
    "ﬃ@example.com",
    // At a company domain of the pool, and at a free-mail one.
    "sales@Acme.com",
    "ada.l@gmail.com",
];

/// Company domains: several spellings of a few normalised domains (a URL,
/// a trailing dot, an IDN and its A-label), so that duplicates are frequent;
/// some are the domains of pool emails, which links contacts by domain.
const DOMAINS: &[&str] = &[
    "HTTPS://WWW.Acme.COM/x",
    "acme.com",
    "ACME.com.",
    "bücher.example",
    "xn--bcher-kva.example",
    "example.com",
    "Exemple.FR",
    "gmail.com",
];
const OWNERS: &[&str] = &["user:ann", "user:bob", "auth0|Ann"];
const TAG_NAMES: &[&str] = &["VIP", "vip ", "Hot lead", "Straße", "STRASSE", "Ünïcode"];
const TAG_COLOURS: &[&str] = &["#FF0000", "00ff00"];
const INDUSTRIES: &[&str] = &["Software", "Logistics"];
const TASK_TITLES: &[&str] = &["Call back", "Send contract"];

/// First and last names, with ties in other casings and letters whose
/// lower case depends on the rules used (final sigma, dotted capital I).
const FIRST_NAMES: &[&str] = &[
    "Ada",
    "ada",
    "Grace",
    "ÉMILE",
    "Κώστας",
    "İrem",
    "ﬃon",
    "FFIon",
    "E\u{301}mile",
    "ᾀ\u{305}",
];
const LAST_NAMES: &[&str] = &[
    "Lovelace",
    "LOVELACE",
    "Hopper",
    "Zola",
    "ΠΑΠΑΣ",
    "παπας",
    "Straße",
    "STRASSE",
    "Zoe\u{308}",
];
const COMPANIES: &[&str] = &[
    "Acme",
    "acme labs",
    "Initech",
    "50%_Off Ltd",
    "100\\% ß-Werk",
    "SS-Werk",
];
const TITLES: &[&str] = &["CTO", "Engineer"];
const PHONES: &[&str] = &["+44 20 7946 0000", "(555) 010-2030"];
const DEAL_TITLES: &[&str] = &["Pilot", "Renewal", "Expansion"];
const CURRENCIES: &[&str] = &["EUR", "USD", "JPY"];
const LOST_REASONS: &[&str] = &["Budget", "Went with a competitor"];
const SUBJECTS: &[&str] = &["Intro call", "Follow-up"];
/// Stage keys of both test pipelines and one that is in neither.
const STAGES: &[&str] = &[
    "qualified",
    "proposal",
    "negotiation",
    "closed_won",
    "closed_lost",
    "discovery",
    "procurement",
    "signed",
    "lost",
    "nowhere",
];
/// The conformance suite's pipelines, and one that does not exist.
const PIPELINES: &[&str] = &["default", "enterprise", "nonexistent"];
const SIGNAL_KINDS: &[&str] = &["email_open", "pricing_page_view", "demo_request"];

fn metadata(i: usize) -> Metadata {
    let v = match i % 5 {
        0 => serde_json::json!({}),
        1 => serde_json::json!({"plan": "pro"}),
        2 => serde_json::json!({"plan": "free", "seats": 3}),
        3 => serde_json::json!({"plan": "pro", "tags": ["a", "b"]}),
        // Numbers beyond f64's integers, a float that needs all its
        // digits, arrays in arrays.
        _ => serde_json::json!({
            "tags": ["a", "b"],
            "n": 9_007_199_254_740_993_u64,
            "ratio": 0.300_000_000_000_000_04,
            "nested": {"k": [1, [2]]},
        }),
    };
    Metadata::parse(v).unwrap()
}

/// `s` with each letter upper- or lower-cased by the bits of `mask`.
fn recase(s: &str, mask: u32) -> String {
    s.chars()
        .enumerate()
        .flat_map(|(i, c)| {
            let upper = mask.rotate_right(i as u32 % 32) & 1 == 1;
            let mapped: Vec<char> = if upper {
                c.to_uppercase().collect()
            } else {
                c.to_lowercase().collect()
            };
            // Keep one character per character (no `ß` → `SS`, no
            // `İ` → `i̇`), so that every casing stays a valid address.
            if mapped.len() == 1 { mapped } else { vec![c] }
        })
        .collect()
}

fn pick<'a>(pool: &[&'a str], i: usize) -> &'a str {
    pool[i % pool.len()]
}

/// An explicit time in 2024, a few minutes apart: equal values are frequent.
fn at_minute(m: u8) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 3, 1, 12, 0, 0).unwrap() + chrono::Duration::minutes(i64::from(m))
}

/// Recorded fields that each backend stamps itself.
const STORE_MADE: &[&str] = &["created_at", "updated_at"];

/// The `now` of every overdue-task list: in the middle of the due times.
fn task_now() -> DateTime<Utc> {
    at_minute(3)
}

/// Anything before this was given explicitly by the test; anything after it
/// was made by a store.
fn explicit_cutoff() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap()
}

// ------------------------------------------------------------------------
// Generated steps
// ------------------------------------------------------------------------

/// A record to act on: one created earlier (by index, modulo how many there
/// are, whatever their tenant or whether they still exist) or an id that
/// was never created.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// Any record created so far (by index, modulo their number).
    Slot(usize),
    /// One of the last few created, which more often still exist.
    Recent(usize),
    Missing,
}

impl Target {
    /// The index of the record it names among `len` created ones.
    fn index(self, len: usize) -> Option<usize> {
        match self {
            _ if len == 0 => None,
            Target::Slot(i) => Some(i % len),
            Target::Recent(k) => Some(len - 1 - k % len),
            Target::Missing => None,
        }
    }
}

/// A stage to move to: one of the deal's own pipeline (by index), or any
/// key of the pool (often in another pipeline, or in none).
#[derive(Debug, Clone, Copy)]
enum StagePick {
    OwnPipeline(usize),
    Any(usize),
}

/// Which expected version an update passes.
#[derive(Debug, Clone, Copy)]
enum VersionPick {
    Current,
    Stale,
    Ahead,
}

/// An email: from the pool, or the current email of an existing contact
/// (maybe the updated contact itself), in the given casing.
#[derive(Debug, Clone, Copy)]
enum EmailPick {
    Pool(usize, u32),
    OfContact(Target, u32),
}

#[derive(Debug, Clone)]
struct ContactPatchSpec {
    first: Option<usize>,
    last: Option<usize>,
    company: Option<Option<usize>>,
    title: Option<Option<usize>>,
    phone: Option<Option<usize>>,
    lead_source: Option<usize>,
    metadata: Option<usize>,
    active: Option<bool>,
    company_id: Option<Option<Target>>,
    owner: Option<Option<usize>>,
}

/// A contact, company or deal to tag or list the tasks of.
#[derive(Debug, Clone, Copy)]
enum RecordPick {
    Contact(Target),
    Company(Target),
    Deal(Target),
}

/// Tags to filter by: (any, all, none), each a few tag targets.
type TagFilterSpec = (Vec<Target>, Vec<Target>, Vec<Target>);

#[derive(Debug, Clone)]
enum Action {
    CreateContact {
        email: EmailPick,
        first: usize,
        last: usize,
        company: Option<usize>,
        lead_source: usize,
        metadata: usize,
        company_id: Option<Target>,
        owner: Option<usize>,
    },
    GetContact(Target),
    GetByEmail(EmailPick),
    UpdateContact {
        contact: Target,
        version: VersionPick,
        patch: ContactPatchSpec,
    },
    ChangeEmail {
        contact: Target,
        version: VersionPick,
        email: EmailPick,
    },
    Deactivate(Target),
    DeleteContact(Target),
    /// Merges the second contact into the first, with a conflict policy.
    Merge(Target, Target, usize),
    CreateDeal {
        contact: Target,
        title: usize,
        cents: i64,
        scale: u32,
        currency: usize,
        pipeline: usize,
        stage: Option<usize>,
        close_day: Option<u32>,
        company_id: Option<Target>,
        owner: Option<usize>,
    },
    GetDeal(Target),
    UpdateDeal {
        deal: Target,
        version: VersionPick,
        title: Option<usize>,
        cents: Option<(i64, usize)>,
        close_day: Option<Option<u32>>,
        company_id: Option<Option<Target>>,
        owner: Option<Option<usize>>,
    },
    MoveDeal {
        deal: Target,
        version: VersionPick,
        to: StagePick,
        lost_reason: Option<usize>,
    },
    ReopenDeal {
        deal: Target,
        version: VersionPick,
        to: StagePick,
    },
    DeleteDeal(Target),
    LogActivity {
        contact: Target,
        deal: Option<Target>,
        kind: usize,
        direction: Option<bool>,
        subject: Option<usize>,
        body: bool,
        minute: Option<u8>,
    },
    RecordSignal {
        contact: Target,
        kind: usize,
        minute: Option<u8>,
    },
    WriteScores(Vec<(Target, u8)>),
    Search {
        which: usize,
        text: usize,
        casing: u32,
        limit: u32,
    },
    Timeline {
        contact: Target,
        limit: u32,
    },
    ListDeals {
        contact: Target,
        limit: u32,
    },
    ListDealsInStage {
        pipeline: usize,
        stage: usize,
        limit: u32,
    },
    ListSignals(Target),
    Summary(usize),
    /// The live top accounts (all of them: the order, and so a cut,
    /// depends on each store's clock).
    TopAccounts,
    CreateCompany {
        name: usize,
        domain: Option<usize>,
        industry: Option<usize>,
        employees: Option<u32>,
        owner: Option<usize>,
        metadata: usize,
    },
    GetCompany(Target),
    GetCompanyByDomain(usize),
    UpdateCompany {
        company: Target,
        version: VersionPick,
        name: Option<usize>,
        domain: Option<Option<usize>>,
        industry: Option<Option<usize>>,
        owner: Option<Option<usize>>,
        metadata: Option<usize>,
    },
    DeleteCompany(Target),
    /// Merges the second company into the first.
    MergeCompanies(Target, Target),
    SearchCompanies {
        which: usize,
        text: usize,
        casing: u32,
        owner: Option<usize>,
        tags: TagFilterSpec,
        limit: u32,
    },
    /// A deal search filtered by owner, company and tags.
    SearchDeals {
        owner: Option<usize>,
        company: Option<Target>,
        tags: TagFilterSpec,
        limit: u32,
    },
    /// A contact search filtered by owner, company and tags.
    SearchLinked {
        owner: Option<usize>,
        company: Option<Target>,
        tags: TagFilterSpec,
        sort: usize,
        limit: u32,
    },
    ReassignOwner {
        from: usize,
        to: usize,
        kind: Option<usize>,
    },
    CreateTag {
        name: usize,
        casing: u32,
        colour: Option<usize>,
    },
    GetTagByName(usize, u32),
    UpdateTag {
        tag: Target,
        version: VersionPick,
        name: Option<(usize, u32)>,
        colour: Option<Option<usize>>,
    },
    DeleteTag(Target),
    AttachTag(Target, RecordPick),
    DetachTag(Target, RecordPick),
    TagsOf(RecordPick),
    ListTags(u32),
    CreateTask {
        title: usize,
        due: Option<u8>,
        assignee: Option<usize>,
        priority: usize,
        contact: Option<Target>,
        company: Option<Target>,
        deal: Option<Target>,
    },
    UpdateTask {
        task: Target,
        version: VersionPick,
        title: Option<usize>,
        due: Option<Option<u8>>,
        assignee: Option<Option<usize>>,
        priority: Option<usize>,
        contact: Option<Option<Target>>,
        company: Option<Option<Target>>,
        deal: Option<Option<Target>>,
    },
    CompleteTask(Target, u8),
    ReopenTask(Target),
    DeleteTask(Target),
    OpenTasks(usize, u32),
    OverdueTasks(Option<usize>, u32),
    TasksOf(RecordPick, u32),
}

/// How a multi-operation transaction ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Commit,
    Rollback,
    Drop,
}

#[derive(Debug, Clone)]
enum Step {
    /// One action in a transaction of its own. The tenant is the acted-on
    /// record's own (or, with `foreign`, the other one), else `tenant`.
    Single {
        tenant: usize,
        foreign: bool,
        action: Action,
    },
    /// Several actions in one transaction of `tenant`.
    Batch {
        tenant: usize,
        actions: Vec<Action>,
        end: End,
    },
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        5 => any::<usize>().prop_map(Target::Slot),
        5 => (0usize..3).prop_map(Target::Recent),
        1 => Just(Target::Missing),
    ]
}

fn stage_pick() -> impl Strategy<Value = StagePick> {
    prop_oneof![
        4 => (0usize..5).prop_map(StagePick::OwnPipeline),
        1 => (0..STAGES.len()).prop_map(StagePick::Any),
    ]
}

fn version_pick() -> impl Strategy<Value = VersionPick> {
    prop_oneof![
        8 => Just(VersionPick::Current),
        2 => Just(VersionPick::Stale),
        1 => Just(VersionPick::Ahead),
    ]
}

fn email_pick() -> impl Strategy<Value = EmailPick> {
    prop_oneof![
        3 => (0..EMAILS.len(), any::<u32>()).prop_map(|(i, m)| EmailPick::Pool(i, m)),
        1 => (target(), any::<u32>()).prop_map(|(t, m)| EmailPick::OfContact(t, m)),
    ]
}

fn small_limit() -> impl Strategy<Value = u32> {
    1u32..=3
}

fn contact_patch() -> impl Strategy<Value = ContactPatchSpec> {
    (
        proptest::option::weighted(0.3, 0..FIRST_NAMES.len()),
        proptest::option::weighted(0.3, 0..LAST_NAMES.len()),
        proptest::option::weighted(0.2, proptest::option::of(0..COMPANIES.len())),
        proptest::option::weighted(0.2, proptest::option::of(0..TITLES.len())),
        proptest::option::weighted(0.2, proptest::option::of(0..PHONES.len())),
        proptest::option::weighted(0.2, 0..LeadSource::ALL.len()),
        proptest::option::weighted(0.2, 0usize..5),
        proptest::option::weighted(0.2, any::<bool>()),
        proptest::option::weighted(0.3, proptest::option::of(target())),
        proptest::option::weighted(0.3, proptest::option::of(0..OWNERS.len())),
    )
        .prop_map(
            |(
                first,
                last,
                company,
                title,
                phone,
                lead_source,
                metadata,
                active,
                company_id,
                owner,
            )| {
                ContactPatchSpec {
                    first,
                    last,
                    company,
                    title,
                    phone,
                    lead_source,
                    metadata,
                    active,
                    company_id,
                    owner,
                }
            },
        )
}

fn create_contact() -> impl Strategy<Value = Action> {
    (
        email_pick(),
        0..FIRST_NAMES.len(),
        0..LAST_NAMES.len(),
        proptest::option::of(0..COMPANIES.len()),
        0..LeadSource::ALL.len(),
        0usize..5,
        proptest::option::weighted(0.2, target()),
        proptest::option::weighted(0.5, 0..OWNERS.len()),
    )
        .prop_map(
            |(email, first, last, company, lead_source, metadata, company_id, owner)| {
                Action::CreateContact {
                    email,
                    first,
                    last,
                    company,
                    lead_source,
                    metadata,
                    company_id,
                    owner,
                }
            },
        )
}

fn create_deal(contact: impl Strategy<Value = Target>) -> impl Strategy<Value = Action> {
    (
        contact,
        0..DEAL_TITLES.len(),
        0i64..1_000_000,
        0u32..=4,
        0..CURRENCIES.len(),
        prop_oneof![6 => Just(0usize), 3 => Just(1usize), 1 => Just(2usize)],
        proptest::option::weighted(0.15, 0..STAGES.len()),
        proptest::option::weighted(0.3, 0u32..60),
        proptest::option::weighted(0.3, target()),
        proptest::option::weighted(0.5, 0..OWNERS.len()),
    )
        .prop_map(
            |(
                contact,
                title,
                cents,
                scale,
                currency,
                pipeline,
                stage,
                close_day,
                company_id,
                owner,
            )| {
                Action::CreateDeal {
                    contact,
                    title,
                    cents,
                    scale,
                    currency,
                    pipeline,
                    stage,
                    close_day,
                    company_id,
                    owner,
                }
            },
        )
}

fn action() -> impl Strategy<Value = Action> {
    let update_deal = (
        target(),
        version_pick(),
        proptest::option::weighted(0.5, 0..DEAL_TITLES.len()),
        proptest::option::weighted(0.5, (0i64..1_000_000, 0..CURRENCIES.len())),
        proptest::option::weighted(0.3, proptest::option::of(0u32..60)),
        proptest::option::weighted(0.3, proptest::option::of(target())),
        proptest::option::weighted(0.3, proptest::option::of(0..OWNERS.len())),
    )
        .prop_map(
            |(deal, version, title, cents, close_day, company_id, owner)| Action::UpdateDeal {
                deal,
                version,
                title,
                cents,
                close_day,
                company_id,
                owner,
            },
        );
    let log_activity = (
        target(),
        proptest::option::weighted(0.4, target()),
        0..ActivityKind::ALL.len(),
        proptest::option::of(any::<bool>()),
        proptest::option::of(0..SUBJECTS.len()),
        any::<bool>(),
        proptest::option::weighted(0.85, 0u8..4),
    )
        .prop_map(|(contact, deal, kind, direction, subject, body, minute)| {
            Action::LogActivity {
                contact,
                deal,
                kind,
                direction,
                subject,
                body,
                minute,
            }
        });
    prop_oneof![
        10 => create_contact(),
        1 => target().prop_map(Action::GetContact),
        2 => email_pick().prop_map(Action::GetByEmail),
        4 => (target(), version_pick(), contact_patch()).prop_map(|(contact, version, patch)| {
            Action::UpdateContact { contact, version, patch }
        }),
        3 => (target(), version_pick(), email_pick()).prop_map(|(contact, version, email)| {
            Action::ChangeEmail { contact, version, email }
        }),
        1 => target().prop_map(Action::Deactivate),
        1 => target().prop_map(Action::DeleteContact),
        2 => (target(), target(), 0usize..3).prop_map(|(s, l, p)| Action::Merge(s, l, p)),
        8 => create_deal(target()),
        1 => target().prop_map(Action::GetDeal),
        2 => update_deal,
        10 => (target(), version_pick(), stage_pick(), proptest::option::weighted(0.5, 0..LOST_REASONS.len()))
            .prop_map(|(deal, version, to, lost_reason)| Action::MoveDeal { deal, version, to, lost_reason }),
        8 => (target(), version_pick(), stage_pick())
            .prop_map(|(deal, version, to)| Action::ReopenDeal { deal, version, to }),
        1 => target().prop_map(Action::DeleteDeal),
        5 => log_activity,
        2 => (target(), 0..SIGNAL_KINDS.len(), proptest::option::weighted(0.7, 0u8..4))
            .prop_map(|(contact, kind, minute)| Action::RecordSignal { contact, kind, minute }),
        2 => proptest::collection::vec((target(), 0u8..=100), 0..5).prop_map(Action::WriteScores),
        4 => (0usize..8, any::<usize>(), any::<u32>(), small_limit())
            .prop_map(|(which, text, casing, limit)| Action::Search { which, text, casing, limit }),
        2 => (target(), small_limit()).prop_map(|(contact, limit)| Action::Timeline { contact, limit }),
        2 => (target(), small_limit()).prop_map(|(contact, limit)| Action::ListDeals { contact, limit }),
        1 => (0..PIPELINES.len(), 0..STAGES.len(), small_limit())
            .prop_map(|(pipeline, stage, limit)| Action::ListDealsInStage { pipeline, stage, limit }),
        1 => target().prop_map(Action::ListSignals),
        1 => (0..PIPELINES.len()).prop_map(Action::Summary),
        2 => Just(Action::TopAccounts),
        6 => create_company(),
        1 => target().prop_map(Action::GetCompany),
        2 => (0..DOMAINS.len()).prop_map(Action::GetCompanyByDomain),
        4 => (
            target(),
            version_pick(),
            proptest::option::weighted(0.3, 0..COMPANIES.len()),
            proptest::option::weighted(0.6, proptest::option::weighted(0.85, 0..DOMAINS.len())),
            proptest::option::weighted(0.2, proptest::option::of(0..INDUSTRIES.len())),
            proptest::option::weighted(0.4, proptest::option::of(0..OWNERS.len())),
            proptest::option::weighted(0.2, 0usize..5),
        )
            .prop_map(|(company, version, name, domain, industry, owner, metadata)| {
                Action::UpdateCompany { company, version, name, domain, industry, owner, metadata }
            }),
        1 => target().prop_map(Action::DeleteCompany),
        2 => (target(), target()).prop_map(|(s, l)| Action::MergeCompanies(s, l)),
        3 => (0usize..6, any::<usize>(), any::<u32>(), proptest::option::of(0..OWNERS.len()), tag_filter(), small_limit())
            .prop_map(|(which, text, casing, owner, tags, limit)| {
                Action::SearchCompanies { which, text, casing, owner, tags, limit }
            }),
        3 => (
            proptest::option::of(0..OWNERS.len()),
            proptest::option::weighted(0.4, target()),
            tag_filter(),
            0usize..4,
            small_limit(),
        )
            .prop_map(|(owner, company, tags, sort, limit)| {
                Action::SearchLinked { owner, company, tags, sort, limit }
            }),
        2 => (
            proptest::option::of(0..OWNERS.len()),
            proptest::option::weighted(0.4, target()),
            tag_filter(),
            small_limit(),
        )
            .prop_map(|(owner, company, tags, limit)| {
                Action::SearchDeals { owner, company, tags, limit }
            }),
        2 => (0..OWNERS.len(), 0..OWNERS.len(), proptest::option::of(0..RecordKind::ALL.len()))
            .prop_map(|(from, to, kind)| Action::ReassignOwner { from, to, kind }),
        4 => create_tag(),
        1 => (0..TAG_NAMES.len(), any::<u32>()).prop_map(|(n, c)| Action::GetTagByName(n, c)),
        2 => (
            target(),
            version_pick(),
            proptest::option::weighted(0.7, (0..TAG_NAMES.len(), any::<u32>())),
            proptest::option::weighted(0.4, proptest::option::of(0..TAG_COLOURS.len())),
        )
            .prop_map(|(tag, version, name, colour)| Action::UpdateTag { tag, version, name, colour }),
        1 => target().prop_map(Action::DeleteTag),
        5 => (target(), record_pick()).prop_map(|(t, r)| Action::AttachTag(t, r)),
        2 => (target(), record_pick()).prop_map(|(t, r)| Action::DetachTag(t, r)),
        2 => record_pick().prop_map(Action::TagsOf),
        1 => small_limit().prop_map(Action::ListTags),
        6 => create_task(),
        4 => (
            target(),
            version_pick(),
            proptest::option::weighted(0.3, 0..TASK_TITLES.len()),
            proptest::option::weighted(0.3, proptest::option::of(0u8..6)),
            proptest::option::weighted(0.3, proptest::option::of(0..OWNERS.len())),
            proptest::option::weighted(0.2, 0..TaskPriority::ALL.len()),
            proptest::option::weighted(0.1, proptest::option::of(target())),
            proptest::option::weighted(0.1, proptest::option::of(target())),
            proptest::option::weighted(0.1, proptest::option::of(target())),
        )
            .prop_map(|(task, version, title, due, assignee, priority, contact, company, deal)| {
                Action::UpdateTask { task, version, title, due, assignee, priority, contact, company, deal }
            }),
        2 => (target(), 0u8..6).prop_map(|(t, m)| Action::CompleteTask(t, m)),
        2 => target().prop_map(Action::ReopenTask),
        1 => target().prop_map(Action::DeleteTask),
        2 => (0..OWNERS.len(), small_limit()).prop_map(|(o, l)| Action::OpenTasks(o, l)),
        2 => (proptest::option::of(0..OWNERS.len()), small_limit()).prop_map(|(o, l)| Action::OverdueTasks(o, l)),
        2 => (record_pick(), small_limit()).prop_map(|(r, l)| Action::TasksOf(r, l)),
    ]
}

fn record_pick() -> impl Strategy<Value = RecordPick> {
    prop_oneof![
        target().prop_map(RecordPick::Contact),
        target().prop_map(RecordPick::Company),
        target().prop_map(RecordPick::Deal),
    ]
}

fn tag_filter() -> impl Strategy<Value = TagFilterSpec> {
    let few = || proptest::collection::vec(target(), 0..=2);
    prop_oneof![
        2 => Just((Vec::new(), Vec::new(), Vec::new())),
        2 => (few(), few(), few()),
    ]
}

fn create_company() -> impl Strategy<Value = Action> {
    (
        0..COMPANIES.len(),
        proptest::option::weighted(0.8, 0..DOMAINS.len()),
        proptest::option::of(0..INDUSTRIES.len()),
        proptest::option::of(0u32..500),
        proptest::option::weighted(0.6, 0..OWNERS.len()),
        0usize..5,
    )
        .prop_map(|(name, domain, industry, employees, owner, metadata)| {
            Action::CreateCompany {
                name,
                domain,
                industry,
                employees,
                owner,
                metadata,
            }
        })
}

fn create_tag() -> impl Strategy<Value = Action> {
    (
        0..TAG_NAMES.len(),
        any::<u32>(),
        proptest::option::of(0..TAG_COLOURS.len()),
    )
        .prop_map(|(name, casing, colour)| Action::CreateTag {
            name,
            casing,
            colour,
        })
}

fn create_task() -> impl Strategy<Value = Action> {
    (
        0..TASK_TITLES.len(),
        proptest::option::weighted(0.7, 0u8..6),
        proptest::option::weighted(0.7, 0..OWNERS.len()),
        0..TaskPriority::ALL.len(),
        proptest::option::weighted(0.4, target()),
        proptest::option::weighted(0.3, target()),
        proptest::option::weighted(0.3, target()),
    )
        .prop_map(|(title, due, assignee, priority, contact, company, deal)| {
            Action::CreateTask {
                title,
                due,
                assignee,
                priority,
                contact,
                company,
                deal,
            }
        })
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        10 => (0usize..2, proptest::bool::weighted(0.1), action())
            .prop_map(|(tenant, foreign, action)| Step::Single { tenant, foreign, action }),
        1 => (
            0usize..2,
            proptest::collection::vec(action(), 1..5),
            prop_oneof![Just(End::Commit), Just(End::Rollback), Just(End::Drop)],
        )
            .prop_map(|(tenant, actions, end)| Step::Batch { tenant, actions, end }),
    ]
}

/// A case: a few companies, contacts, tags, a task and deals to start
/// with, then anything; 41 steps at most.
fn steps() -> impl Strategy<Value = Vec<Step>> {
    let company = (0usize..2, create_company()).prop_map(|(tenant, action)| Step::Single {
        tenant,
        foreign: false,
        action,
    });
    let first = (0usize..2, create_contact()).prop_map(|(tenant, action)| Step::Single {
        tenant,
        foreign: false,
        action,
    });
    let deal = create_deal((0usize..3).prop_map(Target::Recent)).prop_map(|action| Step::Single {
        tenant: 0,
        foreign: false,
        action,
    });
    // Sometimes the last deal is closed (won, or lost with or without a
    // reason) and reopened at once, which random steps seldom reach.
    let close_and_reopen = (
        3usize..5,
        proptest::option::of(0..LOST_REASONS.len()),
        0usize..3,
    )
        .prop_map(|(closed, lost_reason, open)| {
            let last = Target::Recent(0);
            [
                Action::MoveDeal {
                    deal: last,
                    version: VersionPick::Current,
                    to: StagePick::OwnPipeline(closed),
                    lost_reason,
                },
                Action::ReopenDeal {
                    deal: last,
                    version: VersionPick::Current,
                    to: StagePick::OwnPipeline(open),
                },
            ]
            .map(|action| Step::Single {
                tenant: 0,
                foreign: false,
                action,
            })
            .to_vec()
        });
    let tag = (0usize..2, create_tag()).prop_map(|(tenant, action)| Step::Single {
        tenant,
        foreign: false,
        action,
    });
    // A task linked to a recent contact, sometimes completed and reopened.
    let task = (create_task(), 0usize..3, 0u8..6, any::<bool>()).prop_map(
        |(action, contact, minute, reopen)| {
            let action = match action {
                Action::CreateTask {
                    title,
                    due,
                    assignee,
                    priority,
                    ..
                } => Action::CreateTask {
                    title,
                    due,
                    assignee,
                    priority,
                    contact: Some(Target::Recent(contact)),
                    company: None,
                    deal: None,
                },
                other => other,
            };
            let mut actions = vec![action, Action::CompleteTask(Target::Recent(0), minute)];
            if reopen {
                actions.push(Action::ReopenTask(Target::Recent(0)));
            }
            actions
                .into_iter()
                .map(|action| Step::Single {
                    tenant: 0,
                    foreign: false,
                    action,
                })
                .collect::<Vec<_>>()
        },
    );
    // Sometimes two companies of one owner, the second then given another
    // spelling of the first's domain, and the owner's records reassigned.
    let companies_of_one_owner = (
        0usize..3,
        0usize..3,
        0..OWNERS.len(),
        1..OWNERS.len(),
        proptest::option::of(0..RecordKind::ALL.len()),
    )
        .prop_map(|(first, second, owner, other, kind)| {
            let create = |domain| Action::CreateCompany {
                name: domain,
                domain: Some(domain),
                industry: None,
                employees: None,
                owner: Some(owner),
                metadata: 0,
            };
            [
                create(first),
                create(5),
                Action::UpdateCompany {
                    company: Target::Recent(0),
                    version: VersionPick::Current,
                    name: None,
                    domain: Some(Some(second)),
                    industry: None,
                    owner: None,
                    metadata: None,
                },
                Action::ReassignOwner {
                    from: owner,
                    to: (owner + other) % OWNERS.len(),
                    kind,
                },
            ]
            .map(|action| Step::Single {
                tenant: 0,
                foreign: false,
                action,
            })
            .to_vec()
        });
    (
        proptest::collection::vec(company, 0..=2),
        proptest::option::weighted(0.25, companies_of_one_owner),
        proptest::collection::vec(first, 1..=4),
        (
            proptest::collection::vec(tag, 0..=2),
            proptest::option::weighted(0.3, task),
        ),
        proptest::collection::vec(deal, 0..=3),
        proptest::option::weighted(0.3, close_and_reopen),
        proptest::collection::vec(step(), 1..=21),
    )
        .prop_map(|(mut a, one_owner, first, (tags, task), b, c, d)| {
            a.extend(one_owner.unwrap_or_default());
            a.extend(first);
            a.extend(tags);
            a.extend(task.unwrap_or_default());
            a.extend(b);
            a.extend(c.unwrap_or_default());
            a.extend(d);
            a
        })
}

// ------------------------------------------------------------------------
// Calls: an action with concrete values for one backend
// ------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Call {
    CreateContact(NewContact),
    GetContact(ContactId),
    GetByEmail(Email),
    UpdateContact(ContactId, Version, ContactPatch),
    Deactivate(ContactId),
    DeleteContact(ContactId),
    Merge(ContactId, ContactId, crm_core::bulk::ConflictPolicy),
    CreateDeal(NewDeal),
    GetDeal(DealId),
    UpdateDeal(DealId, Version, DealPatch),
    MoveDeal(DealId, Version, StageKey, Option<LostReason>),
    ReopenDeal(DealId, Version, StageKey),
    DeleteDeal(DealId),
    LogActivity(NewActivity),
    RecordSignal(NewSignal),
    WriteScores(Vec<(ContactId, Score)>),
    Search(ContactQuery),
    Timeline(ContactId, u32),
    ListDeals(ContactId, u32),
    ListDealsInStage(PipelineKey, StageKey, u32),
    ListSignals(ContactId),
    Summary(PipelineKey),
    TopAccounts,
    CreateCompany(NewCompany),
    GetCompany(CompanyId),
    GetCompanyByDomain(CompanyDomain),
    UpdateCompany(CompanyId, Version, CompanyPatch),
    DeleteCompany(CompanyId),
    MergeCompanies(CompanyId, CompanyId),
    SearchCompanies(CompanyQuery),
    SearchDeals(DealQuery),
    ReassignOwner(OwnerId, OwnerId, Option<RecordKind>),
    CreateTag(NewTag),
    GetTagByName(TagName),
    UpdateTag(TagId, Version, TagPatch),
    DeleteTag(TagId),
    AttachTag(TagId, RecordRef),
    DetachTag(TagId, RecordRef),
    TagsOf(RecordRef),
    ListTags(u32),
    CreateTask(NewTask),
    UpdateTask(TaskId, Version, TaskPatch),
    CompleteTask(TaskId, DateTime<Utc>),
    ReopenTask(TaskId),
    DeleteTask(TaskId),
    OpenTasks(OwnerId, u32),
    OverdueTasks(Option<OwnerId>, u32),
    TasksOf(RecordRef, u32),
}

/// What a call returned.
#[derive(Debug)]
enum Raw {
    Contact(Contact),
    MaybeContact(Option<Contact>),
    Deal(Deal),
    MaybeDeal(Option<Deal>),
    Deleted(bool),
    Activity(Activity),
    Signal(Signal),
    Changed(u64),
    Contacts(Walk<Contact>),
    Activities(Walk<Activity>),
    Deals(Walk<Deal>),
    Signals(Vec<Signal>),
    Summary(PipelineSummary),
    Accounts(Vec<crm_core::domain::LiveRankedAccount>),
    Company(Company),
    MaybeCompany(Option<Company>),
    Companies(Walk<Company>),
    /// Contacts, companies and deals reassigned.
    Reassigned(u64, u64, u64),
    Tag(Tag),
    MaybeTag(Option<Tag>),
    TagList(Vec<Tag>),
    TagPages(Walk<Tag>),
    Task(Task),
    Tasks(Walk<Task>),
}

/// The pages of a list, followed from the first to the last.
#[derive(Debug)]
struct Walk<T> {
    pages: Vec<Page<T>>,
    /// The walk was cut short: the cursors kept going.
    runaway: bool,
}

/// The most pages a walk follows: far more than any case creates records.
const MAX_PAGES: usize = 200;

async fn walk<T, F>(mut page: F, first: PageRequest) -> crm_core::Result<Walk<T>>
where
    F: AsyncFnMut(PageRequest) -> crm_core::Result<Page<T>>,
{
    let limit = first.limit;
    let mut pages = Vec::new();
    let mut next = first;
    loop {
        let p = page(next).await?;
        let cursor = p.next_cursor.clone();
        pages.push(p);
        match cursor {
            None => {
                return Ok(Walk {
                    pages,
                    runaway: false,
                });
            }
            Some(_) if pages.len() >= MAX_PAGES => {
                return Ok(Walk {
                    pages,
                    runaway: true,
                });
            }
            Some(c) => next = PageRequest::after(limit, c),
        }
    }
}

async fn exec(tx: &mut dyn Transaction, call: &Call) -> crm_core::Result<Raw> {
    Ok(match call {
        Call::CreateContact(n) => Raw::Contact(tx.create_contact(n.clone()).await?),
        Call::GetContact(id) => Raw::MaybeContact(tx.get_contact(*id).await?),
        Call::GetByEmail(e) => Raw::MaybeContact(tx.get_contact_by_email(e).await?),
        Call::UpdateContact(id, v, p) => Raw::Contact(tx.update_contact(*id, *v, p.clone()).await?),
        Call::Deactivate(id) => Raw::Contact(tx.deactivate_contact(*id).await?),
        Call::DeleteContact(id) => Raw::Deleted(tx.delete_contact(*id).await?),
        Call::Merge(s, l, p) => Raw::Contact(tx.merge_contacts(*s, *l, *p).await?),
        Call::CreateDeal(n) => Raw::Deal(tx.create_deal(n.clone()).await?),
        Call::GetDeal(id) => Raw::MaybeDeal(tx.get_deal(*id).await?),
        Call::UpdateDeal(id, v, p) => Raw::Deal(tx.update_deal(*id, *v, p.clone()).await?),
        Call::MoveDeal(id, v, to, r) => Raw::Deal(tx.move_deal(*id, *v, to, r.clone()).await?),
        Call::ReopenDeal(id, v, to) => Raw::Deal(tx.reopen_deal(*id, *v, to).await?),
        Call::DeleteDeal(id) => Raw::Deleted(tx.delete_deal(*id).await?),
        Call::LogActivity(n) => Raw::Activity(tx.log_activity(n.clone()).await?),
        Call::RecordSignal(n) => Raw::Signal(tx.record_signal(n.clone()).await?),
        Call::WriteScores(s) => {
            let scores: Vec<crm_core::domain::ContactScore> = s
                .iter()
                .map(|&(c, score)| crm_core::domain::ContactScore::new(c, score))
                .collect();
            Raw::Changed(tx.write_scores(&scores).await?)
        }
        Call::Search(q) => Raw::Contacts(
            walk(
                async |page| tx.search_contacts(&q.clone().with_page(page)).await,
                q.page.clone(),
            )
            .await?,
        ),
        Call::Timeline(c, limit) => Raw::Activities(
            walk(
                async |page| tx.timeline(*c, &page).await,
                PageRequest::first(*limit),
            )
            .await?,
        ),
        Call::ListDeals(c, limit) => Raw::Deals(
            walk(
                async |page| tx.list_deals_for_contact(*c, &page).await,
                PageRequest::first(*limit),
            )
            .await?,
        ),
        Call::ListDealsInStage(p, s, limit) => Raw::Deals(
            walk(
                async |page| tx.list_deals_in_stage(p, s, &page).await,
                PageRequest::first(*limit),
            )
            .await?,
        ),
        Call::ListSignals(c) => Raw::Signals(tx.list_signals(*c).await?),
        Call::Summary(p) => Raw::Summary(tx.pipeline_summary(p).await?),
        Call::TopAccounts => Raw::Accounts(tx.live_top_accounts(1000).await?),
        Call::CreateCompany(n) => Raw::Company(tx.create_company(n.clone()).await?),
        Call::GetCompany(id) => Raw::MaybeCompany(tx.get_company(*id).await?),
        Call::GetCompanyByDomain(d) => Raw::MaybeCompany(tx.get_company_by_domain(d).await?),
        Call::UpdateCompany(id, v, p) => Raw::Company(tx.update_company(*id, *v, p.clone()).await?),
        Call::DeleteCompany(id) => Raw::Deleted(tx.delete_company(*id).await?),
        Call::MergeCompanies(s, l) => Raw::Company(tx.merge_companies(*s, *l).await?),
        Call::SearchDeals(q) => Raw::Deals(
            walk(
                async |page| tx.search_deals(&q.clone().with_page(page)).await,
                q.page.clone(),
            )
            .await?,
        ),
        Call::SearchCompanies(q) => Raw::Companies(
            walk(
                async |page| tx.search_companies(&q.clone().with_page(page)).await,
                q.page.clone(),
            )
            .await?,
        ),
        Call::ReassignOwner(from, to, kind) => {
            let r = tx.reassign_owner(from, to, *kind).await?;
            Raw::Reassigned(r.contacts, r.companies, r.deals)
        }
        Call::CreateTag(n) => Raw::Tag(tx.create_tag(n.clone()).await?),
        Call::GetTagByName(n) => Raw::MaybeTag(tx.get_tag_by_name(n).await?),
        Call::UpdateTag(id, v, p) => Raw::Tag(tx.update_tag(*id, *v, p.clone()).await?),
        Call::DeleteTag(id) => Raw::Deleted(tx.delete_tag(*id).await?),
        Call::AttachTag(t, r) => Raw::Deleted(tx.attach_tag(*t, *r).await?),
        Call::DetachTag(t, r) => Raw::Deleted(tx.detach_tag(*t, *r).await?),
        Call::TagsOf(r) => Raw::TagList(tx.tags_of(*r).await?),
        Call::ListTags(limit) => Raw::TagPages(
            walk(
                async |page| tx.list_tags(&page).await,
                PageRequest::first(*limit),
            )
            .await?,
        ),
        Call::CreateTask(n) => Raw::Task(tx.create_task(n.clone()).await?),
        Call::UpdateTask(id, v, p) => Raw::Task(tx.update_task(*id, *v, p.clone()).await?),
        Call::CompleteTask(id, at) => Raw::Task(tx.complete_task(*id, *at).await?),
        Call::ReopenTask(id) => Raw::Task(tx.reopen_task(*id).await?),
        Call::DeleteTask(id) => Raw::Deleted(tx.delete_task(*id).await?),
        Call::OpenTasks(o, limit) => Raw::Tasks(
            walk(
                async |page| tx.open_tasks(o, &page).await,
                PageRequest::first(*limit),
            )
            .await?,
        ),
        Call::OverdueTasks(o, limit) => Raw::Tasks(
            walk(
                async |page| tx.overdue_tasks(task_now(), o.as_ref(), &page).await,
                PageRequest::first(*limit),
            )
            .await?,
        ),
        Call::TasksOf(r, limit) => Raw::Tasks(
            walk(
                async |page| tx.tasks_of(*r, &page).await,
                PageRequest::first(*limit),
            )
            .await?,
        ),
    })
}

// ------------------------------------------------------------------------
// Views: results with ids replaced by labels, comparable across backends
// ------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
struct ContactView {
    id: String,
    email: String,
    first_name: String,
    last_name: String,
    company: Option<String>,
    title: Option<String>,
    phone: Option<String>,
    lead_source: LeadSource,
    metadata: Metadata,
    score: u8,
    active: bool,
    company_id: Option<String>,
    owner: Option<String>,
    version: i64,
    /// `updated_at` after `created_at` (false: equal).
    updated_since_created: bool,
}

#[derive(Debug, Clone, PartialEq)]
struct DealView {
    id: String,
    contact: String,
    title: String,
    /// The amount as written (scale included) and its currency.
    amount: String,
    currency: &'static str,
    pipeline: String,
    stage: String,
    expected_close_date: Option<NaiveDate>,
    /// Set, and whether it is also the last change (`== updated_at`).
    won_at: Option<bool>,
    lost_at: Option<bool>,
    lost_reason: Option<String>,
    company_id: Option<String>,
    owner: Option<String>,
    version: i64,
    updated_since_created: bool,
}

#[derive(Debug, Clone, PartialEq)]
struct CompanyView {
    id: String,
    name: String,
    domain: Option<String>,
    industry: Option<String>,
    employee_count: Option<u32>,
    annual_revenue: Option<String>,
    address: String,
    metadata: Metadata,
    owner: Option<String>,
    version: i64,
    updated_since_created: bool,
}

#[derive(Debug, Clone, PartialEq)]
struct TagView {
    id: String,
    name: String,
    colour: Option<String>,
    version: i64,
    updated_since_created: bool,
}

#[derive(Debug, Clone, PartialEq)]
struct TaskView {
    id: String,
    title: String,
    body: Option<String>,
    due_at: Option<DateTime<Utc>>,
    done_at: Option<DateTime<Utc>>,
    assignee: Option<String>,
    priority: TaskPriority,
    contact: Option<String>,
    company: Option<String>,
    deal: Option<String>,
    version: i64,
    updated_since_created: bool,
}

/// A history entry: what happened, the recorded values with ids replaced
/// by labels and the store-made timestamps left out, and which fields
/// changed.
#[derive(Debug, Clone, PartialEq)]
struct HistoryView {
    operation: String,
    open: bool,
    values: serde_json::Value,
    changed: Vec<String>,
}

/// When something happened: a time the test gave, or "when the store
/// recorded it".
#[derive(Debug, Clone, PartialEq)]
enum When {
    Given(DateTime<Utc>),
    /// Made by the store; for an activity, equal to its `created_at`.
    ByStore {
        equals_created: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
struct ActivityView {
    id: String,
    contact: String,
    deal: Option<String>,
    kind: ActivityKind,
    direction: Option<Direction>,
    subject: Option<String>,
    body: Option<String>,
    occurred: When,
}

#[derive(Debug, Clone, PartialEq)]
struct SignalView {
    id: String,
    contact: String,
    kind: String,
    occurred: When,
}

#[derive(Debug, Clone, PartialEq)]
struct PageView<T> {
    items: Vec<T>,
    has_next: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum View {
    Contact(ContactView),
    MaybeContact(Option<ContactView>),
    Deal(DealView),
    MaybeDeal(Option<DealView>),
    Deleted(bool),
    Activity(ActivityView),
    Signal(SignalView),
    Changed(u64),
    Contacts(Vec<PageView<ContactView>>, bool),
    Activities(Vec<PageView<ActivityView>>, bool),
    Deals(Vec<PageView<DealView>>, bool),
    Signals(Vec<SignalView>),
    Summary(PipelineSummary),
    /// The accounts' companies with how many best contacts each has,
    /// sorted by label: the states (and with them the order) depend on
    /// times each store takes from its own clock; the conformance suite
    /// checks the order.
    Accounts(Vec<(CompanyView, usize)>),
    Company(CompanyView),
    MaybeCompany(Option<CompanyView>),
    Companies(Vec<PageView<CompanyView>>, bool),
    Reassigned(u64, u64, u64),
    Tag(TagView),
    MaybeTag(Option<TagView>),
    TagList(Vec<TagView>),
    TagPages(Vec<PageView<TagView>>, bool),
    Task(TaskView),
    MaybeTask(Option<TaskView>),
    History(Vec<HistoryView>),
    Tasks(Vec<PageView<TaskView>>, bool),
}

/// An error, with ids replaced by labels. Backend errors keep their text
/// (they never match: a backend error is a failure of the test).
#[derive(Debug, Clone, PartialEq)]
enum ErrorView {
    Validation(Vec<(String, &'static str)>),
    DuplicateEmail {
        email: String,
        existing: String,
    },
    Duplicate {
        entity: String,
        field: &'static str,
        value: String,
        existing: String,
    },
    NotFound {
        entity: String,
        id: String,
    },
    Conflict {
        entity: String,
        id: String,
        expected: i64,
        actual: i64,
    },
    InvalidTransition {
        from: String,
        to: String,
        why: String,
    },
    Backend(String),
    Other(String),
}

/// Which backend a value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Model,
    Pg,
}

/// The labels of the ids each backend made, and the other way round.
#[derive(Debug, Default)]
struct Labels {
    model: HashMap<Uuid, String>,
    pg: HashMap<Uuid, String>,
}

impl Labels {
    fn label(&self, side: Side, id: Uuid) -> String {
        let map = match side {
            Side::Model => &self.model,
            Side::Pg => &self.pg,
        };
        map.get(&id)
            .cloned()
            .unwrap_or_else(|| format!("unknown {id}"))
    }

    fn label_str(&self, side: Side, id: &str) -> String {
        match Uuid::parse_str(id) {
            Ok(u) => self.label(side, u),
            Err(_) => format!("not a uuid: {id}"),
        }
    }

    fn add(&mut self, label: String, model: Uuid, pg: Uuid) {
        self.model.insert(model, label.clone());
        self.pg.insert(pg, label);
    }

    fn contact(&self, side: Side, c: &Contact) -> ContactView {
        ContactView {
            id: self.label(side, c.id.as_uuid()),
            email: c.email.as_str().to_string(),
            first_name: c.first_name.as_str().to_string(),
            last_name: c.last_name.as_str().to_string(),
            company: c.company.as_ref().map(|v| v.as_str().to_string()),
            title: c.title.as_ref().map(|v| v.as_str().to_string()),
            phone: c.phone.as_ref().map(|v| v.as_str().to_string()),
            lead_source: c.lead_source,
            metadata: c.metadata.clone(),
            score: c.score.get(),
            active: c.active,
            company_id: c.company_id.map(|i| self.label(side, i.as_uuid())),
            owner: c.owner.as_ref().map(|o| o.as_str().to_string()),
            version: c.version.get(),
            updated_since_created: c.updated_at > c.created_at,
        }
    }

    fn deal(&self, side: Side, d: &Deal) -> DealView {
        DealView {
            id: self.label(side, d.id.as_uuid()),
            contact: self.label(side, d.contact_id.as_uuid()),
            title: d.title.as_str().to_string(),
            amount: d.amount.amount().to_string(),
            currency: d.amount.currency().code(),
            pipeline: d.pipeline.as_str().to_string(),
            stage: d.stage.as_str().to_string(),
            expected_close_date: d.expected_close_date,
            won_at: d.won_at.map(|t| t == d.updated_at),
            lost_at: d.lost_at.map(|t| t == d.updated_at),
            lost_reason: d.lost_reason.as_ref().map(|r| r.as_str().to_string()),
            company_id: d.company_id.map(|i| self.label(side, i.as_uuid())),
            owner: d.owner.as_ref().map(|o| o.as_str().to_string()),
            version: d.version.get(),
            updated_since_created: d.updated_at > d.created_at,
        }
    }

    fn activity(&self, side: Side, a: &Activity) -> ActivityView {
        ActivityView {
            id: self.label(side, a.id.as_uuid()),
            contact: self.label(side, a.contact_id.as_uuid()),
            deal: a.deal_id.map(|d| self.label(side, d.as_uuid())),
            kind: a.kind,
            direction: a.direction,
            subject: a.subject.as_ref().map(|s| s.as_str().to_string()),
            body: a.body.clone(),
            occurred: if a.occurred_at < explicit_cutoff() {
                When::Given(a.occurred_at)
            } else {
                When::ByStore {
                    equals_created: a.occurred_at == a.created_at,
                }
            },
        }
    }

    fn signal(&self, side: Side, s: &Signal) -> SignalView {
        SignalView {
            id: self.label(side, s.id.as_uuid()),
            contact: self.label(side, s.contact_id.as_uuid()),
            kind: s.kind.as_str().to_string(),
            occurred: if s.occurred_at < explicit_cutoff() {
                When::Given(s.occurred_at)
            } else {
                When::ByStore {
                    equals_created: false,
                }
            },
        }
    }

    fn accounts(
        &self,
        side: Side,
        accounts: &[crm_core::domain::LiveRankedAccount],
    ) -> Vec<(CompanyView, usize)> {
        let mut out: Vec<(CompanyView, usize)> = accounts
            .iter()
            .map(|a| (self.company(side, &a.company), a.best_contacts.len()))
            .collect();
        out.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        out
    }

    fn pages<T, V>(&self, w: &Walk<T>, f: impl Fn(&Self, &T) -> V) -> (Vec<PageView<V>>, bool) {
        let pages = w
            .pages
            .iter()
            .map(|p| PageView {
                items: p.items.iter().map(|i| f(self, i)).collect(),
                has_next: p.next_cursor.is_some(),
            })
            .collect();
        (pages, w.runaway)
    }

    fn view(&self, side: Side, raw: &Raw) -> View {
        match raw {
            Raw::Contact(c) => View::Contact(self.contact(side, c)),
            Raw::MaybeContact(c) => View::MaybeContact(c.as_ref().map(|c| self.contact(side, c))),
            Raw::Deal(d) => View::Deal(self.deal(side, d)),
            Raw::MaybeDeal(d) => View::MaybeDeal(d.as_ref().map(|d| self.deal(side, d))),
            Raw::Deleted(b) => View::Deleted(*b),
            Raw::Activity(a) => View::Activity(self.activity(side, a)),
            Raw::Signal(s) => View::Signal(self.signal(side, s)),
            Raw::Changed(n) => View::Changed(*n),
            Raw::Contacts(w) => {
                let (p, r) = self.pages(w, |l, c| l.contact(side, c));
                View::Contacts(p, r)
            }
            Raw::Activities(w) => {
                let (p, r) = self.pages(w, |l, a| l.activity(side, a));
                View::Activities(p, r)
            }
            Raw::Deals(w) => {
                let (p, r) = self.pages(w, |l, d| l.deal(side, d));
                View::Deals(p, r)
            }
            Raw::Signals(s) => View::Signals(s.iter().map(|s| self.signal(side, s)).collect()),
            Raw::Summary(s) => View::Summary(s.clone()),
            Raw::Accounts(a) => View::Accounts(self.accounts(side, a)),
            Raw::Company(c) => View::Company(self.company(side, c)),
            Raw::MaybeCompany(c) => View::MaybeCompany(c.as_ref().map(|c| self.company(side, c))),
            Raw::Companies(w) => {
                let (p, r) = self.pages(w, |l, c| l.company(side, c));
                View::Companies(p, r)
            }
            Raw::Reassigned(a, b, c) => View::Reassigned(*a, *b, *c),
            Raw::Tag(t) => View::Tag(self.tag(side, t)),
            Raw::MaybeTag(t) => View::MaybeTag(t.as_ref().map(|t| self.tag(side, t))),
            Raw::TagList(l) => View::TagList(l.iter().map(|t| self.tag(side, t)).collect()),
            Raw::TagPages(w) => {
                let (p, r) = self.pages(w, |l, t| l.tag(side, t));
                View::TagPages(p, r)
            }
            Raw::Task(t) => View::Task(self.task(side, t)),
            Raw::Tasks(w) => {
                let (p, r) = self.pages(w, |l, t| l.task(side, t));
                View::Tasks(p, r)
            }
        }
    }

    fn history(&self, side: Side, e: &HistoryEntry) -> HistoryView {
        HistoryView {
            operation: format!("{:?}", e.operation),
            open: e.valid_to.is_none(),
            values: self.json(side, &e.values),
            changed: e
                .diff
                .keys()
                .filter(|k| !STORE_MADE.contains(&k.as_str()))
                .cloned()
                .collect(),
        }
    }

    /// `v` with every UUID string replaced by its label and the store-made
    /// timestamps left out.
    fn json(&self, side: Side, v: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match v {
            Value::String(s) if Uuid::parse_str(s).is_ok() => {
                Value::String(self.label_str(side, s))
            }
            Value::Array(a) => Value::Array(a.iter().map(|v| self.json(side, v)).collect()),
            Value::Object(o) => Value::Object(
                o.iter()
                    .filter(|(k, _)| !STORE_MADE.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), self.json(side, v)))
                    .collect(),
            ),
            v => v.clone(),
        }
    }

    fn company(&self, side: Side, c: &Company) -> CompanyView {
        CompanyView {
            id: self.label(side, c.id.as_uuid()),
            name: c.name.as_str().to_string(),
            domain: c.domain.as_ref().map(|d| d.as_str().to_string()),
            industry: c.industry.as_ref().map(|v| v.as_str().to_string()),
            employee_count: c.employee_count,
            annual_revenue: c
                .annual_revenue
                .as_ref()
                .map(|m| format!("{} {}", m.amount(), m.currency().code())),
            address: format!("{:?}", c.address),
            metadata: c.metadata.clone(),
            owner: c.owner.as_ref().map(|o| o.as_str().to_string()),
            version: c.version.get(),
            updated_since_created: c.updated_at > c.created_at,
        }
    }

    fn tag(&self, side: Side, t: &Tag) -> TagView {
        TagView {
            id: self.label(side, t.id.as_uuid()),
            name: t.name.as_str().to_string(),
            colour: t.colour.as_ref().map(|c| c.as_str().to_string()),
            version: t.version.get(),
            updated_since_created: t.updated_at > t.created_at,
        }
    }

    fn task(&self, side: Side, t: &Task) -> TaskView {
        TaskView {
            id: self.label(side, t.id.as_uuid()),
            title: t.title.as_str().to_string(),
            body: t.body.as_ref().map(|b| b.as_str().to_string()),
            due_at: t.due_at,
            done_at: t.done_at,
            assignee: t.assignee.as_ref().map(|o| o.as_str().to_string()),
            priority: t.priority,
            contact: t.contact_id.map(|i| self.label(side, i.as_uuid())),
            company: t.company_id.map(|i| self.label(side, i.as_uuid())),
            deal: t.deal_id.map(|i| self.label(side, i.as_uuid())),
            version: t.version.get(),
            updated_since_created: t.updated_at > t.created_at,
        }
    }

    fn error(&self, side: Side, e: &Error) -> ErrorView {
        match e {
            Error::Validation(v) => ErrorView::Validation(
                v.as_slice()
                    .iter()
                    .map(|f| (f.field.clone(), f.code))
                    .collect(),
            ),
            Error::DuplicateEmail { email, existing_id } => ErrorView::DuplicateEmail {
                email: email.as_str().to_string(),
                existing: self.label(side, existing_id.as_uuid()),
            },
            Error::Duplicate {
                entity,
                field,
                value,
                existing_id,
            } => ErrorView::Duplicate {
                entity: entity.to_string(),
                field,
                value: value.clone(),
                existing: self.label_str(side, existing_id),
            },
            Error::NotFound { entity, id } => ErrorView::NotFound {
                entity: entity.to_string(),
                id: self.label_str(side, id),
            },
            Error::Conflict {
                entity,
                id,
                expected,
                actual,
            } => ErrorView::Conflict {
                entity: entity.to_string(),
                id: self.label_str(side, id),
                expected: *expected,
                actual: *actual,
            },
            Error::InvalidTransition { from, to, why } => ErrorView::InvalidTransition {
                from: from.to_string(),
                to: to.to_string(),
                why: why.clone(),
            },
            Error::Backend { .. } => ErrorView::Backend(format!("{side:?}: {e}")),
            other => ErrorView::Other(format!("{side:?}: {other}")),
        }
    }
}

/// True when a contact search sorted by a store-made timestamp returned two
/// contacts with the same timestamp (see the module docs).
fn has_time_ties(sort: ContactSort, raw: &Raw) -> bool {
    let Raw::Contacts(w) = raw else { return false };
    let key = |c: &Contact| match sort {
        ContactSort::CreatedAsc | ContactSort::CreatedDesc => Some(c.created_at),
        ContactSort::UpdatedAsc | ContactSort::UpdatedDesc => Some(c.updated_at),
        _ => None,
    };
    let keys: Vec<_> = w
        .pages
        .iter()
        .flat_map(|p| &p.items)
        .filter_map(key)
        .collect();
    keys.windows(2).any(|w| w[0] == w[1])
}

/// The items of a contact walk as a sorted set, the page structure kept.
fn as_set(v: View) -> View {
    match v {
        View::Contacts(pages, runaway) => {
            let mut all: Vec<ContactView> = pages.iter().flat_map(|p| p.items.clone()).collect();
            all.sort_by(|a, b| a.id.cmp(&b.id));
            let shape: Vec<PageView<ContactView>> = pages
                .iter()
                .map(|p| PageView {
                    items: Vec::new(),
                    has_next: p.has_next,
                })
                .chain(std::iter::once(PageView {
                    items: all,
                    has_next: false,
                }))
                .collect();
            View::Contacts(shape, runaway)
        }
        v => v,
    }
}

type Outcome = Result<View, ErrorView>;

// ------------------------------------------------------------------------
// One case
// ------------------------------------------------------------------------

/// A record created on both backends.
#[derive(Debug, Clone, Copy)]
struct Pair {
    model: Uuid,
    pg: Uuid,
    tenant: usize,
}

struct Case<'a> {
    model: InMemoryStore,
    pg: &'a PostgresStore,
    tenants: [TenantId; 2],
    ctx: Context,
    labels: Labels,
    contacts: Vec<Pair>,
    deals: Vec<Pair>,
    companies: Vec<Pair>,
    tags: Vec<Pair>,
    tasks: Vec<Pair>,
    activities: usize,
    signals: usize,
    missing: usize,
    /// The last email the model returned for each contact (by index).
    emails: HashMap<usize, String>,
    /// What has happened so far, for failure messages.
    log: Vec<String>,
    /// How often each outcome occurred over the whole run.
    stats: &'a Stats,
}

/// Outcomes counted over the whole run, to check that the generator
/// reaches what it is meant to test.
type Stats = Mutex<HashMap<String, usize>>;

fn count(stats: &Stats, what: String) {
    *stats.lock().unwrap().entry(what).or_default() += 1;
}

/// The kinds of record the steps create and name by target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Contact,
    Deal,
    Company,
    Tag,
    Task,
}

impl Kind {
    fn of(kind: RecordKind) -> Kind {
        match kind {
            RecordKind::Contact => Kind::Contact,
            RecordKind::Company => Kind::Company,
            _ => Kind::Deal,
        }
    }
}

/// The concrete ids of a target on both backends, and the index of the
/// record it names (`None` for a missing one).
#[derive(Debug, Clone, Copy)]
struct Resolved {
    model: Uuid,
    pg: Uuid,
    index: Option<usize>,
}

impl Resolved {
    fn on(&self, side: Side) -> Uuid {
        match side {
            Side::Model => self.model,
            Side::Pg => self.pg,
        }
    }
}

impl<'a> Case<'a> {
    fn new(pg: &'a PostgresStore, stats: &'a Stats) -> Self {
        Case {
            model: InMemoryStore::with_pipelines(conformance::test_pipelines()),
            pg,
            tenants: [TenantId::new(), TenantId::new()],
            ctx: Context::new(Actor::parse("user:differential").unwrap()),
            labels: Labels::default(),
            contacts: Vec::new(),
            deals: Vec::new(),
            companies: Vec::new(),
            tags: Vec::new(),
            tasks: Vec::new(),
            activities: 0,
            signals: 0,
            missing: 0,
            emails: HashMap::new(),
            log: Vec::new(),
            stats,
        }
    }

    fn pool(&self, kind: Kind) -> &Vec<Pair> {
        match kind {
            Kind::Contact => &self.contacts,
            Kind::Deal => &self.deals,
            Kind::Company => &self.companies,
            Kind::Tag => &self.tags,
            Kind::Task => &self.tasks,
        }
    }

    fn resolve(&mut self, t: Target, deals: bool) -> Resolved {
        self.resolve_in(t, if deals { Kind::Deal } else { Kind::Contact })
    }

    fn resolve_in(&mut self, t: Target, kind: Kind) -> Resolved {
        let pool = self.pool(kind);
        match t.index(pool.len()) {
            Some(index) => {
                let p = pool[index];
                Resolved {
                    model: p.model,
                    pg: p.pg,
                    index: Some(index),
                }
            }
            _ => {
                // The same never-created id on both backends.
                let id = Uuid::now_v7();
                self.labels.add(format!("x{}", self.missing), id, id);
                self.missing += 1;
                Resolved {
                    model: id,
                    pg: id,
                    index: None,
                }
            }
        }
    }

    /// The record a pick names, on both backends.
    fn record(&mut self, pick: RecordPick) -> (RecordRef, RecordRef) {
        let (t, kind) = match pick {
            RecordPick::Contact(t) => (t, RecordKind::Contact),
            RecordPick::Company(t) => (t, RecordKind::Company),
            RecordPick::Deal(t) => (t, RecordKind::Deal),
        };
        let r = self.resolve_in(t, Kind::of(kind));
        (
            RecordRef::from_parts(kind, r.model),
            RecordRef::from_parts(kind, r.pg),
        )
    }

    /// The tag filter of a spec, on both backends.
    fn tag_filter(&mut self, spec: &TagFilterSpec) -> (TagFilter, TagFilter) {
        let mut ids = |ts: &Vec<Target>| -> (Vec<TagId>, Vec<TagId>) {
            ts.iter()
                .map(|t| {
                    let r = self.resolve_in(*t, Kind::Tag);
                    (TagId::from_uuid(r.model), TagId::from_uuid(r.pg))
                })
                .unzip()
        };
        let (am, ap) = ids(&spec.0);
        let (lm, lp) = ids(&spec.1);
        let (nm, np) = ids(&spec.2);
        (
            TagFilter::new().any_of(am).all_of(lm).none_of(nm),
            TagFilter::new().any_of(ap).all_of(lp).none_of(np),
        )
    }

    /// The link to a company a target names, on both backends.
    fn company_link(&mut self, t: Option<Target>) -> (Option<CompanyId>, Option<CompanyId>) {
        match t {
            Some(t) => {
                let r = self.resolve_in(t, Kind::Company);
                (
                    Some(CompanyId::from_uuid(r.model)),
                    Some(CompanyId::from_uuid(r.pg)),
                )
            }
            None => (None, None),
        }
    }

    /// The tenant that a single step acts in.
    fn step_tenant(&self, tenant: usize, foreign: bool, action: &Action) -> usize {
        let of = |t: &Target, kind: Kind| {
            let pool = self.pool(kind);
            t.index(pool.len()).map(|i| pool[i].tenant)
        };
        let owner = |t: &Target, deals: bool| of(t, if deals { Kind::Deal } else { Kind::Contact });
        let own = match action {
            Action::GetContact(t)
            | Action::Deactivate(t)
            | Action::DeleteContact(t)
            | Action::ListSignals(t)
            | Action::UpdateContact { contact: t, .. }
            | Action::ChangeEmail { contact: t, .. }
            | Action::CreateDeal { contact: t, .. }
            | Action::LogActivity { contact: t, .. }
            | Action::RecordSignal { contact: t, .. }
            | Action::Timeline { contact: t, .. }
            | Action::ListDeals { contact: t, .. } => owner(t, false),
            Action::GetDeal(t)
            | Action::DeleteDeal(t)
            | Action::UpdateDeal { deal: t, .. }
            | Action::MoveDeal { deal: t, .. }
            | Action::ReopenDeal { deal: t, .. } => owner(t, true),
            Action::GetCompany(t)
            | Action::DeleteCompany(t)
            | Action::MergeCompanies(t, _)
            | Action::UpdateCompany { company: t, .. } => of(t, Kind::Company),
            Action::DeleteTag(t)
            | Action::UpdateTag { tag: t, .. }
            | Action::AttachTag(t, _)
            | Action::DetachTag(t, _) => of(t, Kind::Tag),
            Action::CompleteTask(t, _)
            | Action::ReopenTask(t)
            | Action::DeleteTask(t)
            | Action::UpdateTask { task: t, .. } => of(t, Kind::Task),
            Action::TagsOf(r) | Action::TasksOf(r, _) => match r {
                RecordPick::Contact(t) => of(t, Kind::Contact),
                RecordPick::Company(t) => of(t, Kind::Company),
                RecordPick::Deal(t) => of(t, Kind::Deal),
            },
            // A new record acts in the tenant of what it links to.
            Action::CreateContact {
                company_id: Some(t),
                ..
            }
            | Action::SearchLinked {
                company: Some(t), ..
            }
            | Action::SearchDeals {
                company: Some(t), ..
            } => of(t, Kind::Company),
            Action::CreateTask {
                contact,
                company,
                deal,
                ..
            } => contact
                .and_then(|t| of(&t, Kind::Contact))
                .or_else(|| company.and_then(|t| of(&t, Kind::Company)))
                .or_else(|| deal.and_then(|t| of(&t, Kind::Deal))),
            _ => None,
        };
        let t = own.unwrap_or(tenant);
        if foreign { 1 - t } else { t }
    }

    fn email(&mut self, pick: EmailPick) -> Email {
        let (text, mask) = match pick {
            EmailPick::Pool(i, mask) => (pick_owned(EMAILS, i), mask),
            EmailPick::OfContact(t, mask) => {
                let r = self.resolve(t, false);
                let text = r
                    .index
                    .and_then(|i| self.emails.get(&i).cloned())
                    .unwrap_or_else(|| EMAILS[0].to_string());
                (text, mask)
            }
        };
        Email::parse(&recase(&text, mask)).unwrap()
    }

    /// The version an update passes: the model's current version (the
    /// backends agree on it, or an earlier step failed), one less, or one more.
    async fn version(
        model_tx: &mut dyn Transaction,
        r: &Resolved,
        deal: bool,
        pick: VersionPick,
    ) -> Version {
        let kind = if deal { Kind::Deal } else { Kind::Contact };
        Self::version_of(model_tx, r, kind, pick).await
    }

    /// Like [`version`](Self::version), for any kind of record.
    async fn version_of(
        model_tx: &mut dyn Transaction,
        r: &Resolved,
        kind: Kind,
        pick: VersionPick,
    ) -> Version {
        let current = match kind {
            Kind::Deal => model_tx
                .get_deal(DealId::from_uuid(r.model))
                .await
                .unwrap()
                .map(|d| d.version.get()),
            Kind::Contact => model_tx
                .get_contact(ContactId::from_uuid(r.model))
                .await
                .unwrap()
                .map(|c| c.version.get()),
            Kind::Company => model_tx
                .get_company(CompanyId::from_uuid(r.model))
                .await
                .unwrap()
                .map(|c| c.version.get()),
            Kind::Tag => model_tx
                .get_tag(TagId::from_uuid(r.model))
                .await
                .unwrap()
                .map(|c| c.version.get()),
            Kind::Task => model_tx
                .get_task(TaskId::from_uuid(r.model))
                .await
                .unwrap()
                .map(|c| c.version.get()),
        }
        .unwrap_or(1);
        Version::new(match pick {
            VersionPick::Current => current,
            VersionPick::Stale => current - 1,
            VersionPick::Ahead => current + 1,
        })
    }

    /// The stage key a pick names for the deal `r`.
    async fn stage(&self, model_tx: &mut dyn Transaction, r: &Resolved, to: StagePick) -> StageKey {
        let i = match to {
            StagePick::Any(i) => return StageKey::parse(pick(STAGES, i)).unwrap(),
            StagePick::OwnPipeline(i) => i,
        };
        let deal = model_tx.get_deal(DealId::from_uuid(r.model)).await.unwrap();
        let stages = deal
            .and_then(|d| self.model.pipelines().get(&d.pipeline).cloned())
            .map(|p| p.stages().iter().map(|s| s.key.clone()).collect::<Vec<_>>());
        match stages {
            Some(keys) => keys[i % keys.len()].clone(),
            None => StageKey::parse(pick(STAGES, i)).unwrap(),
        }
    }

    /// The two calls (model, PostgreSQL) of an action, and what a success
    /// creates (`"c"`, `"d"`, `"a"`, `"s"`) for its label.
    async fn calls(
        &mut self,
        model_tx: &mut dyn Transaction,
        action: &Action,
    ) -> (Call, Call, Option<&'static str>) {
        let both = |c: Call| (c.clone(), c);
        let cid = |r: &Resolved, s: Side| ContactId::from_uuid(r.on(s));
        let did = |r: &Resolved, s: Side| DealId::from_uuid(r.on(s));
        match action {
            Action::CreateContact {
                email,
                first,
                last,
                company,
                lead_source,
                metadata: m,
                company_id,
                owner,
            } => {
                let (cm, cp) = self.company_link(*company_id);
                let mut n = NewContact::new(
                    self.email(*email),
                    PersonName::parse(pick(FIRST_NAMES, *first)).unwrap(),
                    PersonName::parse(pick(LAST_NAMES, *last)).unwrap(),
                );
                n.company = company.map(|c| CompanyName::parse(pick(COMPANIES, c)).unwrap());
                n.lead_source = LeadSource::ALL[*lead_source % LeadSource::ALL.len()];
                n.metadata = metadata(*m);
                n.owner = owner.map(owner_id);
                let mut p = n.clone();
                n.company_id = cm;
                p.company_id = cp;
                (Call::CreateContact(n), Call::CreateContact(p), Some("c"))
            }
            Action::GetContact(t) => {
                let r = self.resolve(*t, false);
                (
                    Call::GetContact(cid(&r, Side::Model)),
                    Call::GetContact(cid(&r, Side::Pg)),
                    None,
                )
            }
            Action::GetByEmail(e) => {
                let (a, b) = both(Call::GetByEmail(self.email(*e)));
                (a, b, None)
            }
            Action::UpdateContact {
                contact,
                version,
                patch,
            } => {
                let r = self.resolve(*contact, false);
                let v = Self::version(model_tx, &r, false, *version).await;
                let links = patch.company_id.map(|t| self.company_link(t));
                let p = ContactPatch {
                    email: None,
                    owner: patch.owner.map(|o| o.map(owner_id)),
                    first_name: patch
                        .first
                        .map(|i| PersonName::parse(pick(FIRST_NAMES, i)).unwrap()),
                    last_name: patch
                        .last
                        .map(|i| PersonName::parse(pick(LAST_NAMES, i)).unwrap()),
                    company: patch
                        .company
                        .map(|c| c.map(|i| CompanyName::parse(pick(COMPANIES, i)).unwrap())),
                    title: patch
                        .title
                        .map(|c| c.map(|i| JobTitle::parse(pick(TITLES, i)).unwrap())),
                    phone: patch
                        .phone
                        .map(|c| c.map(|i| Phone::parse(pick(PHONES, i)).unwrap())),
                    lead_source: patch
                        .lead_source
                        .map(|i| LeadSource::ALL[i % LeadSource::ALL.len()]),
                    metadata: patch.metadata.map(metadata),
                    active: patch.active,
                    ..ContactPatch::default()
                };
                let (mut pm, mut pp) = (p.clone(), p);
                if let Some((m, g)) = links {
                    pm.company_id = Some(m);
                    pp.company_id = Some(g);
                }
                (
                    Call::UpdateContact(cid(&r, Side::Model), v, pm),
                    Call::UpdateContact(cid(&r, Side::Pg), v, pp),
                    None,
                )
            }
            Action::ChangeEmail {
                contact,
                version,
                email,
            } => {
                let r = self.resolve(*contact, false);
                let v = Self::version(model_tx, &r, false, *version).await;
                let p = ContactPatch {
                    email: Some(self.email(*email)),
                    ..ContactPatch::default()
                };
                (
                    Call::UpdateContact(cid(&r, Side::Model), v, p.clone()),
                    Call::UpdateContact(cid(&r, Side::Pg), v, p),
                    None,
                )
            }
            Action::Deactivate(t) => {
                let r = self.resolve(*t, false);
                (
                    Call::Deactivate(cid(&r, Side::Model)),
                    Call::Deactivate(cid(&r, Side::Pg)),
                    None,
                )
            }
            Action::DeleteContact(t) => {
                let r = self.resolve(*t, false);
                (
                    Call::DeleteContact(cid(&r, Side::Model)),
                    Call::DeleteContact(cid(&r, Side::Pg)),
                    None,
                )
            }
            Action::Merge(s, l, p) => {
                use crm_core::bulk::ConflictPolicy;
                let policy = [
                    ConflictPolicy::Incoming,
                    ConflictPolicy::NonEmptyIncoming,
                    ConflictPolicy::Existing,
                ][*p % 3];
                let (s, l) = (self.resolve(*s, false), self.resolve(*l, false));
                (
                    Call::Merge(cid(&s, Side::Model), cid(&l, Side::Model), policy),
                    Call::Merge(cid(&s, Side::Pg), cid(&l, Side::Pg), policy),
                    None,
                )
            }
            Action::CreateDeal {
                contact,
                title,
                cents,
                scale,
                currency,
                pipeline,
                stage,
                close_day,
                company_id,
                owner,
            } => {
                let r = self.resolve(*contact, false);
                let (cm, cp) = self.company_link(*company_id);
                let amount = Money::new(
                    Decimal::new(*cents, *scale),
                    Currency::parse(pick(CURRENCIES, *currency)).unwrap(),
                )
                .unwrap();
                let make = |side| {
                    let mut n = NewDeal::new(
                        cid(&r, side),
                        DealTitle::parse(pick(DEAL_TITLES, *title)).unwrap(),
                        amount,
                    );
                    n.pipeline = PipelineKey::parse(pick(PIPELINES, *pipeline)).unwrap();
                    n.stage = stage.map(|s| StageKey::parse(pick(STAGES, s)).unwrap());
                    n.expected_close_date = close_day.map(day);
                    n.owner = owner.map(owner_id);
                    n.company_id = if side == Side::Model { cm } else { cp };
                    Call::CreateDeal(n)
                };
                (make(Side::Model), make(Side::Pg), Some("d"))
            }
            Action::GetDeal(t) => {
                let r = self.resolve(*t, true);
                (
                    Call::GetDeal(did(&r, Side::Model)),
                    Call::GetDeal(did(&r, Side::Pg)),
                    None,
                )
            }
            Action::UpdateDeal {
                deal,
                version,
                title,
                cents,
                close_day,
                company_id,
                owner,
            } => {
                let r = self.resolve(*deal, true);
                let v = Self::version(model_tx, &r, true, *version).await;
                let links = company_id.map(|t| self.company_link(t));
                let p = DealPatch {
                    owner: owner.map(|o| o.map(owner_id)),
                    title: title.map(|i| DealTitle::parse(pick(DEAL_TITLES, i)).unwrap()),
                    amount: cents.map(|(c, cur)| {
                        Money::new(
                            Decimal::new(c, 2),
                            Currency::parse(pick(CURRENCIES, cur)).unwrap(),
                        )
                        .unwrap()
                    }),
                    expected_close_date: close_day.map(|d| d.map(day)),
                    ..DealPatch::default()
                };
                let (mut pm, mut pp) = (p.clone(), p);
                if let Some((m, g)) = links {
                    pm.company_id = Some(m);
                    pp.company_id = Some(g);
                }
                (
                    Call::UpdateDeal(did(&r, Side::Model), v, pm),
                    Call::UpdateDeal(did(&r, Side::Pg), v, pp),
                    None,
                )
            }
            Action::MoveDeal {
                deal,
                version,
                to,
                lost_reason,
            } => {
                let r = self.resolve(*deal, true);
                let v = Self::version(model_tx, &r, true, *version).await;
                let to = self.stage(model_tx, &r, *to).await;
                let reason = lost_reason.map(|i| LostReason::parse(pick(LOST_REASONS, i)).unwrap());
                (
                    Call::MoveDeal(did(&r, Side::Model), v, to.clone(), reason.clone()),
                    Call::MoveDeal(did(&r, Side::Pg), v, to, reason),
                    None,
                )
            }
            Action::ReopenDeal { deal, version, to } => {
                let r = self.resolve(*deal, true);
                let v = Self::version(model_tx, &r, true, *version).await;
                let to = self.stage(model_tx, &r, *to).await;
                (
                    Call::ReopenDeal(did(&r, Side::Model), v, to.clone()),
                    Call::ReopenDeal(did(&r, Side::Pg), v, to),
                    None,
                )
            }
            Action::DeleteDeal(t) => {
                let r = self.resolve(*t, true);
                (
                    Call::DeleteDeal(did(&r, Side::Model)),
                    Call::DeleteDeal(did(&r, Side::Pg)),
                    None,
                )
            }
            Action::LogActivity {
                contact,
                deal,
                kind,
                direction,
                subject,
                body,
                minute,
            } => {
                let r = self.resolve(*contact, false);
                let d = deal.map(|t| self.resolve(t, true));
                let make = |side| {
                    let mut n = NewActivity::new(
                        cid(&r, side),
                        ActivityKind::ALL[kind % ActivityKind::ALL.len()],
                    );
                    if let Some(d) = &d {
                        n = n.deal(did(d, side));
                    }
                    if let Some(out) = direction {
                        n = n.direction(if *out {
                            Direction::Outbound
                        } else {
                            Direction::Inbound
                        });
                    }
                    if let Some(s) = subject {
                        n = n.subject(Subject::parse(pick(SUBJECTS, *s)).unwrap());
                    }
                    if *body {
                        n = n.body("Talked about\nthe renewal.").unwrap();
                    }
                    if let Some(m) = minute {
                        n = n.occurred_at(at_minute(*m));
                    }
                    Call::LogActivity(n)
                };
                (make(Side::Model), make(Side::Pg), Some("a"))
            }
            Action::RecordSignal {
                contact,
                kind,
                minute,
            } => {
                let r = self.resolve(*contact, false);
                let make = |side| {
                    let mut n = NewSignal::new(
                        cid(&r, side),
                        SignalKind::parse(pick(SIGNAL_KINDS, *kind)).unwrap(),
                    );
                    if let Some(m) = minute {
                        n = n.occurred_at(at_minute(*m));
                    }
                    Call::RecordSignal(n)
                };
                (make(Side::Model), make(Side::Pg), Some("s"))
            }
            Action::WriteScores(list) => {
                let mut m = Vec::new();
                let mut p = Vec::new();
                for (t, score) in list {
                    let r = self.resolve(*t, false);
                    let s = Score::new(i64::from(*score)).unwrap();
                    m.push((cid(&r, Side::Model), s));
                    p.push((cid(&r, Side::Pg), s));
                }
                (Call::WriteScores(m), Call::WriteScores(p), None)
            }
            Action::Search {
                which,
                text,
                casing,
                limit,
            } => {
                let (a, b) = both(Call::Search(search_query(*which, *text, *casing, *limit)));
                (a, b, None)
            }
            Action::Timeline { contact, limit } => {
                let r = self.resolve(*contact, false);
                (
                    Call::Timeline(cid(&r, Side::Model), *limit),
                    Call::Timeline(cid(&r, Side::Pg), *limit),
                    None,
                )
            }
            Action::ListDeals { contact, limit } => {
                let r = self.resolve(*contact, false);
                (
                    Call::ListDeals(cid(&r, Side::Model), *limit),
                    Call::ListDeals(cid(&r, Side::Pg), *limit),
                    None,
                )
            }
            Action::ListDealsInStage {
                pipeline,
                stage,
                limit,
            } => {
                let (a, b) = both(Call::ListDealsInStage(
                    PipelineKey::parse(pick(PIPELINES, *pipeline)).unwrap(),
                    StageKey::parse(pick(STAGES, *stage)).unwrap(),
                    *limit,
                ));
                (a, b, None)
            }
            Action::ListSignals(t) => {
                let r = self.resolve(*t, false);
                (
                    Call::ListSignals(cid(&r, Side::Model)),
                    Call::ListSignals(cid(&r, Side::Pg)),
                    None,
                )
            }
            Action::TopAccounts => {
                let (a, b) = both(Call::TopAccounts);
                (a, b, None)
            }
            Action::Summary(p) => {
                let (a, b) = both(Call::Summary(
                    PipelineKey::parse(pick(PIPELINES, *p)).unwrap(),
                ));
                (a, b, None)
            }
            Action::CreateCompany {
                name,
                domain,
                industry,
                employees,
                owner,
                metadata: m,
            } => {
                let mut n = NewCompany::new(CompanyName::parse(pick(COMPANIES, *name)).unwrap());
                n.domain = domain.map(company_domain);
                n.industry = industry.map(|i| Industry::parse(pick(INDUSTRIES, i)).unwrap());
                n.employee_count = *employees;
                n.owner = owner.map(owner_id);
                n.metadata = metadata(*m);
                let (a, b) = both(Call::CreateCompany(n));
                (a, b, Some("co"))
            }
            Action::GetCompany(t) => {
                let r = self.resolve_in(*t, Kind::Company);
                (
                    Call::GetCompany(CompanyId::from_uuid(r.model)),
                    Call::GetCompany(CompanyId::from_uuid(r.pg)),
                    None,
                )
            }
            Action::GetCompanyByDomain(d) => {
                let (a, b) = both(Call::GetCompanyByDomain(company_domain(*d)));
                (a, b, None)
            }
            Action::UpdateCompany {
                company,
                version,
                name,
                domain,
                industry,
                owner,
                metadata: m,
            } => {
                let r = self.resolve_in(*company, Kind::Company);
                let v = Self::version_of(model_tx, &r, Kind::Company, *version).await;
                let p = CompanyPatch {
                    name: name.map(|i| CompanyName::parse(pick(COMPANIES, i)).unwrap()),
                    domain: domain.map(|d| d.map(company_domain)),
                    industry: industry
                        .map(|d| d.map(|i| Industry::parse(pick(INDUSTRIES, i)).unwrap())),
                    owner: owner.map(|o| o.map(owner_id)),
                    metadata: m.map(metadata),
                    ..CompanyPatch::default()
                };
                (
                    Call::UpdateCompany(CompanyId::from_uuid(r.model), v, p.clone()),
                    Call::UpdateCompany(CompanyId::from_uuid(r.pg), v, p),
                    None,
                )
            }
            Action::MergeCompanies(s, l) => {
                let (s, l) = (
                    self.resolve_in(*s, Kind::Company),
                    self.resolve_in(*l, Kind::Company),
                );
                (
                    Call::MergeCompanies(
                        CompanyId::from_uuid(s.model),
                        CompanyId::from_uuid(l.model),
                    ),
                    Call::MergeCompanies(CompanyId::from_uuid(s.pg), CompanyId::from_uuid(l.pg)),
                    None,
                )
            }
            Action::DeleteCompany(t) => {
                let r = self.resolve_in(*t, Kind::Company);
                (
                    Call::DeleteCompany(CompanyId::from_uuid(r.model)),
                    Call::DeleteCompany(CompanyId::from_uuid(r.pg)),
                    None,
                )
            }
            Action::SearchCompanies {
                which,
                text,
                casing,
                owner,
                tags,
                limit,
            } => {
                let (tm, tp) = self.tag_filter(tags);
                let mut q = CompanyQuery::new().with_page(PageRequest::first(*limit));
                q = match which % 6 {
                    0 => q.with_sort(CompanySort::NameAsc),
                    1 => {
                        let s = pick(COMPANIES, *text);
                        let n = 1 + (text / COMPANIES.len()) % 4;
                        q.with_name_prefix(recase(&s.chars().take(n).collect::<String>(), *casing))
                            .with_sort(CompanySort::NameDesc)
                    }
                    2 => q
                        .with_domain(company_domain(*text))
                        .with_sort(CompanySort::CreatedDesc),
                    3 => q.with_sort(CompanySort::CreatedAsc),
                    4 => q.with_sort(CompanySort::NameAsc),
                    _ => q
                        .with_metadata_contains(contained(*text))
                        .with_sort(CompanySort::CreatedDesc),
                };
                if *which >= 3
                    && let Some(o) = owner
                {
                    q = q.with_owner(owner_id(*o));
                }
                let (qm, qp) = if *which >= 3 {
                    (q.clone().with_tags(tm), q.with_tags(tp))
                } else {
                    (q.clone(), q)
                };
                (Call::SearchCompanies(qm), Call::SearchCompanies(qp), None)
            }
            Action::SearchLinked {
                owner,
                company,
                tags,
                sort,
                limit,
            } => {
                let (tm, tp) = self.tag_filter(tags);
                let (cm, cp) = self.company_link(*company);
                let sort = [
                    ContactSort::NameAsc,
                    ContactSort::CreatedDesc,
                    ContactSort::ScoreDesc,
                    ContactSort::UpdatedAsc,
                ][*sort % 4];
                let mut q = ContactQuery::new()
                    .with_page(PageRequest::first(*limit))
                    .with_sort(sort);
                if let Some(o) = owner {
                    q = q.with_owner(owner_id(*o));
                }
                let (mut qm, mut qp) = (q.clone().with_tags(tm), q.with_tags(tp));
                if let (Some(m), Some(p)) = (cm, cp) {
                    qm = qm.with_company(m);
                    qp = qp.with_company(p);
                }
                (Call::Search(qm), Call::Search(qp), None)
            }
            Action::SearchDeals {
                owner,
                company,
                tags,
                limit,
            } => {
                let (tm, tp) = self.tag_filter(tags);
                let (cm, cp) = self.company_link(*company);
                let mut q = DealQuery::new().with_page(PageRequest::first(*limit));
                if let Some(o) = owner {
                    q = q.with_owner(owner_id(*o));
                }
                let (mut qm, mut qp) = (q.clone().with_tags(tm), q.with_tags(tp));
                if let (Some(m), Some(p)) = (cm, cp) {
                    qm = qm.with_company(m);
                    qp = qp.with_company(p);
                }
                (Call::SearchDeals(qm), Call::SearchDeals(qp), None)
            }
            Action::ReassignOwner { from, to, kind } => {
                let (a, b) = both(Call::ReassignOwner(
                    owner_id(*from),
                    owner_id(*to),
                    kind.map(|k| RecordKind::ALL[k % RecordKind::ALL.len()]),
                ));
                (a, b, None)
            }
            Action::CreateTag {
                name,
                casing,
                colour,
            } => {
                let mut n = NewTag::new(tag_name(*name, *casing));
                n.colour = colour.map(tag_colour);
                let (a, b) = both(Call::CreateTag(n));
                (a, b, Some("k"))
            }
            Action::GetTagByName(n, c) => {
                let (a, b) = both(Call::GetTagByName(tag_name(*n, *c)));
                (a, b, None)
            }
            Action::UpdateTag {
                tag,
                version,
                name,
                colour,
            } => {
                let r = self.resolve_in(*tag, Kind::Tag);
                let v = Self::version_of(model_tx, &r, Kind::Tag, *version).await;
                let p = TagPatch {
                    name: name.map(|(n, c)| tag_name(n, c)),
                    colour: colour.map(|c| c.map(tag_colour)),
                };
                (
                    Call::UpdateTag(TagId::from_uuid(r.model), v, p.clone()),
                    Call::UpdateTag(TagId::from_uuid(r.pg), v, p),
                    None,
                )
            }
            Action::DeleteTag(t) => {
                let r = self.resolve_in(*t, Kind::Tag);
                (
                    Call::DeleteTag(TagId::from_uuid(r.model)),
                    Call::DeleteTag(TagId::from_uuid(r.pg)),
                    None,
                )
            }
            Action::AttachTag(t, rec) | Action::DetachTag(t, rec) => {
                let r = self.resolve_in(*t, Kind::Tag);
                let (rm, rp) = self.record(*rec);
                let (tm, tp) = (TagId::from_uuid(r.model), TagId::from_uuid(r.pg));
                if matches!(action, Action::AttachTag(..)) {
                    (Call::AttachTag(tm, rm), Call::AttachTag(tp, rp), None)
                } else {
                    (Call::DetachTag(tm, rm), Call::DetachTag(tp, rp), None)
                }
            }
            Action::TagsOf(rec) => {
                let (rm, rp) = self.record(*rec);
                (Call::TagsOf(rm), Call::TagsOf(rp), None)
            }
            Action::ListTags(limit) => {
                let (a, b) = both(Call::ListTags(*limit));
                (a, b, None)
            }
            Action::CreateTask {
                title,
                due,
                assignee,
                priority,
                contact,
                company,
                deal,
            } => {
                let c = contact.map(|t| self.resolve_in(t, Kind::Contact));
                let co = company.map(|t| self.resolve_in(t, Kind::Company));
                let d = deal.map(|t| self.resolve_in(t, Kind::Deal));
                let make = |side| {
                    let mut n = NewTask::new(TaskTitle::parse(pick(TASK_TITLES, *title)).unwrap());
                    n.due_at = due.map(at_minute);
                    n.assignee = assignee.map(owner_id);
                    n.priority = TaskPriority::ALL[priority % TaskPriority::ALL.len()];
                    n.contact_id = c.map(|r| ContactId::from_uuid(r.on(side)));
                    n.company_id = co.map(|r| CompanyId::from_uuid(r.on(side)));
                    n.deal_id = d.map(|r| DealId::from_uuid(r.on(side)));
                    Call::CreateTask(n)
                };
                (make(Side::Model), make(Side::Pg), Some("t"))
            }
            Action::UpdateTask {
                task,
                version,
                title,
                due,
                assignee,
                priority,
                contact,
                company,
                deal,
            } => {
                let r = self.resolve_in(*task, Kind::Task);
                let v = Self::version_of(model_tx, &r, Kind::Task, *version).await;
                let c = contact.map(|o| o.map(|t| self.resolve_in(t, Kind::Contact)));
                let co = company.map(|o| o.map(|t| self.resolve_in(t, Kind::Company)));
                let d = deal.map(|o| o.map(|t| self.resolve_in(t, Kind::Deal)));
                let make = |side| {
                    let p = TaskPatch {
                        title: title.map(|i| TaskTitle::parse(pick(TASK_TITLES, i)).unwrap()),
                        due_at: due.map(|d| d.map(at_minute)),
                        assignee: assignee.map(|o| o.map(owner_id)),
                        priority: priority.map(|i| TaskPriority::ALL[i % TaskPriority::ALL.len()]),
                        contact_id: c.map(|o| o.map(|r| ContactId::from_uuid(r.on(side)))),
                        company_id: co.map(|o| o.map(|r| CompanyId::from_uuid(r.on(side)))),
                        deal_id: d.map(|o| o.map(|r| DealId::from_uuid(r.on(side)))),
                        ..TaskPatch::default()
                    };
                    Call::UpdateTask(TaskId::from_uuid(r.on(side)), v, p)
                };
                (make(Side::Model), make(Side::Pg), None)
            }
            Action::CompleteTask(t, m) => {
                let r = self.resolve_in(*t, Kind::Task);
                (
                    Call::CompleteTask(TaskId::from_uuid(r.model), at_minute(*m)),
                    Call::CompleteTask(TaskId::from_uuid(r.pg), at_minute(*m)),
                    None,
                )
            }
            Action::ReopenTask(t) => {
                let r = self.resolve_in(*t, Kind::Task);
                (
                    Call::ReopenTask(TaskId::from_uuid(r.model)),
                    Call::ReopenTask(TaskId::from_uuid(r.pg)),
                    None,
                )
            }
            Action::DeleteTask(t) => {
                let r = self.resolve_in(*t, Kind::Task);
                (
                    Call::DeleteTask(TaskId::from_uuid(r.model)),
                    Call::DeleteTask(TaskId::from_uuid(r.pg)),
                    None,
                )
            }
            Action::OpenTasks(o, limit) => {
                let (a, b) = both(Call::OpenTasks(owner_id(*o), *limit));
                (a, b, None)
            }
            Action::OverdueTasks(o, limit) => {
                let (a, b) = both(Call::OverdueTasks(o.map(owner_id), *limit));
                (a, b, None)
            }
            Action::TasksOf(rec, limit) => {
                let (rm, rp) = self.record(*rec);
                (Call::TasksOf(rm, *limit), Call::TasksOf(rp, *limit), None)
            }
        }
    }

    /// Runs one action in the two open transactions and compares.
    async fn act(
        &mut self,
        tenant: usize,
        model_tx: &mut dyn Transaction,
        pg_tx: &mut dyn Transaction,
        action: &Action,
    ) -> Result<(), TestCaseError> {
        let (model_call, pg_call, creates) = self.calls(model_tx, action).await;
        let model = exec(model_tx, &model_call).await;
        let pg = exec(pg_tx, &pg_call).await;
        self.log.push(format!("tenant {tenant}: {model_call:?}"));

        // Label what both created.
        if let (Ok(m), Ok(p), Some(prefix)) = (&model, &pg, creates) {
            let (mid, pid) = match (m, p) {
                (Raw::Contact(a), Raw::Contact(b)) => (a.id.as_uuid(), b.id.as_uuid()),
                (Raw::Deal(a), Raw::Deal(b)) => (a.id.as_uuid(), b.id.as_uuid()),
                (Raw::Activity(a), Raw::Activity(b)) => (a.id.as_uuid(), b.id.as_uuid()),
                (Raw::Signal(a), Raw::Signal(b)) => (a.id.as_uuid(), b.id.as_uuid()),
                (Raw::Company(a), Raw::Company(b)) => (a.id.as_uuid(), b.id.as_uuid()),
                (Raw::Tag(a), Raw::Tag(b)) => (a.id.as_uuid(), b.id.as_uuid()),
                (Raw::Task(a), Raw::Task(b)) => (a.id.as_uuid(), b.id.as_uuid()),
                _ => return Err(TestCaseError::fail("a create returned something else")),
            };
            let pair = Pair {
                model: mid,
                pg: pid,
                tenant,
            };
            let label = match prefix {
                "c" => {
                    self.contacts.push(pair);
                    format!("c{}", self.contacts.len() - 1)
                }
                "d" => {
                    self.deals.push(pair);
                    format!("d{}", self.deals.len() - 1)
                }
                "co" => {
                    self.companies.push(pair);
                    format!("co{}", self.companies.len() - 1)
                }
                "k" => {
                    self.tags.push(pair);
                    format!("k{}", self.tags.len() - 1)
                }
                "t" => {
                    self.tasks.push(pair);
                    format!("t{}", self.tasks.len() - 1)
                }
                "a" => {
                    self.activities += 1;
                    format!("a{}", self.activities - 1)
                }
                _ => {
                    self.signals += 1;
                    format!("s{}", self.signals - 1)
                }
            };
            self.labels.add(label, mid, pid);
        }
        self.remember_emails(&model);
        let call_name = format!("{model_call:?}");
        let call_name = call_name.split('(').next().unwrap_or_default();
        count(
            self.stats,
            match &model {
                Ok(_) => format!("{call_name} ok"),
                Err(e) => format!("{call_name} {:?}", e.kind()),
            },
        );

        match (action, &model) {
            (
                Action::CreateContact {
                    company_id: None, ..
                },
                Ok(Raw::Contact(c)),
            ) if c.company_id.is_some() => {
                count(self.stats, "CreateContact linked by domain".into())
            }
            (Action::SearchLinked { .. }, Ok(Raw::Contacts(w)))
                if w.pages.iter().any(|p| !p.items.is_empty()) =>
            {
                count(self.stats, "SearchLinked found some".into())
            }
            (Action::SearchCompanies { which, .. }, Ok(Raw::Companies(w)))
                if *which >= 3 && w.pages.iter().any(|p| !p.items.is_empty()) =>
            {
                count(self.stats, "SearchCompanies filtered found some".into())
            }
            (Action::DeleteCompany(_), Ok(Raw::Deleted(true))) => {
                count(self.stats, "DeleteCompany deleted".into())
            }
            (Action::TopAccounts, Ok(Raw::Accounts(a))) if !a.is_empty() => {
                count(self.stats, "TopAccounts found some".into())
            }
            (Action::MergeCompanies(..), Ok(Raw::Company(_))) => {
                count(self.stats, "MergeCompanies ok".into())
            }
            (Action::ReassignOwner { .. }, Ok(Raw::Reassigned(a, b, c))) if a + b + c > 0 => {
                count(self.stats, "ReassignOwner moved some".into())
            }
            _ => {}
        }
        let mut mv: Outcome = match &model {
            Ok(r) => Ok(self.labels.view(Side::Model, r)),
            Err(e) => Err(self.labels.error(Side::Model, e)),
        };
        let mut pv: Outcome = match &pg {
            Ok(r) => Ok(self.labels.view(Side::Pg, r)),
            Err(e) => Err(self.labels.error(Side::Pg, e)),
        };
        if let (Call::Search(q), Ok(m), Ok(p)) = (&model_call, &model, &pg)
            && (has_time_ties(q.sort, m) || has_time_ties(q.sort, p))
        {
            mv = mv.map(as_set);
            pv = pv.map(as_set);
        }
        prop_assert_eq!(
            &mv,
            &pv,
            "model and PostgreSQL differ at step {} ({:?}); steps so far:\n{}",
            self.log.len(),
            action,
            self.log.join("\n")
        );
        let runaway = matches!(
            &mv,
            Ok(View::Contacts(_, true)
                | View::Activities(_, true)
                | View::Deals(_, true)
                | View::Companies(_, true)
                | View::TagPages(_, true)
                | View::Tasks(_, true))
        );
        prop_assert!(
            !runaway,
            "following the cursors never ended at step {}: {:?}",
            self.log.len(),
            action
        );
        Ok(())
    }

    fn remember_emails(&mut self, raw: &crm_core::Result<Raw>) {
        let contacts: Vec<&Contact> = match raw {
            Ok(Raw::Contact(c)) | Ok(Raw::MaybeContact(Some(c))) => vec![c],
            Ok(Raw::Contacts(w)) => w.pages.iter().flat_map(|p| &p.items).collect(),
            _ => Vec::new(),
        };
        for c in contacts {
            let id = c.id.as_uuid();
            if let Some(i) = self.contacts.iter().position(|p| p.model == id) {
                self.emails.insert(i, c.email.as_str().to_string());
            }
        }
    }

    async fn begin_both(&self, tenant: usize) -> (Box<dyn Transaction>, Box<dyn Transaction>) {
        let t = self.tenants[tenant];
        let m = self.model.begin(t, self.ctx.clone()).await.unwrap();
        let p = self.pg.begin(t, self.ctx.clone()).await.unwrap();
        (m, p)
    }

    async fn run_step(&mut self, step: &Step) -> Result<(), TestCaseError> {
        match step {
            Step::Single {
                tenant,
                foreign,
                action,
            } => {
                let tenant = self.step_tenant(*tenant, *foreign, action);
                let (mut m, mut p) = self.begin_both(tenant).await;
                self.act(tenant, m.as_mut(), p.as_mut(), action).await?;
                // Commit even after an error: the transaction stays usable
                // and the failed operation wrote nothing.
                let (mc, pc) = (m.commit().await, p.commit().await);
                prop_assert!(
                    mc.is_ok() && pc.is_ok(),
                    "commit after {:?}: model {:?}, PostgreSQL {:?}",
                    action,
                    mc,
                    pc
                );
            }
            Step::Batch {
                tenant,
                actions,
                end,
            } => {
                self.log.push(format!("-- begin tenant {tenant}"));
                let (mut m, mut p) = self.begin_both(*tenant).await;
                for a in actions {
                    self.act(*tenant, m.as_mut(), p.as_mut(), a).await?;
                }
                self.log.push(format!("-- end: {end:?}"));
                count(self.stats, format!("batch {end:?}"));
                match end {
                    End::Commit => {
                        let (mc, pc) = (m.commit().await, p.commit().await);
                        prop_assert!(
                            mc.is_ok() && pc.is_ok(),
                            "commit: model {:?}, PostgreSQL {:?}",
                            mc,
                            pc
                        );
                    }
                    End::Rollback => {
                        let (mr, pr) = (m.rollback().await, p.rollback().await);
                        prop_assert!(
                            mr.is_ok() && pr.is_ok(),
                            "rollback: model {:?}, PostgreSQL {:?}",
                            mr,
                            pr
                        );
                    }
                    End::Drop => drop((m, p)),
                }
                if *end != End::Commit {
                    self.compare_state("after a transaction that did not commit")
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Everything of both tenants, read back from both backends.
    async fn state(&self, side: Side) -> Vec<View> {
        let mut out = Vec::new();
        for (ti, tenant) in self.tenants.into_iter().enumerate() {
            let mut tx = match side {
                Side::Model => self.model.begin(tenant, self.ctx.clone()).await,
                Side::Pg => self.pg.begin(tenant, self.ctx.clone()).await,
            }
            .unwrap();
            // By name: distinct names or ties broken by id (module docs).
            let q = ContactQuery::new()
                .with_sort(ContactSort::NameAsc)
                .with_page(PageRequest::first(1000));
            let all = tx.search_contacts(&q).await.unwrap();
            assert!(all.next_cursor.is_none());
            out.push(self.labels.view(
                side,
                &Raw::Contacts(Walk {
                    pages: vec![all.clone()],
                    runaway: false,
                }),
            ));
            for c in &all.items {
                let deals = tx
                    .list_deals_for_contact(c.id, &PageRequest::first(1000))
                    .await
                    .unwrap();
                out.push(self.labels.view(
                    side,
                    &Raw::Deals(Walk {
                        pages: vec![deals.clone()],
                        runaway: false,
                    }),
                ));
                let timeline = tx.timeline(c.id, &PageRequest::first(1000)).await.unwrap();
                out.push(self.labels.view(
                    side,
                    &Raw::Activities(Walk {
                        pages: vec![timeline],
                        runaway: false,
                    }),
                ));
                let signals = tx.list_signals(c.id).await.unwrap();
                out.push(self.labels.view(side, &Raw::Signals(signals)));
                let tags = tx.tags_of(RecordRef::Contact(c.id)).await.unwrap();
                out.push(self.labels.view(side, &Raw::TagList(tags)));
                for d in &deals.items {
                    let tags = tx.tags_of(RecordRef::Deal(d.id)).await.unwrap();
                    out.push(self.labels.view(side, &Raw::TagList(tags)));
                }
            }
            // Companies by name (ties by id), and the tags of each.
            let q = CompanyQuery::new().with_page(PageRequest::first(1000));
            let companies = tx.search_companies(&q).await.unwrap();
            assert!(companies.next_cursor.is_none());
            for c in &companies.items {
                let tags = tx.tags_of(RecordRef::Company(c.id)).await.unwrap();
                out.push(self.labels.view(side, &Raw::TagList(tags)));
            }
            out.push(self.labels.view(
                side,
                &Raw::Companies(Walk {
                    pages: vec![companies],
                    runaway: false,
                }),
            ));
            let tags = tx.list_tags(&PageRequest::first(1000)).await.unwrap();
            out.push(self.labels.view(side, &Raw::TagList(tags.items)));
            // The history of every company, tag and task ever created in
            // this tenant, by label.
            for (kind, pool) in [
                (Kind::Company, &self.companies),
                (Kind::Tag, &self.tags),
                (Kind::Task, &self.tasks),
            ] {
                for p in pool.iter().filter(|p| p.tenant == ti) {
                    let id = match side {
                        Side::Model => p.model,
                        Side::Pg => p.pg,
                    };
                    let entity = match kind {
                        Kind::Company => HistoryEntity::Company(CompanyId::from_uuid(id)),
                        Kind::Tag => HistoryEntity::Tag(TagId::from_uuid(id)),
                        _ => HistoryEntity::Task(TaskId::from_uuid(id)),
                    };
                    let h = tx
                        .entity_history(entity, &PageRequest::first(1000))
                        .await
                        .unwrap();
                    assert!(h.next_cursor.is_none());
                    if side == Side::Model && h.items.len() > 1 {
                        count(self.stats, format!("{kind:?} history of changes"));
                    }
                    out.push(View::History(
                        h.items
                            .iter()
                            .map(|e| self.labels.history(side, e))
                            .collect(),
                    ));
                }
            }
            // The history of the taggings (whose ids the test never sees):
            // every version of every tagging, as a multiset.
            let (from, until) = (explicit_cutoff(), Utc::now() + chrono::Duration::days(1));
            let changes = walk(
                async |page| tx.changes_between(from, until, &page).await,
                PageRequest::first(1000),
            )
            .await
            .unwrap();
            let mut taggings: Vec<HistoryView> = changes
                .pages
                .iter()
                .flat_map(|p| &p.items)
                .filter(|e| matches!(e.entity, HistoryEntity::Tagging(_)))
                .map(|e| {
                    let mut v = self.labels.history(side, e);
                    if let Some(o) = v.values.as_object_mut() {
                        o.remove("id");
                    }
                    v
                })
                .collect();
            taggings.sort_by_key(|v| format!("{v:?}"));
            if side == Side::Model && !taggings.is_empty() {
                count(self.stats, "Tagging history".to_string());
            }
            out.push(View::History(taggings));
            // Every task ever created in this tenant, by label.
            for p in self.tasks.iter().filter(|p| p.tenant == ti) {
                let id = match side {
                    Side::Model => p.model,
                    Side::Pg => p.pg,
                };
                let t = tx.get_task(TaskId::from_uuid(id)).await.unwrap();
                out.push(View::MaybeTask(t.map(|t| self.labels.task(side, &t))));
            }
            for p in ["default", "enterprise"] {
                let s = tx
                    .pipeline_summary(&PipelineKey::parse(p).unwrap())
                    .await
                    .unwrap();
                out.push(View::Summary(s));
            }
            tx.commit().await.unwrap();
        }
        out
    }

    async fn compare_state(&self, when: &str) -> Result<(), TestCaseError> {
        let model = self.state(Side::Model).await;
        let pg = self.state(Side::Pg).await;
        prop_assert_eq!(
            model,
            pg,
            "the stored state differs {}; steps:\n{}",
            when,
            self.log.join("\n")
        );
        Ok(())
    }
}

/// Metadata to search for with `jsonb @>` semantics: plain fields, a
/// number written as a float, a scalar against an array (which jsonb
/// matches only at the top level), numbers that differ beyond f64's
/// precision, arrays in arrays.
fn contained(i: usize) -> Metadata {
    let v = match i % 7 {
        0 => serde_json::json!({"plan": "pro"}),
        1 => serde_json::json!({"plan": "free", "seats": 3.0}),
        2 => serde_json::json!({"tags": "a"}),
        3 => serde_json::json!({"tags": ["b"]}),
        4 => serde_json::json!({"n": 9_007_199_254_740_992_u64}),
        5 => serde_json::json!({"nested": {"k": [[2]]}}),
        _ => serde_json::json!({"ratio": 0.300_000_000_000_000_04}),
    };
    Metadata::parse(v).unwrap()
}

fn owner_id(i: usize) -> OwnerId {
    OwnerId::parse(pick(OWNERS, i)).unwrap()
}

fn company_domain(i: usize) -> CompanyDomain {
    CompanyDomain::parse(pick(DOMAINS, i)).unwrap()
}

fn tag_name(i: usize, casing: u32) -> TagName {
    TagName::parse(&recase(pick(TAG_NAMES, i), casing)).unwrap()
}

fn tag_colour(i: usize) -> TagColour {
    TagColour::parse(pick(TAG_COLOURS, i)).unwrap()
}

fn pick_owned(pool: &[&str], i: usize) -> String {
    pick(pool, i).to_string()
}

fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 1, 1).unwrap() + chrono::Duration::days(i64::from(d))
}

/// A few filter and sort combinations, with text prefixes in random casing.
fn search_query(which: usize, text: usize, casing: u32, limit: u32) -> ContactQuery {
    let prefix = |pool: &[&str]| {
        let s = pick(pool, text);
        let n = 1 + (text / pool.len()) % 4;
        recase(&s.chars().take(n).collect::<String>(), casing)
    };
    let q = ContactQuery::new().with_page(PageRequest::first(limit));
    match which % 8 {
        0 => q.with_sort(ContactSort::NameAsc),
        1 => q
            .with_name_prefix(prefix(&[FIRST_NAMES, LAST_NAMES].concat()))
            .with_sort(ContactSort::NameDesc),
        2 => q.with_active(true).with_sort(ContactSort::ScoreDesc),
        3 => q
            .with_min_score(Score::new(10).unwrap())
            .with_max_score(Score::new(80).unwrap())
            .with_sort(ContactSort::ScoreAsc),
        4 => q
            .with_email_prefix(prefix(EMAILS))
            .with_sort(ContactSort::CreatedDesc),
        5 => q
            .with_company_prefix(prefix(COMPANIES))
            .with_lead_sources([LeadSource::ALL[text % 5], LeadSource::ALL[(text / 5) % 5]])
            .with_sort(ContactSort::UpdatedAsc),
        6 => q
            .with_metadata_contains(contained(text))
            .with_sort(ContactSort::CreatedAsc),
        _ => q.with_active(false).with_sort(ContactSort::UpdatedDesc),
    }
}

async fn run_case(pg: &TestStore, stats: &Stats, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let mut case = Case::new(pg, stats);
    for s in &steps {
        case.run_step(s).await?;
    }
    case.compare_state("at the end").await?;
    // Every contact has its rank row (the score's table), whose copies of
    // the active flag and creation time follow it, and no row outlives
    // its contact.
    prop_assert_eq!(support::ranks_out_of_step(pg.db()).await, 0);
    Ok(())
}

#[test]
fn random_operation_sequences_give_the_same_results_in_memory_and_on_postgres() {
    // Every pool value is valid.
    for e in EMAILS {
        for mask in [0, u32::MAX, 0x5555_5555] {
            Email::parse(&recase(e, mask)).unwrap();
        }
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = rt.block_on(TestStore::new());
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    // A fixed seed unless one is given: the coverage check below asks a
    // random run to reach rare outcomes (an activity on another contact's
    // deal), which an unlucky seed can miss, so CI runs one known
    // sequence; `CRM_DIFFERENTIAL_SEED=<u64>` explores others.
    let seed: u64 = std::env::var("CRM_DIFFERENTIAL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_261_205);
    eprintln!("operation sequences from seed {seed} (CRM_DIFFERENTIAL_SEED)");
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases,
            failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
                "proptest-regressions",
            ))),
            source_file: Some(file!()),
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let stats = Stats::default();
    let result = runner.run(&steps(), |steps| {
        rt.block_on(run_case(&store, &stats, steps))
    });
    if let Err(e) = result {
        panic!("{e}");
    }

    // The run reached what it is meant to compare (with the default number
    // of cases; a handful of cases need not).
    if cases >= 256 {
        let stats = stats.into_inner().unwrap();
        let mut sorted: Vec<_> = stats.iter().collect();
        sorted.sort();
        eprintln!("outcomes over the run (model side): {sorted:#?}");
        let expected = [
            "CreateContact ok",
            "CreateContact DuplicateEmail",
            "UpdateContact ok",
            "UpdateContact DuplicateEmail",
            "UpdateContact Conflict",
            "UpdateContact NotFound",
            "CreateDeal ok",
            "CreateDeal Validation",
            "MoveDeal ok",
            "MoveDeal InvalidTransition",
            "MoveDeal Conflict",
            "ReopenDeal ok",
            "ReopenDeal InvalidTransition",
            "LogActivity ok",
            "LogActivity Validation",
            "LogActivity NotFound",
            "RecordSignal ok",
            "WriteScores ok",
            "Search ok",
            "Timeline ok",
            "ListDeals ok",
            "DeleteContact ok",
            "DeleteDeal ok",
            "Summary Validation",
            "CreateCompany ok",
            "CreateCompany Duplicate",
            "CreateContact linked by domain",
            "UpdateCompany ok",
            "UpdateCompany Duplicate",
            "DeleteCompany deleted",
            "MergeCompanies ok",
            "GetCompanyByDomain ok",
            "SearchLinked found some",
            "ReassignOwner moved some",
            "CreateTag ok",
            "CreateTag Duplicate",
            "UpdateTag ok",
            "AttachTag ok",
            "DetachTag ok",
            "DeleteTag ok",
            "TagsOf ok",
            "ListTags ok",
            "CreateTask ok",
            "CreateTask NotFound",
            "UpdateTask ok",
            "CompleteTask ok",
            "ReopenTask ok",
            "DeleteTask ok",
            "OpenTasks ok",
            "OverdueTasks ok",
            "TasksOf ok",
            "Company history of changes",
            "Tag history of changes",
            "Task history of changes",
            "Tagging history",
            "batch Commit",
            "batch Rollback",
            "batch Drop",
        ];
        let missing: Vec<&str> = expected
            .into_iter()
            .filter(|k| !stats.contains_key(*k))
            .collect();
        assert!(
            missing.is_empty(),
            "the run never reached {missing:?}; it reached {stats:#?}"
        );
    }
    // The pool closes before the database is dropped.
    rt.block_on(async move { drop(store) });
}

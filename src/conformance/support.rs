//! Helpers shared by the conformance suite's areas: building inputs,
//! running transactions, reading records back, paging, snapshots and
//! assertions on the contract's errors.

use std::{fmt, str::FromStr};

use chrono::{Duration, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::{Value, json};

use super::prelude::*;

pub(super) fn ctx() -> Context {
    Context::system("conformance")
}

#[track_caller]
pub(super) fn ok<T>(result: Result<T>, what: &str) -> T {
    match result {
        Ok(v) => v,
        Err(e) => panic!("{what}: unexpected error: {e} ({e:?})"),
    }
}

#[track_caller]
pub(super) fn expect_not_found<T: fmt::Debug>(
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
pub(super) fn expect_validation<T: fmt::Debug>(result: Result<T>, field: &str, what: &str) {
    match result {
        Err(Error::Validation(errors)) if errors.for_field(field).next().is_some() => {}
        other => panic!("{what}: expected a validation error on `{field}`, got {other:?}"),
    }
}

#[track_caller]
pub(super) fn expect_duplicate<T: fmt::Debug>(result: Result<T>, existing: ContactId, what: &str) {
    match result {
        Err(Error::DuplicateEmail { existing_id, .. }) if existing_id == existing => {}
        other => panic!("{what}: expected DuplicateEmail naming {existing}, got {other:?}"),
    }
}

#[track_caller]
pub(super) fn expect_conflict<T: fmt::Debug>(
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
pub(super) fn expect_invalid_transition<T: fmt::Debug>(
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
pub(super) fn assert_micros(t: Timestamp, what: &str) {
    assert_eq!(
        t.timestamp_subsec_nanos() % 1000,
        0,
        "{what}: timestamps are kept at microsecond precision, got {t:?}"
    );
}

/// The exact JSON form of a record: unlike `==`, it tells emails that
/// differ only in casing apart.
pub(super) fn exact<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("records serialize to JSON")
}

#[track_caller]
pub(super) fn assert_same<T: Serialize + fmt::Debug>(actual: &T, expected: &T, what: &str) {
    assert_eq!(
        exact(actual),
        exact(expected),
        "{what}: records differ\n actual: {actual:?}\n expected: {expected:?}"
    );
}

pub(super) fn email(s: &str) -> Email {
    Email::parse(s).expect("a valid email")
}

pub(super) fn person(s: &str) -> PersonName {
    PersonName::parse(s).expect("a valid name")
}

pub(super) fn stage(s: &str) -> StageKey {
    StageKey::parse(s).expect("a valid stage key")
}

pub(super) fn score(v: i64) -> Score {
    Score::new(v).expect("a valid score")
}

pub(super) fn money(amount: &str, currency: &str) -> Money {
    Money::parse(amount, Currency::parse(currency).expect("a valid currency"))
        .expect("a valid amount")
}

pub(super) fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).expect("a valid decimal")
}

pub(super) fn new_contact(address: &str, first: &str, last: &str) -> NewContact {
    NewContact::new(email(address), person(first), person(last))
}

pub(super) fn new_deal(contact: ContactId, title: &str, amount: &str, currency: &str) -> NewDeal {
    NewDeal::new(
        contact,
        DealTitle::parse(title).expect("a valid title"),
        money(amount, currency),
    )
}

pub(super) fn lost_reason(s: &str) -> LostReason {
    LostReason::parse(s).expect("a valid lost reason")
}

pub(super) fn metadata(v: Value) -> Metadata {
    Metadata::parse(v).expect("valid metadata")
}

pub(super) fn all(sort: ContactSort) -> ContactQuery {
    ContactQuery::new()
        .with_sort(sort)
        .with_page(PageRequest::first(MAX_PAGE_SIZE))
}

/// Waits until the clock has moved on by a few milliseconds, so that the
/// next transaction gets a later timestamp than the previous one.
pub(super) async fn tick() {
    let start = Utc::now();
    while Utc::now() - start < Duration::milliseconds(3) {
        tokio::task::yield_now().await;
    }
}

pub(super) async fn begin(store: &DynStore, tenant: TenantId) -> Box<dyn Transaction> {
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

pub(super) async fn create(store: &DynStore, tenant: TenantId, new: NewContact) -> Contact {
    ok(
        store.scope(tenant, &ctx()).create_contact(new).await,
        "create a contact",
    )
}

pub(super) async fn get(store: &DynStore, tenant: TenantId, id: ContactId) -> Option<Contact> {
    ok(
        store.scope(tenant, &ctx()).get_contact(id).await,
        "get a contact",
    )
}

pub(super) async fn get_deal(store: &DynStore, tenant: TenantId, id: DealId) -> Option<Deal> {
    with_tx!(store, tenant, async |tx| ok(
        tx.get_deal(id).await,
        "get a deal"
    ))
    .await
}

pub(super) async fn deal(store: &DynStore, tenant: TenantId, new: NewDeal) -> Deal {
    ok(
        store.scope(tenant, &ctx()).create_deal(new).await,
        "create a deal",
    )
}

/// Moves a deal through [`DealsTx::move_deal`](crate::store::DealsTx::move_deal)
/// itself, lost reason and all, in a transaction of its own that commits
/// when the move succeeds and rolls back when it is refused: for the points
/// about the move's own rules, which the scoped handle splits between
/// `move_deal` and `lose_deal`.
pub(super) async fn move_in_tx(
    store: &DynStore,
    tenant: TenantId,
    id: DealId,
    expected: Version,
    to: &StageKey,
    lost_reason: Option<LostReason>,
) -> Result<Deal> {
    let mut tx = begin(store, tenant).await;
    match tx.move_deal(id, expected, to, lost_reason).await {
        Ok(moved) => {
            ok(tx.commit().await, "commit a move");
            Ok(moved)
        }
        Err(e) => {
            ok(tx.rollback().await, "roll back a refused move");
            Err(e)
        }
    }
}

pub(super) async fn search(store: &DynStore, tenant: TenantId, q: &ContactQuery) -> Page<Contact> {
    ok(
        store.scope(tenant, &ctx()).search_contacts(q).await,
        "search contacts",
    )
}

pub(super) async fn search_ids(
    store: &DynStore,
    tenant: TenantId,
    q: &ContactQuery,
) -> Vec<ContactId> {
    let page = search(store, tenant, q).await;
    assert!(
        page.next_cursor.is_none(),
        "a page that holds every match has no next cursor"
    );
    page.items.iter().map(|c| c.id).collect()
}

pub(super) async fn timeline_all(
    store: &DynStore,
    tenant: TenantId,
    contact: ContactId,
) -> Vec<Activity> {
    ok(
        store
            .scope(tenant, &ctx())
            .timeline(contact, &PageRequest::first(MAX_PAGE_SIZE))
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
pub(super) struct Stages {
    pub(super) pipeline: Pipeline,
    pub(super) open: Vec<StageKey>,
    pub(super) won: StageKey,
    pub(super) lost: StageKey,
}

pub(super) fn default_stages(store: &DynStore) -> Stages {
    let key = PipelineKey::default_pipeline();
    let pipeline = store
        .pipelines()
        .get(&key)
        .expect("the store knows the `default` pipeline")
        .clone();
    stages_of(&pipeline)
}

pub(super) fn stages_of(pipeline: &Pipeline) -> Stages {
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
pub(super) async fn snapshot(
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
pub(super) fn records_only(snapshot: Value) -> Value {
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
pub(super) fn full_contact(address: &str) -> NewContact {
    NewContact {
        email: email(address),
        first_name: person("Grace"),
        last_name: person("Hopper"),
        company: Some(CompanyName::parse("US Navy — Bureau of Ships ⚓").expect("a valid company")),
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
        company_id: None,
        owner: Some(crate::domain::OwnerId::parse("user:grace").expect("a valid owner")),
        original: None,
    }
}

pub(super) fn ids(cs: &[&Contact]) -> Vec<ContactId> {
    let mut v: Vec<ContactId> = cs.iter().map(|c| c.id).collect();
    v.sort();
    v
}

pub(super) async fn matching(store: &DynStore, t: TenantId, q: ContactQuery) -> Vec<ContactId> {
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

/// The order the contract gives `contacts` under `sort`, computed here.
pub(super) fn expected_order(sort: ContactSort, contacts: &[Contact]) -> Vec<ContactId> {
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

/// Scores to write, from (contact, score) pairs.
pub(super) fn contact_scores(pairs: &[(ContactId, Score)]) -> Vec<ContactScore> {
    pairs
        .iter()
        .map(|&(c, s)| ContactScore::new(c, s))
        .collect()
}

/// Live states to write, from (contact, state) pairs.
pub(super) fn live_states(pairs: &[(ContactId, Option<f64>)]) -> Vec<LiveState> {
    pairs.iter().map(|&(c, l)| LiveState::new(c, l)).collect()
}

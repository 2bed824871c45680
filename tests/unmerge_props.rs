//! Undoing merges, as a property: any sequence of edits, merges and
//! unmerges over a handful of contacts, followed by undoing every merge
//! still in effect (newest first, keeping survivor fields edited since),
//! leaves every record as a replay of the same edits without any merge
//! would: contacts field by field, their deals (contact, title, stage),
//! activities, signals, tasks and tags. On the in-memory store always, on
//! PostgreSQL with the `postgres` feature.
//!
//! Each case works in two fresh tenants of one store: the merged world,
//! where the steps run, and the replay, where the edits that succeeded
//! there run again in the same order. An edit of a contact that is merged
//! away at that point finds nothing in the merged world and is left out of
//! both. Records are compared through labels given in order of creation
//! (`c0`, `d3`, …), since the two tenants have ids of their own.
//!
//! Two rules of the generator keep an edit from being mistaken for the
//! merge's own work, which no store can tell apart by values:
//!
//! - every value an edit writes is fresh (made from the step's number), so
//!   an edit never writes the value a merge put into a field (an unmerge
//!   would take such a field for untouched and restore it);
//! - each contact has tags of its own (`c2-k0`, `c2-k1`), and tag steps on
//!   a contact use only its own tags, so a tag step is never about a tag a
//!   merge copied onto it.
//!
//! A refused unmerge (a later merge in effect, survivor fields edited
//! since, undone already) must write nothing: the merged world is read
//! before and after, versions included, and must be the same.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crm_core::{
    Context, DynStore, Error, InMemoryStore, PageRequest, TenantId, Transaction,
    bulk::{ConflictPolicy, MergeId, UnmergeConflicts},
    domain::{
        ActivityId, ActivityKind, CompanyName, ContactId, ContactPatch, Currency, DealId,
        DealPatch, DealTitle, Email, JobTitle, Metadata, Money, NewActivity, NewContact, NewDeal,
        NewSignal, NewTag, NewTask, PersonName, Phone, RecordRef, SignalId, SignalKind, StageKey,
        TagId, TagName, TaskId, TaskPatch, TaskTitle,
    },
};
use proptest::{prelude::*, test_runner::TestRunner};
use serde_json::{Value, json};

#[cfg(all(feature = "postgres", feature = "conformance"))]
mod support;

const CONTACTS: usize = 4;
const TAGS_PER_CONTACT: usize = 2;

#[derive(Debug, Clone)]
enum Step {
    Edit { c: usize, field: u8 },
    Log { c: usize, kind: u8 },
    Signal { c: usize },
    CreateDeal { c: usize },
    MoveDeal { d: usize },
    EditDeal { d: usize },
    DeleteDeal { d: usize },
    CreateTask { c: usize },
    EditTask { t: usize },
    Attach { c: usize, k: usize },
    Detach { c: usize, k: usize },
    Merge { s: usize, l: usize, policy: u8 },
    Unmerge { m: usize, keep: bool },
}

fn step() -> impl Strategy<Value = Step> {
    let c = 0..CONTACTS;
    prop_oneof![
        4 => (c.clone(), 0u8..5).prop_map(|(c, field)| Step::Edit { c, field }),
        2 => (c.clone(), 0u8..5).prop_map(|(c, kind)| Step::Log { c, kind }),
        1 => c.clone().prop_map(|c| Step::Signal { c }),
        2 => c.clone().prop_map(|c| Step::CreateDeal { c }),
        1 => (0usize..8).prop_map(|d| Step::MoveDeal { d }),
        1 => (0usize..8).prop_map(|d| Step::EditDeal { d }),
        1 => (0usize..8).prop_map(|d| Step::DeleteDeal { d }),
        1 => c.clone().prop_map(|c| Step::CreateTask { c }),
        1 => (0usize..8).prop_map(|t| Step::EditTask { t }),
        2 => (c.clone(), 0..TAGS_PER_CONTACT).prop_map(|(c, k)| Step::Attach { c, k }),
        1 => (c.clone(), 0..TAGS_PER_CONTACT).prop_map(|(c, k)| Step::Detach { c, k }),
        4 => (c.clone(), c.clone(), 0u8..3).prop_map(|(s, l, policy)| Step::Merge { s, l, policy }),
        3 => (0usize..8, any::<bool>()).prop_map(|(m, keep)| Step::Unmerge { m, keep }),
    ]
}

/// An edit that succeeded in the merged world, by labels, to replay.
#[derive(Debug, Clone)]
enum Change {
    Contact { c: usize, patch: Box<ContactPatch> },
    Log { c: usize, kind: ActivityKind },
    Signal { c: usize },
    CreateDeal { c: usize, title: String },
    MoveDeal { d: usize, to: StageKey },
    EditDeal { d: usize, title: String },
    DeleteDeal { d: usize },
    CreateTask { c: usize, title: String },
    EditTask { t: usize, title: String },
    Attach { c: usize, k: usize },
    Detach { c: usize, k: usize },
}

/// One tenant's records by label.
struct World {
    tenant: TenantId,
    contacts: Vec<ContactId>,
    tags: Vec<Vec<TagId>>,
    deals: Vec<DealId>,
    tasks: Vec<TaskId>,
    activities: HashMap<ActivityId, usize>,
    signals: HashMap<SignalId, usize>,
    merges: Vec<MergeId>,
}

fn context() -> Context {
    Context::system("unmerge-props")
}

async fn begin(store: &DynStore, t: TenantId) -> Box<dyn Transaction> {
    store.begin(t, context()).await.expect("begin")
}

fn fresh_patch(field: u8, n: usize) -> ContactPatch {
    let mut p = ContactPatch::default();
    match field {
        0 => p.first_name = Some(PersonName::parse(&format!("First{n}")).expect("a name")),
        1 => {
            p.title = Some(Some(
                JobTitle::parse(&format!("Title {n}")).expect("a title"),
            ))
        }
        2 => {
            p.company = Some(Some(
                CompanyName::parse(&format!("Co {n}")).expect("a company"),
            ))
        }
        3 => {
            p.phone = Some(Some(
                Phone::parse(&format!("+1 555 {n:05}")).expect("a phone"),
            ))
        }
        _ => {
            p.metadata =
                Some(Metadata::parse(json!({"edit": n, "note": format!("v{n}")})).expect("json"))
        }
    }
    p
}

impl World {
    async fn new(store: &DynStore) -> World {
        let tenant = TenantId::new();
        let mut tx = begin(store, tenant).await;
        let mut contacts = Vec::new();
        let mut tags = Vec::new();
        for i in 0..CONTACTS {
            let mut new = NewContact::new(
                Email::parse(&format!("p{i}@example.com")).expect("an email"),
                PersonName::parse(&format!("Person{i}")).expect("a name"),
                PersonName::parse("Tester").expect("a name"),
            );
            if i % 2 == 1 {
                new.title = Some(JobTitle::parse(&format!("Role {i}")).expect("a title"));
                new.phone = Some(Phone::parse(&format!("+44 20 {i:04}")).expect("a phone"));
            }
            if i % 3 == 0 {
                new.company = Some(CompanyName::parse(&format!("Firm {i}")).expect("a company"));
            }
            new.metadata =
                Metadata::parse(json!({"origin": i, format!("own{i}"): true})).expect("metadata");
            let c = tx.create_contact(new).await.expect("create");
            contacts.push(c.id);
            let mut own = Vec::new();
            for k in 0..TAGS_PER_CONTACT {
                let name = TagName::parse(&format!("c{i}-k{k}")).expect("a tag name");
                own.push(tx.create_tag(NewTag::new(name)).await.expect("tag").id);
            }
            tags.push(own);
        }
        tx.commit().await.expect("commit");
        World {
            tenant,
            contacts,
            tags,
            deals: Vec::new(),
            tasks: Vec::new(),
            activities: HashMap::new(),
            signals: HashMap::new(),
            merges: Vec::new(),
        }
    }

    /// Runs `edit`; `false` when its record is not there (merged away,
    /// deleted) or the step does not apply, and then nothing was written.
    async fn apply(&mut self, store: &DynStore, edit: &Change) -> bool {
        let mut tx = begin(store, self.tenant).await;
        let done = self.apply_in(&mut *tx, edit).await;
        if done {
            tx.commit().await.expect("commit");
        } else {
            tx.rollback().await.expect("rollback");
        }
        done
    }

    async fn apply_in(&mut self, tx: &mut dyn Transaction, edit: &Change) -> bool {
        let not_found = |e: &Error| matches!(e, Error::NotFound { .. });
        match edit {
            Change::Contact { c, patch } => {
                let Some(now) = tx.get_contact(self.contacts[*c]).await.expect("get") else {
                    return false;
                };
                match tx
                    .update_contact(now.id, now.version, (**patch).clone())
                    .await
                {
                    Ok(_) => true,
                    Err(e) => panic!("edit of c{c}: {e}"),
                }
            }
            Change::Log { c, kind } => {
                match tx
                    .log_activity(NewActivity::new(self.contacts[*c], *kind))
                    .await
                {
                    Ok(a) => {
                        let n = self.activities.len();
                        self.activities.insert(a.id, n);
                        true
                    }
                    Err(e) if not_found(&e) => false,
                    Err(e) => panic!("log: {e}"),
                }
            }
            Change::Signal { c } => {
                match tx
                    .record_signal(NewSignal::new(self.contacts[*c], SignalKind::PAGE_VIEW))
                    .await
                {
                    Ok(s) => {
                        let n = self.signals.len();
                        self.signals.insert(s.id, n);
                        true
                    }
                    Err(e) if not_found(&e) => false,
                    Err(e) => panic!("signal: {e}"),
                }
            }
            Change::CreateDeal { c, title } => {
                let amount = Money::parse("10", Currency::parse("EUR").expect("EUR")).expect("10");
                let new = NewDeal::new(
                    self.contacts[*c],
                    DealTitle::parse(title).expect("a title"),
                    amount,
                );
                match tx.create_deal(new).await {
                    Ok(d) => {
                        self.deals.push(d.id);
                        true
                    }
                    Err(e) if not_found(&e) => false,
                    Err(e) => panic!("deal: {e}"),
                }
            }
            Change::MoveDeal { d, to } => {
                let Some(deal) = tx.get_deal(self.deals[*d]).await.expect("get deal") else {
                    return false;
                };
                tx.move_deal(deal.id, deal.version, to, None).await.is_ok()
            }
            Change::EditDeal { d, title } => {
                let Some(deal) = tx.get_deal(self.deals[*d]).await.expect("get deal") else {
                    return false;
                };
                let patch = DealPatch {
                    title: Some(DealTitle::parse(title).expect("a title")),
                    ..DealPatch::default()
                };
                tx.update_deal(deal.id, deal.version, patch)
                    .await
                    .expect("edit deal");
                true
            }
            Change::DeleteDeal { d } => tx.delete_deal(self.deals[*d]).await.expect("delete"),
            Change::CreateTask { c, title } => {
                let new = NewTask {
                    contact_id: Some(self.contacts[*c]),
                    ..NewTask::new(TaskTitle::parse(title).expect("a title"))
                };
                match tx.create_task(new).await {
                    Ok(t) => {
                        self.tasks.push(t.id);
                        true
                    }
                    Err(e) if not_found(&e) => false,
                    Err(e) => panic!("task: {e}"),
                }
            }
            Change::EditTask { t, title } => {
                let Some(task) = tx.get_task(self.tasks[*t]).await.expect("get task") else {
                    return false;
                };
                let patch = TaskPatch {
                    title: Some(TaskTitle::parse(title).expect("a title")),
                    ..TaskPatch::default()
                };
                tx.update_task(task.id, task.version, patch)
                    .await
                    .expect("edit task");
                true
            }
            Change::Attach { c, k } => {
                let record = RecordRef::Contact(self.contacts[*c]);
                match tx.attach_tag(self.tags[*c][*k], record).await {
                    Ok(attached) => attached,
                    Err(e) if not_found(&e) => false,
                    Err(e) => panic!("attach: {e}"),
                }
            }
            Change::Detach { c, k } => {
                let record = RecordRef::Contact(self.contacts[*c]);
                match tx.detach_tag(self.tags[*c][*k], record).await {
                    Ok(detached) => detached,
                    Err(e) if not_found(&e) => false,
                    Err(e) => panic!("detach: {e}"),
                }
            }
        }
    }

    fn contact_label(&self, id: ContactId) -> String {
        match self.contacts.iter().position(|c| *c == id) {
            Some(i) => format!("c{i}"),
            None => format!("unknown contact {id}"),
        }
    }

    /// Everything about the world's records, by label. `exact` keeps the
    /// versions and store-made times (to tell that nothing was written);
    /// without it, what a replay must reproduce.
    async fn observe(&self, store: &DynStore, exact: bool) -> Value {
        let mut tx = begin(store, self.tenant).await;
        let mut out = BTreeMap::new();
        let first = PageRequest::first(1000);
        for (i, id) in self.contacts.iter().enumerate() {
            let c = tx.get_contact(*id).await.expect("get");
            let value = c.map(|c| {
                let mut v = serde_json::to_value(&c).expect("json");
                if let Some(m) = v.as_object_mut() {
                    m.remove("id");
                    m.remove("tenant_id");
                    if !exact {
                        for f in ["version", "updated_at", "created_at"] {
                            m.remove(f);
                        }
                    }
                }
                v
            });
            let activities: BTreeSet<usize> = tx
                .timeline(*id, &first)
                .await
                .expect("timeline")
                .items
                .iter()
                .map(|a| self.activities[&a.id])
                .collect();
            let signals: BTreeSet<usize> = tx
                .list_signals(*id)
                .await
                .expect("signals")
                .iter()
                .map(|s| self.signals[&s.id])
                .collect();
            let tags: BTreeSet<String> = tx
                .tags_of(RecordRef::Contact(*id))
                .await
                .expect("tags")
                .iter()
                .map(|t| t.name.as_str().to_string())
                .collect();
            out.insert(
                format!("c{i}"),
                json!({"contact": value, "activities": activities, "signals": signals,
                       "tags": tags}),
            );
        }
        for (i, id) in self.deals.iter().enumerate() {
            let d = tx.get_deal(*id).await.expect("deal");
            let v = d.map(|d| {
                let mut v = json!({"contact": self.contact_label(d.contact_id), "title": d.title,
                    "stage": d.stage, "amount": d.amount});
                if exact {
                    v["version"] = json!(d.version);
                }
                v
            });
            out.insert(format!("d{i}"), json!(v));
        }
        for (i, id) in self.tasks.iter().enumerate() {
            let t = tx.get_task(*id).await.expect("task");
            let v = t.map(|t| {
                let mut v = json!({"contact": t.contact_id.map(|c| self.contact_label(c)),
                    "title": t.title});
                if exact {
                    v["version"] = json!(t.version);
                }
                v
            });
            out.insert(format!("t{i}"), json!(v));
        }
        if exact {
            for c in &self.contacts {
                let merges = tx.contact_merges(*c).await.expect("merges");
                out.insert(format!("merges of {c}"), json!(format!("{merges:?}")));
            }
        }
        tx.commit().await.expect("commit");
        json!(out)
    }
}

/// What step `n` is in the merged world, as an edit by labels (`None`
/// for merges, unmerges, and steps about records not made yet).
fn as_edit(world: &World, n: usize, step: &Step) -> Option<Change> {
    let pick = |len: usize, i: usize| (len > 0).then(|| i % len);
    let stages = ["qualified", "proposal", "negotiation"];
    Some(match step {
        Step::Edit { c, field } => Change::Contact {
            c: *c,
            patch: Box::new(fresh_patch(*field, n)),
        },
        Step::Log { c, kind } => Change::Log {
            c: *c,
            kind: ActivityKind::ALL[usize::from(*kind) % ActivityKind::ALL.len()],
        },
        Step::Signal { c } => Change::Signal { c: *c },
        Step::CreateDeal { c } => Change::CreateDeal {
            c: *c,
            title: format!("Deal {n}"),
        },
        Step::MoveDeal { d } => Change::MoveDeal {
            d: pick(world.deals.len(), *d)?,
            to: StageKey::parse(stages[n % stages.len()]).expect("a stage"),
        },
        Step::EditDeal { d } => Change::EditDeal {
            d: pick(world.deals.len(), *d)?,
            title: format!("Deal title {n}"),
        },
        Step::DeleteDeal { d } => Change::DeleteDeal {
            d: pick(world.deals.len(), *d)?,
        },
        Step::CreateTask { c } => Change::CreateTask {
            c: *c,
            title: format!("Task {n}"),
        },
        Step::EditTask { t } => Change::EditTask {
            t: pick(world.tasks.len(), *t)?,
            title: format!("Task title {n}"),
        },
        Step::Attach { c, k } => Change::Attach { c: *c, k: *k },
        Step::Detach { c, k } => Change::Detach { c: *c, k: *k },
        Step::Merge { .. } | Step::Unmerge { .. } => return None,
    })
}

async fn run_case(store: &DynStore, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let mut merged = World::new(store).await;
    let mut replay = World::new(store).await;
    let mut log = Vec::new();
    for (n, step) in steps.iter().enumerate() {
        match step {
            Step::Merge { s, l, policy } => {
                if s == l {
                    continue;
                }
                let (sid, lid) = (merged.contacts[*s], merged.contacts[*l]);
                let policy = [
                    ConflictPolicy::Incoming,
                    ConflictPolicy::NonEmptyIncoming,
                    ConflictPolicy::Existing,
                ][usize::from(*policy)];
                let mut tx = begin(store, merged.tenant).await;
                match tx.merge_contacts(sid, lid, policy).await {
                    Ok(_) => {
                        let id = tx.contact_merges(sid).await.expect("merges")[0].id;
                        tx.commit().await.expect("commit");
                        merged.merges.push(id);
                    }
                    Err(Error::NotFound { .. }) => tx.rollback().await.expect("rollback"),
                    Err(e) => panic!("merge c{l} into c{s}: {e}"),
                }
            }
            Step::Unmerge { m, keep } => {
                if merged.merges.is_empty() {
                    continue;
                }
                let id = merged.merges[m % merged.merges.len()];
                let conflicts = if *keep {
                    UnmergeConflicts::KeepCurrent
                } else {
                    UnmergeConflicts::Refuse
                };
                let before = merged.observe(store, true).await;
                let mut tx = begin(store, merged.tenant).await;
                match tx.unmerge_contacts(id, conflicts).await {
                    Ok(_) => tx.commit().await.expect("commit"),
                    Err(Error::UnmergeRefused { .. }) => {
                        // Committed: a refusal must leave nothing to roll back.
                        tx.commit().await.expect("commit");
                        let after = merged.observe(store, true).await;
                        prop_assert_eq!(before, after, "a refused unmerge wrote something");
                    }
                    Err(e) => panic!("unmerge: {e}"),
                }
            }
            other => {
                let Some(edit) = as_edit(&merged, n, other) else {
                    continue;
                };
                if merged.apply(store, &edit).await {
                    log.push(edit);
                }
            }
        }
    }
    // Undo every merge still in effect, newest first.
    let mut tx = begin(store, merged.tenant).await;
    let mut in_effect = BTreeMap::new();
    for c in &merged.contacts {
        for m in tx.contact_merges(*c).await.expect("merges") {
            if m.unmerged_at.is_none() {
                in_effect.insert((m.merged_at, m.id), m.id);
            }
        }
    }
    tx.commit().await.expect("commit");
    for id in in_effect.values().rev() {
        let mut tx = begin(store, merged.tenant).await;
        match tx
            .unmerge_contacts(*id, UnmergeConflicts::KeepCurrent)
            .await
        {
            Ok(_) => tx.commit().await.expect("commit"),
            Err(e) => panic!("undoing merge {id} at the end: {e}"),
        }
    }
    for edit in &log {
        let applied = replay.apply(store, edit).await;
        prop_assert!(applied, "the replay could not apply {:?}", edit);
    }
    let got = merged.observe(store, false).await;
    let want = replay.observe(store, false).await;
    prop_assert_eq!(got, want);
    Ok(())
}

/// Runs `cases` cases (or `PROPTEST_CASES`, when set).
fn run(store: &DynStore, rt: &tokio::runtime::Runtime, cases: u32) {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&prop::collection::vec(step(), 10..40), |steps| {
        rt.block_on(run_case(store, steps))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

#[test]
fn undoing_every_merge_gives_the_replay_without_merges_in_memory() {
    let rt = runtime();
    let store = InMemoryStore::new();
    run(&store, &rt, 96);
}

#[cfg(all(feature = "postgres", feature = "conformance"))]
#[test]
fn undoing_every_merge_gives_the_replay_without_merges_on_postgres() {
    let rt = runtime();
    let store = rt.block_on(support::TestStore::new());
    run(&*store, &rt, 24);
    rt.block_on(async move { drop(store) });
}

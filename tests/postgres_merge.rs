#![cfg(all(feature = "postgres", feature = "conformance"))]
//! Merges racing writers on PostgreSQL (and on a Citus cluster, see
//! `support::citus`), with several `PostgresStore`s over
//! one database standing for several processes: a deal, activity or signal
//! attached to a contact while it is merged away is either moved to the
//! survivor or refused with `NotFound` — never acknowledged and then
//! deleted with the loser.

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use crm_core::{
    Actor, Context, Entity, Error, PostgresStore, Store, StoreExt, TenantId,
    bulk::ConflictPolicy,
    domain::{
        ActivityKind, CompanyId, CompanyName, ContactId, Currency, DealTitle, Email, Money,
        NewActivity, NewCompany, NewContact, NewDeal, NewSignal, NewTag, NewTask, PersonName,
        RecordRef, SignalKind, TagId, TagName, TaskId, TaskTitle,
    },
};
use support::{Target, TestDb, TestStore};
use uuid::Uuid;

fn ctx() -> Context {
    Context::new(Actor::parse("user:merge-test").unwrap())
}

fn new_contact(email: &str) -> NewContact {
    NewContact::new(
        Email::parse(email).unwrap(),
        PersonName::parse("Ada").unwrap(),
        PersonName::parse("Lovelace").unwrap(),
    )
}

fn new_deal(contact: ContactId) -> NewDeal {
    NewDeal::new(
        contact,
        DealTitle::parse("Renewal").unwrap(),
        Money::parse("100", Currency::parse("EUR").unwrap()).unwrap(),
    )
}

fn new_activity(contact: ContactId) -> NewActivity {
    NewActivity::new(contact, ActivityKind::Note)
}

fn new_signal(contact: ContactId) -> NewSignal {
    NewSignal::new(contact, SignalKind::parse("page_view").unwrap())
}

async fn count(db: &TestDb, table: &str, tenant: TenantId, ids: &[Uuid]) -> i64 {
    db.client()
        .await
        .query_one(
            &db.sql(&format!(
                "SELECT count(*) FROM crm.{table} WHERE tenant_id = $1 AND id = ANY($2)"
            )),
            &[&tenant.as_uuid(), &ids],
        )
        .await
        .unwrap()
        .get(0)
}

async fn records_attached_while_a_merge_waits_are_moved_to_the_survivor_not_deleted(
    target: Target,
) {
    let Some(owner) = TestStore::on(target).await else {
        return;
    };
    let (writer, merger) = (owner.db().store(), owner.db().store());
    let tenant = TenantId::new();
    let crm = owner.scope(tenant, &ctx());
    let survivor = crm
        .create_contact(new_contact("keep@example.com"))
        .await
        .unwrap();
    let loser = crm
        .create_contact(new_contact("gone@example.com"))
        .await
        .unwrap();

    // T1 attaches a deal, an activity and a signal to the loser, and waits.
    let mut t1 = writer.begin(tenant, ctx()).await.unwrap();
    let deal = t1.create_deal(new_deal(loser.id)).await.unwrap();
    let activity = t1.log_activity(new_activity(loser.id)).await.unwrap();
    let signal = t1.record_signal(new_signal(loser.id)).await.unwrap();

    // T2 merges the loser away: it must wait for T1.
    let merge = tokio::spawn({
        let merger = merger.clone();
        async move {
            let mut t2 = merger.begin(tenant, ctx()).await?;
            let out = t2
                .merge_contacts(survivor.id, loser.id, ConflictPolicy::NonEmptyIncoming)
                .await?;
            t2.commit().await?;
            Ok::<_, Error>(out)
        }
    });
    support::until_a_backend_waits_for_a_lock(owner.db()).await;
    t1.commit().await.expect("T1's writes are acknowledged");
    merge.await.unwrap().expect("the merge succeeds");

    let moved = owner
        .get_deal_in(tenant, deal.id)
        .await
        .expect("the acknowledged deal still exists");
    assert_eq!(moved.contact_id, survivor.id, "and belongs to the survivor");
    let timeline = crm
        .timeline(survivor.id, &Default::default())
        .await
        .unwrap();
    assert!(
        timeline.items.iter().any(|a| a.id == activity.id),
        "the acknowledged activity is on the survivor's timeline"
    );
    let mut tx = owner.begin(tenant, ctx()).await.unwrap();
    let signals = tx.list_signals(survivor.id).await.unwrap();
    tx.rollback().await.unwrap();
    assert!(
        signals.iter().any(|s| s.id == signal.id),
        "the acknowledged signal is the survivor's"
    );
    let deal_deleted: i64 = owner
        .db()
        .client()
        .await
        .query_one(
            &owner.db().sql(
                "SELECT count(*) FROM crm.history WHERE tenant_id = $1 AND entity_id = $2 \
                 AND operation = 'deleted'",
            ),
            &[&tenant.as_uuid(), &deal.id.as_uuid()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(deal_deleted, 0, "the history shows no deletion of the deal");
    drop((writer, merger));
}

async fn records_attached_after_a_merge_took_the_loser_are_refused_as_not_found(target: Target) {
    let Some(owner) = TestStore::on(target).await else {
        return;
    };
    let (writer, merger) = (owner.db().store(), owner.db().store());
    let tenant = TenantId::new();
    let survivor = owner
        .scope(tenant, &ctx())
        .create_contact(new_contact("keep@example.com"))
        .await
        .unwrap();
    let loser = owner
        .scope(tenant, &ctx())
        .create_contact(new_contact("gone@example.com"))
        .await
        .unwrap();

    let mut t2 = merger.begin(tenant, ctx()).await.unwrap();
    t2.merge_contacts(survivor.id, loser.id, ConflictPolicy::NonEmptyIncoming)
        .await
        .unwrap();
    // Writers come while the merge is open: each waits for it.
    let deal = tokio::spawn({
        let w = writer.clone();
        async move {
            w.scope(tenant, &ctx())
                .create_deal(new_deal(loser.id))
                .await
        }
    });
    let activity = tokio::spawn({
        let w = writer.clone();
        async move {
            w.scope(tenant, &ctx())
                .log_activity(new_activity(loser.id))
                .await
        }
    });
    let signal = tokio::spawn({
        let w = writer.clone();
        async move {
            let mut tx = w.begin(tenant, ctx()).await?;
            let s = tx.record_signal(new_signal(loser.id)).await?;
            tx.commit().await?;
            Ok::<_, Error>(s)
        }
    });
    support::until_a_backend_waits_for_a_lock(owner.db()).await;
    t2.commit().await.unwrap();

    let not_found = |r: &str, e: Error| match e {
        Error::NotFound {
            entity: Entity::Contact,
            id,
        } if id == loser.id.to_string() => {}
        other => panic!("{r}: expected NotFound for the merged contact, got {other:?}"),
    };
    not_found("create_deal", deal.await.unwrap().unwrap_err());
    not_found("log_activity", activity.await.unwrap().unwrap_err());
    not_found("record_signal", signal.await.unwrap().unwrap_err());
    drop((writer, merger));
}

/// A small deterministic generator, one per writer.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[derive(Default)]
struct Acknowledged {
    deals: Vec<Uuid>,
    activities: Vec<Uuid>,
    signals: Vec<Uuid>,
    refused: usize,
}

/// Attaches deals, activities and signals to random contacts until told
/// to stop and until it met a merged contact at least once (so that every
/// writer is shown refused, whatever the scheduling); returns what was
/// acknowledged.
async fn write_until(
    store: PostgresStore,
    tenant: TenantId,
    contacts: Arc<Vec<ContactId>>,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> Acknowledged {
    let mut rng = Rng(seed);
    let mut ack = Acknowledged::default();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !(stop.load(Ordering::Relaxed) && ack.refused > 0) {
        assert!(
            Instant::now() < deadline,
            "a writer never met a merged contact"
        );
        let contact = contacts[rng.below(contacts.len())];
        let result = match rng.below(3) {
            0 => store
                .scope(tenant, &ctx())
                .create_deal(new_deal(contact))
                .await
                .map(|d| ack.deals.push(d.id.as_uuid())),
            1 => store
                .scope(tenant, &ctx())
                .log_activity(new_activity(contact))
                .await
                .map(|a| ack.activities.push(a.id.as_uuid())),
            _ => async {
                let mut tx = store.begin(tenant, ctx()).await?;
                let s = tx.record_signal(new_signal(contact)).await?;
                tx.commit().await?;
                Ok(s)
            }
            .await
            .map(|s| ack.signals.push(s.id.as_uuid())),
        };
        match result {
            Ok(()) => {}
            Err(Error::NotFound {
                entity: Entity::Contact,
                ..
            }) => ack.refused += 1,
            Err(e) => panic!("a write racing merges failed with {e:?}"),
        }
    }
    ack
}

async fn writers_racing_twenty_four_merges_lose_no_acknowledged_deal_activity_or_signal(
    target: Target,
) {
    let Some(owner) = TestStore::on(target).await else {
        return;
    };
    let tenant = TenantId::new();
    let mut contacts = Vec::new();
    for i in 0..48 {
        let c = owner
            .scope(tenant, &ctx())
            .create_contact(new_contact(&format!("c{i}@example.com")))
            .await
            .unwrap();
        contacts.push(c.id);
    }
    let contacts = Arc::new(contacts);
    let stop = Arc::new(AtomicBool::new(false));
    // Three writer processes, one merging process.
    let writers: Vec<_> = (0..3)
        .map(|i| {
            tokio::spawn(write_until(
                owner.db().store(),
                tenant,
                Arc::clone(&contacts),
                Arc::clone(&stop),
                0x9E37_79B9_7F4A_7C15 ^ (i + 1),
            ))
        })
        .collect();
    let merger = owner.db().store();
    // Let the writers get going, then merge 24 pairs one after another.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for pair in contacts.chunks(2) {
        merger
            .begin(tenant, ctx())
            .await
            .unwrap()
            .merge_and_commit(pair[0], pair[1])
            .await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Acknowledged::default();
    for w in writers {
        let a = w.await.unwrap();
        all.deals.extend(a.deals);
        all.activities.extend(a.activities);
        all.signals.extend(a.signals);
        all.refused += a.refused;
    }
    let db = owner.db();
    assert_eq!(
        count(db, "deals", tenant, &all.deals).await,
        all.deals.len() as i64,
        "every acknowledged deal exists"
    );
    assert_eq!(
        count(db, "activities", tenant, &all.activities).await,
        all.activities.len() as i64,
        "every acknowledged activity exists"
    );
    assert_eq!(
        count(db, "signals", tenant, &all.signals).await,
        all.signals.len() as i64,
        "every acknowledged signal exists"
    );
    let orphans: i64 = db
        .client()
        .await
        .query_one(
            &db.sql(
                "SELECT count(*) FROM crm.activities a WHERE a.tenant_id = $1 AND NOT EXISTS \
                 (SELECT 1 FROM crm.contacts c WHERE c.tenant_id = a.tenant_id \
                 AND c.id = a.contact_id)",
            ),
            &[&tenant.as_uuid()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(orphans, 0);
    drop(merger);
}

/// What one writer got acknowledged while companies were merged: contacts
/// and tasks linked to a company, tags attached to one (each with the
/// company it named).
#[derive(Default)]
struct Linked {
    contacts: Vec<(ContactId, CompanyId)>,
    tasks: Vec<(TaskId, CompanyId)>,
    tags: Vec<(TagId, CompanyId)>,
    refused: usize,
}

/// Links contacts and tasks to, and attaches tags to, random companies
/// until told to stop and until it met a merged company at least once.
async fn link_until(
    store: PostgresStore,
    tenant: TenantId,
    companies: Arc<Vec<CompanyId>>,
    tags: Arc<Vec<TagId>>,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> Linked {
    let mut rng = Rng(seed);
    let mut ack = Linked::default();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut n = 0;
    while !(stop.load(Ordering::Relaxed) && ack.refused > 0) {
        assert!(
            Instant::now() < deadline,
            "a writer never met a merged company"
        );
        n += 1;
        let company = companies[rng.below(companies.len())];
        let scope = store.scope(tenant, &ctx());
        let result = match rng.below(3) {
            0 => scope
                .create_contact(NewContact {
                    company_id: Some(company),
                    ..new_contact(&format!("w{seed}-{n}@example.com"))
                })
                .await
                .map(|c| ack.contacts.push((c.id, company))),
            1 => scope
                .create_task(NewTask {
                    company_id: Some(company),
                    ..NewTask::new(TaskTitle::parse("Call").unwrap())
                })
                .await
                .map(|t| ack.tasks.push((t.id, company))),
            _ => {
                // Only the losers are tagged: a survivor carries a tag only
                // if the merge gave it.
                let company = companies[1 + 2 * rng.below(companies.len() / 2)];
                let tag = tags[rng.below(tags.len())];
                scope
                    .attach_tag(tag, RecordRef::Company(company))
                    .await
                    .map(|_| ack.tags.push((tag, company)))
            }
        };
        match result {
            Ok(()) => {}
            Err(Error::NotFound {
                entity: Entity::Company,
                ..
            }) => ack.refused += 1,
            Err(e) => panic!("a write racing company merges failed with {e:?}"),
        }
    }
    ack
}

/// Writers in three processes link contacts and tasks to companies and tag
/// them while a fourth merges twelve pairs of those companies: every
/// acknowledged link ends on the company its company was merged into, and
/// every acknowledged tag is carried there; no write fails otherwise than
/// with `NotFound` for a merged company.
async fn writers_racing_company_merges_lose_no_acknowledged_link_or_tag(target: Target) {
    let Some(owner) = TestStore::on(target).await else {
        return;
    };
    let tenant = TenantId::new();
    let mut companies = Vec::new();
    for i in 0..24 {
        let c = owner
            .scope(tenant, &ctx())
            .create_company(NewCompany::new(
                CompanyName::parse(&format!("Company {i}")).unwrap(),
            ))
            .await
            .unwrap();
        companies.push(c.id);
    }
    let mut tags = Vec::new();
    for i in 0..8 {
        let t = owner
            .scope(tenant, &ctx())
            .create_tag(NewTag::new(TagName::parse(&format!("Tag {i}")).unwrap()))
            .await
            .unwrap();
        tags.push(t.id);
    }
    let companies = Arc::new(companies);
    let tags = Arc::new(tags);
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|i| {
            tokio::spawn(link_until(
                owner.db().store(),
                tenant,
                Arc::clone(&companies),
                Arc::clone(&tags),
                Arc::clone(&stop),
                0x2545_F491_4F6C_DD1D ^ (i + 1),
            ))
        })
        .collect();
    let merger = owner.db().store();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for pair in companies.chunks(2) {
        merger
            .scope(tenant, &ctx())
            .merge_companies(pair[0], pair[1])
            .await
            .expect("a company merge succeeds");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    // Each loser went into the company before it.
    let survivor_of = |c: CompanyId| {
        let i = companies.iter().position(|x| *x == c).unwrap();
        companies[i - i % 2]
    };
    let reader = owner.scope(tenant, &ctx());
    let mut acknowledged = 0;
    for w in writers {
        let a = w.await.unwrap();
        acknowledged += a.contacts.len() + a.tasks.len() + a.tags.len();
        for (id, company) in a.contacts {
            let c = reader
                .get_contact(id)
                .await
                .unwrap()
                .expect("an acknowledged contact exists");
            assert_eq!(c.company_id, Some(survivor_of(company)), "contact {id}");
        }
        for (id, company) in a.tasks {
            let t = reader
                .get_task(id)
                .await
                .unwrap()
                .expect("an acknowledged task exists");
            assert_eq!(t.company_id, Some(survivor_of(company)), "task {id}");
        }
        for (tag, company) in a.tags {
            let carried = reader
                .tags_of(RecordRef::Company(survivor_of(company)))
                .await
                .unwrap();
            assert!(
                carried.iter().any(|t| t.id == tag),
                "tag {tag} attached to {company} is carried by its survivor"
            );
        }
    }
    assert!(acknowledged > 0, "the writers wrote");
    for pair in companies.chunks(2) {
        assert!(reader.get_company(pair[1]).await.unwrap().is_none());
        assert!(reader.get_company(pair[0]).await.unwrap().is_some());
    }
    drop(merger);
}

/// Test conveniences over a store.
trait TestExt {
    async fn get_deal_in(
        &self,
        tenant: TenantId,
        id: crm_core::domain::DealId,
    ) -> Option<crm_core::domain::Deal>;
}

impl TestExt for PostgresStore {
    async fn get_deal_in(
        &self,
        tenant: TenantId,
        id: crm_core::domain::DealId,
    ) -> Option<crm_core::domain::Deal> {
        let mut tx = self.begin(tenant, ctx()).await.unwrap();
        let d = tx.get_deal(id).await.unwrap();
        tx.rollback().await.unwrap();
        d
    }
}

/// Merging in a transaction of its own.
trait MergeExt {
    async fn merge_and_commit(self, survivor: ContactId, loser: ContactId);
}

impl MergeExt for Box<dyn crm_core::Transaction> {
    async fn merge_and_commit(mut self, survivor: ContactId, loser: ContactId) {
        self.merge_contacts(survivor, loser, ConflictPolicy::NonEmptyIncoming)
            .await
            .expect("a merge succeeds");
        self.commit().await.expect("a merge commits");
    }
}

crate::on_every_target!(
    records_attached_while_a_merge_waits_are_moved_to_the_survivor_not_deleted,
    records_attached_after_a_merge_took_the_loser_are_refused_as_not_found,
    writers_racing_twenty_four_merges_lose_no_acknowledged_deal_activity_or_signal,
    writers_racing_company_merges_lose_no_acknowledged_link_or_tag,
);

//! The HubSpot sync over a store, against the local HubSpot-shaped server:
//! push as a feed consumer (acked only after HubSpot accepted a batch,
//! sent again without duplicates after a stop before the ack), pull by
//! window, ids linked, no echo, and re-runs that send and write nothing.
//! On the in-memory store and on PostgreSQL.

#[cfg(feature = "postgres")]
mod support;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use crm_core::{
    Actor, Context, InMemoryStore, Store, TenantId, Transaction,
    conformance::test_pipelines,
    domain::{
        ContactPatch, Currency, DealTitle, Email, EntityKind, ExternalSystem, FeedPosition, Money,
        NewContact, NewDeal, PersonName, Pipelines,
    },
    hubspot::{
        AccessToken, HubSpotClient, HubSpotConfig, HubSpotSync, SyncError,
        fake::{FakeConfig, FakeHubSpot, SeedRecord},
    },
};

const TOKEN: &str = "pat-na1-0f1e2d3c-sync-test-token";

fn ctx() -> Context {
    Context::new(Actor::parse("user:test").unwrap())
}

async fn fake() -> FakeHubSpot {
    FakeHubSpot::start(FakeConfig {
        token: Some(TOKEN.into()),
        budget: None,
        ..FakeConfig::default()
    })
    .await
    .unwrap()
}

fn client(fake: &FakeHubSpot) -> HubSpotClient {
    let config = HubSpotConfig::builder(AccessToken::new(TOKEN))
        .base_url(fake.base_url())
        .retry_delays(Duration::from_millis(1), Duration::from_millis(10))
        .max_retries(2)
        .breaker(50, Duration::from_millis(100))
        .requests_per_10s(100_000)
        .search_requests_per_second(1_000)
        .build()
        .unwrap();
    HubSpotClient::new(config).unwrap()
}

fn contact(i: usize) -> NewContact {
    let mut c = NewContact::new(
        Email::parse(&format!("person{i}@example.com")).unwrap(),
        PersonName::parse("Ada").unwrap(),
        PersonName::parse(&format!("Number{i}")).unwrap(),
    );
    c.title = Some(crm_core::domain::JobTitle::parse("Engineer").unwrap());
    c
}

/// `contacts` contacts and one deal for each of the first `deals`.
async fn seed(store: &dyn Store, tenant: TenantId, contacts: usize, deals: usize) {
    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    for i in 0..contacts {
        let c = tx.create_contact(contact(i)).await.unwrap();
        if i < deals {
            tx.create_deal(NewDeal::new(
                c.id,
                DealTitle::parse(&format!("Deal {i}")).unwrap(),
                Money::new(
                    rust_decimal::Decimal::new(12_345 + i as i64, 2),
                    Currency::parse("EUR").unwrap(),
                )
                .unwrap(),
            ))
            .await
            .unwrap();
        }
    }
    tx.commit().await.unwrap();
}

async fn head(store: &dyn Store, tenant: TenantId) -> FeedPosition {
    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    let h = tx.feed_head().await.unwrap();
    tx.commit().await.unwrap();
    h
}

fn writes(fake: &FakeHubSpot) -> u64 {
    let c = fake.counters();
    c.per_endpoint
        .iter()
        .filter(|(k, _)| !k.contains("/search") && !k.contains("/labels"))
        .map(|(_, v)| v)
        .sum()
}

/// A store that fails every `begin` while `fail` is set: a process that
/// stops between HubSpot's answer and its own ack.
#[derive(Debug)]
struct Stopping {
    inner: Arc<dyn Store>,
    fail_after: AtomicUsize,
    failing: AtomicBool,
}

#[async_trait]
impl Store for Stopping {
    async fn begin(
        &self,
        tenant: TenantId,
        context: Context,
    ) -> crm_core::Result<Box<dyn Transaction>> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(crm_core::Error::backend("the process stopped"));
        }
        // The n-th begin from now on fails, and every later one.
        if self.fail_after.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.failing.store(true, Ordering::SeqCst);
            return Err(crm_core::Error::backend("the process stopped"));
        }
        self.inner.begin(tenant, context).await
    }

    fn pipelines(&self) -> &Pipelines {
        self.inner.pipelines()
    }
}

async fn push_pull_round_trip(store: Arc<dyn Store>) {
    let hub = fake().await;
    let tenant = TenantId::new();
    seed(&*store, tenant, 250, 30).await;
    let sync = HubSpotSync::new(client(&hub), Arc::clone(&store), tenant);

    // Push: every contact and deal, in batches, each deal with its contact.
    let report = sync.push().await.unwrap();
    assert_eq!(report.pushed, 280, "{report:?}");
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let held = hub.records("contacts");
    assert_eq!(held.len(), 250);
    let by_email: HashMap<&str, u64> = held
        .iter()
        .map(|r| (r.properties["email"].as_str(), r.id))
        .collect();
    let deals = hub.records("deals");
    assert_eq!(deals.len(), 30);
    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    for d in &deals {
        let crm_id: uuid::Uuid = d.properties["crm_core_id"].parse().unwrap();
        let deal = tx
            .get_deal(crm_core::domain::DealId::from_uuid(crm_id))
            .await
            .unwrap()
            .unwrap();
        let c = tx.get_contact(deal.contact_id).await.unwrap().unwrap();
        assert_eq!(d.properties["dealname"], deal.title.as_str());
        assert_eq!(d.properties["dealstage"], "qualifiedtobuy");
        assert_eq!(
            d.associations,
            vec![("contacts".to_string(), by_email[c.email.as_str()], 3)],
            "the deal is associated with its own contact, once"
        );
    }
    // Ids are linked both ways.
    let system = ExternalSystem::parse("hubspot").unwrap();
    let ids: Vec<uuid::Uuid> = deals
        .iter()
        .map(|d| d.properties["crm_core_id"].parse().unwrap())
        .collect();
    let linked = tx
        .external_ids(&system, EntityKind::Deal, &ids)
        .await
        .unwrap();
    assert_eq!(linked.len(), 30);
    tx.commit().await.unwrap();

    // A push with nothing changed sends nothing.
    let sent = writes(&hub);
    let again = sync.push().await.unwrap();
    assert_eq!((again.pushed, again.read), (0, 0), "{again:?}");
    assert_eq!(writes(&hub), sent, "no request");

    // A pull brings the pushed contacts back as they are: nothing written.
    let before = head(&*store, tenant).await;
    let pulled = sync.pull().await.unwrap();
    assert_eq!(pulled.read, 250);
    assert_eq!((pulled.pulled, pulled.unchanged), (0, 250), "{pulled:?}");
    assert_eq!(head(&*store, tenant).await, before, "nothing written");

    // A local change is pushed as an update of the same HubSpot contact.
    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    let c = tx
        .get_contact_by_email(&Email::parse("person7@example.com").unwrap())
        .await
        .unwrap()
        .unwrap();
    tx.update_contact(
        c.id,
        c.version,
        ContactPatch {
            email: Some(Email::parse("renamed7@example.com").unwrap()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let report = sync.push().await.unwrap();
    assert_eq!(report.pushed, 1);
    let held = hub.records("contacts");
    assert_eq!(held.len(), 250, "updated, not created");
    assert_eq!(
        held.iter()
            .find(|r| r.id == by_email["person7@example.com"])
            .unwrap()
            .properties["email"],
        "renamed7@example.com"
    );

    // A new deal of a contact HubSpot knows already is associated with it.
    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    let c = tx
        .get_contact_by_email(&Email::parse("person1@example.com").unwrap())
        .await
        .unwrap()
        .unwrap();
    let late = tx
        .create_deal(NewDeal::new(
            c.id,
            DealTitle::parse("Late deal").unwrap(),
            Money::new(
                rust_decimal::Decimal::new(500, 0),
                Currency::parse("USD").unwrap(),
            )
            .unwrap(),
        ))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(sync.push().await.unwrap().pushed, 1, "only the new deal");
    let held = hub
        .records("deals")
        .into_iter()
        .find(|d| d.properties["crm_core_id"] == late.id.as_uuid().to_string())
        .expect("the new deal is in HubSpot");
    assert_eq!(
        held.associations,
        vec![("contacts".to_string(), by_email["person1@example.com"], 3)]
    );

    // HubSpot's own changes come in, once, and are not sent back.
    let now = chrono::Utc::now().timestamp_millis();
    hub.seed(
        "contacts",
        (0..40).map(|i| SeedRecord {
            properties: BTreeMap::from([
                ("email".to_string(), format!("hub{i}@example.org")),
                ("firstname".to_string(), "Grace".to_string()),
                ("lastname".to_string(), format!("Hub{i}")),
            ]),
            modified_ms: now + 1_000,
        }),
    );
    let pulled = sync.pull().await.unwrap();
    assert_eq!(pulled.pulled, 40, "{pulled:?}");
    let sent = writes(&hub);
    let report = sync.push().await.unwrap();
    assert_eq!(report.pushed, 0, "{report:?}");
    assert_eq!(report.unchanged, 40, "the pulled changes are skipped");
    assert_eq!(writes(&hub), sent, "nothing is sent back");
    let before = head(&*store, tenant).await;
    let again = sync.pull().await.unwrap();
    assert_eq!(again.pulled, 0, "{again:?}");
    assert_eq!(
        head(&*store, tenant).await,
        before,
        "a re-run writes nothing"
    );
}

async fn a_stop_before_the_ack_resends_one_batch_without_duplicates(inner: Arc<dyn Store>) {
    let hub = fake().await;
    let tenant = TenantId::new();
    seed(&*inner, tenant, 120, 20).await;
    // The first batch's read is begin 1; its ack is begin 2: stop there.
    let stopping = Arc::new(Stopping {
        inner: Arc::clone(&inner),
        fail_after: AtomicUsize::new(2),
        failing: AtomicBool::new(false),
    });
    let sync = HubSpotSync::new(client(&hub), stopping.clone(), tenant);
    let err = sync.push().await.unwrap_err();
    assert!(matches!(err, SyncError::Store(_)), "{err:?}");
    assert_eq!(
        hub.records("contacts").len(),
        120,
        "HubSpot accepted the batch"
    );
    assert_eq!(hub.records("deals").len(), 20);

    // The process starts again: the batch is sent again, nothing twice.
    let sync = HubSpotSync::new(client(&hub), inner, tenant);
    let report = sync.push().await.unwrap();
    assert_eq!(report.pushed, 140, "the unacked batch is sent again");
    assert_eq!(hub.records("contacts").len(), 120, "no duplicate contact");
    let deals = hub.records("deals");
    assert_eq!(deals.len(), 20, "no duplicate deal");
    assert!(
        deals.iter().all(|d| d.associations.len() == 1),
        "each deal associated once"
    );
    assert_eq!(sync.push().await.unwrap().pushed, 0);
}

async fn refused_records_are_reported_and_not_sent_again(store: Arc<dyn Store>) {
    let hub = fake().await;
    let tenant = TenantId::new();
    seed(&*store, tenant, 10, 0).await;
    hub.reject_emails(["person3@example.com"]);
    let sync = HubSpotSync::new(client(&hub), Arc::clone(&store), tenant);
    let report = sync.push().await.unwrap();
    assert_eq!(report.pushed, 9);
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(report.failed[0].kind, EntityKind::Contact);
    assert!(!report.failed[0].reason.is_empty());
    let sent = writes(&hub);
    assert_eq!(sync.push().await.unwrap().pushed, 0);
    assert_eq!(writes(&hub), sent);
}

async fn a_hubspot_outage_acks_nothing(store: Arc<dyn Store>) {
    let hub = fake().await;
    let tenant = TenantId::new();
    seed(&*store, tenant, 5, 0).await;
    let sync = HubSpotSync::new(client(&hub), Arc::clone(&store), tenant);
    hub.set_outage(Some(503));
    let err = sync.push().await.unwrap_err();
    assert!(matches!(err, SyncError::HubSpot { .. }), "{err:?}");
    hub.set_outage(None);
    let report = sync.push().await.unwrap();
    assert_eq!(report.pushed, 5, "everything is sent once HubSpot is back");
}

fn memory() -> Arc<dyn Store> {
    Arc::new(InMemoryStore::with_pipelines(test_pipelines()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_and_pull_round_trip_in_memory() {
    push_pull_round_trip(memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_before_the_ack_resends_without_duplicates_in_memory() {
    a_stop_before_the_ack_resends_one_batch_without_duplicates(memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_records_are_reported_in_memory() {
    refused_records_are_reported_and_not_sent_again(memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_acks_nothing_in_memory() {
    a_hubspot_outage_acks_nothing(memory()).await;
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use support::TestStore;

    async fn store(ts: &TestStore) -> Arc<dyn Store> {
        Arc::new((**ts).clone())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn push_and_pull_round_trip_on_postgres() {
        let ts = TestStore::new().await;
        push_pull_round_trip(store(&ts).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stop_before_the_ack_resends_without_duplicates_on_postgres() {
        let ts = TestStore::new().await;
        a_stop_before_the_ack_resends_one_batch_without_duplicates(store(&ts).await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refused_records_are_reported_on_postgres() {
        let ts = TestStore::new().await;
        refused_records_are_reported_and_not_sent_again(store(&ts).await).await;
    }
}

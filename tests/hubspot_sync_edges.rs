//! Edge cases of the HubSpot sync, each on the in-memory store and on
//! PostgreSQL: links that outlive deleted, erased and merged records,
//! emails changed on either side, fields cleared, a stop before the ack
//! followed by an email change, HubSpot records gone or merged, deals whose
//! contact reaches HubSpot late or changes, and local changes a pull must
//! not revert.

#[cfg(feature = "postgres")]
mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use crm_core::{
    Actor, Context, InMemoryStore, Store, TenantId, Transaction,
    bulk::ConflictPolicy,
    conformance::test_pipelines,
    domain::{
        ContactPatch, Currency, DealTitle, Email, EntityKind, ExternalId, ExternalLink,
        ExternalSystem, JobTitle, Money, NewContact, NewDeal, PersonName, Pipelines,
    },
    hubspot::{
        AccessToken, HubSpotClient, HubSpotConfig, HubSpotSync, ObjectType, UpsertInput,
        fake::{FakeConfig, FakeHubSpot},
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

fn memory() -> Arc<dyn Store> {
    Arc::new(InMemoryStore::with_pipelines(test_pipelines()))
}

fn new_contact(email: &str) -> NewContact {
    let mut c = NewContact::new(
        Email::parse(email).unwrap(),
        PersonName::parse("Ada").unwrap(),
        PersonName::parse("Lovelace").unwrap(),
    );
    c.title = Some(JobTitle::parse("Engineer").unwrap());
    c
}

async fn create(store: &dyn Store, tenant: TenantId, email: &str) -> crm_core::domain::Contact {
    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    let c = tx.create_contact(new_contact(email)).await.unwrap();
    tx.commit().await.unwrap();
    c
}

async fn by_email(
    store: &dyn Store,
    tenant: TenantId,
    email: &str,
) -> Option<crm_core::domain::Contact> {
    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    let c = tx
        .get_contact_by_email(&Email::parse(email).unwrap())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    c
}

fn money() -> Money {
    Money::new(
        rust_decimal::Decimal::new(100, 0),
        Currency::parse("EUR").unwrap(),
    )
    .unwrap()
}

/// The HubSpot id of the fake's contact with `email`.
fn hub_id(hub: &FakeHubSpot, email: &str) -> u64 {
    hub.records("contacts")
        .into_iter()
        .find(|r| r.properties.get("email").map(String::as_str) == Some(email))
        .unwrap_or_else(|| panic!("{email} is in HubSpot"))
        .id
}

/// A store whose `fail_after`-th `begin` from now on fails, and every
/// later one: a process that stops.
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
        if self.failing.load(Ordering::SeqCst)
            || self.fail_after.fetch_sub(1, Ordering::SeqCst) == 1
        {
            self.failing.store(true, Ordering::SeqCst);
            return Err(crm_core::Error::backend("the process stopped"));
        }
        self.inner.begin(tenant, context).await
    }

    fn pipelines(&self) -> &Pipelines {
        self.inner.pipelines()
    }
}

/// A contact deleted in crm-core keeps its link; a new contact with the
/// same email is upserted onto the same HubSpot contact, and the HubSpot
/// id moves to the new contact: the push goes on.
async fn a_contact_deleted_and_created_again_does_not_stop_the_push_on(store: Arc<dyn Store>) {
    let hub = fake().await;
    let tenant = TenantId::new();
    let a = create(&*store, tenant, "again@example.com").await;
    let sync = HubSpotSync::new(client(&hub), Arc::clone(&store), tenant);
    assert_eq!(sync.push().await.unwrap().pushed, 1);

    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    assert!(tx.delete_contact(a.id).await.unwrap());
    tx.commit().await.unwrap();
    create(&*store, tenant, "again@example.com").await;
    create(&*store, tenant, "other@example.com").await;

    let first = sync.push().await;
    let second = sync.push().await;
    assert!(first.is_ok(), "push: {first:?}");
    assert!(second.is_ok(), "push again: {second:?}");
    assert!(
        hub.records("contacts")
            .iter()
            .any(|r| r.properties["email"] == "other@example.com"),
        "a later, unrelated contact reaches HubSpot"
    );
}

/// A contact whose email was changed in HubSpot is pulled onto the contact
/// linked to its HubSpot id (its email changes), not created again.
async fn an_email_changed_in_hubspot_is_pulled_onto_the_linked_contact_on(store: Arc<dyn Store>) {
    let hub = fake().await;
    let tenant = TenantId::new();
    let a = create(&*store, tenant, "before@example.com").await;
    let sync = HubSpotSync::new(client(&hub), Arc::clone(&store), tenant);
    sync.push().await.unwrap();
    sync.pull().await.unwrap();

    let id = hub_id(&hub, "before@example.com");
    let c = client(&hub);
    let out = c
        .batch_update(
            &ObjectType::Contacts,
            &[UpsertInput::new(id.to_string()).with("email", "after@example.com")],
        )
        .await
        .unwrap();
    assert!(out.stopped_by.is_none());

    let pulled = sync.pull().await;
    assert!(pulled.is_ok(), "pull: {pulled:?}");
    assert!(sync.pull().await.is_ok(), "pull again");
    let now = by_email(&*store, tenant, "after@example.com")
        .await
        .expect("the new email is in crm-core");
    assert_eq!(now.id, a.id, "on the contact linked to that HubSpot id");
}

/// An erased contact does not come back with a pull that reads HubSpot's
/// copy of it (the link names a contact crm-core no longer holds), and the
/// pull goes on.
async fn an_erased_contact_does_not_come_back_with_the_pull_on(store: Arc<dyn Store>) {
    let hub = fake().await;
    let tenant = TenantId::new();
    let a = create(&*store, tenant, "forget.me@example.com").await;
    let sync = HubSpotSync::new(client(&hub), Arc::clone(&store), tenant);
    sync.push().await.unwrap();
    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    tx.erase_contact(a.id).await.unwrap();
    tx.commit().await.unwrap();
    sync.push().await.unwrap();

    let pulled = sync.pull().await;
    assert!(pulled.is_ok(), "pull: {pulled:?}");
    assert!(
        by_email(&*store, tenant, "forget.me@example.com")
            .await
            .is_none(),
        "the erased person is not in crm-core again"
    );
}

/// A field cleared in crm-core is cleared in HubSpot by the next push
/// (`""`), and the pull after it does not bring the old value back.
async fn a_field_cleared_locally_stays_cleared_on(store: Arc<dyn Store>) {
    let hub = fake().await;
    let tenant = TenantId::new();
    let a = create(&*store, tenant, "clear@example.com").await;
    let sync = HubSpotSync::new(client(&hub), Arc::clone(&store), tenant);
    sync.push().await.unwrap();
    sync.pull().await.unwrap();

    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    let c = tx.get_contact(a.id).await.unwrap().unwrap();
    tx.update_contact(
        c.id,
        c.version,
        ContactPatch {
            title: Some(None),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(sync.push().await.unwrap().pushed, 1);
    sync.pull().await.unwrap();

    let held = hub.records("contacts");
    let c = by_email(&*store, tenant, "clear@example.com")
        .await
        .unwrap();
    assert_eq!(c.title, None, "crm-core keeps the cleared title cleared");
    assert!(
        held[0]
            .properties
            .get("jobtitle")
            .is_none_or(|t| t.is_empty()),
        "HubSpot's title is cleared: {:?}",
        held[0].properties
    );
}

/// Issue 16: a stop between HubSpot's acceptance and the ack creates no
/// duplicate, also when the contact's email changes before the next run
/// (the push finds HubSpot's contact by the old email first).
async fn a_stop_before_the_ack_then_an_email_change_creates_no_duplicate_on(store: Arc<dyn Store>) {
    let hub = fake().await;
    let inner = store;
    let tenant = TenantId::new();
    let a = create(&*inner, tenant, "first@example.com").await;
    let stopping = Arc::new(Stopping {
        inner: Arc::clone(&inner),
        fail_after: AtomicUsize::new(2),
        failing: AtomicBool::new(false),
    });
    let sync = HubSpotSync::new(client(&hub), stopping, tenant);
    assert!(sync.push().await.is_err(), "stopped at the ack");
    assert_eq!(hub.records("contacts").len(), 1, "HubSpot accepted it");

    let mut tx = inner.begin(tenant, ctx()).await.unwrap();
    let c = tx.get_contact(a.id).await.unwrap().unwrap();
    tx.update_contact(
        c.id,
        c.version,
        ContactPatch {
            email: Some(Email::parse("second@example.com").unwrap()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let sync = HubSpotSync::new(client(&hub), inner, tenant);
    sync.push().await.unwrap();
    assert_eq!(
        hub.records("contacts").len(),
        1,
        "no duplicate contact: {:?}",
        hub.records("contacts")
    );
}

/// The deals whose contact HubSpot refused at first (more than one page
/// of them) are associated with it once the contact, fixed, reaches
/// HubSpot.
async fn a_deal_is_associated_once_its_contact_reaches_hubspot_on(store: Arc<dyn Store>) {
    let hub = fake().await;
    let tenant = TenantId::new();
    hub.reject_emails(["refused@example.com"]);
    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    let c = tx
        .create_contact(new_contact("refused@example.com"))
        .await
        .unwrap();
    // More deals than one page of the contact's deals.
    for i in 0..130 {
        tx.create_deal(NewDeal::new(
            c.id,
            DealTitle::parse(&format!("D{i}")).unwrap(),
            money(),
        ))
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let sync = HubSpotSync::new(client(&hub), Arc::clone(&store), tenant);
    let report = sync.push().await.unwrap();
    assert_eq!(report.failed.len(), 1, "{report:?}");

    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    let c = tx.get_contact(c.id).await.unwrap().unwrap();
    tx.update_contact(
        c.id,
        c.version,
        ContactPatch {
            email: Some(Email::parse("fixed@example.com").unwrap()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    sync.push().await.unwrap();

    let contact = hub_id(&hub, "fixed@example.com");
    let deals = hub.records("deals");
    assert_eq!(deals.len(), 130);
    for d in &deals {
        assert_eq!(
            d.associations,
            vec![("contacts".to_string(), contact, 3)],
            "every deal is associated with its contact"
        );
    }
}

/// A merge moves the loser's deals to the survivor: the push associates
/// each with the survivor's HubSpot contact and removes the association
/// with the loser's.
async fn a_merged_deal_is_associated_with_the_survivor_only_on(store: Arc<dyn Store>) {
    let hub = fake().await;
    let tenant = TenantId::new();
    let survivor = create(&*store, tenant, "survivor@example.com").await;
    let loser = create(&*store, tenant, "loser@example.com").await;
    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    tx.create_deal(NewDeal::new(
        loser.id,
        DealTitle::parse("D").unwrap(),
        money(),
    ))
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let sync = HubSpotSync::new(client(&hub), Arc::clone(&store), tenant);
    sync.push().await.unwrap();

    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    tx.merge_contacts(survivor.id, loser.id, ConflictPolicy::NonEmptyIncoming)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    sync.push().await.unwrap();

    let to = hub_id(&hub, "survivor@example.com");
    let deals = hub.records("deals");
    assert_eq!(
        deals[0].associations,
        vec![("contacts".to_string(), to, 3)],
        "associated with the survivor only"
    );
}

/// A local change the push has not sent yet survives a pull that reads
/// the contact's older HubSpot version (the newer change wins), and the
/// next push sends it.
async fn a_local_change_not_yet_pushed_survives_a_pull_on(store: Arc<dyn Store>) {
    let hub = fake().await;
    let tenant = TenantId::new();
    let a = create(&*store, tenant, "edit@example.com").await;
    let sync = HubSpotSync::new(client(&hub), Arc::clone(&store), tenant);
    sync.push().await.unwrap();
    sync.pull().await.unwrap();

    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    let c = tx.get_contact(a.id).await.unwrap().unwrap();
    tx.update_contact(
        c.id,
        c.version,
        ContactPatch {
            title: Some(Some(JobTitle::parse("Director").unwrap())),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    sync.pull().await.unwrap();
    sync.push().await.unwrap();

    let c = by_email(&*store, tenant, "edit@example.com").await.unwrap();
    assert_eq!(
        c.title.as_ref().map(|t| t.as_str()),
        Some("Director"),
        "crm-core keeps the user's change"
    );
    assert_eq!(
        hub.records("contacts")[0].properties["jobtitle"],
        "Director",
        "and HubSpot gets it"
    );
}

/// A contact whose HubSpot record is gone (deleted or merged away in
/// HubSpot) is upserted by email again and linked to the new record.
async fn a_contact_whose_hubspot_record_is_gone_is_sent_again_on(store: Arc<dyn Store>) {
    let hub = fake().await;
    let tenant = TenantId::new();
    let a = create(&*store, tenant, "gone@example.com").await;
    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    tx.link_external_ids(
        &ExternalSystem::parse("hubspot").unwrap(),
        &[ExternalLink {
            kind: EntityKind::Contact,
            record: a.id.as_uuid(),
            external: ExternalId::parse("987654321").unwrap(),
        }],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let sync = HubSpotSync::new(client(&hub), Arc::clone(&store), tenant);
    let first = sync.push().await.unwrap();
    let second = sync.push().await.unwrap();
    assert!(
        hub.records("contacts")
            .iter()
            .any(|r| r.properties["email"] == "gone@example.com"),
        "the contact is in HubSpot again: {first:?} {second:?}"
    );
}

/// Two records of one batch that HubSpot resolves to one id do not stop
/// the push: the last is linked, the other reported.
async fn two_records_resolved_to_one_hubspot_id_do_not_stop_the_push_on(store: Arc<dyn Store>) {
    let hub = fake().await;
    let tenant = TenantId::new();
    let a = create(&*store, tenant, "shared@example.com").await;
    let sync = HubSpotSync::new(client(&hub), Arc::clone(&store), tenant);
    sync.push().await.unwrap();
    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    let c = tx.get_contact(a.id).await.unwrap().unwrap();
    tx.update_contact(
        c.id,
        c.version,
        ContactPatch {
            email: Some(Email::parse("moved@example.com").unwrap()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    tx.create_contact(new_contact("shared@example.com"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let first = sync.push().await;
    assert!(first.is_ok(), "push: {first:?}");
}

macro_rules! on_both {
    ($($name:ident, $on:ident;)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $on(memory()).await;
            }
        )*
        #[cfg(feature = "postgres")]
        mod postgres {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                    let ts = support::TestStore::new().await;
                    $on(Arc::new((*ts).clone())).await;
                }
            )*
        }
    };
}

on_both! {
    a_contact_whose_hubspot_record_is_gone_is_sent_again, a_contact_whose_hubspot_record_is_gone_is_sent_again_on;
    two_records_resolved_to_one_hubspot_id_do_not_stop_the_push, two_records_resolved_to_one_hubspot_id_do_not_stop_the_push_on;
    a_contact_deleted_and_created_again_does_not_stop_the_push, a_contact_deleted_and_created_again_does_not_stop_the_push_on;
    an_email_changed_in_hubspot_is_pulled_onto_the_linked_contact, an_email_changed_in_hubspot_is_pulled_onto_the_linked_contact_on;
    an_erased_contact_does_not_come_back_with_the_pull, an_erased_contact_does_not_come_back_with_the_pull_on;
    a_field_cleared_locally_stays_cleared, a_field_cleared_locally_stays_cleared_on;
    a_stop_before_the_ack_then_an_email_change_creates_no_duplicate, a_stop_before_the_ack_then_an_email_change_creates_no_duplicate_on;
    a_deal_is_associated_once_its_contact_reaches_hubspot, a_deal_is_associated_once_its_contact_reaches_hubspot_on;
    a_merged_deal_is_associated_with_the_survivor_only, a_merged_deal_is_associated_with_the_survivor_only_on;
    a_local_change_not_yet_pushed_survives_a_pull, a_local_change_not_yet_pushed_survives_a_pull_on;
}

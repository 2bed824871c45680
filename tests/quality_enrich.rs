//! `quality::enrich::enrich_stale` over the store contract: what it applies
//! (an ordinary update with the reason `enrichment:<provider>`, and
//! verification times), what it leaves alone (contacts that changed while
//! the provider was asked, refused answers, batches that time out or fail)
//! and that a second run with nothing stale calls nothing — in memory and,
//! with the `postgres` feature, on PostgreSQL.

#[cfg(feature = "postgres")]
mod support;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use crm_core::{
    Actor, Context, ErrorKind, InMemoryStore, Store, StoreExt, TenantId,
    domain::{
        Contact, ContactId, ContactPatch, Email, FreshField, HistoryEntity, JobTitle, NewContact,
        NewSignal, PageRequest, PersonName, SignalKind, StaleQuery,
    },
    quality::enrich::{
        EnrichError, EnrichFailureReason, EnrichOptions, Enricher, Enrichment, enrich_stale,
    },
};

fn ctx() -> Context {
    Context::new(Actor::parse("user:enrich-test").unwrap())
}

fn invalid_emails() -> StaleQuery {
    StaleQuery {
        inactive_days: None,
        unverified_days: None,
        invalid_email: true,
        page: PageRequest::first(7),
    }
}

fn options(limit: usize) -> EnrichOptions {
    EnrichOptions::new(invalid_emails(), limit)
}

/// `n` contacts whose emails bounced: stale under [`invalid_emails`].
async fn bounced<S: Store + ?Sized>(store: &S, tenant: TenantId, n: usize) -> Vec<Contact> {
    let scope = store.scope(tenant, &ctx());
    let mut out = Vec::new();
    for i in 0..n {
        let c = scope
            .create_contact(NewContact::new(
                Email::parse(&format!("person{i}@example.com")).unwrap(),
                PersonName::parse("Ada").unwrap(),
                PersonName::parse(&format!("Person{i}")).unwrap(),
            ))
            .await
            .unwrap();
        scope
            .record_signal(NewSignal::new(
                c.id,
                SignalKind::parse("email_bounced").unwrap(),
            ))
            .await
            .unwrap();
        out.push(c);
    }
    out
}

/// Gives every contact a title and confirms its email; counts its calls
/// and the most batches in flight at once.
#[derive(Default)]
struct Titles {
    calls: AtomicUsize,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    delay: Option<Duration>,
    batch: Option<usize>,
}

#[async_trait]
impl Enricher for Titles {
    fn provider(&self) -> &str {
        "titles"
    }

    fn batch_size(&self) -> usize {
        self.batch.unwrap_or(3)
    }

    async fn enrich(&self, contacts: &[Contact]) -> Result<Vec<Enrichment>, EnrichError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_flight.fetch_max(now, Ordering::SeqCst);
        if let Some(d) = self.delay {
            tokio::time::sleep(d).await;
        } else {
            tokio::task::yield_now().await;
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        Ok(contacts
            .iter()
            .map(|c| {
                let mut e = Enrichment::new(c.id);
                e.title = Some(JobTitle::parse("Chief Analyst").unwrap());
                e.verified = vec![FreshField::Email];
                e
            })
            .collect())
    }
}

async fn applies_as_an_ordinary_update_then_does_nothing<S: Store + ?Sized>(store: &S) {
    let tenant = TenantId::new();
    let contacts = bounced(store, tenant, 10).await;
    let enricher = Titles::default();
    let mut opts = options(100);
    opts.concurrency = 2;
    let report = enrich_stale(store, tenant, &ctx(), &enricher, &opts)
        .await
        .unwrap();
    assert_eq!(report.selected, 10, "{report:?}");
    assert_eq!(report.updated, 10, "{report:?}");
    assert_eq!(report.verified, 10, "{report:?}");
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(enricher.calls.load(Ordering::SeqCst), 4, "batches of 3");
    assert!(enricher.most_in_flight.load(Ordering::SeqCst) <= 2);

    let scope = store.scope(tenant, &ctx());
    for c in &contacts {
        let now = scope.get_contact(c.id).await.unwrap().unwrap();
        assert_eq!(now.title.as_ref().unwrap().as_str(), "Chief Analyst");
        assert_eq!(now.version, c.version.next());
        let fresh = scope.freshness(c.id).await.unwrap().unwrap();
        assert!(fresh.email_invalid_at.is_none(), "{fresh:?}");
        assert!(fresh.email_verified_at.is_some(), "{fresh:?}");
        assert!(
            fresh.title_verified_at.is_some(),
            "a changed field is verified"
        );
        assert!(fresh.phone_verified_at.is_none(), "{fresh:?}");
        let history = scope
            .entity_history(HistoryEntity::Contact(c.id), &PageRequest::first(10))
            .await
            .unwrap();
        let last = &history.items[0];
        assert_eq!(last.reason.as_deref(), Some("enrichment:titles"));
        assert_eq!(last.actor, "user:enrich-test");
        assert!(last.diff.contains_key("title"), "{:?}", last.diff);
    }

    // Nothing is stale any more: no call, no write.
    let again = enrich_stale(store, tenant, &ctx(), &enricher, &opts)
        .await
        .unwrap();
    assert_eq!(again.selected, 0, "{again:?}");
    assert_eq!(again.updated + again.verified, 0);
    assert_eq!(enricher.calls.load(Ordering::SeqCst), 4, "no new call");
}

async fn the_limit_takes_the_stalest_first<S: Store + ?Sized>(store: &S) {
    let tenant = TenantId::new();
    bounced(store, tenant, 20).await;
    let enricher = Titles::default();
    let report = enrich_stale(store, tenant, &ctx(), &enricher, &options(8))
        .await
        .unwrap();
    assert_eq!(report.selected, 8);
    assert_eq!(report.updated, 8);
    let rest = enrich_stale(store, tenant, &ctx(), &enricher, &options(100))
        .await
        .unwrap();
    assert_eq!(rest.selected, 12, "the other twelve are still stale");
}

/// Times out on its first call only.
struct SlowOnce {
    slow: Mutex<bool>,
}

#[async_trait]
impl Enricher for SlowOnce {
    fn provider(&self) -> &str {
        "slow"
    }

    fn batch_size(&self) -> usize {
        2
    }

    async fn enrich(&self, contacts: &[Contact]) -> Result<Vec<Enrichment>, EnrichError> {
        let slow = std::mem::replace(&mut *self.slow.lock().unwrap(), false);
        if slow {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        Ok(contacts
            .iter()
            .map(|c| {
                let mut e = Enrichment::new(c.id);
                e.verified = vec![FreshField::Email];
                e
            })
            .collect())
    }
}

async fn a_timed_out_batch_fails_and_writes_nothing<S: Store + ?Sized>(store: &S) {
    let tenant = TenantId::new();
    let contacts = bounced(store, tenant, 4).await;
    let enricher = SlowOnce {
        slow: Mutex::new(true),
    };
    let mut opts = options(10);
    opts.concurrency = 1;
    opts.timeout = Duration::from_millis(200);
    let report = enrich_stale(store, tenant, &ctx(), &enricher, &opts)
        .await
        .unwrap();
    assert_eq!(report.verified, 2, "{report:?}");
    assert_eq!(report.failed.len(), 2, "{report:?}");
    assert!(
        report
            .failed
            .iter()
            .all(|f| f.reason == EnrichFailureReason::Timeout)
    );
    let scope = store.scope(tenant, &ctx());
    for f in &report.failed {
        let fresh = scope.freshness(f.contact).await.unwrap().unwrap();
        assert!(fresh.email_invalid_at.is_some(), "nothing applied to {f:?}");
        assert!(fresh.email_verified_at.is_none());
        let c = contacts.iter().find(|c| c.id == f.contact).unwrap();
        let now = scope.get_contact(c.id).await.unwrap().unwrap();
        assert_eq!(now.version, c.version);
    }
}

/// Fails every call.
struct Down;

#[async_trait]
impl Enricher for Down {
    fn provider(&self) -> &str {
        "down"
    }

    async fn enrich(&self, _: &[Contact]) -> Result<Vec<Enrichment>, EnrichError> {
        Err("503 from the provider".into())
    }
}

/// Answers oddly: nothing for the first contact, an email another contact
/// holds for the second, a contact it was not asked about, and for the
/// third edits the contact itself before answering (as a user would).
struct Odd<S: Store> {
    store: Arc<S>,
    tenant: TenantId,
    taken: Email,
}

#[async_trait]
impl<S: Store> Enricher for Odd<S> {
    fn provider(&self) -> &str {
        "odd"
    }

    fn batch_size(&self) -> usize {
        10
    }

    async fn enrich(&self, contacts: &[Contact]) -> Result<Vec<Enrichment>, EnrichError> {
        let scope = self.store.scope(self.tenant, &ctx());
        let edited = &contacts[2];
        scope
            .update_contact(
                edited.id,
                edited.version,
                ContactPatch {
                    title: Some(Some(JobTitle::parse("Set by hand").unwrap())),
                    ..ContactPatch::default()
                },
            )
            .await
            .unwrap();
        let mut out = Vec::new();
        let mut dup = Enrichment::new(contacts[1].id);
        dup.email = Some(self.taken.clone());
        out.push(dup);
        let mut stranger = Enrichment::new(ContactId::new());
        stranger.verified = vec![FreshField::Email];
        out.push(stranger);
        for c in &contacts[2..] {
            let mut e = Enrichment::new(c.id);
            e.title = Some(JobTitle::parse("From the provider").unwrap());
            out.push(e);
        }
        Ok(out)
    }
}

async fn failures_are_reported_and_the_rest_applied<S: Store>(store: Arc<S>) {
    let tenant = TenantId::new();
    let contacts = bounced(&*store, tenant, 5).await;
    let report = enrich_stale(&*store, tenant, &ctx(), &Down, &options(10))
        .await
        .unwrap();
    assert_eq!(report.failed.len(), 5);
    assert!(
        report
            .failed
            .iter()
            .all(|f| matches!(&f.reason, EnrichFailureReason::Provider(m) if m.contains("503")))
    );

    let scope = store.scope(tenant, &ctx());
    let taken = scope
        .create_contact(NewContact::new(
            Email::parse("Taken@Example.com").unwrap(),
            PersonName::parse("Tak").unwrap(),
            PersonName::parse("En").unwrap(),
        ))
        .await
        .unwrap();
    let odd = Odd {
        store: store.clone(),
        tenant,
        taken: taken.email.clone(),
    };
    let report = enrich_stale(&*store, tenant, &ctx(), &odd, &options(10))
        .await
        .unwrap();
    assert_eq!(report.selected, 5);
    // The stalest first: the order is the store's; find each by role.
    let reason_of = |id: ContactId| {
        report
            .failed
            .iter()
            .filter(|f| f.contact == id)
            .map(|f| f.reason.clone())
            .collect::<Vec<_>>()
    };
    let mut hand = None;
    for c in &contacts {
        let now = scope.get_contact(c.id).await.unwrap().unwrap();
        if now.title.as_ref().map(|t| t.as_str()) == Some("Set by hand") {
            hand = Some(c.id);
        }
    }
    let hand = hand.expect("one contact was edited during the call");
    assert_eq!(reason_of(hand), vec![EnrichFailureReason::Changed]);
    let rejected: Vec<_> = report
        .failed
        .iter()
        .filter(|f| {
            matches!(
                &f.reason,
                EnrichFailureReason::Rejected {
                    kind: ErrorKind::DuplicateEmail,
                    ..
                }
            )
        })
        .collect();
    assert_eq!(rejected.len(), 1, "{report:?}");
    assert_eq!(
        report
            .failed
            .iter()
            .filter(|f| f.reason == EnrichFailureReason::Unexpected)
            .count(),
        1
    );
    assert_eq!(
        report
            .failed
            .iter()
            .filter(|f| f.reason == EnrichFailureReason::NoMatch)
            .count(),
        1,
        "the first contact got no answer: {report:?}"
    );
    assert_eq!(report.updated, 2, "{report:?}");
    let duplicated = scope
        .get_contact(rejected[0].contact)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(duplicated.email.normalized(), taken.email.normalized());
}

/// Panics when asked about one contact; gives every other a title.
struct PanicsOn(ContactId);

#[async_trait]
impl Enricher for PanicsOn {
    fn provider(&self) -> &str {
        "panics"
    }

    fn batch_size(&self) -> usize {
        1
    }

    async fn enrich(&self, contacts: &[Contact]) -> Result<Vec<Enrichment>, EnrichError> {
        if contacts.iter().any(|c| c.id == self.0) {
            panic!("the provider's client panicked");
        }
        Ok(contacts
            .iter()
            .map(|c| {
                let mut e = Enrichment::new(c.id);
                e.title = Some(JobTitle::parse("Chief Analyst").unwrap());
                e
            })
            .collect())
    }
}

async fn a_panicking_provider_fails_its_batch_and_the_rest_is_applied<S: Store + ?Sized>(
    store: &S,
) {
    let tenant = TenantId::new();
    let contacts = bounced(store, tenant, 4).await;
    let mut opts = options(10);
    opts.concurrency = 1;
    let report = enrich_stale(store, tenant, &ctx(), &PanicsOn(contacts[1].id), &opts)
        .await
        .expect("a provider's panic is its batch's failure, not the caller's");
    assert_eq!(report.selected, 4);
    assert_eq!(report.updated, 3, "{report:?}");
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(report.failed[0].contact, contacts[1].id);
    assert!(
        matches!(&report.failed[0].reason, EnrichFailureReason::Provider(m) if m.contains("panicked")),
        "{report:?}"
    );
}

/// Corrects names and adds a custom field, confirming nothing.
struct Names;

#[async_trait]
impl Enricher for Names {
    fn provider(&self) -> &str {
        "names"
    }

    async fn enrich(&self, contacts: &[Contact]) -> Result<Vec<Enrichment>, EnrichError> {
        Ok(contacts
            .iter()
            .map(|c| {
                let mut e = Enrichment::new(c.id);
                e.last_name = Some(PersonName::parse("Lovelace").unwrap());
                e.custom
                    .insert("linkedin".into(), serde_json::json!("ada-lovelace"));
                e
            })
            .collect())
    }
}

async fn an_answer_that_only_corrects_names_is_applied<S: Store + ?Sized>(store: &S) {
    let tenant = TenantId::new();
    let contacts = bounced(store, tenant, 2).await;
    let report = enrich_stale(store, tenant, &ctx(), &Names, &options(10))
        .await
        .unwrap();
    assert_eq!(report.failed, vec![], "{report:?}");
    assert_eq!(report.updated, 2, "{report:?}");
    assert_eq!(report.verified, 0, "no field was confirmed: {report:?}");
    let scope = store.scope(tenant, &ctx());
    for c in &contacts {
        let now = scope.get_contact(c.id).await.unwrap().unwrap();
        assert_eq!(now.last_name.as_str(), "Lovelace");
        assert_eq!(
            now.metadata.as_map().get("linkedin"),
            Some(&serde_json::json!("ada-lovelace"))
        );
    }
}

/// Answers twice for each contact: for the first two, two different
/// titles; for the others the same answer twice. Also twice, with two
/// answers, for a contact it was not asked about.
struct Twice;

#[async_trait]
impl Enricher for Twice {
    fn provider(&self) -> &str {
        "twice"
    }

    fn batch_size(&self) -> usize {
        10
    }

    async fn enrich(&self, contacts: &[Contact]) -> Result<Vec<Enrichment>, EnrichError> {
        let answer = |id: ContactId, title: &str| {
            let mut e = Enrichment::new(id);
            e.title = Some(JobTitle::parse(title).unwrap());
            e
        };
        let stranger = ContactId::new();
        let mut out = vec![answer(stranger, "CTO")];
        for c in contacts {
            out.push(answer(c.id, "CTO"));
        }
        out.push(answer(stranger, "CEO"));
        for (i, c) in contacts.iter().enumerate() {
            out.push(answer(c.id, if i < 2 { "CEO" } else { "CTO" }));
        }
        Ok(out)
    }
}

/// Two different answers for one contact: neither is applied and the
/// contact is reported once, as answered twice; the same answer twice is
/// one answer; a contact not asked about is reported once.
async fn two_answers_for_one_contact_apply_neither<S: Store + ?Sized>(store: &S) {
    let tenant = TenantId::new();
    let contacts = bounced(store, tenant, 4).await;
    let report = enrich_stale(store, tenant, &ctx(), &Twice, &options(10))
        .await
        .unwrap();
    assert_eq!(report.selected, 4);
    assert_eq!(report.updated, 2, "{report:?}");
    let scope = store.scope(tenant, &ctx());
    let mut twice = Vec::new();
    for c in &contacts {
        let now = scope.get_contact(c.id).await.unwrap().unwrap();
        let reasons: Vec<_> = report
            .failed
            .iter()
            .filter(|f| f.contact == c.id)
            .map(|f| f.reason.clone())
            .collect();
        match now.title.as_ref().map(|t| t.as_str()) {
            None => {
                assert_eq!(reasons, vec![EnrichFailureReason::AnsweredTwice]);
                assert_eq!(now.version, c.version);
                twice.push(c.id);
            }
            Some(title) => {
                assert_eq!(title, "CTO");
                assert!(reasons.is_empty(), "{reasons:?}");
            }
        }
    }
    assert_eq!(twice.len(), 2, "{report:?}");
    let strangers: Vec<_> = report
        .failed
        .iter()
        .filter(|f| f.reason == EnrichFailureReason::Unexpected)
        .collect();
    assert_eq!(strangers.len(), 1, "{report:?}");
    assert_eq!(report.failed.len(), 3, "{report:?}");
    assert_eq!(
        EnrichFailureReason::AnsweredTwice.to_string(),
        "the provider gave two different answers for the contact: neither is applied"
    );
}

async fn bad_options_are_refused_by_name<S: Store + ?Sized>(store: &S) {
    let tenant = TenantId::new();
    let mut opts = options(0);
    opts.concurrency = 0;
    opts.timeout = Duration::ZERO;
    let e = enrich_stale(store, tenant, &ctx(), &Titles::default(), &opts)
        .await
        .unwrap_err();
    let fields: Vec<&str> = e.field_errors().iter().map(|f| f.field.as_str()).collect();
    assert_eq!(fields, ["limit", "concurrency", "timeout"], "{e}");
}

#[tokio::test]
async fn memory_applies_as_an_ordinary_update_then_does_nothing() {
    applies_as_an_ordinary_update_then_does_nothing(&InMemoryStore::new()).await;
}

#[tokio::test]
async fn memory_the_limit_takes_the_stalest_first() {
    the_limit_takes_the_stalest_first(&InMemoryStore::new()).await;
}

#[tokio::test]
async fn memory_a_timed_out_batch_fails_and_writes_nothing() {
    a_timed_out_batch_fails_and_writes_nothing(&InMemoryStore::new()).await;
}

#[tokio::test]
async fn memory_failures_are_reported_and_the_rest_applied() {
    failures_are_reported_and_the_rest_applied(Arc::new(InMemoryStore::new())).await;
}

#[tokio::test]
async fn memory_a_panicking_provider_fails_its_batch_and_the_rest_is_applied() {
    a_panicking_provider_fails_its_batch_and_the_rest_is_applied(&InMemoryStore::new()).await;
}

#[tokio::test]
async fn memory_an_answer_that_only_corrects_names_is_applied() {
    an_answer_that_only_corrects_names_is_applied(&InMemoryStore::new()).await;
}

#[tokio::test]
async fn memory_two_answers_for_one_contact_apply_neither() {
    two_answers_for_one_contact_apply_neither(&InMemoryStore::new()).await;
}

#[tokio::test]
async fn memory_bad_options_are_refused_by_name() {
    bad_options_are_refused_by_name(&InMemoryStore::new()).await;
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use support::TestStore;

    #[tokio::test]
    async fn applies_as_an_ordinary_update_then_does_nothing() {
        let db = TestStore::new().await;
        super::applies_as_an_ordinary_update_then_does_nothing(&*db).await;
    }

    #[tokio::test]
    async fn the_limit_takes_the_stalest_first() {
        let db = TestStore::new().await;
        super::the_limit_takes_the_stalest_first(&*db).await;
    }

    #[tokio::test]
    async fn a_timed_out_batch_fails_and_writes_nothing() {
        let db = TestStore::new().await;
        super::a_timed_out_batch_fails_and_writes_nothing(&*db).await;
    }

    #[tokio::test]
    async fn failures_are_reported_and_the_rest_applied() {
        let db = TestStore::new().await;
        let store: crm_core::PostgresStore = (*db).clone();
        super::failures_are_reported_and_the_rest_applied(Arc::new(store)).await;
    }

    #[tokio::test]
    async fn two_answers_for_one_contact_apply_neither() {
        let db = TestStore::new().await;
        super::two_answers_for_one_contact_apply_neither(&*db).await;
    }

    #[tokio::test]
    async fn an_answer_that_only_corrects_names_is_applied() {
        let db = TestStore::new().await;
        super::an_answer_that_only_corrects_names_is_applied(&*db).await;
    }

    #[tokio::test]
    async fn a_panicking_provider_fails_its_batch_and_the_rest_is_applied() {
        let db = TestStore::new().await;
        super::a_panicking_provider_fails_its_batch_and_the_rest_is_applied(&*db).await;
    }
}

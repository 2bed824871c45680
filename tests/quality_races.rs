#![cfg(all(feature = "postgres", feature = "conformance"))]
//! The data-quality tools beside concurrent writers on PostgreSQL (and the
//! same calls in memory where a race can be staged there): a duplicate
//! scan while a contact is renamed, an enrichment whose contact changes
//! while the provider answers, and stale contacts whose rank moves while
//! an enrichment pages through them. Each reads every contact once and
//! writes nothing a serial order would not.

mod support;

use std::{
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use crm_core::{
    Actor, Context, DynStore, InMemoryStore, Store, StoreExt, TenantId, Transaction, conformance,
    domain::{
        Contact, ContactId, ContactPatch, Email, FreshField, NewContact, OriginalTimes, PersonName,
        StaleQuery,
    },
    quality::{
        DuplicateOptions, duplicate_candidates,
        enrich::{
            EnrichError, EnrichFailureReason, EnrichOptions, Enricher, Enrichment, enrich_stale,
        },
    },
};
use support::TestStore;

fn ctx() -> Context {
    Context::new(Actor::parse("user:quality-race").unwrap())
}

fn contact(email: &str, first: &str, last: &str) -> NewContact {
    NewContact::new(
        Email::parse(email).unwrap(),
        PersonName::parse(first).unwrap(),
        PersonName::parse(last).unwrap(),
    )
}

/// A contact last seen `days` ago, as an import of another CRM's records
/// would bring it.
fn stale_contact(email: &str, days: i64) -> NewContact {
    let then = chrono::Utc::now() - chrono::Duration::days(days);
    contact(email, "Stale", "Person").original_times(OriginalTimes::new(then, then).unwrap())
}

/// A duplicate scan of three pages of contacts while another process keeps
/// renaming one of them between a name that sorts first (`Aaron`) and one
/// that sorts after every ASCII name (`Äaron`; both fold to `aaron`): each
/// contact is scanned once and never paired with itself. Read by name,
/// page after page on snapshots of their own, the renamed contact was read
/// twice and paired with itself in the first scan.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_duplicate_scan_beside_renames_reads_each_contact_once() {
    let owner = TestStore::new().await;
    let store = owner.db().store();
    let tenant = TenantId::new();
    const N: usize = 2100;
    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    for i in 0..N {
        tx.create_contact(contact(
            &format!("p{i:05}@d{i:05}.example"),
            "Filler",
            &format!("Name{i:05}"),
        ))
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let target = store
        .scope(tenant, &ctx())
        .create_contact(contact("zoe.target@target.example", "Zoe", "Aaron"))
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let renamer = {
        let (store, stop) = (owner.db().store(), stop.clone());
        tokio::spawn(async move {
            let crm = store.scope(tenant, &ctx());
            let mut version = target.version;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let last = if n.is_multiple_of(2) {
                    "Äaron"
                } else {
                    "Aaron"
                };
                let patch = ContactPatch {
                    last_name: Some(PersonName::parse(last).unwrap()),
                    ..ContactPatch::default()
                };
                version = crm
                    .update_contact(target.id, version, patch)
                    .await
                    .unwrap()
                    .version;
                n += 1;
            }
            n
        })
    };
    for scan in 0..4 {
        let found = duplicate_candidates(&store, tenant, &DuplicateOptions::default())
            .await
            .unwrap();
        let self_pairs: Vec<_> = found.pairs().iter().filter(|p| p.a == p.b).collect();
        assert!(self_pairs.is_empty(), "scan {scan}: {self_pairs:?}");
        assert_eq!(found.contacts_scanned(), (N + 1) as u64, "scan {scan}");
    }
    stop.store(true, Ordering::Relaxed);
    assert!(renamer.await.unwrap() > 0, "the contact was renamed");
}

/// A provider that confirms the email of the one contact it is asked
/// about; while it answers, another process changes that email in a
/// transaction it hands over to be committed later.
struct ConfirmsWhileItChanges {
    store: Arc<DynStore>,
    tenant: TenantId,
    changing: Mutex<Option<tokio::sync::oneshot::Sender<Box<dyn Transaction>>>>,
}

#[async_trait]
impl Enricher for ConfirmsWhileItChanges {
    fn provider(&self) -> &str {
        "directory"
    }

    async fn enrich(&self, contacts: &[Contact]) -> Result<Vec<Enrichment>, EnrichError> {
        let c = &contacts[0];
        let mut tx = self.store.begin(self.tenant, ctx()).await.unwrap();
        let patch = ContactPatch {
            email: Some(Email::parse("someone.else@elsewhere.example").unwrap()),
            ..ContactPatch::default()
        };
        tx.update_contact(c.id, c.version, patch).await.unwrap();
        let sender = self.changing.lock().unwrap().take().unwrap();
        let _ = sender.send(tx);
        let mut answer = Enrichment::new(c.id);
        answer.verified = vec![FreshField::Email];
        Ok(vec![answer])
    }
}

/// The provider confirmed `ada@old.example`; the email changed before the
/// answer was written: the answer fails as `Changed` and the new email is
/// not marked verified. On PostgreSQL the change commits once the
/// enrichment waits for it (`wait`); the answer's check of the version,
/// made without a lock, let the verification land on the new email.
async fn an_answer_about_a_changed_email_verifies_nothing(
    store: Arc<DynStore>,
    wait: impl Future<Output = ()>,
) {
    let tenant = TenantId::new();
    let crm = store.scope(tenant, &ctx());
    let c = crm
        .create_contact(stale_contact("ada@old.example", 400))
        .await
        .unwrap();
    let (send, recv) = tokio::sync::oneshot::channel();
    let enricher = ConfirmsWhileItChanges {
        store: store.clone(),
        tenant,
        changing: Mutex::new(Some(send)),
    };
    let query = StaleQuery {
        unverified_days: Some(30),
        ..StaleQuery::default()
    };
    let options = EnrichOptions::new(query, 10);
    let context = ctx();
    let (report, ()) = tokio::join!(
        enrich_stale(&*store, tenant, &context, &enricher, &options),
        async {
            let tx = recv.await.unwrap();
            wait.await;
            tx.commit().await.unwrap();
        }
    );
    let report = report.unwrap();
    assert_eq!(report.verified, 0, "{report:?}");
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(report.failed[0].reason, EnrichFailureReason::Changed);
    let now = crm.get_contact(c.id).await.unwrap().unwrap();
    assert_eq!(now.email.as_str(), "someone.else@elsewhere.example");
    let fresh = crm.freshness(c.id).await.unwrap().unwrap();
    assert_eq!(fresh.email_verified_at, None, "the new email is verified");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_an_answer_about_a_changed_email_verifies_nothing() {
    let memory: Arc<DynStore> =
        Arc::new(InMemoryStore::with_pipelines(conformance::test_pipelines()));
    // In memory the enrichment's transaction waits for the change's to
    // end; committing it after a while stages the same order.
    an_answer_about_a_changed_email_verifies_nothing(
        memory,
        tokio::time::sleep(Duration::from_millis(200)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_an_answer_about_a_changed_email_verifies_nothing() {
    let owner = TestStore::new().await;
    let store: Arc<DynStore> = Arc::new(owner.db().store());
    an_answer_about_a_changed_email_verifies_nothing(
        store,
        support::until_a_backend_waits_for_a_lock(owner.db()),
    )
    .await;
}

/// A provider that records whom it was asked about and answers nothing.
#[derive(Default)]
struct Records(Mutex<Vec<ContactId>>);

#[async_trait]
impl Enricher for Records {
    fn provider(&self) -> &str {
        "records"
    }

    fn batch_size(&self) -> usize {
        1000
    }

    async fn enrich(&self, contacts: &[Contact]) -> Result<Vec<Enrichment>, EnrichError> {
        self.0.lock().unwrap().extend(contacts.iter().map(|c| c.id));
        Ok(Vec::new())
    }
}

/// An enrichment pages through 300 stale contacts ten at a time while
/// another process keeps confirming the phones of the forty stalest (each
/// confirmation moves a contact later in the order): each contact is asked
/// about once and counted once. Read page by page, the moved contacts
/// came again (317 questions about 300 contacts).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_enrichment_asks_about_each_stale_contact_once_while_ranks_move() {
    let owner = TestStore::new().await;
    let store: Arc<DynStore> = Arc::new(owner.db().store());
    let tenant = TenantId::new();
    let mut ids = Vec::new();
    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    for i in 0..300i64 {
        let c = tx
            .create_contact(stale_contact(&format!("s{i}@stale.example"), 400 + i))
            .await
            .unwrap();
        ids.push(c.id);
    }
    tx.commit().await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let verifier = {
        let (store, stop) = (store.clone(), stop.clone());
        let stalest: Vec<ContactId> = ids.iter().rev().take(40).copied().collect();
        tokio::spawn(async move {
            let crm = store.scope(tenant, &ctx());
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                for id in &stalest {
                    crm.verify_contact(*id, &[FreshField::Phone]).await.unwrap();
                    n += 1;
                }
            }
            n
        })
    };
    for run in 0..8 {
        let mut query = StaleQuery {
            unverified_days: Some(30),
            ..StaleQuery::default()
        };
        query.page.limit = 10;
        let enricher = Records::default();
        let report = enrich_stale(
            &*store,
            tenant,
            &ctx(),
            &enricher,
            &EnrichOptions::new(query, 1000),
        )
        .await
        .unwrap();
        let asked = enricher.0.lock().unwrap().clone();
        let mut once = asked.clone();
        once.sort();
        once.dedup();
        assert_eq!(once.len(), asked.len(), "run {run}: a contact asked twice");
        assert_eq!(report.selected, asked.len(), "run {run}");
    }
    stop.store(true, Ordering::Relaxed);
    assert!(verifier.await.unwrap() > 0, "phones were confirmed");
}

/// A provider named with a bidirectional control (or nothing visible) is
/// refused naming `provider`, not the `reason` the caller never gave.
#[tokio::test]
async fn a_provider_name_the_history_refuses_is_refused_as_the_provider() {
    struct Named(&'static str);

    #[async_trait]
    impl Enricher for Named {
        fn provider(&self) -> &str {
            self.0
        }

        async fn enrich(&self, _: &[Contact]) -> Result<Vec<Enrichment>, EnrichError> {
            Ok(Vec::new())
        }
    }

    let store = InMemoryStore::new();
    let query = StaleQuery {
        inactive_days: Some(1),
        ..StaleQuery::default()
    };
    let options = EnrichOptions::new(query, 10);
    for name in ["acme\u{202E}evil", "\u{2066}x"] {
        let e = enrich_stale(&store, TenantId::new(), &ctx(), &Named(name), &options)
            .await
            .expect_err("refused");
        let fields: Vec<(&str, &str)> = e
            .field_errors()
            .iter()
            .map(|f| (f.field.as_str(), f.code))
            .collect();
        assert_eq!(fields, [("provider", "invalid_value")], "{name:?}: {e}");
    }
}

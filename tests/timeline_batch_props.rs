//! Random batches of activities and signals against the same rows logged
//! one call at a time, on the in-memory store and on PostgreSQL: the
//! batch succeeds exactly when every call does, then leaves every contact
//! with the same timeline, signals, live state and freshness; when a call
//! fails, the batch fails with the same kind of error (on the same field)
//! and writes nothing. Some rows are refused by the domain (a body too
//! long, a time past year 9999), after or before rows naming a contact or
//! deal that does not exist: the first refused row in order is reported.

#[cfg(all(feature = "postgres", feature = "conformance"))]
mod support;

use chrono::{Duration, TimeZone, Utc};
use crm_core::{
    Context, DynStore, Error, InMemoryStore, PageRequest, StoreExt, TenantId,
    domain::{
        ActivityKind, ContactId, DealId, Email, MAX_BODY_CHARS, Money, NewActivity, NewContact,
        NewDeal, NewSignal, PersonName, SignalKind, Timestamp, truncate_to_micros,
    },
};
use proptest::prelude::*;

/// A row: contact slot (3 = a contact that does not exist), activity kind
/// (or a signal kind, for a signal), minutes ago, deal slot (0 none, 1 the
/// contact's own, 2 another contact's, 3 missing), whether a signal, and
/// whether the domain refuses it.
type Row = (usize, usize, i64, usize, bool, bool);

fn row() -> impl Strategy<Value = Row> {
    (
        prop_oneof![9 => 0..3usize, 1 => Just(3usize)],
        0..5usize,
        0..10_000i64,
        prop_oneof![6 => Just(0usize), 2 => Just(1usize), 1 => Just(2usize), 1 => Just(3usize)],
        any::<bool>(),
        prop_oneof![19 => Just(false), 1 => Just(true)],
    )
}

struct Tenant {
    t: TenantId,
    contacts: Vec<ContactId>,
    deals: Vec<DealId>,
}

async fn tenant(store: &DynStore) -> Tenant {
    let t = TenantId::new();
    let crm = store.scope(t, &Context::system("props"));
    let mut contacts = Vec::new();
    let mut deals = Vec::new();
    for i in 0..3 {
        let c = crm
            .create_contact(NewContact::new(
                Email::parse(&format!("p{i}@example.com")).unwrap(),
                PersonName::parse("P").unwrap(),
                PersonName::parse("Rop").unwrap(),
            ))
            .await
            .unwrap();
        let d = crm
            .create_deal(NewDeal::new(
                c.id,
                crm_core::domain::DealTitle::parse("D").unwrap(),
                Money::parse("1", crm_core::domain::Currency::parse("EUR").unwrap()).unwrap(),
            ))
            .await
            .unwrap();
        contacts.push(c.id);
        deals.push(d.id);
    }
    contacts.push(ContactId::new());
    Tenant { t, contacts, deals }
}

fn split(rows: &[Row], t: &Tenant, now: Timestamp) -> (Vec<NewActivity>, Vec<NewSignal>) {
    let signals = [
        SignalKind::EMAIL_BOUNCED,
        SignalKind::JOB_CHANGED,
        SignalKind::UNSUBSCRIBED,
        SignalKind::PAGE_VIEW,
        SignalKind::FORM_SUBMIT,
    ];
    let mut a = Vec::new();
    let mut s = Vec::new();
    for &(c, k, ago, d, is_signal, refused) in rows {
        let at = now - Duration::minutes(ago);
        if is_signal {
            let at = if refused {
                Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).unwrap()
            } else {
                at
            };
            s.push(NewSignal::new(t.contacts[c], signals[k].clone()).occurred_at(at));
        } else {
            let mut new = NewActivity::new(t.contacts[c], ActivityKind::ALL[k]).occurred_at(at);
            new.deal_id = match d {
                1 => Some(t.deals[c.min(2)]),
                2 => Some(t.deals[(c + 1) % 3]),
                3 => Some(DealId::new()),
                _ => None,
            };
            if refused {
                new.body = Some("x".repeat(MAX_BODY_CHARS + 1));
            }
            a.push(new);
        }
    }
    (a, s)
}

/// Everything the contacts of `t` hold that does not depend on ids.
async fn held(store: &DynStore, t: &Tenant) -> String {
    let crm = store.scope(t.t, &Context::system("props"));
    let mut out = String::new();
    for c in &t.contacts[..3] {
        let page = crm.timeline(*c, &PageRequest::first(1000)).await.unwrap();
        for a in page.items {
            let deal = a.deal_id.and_then(|d| t.deals.iter().position(|x| *x == d));
            out += &format!("a {:?} {} {:?};", a.kind, a.occurred_at, deal);
        }
        for s in crm.list_signals(*c).await.unwrap() {
            out += &format!("s {} {};", s.kind.as_str(), s.occurred_at);
        }
        let mut tx = store.begin(t.t, Context::system("props")).await.unwrap();
        let live = tx.live_score_log(*c).await.unwrap().and_then(|s| s.log);
        tx.rollback().await.unwrap();
        let f = crm.freshness(*c).await.unwrap().unwrap();
        out += &format!(
            "live {:?} fresh {:?} {:?} {:?} {:?}\n",
            live.map(f64::to_bits),
            f.last_engaged_at,
            f.email_invalid_at,
            f.reverify_since,
            f.unsubscribed_at
        );
    }
    out
}

/// What `e` says, without ids (the two tenants' differ): the entity not
/// found, or the fields refused with their row's index (`row`, for a
/// single call, the index of the call that failed).
fn kind(e: &Error, row: Option<usize>) -> String {
    match e {
        Error::Validation(v) => format!(
            "validation {:?}",
            v.as_slice()
                .iter()
                .map(|f| match crm_core::store::batch_row(&f.field) {
                    Some((i, field)) => (Some(i), field.to_string(), f.code),
                    None => (row, f.field.clone(), f.code),
                })
                .collect::<Vec<_>>()
        ),
        Error::NotFound { entity, .. } => format!("not found {entity:?}"),
        other => format!("{:?}", other.kind()),
    }
}

/// Logs `rows` one call at a time for one tenant and in batches for
/// another, and compares what each holds.
async fn check(store: &DynStore, rows: &[Row]) {
    let one = tenant(store).await;
    let many = tenant(store).await;
    let now = truncate_to_micros(Utc::now());
    // One call at a time, stopping at the first failure (as the
    // batch does), in one transaction committed only if all pass.
    let (a, s) = split(rows, &one, now);
    let mut tx = store.begin(one.t, Context::system("props")).await.unwrap();
    let mut single_err = None;
    for (i, new) in a.into_iter().enumerate() {
        if let Err(e) = tx.log_activity(new).await {
            single_err = Some(kind(&e, Some(i)));
            break;
        }
    }
    let mut signal_err = None;
    for (i, new) in s.into_iter().enumerate() {
        if let Err(e) = tx.record_signal(new).await {
            signal_err = Some(kind(&e, Some(i)));
            break;
        }
    }
    if single_err.is_none() && signal_err.is_none() {
        tx.commit().await.unwrap();
    } else {
        tx.rollback().await.unwrap();
    }
    let (a, s) = split(rows, &many, now);
    let before = held(store, &many).await;
    let mut tx = store.begin(many.t, Context::system("props")).await.unwrap();
    let batch_err = tx.log_activities(&a).await.err().map(|e| kind(&e, None));
    let batch_signal_err = tx.record_signals(&s).await.err().map(|e| kind(&e, None));
    assert_eq!(batch_err, single_err, "activities: the same outcome");
    assert_eq!(batch_signal_err, signal_err, "signals: the same outcome");
    if batch_err.is_none() && batch_signal_err.is_none() {
        tx.commit().await.unwrap();
        assert_eq!(held(store, &many).await, held(store, &one).await);
    } else {
        // Commit what did not fail: a refused batch wrote nothing.
        tx.commit().await.unwrap();
        let after = held(store, &many).await;
        if batch_err.is_some() && batch_signal_err.is_some() {
            assert_eq!(after, before, "refused batches leave nothing");
        }
    }
}

fn run<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_random_batch_does_what_the_single_calls_do(rows in proptest::collection::vec(row(), 0..40)) {
        run(async {
            let store = InMemoryStore::new();
            check(&store, &rows).await;
        });
    }
}

#[cfg(all(feature = "postgres", feature = "conformance"))]
proptest! {
    // A database per case.
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn on_postgres_a_random_batch_does_what_the_single_calls_do(
        rows in proptest::collection::vec(row(), 0..40)
    ) {
        run(async {
            let store = support::TestStore::new().await;
            check(&*store, &rows).await;
        });
    }
}

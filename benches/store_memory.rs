//! Hot paths of `InMemoryStore`: creating a contact, reading one by id and
//! by email, a timeline page of a busy contact, and the top-leads query.
//!
//! `cargo bench --bench store_memory`. Data is loaded before timing starts;
//! each timed call is a whole single-operation transaction through the
//! scoped handle (`Scope`), as host code makes it.
//!
//! With `CRM_BENCH_TRACING=info` the timed calls run under a subscriber that
//! records every span and event at INFO and above (`tracing-subscriber`'s
//! registry and formatting layer, writing each span as it closes to
//! `io::sink()`); without it there is no subscriber.

use std::{
    hint::black_box,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use chrono::{TimeZone, Utc};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use crm_core::{
    Actor, ContactQuery, Context, InMemoryStore, PageRequest, Store, StoreExt, TenantId,
    domain::{ActivityKind, ContactId, Email, NewActivity, NewContact, PersonName, Score, Subject},
};
use tokio::runtime::Runtime;

/// How many contacts the read benchmarks search among.
const CONTACTS: u64 = 100_000;
/// How many activities the busy contact has on its timeline.
const ACTIVITIES: u64 = 100_000;

fn new_contact(n: u64) -> NewContact {
    NewContact::new(
        Email::parse(&format!("contact{n}@bench.example.com")).unwrap(),
        PersonName::parse(&format!("First{n}")).unwrap(),
        PersonName::parse(&format!("Last{n}")).unwrap(),
    )
}

fn context() -> Context {
    Context::new(Actor::parse("bench").unwrap())
}

/// A store holding `CONTACTS` contacts with pseudo-random scores, and their ids.
async fn loaded_store(tenant: TenantId) -> (InMemoryStore, Vec<ContactId>) {
    let store = InMemoryStore::new();
    let mut tx = store.begin(tenant, context()).await.unwrap();
    let mut ids = Vec::with_capacity(CONTACTS as usize);
    let mut scores = Vec::with_capacity(CONTACTS as usize);
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    for n in 0..CONTACTS {
        let c = tx.create_contact(new_contact(n)).await.unwrap();
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        scores.push(crm_core::domain::ContactScore::new(
            c.id,
            Score::new(((seed >> 33) % 101) as i64).unwrap(),
        ));
        ids.push(c.id);
    }
    tx.write_scores(&scores).await.unwrap();
    tx.commit().await.unwrap();
    (store, ids)
}

/// Adds `ACTIVITIES` activities, one minute apart, to `contact`.
async fn busy_timeline(store: &InMemoryStore, tenant: TenantId, contact: ContactId) {
    let start = Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap();
    let subject = Subject::parse("Follow-up").unwrap();
    let mut tx = store.begin(tenant, context()).await.unwrap();
    for n in 0..ACTIVITIES {
        let a = NewActivity::new(contact, ActivityKind::ALL[(n % 5) as usize])
            .subject(subject.clone())
            .occurred_at(start + chrono::Duration::minutes(n as i64));
        tx.log_activity(a).await.unwrap();
    }
    tx.commit().await.unwrap();
}

fn benches(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let tenant = TenantId::new();
    let ctx = context();
    let (store, ids) = rt.block_on(loaded_store(tenant));
    let busy = ids[ids.len() / 2];
    rt.block_on(busy_timeline(&store, tenant, busy));
    if std::env::var("CRM_BENCH_TRACING").is_ok_and(|v| v == "info") {
        use tracing_subscriber::{Layer, filter::LevelFilter, fmt::format::FmtSpan, prelude::*};
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(std::io::sink)
            .with_span_events(FmtSpan::CLOSE)
            .with_filter(LevelFilter::INFO);
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
            .unwrap();
    }

    let mut group = c.benchmark_group("store_memory");
    let (store, ctx) = (&store, &ctx);
    // The handle host code holds while it serves the tenant: each call
    // below is a whole transaction.
    let crm = &store.scope(tenant, ctx);

    // Times only the creates; the created contacts are deleted afterwards,
    // untimed, so that every read below still sees exactly 100,000 contacts.
    let next = AtomicU64::new(CONTACTS);
    let next = &next;
    group.bench_function("create_contact", |b| {
        b.to_async(&rt).iter_custom(move |iters| async move {
            let inputs: Vec<NewContact> = (0..iters)
                .map(|_| new_contact(next.fetch_add(1, Ordering::Relaxed)))
                .collect();
            let mut created = Vec::with_capacity(inputs.len());
            let start = Instant::now();
            for new in inputs {
                created.push(crm.create_contact(new).await.unwrap().id);
            }
            let elapsed = start.elapsed();
            let mut tx = store.begin(tenant, ctx.clone()).await.unwrap();
            for id in created {
                assert!(tx.delete_contact(id).await.unwrap());
            }
            tx.commit().await.unwrap();
            elapsed
        })
    });

    let mut i = 0_usize;
    group.bench_function("get_contact_by_id", |b| {
        b.to_async(&rt).iter_batched(
            || {
                i = (i + 7919) % ids.len();
                ids[i]
            },
            |id| async move { black_box(crm.get_contact(id).await.unwrap()).unwrap() },
            BatchSize::SmallInput,
        )
    });

    let mut n = 0_u64;
    group.bench_function("get_contact_by_email", |b| {
        b.to_async(&rt).iter_batched(
            || {
                n = (n + 7919) % CONTACTS;
                // Another casing than the stored one, as users type it.
                Email::parse(&format!("Contact{n}@Bench.Example.com")).unwrap()
            },
            |email| async move {
                black_box(
                    crm.get_contact_by_email(&email)
                        .await
                        .unwrap(),
                )
                .unwrap()
            },
            BatchSize::SmallInput,
        )
    });

    let page = &PageRequest::first(50);
    group.bench_function("timeline_page_50_of_100k", |b| {
        b.to_async(&rt).iter(move || async move {
            let p = crm.timeline(busy, page).await.unwrap();
            assert_eq!(p.items.len(), 50);
            black_box(p)
        })
    });

    let top = &ContactQuery::top_leads(50);
    group.bench_function("top_50_leads_of_100k", |b| {
        b.to_async(&rt).iter(move || async move {
            let p = crm.search_contacts(top).await.unwrap();
            assert_eq!(p.items.len(), 50);
            black_box(p)
        })
    });

    group.finish();
}

criterion_group! {
    name = store_memory;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(60);
    targets = benches
}
criterion_main!(store_memory);

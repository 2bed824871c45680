//! What the idempotency guard adds to handling one event: the same handler
//! (create one contact) run plainly in a transaction and through
//! `IdempotencyGuard::run` (with the claim sent along with the handler's
//! first statement, the default, and with the claim answered before the
//! handler starts), one event at a time, interleaved so that all see the
//! same conditions; p50 and p99 of each, in memory and on PostgreSQL over
//! loopback, plus the latency of a replay.
//!
//! `cargo bench --bench idempotency --features postgres`
//!
//! PostgreSQL: a fresh database `crm_bench_idem_<pid>` on the server at
//! `CRM_BENCH_SERVER_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`),
//! migrated, and dropped at the end. `IDEM_BENCH_EVENTS` sets the number of
//! events per variant (default 5000); with `IDEM_BENCH_ASYNC_COMMIT` set,
//! that database runs with `synchronous_commit = off`.

use std::{
    str::FromStr,
    time::{Duration, Instant},
};

use crm_core::{
    Actor, Context, InMemoryStore, PostgresStore, Store, TenantId,
    domain::{Email, NewContact, PersonName},
    idempotency::{
        ClaimTiming, GuardConfig, HandlerError, HandlerFuture, IdempotencyGuard, InboundEvent,
    },
};
use serde_json::json;
use tokio_postgres::{Config, NoTls};

fn contact(i: usize, variant: &str) -> NewContact {
    NewContact::new(
        Email::parse(&format!("{variant}{i}@example.com")).unwrap(),
        PersonName::parse("Bench").unwrap(),
        PersonName::parse("Mark").unwrap(),
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

struct Figures {
    plain: Vec<Duration>,
    guarded: Vec<Duration>,
    before: Vec<Duration>,
    replay: Vec<Duration>,
}

/// The guarded handler: creates the event's contact.
async fn guarded(
    store: &dyn Store,
    guard: &IdempotencyGuard,
    tenant: TenantId,
    ctx: &Context,
    i: usize,
    variant: &'static str,
) -> (Duration, InboundEvent) {
    let payload =
        json!({"id": format!("{variant}_{i}"), "email": format!("{variant}{i}@example.com")});
    let start = Instant::now();
    let event = InboundEvent::new("bench", &format!("{variant}_{i}"), &payload).unwrap();
    guard
        .run(store, tenant, ctx, &event, move |tx| {
            Box::pin(async move {
                let c = tx.create_contact(contact(i, variant)).await?;
                Ok::<_, HandlerError>(c.id)
            }) as HandlerFuture<'_, _>
        })
        .await
        .unwrap();
    (start.elapsed(), event)
}

async fn measure(store: &dyn Store, events: usize) -> Figures {
    let tenant = TenantId::new();
    let ctx = Context::new(Actor::parse("bench:idempotency").unwrap());
    let guard = IdempotencyGuard::new();
    let before_guard = IdempotencyGuard::with_config(
        GuardConfig::default().with_claim(ClaimTiming::BeforeHandler),
    );
    let warmup = events / 10;
    let mut f = Figures {
        plain: Vec::with_capacity(events),
        guarded: Vec::with_capacity(events),
        before: Vec::with_capacity(events),
        replay: Vec::with_capacity(events),
    };
    for i in 0..warmup + events {
        // Plain: the handler in a transaction of its own.
        let start = Instant::now();
        let mut tx = store.begin(tenant, ctx.clone()).await.unwrap();
        tx.create_contact(contact(i, "plain")).await.unwrap();
        tx.commit().await.unwrap();
        let plain = start.elapsed();

        // Guarded: the same handler through the guard (fingerprinting
        // included), with each claim timing.
        let (with_first, event) = guarded(store, &guard, tenant, &ctx, i, "guarded").await;
        let (before, _) = guarded(store, &before_guard, tenant, &ctx, i, "before").await;

        // Replay: the same event again.
        let start = Instant::now();
        let again = guard
            .run(store, tenant, &ctx, &event, |_| {
                Box::pin(async { Ok::<_, HandlerError>(crm_core::domain::ContactId::new()) })
                    as HandlerFuture<'_, _>
            })
            .await
            .unwrap();
        let replay = start.elapsed();
        assert!(again.is_replay());

        if i >= warmup {
            f.plain.push(plain);
            f.guarded.push(with_first);
            f.before.push(before);
            f.replay.push(replay);
        }
    }
    f
}

fn report(name: &str, mut f: Figures) {
    f.plain.sort_unstable();
    f.guarded.sort_unstable();
    f.before.sort_unstable();
    f.replay.sort_unstable();
    println!("{name}: {} events per variant", f.plain.len());
    println!("  {:<44} {:>9} {:>9}", "", "p50 µs", "p99 µs");
    for (label, v) in [
        ("handler alone (begin/create/commit)", &f.plain),
        ("through the guard", &f.guarded),
        ("through the guard, claim before handler", &f.before),
        ("replay of a stored result", &f.replay),
    ] {
        println!(
            "  {:<44} {:>9.1} {:>9.1}",
            label,
            micros(percentile(v, 0.50)),
            micros(percentile(v, 0.99))
        );
    }
    for (label, v) in [
        ("guard overhead (difference)", &f.guarded),
        ("overhead, claim before handler", &f.before),
    ] {
        println!(
            "  {:<44} {:>9.1} {:>9.1}",
            label,
            micros(percentile(v, 0.50)) - micros(percentile(&f.plain, 0.50)),
            micros(percentile(v, 0.99)) - micros(percentile(&f.plain, 0.99)),
        );
    }
}

fn main() {
    let events: usize = std::env::var("IDEM_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    // The same program on both tokio schedulers: one thread (client and
    // connection tasks never wake another thread) and two worker threads
    // (as a typical server runs, where a response may wake the other one).
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    current.block_on(async {
        let memory = InMemoryStore::new();
        report("in memory", measure(&memory, events).await);
        postgres(events, "PostgreSQL over loopback, current-thread runtime").await;
    });
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    multi.block_on(postgres(
        events,
        "PostgreSQL over loopback, multi-thread runtime (2 workers)",
    ));
}

/// Measures on PostgreSQL, in a database of its own, and reports as `name`.
async fn postgres(events: usize, name: &str) {
    let server = std::env::var("CRM_BENCH_SERVER_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string());
    let config = Config::from_str(&server).expect("a PostgreSQL URL");
    let db_name = format!("crm_bench_idem_{}", std::process::id());
    let (admin, conn) = config.connect(NoTls).await.expect("the bench server");
    tokio::spawn(conn);
    admin
        .batch_execute(&format!("CREATE DATABASE {db_name}"))
        .await
        .unwrap();
    if std::env::var_os("IDEM_BENCH_ASYNC_COMMIT").is_some() {
        // Leave out the wait for the WAL flush, which dominates a commit
        // on a slow disk and hides what the statements cost.
        admin
            .batch_execute(&format!(
                "ALTER DATABASE {db_name} SET synchronous_commit = off"
            ))
            .await
            .unwrap();
    }
    let mut db = config.clone();
    db.dbname(&db_name);
    let url = format!(
        "host=127.0.0.1 port={} user={} dbname={db_name}",
        db.get_ports().first().copied().unwrap_or(5432),
        db.get_user().unwrap_or("postgres")
    );
    let result = async {
        let store = PostgresStore::builder(&url).pool_size(4).build().await?;
        store.migrate().await?;
        let figures = measure(&store, events).await;
        drop(store);
        Ok::<_, crm_core::Error>(figures)
    }
    .await;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
        .await
        .unwrap();
    report(name, result.unwrap());

    // For scale: one round trip to the server.
    let ping = admin.prepare("SELECT 1").await.unwrap();
    let mut rtt: Vec<Duration> = Vec::with_capacity(events);
    for _ in 0..events {
        let start = Instant::now();
        admin.query_one(&ping, &[]).await.unwrap();
        rtt.push(start.elapsed());
    }
    rtt.sort_unstable();
    println!(
        "  {:<44} {:>9.1} {:>9.1}",
        "one round trip (SELECT 1)",
        micros(percentile(&rtt, 0.50)),
        micros(percentile(&rtt, 0.99))
    );
}

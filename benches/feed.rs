//! The cost and speed of the change feed on PostgreSQL, in a database of
//! its own (created, migrated and dropped by this program).
//!
//! ```text
//! cargo bench --features postgres --bench feed
//! ```
//!
//! (`CRM_BENCH_SERVER_URL` names the server, default
//! `postgres://postgres@127.0.0.1:5432/postgres`; its user must be allowed
//! to create databases.)
//!
//! - **Create contact with and without the feed**: throughput of whole
//!   transactions through the store (`create_contact`: begin, insert,
//!   commit) with a durable commit (`synchronous_commit = on`, as in
//!   `pg_vs_raw`), for 1 and 8 concurrent clients, all in one tenant and in
//!   8 tenants (the feed serializes the commits of one tenant), alternating
//!   rounds with the feed on and off (its triggers disabled and its
//!   counter answering nothing, so that history versions carry no feed
//!   position; `CRM_BENCH_FEED_ROUNDS`, default 5): the medians of the rates and of
//!   the per-round ratios, and each round's ratio.
//! - **Commit to subscriber**: a subscription woken by LISTEN/NOTIFY
//!   receives each of 500 contacts created 10 ms apart; the time from the
//!   return of the writer's commit to the event's arrival, p50 and p99.
//! - **Catch-up**: 1,000,000 events (100,000 commits of 10, each event a
//!   history version with a one-field diff) are generated with SQL, then a
//!   consumer reads them all with `next_batch` and `ack` (batches of 5,000,
//!   one transaction each): events per second.
//!
//! `CRM_BENCH_FEED_PARTS` picks the parts (`create,latency,catchup`, all
//! by default); with `CRM_BENCH_FEED_NO_NOTIFY=1` the commit trigger sends
//! no `NOTIFY` (to measure what the wake-up costs; the subscriber then
//! polls); with `CRM_BENCH_FEED_ASYNC=1` commits do not wait for the WAL
//! flush (`synchronous_commit = off` on the database), which separates the
//! feed's own work from the disk's latency.
//!
//! Timing only; nothing is asserted.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crm_core::{
    Actor, Context, PostgresStore, Store, StoreExt, TenantId,
    domain::{ConsumerName, Email, NewContact, PersonName},
    feed::{SubscribeOptions, subscribe},
};
use futures_util::StreamExt;
use tokio_postgres::NoTls;

/// Rounds of each workload, with and without the feed alternately
/// (`CRM_BENCH_FEED_ROUNDS`, default 5).
fn rounds() -> usize {
    std::env::var("CRM_BENCH_FEED_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
const ROUND: Duration = Duration::from_secs(4);
/// The feed's triggers: the commit triggers (schema 18: on the first event
/// of a transaction, a history version or a row of `feed_events`) and the
/// statement triggers that write the events of activities and signals.
const FEED_TRIGGERS: [(&str, &str); 8] = [
    ("history", "history_feed_commit"),
    ("feed_events", "feed_events_commit"),
    ("activities", "activities_feed_insert"),
    ("activities", "activities_feed_update"),
    ("activities", "activities_feed_delete"),
    ("signals", "signals_feed_insert"),
    ("signals", "signals_feed_update"),
    ("signals", "signals_feed_delete"),
];

/// Without the feed, the history writers number no event either: the
/// feed's counter answers nothing, so a version is written without its
/// feed position (and out of `history_feed_idx`), as before there was a
/// feed.
const NO_FEED_CLAIM: &str = "CREATE OR REPLACE FUNCTION crm.crm_feed_claim(p_tenant uuid, \
     p_count integer) RETURNS integer LANGUAGE sql AS 'SELECT NULL::integer'";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn contact(n: u64) -> NewContact {
    NewContact::new(
        Email::parse(&format!("c{n}@example.com")).unwrap(),
        PersonName::parse("Bench").unwrap(),
        PersonName::parse("Mark").unwrap(),
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = std::env::var("CRM_BENCH_SERVER_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string());
    let name = format!("crm_bench_feed_{}", uuid::Uuid::now_v7().simple());
    let (admin, conn) = tokio_postgres::connect(&server, NoTls).await?;
    tokio::spawn(conn);
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    let result = run(&server, &name).await;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await?;
    result
}

/// Turns the feed on (the counter as migrated, `claim`, and the triggers)
/// or off.
async fn feed_triggers(
    db: &tokio_postgres::Client,
    claim: &str,
    on: bool,
) -> Result<(), tokio_postgres::Error> {
    for (table, trigger) in FEED_TRIGGERS {
        let verb = if on { "ENABLE" } else { "DISABLE" };
        db.batch_execute(&format!("ALTER TABLE crm.{table} {verb} TRIGGER {trigger}"))
            .await?;
    }
    db.batch_execute(if on { claim } else { NO_FEED_CLAIM })
        .await
}

/// Contacts created per second by `clients` tasks over `tenants` tenants.
async fn create_rate(
    store: &Arc<PostgresStore>,
    tenants: &[TenantId],
    clients: usize,
    counter: &Arc<AtomicU64>,
) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let store = Arc::clone(store);
            let tenant = tenants[c % tenants.len()];
            let stop = Arc::clone(&stop);
            let done = Arc::clone(&done);
            let counter = Arc::clone(counter);
            tokio::spawn(async move {
                let ctx = Context::new(Actor::parse("bench:feed").unwrap());
                let crm = store.scope(tenant, &ctx);
                while !stop.load(Ordering::Relaxed) {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    crm.create_contact(contact(n)).await.unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let start = Instant::now();
    tokio::time::sleep(ROUND).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed();
    let count = done.load(Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    count as f64 / elapsed.as_secs_f64()
}

async fn run(server: &str, name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut config: tokio_postgres::Config = server.parse()?;
    config.dbname(name);
    let (db, conn) = config.connect(NoTls).await?;
    tokio::spawn(conn);
    if std::env::var("CRM_BENCH_FEED_ASYNC").is_ok_and(|v| v == "1") {
        // Commits that do not wait for the WAL flush: the feed's own work,
        // without the disk's latency (which varies a lot on a shared
        // machine and hides it).
        db.batch_execute(&format!(
            "ALTER DATABASE {name} SET synchronous_commit = off"
        ))
        .await?;
        println!("(commits do not wait for the flush)");
    }
    let manager = deadpool_postgres::Manager::from_config(
        config.clone(),
        NoTls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    let pool = deadpool_postgres::Pool::builder(manager)
        .max_size(16)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()?;
    let store = Arc::new(
        PostgresStore::from_pool(pool, Default::default()).with_feed_listener(config.clone()),
    );
    store.migrate().await?;
    let counter = Arc::new(AtomicU64::new(0));
    let parts = std::env::var("CRM_BENCH_FEED_PARTS")
        .unwrap_or_else(|_| "create,latency,catchup".to_string());
    if std::env::var("CRM_BENCH_FEED_NO_NOTIFY").is_ok_and(|v| v == "1") {
        let body: String = db
            .query_one(
                "SELECT pg_get_functiondef('crm.crm_feed_commit'::regproc)",
                &[],
            )
            .await?
            .get(0);
        let start = body
            .find("    IF TG_TABLE_NAME")
            .ok_or("no NOTIFY in the trigger")?;
        let end = start + body[start..].find("END IF;").ok_or("no END IF")? + "END IF;".len();
        db.batch_execute(&format!("{}{}", &body[..start], &body[end..]))
            .await?;
        println!("(the commit trigger sends no NOTIFY)");
    }

    // ---- create contact, with and without the feed ----
    if parts.contains("create") {
        let claim: String = db
            .query_one(
                "SELECT pg_get_functiondef('crm.crm_feed_claim'::regproc)",
                &[],
            )
            .await?
            .get(0);
        let one = [TenantId::new()];
        let eight: Vec<TenantId> = (0..8).map(|_| TenantId::new()).collect();
        for (label, tenants, clients) in [
            ("1 client, 1 tenant", &one[..], 1),
            ("8 clients, 1 tenant", &one[..], 8),
            ("8 clients, 8 tenants", &eight[..], 8),
        ] {
            let (mut with, mut without, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..rounds() {
                feed_triggers(&db, &claim, true).await?;
                let w = create_rate(&store, tenants, clients, &counter).await;
                feed_triggers(&db, &claim, false).await?;
                let wo = create_rate(&store, tenants, clients, &counter).await;
                with.push(w);
                without.push(wo);
                ratios.push(w / wo);
            }
            feed_triggers(&db, &claim, true).await?;
            println!(
                "| create contact, {label} | {:.0} /s | {:.0} /s | {:.2}× (rounds {}) |",
                median(with),
                median(without),
                median(ratios.clone()),
                ratios
                    .iter()
                    .map(|r| format!("{r:.2}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
    }
    if !parts.contains("latency") && !parts.contains("catchup") {
        return Ok(());
    }

    // ---- commit to subscriber ----
    let tenant = TenantId::new();
    let ctx = Context::new(Actor::parse("bench:feed")?);
    let events = subscribe(
        Arc::clone(&store),
        tenant,
        ctx.clone(),
        ConsumerName::parse("latency")?,
        store.feed_wake_ups(tenant),
        SubscribeOptions {
            poll_interval: Duration::from_secs(3600),
            ..SubscribeOptions::default()
        },
    );
    let (sent_tx, mut sent_rx) = tokio::sync::mpsc::unbounded_channel::<(uuid::Uuid, Instant)>();
    let writer = {
        let store = Arc::clone(&store);
        let ctx = ctx.clone();
        let counter = Arc::clone(&counter);
        tokio::spawn(async move {
            // The listening connection starts first.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let crm = store.scope(tenant, &ctx);
            for _ in 0..500 {
                let c = crm
                    .create_contact(contact(counter.fetch_add(1, Ordering::Relaxed)))
                    .await
                    .unwrap();
                sent_tx.send((c.id.as_uuid(), Instant::now())).unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let mut arrived = Vec::with_capacity(500);
    let mut events = Box::pin(events.take(500));
    while let Some(e) = events.next().await {
        arrived.push((e?.id, Instant::now()));
    }
    writer.await?;
    let mut sent = std::collections::HashMap::new();
    while let Ok((id, at)) = sent_rx.try_recv() {
        sent.insert(id, at);
    }
    let mut latencies: Vec<Duration> = arrived
        .iter()
        .filter_map(|(id, at)| sent.get(id).map(|s| at.saturating_duration_since(*s)))
        .collect();
    latencies.sort();
    println!(
        "commit to subscriber: p50 {:.2} ms, p99 {:.2} ms ({} events)",
        millis(percentile(&latencies, 0.5)),
        millis(percentile(&latencies, 0.99)),
        latencies.len()
    );

    // ---- catch-up over 1M events ----
    let reader = TenantId::new();
    let start = Instant::now();
    db.batch_execute(&format!(
        "SET crm.tenant_id TO '{reader}';
         INSERT INTO crm.feed_commits (tenant_id, txn, position, committed_at, events)
         SELECT '{reader}'::uuid, md5(c::text)::uuid, c, timestamptz '2024-01-01' + c * interval '10 ms',
                10
           FROM generate_series(1, 100000) AS c;
         ALTER TABLE crm.history DISABLE TRIGGER history_feed_commit;
         INSERT INTO crm.history (tenant_id, entity_id, valid_from, valid_to, entity_kind,
                                  operation, data, diff, actor, txn, seq)
         SELECT '{reader}'::uuid, gen_random_uuid(), timestamptz '2024-01-01' + i * interval '1 ms',
                NULL, 'contact', 'updated',
                jsonb_build_object('title', 'Generated ' || i, 'version', 2),
                jsonb_build_object('title', jsonb_build_object('old', 'Before', 'new', 'Generated ' || i)),
                'bench:generator', md5(((i - 1) / 10 + 1)::text)::uuid, (i - 1) % 10 + 1
           FROM generate_series(1, 1000000) AS i;
         ALTER TABLE crm.history ENABLE TRIGGER history_feed_commit;
         INSERT INTO crm.feed_heads (tenant_id) VALUES ('{reader}');
         ANALYZE crm.history; ANALYZE crm.feed_commits; ANALYZE crm.feed_events;"
    ))
    .await?;
    println!(
        "generated 1,000,000 events in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let name = ConsumerName::parse("catch-up")?;
    let start = Instant::now();
    let mut read = 0usize;
    loop {
        let mut tx = store.begin(reader, ctx.clone()).await?;
        let batch = tx.next_batch(&name, 5000).await?;
        let Some(last) = batch.last() else {
            tx.commit().await?;
            break;
        };
        assert!(batch.iter().all(|e| e.diff.is_some()));
        tx.ack(&name, last.position).await?;
        tx.commit().await?;
        read += batch.len();
    }
    let took = start.elapsed();
    println!(
        "catch-up: {read} events in {:.1} s, {:.0} events/s",
        took.as_secs_f64(),
        read as f64 / took.as_secs_f64()
    );
    Ok(())
}

//! Activities and signals in bulk on PostgreSQL, side by side in one run:
//! `TimelineTx::log_activities` in batches of 1,000 (live scores,
//! freshness and the change feed all on), the row-by-row `log_activity`
//! loop (timed on a sample and extrapolated; also 1,000 rows per
//! transaction), a raw binary `COPY` of the same rows into `activities`
//! with the user triggers off (the floor: no feed, no live score, no
//! freshness, no checks), and `log_activities` again with the feed trigger
//! of `activities` off (what the per-row trigger costs); then
//! `record_signals` against `record_signal`.
//!
//! Uses a database of its own, `crm_bench_bulk_log`, dropped and created
//! at the start and dropped at the end (set `CRM_BENCH_SERVER_URL` for
//! another server; the user must be able to create databases and, for the
//! raw `COPY`, bypass row-level security). `CRM_BULK_LOG_ROWS` sets the
//! number of activities (default 100,000) and signals (the same),
//! `CRM_BULK_LOG_CONTACTS` the contacts (default 10,000).
//!
//! ```text
//! cargo bench --features postgres --bench bulk_log
//! ```

use std::time::{Duration, Instant};

use crm_core::{
    Context, PostgresStore, Store, TenantId,
    bulk::ConflictPolicy,
    domain::{
        ActivityKind, ContactId, Email, NewActivity, NewContact, NewSignal, PersonName, SignalKind,
        Timestamp, UpsertOutcome, truncate_to_micros,
    },
    scoring::ScoringModel,
};
use futures_util::pin_mut;
use tokio_postgres::{
    NoTls,
    binary_copy::BinaryCopyInWriter,
    types::{ToSql, Type},
};
use uuid::Uuid;

const DB: &str = "crm_bench_bulk_log";
const BATCH: usize = 1_000;
const SINGLE_SAMPLE: usize = 5_000;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn rate(rows: usize, took: Duration) -> f64 {
    rows as f64 / took.as_secs_f64()
}

/// The activities: every contact in turn (strided, so that a batch names
/// 1,000 distinct contacts and each contact comes back every `n` rows),
/// every kind, over the last few days.
fn activities(contacts: &[ContactId], rows: usize, now: Timestamp) -> Vec<NewActivity> {
    let n = contacts.len();
    (0..rows)
        .map(|i| {
            let c = contacts[(i * 7919) % n];
            let kind = ActivityKind::ALL[i % ActivityKind::ALL.len()];
            NewActivity::new(c, kind)
                .occurred_at(now - chrono::Duration::seconds((i % 300_000) as i64))
        })
        .collect()
}

fn signals(contacts: &[ContactId], rows: usize, now: Timestamp) -> Vec<NewSignal> {
    let kinds = [
        SignalKind::PAGE_VIEW,
        SignalKind::EMAIL_BOUNCED,
        SignalKind::JOB_CHANGED,
        SignalKind::UNSUBSCRIBED,
    ];
    let n = contacts.len();
    (0..rows)
        .map(|i| {
            NewSignal::new(contacts[(i * 7919) % n], kinds[i % kinds.len()].clone())
                .occurred_at(now - chrono::Duration::seconds((i % 300_000) as i64))
        })
        .collect()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rows = env_usize("CRM_BULK_LOG_ROWS", 100_000);
    let n_contacts = env_usize("CRM_BULK_LOG_CONTACTS", 10_000).max(1);
    let server = std::env::var("CRM_BENCH_SERVER_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_string());
    let (admin, conn) = tokio_postgres::connect(&format!("{server}/postgres"), NoTls).await?;
    tokio::spawn(conn);
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {DB}"))
        .await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {DB}"))
        .await?;
    let url = format!("{server}/{DB}");
    let store = PostgresStore::builder(&url)
        .pool_size(4)
        .build()
        .await?
        .with_live_scoring(Some(ScoringModel::default()));
    store.migrate().await?;
    let (client, conn) = tokio_postgres::connect(&url, NoTls).await?;
    tokio::spawn(conn);
    println!("load average at start: {}", load());
    println!(
        "rows: {rows} activities and {rows} signals on {n_contacts} contacts, batches of {BATCH}; live scores on"
    );

    let tenant = TenantId::new();
    let ctx = Context::system("bench");
    let mut contacts = Vec::with_capacity(n_contacts);
    let t = Instant::now();
    for chunk in (0..n_contacts).collect::<Vec<_>>().chunks(BATCH) {
        let new: Vec<NewContact> = chunk
            .iter()
            .map(|i| {
                NewContact::new(
                    Email::parse(&format!("lead{i}@bench.example")).expect("email"),
                    PersonName::parse("Bench").expect("name"),
                    PersonName::parse(&format!("Lead{i}")).expect("name"),
                )
            })
            .collect();
        let mut tx = store.begin(tenant, ctx.clone()).await?;
        for outcome in tx.upsert_contacts(&new, ConflictPolicy::Incoming).await? {
            if let UpsertOutcome::Inserted(id) = outcome {
                contacts.push(id);
            }
        }
        tx.commit().await?;
    }
    println!("{} contacts in {:.1?}", contacts.len(), t.elapsed());
    let now = truncate_to_micros(chrono::Utc::now());

    // 1. log_activities, everything on.
    let batch_rows = activities(&contacts, rows, now);
    let t = Instant::now();
    for chunk in batch_rows.chunks(BATCH) {
        let mut tx = store.begin(tenant, ctx.clone()).await?;
        tx.log_activities(chunk).await?;
        tx.commit().await?;
    }
    let batched = t.elapsed();

    // 2. log_activity row by row, on a sample, 1,000 per transaction.
    let sample = activities(&contacts, SINGLE_SAMPLE.min(rows), now);
    let t = Instant::now();
    for chunk in sample.chunks(BATCH) {
        let mut tx = store.begin(tenant, ctx.clone()).await?;
        for a in chunk {
            tx.log_activity(a.clone()).await?;
        }
        tx.commit().await?;
    }
    let single = t.elapsed();

    // 3. Raw binary COPY into activities, user triggers off.
    client
        .batch_execute("ALTER TABLE crm.activities DISABLE TRIGGER USER")
        .await?;
    let raw_rows = activities(&contacts, rows, now);
    let types = [
        Type::UUID,
        Type::UUID,
        Type::UUID,
        Type::UUID,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TIMESTAMPTZ,
        Type::TIMESTAMPTZ,
    ];
    let t = Instant::now();
    for chunk in raw_rows.chunks(BATCH) {
        client.batch_execute("BEGIN").await?;
        let sink = client
            .copy_in(
                "COPY crm.activities (tenant_id, id, contact_id, deal_id, kind, direction, \
                 subject, body, occurred_at, created_at) FROM STDIN (FORMAT binary)",
            )
            .await?;
        let writer = BinaryCopyInWriter::new(sink, &types);
        pin_mut!(writer);
        let created = truncate_to_micros(chrono::Utc::now());
        for a in chunk {
            let id = Uuid::now_v7();
            let tenant_id = tenant.as_uuid();
            let contact = a.contact_id.as_uuid();
            let deal: Option<Uuid> = None;
            let none: Option<&str> = None;
            let row: [&(dyn ToSql + Sync); 10] = [
                &tenant_id,
                &id,
                &contact,
                &deal,
                &a.kind.as_str(),
                &none,
                &none,
                &none,
                &a.occurred_at,
                &created,
            ];
            writer.as_mut().write(&row).await?;
        }
        writer.finish().await?;
        client.batch_execute("COMMIT").await?;
    }
    let raw = t.elapsed();
    client
        .batch_execute("ALTER TABLE crm.activities ENABLE TRIGGER USER")
        .await?;

    // 4. log_activities with the feed trigger of activities' inserts off
    // (one statement trigger per event since schema 12).
    client
        .batch_execute("ALTER TABLE crm.activities DISABLE TRIGGER activities_feed_insert")
        .await?;
    let quiet_rows = activities(&contacts, rows, now);
    let t = Instant::now();
    for chunk in quiet_rows.chunks(BATCH) {
        let mut tx = store.begin(tenant, ctx.clone()).await?;
        tx.log_activities(chunk).await?;
        tx.commit().await?;
    }
    let no_feed = t.elapsed();
    client
        .batch_execute("ALTER TABLE crm.activities ENABLE TRIGGER activities_feed_insert")
        .await?;

    // 5. Signals: record_signals against record_signal.
    let signal_rows = signals(&contacts, rows, now);
    let t = Instant::now();
    for chunk in signal_rows.chunks(BATCH) {
        let mut tx = store.begin(tenant, ctx.clone()).await?;
        tx.record_signals(chunk).await?;
        tx.commit().await?;
    }
    let signals_batched = t.elapsed();
    let signal_sample = signals(&contacts, SINGLE_SAMPLE.min(rows), now);
    let t = Instant::now();
    for chunk in signal_sample.chunks(BATCH) {
        let mut tx = store.begin(tenant, ctx.clone()).await?;
        for s in chunk {
            tx.record_signal(s.clone()).await?;
        }
        tx.commit().await?;
    }
    let signals_single = t.elapsed();

    let b = rate(rows, batched);
    let s = rate(sample.len(), single);
    let r = rate(rows, raw);
    let q = rate(rows, no_feed);
    let sb = rate(rows, signals_batched);
    let ss = rate(signal_sample.len(), signals_single);
    println!();
    println!("| path | rows | time | rows/s | vs log_activities |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| log_activities (batches of {BATCH}, live+freshness+feed) | {rows} | {batched:.2?} | {b:.0} | 1.00 |"
    );
    println!(
        "| log_activity row by row (sample, extrapolated) | {} | {single:.2?} | {s:.0} | {:.2} |",
        sample.len(),
        s / b
    );
    println!(
        "| raw binary COPY, user triggers off | {rows} | {raw:.2?} | {r:.0} | {:.2} |",
        r / b
    );
    println!(
        "| log_activities, feed trigger off | {rows} | {no_feed:.2?} | {q:.0} | {:.2} |",
        q / b
    );
    println!(
        "| record_signals (batches of {BATCH}) | {rows} | {signals_batched:.2?} | {sb:.0} | |"
    );
    println!(
        "| record_signal row by row (sample, extrapolated) | {} | {signals_single:.2?} | {ss:.0} | |",
        signal_sample.len()
    );
    println!();
    println!("log_activities / row by row: {:.1}x", b / s);
    println!("record_signals / row by row: {:.1}x", sb / ss);
    println!(
        "the feed trigger's share of log_activities: {:.0}%",
        100.0 * (1.0 - no_feed.as_secs_f64() / batched.as_secs_f64())
    );
    println!("load average at end: {}", load());

    drop(store);
    drop(client);
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)"))
        .await?;
    Ok(())
}

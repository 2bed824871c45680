//! The cost of the audit history on PostgreSQL, in a database of its own
//! (created, migrated and dropped by this program).
//!
//! ```text
//! cargo bench --features postgres --bench history
//! ```
//!
//! (`CRM_BENCH_SERVER_URL` names the server, default
//! `postgres://postgres@127.0.0.1:5432/postgres`; its user must be allowed
//! to create databases.)
//!
//! - **Deal update with and without history capture**: one whole
//!   transaction through the store (begin, `update_deal` of the amount,
//!   commit), alternating rounds with the history triggers on `deals`
//!   enabled and disabled (`ALTER TABLE crm.deals DISABLE TRIGGER USER`), so
//!   that both see the same machine state. `synchronous_commit` is off in
//!   the bench database, so that the figure is the statements' cost, not
//!   the disk's flush.
//! - **As-of read over 1M versions**: 1,000,000 versions (10,000 deals × 100
//!   versions each) are generated with one `INSERT … SELECT`, then
//!   `entity_as_of` of a random deal at a random time, one transaction each.
//!
//! Prints p50/p99 latencies. Timing only; nothing is asserted.

use std::time::{Duration, Instant};

use crm_core::{
    Actor, Context, PostgresStore, Store, StoreExt, TenantId,
    domain::{Currency, DealPatch, DealTitle, Email, Money, NewContact, NewDeal, PersonName},
    history::HistoryEntity,
};
use tokio_postgres::NoTls;

const ROUNDS: usize = 4;
const UPDATES_PER_ROUND: usize = 2000;
const AS_OF_READS: usize = 5000;
const DEALS: i64 = 10_000;
const VERSIONS_PER_DEAL: i64 = 100;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// A small deterministic generator (xorshift), so that runs are repeatable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = std::env::var("CRM_BENCH_SERVER_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string());
    let name = format!("crm_bench_history_{}", uuid::Uuid::now_v7().simple());
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

async fn run(server: &str, name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut config: tokio_postgres::Config = server.parse()?;
    config.dbname(name);
    let (db, conn) = config.connect(NoTls).await?;
    tokio::spawn(conn);
    db.batch_execute(&format!(
        "ALTER DATABASE {name} SET synchronous_commit = off"
    ))
    .await?;
    let manager = deadpool_postgres::Manager::from_config(
        config.clone(),
        NoTls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    let pool = deadpool_postgres::Pool::builder(manager)
        .max_size(4)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()?;
    let store = PostgresStore::from_pool(pool, Default::default());
    store.migrate().await?;

    let tenant = TenantId::new();
    let ctx = Context::new(Actor::parse("bench:history")?);
    let contact = store
        .scope(tenant, &ctx)
        .create_contact(NewContact::new(
            Email::parse("bench@example.com")?,
            PersonName::parse("Bench")?,
            PersonName::parse("Mark")?,
        ))
        .await?;
    let eur = Currency::parse("EUR")?;
    let deal = store
        .scope(tenant, &ctx)
        .create_deal(NewDeal::new(
            contact.id,
            DealTitle::parse("Bench")?,
            Money::parse("1", eur)?,
        ))
        .await?;

    // ---- update with and without history ----
    let mut version = deal.version;
    let mut amount = 1u64;
    let mut with = Vec::new();
    let mut without = Vec::new();
    for round in 0..ROUNDS * 2 {
        let capture = round % 2 == 0;
        db.batch_execute(if capture {
            "ALTER TABLE crm.deals ENABLE TRIGGER USER"
        } else {
            "ALTER TABLE crm.deals DISABLE TRIGGER USER"
        })
        .await?;
        for i in 0..UPDATES_PER_ROUND + 100 {
            amount += 1;
            let patch = DealPatch {
                amount: Some(Money::parse(&amount.to_string(), eur)?),
                ..DealPatch::default()
            };
            let start = Instant::now();
            let mut tx = store.begin(tenant, ctx.clone()).await?;
            let d = tx.update_deal(deal.id, version, patch).await?;
            tx.commit().await?;
            let took = start.elapsed();
            version = d.version;
            // The first 100 of a round warm the caches up.
            if i >= 100 {
                if capture { &mut with } else { &mut without }.push(took);
            }
        }
    }
    db.batch_execute("ALTER TABLE crm.deals ENABLE TRIGGER USER")
        .await?;
    with.sort();
    without.sort();
    println!(
        "deal update, history on : p50 {:.0} µs, p99 {:.0} µs ({} updates)",
        micros(percentile(&with, 0.5)),
        micros(percentile(&with, 0.99)),
        with.len()
    );
    println!(
        "deal update, history off: p50 {:.0} µs, p99 {:.0} µs ({} updates)",
        micros(percentile(&without, 0.5)),
        micros(percentile(&without, 0.99)),
        without.len()
    );
    println!(
        "ratio on/off: p50 {:.2}, p99 {:.2}",
        micros(percentile(&with, 0.5)) / micros(percentile(&without, 0.5)),
        micros(percentile(&with, 0.99)) / micros(percentile(&without, 0.99)),
    );

    // ---- as-of over 1M versions ----
    let start = Instant::now();
    db.batch_execute(&format!(
        "INSERT INTO crm.history (tenant_id, entity_id, valid_from, valid_to, entity_kind, operation, \
             data, diff, actor)
         SELECT '{tenant}'::uuid, d.id,
                timestamptz '2024-01-01' + v * interval '1 hour',
                CASE WHEN v < {last} THEN timestamptz '2024-01-01' + (v + 1) * interval '1 hour' END,
                'deal', CASE WHEN v = 0 THEN 'created' ELSE 'updated' END,
                jsonb_build_object('id', d.id::text, 'amount', v::text, 'stage', 'qualified',
                                   'title', 'Generated', 'version', v + 1),
                jsonb_build_object('amount', jsonb_build_object('old', (v - 1)::text, 'new', v::text)),
                'bench:generator'
         FROM (SELECT gen_random_uuid() AS id FROM generate_series(1, {DEALS})) AS d,
              generate_series(0, {last}) AS v;
         ANALYZE crm.history;",
        last = VERSIONS_PER_DEAL - 1
    ))
    .await?;
    let loaded = start.elapsed();
    let ids: Vec<uuid::Uuid> = db
        .query(
            "SELECT DISTINCT entity_id FROM crm.history WHERE actor = 'bench:generator'",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let total: i64 = db
        .query_one("SELECT count(*) FROM crm.history", &[])
        .await?
        .get(0);
    println!(
        "generated {} versions in {:.1} s ({total} in the table)",
        ids.len() as i64 * VERSIONS_PER_DEAL,
        loaded.as_secs_f64()
    );
    let base = chrono::DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z")?.to_utc();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut reads = Vec::with_capacity(AS_OF_READS);
    let mut found = 0usize;
    for i in 0..AS_OF_READS + 200 {
        let id = ids[(rng.next() % ids.len() as u64) as usize];
        let hours = (rng.next() % (VERSIONS_PER_DEAL as u64 + 10)) as i64;
        let at = base + chrono::Duration::minutes(hours * 60 + 30);
        let start = Instant::now();
        let mut tx = store.begin(tenant, ctx.clone()).await?;
        let v = tx
            .entity_as_of(
                HistoryEntity::Deal(crm_core::domain::DealId::from_uuid(id)),
                at,
            )
            .await?;
        tx.commit().await?;
        let took = start.elapsed();
        if i >= 200 {
            reads.push(took);
            found += usize::from(v.is_some());
        }
    }
    reads.sort();
    println!(
        "as-of read over 1M versions: p50 {:.0} µs, p99 {:.0} µs ({} reads, {found} found a version)",
        micros(percentile(&reads, 0.5)),
        micros(percentile(&reads, 0.99)),
        reads.len()
    );
    Ok(())
}

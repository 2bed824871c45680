//! Rescoring and live-score benchmarks on PostgreSQL.
//!
//! ```text
//! CRM_BENCH_URL=postgres://postgres@127.0.0.1:5432/crm_bench \
//! CRM_BENCH_LOOKBACK_DAYS=800 \
//!     cargo bench --features postgres --bench rescore -- rescore
//!
//! CRM_BENCH_URL=postgres://postgres@127.0.0.1:5432/crm_live_10k \
//!     cargo bench --features postgres --bench rescore -- incremental
//!
//! CRM_BENCH_URL=postgres://postgres@127.0.0.1:5432/crm_accounts \
//!     cargo bench --features postgres --bench rescore -- top_accounts
//! ```
//!
//! `rescore` (the default) rescores the tenant with the most contacts (or
//! `CRM_BENCH_TENANT`) twice in one transaction each: a first run that
//! writes the scores that changed, then a second that finds them all
//! unchanged. `CRM_BENCH_LOOKBACK_DAYS` replaces the model's 90-day window
//! (the generated tenants' contacts were created over two years: 800 days
//! covers them all); `CRM_BENCH_CHUNK` sets the chunk size;
//! `CRM_BENCH_DRY_RUN=1` writes nothing. It does not migrate the database.
//!
//! `CRM_BENCH_SCRAMBLE=1` makes the first run rewrite every score, the
//! same way each time: before it, every stored score `s` of the tenant
//! becomes `(s + 50) % 101`, which differs from `s` (so from the score the
//! first run computes, when the scores were up to date), and
//! `VACUUM ANALYZE crm.contact_ranks` clears the dead rows that left.
//! Untimed; by hand, for a build without the option:
//!
//! ```text
//! UPDATE crm.contact_ranks SET score = (score + 50) % 101 WHERE tenant_id = '<tenant>';
//! VACUUM ANALYZE crm.contact_ranks;
//! ```
//!
//! (Before schema 17 the score was a column of `crm.contacts`.)
//!
//! `CRM_BENCH_PHASES=1` also prints, per run, the time spent in each store
//! operation (`scoring_inputs`, `write_scores`, `commit`, …: summed from
//! the store's `crm.op` spans, so overlapping operations count twice).
//!
//! `incremental` logs `CRM_BENCH_OPS` (default 2,000) activities on random
//! contacts of the tenant, alternating a store that keeps live scores and
//! one that does not, and prints the latency percentiles of
//! `log_activity` (the call alone, inside its transaction) for both. It
//! needs a database migrated to version 4 (as `generate_tenant` leaves
//! it) and writes activities: use a database of your own.
//!
//! `top_accounts` gives every contact of the tenant a live state (spread
//! over 10 units from a fixed seed; `CRM_BENCH_KEEP_STATES=1` keeps the
//! states there are) and times `live_top_accounts` for 10, 50 and 1,000
//! accounts, 21 calls each after two that warm the caches. It writes
//! states: use a database of your own.
//!
//! All end with the process's peak resident set size (VmHWM).

use std::{
    collections::BTreeMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use crm_core::{
    Context, PostgresStore, Store, TenantId,
    domain::{ActivityKind, ContactId, LiveState, NewActivity},
    scoring::{RescoreOptions, ScoringModel, rescore},
};
use tokio_postgres::NoTls;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn peak_rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM"))
                .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Per store operation: how many calls and how long they took in all.
static PHASES: Mutex<BTreeMap<String, (u64, Duration)>> = Mutex::new(BTreeMap::new());

/// Sums the wall time of the store's `crm.op` spans per operation.
struct PhaseLayer;

struct OpStart(String, Instant);

struct OperationField(Option<String>);

impl tracing::field::Visit for OperationField {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "operation" {
            self.0 = Some(value.to_string());
        }
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "operation" {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

impl<S> tracing_subscriber::Layer<S> for PhaseLayer
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if attrs.metadata().name() != "crm.op" {
            return;
        }
        let mut op = OperationField(None);
        attrs.record(&mut op);
        if let (Some(span), Some(name)) = (ctx.span(id), op.0) {
            span.extensions_mut().insert(OpStart(name, Instant::now()));
        }
    }

    fn on_close(&self, id: tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        if let Some(OpStart(name, started)) = span.extensions_mut().remove::<OpStart>() {
            let mut phases = PHASES.lock().unwrap();
            let entry = phases.entry(name).or_default();
            entry.0 += 1;
            entry.1 += started.elapsed();
        }
    }
}

fn print_phases() {
    let mut phases = PHASES.lock().unwrap();
    for (name, (calls, took)) in phases.iter() {
        println!("  {name}: {calls} calls, {:.3} s", took.as_secs_f64());
    }
    phases.clear();
}

/// Shifts every stored score of `tenant` to `(s + 50) % 101` (see the
/// module's documentation), then vacuums and analyzes their rank rows.
async fn scramble(url: &str, tenant: TenantId) {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(conn);
    let started = Instant::now();
    let n = client
        .execute(
            "UPDATE crm.contact_ranks SET score = (score + 50) % 101 WHERE tenant_id = $1",
            &[&tenant.as_uuid()],
        )
        .await
        .expect("scramble");
    client
        .batch_execute("VACUUM ANALYZE crm.contact_ranks")
        .await
        .expect("vacuum");
    println!(
        "scrambled {n} scores and vacuumed in {:.1} s (untimed)",
        started.elapsed().as_secs_f64()
    );
}

async fn biggest_tenant(url: &str) -> TenantId {
    if let Some(t) = env("CRM_BENCH_TENANT") {
        return TenantId::from_uuid(t.parse().expect("CRM_BENCH_TENANT is a UUID"));
    }
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT tenant_id FROM crm.contacts GROUP BY tenant_id ORDER BY count(*) DESC LIMIT 1",
            &[],
        )
        .await
        .expect("a tenant");
    TenantId::from_uuid(row.get(0))
}

async fn run_rescore(url: &str) {
    let phases = env("CRM_BENCH_PHASES").is_some_and(|v| v == "1");
    if phases {
        use tracing_subscriber::prelude::*;
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(PhaseLayer))
            .expect("a subscriber");
    }
    let store = PostgresStore::connect(url).await.expect("connect");
    let tenant = biggest_tenant(url).await;
    let mut options = RescoreOptions::new();
    if let Some(days) = env("CRM_BENCH_LOOKBACK_DAYS") {
        options = options.with_lookback_days(days.parse().expect("a number of days"));
    }
    if let Some(n) = env("CRM_BENCH_CHUNK") {
        options = options.with_chunk_size(n.parse().expect("a chunk size"));
    }
    options.dry_run = env("CRM_BENCH_DRY_RUN").is_some_and(|v| v == "1");
    let model = ScoringModel::default();
    if env("CRM_BENCH_SCRAMBLE").is_some_and(|v| v == "1") {
        scramble(url, tenant).await;
    }
    println!("tenant {tenant}, chunk size {}", options.chunk_size);
    // The same `now` for both runs, so that the second finds nothing to change.
    let options = options.with_now(chrono::Utc::now());
    for run in ["first", "second"] {
        let started = Instant::now();
        let report = rescore(&store, tenant, Context::system("bench"), &model, &options)
            .await
            .expect("rescore");
        let took = started.elapsed();
        println!(
            "{run} run: {:.3} s — scanned {}, changed {}, unchanged {}, written {}, {} chunks",
            took.as_secs_f64(),
            report.scanned,
            report.changed,
            report.unchanged,
            report.written,
            report.chunks
        );
        println!("  distribution {:?}", report.distribution);
        if phases {
            print_phases();
        }
        if let Some(best) = report.top.first() {
            println!(
                "  best: {} score {} from {} signals",
                best.contact,
                best.scored.score.get(),
                best.scored.signal_count
            );
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

async fn run_incremental(url: &str) {
    let live = PostgresStore::connect(url).await.expect("connect");
    let plain = live.clone().with_live_scoring(None);
    let tenant = biggest_tenant(url).await;
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(conn);
    let ids: Vec<ContactId> = client
        .query(
            "SELECT id FROM crm.contacts WHERE tenant_id = $1 LIMIT 5000",
            &[&tenant.as_uuid()],
        )
        .await
        .expect("contacts")
        .iter()
        .map(|r| ContactId::from_uuid(r.get(0)))
        .collect();
    let ops: usize = env("CRM_BENCH_OPS").map_or(2_000, |v| v.parse().expect("a count"));
    let mut with_live = Vec::with_capacity(ops);
    let mut without = Vec::with_capacity(ops);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..ops * 2 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let contact = ids[(x % ids.len() as u64) as usize];
        let (store, out): (&PostgresStore, &mut Vec<Duration>) = if i % 2 == 0 {
            (&live, &mut with_live)
        } else {
            (&plain, &mut without)
        };
        let mut tx = store
            .begin(tenant, Context::system("bench"))
            .await
            .expect("begin");
        let started = Instant::now();
        tx.log_activity(NewActivity::new(contact, ActivityKind::Meeting))
            .await
            .expect("log");
        let took = started.elapsed();
        tx.commit().await.expect("commit");
        // The first few warm the statement caches of the pool's connections.
        if i >= 64 {
            out.push(took);
        }
    }
    with_live.sort();
    without.sort();
    for (name, v) in [
        ("live scoring on ", &with_live),
        ("live scoring off", &without),
    ] {
        println!(
            "log_activity, {name}: n {}, p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms",
            v.len(),
            percentile(v, 0.5),
            percentile(v, 0.9),
            percentile(v, 0.99)
        );
    }
    println!(
        "difference: p50 {:+.3} ms, p99 {:+.3} ms",
        percentile(&with_live, 0.5) - percentile(&without, 0.5),
        percentile(&with_live, 0.99) - percentile(&without, 0.99)
    );
}

async fn run_top_accounts(url: &str) {
    let store = PostgresStore::connect(url).await.expect("connect");
    let tenant = biggest_tenant(url).await;
    if env("CRM_BENCH_KEEP_STATES").is_none() {
        // Live states spread over 10 units (two weeks of the reference
        // half-life's decay), one per contact, from a fixed seed.
        let (client, conn) = tokio_postgres::connect(url, NoTls).await.expect("connect");
        tokio::spawn(conn);
        let ids: Vec<ContactId> = client
            .query(
                "SELECT id FROM crm.contacts WHERE tenant_id = $1",
                &[&tenant.as_uuid()],
            )
            .await
            .expect("contacts")
            .iter()
            .map(|r| ContactId::from_uuid(r.get(0)))
            .collect();
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for chunk in ids.chunks(10_000) {
            let states: Vec<LiveState> = chunk
                .iter()
                .map(|id| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    LiveState::new(*id, Some(20.0 + (x % 10_000) as f64 / 1_000.0))
                })
                .collect();
            let mut tx = store
                .begin(tenant, Context::system("bench"))
                .await
                .expect("begin");
            tx.write_live_score_logs(&states).await.expect("states");
            tx.commit().await.expect("commit");
        }
        client
            .execute("ANALYZE crm.contact_scores", &[])
            .await
            .expect("analyze");
        println!("wrote the live states of {} contacts", ids.len());
    }
    for limit in [10u32, 50, 1000] {
        let mut times = Vec::new();
        for round in 0..23 {
            let mut tx = store
                .begin(tenant, Context::system("bench"))
                .await
                .expect("begin");
            let started = Instant::now();
            let top = tx.live_top_accounts(limit).await.expect("top accounts");
            let took = started.elapsed();
            tx.rollback().await.expect("rollback");
            assert!(!top.is_empty(), "the tenant has scored accounts");
            // Two rounds warm the caches.
            if round >= 2 {
                times.push(took);
            }
        }
        times.sort();
        println!(
            "live_top_accounts({limit}): n {}, p50 {:.1} ms, p99 {:.1} ms",
            times.len(),
            percentile(&times, 0.5),
            percentile(&times, 0.99)
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Some(url) = env("CRM_BENCH_URL") else {
        eprintln!("set CRM_BENCH_URL to a database holding a generated tenant; skipping");
        return;
    };
    let mode = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_else(|| "rescore".into());
    match mode.as_str() {
        "incremental" => run_incremental(&url).await,
        "top_accounts" => run_top_accounts(&url).await,
        _ => run_rescore(&url).await,
    }
    println!("peak RSS (VmHWM): {}", peak_rss());
}

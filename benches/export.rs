//! Export benchmark over the largest tenant of a database made by
//! `examples/generate_tenant.rs` (1M contacts, 10M activities, 500k deals
//! by default): the time and rate of each export of the tenant into
//! `io::sink()`, as JSON Lines, and the peak RSS.
//!
//! ```text
//! CRM_BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/crm_bench \
//!     cargo bench --features postgres --bench export
//! ```
//!
//! `CRM_BENCH_EXPORTS` picks some of `contacts,deals,activities,signals`
//! (all by default).
use std::time::Instant;

use crm_core::{Context, PostgresStore, TenantId, bulk};
use uuid::Uuid;

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("CRM_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/crm_bench".to_string());
    let exports = std::env::var("CRM_BENCH_EXPORTS")
        .unwrap_or_else(|_| "contacts,deals,activities,signals".to_string());
    let store = PostgresStore::connect(&url).await?;
    let tenant: Uuid = store
        .pool()
        .get()
        .await?
        .query_one(
            "SELECT tenant_id FROM crm.contacts GROUP BY tenant_id ORDER BY count(*) DESC LIMIT 1",
            &[],
        )
        .await?
        .get(0);
    let tenant = TenantId::from_uuid(tenant);
    let ctx = Context::system("bench");
    println!("database {url}, tenant {tenant}");
    println!("| export | records | s | records/s |");
    println!("|---|---:|---:|---:|");
    for export in exports.split(',') {
        let sink = std::io::sink();
        let started = Instant::now();
        let n = match export {
            "contacts" => bulk::export_contacts_jsonl(&store, tenant, &ctx, sink).await?,
            "deals" => bulk::export_deals_jsonl(&store, tenant, &ctx, sink).await?,
            "activities" => bulk::export_activities_jsonl(&store, tenant, &ctx, sink).await?,
            "signals" => bulk::export_signals_jsonl(&store, tenant, &ctx, sink).await?,
            other => return Err(format!("unknown export {other}").into()),
        };
        let secs = started.elapsed().as_secs_f64();
        println!("| {export} | {n} | {secs:.1} | {:.0} |", n as f64 / secs);
    }
    println!("peak RSS {:.1} MiB", peak_rss_mib());
    Ok(())
}

//! Duplicate detection benchmark: a generated tenant of 100,000 contacts
//! with 2 % injected duplicates (typos, casing, phone formats, nicknames,
//! swapped names, other email domains; `conformance::DuplicateTenant`,
//! seeded), loaded through the bulk upsert into the in-memory store and
//! into PostgreSQL; on each, the precision and recall of
//! `quality::duplicate_candidates` at the default threshold and the time
//! of the whole scan (reading every contact and pairing them). Also the
//! precision and recall at other thresholds, from the same scan's pairs.
//!
//! Uses a database of its own, `crm_bench_duplicates`, dropped and
//! recreated at the start (set `CRM_BENCH_SERVER_URL` for another server).
//! `CRM_DUP_CONTACTS` sets the contact count, `CRM_DUP_SEED` the seed
//! (default 20261205).
//!
//! ```text
//! cargo bench --features postgres,conformance --bench duplicates
//! ```

use std::time::Instant;

use crm_core::{
    Context, DynStore, InMemoryStore, PostgresStore, TenantId,
    bulk::{ConflictPolicy, MAX_BATCH_SIZE},
    conformance::DuplicateTenant,
    quality::{DuplicateOptions, duplicate_candidates},
};
use tokio_postgres::NoTls;

const DB: &str = "crm_bench_duplicates";

async fn load(store: &DynStore, tenant: TenantId, data: &DuplicateTenant) -> crm_core::Result<()> {
    for batch in data.contacts.chunks(MAX_BATCH_SIZE) {
        let mut tx = store.begin(tenant, Context::system("bench")).await?;
        tx.upsert_contacts(batch, ConflictPolicy::Incoming).await?;
        tx.commit().await?;
    }
    Ok(())
}

async fn measure(name: &str, store: &DynStore, data: &DuplicateTenant) -> crm_core::Result<()> {
    let tenant = TenantId::new();
    let t = Instant::now();
    load(store, tenant, data).await?;
    println!(
        "{name}: loaded {} contacts in {:.1?}",
        data.contacts.len(),
        t.elapsed()
    );
    let mut times = Vec::new();
    let mut scan = None;
    for _ in 0..3 {
        let t = Instant::now();
        let s = duplicate_candidates(store, tenant, &DuplicateOptions::default()).await?;
        times.push(t.elapsed());
        scan = Some(s);
    }
    let scan = scan.expect("three scans ran");
    times.sort();
    let (precision, recall) = data.precision_recall(&scan);
    println!(
        "{name}: scan of {} contacts: median {:.2?} (min {:.2?}, max {:.2?}); {} comparisons, \
         {} oversized blocks; {} pairs at the default threshold {}: precision {precision:.4}, \
         recall {recall:.4}",
        scan.contacts_scanned(),
        times[1],
        times[0],
        times[2],
        scan.comparisons(),
        scan.oversized_blocks(),
        scan.len(),
        DuplicateOptions::default().threshold,
    );
    if name == "memory" {
        let low = duplicate_candidates(
            store,
            tenant,
            &DuplicateOptions::default().with_threshold(0.3),
        )
        .await?;
        for threshold in [0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99] {
            let kept: Vec<_> = low
                .pairs()
                .iter()
                .filter(|p| p.confidence >= threshold)
                .map(|p| (p.email_a.clone(), p.email_b.clone()))
                .collect();
            let truth: std::collections::HashSet<_> = data
                .duplicates
                .iter()
                .map(|(a, b)| sorted(a.normalized(), b.normalized()))
                .collect();
            let hits = kept
                .iter()
                .filter(|(a, b)| truth.contains(&sorted(a.normalized(), b.normalized())))
                .count();
            println!(
                "  threshold {threshold:.2}: {} pairs, precision {:.4}, recall {:.4}",
                kept.len(),
                hits as f64 / kept.len().max(1) as f64,
                hits as f64 / truth.len().max(1) as f64
            );
        }
    }
    Ok(())
}

fn sorted(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let contacts: usize = std::env::var("CRM_DUP_CONTACTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let seed: u64 = std::env::var("CRM_DUP_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_261_205);
    let t = Instant::now();
    let data = DuplicateTenant::generate(seed, contacts, 0.02);
    println!(
        "generated {} contacts, {} injected duplicates, seed {seed}, in {:.1?}",
        data.contacts.len(),
        data.duplicates.len(),
        t.elapsed()
    );

    let memory = InMemoryStore::new();
    measure("memory", &memory, &data).await?;

    if std::env::var("CRM_DUP_MEMORY_ONLY").is_ok_and(|v| v == "1") {
        return Ok(());
    }
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
    let store = PostgresStore::builder(&url).pool_size(4).build().await?;
    store.migrate().await?;
    measure("postgres", &store, &data).await?;
    drop(store);
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)"))
        .await?;
    Ok(())
}

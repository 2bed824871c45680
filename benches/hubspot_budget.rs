//! How long HubSpot's rate limits make a push and a pull, against the local
//! HubSpot-shaped server with 50 ms latency and HubSpot's budgets enforced
//! on both sides (100 requests per rolling 10 s; search 5 per second):
//!
//! 1. push 10,000 contacts, upserts in batches of 100 (goal: ≤ 11 s);
//! 2. pull 50,000 contacts, 20,000 of them sharing one last-modified time;
//! 3. the same pull with no budget and no latency: the client's own cost;
//! 4. the whole sync (`HubSpotSync`) over an in-memory store: a push of
//!    10,000 new contacts read from the change feed (goal: ≤ 11 s), then a
//!    pull of 50,000 HubSpot contacts into the store, under the same
//!    budgets (with `CRM_BENCH_SERVER_URL` and feature `postgres`, over a
//!    PostgreSQL database created on that server and dropped after).
//!
//! `cargo bench --bench hubspot_budget --features hubspot-fake`
//! (`-- push`, `-- pull`, `-- cost` or `-- sync` for one of them).

use std::time::{Duration, Instant};

use std::sync::Arc;

use crm_core::{
    Actor, Context, InMemoryStore, Store, TenantId,
    domain::{Email, NewContact, PersonName},
    hubspot::{
        AccessToken, HubSpotClient, HubSpotConfig, HubSpotConfigBuilder, HubSpotSync, ObjectType,
        UpsertInput,
        fake::{FakeConfig, FakeHubSpot, SeedRecord},
    },
};

const T0: i64 = 1_750_000_000_000;

fn config(fake: &FakeHubSpot) -> HubSpotConfigBuilder {
    HubSpotConfig::builder(AccessToken::new("pat-na1-bench")).base_url(fake.base_url())
}

/// 50,000 contacts, 20,000 of them modified at one time; `named`: with a
/// first and last name (what crm-core requires of a contact).
fn seed_50000(fake: &FakeHubSpot, named: bool, t0: i64) {
    let contact = |i: usize, modified_ms: i64| {
        let mut properties: std::collections::BTreeMap<String, String> =
            [("email".to_string(), format!("p{i}@example.com"))].into();
        if named {
            properties.insert("firstname".into(), "Grace".into());
            properties.insert("lastname".into(), format!("Hopper{i}"));
        }
        SeedRecord {
            properties,
            modified_ms,
        }
    };
    fake.seed(
        "contacts",
        (0..15_000).map(|i| contact(i, t0 - 15_000 + i as i64)),
    );
    fake.seed("contacts", (15_000..35_000).map(|i| contact(i, t0)));
    fake.seed(
        "contacts",
        (35_000..50_000).map(|i| contact(i, t0 + 1 + (i as i64 - 35_000) / 3)),
    );
}

async fn push() -> Result<(), Box<dyn std::error::Error>> {
    let fake = FakeHubSpot::start(FakeConfig {
        latency: Duration::from_millis(50),
        budget: Some(100),
        ..FakeConfig::default()
    })
    .await?;
    let client = HubSpotClient::new(config(&fake).build()?)?;
    let inputs: Vec<UpsertInput> = (0..10_000)
        .map(|i| UpsertInput::new(format!("push{i}@example.com")).with("firstname", "Ada"))
        .collect();
    let start = Instant::now();
    let outcome = client.upsert_contacts_by_email(&inputs).await?;
    let elapsed = start.elapsed();
    let c = fake.counters();
    assert!(outcome.all_written());
    println!(
        "push 10,000 contacts (100 per batch), 50 ms latency, 100 requests / 10 s: {:.2} s; \
         {} requests, {} answered 429, at most {} in one 10-s window",
        elapsed.as_secs_f64(),
        c.total,
        c.rate_limited,
        c.peak_in_window
    );
    Ok(())
}

async fn pull(budget: bool) -> Result<(), Box<dyn std::error::Error>> {
    let fake = FakeHubSpot::start(FakeConfig {
        latency: if budget {
            Duration::from_millis(50)
        } else {
            Duration::ZERO
        },
        budget: budget.then_some(100),
        search_per_second: budget.then_some(5),
        ..FakeConfig::default()
    })
    .await?;
    seed_50000(&fake, false, T0);
    let mut b = config(&fake);
    if !budget {
        b = b
            .requests_per_10s(1_000_000)
            .search_requests_per_second(1_000_000);
    }
    let client = HubSpotClient::new(b.build()?)?;
    let start = Instant::now();
    let window_start = chrono::DateTime::from_timestamp_millis(T0 - 10_000).ok_or("time")?;
    let (records, _window) = client
        .pull_modified_since(ObjectType::Contacts, window_start, &["email"])
        .collect_all()
        .await?;
    let elapsed = start.elapsed();
    let c = fake.counters();
    assert_eq!(records.len(), 50_000);
    let how = if budget {
        "50 ms latency, 100 requests / 10 s, search 5 / s"
    } else {
        "no latency, no budget"
    };
    println!(
        "pull 50,000 contacts (20,000 with one last-modified time), {how}: {:.2} s; \
         {} searches, {} answered 429",
        elapsed.as_secs_f64(),
        c.total,
        c.rate_limited
    );
    Ok(())
}

/// The store the sync bench runs over: in memory, or, with
/// `CRM_BENCH_SERVER_URL` set and feature `postgres`, a fresh database on
/// that server (dropped afterwards).
async fn sync() -> Result<(), Box<dyn std::error::Error>> {
    #[cfg(feature = "postgres")]
    if let Ok(server) = std::env::var("CRM_BENCH_SERVER_URL") {
        let name = format!("crm_bench_hubspot_{}", uuid::Uuid::now_v7().simple());
        let (admin, conn) = tokio_postgres::connect(&server, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await?;
        let mut config: tokio_postgres::Config = server.parse()?;
        config.dbname(&name);
        let url = format!(
            "host=127.0.0.1 port={} user={} dbname={name} sslmode=disable",
            config.get_ports().first().copied().unwrap_or(5432),
            config.get_user().unwrap_or("postgres")
        );
        let result = async {
            let store = crm_core::PostgresStore::connect(&url).await?;
            store.migrate().await?;
            sync_over(Arc::new(store), "PostgreSQL").await
        }
        .await;
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await?;
        return result;
    }
    sync_over(Arc::new(InMemoryStore::new()), "in-memory store").await
}

async fn sync_over(store: Arc<dyn Store>, label: &str) -> Result<(), Box<dyn std::error::Error>> {
    let fake = FakeHubSpot::start(FakeConfig {
        latency: Duration::from_millis(50),
        budget: Some(100),
        search_per_second: Some(5),
        ..FakeConfig::default()
    })
    .await?;
    let tenant = TenantId::new();
    let mut tx = store
        .begin(tenant, Context::new(Actor::parse("bench:hubspot")?))
        .await?;
    let rows: Vec<NewContact> = (0..10_000)
        .map(|i| {
            NewContact::new(
                Email::parse(&format!("sync{i}@example.com")).expect("email"),
                PersonName::parse("Ada").expect("name"),
                PersonName::parse("Lovelace").expect("name"),
            )
        })
        .collect();
    tx.upsert_contacts(&rows, Default::default()).await?;
    tx.commit().await?;
    let client = HubSpotClient::new(config(&fake).build()?)?;
    let sync = HubSpotSync::new(client, Arc::clone(&store), tenant);
    let start = Instant::now();
    let pushed = sync.push().await?;
    let elapsed = start.elapsed();
    let c = fake.counters();
    assert_eq!(pushed.pushed, 10_000);
    println!(
        "sync push of 10,000 contacts from the change feed ({label}), 50 ms latency, \
         100 requests / 10 s: {:.2} s; {} requests, {} answered 429",
        elapsed.as_secs_f64(),
        c.total,
        c.rate_limited
    );
    // Changed on HubSpot's side after the push.
    seed_50000(&fake, true, chrono::Utc::now().timestamp_millis() + 60_000);
    let start = Instant::now();
    let pulled = sync.pull().await?;
    let elapsed = start.elapsed();
    let c2 = fake.counters();
    println!(
        "sync pull of 60,000 contacts into {label} (50,000 seeded, 10,000 pushed before), \
         same budgets and search 5 / s: {:.2} s; {} written, {} unchanged, {} searches, {} answered 429",
        elapsed.as_secs_f64(),
        pulled.pulled,
        pulled.unchanged,
        c2.total - c.total,
        c2.rate_limited
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let run = |name: &str| which.is_empty() || which.iter().any(|w| w == name);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        if run("push") {
            push().await?;
        }
        if run("pull") {
            pull(true).await?;
        }
        if run("cost") {
            pull(false).await?;
        }
        if run("sync") {
            sync().await?;
        }
        Ok(())
    })
}

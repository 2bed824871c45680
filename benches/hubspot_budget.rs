//! How long HubSpot's rate limits make a push and a pull, against the local
//! HubSpot-shaped server with 50 ms latency and HubSpot's budgets enforced
//! on both sides (100 requests per rolling 10 s; search 5 per second):
//!
//! 1. push 10,000 contacts, upserts in batches of 100 (goal: ≤ 11 s);
//! 2. pull 50,000 contacts, 20,000 of them sharing one last-modified time;
//! 3. the same pull with no budget and no latency: the client's own cost.
//!
//! `cargo bench --bench hubspot_budget --features hubspot-fake`
//! (`-- push`, `-- pull` or `-- cost` for one of them).

use std::time::{Duration, Instant};

use crm_core::hubspot::{
    AccessToken, HubSpotClient, HubSpotConfig, HubSpotConfigBuilder, ObjectType, UpsertInput,
    fake::{FakeConfig, FakeHubSpot, SeedRecord},
};

const T0: i64 = 1_750_000_000_000;

fn config(fake: &FakeHubSpot) -> HubSpotConfigBuilder {
    HubSpotConfig::builder(AccessToken::new("pat-na1-bench")).base_url(fake.base_url())
}

fn seed_50000(fake: &FakeHubSpot) {
    let contact = |i: usize, modified_ms: i64| SeedRecord {
        properties: [("email".to_string(), format!("p{i}@example.com"))].into(),
        modified_ms,
    };
    fake.seed(
        "contacts",
        (0..15_000).map(|i| contact(i, T0 - 15_000 + i as i64)),
    );
    fake.seed("contacts", (15_000..35_000).map(|i| contact(i, T0)));
    fake.seed(
        "contacts",
        (35_000..50_000).map(|i| contact(i, T0 + 1 + (i as i64 - 35_000) / 3)),
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
    seed_50000(&fake);
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
        Ok(())
    })
}

//! Syncing a tenant with HubSpot: push what changed in crm-core, pull what
//! changed in HubSpot, and run both again to see that nothing moves twice.
//!
//! ```text
//! cargo run --example hubspot_sync --features hubspot-fake
//! ```
//!
//! Offline by default: a HubSpot-shaped server starts inside the example
//! (`crm_core::hubspot::fake`), with 50 ms of latency and HubSpot's free
//! budget of 100 requests per 10 seconds. With `HUBSPOT_BASE_URL` and
//! `HUBSPOT_TOKEN` set it syncs against that server instead — a sandbox
//! portal (`https://api.hubapi.com` and a private app's token, with the
//! deal property `crm_core_id` created first: see the README) or another
//! HubSpot-compatible test server.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use crm_core::{
    Actor, Context, InMemoryStore, Store, TenantId,
    domain::{Currency, DealTitle, Email, JobTitle, Money, NewContact, NewDeal, PersonName},
    hubspot::{
        AccessToken, HubSpotClient, HubSpotConfig, HubSpotSync, SyncReport,
        fake::{FakeConfig, FakeHubSpot, SeedRecord},
    },
};

const CONTACTS: usize = 300;
const DEALS: usize = 40;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let real = std::env::var("HUBSPOT_BASE_URL").is_ok() && std::env::var("HUBSPOT_TOKEN").is_ok();
    let (config, fake) = if real {
        println!("Syncing with {}", std::env::var("HUBSPOT_BASE_URL")?);
        (HubSpotConfig::from_env()?, None)
    } else {
        let fake = FakeHubSpot::start(FakeConfig {
            latency: Duration::from_millis(50),
            token: Some("pat-na1-example-token".into()),
            ..FakeConfig::default()
        })
        .await?;
        println!(
            "Syncing with a HubSpot-shaped server at {} (50 ms latency, 100 requests / 10 s)",
            fake.base_url()
        );
        let config = HubSpotConfig::builder(AccessToken::new("pat-na1-example-token"))
            .base_url(fake.base_url())
            .build()?;
        (config, Some(fake))
    };
    let client = HubSpotClient::new(config)?;

    // A tenant with contacts and deals, as a host application writes them.
    let store: Arc<dyn Store> = Arc::new(InMemoryStore::new());
    let tenant = TenantId::new();
    let run = uuid::Uuid::now_v7().simple().to_string();
    let mut tx = store
        .begin(tenant, Context::new(Actor::parse("user:example")?))
        .await?;
    for i in 0..CONTACTS {
        let mut c = NewContact::new(
            Email::parse(&format!("buyer{i}.{}@example.com", &run[..8]))?,
            PersonName::parse("Ada")?,
            PersonName::parse(&format!("Buyer{i}"))?,
        );
        c.title = Some(JobTitle::parse("Head of Operations")?);
        let c = tx.create_contact(c).await?;
        if i < DEALS {
            tx.create_deal(NewDeal::new(
                c.id,
                DealTitle::parse(&format!("Annual plan #{i}"))?,
                Money::new(
                    rust_decimal::Decimal::new(990_000, 2),
                    Currency::parse("EUR")?,
                )?,
            ))
            .await?;
        }
    }
    tx.commit().await?;
    println!("crm-core holds {CONTACTS} contacts and {DEALS} deals.\n");

    let sync = HubSpotSync::new(client, Arc::clone(&store), tenant);
    let started = std::time::Instant::now();
    let pushed = sync.push().await?;
    print("push", &pushed, started.elapsed());

    if let Some(fake) = &fake {
        // Meanwhile, someone edits HubSpot.
        let now = chrono::Utc::now().timestamp_millis();
        fake.seed(
            "contacts",
            (0..25).map(|i| SeedRecord {
                properties: BTreeMap::from([
                    ("email".into(), format!("lead{i}@hubspot-side.example")),
                    ("firstname".into(), "Grace".into()),
                    ("lastname".into(), format!("Lead{i}")),
                ]),
                modified_ms: now + 1_000,
            }),
        );
        println!("(25 contacts were added on the HubSpot side)");
    }
    let started = std::time::Instant::now();
    let pulled = sync.pull().await?;
    print("pull", &pulled, started.elapsed());

    println!("\nRunning both again, with nothing changed:");
    let started = std::time::Instant::now();
    print("push", &sync.push().await?, started.elapsed());
    let started = std::time::Instant::now();
    print("pull", &sync.pull().await?, started.elapsed());
    if let Some(fake) = fake {
        println!(
            "\nThe server answered {} requests, {} of them 429.",
            fake.counters().total,
            fake.counters().rate_limited
        );
    }
    Ok(())
}

fn print(what: &str, r: &SyncReport, took: Duration) {
    println!(
        "  {what}: {} read, {} sent to HubSpot, {} written into crm-core, {} unchanged, {} failed ({:.1} s)",
        r.read,
        r.pushed,
        r.pulled,
        r.unchanged,
        r.failed.len(),
        took.as_secs_f64()
    );
    for f in &r.failed {
        println!(
            "    {} {:?}: {}",
            f.kind,
            f.record.unwrap_or_default(),
            f.reason
        );
    }
}

//! The change feed, live: two writer tasks change contacts and deals while
//! a subscriber prints each event as it arrives, in commit order.
//!
//! ```text
//! cargo run --example feed                       # in memory
//! cargo run --features postgres --example feed -- postgres://postgres@127.0.0.1:5432/crm
//! ```
//!
//! With a connection string, the store's schema (`crm`) is migrated first
//! and the subscriber is woken by PostgreSQL's LISTEN/NOTIFY.

use std::{sync::Arc, time::Duration};

use crm_core::{
    Actor, Context, DynStore, InMemoryStore, StoreExt, TenantId,
    domain::{
        ActivityKind, ConsumerName, ContactPatch, Currency, DealTitle, Email, JobTitle, Money,
        NewActivity, NewContact, NewDeal, PersonName,
    },
    feed::{SubscribeOptions, WakeUps, subscribe},
};
use futures_util::StreamExt;

type Res<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// One writer: creates a contact, gives it a deal, logs a call and
/// changes its title, each step a transaction of its own.
async fn write(store: Arc<DynStore>, tenant: TenantId, who: &str, n: usize) -> Res {
    let ctx = Context::new(Actor::parse(&format!("user:{who}"))?);
    let crm = store.scope(tenant, &ctx);
    for i in 0..n {
        let c = crm
            .create_contact(NewContact::new(
                Email::parse(&format!("{who}{i}@example.com"))?,
                PersonName::parse("Grace")?,
                PersonName::parse(&format!("Writer{i}"))?,
            ))
            .await?;
        crm.create_deal(NewDeal::new(
            c.id,
            DealTitle::parse("Licences")?,
            Money::parse("1200", Currency::parse("EUR")?)?,
        ))
        .await?;
        crm.log_activity(NewActivity::new(c.id, ActivityKind::Call))
            .await?;
        let patch = ContactPatch {
            title: Some(Some(JobTitle::parse("Admiral")?)),
            ..ContactPatch::default()
        };
        crm.update_contact(c.id, c.version, patch).await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Res {
    let tenant = TenantId::new();
    let (store, wake_ups): (Arc<DynStore>, WakeUps) = match std::env::args().nth(1) {
        #[cfg(feature = "postgres")]
        Some(url) => {
            let pg = crm_core::PostgresStore::connect(&url).await?;
            pg.migrate().await?;
            let wake = pg.feed_wake_ups(tenant);
            (Arc::new(pg), wake)
        }
        #[cfg(not(feature = "postgres"))]
        Some(_) => return Err("build with --features postgres to use PostgreSQL".into()),
        None => {
            let memory = InMemoryStore::new();
            let wake = memory.feed_wake_ups();
            (Arc::new(memory), wake)
        }
    };

    let writers = [
        tokio::spawn(write(Arc::clone(&store), tenant, "ada", 3)),
        tokio::spawn(write(Arc::clone(&store), tenant, "alan", 3)),
    ];
    // 2 writers × 3 contacts × 4 changes.
    let expected = 2 * 3 * 4;
    let mut events = Box::pin(subscribe(
        Arc::clone(&store),
        tenant,
        Context::new(Actor::parse("service:dashboard")?),
        ConsumerName::parse("dashboard")?,
        wake_ups,
        SubscribeOptions::default(),
    ));
    println!(
        "position  committed at                  record    operation  version  by         changed"
    );
    for _ in 0..expected {
        let Some(event) = events.next().await else {
            break;
        };
        let e = event?;
        let changed: Vec<&str> = e
            .diff
            .as_ref()
            .map(|d| d.keys().map(String::as_str).collect())
            .unwrap_or_default();
        println!(
            "{:<9} {:<29} {:<9} {:<10} {:<8} {:<10} {}",
            e.position.to_string(),
            e.committed_at.to_rfc3339(),
            e.kind.to_string(),
            e.operation.to_string(),
            e.version.map_or("-".to_string(), |v| v.to_string()),
            e.actor.trim_start_matches("user:"),
            changed.join(", ")
        );
    }
    for w in writers {
        w.await??;
    }
    Ok(())
}

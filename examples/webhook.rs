//! A webhook endpoint under an at-least-once provider: every event arrives
//! one to four times, out of order and concurrently, and the idempotency
//! guard makes each one take effect exactly once.
//!
//! Events create contacts and deals. A deal's event may arrive before its
//! contact's: the handler fails transiently, nothing is kept, and the
//! provider's retry succeeds later. A malformed event fails permanently,
//! and its duplicates replay that failure.
//!
//! `cargo run --example webhook` (in memory, runs anywhere).

use std::{
    collections::VecDeque,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use crm_core::{
    Actor, ContactQuery, Context, InMemoryStore, Store, StoreExt, TenantId, Transaction,
    domain::{Currency, DealTitle, Email, Money, NewContact, NewDeal, PersonName, PipelineKey},
    idempotency::{Execution, HandlerError, HandlerFuture, IdempotencyGuard, InboundEvent},
};
use serde_json::{Value, json};

/// What the provider sends.
fn events() -> Vec<Value> {
    let mut out = Vec::new();
    for i in 0..10 {
        out.push(json!({
            "id": format!("evt_c{i}"),
            "type": "contact.created",
            "email": format!("buyer{i}@example.com"),
            "first_name": "Buyer",
            "last_name": format!("No{i}"),
        }));
        out.push(json!({
            "id": format!("evt_d{i}"),
            "type": "deal.created",
            "email": format!("buyer{i}@example.com"),
            "title": format!("Licence {i}"),
            "amount": format!("{}.00", 1000 + 250 * i),
            "currency": "EUR",
        }));
    }
    out.push(json!({"id": "evt_bad", "type": "deal.created", "title": "no contact"}));
    out
}

/// The host's handler: one event, one transaction (the guard's).
async fn handle(tx: &mut dyn Transaction, event: Value) -> Result<String, HandlerError> {
    let text = |k: &str| event[k].as_str().unwrap_or_default().to_string();
    match text("type").as_str() {
        "contact.created" => {
            let contact = tx
                .create_contact(NewContact::new(
                    Email::parse(&text("email"))?,
                    PersonName::parse(&text("first_name"))?,
                    PersonName::parse(&text("last_name"))?,
                ))
                .await?;
            Ok(format!("contact {}", contact.id))
        }
        "deal.created" => {
            let Ok(email) = Email::parse(&text("email")) else {
                return Err(HandlerError::permanent(json!({"error": "no valid email"})));
            };
            let Some(contact) = tx.get_contact_by_email(&email).await? else {
                // Its contact's event has not arrived yet: try again later.
                return Err(HandlerError::transient(std::io::Error::other(
                    "contact not known yet",
                )));
            };
            let amount = Money::parse(&text("amount"), Currency::parse("EUR")?)?;
            let deal = tx
                .create_deal(NewDeal::new(
                    contact.id,
                    DealTitle::parse(&text("title"))?,
                    amount,
                ))
                .await?;
            Ok(format!("deal {}", deal.id))
        }
        other => Err(HandlerError::permanent(
            json!({"error": format!("unknown type {other}")}),
        )),
    }
}

/// A deterministic shuffle (xorshift), so that every run tells the same story.
fn shuffle<T>(items: &mut [T], mut seed: u64) {
    for i in (1..items.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        items.swap(i, (seed % (i as u64 + 1)) as usize);
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store: Arc<dyn Store> = Arc::new(InMemoryStore::new());
    let guard = IdempotencyGuard::new();
    let tenant = TenantId::new();
    let ctx = Context::new(Actor::parse("webhook:crm-provider")?);

    // Every event is delivered 1 to 4 times, all shuffled together.
    let mut deliveries: Vec<Value> = Vec::new();
    for (i, e) in events().into_iter().enumerate() {
        for _ in 0..=((i * 7 + 3) % 4) {
            deliveries.push(e.clone());
        }
    }
    shuffle(&mut deliveries, 0x5eed_cafe);
    let total = deliveries.len();

    let (executed, replayed, failed_permanently, retried) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let mut queue: VecDeque<Value> = deliveries.into();
    while !queue.is_empty() {
        // A burst of concurrent deliveries; transient failures go back to
        // the provider's queue.
        let burst: Vec<Value> = queue.drain(..queue.len().min(16)).collect();
        let mut tasks = Vec::new();
        for payload in burst {
            let (store, guard, ctx) = (Arc::clone(&store), guard.clone(), ctx.clone());
            let counters = (
                Arc::clone(&executed),
                Arc::clone(&replayed),
                Arc::clone(&failed_permanently),
            );
            tasks.push(tokio::spawn(async move {
                let key = payload["id"].as_str().unwrap_or("missing").to_string();
                let event = InboundEvent::new("crm-provider", &key, &payload)?;
                let body = payload.clone();
                let outcome = guard
                    .run(&*store, tenant, &ctx, &event, move |tx| {
                        Box::pin(handle(tx, body)) as HandlerFuture<'_, String>
                    })
                    .await;
                match &outcome {
                    Ok(o) if o.execution == Execution::Executed => {
                        counters.0.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {
                        counters.1.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {}
                }
                if let Ok(o) = &outcome
                    && o.result.is_err()
                {
                    counters.2.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, crm_core::Error>((payload, outcome.is_err()))
            }));
        }
        for t in tasks {
            let (payload, transient) = t.await??;
            if transient {
                retried.fetch_add(1, Ordering::Relaxed);
                queue.push_back(payload);
            }
        }
    }

    let crm = store.scope(tenant, &ctx);
    let contacts = crm
        .search_contacts(&ContactQuery::new().with_page(crm_core::PageRequest::first(100)))
        .await?
        .items;
    let pipeline = crm
        .pipeline_summary(&PipelineKey::default_pipeline())
        .await?;
    let deals: u64 = pipeline
        .stages
        .iter()
        .flat_map(|s| &s.totals)
        .map(|t| t.count)
        .sum();
    println!("deliveries:            {total} (21 distinct events)");
    println!(
        "executed:              {}",
        executed.load(Ordering::Relaxed)
    );
    println!(
        "replayed:              {}",
        replayed.load(Ordering::Relaxed)
    );
    println!(
        "permanent failures:    {} (one stored, replayed to its duplicates)",
        failed_permanently.load(Ordering::Relaxed)
    );
    println!(
        "transient, redelivered: {}",
        retried.load(Ordering::Relaxed)
    );
    println!("contacts:              {}", contacts.len());
    println!("deals:                 {deals}");
    for t in pipeline.open_totals() {
        println!(
            "open pipeline:         {} {} in {} deals",
            t.sum,
            t.currency.code(),
            t.count
        );
    }
    assert_eq!(contacts.len(), 10, "each contact once");
    assert_eq!(deals, 10, "each deal once");
    assert_eq!(
        executed.load(Ordering::Relaxed),
        21,
        "each event executed once"
    );
    Ok(())
}

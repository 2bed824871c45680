//! Lead scoring end to end: generate a tenant, rescore it, print the top
//! leads with their explanations, then record a demo request and watch the
//! contact's live score and rank change at once.
//!
//! ```text
//! cargo run --example scoring                       # in memory, 2,000 contacts
//! cargo run --example scoring -- --contacts 500
//! cargo run --features postgres --example scoring -- --postgres postgres://postgres@127.0.0.1:5432/test
//! ```
//!
//! With `--postgres URL` the database is migrated and a new tenant is
//! written to it.

use std::sync::Arc;

use chrono::{Duration, Utc};
use crm_core::{
    Context, DynStore, InMemoryStore, TenantId,
    domain::{ActivityKind, ContactId, Email, NewActivity, NewContact, NewDeal, NewSignal},
    domain::{Currency, DealTitle, Money, PersonName, SignalKind},
    scoring::{RescoreOptions, ScoringModel, explain, live_score, live_top_leads, rescore},
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}

async fn open_store(args: &[String]) -> Result<Arc<DynStore>, BoxError> {
    if let Some(i) = args.iter().position(|a| a == "--postgres") {
        let url = args.get(i + 1).ok_or("--postgres needs a URL")?;
        #[cfg(feature = "postgres")]
        {
            let store = crm_core::PostgresStore::connect(url).await?;
            store.migrate().await?;
            println!("PostgreSQL at {url}");
            return Ok(Arc::new(store));
        }
        #[cfg(not(feature = "postgres"))]
        return Err(format!("--postgres {url}: build with --features postgres").into());
    }
    println!("in memory");
    Ok(Arc::new(InMemoryStore::new()))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let contacts: usize = match args.iter().position(|a| a == "--contacts") {
        Some(i) => args
            .get(i + 1)
            .ok_or("--contacts needs a number")?
            .parse()?,
        None => 2_000,
    };
    let store = open_store(&args).await?;
    let tenant = TenantId::new();
    let ctx = Context::system("scoring-example");
    let model = ScoringModel::default();
    let now = Utc::now();
    let mut rng = Rng(42);

    // A tenant: contacts with activities and signals over the last 80 days.
    let signal_kinds = [
        SignalKind::EMAIL_OPEN,
        SignalKind::EMAIL_CLICK,
        SignalKind::PAGE_VIEW,
        SignalKind::PRICING_PAGE_VIEW,
    ];
    let mut ids: Vec<ContactId> = Vec::with_capacity(contacts);
    let mut tx = store.begin(tenant, ctx.clone()).await?;
    for i in 0..contacts {
        let c = tx
            .create_contact(NewContact::new(
                Email::parse(&format!("lead{i}@example.com"))?,
                PersonName::parse("Lead")?,
                PersonName::parse(&format!("Number {i}"))?,
            ))
            .await?;
        for _ in 0..rng.below(8) {
            let at = now - Duration::hours(rng.below(80 * 24) as i64);
            let kind = ActivityKind::ALL[rng.below(5) as usize];
            tx.log_activity(NewActivity::new(c.id, kind).occurred_at(at))
                .await?;
        }
        for _ in 0..rng.below(6) {
            let at = now - Duration::hours(rng.below(80 * 24) as i64);
            let kind = signal_kinds[rng.below(4) as usize].clone();
            tx.record_signal(NewSignal::new(c.id, kind).occurred_at(at))
                .await?;
        }
        if rng.below(20) == 0 {
            tx.create_deal(NewDeal::new(
                c.id,
                DealTitle::parse("Pilot")?,
                Money::parse("12000", Currency::parse("EUR")?)?,
            ))
            .await?;
        }
        ids.push(c.id);
    }
    tx.commit().await?;
    println!("generated {contacts} contacts");

    // The batch: score everyone, write what changed.
    let report = rescore(
        &*store,
        tenant,
        ctx.clone(),
        &model,
        &RescoreOptions::new().with_now(now).with_top(5),
    )
    .await?;
    println!(
        "rescored: scanned {}, changed {}, unchanged {}; per 10 points: {:?}",
        report.scanned, report.changed, report.unchanged, report.distribution
    );
    println!("top leads:");
    for lead in &report.top {
        let why: Vec<String> = lead
            .scored
            .top_signals
            .iter()
            .map(|c| format!("{} {:.1}", c.kind, c.contribution))
            .collect();
        println!(
            "  {} score {:>3}  ({})",
            lead.contact,
            lead.scored.score.get(),
            why.join(", ")
        );
    }

    // The live side: a demo request lifts a contact at once, no batch needed.
    let mut tx = store.begin(tenant, ctx.clone()).await?;
    let leads = live_top_leads(&mut *tx, &model, 1000, now).await?;
    let target = leads
        .get(leads.len() / 2)
        .map(|l| l.contact.id)
        .unwrap_or(ids[0]);
    let rank = |leads: &[crm_core::scoring::LiveLead]| {
        leads
            .iter()
            .position(|l| l.contact.id == target)
            .map_or("not ranked".to_string(), |p| format!("#{}", p + 1))
    };
    let before = live_score(&mut *tx, &model, target, now)
        .await?
        .ok_or("exists")?;
    println!(
        "\n{target}: live score {} ({} of {} live leads)",
        before.get(),
        rank(&leads),
        leads.len()
    );
    tx.record_signal(NewSignal::new(target, SignalKind::DEMO_REQUEST).occurred_at(now))
        .await?;
    tx.log_activity(NewActivity::new(target, ActivityKind::Meeting).occurred_at(now))
        .await?;
    tx.commit().await?;

    let mut tx = store.begin(tenant, ctx).await?;
    let leads = live_top_leads(&mut *tx, &model, 1000, now).await?;
    let after = live_score(&mut *tx, &model, target, now)
        .await?
        .ok_or("exists")?;
    println!(
        "after a demo request and a meeting: live score {} ({})",
        after.get(),
        rank(&leads)
    );
    let e = explain(&mut *tx, &model, target, Some(now))
        .await?
        .ok_or("exists")?;
    tx.commit().await?;
    println!(
        "explain: live {} (state consistent: {}), batch would store {} (stored {}), top signals:",
        e.live_score.get(),
        e.live_consistent(),
        e.batch.score.get(),
        e.stored_score.get()
    );
    for c in &e.batch.top_signals {
        println!(
            "  {:<18} weight {:>4} × decay {:.3} = {:.2}",
            c.kind.as_str(),
            c.base_weight,
            c.decay_factor,
            c.contribution
        );
    }
    Ok(())
}

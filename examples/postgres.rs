//! A short tour of crm-core on PostgreSQL: migrate, contacts, activities,
//! a deal taken to won, a duplicate email refused, the pipeline summary.
//!
//! ```text
//! cargo run --features postgres --example postgres -- postgres://postgres@127.0.0.1:5432/postgres
//! ```
//!
//! The database URL comes from the first argument, else `DATABASE_URL`,
//! else the local server. The tour works in a new random tenant, so it can
//! run any number of times against the same database.

use chrono::{Duration, Utc};
use crm_core::{
    Actor, ContactQuery, Context, Error, PostgresStore, StoreExt, TenantId,
    domain::{
        ActivityKind, Currency, DealTitle, Direction, Email, Money, NewActivity, NewContact,
        NewDeal, PersonName, PipelineKey, StageKey, Subject,
    },
};

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn heading(title: &str) {
    println!(
        "\n== {title} {}",
        "=".repeat(70usize.saturating_sub(title.len()))
    );
}

#[tokio::main]
async fn main() -> Res {
    let url = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("DATABASE_URL").ok())
        .unwrap_or_else(|| DEFAULT_URL.to_string());

    heading("1. Connect and migrate");
    let store = PostgresStore::builder(&url).pool_size(4).build().await?;
    let applied = store.migrate().await?;
    println!("connected; migrations applied now: {applied:?} (empty: already up to date)");

    let tenant = TenantId::new();
    let ctx = Context::new(Actor::parse("user:ada")?)
        .with_reason("postgres tour")?
        .with_request_id("tour-1")?;
    println!("working in tenant {tenant}");
    // The store seen by that tenant, acting as `ctx`: each call is a
    // transaction of its own.
    let crm = store.scope(tenant, &ctx);

    heading("2. Contacts");
    let people = [
        ("Grace.Hopper@Example.com", "Grace", "Hopper"),
        ("alan@acme-labs.io", "Alan", "Turing"),
    ];
    let mut contacts = Vec::new();
    for (email, first, last) in people {
        let c = crm
            .create_contact(NewContact::new(
                Email::parse(email)?,
                PersonName::parse(first)?,
                PersonName::parse(last)?,
            ))
            .await?;
        println!(
            "created {} {} <{}> version={}",
            c.first_name, c.last_name, c.email, c.version
        );
        contacts.push(c);
    }
    let grace = contacts[0].clone();

    heading("3. Activities");
    let now = Utc::now();
    for (kind, subject, days_ago) in [
        (ActivityKind::Email, "Asked for pricing", 5),
        (ActivityKind::Call, "Discovery call", 2),
    ] {
        crm.log_activity(
            NewActivity::new(grace.id, kind)
                .direction(Direction::Inbound)
                .subject(Subject::parse(subject)?)
                .occurred_at(now - Duration::days(days_ago)),
        )
        .await?;
    }
    let timeline = crm.timeline(grace.id, &Default::default()).await?;
    for a in &timeline.items {
        println!(
            "  {}  {:<6} {}",
            a.occurred_at.format("%Y-%m-%d"),
            a.kind.as_str(),
            a.subject.as_ref().map_or("", |s| s.as_str())
        );
    }

    heading("4. A deal to won");
    let mut deal = crm
        .create_deal(NewDeal::new(
            grace.id,
            DealTitle::parse("Acme: 250 seats")?,
            Money::parse("48000.00", Currency::parse("EUR")?)?,
        ))
        .await?;
    println!("created in {} (version {})", deal.stage, deal.version);
    for stage in [StageKey::PROPOSAL, StageKey::NEGOTIATION] {
        deal = crm.move_deal(deal.id, deal.version, stage).await?;
        println!("moved to {} (version {})", deal.stage, deal.version);
    }
    deal = crm.win_deal(deal.id, deal.version).await?;
    println!(
        "won in {} (version {}) at {:?}",
        deal.stage, deal.version, deal.won_at
    );
    // A second deal stays open, so the summary has something in progress.
    crm.create_deal(NewDeal::new(
        contacts[1].id,
        DealTitle::parse("Acme Labs pilot")?,
        Money::parse("1200", Currency::parse("USD")?)?,
    ))
    .await?;

    heading("5. A duplicate email is refused");
    let again = NewContact::new(
        Email::parse("grace.hopper@EXAMPLE.com")?,
        PersonName::parse("G")?,
        PersonName::parse("H")?,
    );
    match crm.create_contact(again).await {
        Err(Error::DuplicateEmail { email, existing_id }) => {
            println!(
                "refused {email}: held by {existing_id} (is Grace: {})",
                existing_id == grace.id
            )
        }
        other => println!("unexpected: {other:?}"),
    }

    heading("6. Pipeline summary");
    let summary = crm
        .pipeline_summary(&PipelineKey::default_pipeline())
        .await?;
    for s in &summary.stages {
        let totals: Vec<String> = s
            .totals
            .iter()
            .map(|t| {
                format!(
                    "{} × {} {} (weighted {})",
                    t.count, t.sum, t.currency, t.weighted
                )
            })
            .collect();
        println!(
            "  {:<12} {:>3} %  {}",
            s.stage.as_str(),
            s.win_probability,
            totals.join(", ")
        );
    }

    heading("7. Top leads");
    let page = crm.search_contacts(&ContactQuery::top_leads(5)).await?;
    for c in &page.items {
        println!("  {:>3}  {} {}", c.score, c.first_name, c.last_name);
    }

    // Cleaning up: deleting the contacts deletes their deals and activities.
    let mut tx = crm.begin().await?;
    for c in &contacts {
        tx.delete_contact(c.id).await?;
    }
    tx.commit().await?;
    println!("\ncleaned up tenant {tenant}");
    Ok(())
}

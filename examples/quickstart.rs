//! A guided tour of crm-core on the in-memory store.
//!
//! Run it with `cargo run --example quickstart`. Every step prints a heading
//! and what happened; the same code runs unchanged on `PostgresStore`.

use chrono::{Duration, Utc};
use crm_core::{
    Actor, ContactQuery, ContactSort, Context, Error, InMemoryStore, PageRequest, StoreExt,
    TagFilter, TenantId,
    domain::{
        ActivityKind, CompanyDomain, CompanyName, Contact, ContactPatch, Direction, LostReason,
        NewActivity, NewCompany, NewContact, NewContactDto, NewDeal, NewDealDto, NewTag, NewTask,
        OwnerId, PipelineKey, RecordRef, StageKey, Subject, TagName, TaskTitle,
    },
};

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn heading(title: &str) {
    println!(
        "\n== {title} {}",
        "=".repeat(70usize.saturating_sub(title.len()))
    );
}

fn name(c: &Contact) -> String {
    format!("{} {}", c.first_name, c.last_name)
}

#[tokio::main]
async fn main() -> Res {
    // A store, the tenant whose data we work on, and who is acting (every
    // change is attributed to an actor, with an optional reason). The
    // scoped handle `crm` is the store seen by that tenant and actor: what
    // host code holds while it serves one request. Each of its calls is a
    // transaction of its own.
    let store = InMemoryStore::new();
    let tenant = TenantId::new();
    let ctx = Context::new(Actor::parse("user:ada")?).with_reason("quickstart tour")?;
    let crm = store.scope(tenant, &ctx);

    heading("1. Contacts from JSON");
    // Inbound JSON goes through a DTO (unknown fields are refused) and
    // `NewContact::try_from`, which validates every field.
    let inputs = [
        r#"{"email": "Grace.Hopper@Example.com", "first_name": "Grace", "last_name": "Hopper",
            "company": "Acme Computing", "title": "Rear Admiral", "lead_source": "referral",
            "metadata": {"plan": "enterprise", "seats": 250}}"#,
        r#"{"email": "alan@acme-labs.io", "first_name": "Alan", "last_name": "Turing",
            "company": "Acme Labs", "phone": "+44 20 7946 0958"}"#,
        r#"{"email": "katherine@nasa.example.org", "first_name": "Katherine", "last_name": "Johnson",
            "company": "Langley", "lead_source": "partner"}"#,
    ];
    let mut contacts = Vec::new();
    for json in inputs {
        let dto: NewContactDto = serde_json::from_str(json)?;
        let contact = crm.create_contact(NewContact::try_from(dto)?).await?;
        println!(
            "created {:<18} {:<30} company={:<15} source={:<8} version={}",
            name(&contact),
            format!("<{}>", contact.email),
            contact.company.as_ref().map_or("-", |c| c.as_str()),
            contact.lead_source.as_str(),
            contact.version,
        );
        contacts.push(contact);
    }
    let grace = contacts[0].clone();

    heading("2. Activities and the timeline");
    let now = Utc::now();
    let activities = [
        (
            ActivityKind::Email,
            Direction::Inbound,
            "Asked for pricing",
            9,
        ),
        (ActivityKind::Call, Direction::Outbound, "Discovery call", 6),
        (
            ActivityKind::Meeting,
            Direction::Outbound,
            "Demo with the team",
            2,
        ),
    ];
    for (kind, direction, subject, days_ago) in activities {
        crm.log_activity(
            NewActivity::new(grace.id, kind)
                .direction(direction)
                .subject(Subject::parse(subject)?)
                .occurred_at(now - Duration::days(days_ago)),
        )
        .await?;
    }
    let timeline = crm.timeline(grace.id, &PageRequest::first(10)).await?;
    println!("timeline of {}, newest first:", name(&grace));
    for a in &timeline.items {
        println!(
            "  {}  {:<8} {:<9} {}",
            a.occurred_at.format("%Y-%m-%d"),
            a.kind.as_str(),
            a.direction.map_or("-", |d| d.as_str()),
            a.subject.as_ref().map_or("", |s| s.as_str()),
        );
    }

    heading("3. A deal through the pipeline");
    let dto: NewDealDto = serde_json::from_value(serde_json::json!({
        "contact_id": grace.id.to_string(),
        "title": "Acme Computing: 250 seats",
        "amount": "48000.00",
        "currency": "EUR",
        "expected_close_date": "2026-03-31",
    }))?;
    let mut deal = crm.create_deal(NewDeal::try_from(dto)?).await?;
    println!(
        "created   stage={:<12} version={} amount={}",
        deal.stage.as_str(),
        deal.version,
        deal.amount
    );
    for stage in [StageKey::PROPOSAL, StageKey::NEGOTIATION] {
        // Each move names the version it is based on (optimistic concurrency).
        deal = crm.move_deal(deal.id, deal.version, stage).await?;
        println!(
            "moved  -> stage={:<12} version={}",
            deal.stage.as_str(),
            deal.version,
        );
    }
    // Winning moves the deal to its pipeline's won stage and stamps `won_at`.
    deal = crm.win_deal(deal.id, deal.version).await?;
    println!(
        "won    -> stage={:<12} version={} won_at={}",
        deal.stage.as_str(),
        deal.version,
        deal.won_at
            .map_or_else(|| "-".to_string(), |t| t.to_rfc3339()),
    );

    heading("4. An illegal move is refused");
    // A closed deal leaves its stage only through `reopen_deal`.
    match crm
        .move_deal(deal.id, deal.version, StageKey::PROPOSAL)
        .await
    {
        Err(Error::InvalidTransition { from, to, why }) => {
            println!("refused {from} -> {to}: {why}");
        }
        other => return Err(format!("expected InvalidTransition, got {other:?}").into()),
    }

    heading("5. Validation reports every bad field at once");
    let bad: NewContactDto = serde_json::from_str(
        r#"{"email": "grace(at)example", "first_name": "  ", "phone": "call me maybe",
            "lead_source": "carrier pigeon", "metadata": ["not", "an", "object"]}"#,
    )?;
    match NewContact::try_from(bad) {
        Err(errors) => {
            for e in errors.as_slice() {
                println!("  {:<12} {:<15} {}", e.field, e.code, e.reason);
            }
        }
        Ok(_) => return Err("expected validation errors".into()),
    }
    let unknown = serde_json::from_str::<NewContactDto>(r#"{"email": "a@b.co", "nick": "x"}"#);
    if let Err(e) = unknown {
        println!("  unknown fields are refused too: {e}");
    }

    heading("6. Emails are unique per tenant, in any casing");
    let twin = NewContact::try_from(NewContactDto {
        email: Some("GRACE.HOPPER@example.COM".into()),
        first_name: Some("Grace".into()),
        last_name: Some("Duplicate".into()),
        ..Default::default()
    })?;
    match crm.create_contact(twin).await {
        Err(Error::DuplicateEmail { email, existing_id }) => {
            let existing = crm
                .get_contact(existing_id)
                .await?
                .ok_or("the existing contact should be there")?;
            println!(
                "refused {email}: already held by {} <{}> (id {existing_id})",
                name(&existing),
                existing.email
            );
        }
        other => return Err(format!("expected DuplicateEmail, got {other:?}").into()),
    }

    heading("7. Search");
    let query = ContactQuery::new()
        .with_company_prefix("acme")
        .with_sort(ContactSort::NameAsc);
    let found = crm.search_contacts(&query).await?;
    println!("company starts with \"acme\" (case-insensitive), by name:");
    for c in &found.items {
        println!(
            "  {:<18} {}",
            name(c),
            c.company.as_ref().map_or("-", |c| c.as_str())
        );
    }

    heading("8. Transactions: all or nothing");
    // Several operations that must commit together share a transaction.
    let mut tx = crm.begin().await?;
    let temp = tx
        .create_contact(NewContact::try_from(NewContactDto {
            email: Some("temp@example.com".into()),
            first_name: Some("Temporary".into()),
            last_name: Some("Contact".into()),
            ..Default::default()
        })?)
        .await?;
    tx.rollback().await?;
    let after = crm.get_contact(temp.id).await?;
    println!(
        "created {} inside a transaction, rolled back: found afterwards = {}",
        temp.email,
        after.is_some()
    );

    heading("9. Pipeline summary per stage and currency");
    // A few more deals in two currencies; sums are never added across currencies.
    let more = [
        (1, "Acme Labs: pilot", "12000", "USD", None),
        (1, "Acme Labs: support", "3000.50", "USD", Some("proposal")),
        (
            2,
            "Langley: trajectory suite",
            "20000",
            "EUR",
            Some("negotiation"),
        ),
        (2, "Langley: training", "5000", "EUR", None),
    ];
    for (who, title, amount, currency, stage) in more {
        let dto: NewDealDto = serde_json::from_value(serde_json::json!({
            "contact_id": contacts[who].id.to_string(),
            "title": title, "amount": amount, "currency": currency, "stage": stage,
        }))?;
        crm.create_deal(NewDeal::try_from(dto)?).await?;
    }
    // Lose one, with a reason: it moves to the pipeline's lost stage.
    let training = crm
        .list_deals_in_stage(
            &PipelineKey::default_pipeline(),
            &StageKey::QUALIFIED,
            &PageRequest::first(10),
        )
        .await?
        .items
        .into_iter()
        .find(|d| d.title.as_str() == "Langley: training")
        .ok_or("the training deal should be qualified")?;
    let lost = crm
        .lose_deal(
            training.id,
            training.version,
            LostReason::parse("No budget this year")?,
        )
        .await?;
    println!(
        "lost {:?} in {}: {}",
        lost.title.as_str(),
        lost.stage.as_str(),
        lost.lost_reason.as_ref().map_or("", |r| r.as_str()),
    );

    let summary = crm
        .pipeline_summary(&PipelineKey::default_pipeline())
        .await?;
    println!(
        "  {:<12} {:>5}  {:<8} {:>5} {:>12} {:>12}",
        "stage", "win%", "currency", "deals", "sum", "weighted"
    );
    for stage in &summary.stages {
        if stage.totals.is_empty() {
            println!(
                "  {:<12} {:>4}%  {:<8} {:>5}",
                stage.stage.as_str(),
                stage.win_probability,
                "-",
                0
            );
        }
        for t in &stage.totals {
            println!(
                "  {:<12} {:>4}%  {:<8} {:>5} {:>12} {:>12}",
                stage.stage.as_str(),
                stage.win_probability,
                t.currency.code(),
                t.count,
                t.sum,
                t.weighted
            );
        }
    }
    for t in summary.open_totals() {
        println!(
            "open pipeline in {}: {} deal(s) worth {}, weighted forecast {}",
            t.currency, t.count, t.sum, t.weighted
        );
    }

    heading("10. Companies, owners, tags and tasks");
    // A company's domain is normalised (scheme, `www.`, casing and path
    // go) and unique per tenant; its owner is the host's user id.
    let ada_id = OwnerId::parse("user:ada")?;
    let mut new_company = NewCompany::new(CompanyName::parse("Acme Labs")?);
    new_company.domain = Some(CompanyDomain::parse("https://WWW.Acme-Labs.io/about")?);
    new_company.owner = Some(ada_id.clone());
    let acme = crm.create_company(new_company).await?;
    println!(
        "created company {} with domain {}",
        acme.name,
        acme.domain.as_ref().map_or("-", |d| d.as_str())
    );
    // A new contact whose email domain is a company's is linked to it.
    let marie = crm
        .create_contact(NewContact::try_from(NewContactDto {
            email: Some("marie@acme-labs.io".into()),
            first_name: Some("Marie".into()),
            last_name: Some("Curie".into()),
            ..Default::default()
        })?)
        .await?;
    println!(
        "created {} <{}>: linked to {} by its email domain = {}",
        name(&marie),
        marie.email,
        acme.name,
        marie.company_id == Some(acme.id)
    );
    // Alan came before the company: link him, and give him an owner.
    let alan = &contacts[1];
    crm.update_contact(
        alan.id,
        alan.version,
        ContactPatch {
            company_id: Some(Some(acme.id)),
            owner: Some(Some(ada_id.clone())),
            ..Default::default()
        },
    )
    .await?;
    let people = crm
        .search_contacts(
            &ContactQuery::new()
                .with_company(acme.id)
                .with_sort(ContactSort::NameAsc),
        )
        .await?;
    println!("{}'s contacts, by name:", acme.name);
    for c in &people.items {
        println!(
            "  {:<18} owner={}",
            name(c),
            c.owner.as_ref().map_or("-", |o| o.as_str())
        );
    }

    // Tags: unique per tenant in any casing; searches filter any-of,
    // all-of and none-of.
    let vip = crm.create_tag(NewTag::new(TagName::parse("VIP")?)).await?;
    crm.attach_tag(vip.id, RecordRef::Contact(grace.id)).await?;
    crm.attach_tag(vip.id, RecordRef::Contact(marie.id)).await?;
    let vips = crm
        .search_contacts(
            &ContactQuery::new()
                .with_tags(TagFilter::new().any_of([vip.id]))
                .with_sort(ContactSort::NameAsc),
        )
        .await?;
    println!(
        "tagged {}: {}",
        vip.name,
        vips.items.iter().map(name).collect::<Vec<_>>().join(", ")
    );

    // Tasks for an owner, linked to a contact, a company or a deal: the
    // open ones come by due time, undated last.
    let tasks = [
        ("Send the pilot contract", Some(2), Some(marie.id)),
        ("Call Grace back", Some(1), Some(grace.id)),
        ("Plan the quarterly review", None, None),
    ];
    for (title, due_in_days, contact) in tasks {
        let mut task = NewTask::new(TaskTitle::parse(title)?);
        task.due_at = due_in_days.map(|d| now + Duration::days(d));
        task.assignee = Some(ada_id.clone());
        task.contact_id = contact;
        task.company_id = Some(acme.id);
        crm.create_task(task).await?;
    }
    let open = crm.open_tasks(&ada_id, &PageRequest::first(10)).await?;
    println!("{ada_id}'s open tasks, by due time:");
    for t in &open.items {
        println!(
            "  {:<28} due {}",
            t.title.as_str(),
            t.due_at
                .map_or("-".to_string(), |d| d.format("%Y-%m-%d").to_string())
        );
    }

    println!("\nDone.");
    Ok(())
}

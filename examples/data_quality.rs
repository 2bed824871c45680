//! Data quality on the in-memory store: a duplicate found, previewed,
//! merged and unmerged; a bounced email that makes a contact stale; and a
//! (fake) enrichment provider that repairs it.
//!
//! Run it with `cargo run --example data_quality`. The same code runs on
//! `PostgresStore`.

use async_trait::async_trait;
use chrono::Utc;
use crm_core::{
    Actor, Context, InMemoryStore, StoreExt, TenantId,
    bulk::ConflictPolicy,
    domain::{
        ActivityKind, Contact, ContactPatch, Email, FreshField, FreshnessModel, JobTitle,
        NewActivity, NewContact, NewSignal, PageRequest, PersonName, Phone, SignalKind, StaleQuery,
        Subject, UnmergeConflicts,
    },
    quality::{
        DuplicateOptions, duplicate_candidates,
        enrich::{EnrichError, EnrichOptions, Enricher, Enrichment, enrich_stale},
        merge_preview,
    },
};

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn heading(title: &str) {
    println!(
        "\n== {title} {}",
        "=".repeat(70usize.saturating_sub(title.len()))
    );
}

fn person(email: &str, first: &str, last: &str, phone: Option<&str>) -> Res<NewContact> {
    let mut c = NewContact::new(
        Email::parse(email)?,
        PersonName::parse(first)?,
        PersonName::parse(last)?,
    );
    c.phone = phone.map(Phone::parse).transpose()?;
    Ok(c)
}

/// A provider that knows one thing: Katherine's address works again and
/// her title is "Research Mathematician".
struct Directory;

#[async_trait]
impl Enricher for Directory {
    fn provider(&self) -> &str {
        "directory"
    }

    async fn enrich(&self, contacts: &[Contact]) -> Result<Vec<Enrichment>, EnrichError> {
        let mut out = Vec::new();
        for c in contacts {
            if c.last_name.as_str() == "Johnson" {
                let mut e = Enrichment::new(c.id);
                e.title = Some(JobTitle::parse("Research Mathematician")?);
                e.verified = vec![FreshField::Email];
                out.push(e);
            }
        }
        Ok(out)
    }
}

#[tokio::main]
async fn main() -> Res {
    let store = InMemoryStore::new();
    let tenant = TenantId::new();
    let ctx = Context::new(Actor::parse("user:ada")?);
    let crm = store.scope(tenant, &ctx);

    heading("1. A tenant with a duplicate in it");
    let robert = crm
        .create_contact(person(
            "robert.smith@acme.com",
            "Robert",
            "Smith",
            Some("+1 415 555 0134"),
        )?)
        .await?;
    let mut bob = person(
        "bob.smith@gmail.com",
        "Bob",
        "Smith",
        Some("(415) 555-0134"),
    )?;
    bob.title = Some(JobTitle::parse("VP Sales")?);
    let bob = crm.create_contact(bob).await?;
    let katherine = crm
        .create_contact(person(
            "katherine@nasa.example.org",
            "Katherine",
            "Johnson",
            None,
        )?)
        .await?;
    crm.create_contact(person("grace@navy.example.mil", "Grace", "Hopper", None)?)
        .await?;
    let mut call = NewActivity::new(bob.id, ActivityKind::Call);
    call.subject = Some(Subject::parse("Asked for a demo")?);
    crm.log_activity(call).await?;
    for c in [&robert, &bob, &katherine] {
        println!("{:<10} {:<6} <{}>", c.first_name, c.last_name, c.email);
    }

    heading("2. Duplicate candidates");
    let scan = duplicate_candidates(&store, tenant, &DuplicateOptions::default()).await?;
    let page = scan.page(&PageRequest::first(10))?;
    for pair in &page.items {
        let reasons: Vec<&str> = pair.reasons.iter().map(|r| r.as_str()).collect();
        println!(
            "{} ~ {}: confidence {:.2} ({})",
            pair.email_a,
            pair.email_b,
            pair.confidence,
            reasons.join(", ")
        );
    }
    println!("\nas CSV, for a spreadsheet:");
    scan.write_csv(std::io::stdout())?;

    heading("3. What a merge would do (nothing written)");
    let mut tx = crm.begin().await?;
    let preview = merge_preview(&mut *tx, robert.id, bob.id, ConflictPolicy::Existing).await?;
    drop(tx);
    for (field, change) in &preview.changes {
        println!("the survivor's {field}: {} -> {}", change.old, change.new);
    }
    println!(
        "would move {} activities, {} deals, {} tasks",
        preview.activities.len(),
        preview.deals.len(),
        preview.tasks.len()
    );

    heading("4. Merge, then an edit on the survivor");
    let merged = crm
        .merge_contacts(robert.id, bob.id, ConflictPolicy::Existing)
        .await?;
    println!(
        "{} {} <{}> version {}; bob is gone: {}",
        merged.first_name,
        merged.last_name,
        merged.email,
        merged.version,
        crm.get_contact(bob.id).await?.is_none()
    );
    let merged = crm
        .update_contact(
            merged.id,
            merged.version,
            ContactPatch {
                title: Some(Some(JobTitle::parse("CTO")?)),
                ..ContactPatch::default()
            },
        )
        .await?;
    println!(
        "survivor's title set to {}",
        merged.title.as_ref().map_or("-", |t| t.as_str())
    );

    heading("5. Unmerge");
    let merge = crm.contact_merges(robert.id).await?[0].clone();
    println!("undoing merge {} of {}", merge.id, merge.merged_at);
    // The merge gave Robert Bob's title, and it was edited since: undoing
    // the merge would overwrite that edit, so it is refused unless asked to
    // keep the current values.
    match crm
        .unmerge_contacts(merge.id, UnmergeConflicts::Refuse)
        .await
    {
        Err(e) => println!("refused: {e}"),
        Ok(_) => unreachable!("the title was edited after the merge"),
    }
    let undone = crm
        .unmerge_contacts(merge.id, UnmergeConflicts::KeepCurrent)
        .await?;
    println!(
        "back: {} {} <{}> (same id: {}), {} activities moved back",
        undone.loser.first_name,
        undone.loser.last_name,
        undone.loser.email,
        undone.loser.id == bob.id,
        undone.activities.len()
    );
    println!(
        "survivor keeps its later edit: title {}",
        undone.survivor.title.as_ref().map_or("-", |t| t.as_str())
    );

    heading("6. A bounce makes a contact stale");
    crm.record_signal(NewSignal::new(
        katherine.id,
        SignalKind::parse("email_bounced")?,
    ))
    .await?;
    let query = StaleQuery {
        inactive_days: None,
        unverified_days: Some(365),
        invalid_email: true,
        page: PageRequest::first(10),
    };
    let model = FreshnessModel::default();
    for s in crm.stale_contacts(&query).await?.items {
        println!(
            "{:<10} freshness {:>3}/100, {:?}",
            s.contact.first_name.as_str(),
            s.freshness.score(&model, Utc::now()),
            s.reasons
        );
    }

    heading("7. Enrichment");
    let options = EnrichOptions::new(query.clone(), 100);
    let report = enrich_stale(&store, tenant, &ctx, &Directory, &options).await?;
    println!(
        "{} stale, {} updated, {} verified, {} without an answer",
        report.selected,
        report.updated,
        report.verified,
        report.failed.len()
    );
    let k = crm.get_contact(katherine.id).await?.expect("still there");
    println!(
        "Katherine: title {}, email invalid: {}",
        k.title.as_ref().map_or("-", |t| t.as_str()),
        crm.freshness(k.id)
            .await?
            .is_some_and(|f| f.email_invalid_at.is_some())
    );
    let again = enrich_stale(&store, tenant, &ctx, &Directory, &options).await?;
    println!(
        "run again: {} stale ({} of them without an answer from this provider)",
        again.selected,
        again.failed.len()
    );
    Ok(())
}

//! The scoped handle ([`Scope`]): each call one transaction of its own in
//! the scope's tenant and context, winning and losing deals in every
//! pipeline, a failed call that has ended its transaction, and one-call
//! reads (opened with [`Store::begin_read`](crate::Store::begin_read),
//! which a store may open more cheaply: on PostgreSQL `READ ONLY`, with
//! the tenant set and nothing else) that answer exactly as the same reads
//! in a transaction that may write.

use std::time::Duration;

use super::prelude::*;
use super::support::{
    begin, create, ctx, deal, expect_not_found, lost_reason, new_contact, new_deal, ok,
};
use crate::domain::{
    CompanyDomain, CompanyId, EntityKind, FieldQuery, HistoryEntity, NewCompany, NewTag, NewTask,
    OwnerId, RecordRef, StaleQuery, TagName, TaskTitle,
};
use crate::store::{CompanyQuery, DealQuery};

/// Winning a deal moves it to its pipeline's won stage and losing one, for
/// a reason, to its lost stage, in every pipeline the store knows; a stale
/// version is a conflict, a missing deal not found, and a move into a lost
/// stage without a reason is refused and changes nothing.
pub async fn a_scoped_handle_wins_and_loses_deals_in_every_pipeline(store: &DynStore) {
    let t = TenantId::new();
    let crm = store.scope(t, &ctx());
    let c = ok(
        crm.create_contact(new_contact("scope@example.com", "Scope", "Handle"))
            .await,
        "create through the scope",
    );
    let pipelines: Vec<Pipeline> = store.pipelines().iter().cloned().collect();
    for p in &pipelines {
        let in_pipeline = |title: &str| NewDeal {
            pipeline: p.key().clone(),
            ..new_deal(c.id, title, "10", "EUR")
        };
        let won = ok(crm.create_deal(in_pipeline("To win")).await, "create");
        let won = ok(crm.win_deal(won.id, won.version).await, "win");
        assert_eq!(
            won.stage,
            p.won_stage().key,
            "won in {}'s won stage",
            p.key()
        );
        assert!(won.won_at.is_some() && won.lost_at.is_none());

        let lost = ok(crm.create_deal(in_pipeline("To lose")).await, "create");
        let stale = crm
            .lose_deal(lost.id, lost.version.next(), lost_reason("too late"))
            .await;
        assert!(
            matches!(stale, Err(Error::Conflict { .. })),
            "losing at a stale version is a conflict, got {stale:?}"
        );
        let unreasoned = crm
            .move_deal(lost.id, lost.version, &p.lost_stage().key)
            .await;
        assert!(
            matches!(
                unreasoned,
                Err(Error::InvalidTransition { .. } | Error::Validation(_))
            ),
            "a lost stage needs a reason, got {unreasoned:?}"
        );
        let lost = ok(
            crm.lose_deal(lost.id, lost.version, lost_reason("went elsewhere"))
                .await,
            "lose",
        );
        assert_eq!(
            lost.stage,
            p.lost_stage().key,
            "lost in {}'s lost stage",
            p.key()
        );
        assert_eq!(
            lost.lost_reason.as_ref().map(|r| r.as_str()),
            Some("went elsewhere")
        );
        assert!(lost.lost_at.is_some() && lost.won_at.is_none());
        assert_eq!(lost.version, Version::FIRST.next(), "one move, one version");

        let reopened = ok(
            crm.reopen_deal(lost.id, lost.version, &p.first_open_stage().key)
                .await,
            "reopen",
        );
        assert!(reopened.lost_reason.is_none() && reopened.lost_at.is_none());
    }
    let missing = DealId::new();
    expect_not_found(
        crm.lose_deal(missing, Version::FIRST, lost_reason("gone"))
            .await,
        Entity::Deal,
        missing,
        "losing a missing deal",
    );
    expect_not_found(
        crm.win_deal(missing, Version::FIRST).await,
        Entity::Deal,
        missing,
        "winning a missing deal",
    );
}

/// A scope works in its own tenant with its own context: what it writes
/// carries the context into history and is invisible to another tenant's
/// scope, and a call that fails has ended its transaction when it returns,
/// so the next call does not wait for it.
pub async fn a_scope_keeps_to_its_tenant_and_context_and_a_failed_call_ends_its_transaction(
    store: &DynStore,
) {
    let t = TenantId::new();
    let context = ctx().with_reason("scoped import").expect("a valid reason");
    let crm = store.scope(t, &context);
    let other = store.scope(TenantId::new(), &ctx());
    assert_eq!(crm.tenant(), t);
    let c = ok(
        crm.create_contact(new_contact("scoped@example.com", "Sco", "Ped"))
            .await,
        "create",
    );
    assert_eq!(
        ok(other.get_contact(c.id).await, "other tenant's get"),
        None
    );
    let versions = ok(
        crm.entity_history(c.id, &PageRequest::first(10)).await,
        "history",
    );
    assert_eq!(versions.items.len(), 1);
    assert_eq!(versions.items[0].actor, context.actor().as_str());
    assert_eq!(versions.items[0].reason.as_deref(), Some("scoped import"));

    // A duplicate fails; the next write goes through at once.
    let twin = crm
        .create_contact(new_contact("SCOPED@example.com", "Twin", "Ped"))
        .await;
    assert!(
        matches!(twin, Err(Error::DuplicateEmail { .. })),
        "{twin:?}"
    );
    let next = tokio::time::timeout(
        Duration::from_secs(30),
        crm.update_contact(
            c.id,
            c.version,
            ContactPatch {
                title: Some(Some(JobTitle::parse("Engineer").expect("a title"))),
                ..ContactPatch::default()
            },
        ),
    )
    .await
    .expect("the failed call's transaction has ended: the next one does not wait for it");
    let next = ok(next, "update after a failed create");
    assert_eq!(next.version, c.version.next());
}

/// Each one-call read of a tenant holding one record of every kind
/// (a company, a contact linked to it, a deal, a tag on the contact, an
/// overdue task, an activity, a signal, an updated field in the history)
/// gives what the same read gives in a writing transaction; several reads
/// in one [`Scope::begin_read`](crate::store::Scope::begin_read)
/// transaction do too.
pub async fn one_call_reads_answer_as_reads_in_a_writing_transaction(store: &DynStore) {
    let t = TenantId::new();
    let before = chrono::Utc::now();
    let owner = OwnerId::parse("user:reads").expect("an owner id");
    let domain = CompanyDomain::parse("reads.example").expect("a domain");
    let company = with_tx!(store, t, async |tx| {
        let new = NewCompany {
            domain: Some(domain.clone()),
            owner: Some(owner.clone()),
            ..NewCompany::new(CompanyName::parse("Reads Ltd").expect("a company name"))
        };
        ok(tx.create_company(new).await, "create the company")
    })
    .await;
    let contact = create(store, t, new_contact("ann@reads.example", "Ann", "Reader")).await;
    let d = deal(
        store,
        t,
        crate::domain::NewDeal {
            company_id: Some(company.id),
            ..new_deal(contact.id, "Reads deal", "100.00", "EUR")
        },
    )
    .await;
    let (tag, task) = with_tx!(store, t, async |tx| {
        let tag = ok(
            tx.create_tag(NewTag::new(TagName::parse("Readers").expect("a tag name")))
                .await,
            "create the tag",
        );
        ok(
            tx.attach_tag(tag.id, RecordRef::Contact(contact.id)).await,
            "tag the contact",
        );
        let task = ok(
            tx.create_task(NewTask {
                assignee: Some(owner.clone()),
                due_at: Some(before - chrono::Duration::days(1)),
                contact_id: Some(contact.id),
                ..NewTask::new(TaskTitle::parse("Call Ann").expect("a task title"))
            })
            .await,
            "create the task",
        );
        ok(
            tx.log_activity(NewActivity::new(contact.id, ActivityKind::Call))
                .await,
            "log an activity",
        );
        ok(
            tx.record_signal(NewSignal::new(contact.id, SignalKind::PAGE_VIEW))
                .await,
            "record a signal",
        );
        let patch = ContactPatch {
            title: Some(Some(JobTitle::parse("Head of Reading").expect("a title"))),
            ..ContactPatch::default()
        };
        ok(
            tx.update_contact(contact.id, contact.version, patch).await,
            "update the contact",
        );
        (tag, task)
    })
    .await;
    let now = chrono::Utc::now() + chrono::Duration::seconds(1);
    let company_id: CompanyId = company.id;
    let pipeline = d.pipeline.clone();
    let stage = d.stage.clone();
    let page = PageRequest::first(10);
    let fields = FieldQuery {
        kind: EntityKind::Contact,
        field: "title".to_string(),
        entity: Some(contact.id.as_uuid()),
        page: page.clone(),
    };
    let stale = StaleQuery {
        inactive_days: Some(1),
        ..StaleQuery::default()
    };
    let tag_name = tag.name.clone();
    let email = contact.email.clone();

    // Every read, as text: the same calls on a Scope (one read-only
    // transaction each) and in one writing transaction.
    macro_rules! reads {
        ($on:expr) => {{
            let on = $on;
            vec![
                ("freshness", format!("{:?}", on.freshness(contact.id).await)),
                (
                    "stale_contacts",
                    format!("{:?}", on.stale_contacts(&stale).await),
                ),
                (
                    "get_contact",
                    format!("{:?}", on.get_contact(contact.id).await),
                ),
                (
                    "get_contact_by_email",
                    format!("{:?}", on.get_contact_by_email(&email).await),
                ),
                (
                    "search_contacts",
                    format!(
                        "{:?}",
                        on.search_contacts(&ContactQuery::top_leads(10)).await
                    ),
                ),
                (
                    "get_company",
                    format!("{:?}", on.get_company(company_id).await),
                ),
                (
                    "get_company_by_domain",
                    format!("{:?}", on.get_company_by_domain(&domain).await),
                ),
                (
                    "search_companies",
                    format!("{:?}", on.search_companies(&CompanyQuery::new()).await),
                ),
                (
                    "company_timeline",
                    format!("{:?}", on.company_timeline(company_id, &page).await),
                ),
                (
                    "list_deals_for_company",
                    format!("{:?}", on.list_deals_for_company(company_id, &page).await),
                ),
                (
                    "pipeline_summary_for_company",
                    format!(
                        "{:?}",
                        on.pipeline_summary_for_company(&pipeline, company_id).await
                    ),
                ),
                ("get_tag", format!("{:?}", on.get_tag(tag.id).await)),
                (
                    "get_tag_by_name",
                    format!("{:?}", on.get_tag_by_name(&tag_name).await),
                ),
                ("list_tags", format!("{:?}", on.list_tags(&page).await)),
                (
                    "tags_of",
                    format!("{:?}", on.tags_of(RecordRef::Contact(contact.id)).await),
                ),
                ("get_task", format!("{:?}", on.get_task(task.id).await)),
                (
                    "open_tasks",
                    format!("{:?}", on.open_tasks(&owner, &page).await),
                ),
                (
                    "overdue_tasks",
                    format!("{:?}", on.overdue_tasks(now, Some(&owner), &page).await),
                ),
                (
                    "tasks_of",
                    format!(
                        "{:?}",
                        on.tasks_of(RecordRef::Contact(contact.id), &page).await
                    ),
                ),
                ("get_deal", format!("{:?}", on.get_deal(d.id).await)),
                (
                    "list_deals_for_contact",
                    format!("{:?}", on.list_deals_for_contact(contact.id, &page).await),
                ),
                (
                    "list_deals_in_stage",
                    format!(
                        "{:?}",
                        on.list_deals_in_stage(&pipeline, &stage, &page).await
                    ),
                ),
                (
                    "search_deals",
                    format!("{:?}", on.search_deals(&DealQuery::new()).await),
                ),
                (
                    "pipeline_summary",
                    format!("{:?}", on.pipeline_summary(&pipeline).await),
                ),
                (
                    "timeline",
                    format!("{:?}", on.timeline(contact.id, &page).await),
                ),
                (
                    "list_signals",
                    format!("{:?}", on.list_signals(contact.id).await),
                ),
                (
                    "entity_as_of",
                    format!(
                        "{:?}",
                        on.entity_as_of(HistoryEntity::Contact(contact.id), now)
                            .await
                    ),
                ),
                (
                    "field_changes",
                    format!("{:?}", on.field_changes(&fields).await),
                ),
                (
                    "changes_between",
                    format!("{:?}", on.changes_between(before, now, &page).await),
                ),
                (
                    "contact_merges",
                    format!("{:?}", on.contact_merges(contact.id).await),
                ),
                (
                    "entity_history",
                    format!(
                        "{:?}",
                        on.entity_history(HistoryEntity::Contact(contact.id), &page)
                            .await
                    ),
                ),
            ]
        }};
    }

    let scope = store.scope(t, &ctx());
    let one_call = reads!(&scope);
    let mut tx = ok(store.begin(t, ctx()).await, "begin a writing transaction");
    let writing = reads!(&mut *tx);
    ok(tx.rollback().await, "end the writing transaction");
    let mut tx = ok(scope.begin_read().await, "begin a read transaction");
    let reading = reads!(&mut *tx);
    ok(tx.commit().await, "commit the read transaction");
    for ((name, a), ((_, b), (_, c))) in one_call.iter().zip(writing.iter().zip(reading.iter())) {
        // Every read finds something, so that a read that lost its tenant
        // (and saw nothing) cannot pass; the contact was never merged, and
        // is not stale.
        let empty = b.starts_with("Ok(None)")
            || b.contains("items: []")
            || b == "Ok([])"
            || (name.starts_with("pipeline_summary") && !b.contains("CurrencyTotal"));
        assert!(
            b.starts_with("Ok(") && (!empty || ["contact_merges", "stale_contacts"].contains(name)),
            "{name}: the setup left something to read, got {b}"
        );
        assert_eq!(
            a, b,
            "{name}: a one-call read answers as in a writing transaction"
        );
        assert_eq!(
            c, b,
            "{name}: a read in begin_read answers as in a writing transaction"
        );
    }
}

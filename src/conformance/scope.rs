//! The scoped handle ([`Scope`]): each call one transaction of its own in
//! the scope's tenant and context, winning and losing deals in every
//! pipeline, and a failed call that has ended its transaction.

use std::time::Duration;

use super::prelude::*;
use super::support::{ctx, expect_not_found, lost_reason, new_contact, new_deal, ok};

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

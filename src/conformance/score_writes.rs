//! The conformance suite's score-writing points: `write_scores` counts
//! real changes, ignores unknown and foreign ids, keeps versions and
//! feeds the score sort.

use super::prelude::*;
use super::support::{
    all, assert_same, begin, contact_scores, create, ctx, expected_order, get, ids, matching,
    new_contact, ok, person, score, search, search_ids, tick,
};

/// `write_scores` returns how many scores actually changed; unknown ids
/// and other tenants' ids are ignored.
pub async fn write_scores_counts_real_changes_and_ignores_unknown_and_foreign_ids(
    store: &DynStore,
) {
    let t = TenantId::new();
    let other = TenantId::new();
    let c1 = create(store, t, new_contact("s1@example.com", "S", "One")).await;
    let c2 = create(store, t, new_contact("s2@example.com", "S", "Two")).await;
    let c3 = create(store, t, new_contact("s3@example.com", "S", "Three")).await;
    let foreign = create(store, other, new_contact("s1@example.com", "F", "Oreign")).await;
    let writes = [
        (c1.id, score(10)),
        (c2.id, score(0)),
        (ContactId::new(), score(50)),
        (foreign.id, score(70)),
        (c3.id, score(100)),
    ];
    let changed = with_tx!(store, t, async |tx| ok(
        tx.write_scores(&contact_scores(&writes)).await,
        "write"
    ))
    .await;
    assert_eq!(
        changed, 2,
        "two scores changed (c2 already had 0; unknown and foreign ids ignored)"
    );
    assert_eq!(get(store, t, c1.id).await.expect("c1").score, score(10));
    assert_eq!(get(store, t, c2.id).await.expect("c2").score, score(0));
    assert_eq!(get(store, t, c3.id).await.expect("c3").score, score(100));
    assert_same(
        &get(store, other, foreign.id).await.expect("foreign"),
        &foreign,
        "another tenant's contact is untouched",
    );
    let again = with_tx!(store, t, async |tx| ok(
        tx.write_scores(&contact_scores(&writes)).await,
        "write again"
    ))
    .await;
    assert_eq!(again, 0, "writing the same scores again changes nothing");
    let none = with_tx!(store, t, async |tx| ok(
        tx.write_scores(&[]).await,
        "write nothing"
    ))
    .await;
    assert_eq!(none, 0, "an empty write changes nothing");
}

/// A score write-back keeps the version and `updated_at`, and the score
/// sort and filters see the new scores.
pub async fn write_scores_keeps_version_and_updated_at_and_feeds_the_score_sort(store: &DynStore) {
    let t = TenantId::new();
    let mut cs = Vec::new();
    for i in 0..5 {
        cs.push(
            create(
                store,
                t,
                new_contact(&format!("lead{i}@example.com"), "Lead", &format!("N{i}")),
            )
            .await,
        );
    }
    tick().await;
    let scores = [30, 90, 0, 60, 90];
    let pairs: Vec<(ContactId, Score)> = cs.iter().map(|c| c.id).zip(scores.map(score)).collect();
    let changed = with_tx!(store, t, async |tx| ok(
        tx.write_scores(&contact_scores(&pairs)).await,
        "write"
    ))
    .await;
    assert_eq!(changed, 4, "four scores differ from 0");
    let mut fresh = Vec::new();
    for (c, s) in cs.iter().zip(scores) {
        let now = get(store, t, c.id).await.expect("exists");
        assert_eq!(now.score, score(s));
        assert_eq!(now.version, c.version, "a score write keeps the version");
        assert_eq!(
            now.updated_at, c.updated_at,
            "a score write keeps updated_at"
        );
        let mut expected = c.clone();
        expected.score = score(s);
        assert_same(&now, &expected, "only the score changed");
        fresh.push(now);
    }
    assert_eq!(
        search_ids(store, t, &all(ContactSort::ScoreDesc)).await,
        expected_order(ContactSort::ScoreDesc, &fresh),
        "the score sort sees the new scores"
    );
    let top = search(store, t, &ContactQuery::top_leads(2)).await;
    let mut tied = vec![cs[1].id, cs[4].id];
    tied.sort();
    tied.reverse();
    assert_eq!(
        top.items.iter().map(|c| c.id).collect::<Vec<_>>(),
        tied,
        "the top two leads are the two 90s, by id descending"
    );
    assert_eq!(
        matching(
            store,
            t,
            ContactQuery {
                min_score: Some(score(60)),
                ..ContactQuery::new()
            }
        )
        .await,
        ids(&[&fresh[1], &fresh[3], &fresh[4]]),
        "the score filter sees the new scores"
    );
    // Score changes survive a later update, which keeps them.
    let upd = ok(
        store
            .scope(t, &ctx())
            .update_contact(
                cs[0].id,
                cs[0].version,
                ContactPatch {
                    first_name: Some(person("Updated")),
                    ..ContactPatch::default()
                },
            )
            .await,
        "update after a score write",
    );
    assert_eq!(upd.score, score(30), "an update keeps the written score");
}

/// An id listed more than once in one `write_scores` call gets the last
/// score given for it and counts once; not at all when that score is the
/// one it had.
pub async fn write_scores_gives_a_repeated_id_its_last_score_and_counts_it_once(store: &DynStore) {
    let t = TenantId::new();
    let a = create(store, t, new_contact("twice@example.com", "Twi", "Ce")).await;
    let b = create(store, t, new_contact("back@example.com", "Ba", "Ck")).await;
    let writes = [
        (a.id, score(10)),
        (b.id, score(30)),
        (a.id, score(20)),
        (b.id, score(0)),
    ];
    let changed = with_tx!(store, t, async |tx| ok(
        tx.write_scores(&contact_scores(&writes)).await,
        "write"
    ))
    .await;
    assert_eq!(
        changed, 1,
        "a changed once (to its last score), b ends where it began"
    );
    assert_eq!(
        get(store, t, a.id).await.expect("a").score,
        score(20),
        "the last score given wins"
    );
    assert_eq!(
        get(store, t, b.id).await.expect("b").score,
        score(0),
        "the last score given wins"
    );
}

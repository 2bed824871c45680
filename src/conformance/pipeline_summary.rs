//! The conformance suite's pipeline summary points: exact sums per stage
//! and currency, and an unknown pipeline (or stage) refused.

use std::collections::BTreeMap;

use rust_decimal::Decimal;

use super::prelude::*;
use super::support::{
    begin, create, ctx, dec, default_stages, expect_validation, lost_reason, new_contact, new_deal,
    ok,
};

/// The summary counts and sums each stage's deals per currency (never
/// adding currencies), weights them by the stage's probability, exactly in
/// decimal, and lists empty stages too, in pipeline order.
pub async fn pipeline_summary_sums_per_stage_and_currency_exactly(store: &DynStore) {
    let t = TenantId::new();
    let s = default_stages(store);
    let c = create(store, t, new_contact("summary@example.com", "Sum", "Mary")).await;
    // (amount, currency, stage to move to, lost reason)
    let plan: Vec<(&str, &str, Option<&StageKey>, Option<&str>)> = vec![
        ("0.1", "EUR", None, None),
        ("0.2", "EUR", None, None),
        ("100", "USD", None, None),
        ("1000.5", "EUR", Some(&s.open[1]), None),
        ("0.0001", "EUR", Some(&s.open[1]), None),
        ("50", "USD", Some(&s.won), None),
        ("7", "EUR", Some(&s.lost), Some("too expensive")),
        ("999999999999.9999", "USD", Some(&s.won), None),
    ];
    let mut expected: BTreeMap<(StageKey, &str), (u64, Decimal)> = BTreeMap::new();
    with_tx!(store, t, async |tx| {
        for (amount, currency, to, reason) in &plan {
            let d = ok(
                tx.create_deal(new_deal(c.id, "Sum", amount, currency))
                    .await,
                "deal",
            );
            let d = match to {
                Some(to) => ok(
                    tx.move_deal(d.id, d.version, to, reason.map(lost_reason))
                        .await,
                    "move",
                ),
                None => d,
            };
            let e = expected
                .entry((d.stage.clone(), *currency))
                .or_insert((0, Decimal::ZERO));
            e.0 += 1;
            e.1 += dec(amount);
        }
    })
    .await;
    let summary = ok(
        store
            .scope(t, &ctx())
            .pipeline_summary(s.pipeline.key())
            .await,
        "summary",
    );
    assert_eq!(&summary.pipeline, s.pipeline.key());
    assert_eq!(
        summary.stages.iter().map(|x| &x.stage).collect::<Vec<_>>(),
        s.pipeline
            .stages()
            .iter()
            .map(|x| &x.key)
            .collect::<Vec<_>>(),
        "every stage is listed, in pipeline order"
    );
    for (st, def) in summary.stages.iter().zip(s.pipeline.stages()) {
        assert_eq!(st.label, def.label);
        assert_eq!(st.kind, def.kind);
        assert_eq!(st.win_probability, def.win_probability);
        let want: Vec<CurrencyTotal> = expected
            .iter()
            .filter(|((k, _), _)| k == &def.key)
            .map(|((_, cur), (n, sum))| CurrencyTotal {
                currency: Currency::parse(cur).expect("currency"),
                count: *n,
                sum: *sum,
                weighted: *sum * Decimal::from(def.win_probability) / Decimal::ONE_HUNDRED,
            })
            .collect();
        assert_eq!(
            st.totals, want,
            "stage {}: count, sum and weighted sum per currency, ordered by currency code",
            def.key
        );
    }
    let first = &summary.stages[0];
    let eur = first
        .totals
        .iter()
        .find(|x| x.currency.code() == "EUR")
        .expect("EUR in the first stage");
    assert_eq!(eur.sum, dec("0.3"), "0.1 + 0.2 is exactly 0.3");
    assert_eq!(eur.count, 2);
    let usd = first
        .totals
        .iter()
        .find(|x| x.currency.code() == "USD")
        .expect("USD in the first stage");
    assert_eq!(usd.sum, dec("100"), "currencies are never added together");
    let second = &summary.stages[1];
    assert_eq!(second.totals.len(), 1);
    assert_eq!(
        second.totals[0].sum,
        dec("1000.5001"),
        "four decimal places are kept"
    );
    let won = summary
        .stages
        .iter()
        .find(|x| x.stage == s.won)
        .expect("won stage");
    assert_eq!(
        won.totals[0].sum,
        dec("1000000000049.9999"),
        "large sums are exact"
    );
    assert_eq!(
        won.totals[0].weighted, won.totals[0].sum,
        "won stages weigh 100 %"
    );
    let lost = summary
        .stages
        .iter()
        .find(|x| x.stage == s.lost)
        .expect("lost stage");
    assert_eq!(
        lost.totals[0].weighted,
        Decimal::ZERO,
        "lost stages weigh 0 %"
    );
    let empty: Vec<&StageKey> = summary
        .stages
        .iter()
        .filter(|x| x.totals.is_empty())
        .map(|x| &x.stage)
        .collect();
    assert_eq!(
        empty,
        s.open[2..].iter().collect::<Vec<_>>(),
        "stages without deals are listed with no totals"
    );
}

/// A summary of a pipeline the store does not know is a validation error
/// on `pipeline`.
pub async fn pipeline_summary_of_an_unknown_pipeline_is_a_validation_error(store: &DynStore) {
    let t = TenantId::new();
    expect_validation(
        store
            .scope(t, &ctx())
            .pipeline_summary(&PipelineKey::parse("no_such_pipeline").expect("key"))
            .await,
        "pipeline",
        "summary of an unknown pipeline",
    );
}

/// Listing the deals of a pipeline the store does not know, or of a stage
/// its pipeline does not have (a misspelt `qualifed`, another pipeline's
/// stage), is a validation error naming `pipeline` or `stage`, as a search
/// with the same keys is; not an empty page.
pub async fn listing_an_unknown_pipeline_or_stage_is_a_validation_error(store: &DynStore) {
    let t = TenantId::new();
    let known = default_stages(store);
    let pipeline = PipelineKey::default_pipeline();
    let default = store.pipelines().get(&pipeline).expect("default").clone();
    let other = store
        .pipelines()
        .iter()
        .find(|p| p.key() != &pipeline)
        .map(|p| (p.key().clone(), p.stages()[0].key.clone()));
    let unknown_pipeline = PipelineKey::parse("no_such_pipeline").expect("key");
    let unknown_stage = StageKey::parse("qualifed").expect("key");
    let first = PageRequest::first(10);
    with_tx!(store, t, async |tx| {
        expect_validation(
            tx.list_deals_in_stage(&unknown_pipeline, &known.open[0], &first)
                .await,
            "pipeline",
            "deals of an unknown pipeline",
        );
        expect_validation(
            tx.list_deals_in_stage(&pipeline, &unknown_stage, &first)
                .await,
            "stage",
            "deals of an unknown stage",
        );
        if let Some((other, foreign)) = &other
            && default.stage(foreign).is_none()
        {
            expect_validation(
                tx.list_deals_in_stage(&pipeline, foreign, &first).await,
                "stage",
                &format!("deals of {other}'s stage {foreign} in {pipeline}"),
            );
        }
        ok(
            tx.list_deals_in_stage(&pipeline, &known.open[0], &first)
                .await,
            "deals of a known stage",
        );
    })
    .await;
}

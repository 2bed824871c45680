//! Property: replaying the history's diffs from a record's first version
//! rebuilds every later version and the record as it is now, whatever the
//! sequence of updates (some of them no-ops or score writes, several in
//! one transaction).

use crm_core::{
    Actor, Context, InMemoryStore, PageRequest, Store, StoreExt, TenantId,
    domain::{
        CompanyName, ContactPatch, Currency, DealPatch, DealTitle, Email, Metadata, Money,
        NewContact, NewDeal, PersonName, Score,
    },
    history::{self, HistoryEntity, HistoryEntry},
};
use proptest::prelude::*;
use serde_json::json;

#[derive(Debug, Clone)]
enum Op {
    Name(usize),
    Company(Option<usize>),
    Active(bool),
    Meta(u8),
    Score(u8),
    Amount(u32),
    Title(usize),
    Commit,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..3usize).prop_map(Op::Name),
        proptest::option::of(0..2usize).prop_map(Op::Company),
        any::<bool>().prop_map(Op::Active),
        (0..3u8).prop_map(Op::Meta),
        (0..=100u8).prop_map(Op::Score),
        (0..4u32).prop_map(Op::Amount),
        (0..2usize).prop_map(Op::Title),
        Just(Op::Commit),
    ]
}

const NAMES: [&str; 3] = ["Ada", "Grace", "Edsger"];
const COMPANIES: [&str; 2] = ["Acme", "Initech"];
const TITLES: [&str; 2] = ["Licences", "Support"];

async fn all_versions(
    store: &InMemoryStore,
    t: TenantId,
    ctx: &Context,
    e: HistoryEntity,
) -> Vec<HistoryEntry> {
    let mut tx = store.begin(t, ctx.clone()).await.unwrap();
    let mut out = Vec::new();
    let mut page = PageRequest::first(3);
    loop {
        let p = tx.entity_history(e, &page).await.unwrap();
        out.extend(p.items);
        match p.next_cursor {
            Some(c) => page = PageRequest::after(3, c),
            None => break,
        }
    }
    tx.commit().await.unwrap();
    out.reverse();
    out
}

fn check_replay(versions: &[HistoryEntry], now: &serde_json::Value) {
    assert!(!versions.is_empty());
    let mut values = versions[0].values.clone();
    for v in &versions[1..] {
        values = history::apply(&values, &v.diff);
        assert_eq!(&values, &v.values, "replaying up to {:?}", v.valid_from);
    }
    assert_eq!(&values, now, "replaying every diff gives the current row");
    for w in versions.windows(2) {
        assert_eq!(w[0].valid_to, Some(w[1].valid_from));
        assert!(w[0].valid_from < w[1].valid_from);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn replaying_the_diffs_from_the_first_version_rebuilds_the_current_row(
        ops in proptest::collection::vec(op(), 1..30)
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let store = InMemoryStore::new();
            let t = TenantId::new();
            let ctx = Context::new(Actor::parse("test:props").unwrap());
            let crm = store.scope(t, &ctx);
            let c = crm.create_contact(NewContact::new(
                    Email::parse("p@example.com").unwrap(),
                    PersonName::parse("Ada").unwrap(),
                    PersonName::parse("L").unwrap(),
                ))
                .await
                .unwrap();
            let eur = Currency::parse("EUR").unwrap();
            let d = crm.create_deal(NewDeal::new(
                    c.id,
                    DealTitle::parse("Licences").unwrap(),
                    Money::parse("0", eur).unwrap(),
                ))
                .await
                .unwrap();
            let mut tx = store.begin(t, ctx.clone()).await.unwrap();
            let mut real_changes = 0usize;
            for op in ops {
                let contact = tx.get_contact(c.id).await.unwrap().unwrap();
                let deal = tx.get_deal(d.id).await.unwrap().unwrap();
                let mut cp = ContactPatch::default();
                let mut dp = DealPatch::default();
                match op {
                    Op::Name(i) => cp.first_name = Some(PersonName::parse(NAMES[i]).unwrap()),
                    Op::Company(i) => {
                        cp.company = Some(i.map(|i| CompanyName::parse(COMPANIES[i]).unwrap()))
                    }
                    Op::Active(a) => cp.active = Some(a),
                    Op::Meta(m) => {
                        cp.metadata = Some(Metadata::parse(json!({"tier": m})).unwrap())
                    }
                    Op::Score(s) => {
                        tx.write_scores(&[crm_core::domain::ContactScore::new(c.id, Score::new(i64::from(s)).unwrap())]).await.unwrap();
                        continue;
                    }
                    Op::Amount(a) => dp.amount = Some(Money::parse(&a.to_string(), eur).unwrap()),
                    Op::Title(i) => dp.title = Some(DealTitle::parse(TITLES[i]).unwrap()),
                    Op::Commit => {
                        tx.commit().await.unwrap();
                        tx = store.begin(t, ctx.clone()).await.unwrap();
                        continue;
                    }
                }
                let c2 = tx.update_contact(c.id, contact.version, cp).await.unwrap();
                let d2 = tx.update_deal(d.id, deal.version, dp).await.unwrap();
                real_changes += usize::from(c2.version != contact.version);
                real_changes += usize::from(d2.version != deal.version);
            }
            tx.commit().await.unwrap();
            let contact = crm.get_contact(c.id).await.unwrap().unwrap();
            let mut tx = store.begin(t, ctx.clone()).await.unwrap();
            let deal = tx.get_deal(d.id).await.unwrap().unwrap();
            tx.commit().await.unwrap();
            let cv = all_versions(&store, t, &ctx, HistoryEntity::Contact(c.id)).await;
            let dv = all_versions(&store, t, &ctx, HistoryEntity::Deal(d.id)).await;
            check_replay(&cv, &history::contact_values(&contact));
            check_replay(&dv, &history::deal_values(&deal));
            assert_eq!(
                cv.len() + dv.len(),
                2 + real_changes,
                "one version per creation and per real change, none for no-ops and scores"
            );
        });
    }
}

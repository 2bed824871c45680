//! The conformance suite's search filters: prefixes of email, name and
//! company in any casing, lead source, score, active, time ranges,
//! metadata containment, and filters combined.

use serde_json::{Value, json};

use super::prelude::*;
use super::support::{
    begin, contact_scores, create, ctx, get, ids, matching, metadata, new_contact, ok, score, tick,
};

/// The search fixture: seven contacts, created one after another (so that
/// each has its own `created_at`), some updated afterwards.
struct Crowd {
    ada: Contact,
    charles: Contact,
    grace: Contact,
    alan: Contact,
    katherine: Contact,
    adele: Contact,
    edsger: Contact,
}

impl Crowd {
    fn in_creation_order(&self) -> [&Contact; 7] {
        [
            &self.ada,
            &self.charles,
            &self.grace,
            &self.alan,
            &self.katherine,
            &self.adele,
            &self.edsger,
        ]
    }
}

async fn crowd(store: &DynStore, t: TenantId) -> Crowd {
    fn input(
        address: &str,
        first: &str,
        last: &str,
        company: Option<&str>,
        source: LeadSource,
        meta: Value,
    ) -> NewContact {
        NewContact {
            company: company.map(|c| CompanyName::parse(c).expect("company")),
            lead_source: source,
            metadata: metadata(meta),
            ..new_contact(address, first, last)
        }
    }
    let inputs = [
        input(
            "ada@analytical.example",
            "Ada",
            "Lovelace",
            Some("Analytical Engines"),
            LeadSource::Referral,
            json!({"plan": "pro", "tags": ["vip", "beta"], "address": {"city": "London", "zip": "N1"}}),
        ),
        input(
            "charles@analytical.example",
            "Charles",
            "Babbage",
            Some("Analytical Engines Ltd"),
            LeadSource::Organic,
            json!({"plan": "free", "tags": ["beta"]}),
        ),
        input(
            "grace@navy.example",
            "Grace",
            "Hopper",
            Some("US Navy"),
            LeadSource::Paid,
            json!({"plan": "pro", "address": {"city": "Arlington"}}),
        ),
        input(
            "alan@bletchley.example",
            "Alan",
            "Turing",
            Some("Bletchley Park"),
            LeadSource::Partner,
            json!({"tags": ["vip"], "seats": 3}),
        ),
        input(
            "katherine@nasa.example",
            "Katherine",
            "Johnson",
            None,
            LeadSource::Import,
            json!({}),
        ),
        input(
            "Adele@Example.com",
            "Adele",
            "Goldberg",
            Some("Xerox PARC"),
            LeadSource::Referral,
            json!({"plan": "PRO", "seats": 3.0}),
        ),
        input(
            "edsger@example.com",
            "Edsger",
            "Dijkstra",
            Some("analytical research"),
            LeadSource::Organic,
            json!({"tags": [["nested"], {"k": "v"}]}),
        ),
    ];
    let mut made = Vec::new();
    for (i, new) in inputs.into_iter().enumerate() {
        let c = create(store, t, new).await;
        // Alan is deactivated right away, within his creation's tick.
        let c = if i == 3 {
            with_tx!(store, t, async |tx| ok(
                tx.deactivate_contact(c.id).await,
                "deactivate"
            ))
            .await
        } else {
            c
        };
        made.push(c);
        tick().await;
    }
    let scores = [80, 40, 95, 60, 0, 40, 10];
    let pairs: Vec<(ContactId, Score)> = made
        .iter()
        .zip(scores)
        .map(|(c, s)| (c.id, score(s)))
        .collect();
    with_tx!(store, t, async |tx| ok(
        tx.write_scores(&contact_scores(&pairs)).await,
        "scores"
    ))
    .await;
    let mut fresh = Vec::new();
    for c in &made {
        fresh.push(get(store, t, c.id).await.expect("exists"));
    }
    let mut it = fresh.into_iter();
    let mut next = || it.next().expect("seven contacts");
    Crowd {
        ada: next(),
        charles: next(),
        grace: next(),
        alan: next(),
        katherine: next(),
        adele: next(),
        edsger: next(),
    }
}

/// Email, name (first or last) and company prefixes match
/// case-insensitively, each on its own.
pub async fn search_filters_by_email_name_and_company_prefix_case_insensitively(store: &DynStore) {
    let t = TenantId::new();
    let c = crowd(store, t).await;
    let q = ContactQuery::new;
    let cases: Vec<(&str, ContactQuery, Vec<&Contact>)> = vec![
        (
            "email prefix AD",
            ContactQuery {
                email_prefix: Some("AD".into()),
                ..q()
            },
            vec![&c.ada, &c.adele],
        ),
        (
            "email prefix ada@",
            ContactQuery {
                email_prefix: Some("ada@".into()),
                ..q()
            },
            vec![&c.ada],
        ),
        (
            "email prefix adele@example.COM",
            ContactQuery {
                email_prefix: Some("adele@example.COM".into()),
                ..q()
            },
            vec![&c.adele],
        ),
        (
            "email prefix nobody",
            ContactQuery {
                email_prefix: Some("nobody".into()),
                ..q()
            },
            vec![],
        ),
        (
            "name prefix ad (first names)",
            ContactQuery {
                name_prefix: Some("ad".into()),
                ..q()
            },
            vec![&c.ada, &c.adele],
        ),
        (
            "name prefix HOP (last name)",
            ContactQuery {
                name_prefix: Some("HOP".into()),
                ..q()
            },
            vec![&c.grace],
        ),
        (
            "name prefix j (last name Johnson)",
            ContactQuery {
                name_prefix: Some("j".into()),
                ..q()
            },
            vec![&c.katherine],
        ),
        (
            "name prefix a (Ada, Alan, Adele)",
            ContactQuery {
                name_prefix: Some("a".into()),
                ..q()
            },
            vec![&c.ada, &c.alan, &c.adele],
        ),
        (
            "company prefix ANALYT",
            ContactQuery {
                company_prefix: Some("ANALYT".into()),
                ..q()
            },
            vec![&c.ada, &c.charles, &c.edsger],
        ),
        (
            "company prefix analytical engines l",
            ContactQuery {
                company_prefix: Some("analytical engines l".into()),
                ..q()
            },
            vec![&c.charles],
        ),
        (
            "email prefix with a % (not a wildcard)",
            ContactQuery {
                email_prefix: Some("a%".into()),
                ..q()
            },
            vec![],
        ),
        (
            "email prefix with a _ (not a wildcard)",
            ContactQuery {
                email_prefix: Some("a_a".into()),
                ..q()
            },
            vec![],
        ),
        (
            "name prefix %",
            ContactQuery {
                name_prefix: Some("%".into()),
                ..q()
            },
            vec![],
        ),
        (
            "company prefix with a _ (not a wildcard)",
            ContactQuery {
                company_prefix: Some("us_navy".into()),
                ..q()
            },
            vec![],
        ),
        (
            "company prefix x",
            ContactQuery {
                company_prefix: Some("x".into()),
                ..q()
            },
            vec![&c.adele],
        ),
    ];
    for (label, query, expected) in cases {
        assert_eq!(
            matching(store, t, query).await,
            ids(&expected),
            "search by {label}"
        );
    }
}

/// Lead sources, score range (inclusive) and the active flag filter on
/// their own.
pub async fn search_filters_by_lead_source_score_and_active(store: &DynStore) {
    let t = TenantId::new();
    let c = crowd(store, t).await;
    let q = ContactQuery::new;
    let everyone: Vec<&Contact> = c.in_creation_order().to_vec();
    let cases: Vec<(&str, ContactQuery, Vec<&Contact>)> = vec![
        (
            "lead sources referral or paid",
            ContactQuery {
                lead_sources: vec![LeadSource::Referral, LeadSource::Paid],
                ..q()
            },
            vec![&c.ada, &c.grace, &c.adele],
        ),
        (
            "lead source import",
            ContactQuery {
                lead_sources: vec![LeadSource::Import],
                ..q()
            },
            vec![&c.katherine],
        ),
        ("no lead source filter", q(), everyone.clone()),
        (
            "score 40 to 80",
            ContactQuery {
                min_score: Some(score(40)),
                max_score: Some(score(80)),
                ..q()
            },
            vec![&c.ada, &c.charles, &c.alan, &c.adele],
        ),
        (
            "score at least 90",
            ContactQuery {
                min_score: Some(score(90)),
                ..q()
            },
            vec![&c.grace],
        ),
        (
            "score at most 0",
            ContactQuery {
                max_score: Some(score(0)),
                ..q()
            },
            vec![&c.katherine],
        ),
        (
            "score exactly 40",
            ContactQuery {
                min_score: Some(score(40)),
                max_score: Some(score(40)),
                ..q()
            },
            vec![&c.charles, &c.adele],
        ),
        (
            "inactive",
            ContactQuery {
                active: Some(false),
                ..q()
            },
            vec![&c.alan],
        ),
        (
            "active",
            ContactQuery {
                active: Some(true),
                ..q()
            },
            everyone
                .iter()
                .copied()
                .filter(|x| x.id != c.alan.id)
                .collect(),
        ),
    ];
    for (label, query, expected) in cases {
        assert_eq!(
            matching(store, t, query).await,
            ids(&expected),
            "search by {label}"
        );
    }
}

/// Created and updated ranges include their start and exclude their end.
pub async fn search_filters_by_created_and_updated_ranges_including_start_excluding_end(
    store: &DynStore,
) {
    let t = TenantId::new();
    let c = crowd(store, t).await;
    let order = c.in_creation_order();
    for w in order.windows(2) {
        assert!(
            w[0].created_at < w[1].created_at,
            "contacts created in later transactions have later created_at"
        );
    }
    let q = ContactQuery::new;
    let created = |from: usize, until: usize| ContactQuery {
        created_from: Some(order[from].created_at),
        created_until: Some(order[until].created_at),
        ..q()
    };
    assert_eq!(
        matching(store, t, created(2, 5)).await,
        ids(&order[2..5]),
        "created in [grace, adele) holds grace, alan, katherine"
    );
    assert_eq!(
        matching(store, t, created(3, 3)).await,
        ids(&[]),
        "an empty created range matches nothing"
    );
    assert_eq!(
        matching(
            store,
            t,
            ContactQuery {
                created_from: Some(order[5].created_at),
                ..q()
            }
        )
        .await,
        ids(&order[5..]),
        "created from adele on"
    );
    assert_eq!(
        matching(
            store,
            t,
            ContactQuery {
                created_until: Some(order[1].created_at),
                ..q()
            }
        )
        .await,
        ids(&order[..1]),
        "created before charles"
    );

    // Update charles, then katherine, one after the other.
    tick().await;
    let mut updated = Vec::new();
    for who in [&c.charles, &c.katherine] {
        let u = ok(
            store
                .scope(t, &ctx())
                .update_contact(
                    who.id,
                    who.version,
                    ContactPatch {
                        title: Some(Some(JobTitle::parse("Updated").expect("title"))),
                        ..ContactPatch::default()
                    },
                )
                .await,
            "update",
        );
        updated.push(u);
        tick().await;
    }
    let (charles, katherine) = (&updated[0], &updated[1]);
    assert!(charles.updated_at < katherine.updated_at);
    assert_eq!(
        matching(
            store,
            t,
            ContactQuery {
                updated_from: Some(charles.updated_at),
                ..q()
            }
        )
        .await,
        ids(&[charles, katherine]),
        "updated from charles's update on"
    );
    assert_eq!(
        matching(
            store,
            t,
            ContactQuery {
                updated_from: Some(charles.updated_at),
                updated_until: Some(katherine.updated_at),
                ..q()
            }
        )
        .await,
        ids(&[charles]),
        "updated in [charles, katherine) holds charles only"
    );
    let untouched: Vec<&Contact> = order
        .iter()
        .copied()
        .filter(|x| x.id != charles.id && x.id != katherine.id)
        .collect();
    assert_eq!(
        matching(
            store,
            t,
            ContactQuery {
                updated_until: Some(charles.updated_at),
                ..q()
            }
        )
        .await,
        ids(&untouched),
        "updated before charles's update: everyone not updated since"
    );
}

/// Metadata containment follows `jsonb @>`: keys with equal values, nested
/// objects, array elements; strings compare exactly, numbers by value.
pub async fn search_filters_by_metadata_containment(store: &DynStore) {
    let t = TenantId::new();
    let c = crowd(store, t).await;
    let q = |m: Value| ContactQuery {
        metadata_contains: Some(metadata(m)),
        ..ContactQuery::new()
    };
    let everyone: Vec<&Contact> = c.in_creation_order().to_vec();
    let cases: Vec<(&str, ContactQuery, Vec<&Contact>)> = vec![
        (
            "plan pro (case-sensitive)",
            q(json!({"plan": "pro"})),
            vec![&c.ada, &c.grace],
        ),
        ("plan PRO", q(json!({"plan": "PRO"})), vec![&c.adele]),
        (
            "nested city London",
            q(json!({"address": {"city": "London"}})),
            vec![&c.ada],
        ),
        (
            "nested address (any)",
            q(json!({"address": {}})),
            vec![&c.ada, &c.grace],
        ),
        (
            "array element vip",
            q(json!({"tags": ["vip"]})),
            vec![&c.ada, &c.alan],
        ),
        (
            "array elements beta and vip, any order",
            q(json!({"tags": ["beta", "vip"]})),
            vec![&c.ada],
        ),
        (
            "array element beta",
            q(json!({"tags": ["beta"]})),
            vec![&c.ada, &c.charles],
        ),
        (
            "nested array element",
            q(json!({"tags": [["nested"]]})),
            vec![&c.edsger],
        ),
        (
            "object in an array",
            q(json!({"tags": [{"k": "v"}]})),
            vec![&c.edsger],
        ),
        (
            "numbers by value",
            q(json!({"seats": 3})),
            vec![&c.alan, &c.adele],
        ),
        (
            "two keys",
            q(json!({"plan": "pro", "address": {"city": "Arlington"}})),
            vec![&c.grace],
        ),
        ("a missing key", q(json!({"nope": 1})), vec![]),
        ("the empty object", q(json!({})), everyone),
    ];
    for (label, query, expected) in cases {
        assert_eq!(
            matching(store, t, query).await,
            ids(&expected),
            "metadata containment: {label}"
        );
    }
}

/// Filters combine with AND.
pub async fn search_combines_filters_with_and(store: &DynStore) {
    let t = TenantId::new();
    let c = crowd(store, t).await;
    let cases: Vec<(&str, ContactQuery, Vec<&Contact>)> = vec![
        (
            "company analyt and score at least 50",
            ContactQuery {
                company_prefix: Some("analyt".into()),
                min_score: Some(score(50)),
                ..ContactQuery::new()
            },
            vec![&c.ada],
        ),
        (
            "active, referral, plan pro",
            ContactQuery {
                active: Some(true),
                lead_sources: vec![LeadSource::Referral],
                metadata_contains: Some(metadata(json!({"plan": "pro"}))),
                ..ContactQuery::new()
            },
            vec![&c.ada],
        ),
        (
            "name a, tag vip, inactive",
            ContactQuery {
                name_prefix: Some("a".into()),
                metadata_contains: Some(metadata(json!({"tags": ["vip"]}))),
                active: Some(false),
                ..ContactQuery::new()
            },
            vec![&c.alan],
        ),
        (
            "email ad and company x and created from ada",
            ContactQuery {
                email_prefix: Some("ad".into()),
                company_prefix: Some("X".into()),
                created_from: Some(c.ada.created_at),
                ..ContactQuery::new()
            },
            vec![&c.adele],
        ),
        (
            "organic with score at most 10",
            ContactQuery {
                lead_sources: vec![LeadSource::Organic],
                max_score: Some(score(10)),
                ..ContactQuery::new()
            },
            vec![&c.edsger],
        ),
        (
            "contradicting filters",
            ContactQuery {
                email_prefix: Some("ada".into()),
                name_prefix: Some("grace".into()),
                ..ContactQuery::new()
            },
            vec![],
        ),
    ];
    for (label, query, expected) in cases {
        assert_eq!(
            matching(store, t, query).await,
            ids(&expected),
            "combined filters: {label}"
        );
    }
}

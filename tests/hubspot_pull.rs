//! The incremental pull against the local HubSpot-shaped server, whose
//! search stops at 10,000 results per query and orders ties its own way:
//! every record changed in the window comes exactly once, also when 20,000
//! of them share one last-modified time.

use std::{collections::HashMap, time::Duration};

use crm_core::hubspot::{
    AccessToken, HubSpotClient, HubSpotConfig, ObjectType,
    fake::{FakeConfig, FakeHubSpot, SeedRecord},
};

const T0: i64 = 1_750_000_000_000;

fn at(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap()
}

async fn setup() -> (FakeHubSpot, HubSpotClient) {
    // HubSpot's budgets are for the benchmark; here the test's time counts.
    let fake = FakeHubSpot::start(FakeConfig {
        budget: None,
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let config = HubSpotConfig::builder(AccessToken::new("pat-na1-pull"))
        .base_url(fake.base_url())
        .requests_per_10s(1_000_000)
        .search_requests_per_second(100_000)
        .retry_delays(Duration::from_millis(1), Duration::from_millis(10))
        .build()
        .unwrap();
    (fake, HubSpotClient::new(config).unwrap())
}

fn contact(i: usize, modified_ms: i64) -> SeedRecord {
    SeedRecord {
        properties: [("email".to_string(), format!("p{i}@example.com"))].into(),
        modified_ms,
    }
}

#[tokio::test]
async fn a_pull_of_50000_records_20000_sharing_one_time_brings_each_exactly_once() {
    let (fake, client) = setup().await;
    // Changed long before the window: not pulled.
    fake.seed(
        "contacts",
        (0..100).map(|i| contact(100_000 + i, T0 - 3_600_000)),
    );
    let mut expected = Vec::new();
    expected.extend(fake.seed(
        "contacts",
        (0..15_000).map(|i| contact(i, T0 - 15_000 + i as i64)),
    ));
    expected.extend(fake.seed("contacts", (15_000..35_000).map(|i| contact(i, T0))));
    expected.extend(fake.seed(
        "contacts",
        (35_000..50_000).map(|i| contact(i, T0 + 1 + (i as i64 - 35_000) / 3)),
    ));

    let mut pull = client.pull_modified_since(ObjectType::Contacts, at(T0 - 10_000), &["email"]);
    let mut times: HashMap<u64, usize> = HashMap::new();
    while let Some(page) = pull.next_page().await.unwrap() {
        assert!(!page.is_empty() && page.len() <= 200);
        for r in page {
            *times.entry(r.id.parse().unwrap()).or_default() += 1;
        }
    }
    let twice: Vec<_> = times.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{} records came more than once",
        twice.len()
    );
    assert_eq!(times.len(), 50_000);
    assert!(expected.iter().all(|id| times.contains_key(id)));
    assert_eq!(pull.window(), at(T0 + 5_000));
    let searches = fake.requests_to("POST /crm/v3/objects/contacts/search");
    assert!(searches >= 250, "{searches}");
}

#[tokio::test]
async fn a_pull_with_nothing_changed_brings_only_the_overlap() {
    let (fake, client) = setup().await;
    fake.seed("contacts", (0..10).map(|i| contact(i, T0 - 60_000)));
    fake.seed("contacts", (10..15).map(|i| contact(i, T0 - 20_000)));
    let (records, window) = client
        .pull_modified_since(ObjectType::Contacts, at(T0), &["email"])
        .collect_all()
        .await
        .unwrap();
    // Only what changed in the 30 s before the window start.
    assert_eq!(records.len(), 5);
    assert_eq!(window, at(T0), "nothing newer than the window: it stays");
    let (records, window) = client
        .pull_modified_since(ObjectType::Contacts, at(T0 + 31_000), &["email"])
        .collect_all()
        .await
        .unwrap();
    assert!(records.is_empty());
    assert_eq!(window, at(T0 + 31_000));
}

#[tokio::test]
async fn deals_are_pulled_by_their_own_last_modified_property() {
    let (fake, client) = setup().await;
    let ids = fake.seed(
        "deals",
        (0..450).map(|i| SeedRecord {
            properties: [("dealname".to_string(), format!("deal {i}"))].into(),
            modified_ms: T0 + (i as i64 % 7),
        }),
    );
    let (records, window) = client
        .pull_modified_since(ObjectType::Deals, at(T0), &["dealname"])
        .collect_all()
        .await
        .unwrap();
    assert_eq!(records.len(), ids.len());
    assert!(records[0].property("hs_lastmodifieddate").is_some());
    assert_eq!(window, at(T0 + 6));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

    /// Any mix of shared and distinct times, any page size: each record once.
    #[test]
    fn any_pull_brings_each_changed_record_exactly_once(
        offsets in proptest::collection::vec(0i64..6, 1..250),
        page_size in 1u32..25,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (fake, client) = setup().await;
            let ids = fake.seed(
                "contacts",
                offsets.iter().enumerate().map(|(i, o)| contact(i, T0 + o * 1_000)),
            );
            let mut pull = client
                .pull_modified_since(ObjectType::Contacts, at(T0), &["email"])
                .with_page_size(page_size);
            let mut times: HashMap<u64, usize> = HashMap::new();
            while let Some(page) = pull.next_page().await.unwrap() {
                for r in page {
                    *times.entry(r.id.parse().unwrap()).or_default() += 1;
                }
            }
            assert!(times.values().all(|n| *n == 1), "a record came twice");
            assert_eq!(times.len(), ids.len());
            let latest = offsets.iter().max().unwrap();
            assert_eq!(pull.window(), at(T0 + latest * 1_000));
        });
    }
}

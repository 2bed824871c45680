//! The HubSpot client against the local HubSpot-shaped server: its
//! configuration, retries by HubSpot's rules, the circuit breaker, the
//! client-side budget, and each batch input's outcome.

use std::{collections::HashMap, time::Duration};

use crm_core::hubspot::{
    AccessToken, BreakerState, DealCreate, Filter, FilterGroup, FilterOperator, HubSpotClient,
    HubSpotConfig, HubSpotConfigBuilder, HubSpotError, InputOutcome, ObjectType, RateLimitPolicy,
    SearchRequest, UpsertInput,
    fake::{FakeConfig, FakeHubSpot, Fault, SeedRecord},
};
use tokio::time::Instant;

const TOKEN: &str = "pat-na1-0f1e2d3c-secret-token-value";
const UPSERT: &str = "POST /crm/v3/objects/contacts/batch/upsert";

fn builder(fake: &FakeHubSpot) -> HubSpotConfigBuilder {
    HubSpotConfig::builder(AccessToken::new(TOKEN))
        .base_url(fake.base_url())
        .retry_delays(Duration::from_millis(1), Duration::from_millis(20))
        .timeout(Duration::from_secs(5))
}

async fn fake() -> FakeHubSpot {
    FakeHubSpot::start(FakeConfig {
        token: Some(TOKEN.into()),
        ..FakeConfig::default()
    })
    .await
    .unwrap()
}

fn client(b: HubSpotConfigBuilder) -> HubSpotClient {
    HubSpotClient::new(b.build().unwrap()).unwrap()
}

fn contacts(n: usize, prefix: &str) -> Vec<UpsertInput> {
    (0..n)
        .map(|i| UpsertInput::new(format!("{prefix}{i}@example.com")).with("firstname", "Ada"))
        .collect()
}

fn fields(e: &HubSpotError) -> Vec<(String, &'static str)> {
    match e {
        HubSpotError::Config(v) => v
            .as_slice()
            .iter()
            .map(|f| (f.field.clone(), f.code))
            .collect(),
        other => panic!("not a config error: {other:?}"),
    }
}

// ------------------------------------------------------------ configuration

#[test]
fn every_configuration_problem_is_reported_at_once_naming_its_variable() {
    let env: HashMap<&str, &str> = HashMap::from([
        ("HUBSPOT_BASE_URL", "https://api.hubapi.com/?hapikey=x"),
        ("HUBSPOT_MAX_RETRIES", "9"),
        ("HUBSPOT_REQUESTS_PER_10S", "lots"),
        ("HUBSPOT_BREAKER_COOLDOWN_MS", "0"),
        ("HUBSPOT_TIMEOUT_MS", "0"),
    ]);
    let e = HubSpotConfig::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap_err();
    assert_eq!(
        fields(&e),
        vec![
            ("HUBSPOT_REQUESTS_PER_10S".to_string(), "invalid_format"),
            ("HUBSPOT_TOKEN".to_string(), "required"),
            ("HUBSPOT_BASE_URL".to_string(), "invalid_format"),
            ("HUBSPOT_TIMEOUT_MS".to_string(), "out_of_range"),
            ("HUBSPOT_MAX_RETRIES".to_string(), "out_of_range"),
            ("HUBSPOT_BREAKER_COOLDOWN_MS".to_string(), "out_of_range"),
        ]
    );
}

#[test]
fn a_complete_environment_gives_a_configuration() {
    let env: HashMap<&str, &str> = HashMap::from([
        ("HUBSPOT_TOKEN", TOKEN),
        ("HUBSPOT_MAX_RETRIES", "5"),
        ("HUBSPOT_REQUESTS_PER_10S", "190"),
    ]);
    let c = HubSpotConfig::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap();
    assert_eq!(c.requests_per_10s(), 190);
    assert_eq!(c.max_retries(), 5);
    assert_eq!(c.base_url().as_str(), "https://api.hubapi.com/");
}

#[test]
fn a_legacy_api_key_is_refused_saying_why_without_quoting_it() {
    let key = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";
    let e = HubSpotConfig::from_lookup(|k| (k == "HUBSPOT_TOKEN").then(|| key.to_string()))
        .unwrap_err();
    assert_eq!(
        fields(&e),
        vec![("HUBSPOT_TOKEN".to_string(), "legacy_api_key")]
    );
    let text = e.to_string();
    assert!(
        text.contains("retired in 2022") && text.contains("pat-"),
        "{text}"
    );
    assert!(!text.contains(key) && !format!("{e:?}").contains(key));
}

#[test]
fn the_builder_names_its_fields() {
    let e = HubSpotConfig::builder(AccessToken::new(" "))
        .max_retries(6)
        .requests_per_10s(0)
        .build()
        .unwrap_err();
    assert_eq!(
        fields(&e),
        vec![
            ("token".to_string(), "required"),
            ("max_retries".to_string(), "out_of_range"),
            ("requests_per_10s".to_string(), "out_of_range"),
        ]
    );
}

// ------------------------------------------------------------ retries

#[tokio::test]
async fn a_429_with_retry_after_is_retried_after_that_wait() {
    let fake = fake().await;
    let client = client(builder(&fake));
    fake.push_fault(Fault::RateLimited {
        policy: "TEN_SECONDLY_ROLLING".into(),
        retry_after_secs: Some(1),
    });
    let start = Instant::now();
    let outcome = client
        .upsert_contacts_by_email(&contacts(5, "r"))
        .await
        .unwrap();
    assert!(outcome.all_written());
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(fake.requests_to(UPSERT), 2);
    assert_eq!(fake.counters().rate_limited, 1);
}

#[tokio::test]
async fn a_429_without_retry_after_waits_as_its_policy_says() {
    let fake = fake().await;
    let client = client(builder(&fake).rolling_window(Duration::from_millis(400)));

    // The rolling window: wait it out (the backoff alone would be ~1 ms).
    fake.push_fault(Fault::RateLimited {
        policy: "TEN_SECONDLY_ROLLING".into(),
        retry_after_secs: None,
    });
    let start = Instant::now();
    assert!(
        client
            .upsert_contacts_by_email(&contacts(2, "p"))
            .await
            .unwrap()
            .all_written()
    );
    assert!(
        start.elapsed() >= Duration::from_millis(400),
        "{:?}",
        start.elapsed()
    );

    // The search endpoints' per-second limit: about a second.
    fake.push_fault(Fault::RateLimited {
        policy: "SECONDLY".into(),
        retry_after_secs: None,
    });
    let start = Instant::now();
    client
        .search(&ObjectType::Contacts, &SearchRequest::default())
        .await
        .unwrap();
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(fake.counters().rate_limited, 2);
}

#[tokio::test]
async fn the_daily_limit_is_not_retried_and_comes_back_typed() {
    let fake = fake().await;
    let client = client(builder(&fake));
    fake.push_fault(Fault::RateLimited {
        policy: "DAILY".into(),
        retry_after_secs: None,
    });
    let e = client
        .search(&ObjectType::Contacts, &SearchRequest::default())
        .await
        .unwrap_err();
    let HubSpotError::RateLimited { policy, body, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(policy, &Some(RateLimitPolicy::Daily));
    assert!(body.correlation_id.is_some());
    assert!(!e.is_retryable());
    assert_eq!(fake.counters().total, 1);
}

#[tokio::test]
async fn server_errors_are_retried_until_success() {
    let fake = fake().await;
    let client = client(builder(&fake));
    fake.push_fault(Fault::Status(503));
    fake.push_fault(Fault::Status(500));
    assert!(
        client
            .upsert_contacts_by_email(&contacts(3, "s"))
            .await
            .unwrap()
            .all_written()
    );
    assert_eq!(fake.requests_to(UPSERT), 3);
    assert_eq!(fake.records("contacts").len(), 3);
}

#[tokio::test]
async fn exhausted_retries_give_hubspots_error_fields() {
    let fake = fake().await;
    let client = client(builder(&fake).max_retries(2));
    for _ in 0..3 {
        fake.push_fault(Fault::Status(502));
    }
    let e = client
        .search(&ObjectType::Contacts, &SearchRequest::default())
        .await
        .unwrap_err();
    let HubSpotError::Api { status, body } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(*status, 502);
    assert_eq!(body.category.as_deref(), Some("INTERNAL_ERROR"));
    assert_eq!(body.message.as_deref(), Some("internal error"));
    assert!(body.correlation_id.is_some());
    assert!(e.is_retryable());
    assert_eq!(fake.counters().total, 3, "one try and two retries");
}

#[tokio::test]
async fn a_timeout_is_retried() {
    let fake = fake().await;
    let client = client(builder(&fake).timeout(Duration::from_millis(200)));
    fake.push_fault(Fault::Delay(Duration::from_millis(1_000)));
    client
        .search(&ObjectType::Contacts, &SearchRequest::default())
        .await
        .unwrap();
    assert_eq!(fake.counters().total, 2);

    let no_retry = self::client(
        builder(&fake)
            .timeout(Duration::from_millis(200))
            .max_retries(0),
    );
    fake.push_fault(Fault::Delay(Duration::from_millis(1_000)));
    let e = no_retry
        .search(&ObjectType::Contacts, &SearchRequest::default())
        .await
        .unwrap_err();
    assert!(matches!(e, HubSpotError::Timeout), "{e:?}");
}

// ------------------------------------------------------------ breaker

#[tokio::test]
async fn the_breaker_opens_refuses_without_calling_half_opens_for_one_probe_and_closes() {
    let fake = fake().await;
    let cooldown = Duration::from_millis(300);
    let client = client(builder(&fake).max_retries(0).breaker(3, cooldown));
    let request = SearchRequest::default();
    let search = || client.search(&ObjectType::Contacts, &request);

    fake.set_outage(Some(503));
    for _ in 0..3 {
        assert_eq!(search().await.unwrap_err().status(), Some(503));
    }
    assert!(matches!(client.breaker_state(), BreakerState::Open { .. }));
    let served = fake.counters().total;
    let e = search().await.unwrap_err();
    assert!(matches!(e, HubSpotError::CircuitOpen { .. }), "{e:?}");
    assert_eq!(fake.counters().total, served, "refused without a request");

    // After the cool-down, one probe; it fails, so open again.
    tokio::time::sleep(cooldown).await;
    assert_eq!(
        client.breaker_state(),
        BreakerState::HalfOpen {
            probe_in_flight: false
        }
    );
    assert_eq!(search().await.unwrap_err().status(), Some(503));
    assert_eq!(fake.counters().total, served + 1);
    assert!(matches!(client.breaker_state(), BreakerState::Open { .. }));

    // The service is back: of two concurrent calls, exactly one probes.
    tokio::time::sleep(cooldown).await;
    fake.set_outage(None);
    fake.set_latency(Duration::from_millis(200));
    let (a, b) = tokio::join!(search(), search());
    let refused = [&a, &b]
        .iter()
        .filter(|r| matches!(r, Err(HubSpotError::CircuitOpen { .. })))
        .count();
    assert_eq!(refused, 1, "{a:?} {b:?}");
    assert!(a.is_ok() || b.is_ok());
    assert_eq!(fake.counters().total, served + 2);
    assert_eq!(
        client.breaker_state(),
        BreakerState::Closed {
            consecutive_failures: 0
        }
    );
    fake.set_latency(Duration::ZERO);
    search().await.unwrap();
}

// ------------------------------------------------------------ budget

#[tokio::test]
async fn a_burst_of_2000_upserts_never_meets_a_429() {
    let fake = fake().await;
    // HubSpot's time scaled down: 10 requests per rolling second on both sides.
    let window = Duration::from_secs(1);
    fake.set_budget(Some(10), window);
    let client = client(builder(&fake).requests_per_10s(10).rolling_window(window));
    let tasks: Vec<_> = (0..4)
        .map(|t| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .upsert_contacts_by_email(&contacts(500, &format!("burst{t}-")))
                    .await
            })
        })
        .collect();
    for t in tasks {
        assert!(t.await.unwrap().unwrap().all_written());
    }
    let c = fake.counters();
    assert_eq!(c.rate_limited, 0, "{c:?}");
    assert_eq!(c.total, 20);
    assert!(c.peak_in_window <= 10, "{c:?}");
    assert_eq!(fake.records("contacts").len(), 2_000);
}

#[tokio::test]
async fn searches_keep_within_the_per_second_search_limit() {
    let fake = FakeHubSpot::start(FakeConfig {
        token: Some(TOKEN.into()),
        search_per_second: Some(5),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let client = client(builder(&fake).max_retries(0));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .search(&ObjectType::Contacts, &SearchRequest::default())
                    .await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(fake.counters().rate_limited, 0);
}

#[tokio::test]
async fn the_fake_enforces_its_budget_on_a_client_that_ignores_it() {
    // The check above would be empty if the fake never refused: a client
    // told the budget is larger meets 429s and retries through them.
    let fake = fake().await;
    fake.set_budget(Some(5), Duration::from_millis(500));
    let client = client(
        builder(&fake)
            .requests_per_10s(1_000)
            .rolling_window(Duration::from_millis(500))
            .max_retries(5),
    );
    let outcome = client
        .upsert_contacts_by_email(&contacts(1_000, "over"))
        .await
        .unwrap();
    assert!(outcome.all_written(), "{:?}", outcome.stopped_by);
    assert!(fake.counters().budget_exceeded > 0);
}

// ------------------------------------------------------------ operations

#[tokio::test]
async fn each_upsert_input_gets_its_own_outcome_across_batches() {
    let fake = fake().await;
    let client = client(builder(&fake));
    let mut inputs = contacts(250, "row");
    inputs[17] = UpsertInput::new("not-an-email");
    fake.reject_emails(["row120@example.com", "row249@example.com"]);
    let outcome = client.upsert_contacts_by_email(&inputs).await.unwrap();
    assert!(outcome.stopped_by.is_none());
    assert_eq!(fake.requests_to(UPSERT), 3);
    let rejected: Vec<usize> = outcome.rejected().map(|(i, _)| i).collect();
    assert_eq!(rejected, vec![17, 120, 249]);
    for (i, o) in outcome.outcomes.iter().enumerate() {
        if let InputOutcome::Written { record, created } = o {
            assert_eq!(record.property("email"), Some(inputs[i].id.as_str()));
            assert_eq!(*created, Some(true));
        }
    }
    assert_eq!(outcome.written().count(), 247);
    let (_, why) = outcome.rejected().next().unwrap();
    assert_eq!(why.category.as_deref(), Some("VALIDATION_ERROR"));

    // Again, in other casing: the same records, updated, not created.
    let again: Vec<UpsertInput> = (0..3)
        .map(|i| UpsertInput::new(format!("ROW{i}@Example.com")).with("lastname", "Lovelace"))
        .collect();
    let outcome = client.upsert_contacts_by_email(&again).await.unwrap();
    assert!(outcome.all_written());
    assert!(outcome.outcomes.iter().all(|o| matches!(
        o,
        InputOutcome::Written {
            created: Some(false),
            ..
        }
    )));
    assert_eq!(fake.records("contacts").len(), 247);
}

#[tokio::test]
async fn a_call_refused_whole_stops_the_batch_and_says_which_inputs_were_not_sent() {
    let fake = fake().await;
    let client = client(builder(&fake));
    let inputs = contacts(250, "stop");
    // The first call goes through; the second is refused whole.
    fake.push_fault_at(2, Fault::Status(400));
    let outcome = client.upsert_contacts_by_email(&inputs).await.unwrap();
    let stopped = outcome.stopped_by.as_ref().expect("the second call failed");
    assert_eq!(stopped.status(), Some(400));
    assert_eq!(outcome.written().count(), 100);
    assert!(
        outcome.outcomes[100..]
            .iter()
            .all(|o| *o == InputOutcome::NotSent)
    );
    assert_eq!(
        fake.requests_to(UPSERT),
        2,
        "a 400 is not retried, and the rest is not sent"
    );
}

#[tokio::test]
async fn duplicate_or_empty_ids_are_refused_before_sending() {
    let fake = fake().await;
    let client = client(builder(&fake));
    let e = client
        .upsert_contacts_by_email(&[
            UpsertInput::new("a@example.com"),
            UpsertInput::new(""),
            UpsertInput::new("A@example.com"),
        ])
        .await
        .unwrap_err();
    let HubSpotError::InvalidRequest(errors) = e else {
        panic!()
    };
    let named: Vec<&str> = errors.as_slice().iter().map(|f| f.field.as_str()).collect();
    assert_eq!(named, vec!["inputs[1].id", "inputs[2].id"]);
    assert_eq!(fake.counters().total, 0);
}

#[tokio::test]
async fn a_batch_read_finds_by_email_or_id_and_names_the_missing() {
    let fake = fake().await;
    let client = client(builder(&fake));
    client
        .upsert_contacts_by_email(&contacts(120, "read"))
        .await
        .unwrap();
    let mut emails: Vec<String> = (0..120).map(|i| format!("read{i}@example.com")).collect();
    emails.push("nobody@example.com".into());
    let read = client
        .batch_read(
            &ObjectType::Contacts,
            &emails,
            Some("email"),
            &["email", "firstname"],
        )
        .await
        .unwrap();
    assert_eq!(read.found.len(), 120);
    assert_eq!(read.missing, vec!["nobody@example.com".to_string()]);
    assert_eq!(read.found[0].property("firstname"), Some("Ada"));

    let ids: Vec<String> = read.found.iter().take(3).map(|r| r.id.clone()).collect();
    let by_id = client
        .batch_read(&ObjectType::Contacts, &ids, None, &["email"])
        .await
        .unwrap();
    assert_eq!(by_id.found.len(), 3);
    assert!(by_id.missing.is_empty());
}

#[tokio::test]
async fn deals_are_created_with_their_contact_and_company() {
    let fake = fake().await;
    let client = client(builder(&fake));
    let contact = client
        .upsert_contacts_by_email(&contacts(1, "buyer"))
        .await
        .unwrap();
    let contact_id = contact.written().next().unwrap().1.id.clone();
    let company_id = fake.seed("companies", [SeedRecord::default()])[0].to_string();
    let deal = |name: &str, contact: &str, company: Option<&str>| DealCreate {
        properties: [("dealname".to_string(), name.to_string())].into(),
        contact_id: contact.to_string(),
        company_id: company.map(str::to_string),
    };
    let outcome = client
        .create_deals(&[
            deal("Licence", &contact_id, Some(&company_id)),
            deal("Orphan", "999999", None),
            deal("Support", &contact_id, None),
        ])
        .await
        .unwrap();
    assert!(matches!(outcome.outcomes[1], InputOutcome::Rejected(_)));
    assert_eq!(outcome.written().count(), 2);
    let deals = fake.records("deals");
    let licence = deals
        .iter()
        .find(|d| d.properties["dealname"] == "Licence")
        .unwrap();
    let cid: u64 = contact_id.parse().unwrap();
    let coid: u64 = company_id.parse().unwrap();
    assert_eq!(
        licence.associations,
        vec![
            ("contacts".to_string(), cid, 3),
            ("companies".to_string(), coid, 341)
        ]
    );
    let (_, written) = outcome.written().nth(1).unwrap();
    assert_eq!(written.property("dealname"), Some("Support"));

    // The association types were asked for once.
    client
        .create_deals(&[deal("More", &contact_id, None)])
        .await
        .unwrap();
    assert_eq!(
        fake.requests_to("GET /crm/v4/associations/deals/contacts/labels"),
        1
    );
    assert_eq!(
        fake.requests_to("GET /crm/v4/associations/deals/companies/labels"),
        1
    );
}

#[tokio::test]
async fn a_batch_update_by_id_names_the_records_it_could_not_find() {
    let fake = fake().await;
    let client = client(builder(&fake));
    let ids = fake.seed("companies", (0..3).map(|_| SeedRecord::default()));
    let inputs = vec![
        UpsertInput::new(ids[2].to_string()).with("name", "Analytical Engines"),
        UpsertInput::new("424242").with("name", "Nobody"),
        UpsertInput::new(ids[0].to_string()).with("name", "Difference Engines"),
    ];
    let outcome = client
        .batch_update(&ObjectType::Companies, &inputs)
        .await
        .unwrap();
    let InputOutcome::Written { record, .. } = &outcome.outcomes[0] else {
        panic!("{:?}", outcome.outcomes[0])
    };
    assert_eq!(record.property("name"), Some("Analytical Engines"));
    assert!(
        matches!(&outcome.outcomes[1], InputOutcome::Rejected(e) if e.category.as_deref() == Some("OBJECT_NOT_FOUND"))
    );
    assert!(
        matches!(&outcome.outcomes[2], InputOutcome::Written { record, .. } if record.id == ids[0].to_string())
    );
    let held = fake.records("companies");
    assert_eq!(held[0].properties["name"], "Difference Engines");
    assert!(!held[1].properties.contains_key("name"));
}

#[tokio::test]
async fn a_search_beyond_hubspots_bounds_is_refused_before_sending() {
    let fake = fake().await;
    let client = client(builder(&fake));
    let filter = Filter::new("email", FilterOperator::HasProperty, "");
    let request = SearchRequest {
        filter_groups: vec![
            FilterGroup {
                filters: vec![filter.clone(); 11]
            };
            6
        ],
        limit: 201,
        ..SearchRequest::default()
    };
    let e = client
        .search(&ObjectType::Contacts, &request)
        .await
        .unwrap_err();
    let HubSpotError::InvalidRequest(errors) = e else {
        panic!()
    };
    let named: Vec<&str> = errors.as_slice().iter().map(|f| f.field.as_str()).collect();
    assert_eq!(named[0], "filterGroups");
    assert!(named.contains(&"filterGroups[5].filters") && named.contains(&"limit"));
    assert_eq!(fake.counters().total, 0);
}

#[tokio::test]
async fn a_search_filters_sorts_and_pages() {
    let fake = fake().await;
    let client = client(builder(&fake));
    fake.seed(
        "contacts",
        (0..450).map(|i| SeedRecord {
            properties: [("email".to_string(), format!("s{i}@example.com"))].into(),
            modified_ms: 1_700_000_000_000 + i,
        }),
    );
    let mut request = SearchRequest {
        filter_groups: vec![FilterGroup {
            filters: vec![Filter::new(
                "lastmodifieddate",
                FilterOperator::Gte,
                (1_700_000_000_000i64 + 100).to_string(),
            )],
        }],
        sorts: vec![crm_core::hubspot::Sort {
            property_name: "lastmodifieddate".into(),
            direction: crm_core::hubspot::SortDirection::Descending,
        }],
        properties: vec!["email".into()],
        ..SearchRequest::default()
    };
    let mut seen = Vec::new();
    loop {
        let page = client
            .search(&ObjectType::Contacts, &request)
            .await
            .unwrap();
        assert_eq!(page.total, 350);
        seen.extend(
            page.results
                .iter()
                .map(|r| r.property("email").unwrap().to_string()),
        );
        match page.next_after {
            Some(a) => request.after = Some(a),
            None => break,
        }
    }
    assert_eq!(seen.len(), 350);
    assert_eq!(seen[0], "s449@example.com");
    assert_eq!(seen[349], "s100@example.com");
}

/// Every operation's future can run in a spawned task.
#[allow(dead_code, clippy::let_underscore_future)]
fn operations_are_send(client: &HubSpotClient, pull: &mut crm_core::hubspot::ModifiedSincePull) {
    fn send<T: Send>(_: T) {}
    send(client.upsert_contacts_by_email(&[]));
    send(client.batch_update(&ObjectType::Deals, &[]));
    send(client.batch_create(&ObjectType::Companies, &[]));
    send(client.create_deals(&[]));
    send(client.batch_read(&ObjectType::Contacts, &[], None, &[]));
    send(client.search(&ObjectType::Contacts, &SearchRequest::default()));
    send(client.association_type_ids());
    send(pull.next_page());
    send(
        client
            .clone()
            .pull_modified_since(ObjectType::Contacts, chrono::Utc::now(), &[]),
    );
}

//! HubSpot answers a pull must survive, from a local scripted server: a
//! cursor that does not advance, record times in the future or past year
//! 9999, a property of the wrong JSON type, a `Retry-After` far off.
#![cfg(feature = "hubspot-fake")]

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use crm_core::{
    Actor, Context, InMemoryStore, Store, TenantId,
    domain::{EntityKind, ExternalSystem},
    hubspot::{AccessToken, HubSpotClient, HubSpotConfig, HubSpotError, HubSpotSync, ObjectType},
};
use serde_json::{Value, json};

type Script = Arc<dyn Fn(&Value, u64) -> (u16, Vec<(&'static str, String)>, Value) + Send + Sync>;

#[derive(Clone)]
struct Srv {
    script: Script,
    n: Arc<AtomicU64>,
}

async fn handle(State(s): State<Srv>, body: String) -> Response {
    let n = s.n.fetch_add(1, Ordering::SeqCst) + 1;
    let req: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let (status, headers, body) = (s.script)(&req, n);
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.insert(k, HeaderValue::from_str(&v).unwrap());
    }
    h.insert("content-type", HeaderValue::from_static("application/json"));
    (StatusCode::from_u16(status).unwrap(), h, body.to_string()).into_response()
}

async fn serve(script: Script) -> (String, Arc<AtomicU64>) {
    let n = Arc::new(AtomicU64::new(0));
    let app = Router::new()
        .route("/crm/v3/objects/contacts/search", post(handle))
        .with_state(Srv {
            script,
            n: n.clone(),
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}"), n)
}

fn client(base: &str, retries: u32) -> HubSpotClient {
    let config = HubSpotConfig::builder(AccessToken::new("pat-na1-hostile"))
        .base_url(base)
        .requests_per_10s(1_000_000)
        .search_requests_per_second(100_000)
        .retry_delays(Duration::from_millis(1), Duration::from_millis(10))
        .max_retries(retries)
        .build()
        .unwrap();
    HubSpotClient::new(config).unwrap()
}

fn rec(id: u64, email: &str, lm: &str) -> Value {
    json!({"id": id.to_string(), "properties": {"email": email, "firstname": "Ann",
        "lastname": format!("L{id}"), "lastmodifieddate": lm, "hs_object_id": id.to_string()},
        "archived": false})
}

fn ms_iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

const T0: i64 = 1_750_000_000_000;

/// A server whose cursor never advances: each answer is the same full page
/// of records sharing one time, always with `paging.next.after = "200"`.
/// The pull stops with a typed error after a few searches rather than
/// spin for good.
#[tokio::test]
async fn a_cursor_that_never_advances_does_not_hang_the_pull() {
    let script: Script = Arc::new(|_req, _n| {
        let results: Vec<Value> = (1..=200)
            .map(|i| rec(i, &format!("p{i}@example.com"), &ms_iso(T0)))
            .collect();
        (
            200,
            vec![],
            json!({"total": 200, "results": results, "paging": {"next": {"after": "200"}}}),
        )
    });
    let (base, n) = serve(script).await;
    let c = client(&base, 0);
    let start = chrono::DateTime::from_timestamp_millis(T0 - 1000).unwrap();
    let mut pull = c.pull_modified_since(ObjectType::Contacts, start, &["email"]);
    let mut pages = 0;
    let r = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match pull.next_page().await {
                Ok(Some(_)) => pages += 1,
                Ok(None) => return Ok(()),
                Err(e) => return Err(e),
            }
            if pages > 1000 {
                return Ok(());
            }
        }
    })
    .await;
    let reqs = n.load(Ordering::SeqCst);
    let r = r.expect("the pull ends");
    assert!(
        matches!(r, Err(HubSpotError::Decode(_))),
        "a typed error, not {r:?}"
    );
    assert!(
        reqs < 10,
        "{reqs} searches, {pages} pages before it stopped"
    );
}

/// Same, with a small page (3 records at distinct times) and a cursor that
/// repeats: the pull gives the page once, then a typed error, not the same
/// records for good.
#[tokio::test]
async fn a_repeated_cursor_on_a_short_page_does_not_loop_forever() {
    let script: Script = Arc::new(|_req, _n| {
        let results: Vec<Value> = (1..=3)
            .map(|i| rec(i, &format!("p{i}@example.com"), &ms_iso(T0 + i as i64)))
            .collect();
        (
            200,
            vec![],
            json!({"total": 3, "results": results, "paging": {"next": {"after": "3"}}}),
        )
    });
    let (base, n) = serve(script).await;
    let c = client(&base, 0);
    let start = chrono::DateTime::from_timestamp_millis(T0 - 1000).unwrap();
    let mut pull = c.pull_modified_since(ObjectType::Contacts, start, &["email"]);
    let mut pages = 0u64;
    let mut outcome = String::from("still running");
    let _ = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match pull.next_page().await {
                Ok(Some(_)) => pages += 1,
                Ok(None) => {
                    outcome = "ended".into();
                    return;
                }
                Err(e) => {
                    outcome = format!("error: {e}");
                    return;
                }
            }
            if pages >= 3000 {
                return;
            }
        }
    })
    .await;
    let reqs = n.load(Ordering::SeqCst);
    assert!(
        outcome.starts_with("error: "),
        "after {reqs} searches and {pages} pages (the same 3 records each time): {outcome}"
    );
    assert!(pages <= 1, "the same page is given at most once: {pages}");
}

fn ctx() -> Context {
    Context::new(Actor::parse("user:sync").unwrap())
}

/// A realistic server over a shared list of records: honours the
/// `lastmodifieddate >= / >` filter, sorts by time, no paging.
fn honest(records: Arc<Mutex<Vec<(i64, String, Value)>>>) -> Script {
    Arc::new(move |req, _n| {
        let f = &req["filterGroups"][0]["filters"][0];
        let op = f["operator"].as_str().unwrap_or("GTE").to_string();
        let v: i64 = f["value"].as_str().unwrap_or("0").parse().unwrap_or(0);
        let mut out: Vec<(i64, Value)> = records
            .lock()
            .unwrap()
            .iter()
            .filter(|(ms, _, _)| if op == "GT" { *ms > v } else { *ms >= v })
            .map(|(ms, _, r)| (*ms, r.clone()))
            .collect();
        out.sort_by_key(|(ms, _)| *ms);
        let results: Vec<Value> = out.into_iter().map(|(_, r)| r).collect();
        (
            200,
            vec![],
            json!({"total": results.len(), "results": results}),
        )
    })
}

async fn window(store: &InMemoryStore, tenant: TenantId) -> Option<chrono::DateTime<chrono::Utc>> {
    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    let w = tx
        .sync_window(
            &ExternalSystem::parse("hubspot").unwrap(),
            EntityKind::Contact,
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    w
}

async fn has_email(store: &InMemoryStore, tenant: TenantId, email: &str) -> bool {
    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    let e = crm_core::domain::Email::parse(email).unwrap();
    let found = tx.get_contacts_by_email(&[e]).await.unwrap();
    tx.commit().await.unwrap();
    !found.is_empty()
}

/// One HubSpot record with a last-modified time in year 9999 does not move
/// the stored window past the clock, so a change made after the pull is
/// pulled by the next one.
#[tokio::test]
async fn a_far_future_last_modified_time_does_not_blind_later_pulls() {
    let now = chrono::Utc::now().timestamp_millis();
    let far: i64 = 253_402_300_799_000; // 9999-12-31T23:59:59Z
    let records = Arc::new(Mutex::new(vec![
        (
            now - 60_000,
            "1".to_string(),
            rec(1, "a@example.com", &ms_iso(now - 60_000)),
        ),
        (far, "2".to_string(), rec(2, "b@example.com", &ms_iso(far))),
    ]));
    let (base, _n) = serve(honest(records.clone())).await;
    let store = InMemoryStore::new();
    let tenant = TenantId::new();
    let sync = HubSpotSync::new(client(&base, 0), Arc::new(store.clone()), tenant);
    sync.pull().await.unwrap();
    let stored = window(&store, tenant).await.expect("a window");
    assert!(
        stored <= chrono::Utc::now(),
        "the window passed the clock: {stored}"
    );
    // A contact changed in HubSpot a minute later: the next pull must bring it.
    records.lock().unwrap().push((
        now + 1_000,
        "3".to_string(),
        rec(3, "c@example.com", &ms_iso(now + 1_000)),
    ));
    sync.pull().await.unwrap();
    assert!(
        has_email(&store, tenant, "c@example.com").await,
        "c@example.com changed in HubSpot after the first pull was never pulled: window {:?}",
        window(&store, tenant).await
    );
}

/// A record whose last-modified time is past year 9999 (valid epoch ms,
/// beyond what a store keeps) does not stop the pull from storing its
/// window: two pulls in a row succeed.
#[tokio::test]
async fn a_last_modified_time_past_9999_does_not_wedge_the_pull() {
    let now = chrono::Utc::now().timestamp_millis();
    let far: i64 = 253_402_300_800_000 + 86_400_000; // 10000-01-02
    let records = Arc::new(Mutex::new(vec![
        (
            now - 60_000,
            "1".to_string(),
            rec(1, "a@example.com", &ms_iso(now - 60_000)),
        ),
        (
            far,
            "2".to_string(),
            rec(2, "b@example.com", &far.to_string()),
        ),
    ]));
    let (base, _n) = serve(honest(records.clone())).await;
    let store = InMemoryStore::new();
    let tenant = TenantId::new();
    let sync = HubSpotSync::new(client(&base, 0), Arc::new(store.clone()), tenant);
    let mut results = Vec::new();
    for _ in 0..2 {
        results.push(format!("{:?}", sync.pull().await));
    }
    assert!(
        results.iter().all(|r| r.starts_with("Ok")),
        "pulls: {results:#?}; window {:?}",
        window(&store, tenant).await
    );
}

/// Odd property values: a NUL refuses its record (a `SyncFailure`); a
/// number where HubSpot sends strings is read as its text. The other
/// records of the page are pulled.
#[tokio::test]
async fn odd_property_values_fail_only_their_record() {
    let now = chrono::Utc::now().timestamp_millis();
    let mut nul = rec(2, "nul@example.com", &ms_iso(now - 50_000));
    nul["properties"]["firstname"] = json!("A\u{0}B");
    let mut num = rec(3, "num@example.com", &ms_iso(now - 40_000));
    num["properties"]["phone"] = json!(5551234);
    let records = Arc::new(Mutex::new(vec![
        (
            now - 60_000,
            "1".to_string(),
            rec(1, "good@example.com", &ms_iso(now - 60_000)),
        ),
        (now - 50_000, "2".to_string(), nul),
        (now - 40_000, "3".to_string(), num),
    ]));
    let (base, _n) = serve(honest(records)).await;
    let store = InMemoryStore::new();
    let tenant = TenantId::new();
    let sync = HubSpotSync::new(client(&base, 0), Arc::new(store.clone()), tenant);
    let report = sync.pull().await.expect("the pull ends");
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert!(!has_email(&store, tenant, "nul@example.com").await);
    assert!(has_email(&store, tenant, "good@example.com").await);
    assert!(has_email(&store, tenant, "num@example.com").await);
}

/// A 429 whose `Retry-After` is longer than the client's longest retry
/// delay (a date in year 9999, a day in seconds) is not waited out: the
/// call fails at once with HubSpot's wait, for the caller to schedule, and
/// the client is not held.
#[tokio::test]
async fn a_429_with_a_far_off_retry_after_fails_at_once() {
    for retry_after in ["Fri, 31 Dec 9999 23:59:59 GMT", "86400"] {
        let ra = retry_after.to_string();
        let script: Script = Arc::new(move |_req, n| {
            if n == 1 {
                (
                    429,
                    vec![("retry-after", ra.clone())],
                    json!({"status": "error", "message": "slow down", "policyName": "TEN_SECONDLY_ROLLING"}),
                )
            } else {
                (200, vec![], json!({"total": 0, "results": []}))
            }
        });
        let (base, n) = serve(script).await;
        let c = client(&base, 1);
        let req = crm_core::hubspot::SearchRequest::default();
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            c.search(&ObjectType::Contacts, &req),
        )
        .await
        .unwrap_or_else(|_| panic!("Retry-After {retry_after:?}: still waiting after 10 s"));
        match r {
            Err(HubSpotError::RateLimited {
                retry_after: Some(wait),
                ..
            }) => assert!(wait >= Duration::from_secs(3600), "{wait:?}"),
            other => panic!("Retry-After {retry_after:?}: {other:?}"),
        }
        assert_eq!(n.load(Ordering::SeqCst), 1, "no retry");
        // The client is not held: the next call goes out at once.
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            c.search(&ObjectType::Contacts, &req),
        )
        .await
        .expect("the client is not held");
        assert!(r.is_ok(), "{r:?}");
    }
}

/// A 503 asking for a long wait (`Retry-After: 120`) is still retried,
/// after the longest wait the client holds rather than two minutes.
#[tokio::test]
async fn a_503_with_a_long_retry_after_is_still_retried() {
    let script: Script = Arc::new(|_req, n| {
        if n == 1 {
            (
                503,
                vec![("retry-after", "120".to_string())],
                json!({"status": "error", "message": "maintenance"}),
            )
        } else {
            (200, vec![], json!({"total": 0, "results": []}))
        }
    });
    let (base, n) = serve(script).await;
    let c = client(&base, 3);
    let req = crm_core::hubspot::SearchRequest::default();
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        c.search(&ObjectType::Contacts, &req),
    )
    .await
    .expect("no 120 s wait");
    assert!(
        r.is_ok(),
        "a 503 is retryable; after {} request(s) the call failed with {r:?} (no retry_after exposed)",
        n.load(Ordering::SeqCst)
    );
}

/// A cursor going back and forth ("200", "400", "200", …) with empty
/// pages: the query gives a cursor it gave before, a typed error.
#[tokio::test]
async fn a_cursor_cycling_between_two_values_does_not_hang_the_pull() {
    let script: Script = Arc::new(|req, _n| {
        let next = match req["after"].as_str() {
            Some("200") => "400",
            _ => "200",
        };
        (
            200,
            vec![],
            json!({"total": 1000, "results": [], "paging": {"next": {"after": next}}}),
        )
    });
    let (base, n) = serve(script).await;
    let c = client(&base, 0);
    let start = chrono::DateTime::from_timestamp_millis(T0 - 1000).unwrap();
    let mut pull = c.pull_modified_since(ObjectType::Contacts, start, &["email"]);
    let r = tokio::time::timeout(Duration::from_secs(10), pull.next_page()).await;
    assert!(
        matches!(r, Ok(Err(HubSpotError::Decode(_)))),
        "after {} searches in 10 s: {:?}",
        n.load(Ordering::SeqCst),
        r.as_ref()
            .map(|x| x.as_ref().map(|p| p.as_ref().map(Vec::len)))
    );
}

/// A window stored past the clock (by a version that let a record stamped
/// in the future move it) is taken as the clock: the pull brings a change
/// made a minute ago and stores a window not past the clock.
#[tokio::test]
async fn a_stored_window_past_the_clock_does_not_blind_the_pull() {
    let now = chrono::Utc::now().timestamp_millis();
    let records = Arc::new(Mutex::new(vec![(
        now - 60_000,
        "1".to_string(),
        rec(1, "a@example.com", &ms_iso(now - 60_000)),
    )]));
    let (base, _n) = serve(honest(records.clone())).await;
    let store = InMemoryStore::new();
    let tenant = TenantId::new();
    let far = chrono::DateTime::from_timestamp_millis(253_402_300_799_000).unwrap();
    let mut tx = store.begin(tenant, ctx()).await.unwrap();
    tx.set_sync_window(
        &ExternalSystem::parse("hubspot").unwrap(),
        EntityKind::Contact,
        far,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let sync = HubSpotSync::new(client(&base, 0), Arc::new(store.clone()), tenant);
    sync.pull().await.unwrap();
    assert!(
        has_email(&store, tenant, "a@example.com").await,
        "a@example.com (changed a minute ago) not pulled; window {:?}",
        window(&store, tenant).await
    );
    let stored = window(&store, tenant).await.expect("a window");
    assert!(stored <= chrono::Utc::now(), "{stored}");
}

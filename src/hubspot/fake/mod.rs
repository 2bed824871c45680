//! A local HubSpot-shaped HTTP server (feature `hubspot-fake`) for tests,
//! examples and benchmarks: stateful contacts, companies and deals, the
//! batch, search and association-label endpoints the client uses, HubSpot's
//! limits (100 per batch, 200 per page, 10,000 results per query, its own
//! rolling request budget answered with 429 `TEN_SECONDLY_ROLLING`), and
//! injected latency, 429s and 5xx answers. It counts what it serves.
//!
//! ```
//! use crm_core::hubspot::{HubSpotClient, HubSpotConfig, AccessToken, UpsertInput};
//! use crm_core::hubspot::fake::{FakeConfig, FakeHubSpot};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let fake = FakeHubSpot::start(FakeConfig::default()).await?;
//! let config = HubSpotConfig::builder(AccessToken::new("pat-na1-test"))
//!     .base_url(fake.base_url())
//!     .build()?;
//! let client = HubSpotClient::new(config)?;
//! let outcome = client
//!     .upsert_contacts_by_email(&[UpsertInput::new("ada@example.com")])
//!     .await?;
//! assert!(outcome.all_written());
//! assert_eq!(fake.records("contacts").len(), 1);
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod handlers;
mod store;

use std::{
    collections::{BTreeMap, HashSet, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use tokio::{sync::oneshot, task::JoinHandle, time::Instant};

use store::Data;
pub use store::FakeRecord;

/// How the fake behaves; change it later through [`FakeHubSpot`]'s setters.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    /// Added before every answer.
    pub latency: Duration,
    /// Requests allowed per rolling `window`; past it the fake answers
    /// 429 `TEN_SECONDLY_ROLLING`. `None`: no limit.
    pub budget: Option<u32>,
    /// The rolling window of `budget` (10 s at HubSpot).
    pub window: Duration,
    /// Search requests allowed per rolling second (429 `SECONDLY` past it).
    pub search_per_second: Option<u32>,
    /// The only bearer token accepted; `None` accepts any.
    pub token: Option<String>,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            latency: Duration::ZERO,
            budget: Some(100),
            window: Duration::from_secs(10),
            search_per_second: None,
            token: None,
        }
    }
}

/// An answer to inject into the next request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// A 429 naming `policy` (`TEN_SECONDLY_ROLLING`, `SECONDLY`, `DAILY`),
    /// with `Retry-After` in seconds when given.
    RateLimited {
        /// The policy named in the body.
        policy: String,
        /// The `Retry-After` header's seconds.
        retry_after_secs: Option<u32>,
    },
    /// An error answer with this status (500, 502, 503, …).
    Status(u16),
    /// Waits this long before answering normally (for timeouts).
    Delay(Duration),
}

/// What the fake has served.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeCounters {
    /// Every request received.
    pub total: u64,
    /// Requests per endpoint (`POST /crm/v3/objects/contacts/batch/upsert`).
    pub per_endpoint: BTreeMap<String, u64>,
    /// 429s served, whatever their cause.
    pub rate_limited: u64,
    /// 429s served because the fake's own budget was exceeded.
    pub budget_exceeded: u64,
    /// Injected faults served.
    pub faults: u64,
    /// The most requests the fake counted in one rolling window.
    pub peak_in_window: usize,
    /// Requests whose URL carried the bearer token or a `hapikey`.
    pub secrets_in_url: u64,
    /// Requests without a valid bearer token (answered 401).
    pub unauthorized: u64,
}

#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) config: FakeConfig,
    pub(crate) faults: VecDeque<Fault>,
    pub(crate) scheduled: BTreeMap<u64, Fault>,
    pub(crate) outage: Option<u16>,
    pub(crate) rejected_emails: HashSet<String>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) settings: Mutex<Settings>,
    pub(crate) data: Mutex<Data>,
    pub(crate) arrivals: Mutex<VecDeque<Instant>>,
    pub(crate) search_arrivals: Mutex<VecDeque<Instant>>,
    pub(crate) counters: Mutex<FakeCounters>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A record to seed: its properties and last-modified time.
#[derive(Debug, Clone, Default)]
pub struct SeedRecord {
    /// Its properties (an `email` for a contact).
    pub properties: BTreeMap<String, String>,
    /// Last modified, in epoch milliseconds.
    pub modified_ms: i64,
}

/// A running fake HubSpot on 127.0.0.1. Stops when dropped.
#[derive(Debug)]
pub struct FakeHubSpot {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl FakeHubSpot {
    /// Starts a fake on `127.0.0.1:0` (a free port).
    pub async fn start(config: FakeConfig) -> std::io::Result<FakeHubSpot> {
        let shared = Arc::new(Shared {
            settings: Mutex::new(Settings {
                config,
                faults: VecDeque::new(),
                scheduled: BTreeMap::new(),
                outage: None,
                rejected_emails: HashSet::new(),
            }),
            data: Mutex::new(Data::default()),
            arrivals: Mutex::new(VecDeque::new()),
            search_arrivals: Mutex::new(VecDeque::new()),
            counters: Mutex::new(FakeCounters::default()),
        });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new()
            .fallback(handlers::handle)
            .with_state(Arc::clone(&shared));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(FakeHubSpot {
            addr,
            shared,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Its base URL (`http://127.0.0.1:PORT`), for [`HubSpotConfigBuilder::base_url`].
    ///
    /// [`HubSpotConfigBuilder::base_url`]: crate::hubspot::HubSpotConfigBuilder::base_url
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sets the latency added before every answer.
    pub fn set_latency(&self, latency: Duration) {
        lock(&self.shared.settings).config.latency = latency;
    }

    /// Sets the budget per rolling window (`None`: no limit) and the window.
    pub fn set_budget(&self, budget: Option<u32>, window: Duration) {
        let mut s = lock(&self.shared.settings);
        s.config.budget = budget;
        s.config.window = window;
    }

    /// Queues `fault` as the answer to a coming request (one per fault, in order).
    pub fn push_fault(&self, fault: Fault) {
        lock(&self.shared.settings).faults.push_back(fault);
    }

    /// Answers the `n`-th request the fake receives (counting from 1, as
    /// [`FakeCounters::total`] does) with `fault`.
    pub fn push_fault_at(&self, n: u64, fault: Fault) {
        lock(&self.shared.settings).scheduled.insert(n, fault);
    }

    /// Answers every request with `status` until called with `None`.
    pub fn set_outage(&self, status: Option<u16>) {
        lock(&self.shared.settings).outage = status;
    }

    /// Makes upserts of these emails fail, each as a per-input error.
    pub fn reject_emails<I: IntoIterator<Item = S>, S: AsRef<str>>(&self, emails: I) {
        let mut s = lock(&self.shared.settings);
        s.rejected_emails
            .extend(emails.into_iter().map(|e| e.as_ref().to_lowercase()));
    }

    /// Adds records of `object_type`; returns their ids, in order.
    pub fn seed(
        &self,
        object_type: &str,
        records: impl IntoIterator<Item = SeedRecord>,
    ) -> Vec<u64> {
        let mut data = lock(&self.shared.data);
        records
            .into_iter()
            .map(|r| {
                let id = data.new_id();
                data.insert(
                    object_type,
                    FakeRecord {
                        id,
                        properties: r.properties,
                        created_ms: r.modified_ms,
                        modified_ms: r.modified_ms,
                        associations: Vec::new(),
                    },
                );
                id
            })
            .collect()
    }

    /// Every record of `object_type`, by id.
    pub fn records(&self, object_type: &str) -> Vec<FakeRecord> {
        lock(&self.shared.data)
            .objects
            .get(object_type)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// What it has served so far.
    pub fn counters(&self) -> FakeCounters {
        lock(&self.shared.counters).clone()
    }

    /// Requests served to one endpoint (`"POST /crm/v3/objects/contacts/search"`).
    pub fn requests_to(&self, endpoint: &str) -> u64 {
        lock(&self.shared.counters)
            .per_endpoint
            .get(endpoint)
            .copied()
            .unwrap_or(0)
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for FakeHubSpot {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

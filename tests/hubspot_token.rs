//! The HubSpot token never shows: not in a URL the fake server receives,
//! not in `Debug` output, not in an error, not in a log line — with every
//! `tracing` event of the client captured.
//!
//! Alone in its test binary: it installs a thread-local `tracing`
//! subscriber, and tests running on other threads of the same process can
//! make `tracing` cache a callsite as disabled before it is installed, so
//! that the captured log misses the lines it checks.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use crm_core::hubspot::{
    AccessToken, HubSpotClient, HubSpotConfig, HubSpotConfigBuilder, ObjectType, SearchRequest,
    UpsertInput,
    fake::{FakeConfig, FakeHubSpot, Fault},
};

const TOKEN: &str = "pat-na1-0f1e2d3c-secret-token-value";

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

fn contacts(n: usize, prefix: &str) -> Vec<UpsertInput> {
    (0..n)
        .map(|i| UpsertInput::new(format!("{prefix}{i}@example.com")).with("firstname", "Ada"))
        .collect()
}

/// A `tracing` writer that keeps everything written.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn the_token_is_in_no_url_debug_output_error_or_log_line() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let fake = fake().await;
        let config = builder(&fake).max_retries(1).build().unwrap();
        let client = HubSpotClient::new(config.clone()).unwrap();
        fake.push_fault(Fault::RateLimited {
            policy: "SECONDLY".into(),
            retry_after_secs: None,
        });
        fake.push_fault(Fault::Status(500));
        let outcome = client
            .upsert_contacts_by_email(&contacts(3, "t"))
            .await
            .unwrap();
        let error = outcome.stopped_by.expect("both attempts failed");

        // A client with another token gets a 401, as a typed error.
        let wrong = HubSpotClient::new(
            HubSpotConfig::builder(AccessToken::new("pat-na1-wrong-token"))
                .base_url(fake.base_url())
                .build()
                .unwrap(),
        )
        .unwrap();
        let unauthorized = wrong
            .search(&ObjectType::Contacts, &SearchRequest::default())
            .await
            .unwrap_err();
        assert_eq!(unauthorized.status(), Some(401));

        for text in [
            format!("{config:?}"),
            format!("{client:?}"),
            format!("{error:?}"),
            error.to_string(),
            format!("{unauthorized:?}"),
        ] {
            assert!(!text.contains(TOKEN), "token in {text}");
        }
        assert!(format!("{config:?}").contains("AccessToken(***)"));
        assert_eq!(fake.counters().secrets_in_url, 0);
        assert_eq!(fake.counters().unauthorized, 1);
    });
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("HubSpot rate limit answer"),
        "the capture works: {logs}"
    );
    assert!(!logs.contains(TOKEN));
}

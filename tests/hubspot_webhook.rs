//! Inbound HubSpot webhooks: the v3 signature (accepted as HubSpot signs,
//! refused for any change, the wrong secret, or a timestamp outside five
//! minutes), the event array, and each event run once through the
//! idempotency guard however often HubSpot delivers it.

use chrono::{DateTime, TimeDelta, Utc};
use crm_core::{
    Actor, Context, InMemoryStore, TenantId,
    hubspot::webhook::{
        MIN_SECRET_BYTES, WebhookError, parse_events, run_guarded, sign_v3, verify_signature_v3,
    },
    idempotency::{Execution, HandlerFuture, IdempotencyGuard, handler},
};
use proptest::prelude::*;

const SECRET: &[u8] = b"yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy";
const BODY: &[u8] = br#"[{"eventId":1}]"#;
const TS: &str = "1750000000000";

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_750_000_000_000).unwrap() + TimeDelta::seconds(20)
}

fn verify(secret: &[u8], uri: &str, body: &[u8], ts: &str, sig: &str) -> Result<(), WebhookError> {
    verify_signature_v3(secret, "POST", uri, body, ts, sig, now())
}

/// Computed apart from the crate (Python's hmac and base64).
const KNOWN: &str = "oq5o8oFVHwOXQ97W5i6E/0GNZyk3dit3vNjcuK0rXdA=";

#[test]
fn a_signature_made_as_hubspot_makes_it_is_accepted() {
    assert_eq!(
        verify(SECRET, "https://example.com/webhook?a=b,c", BODY, TS, KNOWN),
        Ok(())
    );
    // HubSpot signs the URI with some escapes decoded.
    assert_eq!(
        verify(
            SECRET,
            "https://example.com/webhook?a=b%2Cc",
            BODY,
            TS,
            KNOWN
        ),
        Ok(())
    );
    assert_eq!(
        sign_v3(
            SECRET,
            "POST",
            "https://example.com/webhook?a=b,c",
            BODY,
            TS
        ),
        KNOWN
    );
}

#[test]
fn a_changed_body_uri_method_or_timestamp_is_refused() {
    let uri = "https://example.com/webhook?a=b,c";
    assert_eq!(
        verify(SECRET, uri, br#"[{"eventId":2}]"#, TS, KNOWN),
        Err(WebhookError::SignatureMismatch)
    );
    assert_eq!(
        verify(SECRET, "https://example.com/other", BODY, TS, KNOWN),
        Err(WebhookError::SignatureMismatch)
    );
    assert_eq!(
        verify_signature_v3(SECRET, "PUT", uri, BODY, TS, KNOWN, now()),
        Err(WebhookError::SignatureMismatch)
    );
    assert_eq!(
        verify(SECRET, uri, BODY, "1750000000001", KNOWN),
        Err(WebhookError::SignatureMismatch)
    );
}

#[test]
fn the_wrong_secret_is_refused() {
    assert_eq!(
        verify(
            b"another-client-secret",
            "https://example.com/webhook?a=b,c",
            BODY,
            TS,
            KNOWN
        ),
        Err(WebhookError::SignatureMismatch)
    );
}

#[test]
fn a_timestamp_older_than_five_minutes_or_far_ahead_is_refused() {
    let uri = "https://example.com/hook";
    let ts = |d: TimeDelta| (now() + d).timestamp_millis().to_string();
    let old = ts(TimeDelta::seconds(-301));
    let sig = sign_v3(SECRET, "POST", uri, BODY, &old);
    assert_eq!(
        verify(SECRET, uri, BODY, &old, &sig),
        Err(WebhookError::Expired { age_seconds: 301 })
    );
    let ahead = ts(TimeDelta::minutes(6));
    let sig = sign_v3(SECRET, "POST", uri, BODY, &ahead);
    assert!(matches!(
        verify(SECRET, uri, BODY, &ahead, &sig),
        Err(WebhookError::FromTheFuture { .. })
    ));
    let recent = ts(TimeDelta::seconds(-299));
    let sig = sign_v3(SECRET, "POST", uri, BODY, &recent);
    assert_eq!(verify(SECRET, uri, BODY, &recent, &sig), Ok(()));
}

#[test]
fn malformed_headers_are_refused_with_their_reason() {
    let uri = "https://example.com/hook";
    assert_eq!(
        verify(SECRET, uri, BODY, "yesterday", KNOWN),
        Err(WebhookError::InvalidTimestamp)
    );
    assert_eq!(
        verify(SECRET, uri, BODY, TS, "not base64!"),
        Err(WebhookError::InvalidSignatureEncoding)
    );
}

#[test]
fn an_empty_or_short_secret_is_refused_before_anything_is_checked() {
    let uri = "https://hooks.example.com/hubspot";
    let ts = now().timestamp_millis().to_string();
    for secret in [&b""[..], b"x", &[b'k'; MIN_SECRET_BYTES - 1]] {
        // Signed with that very secret: still refused.
        let sig = sign_v3(secret, "POST", uri, BODY, &ts);
        assert_eq!(
            verify(secret, uri, BODY, &ts, &sig),
            Err(WebhookError::WeakSecret { len: secret.len() })
        );
    }
    let secret = [b'k'; MIN_SECRET_BYTES];
    let sig = sign_v3(&secret, "POST", uri, BODY, &ts);
    assert_eq!(verify(&secret, uri, BODY, &ts, &sig), Ok(()));
}

proptest! {
    #[test]
    fn any_signed_request_verifies_and_any_changed_byte_does_not(
        secret in proptest::collection::vec(any::<u8>(), MIN_SECRET_BYTES..64),
        path in "/[a-z0-9/]{0,30}",
        body in proptest::collection::vec(any::<u8>(), 1..256),
        age_ms in 0i64..299_000,
        flip in any::<prop::sample::Index>(),
    ) {
        let uri = format!("https://hooks.example.com{path}");
        let ts = (now() - TimeDelta::milliseconds(age_ms)).timestamp_millis().to_string();
        let sig = sign_v3(&secret, "POST", &uri, &body, &ts);
        prop_assert_eq!(verify(&secret, &uri, &body, &ts, &sig), Ok(()));
        let mut changed = body.clone();
        let i = flip.index(changed.len());
        changed[i] ^= 0x01;
        prop_assert_eq!(verify(&secret, &uri, &changed, &ts, &sig), Err(WebhookError::SignatureMismatch));
    }
}

#[tokio::test]
async fn each_event_runs_once_however_often_hubspot_delivers_it() {
    let body = br#"[
        {"eventId": 100, "subscriptionId": 7, "portalId": 62515, "appId": 54321,
         "occurredAt": 1750000000000, "subscriptionType": "contact.propertyChange",
         "attemptNumber": 0, "objectId": 123, "changeSource": "CRM",
         "propertyName": "lifecyclestage", "propertyValue": "customer"},
        {"eventId": 101, "occurredAt": 1750000000001, "subscriptionType": "deal.creation",
         "objectId": 456, "changeFlag": "NEW"}
    ]"#;
    let events = parse_events(body).unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].property_value.as_deref(), Some("customer"));
    assert_eq!(events[1].other["changeFlag"], "NEW");

    let store = InMemoryStore::new();
    let guard = IdempotencyGuard::new();
    let tenant = TenantId::new();
    let ctx = Context::new(Actor::parse("webhook:hubspot").unwrap());
    let handle = |object: u64| {
        handler(move |tx| {
            Box::pin(async move {
                let _ = tx.tenant();
                Ok(format!("handled {object}"))
            }) as HandlerFuture<'_, String>
        })
    };
    let first = run_guarded(
        &guard,
        &store,
        tenant,
        &ctx,
        &events[0],
        handle(events[0].object_id),
    )
    .await
    .unwrap();
    assert_eq!(first.execution, Execution::Executed);

    // HubSpot's retry: the same event, a later attempt number.
    let mut redelivered = events[0].clone();
    redelivered.attempt_number = Some(1);
    let again = run_guarded(&guard, &store, tenant, &ctx, &redelivered, handle(999))
        .await
        .unwrap();
    assert_eq!(again.execution, Execution::Replayed);
    assert_eq!(again.result, Ok("handled 123".to_string()));

    let other = run_guarded(
        &guard,
        &store,
        tenant,
        &ctx,
        &events[1],
        handle(events[1].object_id),
    )
    .await
    .unwrap();
    assert_eq!(other.execution, Execution::Executed);
}

#[test]
fn a_body_that_is_not_an_event_array_is_refused() {
    assert!(matches!(
        parse_events(br#"{"eventId": 1}"#),
        Err(WebhookError::InvalidBody(_))
    ));
}

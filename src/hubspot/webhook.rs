//! Inbound HubSpot webhooks: the v3 signature check (HMAC-SHA256 over
//! method, URI, body and timestamp, compared in constant time, within a
//! 5-minute window), the event array, and each event run once through the
//! crate's [`IdempotencyGuard`], keyed by its event id.

use std::collections::BTreeMap;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;

use crate::{
    Context, TenantId,
    domain::Timestamp,
    error::Result,
    idempotency::{HandlerFuture, IdempotencyGuard, InboundEvent, Outcome},
    store::{DynStore, Transaction},
};

/// The header that carries the v3 signature.
pub const SIGNATURE_V3_HEADER: &str = "X-HubSpot-Signature-v3";
/// The header that carries the request's timestamp (epoch milliseconds).
pub const TIMESTAMP_HEADER: &str = "X-HubSpot-Request-Timestamp";
/// How old (or how far ahead) a request's timestamp may be.
pub const MAX_AGE: chrono::TimeDelta = chrono::TimeDelta::minutes(5);
/// The idempotency source of HubSpot's events.
pub const SOURCE: &str = "hubspot";

/// Why a webhook request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The timestamp header is not a number of milliseconds.
    #[error("the {TIMESTAMP_HEADER} header is not epoch milliseconds")]
    InvalidTimestamp,
    /// The request is older than [`MAX_AGE`]: a replay, or a delay too long to trust.
    #[error("the request is {age_seconds} s old, more than 5 minutes")]
    Expired {
        /// Its age.
        age_seconds: i64,
    },
    /// The timestamp is more than [`MAX_AGE`] ahead of the clock.
    #[error("the request's timestamp is {ahead_seconds} s in the future")]
    FromTheFuture {
        /// How far ahead.
        ahead_seconds: i64,
    },
    /// The signature header is not base64.
    #[error("the {SIGNATURE_V3_HEADER} header is not base64")]
    InvalidSignatureEncoding,
    /// The signature does not match the request (wrong secret, or the
    /// method, URI, body or timestamp changed).
    #[error("the signature does not match the request")]
    SignatureMismatch,
    /// The body is not HubSpot's array of events.
    #[error("the body is not an array of HubSpot events: {0}")]
    InvalidBody(String),
    /// The client secret given to check a signature is shorter than
    /// [`MIN_SECRET_BYTES`]: with an empty one (a setting left unset)
    /// anyone could sign a request. Nothing was checked.
    #[error(
        "the client secret is {len} bytes long, fewer than {MIN_SECRET_BYTES}: set the app's client secret"
    )]
    WeakSecret {
        /// Its length in bytes.
        len: usize,
    },
}

/// The shortest client secret [`verify_signature_v3`] checks with (a
/// HubSpot app's is 36 characters).
pub const MIN_SECRET_BYTES: usize = 16;

/// Checks a webhook request's v3 signature: base64 of HMAC-SHA256 with the
/// app's client secret over `method + uri + body + timestamp`, compared in
/// constant time; the timestamp must be within 5 minutes of `now`.
///
/// `uri` is the full URL HubSpot called (scheme, host, path and query), as
/// configured for the subscription; the escapes HubSpot decodes before
/// signing (`%3A %2F %3F %40 %21 %24 %27 %28 %29 %2A %2C %3B`) are decoded
/// here the same way.
///
/// A `secret` shorter than [`MIN_SECRET_BYTES`] is refused
/// ([`WebhookError::WeakSecret`]) before anything else is looked at.
pub fn verify_signature_v3(
    secret: &[u8],
    method: &str,
    uri: &str,
    body: &[u8],
    timestamp_header: &str,
    signature_header: &str,
    now: Timestamp,
) -> std::result::Result<(), WebhookError> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(WebhookError::WeakSecret { len: secret.len() });
    }
    let ts: i64 = timestamp_header
        .trim()
        .parse()
        .map_err(|_| WebhookError::InvalidTimestamp)?;
    let sent = chrono::DateTime::from_timestamp_millis(ts).ok_or(WebhookError::InvalidTimestamp)?;
    let age = now - sent;
    if age > MAX_AGE {
        return Err(WebhookError::Expired {
            age_seconds: age.num_seconds(),
        });
    }
    if -age > MAX_AGE {
        return Err(WebhookError::FromTheFuture {
            ahead_seconds: (-age).num_seconds(),
        });
    }
    let given = base64::engine::general_purpose::STANDARD
        .decode(signature_header.trim())
        .map_err(|_| WebhookError::InvalidSignatureEncoding)?;
    // `verify_slice` compares in constant time.
    mac_over(secret, method, uri, body, timestamp_header.trim())
        .verify_slice(&given)
        .map_err(|_| WebhookError::SignatureMismatch)
}

/// The v3 signature of a request, as HubSpot computes it (for tests and
/// for a fake that sends webhooks).
pub fn sign_v3(
    secret: &[u8],
    method: &str,
    uri: &str,
    body: &[u8],
    timestamp_header: &str,
) -> String {
    let mac = mac_over(secret, method, uri, body, timestamp_header);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn mac_over(secret: &[u8], method: &str, uri: &str, body: &[u8], timestamp: &str) -> Hmac<Sha256> {
    #[allow(clippy::expect_used)]
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(method.as_bytes());
    mac.update(decode_uri(uri).as_bytes());
    mac.update(body);
    mac.update(timestamp.as_bytes());
    mac
}

/// Decodes the escapes HubSpot decodes before signing.
fn decode_uri(uri: &str) -> String {
    const DECODED: [(&str, char); 12] = [
        ("%3A", ':'),
        ("%2F", '/'),
        ("%3F", '?'),
        ("%40", '@'),
        ("%21", '!'),
        ("%24", '$'),
        ("%27", '\''),
        ("%28", '('),
        ("%29", ')'),
        ("%2A", '*'),
        ("%2C", ','),
        ("%3B", ';'),
    ];
    let mut out = String::with_capacity(uri.len());
    let mut rest = uri;
    while let Some(pos) = rest.find('%') {
        out.push_str(&rest[..pos]);
        let candidate = rest.get(pos..pos + 3).unwrap_or("");
        match DECODED
            .iter()
            .find(|(esc, _)| esc.eq_ignore_ascii_case(candidate))
        {
            Some((_, c)) => {
                out.push(*c);
                rest = &rest[pos + 3..];
            }
            None => {
                out.push('%');
                rest = &rest[pos + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// One event of a webhook delivery (HubSpot sends an array of them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEvent {
    /// The event's id: the idempotency key.
    pub event_id: u64,
    /// `contact.creation`, `contact.propertyChange`, `deal.deletion`, …
    pub subscription_type: String,
    /// HubSpot's id of the record concerned.
    pub object_id: u64,
    /// When it happened, in epoch milliseconds.
    pub occurred_at: i64,
    /// The changed property (property changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property_name: Option<String>,
    /// Its new value (property changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property_value: Option<String>,
    /// What made the change (`CRM`, `API`, `INTEGRATION`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_source: Option<String>,
    /// The subscription that matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_id: Option<u64>,
    /// The portal (account).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portal_id: Option<u64>,
    /// The app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<u64>,
    /// Which delivery attempt this is (0 first). Not part of the event's
    /// fingerprint: a redelivery is the same event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_number: Option<u32>,
    /// Any other field HubSpot sends.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

impl WebhookEvent {
    /// When it happened.
    pub fn occurred_at(&self) -> Option<Timestamp> {
        chrono::DateTime::from_timestamp_millis(self.occurred_at)
    }

    /// The event as the guard sees it: source `hubspot`, key the event id,
    /// fingerprint of the event without its attempt number.
    pub fn inbound_event(&self) -> std::result::Result<InboundEvent, crate::ValidationErrors> {
        let mut payload = self.clone();
        payload.attempt_number = None;
        InboundEvent::new(SOURCE, &self.event_id.to_string(), &payload)
    }
}

/// The events of a webhook body (verify the signature first).
pub fn parse_events(body: &[u8]) -> std::result::Result<Vec<WebhookEvent>, WebhookError> {
    serde_json::from_slice(body).map_err(|e| WebhookError::InvalidBody(e.to_string()))
}

/// Runs `handler` for `event` under `guard`, at most once per event id
/// (for `tenant`): a redelivery replays the stored result. See
/// [`IdempotencyGuard::run`] for the handler's transaction and errors.
pub async fn run_guarded<'a, T, F>(
    guard: &IdempotencyGuard,
    store: &DynStore,
    tenant: TenantId,
    context: &Context,
    event: &WebhookEvent,
    handler: F,
) -> Result<Outcome<T>>
where
    T: Serialize + serde::de::DeserializeOwned + Send,
    F: for<'t> FnOnce(&'t mut (dyn Transaction + 'a)) -> HandlerFuture<'t, T> + Send + 'a,
{
    let inbound = event.inbound_event()?;
    guard.run(store, tenant, context, &inbound, handler).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hubspot_decodes_some_escapes_before_signing() {
        assert_eq!(
            decode_uri("https://x.io/hook%3Fa%3Db%2Cc%20d%"),
            "https://x.io/hook?a%3Db,c%20d%"
        );
    }
}

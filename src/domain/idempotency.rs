//! What the idempotency guard keeps per inbound event, and the validated
//! names (source, key) and fingerprint it is keyed and checked by. Pure
//! types: backends store them, the guard reasons about them.

use std::{fmt, time::Duration};

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{
    TenantId, Timestamp,
    error::{Error, FieldError, ValidationErrors},
};

/// Where inbound events come from: `"hubspot"`, `"stripe"`, `"billing.v2"`.
/// 1–64 characters of `a-z`, `0-9`, `_`, `.` and `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdempotencySource(String);

impl IdempotencySource {
    /// The most characters a source may hold.
    pub const MAX_CHARS: usize = 64;

    /// Checks `value` (it is not trimmed or lower-cased: it must already be
    /// in its canonical form).
    pub fn parse(value: &str) -> Result<Self, FieldError> {
        let len = value.chars().count();
        if len == 0 {
            return Err(FieldError::new("source", "required", "must not be empty"));
        }
        if len > Self::MAX_CHARS {
            return Err(FieldError::new(
                "source",
                "too_long",
                format!(
                    "must have at most {} characters, got {len}",
                    Self::MAX_CHARS
                ),
            ));
        }
        if let Some(c) = value
            .chars()
            .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '_' | '.' | '-'))
        {
            return Err(FieldError::new(
                "source",
                "invalid_format",
                format!("may hold only a-z, 0-9, '_', '.' and '-', found {c:?}"),
            ));
        }
        Ok(IdempotencySource(value.to_string()))
    }

    /// The source as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The key a provider gives an event (its event id or delivery id): 1–255
/// printable characters, kept exactly as given (no trimming, no case
/// folding). Keys are scoped by tenant and [`IdempotencySource`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The most characters a key may hold.
    pub const MAX_CHARS: usize = 255;

    /// Checks `value`: not empty, at most 255 characters, no control
    /// characters, no whitespace at either end.
    pub fn parse(value: &str) -> Result<Self, FieldError> {
        let len = value.chars().count();
        if len == 0 || value.trim().is_empty() {
            return Err(FieldError::new("key", "required", "must not be empty"));
        }
        if len > Self::MAX_CHARS {
            return Err(FieldError::new(
                "key",
                "too_long",
                format!(
                    "must have at most {} characters, got {len}",
                    Self::MAX_CHARS
                ),
            ));
        }
        if let Some(c) = value.chars().find(|c| c.is_control()) {
            return Err(FieldError::new(
                "key",
                "invalid_format",
                format!("must hold only printable characters, found {c:?}"),
            ));
        }
        if value.trim() != value {
            return Err(FieldError::new(
                "key",
                "invalid_format",
                "must not begin or end with whitespace",
            ));
        }
        Ok(IdempotencyKey(value.to_string()))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! text_conversions {
    ($name:ident) => {
        impl TryFrom<String> for $name {
            type Error = FieldError;
            fn try_from(value: String) -> Result<Self, FieldError> {
                Self::parse(&value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}
text_conversions!(IdempotencySource);
text_conversions!(IdempotencyKey);

/// A versioned fingerprint of an event's payload: `v1:` and the lower-case
/// hex SHA-256 of the payload's canonical JSON (object keys sorted by code
/// point, no whitespace, strings and numbers as `serde_json` writes them).
/// Key order and whitespace of the payload as received do not change it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// The version prefix of fingerprints this build makes.
    pub const VERSION: &'static str = "v1";

    /// The deepest a payload given to [`of`](Self::of) (and so to
    /// [`InboundEvent::new`]) may nest: as deep as serde_json reads JSON
    /// text. [`of_json`](Self::of_json) takes any depth.
    pub const MAX_PAYLOAD_DEPTH: usize = super::json::TEXT_DEPTH;

    /// The fingerprint of a JSON value, nested however deep (the value is
    /// walked without recursion).
    pub fn of_json(payload: &Value) -> Fingerprint {
        let mut canonical = Vec::with_capacity(256);
        write_canonical(payload, &mut canonical);
        let digest = Sha256::digest(&canonical);
        let mut s = String::with_capacity(3 + 64);
        s.push_str(Self::VERSION);
        s.push(':');
        for b in digest.iter() {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        Fingerprint(s)
    }

    /// The fingerprint of anything that serializes to JSON. Fails (as a
    /// validation error on `payload`) when it does not, e.g. a map with
    /// non-string keys, when it nests deeper than
    /// [`MAX_PAYLOAD_DEPTH`](Self::MAX_PAYLOAD_DEPTH) (serializing stops
    /// there, so that no payload can overflow the stack), or when it holds
    /// an integer beyond 64 bits (or a float of magnitude 2^63 or more):
    /// read back as JSON such a number is rounded, so two payloads
    /// differing only there would share a fingerprint.
    pub fn of<T: Serialize + ?Sized>(payload: &T) -> Result<Fingerprint, FieldError> {
        use super::json::{ToValueError, holds_integer_beyond_64_bits, to_value_within};
        match to_value_within(payload, Self::MAX_PAYLOAD_DEPTH) {
            Ok(v) if holds_integer_beyond_64_bits(&v) => {
                super::json::dispose(v);
                Err(FieldError::new(
                    "payload",
                    "out_of_range",
                    "holds an integer beyond 64 bits (or a float of magnitude 2^63 or more), \
                     which cannot be fingerprinted exactly",
                ))
            }
            Ok(v) => Ok(Self::of_json(&v)),
            Err(e @ ToValueError::TooDeep(_)) => {
                Err(FieldError::new("payload", "too_deep", e.to_string()))
            }
            Err(e @ ToValueError::NotJson(_)) => {
                Err(FieldError::new("payload", "invalid_format", e.to_string()))
            }
        }
    }

    /// A fingerprint as stored: `v<digits>:<lower-case hex>`.
    pub fn parse(value: &str) -> Result<Fingerprint, FieldError> {
        let ok = value.split_once(':').is_some_and(|(v, hex)| {
            v.len() > 1
                && v.starts_with('v')
                && v[1..].bytes().all(|b| b.is_ascii_digit())
                && !hex.is_empty()
                && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        });
        if ok {
            Ok(Fingerprint(value.to_string()))
        } else {
            Err(FieldError::new(
                "fingerprint",
                "invalid_format",
                "must be v<version>:<lower-case hex>",
            ))
        }
    }

    /// The fingerprint as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes `v` as canonical JSON: object keys sorted (whatever order the map
/// keeps them in), no whitespace. A loop over an explicit stack, not a
/// recursion: the value may nest however deep.
fn write_canonical(v: &Value, out: &mut Vec<u8>) {
    enum Step<'a> {
        Value(&'a Value),
        Key(&'a str),
        Byte(u8),
    }
    let mut stack = vec![Step::Value(v)];
    while let Some(step) = stack.pop() {
        match step {
            Step::Byte(b) => out.push(b),
            Step::Key(k) => {
                // Writing a string into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut *out, k);
                out.push(b':');
            }
            Step::Value(Value::Object(map)) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                out.push(b'{');
                stack.push(Step::Byte(b'}'));
                // Pushed last to first, so that the first entry comes out first.
                for (i, (k, v)) in entries.into_iter().enumerate().rev() {
                    stack.push(Step::Value(v));
                    stack.push(Step::Key(k));
                    if i > 0 {
                        stack.push(Step::Byte(b','));
                    }
                }
            }
            Step::Value(Value::Array(items)) => {
                out.push(b'[');
                stack.push(Step::Byte(b']'));
                for (i, item) in items.iter().enumerate().rev() {
                    stack.push(Step::Value(item));
                    if i > 0 {
                        stack.push(Step::Byte(b','));
                    }
                }
            }
            Step::Value(scalar) => write_scalar(scalar, out),
        }
    }
}

fn write_scalar(v: &Value, out: &mut Vec<u8>) {
    // Writing a scalar Value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, v);
}

/// An inbound event, checked and fingerprinted: what the guard needs to
/// know about a delivery before it runs the handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundEvent {
    source: IdempotencySource,
    key: IdempotencyKey,
    fingerprint: Fingerprint,
}

impl InboundEvent {
    /// Checks `source` and `key` (reporting both when both are wrong) and
    /// fingerprints `payload`.
    pub fn new<P: Serialize + ?Sized>(
        source: &str,
        key: &str,
        payload: &P,
    ) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let source = errors.check(IdempotencySource::parse(source));
        let key = errors.check(IdempotencyKey::parse(key));
        let fingerprint = errors.check(Fingerprint::of(payload));
        match (source, key, fingerprint) {
            (Some(source), Some(key), Some(fingerprint)) => Ok(InboundEvent {
                source,
                key,
                fingerprint,
            }),
            _ => Err(errors),
        }
    }

    /// An event from parts already checked.
    pub fn from_parts(
        source: IdempotencySource,
        key: IdempotencyKey,
        fingerprint: Fingerprint,
    ) -> Self {
        InboundEvent {
            source,
            key,
            fingerprint,
        }
    }

    /// Where it comes from.
    pub fn source(&self) -> &IdempotencySource {
        &self.source
    }

    /// Its key.
    pub fn key(&self) -> &IdempotencyKey {
        &self.key
    }

    /// Its payload's fingerprint.
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// `source:key`, as the transaction's [`Context`](crate::Context) and the
    /// history record it.
    pub fn scoped_key(&self) -> String {
        format!("{}:{}", self.source, self.key)
    }
}

/// The stored outcome of a handled event.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(tag = "status", content = "value", rename_all = "snake_case")]
pub enum StoredResult {
    /// The handler succeeded with this output.
    Succeeded(Value),
    /// The handler declared a permanent failure with this description.
    Failed(Value),
}

impl StoredResult {
    /// The deepest a stored result may nest (see [`json::MAX_DEPTH`](super::json::MAX_DEPTH)):
    /// deep enough for any result a handler means to return, shallow
    /// enough that every backend stores and reads it back (serde_json reads
    /// no deeper than 128 levels) and nothing recursing over it can
    /// overflow the stack.
    pub const MAX_DEPTH: usize = super::json::MAX_DEPTH;

    /// Checks that the result can be stored: nested at most
    /// [`MAX_DEPTH`](Self::MAX_DEPTH) levels (counted without recursing).
    /// Every store calls it before storing a result.
    pub fn check(&self) -> Result<(), FieldError> {
        if super::json::deeper_than(self.value(), Self::MAX_DEPTH) {
            Err(FieldError::new(
                "result",
                "too_deep",
                format!("must be nested at most {} levels deep", Self::MAX_DEPTH),
            ))
        } else {
            Ok(())
        }
    }

    /// The stored JSON, whichever the outcome.
    pub fn value(&self) -> &Value {
        match self {
            StoredResult::Succeeded(v) | StoredResult::Failed(v) => v,
        }
    }

    /// `"succeeded"` or `"failed"`, as stored.
    pub fn status(&self) -> &'static str {
        match self {
            StoredResult::Succeeded(_) => "succeeded",
            StoredResult::Failed(_) => "failed",
        }
    }
}

/// One idempotency key as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IdempotencyRecord {
    /// The tenant.
    pub tenant_id: TenantId,
    /// Where the event came from.
    pub source: IdempotencySource,
    /// The event's key.
    pub key: IdempotencyKey,
    /// The fingerprint of the payload that was handled.
    pub fingerprint: Fingerprint,
    /// The outcome; `None` only inside the transaction that claimed the key
    /// and has not completed it yet.
    pub result: Option<StoredResult>,
    /// When the key was claimed.
    pub created_at: Timestamp,
    /// When the outcome was stored.
    pub completed_at: Option<Timestamp>,
    /// From when the record counts as absent (a new delivery runs again)
    /// and may be purged.
    pub expires_at: Timestamp,
}

impl IdempotencyRecord {
    /// True when the record has expired at `now`.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at <= now
    }
}

/// How long a delivery whose key is held by another transaction waits for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitPolicy {
    /// Wait at most this long, then fail with [`Error::KeyInUse`].
    Wait(Duration),
    /// Fail with [`Error::KeyInUse`] at once.
    NoWait,
}

impl WaitPolicy {
    /// The default: wait up to 10 seconds.
    pub const DEFAULT: WaitPolicy = WaitPolicy::Wait(Duration::from_secs(10));
}

impl Default for WaitPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What a backend needs to claim a key: see
/// [`Transaction::claim_idempotency_key`](crate::store::IdempotencyTx::claim_idempotency_key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyClaim {
    /// Where the event came from.
    pub source: IdempotencySource,
    /// Its key.
    pub key: IdempotencyKey,
    /// Its payload's fingerprint.
    pub fingerprint: Fingerprint,
    /// The time of the claim (microseconds): the record's `created_at`, and
    /// the instant against which an existing record's expiry is judged.
    pub now: Timestamp,
    /// When the new record expires.
    pub expires_at: Timestamp,
    /// How long to wait for another transaction holding the key.
    pub wait: WaitPolicy,
}

impl IdempotencyClaim {
    /// The claim as every store takes it, or every reason it cannot be:
    /// `now` and `expires_at` within years 1–9999 and normalised
    /// ([`check_timestamp`](super::check_timestamp)), and
    /// `expires_at` after `now` (a record must outlive its claim).
    /// Every store calls it before anything else.
    pub fn checked(&self) -> Result<IdempotencyClaim, ValidationErrors> {
        let [now, expires_at] =
            super::check_timestamps([("now", self.now), ("expires_at", self.expires_at)])?;
        if expires_at <= now {
            return Err(ValidationErrors::single(FieldError::new(
                "expires_at",
                "out_of_range",
                format!("must be after the claim's time ({now}), got {expires_at}"),
            )));
        }
        Ok(IdempotencyClaim {
            now,
            expires_at,
            ..self.clone()
        })
    }
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// This transaction now holds the key (a new record, or an expired one
    /// taken over), pending until it is completed.
    Claimed,
    /// A record that has not expired already holds the key.
    Existing(IdempotencyRecord),
}

/// A record's key is held by a transaction that is still running: the
/// error behind [`Error::KeyInUse`] when a backend reports it.
pub(crate) fn key_in_use(source: &IdempotencySource, key: &IdempotencyKey) -> Error {
    Error::KeyInUse {
        event_source: source.clone(),
        key: key.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn key_order_and_whitespace_do_not_change_the_fingerprint() {
        let a: Value = serde_json::from_str(r#"{"b":[1,{"y":2,"x":"é"}],"a":null}"#).unwrap();
        let b: Value = serde_json::from_str(
            "{ \"a\" : null ,\n \"b\" : [ 1 , { \"x\" : \"é\", \"y\" : 2 } ] }",
        )
        .unwrap();
        assert_eq!(Fingerprint::of_json(&a), Fingerprint::of_json(&b));
        assert_ne!(
            Fingerprint::of_json(&a),
            Fingerprint::of_json(&json!({"a": null, "b": [{"x": "é", "y": 2}, 1]})),
            "array order counts"
        );
    }

    #[test]
    fn the_fingerprint_is_v1_and_the_sha256_of_the_canonical_json() {
        let f = Fingerprint::of_json(&json!({"b": "c", "a": 1}));
        let digest = Sha256::digest(br#"{"a":1,"b":"c"}"#);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(f.as_str(), format!("v1:{hex}"));
        assert_eq!(Fingerprint::parse(f.as_str()), Ok(f));
    }

    #[test]
    fn an_event_with_a_bad_source_and_a_bad_key_reports_both_fields() {
        let errors = InboundEvent::new("Stripe!", "", &json!({})).unwrap_err();
        let fields: Vec<(&str, &str)> = errors
            .as_slice()
            .iter()
            .map(|e| (e.field.as_str(), e.code))
            .collect();
        assert_eq!(fields, [("source", "invalid_format"), ("key", "required")]);
    }

    #[test]
    fn sources_and_keys_are_bounded_and_printable() {
        assert!(IdempotencySource::parse("billing.v2_eu-1").is_ok());
        assert_eq!(
            IdempotencySource::parse(&"a".repeat(65)).unwrap_err().code,
            "too_long"
        );
        assert!(IdempotencySource::parse(&"a".repeat(64)).is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_ok());
        assert_eq!(
            IdempotencyKey::parse(&"k".repeat(256)).unwrap_err().code,
            "too_long"
        );
        assert_eq!(
            IdempotencyKey::parse("evt\n1").unwrap_err().code,
            "invalid_format"
        );
        assert_eq!(
            IdempotencyKey::parse(" evt").unwrap_err().code,
            "invalid_format"
        );
        assert_eq!(IdempotencyKey::parse("   ").unwrap_err().code, "required");
        assert!(IdempotencyKey::parse("évt 1/ü").is_ok());
    }

    #[test]
    fn the_scoped_key_fits_the_context() {
        let ev = InboundEvent::new(&"s".repeat(64), &"k".repeat(255), &json!(1)).unwrap();
        let ctx = crate::Context::system("t").with_idempotency_key(&ev.scoped_key());
        assert_eq!(
            ctx.unwrap().idempotency_key(),
            Some(ev.scoped_key().as_str())
        );
    }
}

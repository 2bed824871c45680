//! What can go wrong talking to HubSpot, as kinds a caller branches on, with
//! HubSpot's own error fields kept where it sent them.

use std::time::Duration;

use serde::Deserialize;

use crate::error::{BoxError, ValidationErrors};

/// The error body HubSpot sends with a 4xx or 5xx answer (every field is
/// optional: a proxy in between may send something else).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiErrorBody {
    /// `"error"` on HubSpot's answers.
    #[serde(default)]
    pub status: Option<String>,
    /// The category (`VALIDATION_ERROR`, `OBJECT_NOT_FOUND`, `RATE_LIMITS`, …).
    #[serde(default)]
    pub category: Option<String>,
    /// What went wrong, in words.
    #[serde(default)]
    pub message: Option<String>,
    /// HubSpot's id of the request, for its support.
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// The rate-limit policy a 429 ran into (`TEN_SECONDLY_ROLLING`,
    /// `SECONDLY`, `DAILY`).
    #[serde(default)]
    pub policy_name: Option<String>,
    /// The error type some answers carry instead of a category (`RATE_LIMIT`).
    #[serde(default)]
    pub error_type: Option<String>,
}

/// The rate-limit policy named by a 429 answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RateLimitPolicy {
    /// The rolling 10-second budget of the app (`TEN_SECONDLY_ROLLING`).
    TenSecondlyRolling,
    /// The per-second limit of the search endpoints (`SECONDLY`).
    Secondly,
    /// The daily budget (`DAILY`): retrying today does not help.
    Daily,
    /// A policy this client does not know, by its name.
    Other(String),
}

impl RateLimitPolicy {
    /// The policy named `name` (HubSpot's spelling, any case).
    pub fn parse(name: &str) -> RateLimitPolicy {
        match name.to_ascii_uppercase().as_str() {
            "TEN_SECONDLY_ROLLING" => RateLimitPolicy::TenSecondlyRolling,
            "SECONDLY" | "SECONDLY_ROLLING" | "SEARCH_SECONDLY" => RateLimitPolicy::Secondly,
            "DAILY" => RateLimitPolicy::Daily,
            _ => RateLimitPolicy::Other(name.to_string()),
        }
    }

    /// HubSpot's name of the policy.
    pub fn as_str(&self) -> &str {
        match self {
            RateLimitPolicy::TenSecondlyRolling => "TEN_SECONDLY_ROLLING",
            RateLimitPolicy::Secondly => "SECONDLY",
            RateLimitPolicy::Daily => "DAILY",
            RateLimitPolicy::Other(name) => name,
        }
    }
}

/// A failure of a HubSpot call. The variants are kinds to branch on;
/// [`HubSpotError::is_retryable`] says whether the same call may succeed later.
///
/// No variant ever holds the access token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubSpotError {
    /// The configuration is incomplete or wrong: every problem, each naming
    /// its variable (or builder field) and why.
    #[error("HubSpot configuration is invalid: {0}")]
    Config(ValidationErrors),
    /// An argument of a call is out of HubSpot's bounds (too many filters, an
    /// empty batch, …): nothing was sent.
    #[error("invalid HubSpot request: {0}")]
    InvalidRequest(ValidationErrors),
    /// HubSpot answered with an error status. `retryable` is true for 5xx
    /// answers (the retries, if any, were spent).
    #[error("HubSpot answered {status}{}", describe(body))]
    Api {
        /// The HTTP status.
        status: u16,
        /// HubSpot's error fields.
        body: Box<ApiErrorBody>,
    },
    /// HubSpot refused the call for its rate limit (429), and the retries,
    /// if any, were spent. A [`RateLimitPolicy::Daily`] refusal is never retried.
    #[error("HubSpot rate limit reached ({}){}", policy.as_ref().map_or("no policy named", |p| p.as_str()), describe(body))]
    RateLimited {
        /// The policy named in the answer.
        policy: Option<RateLimitPolicy>,
        /// The wait HubSpot asked for (`Retry-After`), if any.
        retry_after: Option<Duration>,
        /// HubSpot's error fields.
        body: Box<ApiErrorBody>,
    },
    /// The client's circuit breaker is open after repeated failures: the
    /// call was refused without any request. Try again after `retry_in`.
    #[error("HubSpot circuit breaker is open; next probe allowed in {retry_in:?}")]
    CircuitOpen {
        /// How long until the breaker lets a probe through.
        retry_in: Duration,
    },
    /// The request timed out.
    #[error("HubSpot request timed out")]
    Timeout,
    /// The connection failed (refused, reset, TLS, DNS).
    #[error("could not reach HubSpot: {0}")]
    Connect(#[source] BoxError),
    /// An answer could not be read as the expected JSON.
    #[error("unexpected answer from HubSpot: {0}")]
    Decode(String),
    /// Another transport failure.
    #[error("HubSpot request failed: {0}")]
    Transport(#[source] BoxError),
}

/// ` CATEGORY: message (correlation id …)`, each part when present.
fn describe(body: &ApiErrorBody) -> String {
    let mut out = String::new();
    if let Some(c) = body.category.as_deref().or(body.error_type.as_deref()) {
        out.push(' ');
        out.push_str(c);
    }
    if let Some(m) = &body.message {
        out.push_str(": ");
        out.push_str(m);
    }
    if let Some(id) = &body.correlation_id {
        out.push_str(" (correlation id ");
        out.push_str(id);
        out.push(')');
    }
    out
}

impl HubSpotError {
    /// True when the same call may succeed later: 5xx answers, timeouts,
    /// connection failures, 429s other than the daily limit, an open breaker.
    pub fn is_retryable(&self) -> bool {
        match self {
            HubSpotError::Api { status, .. } => *status >= 500,
            HubSpotError::RateLimited { policy, .. } => policy != &Some(RateLimitPolicy::Daily),
            HubSpotError::CircuitOpen { .. }
            | HubSpotError::Timeout
            | HubSpotError::Connect(_)
            | HubSpotError::Transport(_) => true,
            HubSpotError::Config(_) | HubSpotError::InvalidRequest(_) | HubSpotError::Decode(_) => {
                false
            }
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The HTTP status HubSpot answered, when the error is an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            HubSpotError::Api { status, .. } => Some(*status),
            HubSpotError::RateLimited { .. } => Some(429),
            _ => None,
        }
    }

    /// HubSpot's error fields, when the error is an answer.
    pub fn body(&self) -> Option<&ApiErrorBody> {
        match self {
            HubSpotError::Api { body, .. } | HubSpotError::RateLimited { body, .. } => {
                Some(body.as_ref())
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_error_names_status_category_message_and_correlation_id() {
        let e = HubSpotError::Api {
            status: 400,
            body: Box::new(ApiErrorBody {
                category: Some("VALIDATION_ERROR".into()),
                message: Some("Property values were not valid".into()),
                correlation_id: Some("abc-123".into()),
                ..Default::default()
            }),
        };
        assert_eq!(
            e.to_string(),
            "HubSpot answered 400 VALIDATION_ERROR: Property values were not valid (correlation id abc-123)"
        );
        assert!(!e.is_retryable());
    }

    #[test]
    fn a_daily_rate_limit_is_not_retryable_and_a_rolling_one_is() {
        let daily = HubSpotError::RateLimited {
            policy: Some(RateLimitPolicy::parse("DAILY")),
            retry_after: None,
            body: Box::default(),
        };
        let rolling = HubSpotError::RateLimited {
            policy: Some(RateLimitPolicy::parse("ten_secondly_rolling")),
            retry_after: None,
            body: Box::default(),
        };
        assert!(!daily.is_retryable());
        assert!(rolling.is_retryable());
        assert_eq!(
            rolling.to_string(),
            "HubSpot rate limit reached (TEN_SECONDLY_ROLLING)"
        );
        assert_eq!(daily.status(), Some(429));
    }
}

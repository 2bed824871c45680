//! The HTTP client: every request goes through the circuit breaker, the
//! rate limiter and the retry policy, with the token in the
//! `Authorization` header only.

use std::{sync::Arc, time::Duration};

use backon::{ExponentialBuilder, Retryable};
use reqwest::{
    Method, StatusCode,
    header::{AUTHORIZATION, HeaderMap, HeaderValue, RETRY_AFTER},
};
use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::OnceCell;

use super::{
    breaker::{Breaker, BreakerState},
    config::HubSpotConfig,
    create::AssociationTypeIds,
    error::{ApiErrorBody, HubSpotError, RateLimitPolicy},
    limiter::{Limiter, RequestKind},
};

/// A client of HubSpot's CRM API for one app (one token). Cheap to clone;
/// clones share the connection pool, the rate limiter and the circuit
/// breaker, so use one client (and its clones) per token.
#[derive(Debug, Clone)]
pub struct HubSpotClient {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) http: reqwest::Client,
    pub(crate) config: HubSpotConfig,
    /// The base URL without a trailing slash.
    pub(crate) base: String,
    limiter: Limiter,
    breaker: Breaker,
    pub(crate) association_ids: OnceCell<AssociationTypeIds>,
}

/// A successful answer's body (200, 201, or 207 for a batch with some
/// failed inputs).
#[derive(Debug)]
pub(crate) struct Answer<T> {
    pub(crate) body: T,
}

/// One attempt's failure, with what the retry policy needs to know.
#[derive(Debug)]
struct AttemptError {
    error: HubSpotError,
    /// The wait the answer asks for (`Retry-After`, or the policy's window).
    wait: Option<Duration>,
}

impl HubSpotClient {
    /// A client for `config`. TLS is rustls on the ring provider with the
    /// platform's root certificates.
    pub fn new(config: HubSpotConfig) -> Result<HubSpotClient, HubSpotError> {
        let mut auth =
            HeaderValue::try_from(format!("Bearer {}", config.token.expose())).map_err(|_| {
                HubSpotError::Config(crate::error::ValidationErrors::single(
                    crate::error::FieldError::new(
                        "token",
                        "invalid_format",
                        "cannot go into an HTTP header",
                    ),
                ))
            })?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, auth);
        let mut builder = reqwest::Client::builder();
        let host = config.base_url.host_str().unwrap_or_default();
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if loopback {
            // A test server on this machine: no proxy from the environment.
            builder = builder.no_proxy();
        }
        let http = builder
            .tls_backend_preconfigured(tls_config()?)
            .default_headers(headers)
            .timeout(config.timeout)
            .user_agent(concat!("crm-core/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| HubSpotError::Transport(Box::new(e.without_url())))?;
        let base = config.base_url.as_str().trim_end_matches('/').to_string();
        Ok(HubSpotClient {
            inner: Arc::new(Inner {
                http,
                base,
                limiter: Limiter::new(
                    config.requests_per_10s,
                    config.rolling_window,
                    config.requests_per_day,
                    config.search_requests_per_second,
                ),
                breaker: Breaker::new(config.breaker_threshold, config.breaker_cooldown),
                association_ids: OnceCell::new(),
                config,
            }),
        })
    }

    /// The state of this client's circuit breaker.
    pub fn breaker_state(&self) -> BreakerState {
        self.inner.breaker.state()
    }

    /// The configuration the client was made with.
    pub fn config(&self) -> &HubSpotConfig {
        &self.inner.config
    }

    /// Sends one request (JSON body or none) with breaker, limiter and
    /// retries; decodes a 2xx answer's body as `T`.
    pub(crate) async fn send<B, T>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        kind: RequestKind,
    ) -> Result<Answer<T>, HubSpotError>
    where
        B: Serialize + ?Sized,
        T: DeserializeOwned,
    {
        // Serializing our own request types cannot fail; were it to, the
        // request is not sent.
        let payload = match body {
            Some(b) => {
                Some(serde_json::to_vec(b).map_err(|e| HubSpotError::Transport(Box::new(e)))?)
            }
            None => None,
        };
        let config = &self.inner.config;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(config.retry_min_delay)
            .with_max_delay(config.retry_max_delay)
            .with_max_times(config.max_retries as usize)
            .with_jitter();
        let mut attempt_no = 0u32;
        let attempt = || {
            attempt_no += 1;
            self.attempt::<T>(method.clone(), path, payload.clone(), kind, attempt_no)
        };
        attempt
            .retry(backoff)
            .sleep(tokio::time::sleep)
            // A rate limit asking for a wait longer than `longest_wait` is
            // not waited out here: the error goes back with HubSpot's
            // `retry_after`, for the caller to schedule.
            .when(|e: &AttemptError| {
                e.error.is_retryable()
                    && !matches!(e.error, HubSpotError::CircuitOpen { .. })
                    && !(matches!(e.error, HubSpotError::RateLimited { .. })
                        && e.wait.is_some_and(|w| w > longest_wait(config)))
            })
            // HubSpot's wait (Retry-After, or the policy's window) replaces
            // the backoff's: a rate limit's up to `longest_wait`, another
            // answer's (a 503 asking for minutes) up to the longest retry
            // delay; the number of retries stays bounded.
            .adjust(|e: &AttemptError, planned| {
                let cap = if matches!(e.error, HubSpotError::RateLimited { .. }) {
                    longest_wait(config)
                } else {
                    config.retry_max_delay
                };
                planned.map(|d| e.wait.map_or(d, |w| w.min(cap)))
            })
            .notify(|e: &AttemptError, wait| {
                tracing::debug!(
                    method = %method,
                    path,
                    wait_ms = wait.as_millis() as u64,
                    error = %e.error,
                    "retrying HubSpot request"
                );
            })
            .await
            .map_err(|e| e.error)
    }

    async fn attempt<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        payload: Option<Vec<u8>>,
        kind: RequestKind,
        attempt: u32,
    ) -> Result<Answer<T>, AttemptError> {
        let inner = &*self.inner;
        // Fail fast before spending any budget.
        if let Err(retry_in) = inner.breaker.check() {
            return Err(AttemptError {
                error: HubSpotError::CircuitOpen { retry_in },
                wait: None,
            });
        }
        inner.limiter.acquire(kind).await;
        // The breaker may have opened while this request waited its turn.
        let permit = inner
            .breaker
            .try_acquire()
            .map_err(|retry_in| AttemptError {
                error: HubSpotError::CircuitOpen { retry_in },
                wait: None,
            })?;
        let url = format!("{}{}", inner.base, path);
        let mut request = inner.http.request(method.clone(), url);
        if let Some(p) = payload {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(p);
        }
        let started = tokio::time::Instant::now();
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                permit.failure();
                let error = transport_error(e);
                tracing::debug!(method = %method, path, attempt, error = %error, "HubSpot request failed");
                return Err(AttemptError { error, wait: None });
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let bytes = match response.bytes().await {
            Ok(b) => b,
            Err(e) => {
                permit.failure();
                return Err(AttemptError {
                    error: transport_error(e),
                    wait: None,
                });
            }
        };
        tracing::debug!(
            method = %method,
            path,
            attempt,
            status = status.as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "HubSpot request"
        );
        if status.is_success() {
            permit.success();
            // An answer without a body (204) reads as JSON `null`.
            let bytes: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
            let body = serde_json::from_slice(bytes).map_err(|e| AttemptError {
                error: HubSpotError::Decode(format!("{method} {path}: {e}")),
                wait: None,
            })?;
            return Ok(Answer { body });
        }
        let body: ApiErrorBody = serde_json::from_slice(&bytes).unwrap_or_else(|_| ApiErrorBody {
            message: Some(String::from_utf8_lossy(&bytes).chars().take(500).collect()),
            ..ApiErrorBody::default()
        });
        if status == StatusCode::TOO_MANY_REQUESTS {
            permit.neutral();
            let policy = body.policy_name.as_deref().map(RateLimitPolicy::parse);
            let wait = match (&retry_after, &policy) {
                (_, Some(RateLimitPolicy::Daily)) => None,
                (Some(w), _) => Some(*w),
                (None, Some(RateLimitPolicy::Secondly)) => Some(Duration::from_secs(1)),
                // The rolling window, or a policy we do not know: wait
                // the window out.
                (None, _) => Some(inner.config.rolling_window),
            };
            if let Some(w) = wait.filter(|w| *w <= longest_wait(&inner.config)) {
                // Every request of this client waits, not only this one. A
                // longer wait (an hour, a date next year) is not held: it
                // would stop every clone of the client for that long; the
                // call fails with it instead (see `send`).
                inner.limiter.hold_for(w);
            }
            tracing::warn!(
                method = %method,
                path,
                attempt,
                policy = policy.as_ref().map_or("none", |p| p.as_str()),
                retry_after_ms = retry_after.map(|d| d.as_millis() as u64),
                "HubSpot rate limit answer"
            );
            return Err(AttemptError {
                error: HubSpotError::RateLimited {
                    policy,
                    retry_after,
                    body: Box::new(body),
                },
                wait,
            });
        }
        if status.is_server_error() {
            permit.failure();
        } else {
            permit.success();
        }
        Err(AttemptError {
            error: HubSpotError::Api {
                status: status.as_u16(),
                body: Box::new(body),
            },
            wait: retry_after,
        })
    }
}

fn transport_error(e: reqwest::Error) -> HubSpotError {
    let e = e.without_url();
    if e.is_timeout() {
        HubSpotError::Timeout
    } else if e.is_connect() {
        HubSpotError::Connect(Box::new(e))
    } else {
        HubSpotError::Transport(Box::new(e))
    }
}

/// The longest wait HubSpot may ask for that a call waits out (holding
/// the client): the longest retry delay configured, or what a rate limit
/// other than the daily one asks for if longer (its rolling window, a
/// second). A longer one (an hour, a date next year) fails the call with
/// it instead.
fn longest_wait(config: &HubSpotConfig) -> Duration {
    config
        .retry_max_delay
        .max(config.rolling_window)
        .max(Duration::from_secs(1))
}

/// `Retry-After` in seconds (fractions allowed) or as an HTTP date.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::from_secs_f64(secs.min(86_400.0)));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let wait = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(
        wait.to_std()
            .unwrap_or(Duration::ZERO)
            .min(Duration::from_secs(86_400)),
    )
}

/// rustls on ring with the platform's roots; HTTP/1.1.
fn tls_config() -> Result<rustls::ClientConfig, HubSpotError> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        tracing::warn!("no root certificates found: HTTPS to HubSpot will fail");
    }
    // ring, not aws-lc-rs: no C build with cmake. rustls deprecates ring's
    // provider for lacking post-quantum key exchange; the classical groups
    // it offers are what HubSpot's endpoints negotiate.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| HubSpotError::Transport(Box::new(e)))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_refuses_nonsense() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0.5 "), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
    }
}
